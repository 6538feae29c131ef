//! Turn a verified index and the bundle's blocks into a directory tree.
//!
//! Directories and symlinks are made first, on one thread. Then every core
//! takes blocks off a shared counter: read the block, verify its hash,
//! decompress it, write the file pieces it holds. Files are created with
//! their final mode; a file spread over several blocks is created up front
//! and filled with positioned writes. Every entry is made through its
//! parent directory's descriptor, reached without following a link
//! (`tote_cache::beneath`): nothing is written through a link, even where
//! the file system folds two of the bundle's names into one.
//!
//! Every file's content is checked against the SHA-256 the index gives it
//! (the name the object store keeps it under) before it is published, as
//! it is decoded and before any rewrite: a file in one block at once; a
//! file spread over several blocks piece by piece, in order (pieces that
//! come early wait, within a budget, for those before them), or read back
//! once written where they would not fit.
//!
//! With an object store (cache entries), a file whose content an earlier
//! extraction already wrote is hard-linked from `objects/<sha256>[x]`
//! instead; only blocks that hold missing files are read and decompressed,
//! and every file written is published there for the next bundle. Store
//! paths shared between versions of an app are thus extracted once. For a
//! thin bundle, a base block whose bytes are all the content of files so
//! linked is rebuilt from them instead of being fetched and decoded.
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

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fchmod, futimens, mkdirat, utimensat, Mode, UtimensatFlags};
use nix::sys::time::TimeSpec;
use tote_cache::beneath::{self, Beneath, Parents};
use tote_cache::{Modes, Relocate};
use tote_format::{decode_block, sha256, Entry, EntryKind, Index};

use super::objects::Objects;
use crate::error::{describe, Code, Failure, Result};
use crate::payload::{Blocks, Payload};

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
    /// A thin bundle's: bytes fetched from its full bundle.
    pub fetched: u64,
    /// A thin bundle's base blocks rebuilt from files the cache had,
    /// rather than fetched and decoded.
    pub rebuilt: usize,
}

/// One piece of a file that lives in one block.
#[derive(Clone, Copy)]
struct Piece {
    entry: u32,
    file_off: u64,
    block_off: u32,
    len: u32,
    /// For a file spread over several blocks: which of its pieces this is,
    /// and the file's place among them (`Work::spread`).
    nth: u32,
    spread: u32,
}

/// Bytes of spread files' pieces that may wait for the pieces before them
/// to be hashed, all files together; past it a file is read back instead.
const EARLY_PIECES: usize = 16 << 20;

/// A spread file's SHA-256, fed its pieces in order.
struct InOrder {
    hasher: sha2::Sha256,
    /// The next piece to hash; `pieces` once all are.
    next: u32,
    pieces: u32,
    early: Vec<(u32, Vec<u8>)>,
    /// Too many early pieces: read back once written.
    gave_up: bool,
}

impl InOrder {
    fn new(pieces: u32) -> InOrder {
        InOrder {
            hasher: sha2::Digest::new(),
            next: 0,
            pieces,
            early: Vec::new(),
            gave_up: false,
        }
    }
}

/// Where and how to write.
struct Target<'a> {
    tree: Beneath,
    dest: &'a Path,
    modes: Modes,
    objects: Option<&'a Objects>,
    relocate: Option<Relocate<'a>>,
}

