//! Turn a verified index and the bundle's blocks into a directory tree.
//!
//! Directories and symlinks are made first, on one thread. Then every core
//! takes blocks off a shared counter: read the block, verify its hash,
//! decompress it, write the file pieces it holds. Files are created with
//! their final mode; a file spread over several blocks is created up front
//! and filled with positioned writes. Parents are always directories this
//! function made itself (the index guarantees it), so nothing is written
//! through a symlink.
//!
//! With an object store (cache entries), a file whose content an earlier
//! extraction already wrote is hard-linked from `objects/<sha256>[x]`
//! instead; only blocks that hold missing files are read and decompressed,
//! and every file written is published there for the next bundle. Store
//! paths shared between versions of an app are thus extracted once.
//!
//! Every entry gets mtime (and atime) 1, the Nix store's canonical time:
//! programs compare timestamps between files (CPython's `.pyc` records its
//! source's mtime), so they must look as they did in the store.
//!
//! A relocated extraction ([`Relocate`]) rewrites the store directory of
//! every store reference the index records, in each decoded block before
//! its files are written, and in symlink targets: same length, so no offset
//! moves. Files whose content that changes are published to the object
//! store under another name than their original content, so the two never
//! mix.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fchmodat, futimens, mkdirat, utimensat, FchmodatFlags, Mode, UtimensatFlags};
use nix::sys::time::TimeSpec;
use tote_format::{decode_block, Digest32, Entry, EntryKind, Index};

use tote_cache::{Modes, Relocate};

use super::objects::{open_dir, Objects};
use crate::error::{describe, Code, Failure, Result};
use crate::payload::Payload;

/// What an extraction did.
#[derive(Debug, Default)]
pub struct Report {
    /// Files hard-linked from the object store.
    pub linked: usize,
    /// Files written from blocks.
    pub written: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Blocks read and decompressed.
    pub blocks: usize,
}

/// One piece of a file that lives in one block.
#[derive(Clone, Copy)]
struct Piece {
    entry: u32,
    file_off: u64,
    block_off: u32,
    len: u32,
}

/// Where and how to write.
struct Target<'a> {
    dir: OwnedFd,
    dest: &'a Path,
    modes: Modes,
    objects: Option<&'a Objects>,
    relocate: Option<Relocate<'a>>,
}

impl Target<'_> {
    fn fail(&self, path: &[u8], step: &str, e: Errno) -> Failure {
        let full = self.dest.join(Path::new(std::ffi::OsStr::from_bytes(path)));
        Failure::new(Code::Cache, format!("{step} {}: {}", full.display(), hint(e))).with_errno(e)
    }

    fn create(&self, path: &[u8], mode: u32) -> nix::Result<OwnedFd> {
        let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW;
        openat(&self.dir, path, flags, Mode::from_bits_truncate(mode))
    }

    fn set_time(&self, path: &[u8], follow: UtimensatFlags) -> Result<()> {
        utimensat(&self.dir, path, &EPOCH_PLUS_1, &EPOCH_PLUS_1, follow)
            .map_err(|e| self.fail(path, "setting time of", e))
    }

    fn chmod(&self, path: &[u8], mode: u32) -> Result<()> {
        fchmodat(
            self.dir.as_fd(),
            path,
            Mode::from_bits_truncate(mode),
            FchmodatFlags::FollowSymlink,
        )
        .map_err(|e| self.fail(path, "setting mode of", e))
    }

    fn publish(&self, index: &Index, e: &Entry) {
        if let (Some(o), EntryKind::File { executable, .. }) = (self.objects, &e.kind) {
            o.publish(&self.object_of(index, e), *executable, &self.dir, &e.path);
        }
    }

    /// The object-store name of a file's content as written here.
    fn object_of(&self, index: &Index, e: &Entry) -> Digest32 {
        let EntryKind::File { size, offset, hash, .. } = &e.kind else {
            return Digest32::default();
        };
        match self.relocate {
            Some(r) if !r.refs_touching(index, *offset, offset + size).is_empty() => r.object(hash),
            _ => *hash,
        }
    }
}

/// Extract everything into `dest`, an existing empty directory. A corrupt
/// block gives a `Code::Bundle` failure whose message is the format error.
pub fn extract(
    index: &Index,
    payload: &Payload,
    dest: &Path,
    modes: Modes,
    threads: usize,
    objects: Option<&Objects>,
    relocate: Option<Relocate<'_>>,
) -> Result<Report> {
    let r = extract_into(index, payload, dest, modes, threads, objects, relocate);
    if r.is_err() {
        if let Some(o) = objects {
            o.unpublish();
        }
    }
    r
}

