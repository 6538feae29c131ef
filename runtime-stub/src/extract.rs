//! Turn a verified index and the data section into a directory tree.
//!
//! Directories and symlinks are made first, on one thread. Then every core
//! takes blocks off a shared counter: verify the block's hash, decompress it,
//! write the file pieces it holds. Files are created with their final mode;
//! a file spread over several blocks is created up front and filled with
//! positioned writes. Parents are always directories this function made
//! itself (the index guarantees it), so nothing is written through a symlink.
//!
//! Every entry gets mtime (and atime) 1, the Nix store's canonical time:
//! programs compare timestamps between files (CPython's `.pyc` records its
//! source's mtime), so they must look as they did in the store.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fchmodat, futimens, mkdirat, utimensat, FchmodatFlags, Mode, UtimensatFlags};
use nix::sys::time::TimeSpec;
use tote_format::{decode_block, EntryKind, Index};

use crate::error::{describe, Code, Failure, Result};

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
}

/// One piece of a file that lives in one block.
#[derive(Clone, Copy)]
struct Piece {
    entry: u32,
    file_off: u64,
    block_off: u32,
    len: u32,
}

/// Extract everything into `dest`, an existing empty directory. A corrupt
/// block gives a `Code::Bundle` failure whose message is the format error.
pub fn extract(index: &Index, data: &[u8], dest: &Path, modes: Modes, threads: usize) -> Result<()> {
    let dir = open_dir(dest)?;
    let fail = |path: &[u8], step: &str, e: Errno| {
        Failure::new(
            Code::Cache,
            format!(
                "{step} {}: {}",
                dest.join(Path::new(std::ffi::OsStr::from_bytes(path))).display(),
                hint(e)
            ),
        )
    };

    // Pass 1: directories, symlinks, empty and multi-block files; and the
    // pieces each block must write.
    let mut pieces: Vec<Vec<Piece>> = vec![Vec::new(); index.blocks.len()];
    let mut spread: Vec<u32> = Vec::new();
    let mut dirs: Vec<u32> = Vec::new();
    for (i, e) in index.entries.iter().enumerate() {
        let path = e.path.as_slice();
        match &e.kind {
            EntryKind::Dir => {
                mkdirat(&dir, path, Mode::from_bits_truncate(0o755))
                    .map_err(|err| fail(path, "creating directory", err))?;
                dirs.push(i as u32);
            }
            EntryKind::Symlink { target } => {
                nix::unistd::symlinkat(target.as_slice(), &dir, path)
                    .map_err(|err| fail(path, "creating symlink", err))?;
                set_time(&dir, path, UtimensatFlags::NoFollowSymlink)
                    .map_err(|err| fail(path, "setting time of", err))?;
            }
            EntryKind::File {
                executable,
                size,
                offset,
                ..
            } => {
                let range = index.blocks_for(*offset, *size);
                if range.len() != 1 {
                    // Empty, or spread over several blocks: create it now.
                    let f = create(&dir, path, 0o600).map_err(|err| fail(path, "creating file", err))?;
                    futimens(&f, &EPOCH_PLUS_1, &EPOCH_PLUS_1).map_err(|err| fail(path, "setting time of", err))?;
                    if range.len() > 1 {
                        File::from(f).set_len(*size).map_err(|err| {
                            fail(
                                path,
                                "allocating file",
                                Errno::from_raw(err.raw_os_error().unwrap_or(0)),
                            )
                        })?;
                        spread.push(i as u32);
                    } else {
                        chmod(&dir, path, mode_of(*executable, modes))
                            .map_err(|err| fail(path, "setting mode of", err))?;
                    }
                }
                for b in range {
                    let block = &index.blocks[b];
                    let start = (*offset).max(block.raw_offset);
                    let end = (*offset + *size).min(block.raw_offset + u64::from(block.rlen));
                    pieces[b].push(Piece {
                        entry: i as u32,
                        file_off: start - *offset,
                        block_off: (start - block.raw_offset) as u32,
                        len: (end - start) as u32,
                    });
                }
            }
        }
    }

    // Pass 2: blocks in parallel.
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let first_error: Mutex<Option<Failure>> = Mutex::new(None);
    let worker = || {
        let mut buf = Vec::new();
        loop {
            let b = next.fetch_add(1, Ordering::Relaxed);
            if b >= index.blocks.len() || stop.load(Ordering::Relaxed) {
                return;
            }
            if let Err(e) = write_block(index, data, b, &pieces[b], &dir, dest, modes, &mut buf) {
                stop.store(true, Ordering::Relaxed);
                first_error.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
                return;
            }
        }
    };
    let threads = threads.clamp(1, index.blocks.len().max(1));
    std::thread::scope(|s| {
        for _ in 1..threads {
            s.spawn(worker);
        }
        worker();
    });
    if let Some(e) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }

    // Pass 3: final modes (and times) of spread files; times and modes of
    // directories, deepest first (creating an entry touches its parent).
    for &i in &spread {
        let e = &index.entries[i as usize];
        if let EntryKind::File { executable, .. } = e.kind {
            set_time(&dir, &e.path, UtimensatFlags::FollowSymlink)
                .map_err(|err| fail(&e.path, "setting time of", err))?;
            chmod(&dir, &e.path, mode_of(executable, modes)).map_err(|err| fail(&e.path, "setting mode of", err))?;
        }
    }
    for &i in dirs.iter().rev() {
        let p = &index.entries[i as usize].path;
        set_time(&dir, p, UtimensatFlags::FollowSymlink).map_err(|err| fail(p, "setting time of", err))?;
        if modes.dir != 0o755 {
            chmod(&dir, p, modes.dir).map_err(|err| fail(p, "setting mode of", err))?;
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn write_block(
    index: &Index,
    data: &[u8],
    b: usize,
    pieces: &[Piece],
    dir: &OwnedFd,
    dest: &Path,
    modes: Modes,
    buf: &mut Vec<u8>,
) -> Result<()> {
    let block = &index.blocks[b];
    let compressed = &data[block.offset as usize..(block.offset + u64::from(block.clen)) as usize];
    buf.resize(block.rlen as usize, 0);
    decode_block(compressed, block, b as u32, buf).map_err(|e| Failure::new(Code::Bundle, e.to_string()))?;
    for p in pieces {
        let e = &index.entries[p.entry as usize];
        let EntryKind::File { executable, size, .. } = e.kind else {
            continue;
        };
        let bytes = &buf[p.block_off as usize..(p.block_off + p.len) as usize];
        let whole = u64::from(p.len) == size;
        let res = if whole {
            create(dir, &e.path, mode_of(executable, modes)).and_then(|f| {
                let f = File::from(f);
                write_at(&f, bytes, 0)?;
                futimens(&f, &EPOCH_PLUS_1, &EPOCH_PLUS_1)
            })
        } else {
            openat(
                dir,
                e.path.as_slice(),
                OFlag::O_WRONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
                Mode::empty(),
            )
            .and_then(|f| write_at(&File::from(f), bytes, p.file_off))
        };
        res.map_err(|err| {
            Failure::new(
                Code::Cache,
                format!(
                    "writing {}: {}",
                    dest.join(Path::new(std::ffi::OsStr::from_bytes(&e.path))).display(),
                    hint(err)
                ),
            )
        })?;
    }
    Ok(())
}

/// The Nix store's canonical timestamp: 1 second after the epoch.
const EPOCH_PLUS_1: TimeSpec = TimeSpec::new(1, 0);

fn set_time(dir: &OwnedFd, path: &[u8], follow: UtimensatFlags) -> nix::Result<()> {
    utimensat(dir, path, &EPOCH_PLUS_1, &EPOCH_PLUS_1, follow)
}

fn mode_of(executable: bool, modes: Modes) -> u32 {
    if executable {
        modes.exec
    } else {
        modes.file
    }
}

fn create(dir: &OwnedFd, path: &[u8], mode: u32) -> nix::Result<OwnedFd> {
    openat(
        dir,
        path,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::from_bits_truncate(mode),
    )
}

fn write_at(f: &File, bytes: &[u8], off: u64) -> nix::Result<()> {
    f.write_all_at(bytes, off)
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc_eio())))
}

fn libc_eio() -> i32 {
    Errno::EIO as i32
}

fn chmod(dir: &OwnedFd, path: &[u8], mode: u32) -> nix::Result<()> {
    fchmodat(
        dir.as_fd(),
        path,
        Mode::from_bits_truncate(mode),
        FchmodatFlags::FollowSymlink,
    )
}

fn open_dir(path: &Path) -> Result<OwnedFd> {
    nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Failure::sys(Code::Cache, "opening", path, e))
}

/// errno with the fix where there is one.
fn hint(e: Errno) -> String {
    match e {
        Errno::ENOSPC | Errno::EDQUOT => {
            format!("{}: free space or set TOTE_CACHE_DIR to a larger disk", describe(e))
        }
        _ => describe(e),
    }
}