impl Target<'_> {
    fn fail(&self, path: &[u8], step: &str, e: Errno) -> Failure {
        let full = self.dest.join(OsStr::from_bytes(path));
        let why = if beneath::is_collision(e) {
            format!("{}: {}", describe(e), beneath::COLLISION)
        } else {
            hint(e)
        };
        Failure::new(Code::Cache, format!("{step} {}: {why}", full.display())).with_errno(e)
    }

    /// The directory `path` is in, reached without following a link, and
    /// `path`'s last name.
    fn at<'p, 'q>(&self, parents: &'q mut Parents, path: &'p [u8]) -> Result<(BorrowedFd<'q>, &'p [u8])> {
        parents.of(&self.tree, path).map_err(|e| self.fail(path, "reaching", e))
    }

    fn mkdir(&self, parents: &mut Parents, path: &[u8]) -> Result<()> {
        let (dir, name) = self.at(parents, path)?;
        mkdirat(dir, name, Mode::from_bits_truncate(0o755)).map_err(|e| self.fail(path, "creating directory", e))
    }

    fn symlink(&self, parents: &mut Parents, target: &[u8], path: &[u8]) -> Result<()> {
        let (dir, name) = self.at(parents, path)?;
        nix::unistd::symlinkat(target, dir, name).map_err(|e| self.fail(path, "creating symlink", e))?;
        utimensat(dir, name, &EPOCH_PLUS_1, &EPOCH_PLUS_1, UtimensatFlags::NoFollowSymlink)
            .map_err(|e| self.fail(path, "setting time of", e))
    }

    /// A new file (never one that is there, nor through a link).
    fn create(&self, parents: &mut Parents, path: &[u8], mode: u32) -> Result<File> {
        let (dir, name) = self.at(parents, path)?;
        let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW;
        openat(dir, name, flags, Mode::from_bits_truncate(mode))
            .map(File::from)
            .map_err(|e| self.fail(path, "creating file", e))
    }

    /// An entry this extraction made, opened again (not a link).
    fn open(&self, parents: &mut Parents, path: &[u8], flags: OFlag, step: &str) -> Result<File> {
        let (dir, name) = self.at(parents, path)?;
        openat(dir, name, flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW, Mode::empty())
            .map(File::from)
            .map_err(|e| self.fail(path, step, e))
    }

    /// Time 1, and `mode` unless None, of an entry this extraction made.
    fn settle(&self, parents: &mut Parents, path: &[u8], mode: Option<u32>, dir: bool) -> Result<()> {
        if let Some(mode) = mode {
            let kind = if dir { OFlag::O_DIRECTORY } else { OFlag::empty() };
            let f = self.open(parents, path, OFlag::O_RDONLY | kind, "setting mode of")?;
            fchmod(&f, Mode::from_bits_truncate(mode)).map_err(|e| self.fail(path, "setting mode of", e))?;
        }
        let (d, name) = self.at(parents, path)?;
        utimensat(d, name, &EPOCH_PLUS_1, &EPOCH_PLUS_1, UtimensatFlags::NoFollowSymlink)
            .map_err(|e| self.fail(path, "setting time of", e))
    }

    /// Link the file from the object store, if it is there.
    fn take(&self, parents: &mut Parents, index: &Index, e: &Entry) -> Result<bool> {
        let Some(o) = self.objects else { return Ok(false) };
        let (dir, name) = self.at(parents, &e.path)?;
        Ok(o.take(&self.object_of(index, e), dir, name))
    }

    /// Offer a finished file, its content checked, to later extractions.
    fn publish(&self, parents: &mut Parents, index: &Index, e: &Entry) -> Result<()> {
        if let Some(o) = self.objects {
            let (dir, name) = self.at(parents, &e.path)?;
            o.publish(&self.object_of(index, e), dir, name);
        }
        Ok(())
    }

    /// The object-store name of a file's content as written here.
    fn object_of(&self, index: &Index, e: &Entry) -> String {
        let EntryKind::File {
            size,
            offset,
            hash,
            executable,
        } = &e.kind
        else {
            return String::new();
        };
        match self.relocate {
            Some(r) if !r.refs_touching(index, *offset, offset + size).is_empty() => {
                tote_cache::object_name(&r.object(hash), true, *executable)
            }
            _ => tote_cache::object_name(hash, false, *executable),
        }
    }
}

/// A file whose bytes are not the ones its index entry names by SHA-256.
fn wrong_content(e: &Entry) -> Failure {
    Failure::new(
        Code::Bundle,
        format!(
            "/{}: its content does not match its SHA-256",
            String::from_utf8_lossy(&e.path)
        ),
    )
}

