//! The short path of a relocated launch: `/tmp/` + 5 characters, as long
//! as `/nix/store`, a symlink to the store directory of the entry extracted
//! with that rewrite.
//!
//! The short path is never one another user made or can change: a name is
//! used only if it is missing (then made, atomically) or already a symlink
//! this user owns pointing at this entry, in a `/tmp` that only its owners
//! may rename or delete in (sticky, or writable by no one else). Its names
//! are derived from the uid, the cache root and the bundle id, and tried in
//! order; a name taken by anyone or anything else is skipped, which costs
//! an extraction for the next name. Every launch checks its name with one
//! `lstat` and one `readlink`, and makes it again if `/tmp` was cleaned.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::debug::Debug;
use crate::error::{Code, Failure, Result};

/// Where short paths live.
pub const DIR: &str = tote_cache::SHORT_DIR;
/// How many names a launch tries before it gives up.
const CANDIDATES: u32 = 16;
/// Characters of a short name.
const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
/// Short paths keep this modification time (2100-01-01), so that
/// age-based cleaning of /tmp (systemd-tmpfiles: 10 days) never takes
/// one from under a long-running program.
const FAR_FUTURE: i64 = 4_102_444_800;

/// The short paths a launch may use for store directory `store_len` bytes
/// long, in the order it tries them: `/tmp/` and `store_len - 5` characters.
pub fn candidates(uid: u32, root: &Path, id: &str, store_len: usize) -> Vec<Vec<u8>> {
    let chars = store_len.saturating_sub(DIR.len() + 1);
    (0..CANDIDATES)
        .map(|i| {
            let mut seed = b"tote short path\0".to_vec();
            seed.extend_from_slice(&uid.to_le_bytes());
            seed.extend_from_slice(root.as_os_str().as_bytes());
            seed.push(0);
            seed.extend_from_slice(id.as_bytes());
            seed.extend_from_slice(&i.to_le_bytes());
            let h = tote_format::sha256(&seed);
            let mut p = format!("{DIR}/").into_bytes();
            p.extend((0..chars).map(|k| ALPHABET[usize::from(h.0[k % 32]) % ALPHABET.len()]));
            p
        })
        .collect()
}

/// What stands at a candidate short path.
#[derive(Debug, PartialEq, Eq)]
pub enum State {
    /// Nothing: it can be made.
    Missing,
    /// This user's symlink to the entry: usable as it is.
    Ours,
    /// Anything else: never used.
    Taken(String),
}

/// What `lstat` found at a short path (`None`: nothing), with the target
/// of a symlink, judged for a launch by `uid` that wants it to point at
/// `want`.
pub fn judge(found: Option<(bool, u32)>, target: Option<&Path>, uid: u32, want: &Path) -> State {
    match found {
        None => State::Missing,
        Some((false, _)) => State::Taken("not a symlink".into()),
        Some((true, owner)) if owner != uid => State::Taken(format!("a symlink of uid {owner}")),
        Some((true, _)) if target != Some(want) => State::Taken(format!(
            "a symlink to {}",
            target.map_or_else(|| "?".into(), |t| t.display().to_string())
        )),
        Some((true, _)) => State::Ours,
    }
}

fn state(path: &Path, uid: u32, want: &Path) -> State {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::Missing,
        Err(e) => State::Taken(e.to_string()),
        Ok(m) => {
            let target = std::fs::read_link(path).ok();
            judge(
                Some((m.file_type().is_symlink(), m.uid())),
                target.as_deref(),
                uid,
                want,
            )
        }
    }
}

/// Can short paths in `/tmp` be trusted: nobody but their owner (and root)
/// can rename or remove them?
fn check_dir(uid: u32) -> Result<()> {
    let m =
        std::fs::metadata(DIR).map_err(|e| Failure::io(Code::Namespace, "relocating: reading", Path::new(DIR), &e))?;
    let others_write = m.mode() & 0o022 != 0;
    let sticky = m.mode() & 0o1000 != 0;
    if !m.is_dir() || (others_write && !sticky) || (m.uid() != 0 && m.uid() != uid) {
        return Err(Failure::new(
            Code::Namespace,
            format!(
                "relocating: {DIR} (mode {:o}, uid {}) lets others replace what is in it; a launch without \
                 namespaces needs a sticky or private {DIR}",
                m.mode() & 0o7777,
                m.uid()
            ),
        ));
    }
    Ok(())
}

