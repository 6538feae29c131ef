//! The host's signing policy (`/etc/tote/trusted-keys`,
//! `TOTE_TRUSTED_KEYS`; see `tote_cache::trust`), enforced before any of
//! the bundle is used: a bundle that is unsigned, signed by no trusted
//! key, or whose signatures do not hold for its bytes is refused with exit
//! 119. Without a policy nothing is checked and nothing is read.
//!
//! What it guards against, and what it cannot, is in docs/security.md:
//! a replaced file brings its own stub, which checks nothing.

use std::path::Path;

use tote_cache::trust;
use tote_format::sign::Signature;

use crate::debug::Debug;
use crate::error::{Code, Failure, Result};
use crate::payload::Payload;

pub fn enforce(payload: &Payload, dbg: &Debug) -> Result<()> {
    let var = std::env::var_os(trust::POLICY_VAR);
    let policies = trust::host_policies(Path::new(trust::POLICY_FILE), var.as_deref())
        .map_err(|why| Failure::new(Code::Untrusted, why))?;
    if policies.is_empty() {
        return Ok(());
    }
    let actual = payload.layout.statement(payload.stub_sha256()?);
    let sigs = payload.layout.signed.as_deref();
    // Each signature verified at most once, whatever the policies.
    let mut known: Vec<(usize, bool)> = Vec::new();
    let mut valid = |s: &Signature| {
        let Some(all) = sigs else { return false };
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
    dbg.step(|| {
        let names: Vec<&str> = sigs.map_or(Vec::new(), |s| s.list.iter().map(|x| x.name.as_str()).collect());
        format!("signatures checked ({}), policy met", names.join(", "))
    });
    Ok(())
}
