//! Packing: an input's tree and launch metadata in, bundle bytes out, in
//! named steps: `hash` every file (and find its store references, see
//! `relocation`), `order` the distinct contents into a data stream, cut it
//! into `blocks`, find the `bases` of blocks that repeat earlier ones,
//! `compress` them in parallel, then the `sections` (metadata, index,
//! trailer). `output` writes the file atomically around all of it.

mod bases;
mod blocks;
mod compress;
pub mod hash;
mod order;
pub mod output;
mod relocation;
mod sections;

use std::io::Write;

use anyhow::Result;
use tote_format::{Index, Mode, Stats};

use crate::input::{Launch, Tree};
use crate::items;
use crate::ui::progress;

pub const DEFAULT_LEVEL: i32 = 19;
/// 8 MiB: zstd level 19's own window, few enough blocks to compress well,
/// enough of them to decode on every core. For bundles that are only extracted.
pub const EXTRACT_BLOCK_KIB: u32 = 8192;
/// 64 KiB: for bundles that may be mounted, where a read decodes whole
/// blocks. AppImage users measured 128 KiB squashfs blocks starting about
/// twice as fast as 1 MiB ones; here (scripts/bench, python's start-up
/// through the mount) 64 KiB started 9 % faster than 128 KiB and 36 %
/// faster than 1 MiB, for a file 5 % larger than with 128 KiB.
pub const MOUNT_BLOCK_KIB: u32 = 64;

/// The block size for a bundle of `total_size` bytes of files in `mode`:
/// small where the bundle may be mounted, large where it is only extracted.
pub fn block_kib(mode: Mode, total_size: u64) -> u32 {
    if mode.wants_mount(total_size) {
        MOUNT_BLOCK_KIB
    } else {
        EXTRACT_BLOCK_KIB
    }
}

/// What packing wrote, besides the bytes.
pub struct Packed {
    pub stats: Stats,
    /// Tree paths of the files that hold store references where a
    /// relocated launch cannot rewrite them (see `relocation`).
    pub unrewritable: Vec<Vec<u8>>,
}

/// Write data blocks, metadata, index and trailer to `w`, which is
/// positioned right after the stub (`data_offset` bytes).
pub fn pack(
    tree: &Tree,
    launch: &Launch,
    level: i32,
    block_size: usize,
    data_offset: u64,
    w: &mut dyn Write,
) -> Result<Packed> {
    let files = hash::hash_files(tree, launch.store_dir())?;
    let bases = items::bases(&launch.mounts, &launch.root);
    let stream = order::dedup(tree, &files, &bases);
    let unrewritable = relocation_report(tree, &files, &stream, launch);
    let entries = sections::entries(tree, &stream);
    sections::check_shape(&entries, launch)?;
    let blocks = blocks::cut(&stream.unique, block_size);
    progress::step(|| {
        format!(
            "{} blocks of up to {} KiB, zstd level {level}",
            blocks.len(),
            block_size / 1024
        )
    });
    // TOTE_BASES=off: no bases (scripts/bench measures what they gain).
    let bases = if std::env::var_os("TOTE_BASES").is_some_and(|v| v == "off") {
        vec![None; blocks.len()]
    } else {
        bases::choose(&blocks, &stream.unique, block_size)?
    };
    let refs = compress::write_blocks(&blocks, &bases, &stream.unique, stream.len, level, block_size, w)?;
    hash::check_unchanged(&files)?;
    let stats = Stats {
        entries: entries.len() as u64,
        files: files.len() as u64,
        total_size: files.iter().map(|f| f.size).sum(),
        unique_size: stream.len,
        blocks: refs.len() as u64,
    };
    let meta = sections::meta(launch, stats.clone(), unrewritable.clone());
    let index = Index {
        blocks: refs,
        entries,
        refs: stream.refs,
    };
    sections::write(&meta, &index, data_offset, level, w)?;
    Ok(Packed { stats, unrewritable })
}

/// A store bundle's files whose references no rewrite reaches, sorted by
/// path; and, with `--verbose`, what relocation will rewrite.
fn relocation_report(
    tree: &Tree,
    files: &[hash::File<'_>],
    stream: &order::Stream<'_>,
    launch: &Launch,
) -> Vec<Vec<u8>> {
    if launch.store_dir().is_none() {
        return Vec::new();
    }
    let mut unrewritable: Vec<Vec<u8>> = files
        .iter()
        .filter(|f| f.found.unrewritable)
        .map(|f| tree.items[f.item].path.clone())
        .collect();
    unrewritable.sort(); // determinism
    progress::step(|| {
        format!(
            "{} store references in {} files to rewrite where a launch relocates; {} files hold references \
             inside compressed data",
            stream.refs.len(),
            files.iter().filter(|f| !f.found.refs.is_empty()).count(),
            unrewritable.len()
        )
    });
    unrewritable
}
