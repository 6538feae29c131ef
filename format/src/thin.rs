//! Thin bundles (version 7): the stub, the metadata and the index of a full
//! bundle, and where that full bundle lies; its blocks are fetched from
//! there. `docs/FORMAT.md`, "Thin bundles", describes the bytes.

use crate::hash::{sha256, Digest32};
use crate::reader::Reader;
use crate::trailer::{check_layout_in, Layout, Trailer, MAGIC, TRAILER_LEN};
use crate::FormatError;

/// The version field of a thin bundle's trailer.
pub const THIN_VERSION: u32 = 7;
/// Size of a thin bundle's trailer.
pub const THIN_TRAILER_LEN: usize = 248;
/// Ceiling of the remote record (a URL, an endpoint and a region).
pub const MAX_REMOTE_LEN: u64 = 16 << 10;
/// The most bytes a reader needs from the end of any file to decode its
/// trailer (and a thin bundle's remote record): read
/// `min(file length, MAX_TAIL)`.
pub const MAX_UNSIGNED_TAIL: usize = THIN_TRAILER_LEN + MAX_REMOTE_LEN as usize;
/// What a reader reads from the end of a file to find everything that
/// `Trailer::decode` needs: a thin trailer with its remote record, after
/// a signature section of the largest size.
pub const MAX_TAIL: usize = MAX_UNSIGNED_TAIL + crate::sign::MAX_SIG_SECTION;

const THIN_CHECK_AT: usize = 216;

/// Where a thin bundle's blocks are: the full bundle at `url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// `http://…`, `https://…` or `s3://BUCKET/KEY`.
    pub url: String,
    /// For `s3://`: the endpoint (`https://minio.example:9000`); empty for
    /// AWS's own, chosen by region.
    pub endpoint: String,
    /// For `s3://`: the signing region; empty for `us-east-1`.
    pub region: String,
}

impl Location {
    /// The remote record's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for s in [&self.url, &self.endpoint, &self.region] {
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Location, FormatError> {
        let mut r = Reader::new(bytes, "remote record");
        let mut text = |what: &str| -> Result<String, FormatError> {
            let b = r.blob()?;
            String::from_utf8(b.to_vec()).map_err(|_| FormatError::Remote(format!("the {what} is not UTF-8")))
        };
        let l = Location {
            url: text("URL")?,
            endpoint: text("endpoint")?,
            region: text("region")?,
        };
        if r.remaining() != 0 {
            return Err(FormatError::Remote("bytes after the region".into()));
        }
        l.check()?;
        Ok(l)
    }

    /// The rules every reader and the writer apply.
    pub fn check(&self) -> Result<(), FormatError> {
        let bad = |m: String| Err(FormatError::Remote(m));
        let printable = |s: &str| s.bytes().all(|b| (0x21..0x7f).contains(&b));
        let s3 = self.url.strip_prefix("s3://");
        let http = self.url.starts_with("http://") || self.url.starts_with("https://");
        if !(http || s3.is_some()) {
            return bad(format!("{:?}: not an http://, https:// or s3:// URL", self.url));
        }
        if !printable(&self.url) || !printable(&self.endpoint) || !printable(&self.region) {
            return bad("the URL, endpoint and region must be printable ASCII without spaces".into());
        }
        let after = self.url.split_once("://").map_or("", |(_, r)| r);
        match after.split_once('/') {
            Some((host, path)) if !host.is_empty() && !path.is_empty() => {}
            _ => return bad(format!("{}: names no host (or bucket) and object", self.url)),
        }
        if s3.is_none() && !(self.endpoint.is_empty() && self.region.is_empty()) {
            return bad("an endpoint and a region are for s3:// URLs only".into());
        }
        let endpoint_ok =
            self.endpoint.is_empty() || self.endpoint.starts_with("http://") || self.endpoint.starts_with("https://");
        if !endpoint_ok {
            return bad(format!("endpoint {}: not an http:// or https:// URL", self.endpoint));
        }
        Ok(())
    }
}

/// What a thin bundle records of its full bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// The full bundle's trailer, decoded (its offsets are the full file's).
    pub full: Trailer,
    /// Its bytes, as the full bundle ends with them.
    pub full_trailer: [u8; TRAILER_LEN],
    /// The full bundle's version (3 to 6).
    pub full_version: u32,
    /// The full bundle's length.
    pub full_len: u64,
    pub location: Location,
}

