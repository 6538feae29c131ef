//! `tote nomad`: a Nomad job specification that downloads a bundle and runs it
//! with the `exec` driver.
//!
//! The artifact block follows what go-getter (Nomad's downloader) does with
//! a source URL:
//! - `s3::` sources whose host is not `*.amazonaws.com` are sent to that host,
//!   path-style, *only when the credentials are in the URL* (the artifact's
//!   `options`); without them go-getter asks AWS. So a custom endpoint (MinIO,
//!   Garage...) gets `aws_access_key_id`/`aws_access_key_secret` options,
//!   taken from this process's environment.
//! - `options { checksum = "sha256:<hex>" }` is checked before the task starts.

use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::inspect;

/// Arguments of `tote nomad`.
#[derive(clap::Args)]
pub struct NomadArgs {
    /// The bundle to run (its SHA-256 goes into the job).
    #[arg(value_name = "FILE")]
    pub file: std::path::PathBuf,
    /// Where Nomad downloads FILE from: s3://BUCKET/KEY (AWS, or the server
    /// given by --endpoint), an http(s) URL, or a go-getter source (s3::...).
    #[arg(long, value_name = "URL")]
    pub url: String,
    /// S3-compatible server for an s3:// URL (MinIO, Garage, Ceph...), such as
    /// http://minio.internal:9000. Its credentials are read from
    /// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY and written into the job.
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// Region of the bucket (for --endpoint: the server's region name, e.g.
    /// "garage" for Garage's default).
    #[arg(long, value_name = "NAME")]
    pub region: Option<String>,
    /// Job, group and task name [default: the bundle's name].
    #[arg(long, value_name = "NAME")]
    pub job: Option<String>,
    /// Datacenters the job may run in [default: "*", every datacenter].
    #[arg(long = "datacenter", value_name = "DC")]
    pub datacenters: Vec<String>,
    /// CPU to reserve, in MHz.
    #[arg(long, value_name = "MHZ", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub cpu: u32,
    /// Memory limit, in MB. Bundles extract to disk, not memory.
    #[arg(long, value_name = "MB", default_value_t = 300,
          value_parser = clap::value_parser!(u32).range(10..))]
    pub memory: u32,
    /// A port the program listens on: LABEL=PORT for a static port, LABEL
    /// alone for one Nomad picks. The program reads it from NOMAD_PORT_<LABEL>.
    #[arg(long = "port", value_name = "LABEL[=PORT]")]
    pub ports: Vec<String>,
    /// An environment variable for the program (repeatable).
    #[arg(long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// Arguments for the program, after `--`.
    #[arg(last = true, value_name = "ARGS")]
    pub args: Vec<String>,
}

/// Everything a job specification is made of, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub name: String,
    pub datacenters: Vec<String>,
    /// The go-getter source.
    pub source: String,
    /// Artifact options besides the checksum (credentials).
    pub options: Vec<(String, String)>,
    /// `sha256:<hex>`.
    pub checksum: String,
    /// The artifact's file name in `local/`.
    pub file_name: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub ports: Vec<(String, Option<u16>)>,
    pub cpu: u32,
    pub memory: u32,
}

/// The default kill signal and timeout, written out so that the job says
/// what stops the program.
pub const KILL_SIGNAL: &str = "SIGINT";
pub const KILL_TIMEOUT: &str = "5s";

