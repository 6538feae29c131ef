//! Bundles sound to the last hash whose tree is fuzzed: names (case and
//! Unicode pairs, dots, empty and over-long components, depth), kinds,
//! links (to a sibling, upward, to a directory outside the target, to
//! nowhere), contents shared or not, declared hashes true or not, block
//! sizes. Each is read as the `tote` commands read one (trailer, metadata,
//! index, stats, every block and every file's hash) and written out as
//! `tote extract` writes it: nothing may land outside the target
//! directory, and a tree written must pass the cache's full check against
//! the same index.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use tote_format::{
    encode_block, sha256, BlockRef, Decoded, Entry, EntryKind, Index, Meta, Sections, Trailer, TRAILER_LEN,
};

const NAMES: &[&str] = &["a", "A", "b", "e\u{301}", "\u{e9}", ".", "..", "", "l", "L", "x y", "\u{1b}[2J"];

/// The next byte, or 0.
fn next(r: &mut std::slice::Iter<'_, u8>) -> u8 {
    r.next().copied().unwrap_or(0)
}

/// A path of 1 to 3 components from `NAMES` (or one 255 or 256 long).
fn path(r: &mut std::slice::Iter<'_, u8>) -> Vec<u8> {
    let depth = 1 + next(r) % 3;
    let mut p = Vec::new();
    for i in 0..depth {
        if i > 0 {
            p.push(b'/');
        }
        match next(r) as usize % (NAMES.len() + 2) {
            n if n < NAMES.len() => p.extend_from_slice(NAMES[n].as_bytes()),
            n => p.extend(std::iter::repeat_n(b'n', 255 + n - NAMES.len())),
        }
    }
    p
}

fuzz_target!(|input: &[u8]| {
    let sandbox = tempfile::tempdir().unwrap();
    let outside = sandbox.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let targets: [Vec<u8>; 6] = [
        b"a".to_vec(),
        b"../outside".to_vec(),
        outside.as_os_str().as_encoded_bytes().to_vec(),
        b"..".to_vec(),
        b"L".to_vec(),
        b"/nonexistent".to_vec(),
    ];

    let mut r = input.iter();
    let block = 1 + next(&mut r) as usize * 97;
    let (mut entries, mut stream) = (Vec::<Entry>::new(), Vec::new());
    while r.len() > 0 && entries.len() < 48 {
        let op = next(&mut r);
        let p = path(&mut r);
        let kind = match op % 5 {
            0 => EntryKind::Dir,
            2 => EntryKind::Symlink {
                target: targets[next(&mut r) as usize % targets.len()].clone(),
            },
            3 if !stream.is_empty() => {
                // Another file's bytes, or a part of them.
                let at = next(&mut r) as u64 % stream.len() as u64;
                let size = (next(&mut r) as u64).min(stream.len() as u64 - at);
                EntryKind::File {
                    executable: op & 8 != 0,
                    size,
                    offset: at,
                    hash: sha256(&stream[at as usize..(at + size) as usize]),
                }
            }
            n => {
                let len = next(&mut r) as usize;
                let content: Vec<u8> = (0..len).map(|i| next(&mut r).wrapping_add(i as u8)).collect();
                let hash = if n == 4 { sha256(b"another file") } else { sha256(&content) };
                let offset = stream.len() as u64;
                stream.extend_from_slice(&content);
                EntryKind::File {
                    executable: op & 8 != 0,
                    size: len as u64,
                    offset,
                    hash,
                }
            }
        };
        entries.push(Entry { path: p, kind });
    }
    // Mostly sound trees, so that most inputs reach the writer: the first
    // of each path kept, missing parents added as directories, an entry
    // below a file or a link dropped (the index target fuzzes the rest).
    let mut tree = std::collections::BTreeMap::new();
    for e in entries {
        let mut parents = e.path.iter().enumerate().filter(|(_, &c)| c == b'/').map(|(i, _)| &e.path[..i]);
        if parents.any(|p| tree.get(p).is_some_and(|k| *k != EntryKind::Dir)) {
            continue;
        }
        for (i, _) in e.path.iter().enumerate().filter(|(_, &c)| c == b'/') {
            tree.entry(e.path[..i].to_vec()).or_insert(EntryKind::Dir);
        }
        tree.entry(e.path).or_insert(e.kind);
    }
    let entries: Vec<Entry> = tree.into_iter().map(|(path, kind)| Entry { path, kind }).collect();

    // Blocks with their true hashes; metadata that agrees.
    let (mut data, mut blocks) = (Vec::new(), Vec::new());
    for (n, raw) in stream.chunks(block).enumerate() {
        let e = encode_block(raw, 1, None).unwrap();
        blocks.push(BlockRef {
            codec: e.codec,
            ..BlockRef::zstd(data.len() as u64, e.bytes.len() as u32, (n * block) as u64, raw.len() as u32, e.hash)
        });
        data.extend_from_slice(&e.bytes);
    }
    let index = Index {
        blocks,
        entries,
        refs: vec![],
    };
    let meta = Meta {
        entrypoint: b"/a".to_vec(),
        stats: index.stats(),
        ..Meta::default()
    };
    let s = Sections::encode_raw(&meta, &index.encode(), 0, data.len() as u64, 1).unwrap();
    let file = [&data[..], &s.meta, &s.index, &s.trailer.encode()].concat();

    // Read as `tote` reads it.
    let tail = &file[file.len() - TRAILER_LEN..];
    let Ok(layout) = Trailer::decode(tail, file.len() as u64) else { return };
    let Ok(meta) = layout.meta(&file) else { return };
    let Ok(index) = layout.index(&file) else { return };
    if meta.check_stats(&index).is_err() {
        return;
    }
    let data = layout.data(&file).unwrap();
    let mut decoded = Decoded::default();
    for b in 0..index.blocks.len() {
        decoded.block(&index, data, b).expect("a block with its true hash did not decode");
    }

    // Written as `tote extract` writes it.
    let out = sandbox.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let written = tote_cache::unpack::write_tree(&index, data, &out, true);
    assert!(
        std::fs::read_dir(&outside).unwrap().next().is_none(),
        "written outside the target directory: {written:?}"
    );
    let mut around: Vec<_> = std::fs::read_dir(sandbox.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    around.sort();
    assert_eq!(around, ["out", "outside"], "written beside the target directory");
    let lies = index.entries.iter().any(|e| match &e.kind {
        EntryKind::File { size, offset, hash, .. } => {
            let mut d = Decoded::default();
            let mut bytes = Vec::new();
            for b in index.blocks_for(*offset, *size) {
                let raw = d.block(&index, data, b).unwrap();
                bytes.extend_from_slice(&raw[index.blocks[b].overlap(*offset, offset + size)]);
            }
            sha256(&bytes) != *hash
        }
        _ => false,
    });
    match written {
        Ok(()) => {
            assert!(!lies, "a file whose content is not its hash was written");
            let checked = tote_cache::verify_tree(&index, Path::new(&out), tote_cache::Modes::USER, 1, None);
            assert!(checked.is_ok(), "written, yet not what the index says: {:?}", checked.err());
        }
        // A sound index written as root into an empty directory on a
        // file system that keeps names apart: the only refusal is a lie.
        Err(e) => assert!(lies, "a sound tree was refused: {e}"),
    }
});
