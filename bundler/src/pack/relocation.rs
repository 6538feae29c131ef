//! Store references for a relocated launch (one without namespaces): where
//! they stand in each file, which the index records and the stub rewrites,
//! and whether a file holds them where no rewrite reaches: inside gzip,
//! xz, bzip2 or zstd data, or in zip (jar, whl) members, whose CRC-32 a
//! rewrite of a stored member would break. Those files are reported.

use std::io::{Read, Write};

use memchr::memmem;
use tote_format::refs;

/// What a file's bytes hold.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Found {
    /// Offsets of the store references in the file, ascending.
    pub refs: Vec<u64>,
    /// Store references inside compressed data or zip members.
    pub unrewritable: bool,
}

/// Stop reading a decompressed stream after this much: no file in a
/// closure holds more, and a bomb must not stall the bundler.
const MAX_DECOMPRESSED: u64 = 4 << 30;

pub fn scan(bytes: &[u8], store_dir: &[u8]) -> Found {
    Found {
        refs: find(bytes, store_dir),
        unrewritable: compressed_holds_ref(bytes, store_dir),
    }
}

/// Every store reference in `bytes` (fast: memmem for the store directory,
/// then the format's own rule).
fn find(bytes: &[u8], store_dir: &[u8]) -> Vec<u64> {
    let mut dir_slash = store_dir.to_vec();
    dir_slash.push(b'/');
    memmem::find_iter(bytes, &dir_slash)
        .filter(|&i| refs::at(bytes, i, store_dir))
        .map(|i| i as u64)
        .collect()
}

/// Is `bytes` compressed data or a zip archive whose content names a store
/// path?
fn compressed_holds_ref(bytes: &[u8], store_dir: &[u8]) -> bool {
    let mut sink = Sink::new(store_dir);
    match bytes {
        [0x1f, 0x8b, ..] => {
            let _ = copy(flate2::read::MultiGzDecoder::new(bytes), &mut sink);
        }
        [0x28, 0xb5, 0x2f, 0xfd, ..] => {
            if let Ok(d) = zstd::stream::read::Decoder::new(bytes) {
                let _ = copy(d, &mut sink);
            }
        }
        [0xfd, b'7', b'z', b'X', b'Z', 0x00, ..] => {
            let _ = lzma_rs::xz_decompress(&mut std::io::BufReader::new(bytes), &mut Limited(&mut sink, 0));
        }
        [b'B', b'Z', b'h', b'1'..=b'9', ..] => {
            let _ = copy(bzip2::read::MultiBzDecoder::new(bytes), &mut sink);
        }
        [b'P', b'K', 3, 4, ..] => return zip_holds_ref(bytes, store_dir),
        _ => return false,
    }
    sink.found
}

/// `std::io::copy`, bounded by [`MAX_DECOMPRESSED`] and stopping at the
/// first reference found.
fn copy(r: impl Read, sink: &mut Sink) -> std::io::Result<()> {
    let mut r = r.take(MAX_DECOMPRESSED);
    let mut buf = vec![0u8; 1 << 16];
    while !sink.found {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        sink.feed(&buf[..n]);
    }
    Ok(())
}

/// Searches a stream chunk by chunk, keeping the end of each chunk so that
/// a reference split between two is found.
struct Sink {
    store_dir: Vec<u8>,
    tail: Vec<u8>,
    found: bool,
}

impl Sink {
    fn new(store_dir: &[u8]) -> Sink {
        Sink {
            store_dir: store_dir.to_vec(),
            tail: Vec::new(),
            found: false,
        }
    }

    fn feed(&mut self, chunk: &[u8]) {
        if self.found {
            return;
        }
        self.tail.extend_from_slice(chunk);
        if !find(&self.tail, &self.store_dir).is_empty() {
            self.found = true;
        }
        let keep = refs::ref_len(&self.store_dir) - 1;
        let cut = self.tail.len().saturating_sub(keep);
        self.tail.drain(..cut);
    }
}

