//! Data blocks: zstd frames, or stored bytes, each decodable on its own or
//! (version 5) with one *base*: a range of earlier stream bytes, held by
//! blocks that have no base themselves, that the frame was compressed
//! against (zstd's reference prefix). So a block decodes from itself and at
//! most [`MAX_BASE_BLOCKS`] others, never a chain.

use crate::hash::{sha256, Digest32};
use crate::FormatError;

/// How a block's bytes are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// One zstd frame.
    Zstd,
    /// The stream bytes themselves (they did not compress).
    Stored,
}

/// A range of the uncompressed stream a block was compressed against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Base {
    pub offset: u64,
    pub len: u32,
}

/// Upper bound for a base's length.
pub const MAX_BASE_LEN: u32 = 16 << 20;
/// Upper bound for the number of blocks a base's range touches: what one
/// block can cost to decode, besides itself.
pub const MAX_BASE_BLOCKS: usize = 4;

/// Where a block lives and what it must decode to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRef {
    /// Offset of the stored bytes, relative to the start of the data section.
    pub offset: u64,
    /// Stored length.
    pub clen: u32,
    /// Offset of the block's first byte in the uncompressed data stream.
    pub raw_offset: u64,
    /// Uncompressed length.
    pub rlen: u32,
    /// SHA-256 of the stored bytes.
    pub hash: Digest32,
    pub codec: Codec,
    pub base: Option<Base>,
}

impl BlockRef {
    /// A plain zstd block (all a version 3 or 4 bundle has).
    pub fn zstd(offset: u64, clen: u32, raw_offset: u64, rlen: u32, hash: Digest32) -> BlockRef {
        BlockRef {
            offset,
            clen,
            raw_offset,
            rlen,
            hash,
            codec: Codec::Zstd,
            base: None,
        }
    }

    /// This block's stored bytes in `data`, the data section (which the
    /// index was checked to tile).
    pub fn frame<'d>(&self, data: &'d [u8]) -> &'d [u8] {
        &data[self.offset as usize..(self.offset + u64::from(self.clen)) as usize]
    }

    /// Where stream bytes `from..to` lie in this block's decoded bytes (the
    /// part of them it holds; empty if none).
    pub fn overlap(&self, from: u64, to: u64) -> std::ops::Range<usize> {
        let end = self.raw_offset + u64::from(self.rlen);
        let (lo, hi) = (from.clamp(self.raw_offset, end), to.clamp(self.raw_offset, end));
        (lo - self.raw_offset) as usize..(hi.max(lo) - self.raw_offset) as usize
    }
}

// The decoding context of blocks without a base, one per thread.
thread_local! {
    static DCTX: std::cell::RefCell<Option<zstd::zstd_safe::DCtx<'static>>> = const { std::cell::RefCell::new(None) };
}

/// Verify a block's hash, then decode it into `out` (exactly `rlen`
/// bytes); `base` is the stream bytes of its base range, if it has one.
///
/// The hash is checked before zstd sees a single byte, so corrupt or hostile
/// frames never reach the decompressor, and `out` bounds what any frame can
/// produce.
pub fn decode_block(
    stored: &[u8],
    block: &BlockRef,
    number: u32,
    base: Option<&[u8]>,
    out: &mut [u8],
) -> Result<(), FormatError> {
    let fail = |reason: String| FormatError::Block { block: number, reason };
    if stored.len() != block.clen as usize || out.len() != block.rlen as usize {
        return Err(fail("length does not match the index".into()));
    }
    match (block.base, base) {
        (Some(b), Some(bytes)) if bytes.len() == b.len as usize => {}
        (None, None) => {}
        _ => return Err(fail("its base was not given".into())),
    }
    if sha256(stored) != block.hash {
        return Err(fail("SHA-256 mismatch".into()));
    }
    if block.codec == Codec::Stored {
        out.copy_from_slice(stored);
        return Ok(());
    }
    let zstd_err = |code| fail(format!("zstd: {}", zstd::zstd_safe::get_error_name(code)));
    let n = match base {
        // One decoding context per thread, kept: creating one per block
        // costs an allocation of ~100 KiB that musl's malloc hands back to
        // the kernel each time (page faults on every 64 KiB block a mount
        // serves).
        None => DCTX
            .with(|c| {
                let mut c = c.borrow_mut();
                c.get_or_insert_with(zstd::zstd_safe::DCtx::create)
                    .decompress(out, stored)
            })
            .map_err(zstd_err)?,
        Some(prefix) => {
            let mut d = zstd::zstd_safe::DCtx::create();
            d.set_parameter(zstd::zstd_safe::DParameter::WindowLogMax(WINDOW_LOG_MAX))
                .map_err(zstd_err)?;
            d.ref_prefix(prefix).map_err(zstd_err)?;
            d.decompress(out, stored).map_err(zstd_err)?
        }
    };
    if n != out.len() {
        return Err(fail(format!("decoded {n} bytes, index says {}", out.len())));
    }
    Ok(())
}

