//! The index: every entry of the tree and every block, compressed as one
//! zstd frame. Readable without touching the data blocks.

use std::ops::Range;

use crate::block::{Base, BlockRef, Codec, MAX_BASE_BLOCKS, MAX_BASE_LEN};
use crate::bytes::{cmp_bytes, eq_bytes};
use crate::hash::Digest32;
use crate::reader::Reader;
use crate::{FormatError, MAX_BLOCKS, MAX_BLOCK_RATIO, MAX_BLOCK_RAW, MAX_DEPTH, MAX_ENTRIES, MAX_REFS};

const KIND_DIR: u8 = 1;
const KIND_FILE: u8 = 2;
const KIND_EXEC: u8 = 3;
const KIND_SYMLINK: u8 = 4;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    /// A regular file. Its bytes are `size` bytes at `offset` of the
    /// uncompressed data stream; `hash` is the SHA-256 of those bytes.
    File {
        executable: bool,
        size: u64,
        offset: u64,
        hash: Digest32,
    },
    Symlink {
        target: Vec<u8>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative path inside the bundle's tree, e.g. `nix/store/abc-hello/bin/hello`.
    pub path: Vec<u8>,
    pub kind: EntryKind,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Index {
    pub blocks: Vec<BlockRef>,
    /// Sorted by path (bytewise), unique; every parent is a `Dir` entry.
    pub entries: Vec<Entry>,
    /// Stream offsets of every store reference (see [`crate::refs`]), strictly
    /// increasing; only in a store bundle (version 4).
    pub refs: Vec<u64>,
}

impl Index {
    /// The summary figures this index implies; the metadata must agree.
    pub fn stats(&self) -> crate::Stats {
        let files = self.entries.iter().filter_map(|e| match e.kind {
            EntryKind::File { size, .. } => Some(size),
            _ => None,
        });
        crate::Stats {
            entries: self.entries.len() as u64,
            files: files.clone().count() as u64,
            total_size: files.sum(),
            unique_size: self.stream_len(),
            blocks: self.blocks.len() as u64,
        }
    }

    /// Length of the uncompressed data stream.
    pub fn stream_len(&self) -> u64 {
        self.blocks.last().map_or(0, |b| b.raw_offset + u64::from(b.rlen))
    }

    /// Length of the compressed data section.
    pub fn data_len(&self) -> u64 {
        self.blocks.last().map_or(0, |b| b.offset + u64::from(b.clen))
    }

    /// The blocks that hold stream bytes `offset..offset+size`.
    pub fn blocks_for(&self, offset: u64, size: u64) -> Range<usize> {
        if size == 0 {
            return 0..0;
        }
        let first = self
            .blocks
            .partition_point(|b| b.raw_offset + u64::from(b.rlen) <= offset);
        let end = offset + size;
        let last = self.blocks.partition_point(|b| b.raw_offset < end);
        first..last
    }

    /// The blocks block `b`'s base lies in (empty if it has none): decoded
    /// before it, none of them has a base of its own.
    pub fn base_blocks(&self, b: usize) -> Range<usize> {
        match self.blocks[b].base {
            Some(base) => self.blocks_for(base.offset, u64::from(base.len)),
            None => 0..0,
        }
    }

    /// The store references inside stream bytes `from..to`: a range of
    /// [`Index::refs`].
    pub fn refs_in(&self, from: u64, to: u64) -> &[u64] {
        let lo = self.refs.partition_point(|&r| r < from);
        let hi = self.refs.partition_point(|&r| r < to);
        &self.refs[lo..hi]
    }

    /// Decode and validate the uncompressed index of format `version`.
    ///
    /// `data_len` is the size of the data section given by the trailer; the
    /// blocks must tile it exactly.
    pub fn decode(raw: &[u8], data_len: u64, version: u32) -> Result<Index, FormatError> {
        let bad = |m: String| FormatError::Index(m);
        let mut r = Reader::new(raw, "index");

        let nblocks = r.u32()? as usize;
        if nblocks > MAX_BLOCKS {
            return Err(bad(format!("{nblocks} blocks (at most {MAX_BLOCKS})")));
        }
        let mut blocks: Vec<BlockRef> = Vec::with_capacity(nblocks.min(r.remaining() / 40));
        let (mut offset, mut raw_offset) = (0u64, 0u64);
        for i in 0..nblocks {
            let clen = r.u32()?;
            let rlen = r.u32()?;
            let hash = Digest32(r.array()?);
            if clen == 0 || rlen == 0 || rlen > MAX_BLOCK_RAW {
                return Err(bad(format!("block {i} has an invalid size")));
            }
            if u64::from(rlen) > u64::from(clen) * MAX_BLOCK_RATIO {
                return Err(bad(format!(
                    "block {i} claims {rlen} bytes from {clen} (more than zstd can expand)"
                )));
            }
            let mut block = BlockRef::zstd(offset, clen, raw_offset, rlen, hash);
            if version >= 5 {
                let flags = r.u8()?;
                if flags & !(FLAG_STORED | FLAG_BASE) != 0 {
                    return Err(bad(format!("block {i} has unknown flags {flags:#x}")));
                }
                if flags & FLAG_STORED != 0 {
                    if flags & FLAG_BASE != 0 || clen != rlen {
                        return Err(bad(format!("stored block {i} has a base or a size that differs")));
                    }
                    block.codec = Codec::Stored;
                }
                if flags & FLAG_BASE != 0 {
                    let base = Base {
                        offset: r.u64()?,
                        len: r.u32()?,
                    };
                    check_base(&blocks, raw_offset, base).map_err(|why| bad(format!("block {i}'s base {why}")))?;
                    block.base = Some(base);
                }
            }
            blocks.push(block);
            offset += u64::from(clen);
            raw_offset += u64::from(rlen);
        }
        if offset != data_len {
            return Err(bad(format!("blocks cover {offset} bytes, data section has {data_len}")));
        }
        let stream_len = raw_offset;

        let nentries = r.u32()? as usize;
        if nentries > MAX_ENTRIES {
            return Err(bad(format!("{nentries} entries (at most {MAX_ENTRIES})")));
        }
        let mut entries: Vec<Entry> = Vec::with_capacity(nentries.min(r.remaining() / 4));
        for i in 0..nentries {
            let kind = r.u8()?;
            let path = r.short_blob()?;
            match check_path(path) {
                PathCheck::Ok => {}
                PathCheck::Unsafe => return Err(bad(format!("entry {i} has an unsafe path {:?}", lossy(path)))),
                PathCheck::TooLong(why) => return Err(bad(format!("entry {i} has a path that is {why}"))),
            }
            if let Some(prev) = entries.last() {
                if cmp_bytes(&prev.path, path) != std::cmp::Ordering::Less {
                    return Err(bad(format!("entry {:?} is out of order or a duplicate", lossy(path))));
                }
            }
            if let Some(parent) = parent_of(path) {
                if !has_dir(&entries, parent) {
                    return Err(bad(format!(
                        "parent of {:?} is not a directory in the bundle",
                        lossy(path)
                    )));
                }
            }
            let kind = match kind {
                KIND_DIR => EntryKind::Dir,
                KIND_FILE | KIND_EXEC => {
                    let size = r.u64()?;
                    let offset = r.u64()?;
                    let hash = Digest32(r.array()?);
                    if offset.checked_add(size).is_none_or(|end| end > stream_len) {
                        return Err(bad(format!("file {:?} lies outside the data stream", lossy(path))));
                    }
                    EntryKind::File {
                        executable: kind == KIND_EXEC,
                        size,
                        offset,
                        hash,
                    }
                }
                KIND_SYMLINK => {
                    let target = r.short_blob()?;
                    if target.is_empty() || target.contains(&0) || target.len() > MAX_PATH {
                        return Err(bad(format!("symlink {:?} has an invalid target", lossy(path))));
                    }
                    EntryKind::Symlink {
                        target: target.to_vec(),
                    }
                }
                other => return Err(bad(format!("entry {:?} has unknown kind {other}", lossy(path)))),
            };
            entries.push(Entry {
                path: path.to_vec(),
                kind,
            });
        }
        let refs = if version >= 4 {
            decode_refs(&mut r, stream_len)?
        } else {
            Vec::new()
        };
        if r.remaining() != 0 {
            return Err(bad(format!("{} unexpected trailing bytes", r.remaining())));
        }
        let index = Index { blocks, entries, refs };
        index.check_amplification(data_len)?;
        Ok(index)
    }

    /// The data stream, the decoding its based blocks' bases take, and the
    /// files together each claim no more than [`crate::amplification_cap`]
    /// of the data section (`data_len` bytes).
    pub fn check_amplification(&self, data_len: u64) -> Result<(), FormatError> {
        let cap = crate::amplification_cap(data_len);
        let files = self
            .entries
            .iter()
            .filter_map(|e| match e.kind {
                EntryKind::File { size, .. } => Some(size),
                _ => None,
            })
            .try_fold(0u64, u64::checked_add);
        let too_much = |what: &str, n: Option<u64>| {
            FormatError::Index(format!(
                "{what} {} bytes, from a data section of {data_len}: more than {} times it plus 1 GiB",
                n.map_or_else(|| "more than 2^64".into(), |n| n.to_string()),
                crate::MAX_AMPLIFICATION
            ))
        };
        if self.stream_len() > cap {
            return Err(too_much("its blocks decode to", Some(self.stream_len())));
        }
        // A based block decodes its base blocks first (a reader that keeps
        // none of them: `tote verify`, one block at a time).
        let bases = (0..self.blocks.len())
            .filter(|&b| self.blocks[b].base.is_some())
            .flat_map(|b| self.base_blocks(b))
            .map(|n| u64::from(self.blocks[n].rlen))
            .try_fold(0u64, u64::checked_add);
        if bases.is_none_or(|n| n > cap) {
            return Err(too_much("the bases of its blocks decode to", bases));
        }
        match files {
            Some(n) if n <= cap => Ok(()),
            n => Err(too_much("its files total", n)),
        }
    }

    #[cfg(feature = "write")]
    pub fn encode(&self) -> Vec<u8> {
        self.encode_for(crate::VERSION)
    }

    /// The encoding of format `version` (tests write older ones; blocks
    /// then have neither bases nor the stored codec).
    #[cfg(feature = "write")]
    pub(crate) fn encode_for(&self, version: u32) -> Vec<u8> {
        use crate::reader::put_short_blob;
        let mut out = Vec::new();
        out.extend_from_slice(&(self.blocks.len() as u32).to_le_bytes());
        for b in &self.blocks {
            out.extend_from_slice(&b.clen.to_le_bytes());
            out.extend_from_slice(&b.rlen.to_le_bytes());
            out.extend_from_slice(&b.hash.0);
            if version < 5 {
                continue;
            }
            let stored = if b.codec == Codec::Stored { FLAG_STORED } else { 0 };
            match b.base {
                None => out.push(stored),
                Some(base) => {
                    out.push(stored | FLAG_BASE);
                    out.extend_from_slice(&base.offset.to_le_bytes());
                    out.extend_from_slice(&base.len.to_le_bytes());
                }
            }
        }
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for e in &self.entries {
            let kind = match e.kind {
                EntryKind::Dir => KIND_DIR,
                EntryKind::File { executable: false, .. } => KIND_FILE,
                EntryKind::File { executable: true, .. } => KIND_EXEC,
                EntryKind::Symlink { .. } => KIND_SYMLINK,
            };
            out.push(kind);
            put_short_blob(&mut out, &e.path);
            match &e.kind {
                EntryKind::Dir => {}
                EntryKind::File { size, offset, hash, .. } => {
                    out.extend_from_slice(&size.to_le_bytes());
                    out.extend_from_slice(&offset.to_le_bytes());
                    out.extend_from_slice(&hash.0);
                }
                EntryKind::Symlink { target } => put_short_blob(&mut out, target),
            }
        }
        if version < 4 {
            return out;
        }
        out.extend_from_slice(&(self.refs.len() as u32).to_le_bytes());
        let mut prev = 0;
        for (i, &r) in self.refs.iter().enumerate() {
            put_varint(&mut out, if i == 0 { r } else { r - prev });
            prev = r;
        }
        out
    }
}

/// Version 5 block flags: stored rather than zstd; a base follows.
const FLAG_STORED: u8 = 1;
const FLAG_BASE: u8 = 2;

/// A base must be earlier stream bytes, no longer than [`MAX_BASE_LEN`],
/// held by at most [`MAX_BASE_BLOCKS`] blocks (`earlier`, the blocks before
/// this one, which starts at `start`), none of which has a base itself.
fn check_base(earlier: &[BlockRef], start: u64, base: Base) -> Result<(), String> {
    if base.len == 0 || base.len > MAX_BASE_LEN {
        return Err(format!("is {} bytes long (1 to {MAX_BASE_LEN})", base.len));
    }
    if base
        .offset
        .checked_add(u64::from(base.len))
        .is_none_or(|end| end > start)
    {
        return Err("does not lie before the block".into());
    }
    let first = earlier.partition_point(|b| b.raw_offset + u64::from(b.rlen) <= base.offset);
    let last = earlier.partition_point(|b| b.raw_offset < base.offset + u64::from(base.len));
    if last - first > MAX_BASE_BLOCKS {
        return Err(format!("spans {} blocks (at most {MAX_BASE_BLOCKS})", last - first));
    }
    if earlier[first..last].iter().any(|b| b.base.is_some()) {
        return Err("lies in a block that has a base itself".into());
    }
    Ok(())
}

/// `u32 count`, then the offsets as LEB128: the first itself, each other as
/// its distance from the one before (at least 1).
fn decode_refs(r: &mut Reader<'_>, stream_len: u64) -> Result<Vec<u64>, FormatError> {
    let n = r.u32()? as usize;
    if n > MAX_REFS {
        return Err(FormatError::Index(format!("{n} store references (at most {MAX_REFS})")));
    }
    let mut refs = Vec::with_capacity(n.min(r.remaining()));
    let mut at = 0u64;
    for i in 0..n {
        let v = varint(r)?;
        at = if i == 0 {
            v
        } else if v == 0 {
            return Err(FormatError::Index("store references out of order".into()));
        } else {
            at.checked_add(v)
                .ok_or_else(|| FormatError::Index("a store reference lies outside the data stream".into()))?
        };
        if at >= stream_len {
            return Err(FormatError::Index(
                "a store reference lies outside the data stream".into(),
            ));
        }
        refs.push(at);
    }
    Ok(refs)
}

fn varint(r: &mut Reader<'_>) -> Result<u64, FormatError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = r.u8()?;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(FormatError::Index("a varint is too long".into()))
}

#[cfg(feature = "write")]
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// `a/b/c`: no empty, `.` or `..` components, no NUL, not absolute.
pub(crate) fn is_clean_relative(p: &[u8]) -> bool {
    !p.is_empty()
        && !p.contains(&0)
        && p.split(|&c| c == b'/')
            .all(|c| !c.is_empty() && c != b"." && c != b"..")
}

/// Longest entry path or symlink target, in bytes: what one system call on
/// a path relative to the tree accepts (PATH_MAX less its NUL).
pub const MAX_PATH: usize = 4095;
/// Longest path component (NAME_MAX).
pub const MAX_NAME: usize = 255;

enum PathCheck {
    Ok,
    /// Not a clean relative path (`is_clean_relative`).
    Unsafe,
    /// Clean, but Linux cannot create it: why.
    TooLong(String),
}

/// `is_clean_relative`, and short enough to create on Linux, in one pass
/// over the bytes (every entry of every launch's index goes through here).
fn check_path(p: &[u8]) -> PathCheck {
    let (mut start, mut longest, mut depth) = (0, 0, 0);
    for i in 0..=p.len() {
        let c = p.get(i).copied();
        if c == Some(0) {
            return PathCheck::Unsafe;
        }
        if c.is_none() || c == Some(b'/') {
            let comp = &p[start..i];
            if comp.is_empty() || comp == b"." || comp == b".." {
                return PathCheck::Unsafe;
            }
            longest = longest.max(comp.len());
            depth += 1;
            start = i + 1;
        }
    }
    if p.len() > MAX_PATH {
        return PathCheck::TooLong(format!("{} bytes long (at most {MAX_PATH})", p.len()));
    }
    if longest > MAX_NAME {
        return PathCheck::TooLong(format!("{longest} bytes long in one component (at most {MAX_NAME})"));
    }
    if depth > MAX_DEPTH {
        return PathCheck::TooLong(format!("{depth} levels deep (at most {MAX_DEPTH})"));
    }
    PathCheck::Ok
}

/// Is `dir` a directory among `entries` (sorted, each parent checked)?
/// Mostly answered by the last entry: a sibling (same parent, which was
/// checked) or the directory itself; else by binary search.
fn has_dir(entries: &[Entry], dir: &[u8]) -> bool {
    if let Some(prev) = entries.last() {
        if eq_bytes(&prev.path, dir) {
            return prev.kind == EntryKind::Dir;
        }
        if parent_of(&prev.path).is_some_and(|p| eq_bytes(p, dir)) {
            return true;
        }
    }
    entries
        .binary_search_by(|e| cmp_bytes(&e.path, dir))
        .is_ok_and(|i| entries[i].kind == EntryKind::Dir)
}

fn parent_of(p: &[u8]) -> Option<&[u8]> {
    p.iter().rposition(|&c| c == b'/').map(|i| &p[..i])
}

fn lossy(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

#[cfg(all(test, feature = "write"))]
mod tests {
    use super::*;

    fn block(offset: u64, clen: u32, raw_offset: u64, rlen: u32) -> BlockRef {
        BlockRef::zstd(offset, clen, raw_offset, rlen, Digest32([9; 32]))
    }

    fn file(path: &str, size: u64, offset: u64) -> Entry {
        Entry {
            path: path.into(),
            kind: EntryKind::File {
                executable: false,
                size,
                offset,
                hash: Digest32([3; 32]),
            },
        }
    }

    fn dir(path: &str) -> Entry {
        Entry {
            path: path.into(),
            kind: EntryKind::Dir,
        }
    }

    fn sample() -> Index {
        Index {
            blocks: vec![block(0, 10, 0, 100), block(10, 20, 100, 100)],
            entries: vec![
                dir("a"),
                file("a/f", 150, 0),
                Entry {
                    path: b"a/l".to_vec(),
                    kind: EntryKind::Symlink {
                        target: b"/etc/x".to_vec(),
                    },
                },
                dir("a/sub"),
                file("a/sub/g", 50, 150),
                file("b", 0, 0),
            ],
            refs: vec![3, 140, 199],
        }
    }

    #[test]
    fn round_trip() {
        let idx = sample();
        assert_eq!(Index::decode(&idx.encode(), 30, crate::VERSION).unwrap(), idx);
    }

    #[test]
    fn every_prefix_is_an_error() {
        let enc = sample().encode();
        for n in 0..enc.len() {
            assert!(Index::decode(&enc[..n], 30, crate::VERSION).is_err(), "prefix {n}");
        }
    }

    #[test]
    fn blocks_for_ranges() {
        let idx = sample();
        assert_eq!(idx.blocks_for(0, 150), 0..2);
        assert_eq!(idx.blocks_for(0, 100), 0..1);
        assert_eq!(idx.blocks_for(100, 1), 1..2);
        assert_eq!(idx.blocks_for(150, 50), 1..2);
        assert_eq!(idx.blocks_for(99, 2), 0..2);
        assert_eq!(idx.blocks_for(5, 0), 0..0);
    }

    fn refused(entries: Vec<Entry>) -> bool {
        let idx = Index {
            blocks: vec![block(0, 10, 0, 100)],
            entries,
            refs: vec![],
        };
        Index::decode(&idx.encode(), 10, crate::VERSION).is_err()
    }

    #[test]
    fn hostile_paths_are_refused() {
        assert!(refused(vec![dir("a"), file("a/../x", 1, 0)]));
        assert!(refused(vec![file("/etc/passwd", 1, 0)]));
        assert!(refused(vec![file("", 1, 0)]));
        assert!(refused(vec![dir("a"), file("a//x", 1, 0)]));
        assert!(refused(vec![file("x", 1, 0), file("x", 1, 0)]));
        assert!(refused(vec![file("b", 1, 0), file("a", 1, 0)]));
        // A file written through a symlink: the parent must be a directory.
        assert!(refused(vec![
            Entry {
                path: b"l".to_vec(),
                kind: EntryKind::Symlink {
                    target: b"/etc".to_vec()
                }
            },
            file("l/passwd", 1, 0),
        ]));
        assert!(refused(vec![file("x/y", 1, 0)]));
        assert!(refused(vec![file("x", 101, 0)]));
        assert!(refused(vec![file("x", 1, u64::MAX)]));
        assert!(!refused(vec![dir("a"), file("a/x", 100, 0)]));
    }

    #[test]
    fn paths_linux_cannot_create_are_refused() {
        // Nesting 10,000 deep: 19,999 bytes.
        let mut deep = Vec::new();
        let mut p = String::from("d");
        for _ in 0..10_000 {
            deep.push(dir(&p));
            p.push_str("/d");
        }
        assert!(refused(deep));
        assert!(refused(vec![file(&"n".repeat(256), 1, 0)]));
        assert!(!refused(vec![file(&"n".repeat(255), 1, 0)]));
        let long_target = Entry {
            path: b"l".to_vec(),
            kind: EntryKind::Symlink {
                target: vec![b'a'; MAX_PATH + 1],
            },
        };
        assert!(refused(vec![long_target]));
    }

    #[test]
    fn depth_past_the_limit_is_refused() {
        let nested = |levels: usize| -> Vec<Entry> { (1..=levels).map(|n| dir(&vec!["d"; n].join("/"))).collect() };
        assert!(!refused(nested(MAX_DEPTH)));
        let e = Index::decode(
            &Index {
                entries: nested(MAX_DEPTH + 1),
                ..Default::default()
            }
            .encode(),
            0,
            crate::VERSION,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("257 levels deep (at most 256)"), "{e}");
    }

    #[test]
    fn counts_past_the_limits_are_refused_before_anything_is_read() {
        let le = |n: usize| (n as u32).to_le_bytes();
        let err = |raw: Vec<u8>| Index::decode(&raw, 0, crate::VERSION).unwrap_err().to_string();
        assert!(err(le(MAX_BLOCKS + 1).to_vec()).contains("blocks (at most 1048576)"));
        assert!(err([le(0), le(MAX_ENTRIES + 1)].concat()).contains("entries (at most 524288)"));
        assert!(err([le(0), le(0), le(MAX_REFS + 1)].concat()).contains("store references (at most 4194304)"));
    }

    #[test]
    fn claims_past_what_the_data_can_hold_are_refused() {
        let decode = |i: &Index, data_len: u64| Index::decode(&i.encode(), data_len, crate::VERSION);
        // A block that claims more than a zstd frame of its size can hold.
        let bomb = Index {
            blocks: vec![block(0, 100, 0, 100 * MAX_BLOCK_RATIO as u32 + 1)],
            ..Default::default()
        };
        let e = decode(&bomb, 100).unwrap_err().to_string();
        assert!(e.contains("more than zstd can expand"), "{e}");
        let fine = Index {
            blocks: vec![block(0, 100, 0, 100 * MAX_BLOCK_RATIO as u32)],
            ..Default::default()
        };
        assert!(decode(&fine, 100).is_ok());
        // Files that add up to more than the data section can stand for:
        // the same 16 MiB claimed again and again.
        let mib16 = 16u32 << 20;
        let many = |n: usize| Index {
            blocks: vec![block(0, 1024, 0, mib16)],
            entries: (0..n).map(|i| file(&format!("f{i:03}"), mib16.into(), 0)).collect(),
            ..Default::default()
        };
        let cap = crate::amplification_cap(1024);
        let fits = (cap / u64::from(mib16)) as usize;
        assert!(decode(&many(fits), 1024).is_ok());
        let e = decode(&many(fits + 1), 1024).unwrap_err().to_string();
        assert!(
            e.contains("its files total") && e.contains("more than 256 times it plus 1 GiB"),
            "{e}"
        );
        // A stream longer than the data section can stand for.
        let blocks = (0..70u64)
            .map(|i| block(i * 1024, 1024, i * u64::from(mib16), mib16))
            .collect();
        let long = Index {
            blocks,
            ..Default::default()
        };
        let e = decode(&long, 70 * 1024).unwrap_err().to_string();
        assert!(e.contains("its blocks decode to"), "{e}");
        // Based blocks that each decode the same 16 MiB first.
        let based = |n: u64| {
            let mut blocks = vec![block(0, 1024, 0, mib16)];
            for i in 0..n {
                let mut b = block(1024 + i * 10, 10, u64::from(mib16) + i * 100, 100);
                b.base = Some(crate::Base { offset: 0, len: mib16 });
                blocks.push(b);
            }
            Index {
                blocks,
                ..Default::default()
            }
        };
        assert!(decode(&based(10), 1024 + 100).is_ok());
        let e = decode(&based(100), 1024 + 1000).unwrap_err().to_string();
        assert!(e.contains("the bases of its blocks decode to"), "{e}");
    }

    #[test]
    fn stats_are_what_the_index_holds() {
        let mut i = sample();
        i.refs.clear(); // references need a store bundle
        let s = i.stats();
        assert_eq!(s.entries, i.entries.len() as u64);
        assert_eq!(s.blocks, i.blocks.len() as u64);
        assert_eq!(s.unique_size, i.stream_len());
        let mut meta = crate::Meta {
            stats: s.clone(),
            ..Default::default()
        };
        assert!(meta.check_stats(&i).is_ok());
        meta.stats.total_size += 1;
        let e = meta.check_stats(&i).unwrap_err().to_string();
        assert!(e.contains("disagree with the index"), "{e}");
    }

    #[test]
    fn blocks_must_tile_the_data_section() {
        let enc = sample().encode();
        assert!(Index::decode(&enc, 29, crate::VERSION).is_err());
        assert!(Index::decode(&enc, 31, crate::VERSION).is_err());
    }

    #[test]
    fn store_references_are_ordered_inside_the_stream() {
        let mut i = sample();
        i.refs = vec![0, 1, 127, 128, 199];
        assert_eq!(Index::decode(&i.encode(), 30, crate::VERSION).unwrap(), i);
        assert_eq!(i.refs_in(1, 128), [1, 127]);
        assert_eq!(i.refs_in(199, 500), [199]);
        assert!(i.refs_in(2, 127).is_empty());
        for bad in [vec![5, 5], vec![200], vec![u64::MAX]] {
            i.refs = bad.clone();
            assert!(Index::decode(&i.encode(), 30, crate::VERSION).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn version_3_indexes_have_no_references_and_4_no_block_flags() {
        let mut i = sample();
        i.refs.clear();
        let v3 = i.encode_for(3);
        assert_eq!(Index::decode(&v3, 30, 3).unwrap(), i);
        assert!(Index::decode(&v3, 30, 4).is_err());
        let v4 = i.encode_for(4);
        assert_eq!(v4.len(), v3.len() + 4, "a reference count");
        assert_eq!(Index::decode(&v4, 30, 4).unwrap(), i);
        assert!(Index::decode(&v4, 30, 5).is_err());
        assert_eq!(i.encode().len(), v4.len() + 2, "a flags byte per block");
    }

    #[test]
    fn bases_and_stored_blocks_round_trip_and_are_checked() {
        let h = Digest32([9; 32]);
        let mut blocks = vec![
            BlockRef::zstd(0, 10, 0, 100, h),
            BlockRef {
                codec: Codec::Stored,
                ..BlockRef::zstd(10, 50, 100, 50, h)
            },
            BlockRef {
                base: Some(Base { offset: 20, len: 120 }),
                ..BlockRef::zstd(60, 40, 150, 100, h)
            },
        ];
        let index = |blocks: &[BlockRef]| Index {
            blocks: blocks.to_vec(),
            entries: vec![file("f", 250, 0)],
            refs: vec![],
        };
        let data_len = |b: &[BlockRef]| b.iter().map(|b| u64::from(b.clen)).sum::<u64>();
        let good = index(&blocks);
        assert_eq!(Index::decode(&good.encode(), data_len(&blocks), 5).unwrap(), good);
        assert_eq!(good.base_blocks(2), 0..2);
        assert_eq!(good.base_blocks(0), 0..0);
        let bad = |edit: &dyn Fn(&mut Vec<BlockRef>), why: &str| {
            let mut b = blocks.clone();
            edit(&mut b);
            let err = Index::decode(&index(&b).encode(), data_len(&b), 5)
                .unwrap_err()
                .to_string();
            assert!(err.contains(why), "{why}: {err}");
        };
        bad(
            &|b| b[2].base = Some(Base { offset: 100, len: 51 }),
            "does not lie before the block",
        );
        bad(&|b| b[2].base = Some(Base { offset: 0, len: 0 }), "is 0 bytes long");
        bad(&|b| b[1].clen = 49, "a size that differs");
        bad(
            &|b| b[1].base = Some(Base { offset: 0, len: 10 }),
            "has a base or a size that differs",
        );
        // A base in a block that has a base itself: never a chain.
        blocks.push(BlockRef {
            base: Some(Base { offset: 160, len: 10 }),
            ..BlockRef::zstd(100, 5, 250, 1, h)
        });
        blocks[3].base = Some(Base { offset: 160, len: 10 });
        let mut e = index(&blocks);
        e.entries = vec![file("f", 251, 0)];
        let err = Index::decode(&e.encode(), data_len(&blocks), 5)
            .unwrap_err()
            .to_string();
        assert!(err.contains("lies in a block that has a base itself"), "{err}");
        // At most MAX_BASE_BLOCKS blocks under one base.
        let tiny: Vec<BlockRef> = (0..6)
            .map(|i| BlockRef::zstd(i, 1, i, 1, h))
            .chain([BlockRef {
                base: Some(Base { offset: 0, len: 6 }),
                ..BlockRef::zstd(6, 1, 6, 1, h)
            }])
            .collect();
        let mut e = index(&tiny);
        e.entries = vec![file("f", 7, 0)];
        let err = Index::decode(&e.encode(), 7, 5).unwrap_err().to_string();
        assert!(err.contains("spans 6 blocks (at most 4)"), "{err}");
    }
}
