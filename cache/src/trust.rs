//! The host's signing policy: which keys it trusts to sign the bundles it
//! runs (docs/security.md, "Signed bundles"). The runtime stub and `tote
//! run` read it the same way.
//!
//! Two sources, each met if present: the file `/etc/tote/trusted-keys`
//! (only when root owns it and its directory, and neither is writable by
//! group or others: anyone who could write it could widen it), and the
//! variable `TOTE_TRUSTED_KEYS`. A variable can add a requirement, never
//! take the file's away.

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use tote_format::sign::{parse_policy, Policy};

/// Where an administrator puts the host's trusted keys.
pub const POLICY_FILE: &str = "/etc/tote/trusted-keys";
/// The variable that names trusted keys (space separated, as Nix's
/// `trusted-public-keys`; `sigs-needed N` sets the count).
pub const POLICY_VAR: &str = "TOTE_TRUSTED_KEYS";
/// Larger policy files are refused (a key is 50-some bytes).
const MAX_POLICY: u64 = 1 << 20;

/// A policy and where it came from (for messages).
#[derive(Clone, Debug)]
pub struct Source {
    pub name: String,
    pub policy: Policy,
}

/// The policies in force: the file's (if it exists) and the variable's
/// (if set, even empty: then no key is trusted). Errors (an unsafe or
/// unreadable file, a bad key) are one line naming the file or variable
/// and, where it applies, the line.
pub fn host_policies(file: &Path, var: Option<&OsStr>) -> Result<Vec<Source>, String> {
    let mut out = Vec::new();
    if let Some(policy) = read_policy_file(file)? {
        out.push(Source {
            name: file.display().to_string(),
            policy,
        });
    }
    if let Some(v) = var {
        let text = v.to_str().ok_or_else(|| format!("{POLICY_VAR}: not UTF-8"))?;
        let policy = parse_policy(text).map_err(|e| format!("{POLICY_VAR}: {}", e.trim_start_matches("line 1: ")))?;
        out.push(Source {
            name: POLICY_VAR.into(),
            policy,
        });
    }
    Ok(out)
}

/// The file's policy, or None where it does not exist.
pub fn read_policy_file(path: &Path) -> Result<Option<Policy>, String> {
    let shown = path.display();
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(format!(
                "{shown}: cannot be read ({e}); a launch needs to read its trusted keys"
            ))
        }
    };
    if let Some(dir) = path.parent() {
        let meta = std::fs::symlink_metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        unsafe_owner(&meta, "its directory", dir)?;
    }
    let meta = file.metadata().map_err(|e| format!("{shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{shown}: not a regular file"));
    }
    unsafe_owner(&meta, "it", path)?;
    if meta.len() > MAX_POLICY {
        return Err(format!("{shown}: {} bytes, larger than any list of keys", meta.len()));
    }
    let mut text = String::new();
    (&file)
        .take(MAX_POLICY)
        .read_to_string(&mut text)
        .map_err(|e| format!("{shown}: {e}"))?;
    parse_policy(&text).map(Some).map_err(|e| format!("{shown}: {e}"))
}

/// Refuse a policy (or its directory) someone other than root could change.
fn unsafe_owner(meta: &std::fs::Metadata, what: &str, path: &Path) -> Result<(), String> {
    let mode = meta.mode() & 0o7777;
    let why = if meta.uid() != 0 {
        format!("{what} is owned by uid {}, not root", meta.uid())
    } else if mode & 0o020 != 0 {
        format!("{what} is writable by its group (mode {mode:04o})")
    } else if mode & 0o002 != 0 {
        format!("{what} is writable by others (mode {mode:04o})")
    } else {
        return Ok(());
    };
    Err(format!(
        "{}: refused as a signing policy: {why}; make it root's and chmod go-w {}",
        path.display(),
        path.display()
    ))
}

/// The directory of signature-check records in a cache root.
pub const RECORDS: &str = ".signed";
/// More records than this and the next trim removes them all.
const MAX_RECORDS: usize = 4096;

/// A record's name: what a check established about one file, by its
/// identity (`fstat`: device, inode, size, mtime and ctime to the
/// nanosecond) and its signature section. A record says: that file's stub
/// and trailer hashed to the statement the section records, and every
/// signature in the section verified over it.
pub fn record_name(meta: &std::fs::Metadata, section: &[u8]) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(b"tote signature check v1\0");
    for v in [
        meta.dev(),
        meta.ino(),
        meta.size(),
        meta.mtime() as u64,
        meta.mtime_nsec() as u64,
        meta.ctime() as u64,
        meta.ctime_nsec() as u64,
    ] {
        h.update(v.to_le_bytes());
    }
    h.update(section);
    tote_format::Digest32(h.finalize().into()).to_hex()
}

/// Is there a record of that name in `root`?
pub fn has_record(root: &Path, name: &str) -> bool {
    std::fs::symlink_metadata(root.join(RECORDS).join(name)).is_ok_and(|m| m.is_file())
}

/// Record a check, if the file's ctime is at least 2 s old: a write
/// within the same clock tick as the check would leave its ctime as it
/// was (git's "racy" rule). Failing to record only costs a later check.
pub fn write_record(root: &Path, name: &str, meta: &std::fs::Metadata, now: u64) {
    if (meta.ctime().max(0) as u64).saturating_add(2) > now {
        return;
    }
    let dir = root.join(RECORDS);
    let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(dir.join(name));
}

/// Remove the records when there are many (a trim): each is only a
/// check saved.
pub fn trim_records(root: &Path) {
    let dir = root.join(RECORDS);
    let Ok(rd) = std::fs::read_dir(&dir) else { return };
    if rd.take(MAX_RECORDS + 1).count() > MAX_RECORDS {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const KEY: &str = "k-1:11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";

    #[test]
    fn the_file_and_the_variable_both_apply() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("trusted-keys");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(&file, format!("# keys\n{KEY}\n")).unwrap();
        let uid = nix::unistd::geteuid().as_raw();
        let got = host_policies(&file, Some(OsStr::new("")));
        if uid != 0 {
            // Only root's file is a policy.
            assert!(got.unwrap_err().contains("not root"));
            return;
        }
        let got = got.unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].policy.keys.len(), 1);
        assert!(got[1].policy.keys.is_empty());
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o664)).unwrap();
        let err = host_policies(&file, None).unwrap_err();
        assert!(err.contains("writable by its group (mode 0664)"), "{err}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = host_policies(&file, None).unwrap_err();
        assert!(
            err.contains("its directory is writable by its group (mode 0777)"),
            "{err}"
        );
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(&file, format!("{KEY}\nnonsense\n")).unwrap();
        let err = host_policies(&file, None).unwrap_err();
        assert!(
            err.ends_with("line 2: a key is written NAME:BASE64 (as Nix writes it)"),
            "{err}"
        );
        assert!(host_policies(&dir.path().join("none"), None).unwrap().is_empty());
        let err = host_policies(&dir.path().join("none"), Some(OsStr::new("bad"))).unwrap_err();
        assert!(err.starts_with("TOTE_TRUSTED_KEYS: "), "{err}");
    }
}
