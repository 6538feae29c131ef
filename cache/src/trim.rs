//! Keeping a root within its limits: decide as data ([`plan`]: a listing
//! and the limits in, removals out), then act in one place
//! ([`remove_entry`], [`remove_unlinked_objects`]).
//!
//! What goes first: entries without their marker (a killed removal's
//! leftovers), then every entry unused for longer than the age limit, then
//! the least recently used until the root is under its size limit (and the
//! file system has the free space asked for). An entry in use is never
//! planned, and never removed: removal holds an exclusive lock on the
//! entry's directory, which no pinned entry gives. Objects that no entry
//! links go last.
//!
//! Every step is safe to kill: the marker goes before the tree (an entry
//! without its marker is never used), the tree is renamed into a locked
//! staging directory before it is deleted (swept if the deleter dies), and
//! an object is unlinked only while no entry links it.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag};
use nix::sys::stat::Mode;
use nix::unistd::UnlinkatFlags;

use crate::build::Staging;
use crate::error::{Error, Result};
use crate::limits::Limits;
use crate::log::{step, Log};
use crate::scan::{scan, Listing};
use crate::{MARKER, OBJECTS};

/// One entry to remove, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    pub name: String,
    /// The bundle's name, where the entry keeps it.
    pub bundle: Option<String>,
    pub why: Why,
    /// What removing it frees, after the removals planned before it.
    pub frees: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// No completion marker: a removal or extraction that was killed.
    Incomplete,
    /// Unused for longer than the age limit.
    Unused,
    /// Least recently used while the root is over its size limit (or the
    /// file system short of the free space asked for).
    OverSize,
}

impl Why {
    /// For JSON: `incomplete`, `unused`, `over_size`.
    pub fn key(self) -> &'static str {
        match self {
            Why::Incomplete => "incomplete",
            Why::Unused => "unused",
            Why::OverSize => "over_size",
        }
    }

    pub fn text(self) -> &'static str {
        match self {
            Why::Incomplete => "incomplete",
            Why::Unused => "unused for longer than the age limit",
            Why::OverSize => "least recently used over the size limit",
        }
    }
}

/// The removals that bring `l` within `limits` at time `now`, in order.
pub fn plan(l: &Listing, limits: &Limits, now: SystemTime) -> Vec<Removal> {
    let mut refs: Vec<u32> = l.inodes.iter().map(|(_, n)| *n).collect();
    // Objects no entry links go anyway.
    let mut total = l.total - l.unlinked_objects;
    let mut free = l.free + l.unlinked_objects;
    let mut out = Vec::new();
    let mut remove = |i: usize, why: Why, refs: &mut Vec<u32>, total: &mut u64, free: &mut u64| {
        let e = &l.entries[i];
        let mut frees = e.fixed;
        for &n in &e.files {
            refs[n] -= 1;
            if refs[n] == 0 {
                frees += l.inodes[n].0;
            }
        }
        *total -= frees.min(*total);
        *free += frees;
        out.push(Removal {
            name: e.name.clone(),
            bundle: e.bundle.clone(),
            why,
            frees,
        });
    };
    let mut left: Vec<usize> = (0..l.entries.len()).filter(|&i| !l.entries[i].in_use).collect();
    // Least recently used first; never used (no marker) before anything.
    left.sort_unstable_by_key(|&i| (l.entries[i].last_used.unwrap_or(SystemTime::UNIX_EPOCH), i));
    let age = |i: usize| {
        l.entries[i]
            .last_used
            .and_then(|t| now.duration_since(t).ok())
            .unwrap_or(Duration::MAX)
    };
    left.retain(|&i| {
        let e = &l.entries[i];
        let why = if !e.complete {
            Some(Why::Incomplete)
        } else if limits.max_age.is_some_and(|max| age(i) > max) {
            Some(Why::Unused)
        } else {
            None
        };
        match why {
            Some(w) => {
                remove(i, w, &mut refs, &mut total, &mut free);
                false
            }
            None => true,
        }
    });
    let over = |total: u64, free: u64| {
        limits.max_size.is_some_and(|max| total > max) || limits.min_free.is_some_and(|min| free < min)
    };
    for i in left {
        if !over(total, free) {
            break;
        }
        remove(i, Why::OverSize, &mut refs, &mut total, &mut free);
    }
    out
}

