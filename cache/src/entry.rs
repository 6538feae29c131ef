//! Entries: their names, their completion marker (which names the boot it
//! was written under; its mtime is the entry's last use), finding one, and
//! pinning it for the life of a launch.
//!
//! No file is fsynced: an entry marked under another boot (the host may
//! have lost power since) is verified in full before its first use, then
//! marked anew.

use std::fs;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, IntoRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, OFlag};
use nix::sys::stat::Mode;
use nix::sys::time::TimeSpec;

use crate::error::{Error, Result};

/// The completion marker's name in an entry.
pub const MARKER: &str = "ok";
const MARKER_HEAD: &str = "tote cache entry v2\nboot ";
/// A warm start records its use at most this often.
const TOUCH_EVERY: Duration = Duration::from_secs(3600);

/// This boot's id (`/proc/sys/kernel/random/boot_id`), or `unknown`.
pub fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && !s.contains('\n'))
        .unwrap_or_else(|| "unknown".into())
}

pub(crate) fn marker_text(boot: &str) -> String {
    format!("{MARKER_HEAD}{boot}\n")
}

/// `<id>`, or `<id>-<short>` for the bundle relocated for `/tmp/<short>`.
pub fn entry_name(id: &str, short: Option<&str>) -> String {
    match short {
        None => id.to_string(),
        Some(s) => format!("{id}-{s}"),
    }
}

/// The bundle id and short name of an entry's directory name; None for
/// anything that is not an entry (`objects`, `mnt`, `.tmp-…`).
pub fn parse_entry_name(name: &str) -> Option<(&str, Option<&str>)> {
    let id = name.get(..64)?;
    if !id.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)) {
        return None;
    }
    match &name[64..] {
        "" => Some((id, None)),
        rest => {
            let short = rest.strip_prefix('-')?;
            (short.len() >= 2 && short.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()))
                .then_some((id, Some(short)))
        }
    }
}

/// A complete cache entry.
pub struct Entry {
    pub dir: PathBuf,
}

impl Entry {
    pub fn tree(&self) -> PathBuf {
        self.dir.join("tree")
    }
    pub fn mnt(&self) -> PathBuf {
        self.dir.join("mnt")
    }
}

/// What the cache holds for a bundle.
pub enum Lookup {
    /// Complete, marked under this boot.
    Complete(Entry),
    /// Marked complete under another boot: verify before use.
    OtherBoot(Entry),
    Missing,
}

/// The entry `name`, and whether it is complete as of this boot (a quick
/// look: nothing is locked; see [`pin`]).
pub fn lookup(root: &Path, name: &str, boot: &str) -> Lookup {
    let dir = root.join(name);
    match fs::read_to_string(dir.join(MARKER)) {
        Ok(text) => judge(&text, dir, boot),
        Err(_) => Lookup::Missing,
    }
}

fn judge(text: &str, dir: PathBuf, boot: &str) -> Lookup {
    match text.strip_prefix(MARKER_HEAD).and_then(|b| b.strip_suffix('\n')) {
        Some(b) if b == boot => Lookup::Complete(Entry { dir }),
        Some(b) if !b.is_empty() && !b.contains('\n') => Lookup::OtherBoot(Entry { dir }),
        _ => Lookup::Missing,
    }
}

/// A launch's hold on its entry: a shared `flock` on the entry's directory,
/// held as long as any process holds this descriptor (or a copy of it).
pub struct Pin {
    fd: OwnedFd,
}

impl Pin {
    /// Let the program this process execs (and its children) hold the pin:
    /// the descriptor stays open across exec. Returns its number.
    pub fn keep_across_exec(self) -> RawFd {
        let _ = nix::fcntl::fcntl(self.fd.as_fd(), FcntlArg::F_SETFD(FdFlag::empty()));
        self.fd.into_raw_fd()
    }
}

/// Whether pinning an entry counts as using it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// A launch: a complete entry last used over an hour ago is marked used
    /// now.
    Launch,
    /// A look (`tote cache verify`): its last use stays as it was.
    Look,
}

/// Find and pin the entry `name`: its lookup, with a pin unless missing.
/// Waits while a removal holds the entry; an entry whose marker is gone by
/// the time the pin is held (being removed, or removed) is missing.
pub fn pin(root: &Path, name: &str, boot: &str, using: Use) -> (Lookup, Option<Pin>) {
    let dir = root.join(name);
    let Ok(fd) = nix::fcntl::open(
        &dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::empty(),
    ) else {
        return (Lookup::Missing, None);
    };
    if flock_shared(&fd).is_err() {
        return (Lookup::Missing, None);
    }
    let Ok(marker) = nix::fcntl::openat(&fd, MARKER, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()) else {
        return (Lookup::Missing, None);
    };
    let mut file = fs::File::from(marker);
    let mut text = String::new();
    if file.read_to_string(&mut text).is_err() {
        return (Lookup::Missing, None);
    }
    let found = judge(&text, dir, boot);
    if let (Lookup::Complete(_), Use::Launch) = (&found, using) {
        touch_if_stale(&file);
    }
    (found, Some(Pin { fd }))
}