pub fn nomad(args: &NomadArgs) -> Result<()> {
    let opened = inspect::open(&args.file)?;
    let meta = opened
        .layout
        .meta(&opened.map)
        .with_context(|| format!("{}", args.file.display()))?;
    let checksum = format!("sha256:{}", inspect::sha256_hex(&opened.map));
    drop(opened);

    let name = match &args.job {
        Some(j) => j.clone(),
        None => meta.name.clone(),
    };
    check_name(&name, args.job.is_some())?;
    let env_var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let source = source(&args.url, args.endpoint.as_deref(), args.region.as_deref())?;
    let mut options = Vec::new();
    if source.needs_credentials {
        let (Some(id), Some(secret)) = (env_var("AWS_ACCESS_KEY_ID"), env_var("AWS_SECRET_ACCESS_KEY")) else {
            bail!(
                "{}: Nomad's downloader sends requests for this endpoint to AWS unless the job \
                 holds credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (a read-only key)",
                args.endpoint.as_deref().unwrap_or(&args.url)
            );
        };
        options.push(("aws_access_key_id".to_owned(), id.clone()));
        options.push(("aws_access_key_secret".to_owned(), secret));
        if let Some(token) = env_var("AWS_SESSION_TOKEN") {
            options.push(("aws_access_token".to_owned(), token));
        }
        eprintln!("tote: note: the job holds the access key {id}; give it read-only access to the bucket");
    }
    let file_name = args
        .file
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| n.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) && !n.starts_with('.'))
        .unwrap_or("app")
        .to_owned();
    let job = Job {
        name,
        datacenters: if args.datacenters.is_empty() {
            vec!["*".to_owned()]
        } else {
            args.datacenters.clone()
        },
        source: source.url,
        options,
        checksum,
        file_name,
        args: args.args.clone(),
        env: args.env.iter().map(|e| parse_env(e)).collect::<Result<_>>()?,
        ports: parse_ports(&args.ports)?,
        cpu: args.cpu,
        memory: args.memory,
    };
    print!("{}", render(&job, &args.file));
    Ok(())
}

fn check_name(name: &str, given: bool) -> Result<()> {
    let ok = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if !ok {
        if given {
            bail!("--job {name:?}: use letters, digits, '.', '_' and '-'");
        }
        bail!("the bundle's name {name:?} is not a usable job name: give one with --job NAME");
    }
    Ok(())
}

fn parse_env(e: &str) -> Result<(String, String)> {
    let Some((k, v)) = e.split_once('=') else {
        bail!("--env {e:?}: expected NAME=VALUE");
    };
    if !is_identifier(k) {
        bail!("--env {e:?}: {k:?} is not a variable name (letters, digits and '_', not starting with a digit)");
    }
    Ok((k.to_owned(), v.to_owned()))
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_ports(ports: &[String]) -> Result<Vec<(String, Option<u16>)>> {
    let mut out: Vec<(String, Option<u16>)> = Vec::new();
    for p in ports {
        let (label, port) = match p.split_once('=') {
            Some((l, n)) => {
                let n: u16 = n
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .with_context(|| format!("--port {p:?}: {n:?} is not a port number (1-65535)"))?;
                (l, Some(n))
            }
            None => (p.as_str(), None),
        };
        if label.is_empty() || !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            bail!("--port {p:?}: the label must be letters, digits and '_' (it names NOMAD_PORT_<LABEL>)");
        }
        if out.iter().any(|(l, _)| l == label) {
            bail!("--port {p:?}: the label {label:?} is given twice");
        }
        out.push((label.to_owned(), port));
    }
    Ok(out)
}

/// A go-getter source for `url`.
#[derive(Debug, PartialEq)]
pub struct Source {
    pub url: String,
    /// go-getter only talks to a custom S3 endpoint with credentials in the URL.
    pub needs_credentials: bool,
}

pub fn source(url: &str, endpoint: Option<&str>, region: Option<&str>) -> Result<Source> {
    let plain = |u: &str| Source {
        url: u.to_owned(),
        needs_credentials: false,
    };
    if let Some(region) = region {
        if region.is_empty()
            || !region
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            bail!("--region {region:?}: not a region name, like us-east-1 or garage");
        }
    }
    if let Some(rest) = url.strip_prefix("s3://") {
        let Some((bucket, key)) = rest.split_once('/').filter(|(b, k)| !b.is_empty() && !k.is_empty()) else {
            bail!("--url {url}: expected s3://BUCKET/KEY");
        };
        if key.contains(['?', '#']) || bucket.contains(['?', '#', '@', ':']) {
            bail!("--url {url}: the bucket and key must not hold '?', '#', '@' or ':'");
        }
        return Ok(match endpoint {
            Some(e) => {
                let e = check_endpoint(e)?;
                let mut u = format!("s3::{e}/{bucket}/{key}");
                if let Some(r) = region {
                    u.push_str(&format!("?region={r}"));
                }
                Source {
                    url: u,
                    needs_credentials: true,
                }
            }
            // Path-style with the region in the host's first label: the one
            // AWS form that go-getter parses for every bucket name.
            None => plain(&match region {
                Some(r) => format!("s3::https://s3-{r}.amazonaws.com/{bucket}/{key}"),
                None => format!("s3::https://s3.amazonaws.com/{bucket}/{key}"),
            }),
        });
    }
    if endpoint.is_some() || region.is_some() {
        bail!("--endpoint and --region go with an s3://BUCKET/KEY URL, not {url}");
    }
    if url.starts_with("s3::") {
        return Ok(plain(url));
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        bail!("--url {url}: expected s3://BUCKET/KEY or an http(s) URL");
    };
    if scheme != "http" && scheme != "https" {
        bail!("--url {url}: the {scheme}:// scheme is not supported (use s3:// or http(s)://)");
    }
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() {
        bail!("--url {url}: no host");
    }
    let host_name = host.rsplit_once('@').map_or(host, |(_, h)| h);
    let host_name = host_name.split(':').next().unwrap_or(host_name);
    if host_name.ends_with(".amazonaws.com") {
        // AWS's own URLs go through the S3 getter, which signs requests.
        return Ok(plain(&format!("s3::{url}")));
    }
    Ok(plain(url))
}