/// Extract everything into `dest`, an existing empty directory. A corrupt
/// block, or a file whose content is not what the index says, gives a
/// `Code::Bundle` failure.
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
    let tree = Beneath::open(dest).map_err(|e| Failure::sys(Code::Cache, "opening", dest, e))?;
    let t = Target {
        tree,
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
    // A thin bundle's base blocks that the linked files make up, rebuilt
    // from them rather than fetched (a full bundle's are at hand).
    // (The ordinary stub, which reads no thin bundle, leaves it out.)
    let spans = match payload.layout.remote {
        Some(_) if cfg!(feature = "remote") => tote_format::held_spans(index, &work.held),
        _ => Vec::new(),
    };
    let rebuild = match spans.is_empty() {
        true => vec![false; index.blocks.len()],
        false => tote_format::rebuildable(index, &todo, &spans),
    };
    let order: Vec<usize> = todo.iter().flat_map(|u| u.decodes()).filter(|&b| !rebuild[b]).collect();
    let blocks = payload.blocks(index, &order, dest)?;
    let rebuilt = std::sync::atomic::AtomicUsize::new(0);
    let held = Held {
        spans: &spans,
        rebuild: &rebuild,
        rebuilt: &rebuilt,
    };
    tote_cache::par::for_each(
        todo.len(),
        decode_threads(index, threads),
        Buffers::default,
        |n, bufs| run_unit(index, &blocks, &todo[n], &work, &t, &held, bufs),
    )?;
    report.fetched = blocks.fetched();
    report.rebuilt = rebuilt.into_inner();
    // The fetch (thin bundles) ends here, before the tree is finished.
    #[allow(clippy::drop_non_drop)] // a Drop type with the remote feature only
    drop(blocks);

    finish(index, &t, &work, threads)?;
    Ok(report)
}

/// What pass 1 leaves to the others.
struct Work {
    /// The pieces each block must write.
    pieces: Vec<Vec<Piece>>,
    /// Files spread over several blocks (checked, given their mode and
    /// published at the end), and their hashes so far.
    spread: Vec<u32>,
    hashes: Vec<std::sync::Mutex<InOrder>>,
    /// Bytes of early pieces held in `hashes`.
    early: std::sync::atomic::AtomicUsize,
    dirs: Vec<u32>,
    /// Files linked from the object store with their content as the bundle
    /// holds it (not rewritten by a relocation).
    held: Vec<usize>,
}

/// Base blocks to rebuild from linked files (`tote_format::rebuildable`).
struct Held<'a> {
    spans: &'a [(u64, u64, usize)],
    rebuild: &'a [bool],
    rebuilt: &'a std::sync::atomic::AtomicUsize,
}

impl Work {
    /// Hash piece `p` (its bytes as decoded) of a spread file, in order.
    fn hash_piece(&self, p: &Piece, bytes: &[u8]) {
        use sha2::Digest;
        use std::sync::atomic::Ordering;
        let mut h = self.hashes[p.spread as usize].lock().unwrap_or_else(|e| e.into_inner());
        if h.gave_up {
            return;
        }
        if p.nth != h.next {
            if self.early.fetch_add(bytes.len(), Ordering::Relaxed) + bytes.len() <= EARLY_PIECES {
                h.early.push((p.nth, bytes.to_vec()));
            } else {
                let held: usize = h.early.iter().map(|(_, b)| b.len()).sum::<usize>() + bytes.len();
                self.early.fetch_sub(held, Ordering::Relaxed);
                h.early.clear();
                h.gave_up = true;
            }
            return;
        }
        h.hasher.update(bytes);
        h.next += 1;
        while let Some(i) = h.early.iter().position(|(n, _)| *n == h.next) {
            let (_, b) = h.early.swap_remove(i);
            h.hasher.update(&b);
            self.early.fetch_sub(b.len(), Ordering::Relaxed);
            h.next += 1;
        }
    }

    /// Spread file `n`'s SHA-256, if all its pieces were hashed in order.
    fn hashed(&self, n: usize) -> Option<[u8; 32]> {
        let mut h = self.hashes[n].lock().unwrap_or_else(|e| e.into_inner());
        (!h.gave_up && h.next == h.pieces).then(|| sha2::Digest::finalize_reset(&mut h.hasher).into())
    }
}