/// `flock(LOCK_SH)`, waiting while someone holds it exclusively; the lock
/// stays with the descriptor (nix's `Flock` guard would release it on drop).
#[allow(unsafe_code)]
pub(crate) fn flock_shared(fd: &OwnedFd) -> nix::Result<()> {
    loop {
        // SAFETY: flock on an open descriptor; it takes no pointers.
        let rc = unsafe { nix::libc::flock(fd.as_raw_fd(), nix::libc::LOCK_SH) };
        match Errno::result(rc) {
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Record a use: the marker's mtime becomes now, if it is over an hour old.
fn touch_if_stale(marker: &fs::File) {
    let Ok(m) = marker.metadata() else { return };
    let stale = m
        .modified()
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_none_or(|age| age >= TOUCH_EVERY);
    if stale {
        let now = TimeSpec::UTIME_NOW;
        let _ = nix::sys::stat::futimens(marker, &now, &now);
    }
}

/// When the entry at `dir` was last used (its marker's mtime).
pub fn last_used(dir: &Path) -> Option<SystemTime> {
    fs::metadata(dir.join(MARKER)).ok()?.modified().ok()
}

/// Mark a verified entry complete under this boot (atomically).
pub fn mark(entry: &Entry, boot: &str) -> Result<()> {
    let tmp = entry.dir.join(format!("{MARKER}.tmp-{}", std::process::id()));
    let dest = entry.dir.join(MARKER);
    fs::write(&tmp, marker_text(boot)).map_err(|e| Error::io("writing", &tmp, &e))?;
    fs::rename(&tmp, &dest).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io("writing", &dest, &e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn entry_names_and_what_is_not_one() {
        assert_eq!(parse_entry_name(ID), Some((ID, None)));
        let r = entry_name(ID, Some("ab1cd"));
        assert_eq!(parse_entry_name(&r), Some((ID, Some("ab1cd"))));
        for not in [
            "objects",
            "mnt",
            ".tmp-x",
            &ID[..63],
            &format!("{ID}-"),
            &format!("{ID}-A"),
            &format!("{ID}x"),
        ] {
            assert_eq!(parse_entry_name(not), None, "{not}");
        }
    }

    #[test]
    fn a_pin_holds_a_shared_lock_and_reads_the_marker_through_it() {
        let t = tempfile::tempdir().unwrap();
        let e = crate::create::<Error>(t.path(), ID, "boot-1", &[], |_| Ok(())).unwrap();
        let (found, held) = pin(t.path(), ID, "boot-1", Use::Launch);
        assert!(matches!(found, Lookup::Complete(_)));
        let held = held.unwrap();
        // Another shared lock is fine; an exclusive one is refused.
        let other = nix::fcntl::open(&e.dir, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty()).unwrap();
        let other = nix::fcntl::Flock::lock(other, nix::fcntl::FlockArg::LockExclusiveNonblock);
        assert!(matches!(other, Err((_, Errno::EWOULDBLOCK))));
        drop(held);
        let other = nix::fcntl::open(&e.dir, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty()).unwrap();
        assert!(nix::fcntl::Flock::lock(other, nix::fcntl::FlockArg::LockExclusiveNonblock).is_ok());
        // Another boot, and a marker gone: as lookup says.
        assert!(matches!(
            pin(t.path(), ID, "boot-2", Use::Launch).0,
            Lookup::OtherBoot(_)
        ));
        fs::remove_file(e.dir.join(MARKER)).unwrap();
        assert!(matches!(
            pin(t.path(), ID, "boot-1", Use::Launch),
            (Lookup::Missing, None)
        ));
        assert!(matches!(
            pin(t.path(), "nope", "boot-1", Use::Launch),
            (Lookup::Missing, None)
        ));
    }

    #[test]
    fn a_warm_pin_records_the_use_once_an_hour() {
        let t = tempfile::tempdir().unwrap();
        let e = crate::create::<Error>(t.path(), ID, "b", &[], |_| Ok(())).unwrap();
        let marker = e.dir.join(MARKER);
        let set = |secs_ago: u64| {
            let t = SystemTime::now() - Duration::from_secs(secs_ago);
            let ts = TimeSpec::from(t.duration_since(SystemTime::UNIX_EPOCH).unwrap());
            nix::sys::stat::utimensat(
                nix::fcntl::AT_FDCWD,
                &marker,
                &ts,
                &ts,
                nix::sys::stat::UtimensatFlags::NoFollowSymlink,
            )
            .unwrap();
        };
        let age = || SystemTime::now().duration_since(last_used(&e.dir).unwrap()).unwrap();
        set(1800);
        pin(t.path(), ID, "b", Use::Launch);
        assert!(age() >= Duration::from_secs(1790), "half an hour: not touched");
        set(7200);
        pin(t.path(), ID, "b", Use::Look);
        assert!(age() >= Duration::from_secs(7190), "a look is no use");
        pin(t.path(), ID, "b", Use::Launch);
        assert!(age() < Duration::from_secs(60), "two hours: touched");
    }
}
