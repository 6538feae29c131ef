//! The decoders a launch runs on an untrusted file, in launch order: the
//! trailer at the end, the metadata, the index (hash, zstd, validation),
//! the stats check, then every block's hash and decompression.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tote_format::{decode_block, Trailer, TRAILER_LEN};

fuzz_target!(|file: &[u8]| {
    let tail = &file[file.len().saturating_sub(TRAILER_LEN)..];
    let Ok(layout) = Trailer::decode(tail, file.len() as u64) else {
        return;
    };
    let Ok(meta) = layout.meta(file) else { return };
    let Ok(index) = layout.index(file) else { return };
    let _ = meta.check_stats(&index);
    let Ok(data) = layout.data(file) else { return };
    let mut out = Vec::new();
    for (n, b) in index.blocks.iter().enumerate() {
        let start = b.offset as usize;
        let Some(bytes) = data.get(start..start + b.clen as usize) else {
            panic!("block {n} outside the data section after validation");
        };
        out.resize(b.rlen as usize, 0);
        let _ = decode_block(bytes, b, n as u32, &mut out);
    }
    for e in &index.entries {
        if let tote_format::EntryKind::File { offset, size, .. } = e.kind {
            let r = index.blocks_for(offset, size);
            assert!(r.end <= index.blocks.len());
        }
    }
});
