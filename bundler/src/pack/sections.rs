//! Step 5: the sections after the data blocks: the index entries, the
//! metadata (launch fields and summary figures), the compressed index and
//! the trailer.

use std::io::Write;

use anyhow::{bail, Context, Result};
use tote_format::{Entry, EntryKind, FormatError, Index, Meta, Relocation, Sections, Stats, Trailer};

use super::order::Stream;
use crate::input::{ItemKind, Launch, Tree};

/// One index entry per tree item, files pointing into the stream.
pub fn entries(tree: &Tree, stream: &Stream<'_>) -> Vec<Entry> {
    tree.items
        .iter()
        .enumerate()
        .map(|(i, it)| Entry {
            path: it.path.clone(),
            kind: match &it.kind {
                ItemKind::Dir => EntryKind::Dir,
                ItemKind::Symlink { target } => EntryKind::Symlink { target: target.clone() },
                ItemKind::File { executable, size, .. } => {
                    let (offset, hash) = stream.file_at[&i];
                    EntryKind::File {
                        executable: *executable,
                        size: *size,
                        offset,
                        hash,
                    }
                }
            },
        })
        .collect()
}

/// The metadata a bundle of `launch` with these figures carries; a store
/// bundle's relocation lists the `unrewritable` files packing found.
pub fn meta(launch: &Launch, stats: Stats, unrewritable: Vec<Vec<u8>>) -> Meta {
    let relocation = match &launch.relocation {
        Relocation::Store { .. } => Relocation::Store { unrewritable },
        other => other.clone(),
    };
    Meta {
        name: launch.name.clone(),
        creator: format!("tote {}", env!("CARGO_PKG_VERSION")),
        entrypoint: launch.entrypoint.clone(),
        args: launch.args.clone(),
        cmd: launch.cmd.clone(),
        env: launch.env.clone(),
        workdir: launch.workdir.clone(),
        root: launch.root.clone(),
        mounts: launch.mounts.clone(),
        mode: launch.mode,
        relocation,
        arch: launch.arch,
        stats,
    }
}

/// Write metadata, index and trailer after the data blocks (which start
/// `data_offset` bytes into the file).
pub fn write(meta: &Meta, index: &Index, data_offset: u64, level: i32, w: &mut dyn Write) -> Result<()> {
    let s = Sections::encode(meta, index, data_offset, level).context("compressing the index")?;
    read_back(&s, index).map_err(|why| {
        anyhow::anyhow!("this tree is past what a bundle may hold (docs/FORMAT.md, \"Limits\"): {why}")
    })?;
    w.write_all(&s.meta).context("writing the bundle")?;
    w.write_all(&s.index).context("writing the bundle")?;
    w.write_all(&s.trailer.encode()).context("writing the bundle")?;
    Ok(())
}

/// What readers refuse before they read much, refused here before the
/// blocks are compressed: too many entries or mounts, a tree too deep.
pub fn check_shape(entries: &[Entry], launch: &Launch) -> Result<()> {
    let limits = "docs/FORMAT.md, \"Limits\"";
    if entries.len() > tote_format::MAX_ENTRIES {
        bail!(
            "this tree has {} entries; a bundle holds at most {} ({limits})",
            entries.len(),
            tote_format::MAX_ENTRIES
        );
    }
    if launch.mounts.len() > tote_format::MAX_MOUNTS {
        bail!(
            "{} mounts; a bundle has at most {} ({limits})",
            launch.mounts.len(),
            tote_format::MAX_MOUNTS
        );
    }
    if let Some(deep) = entries
        .iter()
        .find(|e| e.path.split(|&c| c == b'/').count() > tote_format::MAX_DEPTH)
    {
        bail!(
            "/{} is {} levels deep; a bundle's tree is at most {} ({limits})",
            String::from_utf8_lossy(&deep.path),
            deep.path.split(|&c| c == b'/').count(),
            tote_format::MAX_DEPTH
        );
    }
    Ok(())
}

/// Decode the sections just encoded as every reader will: a bundle that
/// readers would refuse (past a limit of the format) is never written.
/// What the files claim is checked first: of the figures a reader
/// compares, the one a person can act on.
fn read_back(s: &Sections, index: &Index) -> std::result::Result<(), String> {
    let why = |e: FormatError| match e {
        FormatError::Trailer(m) | FormatError::Meta(m) | FormatError::Index(m) => m,
        e => e.to_string(),
    };
    index
        .check_amplification(s.trailer.meta_offset - s.trailer.data_offset)
        .map_err(why)?;
    let layout = Trailer::decode(&s.trailer.encode(), s.file_len()).map_err(why)?;
    let meta = layout.decode_meta(&s.meta).map_err(why)?;
    let decoded = layout.decode_index(&s.index).map_err(why)?;
    meta.check_stats(&decoded).map_err(why)?;
    Ok(())
}
