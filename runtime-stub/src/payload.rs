//! The bundle's own bytes, read with positioned reads: the trailer and the
//! metadata (all a warm start needs), the index and single blocks on a cold
//! start. The file is never mapped whole, so resident memory stays at a few
//! block buffers however large the bundle is.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use tote_format::{BlockRef, BundleId, Index, Layout, Meta, Trailer, MAX_TAIL, TRAILER_LEN};

use crate::error::{Code, Failure, Result};

pub struct Payload {
    pub path: PathBuf,
    file: File,
    pub layout: Layout,
    pub meta: Meta,
    /// The metadata section's bytes, as a cache entry keeps them.
    pub meta_bytes: Vec<u8>,
    /// The trailer's bytes, as a cache entry keeps them.
    pub trailer_bytes: Vec<u8>,
}

impl Payload {
    /// Open the bundle at `path`.
    pub fn open(path: &Path) -> Result<Payload> {
        let file = File::open(path).map_err(|e| Failure::io(Code::Bundle, "opening bundle", path, &e))?;
        Payload::from_file(path, file)
    }

    /// Open the running executable itself (`/proc/self/exe` opens the very
    /// inode the kernel runs, even if `path`, its name, now names another
    /// file: `tote run` execs a file it checked through a descriptor).
    pub fn open_self(path: &Path) -> Result<Payload> {
        match File::open("/proc/self/exe") {
            Ok(file) => Payload::from_file(path, file),
            // No /proc: by name.
            Err(_) => Payload::open(path),
        }
    }

    fn from_file(path: &Path, file: File) -> Result<Payload> {
        let len = file
            .metadata()
            .map_err(|e| Failure::io(Code::Bundle, "reading bundle", path, &e))?
            .len();
        let tail_len = len.min(MAX_TAIL as u64);
        let tail = read_at(&file, path, len - tail_len, tail_len)?;
        let layout = Trailer::decode(&tail, len).map_err(|e| Failure::bundle(path, e))?;
        // What a cache entry keeps: the full bundle's trailer (a thin
        // bundle's entry is the very entry its full bundle makes).
        let trailer_bytes = match &layout.remote {
            Some(r) if cfg!(feature = "remote") => r.full_trailer.to_vec(),
            Some(r) => {
                return Err(Failure::new(
                    Code::Bundle,
                    format!(
                        "bundle {}: a thin bundle (its blocks are at {}), but its stub cannot fetch them: it was put \
                         together wrongly (tote thin adds the thin stub)",
                        path.display(),
                        r.location.url
                    ),
                ))
            }
            None => tail[tail.len() - TRAILER_LEN..].to_vec(),
        };
        let t = &layout.trailer;
        let meta_bytes = read_at(&file, path, t.meta_offset, t.meta_len)?;
        let meta = layout.decode_meta(&meta_bytes).map_err(|e| Failure::bundle(path, e))?;
        // The stub runs, so the host runs its architecture's programs; a
        // bundle whose programs are of another was put together wrongly.
        if let Some(own) = tote_format::Arch::native().filter(|own| *own != meta.arch) {
            return Err(Failure::new(
                Code::Bundle,
                format!(
                    "bundle {}: its programs are for {}, but its stub is an {own} program: the file was put \
                     together wrongly (tote bundle picks the stub from the programs)",
                    path.display(),
                    meta.arch
                ),
            ));
        }
        Ok(Payload {
            path: path.to_path_buf(),
            file,
            layout,
            meta,
            meta_bytes,
            trailer_bytes,
        })
    }

    /// SHA-256 of the runtime stub's bytes (`0..data_offset`), read
    /// from the open file.
    pub fn stub_sha256(&self) -> Result<tote_format::Digest32> {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        let mut buf = vec![0u8; 256 << 10];
        let (mut at, end) = (0u64, self.layout.trailer.data_offset);
        while at < end {
            let n = buf.len().min((end - at) as usize);
            self.file
                .read_exact_at(&mut buf[..n], at)
                .map_err(|e| Failure::io(Code::Bundle, "reading bundle", &self.path, &e))?;
            h.update(&buf[..n]);
            at += n as u64;
        }
        Ok(tote_format::Digest32(h.finalize().into()))
    }

    /// The open bundle file.
    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn id(&self) -> BundleId {
        self.layout.trailer.bundle_id()
    }

    /// Read, verify and decode the index.
    pub fn index(&self) -> Result<Index> {
        self.index_and_bytes().map(|(index, _)| index)
    }

    /// The index, and its section's bytes (as a cache entry keeps them).
    pub fn index_and_bytes(&self) -> Result<(Index, Vec<u8>)> {
        let t = &self.layout.trailer;
        let bytes = read_at(&self.file, &self.path, t.index_offset, t.index_len)?;
        let index = self
            .layout
            .decode_index(&bytes)
            .map_err(|e| Failure::bundle(&self.path, e))?;
        self.meta
            .check_stats(&index)
            .map_err(|e| Failure::bundle(&self.path, e))?;
        Ok((index, bytes))
    }

    /// Where the blocks `order` names (in the order they will be read)
    /// come from: this file, or, for a thin bundle, its full bundle,
    /// fetched into an unnamed file in `dir` as they are needed.
    pub fn blocks(&self, index: &Index, order: &[usize], dir: &Path) -> Result<Blocks<'_>> {
        #[cfg(feature = "remote")]
        if let Some(r) = &self.layout.remote {
            let fetch = crate::remote::Fetch::start(r, index, order, dir)?;
            return Ok(Blocks {
                payload: self,
                fetch: Some(fetch),
            });
        }
        let _ = (index, order, dir);
        Ok(Blocks {
            payload: self,
            #[cfg(feature = "remote")]
            fetch: None,
        })
    }

    /// Read one block's compressed bytes into `buf`.
    fn read_block(&self, block: &BlockRef, buf: &mut Vec<u8>) -> Result<()> {
        buf.resize(block.clen as usize, 0);
        let at = self.layout.trailer.data_offset + block.offset;
        self.file
            .read_exact_at(buf, at)
            .map_err(|e| Failure::io(Code::Bundle, "reading bundle", &self.path, &e))
    }
}

fn read_at(file: &File, path: &Path, offset: u64, len: u64) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, offset)
        .map_err(|e| Failure::io(Code::Bundle, "reading bundle", path, &e))?;
    Ok(buf)
}

/// The source of an extraction's blocks (see [`Payload::blocks`]); a
/// thin bundle's fetching stops, and its threads end, when it is dropped.
pub struct Blocks<'a> {
    payload: &'a Payload,
    #[cfg(feature = "remote")]
    fetch: Option<crate::remote::Fetch>,
}

impl Blocks<'_> {
    /// One block's stored bytes into `buf`.
    pub fn read(&self, block: &BlockRef, buf: &mut Vec<u8>) -> Result<()> {
        #[cfg(feature = "remote")]
        if let Some(f) = &self.fetch {
            return f.read(block, buf);
        }
        self.payload.read_block(block, buf)
    }

    /// Bytes fetched so far (0 for a full bundle).
    pub fn fetched(&self) -> u64 {
        #[cfg(feature = "remote")]
        if let Some(f) = &self.fetch {
            return f.fetched();
        }
        0
    }
}
