//! Artifact download, the way Nomad's go-getter does it for one file:
//! options become query parameters; `s3::` sources are fetched with a real S3
//! client (the AWS CLI), other http(s) sources with curl; the `checksum`
//! option is checked before the file is put in place; the file is written
//! mode 0666 less the umask (022), with setuid/setgid bits stripped.

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::job::Artifact;

/// Where a source points, after go-getter's parsing.
#[derive(Debug, PartialEq)]
pub enum Remote {
    S3 {
        /// `http(s)://host[:port]`, or None for AWS itself.
        endpoint: Option<String>,
        region: String,
        bucket: String,
        key: String,
        credentials: Option<(String, String, String)>,
    },
    Http(String),
}

fn query_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (unescape(k), unescape(v))
        })
        .collect()
}

fn escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (
            b[i],
            b.get(i + 1).and_then(|&c| hex(c)),
            b.get(i + 2).and_then(|&c| hex(c)),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b'+', ..) => {
                out.push(b' ');
                i += 1;
            }
            (c, ..) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parse a source with the artifact's options merged into its query, as
/// go-getter's S3 getter does (`parseUrl` and `getAWSConfig`).
pub fn remote(source: &str, options: &[(String, String)]) -> Result<(Remote, Option<String>)> {
    let (forced_s3, url) = match source.strip_prefix("s3::") {
        Some(u) => (true, u),
        None => (false, source),
    };
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut params = query_pairs(query);
    params.extend(options.iter().cloned());
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let checksum = get("checksum");
    let (scheme, rest) = base.split_once("://").context("source: no scheme")?;
    if scheme != "http" && scheme != "https" {
        bail!("source {source}: scheme {scheme} is not simulated");
    }
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    if !forced_s3 {
        // The source's own query stays as written; options are encoded onto
        // it; the checksum is go-getter's, not the server's.
        let mut u = base.to_owned();
        let raw = query
            .split('&')
            .filter(|p| !p.is_empty() && unescape(p.split('=').next().unwrap_or("")) != "checksum");
        let encoded = options
            .iter()
            .filter(|(k, _)| k != "checksum")
            .map(|(k, v)| format!("{}={}", escape(k), escape(v)));
        let rest: Vec<String> = raw.map(str::to_owned).chain(encoded).collect();
        if !rest.is_empty() {
            u = format!("{u}?{}", rest.join("&"));
        }
        return Ok((Remote::Http(u), checksum));
    }
    let credentials = match (get("aws_access_key_id"), get("aws_access_key_secret")) {
        (None, None) => None,
        (id, secret) => Some((
            id.unwrap_or_default(),
            secret.unwrap_or_default(),
            get("aws_access_token").unwrap_or_default(),
        )),
    };
    if host.ends_with(".amazonaws.com") {
        let parts: Vec<&str> = host.split('.').collect();
        let region_of = |p: &str| p.trim_start_matches("s3-").trim_start_matches("s3").to_owned();
        let (region, bucket, key) = match parts.len() {
            3 => {
                let (b, k) = path.split_once('/').context("not a valid S3 URL")?;
                let r = region_of(parts[0]);
                (
                    if r.is_empty() { "us-east-1".to_owned() } else { r },
                    b.to_owned(),
                    k.to_owned(),
                )
            }
            4 => (region_of(parts[1]), parts[0].to_owned(), path.to_owned()),
            5 => (parts[2].to_owned(), parts[0].to_owned(), path.to_owned()),
            _ => bail!("{source}: not a valid S3 URL"),
        };
        return Ok((
            Remote::S3 {
                endpoint: None,
                region,
                bucket,
                key,
                credentials,
            },
            checksum,
        ));
    }
    let (bucket, key) = path
        .split_once('/')
        .filter(|(b, k)| !b.is_empty() && !k.is_empty())
        .with_context(|| format!("{source}: URL is not a valid S3 compliant URL"))?;
    // go-getter sets the endpoint (and path style) only when the URL holds
    // credentials; without them the request goes to AWS.
    if credentials.is_none() {
        bail!("{source}: no credentials in the source or options, so go-getter would send this request to AWS, not to {host}");
    }
    Ok((
        Remote::S3 {
            endpoint: Some(format!("{scheme}://{host}")),
            region: get("region").unwrap_or_else(|| "us-east-1".to_owned()),
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            credentials,
        },
        checksum,
    ))
}

