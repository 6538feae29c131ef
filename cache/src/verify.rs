//! Checking a cache entry against the bundle's index, in full: every entry
//! present with its kind, mode, mtime, size and symlink target, nothing
//! else in the tree, and every file's SHA-256. Done once for an entry
//! marked complete under another boot (the host may have lost power before
//! the page cache reached the disk) and on every launch with `TOTE_VERIFY=1`.
//! A warm start otherwise checks only the entry's marker (see the README).
//! A relocated tree is checked as it was written: symlink targets and file
//! contents rewritten at exactly the store references the index records.

use std::fs;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::Mode;

use sha2::{Digest, Sha256};
use tote_format::{Entry, EntryKind, Index};

use crate::beneath::{Beneath, Parents};
use crate::relocate::Relocate;

/// Permission bits of what gets extracted.
#[derive(Debug, Clone, Copy)]
pub struct Modes {
    pub file: u32,
    pub exec: u32,
    /// Directories are made 0755 and set to this at the end.
    pub dir: u32,
}

impl Modes {
    /// Cache entries are read-only, like a Nix store.
    pub const CACHE: Modes = Modes {
        file: 0o444,
        exec: 0o555,
        dir: 0o555,
    };
    /// `TOTE_EXTRACT`: the user's own copy, removable with `rm -r`.
    pub const USER: Modes = Modes {
        file: 0o644,
        exec: 0o755,
        dir: 0o755,
    };

    pub fn of(&self, executable: bool) -> u32 {
        if executable {
            self.exec
        } else {
            self.file
        }
    }
}

/// The first difference found.
#[derive(Debug)]
pub struct Mismatch {
    /// Path inside the tree, relative.
    pub path: String,
    pub what: String,
}

impl Mismatch {
    fn new(path: &[u8], what: impl Into<String>) -> Mismatch {
        Mismatch {
            path: String::from_utf8_lossy(path).into_owned(),
            what: what.into(),
        }
    }
}

/// Compare `tree` with `index` (extracted with `modes`, relocated with
/// `relocate`). Everything is read through directory descriptors, never
/// following a link: a tree of any depth below a root of any length.
pub fn tree(
    index: &Index,
    tree: &Path,
    modes: Modes,
    threads: usize,
    relocate: Option<Relocate<'_>>,
) -> Result<(), Mismatch> {
    let unreadable = |p: &[u8], e: Errno| Mismatch::new(p, format!("cannot be read ({})", crate::describe(e)));
    let b = Beneath::open(tree).map_err(|e| unreadable(b"", e))?;
    let mut found = Vec::with_capacity(index.entries.len());
    walk(b.root(), &[], &mut found)?;
    found.sort_unstable(); // paths are unique
    for (i, e) in index.entries.iter().enumerate() {
        match found.get(i) {
            Some(p) if *p == e.path => {}
            Some(p) if *p < e.path => return Err(Mismatch::new(p, "is not in the bundle")),
            _ => return Err(Mismatch::new(&e.path, "is missing")),
        }
    }
    if let Some(extra) = found.get(index.entries.len()) {
        return Err(Mismatch::new(extra, "is not in the bundle"));
    }
    let mut parents = Parents::default();
    for e in &index.entries {
        let (dir, name) = parents.of(&b, &e.path).map_err(|err| unreadable(&e.path, err))?;
        check_metadata(e, dir, name, modes, relocate)?;
    }
    hash_files(index, &b, threads, relocate)
}

/// Every path below directory `dir`, relative (after `prefix`), without
/// following links; no deeper than a bundle's tree can be.
fn walk(dir: BorrowedFd<'_>, prefix: &[u8], out: &mut Vec<Vec<u8>>) -> Result<(), Mismatch> {
    let unreadable = |p: &[u8], e: Errno| Mismatch::new(p, format!("cannot be read ({})", crate::describe(e)));
    let depth = if prefix.is_empty() {
        0
    } else {
        prefix.split(|&c| c == b'/').count()
    };
    if depth >= tote_format::MAX_DEPTH {
        return Err(Mismatch::new(prefix, "is nested deeper than a bundle's tree can be"));
    }
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut listing =
        nix::dir::Dir::from_fd(nix::fcntl::openat(dir, ".", flags, Mode::empty()).map_err(|e| unreadable(prefix, e))?)
            .map_err(|e| unreadable(prefix, e))?;
    let mut subdirs = Vec::new();
    for ent in listing.iter() {
        let ent = ent.map_err(|e| unreadable(prefix, e))?;
        let name = ent.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let mut p = prefix.to_vec();
        if !p.is_empty() {
            p.push(b'/');
        }
        p.extend_from_slice(name);
        let is_dir = match ent.file_type() {
            Some(t) => t == nix::dir::Type::Directory,
            None => nix::sys::stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)
                .is_ok_and(|m| m.st_mode & nix::libc::S_IFMT == nix::libc::S_IFDIR),
        };
        if is_dir {
            subdirs.push((name.to_vec(), p.clone()));
        }
        out.push(p);
    }
    for (name, p) in subdirs {
        let sub = nix::fcntl::openat(dir, name.as_slice(), flags, Mode::empty()).map_err(|e| unreadable(&p, e))?;
        walk(sub.as_fd(), &p, out)?;
    }
    Ok(())
}

