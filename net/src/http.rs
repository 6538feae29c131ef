//! One HTTP/1.1 `GET`, over a connection kept from an earlier request or a
//! fresh one, read to the end of its body; the connection is handed back
//! when it can carry another request.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Most bytes of a response's head (status line and headers).
const MAX_HEAD: usize = 64 << 10;

/// A response: its status, `Content-Range` as `(first, last, total)`, body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub content_range: Option<(u64, u64, u64)>,
    pub body: Vec<u8>,
}

/// A connection that may carry more requests.
pub type Conn = Box<dyn crate::ReadWrite>;

/// How `get` failed on a kept connection before any byte of a response
/// came: the server had closed it meanwhile; try a fresh one.
pub const STALE: &str = "a kept connection was closed by the server";

/// Failures carry whether another attempt may do better.
type Fail = (String, bool);

/// `GET path` at `addr` (over TLS when `tls` names the server) with
/// `headers` (the first is Host), on `kept` (a connection an earlier
/// request handed back) or a fresh connection; every connect and every
/// wait for bytes bounded by `timeout`, and a body of more than `max_body`
/// bytes refused before it is read (the server is not trusted with the
/// client's memory). The response, and the connection if it may carry
/// another request.
pub fn get(
    kept: Option<Conn>,
    addr: &str,
    tls: Option<&str>,
    path: &str,
    headers: &[(&str, String)],
    timeout: Duration,
    max_body: u64,
) -> Result<(Response, Option<Conn>), Fail> {
    let reused = kept.is_some();
    let mut s = match kept {
        Some(c) => c,
        None => connect(addr, tls, timeout)?,
    };
    let io = |what: &str, e: std::io::Error| io_fail(what, e, timeout);
    let mut req = format!("GET {path} HTTP/1.1\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("user-agent: tote\r\n\r\n");
    let sent = s.write_all(req.as_bytes()).and_then(|()| s.flush());
    match sent {
        Err(_) if reused => return Err((STALE.into(), true)),
        r => r.map_err(|e| io("sending the request", e))?,
    }

    // The head, then whatever of the body came with it.
    let mut buf = Vec::with_capacity(8192);
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            return Err(("a response head over 64 KiB".into(), false));
        }
        let mut chunk = [0u8; 8192];
        let n = match s.read(&mut chunk) {
            Ok(0) | Err(_) if reused && buf.is_empty() => return Err((STALE.into(), true)),
            r => r.map_err(|e| io("reading the response", e))?,
        };
        if n == 0 {
            return Err(("the connection closed before a response".into(), true));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    read_response(s, buf, head_end, timeout, max_body)
}

/// A fresh connection to `addr` (TLS when `tls` names the server), every
/// connect and wait bounded by `timeout`.
fn connect(addr: &str, tls: Option<&str>, timeout: Duration) -> Result<Conn, Fail> {
    let addrs: Vec<_> = addr
        .to_socket_addrs()
        .map_err(|e| (format!("resolving {addr}: {e}"), true))?
        .collect();
    let mut last = (format!("resolving {addr}: no address"), true);
    let mut stream = None;
    for a in &addrs {
        match TcpStream::connect_timeout(a, timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = (format!("connecting to {a}: {e}"), true),
        }
    }
    let tcp = stream.ok_or(last)?;
    let io = |what: &str, e: std::io::Error| io_fail(what, e, timeout);
    tcp.set_read_timeout(Some(timeout)).map_err(|e| io("connection", e))?;
    tcp.set_write_timeout(Some(timeout)).map_err(|e| io("connection", e))?;
    let _ = tcp.set_nodelay(true);
    Ok(match tls {
        None => Box::new(tcp),
        #[cfg(feature = "tls")]
        Some(host) => crate::tls::connect(tcp, host)?,
        #[cfg(not(feature = "tls"))]
        Some(_) => {
            return Err((
                "https:// needs TLS, which this build leaves out: use http:// (on a trusted network) \
                 or an S3 endpoint over http://"
                    .into(),
                false,
            ))
        }
    })
}

fn io_fail(what: &str, e: std::io::Error, timeout: Duration) -> Fail {
    let timed_out = matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut);
    if timed_out {
        (
            format!("{what}: no bytes for {} s (timed out)", timeout.as_secs_f32()),
            true,
        )
    } else {
        (format!("{what}: {e}"), true)
    }
}

