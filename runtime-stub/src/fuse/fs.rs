//! The bundle's tree as a read-only file system, for mount mode: inode
//! numbers, lookups, attributes, directory listings and file reads, answered
//! from the verified index and the blocks' frames (the mapped data section,
//! or a thin bundle's fetched blocks: [`Frames`]). No system calls here
//! (`fuse` speaks the protocol); every read decodes whole blocks, checking
//! each block's SHA-256 before zstd sees it, through a bounded cache.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tote_format::{cmp_bytes, decode_block, eq_bytes, BlockRef, EntryKind, Index};

/// The root directory's inode number (FUSE's `FUSE_ROOT_ID`).
pub const ROOT: u64 = 1;

/// What `stat` shows; see `Fs::attr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub size: u64,
    /// `S_IFDIR | 0o555` and so on.
    pub mode: u32,
    pub nlink: u32,
}

pub const S_IFDIR: u32 = 0o040000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFLNK: u32 = 0o120000;

/// A directory entry as `readdir` returns it.
pub struct DirEntry<'a> {
    pub ino: u64,
    pub name: &'a [u8],
    /// `S_IF*` bits of the entry's mode.
    pub kind: u32,
    /// The offset to continue after this entry.
    pub next: u64,
}

/// Why a request fails, as the errno the caller sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsError {
    NotFound,
    NotDir,
    IsDir,
    Invalid,
    /// A block failed its SHA-256 check or did not decode: the reader gets
    /// EIO, never wrong bytes.
    Io,
}

/// Where the blocks' compressed frames come from.
pub trait Frames: Send + Sync {
    /// Block `number`'s stored bytes (`r`, as the index lists it),
    /// unchecked: the reader checks them. An error (the block could not be
    /// fetched) is the reader's EIO; the source says why itself.
    fn frame(&self, number: usize, r: &BlockRef) -> Result<Cow<'_, [u8]>, FsError>;
    /// Called with each frame once it is decoded.
    fn done(&self, _frame: &[u8]) {}
    /// Block `number`'s bytes did not check out: forget them. True if
    /// asking again may give other bytes (they are fetched again).
    fn reject(&self, _number: usize) -> bool {
        false
    }
}

/// Frames in a data section at hand: the mapped bundle's. `done` is called
/// with each frame once decoded (mount mode unmaps its pages, so the
/// server's memory is its cache, not the file).
pub struct Mapped<'a> {
    pub data: &'a [u8],
    pub done: fn(&[u8]),
}

impl Frames for Mapped<'_> {
    fn frame(&self, _number: usize, r: &BlockRef) -> Result<Cow<'_, [u8]>, FsError> {
        // The index has been verified against the trailer, so every block
        // lies inside the section.
        Ok(Cow::Borrowed(r.frame(self.data)))
    }

    fn done(&self, frame: &[u8]) {
        (self.done)(frame)
    }
}

/// Counters for TOTE_DEBUG.
#[derive(Default)]
pub struct Stats {
    pub decoded: AtomicU64,
    pub hits: AtomicU64,
}

pub struct Fs<'a> {
    index: Index,
    /// Entry `i`'s parent: 0 for the root, else its inode number.
    parent: Vec<u64>,
    /// Children of inode `n` are `children[first[n]..first[n + 1]]`
    /// (entry indices, in name order).
    first: Vec<u32>,
    children: Vec<u32>,
    /// Subdirectories per inode, for `nlink`.
    subdirs: Vec<u32>,
    blocks: Blocks<'a>,
}

/// Entry `i` is inode `i + 2`.
fn ino_of(entry: usize) -> u64 {
    entry as u64 + 2
}

fn parent_path(path: &[u8]) -> Option<&[u8]> {
    path.iter().rposition(|&c| c == b'/').map(|cut| &path[..cut])
}

fn name_of(path: &[u8]) -> &[u8] {
    path.rsplit(|&c| c == b'/').next().unwrap_or(path)
}