fn check_metadata(
    e: &Entry,
    dir: BorrowedFd<'_>,
    name: &[u8],
    modes: Modes,
    relocate: Option<Relocate<'_>>,
) -> Result<(), Mismatch> {
    let unreadable = |err: Errno| Mismatch::new(&e.path, format!("cannot be read ({})", crate::describe(err)));
    let m = nix::sys::stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(unreadable)?;
    let mode = m.st_mode & 0o7777;
    let kind = m.st_mode & nix::libc::S_IFMT;
    let (kind_ok, want_mode) = match &e.kind {
        EntryKind::Dir => (kind == nix::libc::S_IFDIR, Some(modes.dir)),
        EntryKind::File { executable, size, .. } => {
            let is_file = kind == nix::libc::S_IFREG;
            if is_file && m.st_size as u64 != *size {
                return Err(Mismatch::new(&e.path, format!("is {} bytes, not {size}", m.st_size)));
            }
            (is_file, Some(if *executable { modes.exec } else { modes.file }))
        }
        EntryKind::Symlink { target } => {
            let is_link = kind == nix::libc::S_IFLNK;
            if is_link {
                let t = nix::fcntl::readlinkat(dir, name).map_err(unreadable)?;
                let want = relocate.map_or_else(|| target.clone(), |r| r.target(target));
                if t.as_bytes() != want.as_slice() {
                    return Err(Mismatch::new(&e.path, "points elsewhere"));
                }
            }
            (is_link, None)
        }
    };
    if !kind_ok {
        return Err(Mismatch::new(&e.path, "is of another kind"));
    }
    if let Some(want) = want_mode.filter(|w| *w != mode) {
        return Err(Mismatch::new(&e.path, format!("has mode {mode:o}, not {want:o}")));
    }
    if m.st_mtime != 1 {
        return Err(Mismatch::new(&e.path, "was modified (mtime is not 1)"));
    }
    Ok(())
}

/// SHA-256 of every file's content, on `threads` threads (a relocated
/// file's after undoing the rewrite at its references).
fn hash_files(index: &Index, tree: &Beneath, threads: usize, relocate: Option<Relocate<'_>>) -> Result<(), Mismatch> {
    let files: Vec<&Entry> = index
        .entries
        .iter()
        .filter(|e| matches!(e.kind, EntryKind::File { .. }))
        .collect();
    crate::par::for_each(
        files.len(),
        threads,
        || (vec![0u8; 1 << 20], Parents::default()),
        |n, (buf, parents)| {
            let e = files[n];
            let EntryKind::File { hash, size, offset, .. } = &e.kind else {
                return Ok(());
            };
            let undo = relocate.map(|r| (r.undo(), r.refs_touching(index, *offset, offset + size), *offset));
            let unreadable = |err: std::io::Error| Mismatch::new(&e.path, format!("cannot be read ({err})"));
            let (dir, name) = parents
                .of(tree, &e.path)
                .map_err(|err| unreadable(std::io::Error::from_raw_os_error(err as i32)))?;
            let fd = nix::fcntl::openat(
                dir,
                name,
                OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|err| unreadable(std::io::Error::from_raw_os_error(err as i32)))?;
            let h = hash_file(&mut fs::File::from(fd), buf, undo)
                .map_err(unreadable)?
                .ok_or_else(|| Mismatch::new(&e.path, "has other content (a store reference was changed)"))?;
            if h == hash.0 {
                Ok(())
            } else {
                Err(Mismatch::new(&e.path, "has other content"))
            }
        },
    )
}