fn check_endpoint(e: &str) -> Result<&str> {
    let e = e.trim_end_matches('/');
    let rest = e
        .strip_prefix("http://")
        .or_else(|| e.strip_prefix("https://"))
        .with_context(|| format!("--endpoint {e}: expected http://HOST[:PORT] or https://HOST[:PORT]"))?;
    if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
        bail!("--endpoint {e}: expected http://HOST[:PORT] or https://HOST[:PORT], with no path");
    }
    Ok(e)
}

/// An HCL string literal: escapes, and `${`/`%{` kept literal.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '$' | '%' if chars.peek() == Some(&'{') => {
                out.push(c);
                out.push(c);
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| quote(s)).collect();
    format!("[{}]", quoted.join(", "))
}

/// Attributes aligned on `=`, as `nomad fmt` writes them.
fn attributes(out: &mut String, indent: usize, attrs: &[(&str, String)]) {
    let width = attrs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in attrs {
        out.push_str(&format!("{:indent$}{k:width$} = {v}\n", ""));
    }
}

/// The job specification.
pub fn render(job: &Job, file: &Path) -> String {
    let mut o = String::new();
    let name = quote(&job.name);
    o.push_str(&format!(
        "# Runs {} ({}) with Nomad's exec driver.\n# Written by tote {}: nomad job run <this file>\n",
        file.display(),
        job.checksum,
        env!("CARGO_PKG_VERSION")
    ));
    o.push_str(&format!("job {name} {{\n"));
    attributes(
        &mut o,
        2,
        &[("datacenters", list(&job.datacenters)), ("type", quote("service"))],
    );
    o.push_str(&format!("\n  group {name} {{\n"));
    if !job.ports.is_empty() {
        o.push_str("    network {\n");
        for (label, port) in &job.ports {
            match port {
                Some(p) => o.push_str(&format!(
                    "      port {} {{\n        static = {p}\n      }}\n",
                    quote(label)
                )),
                None => o.push_str(&format!("      port {} {{}}\n", quote(label))),
            }
        }
        o.push_str("    }\n\n");
    }
    o.push_str(&format!("    task {name} {{\n      driver = \"exec\"\n\n"));
    o.push_str("      # Downloaded into the task's local/ directory; the checksum is\n");
    o.push_str("      # verified before the task starts.\n");
    o.push_str("      artifact {\n");
    let destination = format!("local/{}", job.file_name);
    attributes(
        &mut o,
        8,
        &[
            ("source", quote(&job.source)),
            ("destination", quote(&destination)),
            ("mode", quote("file")),
        ],
    );
    o.push_str("\n        options {\n");
    let mut options = vec![("checksum", quote(&job.checksum))];
    options.extend(job.options.iter().map(|(k, v)| (k.as_str(), quote(v))));
    attributes(&mut o, 10, &options);
    o.push_str("        }\n      }\n\n");
    o.push_str("      config {\n");
    let mut config = vec![("command", quote(&destination))];
    if !job.args.is_empty() {
        config.push(("args", list(&job.args)));
    }
    attributes(&mut o, 8, &config);
    o.push_str("      }\n\n");
    if !job.env.is_empty() {
        o.push_str("      env {\n");
        let env: Vec<(&str, String)> = job.env.iter().map(|(k, v)| (k.as_str(), quote(v))).collect();
        attributes(&mut o, 8, &env);
        o.push_str("      }\n\n");
    }
    o.push_str("      # The bundle is PID 1 of the task: it passes kill_signal on to the\n");
    o.push_str("      # program and exits with its status. A program still running after\n");
    o.push_str("      # kill_timeout is killed with SIGKILL, with everything it started.\n");
    attributes(
        &mut o,
        6,
        &[
            ("kill_signal", quote(KILL_SIGNAL)),
            ("kill_timeout", quote(KILL_TIMEOUT)),
        ],
    );
    o.push_str("\n      resources {\n");
    attributes(
        &mut o,
        8,
        &[("cpu", job.cpu.to_string()), ("memory", job.memory.to_string())],
    );
    o.push_str("      }\n    }\n  }\n}\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources() {
        let s = |u: &str, e: Option<&str>, r: Option<&str>| source(u, e, r).map_err(|e| e.to_string());
        assert_eq!(
            s("s3://b/dir/app", Some("http://127.0.0.1:3900/"), Some("garage")).unwrap(),
            Source {
                url: "s3::http://127.0.0.1:3900/b/dir/app?region=garage".into(),
                needs_credentials: true
            }
        );
        assert_eq!(
            s("s3://b/app", None, None).unwrap().url,
            "s3::https://s3.amazonaws.com/b/app"
        );
        assert_eq!(
            s("s3://b/app", None, Some("eu-west-1")).unwrap().url,
            "s3::https://s3-eu-west-1.amazonaws.com/b/app"
        );
        assert_eq!(
            s("https://b.s3.eu-west-1.amazonaws.com/app", None, None).unwrap().url,
            "s3::https://b.s3.eu-west-1.amazonaws.com/app"
        );
        assert_eq!(
            s("https://files.example.com/app", None, None).unwrap(),
            Source {
                url: "https://files.example.com/app".into(),
                needs_credentials: false
            }
        );
        assert_eq!(s("s3::https://x/b/k", None, None).unwrap().url, "s3::https://x/b/k");
        for (u, e, r, msg) in [
            ("s3://bucket", None, None, "expected s3://BUCKET/KEY"),
            ("s3://b/", None, None, "expected s3://BUCKET/KEY"),
            ("ftp://h/app", None, None, "ftp:// scheme is not supported"),
            ("app", None, None, "expected s3://BUCKET/KEY or an http(s) URL"),
            ("https:///app", None, None, "no host"),
            (
                "https://h/app",
                Some("http://m:9000"),
                None,
                "go with an s3://BUCKET/KEY URL",
            ),
            ("s3://b/k", Some("minio:9000"), None, "expected http://HOST[:PORT]"),
            ("s3://b/k", Some("http://m:9000/path"), None, "with no path"),
            ("s3://b/k", None, Some("eu west"), "not a region name"),
        ] {
            let err = s(u, e, r).unwrap_err();
            assert!(err.contains(msg), "{u}: {err}");
        }
    }

    #[test]
    fn quoting_keeps_templates_literal() {
        assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(quote("${HOME} %{if} $x 100%"), r#""$${HOME} %%{if} $x 100%""#);
        assert_eq!(quote("l1\nl2\t\u{1}"), r#""l1\nl2\t\u0001""#);
    }

    #[test]
    fn ports_and_env() {
        assert_eq!(
            parse_ports(&["http=8080".into(), "metrics".into()]).unwrap(),
            vec![("http".into(), Some(8080)), ("metrics".into(), None)]
        );
        for (p, msg) in [
            ("http=0", "not a port number"),
            ("http=70000", "not a port number"),
            ("my-port=1", "the label must be"),
            ("=1", "the label must be"),
        ] {
            let err = parse_ports(&[p.into()]).unwrap_err().to_string();
            assert!(err.contains(msg), "{p}: {err}");
        }
        let err = parse_ports(&["a=1".into(), "a=2".into()]).unwrap_err().to_string();
        assert!(err.contains("given twice"), "{err}");
        assert_eq!(parse_env("A_1=x=y").unwrap(), ("A_1".into(), "x=y".into()));
        assert!(parse_env("1A=x").is_err());
        assert!(parse_env("A").is_err());
        assert!(check_name("hello-flask.v2", false).is_ok());
        assert!(check_name("my app", true).unwrap_err().to_string().contains("--job"));
    }
}
