//! Below a directory, never through a link: what a tree holds is made,
//! opened and changed through its parent directory's descriptor, reached
//! from the tree's root with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`
//! (component by component with `O_NOFOLLOW` where the kernel predates it,
//! 5.6), and then by its last name alone, never followed.
//!
//! A bundle's entries are all made by the extraction itself, so a link can
//! stand where a directory is expected only where the file system makes two
//! of the bundle's names one (case-insensitive or Unicode-normalizing file
//! systems: ext4 with casefold, SMB/CIFS, some FUSE file systems). There,
//! the second name finds the first in place: its creation fails with
//! `EEXIST`, and a path through a link fails with `ELOOP` or `ENOTDIR`.
//! Nothing is written through a link the bundle made, nor outside the tree.
//!
//! Every step is a system call on a descriptor and a single name, so no
//! path grows past `PATH_MAX`, however deep the tree or long its root.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

/// A tree's root directory.
pub struct Beneath {
    root: OwnedFd,
    at: PathBuf,
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// Once `openat2` is found missing (ENOSYS, or EPERM from an old seccomp
/// filter), the walk goes component by component.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

impl Beneath {
    /// The directory at `at` (not a link), as the root of a tree.
    pub fn open(at: &Path) -> nix::Result<Beneath> {
        let root = nix::fcntl::open(at, DIR_FLAGS, Mode::empty())?;
        Ok(Beneath {
            root,
            at: at.to_path_buf(),
        })
    }

    pub fn root(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    /// `rel`'s path, for messages.
    pub fn path(&self, rel: &[u8]) -> PathBuf {
        self.at.join(OsStr::from_bytes(rel))
    }

    /// The directory `dir` (relative to the root; empty: the root itself),
    /// reached without following a link.
    pub fn dir(&self, dir: &[u8]) -> nix::Result<OwnedFd> {
        if dir.is_empty() {
            return self
                .root
                .try_clone()
                .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0)));
        }
        if !NO_OPENAT2.load(Ordering::Relaxed) {
            let how = OpenHow::new()
                .flags(DIR_FLAGS)
                .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
            match nix::fcntl::openat2(&self.root, dir, how) {
                Err(Errno::ENOSYS | Errno::EPERM) => NO_OPENAT2.store(true, Ordering::Relaxed),
                done => return done,
            }
        }
        let mut fd: Option<OwnedFd> = None;
        for name in dir.split(|&c| c == b'/') {
            if name.is_empty() || name == b"." || name == b".." {
                return Err(Errno::EINVAL);
            }
            let at = fd.as_ref().map_or(self.root.as_fd(), AsFd::as_fd);
            fd = Some(nix::fcntl::openat(at, name, DIR_FLAGS, Mode::empty())?);
        }
        fd.ok_or(Errno::EINVAL)
    }
}

/// The directory `rel` is in, and `rel`'s last name.
pub fn split(rel: &[u8]) -> (&[u8], &[u8]) {
    match rel.iter().rposition(|&c| c == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (&[], rel),
    }
}

/// The last parent directory opened, kept for the entries that follow
/// (sorted entries share it with their siblings). One per thread.
#[derive(Default)]
pub struct Parents {
    last: Option<(Vec<u8>, OwnedFd)>,
}

impl Parents {
    /// The directory that holds `rel` (a clean relative path) below `b`,
    /// and `rel`'s last name.
    pub fn of<'p>(&mut self, b: &Beneath, rel: &'p [u8]) -> nix::Result<(BorrowedFd<'_>, &'p [u8])> {
        let (dir, name) = split(rel);
        let hit = matches!(&self.last, Some((d, _)) if d.as_slice() == dir);
        if !hit {
            self.last = Some((dir.to_vec(), b.dir(dir)?));
        }
        let fd = self.last.as_ref().map(|(_, fd)| fd.as_fd()).ok_or(Errno::EINVAL)?;
        Ok((fd, name))
    }

    /// Forget the kept directory (it was removed or renamed).
    pub fn forget(&mut self) {
        self.last = None;
    }
}

/// An errno that means "a name of the tree is not what was made there":
/// another of its names took it, on a file system that folds names.
pub fn is_collision(e: Errno) -> bool {
    matches!(e, Errno::EEXIST | Errno::ELOOP | Errno::ENOTDIR)
}

/// What a collision means, for one line of error.
pub const COLLISION: &str = "another entry of the bundle has this name here: the file system folds names \
                             (case-insensitive, or Unicode-normalizing); extract onto one that does not";

/// How deep `remove` descends before it moves a subtree up to the top
/// (so that no more directories than this are ever open at once).
const DEEP: usize = 64;

/// Remove `path` and everything below it, whatever its modes and however
/// deep: each directory is made writable before it is emptied (cache trees
/// are read-only), every step goes through a directory descriptor and one
/// name (no path grows past PATH_MAX), and a subtree more than `DEEP`
/// levels down is renamed into `path` itself first, then emptied from there.
pub fn remove(path: &Path) -> std::io::Result<()> {
    let io = |e: Errno| std::io::Error::from_raw_os_error(e as i32);
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
        Ok(m) if !m.is_dir() => return std::fs::remove_file(path),
        Ok(_) => {}
    }
    let top = nix::fcntl::open(path, DIR_FLAGS, Mode::empty()).map_err(io)?;
    let _ = nix::sys::stat::fchmod(&top, Mode::from_bits_truncate(0o700));
    let mut moved = 0usize;
    // Each round empties `top` down to DEEP levels; what lies deeper was
    // moved into `top` and goes in a later round.
    while empty(&top, &top, 0, &mut moved).map_err(io)? {}
    drop(top);
    std::fs::remove_dir(path)
}

