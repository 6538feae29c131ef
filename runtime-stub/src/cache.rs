//! The content-addressed cache: choosing a root, finding a complete entry,
//! extracting atomically, sweeping what killed launches left behind.
//!
//! Layout of an entry, `<root>/<bundle-id>/`:
//!   `tree/`  the bundle's files
//!   `mnt/`   an empty directory the launcher mounts its scratch root on
//!   `ok`     the completion marker, written last
//! An entry is built in `<root>/.tmp-<id>-<pid>-<nanos>/` (flock'ed by its
//! builder for as long as it works on it) and renamed into place; launches
//! that find no entry take `<root>/.lock-<id>` first, so one extracts while
//! the others wait for it. Readers trust only entries that have the marker.
//!
//! No file is fsynced: the marker records the boot id, and an entry marked
//! under another boot (the host may have lost power since) is verified in
//! full before its first use, then marked anew. The object store records
//! its boot id the same way and is emptied when it is not this boot's.

use std::ffi::OsString;
use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag};
use nix::sys::stat::Mode;
use nix::sys::statvfs::{statvfs, FsFlags};

use crate::debug::Debug;
use crate::error::{describe, Code, Failure, Result};

const MARKER: &str = "ok";
const MARKER_HEAD: &str = "tote cache entry v2\nboot ";

/// This boot's id (`/proc/sys/kernel/random/boot_id`), or `unknown`.
pub fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && !s.contains('\n'))
        .unwrap_or_else(|| "unknown".into())
}

fn marker_text(boot: &str) -> String {
    format!("{MARKER_HEAD}{boot}\n")
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

/// The environment variables that choose the cache root.
pub struct Env {
    pub cache_dir: Option<PathBuf>,
    pub xdg_cache_home: Option<OsString>,
    pub home: Option<OsString>,
    pub tmpdir: Option<OsString>,
}

/// Pick the first usable root. `TOTE_CACHE_DIR`, when set, is the only
/// candidate: an explicit choice that does not work is an error.
pub fn choose_root(env: &Env, uid: u32, dbg: &Debug) -> Result<PathBuf> {
    let mut refused = Vec::new();
    for (path, source) in candidates(env, uid) {
        match usable(&path, uid, source == "HOME") {
            Ok(()) => {
                dbg.step(|| format!("cache root {} (from {source})", path.display()));
                return Ok(path);
            }
            Err(why) => {
                dbg.step(|| format!("cache root {} skipped: {why}", path.display()));
                if source == "TOTE_CACHE_DIR" {
                    return Err(Failure::new(
                        Code::Cache,
                        format!("cache directory {} (TOTE_CACHE_DIR): {why}", path.display()),
                    ));
                }
                refused.push(format!("{}: {why}", path.display()));
            }
        }
    }
    Err(Failure::new(
        Code::Cache,
        format!(
            "no usable cache directory ({}); set TOTE_CACHE_DIR to a writable, exec-allowed directory",
            refused.join("; ")
        ),
    ))
}

/// Is `path` a directory we own, not writable by others, on a mount that
/// allows exec? Creates it (0700) if missing. With `parent_must_exist`, the
/// grandparent (e.g. `$HOME`) must already exist: never create a home.
fn usable(path: &Path, uid: u32, parent_must_exist: bool) -> std::result::Result<(), String> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if parent_must_exist {
                let home = path.parent().and_then(Path::parent).unwrap_or(Path::new("/"));
                if !home.is_dir() {
                    return Err(format!("{} does not exist", home.display()));
                }
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
    Ok(())
}

fn io_desc(e: &std::io::Error) -> String {
    e.raw_os_error()
        .map(|n| describe(Errno::from_raw(n)))
        .unwrap_or_else(|| e.to_string())
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

/// The entry for `id`, and whether it is complete as of this boot.
pub fn lookup(root: &Path, id: &str, boot: &str) -> Lookup {
    let dir = root.join(id);
    let Ok(text) = fs::read_to_string(dir.join(MARKER)) else {
        return Lookup::Missing;
    };
    match text.strip_prefix(MARKER_HEAD).and_then(|b| b.strip_suffix('\n')) {
        Some(b) if b == boot => Lookup::Complete(Entry { dir }),
        Some(b) if !b.is_empty() && !b.contains('\n') => Lookup::OtherBoot(Entry { dir }),
        _ => Lookup::Missing,
    }
}

/// Mark a verified entry complete under this boot (atomically).
pub fn mark(entry: &Entry, boot: &str) -> Result<()> {
    let tmp = entry.dir.join(format!("{MARKER}.tmp-{}", std::process::id()));
    let dest = entry.dir.join(MARKER);
    fs::write(&tmp, marker_text(boot)).map_err(|e| Failure::io(Code::Cache, "writing", &tmp, &e))?;
    fs::rename(&tmp, &dest).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Failure::io(Code::Cache, "writing", &dest, &e)
    })
}

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

