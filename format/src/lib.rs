//! The tote bundle format, version 5 (and the versions 3 and 4 it still
//! reads):
//! the one definition of its bytes.
//!
//! A bundle is `[stub][data blocks][meta][index][trailer]`. `docs/FORMAT.md`
//! describes every byte; the golden tests in `tests/golden.rs` pin it.
//!
//! This crate turns bytes into values and back. It holds no launch policy
//! and does no file-system work. Every decoder checks lengths before reading
//! and returns a [`FormatError`]; none of them panics on any input.

mod block;
mod bytes;
mod error;
mod hash;
mod index;
mod meta;
mod reader;
pub mod refs;
mod trailer;
#[cfg(feature = "write")]
mod writer;

pub use block::{
    decode_block, decoded_blocks, units, Base, BlockRef, Codec, Decoded, Unit, MAX_BASE_BLOCKS, MAX_BASE_LEN,
};
pub use bytes::{cmp_bytes, eq_bytes};
pub use error::FormatError;
pub use hash::{sha256, BundleId, Digest32};
pub use index::{Entry, EntryKind, Index};
pub use meta::{Meta, Mode, MountKind, MountSpec, Relocation, Stats, MIN_STORE_DIR};
pub use trailer::{Layout, Trailer, MAGIC, OLDEST_READABLE, TRAILER_LEN, VERSION};
#[cfg(feature = "write")]
pub use writer::{encode_block, Encoded, Sections};

/// Upper bound for one block's uncompressed size. Decoders refuse larger
/// blocks, which bounds memory per decoding thread (and defuses bombs).
pub const MAX_BLOCK_RAW: u32 = 16 << 20;

/// Upper bound for the decompressed index, to bound memory on hostile input.
pub const MAX_INDEX_RAW: u64 = 1 << 30;

/// Upper bound for the metadata section.
pub const MAX_META_LEN: u64 = 1 << 20;
