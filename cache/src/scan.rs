//! What a root holds, measured the way `du` measures it: the blocks of
//! every inode counted once, however many entries hard-link it. An entry's
//! own bytes are what it alone holds (what removing it frees, objects only
//! it links included); its shared bytes are files other entries link too.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::fs;
use std::hash::BuildHasherDefault;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use nix::fcntl::{Flock, FlockArg, OFlag};
use nix::sys::stat::Mode;

use crate::entry::{last_used, parse_entry_name, MARKER};
use crate::error::{Error, Result};
use crate::OBJECTS;

/// One entry of a root.
#[derive(Debug, Clone)]
pub struct Listed {
    /// Its directory's name: `<id>` or `<id>-<short>`.
    pub name: String,
    pub id: String,
    /// The short name of a relocated entry (`/tmp/<short>`).
    pub short: Option<String>,
    /// A thin bundle's fetched blocks (`<id>.blocks`), not a tree.
    pub blocks: bool,
    /// The bundle's name, from the metadata the entry keeps.
    pub bundle: Option<String>,
    /// Has its completion marker.
    pub complete: bool,
    pub last_used: Option<SystemTime>,
    /// A running launch pins it.
    pub in_use: bool,
    /// The processes holding its pin, where the kernel says (`/proc/locks`
    /// names the process that took a lock; the program a launch execs keeps
    /// its pid).
    pub pids: Vec<u32>,
    /// Bytes only it holds.
    pub own: u64,
    /// Bytes of files it shares with other entries.
    pub shared: u64,
    /// Fixed bytes (directories, symlinks, its own files) and the inodes of
    /// its regular files, for the trim plan.
    pub(crate) fixed: u64,
    pub(crate) files: Vec<usize>,
}

/// Everything under a root.
#[derive(Debug, Clone)]
pub struct Listing {
    pub root: PathBuf,
    /// By name.
    pub entries: Vec<Listed>,
    /// Bytes of objects no entry links (removed by the next trim).
    pub unlinked_objects: u64,
    /// Everything: entries, objects, work in progress.
    pub total: u64,
    /// Free bytes on the root's file system.
    pub free: u64,
    /// Blocks (bytes) of every regular file inode that entries link, and
    /// how many entries link it.
    pub(crate) inodes: Vec<(u64, u32)>,
}

/// Measure `root`, and find which entries are pinned ([`probe_in_use`]).
pub fn scan(root: &Path) -> Result<Listing> {
    let rd = fs::read_dir(root).map_err(|e| Error::io("listing", root, &e))?;
    let mut names: Vec<String> = rd.flatten().filter_map(|e| e.file_name().into_string().ok()).collect();
    names.sort_unstable(); // determinism
    let holders = lock_holders();
    let top = fs::metadata(root).map_err(|e| Error::io("reading", root, &e))?;
    let dev = top.dev();
    // Lookups only, never iterated; a fixed hasher (no random seed to get).
    let mut index: Inodes<usize> = HashMap::default();
    let mut inodes: Vec<(u64, u32)> = Vec::new();
    let mut seen_other: Inodes<()> = HashMap::default();
    let mut total = top.blocks() * 512; // the root directory itself, as du counts it
    let mut entries = Vec::new();
    // Entries first: then an inode an entry links is the entry's, however
    // many other names it has (objects, a staging tree).
    for name in &names {
        let Some((id, short, blocks)) = parse_listed(name) else {
            continue;
        };
        let path = root.join(name);
        let mut fixed = 0;
        let mut files = Vec::new();
        walk(&path, dev, &mut |m: &Inode| {
            if m.file {
                let key = (m.dev, m.ino);
                let n = *index.entry(key).or_insert_with(|| {
                    inodes.push((m.bytes, 0));
                    inodes.len() - 1
                });
                inodes[n].1 += 1;
                files.push(n);
            } else {
                fixed += m.bytes;
            }
        });
        entries.push(Listed {
            name: name.clone(),
            id: id.to_string(),
            short: short.map(str::to_string),
            blocks,
            bundle: bundle_name(&path),
            complete: path.join(MARKER).exists(),
            last_used: last_used(&path),
            in_use: probe_in_use(&path),
            pids: fs::metadata(&path)
                .map(|m| holders_of(&holders, m.dev(), m.ino()))
                .unwrap_or_default(),
            own: 0,
            shared: 0,
            fixed,
            files,
        });
    }
    for name in names.iter().filter(|n| parse_listed(n).is_none()) {
        walk(&root.join(name), dev, &mut |m: &Inode| {
            let key = (m.dev, m.ino);
            let counted = m.file && (index.contains_key(&key) || seen_other.contains_key(&key));
            if !counted {
                total += m.bytes;
            }
            if m.file {
                seen_other.insert(key, ());
            }
        });
    }
    // Objects: counted above unless an entry links them (then they are
    // the entry's). Those no entry links are garbage.
    let mut unlinked_objects = 0;
    if let Ok(rd) = fs::read_dir(root.join(OBJECTS)) {
        for e in rd.flatten() {
            if let (Some(_), Ok(m)) = (crate::is_object_name(e.file_name().as_encoded_bytes()), e.metadata()) {
                if m.is_file() && m.nlink() == 1 {
                    unlinked_objects += m.blocks() * 512;
                }
            }
        }
    }
    for e in &mut entries {
        for &n in &e.files {
            if inodes[n].1 == 1 {
                e.own += inodes[n].0;
            } else {
                e.shared += inodes[n].0;
            }
        }
        e.own += e.fixed;
        total += e.fixed;
    }
    total += inodes.iter().map(|(b, _)| b).sum::<u64>();
    let free = nix::sys::statvfs::statvfs(root)
        .map(|v| v.blocks_available() * v.fragment_size())
        .unwrap_or(0);
    Ok(Listing {
        root: root.to_path_buf(),
        entries,
        unlinked_objects,
        total,
        free,
        inodes,
    })
}

