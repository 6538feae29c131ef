//! The short path of a relocated launch: `/tmp/` + 5 characters, as long
//! as `/nix/store`: a directory of this user's holding a link to each store
//! path of the entry extracted with that rewrite, locked by every launch
//! through it for as long as its program runs, so that aging `/tmp` skips
//! it (the mechanics, shared with `tote cache`: `tote_cache::short_path`).
//!
//! The short path is never one another user made or can change: a name is
//! used only if it is missing (then made, atomically) or already this
//! user's directory for this entry, in a `/tmp` that only its owners may
//! rename or delete in (sticky, or writable by no one else). Its names are
//! derived from the uid, the cache root and the bundle id, and tried in
//! order; a name taken by anyone or anything else is skipped and left as it
//! is, which costs an extraction for the next name. A name is chosen before
//! extracting (the entry's contents depend on it); once the entry is
//! pinned, the launch locks its short path, makes it again if `/tmp` was
//! cleaned, and repairs it if it is not sealed.

use std::ffi::OsStr;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use tote_cache::short_path::{self, Hold, State};

use crate::debug::Debug;
use crate::error::{Code, Failure, Result};

/// Where short paths live.
pub const DIR: &str = tote_cache::SHORT_DIR;
/// How many names a launch tries before it gives up.
const CANDIDATES: u32 = 16;
/// Characters of a short name.
const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";

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

/// A short path chosen for a launch.
pub struct Claimed {
    pub short: Vec<u8>,
    /// This launch made it (and removes it again if the launch fails before
    /// anything runs from it).
    made: bool,
}

impl Claimed {
    /// The launch failed before the short path was filled: remove it if
    /// this launch made it and nothing else filled it meanwhile.
    pub fn release(&self) {
        if self.made {
            let _ = std::fs::remove_dir(Path::new(OsStr::from_bytes(&self.short)));
        }
    }
}

/// The first candidate short path this launch can use for the entry whose
/// store directory `store(name)` gives and whose entry point is in store
/// path `marker`: this user's already, or made now (empty: `hold` fills it
/// once the entry exists).
pub fn claim(
    candidates: &[Vec<u8>],
    uid: u32,
    store: impl Fn(&[u8]) -> PathBuf,
    marker: &[u8],
    dbg: &Debug,
) -> Result<Claimed> {
    check_dir(uid)?;
    let mut taken = Vec::new();
    for c in candidates {
        let path = Path::new(OsStr::from_bytes(c));
        let want = store(c);
        for _ in 0..3 {
            match short_path::judge(&short_path::look(path, uid, &want, marker), uid, &want, marker) {
                State::Ours => {
                    dbg.step(|| format!("short path {} -> {}", path.display(), want.display()));
                    return Ok(Claimed {
                        short: c.clone(),
                        made: false,
                    });
                }
                State::Taken(why) => {
                    dbg.step(|| format!("short path {} skipped: {why}", path.display()));
                    taken.push(format!("{}: {why}", path.display()));
                    break;
                }
                // This user's, as launches before short-path directories
                // made it: a directory takes its place.
                State::OldLink => {
                    let _ = std::fs::remove_file(path);
                }
                State::Missing => match short_path::make(path) {
                    Ok(()) => {
                        dbg.step(|| format!("short path {} made -> {}", path.display(), want.display()));
                        return Ok(Claimed {
                            short: c.clone(),
                            made: true,
                        });
                    }
                    // Someone made it meanwhile: judge it again.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => {
                        return Err(Failure::io(
                            Code::Namespace,
                            "relocating: making the short path",
                            path,
                            &e,
                        ))
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

/// Lock the claimed short path `short` for the launch and its program,
/// complete (every store path of the entry at `store` linked), making it
/// again if it went meanwhile. Returns the lock's descriptor, kept open
/// across exec.
pub fn hold(short: &[u8], uid: u32, store: &Path, marker: &[u8], dbg: &Debug) -> Result<RawFd> {
    let path = Path::new(OsStr::from_bytes(short));
    let failed = |e: tote_cache::Error| Failure::new(Code::Namespace, format!("relocating: {}", e.message));
    for _ in 0..3 {
        match short_path::hold(path, uid, store, marker).map_err(failed)? {
            Hold::Held(held) => {
                if let Some(n) = held.repaired {
                    dbg.step(|| format!("short path {} filled: {n} links made, sealed", path.display()));
                }
                let fd = held.keep_across_exec();
                dbg.step(|| format!("short path {} locked (descriptor {fd})", path.display()));
                return Ok(fd);
            }
            // Cleaned away since it was claimed: made again.
            Hold::Gone => {
                claim(&[short.to_vec()], uid, |_| store.to_path_buf(), marker, dbg)?;
            }
            Hold::Taken(why) => {
                return Err(Failure::new(
                    Code::Namespace,
                    format!("relocating: the short path {} is taken ({why})", path.display()),
                ))
            }
        }
    }
    Err(Failure::new(
        Code::Namespace,
        format!("relocating: the short path {} keeps vanishing", path.display()),
    ))
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
}
