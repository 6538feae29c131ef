//! Items in, bundle bytes out: hash files, store identical contents once,
//! cut the data stream into blocks, compress blocks in parallel (the output
//! does not depend on the thread count), then metadata, index and trailer.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use tote_format::{encode_block, BlockRef, Digest32, Entry, EntryKind, Index, Meta, Mode, MountSpec, Sections, Stats};

use crate::scan::{ItemKind, Tree};
use crate::{human, progress};

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

/// What the bundle runs and where its files appear (the metadata's launch
/// fields; see `tote_format::Meta`).
#[derive(Debug, Default, Clone)]
pub struct Launch {
    pub name: String,
    pub entrypoint: Vec<u8>,
    pub args: Vec<Vec<u8>>,
    pub cmd: Vec<Vec<u8>>,
    pub env: Vec<Vec<u8>>,
    pub workdir: Vec<u8>,
    pub root: Vec<u8>,
    pub mounts: Vec<MountSpec>,
    pub mode: Mode,
}

/// One run of bytes of a unique file content inside a block.
struct Piece {
    source: usize,
    offset: u64,
    len: usize,
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
) -> Result<Stats> {
    // 1. Hash every file (in parallel; collected in item order).
    let files: Vec<(usize, &PathBuf, u64)> = tree
        .items
        .iter()
        .enumerate()
        .filter_map(|(i, it)| match &it.kind {
            ItemKind::File { source, size, .. } => Some((i, source, *size)),
            _ => None,
        })
        .collect();
    // Each file's (size, mtime, ctime) before hashing, checked again after
    // compressing: a directory input may change under us, and the content
    // hashed must be the content stored.
    let total_size: u64 = files.iter().map(|f| f.2).sum();
    let phase = progress::Phase::start("hashing", progress::Counting::Bytes(total_size));
    let (hashes, stamps): (Vec<Digest32>, Vec<Stamp>) = files
        .par_iter()
        .map(|(_, src, size)| {
            let before = stamp(src)?;
            let bytes = std::fs::read(src).with_context(|| format!("reading {}", src.display()))?;
            if bytes.len() as u64 != *size || before.0 != *size {
                bail!(
                    "{} changed while it was being bundled: bundle again once nothing writes to it",
                    src.display()
                );
            }
            phase.inc(*size);
            Ok((tote_format::sha256(&bytes), before))
        })
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .unzip();
    let took = phase.done();
    progress::step(|| {
        format!(
            "hashed {} files, {} {}",
            files.len(),
            human(total_size),
            progress::rate(total_size, took)
        )
    });

    // 2. Identical contents are stored once, in stream order (see
    // `stream_order`), at their first appearance.
    let bases = crate::items::bases(&launch.mounts, &launch.root);
    let mut order: Vec<usize> = (0..files.len()).collect();
    order.sort_by_cached_key(|&f| stream_order(&tree.items[files[f].0].path, &bases)); // determinism
    let mut unique: Vec<(&PathBuf, u64, &[u8])> = Vec::new();
    let mut offset_of: HashMap<Digest32, u64> = HashMap::new(); // lookups only, never iterated
    let mut stream_len = 0u64;
    let mut file_at: HashMap<usize, (u64, Digest32)> = HashMap::new();
    for f in order {
        let ((item, src, size), hash) = (&files[f], &hashes[f]);
        let off = *offset_of.entry(*hash).or_insert_with(|| {
            let o = stream_len;
            if *size > 0 {
                unique.push((src, *size, crate::items::item_of(&tree.items[*item].path, &bases)));
                stream_len += size;
            }
            o
        });
        file_at.insert(*item, (if *size == 0 { 0 } else { off }, *hash));
    }

    progress::step(|| {
        format!(
            "{} distinct contents, {} (identical files stored once saved {})",
            unique.len(),
            human(stream_len),
            human(total_size - stream_len)
        )
    });

    // 3. Index entries.
    let entries: Vec<Entry> = tree
        .items
        .iter()
        .enumerate()
        .map(|(i, it)| Entry {
            path: it.path.clone(),
            kind: match &it.kind {
                ItemKind::Dir => EntryKind::Dir,
                ItemKind::Symlink { target } => EntryKind::Symlink { target: target.clone() },
                ItemKind::File { executable, size, .. } => {
                    let (offset, hash) = file_at[&i];
                    EntryKind::File {
                        executable: *executable,
                        size: *size,
                        offset,
                        hash,
                    }
                }
            },
        })
        .collect();

    // 4. Cut the stream into blocks; a new top-level item (store path)
    // starts a new block, so a bundle that shares store paths with one the
    // host already ran needs only the blocks of the items that changed.
    let mut blocks: Vec<Vec<Piece>> = Vec::new();
    let mut cur: Vec<Piece> = Vec::new();
    let mut fill = 0usize;
    for (source, (_, size, group)) in unique.iter().enumerate() {
        if fill > 0 && source > 0 && unique[source - 1].2 != *group {
            blocks.push(std::mem::take(&mut cur));
            fill = 0;
        }
        let mut off = 0u64;
        while off < *size {
            let take = ((*size - off) as usize).min(block_size - fill);
            cur.push(Piece {
                source,
                offset: off,
                len: take,
            });
            off += take as u64;
            fill += take;
            if fill == block_size {
                blocks.push(std::mem::take(&mut cur));
                fill = 0;
            }
        }
    }
    if !cur.is_empty() {
        blocks.push(cur);
    }

    progress::step(|| {
        format!(
            "{} blocks of up to {} KiB, zstd level {level}",
            blocks.len(),
            block_size / 1024
        )
    });

    // 5. Compress in batches (bounded memory), write in order.
    let phase = progress::Phase::start("compressing", progress::Counting::Bytes(stream_len));
    let mut refs: Vec<BlockRef> = Vec::with_capacity(blocks.len());
    let (mut data_len, mut raw_offset) = (0u64, 0u64);
    let batch = rayon::current_num_threads() * 4;
    for chunk in blocks.chunks(batch) {
        let done: Vec<(Vec<u8>, Digest32, u32)> = chunk
            .par_iter()
            .map(|pieces| {
                let mut raw = Vec::with_capacity(block_size);
                for p in pieces {
                    let src = unique[p.source].0;
                    let start = raw.len();
                    raw.resize(start + p.len, 0);
                    match File::open(src).and_then(|f| f.read_exact_at(&mut raw[start..], p.offset)) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                            bail!(
                                "{} changed while it was being bundled: bundle again once nothing writes to it",
                                src.display()
                            )
                        }
                        Err(e) => return Err(e).with_context(|| format!("reading {}", src.display())),
                    }
                }
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

    for ((_, src, _), before) in files.iter().zip(&stamps) {
        if stamp(src)? != *before {
            bail!(
                "{} changed while it was being bundled: bundle again once nothing writes to it",
                src.display()
            );
        }
    }

    // 6. Metadata, index, trailer.
    let stats = Stats {
        entries: entries.len() as u64,
        files: files.len() as u64,
        total_size,
        unique_size: stream_len,
        blocks: refs.len() as u64,
    };
    let meta = Meta {
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
        stats: stats.clone(),
    };
    let index = Index { blocks: refs, entries };
    let s = Sections::encode(&meta, &index, data_offset, level).context("compressing the index")?;
    w.write_all(&s.meta).context("writing the bundle")?;
    w.write_all(&s.index).context("writing the bundle")?;
    w.write_all(&s.trailer.encode()).context("writing the bundle")?;
    Ok(stats)
}

/// Size, mtime and ctime (seconds, nanoseconds) of a file.
type Stamp = (u64, i64, i64, i64, i64);

fn stamp(path: &std::path::Path) -> Result<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    Ok((m.len(), m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec()))
}