/// Recently decoded blocks, for readers that decode blocks one after the
/// other (`tote ls`, `extract`, `verify`): a block's base blocks are mostly
/// those of its neighbours.
#[derive(Default)]
pub struct Decoded {
    recent: Vec<(usize, std::sync::Arc<Vec<u8>>)>,
}

impl Decoded {
    const KEEP: usize = 2 * MAX_BASE_BLOCKS + 2;

    /// Block `b` of `index`, decoded from `data` (the data section) after
    /// its base blocks, or from what was kept.
    pub fn block(
        &mut self,
        index: &crate::Index,
        data: &[u8],
        b: usize,
    ) -> Result<std::sync::Arc<Vec<u8>>, FormatError> {
        if let Some((_, bytes)) = self.recent.iter().find(|(n, _)| *n == b) {
            return Ok(bytes.clone());
        }
        let block = &index.blocks[b];
        let base = match block.base {
            None => None,
            Some(base) => {
                let mut bytes = Vec::with_capacity(base.len as usize);
                for n in index.base_blocks(b) {
                    let raw = self.block(index, data, n)?;
                    let part = index.blocks[n].overlap(base.offset, base.offset + u64::from(base.len));
                    bytes.extend_from_slice(&raw[part]);
                }
                Some(bytes)
            }
        };
        let mut out = vec![0u8; block.rlen as usize];
        decode_block(block.frame(data), block, b as u32, base.as_deref(), &mut out)?;
        let out = std::sync::Arc::new(out);
        if self.recent.len() == Self::KEEP {
            self.recent.remove(0);
        }
        self.recent.push((b, out.clone()));
        Ok(out)
    }
}

/// One piece of decoding work for a reader that needs some blocks (an
/// extraction): decode the blocks `base` in order (their bytes, kept
/// together, are the bases of `blocks`), the pieces of those in `write`
/// being needed too; then decode each of `blocks` against them. A unit
/// without a base is one block decoded on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    pub base: std::ops::Range<usize>,
    pub write: Vec<usize>,
    pub blocks: Vec<usize>,
}

impl Unit {
    /// The blocks it decodes.
    pub fn decodes(&self) -> impl Iterator<Item = usize> + '_ {
        self.base.clone().chain(self.blocks.iter().copied())
    }
}

/// The units that decode every block `needed` says, each base block
/// decoded once per group of blocks that share it, every needed block
/// written once; largest first (for parallel workers).
pub fn units(index: &crate::Index, needed: &[bool]) -> Vec<Unit> {
    let mut groups: std::collections::BTreeMap<(usize, usize), Vec<usize>> = Default::default();
    for b in (0..index.blocks.len()).filter(|&b| needed[b]) {
        let r = index.base_blocks(b);
        if !r.is_empty() {
            groups.entry((r.start, r.end)).or_default().push(b);
        }
    }
    let mut claimed = vec![false; index.blocks.len()];
    let mut out: Vec<Unit> = groups
        .into_iter()
        .map(|((start, end), blocks)| {
            let write = (start..end)
                .filter(|&n| needed[n] && !std::mem::replace(&mut claimed[n], true))
                .collect();
            Unit {
                base: start..end,
                write,
                blocks,
            }
        })
        .collect();
    for b in 0..index.blocks.len() {
        if needed[b] && !claimed[b] && index.blocks[b].base.is_none() {
            out.push(Unit {
                base: b..b,
                write: Vec::new(),
                blocks: vec![b],
            });
        }
    }
    let size = |u: &Unit| u.decodes().map(|b| u64::from(index.blocks[b].rlen)).sum::<u64>();
    out.sort_by(|a, b| size(b).cmp(&size(a)).then(a.blocks[0].cmp(&b.blocks[0])));
    out
}