/// The first candidate short path this launch can use for the store of
/// entry `entry(name)` (the target is `target(name)`): ours already, or
/// made now. The name is chosen before extracting, since the entry's
/// contents depend on it.
pub fn claim(candidates: &[Vec<u8>], uid: u32, target: impl Fn(&[u8]) -> PathBuf, dbg: &Debug) -> Result<Vec<u8>> {
    check_dir(uid)?;
    let mut taken = Vec::new();
    for c in candidates {
        let path = Path::new(OsStr::from_bytes(c));
        let want = target(c);
        for _ in 0..2 {
            match state(path, uid, &want) {
                State::Ours => {
                    dbg.step(|| format!("short path {} -> {}", path.display(), want.display()));
                    return Ok(c.clone());
                }
                State::Taken(why) => {
                    dbg.step(|| format!("short path {} skipped: {why}", path.display()));
                    taken.push(format!("{}: {why}", path.display()));
                    break;
                }
                State::Missing => match std::os::unix::fs::symlink(&want, path) {
                    Ok(()) => {
                        keep_fresh(path);
                        dbg.step(|| format!("short path {} made -> {}", path.display(), want.display()));
                        return Ok(c.clone());
                    }
                    // Someone made it meanwhile: judge it again.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                    Err(e) => {
                        return Err(Failure::io(
                            Code::Namespace,
                            "relocating: making the short path",
                            path,
                            &e,
                        ));
                    }
                },
            }
        }
    }
    Err(Failure::new(
        Code::Namespace,
        format!("relocating: every short path is taken ({})", taken.join("; ")),
    ))
}

/// Keep age-based cleaning of /tmp away from a short path.
fn keep_fresh(path: &Path) {
    let t = nix::sys::time::TimeSpec::new(FAR_FUTURE, 0);
    let _ = nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_are_as_long_as_the_store_directory_and_differ_by_user_root_and_bundle() {
        let c = candidates(1000, Path::new("/home/u/.cache/tote"), "abc", 10);
        assert_eq!(c.len(), CANDIDATES as usize);
        for p in &c {
            assert_eq!(p.len(), b"/nix/store".len());
            assert!(p.starts_with(b"/tmp/"));
            assert!(p[5..].iter().all(|b| ALPHABET.contains(b)));
        }
        assert_ne!(c[0], c[1]);
        assert_eq!(c, candidates(1000, Path::new("/home/u/.cache/tote"), "abc", 10));
        assert_ne!(c[0], candidates(1001, Path::new("/home/u/.cache/tote"), "abc", 10)[0]);
        assert_ne!(c[0], candidates(1000, Path::new("/tmp/tote-1000"), "abc", 10)[0]);
        assert_ne!(c[0], candidates(1000, Path::new("/home/u/.cache/tote"), "abd", 10)[0]);
        assert_eq!(candidates(0, Path::new("/r"), "x", 13)[0].len(), 13);
    }

    #[test]
    fn only_our_own_symlink_to_the_entry_is_used() {
        let want = Path::new("/c/id-x/tree/nix/store");
        assert_eq!(judge(None, None, 7, want), State::Missing);
        assert_eq!(judge(Some((true, 7)), Some(want), 7, want), State::Ours);
        assert!(matches!(judge(Some((false, 7)), None, 7, want), State::Taken(w) if w == "not a symlink"));
        assert!(matches!(judge(Some((true, 8)), Some(want), 7, want), State::Taken(w) if w.contains("uid 8")));
        assert!(
            matches!(judge(Some((true, 7)), Some(Path::new("/elsewhere")), 7, want), State::Taken(w) if w.contains("/elsewhere"))
        );
    }
}