/// An entry's or a block store's name: its id, short name, and whether
/// it is a block store.
fn parse_listed(name: &str) -> Option<(&str, Option<&str>, bool)> {
    parse_entry_name(name)
        .map(|(id, short)| (id, short, false))
        .or_else(|| crate::parse_blocks_name(name).map(|id| (id, None, true)))
}

type Inodes<T> = HashMap<(u64, u64), T, BuildHasherDefault<DefaultHasher>>;

/// What sizing needs of an inode.
struct Inode {
    file: bool,
    dev: u64,
    ino: u64,
    /// Bytes on disk.
    bytes: u64,
}

impl Inode {
    fn of(m: &nix::sys::stat::FileStat) -> Inode {
        Inode {
            file: m.st_mode & nix::libc::S_IFMT == nix::libc::S_IFREG,
            dev: m.st_dev,
            ino: m.st_ino,
            bytes: m.st_blocks as u64 * 512,
        }
    }
}

/// Every inode at and below `path` (not following symlinks, nor crossing
/// into another file system than `dev`, the root's: a mount inside it),
/// read through directory descriptors: any depth, any path length.
fn walk(path: &Path, dev: u64, f: &mut dyn FnMut(&Inode)) {
    use nix::fcntl::{AtFlags, OFlag};
    fn below(dir: std::os::fd::BorrowedFd<'_>, dev: u64, depth: usize, f: &mut dyn FnMut(&Inode)) {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let Ok(fd) = nix::fcntl::openat(dir, ".", flags, Mode::empty()) else {
            return;
        };
        let Ok(mut listing) = nix::dir::Dir::from_fd(fd) else {
            return;
        };
        let names: Vec<Vec<u8>> = listing
            .iter()
            .flatten()
            .map(|e| e.file_name().to_bytes().to_vec())
            .filter(|n| n != b"." && n != b"..")
            .collect();
        for name in names {
            let Ok(m) = nix::sys::stat::fstatat(dir, name.as_slice(), AtFlags::AT_SYMLINK_NOFOLLOW) else {
                continue;
            };
            if m.st_dev != dev {
                continue;
            }
            f(&Inode::of(&m));
            // A tree deeper than a bundle's (tampered with) is measured
            // down to that depth.
            if m.st_mode & nix::libc::S_IFMT == nix::libc::S_IFDIR && depth < tote_format::MAX_DEPTH + 2 {
                if let Ok(sub) = nix::fcntl::openat(dir, name.as_slice(), flags, Mode::empty()) {
                    below(std::os::fd::AsFd::as_fd(&sub), dev, depth + 1, f);
                }
            }
        }
    }
    let Ok(m) = nix::sys::stat::lstat(path) else { return };
    if m.st_dev != dev {
        return;
    }
    f(&Inode::of(&m));
    if m.st_mode & nix::libc::S_IFMT == nix::libc::S_IFDIR {
        let flags = nix::fcntl::OFlag::O_RDONLY
            | nix::fcntl::OFlag::O_DIRECTORY
            | nix::fcntl::OFlag::O_NOFOLLOW
            | nix::fcntl::OFlag::O_CLOEXEC;
        if let Ok(fd) = nix::fcntl::open(path, flags, Mode::empty()) {
            below(std::os::fd::AsFd::as_fd(&fd), dev, 0, f);
        }
    }
}

