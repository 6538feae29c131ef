//! Building entries: one launch extracts a bundle while concurrent ones
//! wait for it (`.lock-<name>`); the tree is built in a locked staging
//! directory `.tmp-<name>-<pid>-<nanos>` (made as `.new-…`) and renamed
//! into place, with its
//! completion marker written last; whatever a killed launch left behind is
//! swept by the next cold start, once no live process holds its lock.

use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag};
use nix::sys::stat::Mode;
use nix::sys::statvfs::statvfs;

use crate::entry::{lookup, marker_text, Entry, Lookup, MARKER};
use crate::error::{Error, Result};
use crate::log::{step, Log};

/// Held while extracting a bundle: other launches of it wait, then find the
/// entry complete. Released when dropped or when the process dies.
pub struct ExtractLock {
    path: PathBuf,
    _lock: Flock<OwnedFd>,
}

impl Drop for ExtractLock {
    /// Remove the lock file, then release it. A launch still waiting on the
    /// unlinked file finds the entry complete; one that opens the path anew
    /// meanwhile may extract a second copy, which the commit protocol
    /// resolves. So the root keeps no lock files.
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Take `<root>/.lock-<name>`, waiting for a launch that holds it;
/// `waiting` is called first if it is held. The lock counts only if the
/// path still names the file locked (its holder, or a sweep, may have
/// removed it meanwhile); else it is taken anew.
pub fn lock_entry(root: &Path, name: &str, waiting: impl FnOnce()) -> Result<ExtractLock> {
    let path = root.join(format!(".lock-{name}"));
    let mut waiting = Some(waiting);
    loop {
        let fd = nix::fcntl::open(
            &path,
            OFlag::O_RDONLY | OFlag::O_CREAT | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| Error::sys("opening", &path, e))?;
        let lock = match Flock::lock(fd, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((fd, Errno::EWOULDBLOCK)) => {
                if let Some(w) = waiting.take() {
                    w();
                }
                Flock::lock(fd, FlockArg::LockExclusive).map_err(|(_, e)| Error::sys("locking", &path, e))?
            }
            Err((_, e)) => return Err(Error::sys("locking", &path, e)),
        };
        let held = nix::sys::stat::fstat(&*lock).map_err(|e| Error::sys("reading", &path, e))?;
        match nix::sys::stat::lstat(&path) {
            Ok(now) if (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino) => {
                return Ok(ExtractLock { path, _lock: lock })
            }
            Ok(_) | Err(Errno::ENOENT) => continue,
            Err(e) => return Err(Error::sys("reading", &path, e)),
        }
    }
}

/// Free space check before a first extraction: one line naming the
/// directory and how much it needs, instead of a half-written tree.
pub fn check_space(root: &Path, bytes: u64, inodes: u64) -> Result<()> {
    let Ok(vfs) = statvfs(root) else { return Ok(()) };
    let free = vfs.blocks_available() * vfs.fragment_size();
    let free_inodes = vfs.files_available();
    let short_of_inodes = vfs.files() != 0 && free_inodes < inodes;
    if free >= bytes && !short_of_inodes {
        return Ok(());
    }
    Err(Error::new(format!(
        "not enough space in {}: extracting this bundle needs {} and {inodes} inodes, {} and {free_inodes} \
         inodes are free; free space there or set TOTE_CACHE_DIR to a larger disk",
        root.display(),
        human(bytes),
        human(free)
    )))
}

/// `12.3 MiB`, with integers only (float formatting would cost the stub ~15 KB).
pub fn human(n: u64) -> String {
    let (unit, name) = if n >= 1 << 20 {
        (1u64 << 20, "MiB")
    } else {
        (1 << 10, "KiB")
    };
    let tenths = (n * 10 + unit / 2) / unit;
    format!("{}.{} {name}", tenths / 10, tenths % 10)
}

/// A directory being built: removed on drop unless committed.
pub struct Staging {
    pub dir: PathBuf,
    _lock: Flock<OwnedFd>,
    committed: bool,
}

impl Staging {
    /// A fresh, locked staging directory next to `final_name` in `parent`.
    ///
    /// Made as `.new-…` (which `sweep` removes whenever it finds one: it is
    /// empty), locked, then renamed to `.tmp-…`: a `.tmp-` directory is thus
    /// locked for as long as its builder lives, and a sweep never takes one
    /// between its making and its locking. A `.new-` directory swept away
    /// meanwhile is made again.
    pub fn new(parent: &Path, final_name: &str) -> Result<Staging> {
        let mut tries = 0;
        loop {
            match Staging::try_new(parent, final_name) {
                Err(e) if e.errno == Some(Errno::ENOENT) && tries < 100 => tries += 1,
                other => return other,
            }
        }
    }