/// Remove the entry `name`, unless a launch pins it (or it is gone):
/// returns whether it was removed. Removes its short path in `/tmp` too,
/// where no launch holds it and it holds nothing but links into the entry.
pub fn remove_entry(root: &Path, name: &str) -> Result<bool> {
    remove(root, name, false)
}

/// Is the entry `name` gone, or going: its directory locked by a removal
/// right now (which takes the marker first, so that the entry looks
/// incomplete until its tree is moved away)? A report leaves it out.
pub fn being_removed(root: &Path, name: &str) -> bool {
    let dir = root.join(name);
    match nix::fcntl::open(
        &dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::empty(),
    ) {
        Err(Errno::ENOENT) => true,
        Err(_) => false,
        Ok(fd) => matches!(
            Flock::lock(fd, FlockArg::LockSharedNonblock),
            Err((_, Errno::EWOULDBLOCK))
        ),
    }
}

/// `tote cache rm --force`: remove the entry `name` even while launches
/// pin it. Their programs keep the files they have open; any file they
/// open from now on is gone.
pub fn remove_entry_in_use(root: &Path, name: &str) -> Result<bool> {
    remove(root, name, true)
}

fn remove(root: &Path, name: &str, force: bool) -> Result<bool> {
    let dir = root.join(name);
    let fd = match nix::fcntl::open(
        &dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(false),
        Err(e) => return Err(Error::sys("opening", &dir, e)),
    };
    let dirfd = fd.try_clone().map_err(|e| Error::io("opening", &dir, &e))?;
    let lock = match Flock::lock(fd, FlockArg::LockExclusiveNonblock) {
        Ok(l) => Some(l),
        Err((_, Errno::EWOULDBLOCK)) if force => None,
        Err((_, Errno::EWOULDBLOCK)) => return Ok(false),
        Err((_, e)) => return Err(Error::sys("locking", &dir, e)),
    };
    // From here no launch accepts it: a pin reads the marker through the
    // directory it locked.
    match nix::unistd::unlinkat(&dirfd, MARKER, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(Error::sys("removing the marker of", &dir, e)),
    }
    // Out of the way under the lock; deleted after it (a launch waiting
    // for the entry need not wait for its files to go).
    // A file system too full for the staging directory: delete in place
    // (without its marker, nothing uses the entry).
    let trash = match Staging::new(root, "trash") {
        Ok(t) => Some(t),
        Err(e) if e.errno == Some(Errno::ENOSPC) || e.errno == Some(Errno::EDQUOT) => {
            crate::remove_tree(&dir).map_err(|e| Error::io("removing", &dir, &e))?;
            None
        }
        Err(e) => return Err(e),
    };
    if let Some(t) = &trash {
        match fs::rename(&dir, t.dir.join("old")) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("removing", &dir, &e)),
        }
    }
    if let Some((_, Some(short))) = crate::parse_entry_name(name) {
        crate::short_path::remove(short, &dir);
    }
    drop(lock);
    // Out of use now; what cannot be deleted is said (a sweep retries).
    if let Some(t) = trash {
        t.remove()?;
    }
    Ok(true)
}

/// Unlink every object no entry links (one link: the object store's own).
/// Returns how many, and their bytes.
pub fn remove_unlinked_objects(root: &Path) -> Result<(u64, u64)> {
    let dir = root.join(OBJECTS);
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(Error::io("listing", &dir, &e)),
    };
    let (mut n, mut bytes) = (0, 0);
    for e in rd.flatten() {
        let Ok(m) = e.metadata() else { continue };
        let object = crate::is_object_name(e.file_name().as_encoded_bytes()).is_some();
        if object && m.is_file() && m.nlink() == 1 && fs::remove_file(e.path()).is_ok() {
            n += 1;
            bytes += m.blocks() * 512;
        }
    }
    Ok((n, bytes))
}

