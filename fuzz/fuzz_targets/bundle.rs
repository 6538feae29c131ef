//! The decoders a launch runs on an untrusted file, in launch order: the
//! trailer at the end, the metadata, the index (hash, zstd, validation),
//! the stats check, then every block's hash and decompression, in the
//! units an extraction decodes them in (a block with a base after its base
//! blocks), and again one by one as mount mode and `tote ls` do.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tote_format::{decode_block, units, Decoded, Trailer, TRAILER_LEN};

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
    let all = vec![true; index.blocks.len()];
    for unit in units(&index, &all) {
        let mut span = Vec::new();
        let span_start = index.blocks.get(unit.base.start).map_or(0, |b| b.raw_offset);
        for n in unit.base.clone() {
            let b = &index.blocks[n];
            let start = b.offset as usize;
            let Some(bytes) = data.get(start..start + b.clen as usize) else {
                panic!("block {n} outside the data section after validation");
            };
            assert!(b.base.is_none(), "a base block with a base after validation");
            out.resize(b.rlen as usize, 0);
            if decode_block(bytes, b, n as u32, None, &mut out).is_err() {
                out.fill(0);
            }
            span.extend_from_slice(&out);
        }
        for &n in &unit.blocks {
            let b = &index.blocks[n];
            let bytes = b.frame(data);
            let base = b.base.map(|base| {
                let from = (base.offset - span_start) as usize;
                &span[from..from + base.len as usize]
            });
            out.resize(b.rlen as usize, 0);
            let _ = decode_block(bytes, b, n as u32, base, &mut out);
        }
    }
    let mut one_by_one = Decoded::default();
    for n in 0..index.blocks.len() {
        let _ = one_by_one.block(&index, data, n);
    }
    for e in &index.entries {
        if let tote_format::EntryKind::File { offset, size, .. } = e.kind {
            let r = index.blocks_for(offset, size);
            assert!(r.end <= index.blocks.len());
        }
    }
});
