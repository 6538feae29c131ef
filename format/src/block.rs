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

impl BlockRef {
    /// This block's compressed frame in `data`, the data section (which
    /// the index was checked to tile).
    pub fn frame<'d>(&self, data: &'d [u8]) -> &'d [u8] {
        &data[self.offset as usize..(self.offset + u64::from(self.clen)) as usize]
    }

    /// Where stream bytes `from..to` lie in this block's decoded bytes (the
    /// part of them it holds; empty if none).
    pub fn overlap(&self, from: u64, to: u64) -> std::ops::Range<usize> {
        let end = self.raw_offset + u64::from(self.rlen);
        let (lo, hi) = (from.clamp(self.raw_offset, end), to.clamp(self.raw_offset, end));
        (lo - self.raw_offset) as usize..(hi.max(lo) - self.raw_offset) as usize
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_is_the_part_of_a_range_a_block_holds() {
        let b = BlockRef {
            offset: 10,
            clen: 4,
            raw_offset: 100,
            rlen: 50,
            hash: Digest32([0; 32]),
        };
        assert_eq!(b.overlap(90, 120), 0..20, "starts before the block");
        assert_eq!(b.overlap(110, 130), 10..30, "inside");
        assert_eq!(b.overlap(140, 200), 40..50, "ends after the block");
        assert_eq!(b.overlap(0, 90).len(), 0, "before it");
        assert_eq!(b.overlap(150, 160).len(), 0, "after it");
        assert_eq!(b.frame(&[7u8; 20]), &[7u8; 4]);
    }
}
