//! How much a cache root may hold: `TOTE_CACHE_MAX` (a size) and
//! `TOTE_CACHE_MAX_AGE` (a duration), read on every launch and applied
//! after cold starts; `tote cache prune` takes the same spellings.
//!
//! Defaults: 10 GiB and 30 days. A laptop that runs a few bundles never
//! reaches them; a long-lived host that deploys a new version every day
//! keeps the versions of the last month, at most 10 GiB. `0` keeps nothing
//! but the entries in use; `off` removes the limit.

use std::time::Duration;

/// What trimming keeps a root within.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes the root may hold (None: any).
    pub max_size: Option<u64>,
    /// Unused for longer than this: removed (None: kept).
    pub max_age: Option<Duration>,
    /// Free space the file system must keep (a cold start that lacks room).
    pub min_free: Option<u64>,
}

impl Limits {
    pub const DEFAULT_SIZE: u64 = 10 << 30;
    pub const DEFAULT_AGE: Duration = Duration::from_secs(30 * 86400);

    /// `TOTE_CACHE_MAX` and `TOTE_CACHE_MAX_AGE`, or the defaults; the
    /// error is one line naming the variable and what it takes.
    pub fn from_env() -> Result<Limits, String> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let max_size = match var("TOTE_CACHE_MAX") {
            None => Some(Limits::DEFAULT_SIZE),
            Some(v) => parse_size(&v).map_err(|why| format!("TOTE_CACHE_MAX={v}: {why}"))?,
        };
        let max_age = match var("TOTE_CACHE_MAX_AGE") {
            None => Some(Limits::DEFAULT_AGE),
            Some(v) => parse_age(&v).map_err(|why| format!("TOTE_CACHE_MAX_AGE={v}: {why}"))?,
        };
        Ok(Limits {
            max_size,
            max_age,
            min_free: None,
        })
    }

    /// No limit at all.
    pub fn none() -> Limits {
        Limits {
            max_size: None,
            max_age: None,
            min_free: None,
        }
    }
}

/// `2G`, `500M`, `1.5GiB`, `4096`, `0` (bytes; units are powers of 1024),
/// or `off` (no limit).
pub fn parse_size(s: &str) -> Result<Option<u64>, String> {
    const HOW: &str = "expected a size such as 2G, 500M or 0, or off";
    let s = s.trim();
    if s.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let unit = unit.trim().to_ascii_uppercase();
    let shift = match unit.trim_end_matches("IB").trim_end_matches('B') {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(HOW.into()),
    };
    // Whole and fractional digits in integers (no float parsing: it is
    // 15 KB of the stub): `1.5` with unit G is (15 << 30) / 10.
    let (whole, frac) = num.split_once('.').unwrap_or((num, ""));
    if whole.is_empty() || frac.contains('.') || (num.contains('.') && frac.is_empty()) {
        return Err(HOW.into());
    }
    let digits = |d: &str| {
        d.bytes()
            .try_fold(0u128, |n, b| n.checked_mul(10)?.checked_add(u128::from(b - b'0')))
    };
    let (Some(w), Some(f)) = (digits(whole), digits(frac)) else {
        return Err(HOW.into());
    };
    let scale = 10u128.checked_pow(frac.len() as u32).ok_or_else(|| HOW.to_string())?;
    let bytes = w
        .checked_mul(scale)
        .and_then(|n| n.checked_add(f))
        .and_then(|n| n.checked_mul(1u128 << shift))
        .map(|n| n / scale)
        .ok_or_else(|| HOW.to_string())?;
    u64::try_from(bytes).map(Some).map_err(|_| HOW.into())
}

/// `30d`, `12h`, `90m`, `600s`, `2w`, `0`, or `off` (no limit).
pub fn parse_age(s: &str) -> Result<Option<Duration>, String> {
    const HOW: &str = "expected a duration such as 30d, 12h, 90m or 0, or off";
    let s = s.trim();
    if s.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    if s == "0" {
        return Ok(Some(Duration::ZERO));
    }
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| HOW.to_string())?;
    let secs = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        "w" => 7 * 86400,
        _ => return Err(HOW.into()),
    };
    n.checked_mul(secs)
        .map(|s| Some(Duration::from_secs(s)))
        .ok_or_else(|| HOW.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("2G"), Ok(Some(2 << 30)));
        assert_eq!(parse_size("500M"), Ok(Some(500 << 20)));
        assert_eq!(parse_size("1.5GiB"), Ok(Some(3 << 29)));
        assert_eq!(parse_size("4096"), Ok(Some(4096)));
        assert_eq!(parse_size("7k"), Ok(Some(7 << 10)));
        assert_eq!(parse_size("0"), Ok(Some(0)));
        assert_eq!(parse_size("off"), Ok(None));
        assert_eq!(parse_size("0.5K"), Ok(Some(512)));
        assert_eq!(parse_size("2.25 MiB"), Ok(Some(9 << 18)));
        for bad in [
            "abc",
            "-1G",
            "2X",
            "",
            "G",
            "1e3M",
            "99999999999T",
            ".5G",
            "1.G",
            "1.2.3M",
            "0x10",
        ] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ages() {
        assert_eq!(parse_age("30d"), Ok(Some(Duration::from_secs(30 * 86400))));
        assert_eq!(parse_age("12h"), Ok(Some(Duration::from_secs(12 * 3600))));
        assert_eq!(parse_age("2w"), Ok(Some(Duration::from_secs(14 * 86400))));
        assert_eq!(parse_age("0"), Ok(Some(Duration::ZERO)));
        assert_eq!(parse_age("OFF"), Ok(None));
        for bad in ["-1d", "1.5d", "d", "30", "30 days", "", "99999999999999999999d"] {
            assert!(parse_age(bad).is_err(), "{bad}");
        }
    }
}
