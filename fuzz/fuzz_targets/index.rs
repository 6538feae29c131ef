//! The index and metadata decoders on raw (uncompressed) bytes, past the
//! hashes that guard them in a real file: the first 8 bytes give the data
//! section length the blocks must tile, the rest is the index; the same
//! bytes are also tried as metadata.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tote_format::{EntryKind, Index, Meta};

fuzz_target!(|data: &[u8]| {
    let _ = Meta::decode(data);
    if data.len() < 8 {
        return;
    }
    let data_len = u64::from_le_bytes(data[..8].try_into().unwrap()) % (1 << 40);
    let Ok(index) = Index::decode(&data[8..], data_len) else {
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
    let _ = index.stats();
});