impl<'a> Fs<'a> {
    /// The tree of `index` (verified), its blocks' frames from `frames`,
    /// with up to `cache_bytes` of decoded blocks kept.
    pub fn new(index: Index, frames: Box<dyn Frames + 'a>, cache_bytes: usize) -> Fs<'a> {
        let n = index.entries.len();
        let mut parent = vec![ROOT; n];
        let mut count = vec![0u32; n + 2];
        let mut subdirs = vec![0u32; n + 2];
        for (i, e) in index.entries.iter().enumerate() {
            // Parents come first and are directories (the format guarantees
            // both). Mostly the previous entry's parent, or that entry.
            let dir = parent_path(&e.path);
            let p = match (dir, i.checked_sub(1)) {
                (None, _) => ROOT,
                (Some(d), Some(j)) if eq_bytes(&index.entries[j].path, d) => ino_of(j),
                (Some(d), Some(j)) if parent_path(&index.entries[j].path).is_some_and(|p| eq_bytes(p, d)) => parent[j],
                (Some(d), _) => index
                    .entries
                    .binary_search_by(|x| cmp_bytes(&x.path, d))
                    .map_or(ROOT, ino_of),
            };
            parent[i] = p;
            count[p as usize] += 1;
            if e.kind == EntryKind::Dir {
                subdirs[p as usize] += 1;
            }
        }
        let mut first = Vec::with_capacity(n + 3);
        let mut at = 0u32;
        for c in &count {
            first.push(at);
            at += c;
        }
        first.push(at);
        let mut fill = first.clone();
        let mut children = vec![0u32; n];
        for (i, &p) in parent.iter().enumerate() {
            // Entries are sorted by path, so siblings arrive in name order.
            children[fill[p as usize] as usize] = i as u32;
            fill[p as usize] += 1;
        }
        let blocks = Blocks::new(frames, cache_bytes, index.blocks.len());
        Fs {
            index,
            parent,
            first,
            children,
            subdirs,
            blocks,
        }
    }

    pub fn stats(&self) -> &Stats {
        &self.blocks.stats
    }

    fn entry(&self, ino: u64) -> Option<&tote_format::Entry> {
        ino.checked_sub(2).and_then(|i| self.index.entries.get(i as usize))
    }

    fn is_dir(&self, ino: u64) -> bool {
        ino == ROOT || self.entry(ino).is_some_and(|e| e.kind == EntryKind::Dir)
    }

    fn kids(&self, dir: u64) -> &[u32] {
        let d = dir as usize;
        &self.children[self.first[d] as usize..self.first[d + 1] as usize]
    }

    pub fn attr(&self, ino: u64) -> Result<Attr, FsError> {
        if ino == ROOT {
            return Ok(Attr {
                ino,
                size: 4096,
                mode: S_IFDIR | 0o555,
                nlink: 2 + self.subdirs[ROOT as usize],
            });
        }
        let e = self.entry(ino).ok_or(FsError::NotFound)?;
        Ok(match &e.kind {
            EntryKind::Dir => Attr {
                ino,
                size: 4096,
                mode: S_IFDIR | 0o555,
                nlink: 2 + self.subdirs[ino as usize],
            },
            EntryKind::File { executable, size, .. } => Attr {
                ino,
                size: *size,
                mode: S_IFREG | if *executable { 0o555 } else { 0o444 },
                nlink: 1,
            },
            EntryKind::Symlink { target } => Attr {
                ino,
                size: target.len() as u64,
                mode: S_IFLNK | 0o777,
                nlink: 1,
            },
        })
    }

    /// The inode of `name` in directory `dir`.
    pub fn lookup(&self, dir: u64, name: &[u8]) -> Result<u64, FsError> {
        if !self.is_dir(dir) {
            return Err(if self.entry(dir).is_some() {
                FsError::NotDir
            } else {
                FsError::NotFound
            });
        }
        match name {
            b"." => return Ok(dir),
            b".." => return Ok(self.parent_of(dir)),
            _ => {}
        }
        let kids = self.kids(dir);
        kids.binary_search_by(|&c| cmp_bytes(name_of(&self.index.entries[c as usize].path), name))
            .map(|k| ino_of(kids[k] as usize))
            .map_err(|_| FsError::NotFound)
    }

    fn parent_of(&self, ino: u64) -> u64 {
        if ino == ROOT {
            ROOT
        } else {
            self.parent[(ino - 2) as usize]
        }
    }

    pub fn readlink(&self, ino: u64) -> Result<&[u8], FsError> {
        match &self.entry(ino).ok_or(FsError::NotFound)?.kind {
            EntryKind::Symlink { target } => Ok(target),
            _ => Err(FsError::Invalid),
        }
    }

    /// Entries of `dir` from offset `from` on: `.` (0), `..` (1), then the
    /// children in name order.
    pub fn readdir(&self, dir: u64, from: u64) -> Result<impl Iterator<Item = DirEntry<'_>>, FsError> {
        if !self.is_dir(dir) {
            return Err(FsError::NotDir);
        }
        let dots = [(dir, &b"."[..]), (self.parent_of(dir), &b".."[..])];
        let kids = self.kids(dir);
        let all = dots
            .into_iter()
            .map(|(ino, name)| (ino, name, S_IFDIR))
            .chain(kids.iter().map(|&c| {
                let e = &self.index.entries[c as usize];
                let kind = match e.kind {
                    EntryKind::Dir => S_IFDIR,
                    EntryKind::File { .. } => S_IFREG,
                    EntryKind::Symlink { .. } => S_IFLNK,
                };
                (ino_of(c as usize), name_of(&e.path), kind)
            }));
        Ok(all
            .enumerate()
            .skip(from.min(usize::MAX as u64) as usize)
            .map(|(i, (ino, name, kind))| DirEntry {
                ino,
                name,
                kind,
                next: i as u64 + 1,
            }))
    }