    fn try_new(parent: &Path, final_name: &str) -> Result<Staging> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let unique = format!("{final_name}-{}-{nanos}", std::process::id());
        let new = parent.join(format!("{NEW}{unique}"));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&new)
            .map_err(|e| Error::io("creating", &new, &e))?;
        let locked = nix::fcntl::open(
            &new,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::sys("opening", &new, e))
        .and_then(|fd| {
            Flock::lock(fd, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| Error::sys("locking", &new, e))
        });
        let dir = parent.join(format!("{TMP}{unique}"));
        let renamed = locked.and_then(|lock| match fs::rename(&new, &dir) {
            Ok(()) => Ok(lock),
            Err(e) => Err(Error::io("renaming", &new, &e)),
        });
        match renamed {
            Ok(lock) => Ok(Staging {
                dir,
                _lock: lock,
                committed: false,
            }),
            Err(e) => {
                let _ = fs::remove_dir(&new);
                Err(e)
            }
        }
    }

    /// Rename into `dest`. Returns false if `dest` already exists (another
    /// launch won the race); the staging directory is then removed.
    pub fn commit(mut self, dest: &Path) -> Result<bool> {
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o755))
            .map_err(|e| Error::io("setting mode of", &self.dir, &e))?;
        match fs::rename(&self.dir, dest) {
            Ok(()) => {
                self.committed = true;
                Ok(true)
            }
            Err(e) if matches!(e.raw_os_error(), Some(n) if n == Errno::EEXIST as i32 || n == Errno::ENOTEMPTY as i32) => {
                Ok(false)
            }
            Err(e) => Err(Error::io("renaming into place", dest, &e)),
        }
    }
}

impl Staging {
    /// Remove it now, with what is in it; an error if anything stays (a
    /// later sweep retries).
    pub fn remove(mut self) -> Result<()> {
        self.committed = true;
        remove_tree(&self.dir).map_err(|e| Error::io("removing", &self.dir, &e))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = remove_tree(&self.dir);
        }
    }
}

/// Build a cache entry `name`: `fill` extracts into the given tree
/// directory; `files` (the bundle's `meta` and `index`) are written beside
/// it. Returns the complete entry (ours, or the one a concurrent launch
/// committed first).
pub fn create<E: From<Error>>(
    root: &Path,
    name: &str,
    boot: &str,
    files: &[(&str, &[u8])],
    fill: impl FnOnce(&Path) -> std::result::Result<(), E>,
) -> std::result::Result<Entry, E> {
    let id = name;
    let staging = Staging::new(root, id)?;
    let tree = staging.dir.join("tree");
    for d in [&tree, &staging.dir.join("mnt")] {
        fs::create_dir(d).map_err(|e| Error::io("creating", d, &e))?;
    }
    for (file, bytes) in files {
        let p = staging.dir.join(file);
        fs::write(&p, bytes).map_err(|e| Error::io("writing", &p, &e))?;
    }
    fill(&tree)?;
    let marker = staging.dir.join(MARKER);
    fs::write(&marker, marker_text(boot)).map_err(|e| Error::io("writing", &marker, &e))?;
    let dest = root.join(id);
    if !staging.commit(&dest)? {
        // Someone else committed first, or a broken entry sits there.
        if let Lookup::Complete(e) = lookup(root, id, boot) {
            return Ok(e);
        }
        discard(root, &dest)?;
        return Err(Error::new(format!(
            "cache entry {} is incomplete; it was removed, launch again",
            dest.display()
        ))
        .into());
    }
    Ok(Entry { dir: dest })
}

/// Move a broken entry out of the way (atomically) and delete it.
pub fn discard(root: &Path, dir: &Path) -> Result<()> {
    let trash = Staging::new(root, "trash")?;
    let target = trash.dir.join("old");
    match fs::rename(dir, &target) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("removing broken entry", dir, &e)),
    }
    // `trash` is removed on drop.
}

/// Staging directories: `.new-` while being made and locked, `.tmp-` once
/// locked.
const NEW: &str = ".new-";
const TMP: &str = ".tmp-";

