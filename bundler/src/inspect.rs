//! `tote inspect` and `tote verify`.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;

use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use tote_format::{decode_block, Digest32, EntryKind, Index, Layout, Meta, Trailer, TRAILER_LEN};

use crate::human;
use crate::items::{self, by_size, Item};
use crate::style::Paint;

pub(crate) struct Opened {
    pub map: memmap2::Mmap,
    pub layout: Layout,
}

/// Map a bundle and decode its trailer: fails on anything that is not one.
#[allow(unsafe_code)]
pub(crate) fn open(path: &Path) -> Result<Opened> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let meta = file.metadata().with_context(|| format!("reading {}", path.display()))?;
    if meta.is_dir() {
        bail!(
            "{}: a directory, not a tote bundle (give the bundle file)",
            path.display()
        );
    }
    if !meta.is_file() {
        bail!("{}: not a regular file, so not a tote bundle", path.display());
    }
    let len = meta.len();
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

/// Everything `tote inspect` reports, computed once for either output.
struct Report {
    file: String,
    meta: Meta,
    bundle_id: String,
    sha256: String,
    sizes: Sizes,
    entries: u64,
    blocks: u64,
    items: Vec<Item>,
}

struct Sizes {
    file: u64,
    stub: u64,
    compressed: u64,
    metadata_and_index: u64,
    uncompressed: u64,
    after_dedup: u64,
}

impl Sizes {
    /// Uncompressed bytes per compressed byte (dedup included); None for a
    /// bundle without file content.
    fn ratio(&self) -> Option<f64> {
        (self.compressed > 0).then(|| self.uncompressed as f64 / self.compressed as f64)
    }
}

fn report(path: &Path) -> Result<Report> {
    let (o, meta, index) = load(path)?;
    let t = &o.layout.trailer;
    let compressed = t.meta_offset - t.data_offset;
    let items = by_size(items::items(&meta, &index).into_values());
    Ok(Report {
        file: path.display().to_string(),
        bundle_id: t.bundle_id().to_string(),
        sha256: sha256_hex(&o.map),
        sizes: Sizes {
            file: o.layout.file_len,
            stub: t.data_offset,
            compressed,
            metadata_and_index: o.layout.file_len - t.meta_offset,
            uncompressed: meta.stats.total_size,
            after_dedup: meta.stats.unique_size,
        },
        entries: index.entries.len() as u64,
        blocks: index.blocks.len() as u64,
        items,
        meta,
    })
}

pub fn inspect(path: &Path, json: bool) -> Result<()> {
    let r = report(path)?;
    crate::report(json, || inspect_json(&r), |paint| inspect_text(&r, paint))
}

/// A bundle's map, metadata and index.
pub(crate) fn load(path: &Path) -> Result<(Opened, Meta, Index)> {
    let o = open(path)?;
    let ctx = || format!("{}", path.display());
    let meta = o.layout.meta(&o.map).with_context(ctx)?;
    let index = o.layout.index(&o.map).with_context(ctx)?;
    Ok((o, meta, index))
}

/// `3 files`, `1 entry`.
fn plural(n: u64, one: &str) -> String {
    match (n, one.strip_suffix('y')) {
        (1, _) => format!("1 {one}"),
        (_, Some(stem)) => format!("{n} {stem}ies"),
        _ => format!("{n} {one}s"),
    }
}