/// Pass 1: directories, symlinks, files found in the object store, empty
/// and multi-block files; and the pieces each block must write.
fn lay_out(index: &Index, t: &Target<'_>, report: &mut Report) -> Result<Work> {
    let mut pieces: Vec<Vec<Piece>> = vec![Vec::new(); index.blocks.len()];
    let mut spread: Vec<u32> = Vec::new();
    let mut hashes = Vec::new();
    let mut dirs: Vec<u32> = Vec::new();
    let mut held = Vec::new();
    let mut parents = Parents::default();
    for (i, e) in index.entries.iter().enumerate() {
        let path = e.path.as_slice();
        match &e.kind {
            EntryKind::Dir => {
                t.mkdir(&mut parents, path)?;
                dirs.push(i as u32);
            }
            EntryKind::Symlink { target } => {
                let target = t.relocate.map_or_else(|| target.clone(), |r| r.target(target));
                t.symlink(&mut parents, &target, path)?;
            }
            EntryKind::File {
                executable,
                size,
                offset,
                hash,
            } => {
                if *size > 0 && t.take(&mut parents, index, e)? {
                    report.linked += 1;
                    if t.relocate
                        .is_none_or(|r| r.refs_touching(index, *offset, offset + size).is_empty())
                    {
                        held.push(i);
                    }
                    continue;
                }
                report.written += 1;
                report.bytes += size;
                let range = index.blocks_for(*offset, *size);
                if range.is_empty() && sha256(b"") != *hash {
                    return Err(wrong_content(e));
                }
                if range.len() != 1 {
                    // Empty, or spread over several blocks: create it now.
                    let f = t.create(&mut parents, path, 0o600)?;
                    futimens(&f, &EPOCH_PLUS_1, &EPOCH_PLUS_1).map_err(|err| t.fail(path, "setting time of", err))?;
                    if range.len() > 1 {
                        f.set_len(*size)
                            .map_err(|err| t.fail(path, "allocating file", errno(&err)))?;
                        spread.push(i as u32);
                        hashes.push(std::sync::Mutex::new(InOrder::new(range.len() as u32)));
                    } else {
                        fchmod(&f, Mode::from_bits_truncate(t.modes.of(*executable)))
                            .map_err(|err| t.fail(path, "setting mode of", err))?;
                    }
                }
                for (nth, b) in range.enumerate() {
                    let block = &index.blocks[b];
                    let held = block.overlap(*offset, *offset + *size);
                    pieces[b].push(Piece {
                        entry: i as u32,
                        file_off: block.raw_offset + held.start as u64 - *offset,
                        block_off: held.start as u32,
                        len: held.len() as u32,
                        nth: nth as u32,
                        spread: spread.len().wrapping_sub(1) as u32,
                    });
                }
            }
        }
    }
    Ok(Work {
        pieces,
        spread,
        hashes,
        early: Default::default(),
        dirs,
        held,
    })
}