fn extract_into(
    index: &Index,
    payload: &Payload,
    dest: &Path,
    modes: Modes,
    threads: usize,
    objects: Option<&Objects>,
    relocate: Option<Relocate<'_>>,
) -> Result<Report> {
    let t = Target {
        dir: open_dir(dest)?,
        dest,
        modes,
        objects,
        relocate,
    };
    let mut report = Report::default();
    let work = lay_out(index, &t, &mut report)?;

    // Pass 2: the blocks that hold something to write, in parallel, in
    // units: a block with a base after its base blocks, decoded once for
    // every block that shares them.
    let needed: Vec<bool> = work.pieces.iter().map(|p| !p.is_empty()).collect();
    let todo = tote_format::units(index, &needed);
    report.blocks = tote_format::decoded_blocks(&todo);
    tote_cache::par::for_each(
        todo.len(),
        decode_threads(index, threads),
        Buffers::default,
        |n, bufs| run_unit(index, payload, &todo[n], &work.pieces, &t, bufs),
    )?;

    finish(index, &t, &work)?;
    Ok(report)
}

/// What pass 1 leaves to the others.
struct Work {
    /// The pieces each block must write.
    pieces: Vec<Vec<Piece>>,
    /// Files spread over several blocks (given their mode at the end).
    spread: Vec<u32>,
    dirs: Vec<u32>,
}

/// Pass 1: directories, symlinks, files found in the object store, empty
/// and multi-block files; and the pieces each block must write.
fn lay_out(index: &Index, t: &Target<'_>, report: &mut Report) -> Result<Work> {
    let mut pieces: Vec<Vec<Piece>> = vec![Vec::new(); index.blocks.len()];
    let mut spread: Vec<u32> = Vec::new();
    let mut dirs: Vec<u32> = Vec::new();
    for (i, e) in index.entries.iter().enumerate() {
        let path = e.path.as_slice();
        match &e.kind {
            EntryKind::Dir => {
                mkdirat(&t.dir, path, Mode::from_bits_truncate(0o755))
                    .map_err(|err| t.fail(path, "creating directory", err))?;
                dirs.push(i as u32);
            }
            EntryKind::Symlink { target } => {
                let target = t.relocate.map_or_else(|| target.clone(), |r| r.target(target));
                nix::unistd::symlinkat(target.as_slice(), &t.dir, path)
                    .map_err(|err| t.fail(path, "creating symlink", err))?;
                t.set_time(path, UtimensatFlags::NoFollowSymlink)?;
            }
            EntryKind::File {
                executable,
                size,
                offset,
                ..
            } => {
                if *size > 0
                    && t.objects
                        .is_some_and(|o| o.take(&t.object_of(index, e), *executable, &t.dir, path))
                {
                    report.linked += 1;
                    continue;
                }
                report.written += 1;
                report.bytes += size;
                let range = index.blocks_for(*offset, *size);
                if range.len() != 1 {
                    // Empty, or spread over several blocks: create it now.
                    let f = File::from(
                        t.create(path, 0o600)
                            .map_err(|err| t.fail(path, "creating file", err))?,
                    );
                    futimens(&f, &EPOCH_PLUS_1, &EPOCH_PLUS_1).map_err(|err| t.fail(path, "setting time of", err))?;
                    if range.len() > 1 {
                        f.set_len(*size)
                            .map_err(|err| t.fail(path, "allocating file", errno(&err)))?;
                        spread.push(i as u32);
                    } else {
                        t.chmod(path, t.modes.of(*executable))?;
                    }
                }
                for b in range {
                    let block = &index.blocks[b];
                    let held = block.overlap(*offset, *offset + *size);
                    pieces[b].push(Piece {
                        entry: i as u32,
                        file_off: block.raw_offset + held.start as u64 - *offset,
                        block_off: held.start as u32,
                        len: held.len() as u32,
                    });
                }
            }
        }
    }
    Ok(Work { pieces, spread, dirs })
}

/// Pass 3: final time and mode of spread files, then publish them; time
/// and mode of directories, deepest first (creating an entry touches its
/// parent).
fn finish(index: &Index, t: &Target<'_>, work: &Work) -> Result<()> {
    for &i in &work.spread {
        let e = &index.entries[i as usize];
        if let EntryKind::File { executable, .. } = e.kind {
            t.set_time(&e.path, UtimensatFlags::FollowSymlink)?;
            t.chmod(&e.path, t.modes.of(executable))?;
            t.publish(index, e);
        }
    }
    for &i in work.dirs.iter().rev() {
        let p = &index.entries[i as usize].path;
        t.set_time(p, UtimensatFlags::FollowSymlink)?;
        if t.modes.dir != 0o755 {
            t.chmod(p, t.modes.dir)?;
        }
    }
    Ok(())
}

/// A decoding thread's buffers: a block as stored, a block decoded, and
/// the decoded base blocks of the unit at hand, end to end.
#[derive(Default)]
struct Buffers {
    packed: Vec<u8>,
    buf: Vec<u8>,
    span: Vec<u8>,
}

