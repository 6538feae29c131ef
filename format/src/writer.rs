//! Encoding, used by the bundler only (feature `write`).

use std::io;

use crate::block::{Codec, WINDOW_LOG_MAX};
use crate::hash::{sha256, Digest32};
use crate::trailer::{Trailer, TRAILER_LEN};
use crate::{Index, Meta};

/// One block, encoded.
pub struct Encoded {
    pub bytes: Vec<u8>,
    pub hash: Digest32,
    pub codec: Codec,
}

/// Compress one block as a single zstd frame (content size recorded, no
/// frame checksum: the block's SHA-256 covers it), against `base` if given
/// (zstd's reference prefix: the frame then refers to its bytes), or store
/// it as it is if that is no larger. Deterministic for a given input, base
/// and level, whatever the thread count.
pub fn encode_block(raw: &[u8], level: i32, base: Option<&[u8]>) -> io::Result<Encoded> {
    let bytes = compress_with(raw, level, base)?;
    let (bytes, codec) = if bytes.len() >= raw.len() {
        (raw.to_vec(), Codec::Stored)
    } else {
        (bytes, Codec::Zstd)
    };
    let hash = sha256(&bytes);
    Ok(Encoded { bytes, hash, codec })
}

fn compress(raw: &[u8], level: i32) -> io::Result<Vec<u8>> {
    compress_with(raw, level, None)
}

fn compress_with(raw: &[u8], level: i32, base: Option<&[u8]>) -> io::Result<Vec<u8>> {
    use zstd::zstd_safe::{CCtx, CParameter};
    let zerr = |code| io::Error::other(zstd::zstd_safe::get_error_name(code));
    let mut c = CCtx::create();
    c.set_parameter(CParameter::CompressionLevel(level)).map_err(zerr)?;
    c.set_parameter(CParameter::ChecksumFlag(false)).map_err(zerr)?;
    c.set_parameter(CParameter::ContentSizeFlag(true)).map_err(zerr)?;
    if let Some(prefix) = base {
        // A window over the base and the block, so that matches reach back
        // into the base (the decoder allows up to WINDOW_LOG_MAX).
        let span = (prefix.len() + raw.len()).max(1) as u64;
        let log = (64 - (span - 1).leading_zeros()).clamp(10, WINDOW_LOG_MAX);
        c.set_parameter(CParameter::WindowLog(log)).map_err(zerr)?;
        c.ref_prefix(prefix).map_err(zerr)?;
    }
    let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(raw.len()));
    c.compress2(&mut out, raw).map_err(zerr)?;
    Ok(out)
}

/// The bytes that follow the data blocks: metadata, compressed index, trailer.
pub struct Sections {
    pub meta: Vec<u8>,
    pub index: Vec<u8>,
    pub trailer: Trailer,
}

impl Sections {
    /// `data_offset` is where the data section starts (the stub's length).
    pub fn encode(meta: &Meta, index: &Index, data_offset: u64, level: i32) -> io::Result<Sections> {
        Sections::encode_raw(meta, &index.encode(), data_offset, index.data_len(), level)
    }

    /// As `encode`, from an index already encoded (tests hand-craft hostile
    /// ones the `Index` type cannot hold); `data_len` is the data section's.
    pub fn encode_raw(
        meta: &Meta,
        index_raw: &[u8],
        data_offset: u64,
        data_len: u64,
        level: i32,
    ) -> io::Result<Sections> {
        let meta_bytes = meta.encode();
        let index_bytes = compress(index_raw, level)?;
        let meta_offset = data_offset + data_len;
        let index_offset = meta_offset + meta_bytes.len() as u64;
        let trailer = Trailer {
            data_offset,
            meta_offset,
            meta_len: meta_bytes.len() as u64,
            index_offset,
            index_len: index_bytes.len() as u64,
            index_raw_len: index_raw.len() as u64,
            meta_hash: sha256(&meta_bytes),
            index_hash: sha256(&index_bytes),
        };
        Ok(Sections {
            meta: meta_bytes,
            index: index_bytes,
            trailer,
        })
    }

    /// Total length of the bundle these sections end.
    pub fn file_len(&self) -> u64 {
        self.trailer.index_offset + self.trailer.index_len + TRAILER_LEN as u64
    }
}
