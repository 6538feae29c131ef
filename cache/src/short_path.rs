//! A relocated launch's short path, `/tmp/<name>`: a directory the user
//! owns holding one symlink per top-level entry of the store directory of
//! the entry relocated for it (`/tmp/abcde/<hash>-app` ->
//! `<root>/<id>-abcde/tree/nix/store/<hash>-app`), so that every rewritten
//! store reference resolves into that tree.
//!
//! Every launch through it holds a shared `flock` on the directory, which
//! the program inherits (as it inherits the entry's pin). systemd-tmpfiles
//! takes an exclusive lock on each directory before it ages what is in it,
//! and skips one whose lock is held, with everything below it
//! (tmpfiles.d(5), "Age"): aging `/tmp` never takes a short path from under
//! a program that runs from it. Unused, it ages like anything else, and the
//! next launch makes it again.
//!
//! A complete short path is *sealed*: its mtime's nanoseconds are set to
//! `SEAL_NSEC` once every link is in place. Adding or removing a link sets
//! the mtime anew, so a launch that finds another value checks every link
//! and makes what is missing, in place and under its lock (so that the
//! programs already running keep theirs).
//!
//! Removing an entry removes its short path too, but only where no launch
//! holds it and it holds nothing but this user's links into that entry.

use std::ffi::OsStr;
use std::fs;
use std::os::fd::{AsFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use nix::fcntl::{FcntlArg, FdFlag, Flock, FlockArg, OFlag};
use nix::sys::stat::futimens;
use nix::sys::time::TimeSpec;

use crate::error::{Error, Result};
use crate::relocate::SHORT_DIR;

/// The nanoseconds of a sealed short path's mtime (see the module's
/// comment). Any other value, including a file system's that keeps whole
/// seconds only, means: check the links.
pub const SEAL_NSEC: i64 = 746_174_650;

/// What stands at a short path, as far as choosing it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Nothing,
    Symlink {
        uid: u32,
        target: Option<PathBuf>,
    },
    Dir {
        uid: u32,
        mode: u32,
        /// Where its link named after the entry point's store path points.
        marker: Option<PathBuf>,
        /// Entries that are not this user's links into the wanted store
        /// directory (counted only when the marker is missing).
        strangers: usize,
    },
    Other,
}

/// What a launch may do with a short path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Nothing there: it can be made.
    Missing,
    /// This user's directory for this entry (complete or not).
    Ours,
    /// This user's symlink to this entry's store directory, as launches
    /// made short paths before they were directories: replaced by one.
    OldLink,
    /// Anything else: never used, never changed.
    Taken(String),
}

/// Judge what `look` saw at a short path, for a launch by `uid` whose entry
/// has its store directory at `store` and its entry point in store path
/// `marker`.
pub fn judge(seen: &Seen, uid: u32, store: &Path, marker: &[u8]) -> State {
    match seen {
        Seen::Nothing => State::Missing,
        Seen::Other => State::Taken("not a directory".into()),
        Seen::Symlink { uid: owner, .. } if *owner != uid => State::Taken(format!("a symlink of uid {owner}")),
        Seen::Symlink { target, .. } if target.as_deref() == Some(store) => State::OldLink,
        Seen::Symlink { target, .. } => State::Taken(format!(
            "a symlink to {}",
            target
                .as_deref()
                .map_or_else(|| "?".into(), |t| t.display().to_string())
        )),
        Seen::Dir { uid: owner, .. } if *owner != uid => State::Taken(format!("a directory of uid {owner}")),
        Seen::Dir { mode, .. } if mode & 0o022 != 0 => {
            State::Taken(format!("a directory others can write to (mode {:o})", mode & 0o7777))
        }
        Seen::Dir {
            marker: Some(points), ..
        } if *points == store.join(OsStr::from_bytes(marker)) => State::Ours,
        Seen::Dir {
            marker: Some(points), ..
        } => State::Taken(format!(
            "this user's short path for another bundle ({} -> {})",
            String::from_utf8_lossy(marker),
            points.display()
        )),
        Seen::Dir { strangers: 0, .. } => State::Ours,
        Seen::Dir { strangers, .. } => {
            State::Taken(format!("a directory of this user's holding {strangers} other entries"))
        }
    }
}

