//! Step 5: the sections after the data blocks: the index entries, the
//! metadata (launch fields and summary figures), the compressed index and
//! the trailer.

use std::io::Write;

use anyhow::{Context, Result};
use tote_format::{Entry, EntryKind, Index, Meta, Relocation, Sections, Stats};

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
        stats,
    }
}

/// Write metadata, index and trailer after the data blocks (which start
/// `data_offset` bytes into the file).
pub fn write(meta: &Meta, index: &Index, data_offset: u64, level: i32, w: &mut dyn Write) -> Result<()> {
    let s = Sections::encode(meta, index, data_offset, level).context("compressing the index")?;
    w.write_all(&s.meta).context("writing the bundle")?;
    w.write_all(&s.index).context("writing the bundle")?;
    w.write_all(&s.trailer.encode()).context("writing the bundle")?;
    Ok(())
}