/// How many bytes a check of a remote object asks for at most: the full
/// bundle's trailer, and the signature section a signed full bundle may
/// carry after it.
pub const OBJECT_TAIL: u64 = (TRAILER_LEN + crate::sign::MAX_SIG_SECTION) as u64;

impl Remote {
    /// The range a check of the remote object asks for: `OBJECT_TAIL`
    /// bytes from where the full bundle's trailer starts. The server
    /// answers with what there is: the trailer alone (144 bytes) when the
    /// object is the bundle unsigned, the trailer and the signatures when
    /// it is the bundle signed.
    pub fn object_probe(&self) -> (u64, u64) {
        (self.full_len.saturating_sub(TRAILER_LEN as u64), OBJECT_TAIL)
    }

    /// Is an object of `total` bytes, whose bytes from `object_probe()`'s
    /// start are `got` (as many as it asked for, or up to the end), this
    /// thin bundle's full bundle? Either exactly, or signed since: then it
    /// is followed by a signature section whose statement names a bundle
    /// of `full_len` bytes, and nothing else. (The signatures themselves
    /// are not the thin launch's to judge: its own file is what a policy
    /// checks.)
    pub fn is_object(&self, got: &[u8], total: u64) -> bool {
        let (start, most) = self.object_probe();
        let Some(extra) = total.checked_sub(self.full_len) else {
            return false;
        };
        let to_end = total - start;
        if got.len() as u64 != to_end.min(most) || got.get(..TRAILER_LEN) != Some(&self.full_trailer[..]) {
            return false;
        }
        extra == 0
            || (got.len() as u64 == to_end
                && crate::sign::decode_section(got, total)
                    .is_ok_and(|s| s.section_len == extra && s.statement.file_len == self.full_len))
    }

    /// Where block data starts in the full file.
    pub fn data_offset(&self) -> u64 {
        self.full.data_offset
    }
}

