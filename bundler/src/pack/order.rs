//! Step 2: the data stream. Identical contents are stored once, in stream
//! order (see [`stream_order`]), at their first appearance; every file gets
//! the offset of its content in the stream.

use std::collections::HashMap;
use std::path::PathBuf;

use tote_format::Digest32;

use super::hash::File;
use crate::input::Tree;
use crate::items;
use crate::ui::{human, progress};

/// One distinct content, in stream order.
pub struct Content<'t> {
    pub source: &'t PathBuf,
    pub size: u64,
    /// The top-level item of its first holder (a store path).
    pub group: &'t [u8],
}

/// The distinct contents and where every file's bytes are.
pub struct Stream<'t> {
    pub unique: Vec<Content<'t>>,
    /// By tree item: stream offset and content hash.
    pub file_at: HashMap<usize, (u64, Digest32)>, // lookups only, never iterated
    pub len: u64,
    /// Stream offsets of the store references, ascending.
    pub refs: Vec<u64>,
}

pub fn dedup<'t>(tree: &'t Tree, files: &[File<'t>], bases: &[&[u8]]) -> Stream<'t> {
    let mut order: Vec<usize> = (0..files.len()).collect();
    order.sort_by_cached_key(|&f| stream_order(&tree.items[files[f].item].path, bases)); // determinism
    let mut unique: Vec<Content<'t>> = Vec::new();
    let mut offset_of: HashMap<Digest32, u64> = HashMap::new(); // lookups only, never iterated
    let mut len = 0u64;
    let mut file_at: HashMap<usize, (u64, Digest32)> = HashMap::new();
    let mut refs = Vec::new();
    for f in order {
        let file = &files[f];
        let off = *offset_of.entry(file.hash).or_insert_with(|| {
            let o = len;
            if file.size > 0 {
                unique.push(Content {
                    source: file.source,
                    size: file.size,
                    group: items::item_of(&tree.items[file.item].path, bases),
                });
                refs.extend(file.found.refs.iter().map(|r| o + r));
                len += file.size;
            }
            o
        });
        file_at.insert(file.item, (if file.size == 0 { 0 } else { off }, file.hash));
    }
    let total_size: u64 = files.iter().map(|f| f.size).sum();
    progress::step(|| {
        format!(
            "{} distinct contents, {} (identical files stored once saved {})",
            unique.len(),
            human(len),
            human(total_size - len)
        )
    });
    Stream {
        unique,
        file_at,
        len,
        refs,
    }
}

/// Where a file's bytes go in the data stream. Grouped by top-level item;
/// within it, files that compress well together sit together: by directory,
/// then by name up to the first dot, so `os.py` and
/// `__pycache__/os.cpython-311.pyc` (which repeats its names and strings)
/// are neighbours. The full path breaks ties, so the order is total.
pub fn stream_order(path: &[u8], bases: &[&[u8]]) -> (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>) {
    let group = items::item_of(path, bases).to_vec();
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
