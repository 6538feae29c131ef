//! Step 4: compress the blocks in parallel batches (bounded memory) and
//! write them in order. The output does not depend on the thread count:
//! every block is compressed on its own.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;

use anyhow::{Context, Result};
use rayon::prelude::*;
use tote_format::{encode_block, BlockRef, Digest32};

use super::blocks::Piece;
use super::hash::changed;
use super::order::Content;
use crate::ui::{human, progress};

/// Compress and write every block; returns the block table.
pub fn write_blocks(
    blocks: &[Vec<Piece>],
    unique: &[Content<'_>],
    stream_len: u64,
    level: i32,
    block_size: usize,
    w: &mut dyn Write,
) -> Result<Vec<BlockRef>> {
    let phase = progress::Phase::start("compressing", progress::Counting::Bytes(stream_len));
    let mut refs: Vec<BlockRef> = Vec::with_capacity(blocks.len());
    let (mut data_len, mut raw_offset) = (0u64, 0u64);
    let batch = rayon::current_num_threads() * 4;
    for chunk in blocks.chunks(batch) {
        let done: Vec<(Vec<u8>, Digest32, u32)> = chunk
            .par_iter()
            .map(|pieces| {
                let raw = read_block(pieces, unique, block_size)?;
                let (bytes, hash) = encode_block(&raw, level).context("compressing")?;
                phase.inc(raw.len() as u64);
                Ok((bytes, hash, raw.len() as u32))
            })
            .collect::<Result<_>>()?;
        for (bytes, hash, rlen) in done {
            w.write_all(&bytes).context("writing the bundle")?;
            let clen = bytes.len() as u32;
            refs.push(BlockRef {
                offset: data_len,
                clen,
                raw_offset,
                rlen,
                hash,
            });
            data_len += u64::from(clen);
            raw_offset += u64::from(rlen);
        }
    }
    let took = phase.done();
    progress::step(|| {
        format!(
            "compressed {} to {} {}",
            human(stream_len),
            human(data_len),
            progress::rate(stream_len, took)
        )
    });
    Ok(refs)
}

/// A block's uncompressed bytes, read from the files it holds pieces of.
fn read_block(pieces: &[Piece], unique: &[Content<'_>], block_size: usize) -> Result<Vec<u8>> {
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