/// Take `<root>/.lock-<id>`, waiting for a launch that holds it; `waiting`
/// is called first if it is held.
pub fn lock_entry(root: &Path, id: &str, waiting: impl FnOnce()) -> Result<ExtractLock> {
    let path = root.join(format!(".lock-{id}"));
    let fd = nix::fcntl::open(
        &path,
        OFlag::O_RDONLY | OFlag::O_CREAT | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::from_bits_truncate(0o600),
    )
    .map_err(|e| Failure::sys(Code::Cache, "opening", &path, e))?;
    let fd = match Flock::lock(fd, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => return Ok(ExtractLock { path, _lock: lock }),
        Err((fd, Errno::EWOULDBLOCK)) => fd,
        Err((_, e)) => return Err(Failure::sys(Code::Cache, "locking", &path, e)),
    };
    waiting();
    let lock =
        Flock::lock(fd, FlockArg::LockExclusive).map_err(|(_, e)| Failure::sys(Code::Cache, "locking", &path, e))?;
    Ok(ExtractLock { path, _lock: lock })
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
    Err(Failure::new(
        Code::Cache,
        format!(
            "not enough space in {}: extracting this bundle needs {} and {inodes} inodes, {} and {free_inodes} \
             inodes are free; free space there or set TOTE_CACHE_DIR to a larger disk",
            root.display(),
            human(bytes),
            human(free)
        ),
    ))
}

/// `12.3 MiB`, with integers only (see `debug`).
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
    pub fn new(parent: &Path, final_name: &str) -> Result<Staging> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = parent.join(format!(".tmp-{final_name}-{}-{nanos}", std::process::id()));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| Failure::io(Code::Cache, "creating", &dir, &e))?;
        let fd = nix::fcntl::open(
            &dir,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Failure::sys(Code::Cache, "opening", &dir, e))?;
        let lock = Flock::lock(fd, FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| Failure::sys(Code::Cache, "locking", &dir, e))?;
        Ok(Staging {
            dir,
            _lock: lock,
            committed: false,
        })
    }

    /// Rename into `dest`. Returns false if `dest` already exists (another
    /// launch won the race); the staging directory is then removed.
    pub fn commit(mut self, dest: &Path) -> Result<bool> {
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o755))
            .map_err(|e| Failure::io(Code::Cache, "setting mode of", &self.dir, &e))?;
        match fs::rename(&self.dir, dest) {
            Ok(()) => {
                self.committed = true;
                Ok(true)
            }
            Err(e) if matches!(e.raw_os_error(), Some(n) if n == Errno::EEXIST as i32 || n == Errno::ENOTEMPTY as i32) => {
                Ok(false)
            }
            Err(e) => Err(Failure::io(Code::Cache, "renaming into place", dest, &e)),
        }
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = remove_tree(&self.dir);
        }
    }
}

/// Build a cache entry: `fill` extracts into the given tree directory.
/// Returns the complete entry (ours, or the one a concurrent launch
/// committed first).
pub fn create(root: &Path, id: &str, boot: &str, fill: impl FnOnce(&Path) -> Result<()>) -> Result<Entry> {
    let staging = Staging::new(root, id)?;
    let tree = staging.dir.join("tree");
    for d in [&tree, &staging.dir.join("mnt")] {
        fs::create_dir(d).map_err(|e| Failure::io(Code::Cache, "creating", d, &e))?;
    }
    fill(&tree)?;
    let marker = staging.dir.join(MARKER);
    fs::write(&marker, marker_text(boot)).map_err(|e| Failure::io(Code::Cache, "writing", &marker, &e))?;
    let dest = root.join(id);
    if !staging.commit(&dest)? {
        // Someone else committed first, or a broken entry sits there.
        if let Lookup::Complete(e) = lookup(root, id, boot) {
            return Ok(e);
        }
        discard(root, &dest)?;
        return Err(Failure::new(
            Code::Cache,
            format!(
                "cache entry {} is incomplete; it was removed, launch again",
                dest.display()
            ),
        ));
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
        Err(e) => Err(Failure::io(Code::Cache, "removing broken entry", dir, &e)),
    }
    // `trash` is removed on drop.
}

