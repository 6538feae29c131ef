//! The index and metadata decoders on raw (uncompressed) bytes, past the
//! hashes that guard them in a real file: the first byte picks the format
//! version (3 to 5), the next 8 give the data section length the blocks
//! must tile, the rest is the index; the same bytes are also tried as
//! metadata.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tote_format::{units, EntryKind, Index, Meta, MAX_BASE_BLOCKS};

fuzz_target!(|data: &[u8]| {
    if data.len() < 9 {
        return;
    }
    let version = 3 + u32::from(data[0] % 3);
    let _ = Meta::decode(&data[9..], version);
    let data_len = u64::from_le_bytes(data[1..9].try_into().unwrap()) % (1 << 40);
    let Ok(index) = Index::decode(&data[9..], data_len, version) else {
        return;
    };
    // What a reader relies on after validation.
    let stream = index.stream_len();
    let mut prev: Option<&[u8]> = None;
    for e in &index.entries {
        assert!(!e.path.is_empty() && e.path[0] != b'/' && e.path.len() <= 4095);
        assert!(prev.is_none_or(|p| p < e.path.as_slice()));
        prev = Some(&e.path);
        if let EntryKind::File { offset, size, .. } = e.kind {
            assert!(offset + size <= stream);
            let r = index.blocks_for(offset, size);
            assert!(r.end <= index.blocks.len());
        }
    }
    // Bases: earlier bytes, in a few blocks that have none of their own.
    for (b, block) in index.blocks.iter().enumerate() {
        let r = index.base_blocks(b);
        assert!(r.len() <= MAX_BASE_BLOCKS && r.end <= b);
        assert!(r.clone().all(|n| index.blocks[n].base.is_none()));
        assert_eq!(block.base.is_some(), !r.is_empty());
    }
    let _ = units(&index, &vec![true; index.blocks.len()]);
    let _ = index.stats();
});