/// The bundle's name, from the metadata section the entry keeps.
fn bundle_name(dir: &Path) -> Option<String> {
    let bytes = fs::read(dir.join("meta")).ok()?;
    // The name is the first field: a u32 length and UTF-8 bytes.
    let n = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    String::from_utf8(bytes.get(4..4 + n)?.to_vec()).ok()
}

/// Does a running launch pin the entry at `dir`? (Tries the exclusive lock
/// a removal takes, and lets it go at once.)
pub fn probe_in_use(dir: &Path) -> bool {
    let Ok(fd) = nix::fcntl::open(
        dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::empty(),
    ) else {
        return false;
    };
    Flock::lock(fd, FlockArg::LockExclusiveNonblock).is_err()
}

/// Who holds which `flock`: `/proc/locks` as (device major, minor, inode,
/// pid). Waiters (`->`) are left out.
fn lock_holders() -> Vec<(u32, u32, u64, u32)> {
    let Ok(text) = fs::read_to_string("/proc/locks") else {
        return Vec::new();
    };
    text.lines().filter_map(parse_lock_line).collect()
}

/// `1: FLOCK  ADVISORY  READ  4242 08:01:1311789 0 EOF`
fn parse_lock_line(line: &str) -> Option<(u32, u32, u64, u32)> {
    let mut w = line.split_whitespace().skip(1);
    if w.next()? != "FLOCK" {
        return None;
    }
    let pid = w.nth(2)?.parse().ok()?;
    let mut dev = w.next()?.split(':');
    let major = u32::from_str_radix(dev.next()?, 16).ok()?;
    let minor = u32::from_str_radix(dev.next()?, 16).ok()?;
    let ino = dev.next()?.parse().ok()?;
    Some((major, minor, ino, pid))
}

fn holders_of(holders: &[(u32, u32, u64, u32)], dev: u64, ino: u64) -> Vec<u32> {
    let (major, minor) = (nix::sys::stat::major(dev) as u32, nix::sys::stat::minor(dev) as u32);
    let mut pids: Vec<u32> = holders
        .iter()
        .filter(|h| (h.0, h.1, h.2) == (major, minor, ino) && h.3 != 0)
        .map(|h| h.3)
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_locks_lines() {
        assert_eq!(
            parse_lock_line("1: FLOCK  ADVISORY  READ  4242 08:01:1311789 0 EOF"),
            Some((8, 1, 1311789, 4242))
        );
        assert_eq!(
            parse_lock_line("12: FLOCK  ADVISORY  WRITE 7 00:2e:55 0 EOF"),
            Some((0, 0x2e, 55, 7))
        );
        assert_eq!(parse_lock_line("2: -> FLOCK  ADVISORY  WRITE 99 08:01:1 0 EOF"), None);
        assert_eq!(parse_lock_line("3: POSIX  ADVISORY  WRITE 99 08:01:1 0 EOF"), None);
    }

    #[test]
    fn a_pinned_entry_names_its_holder() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        let id = "a".repeat(64);
        let dir = root.join(&id);
        fs::create_dir_all(dir.join("tree")).unwrap();
        fs::write(dir.join(MARKER), crate::entry::marker_text("b")).unwrap();
        let l = scan(root).unwrap();
        assert!(!l.entries[0].in_use);
        assert!(l.entries[0].pids.is_empty());
        let (_, pin) = crate::pin(root, &id, "b", crate::Use::Look);
        assert!(pin.is_some());
        let l = scan(root).unwrap();
        assert!(l.entries[0].in_use);
        assert_eq!(l.entries[0].pids, [std::process::id()]);
    }
}
