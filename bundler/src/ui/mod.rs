//! What tote shows a person: progress while it works, colour on a terminal,
//! sizes in human units, and reports printed as text or JSON.

pub mod interrupt;
pub mod progress;
pub mod style;

use anyhow::Result;

pub use style::Paint;

/// Text for stdout: a reader that went away (`| head`) is not an error.
pub fn print(write: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>) -> Result<()> {
    match write(&mut std::io::stdout().lock()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(anyhow::anyhow!("writing to stdout: {e}")),
        _ => Ok(()),
    }
}

/// A report on stdout: pretty JSON with `--json`, else text (coloured on a
/// terminal).
pub fn report(
    json: bool,
    as_json: impl FnOnce() -> serde_json::Value,
    as_text: impl FnOnce(Paint) -> String,
) -> Result<()> {
    let text = if json {
        let mut s = serde_json::to_string_pretty(&as_json())?;
        s.push('\n');
        s
    } else {
        as_text(Paint::stdout())
    };
    print(|w| w.write_all(text.as_bytes()))
}

/// `1.6 MiB`.
pub fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// `2026-12-01T13:40:00Z`.
pub fn rfc3339(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, m, d, hh, mm, ss) = tote_net::sigv4::utc(secs);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
}
