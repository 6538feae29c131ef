//! The fixed-size trailer at the end of every bundle.

use crate::hash::{sha256, BundleId, Digest32};
use crate::reader::Reader;
use crate::{FormatError, MAX_INDEX_RATIO, MAX_INDEX_RAW, MAX_META_LEN};

/// The last 8 bytes of every bundle.
pub const MAGIC: [u8; 8] = *b"TOTEBNDL";
/// The format version this crate writes.
pub const VERSION: u32 = 6;
/// The oldest version it still reads (`tote inspect` and friends read the
/// bundles users keep in object storage).
pub const OLDEST_READABLE: u32 = 3;
/// Size of the trailer in bytes.
pub const TRAILER_LEN: usize = 144;

pub(crate) const CHECK_AT: usize = 112;

/// The decoded trailer. Offsets are absolute file offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trailer {
    pub data_offset: u64,
    pub meta_offset: u64,
    pub meta_len: u64,
    pub index_offset: u64,
    pub index_len: u64,
    pub index_raw_len: u64,
    pub meta_hash: Digest32,
    pub index_hash: Digest32,
}

/// A trailer whose offsets were checked against the file length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub trailer: Trailer,
    pub file_len: u64,
    /// The bundle's format version.
    pub version: u32,
    /// A thin bundle's (version 7) full bundle and where it lies; then
    /// `trailer` describes this file, whose data section is empty.
    pub remote: Option<Box<crate::thin::Remote>>,
    /// SHA-256 of the trailer's bytes (144, or a thin bundle's 248): what
    /// a signature's statement pins.
    pub trailer_hash: Digest32,
    /// A signed bundle's signatures. Then `file_len` is the length of the
    /// bundle they sign: the file is `signed.section_len` bytes longer.
    pub signed: Option<Box<crate::sign::Signatures>>,
}

impl Trailer {
    /// The bundle id, derived from the section hashes.
    pub fn bundle_id(&self) -> BundleId {
        BundleId::derive(&self.meta_hash, &self.index_hash)
    }

