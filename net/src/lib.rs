//! Range requests for thin bundles: the bytes `start .. start + len` of a
//! full bundle at an `http://` or `s3://` location, with one single-range
//! `GET` each (never a multi-range one: S3 and Garage answer those with the
//! whole object, MinIO refuses them), a `206` required, the object's total
//! size checked against what the caller expects, timeouts and retries.
//!
//! No dependencies but sha2 (SigV4), so that the runtime stub's thin
//! flavour stays small. HTTP/1.1 with keep-alive: a connection that ended
//! its last request cleanly is kept for the next (a TCP and TLS handshake
//! each is what a mount's small reads would otherwise wait for).

mod http;
pub mod sigv4;
#[cfg(feature = "tls")]
mod tls;

use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use http::Response;

/// A byte stream both ways: a TCP connection, or TLS over one.
pub trait ReadWrite: std::io::Read + std::io::Write + Send {}
impl<T: std::io::Read + std::io::Write + Send> ReadWrite for T {}
pub use sigv4::Credentials;

/// Where a full bundle is, resolved to what a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The URL as the user gave it (for messages).
    pub url: String,
    pub tls: bool,
    /// `host` or `host:port`, as the Host header carries it.
    pub host: String,
    /// Where to connect.
    pub addr: String,
    /// The request path, percent-encoded.
    pub path: String,
    /// For `s3://`: the signing region.
    pub region: Option<String>,
}

/// How a fetch failed, for one line: what happened and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchError {
    pub url: String,
    pub what: String,
    /// Worth another attempt (a dropped connection, a timeout, a 5xx).
    pub transient: bool,
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.url, self.what)
    }
}

impl Target {
    /// The host without its port: what TLS checks the certificate against.
    pub fn host_name(&self) -> &str {
        if self.host.starts_with('[') {
            let h: &str = &self.host;
            h.split("]:")
                .next()
                .unwrap_or(h)
                .trim_end_matches(']')
                .trim_start_matches('[')
        } else {
            self.host.split(':').next().unwrap_or(&self.host)
        }
    }

    /// Resolve `url` (`http://HOST[:PORT]/PATH`, `https://…`, or
    /// `s3://BUCKET/KEY` with `endpoint` and `region`). `s3://` without an
    /// endpoint is AWS's own, `https://BUCKET.s3.REGION.amazonaws.com`.
    pub fn parse(url: &str, endpoint: &str, region: &str) -> Result<Target, String> {
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, key) = rest
                .split_once('/')
                .filter(|(b, k)| !b.is_empty() && !k.is_empty())
                .ok_or_else(|| format!("{url}: expected s3://BUCKET/KEY"))?;
            let region = if region.is_empty() { "us-east-1" } else { region };
            let (base, path) = if endpoint.is_empty() {
                (format!("https://{bucket}.s3.{region}.amazonaws.com"), format!("/{key}"))
            } else {
                // Path-style, as MinIO and Garage serve by default.
                (endpoint.trim_end_matches('/').to_owned(), format!("/{bucket}/{key}"))
            };
            let mut t = Target::parse(&format!("{base}{path}"), "", "")?;
            t.url = url.to_owned();
            t.region = Some(region.to_owned());
            return Ok(t);
        }
        let (tls, rest) = if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else {
            return Err(format!("{url}: not an http://, https:// or s3:// URL"));
        };
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if host.is_empty() || host.contains('@') {
            return Err(format!("{url}: no host (or a user name, which is not supported)"));
        }
        let has_port = if host.starts_with('[') {
            host.contains("]:")
        } else {
            host.contains(':')
        };
        let addr = if has_port {
            host.to_owned()
        } else {
            format!("{host}:{}", if tls { 443 } else { 80 })
        };
        Ok(Target {
            url: url.to_owned(),
            tls,
            host: host.to_owned(),
            addr,
            path: sigv4::encode_path(path),
            region: None,
        })
    }
}