/// Decode a unit's base blocks (writing those it must), then its blocks
/// against them.
fn run_unit(
    index: &Index,
    payload: &Payload,
    unit: &tote_format::Unit,
    pieces: &[Vec<Piece>],
    t: &Target<'_>,
    bufs: &mut Buffers,
) -> Result<()> {
    let Buffers { packed, buf, span } = bufs;
    span.clear();
    let span_start = index.blocks.get(unit.base.start).map_or(0, |b| b.raw_offset);
    for b in unit.base.clone() {
        decode(index, payload, b, None, packed, buf)?;
        // The base as compressed against: before any relocation rewrite.
        span.extend_from_slice(buf);
        if unit.write.contains(&b) {
            write_block(index, b, &pieces[b], t, buf)?;
        }
    }
    for &b in &unit.blocks {
        let base = index.blocks[b].base.map(|base| {
            let from = (base.offset - span_start) as usize;
            &span[from..from + base.len as usize]
        });
        decode(index, payload, b, base, packed, buf)?;
        write_block(index, b, &pieces[b], t, buf)?;
    }
    Ok(())
}

/// Read block `b` and decode it (against `base`) into `buf`.
fn decode(
    index: &Index,
    payload: &Payload,
    b: usize,
    base: Option<&[u8]>,
    packed: &mut Vec<u8>,
    buf: &mut Vec<u8>,
) -> Result<()> {
    let block = &index.blocks[b];
    payload.read_block(block, packed)?;
    buf.resize(block.rlen as usize, 0);
    decode_block(packed, block, b as u32, base, buf).map_err(|e| Failure::new(Code::Bundle, e.to_string()))
}

/// Write the pieces block `b` (decoded in `buf`) holds, after rewriting its
/// store references for a relocated tree.
fn write_block(index: &Index, b: usize, pieces: &[Piece], t: &Target<'_>, buf: &mut [u8]) -> Result<()> {
    let block = &index.blocks[b];
    if let Some(r) = t.relocate {
        let end = block.raw_offset + u64::from(block.rlen);
        r.patch(buf, block.raw_offset, r.refs_touching(index, block.raw_offset, end))
            .map_err(|at| {
                Failure::new(
                    Code::Bundle,
                    format!("corrupt block {b}: the store reference at stream offset {at} does not name the store directory"),
                )
            })?;
    }
    for p in pieces {
        let e = &index.entries[p.entry as usize];
        let EntryKind::File { executable, size, .. } = e.kind else {
            continue;
        };
        let bytes = &buf[p.block_off as usize..(p.block_off + p.len) as usize];
        if u64::from(p.len) == size {
            // The whole file: create, write, stamp, publish.
            t.create(&e.path, t.modes.of(executable))
                .and_then(|f| {
                    let f = File::from(f);
                    f.write_all_at(bytes, 0).map_err(|err| errno(&err))?;
                    futimens(&f, &EPOCH_PLUS_1, &EPOCH_PLUS_1)
                })
                .map_err(|err| t.fail(&e.path, "writing", err))?;
            t.publish(index, e);
        } else {
            openat(
                &t.dir,
                e.path.as_slice(),
                OFlag::O_WRONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
                Mode::empty(),
            )
            .and_then(|f| File::from(f).write_all_at(bytes, p.file_off).map_err(|err| errno(&err)))
            .map_err(|err| t.fail(&e.path, "writing", err))?;
        }
    }
    Ok(())
}

/// What extracting `index` takes at most: bytes (file contents rounded up
/// to 4 KiB pages or blocks, a block per directory) and inodes.
pub fn space_needed(index: &Index) -> (u64, u64) {
    let bytes = index
        .entries
        .iter()
        .map(|e| match e.kind {
            EntryKind::File { size, .. } => size.div_ceil(4096) * 4096,
            EntryKind::Dir => 4096,
            EntryKind::Symlink { .. } => 0,
        })
        .sum();
    (bytes, index.entries.len() as u64)
}

/// Each decoding thread holds one stored and one decoded block, and the
/// decoded base blocks of a unit: keep their sum under this, whatever the
/// core count (Nomad tasks often run with a few hundred MB).
const DECODE_MEMORY: usize = 48 << 20;

fn decode_threads(index: &Index, cores: usize) -> usize {
    let max = |f: fn(&tote_format::BlockRef) -> u32| index.blocks.iter().map(f).max().unwrap_or(0) as usize;
    let span = (0..index.blocks.len())
        .map(|b| {
            index
                .base_blocks(b)
                .map(|n| index.blocks[n].rlen as usize)
                .sum::<usize>()
        })
        .max()
        .unwrap_or(0);
    let per_thread = (max(|b| b.rlen) + max(|b| b.clen) + span).max(1);
    cores.min(DECODE_MEMORY / per_thread).max(1)
}

/// The Nix store's canonical timestamp: 1 second after the epoch.
const EPOCH_PLUS_1: TimeSpec = TimeSpec::new(1, 0);

fn errno(e: &std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(Errno::EIO as i32))
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

/// Corrupt-block failures from extraction get the bundle's path in front.
pub fn name_bundle(f: Failure, bundle: &Path) -> Failure {
    if f.code == Code::Bundle {
        Failure::new(Code::Bundle, format!("bundle {}: {}", bundle.display(), f.message))
    } else {
        f
    }
}
