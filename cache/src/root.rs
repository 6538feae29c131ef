//! Where the cache lives: the first usable of `TOTE_CACHE_DIR` (then the
//! only candidate), `$XDG_CACHE_HOME/tote`, `$HOME/.cache/tote` (only if
//! `$HOME` exists), `$TMPDIR/tote-<uid>`, `/tmp/tote-<uid>`,
//! `/var/tmp/tote-<uid>`. A root must be a directory the user owns, not
//! writable by others, on a mount that allows exec and writes.

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::statvfs::{statvfs, FsFlags};

use crate::error::{describe, Error, Result};
use crate::log::{step, Log};

/// The environment variables that choose the cache root.
pub struct Env {
    pub cache_dir: Option<PathBuf>,
    pub xdg_cache_home: Option<OsString>,
    pub home: Option<OsString>,
    pub tmpdir: Option<OsString>,
}

impl Env {
    /// From this process's environment (empty values are unset).
    pub fn from_process() -> Env {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        Env {
            cache_dir: var("TOTE_CACHE_DIR").map(PathBuf::from),
            xdg_cache_home: var("XDG_CACHE_HOME"),
            home: var("HOME"),
            tmpdir: var("TMPDIR"),
        }
    }
}

/// Where the cache may live, in order of preference.
pub fn candidates(env: &Env, uid: u32) -> Vec<(PathBuf, &'static str)> {
    let mut out = Vec::new();
    if let Some(p) = env.cache_dir.as_ref() {
        out.push((p.clone(), "TOTE_CACHE_DIR"));
        return out;
    }
    let abs = |v: &Option<OsString>| v.as_ref().map(PathBuf::from).filter(|p| p.is_absolute());
    if let Some(x) = abs(&env.xdg_cache_home) {
        out.push((x.join("tote"), "XDG_CACHE_HOME"));
    }
    if let Some(h) = abs(&env.home) {
        out.push((h.join(".cache").join("tote"), "HOME"));
    }
    if let Some(t) = abs(&env.tmpdir) {
        out.push((t.join(format!("tote-{uid}")), "TMPDIR"));
    }
    out.push((PathBuf::from(format!("/tmp/tote-{uid}")), "/tmp"));
    out.push((PathBuf::from(format!("/var/tmp/tote-{uid}")), "/var/tmp"));
    out
}

/// Pick the first usable root, creating it (0700) if missing.
/// `TOTE_CACHE_DIR`, when set, is the only candidate: an explicit choice
/// that does not work is an error.
pub fn choose_root(env: &Env, uid: u32, log: &dyn Log) -> Result<PathBuf> {
    pick(env, uid, log, true).map(|(p, _)| p)
}

/// The root a launch by `uid` would choose, without making it: the path,
/// and whether it exists yet.
pub fn existing_root(env: &Env, uid: u32, log: &dyn Log) -> Result<(PathBuf, bool)> {
    pick(env, uid, log, false)
}

fn pick(env: &Env, uid: u32, log: &dyn Log, create: bool) -> Result<(PathBuf, bool)> {
    let mut refused = Vec::new();
    for (path, source) in candidates(env, uid) {
        match usable(&path, uid, source == "HOME", create) {
            Ok(exists) => {
                step(log, || format!("cache root {} (from {source})", path.display()));
                return Ok((path, exists));
            }
            Err(why) => {
                step(log, || format!("cache root {} skipped: {why}", path.display()));
                if source == "TOTE_CACHE_DIR" {
                    return Err(Error::new(format!(
                        "cache directory {} (TOTE_CACHE_DIR): {why}",
                        path.display()
                    )));
                }
                refused.push(format!("{}: {why}", path.display()));
            }
        }
    }
    Err(Error::new(format!(
        "no usable cache directory ({}); set TOTE_CACHE_DIR to a writable, exec-allowed directory",
        refused.join("; ")
    )))
}

/// Is `path` a directory we own, not writable by others, on a mount that
/// allows exec? Missing: made (0700) with `create`, else reported as
/// missing (`Ok(false)`). With `parent_must_exist`, the grandparent (e.g.
/// `$HOME`) must already exist: never create a home.
pub fn usable(path: &Path, uid: u32, parent_must_exist: bool, create: bool) -> std::result::Result<bool, String> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if parent_must_exist {
                let home = path.parent().and_then(Path::parent).unwrap_or(Path::new("/"));
                if !home.is_dir() {
                    return Err(format!("{} does not exist", home.display()));
                }
            }
            if !create {
                return Ok(false);
            }
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)
                .map_err(|e| format!("cannot create it: {}", io_desc(&e)))?;
            fs::symlink_metadata(path).map_err(|e| io_desc(&e))?
        }
        Err(e) => return Err(io_desc(&e)),
    };
    if !meta.file_type().is_dir() {
        return Err("not a directory (or a symlink)".into());
    }
    if meta.uid() != uid {
        return Err(format!("owned by uid {}, not {uid}", meta.uid()));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!("writable by group or others (mode {:o})", meta.mode() & 0o7777));
    }
    let vfs = statvfs(path).map_err(describe)?;
    if vfs.flags().contains(FsFlags::ST_NOEXEC) {
        return Err("on a noexec mount".into());
    }
    if vfs.flags().contains(FsFlags::ST_RDONLY) {
        return Err("on a read-only mount".into());
    }
    Ok(true)
}

pub(crate) fn io_desc(e: &std::io::Error) -> String {
    e.raw_os_error()
        .map(|n| describe(Errno::from_raw(n)))
        .unwrap_or_else(|| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn env() -> Env {
        Env {
            cache_dir: None,
            xdg_cache_home: None,
            home: None,
            tmpdir: None,
        }
    }

    #[test]
    fn candidate_order_and_nomad_home() {
        let mut e = env();
        e.home = Some("/nonexistent".into());
        e.tmpdir = Some("relative/ignored".into());
        let c: Vec<_> = candidates(&e, 65534).into_iter().map(|(p, _)| p).collect();
        assert_eq!(
            c,
            [
                PathBuf::from("/nonexistent/.cache/tote"),
                PathBuf::from("/tmp/tote-65534"),
                PathBuf::from("/var/tmp/tote-65534")
            ]
        );
        e.cache_dir = Some("/x".into());
        assert_eq!(candidates(&e, 1).len(), 1);
    }

    #[test]
    fn missing_home_is_skipped_not_created() {
        let t = tempfile::tempdir().unwrap();
        let home = t.path().join("nohome");
        let uid = nix::unistd::geteuid().as_raw();
        assert!(usable(&home.join(".cache/tote"), uid, true, true).is_err());
        assert!(!home.exists());
    }

    #[test]
    fn others_writable_and_foreign_dirs_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let uid = nix::unistd::geteuid().as_raw();
        let d = t.path().join("c");
        assert_eq!(usable(&d, uid, false, false), Ok(false), "missing, not made");
        assert!(!d.exists());
        assert_eq!(usable(&d, uid, false, true), Ok(true));
        fs::set_permissions(&d, fs::Permissions::from_mode(0o777)).unwrap();
        assert!(usable(&d, uid, false, true).unwrap_err().contains("writable"));
        fs::set_permissions(&d, fs::Permissions::from_mode(0o700)).unwrap();
        assert!(usable(&d, uid + 1, false, true).unwrap_err().contains("owned by"));
    }
}