/// How many distinct blocks `units` decode.
pub fn decoded_blocks(units: &[Unit]) -> usize {
    let mut all: Vec<usize> = units.iter().flat_map(Unit::decodes).collect();
    all.sort_unstable();
    all.dedup();
    all.len()
}

/// The contents (stream ranges `offset..offset + size`, by offset) of the
/// files `held`: entry indices of `index` whose content a reader already
/// has, as the bundle holds it (a cache's linked files, not rewritten).
pub fn held_spans(index: &crate::Index, held: &[usize]) -> Vec<(u64, u64, usize)> {
    let mut spans: Vec<(u64, u64, usize)> = held
        .iter()
        .filter_map(|&i| match index.entries.get(i)?.kind {
            crate::EntryKind::File { offset, size, .. } if size > 0 => Some((offset, size, i)),
            _ => None,
        })
        .collect();
    spans.sort_unstable();
    spans
}

/// The base blocks of `units` that none of them writes or decodes as a
/// block of its own, and whose every byte lies in the contents of `spans`
/// ([`held_spans`]): a thin bundle's reader rebuilds those from the files
/// it has rather than fetching and decoding them.
pub fn rebuildable(index: &crate::Index, units: &[Unit], spans: &[(u64, u64, usize)]) -> Vec<bool> {
    let n = index.blocks.len();
    let mut decoded_anyway = vec![false; n];
    for u in units {
        for &b in u.blocks.iter().chain(&u.write) {
            decoded_anyway[b] = true;
        }
    }
    // The spans merged: sorted, disjoint ranges.
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for &(offset, size, _) in spans {
        let end = offset + size;
        match merged.last_mut() {
            Some(last) if offset <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((offset, end)),
        }
    }
    let mut out = vec![false; n];
    for u in units {
        for b in u.base.clone().filter(|&b| !decoded_anyway[b]) {
            let (start, end) = (
                index.blocks[b].raw_offset,
                index.blocks[b].raw_offset + u64::from(index.blocks[b].rlen),
            );
            let i = merged.partition_point(|m| m.0 <= start);
            out[b] = i > 0 && merged[i - 1].1 >= end;
        }
    }
    out
}