/// What stands at `path` (see `Seen`).
pub fn look(path: &Path, uid: u32, store: &Path, marker: &[u8]) -> Seen {
    let m = match fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Seen::Nothing,
        Err(_) => return Seen::Other,
        Ok(m) => m,
    };
    if m.file_type().is_symlink() {
        return Seen::Symlink {
            uid: m.uid(),
            target: fs::read_link(path).ok(),
        };
    }
    if !m.is_dir() {
        return Seen::Other;
    }
    let marker = fs::read_link(path.join(OsStr::from_bytes(marker))).ok();
    let strangers = if marker.is_some() {
        0
    } else {
        fs::read_dir(path).map_or(1, |rd| {
            rd.flatten()
                .filter(|e| {
                    let link = e.metadata().is_ok_and(|m| m.file_type().is_symlink() && m.uid() == uid);
                    !(link && fs::read_link(e.path()).is_ok_and(|t| t.starts_with(store)))
                })
                .count()
        })
    };
    Seen::Dir {
        uid: m.uid(),
        mode: m.mode(),
        marker,
        strangers,
    }
}

/// Make the short path `path`: an empty directory of this user's, not
/// writable by others whatever the umask. Fails with `EEXIST` if anything
/// is there.
pub fn make(path: &Path) -> std::io::Result<()> {
    fs::DirBuilder::new().mode(0o700).create(path)?;
    open_dir(path)?.set_permissions(fs::Permissions::from_mode(0o755))
}

/// The directory at `path`, never through a symlink.
fn open_dir(path: &Path) -> std::io::Result<fs::File> {
    fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW).bits())
        .open(path)
}

/// Does the link `path` point at `want`?
fn points_at(path: &Path, want: &Path) -> bool {
    fs::read_link(path).is_ok_and(|t| t.as_os_str().as_bytes() == want.as_os_str().as_bytes())
}

/// A short path this process holds a shared lock on.
pub struct Held {
    fd: OwnedFd,
    /// Links made because the directory was not sealed (None: it was).
    pub repaired: Option<usize>,
}

impl Held {
    /// Let the program this process execs (and its children) hold the
    /// lock: the descriptor stays open across exec. Returns its number.
    pub fn keep_across_exec(self) -> RawFd {
        let _ = nix::fcntl::fcntl(self.fd.as_fd(), FcntlArg::F_SETFD(FdFlag::empty()));
        self.fd.into_raw_fd()
    }
}

/// What `hold` found.
pub enum Hold {
    Held(Held),
    /// No directory there (a cleaner took it, maybe while this launch
    /// waited for the lock): make it again.
    Gone,
    /// Not this user's.
    Taken(String),
}

/// Lock the short path `path` (shared, waiting while a cleaner holds it),
/// and make sure it is complete: every entry of `store` linked, as checked
/// by its seal and its `marker` link, or by every link (then sealed anew).
pub fn hold(path: &Path, uid: u32, store: &Path, marker: &[u8]) -> Result<Hold> {
    let dir = match open_dir(path) {
        Ok(dir) => dir,
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(nix::libc::ENOENT | nix::libc::ENOTDIR | nix::libc::ELOOP)
            ) =>
        {
            return Ok(Hold::Gone)
        }
        Err(e) => return Err(Error::io("opening", path, &e)),
    };
    let fd = OwnedFd::from(dir);
    crate::entry::flock_shared(&fd).map_err(|e| Error::sys("locking", path, e))?;
    let dir = fs::File::from(fd);
    let st = dir.metadata().map_err(|e| Error::io("reading", path, &e))?;
    if st.nlink() == 0 {
        return Ok(Hold::Gone);
    }
    if st.uid() != uid || st.mode() & 0o022 != 0 {
        return Ok(Hold::Taken(format!(
            "a directory of uid {} (mode {:o})",
            st.uid(),
            st.mode() & 0o7777
        )));
    }
    let fd = OwnedFd::from(dir);
    let marker = OsStr::from_bytes(marker);
    if st.mtime_nsec() == SEAL_NSEC && points_at(&path.join(marker), &store.join(marker)) {
        return Ok(Hold::Held(Held { fd, repaired: None }));
    }
    let made = repair(path, uid, store)?;
    seal(&fd, path)?;
    Ok(Hold::Held(Held {
        fd,
        repaired: Some(made),
    }))
}

