//! Where Nomad downloads the bundle from: a go-getter source for the URL the
//! user gave, following go-getter's rules for S3 (custom endpoints get the
//! request only with credentials in the URL; AWS URLs are signed).

use anyhow::{bail, Context, Result};

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
}
