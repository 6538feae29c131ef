//! `tote verify`: every hash in a bundle checked (the stub, trailer,
//! metadata and index, every block's hash and decompression, every file's
//! content); exits 1 on any mismatch, naming it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use tote_format::{Decoded, Digest32, EntryKind, Index};

use crate::reader::open;

pub const HELP: &str = "Example:\n  tote verify ./app && echo intact";

#[derive(clap::Args)]
pub struct Args {
    /// The bundle.
    file: PathBuf,
}

pub fn run(args: &Args) -> Result<()> {
    let path: &Path = &args.file;
    let o = open(path)?;
    let ctx = || format!("{}", path.display());
    let stub_arch = crate::stub::check(&o.map[..o.layout.trailer.data_offset as usize])
        .with_context(|| format!("{}: stub", path.display()))?;
    let meta = o.layout.meta(&o.map).with_context(ctx)?;
    if stub_arch != meta.arch {
        bail!(
            "{}: the stub is an {stub_arch} program, but the metadata says the bundle is for {}",
            path.display(),
            meta.arch
        );
    }
    let index = o.layout.index(&o.map).with_context(ctx)?;
    meta.check_stats(&index).with_context(ctx)?;
    let data = o.layout.data(&o.map).with_context(ctx)?;

    // Every block once: its hash, its decompression, and the hash of every
    // file whose bytes it holds.
    let (blocks_bad, files_bad) = check_blocks_and_files(&index, data);
    if let Some(first) = blocks_bad.first() {
        bail!(
            "{}: {first} ({} of {} blocks corrupt): the file is damaged; copy or download it again",
            path.display(),
            blocks_bad.len(),
            index.blocks.len()
        );
    }
    if let Some(first) = files_bad.first() {
        bail!(
            "{}: content of /{first} does not match its SHA-256 ({} files): the file is damaged; copy or download it again",
            path.display(),
            files_bad.len()
        );
    }
    if !crate::ui::progress::quiet() {
        println!(
            "{}: ok ({}, {} blocks, {} entries, bundle id {})",
            path.display(),
            meta.arch,
            index.blocks.len(),
            index.entries.len(),
            o.layout.trailer.bundle_id()
        );
    }
    Ok(())
}

/// Decode every block (in parallel batches) and hash every file's bytes as
/// the blocks go by. Returns the block errors and the paths of bad files.
fn check_blocks_and_files(index: &Index, data: &[u8]) -> (Vec<String>, Vec<String>) {
    // Distinct stream ranges (dedup makes entries share them), by block.
    let mut ranges: BTreeMap<(u64, u64), (Digest32, Vec<usize>)> = BTreeMap::new();
    for (i, e) in index.entries.iter().enumerate() {
        if let EntryKind::File { size, offset, hash, .. } = &e.kind {
            ranges
                .entry((*offset, *size))
                .or_insert_with(|| (*hash, Vec::new()))
                .1
                .push(i);
        }
    }
    let ranges: Vec<_> = ranges.into_iter().collect();
    let mut by_block: Vec<Vec<usize>> = vec![Vec::new(); index.blocks.len()];
    let mut hashers: Vec<Sha256> = Vec::with_capacity(ranges.len());
    let mut bad_files = Vec::new();
    for (r, ((offset, size), (hash, entries))) in ranges.iter().enumerate() {
        hashers.push(Sha256::new());
        let blocks = index.blocks_for(*offset, *size);
        if blocks.is_empty() && Digest32(Sha256::digest([]).into()) != *hash {
            bad_files.extend(
                entries
                    .iter()
                    .map(|&i| String::from_utf8_lossy(&index.entries[i].path).into_owned()),
            );
        }
        for b in blocks {
            by_block[b].push(r);
        }
    }
    let mut bad_blocks = Vec::new();
    let batch = rayon::current_num_threads() * 2;
    let numbered: Vec<usize> = (0..index.blocks.len()).collect();
    for chunk in numbered.chunks(batch) {
        let decoded: Vec<_> = chunk
            .par_iter()
            .map(|&n| {
                // Its base blocks decoded again: each thread on its own.
                Decoded::default().block(index, data, n)
            })
            .collect();
        for (&n, res) in chunk.iter().zip(decoded) {
            let out = match res {
                Ok(out) => out,
                Err(e) => {
                    bad_blocks.push(e.to_string());
                    continue;
                }
            };
            let block = &index.blocks[n];
            let bend = block.raw_offset + u64::from(block.rlen);
            for &r in &by_block[n] {
                let ((offset, size), (hash, entries)) = &ranges[r];
                hashers[r].update(&out[block.overlap(*offset, offset + size)]);
                if offset + size <= bend {
                    let d: [u8; 32] = std::mem::take(&mut hashers[r]).finalize().into();
                    if d != hash.0 {
                        bad_files.extend(
                            entries
                                .iter()
                                .map(|&i| String::from_utf8_lossy(&index.entries[i].path).into_owned()),
                        );
                    }
                }
            }
        }
    }
    (bad_blocks, bad_files)
}