/// Where a file's bytes go in the data stream. Grouped by top-level item;
/// within it, files that compress well together sit together: by directory,
/// then by name up to the first dot, so `os.py` and
/// `__pycache__/os.cpython-311.pyc` (which repeats its names and strings)
/// are neighbours. The full path breaks ties, so the order is total.
fn stream_order(path: &[u8], bases: &[&[u8]]) -> (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>) {
    let group = crate::items::item_of(path, bases).to_vec();
    let (dir, name) = match path.iter().rposition(|&c| c == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&b""[..], path),
    };
    let dir = dir.strip_suffix(b"/__pycache__").unwrap_or(dir);
    let stem = name.split(|&c| c == b'.').next().unwrap_or(name);
    (group, dir.to_vec(), stem.to_vec(), path.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Vec<&'static [u8]> {
        vec![b"nix/store"]
    }

    #[test]
    fn modules_sit_next_to_their_bytecode() {
        let mut paths: Vec<&[u8]> = vec![
            b"nix/store/a-py/lib/__pycache__/os.cpython-311.pyc",
            b"nix/store/a-py/lib/abc.py",
            b"nix/store/a-py/lib/os.py",
            b"nix/store/a-py/lib/__pycache__/abc.cpython-311.pyc",
            b"nix/store/0-glibc/lib/libc.so.6",
        ];
        paths.sort_by_key(|p| stream_order(p, &store()));
        assert_eq!(
            paths,
            [
                &b"nix/store/0-glibc/lib/libc.so.6"[..],
                b"nix/store/a-py/lib/__pycache__/abc.cpython-311.pyc",
                b"nix/store/a-py/lib/abc.py",
                b"nix/store/a-py/lib/__pycache__/os.cpython-311.pyc",
                b"nix/store/a-py/lib/os.py",
            ]
        );
    }
}