/// The AWS CLI: Debian's (scripts/setup installs it), else the one on PATH.
pub fn aws() -> &'static str {
    if Path::new("/usr/bin/aws").exists() {
        "/usr/bin/aws"
    } else {
        "aws"
    }
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut f = fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Download one artifact into `task_dir`, returning where it landed.
pub fn fetch(a: &Artifact, task_dir: &Path) -> Result<PathBuf> {
    if a.mode != "file" {
        bail!("artifact mode {:?}: only mode = \"file\" is simulated", a.mode);
    }
    let rel = Path::new(&a.destination);
    if rel.is_absolute() || rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        bail!("artifact destination {:?} escapes the task directory", a.destination);
    }
    let dest = task_dir.join(rel);
    let parent = dest.parent().context("destination has no parent")?;
    fs::create_dir_all(parent)?;
    let tmp = parent.join(format!(".download-{}", std::process::id()));
    let (remote, checksum) = remote(&a.source, &a.options)?;
    let fetched = match &remote {
        Remote::S3 {
            endpoint,
            region,
            bucket,
            key,
            credentials,
        } => {
            let mut cmd = Command::new(aws());
            cmd.args([
                "s3api",
                "get-object",
                "--bucket",
                bucket,
                "--key",
                key,
                "--region",
                region,
            ]);
            if let Some(e) = endpoint {
                cmd.args(["--endpoint-url", e]);
            }
            cmd.arg(&tmp);
            // Only what the source says: not this process's AWS settings.
            for var in [
                "AWS_PROFILE",
                "AWS_ENDPOINT_URL",
                "AWS_DEFAULT_REGION",
                "AWS_REGION",
                "AWS_SESSION_TOKEN",
            ] {
                cmd.env_remove(var);
            }
            cmd.env("AWS_CONFIG_FILE", "/dev/null")
                .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null");
            if let Some((id, secret, token)) = credentials {
                cmd.env("AWS_ACCESS_KEY_ID", id).env("AWS_SECRET_ACCESS_KEY", secret);
                if !token.is_empty() {
                    cmd.env("AWS_SESSION_TOKEN", token);
                }
            }
            run(&mut cmd, "aws s3api get-object")
        }
        Remote::Http(u) => run(Command::new("curl").args(["-fsSL", "-o"]).arg(&tmp).arg(u), "curl"),
    };
    let result = fetched.and_then(|()| {
        if let Some(c) = &checksum {
            let Some(want) = c.strip_prefix("sha256:") else {
                bail!("checksum {c:?}: only sha256 is simulated");
            };
            let got = sha256_file(&tmp)?;
            if got != want.to_ascii_lowercase() {
                bail!("checksums did not match: expected {want}, got {got}");
            }
        }
        // 0666 less the umask; no setuid/setgid bits (Nomad's getter umask).
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644))?;
        fs::rename(&tmp, &dest)?;
        Ok(())
    });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("artifact {}", a.source))?;
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_as_go_getter_reads_them() {
        let opts = vec![
            ("checksum".to_owned(), "sha256:ab".to_owned()),
            ("aws_access_key_id".to_owned(), "GK1".to_owned()),
            ("aws_access_key_secret".to_owned(), "s%2F".to_owned()),
        ];
        let (r, c) = remote("s3::http://127.0.0.1:3900/b/dir/app?region=garage", &opts).unwrap();
        assert_eq!(c.as_deref(), Some("sha256:ab"));
        assert_eq!(
            r,
            Remote::S3 {
                endpoint: Some("http://127.0.0.1:3900".into()),
                region: "garage".into(),
                bucket: "b".into(),
                key: "dir/app".into(),
                credentials: Some(("GK1".into(), "s%2F".into(), String::new())),
            }
        );
        let err = remote("s3::http://127.0.0.1:3900/b/app", &[]).unwrap_err();
        assert!(err.to_string().contains("to AWS"), "{err}");
        let (r, _) = remote("s3::https://s3-eu-west-1.amazonaws.com/b/k", &[]).unwrap();
        assert!(
            matches!(r, Remote::S3 { endpoint: None, ref region, ref bucket, .. } if region == "eu-west-1" && bucket == "b")
        );
        let (r, _) = remote("s3::https://b.s3.eu-west-1.amazonaws.com/k/x", &[]).unwrap();
        assert!(matches!(r, Remote::S3 { ref region, ref key, .. } if region == "eu-west-1" && key == "k/x"));
        let (r, c) = remote("https://h/app?x=1", &opts[..1]).unwrap();
        assert_eq!(
            (r, c.as_deref()),
            (Remote::Http("https://h/app?x=1".into()), Some("sha256:ab"))
        );
        assert_eq!(unescape("a%2Fb+c%zz"), "a/b c%zz");
        let token = [("token".to_owned(), "a&b c".to_owned())];
        let (r, c) = remote("https://h/app?sig=x%26y&checksum=sha256:cd", &token).unwrap();
        assert_eq!(
            (r, c.as_deref()),
            (
                Remote::Http("https://h/app?sig=x%26y&token=a%26b%20c".into()),
                Some("sha256:cd")
            )
        );
    }
}
