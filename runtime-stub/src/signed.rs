//! The host's signing policy (`/etc/tote/trusted-keys`,
//! `TOTE_TRUSTED_KEYS`; see `tote_cache::trust`), enforced before any of
//! the bundle is used: a bundle that is unsigned, signed by no trusted
//! key, or whose signatures do not hold for its bytes is refused with exit
//! 119. Without a policy nothing is checked and nothing is read.
//!
//! What it guards against, and what it cannot, is in docs/security.md:
//! a replaced file brings its own stub, which checks nothing.
//!
//! Checked once per file: a full check (the stub's SHA-256, every
//! signature) leaves a record in the cache root named by the file's
//! identity and its signature section (`tote_cache::trust::record_name`).
//! A later launch of the same, unchanged file finds it and checks only
//! the policy (trust, expiry, count). Sound because the record names the
//! file's inode with its mtime and ctime to the nanosecond (any write
//! changes the ctime, which no one can set back; a record is made only
//! for a file whose ctime is 2 s old), and its signature section: the
//! same bytes verify the same way. The records are as trusted as the
//! cache's entries, in the same root only its owner can write.

use std::path::Path;

use tote_cache::trust;
use tote_format::sign::Signature;

use crate::debug::Debug;
use crate::error::{Code, Failure, Result};
use crate::payload::Payload;

/// Enforce the host's policy; `root`, the cache root, holds records of
/// earlier checks (None: check in full, record nothing).
pub fn enforce(payload: &Payload, root: Option<&Path>, dbg: &Debug) -> Result<()> {
    let var = std::env::var_os(trust::POLICY_VAR);
    let policies = trust::host_policies(Path::new(trust::POLICY_FILE), var.as_deref())
        .map_err(|why| Failure::new(Code::Untrusted, why))?;
    if policies.is_empty() {
        return Ok(());
    }
    let sigs = payload.layout.signed.as_deref();
    let record = match (root, sigs, payload.file().metadata()) {
        (Some(root), Some(s), Ok(meta)) => {
            let section = tote_format::sign::encode_section(&s.statement, &s.list).unwrap_or_default();
            Some((root, trust::record_name(&meta, &section), meta))
        }
        _ => None,
    };
    let recorded = record
        .as_ref()
        .is_some_and(|(root, name, _)| trust::has_record(root, name));
    let actual = match sigs {
        Some(s) if recorded => s.statement.clone(),
        _ => payload.layout.statement(payload.stub_sha256()?),
    };
    // Each signature verified at most once, whatever the policies.
    let mut known: Vec<(usize, bool)> = Vec::new();
    let mut valid = |s: &Signature| {
        let Some(all) = sigs else { return false };
        if recorded {
            return true;
        }
        let at = all.list.iter().position(|x| x == s).unwrap_or(usize::MAX);
        if let Some(&(_, ok)) = known.iter().find(|(i, _)| *i == at) {
            return ok;
        }
        let ok = s.verifies(&all.statement);
        known.push((at, ok));
        ok
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    for source in &policies {
        let verdict = source.policy.check(sigs, &actual, now, &mut valid);
        if let Some(why) = verdict.refused {
            return Err(Failure::new(
                Code::Untrusted,
                format!(
                    "bundle {}: refused by the signing policy of {}: {why}",
                    payload.path.display(),
                    source.name
                ),
            ));
        }
    }
    // Every signature verified (or a policy would have refused an invalid one).
    if let (false, Some((root, name, meta))) = (recorded, &record) {
        trust::write_record(root, name, meta, now);
    }
    dbg.step(|| {
        let names: Vec<&str> = sigs.map_or(Vec::new(), |s| s.list.iter().map(|x| x.name.as_str()).collect());
        let how = if recorded {
            "as recorded for this file"
        } else {
            "in full"
        };
        format!("signatures checked {how} ({}), policy met", names.join(", "))
    });
    Ok(())
}
