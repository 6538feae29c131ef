//! Data blocks: independently decompressible zstd frames.

use crate::hash::{sha256, Digest32};
use crate::FormatError;

/// Where a block lives and what it must decode to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRef {
    /// Offset of the compressed frame, relative to the start of the data section.
    pub offset: u64,
    /// Compressed length.
    pub clen: u32,
    /// Offset of the block's first byte in the uncompressed data stream.
    pub raw_offset: u64,
    /// Uncompressed length.
    pub rlen: u32,
    /// SHA-256 of the compressed frame.
    pub hash: Digest32,
}

/// Verify a block's hash, then decompress it into `out` (exactly `rlen` bytes).
///
/// The hash is checked before zstd sees a single byte, so corrupt or hostile
/// frames never reach the decompressor, and `out` bounds what any frame can
/// produce.
pub fn decode_block(compressed: &[u8], block: &BlockRef, number: u32, out: &mut [u8]) -> Result<(), FormatError> {
    let fail = |reason: String| FormatError::Block { block: number, reason };
    if compressed.len() != block.clen as usize || out.len() != block.rlen as usize {
        return Err(fail("length does not match the index".into()));
    }
    if sha256(compressed) != block.hash {
        return Err(fail("SHA-256 mismatch".into()));
    }
    let n = zstd::zstd_safe::decompress(out, compressed)
        .map_err(|code| fail(format!("zstd: {}", zstd::zstd_safe::get_error_name(code))))?;
    if n != out.len() {
        return Err(fail(format!("decoded {n} bytes, index says {}", out.len())));
    }
    Ok(())
}
