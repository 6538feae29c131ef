//! What the signing commands share: a bundle's statement, keys read from
//! files, trust policies from the command line, the verdict and its JSON,
//! and minisign's detached signature format.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use tote_format::sign::{self, Policy, PublicKey, SecretKey, Statement, Status, Verdict};
use tote_format::Layout;

/// The statement of the bundle in `file` (its whole bytes, signed or not).
pub fn statement_of(layout: &Layout, file: &[u8]) -> Statement {
    let stub = &file[..layout.trailer.data_offset as usize];
    layout.statement(tote_format::Digest32(Sha256::digest(stub).into()))
}

/// Now, in Unix seconds.
pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A secret key from a file (what `tote key generate`, `nix key
/// generate-secret` and `nix-store --generate-binary-cache-key` write).
pub fn read_secret(path: &Path) -> Result<SecretKey> {
    let text = read_key_file(path)?;
    SecretKey::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn read_key_file(path: &Path) -> Result<String> {
    let meta = std::fs::metadata(path).with_context(|| format!("key {}", path.display()))?;
    if !meta.is_file() || meta.len() > 4096 {
        bail!("key {}: not a key file (one line, NAME:BASE64)", path.display());
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("key {}", path.display()))?;
    Ok(text.trim().to_string())
}

/// `--trusted-keys` values: each a key (`name:base64`) or a file of them
/// (the format of /etc/tote/trusted-keys). `sigs_needed` overrides the
/// files' count.
pub fn policy_from_args(values: &[String], sigs_needed: Option<usize>) -> Result<Policy> {
    let mut policy = Policy {
        keys: Vec::new(),
        sigs_needed: 1,
    };
    for v in values {
        let p = if v.contains(':') && !Path::new(v).exists() {
            sign::parse_policy(v)
                .map_err(|e| anyhow::anyhow!("--trusted-keys {v}: {}", e.trim_start_matches("line 1: ")))?
        } else {
            let text = std::fs::read_to_string(v).with_context(|| format!("--trusted-keys {v}"))?;
            sign::parse_policy(&text).map_err(|e| anyhow::anyhow!("--trusted-keys {v}: {e}"))?
        };
        policy.sigs_needed = policy.sigs_needed.max(p.sigs_needed);
        for k in p.keys {
            if !policy.keys.contains(&k) {
                policy.keys.push(k);
            }
        }
    }
    if let Some(n) = sigs_needed {
        policy.sigs_needed = n;
    }
    Ok(policy)
}

/// Every signature of a bundle checked under `policy` at `now`.
pub fn check(layout: &Layout, file: &[u8], policy: &Policy, now: u64) -> Verdict {
    let actual = statement_of(layout, file);
    let sigs = layout.signed.as_deref();
    policy.check(sigs, &actual, now, |s| {
        sigs.is_some_and(|all| s.verifies(&all.statement))
    })
}

/// The `signatures` member of the JSON of `tote inspect` and `tote verify`.
pub fn signers_json(verdict: &Verdict) -> serde_json::Value {
    serde_json::Value::Array(
        verdict
            .signers
            .iter()
            .map(|(s, status)| {
                serde_json::json!({
                    "name": s.name,
                    "key": s.public().to_string(),
                    "expires": (s.expires != 0).then_some(s.expires),
                    "status": status.as_str(),
                })
            })
            .collect(),
    )
}

/// One line per signer: `NAME (STATUS[, expires …]) KEY`. Without a
/// `policy`, a valid signature is `valid`: no key was trusted or not.
pub fn signer_lines(verdict: &Verdict, policy: bool) -> Vec<String> {
    verdict
        .signers
        .iter()
        .map(|(s, status)| {
            let expires = match s.expires {
                0 => String::new(),
                t => format!(", expires {}", date(t)),
            };
            let status = match status {
                Status::Untrusted if !policy => "valid",
                other => other.as_str(),
            };
            format!("{} ({status}{expires}) {}", s.name, s.public())
        })
        .collect()
}

/// Was any signature found invalid?
pub fn any_invalid(verdict: &Verdict) -> bool {
    verdict.signers.iter().any(|(_, st)| *st == Status::Invalid)
}

/// `YYYY-MM-DDTHH:MM:SSZ` of Unix seconds.
pub fn date(t: u64) -> String {
    crate::ui::rfc3339(UNIX_EPOCH + std::time::Duration::from_secs(t))
}

/// `--expires`: a date (`2027-06-30`), a UTC time (`2027-06-30T12:00:00Z`)
/// or a span from now (`90d`, `12h`).
pub fn parse_expiry(text: &str, now: u64) -> Result<u64> {
    let bad = || {
        anyhow::anyhow!(
            "--expires {text:?}: give a date (2027-06-30), a UTC time (2027-06-30T12:00:00Z) or a span (90d, 12h)"
        )
    };
    if let Some(n) = text.strip_suffix('d').and_then(|n| n.parse::<u64>().ok()) {
        return Ok(now + n.checked_mul(86400).ok_or_else(bad)?);
    }
    if let Some(n) = text.strip_suffix('h').and_then(|n| n.parse::<u64>().ok()) {
        return Ok(now + n.checked_mul(3600).ok_or_else(bad)?);
    }
    let (day, time) = match text.split_once('T') {
        Some((d, t)) => (d, t.strip_suffix('Z').ok_or_else(bad)?),
        None => (text, "00:00:00"),
    };
    let num = |s: &str| s.parse::<i64>().map_err(|_| bad());
    let d: Vec<&str> = day.split('-').collect();
    let t: Vec<&str> = time.split(':').collect();
    if d.len() != 3 || t.len() != 3 || d[0].len() != 4 {
        return Err(bad());
    }
    let (y, m, dd) = (num(d[0])?, num(d[1])?, num(d[2])?);
    let (hh, mm, ss) = (num(t[0])?, num(t[1])?, num(t[2])?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&dd) || hh > 23 || mm > 59 || ss > 59 {
        return Err(bad());
    }
    // days_from_civil.
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + dd - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let t = days * 86400 + hh * 3600 + mm * 60 + ss;
    let t = u64::try_from(t).map_err(|_| bad())?;
    if date(t)[..10] != *day {
        return Err(bad());
    }
    if t <= now {
        bail!("--expires {text}: that is in the past ({})", date(t));
    }
    Ok(t)
}

/// minisign's key id for a key: 8 bytes, derived from the public key, so
/// that `tote key public --minisign` and `tote sign --minisig` agree.
fn minisign_id(key: &PublicKey) -> [u8; 8] {
    let d = Sha256::digest([b"tote minisign key id\0".as_slice(), &key.key].concat());
    let mut id = [0u8; 8];
    id.copy_from_slice(&d[..8]);
    id
}

/// The public key in minisign's file form (`minisign -p FILE`; its second
/// line is what `minisign -P` takes).
pub fn minisign_public(key: &PublicKey) -> String {
    let raw = [b"Ed".as_slice(), &minisign_id(key), &key.key].concat();
    format!(
        "untrusted comment: minisign public key {} ({})\n{}\n",
        hex_id(key),
        key.name,
        sign::base64_encode(&raw)
    )
}

fn hex_id(key: &PublicKey) -> String {
    // minisign prints the id as the little-endian number, in upper-case hex.
    minisign_id(key).iter().rev().map(|b| format!("{b:02X}")).collect()
}

/// A detached minisign signature of `file`'s bytes (the prehashed
/// BLAKE2b-512 algorithm, minisign's default since 0.8).
pub fn minisig(key: &SecretKey, file: &[u8], file_name: &str) -> String {
    use blake2::{Blake2b512, Digest as _};
    let hash = Blake2b512::digest(file);
    let public = key.public();
    let sig = key.sign_raw(&hash);
    let trusted = format!("file:{file_name}\thashed\tsigned by {} with tote", key.name);
    let global = key.sign_raw(&[&sig[..], trusted.as_bytes()].concat());
    format!(
        "untrusted comment: signature from tote, key {}\n{}\ntrusted comment: {trusted}\n{}\n",
        key.name,
        sign::base64_encode(&[b"ED".as_slice(), &minisign_id(&public), &sig].concat()),
        sign::base64_encode(&global)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        for (t, s) in [
            (0, "1970-01-01T00:00:00Z"),
            (1_893_456_000, "2030-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
        ] {
            assert_eq!(date(t), s);
            assert_eq!(parse_expiry(s, 0).unwrap_or(0), t);
        }
        assert_eq!(parse_expiry("2030-01-01", 0).unwrap(), 1_893_456_000);
        assert_eq!(parse_expiry("90d", 100).unwrap(), 100 + 90 * 86400);
        for bad in [
            "2030-02-30",
            "2030-13-01",
            "tomorrow",
            "30-01-01",
            "2030-01-01T00:00:00",
        ] {
            assert!(parse_expiry(bad, 0).is_err(), "{bad}");
        }
        assert!(parse_expiry("2001-01-01", 1_893_456_000)
            .unwrap_err()
            .to_string()
            .contains("in the past"));
    }
}