/// Remove what `dir` holds; true if a deep subtree was moved into `top`.
fn empty(dir: &OwnedFd, top: &OwnedFd, depth: usize, moved: &mut usize) -> nix::Result<bool> {
    use nix::unistd::{unlinkat, UnlinkatFlags};
    let mut names = Vec::new();
    let mut listing = nix::dir::Dir::from_fd(nix::fcntl::openat(dir, ".", DIR_FLAGS, Mode::empty())?)?;
    for ent in listing.iter() {
        let ent = ent?;
        let name = ent.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    }
    let mut deeper = false;
    for name in names {
        let m = match nix::sys::stat::fstatat(dir, name.as_slice(), nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(m) => m,
            Err(Errno::ENOENT) => continue,
            Err(e) => return Err(e),
        };
        if m.st_mode & nix::libc::S_IFMT != nix::libc::S_IFDIR {
            match unlinkat(dir, name.as_slice(), UnlinkatFlags::NoRemoveDir) {
                Ok(()) | Err(Errno::ENOENT) => continue,
                Err(e) => return Err(e),
            }
        }
        let sub = nix::fcntl::openat(dir, name.as_slice(), DIR_FLAGS, Mode::empty())?;
        let _ = nix::sys::stat::fchmod(&sub, Mode::from_bits_truncate(0o700));
        if depth >= DEEP {
            // (Moving a directory to another parent rewrites its `..`: it
            // must be writable, as it now is.)
            *moved += 1;
            let to = format!(".deep-{moved}");
            nix::fcntl::renameat(dir, name.as_slice(), top, to.as_str())?;
            deeper = true;
            continue;
        }
        deeper |= empty(&sub, top, depth + 1, moved)?;
        drop(sub);
        match unlinkat(dir, name.as_slice(), UnlinkatFlags::RemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(deeper)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_are_reached_only_through_directories() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        let outside = t.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("a/l")).unwrap();
        std::os::unix::fs::symlink("b", root.join("a/rel")).unwrap();
        let b = Beneath::open(&root).unwrap();
        let mut p = Parents::default();
        let (fd, name) = p.of(&b, b"a/b/f").unwrap();
        assert_eq!(name, b"f");
        nix::fcntl::openat(
            fd,
            name,
            OFlag::O_CREAT | OFlag::O_WRONLY,
            Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        assert!(root.join("a/b/f").exists());
        // Through a link, absolute or relative: refused.
        for through in [&b"a/l/f"[..], b"a/rel/f"] {
            let e = p.of(&b, through).err().unwrap();
            assert!(is_collision(e), "{e}");
        }
        assert!(std::fs::read_dir(&outside).unwrap().next().is_none());
        // The root itself, and the component walk of old kernels.
        assert_eq!(p.of(&b, b"top").unwrap().1, b"top");
        NO_OPENAT2.store(true, Ordering::Relaxed);
        let mut p = Parents::default();
        assert!(p.of(&b, b"a/b/g").is_ok());
        assert!(is_collision(p.of(&b, b"a/l/g").err().unwrap()));
        assert_eq!(b.dir(b"a/../a").err(), Some(Errno::EINVAL));
        NO_OPENAT2.store(false, Ordering::Relaxed);
    }

    #[test]
    fn a_read_only_tree_deeper_than_path_max_is_removed() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let top = t.path().join("top");
        // 1,000 levels of 10-byte names: 11,000 bytes of path, read-only,
        // with a file and a link at every level.
        std::fs::create_dir(&top).unwrap();
        let mut dir = nix::fcntl::open(&top, DIR_FLAGS, Mode::empty()).unwrap();
        let mut all = vec![];
        for _ in 0..1000 {
            nix::sys::stat::mkdirat(&dir, "abcdefghij", Mode::from_bits_truncate(0o755)).unwrap();
            nix::fcntl::openat(
                &dir,
                "f",
                OFlag::O_CREAT | OFlag::O_WRONLY,
                Mode::from_bits_truncate(0o444),
            )
            .unwrap();
            nix::unistd::symlinkat("/etc/passwd", &dir, "l").unwrap();
            let sub = nix::fcntl::openat(&dir, "abcdefghij", DIR_FLAGS, Mode::empty()).unwrap();
            all.push(std::mem::replace(&mut dir, sub));
        }
        for d in all.iter().chain([&dir]) {
            nix::sys::stat::fchmod(d, Mode::from_bits_truncate(0o555)).unwrap();
        }
        drop((all, dir));
        std::fs::set_permissions(&top, std::fs::Permissions::from_mode(0o555)).unwrap();
        remove(&top).unwrap();
        assert!(std::fs::symlink_metadata(&top).is_err());
        assert!(std::fs::metadata("/etc/passwd").is_ok(), "a link was followed");
        // Nothing there, and a plain file: both fine.
        remove(&top).unwrap();
        std::fs::write(&top, b"x").unwrap();
        remove(&top).unwrap();
        assert!(std::fs::symlink_metadata(&top).is_err());
    }
}