/// What a trim did.
#[derive(Debug, Default, Clone)]
pub struct TrimReport {
    pub removed: Vec<Removal>,
    /// Kept because launches pin them (planned or not: an entry in use is
    /// never planned).
    pub kept_in_use: Vec<String>,
    /// Object files removed: those no entry linked before, and those only
    /// removed entries linked (a dry run: none).
    pub objects: u64,
    /// Bytes of objects no entry linked before the trim (removed with it;
    /// what removed entries free is in their `frees`).
    pub object_bytes: u64,
    /// The root before, and (planned) after.
    pub before: u64,
    pub after: u64,
}

/// Bring `root` within `limits`: one trim at a time per root (each holds an
/// exclusive `flock` on the root directory; a second waits its turn, then
/// plans from what the first left). A dry run plans without waiting.
pub fn trim(root: &Path, limits: &Limits, dry_run: bool, log: &dyn Log) -> Result<TrimReport> {
    let fd = nix::fcntl::open(
        root,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::empty(),
    )
    .map_err(|e| Error::sys("opening", root, e))?;
    let _lock = if dry_run {
        None
    } else {
        let l = match Flock::lock(fd, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((fd, Errno::EWOULDBLOCK)) => {
                step(log, || format!("trim {}: waiting for another trim", root.display()));
                Flock::lock(fd, FlockArg::LockExclusive).map_err(|(_, e)| Error::sys("locking", root, e))?
            }
            Err((_, e)) => return Err(Error::sys("locking", root, e)),
        };
        Some(l)
    };
    if !dry_run {
        // What killed launches and removals left: staging trees, locks.
        crate::sweep(root, log);
        crate::trust::trim_records(root);
    }
    let listing = scan(root)?;
    let planned = plan(&listing, limits, SystemTime::now());
    let mut report = TrimReport {
        kept_in_use: listing
            .entries
            .iter()
            .filter(|e| e.in_use)
            .map(|e| e.name.clone())
            .collect(),
        before: listing.total,
        after: listing.total - listing.unlinked_objects - planned.iter().map(|r| r.frees).sum::<u64>(),
        ..TrimReport::default()
    };
    step(log, || {
        format!(
            "trim {}: {} of {} entries to remove, {} now",
            root.display(),
            planned.len(),
            listing.entries.len(),
            crate::human(listing.total)
        )
    });
    if dry_run {
        report.object_bytes = listing.unlinked_objects;
        report.removed = planned;
        return Ok(report);
    }
    for r in planned {
        if remove_entry(root, &r.name)? {
            step(log, || format!("trim: removed {} ({})", r.name, r.why.text()));
            report.removed.push(r);
        } else {
            report.kept_in_use.push(r.name);
        }
    }
    let (n, _) = remove_unlinked_objects(root)?;
    report.objects = n;
    report.object_bytes = listing.unlinked_objects;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::Listed;

    const DAY: u64 = 86400;

    #[test]
    fn an_entry_locked_by_a_removal_or_gone_is_being_removed() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("e")).unwrap();
        assert!(!being_removed(t.path(), "e"));
        let fd = nix::fcntl::open(&t.path().join("e"), OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty()).unwrap();
        let shared = Flock::lock(fd, FlockArg::LockSharedNonblock).unwrap();
        assert!(!being_removed(t.path(), "e"), "a pin is not a removal");
        drop(shared);
        let fd = nix::fcntl::open(&t.path().join("e"), OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty()).unwrap();
        let removal = Flock::lock(fd, FlockArg::LockExclusiveNonblock).unwrap();
        assert!(being_removed(t.path(), "e"));
        drop(removal);
        assert!(!being_removed(t.path(), "e"));
        assert!(being_removed(t.path(), "gone"));
    }

    fn entry(name: &str, days_ago: Option<u64>, files: Vec<usize>, in_use: bool) -> Listed {
        Listed {
            name: name.into(),
            id: name.into(),
            short: None,
            blocks: false,
            bundle: None,
            complete: days_ago.is_some(),
            last_used: days_ago.map(|d| SystemTime::UNIX_EPOCH + Duration::from_secs(1000 * DAY - d * DAY)),
            in_use,
            pids: Vec::new(),
            own: 0,
            shared: 0,
            fixed: 10,
            files,
        }
    }

    /// Inodes: 0 (100 B, shared by a and b), 1 (1000 B, a only), 2 (500 B, b only), 3 (50 B, c).
    fn listing(entries: Vec<Listed>) -> Listing {
        let inodes = vec![(100, 2), (1000, 1), (500, 1), (50, 1)];
        let total = 30 + inodes.iter().map(|(b, _)| b).sum::<u64>() + 7;
        Listing {
            root: "/r".into(),
            entries,
            unlinked_objects: 7,
            total,
            free: 1 << 20,
            inodes,
        }
    }

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1000 * DAY)
    }

    fn names(r: &[Removal]) -> Vec<(&str, Why, u64)> {
        r.iter().map(|r| (r.name.as_str(), r.why, r.frees)).collect()
    }

    #[test]
    fn least_recently_used_first_until_under_the_size_limit() {
        let l = listing(vec![
            entry("a", Some(5), vec![0, 1], false),
            entry("b", Some(1), vec![0, 2], false),
            entry("c", Some(3), vec![3], false),
        ]);
        // 1687 bytes (7 of them objects no entry links), no age limit, at
        // most 1000: a goes (frees its fixed 10 and inode 1; inode 0 stays
        // with b): 670. At most 650: c goes too: 610.
        let limits = Limits {
            max_size: Some(1000),
            max_age: None,
            min_free: None,
        };
        assert_eq!(names(&plan(&l, &limits, now())), [("a", Why::OverSize, 1010)]);
        let limits = Limits {
            max_size: Some(650),
            ..limits
        };
        assert_eq!(
            names(&plan(&l, &limits, now())),
            [("a", Why::OverSize, 1010), ("c", Why::OverSize, 60)]
        );
        // Removing b after a frees the shared inode too.
        let limits = Limits {
            max_size: Some(0),
            ..limits
        };
        assert_eq!(
            names(&plan(&l, &limits, now())),
            [
                ("a", Why::OverSize, 1010),
                ("c", Why::OverSize, 60),
                ("b", Why::OverSize, 610)
            ]
        );
    }

    #[test]
    fn old_and_incomplete_entries_go_whatever_the_size_and_pinned_ones_never() {
        let l = listing(vec![
            entry("a", Some(40), vec![0, 1], true),
            entry("b", Some(31), vec![0, 2], false),
            entry("c", None, vec![3], false),
        ]);
        let limits = Limits {
            max_size: None,
            max_age: Some(Duration::from_secs(30 * DAY)),
            min_free: None,
        };
        assert_eq!(
            names(&plan(&l, &limits, now())),
            [("c", Why::Incomplete, 60), ("b", Why::Unused, 510)]
        );
        let limits = Limits {
            max_size: Some(0),
            max_age: None,
            min_free: None,
        };
        let p = plan(&l, &limits, now());
        assert!(!p.iter().any(|r| r.name == "a"), "in use: {p:?}");
        // No limits: only leftovers go.
        assert_eq!(names(&plan(&l, &Limits::none(), now())), [("c", Why::Incomplete, 60)]);
    }

    #[test]
    fn free_space_asked_for_removes_until_it_is_there() {
        let mut l = listing(vec![
            entry("a", Some(5), vec![0, 1], false),
            entry("b", Some(1), vec![0, 2], false),
        ]);
        l.free = 100;
        let limits = Limits {
            max_size: None,
            max_age: None,
            min_free: Some(1000),
        };
        // 100 + 7 (objects) + 1010 (a) >= 1000.
        assert_eq!(names(&plan(&l, &limits, now())), [("a", Why::OverSize, 1010)]);
    }
}