/// The SHA-256 of `f`'s content, read with `buf`; with `undo`, of its
/// content after `undo` patches the references (stream offsets) of a file
/// that starts at stream offset `start`. None if a reference does not hold
/// what the relocation wrote.
pub fn hash_file(
    f: &mut fs::File,
    buf: &mut [u8],
    undo: Option<(Relocate<'_>, &[u64], u64)>,
) -> std::io::Result<Option<[u8; 32]>> {
    let mut h = Sha256::new();
    let mut at = 0u64;
    loop {
        let n = f.read(buf)?;
        if n == 0 {
            return Ok(Some(h.finalize().into()));
        }
        if let Some((r, refs, start)) = &undo {
            if r.patch(&mut buf[..n], start + at, refs).is_err() {
                return Ok(None);
            }
        }
        h.update(&buf[..n]);
        at += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use tote_format::sha256;

    /// A tree extracted by hand the way `extract` does, and its index.
    fn sample(t: &Path) -> Index {
        let content = b"hello";
        fs::create_dir_all(t.join("d")).unwrap();
        fs::write(t.join("d/f"), content).unwrap();
        std::os::unix::fs::symlink("f", t.join("d/l")).unwrap();
        let set = |p: &Path, mode: u32| {
            fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
        };
        set(&t.join("d/f"), 0o444);
        for p in ["d/f", "d/l", "d"] {
            let ts = nix::sys::time::TimeSpec::new(1, 0);
            nix::sys::stat::utimensat(
                nix::fcntl::AT_FDCWD,
                &t.join(p),
                &ts,
                &ts,
                nix::sys::stat::UtimensatFlags::NoFollowSymlink,
            )
            .unwrap();
        }
        set(&t.join("d"), 0o555);
        Index {
            blocks: vec![],
            entries: vec![
                Entry {
                    path: b"d".to_vec(),
                    kind: EntryKind::Dir,
                },
                Entry {
                    path: b"d/f".to_vec(),
                    kind: EntryKind::File {
                        executable: false,
                        size: content.len() as u64,
                        offset: 0,
                        hash: sha256(content),
                    },
                },
                Entry {
                    path: b"d/l".to_vec(),
                    kind: EntryKind::Symlink { target: b"f".to_vec() },
                },
            ],
            refs: vec![],
        }
    }

    fn check(t: &Path, index: &Index) -> Result<(), Mismatch> {
        tree(index, t, Modes::CACHE, 2, None)
    }

    #[test]
    fn an_intact_tree_passes_and_each_kind_of_damage_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path();
        let index = sample(t);
        check(t, &index).unwrap();

        let mut other = index.clone();
        if let EntryKind::File { hash, .. } = &mut other.entries[1].kind {
            hash.0[0] ^= 1;
        }
        assert_eq!(check(t, &other).unwrap_err().what, "has other content");

        let mut other = index.clone();
        other.entries[2].kind = EntryKind::Symlink { target: b"g".to_vec() };
        assert_eq!(check(t, &other).unwrap_err().what, "points elsewhere");

        let mut other = index.clone();
        other.entries.push(Entry {
            path: b"e".to_vec(),
            kind: EntryKind::Dir,
        });
        let m = check(t, &other).unwrap_err();
        assert_eq!((m.path.as_str(), m.what.as_str()), ("e", "is missing"));

        fs::set_permissions(t.join("d"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(t.join("d/extra"), b"").unwrap();
        let m = check(t, &index).unwrap_err();
        assert_eq!((m.path.as_str(), m.what.as_str()), ("d/extra", "is not in the bundle"));
        fs::remove_file(t.join("d/extra")).unwrap();

        let m = check(t, &index).unwrap_err();
        assert_eq!((m.path.as_str(), m.what.as_str()), ("d", "has mode 755, not 555"));

        let dir = tempfile::tempdir().unwrap();
        let t = dir.path();
        let index = sample(t);
        fs::set_permissions(t.join("d/f"), fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(t.join("d/f"), b"HELLO").unwrap();
        let m = check(t, &index).unwrap_err();
        assert_eq!((m.path.as_str(), m.what.as_str()), ("d/f", "has mode 644, not 444"));
        fs::set_permissions(t.join("d/f"), fs::Permissions::from_mode(0o444)).unwrap();
        assert_eq!(check(t, &index).unwrap_err().what, "was modified (mtime is not 1)");
    }
}
