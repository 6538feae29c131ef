//! The tote bundle format, version 6 (and the versions 3 to 5 it still
//! reads): the one definition of its bytes.
//!
//! A bundle is `[stub][data blocks][meta][index][trailer]`. `docs/FORMAT.md`
//! describes every byte; the golden tests in `tests/golden.rs` pin it.
//!
//! This crate turns bytes into values and back. It holds no launch policy
//! and does no file-system work. Every decoder checks lengths before reading
//! and returns a [`FormatError`]; none of them panics on any input.

mod arch;
mod block;
mod bytes;
mod error;
mod hash;
mod index;
mod meta;
mod printable;
mod reader;
pub mod refs;
mod sha512;
pub mod sign;
mod thin;
mod trailer;
#[cfg(feature = "write")]
mod writer;

pub use arch::Arch;
pub use block::{
    decode_block, decoded_blocks, held_spans, rebuildable, units, Base, BlockRef, Codec, Decoded, Unit,
    MAX_BASE_BLOCKS, MAX_BASE_LEN,
};
pub use bytes::{cmp_bytes, eq_bytes};
pub use error::FormatError;
pub use hash::{sha256, BundleId, Digest32};
pub use index::{Entry, EntryKind, Index, MAX_NAME, MAX_PATH};
pub use meta::{Meta, Mode, MountKind, MountSpec, Relocation, Stats, MIN_STORE_DIR};
pub use printable::printable;
pub use thin::{
    encode_thin, Location, Remote, MAX_REMOTE_LEN, MAX_TAIL, MAX_UNSIGNED_TAIL, OBJECT_TAIL, THIN_TRAILER_LEN,
    THIN_VERSION,
};
pub use trailer::{Layout, Trailer, MAGIC, OLDEST_READABLE, TRAILER_LEN, VERSION};
#[cfg(feature = "write")]
pub use writer::{encode_block, Encoded, Sections};

/// Upper bound for one block's uncompressed size. Decoders refuse larger
/// blocks, which bounds memory per decoding thread (and defuses bombs).
pub const MAX_BLOCK_RAW: u32 = 16 << 20;

/// Upper bound for the decompressed index, to bound memory on hostile input
/// (with [`MAX_INDEX_RATIO`]).
pub const MAX_INDEX_RAW: u64 = 128 << 20;

/// The decompressed index is at most this many times its compressed size
/// (plus 1 MiB): honest indexes compress 3 to 4 times.
pub const MAX_INDEX_RATIO: u64 = 128;

/// At most this many entries, blocks and store references: readers hold
/// them all in memory (docs/FORMAT.md, "Limits").
pub const MAX_ENTRIES: usize = 1 << 19;
pub const MAX_BLOCKS: usize = 1 << 20;
pub const MAX_REFS: usize = 1 << 22;

/// Deepest path, in components: readers walk the tree holding a directory
/// per level.
pub const MAX_DEPTH: usize = 256;

/// At most this many mounts: a launch's view is planned over all of them.
pub const MAX_MOUNTS: usize = 256;

/// A zstd frame decodes to at most this many times its size (a 128 KiB
/// block takes 4 bytes at least): a block that claims more is refused
/// before anything is allocated for it.
pub const MAX_BLOCK_RATIO: u64 = 32768;

/// The data stream, and the files together, may be at most this many times
/// the data section, plus [`AMPLIFY_ALLOWANCE`]: what any reader does is
/// bounded by what the file holds (honest bundles: 3 to 10 times).
pub const MAX_AMPLIFICATION: u64 = 256;
pub const AMPLIFY_ALLOWANCE: u64 = 1 << 30;

/// The most the data stream and the files may claim for a data section of
/// `data_len` bytes.
pub fn amplification_cap(data_len: u64) -> u64 {
    data_len
        .saturating_mul(MAX_AMPLIFICATION)
        .saturating_add(AMPLIFY_ALLOWANCE)
}

/// Upper bound for the metadata section.
pub const MAX_META_LEN: u64 = 1 << 20;
