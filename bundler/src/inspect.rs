//! `tote inspect` and `tote verify`.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;

use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use tote_format::{decode_block, Digest32, EntryKind, Index, Layout, Meta, Trailer, TRAILER_LEN};

use crate::human;

pub(crate) struct Opened {
    pub map: memmap2::Mmap,
    pub layout: Layout,
}

/// Map a bundle and decode its trailer: fails on anything that is not one.
#[allow(unsafe_code)]
pub(crate) fn open(path: &Path) -> Result<Opened> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = file
        .metadata()
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    if len == 0 {
        bail!("{}: empty file, not a tote bundle", path.display());
    }
    // SAFETY: read-only private map; a concurrent truncation would raise
    // SIGBUS, which for a CLI inspecting a file is an acceptable crash.
    let map = unsafe { memmap2::Mmap::map(&file) }.with_context(|| format!("mapping {}", path.display()))?;
    let tail = &map[map.len().saturating_sub(TRAILER_LEN)..];
    let layout = Trailer::decode(tail, len).with_context(|| format!("{}", path.display()))?;
    Ok(Opened { map, layout })
}

/// `auto (mounts where FUSE is usable)`: the mode and what it means for this bundle.
fn mode_summary(meta: &tote_format::Meta) -> String {
    use tote_format::Mode;
    let what = match meta.mode {
        Mode::Extract => "extracts into the cache",
        Mode::Mount => "mounts over FUSE, fails where FUSE is unusable",
        Mode::Auto if meta.mode.wants_mount(meta.stats.total_size) => "mounts over FUSE where usable, else extracts",
        Mode::Auto => "extracts: the tree is under 128 MiB",
    };
    format!("{} ({what})", meta.mode.name())
}

pub fn inspect(path: &Path) -> Result<()> {
    let o = open(path)?;
    let meta = o.layout.meta(&o.map).with_context(|| format!("{}", path.display()))?;
    let index = o.layout.index(&o.map).with_context(|| format!("{}", path.display()))?;
    let t = &o.layout.trailer;
    let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let sha = sha256_hex(&o.map);
    let compressed = t.meta_offset - t.data_offset;
    println!("name:            {}", meta.name);
    println!("entry point:     {}", lossy(&meta.entrypoint));
    for a in &meta.args {
        println!("argument:        {}", lossy(a));
    }
    for a in &meta.cmd {
        println!("default arg:     {}", lossy(a));
    }
    for e in &meta.env {
        println!("environment:     {}", lossy(e));
    }
    if !meta.root.is_empty() {
        println!("root:            {} (the bundle's)", lossy(&meta.root));
    }
    if !meta.workdir.is_empty() {
        println!("working dir:     {}", lossy(&meta.workdir));
    }
    for m in &meta.mounts {
        println!(
            "mount ({:7}): {} -> {}",
            m.kind.name(),
            lossy(&m.source),
            lossy(&m.target)
        );
    }
    if !meta.needs_namespace() {
        println!("namespace:       none (runs from the cache)");
    }
    println!("mode:            {}", mode_summary(&meta));
    println!("bundle id:       {}", t.bundle_id());
    println!("sha256:          sha256:{sha}");
    println!("format version:  {}", tote_format::VERSION);
    println!("creator:         {}", meta.creator);
    println!(
        "file size:       {} ({} bytes)",
        human(o.layout.file_len),
        o.layout.file_len
    );
    println!("stub size:       {} ({} bytes)", human(t.data_offset), t.data_offset);
    println!(
        "content:         {} in {} files",
        human(meta.stats.total_size),
        meta.stats.files
    );
    println!("after dedup:     {}", human(meta.stats.unique_size));
    println!(
        "compressed:      {} in {} blocks (ratio {:.2})",
        human(compressed),
        index.blocks.len(),
        meta.stats.unique_size as f64 / compressed.max(1) as f64
    );
    println!("entries:         {}", index.entries.len());
    let tops = top_level(&meta, &index);
    if !tops.is_empty() {
        println!("top-level items: {}", tops.len());
        for (name, size) in tops {
            println!("  {:>10}  {name}", human(size));
        }
    }
    Ok(())
}

/// The hex SHA-256 of the whole file (what `sha256:` checksums name).
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Size of each item directly below a mount source (store paths), largest first.
fn top_level(meta: &Meta, index: &Index) -> Vec<(String, u64)> {
    let mut sizes: BTreeMap<String, u64> = BTreeMap::new();
    for m in meta.mounts.iter().filter(|m| m.kind != tote_format::MountKind::Host) {
        let prefix = [&m.source[..], b"/"].concat();
        for e in &index.entries {
            let Some(rest) = e.path.strip_prefix(prefix.as_slice()) else {
                continue;
            };
            let top = rest.split(|&c| c == b'/').next().unwrap_or(rest);
            let size = match e.kind {
                EntryKind::File { size, .. } => size,
                _ => 0,
            };
            let name = String::from_utf8_lossy(&[&m.target[..], b"/", top].concat()).into_owned();
            *sizes.entry(name).or_default() += size;
        }
    }
    let mut v: Vec<_> = sizes.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v
}

pub fn verify(path: &Path) -> Result<()> {
    let o = open(path)?;
    let ctx = || format!("{}", path.display());
    crate::stub::check(&o.map[..o.layout.trailer.data_offset as usize])
        .with_context(|| format!("{}: stub", path.display()))?;
    let meta = o.layout.meta(&o.map).with_context(ctx)?;
    let index = o.layout.index(&o.map).with_context(ctx)?;
    meta.check_stats(&index).with_context(ctx)?;
    let data = o.layout.data(&o.map).with_context(ctx)?;

    // Every block once: its hash, its decompression, and the hash of every
    // file whose bytes it holds.
    let (blocks_bad, files_bad) = check_blocks_and_files(&index, data);
    if let Some(first) = blocks_bad.first() {
        bail!(
            "{}: {first} ({} of {} blocks corrupt)",
            path.display(),
            blocks_bad.len(),
            index.blocks.len()
        );
    }
    if let Some(first) = files_bad.first() {
        bail!(
            "{}: content of /{first} does not match its SHA-256 ({} files)",
            path.display(),
            files_bad.len()
        );
    }
    println!(
        "{}: ok ({} blocks, {} entries, bundle id {})",
        path.display(),
        index.blocks.len(),
        index.entries.len(),
        o.layout.trailer.bundle_id()
    );
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
                let b = &index.blocks[n];
                let mut out = vec![0u8; b.rlen as usize];
                decode_block(b.frame(data), b, n as u32, &mut out).map(|()| out)
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