/// The window a frame with a base may use: its base and itself.
pub(crate) const WINDOW_LOG_MAX: u32 = 26;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_is_the_part_of_a_range_a_block_holds() {
        let b = BlockRef::zstd(10, 4, 100, 50, Digest32([0; 32]));
        assert_eq!(b.overlap(90, 120), 0..20, "starts before the block");
        assert_eq!(b.overlap(110, 130), 10..30, "inside");
        assert_eq!(b.overlap(140, 200), 40..50, "ends after the block");
        assert_eq!(b.overlap(0, 90).len(), 0, "before it");
        assert_eq!(b.overlap(150, 160).len(), 0, "after it");
        assert_eq!(b.frame(&[7u8; 20]), &[7u8; 4]);
    }

    #[test]
    fn units_decode_each_base_once_per_group_and_write_each_block_once() {
        let h = Digest32([0; 32]);
        let with = |offset, len, b: BlockRef| BlockRef {
            base: Some(Base { offset, len }),
            ..b
        };
        // Blocks of 10 bytes; 2 and 4 based on block 0, 3 on blocks 0-1.
        let blocks: Vec<BlockRef> = (0..6u64)
            .map(|i| BlockRef::zstd(i, 1, i * 10, 10, h))
            .enumerate()
            .map(|(i, b)| match i {
                2 | 4 => with(0, 10, b),
                3 => with(5, 10, b),
                _ => b,
            })
            .collect();
        let index = crate::Index {
            blocks,
            entries: vec![],
            refs: vec![],
        };
        let all = units(&index, &[true; 6]);
        assert_eq!(
            all,
            [
                Unit {
                    base: 0..1,
                    write: vec![0],
                    blocks: vec![2, 4]
                },
                Unit {
                    base: 0..2,
                    write: vec![1],
                    blocks: vec![3]
                },
                Unit {
                    base: 5..5,
                    write: vec![],
                    blocks: vec![5]
                },
            ]
        );
        assert_eq!(decoded_blocks(&all), 6);
        // Only block 4 needed: its base is decoded, not written.
        let some = units(&index, &[false, false, false, false, true, false]);
        assert_eq!(
            some,
            [Unit {
                base: 0..1,
                write: vec![],
                blocks: vec![4]
            }]
        );
        assert_eq!(decoded_blocks(&some), 2);
    }

    #[cfg(feature = "write")]
    #[test]
    fn blocks_round_trip_with_and_without_a_base_and_stored() {
        let base: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i * 7919 % 65_521).to_le_bytes())
            .collect();
        let mut raw = base[1000..150_000].to_vec();
        raw.extend_from_slice(b"a tail of its own");
        for with_base in [false, true] {
            let b = with_base.then_some(base.as_slice());
            let e = crate::encode_block(&raw, 3, b).unwrap();
            let r = BlockRef {
                offset: 0,
                clen: e.bytes.len() as u32,
                raw_offset: 0,
                rlen: raw.len() as u32,
                hash: e.hash,
                codec: e.codec,
                base: b.map(|b| Base {
                    offset: 0,
                    len: b.len() as u32,
                }),
            };
            let mut out = vec![0; raw.len()];
            decode_block(&e.bytes, &r, 0, b, &mut out).unwrap();
            assert_eq!(out, raw);
            if with_base {
                assert!(e.bytes.len() < 2000, "the base holds it: {} bytes", e.bytes.len());
                assert!(decode_block(&e.bytes, &r, 0, None, &mut out).is_err(), "needs its base");
            }
        }
        // Bytes that do not compress are stored.
        let noise: Vec<u8> = (0..128u32).flat_map(|i| sha256(&i.to_le_bytes()).0).collect();
        let e = crate::encode_block(&noise, 19, None).unwrap();
        assert_eq!(e.codec, Codec::Stored);
        assert_eq!(e.bytes, noise);
    }

    #[test]
    fn base_blocks_covered_by_held_files_are_rebuildable() {
        // Blocks of 10 stream bytes: 0 and 1 are bases of 2 and 3.
        let mut blocks: Vec<BlockRef> = (0..4u64)
            .map(|i| BlockRef::zstd(i * 4, 4, i * 10, 10, Digest32([0; 32])))
            .collect();
        blocks[2].base = Some(Base { offset: 0, len: 20 });
        blocks[3].base = Some(Base { offset: 0, len: 20 });
        let file = |offset, size| crate::Entry {
            path: format!("f{offset}").into_bytes(),
            kind: crate::EntryKind::File {
                executable: false,
                size,
                offset,
                hash: Digest32([0; 32]),
            },
        };
        let index = crate::Index {
            blocks,
            // Files at 0..6, 6..15, 15..20 (three halves), 20..40.
            entries: vec![file(0, 6), file(6, 9), file(15, 5), file(20, 20)],
            refs: vec![],
        };
        let units = units(&index, &[false, false, true, true]);
        assert_eq!(units.len(), 1);
        let all = held_spans(&index, &[2, 0, 1]);
        assert_eq!(all.iter().map(|s| s.2).collect::<Vec<_>>(), [0, 1, 2], "by offset");
        assert_eq!(rebuildable(&index, &units, &all), [true, true, false, false]);
        // Without the file at 6..15: block 0 has a gap, block 1 too.
        assert_eq!(
            rebuildable(&index, &units, &held_spans(&index, &[0, 2])),
            [false, false, false, false]
        );
        // A base block that must be written (its file is not held) is decoded.
        let units2 = super::units(&index, &[true, false, true, true]);
        assert_eq!(rebuildable(&index, &units2, &all), [false, true, false, false]);
    }
}
