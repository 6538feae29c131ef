//! Encoding, used by the bundler only (feature `write`).

use std::io;

use crate::hash::{sha256, Digest32};
use crate::trailer::{Trailer, TRAILER_LEN};
use crate::{Index, Meta};

/// Compress one block as a single zstd frame: content size recorded, no
/// frame checksum (the block's SHA-256 covers it). Deterministic for a given
/// input and level, whatever the thread count.
pub fn encode_block(raw: &[u8], level: i32) -> io::Result<(Vec<u8>, Digest32)> {
    let bytes = compress(raw, level)?;
    let hash = sha256(&bytes);
    Ok((bytes, hash))
}

fn compress(raw: &[u8], level: i32) -> io::Result<Vec<u8>> {
    use zstd::zstd_safe::CParameter;
    let mut c = zstd::bulk::Compressor::new(level)?;
    c.set_parameter(CParameter::ChecksumFlag(false))?;
    c.set_parameter(CParameter::ContentSizeFlag(true))?;
    c.compress(raw)
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