/// A `Write` into a [`Sink`] that refuses more than [`MAX_DECOMPRESSED`]
/// bytes (and ends the decoder once a reference is found).
struct Limited<'a>(&'a mut Sink, u64);

impl Write for Limited<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.1 += buf.len() as u64;
        if self.0.found || self.1 > MAX_DECOMPRESSED {
            return Err(std::io::Error::other("enough"));
        }
        self.0.feed(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Does any member of the zip archive `bytes` hold a store reference
/// (stored, or deflated)? Read through the central directory.
fn zip_holds_ref(bytes: &[u8], store_dir: &[u8]) -> bool {
    let Some(members) = zip_members(bytes) else {
        return false;
    };
    members.into_iter().any(|(method, data)| {
        let mut sink = Sink::new(store_dir);
        match method {
            0 => sink.feed(data),
            8 => {
                let _ = copy(flate2::read::DeflateDecoder::new(data), &mut sink);
            }
            _ => {}
        }
        sink.found
    })
}

/// The members of a zip archive: compression method and compressed bytes.
/// None if the central directory cannot be read.
fn zip_members(b: &[u8]) -> Option<Vec<(u16, &[u8])>> {
    let u16_at = |o: usize| b.get(o..o + 2).map(|s| u16::from_le_bytes([s[0], s[1]]));
    let u32_at = |o: usize| b.get(o..o + 4).map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]));
    let u64_at = |o: usize| {
        b.get(o..o + 8)
            .map(|s| u64::from_le_bytes(s.try_into().unwrap_or([0; 8])))
    };
    // The end of central directory record, within the last 64 KiB + 22 bytes.
    let from = b.len().saturating_sub(22 + 0xffff);
    let eocd = (from..b.len().saturating_sub(21))
        .rev()
        .find(|&i| u32_at(i) == Some(0x0605_4b50))?;
    let count = usize::from(u16_at(eocd + 10)?);
    let mut at = u32_at(eocd + 16)? as usize;
    let mut out = Vec::new();
    for _ in 0..count {
        if u32_at(at)? != 0x0201_4b50 {
            return None;
        }
        let method = u16_at(at + 10)?;
        let mut csize = u64::from(u32_at(at + 20)?);
        let usize32 = u32_at(at + 24)?;
        let (name, extra, comment) = (
            usize::from(u16_at(at + 28)?),
            usize::from(u16_at(at + 30)?),
            usize::from(u16_at(at + 32)?),
        );
        let mut local = u64::from(u32_at(at + 42)?);
        // zip64: the fields that read 0xffffffff follow in the extra field 0x0001.
        let mut e = at + 46 + name;
        while e + 4 <= at + 46 + name + extra {
            let (id, len) = (u16_at(e)?, usize::from(u16_at(e + 2)?));
            if id == 1 {
                let mut f = e + 4;
                if usize32 == u32::MAX {
                    f += 8;
                }
                if csize == u64::from(u32::MAX) {
                    csize = u64_at(f)?;
                    f += 8;
                }
                if local == u64::from(u32::MAX) {
                    local = u64_at(f)?;
                }
            }
            e += 4 + len;
        }
        let local = usize::try_from(local).ok()?;
        if u32_at(local)? != 0x0403_4b50 {
            return None;
        }
        let data_at = local + 30 + usize::from(u16_at(local + 26)?) + usize::from(u16_at(local + 28)?);
        let data = b.get(data_at..data_at.checked_add(usize::try_from(csize).ok()?)?)?;
        out.push((method, data));
        at += 46 + name + extra + comment;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: &[u8] = b"/nix/store";

    fn reference() -> Vec<u8> {
        b"#!/nix/store/0123456789abcdfghijklmnpqrsvwxyz-bash/bin/sh\n".to_vec()
    }

    fn gzip(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }

    /// A zip archive of one member, stored (method 0) or deflated (8).
    fn zip(member: &[u8], method: u16) -> Vec<u8> {
        let data = if method == 8 {
            let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(member).unwrap();
            e.finish().unwrap()
        } else {
            member.to_vec()
        };
        let name = b"m.txt";
        let mut z = Vec::new();
        let le16 = |z: &mut Vec<u8>, v: u16| z.extend_from_slice(&v.to_le_bytes());
        let le32 = |z: &mut Vec<u8>, v: u32| z.extend_from_slice(&v.to_le_bytes());
        le32(&mut z, 0x0403_4b50);
        for v in [20, 0, method, 0, 0] {
            le16(&mut z, v);
        }
        for v in [0, data.len() as u32, member.len() as u32] {
            le32(&mut z, v);
        }
        le16(&mut z, name.len() as u16);
        le16(&mut z, 0);
        z.extend_from_slice(name);
        z.extend_from_slice(&data);
        let cd = z.len() as u32;
        le32(&mut z, 0x0201_4b50);
        for v in [20, 20, 0, method, 0, 0] {
            le16(&mut z, v);
        }
        for v in [0, data.len() as u32, member.len() as u32] {
            le32(&mut z, v);
        }
        for v in [name.len() as u16, 0, 0, 0, 0] {
            le16(&mut z, v);
        }
        le32(&mut z, 0);
        le32(&mut z, 0);
        z.extend_from_slice(name);
        let cd_len = z.len() as u32 - cd;
        le32(&mut z, 0x0605_4b50);
        for v in [0, 0, 1, 1] {
            le16(&mut z, v);
        }
        le32(&mut z, cd_len);
        le32(&mut z, cd);
        le16(&mut z, 0);
        z
    }

    #[test]
    fn plain_references_are_found_where_they_stand() {
        let mut b = b"xx".to_vec();
        b.extend(reference());
        b.extend(reference());
        let f = scan(&b, S);
        assert_eq!(f.refs, [4, 4 + reference().len() as u64]);
        assert!(!f.unrewritable);
    }

    #[test]
    fn references_inside_compressed_data_are_unrewritable() {
        let text = [vec![b'.'; 100_000], reference()].concat();
        let plain = [vec![b'.'; 100_000], b"no reference here".to_vec()].concat();
        let mut zst = Vec::new();
        zstd::stream::copy_encode(&text[..], &mut zst, 3).unwrap();
        let mut xz = Vec::new();
        lzma_rs::xz_compress(&mut &text[..], &mut xz).unwrap();
        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
        bz.write_all(&text).unwrap();
        let bz = bz.finish().unwrap();
        for (what, b) in [
            ("gzip", gzip(&text)),
            ("zstd", zst),
            ("xz", xz),
            ("bzip2", bz),
            ("deflated zip member", zip(&text, 8)),
            ("stored zip member", zip(&text, 0)),
        ] {
            assert!(scan(&b, S).unrewritable, "{what}");
        }
        assert!(!scan(&gzip(&plain), S).unrewritable);
        assert!(!scan(&zip(&plain, 8), S).unrewritable);
        // Another store directory's references are not this one's.
        assert!(!scan(&gzip(&text), b"/gnu/store").unrewritable);
    }

    #[test]
    fn a_reference_split_between_two_chunks_is_found() {
        let r = reference();
        for cut in 0..r.len() {
            let mut sink = Sink::new(S);
            sink.feed(&r[..cut]);
            sink.feed(&r[cut..]);
            assert!(sink.found, "cut at {cut}");
        }
    }

    #[test]
    fn damaged_archives_are_not_references() {
        let mut z = zip(&reference(), 8);
        let n = z.len();
        z.truncate(n - 30);
        assert!(!scan(&z, S).unrewritable);
        assert!(!scan(&[0x1f, 0x8b, 0, 0], S).unrewritable);
    }
}
