//! Step 4: compress the blocks in parallel batches (bounded memory) and
//! write them in order. The output does not depend on the thread count:
//! every block is compressed on its own (and against its base, read again
//! from the files that hold it).

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;

use anyhow::{Context, Result};
use rayon::prelude::*;
use tote_format::{encode_block, Base, BlockRef, Codec, Encoded};

use super::blocks::Piece;
use super::hash::changed;
use super::order::Content;
use crate::ui::{human, progress};

/// Compress and write every block, each against its base if it has one;
/// returns the block table.
pub fn write_blocks(
    blocks: &[Vec<Piece>],
    bases: &[Option<Base>],
    unique: &[Content<'_>],
    stream_len: u64,
    level: i32,
    block_size: usize,
    w: &mut dyn Write,
) -> Result<Vec<BlockRef>> {
    let phase = progress::Phase::start("compressing", progress::Counting::Bytes(stream_len));
    let mut refs: Vec<BlockRef> = Vec::with_capacity(blocks.len());
    let (mut data_len, mut raw_offset) = (0u64, 0u64);
    let at = content_offsets(unique);
    let batch = rayon::current_num_threads() * 4;
    let numbered: Vec<(&Vec<Piece>, &Option<Base>)> = blocks.iter().zip(bases).collect();
    for chunk in numbered.chunks(batch) {
        let done: Vec<(Encoded, u32, Option<Base>)> = chunk
            .par_iter()
            .map(|&(pieces, base)| {
                let raw = read_block(pieces, unique, block_size)?;
                let base_bytes = base
                    .map(|b| read_range(b.offset, b.len as usize, unique, &at))
                    .transpose()?;
                let e = encode_block(&raw, level, base_bytes.as_deref()).context("compressing")?;
                phase.inc(raw.len() as u64);
                // A stored block needs no base.
                let base = if e.codec == Codec::Stored { None } else { *base };
                Ok((e, raw.len() as u32, base))
            })
            .collect::<Result<_>>()?;
        for (e, rlen, base) in done {
            w.write_all(&e.bytes).context("writing the bundle")?;
            let clen = e.bytes.len() as u32;
            refs.push(BlockRef {
                offset: data_len,
                clen,
                raw_offset,
                rlen,
                hash: e.hash,
                codec: e.codec,
                base,
            });
            data_len += u64::from(clen);
            raw_offset += u64::from(rlen);
        }
    }
    let took = phase.done();
    progress::step(|| {
        let based = refs.iter().filter(|b| b.base.is_some()).count();
        let stored = refs.iter().filter(|b| b.codec == Codec::Stored).count();
        format!(
            "compressed {} to {} {} ({based} blocks against a base, {stored} stored)",
            human(stream_len),
            human(data_len),
            progress::rate(stream_len, took)
        )
    });
    Ok(refs)
}

/// Stream offset of every distinct content.
fn content_offsets(unique: &[Content<'_>]) -> Vec<u64> {
    let mut at = 0;
    unique
        .iter()
        .map(|c| {
            let o = at;
            at += c.size;
            o
        })
        .collect()
}

/// Stream bytes `offset..offset+len`, read from the files that hold them.
fn read_range(offset: u64, len: usize, unique: &[Content<'_>], at: &[u64]) -> Result<Vec<u8>> {
    let mut pieces = Vec::new();
    let mut i = at.partition_point(|&o| o <= offset) - 1;
    let (mut pos, end) = (offset, offset + len as u64);
    while pos < end {
        let (start, c) = (at[i], &unique[i]);
        let take = (c.size - (pos - start)).min(end - pos);
        if take > 0 {
            pieces.push(Piece {
                source: i,
                offset: pos - start,
                len: take as usize,
            });
        }
        pos += take;
        i += 1;
    }
    read_block(&pieces, unique, len)
}

/// A block's uncompressed bytes, read from the files it holds pieces of.
pub(super) fn read_block(pieces: &[Piece], unique: &[Content<'_>], block_size: usize) -> Result<Vec<u8>> {
    let mut raw = Vec::with_capacity(block_size);
    for p in pieces {
        let src = unique[p.source].source;
        let start = raw.len();
        raw.resize(start + p.len, 0);
        match File::open(src).and_then(|f| f.read_exact_at(&mut raw[start..], p.offset)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(changed(src)),
            Err(e) => return Err(e).with_context(|| format!("reading {}", src.display())),
        }
    }
    Ok(raw)
}