/// `73.8 %` of `whole`; `-` for nothing.
fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        "-".into()
    } else {
        format!("{:.1} %", part as f64 * 100.0 / whole as f64)
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `tote inspect --json`: the schema is docs/inspect.schema.json.
fn inspect_json(r: &Report) -> serde_json::Value {
    let m = &r.meta;
    let strings = |v: &[Vec<u8>]| v.iter().map(|a| lossy(a)).collect::<Vec<_>>();
    let optional = |b: &[u8]| (!b.is_empty()).then(|| lossy(b));
    let s = &r.sizes;
    serde_json::json!({
        "schema": JSON_SCHEMA,
        "file": r.file,
        "name": m.name,
        "entrypoint": lossy(&m.entrypoint),
        "args": strings(&m.args),
        "cmd": strings(&m.cmd),
        "env": strings(&m.env),
        "workdir": optional(&m.workdir),
        "root": optional(&m.root),
        "mounts": m.mounts.iter().map(|x| serde_json::json!({
            "kind": x.kind.name(),
            "source": lossy(&x.source),
            "target": lossy(&x.target),
        })).collect::<Vec<_>>(),
        "namespace": m.needs_namespace(),
        "mode": m.mode.name(),
        "mounts_where_fuse_works": m.mode.wants_mount(m.stats.total_size),
        "bundle_id": r.bundle_id,
        "sha256": r.sha256,
        "format_version": tote_format::VERSION,
        "creator": m.creator,
        "sizes": {
            "file": s.file,
            "stub": s.stub,
            "compressed": s.compressed,
            "metadata_and_index": s.metadata_and_index,
            "uncompressed": s.uncompressed,
            "after_dedup": s.after_dedup,
            "dedup_saved": s.uncompressed - s.after_dedup,
            "ratio": s.ratio(),
        },
        "counts": {
            "entries": r.entries,
            "files": m.stats.files,
            "blocks": r.blocks,
            "items": r.items.len(),
        },
        "items": r.items.iter().map(|i| serde_json::json!({
            "path": i.path,
            "size": i.size,
            "files": i.files,
            "entries": i.entries,
        })).collect::<Vec<_>>(),
    })
}

/// The `schema` member of `tote inspect --json`; bumped when a member
/// changes meaning or goes away (new members may appear without).
pub const JSON_SCHEMA: &str = "tote-inspect/1";

/// `tote inspect`: header, sizes, then the items table.
fn inspect_text(r: &Report, paint: Paint) -> String {
    use std::fmt::Write;
    let m = &r.meta;
    // The header.
    let mut head = vec![("entry point", lossy(&m.entrypoint))];
    head.extend(m.args.iter().map(|a| ("argument", lossy(a))));
    head.extend(m.cmd.iter().map(|a| ("default arg", lossy(a))));
    head.extend(m.env.iter().map(|e| ("environment", lossy(e))));
    if !m.root.is_empty() {
        head.push(("root", format!("{} (the bundle's)", lossy(&m.root))));
    }
    if !m.workdir.is_empty() {
        head.push(("working dir", lossy(&m.workdir)));
    }
    let mounts: Vec<(String, String)> = m
        .mounts
        .iter()
        .map(|x| {
            (
                format!("mount ({})", x.kind.name()),
                format!("{} -> {}", lossy(&x.source), lossy(&x.target)),
            )
        })
        .collect();
    let mut out = format!("{}\n", paint.bold(&m.name));
    let mut line = |label: &str, value: &str| {
        let _ = writeln!(out, "  {label:<16}{value}");
    };
    for (l, v) in &head {
        line(l, v);
    }
    for (l, v) in &mounts {
        line(l, v);
    }
    if !m.needs_namespace() {
        line("namespace", "none (runs from the cache)");
    }
    line("mode", &mode_summary(m));
    line("bundle id", &r.bundle_id);
    line("sha256", &format!("sha256:{}", r.sha256));
    line("format version", &tote_format::VERSION.to_string());
    line("creator", &m.creator);

    // Sizes.
    let s = &r.sizes;
    let _ = writeln!(out, "\n{}", paint.bold("sizes"));
    let mut line = |label: &str, value: String| {
        let _ = writeln!(out, "  {label:<16}{value}");
    };
    line("file", format!("{} ({} bytes)", human(s.file), s.file));
    line("stub", format!("{} ({} bytes)", human(s.stub), s.stub));
    line(
        "compressed",
        format!("{} in {}", human(s.compressed), plural(r.blocks, "block")),
    );
    line("metadata+index", human(s.metadata_and_index));
    line(
        "uncompressed",
        format!(
            "{} in {}, {}",
            human(s.uncompressed),
            plural(m.stats.files, "file"),
            plural(r.entries, "entry")
        ),
    );
    line(
        "ratio",
        s.ratio()
            .map_or("-".into(), |x| format!("{x:.2} (uncompressed / compressed)")),
    );
    let saved = s.uncompressed - s.after_dedup;
    line(
        "dedup saved",
        format!("{} ({})", human(saved), percent(saved, s.uncompressed)),
    );

    // Items.
    if !r.items.is_empty() {
        let _ = writeln!(
            out,
            "\n{}",
            paint.bold(&format!(
                "{}, largest first",
                plural(r.items.len() as u64, "top-level item")
            ))
        );
        let _ = writeln!(
            out,
            "{}",
            paint.bold(&format!("  {:>10}  {:>7}  {:>7}  ITEM", "SIZE", "SHARE", "FILES"))
        );
        for i in &r.items {
            let _ = writeln!(
                out,
                "  {:>10}  {:>7}  {:>7}  {}",
                human(i.size),
                percent(i.size, s.uncompressed),
                i.files,
                i.path
            );
        }
    }
    out
}
/// The hex SHA-256 of the whole file (what `sha256:` checksums name).
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    tote_format::sha256(bytes).to_hex()
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
    if !crate::progress::quiet() {
        println!(
            "{}: ok ({} blocks, {} entries, bundle id {})",
            path.display(),
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