    pub fn encode(&self) -> [u8; TRAILER_LEN] {
        let mut out = [0u8; TRAILER_LEN];
        let fields = [
            self.data_offset,
            self.meta_offset,
            self.meta_len,
            self.index_offset,
            self.index_len,
            self.index_raw_len,
        ];
        for (i, v) in fields.iter().enumerate() {
            out[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
        }
        out[48..80].copy_from_slice(&self.meta_hash.0);
        out[80..112].copy_from_slice(&self.index_hash.0);
        out[128..132].copy_from_slice(&(TRAILER_LEN as u32).to_le_bytes());
        out[132..136].copy_from_slice(&VERSION.to_le_bytes());
        out[136..144].copy_from_slice(&MAGIC);
        let check = check_of(&out);
        out[CHECK_AT..CHECK_AT + 16].copy_from_slice(&check);
        out
    }

    /// Decode the trailer from the end of a file.
    ///
    /// `tail` holds the last `min(file_len, TRAILER_LEN)` bytes of the file.
    pub fn decode(tail: &[u8], file_len: u64) -> Result<Layout, FormatError> {
        // Magic and version first, so that a future version with another
        // trailer length is still reported as "unsupported version".
        if tail.len() < 16 || file_len < 16 {
            return Err(FormatError::NotABundle);
        }
        let end = &tail[tail.len() - 16..];
        if crate::sign::is_signed(tail) {
            return decode_signed(tail, file_len);
        }
        if end[8..16] != MAGIC {
            return Err(FormatError::NotABundle);
        }
        let version = u32::from_le_bytes([end[4], end[5], end[6], end[7]]);
        if version == crate::thin::THIN_VERSION {
            return crate::thin::decode_thin(tail, file_len);
        }
        if !(OLDEST_READABLE..=VERSION).contains(&version) {
            return Err(FormatError::UnsupportedVersion {
                found: version,
                oldest: OLDEST_READABLE,
                newest: crate::thin::THIN_VERSION,
            });
        }
        let trailer_len = u32::from_le_bytes([end[0], end[1], end[2], end[3]]);
        if trailer_len as usize != TRAILER_LEN {
            return Err(FormatError::Trailer("unexpected trailer length".into()));
        }
        if tail.len() < TRAILER_LEN || file_len < TRAILER_LEN as u64 {
            return Err(FormatError::Truncated {
                what: "trailer",
                need: TRAILER_LEN as u64,
                have: file_len.min(tail.len() as u64),
            });
        }
        let raw = &tail[tail.len() - TRAILER_LEN..];
        if raw[CHECK_AT..CHECK_AT + 16] != check_of(raw) {
            return Err(FormatError::Trailer("checksum mismatch".into()));
        }
        let mut r = Reader::new(raw, "trailer");
        let t = Trailer {
            data_offset: r.u64()?,
            meta_offset: r.u64()?,
            meta_len: r.u64()?,
            index_offset: r.u64()?,
            index_len: r.u64()?,
            index_raw_len: r.u64()?,
            meta_hash: Digest32(r.array()?),
            index_hash: Digest32(r.array()?),
        };
        t.check_layout(file_len)?;
        Ok(Layout {
            trailer: t,
            file_len,
            version,
            remote: None,
            trailer_hash: sha256(raw),
            signed: None,
        })
    }

    fn check_layout(&self, file_len: u64) -> Result<(), FormatError> {
        check_layout_in(self, file_len - TRAILER_LEN as u64)
    }
}

/// A signed file: the signature section at its end, and the bundle it
/// signs before it (never itself signed).
fn decode_signed(tail: &[u8], file_len: u64) -> Result<Layout, FormatError> {
    let sigs = crate::sign::decode_section(tail, file_len)?;
    let n = sigs.section_len as usize;
    let inner = &tail[..tail.len() - n];
    if crate::sign::is_signed(inner) {
        return Err(FormatError::Signatures("a signature section after another".into()));
    }
    let mut layout = Trailer::decode(inner, file_len - sigs.section_len)?;
    layout.signed = Some(Box::new(sigs));
    Ok(layout)
}

/// The section rules, with the index ending at `trailer_at` (where the
/// trailer starts; in a thin bundle, where the remote record starts).
pub(crate) fn check_layout_in(t: &Trailer, trailer_at: u64) -> Result<(), FormatError> {
    t.check_sections(trailer_at)
}

impl Trailer {
    fn check_sections(&self, trailer_at: u64) -> Result<(), FormatError> {
        let bad = |m: &str| Err(FormatError::Trailer(m.into()));
        if self.data_offset > self.meta_offset {
            return bad("data section ends before it starts");
        }
        if self.meta_offset.checked_add(self.meta_len) != Some(self.index_offset) {
            return bad("metadata and index are not adjacent");
        }
        if self.index_offset.checked_add(self.index_len) != Some(trailer_at) {
            return bad("index does not end at the trailer");
        }
        if self.meta_len > MAX_META_LEN {
            return bad("metadata section too large");
        }
        if self.index_raw_len > MAX_INDEX_RAW
            || self.index_raw_len > self.index_len.saturating_mul(MAX_INDEX_RATIO).saturating_add(1 << 20)
        {
            return bad(&format!(
                "the index decompresses to {} bytes from {}: more than {} MiB, or {MAX_INDEX_RATIO} times it plus 1 MiB",
                self.index_raw_len,
                self.index_len,
                MAX_INDEX_RAW >> 20
            ));
        }
        Ok(())
    }
}

fn check_of(raw: &[u8]) -> [u8; 16] {
    let mut buf = [0u8; TRAILER_LEN - 16];
    buf[..CHECK_AT].copy_from_slice(&raw[..CHECK_AT]);
    buf[CHECK_AT..].copy_from_slice(&raw[CHECK_AT + 16..TRAILER_LEN]);
    let d = sha256(&buf);
    let mut out = [0u8; 16];
    out.copy_from_slice(&d.0[..16]);
    out
}

impl Layout {
    /// The version the metadata and index are in: a thin bundle's are its
    /// full bundle's.
    pub fn content_version(&self) -> u32 {
        self.remote.as_ref().map_or(self.version, |r| r.full_version)
    }

    /// The data section's length: in a thin bundle, the full bundle's.
    pub fn data_len(&self) -> u64 {
        match &self.remote {
            Some(r) => r.full.meta_offset - r.full.data_offset,
            None => self.trailer.meta_offset - self.trailer.data_offset,
        }
    }