/// Connections kept for the next requests (shared by a client's clones).
#[derive(Clone, Default)]
pub struct Pool(Arc<Mutex<Vec<http::Conn>>>);

/// Most connections kept idle.
const POOL_MAX: usize = 16;

impl Pool {
    fn take(&self) -> Option<http::Conn> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }

    fn give(&self, c: http::Conn) {
        let mut p = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if p.len() < POOL_MAX {
            p.push(c);
        }
    }

    /// Connections kept now.
    pub fn idle(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pool({} idle)", self.idle())
    }
}

/// Settings of a fetcher, and its kept connections.
#[derive(Debug, Clone)]
pub struct Client {
    pub target: Target,
    pub credentials: Option<Credentials>,
    /// Per request: connecting, and any wait for bytes.
    pub timeout: Duration,
    /// Attempts per range (transient failures only).
    pub attempts: u32,
    /// The first wait between attempts; doubled after each.
    pub backoff: Duration,
    pub pool: Pool,
}

impl Client {
    /// The client for a thin bundle's recorded location: `TOTE_REMOTE_URL`
    /// overrides its URL (a mirror); for `s3://`, the recorded region wins,
    /// then `AWS_REGION`, then `AWS_DEFAULT_REGION`, then `us-east-1`. An
    /// error names where the bad URL came from.
    pub fn for_location(url: &str, endpoint: &str, region: &str) -> Result<Client, String> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let (url, from) = match var("TOTE_REMOTE_URL") {
            Some(u) => (u, "TOTE_REMOTE_URL"),
            None => (url.to_owned(), "the bundle's remote location"),
        };
        let region = Some(region.to_owned())
            .filter(|r| !r.is_empty())
            .or_else(|| var("AWS_REGION"))
            .or_else(|| var("AWS_DEFAULT_REGION"))
            .unwrap_or_default();
        let target = Target::parse(&url, endpoint, &region).map_err(|e| format!("{from}: {e}"))?;
        Ok(Client::new(target))
    }

    pub fn new(target: Target) -> Client {
        Client {
            credentials: if target.region.is_some() {
                Credentials::from_env()
            } else {
                None
            },
            target,
            timeout: Duration::from_secs(30),
            attempts: 4,
            backoff: Duration::from_millis(250),
            pool: Pool::default(),
        }
    }

    /// Bytes `start .. start + len` of an object of `total` bytes, retried
    /// while failures are transient. `len` ≥ 1.
    pub fn range(&self, start: u64, len: u64, total: u64) -> Result<Vec<u8>, FetchError> {
        self.retried(|| self.range_once(start, len, Some(total)))
            .map_err(|(mut e, n)| {
                if e.transient && n > 1 {
                    e.what = format!("{} (after {n} attempts)", e.what);
                }
                e
            })
    }

    /// Up to `len` bytes from `start` (fewer where the object ends
    /// first) and the object's total size, retried while failures are
    /// transient. `len` ≥ 1.
    pub fn probe(&self, start: u64, len: u64) -> Result<(Vec<u8>, u64), FetchError> {
        self.retried(|| self.probe_once(start, len)).map_err(|(e, _)| e)
    }

    /// `once`, again while it fails transiently, up to `attempts` times
    /// with a wait that doubles; else its last error and the attempts made.
    fn retried<T>(&self, mut once: impl FnMut() -> Result<T, FetchError>) -> Result<T, (FetchError, u32)> {
        let mut wait = self.backoff;
        let mut n = 1;
        loop {
            match once() {
                Ok(got) => return Ok(got),
                Err(e) if e.transient && n < self.attempts => {
                    std::thread::sleep(wait);
                    wait *= 2;
                    n += 1;
                }
                Err(e) => return Err((e, n)),
            }
        }
    }

    fn probe_once(&self, start: u64, len: u64) -> Result<(Vec<u8>, u64), FetchError> {
        // `start` comes from a thin file's record: no overflow, whatever it says.
        let end = start.saturating_add(len.max(1) - 1);
        let r = self.request(&format!("bytes={start}-{end}"), len)?;
        match r.content_range {
            Some((s, e, t)) if s == start && e == end.min(t.saturating_sub(1)) && r.body.len() as u64 == e - s + 1 => {
                Ok((r.body, t))
            }
            other => {
                let sent = other.map_or("no Content-Range".into(), |(s, e, t)| format!("bytes {s}-{e}/{t}"));
                Err(self.error(
                    &format!(
                        "asked for bytes {start}-{end}, the server sent {sent} ({} bytes)",
                        r.body.len()
                    ),
                    true,
                ))
            }
        }
    }

    /// One attempt at bytes `start .. start + len`.
    pub fn range_once(&self, start: u64, len: u64, total: Option<u64>) -> Result<Vec<u8>, FetchError> {
        let end = start + len - 1;
        let r = self.request(&format!("bytes={start}-{end}"), len)?;
        match r.content_range {
            Some((s, e, t)) if s == start && e == end => {
                if let Some(want) = total.filter(|w| *w != t) {
                    return Err(self.error(
                        &format!(
                            "the object is {t} bytes, not the {want} of the bundle this thin file was made from: \
                             it was replaced (by another build under the same name?); make the thin file again \
                             from the bundle that is there, or point TOTE_REMOTE_URL at the right one"
                        ),
                        false,
                    ));
                }
            }
            other => {
                // Another range than asked for (a cache or proxy in the
                // way): worth asking again.
                let sent = other.map_or("no Content-Range".into(), |(s, e, t)| format!("bytes {s}-{e}/{t}"));
                return Err(self.error(&format!("asked for bytes {start}-{end}, the server sent {sent}"), true));
            }
        }
        if r.body.len() as u64 != len {
            return Err(self.error(&format!("a range of {} bytes, not {len}", r.body.len()), true));
        }
        Ok(r.body)
    }

    /// One `GET` with `range` (of `len` bytes); an error unless the answer
    /// is a `206` of at most `len` bytes.
    fn request(&self, range: &str, len: u64) -> Result<Response, FetchError> {
        let t = &self.target;
        let mut headers: Vec<(&str, String)> = Vec::new();
        match (&self.credentials, &t.region) {
            (Some(c), Some(region)) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                headers = sigv4::sign_get(c, region, &t.host, &t.path, range, &sigv4::amz_date(now));
            }
            _ => {
                headers.push(("host", t.host.clone()));
                headers.push(("range", range.to_owned()));
            }
        }
        let get = |kept| {
            http::get(
                kept,
                &t.addr,
                t.tls.then_some(t.host_name()),
                &t.path,
                &headers,
                self.timeout,
                len,
            )
        };
        let got = match self.pool.take() {
            // A kept connection the server closed meanwhile: not a failure
            // of this attempt; a fresh connection instead.
            Some(c) => match get(Some(c)) {
                Err((what, _)) if what == http::STALE => get(None),
                other => other,
            },
            None => get(None),
        };
        let (r, conn) = got.map_err(|(what, transient)| self.error(&what, transient))?;
        if let Some(c) = conn {
            self.pool.give(c);
        }
        match r.status {
            206 => Ok(r),
            200 => Err(self.error(
                "the server sent the whole object (200) for a range request: it does not serve ranges, \
                 and a thin bundle needs them (nginx, S3, MinIO and Garage do)",
                false,
            )),
            403 | 401 => Err(self.error(
                &format!(
                    "HTTP {}: access denied{}",
                    r.status,
                    if t.region.is_some() {
                        " (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY to a key that may read it)"
                    } else {
                        ""
                    }
                ),
                false,
            )),
            404 => Err(self.error("HTTP 404: no such object (uploaded under another name?)", false)),
            416 => Err(self.error(
                "HTTP 416: the object is shorter than the bundle this thin file was made from (replaced?)",
                false,
            )),
            s @ (408 | 429 | 500..=599) => Err(self.error(&format!("HTTP {s}"), true)),
            s => Err(self.error(&format!("HTTP {s}"), false)),
        }
    }

    fn error(&self, what: &str, transient: bool) -> FetchError {
        FetchError {
            url: self.target.url.clone(),
            what: what.to_owned(),
            transient,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// A server that answers every request with `response`; the requests
    /// it saw are counted.
    fn serve(response: &'static [u8]) -> (Client, Arc<AtomicUsize>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let n = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&n);
        std::thread::spawn(move || {
            for mut c in l.incoming().map_while(Result::ok) {
                seen.fetch_add(1, Ordering::SeqCst);
                let mut buf = [0u8; 4096];
                let _ = c.read(&mut buf);
                let _ = c.write_all(response);
            }
        });
        let mut c = Client::new(Target::parse(&format!("http://127.0.0.1:{port}/x"), "", "").unwrap());
        c.backoff = Duration::from_millis(1);
        c.timeout = Duration::from_secs(5);
        (c, n)
    }

    /// A server answering every request on a connection with `response`
    /// (ending the connection after `per_conn` of them); (connections,
    /// requests) counted.
    fn serve_kept(response: &'static [u8], per_conn: usize) -> (Client, Arc<(AtomicUsize, AtomicUsize)>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let n = Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
        let seen = Arc::clone(&n);
        std::thread::spawn(move || {
            for mut c in l.incoming().map_while(Result::ok) {
                seen.0.fetch_add(1, Ordering::SeqCst);
                let seen = Arc::clone(&seen);
                std::thread::spawn(move || {
                    for _ in 0..per_conn {
                        let mut head = Vec::new();
                        let mut b = [0u8; 1];
                        while !head.ends_with(b"\r\n\r\n") {
                            if c.read(&mut b).unwrap_or(0) == 0 {
                                return;
                            }
                            head.push(b[0]);
                        }
                        seen.1.fetch_add(1, Ordering::SeqCst);
                        if c.write_all(response).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let mut c = Client::new(Target::parse(&format!("http://127.0.0.1:{port}/x"), "", "").unwrap());
        c.backoff = Duration::from_millis(1);
        c.timeout = Duration::from_secs(5);
        (c, n)
    }

    #[test]
    fn connections_are_kept_and_a_closed_one_is_replaced_without_an_attempt() {
        const OK: &[u8] = b"HTTP/1.1 206 Partial\r\ncontent-range: bytes 2-4/10\r\ncontent-length: 3\r\n\r\nabc";
        let (c, n) = serve_kept(OK, usize::MAX);
        for _ in 0..3 {
            assert_eq!(c.range(2, 3, 10).unwrap(), b"abc");
        }
        assert_eq!((n.0.load(Ordering::SeqCst), n.1.load(Ordering::SeqCst)), (1, 3));
        assert_eq!(c.pool.idle(), 1);
        // A server that closes each connection after one answer, silently:
        // the kept connection fails before a response, and a fresh one is
        // used in the same attempt.
        let (mut c, n) = serve_kept(OK, 1);
        c.attempts = 1;
        for _ in 0..3 {
            assert_eq!(c.range(2, 3, 10).unwrap(), b"abc");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!((n.0.load(Ordering::SeqCst), n.1.load(Ordering::SeqCst)), (3, 3));
        // `Connection: close`, or a status whose body is not read: not kept.
        let (c, _) = serve_kept(
            b"HTTP/1.1 206 Partial\r\ncontent-range: bytes 2-4/10\r\ncontent-length: 3\r\nconnection: close\r\n\r\nabc",
            usize::MAX,
        );
        c.range(2, 3, 10).unwrap();
        assert_eq!(c.pool.idle(), 0);
        let (c, _) = serve_kept(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n", usize::MAX);
        assert!(c.range(2, 3, 10).is_err());
        assert_eq!(c.pool.idle(), 0);
        // A chunked answer on a kept connection ends at its last chunk
        // (not at the timeout).
        let (c, n) = serve_kept(
            b"HTTP/1.1 206 Partial\r\ncontent-range: bytes 2-4/10\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            usize::MAX,
        );
        let t = std::time::Instant::now();
        assert_eq!(c.range(2, 3, 10).unwrap(), b"abc");
        assert!(t.elapsed() < Duration::from_secs(4));
        assert_eq!(n.1.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_range_comes_back_checked() {
        let (c, _) = serve(b"HTTP/1.1 206 Partial\r\ncontent-range: bytes 2-4/10\r\ncontent-length: 3\r\n\r\nabc");
        assert_eq!(c.range(2, 3, 10).unwrap(), b"abc");
        // Another total: the object was replaced.
        let e = c.range(2, 3, 11).unwrap_err();
        assert!(!e.transient && e.what.contains("it was replaced"), "{e}");
    }

    #[test]
    fn a_body_larger_than_asked_is_refused_unread() {
        let (c, _) =
            serve(b"HTTP/1.1 206 Partial\r\ncontent-range: bytes 0-2/10\r\ncontent-length: 4000000000\r\n\r\nabc");
        let e = c.range_once(0, 3, Some(10)).unwrap_err();
        assert!(e.what.contains("a body of 4000000000 bytes, for 3 asked"), "{e}");
    }

    #[test]
    fn transient_failures_are_retried_and_lasting_ones_are_not() {
        let (c, n) = serve(b"HTTP/1.1 503 Busy\r\ncontent-length: 0\r\n\r\n");
        let e = c.range(0, 3, 10).unwrap_err();
        assert_eq!(n.load(Ordering::SeqCst), 4);
        assert!(e.what.ends_with("HTTP 503 (after 4 attempts)"), "{e}");
        let (c, n) = serve(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n0123456789");
        let e = c.range(0, 3, 10).unwrap_err();
        assert_eq!(n.load(Ordering::SeqCst), 1);
        assert!(e.what.contains("(200)"), "{e}");
        let (c, _) = serve(b"SSH-2.0-OpenSSH\r\n\r\n");
        assert!(c.range(0, 3, 10).unwrap_err().what.contains("not an HTTP/1.x response"));
    }

    #[test]
    fn targets() {
        let t = Target::parse("http://127.0.0.1:8080/apps/app 1", "", "").unwrap();
        assert_eq!(
            (t.host.as_str(), t.addr.as_str(), t.path.as_str()),
            ("127.0.0.1:8080", "127.0.0.1:8080", "/apps/app%201")
        );
        let t = Target::parse("http://example.com/a", "", "").unwrap();
        assert_eq!(t.addr, "example.com:80");
        let t = Target::parse("http://[::1]/a", "", "").unwrap();
        assert_eq!(t.addr, "[::1]:80");
        let t = Target::parse("http://[::1]:81/a", "", "").unwrap();
        assert_eq!((t.addr.as_str(), t.host_name()), ("[::1]:81", "::1"));
        let t = Target::parse("https://minio.example:9000/b/k", "", "").unwrap();
        assert_eq!(
            (t.addr.as_str(), t.host_name(), t.tls),
            ("minio.example:9000", "minio.example", true)
        );
        let t = Target::parse("s3://tote/apps/app", "http://127.0.0.1:3900/", "garage").unwrap();
        assert_eq!(
            (t.url.as_str(), t.host.as_str(), t.path.as_str(), t.region.as_deref()),
            ("s3://tote/apps/app", "127.0.0.1:3900", "/tote/apps/app", Some("garage"))
        );
        let t = Target::parse("s3://tote/app", "", "").unwrap();
        assert_eq!((t.host.as_str(), t.tls), ("tote.s3.us-east-1.amazonaws.com", true));
        assert!(Target::parse("s3://tote", "", "").is_err());
        assert!(Target::parse("http://user@host/a", "", "").is_err());
    }
}