/// Remove staging directories whose builder is gone (their lock is free).
pub fn sweep(root: &Path, dbg: &Debug) {
    let Ok(rd) = fs::read_dir(root) else { return };
    for ent in rd.flatten() {
        let name = ent.file_name().into_vec();
        let path = ent.path();
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
        if !name.starts_with(b".tmp-") {
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
            dbg.step(|| {
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

/// `rm -rf` for trees with read-only directories.
pub fn remove_tree(path: &Path) -> std::io::Result<()> {
    fn open_up(p: &Path) {
        if let Ok(m) = fs::symlink_metadata(p) {
            if m.is_dir() {
                let _ = fs::set_permissions(p, fs::Permissions::from_mode(0o700));
                if let Ok(rd) = fs::read_dir(p) {
                    for e in rd.flatten() {
                        open_up(&e.path());
                    }
                }
            }
        }
    }
    open_up(path);
    fs::remove_dir_all(path)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(usable(&home.join(".cache/tote"), uid, true).is_err());
        assert!(!home.exists());
    }

    #[test]
    fn others_writable_and_foreign_dirs_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let uid = nix::unistd::geteuid().as_raw();
        let d = t.path().join("c");
        assert!(usable(&d, uid, false).is_ok());
        fs::set_permissions(&d, fs::Permissions::from_mode(0o777)).unwrap();
        assert!(usable(&d, uid, false).unwrap_err().contains("writable"));
        fs::set_permissions(&d, fs::Permissions::from_mode(0o700)).unwrap();
        assert!(usable(&d, uid + 1, false).unwrap_err().contains("owned by"));
    }

    #[test]
    fn killed_builders_are_swept_live_ones_kept() {
        let t = tempfile::tempdir().unwrap();
        let live = Staging::new(t.path(), "abc").unwrap();
        let dead = t.path().join(".tmp-abc-1-2");
        fs::create_dir_all(dead.join("tree/ro")).unwrap();
        fs::set_permissions(dead.join("tree/ro"), fs::Permissions::from_mode(0o555)).unwrap();
        sweep(t.path(), &Debug::new(false));
        assert!(!dead.exists());
        assert!(live.dir.exists());
    }

    #[test]
    fn an_entry_from_another_boot_is_not_complete_until_marked() {
        let t = tempfile::tempdir().unwrap();
        let e = create(t.path(), "id", "boot-1", |_| Ok(())).unwrap();
        assert!(matches!(lookup(t.path(), "id", "boot-1"), Lookup::Complete(_)));
        assert!(matches!(lookup(t.path(), "id", "boot-2"), Lookup::OtherBoot(_)));
        mark(&e, "boot-2").unwrap();
        assert!(matches!(lookup(t.path(), "id", "boot-2"), Lookup::Complete(_)));
        fs::write(e.dir.join(MARKER), b"tote cache entry v1\n").unwrap();
        assert!(matches!(lookup(t.path(), "id", "boot-2"), Lookup::Missing));
        fs::write(e.dir.join(MARKER), b"").unwrap();
        assert!(matches!(lookup(t.path(), "id", "boot-2"), Lookup::Missing));
        assert_eq!(boot_id().len(), 36);
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
        let a = create(t.path(), "id", "b1", |tree| {
            fs::write(tree.join("f"), "a").unwrap();
            Ok(())
        })
        .unwrap();
        let b = create(t.path(), "id", "b1", |tree| {
            fs::write(tree.join("f"), "b").unwrap();
            Ok(())
        })
        .unwrap();
        assert_eq!(a.dir, b.dir);
        assert_eq!(fs::read(a.tree().join("f")).unwrap(), b"a");
        let names: Vec<_> = fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["id"]);
    }
}
