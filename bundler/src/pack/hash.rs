//! Step 1: hash every file's content, in parallel, and note each file's
//! size, mtime and ctime, so that a file that changes while it is being
//! bundled is refused (the content hashed must be the content stored).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rayon::prelude::*;
use tote_format::Digest32;

use super::relocation::{self, Found};
use crate::input::{ItemKind, Tree};
use crate::ui::{human, progress};

/// One regular file of the tree.
pub struct File<'t> {
    /// Its position in the tree's items.
    pub item: usize,
    pub source: &'t PathBuf,
    pub size: u64,
    pub hash: Digest32,
    /// Its store references (a store bundle's files only).
    pub found: Found,
    stamp: Stamp,
}

/// Every regular file of `tree`, in item order, with its SHA-256; and with
/// `store_dir`, its store references.
pub fn hash_files<'t>(tree: &'t Tree, store_dir: Option<&[u8]>) -> Result<Vec<File<'t>>> {
    let files: Vec<(usize, &PathBuf, u64)> = tree
        .items
        .iter()
        .enumerate()
        .filter_map(|(i, it)| match &it.kind {
            ItemKind::File { source, size, .. } => Some((i, source, *size)),
            _ => None,
        })
        .collect();
    let total_size: u64 = files.iter().map(|f| f.2).sum();
    let phase = progress::Phase::start("hashing", progress::Counting::Bytes(total_size));
    let hashed = files
        .par_iter()
        .map(|&(item, source, size)| {
            let before = stamp(source)?;
            let bytes = std::fs::read(source).with_context(|| format!("reading {}", source.display()))?;
            if bytes.len() as u64 != size || before.0 != size {
                return Err(changed(source));
            }
            phase.inc(size);
            Ok(File {
                item,
                source,
                size,
                hash: tote_format::sha256(&bytes),
                found: store_dir.map(|d| relocation::scan(&bytes, d)).unwrap_or_default(),
                stamp: before,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let took = phase.done();
    progress::step(|| {
        format!(
            "hashed {} files, {} {}",
            hashed.len(),
            human(total_size),
            progress::rate(total_size, took)
        )
    });
    Ok(hashed)
}

/// After compressing: every file must still be as it was when hashed.
pub fn check_unchanged(files: &[File<'_>]) -> Result<()> {
    unchanged(files.iter().map(|f| (f.source.as_path(), &f.stamp)))
}

/// Every file must still have the stamp it had when first read.
pub fn unchanged<'a>(stamps: impl IntoIterator<Item = (&'a Path, &'a Stamp)>) -> Result<()> {
    for (path, before) in stamps {
        if stamp(path)? != *before {
            return Err(changed(path));
        }
    }
    Ok(())
}

/// The error for a file that changed while it was being bundled (or put
/// into an image).
pub fn changed(path: &Path) -> anyhow::Error {
    anyhow::anyhow!(
        "{} changed while it was being read: run tote again once nothing writes to it",
        path.display()
    )
}

/// Size, mtime and ctime (seconds, nanoseconds) of a file.
pub type Stamp = (u64, i64, i64, i64, i64);

pub fn stamp(path: &Path) -> Result<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    Ok((m.len(), m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec()))
}