/// The rest of a response whose head ends at `head_end` of `buf`; the
/// connection back if it can carry another request (a whole `206` body of
/// known length, and no `Connection: close`).
fn read_response(
    mut s: Conn,
    mut buf: Vec<u8>,
    head_end: usize,
    timeout: Duration,
    max_body: u64,
) -> Result<(Response, Option<Conn>), Fail> {
    let io = |what: &str, e: std::io::Error| io_fail(what, e, timeout);
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .filter(|_| status_line.starts_with("HTTP/1."))
        .ok_or_else(|| {
            (
                format!(
                    "not an HTTP/1.x response: {:?}",
                    status_line.chars().take(40).collect::<String>()
                ),
                false,
            )
        })?;
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut close = status_line.starts_with("HTTP/1.0");
    let mut content_range = None;
    for l in lines {
        let Some((k, v)) = l.split_once(':') else { continue };
        let v = v.trim();
        match k.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = Some(v.parse().map_err(|_| (format!("Content-Length {v:?}"), false))?),
            "transfer-encoding" => chunked = v.to_ascii_lowercase().contains("chunked"),
            "content-range" => content_range = parse_content_range(v),
            "connection" => close = v.to_ascii_lowercase().contains("close"),
            _ => {}
        }
    }
    let mut body = buf.split_off(head_end);
    if status != 206 {
        // Not read (the caller refuses it whatever it holds), so the
        // connection cannot carry another request.
        let r = Response {
            status,
            content_range,
            body: Vec::new(),
        };
        return Ok((r, None));
    }
    if chunked {
        // The chunk framing adds a few bytes per chunk: allow 1/8 more.
        // Read until the last chunk (the server may keep the connection).
        let limit = max_body + max_body / 8 + 4096;
        let whole = loop {
            if let Some(b) = dechunk(&body) {
                break b;
            }
            if body.len() as u64 > limit {
                return Err((format!("a body of more than the {max_body} bytes asked for"), false));
            }
            let mut chunk = [0u8; 16384];
            match s.read(&mut chunk) {
                Ok(0) => return Err(("a malformed chunked body".to_string(), true)),
                Ok(n) => body.extend_from_slice(&chunk[..n]),
                // A TLS peer that closes without close_notify: the chunk
                // framing says whether the body is whole.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return Err(("a malformed chunked body".to_string(), true))
                }
                Err(e) => return Err(io("reading the body", e)),
            }
        };
        if whole.len() as u64 > max_body {
            return Err((format!("a body of more than the {max_body} bytes asked for"), false));
        }
        // Whatever trails the last chunk (trailers) is not worth parsing.
        close = true;
        body = whole;
    } else {
        let want = length.ok_or_else(|| ("a 206 without a Content-Length".to_string(), false))?;
        if want > max_body {
            return Err((format!("a body of {want} bytes, for {max_body} asked"), true));
        }
        body.reserve(want as usize - body.len().min(want as usize));
        while (body.len() as u64) < want {
            let mut chunk = vec![0u8; (want as usize - body.len()).min(1 << 20)];
            let n = s.read(&mut chunk).map_err(|e| io("reading the body", e))?;
            if n == 0 {
                return Err((
                    format!("the connection closed after {} of {want} bytes", body.len()),
                    true,
                ));
            }
            body.extend_from_slice(&chunk[..n]);
        }
        // More than the body came: the server is not speaking plain HTTP/1.1.
        close |= body.len() as u64 != want;
        body.truncate(want as usize);
    }
    let r = Response {
        status,
        content_range,
        body,
    };
    Ok((r, (!close).then_some(s)))
}

/// `bytes FIRST-LAST/TOTAL`.
fn parse_content_range(v: &str) -> Option<(u64, u64, u64)> {
    let r = v.strip_prefix("bytes ")?;
    let (span, total) = r.split_once('/')?;
    let (a, b) = span.split_once('-')?;
    let (a, b, t) = (
        a.trim().parse().ok()?,
        b.trim().parse().ok()?,
        total.trim().parse().ok()?,
    );
    (a <= b && b < t).then_some((a, b, t))
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&b[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        b = &b[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        if b.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges_and_chunks() {
        assert_eq!(parse_content_range("bytes 0-9/100"), Some((0, 9, 100)));
        assert_eq!(parse_content_range("bytes 9-0/100"), None);
        assert_eq!(parse_content_range("bytes 0-100/100"), None);
        assert_eq!(parse_content_range("bytes */100"), None);
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n").as_deref(),
            Some(&b"abcde"[..])
        );
        assert_eq!(dechunk(b"5\r\nabc\r\n"), None);
    }
}
