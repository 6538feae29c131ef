//! One HTTP/1.1 `GET` over a fresh connection, read to the end of its body.

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

/// Failures carry whether another attempt may do better.
type Fail = (String, bool);

/// `GET path` at `addr` (over TLS when `tls` names the server) with
/// `headers` (the first is Host); every connect
/// and every wait for bytes bounded by `timeout`, and a body of more than
/// `max_body` bytes refused before it is read (the server is not trusted
/// with the client's memory).
pub fn get(
    addr: &str,
    tls: Option<&str>,
    path: &str,
    headers: &[(&str, String)],
    timeout: Duration,
    max_body: u64,
) -> Result<Response, Fail> {
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
    let io = |what: &str, e: std::io::Error| -> Fail {
        let timed_out = matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut);
        if timed_out {
            (
                format!("{what}: no bytes for {} s (timed out)", timeout.as_secs_f32()),
                true,
            )
        } else {
            (format!("{what}: {e}"), true)
        }
    };
    tcp.set_read_timeout(Some(timeout)).map_err(|e| io("connection", e))?;
    tcp.set_write_timeout(Some(timeout)).map_err(|e| io("connection", e))?;
    let _ = tcp.set_nodelay(true);
    let mut s: Box<dyn crate::ReadWrite> = match tls {
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
    };
    let mut req = format!("GET {path} HTTP/1.1\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("user-agent: tote\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).map_err(|e| io("sending the request", e))?;

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
        let n = s.read(&mut chunk).map_err(|e| io("reading the response", e))?;
        if n == 0 {
            return Err(("the connection closed before a response".into(), true));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
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
    let mut content_range = None;
    for l in lines {
        let Some((k, v)) = l.split_once(':') else { continue };
        let v = v.trim();
        match k.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = Some(v.parse().map_err(|_| (format!("Content-Length {v:?}"), false))?),
            "transfer-encoding" => chunked = v.to_ascii_lowercase().contains("chunked"),
            "content-range" => content_range = parse_content_range(v),
            _ => {}
        }
    }
    let mut body = buf.split_off(head_end);
    if status != 206 {
        // Not read: the caller refuses it whatever it holds.
        return Ok(Response {
            status,
            content_range,
            body: Vec::new(),
        });
    }
    if chunked {
        // The chunk framing adds a few bytes per chunk: allow 1/8 more.
        let limit = max_body + max_body / 8 + 4096;
        match (&mut s)
            .take(limit.saturating_sub(body.len() as u64))
            .read_to_end(&mut body)
        {
            // A TLS peer that closes without close_notify: the chunk
            // framing says whether the body is whole.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
            r => {
                r.map_err(|e| io("reading the body", e))?;
            }
        }
        body = dechunk(&body).ok_or_else(|| ("a malformed chunked body".to_string(), true))?;
        if body.len() as u64 > max_body {
            return Err((format!("a body of more than the {max_body} bytes asked for"), false));
        }
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
        body.truncate(want as usize);
    }
    Ok(Response {
        status,
        content_range,
        body,
    })
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