/// Lay out a thin bundle: `stub`, then the full bundle's metadata and
/// index (`meta`, `index`, exactly its bytes), the remote record, and the
/// thin trailer. `full_trailer` is the full bundle's last 144 bytes and
/// `full_len` its length.
pub fn encode_thin(
    stub: &[u8],
    meta: &[u8],
    index: &[u8],
    full_trailer: &[u8; TRAILER_LEN],
    full_len: u64,
    location: &Location,
) -> Result<Vec<u8>, FormatError> {
    let full = Trailer::decode(full_trailer, full_len)?;
    if full.remote.is_some() {
        return Err(FormatError::Remote(
            "a thin bundle cannot point at another thin bundle".into(),
        ));
    }
    let t = &full.trailer;
    if meta.len() as u64 != t.meta_len || index.len() as u64 != t.index_len {
        return Err(FormatError::Remote(
            "the metadata or index is not the full bundle's".into(),
        ));
    }
    location.check()?;
    let record = location.encode();
    let mut out = Vec::with_capacity(stub.len() + meta.len() + index.len() + record.len() + THIN_TRAILER_LEN);
    out.extend_from_slice(stub);
    let meta_offset = out.len() as u64;
    out.extend_from_slice(meta);
    let index_offset = out.len() as u64;
    out.extend_from_slice(index);
    let remote_offset = out.len() as u64;
    out.extend_from_slice(&record);
    let mut tr = [0u8; THIN_TRAILER_LEN];
    tr[..TRAILER_LEN].copy_from_slice(full_trailer);
    for (i, v) in [full_len, meta_offset, index_offset, remote_offset, record.len() as u64]
        .iter()
        .enumerate()
    {
        let at = TRAILER_LEN + i * 8;
        tr[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }
    tr[184..216].copy_from_slice(&sha256(&record).0);
    tr[232..236].copy_from_slice(&(THIN_TRAILER_LEN as u32).to_le_bytes());
    tr[236..240].copy_from_slice(&THIN_VERSION.to_le_bytes());
    tr[240..248].copy_from_slice(&MAGIC);
    let check = check_of(&tr);
    tr[THIN_CHECK_AT..THIN_CHECK_AT + 16].copy_from_slice(&check);
    out.extend_from_slice(&tr);
    // What it wrote, read back as every reader will.
    let layout = Trailer::decode(&out[out.len().saturating_sub(MAX_TAIL)..], out.len() as u64)?;
    if layout.remote.as_ref().map(|r| &r.location) != Some(location) {
        return Err(FormatError::Remote("the remote record did not read back".into()));
    }
    Ok(out)
}

fn check_of(raw: &[u8]) -> [u8; 16] {
    let mut buf = [0u8; THIN_TRAILER_LEN - 16];
    buf[..THIN_CHECK_AT].copy_from_slice(&raw[..THIN_CHECK_AT]);
    buf[THIN_CHECK_AT..].copy_from_slice(&raw[THIN_CHECK_AT + 16..THIN_TRAILER_LEN]);
    let d = sha256(&buf);
    let mut out = [0u8; 16];
    out.copy_from_slice(&d.0[..16]);
    out
}

/// Decode a thin trailer and the remote record before it: `tail` holds
/// the last `min(file_len, MAX_TAIL)` bytes of the file (at least the
/// trailer and the record), `file_len` is the thin file's length.
pub(crate) fn decode_thin(tail: &[u8], file_len: u64) -> Result<Layout, FormatError> {
    if tail.len() < THIN_TRAILER_LEN || file_len < THIN_TRAILER_LEN as u64 {
        return Err(FormatError::Truncated {
            what: "trailer",
            need: THIN_TRAILER_LEN as u64,
            have: file_len.min(tail.len() as u64),
        });
    }
    let raw = &tail[tail.len() - THIN_TRAILER_LEN..];
    if raw[THIN_CHECK_AT..THIN_CHECK_AT + 16] != check_of(raw) {
        return Err(FormatError::Trailer("checksum mismatch".into()));
    }
    let mut full_trailer = [0u8; TRAILER_LEN];
    full_trailer.copy_from_slice(&raw[..TRAILER_LEN]);
    let mut r = Reader::new(&raw[TRAILER_LEN..], "trailer");
    let (full_len, meta_offset, index_offset, remote_offset, remote_len) =
        (r.u64()?, r.u64()?, r.u64()?, r.u64()?, r.u64()?);
    let remote_hash = Digest32(r.array()?);
    let full = Trailer::decode(&full_trailer, full_len).map_err(|e| match e {
        FormatError::UnsupportedVersion { found, .. } => {
            FormatError::Trailer(format!("the full bundle it names has version {found}"))
        }
        other => other,
    })?;
    if full.remote.is_some() {
        return Err(FormatError::Trailer("names another thin bundle".into()));
    }
    let f = &full.trailer;
    let t = Trailer {
        data_offset: meta_offset,
        meta_offset,
        meta_len: f.meta_len,
        index_offset,
        index_len: f.index_len,
        index_raw_len: f.index_raw_len,
        meta_hash: f.meta_hash,
        index_hash: f.index_hash,
    };
    // The local sections: metadata, index, remote record, trailer, adjacent.
    let bad = |m: &str| Err(FormatError::Trailer(m.into()));
    let trailer_at = file_len - THIN_TRAILER_LEN as u64;
    if remote_len > MAX_REMOTE_LEN {
        return bad("remote record too large");
    }
    if remote_offset.checked_add(remote_len) != Some(trailer_at) {
        return bad("the remote record does not end at the trailer");
    }
    check_layout_in(&t, remote_offset)?;
    // The record lies in the tail (it is at most MAX_REMOTE_LEN bytes).
    let in_tail = (THIN_TRAILER_LEN as u64 + remote_len) as usize;
    if tail.len() < in_tail {
        return Err(FormatError::Truncated {
            what: "remote record",
            need: in_tail as u64,
            have: tail.len() as u64,
        });
    }
    let record = &tail[tail.len() - in_tail..tail.len() - THIN_TRAILER_LEN];
    if sha256(record) != remote_hash {
        return Err(FormatError::HashMismatch {
            what: "remote record".into(),
        });
    }
    let location = Location::decode(record)?;
    Ok(Layout {
        trailer: t,
        file_len,
        trailer_hash: sha256(raw),
        signed: None,
        version: THIN_VERSION,
        remote: Some(Box::new(Remote {
            full: full.trailer,
            full_trailer,
            full_version: full.version,
            full_len,
            location,
        })),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A full bundle's trailer for a file of 1000 bytes, and a thin file
    /// made from it with a 7-byte stub.
    fn sample(location: &Location) -> (Trailer, Vec<u8>) {
        let full = Trailer {
            data_offset: 100,
            meta_offset: 700,
            meta_len: 50,
            index_offset: 750,
            index_len: 1000 - 144 - 750,
            index_raw_len: 999,
            meta_hash: Digest32([1; 32]),
            index_hash: Digest32([2; 32]),
        };
        let thin = encode_thin(b"#!stub\n", &[b'm'; 50], &[b'i'; 106], &full.encode(), 1000, location).unwrap();
        (full, thin)
    }

    fn http() -> Location {
        Location {
            url: "http://127.0.0.1:8080/apps/app-1.0".into(),
            endpoint: String::new(),
            region: String::new(),
        }
    }

    fn decode(b: &[u8]) -> Result<Layout, FormatError> {
        Trailer::decode(&b[b.len().saturating_sub(MAX_TAIL)..], b.len() as u64)
    }

    #[test]
    fn a_thin_file_reads_back_with_its_full_bundles_ids_and_offsets() {
        let (full, thin) = sample(&http());
        assert_eq!(thin.len(), 7 + 50 + 106 + http().encode().len() + THIN_TRAILER_LEN);
        let l = decode(&thin).unwrap();
        assert_eq!(l.version, THIN_VERSION);
        assert_eq!(l.trailer.bundle_id(), full.bundle_id());
        assert_eq!(
            (l.trailer.data_offset, l.trailer.meta_offset, l.trailer.index_offset),
            (7, 7, 57)
        );
        assert_eq!(l.data_len(), 600);
        let r = l.remote.as_ref().unwrap();
        assert_eq!(
            (r.full.clone(), r.full_len, r.full_version),
            (full.clone(), 1000, crate::VERSION)
        );
        assert_eq!(r.full_trailer, full.encode());
        assert_eq!(r.location, http());
        assert!(l
            .data(&thin)
            .unwrap_err()
            .to_string()
            .contains("its blocks are at http://127.0.0.1:8080/"));
    }

    #[test]
    fn every_single_bit_flip_in_the_trailer_or_record_is_caught() {
        let (_, thin) = sample(&http());
        let record = http().encode().len();
        for i in thin.len() - THIN_TRAILER_LEN - record..thin.len() {
            for bit in 0..8 {
                let mut b = thin.clone();
                b[i] ^= 1 << bit;
                assert!(decode(&b).is_err(), "flip at {i}:{bit} went unnoticed");
            }
        }
    }

    #[test]
    fn every_prefix_and_suffix_is_an_error_not_a_panic() {
        let (_, thin) = sample(&http());
        for n in 0..thin.len() {
            assert!(decode(&thin[..n]).is_err());
            assert!(Trailer::decode(&thin[thin.len() - n..], n as u64).is_err());
        }
    }

    #[test]
    fn locations_are_checked() {
        let ok = |url: &str, endpoint: &str, region: &str| {
            Location {
                url: url.into(),
                endpoint: endpoint.into(),
                region: region.into(),
            }
            .check()
            .map_err(|e| e.to_string())
        };
        assert!(ok("https://cdn.example/app", "", "").is_ok());
        assert!(ok("s3://tote/apps/app", "http://127.0.0.1:3900", "garage").is_ok());
        assert!(ok("s3://tote/apps/app", "", "").is_ok());
        for (url, endpoint, want) in [
            ("ftp://x/app", "", "not an http://, https:// or s3:// URL"),
            ("http://x", "", "names no host (or bucket) and object"),
            ("s3://bucket/", "", "names no host (or bucket) and object"),
            ("http://x/a b", "", "printable ASCII"),
            ("http://x/app", "http://e", "for s3:// URLs only"),
            ("s3://b/k", "minio:9000", "not an http:// or https:// URL"),
        ] {
            let e = ok(url, endpoint, "").unwrap_err();
            assert!(e.contains(want), "{url} {endpoint}: {e}");
        }
    }

    #[test]
    fn a_thin_file_cannot_name_a_thin_file() {
        let (_, thin) = sample(&http());
        let tail: [u8; TRAILER_LEN] = thin[thin.len() - TRAILER_LEN..].try_into().unwrap();
        // A 144-byte tail of a thin trailer is not a full trailer.
        assert!(encode_thin(b"", &[], &[], &tail, thin.len() as u64, &http()).is_err());
    }
}