/// Link every entry of `store` into the short path `path` (locked by this
/// process) that is not linked yet; returns how many were made.
fn repair(path: &Path, uid: u32, store: &Path) -> Result<usize> {
    let mut made = 0;
    for e in fs::read_dir(store).map_err(|e| Error::io("listing", store, &e))? {
        let name = e.map_err(|e| Error::io("listing", store, &e))?.file_name();
        let (target, at) = (store.join(&name), path.join(&name));
        match fs::symlink_metadata(&at) {
            Ok(_) if points_at(&at, &target) => continue,
            // A link to elsewhere: only this user (or root) can have made
            // it here, in a directory of this user's.
            Ok(m) if m.file_type().is_symlink() && m.uid() == uid => {
                fs::remove_file(&at).map_err(|e| Error::io("replacing", &at, &e))?;
            }
            Ok(m) if m.file_type().is_symlink() => {
                return Err(Error::new(format!("{}: a link of uid {}", at.display(), m.uid())))
            }
            Ok(_) => return Err(Error::new(format!("{}: not a link", at.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("reading", &at, &e)),
        }
        match std::os::unix::fs::symlink(&target, &at) {
            Ok(()) => made += 1,
            // A launch beside this one made it meanwhile.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && points_at(&at, &target) => {}
            Err(e) => return Err(Error::io("linking", &at, &e)),
        }
    }
    Ok(made)
}

/// Mark the short path complete: mtime now, with `SEAL_NSEC`.
fn seal(dir: &OwnedFd, path: &Path) -> Result<()> {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mtime = TimeSpec::new(now as i64, SEAL_NSEC);
    futimens(dir, &TimeSpec::UTIME_OMIT, &mtime).map_err(|e| Error::sys("sealing", path, e))
}

/// The short path of entry `entry_dir` (relocated for `/tmp/<short>`),
/// once the entry is removed: removed too if no launch holds it and it
/// holds nothing but this user's links into the entry (or is this user's
/// symlink to it, as earlier launches made). Anything else stays.
pub fn remove(short: &str, entry_dir: &Path) {
    remove_in(Path::new(SHORT_DIR), short, entry_dir);
}

fn remove_in(parent: &Path, short: &str, entry_dir: &Path) {
    let path = parent.join(short);
    let uid = nix::unistd::geteuid().as_raw();
    let Ok(m) = fs::symlink_metadata(&path) else { return };
    if m.uid() != uid {
        return;
    }
    if m.file_type().is_symlink() {
        if fs::read_link(&path).is_ok_and(|t| t.starts_with(entry_dir)) {
            let _ = fs::remove_file(&path);
        }
        return;
    }
    let Ok(dir) = open_dir(&path) else { return };
    // Held by a launch (its program runs): it stays.
    let Ok(_lock) = Flock::lock(OwnedFd::from(dir), FlockArg::LockExclusiveNonblock) else {
        return;
    };
    let Ok(rd) = fs::read_dir(&path) else { return };
    let mut links = Vec::new();
    for e in rd {
        let Ok(e) = e else { return };
        let ours = e.metadata().is_ok_and(|m| m.file_type().is_symlink() && m.uid() == uid)
            && fs::read_link(e.path()).is_ok_and(|t| t.starts_with(entry_dir));
        if !ours {
            return;
        }
        links.push(e.file_name());
    }
    for name in links {
        let _ = fs::remove_file(path.join(name));
    }
    let _ = fs::remove_dir(&path);
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::errno::Errno;
    use nix::sys::stat::Mode;

    const UID: u32 = 1000;

    fn dir(uid: u32, mode: u32, marker: Option<&str>, strangers: usize) -> Seen {
        Seen::Dir {
            uid,
            mode,
            marker: marker.map(PathBuf::from),
            strangers,
        }
    }

    #[test]
    fn only_this_users_directory_for_this_entry_is_used() {
        let store = Path::new("/c/id-x/tree/nix/store");
        let m = b"aaa-app".as_slice();
        let j = |s: &Seen| judge(s, UID, store, m);
        assert_eq!(j(&Seen::Nothing), State::Missing);
        assert_eq!(
            j(&dir(UID, 0o40755, Some("/c/id-x/tree/nix/store/aaa-app"), 0)),
            State::Ours
        );
        // Made, not filled yet (or emptied by a cleaner).
        assert_eq!(j(&dir(UID, 0o40755, None, 0)), State::Ours);
        let taken = |s: Seen, why: &str| match j(&s) {
            State::Taken(w) => assert!(w.contains(why), "{w}"),
            other => panic!("{s:?}: {other:?}"),
        };
        taken(
            dir(UID + 1, 0o40755, Some("/c/id-x/tree/nix/store/aaa-app"), 0),
            "uid 1001",
        );
        taken(dir(0, 0o40755, None, 0), "uid 0");
        taken(dir(UID, 0o40775, None, 0), "others can write");
        taken(dir(UID, 0o41777, None, 0), "others can write");
        taken(
            dir(UID, 0o40755, Some("/c/id-y/tree/nix/store/aaa-app"), 0),
            "another bundle",
        );
        taken(dir(UID, 0o40755, None, 2), "holding 2 other entries");
        taken(Seen::Other, "not a directory");
        taken(
            Seen::Symlink {
                uid: UID + 1,
                target: Some(store.into()),
            },
            "symlink of uid",
        );
        taken(
            Seen::Symlink {
                uid: UID,
                target: Some("/etc".into()),
            },
            "a symlink to /etc",
        );
        assert_eq!(
            j(&Seen::Symlink {
                uid: UID,
                target: Some(store.into())
            }),
            State::OldLink
        );
    }

    /// A tree's store directory with `names`, and a place for short paths.
    fn setup(names: &[&str]) -> (tempfile::TempDir, PathBuf, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let store = t.path().join("root/id-abcde/tree/nix/store");
        for n in names {
            fs::create_dir_all(store.join(n)).unwrap();
        }
        let parent = t.path().join("tmp");
        fs::create_dir(&parent).unwrap();
        (t, store, parent)
    }

    fn held(h: Hold) -> Held {
        match h {
            Hold::Held(h) => h,
            Hold::Gone => panic!("gone"),
            Hold::Taken(w) => panic!("taken: {w}"),
        }
    }

    fn me() -> u32 {
        nix::unistd::geteuid().as_raw()
    }

    #[test]
    fn a_short_path_is_filled_sealed_and_repaired_in_place() {
        let (_t, store, parent) = setup(&["aaa-app", "bbb-lib", "ccc-data"]);
        let short = parent.join("abcde");
        assert!(matches!(hold(&short, me(), &store, b"aaa-app"), Ok(Hold::Gone)));
        make(&short).unwrap();
        assert_eq!(fs::metadata(&short).unwrap().permissions().mode() & 0o7777, 0o755);
        assert_eq!(make(&short).unwrap_err().kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(
            judge(&look(&short, me(), &store, b"aaa-app"), me(), &store, b"aaa-app"),
            State::Ours
        );
        let h = held(hold(&short, me(), &store, b"aaa-app").unwrap());
        assert_eq!(h.repaired, Some(3));
        for n in ["aaa-app", "bbb-lib", "ccc-data"] {
            assert_eq!(fs::read_link(short.join(n)).unwrap(), store.join(n));
            // Resolves into the tree.
            assert_eq!(
                fs::canonicalize(short.join(n)).unwrap(),
                fs::canonicalize(store.join(n)).unwrap()
            );
        }
        assert_eq!(fs::symlink_metadata(&short).unwrap().mtime_nsec(), SEAL_NSEC);
        assert_eq!(
            judge(&look(&short, me(), &store, b"aaa-app"), me(), &store, b"aaa-app"),
            State::Ours
        );
        // Sealed: the next launch checks nothing more.
        assert_eq!(held(hold(&short, me(), &store, b"aaa-app").unwrap()).repaired, None);
        // A link removed (a cleaner): the seal is broken, the link made again.
        fs::remove_file(short.join("bbb-lib")).unwrap();
        assert_ne!(fs::symlink_metadata(&short).unwrap().mtime_nsec(), SEAL_NSEC);
        assert_eq!(held(hold(&short, me(), &store, b"aaa-app").unwrap()).repaired, Some(1));
        assert_eq!(fs::read_link(short.join("bbb-lib")).unwrap(), store.join("bbb-lib"));
        // The seal alone is not enough: the marker must point here too.
        fs::remove_file(short.join("aaa-app")).unwrap();
        std::os::unix::fs::symlink("/elsewhere", short.join("aaa-app")).unwrap();
        let t = TimeSpec::new(5, SEAL_NSEC);
        nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            &short,
            &t,
            &t,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();
        assert_eq!(held(hold(&short, me(), &store, b"aaa-app").unwrap()).repaired, Some(1));
        assert_eq!(fs::read_link(short.join("aaa-app")).unwrap(), store.join("aaa-app"));
        // Something that is not a link where a link belongs: refused.
        fs::remove_file(short.join("ccc-data")).unwrap();
        fs::write(short.join("ccc-data"), b"").unwrap();
        let e = hold(&short, me(), &store, b"aaa-app").err().unwrap();
        assert!(e.message.contains("not a link"), "{e}");
    }

    #[test]
    fn a_held_short_path_stays_and_a_free_one_goes_with_its_entry() {
        let (t, store, parent) = setup(&["aaa-app", "bbb-lib"]);
        let entry = t.path().join("root/id-abcde");
        let short = parent.join("abcde");
        make(&short).unwrap();
        let h = held(hold(&short, me(), &store, b"aaa-app").unwrap());
        remove_in(&parent, "abcde", &entry);
        assert!(short.join("aaa-app").exists(), "held: kept");
        drop(h);
        // Something of another kind inside: kept.
        fs::write(short.join("note"), b"mine").unwrap();
        remove_in(&parent, "abcde", &entry);
        assert!(short.join("note").exists());
        fs::remove_file(short.join("note")).unwrap();
        // Links into another entry: kept.
        remove_in(&parent, "abcde", &t.path().join("root/id-other"));
        assert!(short.exists());
        remove_in(&parent, "abcde", &entry);
        assert!(fs::symlink_metadata(&short).is_err(), "removed");
        // Old-style: this user's symlink into the entry.
        std::os::unix::fs::symlink(&store, &short).unwrap();
        remove_in(&parent, "abcde", &entry);
        assert!(fs::symlink_metadata(&short).is_err());
    }

    #[test]
    fn a_lock_held_elsewhere_is_shared_and_keeps_the_directory_from_an_exclusive_locker() {
        let (_t, store, parent) = setup(&["aaa-app"]);
        let short = parent.join("abcde");
        make(&short).unwrap();
        let h = held(hold(&short, me(), &store, b"aaa-app").unwrap());
        // A second launch shares it.
        let h2 = held(hold(&short, me(), &store, b"aaa-app").unwrap());
        // What systemd-tmpfiles does before it ages a directory: refused.
        let fd = nix::fcntl::open(&short, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty()).unwrap();
        let fd = match Flock::lock(fd, FlockArg::LockExclusiveNonblock) {
            Err((fd, Errno::EWOULDBLOCK)) => fd,
            _ => panic!("an exclusive lock was granted while launches hold the short path"),
        };
        drop((h, h2));
        assert!(Flock::lock(fd, FlockArg::LockExclusiveNonblock).is_ok());
    }
}