    /// Is `ino` a regular file (what `open` accepts)?
    pub fn check_file(&self, ino: u64) -> Result<(), FsError> {
        match self.entry(ino).map(|e| &e.kind) {
            Some(EntryKind::File { .. }) => Ok(()),
            Some(EntryKind::Dir) => Err(FsError::IsDir),
            Some(EntryKind::Symlink { .. }) => Err(FsError::Invalid),
            None if ino == ROOT => Err(FsError::IsDir),
            None => Err(FsError::NotFound),
        }
    }

    /// Append up to `len` bytes of file `ino` from `offset` to `out`.
    pub fn read(&self, ino: u64, offset: u64, len: u32, out: &mut Vec<u8>) -> Result<(), FsError> {
        let (size, start) = match self.entry(ino).map(|e| &e.kind) {
            Some(EntryKind::File { size, offset, .. }) => (*size, *offset),
            _ => return Err(FsError::Invalid),
        };
        if offset >= size {
            return Ok(());
        }
        let n = (size - offset).min(u64::from(len));
        let (from, to) = (start + offset, start + offset + n);
        for b in self.index.blocks_for(from, n) {
            let r = &self.index.blocks[b];
            let raw = self.blocks.get(&self.index, b, r)?;
            out.extend_from_slice(&raw[r.overlap(from, to)]);
        }
        Ok(())
    }

    /// Block numbers whose check failed so far (reported once each).
    pub fn take_bad_block(&self) -> Option<u32> {
        self.blocks.bad.lock().ok()?.pop_front()
    }
}

/// Decoded blocks, shared by the server threads, bounded in bytes. A block
/// being decoded is locked, so concurrent readers of it wait for the one
/// decoding instead of decoding it again; readers of other blocks do not.
struct Blocks<'a> {
    frames: Box<dyn Frames + 'a>,
    slots: Vec<Mutex<Option<Arc<Vec<u8>>>>>,
    /// Cached blocks, oldest first: evicted in this order.
    queue: Mutex<VecDeque<usize>>,
    bytes: AtomicUsize,
    cap: usize,
    stats: Stats,
    bad: Mutex<VecDeque<u32>>,
    failed: Vec<std::sync::atomic::AtomicBool>,
}