/// Pass 3: spread files checked against their SHA-256 (read back, with a
/// relocation's rewrite undone), given their time and mode and published,
/// in parallel; then time and mode of directories, deepest first (creating
/// an entry touches its parent).
fn finish(index: &Index, t: &Target<'_>, work: &Work, threads: usize) -> Result<()> {
    tote_cache::par::for_each(
        work.spread.len(),
        threads,
        || (Parents::default(), vec![0u8; 1 << 20]),
        |n, (parents, buf)| {
            let e = &index.entries[work.spread[n] as usize];
            let EntryKind::File {
                executable,
                size,
                offset,
                hash,
            } = &e.kind
            else {
                return Ok(());
            };
            let got = match work.hashed(n) {
                Some(h) => Some(h),
                None => {
                    let mut f = t.open(parents, &e.path, OFlag::O_RDONLY, "reading")?;
                    let undo = t
                        .relocate
                        .map(|r| (r.undo(), r.refs_touching(index, *offset, offset + size), *offset));
                    tote_cache::hash_file(&mut f, buf, undo).map_err(|err| t.fail(&e.path, "reading", errno(&err)))?
                }
            };
            if got != Some(hash.0) {
                return Err(wrong_content(e));
            }
            t.settle(parents, &e.path, Some(t.modes.of(*executable)), false)?;
            t.publish(parents, index, e)
        },
    )?;
    let mut parents = Parents::default();
    for &i in work.dirs.iter().rev() {
        let p = &index.entries[i as usize].path;
        let mode = (t.modes.dir != 0o755).then_some(t.modes.dir);
        t.settle(&mut parents, p, mode, true)?;
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
    parents: Parents,
}

/// Decode a unit's base blocks (writing those it must), then its blocks
/// against them.
fn run_unit(
    index: &Index,
    blocks: &Blocks<'_>,
    unit: &tote_format::Unit,
    work: &Work,
    t: &Target<'_>,
    held: &Held<'_>,
    bufs: &mut Buffers,
) -> Result<()> {
    let Buffers {
        packed,
        buf,
        span,
        parents,
    } = bufs;
    span.clear();
    let span_start = index.blocks.get(unit.base.start).map_or(0, |b| b.raw_offset);
    for b in unit.base.clone() {
        if held.rebuild[b] && rebuild(index, b, held.spans, t, parents, buf) {
            held.rebuilt.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        } else {
            // (A block not announced to a thin bundle's fetch is fetched
            // now, by this thread.)
            decode(index, blocks, b, None, packed, buf)?;
        }
        // The base as compressed against: before any relocation rewrite.
        span.extend_from_slice(buf);
        if unit.write.contains(&b) {
            write_block(index, b, work, t, buf, parents)?;
        }
    }
    for &b in &unit.blocks {
        let base = index.blocks[b].base.map(|base| {
            let from = (base.offset - span_start) as usize;
            &span[from..from + base.len as usize]
        });
        decode(index, blocks, b, base, packed, buf)?;
        write_block(index, b, work, t, buf, parents)?;
    }
    Ok(())
}

/// Block `b`'s bytes as decoded, into `buf`, read from the linked files
/// whose contents `spans` says cover it (their content checked against its
/// name when it was published). False if one cannot be read.
fn rebuild(
    index: &Index,
    b: usize,
    spans: &[(u64, u64, usize)],
    t: &Target<'_>,
    parents: &mut Parents,
    buf: &mut Vec<u8>,
) -> bool {
    let block = &index.blocks[b];
    let (start, end) = (block.raw_offset, block.raw_offset + u64::from(block.rlen));
    buf.resize(block.rlen as usize, 0);
    let mut filled = start;
    let first = spans.partition_point(|s| s.0 + s.1 <= start);
    for &(offset, size, entry) in spans[first..].iter().take_while(|s| s.0 < end) {
        let (from, to) = (offset.max(filled), (offset + size).min(end));
        if from >= to {
            continue; // a duplicate of a content already read
        }
        if from != filled {
            return false; // a gap: not all of it is held
        }
        let path = &index.entries[entry].path;
        let read = t.open(parents, path, OFlag::O_RDONLY, "reading").ok().and_then(|f| {
            f.read_exact_at(&mut buf[(from - start) as usize..(to - start) as usize], from - offset)
                .ok()
        });
        if read.is_none() {
            return false;
        }
        filled = to;
    }
    filled == end
}

/// Read block `b` and decode it (against `base`) into `buf`.
fn decode(
    index: &Index,
    blocks: &Blocks<'_>,
    b: usize,
    base: Option<&[u8]>,
    packed: &mut Vec<u8>,
    buf: &mut Vec<u8>,
) -> Result<()> {
    let block = &index.blocks[b];
    blocks.read(block, packed)?;
    buf.resize(block.rlen as usize, 0);
    decode_block(packed, block, b as u32, base, buf).map_err(|e| Failure::new(Code::Bundle, e.to_string()))
}

/// Write the pieces block `b` (decoded in `buf`) holds: each file that lies
/// whole in it checked against its SHA-256 first (a spread file's piece
/// hashed in order), then, for a relocated tree, the block's store
/// references rewritten.
fn write_block(
    index: &Index,
    b: usize,
    work: &Work,
    t: &Target<'_>,
    buf: &mut [u8],
    parents: &mut Parents,
) -> Result<()> {
    let block = &index.blocks[b];
    let pieces = &work.pieces[b];
    for p in pieces {
        let e = &index.entries[p.entry as usize];
        if let EntryKind::File { size, hash, .. } = &e.kind {
            let bytes = &buf[p.block_off as usize..(p.block_off + p.len) as usize];
            if u64::from(p.len) != *size {
                work.hash_piece(p, bytes);
            } else if sha256(bytes) != *hash {
                return Err(wrong_content(e));
            }
        }
    }
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
            let f = t.create(parents, &e.path, t.modes.of(executable))?;
            f.write_all_at(bytes, 0)
                .map_err(|err| errno(&err))
                .and_then(|()| futimens(&f, &EPOCH_PLUS_1, &EPOCH_PLUS_1))
                .map_err(|err| t.fail(&e.path, "writing", err))?;
            t.publish(parents, index, e)?;
        } else {
            t.open(parents, &e.path, OFlag::O_WRONLY, "writing")?
                .write_all_at(bytes, p.file_off)
                .map_err(|err| t.fail(&e.path, "writing", errno(&err)))?;
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