    /// The data section of `file` (the whole bundle's bytes). A thin
    /// bundle has none: its blocks are in the full bundle.
    pub fn data<'a>(&self, file: &'a [u8]) -> Result<&'a [u8], FormatError> {
        if let Some(r) = &self.remote {
            return Err(FormatError::Remote(format!(
                "a thin bundle: its blocks are at {}",
                r.location.url
            )));
        }
        self.slice(
            file,
            self.trailer.data_offset,
            self.trailer.meta_offset - self.trailer.data_offset,
            "data section",
        )
    }

    /// Verify and decode the metadata section of `file` (the whole bundle).
    pub fn meta(&self, file: &[u8]) -> Result<crate::Meta, FormatError> {
        let t = &self.trailer;
        self.decode_meta(self.slice(file, t.meta_offset, t.meta_len, "metadata")?)
    }

    /// Verify and decode the metadata section given on its own
    /// (`meta_len` bytes read at `meta_offset`).
    pub fn decode_meta(&self, bytes: &[u8]) -> Result<crate::Meta, FormatError> {
        if sha256(bytes) != self.trailer.meta_hash {
            return Err(FormatError::HashMismatch {
                what: "metadata".into(),
            });
        }
        crate::Meta::decode(bytes, self.content_version())
    }

    /// Verify, decompress and decode the index of `file` (the whole bundle).
    pub fn index(&self, file: &[u8]) -> Result<crate::Index, FormatError> {
        let t = &self.trailer;
        self.decode_index(self.slice(file, t.index_offset, t.index_len, "index")?)
    }

    /// Verify, decompress and decode the index section given on its own
    /// (`index_len` bytes read at `index_offset`).
    pub fn decode_index(&self, bytes: &[u8]) -> Result<crate::Index, FormatError> {
        let t = &self.trailer;
        if sha256(bytes) != t.index_hash {
            return Err(FormatError::HashMismatch { what: "index".into() });
        }
        let mut raw = vec![0u8; t.index_raw_len as usize];
        let n = zstd::zstd_safe::decompress(&mut raw[..], bytes)
            .map_err(|code| FormatError::Index(format!("zstd: {}", zstd::zstd_safe::get_error_name(code))))?;
        if n != raw.len() {
            return Err(FormatError::Index(format!(
                "decoded {n} bytes, trailer says {}",
                raw.len()
            )));
        }
        crate::Index::decode(&raw, self.data_len(), self.content_version())
    }

    /// The whole file's length: the bundle's, and its signatures'.
    pub fn signed_len(&self) -> u64 {
        self.file_len + self.signed.as_ref().map_or(0, |s| s.section_len)
    }

    /// What a signature of this bundle signs, given its stub's SHA-256
    /// (of bytes `0..trailer.data_offset`).
    pub fn statement(&self, stub: Digest32) -> crate::sign::Statement {
        crate::sign::Statement {
            file_len: self.file_len,
            stub,
            trailer: self.trailer_hash,
            id: self.trailer.bundle_id(),
        }
    }

    fn slice<'a>(&self, file: &'a [u8], off: u64, len: u64, what: &'static str) -> Result<&'a [u8], FormatError> {
        if file.len() as u64 != self.signed_len() {
            return Err(FormatError::Truncated {
                what,
                need: self.signed_len(),
                have: file.len() as u64,
            });
        }
        // Offsets were checked against file_len in Trailer::decode.
        Ok(&file[off as usize..(off + len) as usize])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(file_len: u64) -> Trailer {
        let trailer_at = file_len - TRAILER_LEN as u64;
        Trailer {
            data_offset: 100,
            meta_offset: 200,
            meta_len: 50,
            index_offset: 250,
            index_len: trailer_at - 250,
            index_raw_len: 999,
            meta_hash: Digest32([1; 32]),
            index_hash: Digest32([2; 32]),
        }
    }

    #[test]
    fn an_index_that_claims_to_expand_past_its_limits_is_refused() {
        let mut t = sample(1000);
        t.index_raw_len = t.index_len * crate::MAX_INDEX_RATIO + (1 << 20);
        assert!(Trailer::decode(&t.encode(), 1000).is_ok());
        t.index_raw_len += 1;
        assert!(Trailer::decode(&t.encode(), 1000).is_err());
        let mut big = sample(64 << 20);
        big.index_raw_len = MAX_INDEX_RAW + 1;
        assert!(Trailer::decode(&big.encode(), 64 << 20).is_err());
    }

    #[test]
    fn round_trip() {
        let t = sample(1000);
        let enc = t.encode();
        assert_eq!(Trailer::decode(&enc, 1000).unwrap().trailer, t);
    }

    #[test]
    fn every_single_bit_flip_is_caught() {
        let enc = sample(1000).encode();
        for i in 0..TRAILER_LEN {
            for bit in 0..8 {
                let mut b = enc;
                b[i] ^= 1 << bit;
                assert!(Trailer::decode(&b, 1000).is_err(), "flip at {i}:{bit} went unnoticed");
            }
        }
    }

    #[test]
    fn every_prefix_is_an_error_not_a_panic() {
        let enc = sample(1000).encode();
        for n in 0..TRAILER_LEN {
            assert!(Trailer::decode(&enc[TRAILER_LEN - n..], n as u64).is_err());
            assert!(Trailer::decode(&enc[..n], n as u64).is_err());
        }
    }

    #[test]
    fn older_readable_versions_decode_and_older_ones_are_named() {
        let mut enc = sample(1000).encode();
        enc[132..136].copy_from_slice(&3u32.to_le_bytes());
        let check = check_of(&enc);
        enc[CHECK_AT..CHECK_AT + 16].copy_from_slice(&check);
        assert_eq!(Trailer::decode(&enc, 1000).unwrap().version, 3);
        enc[132..136].copy_from_slice(&2u32.to_le_bytes());
        let err = Trailer::decode(&enc, 1000).unwrap_err().to_string();
        assert_eq!(
            err,
            "bundle format version 2 is not supported (this build reads versions 3 to 7)"
        );
    }

    #[test]
    fn future_version_is_named() {
        let mut enc = sample(1000).encode();
        enc[132..136].copy_from_slice(&8u32.to_le_bytes());
        assert_eq!(
            Trailer::decode(&enc, 1000),
            Err(FormatError::UnsupportedVersion {
                found: 8,
                oldest: OLDEST_READABLE,
                newest: crate::THIN_VERSION
            })
        );
    }

    #[test]
    fn layout_must_match_file_length() {
        let enc = sample(1000).encode();
        assert!(matches!(Trailer::decode(&enc, 1001), Err(FormatError::Trailer(_))));
    }
}