impl<'a> Blocks<'a> {
    fn new(frames: Box<dyn Frames + 'a>, cap: usize, n: usize) -> Blocks<'a> {
        Blocks {
            frames,
            slots: (0..n).map(|_| Mutex::new(None)).collect(),
            queue: Mutex::new(VecDeque::new()),
            bytes: AtomicUsize::new(0),
            cap,
            stats: Stats::default(),
            bad: Mutex::new(VecDeque::new()),
            failed: (0..n).map(|_| Default::default()).collect(),
        }
    }

    /// Block `number` of `index` (`r`), decoded or from the cache. A block
    /// with a base gets its base blocks the same way first (they have no
    /// base of their own, so no thread ever waits on a block that waits).
    fn get(&self, index: &Index, number: usize, r: &BlockRef) -> Result<Arc<Vec<u8>>, FsError> {
        let mut slot = self.slots[number].lock().map_err(|_| FsError::Io)?;
        if let Some(b) = &*slot {
            self.stats.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(b.clone());
        }
        let base = match r.base {
            None => None,
            Some(base) => {
                let mut bytes = Vec::with_capacity(base.len as usize);
                for n in index.base_blocks(number) {
                    let raw = self.get(index, n, &index.blocks[n])?;
                    bytes.extend_from_slice(
                        &raw[index.blocks[n].overlap(base.offset, base.offset + u64::from(base.len))],
                    );
                }
                Some(bytes)
            }
        };
        let mut raw = vec![0u8; r.rlen as usize];
        let mut decoded = false;
        for again in [false, true] {
            let frame = self.frames.frame(number, r)?;
            decoded = decode_block(&frame, r, number as u32, base.as_deref(), &mut raw).is_ok();
            self.frames.done(&frame);
            if decoded || again || !self.frames.reject(number) {
                break;
            }
        }
        if !decoded {
            if !self.failed[number].swap(true, Ordering::Relaxed) {
                if let Ok(mut bad) = self.bad.lock() {
                    bad.push_back(number as u32);
                }
            }
            return Err(FsError::Io);
        }
        self.stats.decoded.fetch_add(1, Ordering::Relaxed);
        let raw = Arc::new(raw);
        *slot = Some(raw.clone());
        drop(slot);
        self.admit(number, r.rlen as usize);
        Ok(raw)
    }

    /// Count a newly cached block, then evict the oldest ones over the cap
    /// (skipping any that a thread holds right now: they go to the back).
    fn admit(&self, number: usize, len: usize) {
        let Ok(mut q) = self.queue.lock() else { return };
        q.push_back(number);
        let mut total = self.bytes.fetch_add(len, Ordering::Relaxed) + len;
        let mut tries = q.len();
        while total > self.cap && tries > 0 {
            tries -= 1;
            let Some(old) = q.pop_front() else { break };
            match self.slots[old].try_lock() {
                Ok(mut s) => {
                    if let Some(b) = s.take() {
                        total = self.bytes.fetch_sub(b.len(), Ordering::Relaxed) - b.len();
                    }
                }
                Err(_) => q.push_back(old),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tote_format::{encode_block, sha256, Entry};

    /// A tree with a file spanning three 16-byte blocks, a small file, an
    /// empty one, an executable, a symlink and nested directories.
    fn sample(block: usize) -> (Index, Vec<u8>, Vec<u8>) {
        let big: Vec<u8> = (0..40u8).collect();
        let small = b"hello\n".to_vec();
        let stream = [big.clone(), small.clone()].concat();
        let mut data = Vec::new();
        let mut blocks = Vec::new();
        for (i, chunk) in stream.chunks(block).enumerate() {
            let e = encode_block(chunk, 3, None).unwrap();
            blocks.push(BlockRef {
                codec: e.codec,
                ..BlockRef::zstd(
                    data.len() as u64,
                    e.bytes.len() as u32,
                    (i * block) as u64,
                    chunk.len() as u32,
                    e.hash,
                )
            });
            data.extend_from_slice(&e.bytes);
        }
        let file = |p: &str, executable, size, offset, content: &[u8]| Entry {
            path: p.into(),
            kind: EntryKind::File {
                executable,
                size,
                offset,
                hash: sha256(content),
            },
        };
        let dir = |p: &str| Entry {
            path: p.into(),
            kind: EntryKind::Dir,
        };
        let entries = vec![
            dir("a"),
            dir("a/b"),
            file("a/b/big", false, 40, 0, &big),
            file("a/b/run", true, 6, 40, &small),
            dir("a/b-c"),
            file("a/empty", false, 0, 0, b""),
            Entry {
                path: b"a/link".to_vec(),
                kind: EntryKind::Symlink {
                    target: b"b/run".to_vec(),
                },
            },
            dir("z"),
        ];
        (
            Index {
                blocks,
                entries,
                refs: vec![],
            },
            data,
            stream,
        )
    }

    fn mapped(data: &[u8]) -> Box<dyn Frames + '_> {
        Box::new(Mapped { data, done: |_| {} })
    }

    fn path(fs: &Fs<'_>, p: &str) -> Result<u64, FsError> {
        p.split('/').try_fold(ROOT, |dir, name| fs.lookup(dir, name.as_bytes()))
    }

    fn read_all(fs: &Fs<'_>, ino: u64, chunk: u32) -> Result<Vec<u8>, FsError> {
        let mut out = Vec::new();
        loop {
            let before = out.len();
            fs.read(ino, before as u64, chunk, &mut out)?;
            if out.len() == before {
                return Ok(out);
            }
        }
    }

    #[test]
    fn lookups_follow_the_tree() {
        let (index, data, _) = sample(16);
        let fs = Fs::new(index, mapped(&data), 1 << 20);
        let b = path(&fs, "a/b").unwrap();
        assert_eq!(fs.attr(b).unwrap().mode, S_IFDIR | 0o555);
        assert_eq!(path(&fs, "a/b/run").unwrap(), fs.lookup(b, b"run").unwrap());
        assert_eq!(fs.lookup(b, b"..").unwrap(), path(&fs, "a").unwrap());
        assert_eq!(fs.lookup(ROOT, b"..").unwrap(), ROOT);
        assert_eq!(path(&fs, "a/b-c"), Ok(6));
        assert_eq!(path(&fs, "a/nope"), Err(FsError::NotFound));
        assert_eq!(path(&fs, "a/empty/x"), Err(FsError::NotDir));
        // `a` has subdirectories b and b-c: nlink 4.
        assert_eq!(fs.attr(path(&fs, "a").unwrap()).unwrap().nlink, 4);
        assert_eq!(fs.attr(ROOT).unwrap().nlink, 4);
        assert_eq!(fs.attr(999), Err(FsError::NotFound));
    }

    #[test]
    fn attributes_and_links() {
        let (index, data, _) = sample(16);
        let fs = Fs::new(index, mapped(&data), 1 << 20);
        let run = fs.attr(path(&fs, "a/b/run").unwrap()).unwrap();
        assert_eq!((run.mode, run.size), (S_IFREG | 0o555, 6));
        let big = fs.attr(path(&fs, "a/b/big").unwrap()).unwrap();
        assert_eq!((big.mode, big.size), (S_IFREG | 0o444, 40));
        let link = path(&fs, "a/link").unwrap();
        assert_eq!(fs.attr(link).unwrap().mode, S_IFLNK | 0o777);
        assert_eq!(fs.readlink(link).unwrap(), b"b/run");
        assert_eq!(fs.readlink(ROOT), Err(FsError::NotFound));
        assert_eq!(fs.check_file(link), Err(FsError::Invalid));
        assert_eq!(fs.check_file(path(&fs, "a").unwrap()), Err(FsError::IsDir));
    }

    #[test]
    fn listings_resume_at_any_offset() {
        let (index, data, _) = sample(16);
        let fs = Fs::new(index, mapped(&data), 1 << 20);
        let a = path(&fs, "a").unwrap();
        let names = |from| -> Vec<String> {
            fs.readdir(a, from)
                .unwrap()
                .map(|e| String::from_utf8_lossy(e.name).into_owned())
                .collect()
        };
        assert_eq!(names(0), [".", "..", "b", "b-c", "empty", "link"]);
        assert_eq!(names(3), ["b-c", "empty", "link"]);
        assert!(names(6).is_empty());
        let nexts: Vec<u64> = fs.readdir(a, 2).unwrap().map(|e| e.next).collect();
        assert_eq!(nexts, [3, 4, 5, 6]);
        assert!(fs.readdir(path(&fs, "a/empty").unwrap(), 0).is_err());
    }

    #[test]
    fn reads_cross_blocks_and_stop_at_the_end() {
        for cache in [0, 1 << 20] {
            let (index, data, stream) = sample(16);
            let fs = Fs::new(index, mapped(&data), cache);
            let big = path(&fs, "a/b/big").unwrap();
            for chunk in [1, 7, 16, 100] {
                assert_eq!(read_all(&fs, big, chunk).unwrap(), &stream[..40], "chunk {chunk}");
            }
            assert_eq!(read_all(&fs, path(&fs, "a/b/run").unwrap(), 4).unwrap(), b"hello\n");
            assert_eq!(read_all(&fs, path(&fs, "a/empty").unwrap(), 4).unwrap(), b"");
            let mut out = Vec::new();
            fs.read(big, 38, 100, &mut out).unwrap();
            assert_eq!(out, [38, 39]);
            assert_eq!(fs.read(path(&fs, "a").unwrap(), 0, 1, &mut out), Err(FsError::Invalid));
        }
    }

    #[test]
    fn the_cache_stays_within_its_bound() {
        let (index, data, _) = sample(16);
        let fs = Fs::new(index, mapped(&data), 20);
        read_all(&fs, path(&fs, "a/b/big").unwrap(), 100).unwrap();
        assert!(fs.blocks.bytes.load(Ordering::Relaxed) <= 20);
        assert_eq!(fs.stats().decoded.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn a_corrupt_block_is_an_io_error_not_wrong_bytes() {
        let (index, mut data, _) = sample(16);
        let second = index.blocks[1];
        data[second.offset as usize + second.clen as usize / 2] ^= 0x40;
        let fs = Fs::new(index, mapped(&data), 1 << 20);
        let big = path(&fs, "a/b/big").unwrap();
        let mut out = Vec::new();
        fs.read(big, 0, 16, &mut out).unwrap();
        assert_eq!(out.len(), 16, "the first block is intact");
        assert_eq!(fs.read(big, 10, 10, &mut Vec::new()), Err(FsError::Io));
        assert_eq!(fs.read(big, 16, 1, &mut Vec::new()), Err(FsError::Io));
        assert_eq!(fs.take_bad_block(), Some(1));
        assert_eq!(fs.take_bad_block(), None, "reported once");
    }

    /// A source whose first answer for a block is damaged (a store written
    /// by a launch that died mid-write) and whose second is good: the
    /// reader rejects the first, asks again, and gets the right bytes.
    struct Flaky<'a> {
        data: &'a [u8],
        rejected: Mutex<Vec<usize>>,
    }

    impl Frames for Flaky<'_> {
        fn frame(&self, number: usize, r: &BlockRef) -> Result<Cow<'_, [u8]>, FsError> {
            let mut f = r.frame(self.data).to_vec();
            if number == 1 && !self.rejected.lock().unwrap().contains(&1) {
                f[0] ^= 1;
            }
            Ok(Cow::Owned(f))
        }

        fn reject(&self, number: usize) -> bool {
            self.rejected.lock().unwrap().push(number);
            number == 1
        }
    }

    #[test]
    fn a_rejected_frame_is_asked_for_again_once() {
        let (index, data, stream) = sample(16);
        let flaky = Flaky {
            data: &data,
            rejected: Mutex::new(Vec::new()),
        };
        let fs = Fs::new(index, Box::new(flaky), 1 << 20);
        let big = path(&fs, "a/b/big").unwrap();
        assert_eq!(read_all(&fs, big, 100).unwrap(), &stream[..40]);
        assert_eq!(fs.take_bad_block(), None);
        // A source that cannot do better: EIO, reported once.
        let (index, mut data, _) = sample(16);
        data[index.blocks[2].offset as usize] ^= 1;
        let flaky = Flaky {
            data: &data,
            rejected: Mutex::new(Vec::new()),
        };
        let fs = Fs::new(index, Box::new(flaky), 1 << 20);
        let big = path(&fs, "a/b/big").unwrap();
        assert_eq!(fs.read(big, 32, 8, &mut Vec::new()), Err(FsError::Io));
        assert_eq!(fs.take_bad_block(), Some(2));
    }
}
