//! Opening an existing bundle file: mapped, its trailer decoded and checked,
//! its metadata and index on demand. Every command that reads bundles
//! starts here.

use std::fs::File;
use std::path::Path;

use anyhow::{bail, Context, Result};
use tote_format::{Index, Layout, Meta, Trailer, MAX_TAIL};

pub struct Opened {
    pub map: memmap2::Mmap,
    pub layout: Layout,
}

/// Map a bundle and decode its trailer: fails on anything that is not one.
#[allow(unsafe_code)]
pub fn open(path: &Path) -> Result<Opened> {
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
    let tail = &map[map.len().saturating_sub(MAX_TAIL)..];
    let layout = Trailer::decode(tail, len).with_context(|| format!("{}", path.display()))?;
    Ok(Opened { map, layout })
}

/// A bundle's map, metadata and index.
pub fn load(path: &Path) -> Result<(Opened, Meta, Index)> {
    let o = open(path)?;
    let ctx = || format!("{}", path.display());
    let meta = o.layout.meta(&o.map).with_context(ctx)?;
    let index = o.layout.index(&o.map).with_context(ctx)?;
    Ok((o, meta, index))
}

/// The hex SHA-256 of the whole file (what `sha256:` checksums name).
pub fn sha256_hex(bytes: &[u8]) -> String {
    tote_format::sha256(bytes).to_hex()
}