/// Remove staging directories whose builder is gone (their lock is free),
/// and lock files nobody holds.
pub fn sweep(root: &Path, log: &dyn Log) {
    let Ok(rd) = fs::read_dir(root) else { return };
    for ent in rd.flatten() {
        let name = ent.file_name().into_vec();
        let path = ent.path();
        if name.starts_with(NEW.as_bytes()) {
            // Always empty: abandoned, or about to be renamed (its builder
            // then makes another).
            let _ = fs::remove_dir(&path);
            continue;
        }
        if name.starts_with(b".lock-") {
            // A killed launch's lock file: nobody holds it.
            if let Ok(fd) = nix::fcntl::open(
                &path,
                OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
                Mode::empty(),
            ) {
                if let Ok(lock) = Flock::lock(fd, FlockArg::LockExclusiveNonblock) {
                    let _ = fs::remove_file(&path);
                    drop(lock);
                }
            }
            continue;
        }
        if !name.starts_with(TMP.as_bytes()) {
            continue;
        }
        let Ok(fd) = nix::fcntl::open(
            &path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
            Mode::empty(),
        ) else {
            continue;
        };
        if let Ok(lock) = Flock::lock(fd, FlockArg::LockExclusiveNonblock) {
            let res = remove_tree(&path);
            step(log, || {
                format!(
                    "swept leftover {} ({})",
                    path.display(),
                    if res.is_ok() { "removed" } else { "failed" }
                )
            });
            drop(lock);
        }
    }
}

/// Remove `path` and everything below it, read-only or deep as cache trees
/// may be (see `beneath::remove`).
pub fn remove_tree(path: &Path) -> std::io::Result<()> {
    crate::beneath::remove(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::mark;
    use crate::log::Quiet;

    #[test]
    fn killed_builders_are_swept_live_ones_kept() {
        let t = tempfile::tempdir().unwrap();
        let live = Staging::new(t.path(), "abc").unwrap();
        let dead = t.path().join(".tmp-abc-1-2");
        fs::create_dir_all(dead.join("tree/ro")).unwrap();
        fs::set_permissions(dead.join("tree/ro"), fs::Permissions::from_mode(0o555)).unwrap();
        sweep(t.path(), &Quiet);
        assert!(!dead.exists());
        assert!(live.dir.exists());
    }

    #[test]
    fn an_entry_from_another_boot_is_not_complete_until_marked() {
        let t = tempfile::tempdir().unwrap();
        let e = create::<Error>(t.path(), "id", "boot-1", &[], |_| Ok(())).unwrap();
        assert!(matches!(lookup(t.path(), "id", "boot-1"), Lookup::Complete(_)));
        assert!(matches!(lookup(t.path(), "id", "boot-2"), Lookup::OtherBoot(_)));
        mark(&e, "boot-2").unwrap();
        assert!(matches!(lookup(t.path(), "id", "boot-2"), Lookup::Complete(_)));
        fs::write(e.dir.join(MARKER), b"tote cache entry v1\n").unwrap();
        assert!(matches!(lookup(t.path(), "id", "boot-2"), Lookup::Missing));
        fs::write(e.dir.join(MARKER), b"").unwrap();
        assert!(matches!(lookup(t.path(), "id", "boot-2"), Lookup::Missing));
        assert_eq!(crate::boot_id().len(), 36);
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(3 << 20), "3.0 MiB");
        assert_eq!(human((1 << 20) + (1 << 19)), "1.5 MiB");
    }

    #[test]
    fn the_extract_lock_serialises_and_leaves_no_file() {
        let t = tempfile::tempdir().unwrap();
        let first = lock_entry(t.path(), "id", || panic!("free: no wait")).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let root = t.path().to_path_buf();
        let waiter = std::thread::spawn(move || {
            let _second = lock_entry(&root, "id", || tx.send(()).unwrap()).unwrap();
        });
        rx.recv().unwrap(); // the second launch is waiting
        drop(first);
        waiter.join().unwrap();
        assert_eq!(fs::read_dir(t.path()).unwrap().count(), 0);
    }

    #[test]
    fn losing_the_race_keeps_the_winner() {
        let t = tempfile::tempdir().unwrap();
        let a = create::<Error>(t.path(), "id", "b1", &[("meta", b"m")], |tree| {
            fs::write(tree.join("f"), "a").unwrap();
            Ok(())
        })
        .unwrap();
        let b = create::<Error>(t.path(), "id", "b1", &[], |tree| {
            fs::write(tree.join("f"), "b").unwrap();
            Ok(())
        })
        .unwrap();
        assert_eq!(a.dir, b.dir);
        assert_eq!(fs::read(a.tree().join("f")).unwrap(), b"a");
        assert_eq!(fs::read(a.dir.join("meta")).unwrap(), b"m");
        let names: Vec<_> = fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["id"]);
    }
}
