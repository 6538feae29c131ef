//! The bundle's own bytes: trailer and metadata read with two small reads
//! (all a warm start needs); the whole file mapped only to extract.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use tote_format::{BundleId, Layout, Meta, Trailer, TRAILER_LEN};

use crate::error::{Code, Failure, Result};

pub struct Payload {
    pub path: PathBuf,
    file: File,
    pub layout: Layout,
    pub meta: Meta,
}

impl Payload {
    pub fn open(path: &Path) -> Result<Payload> {
        let file = File::open(path).map_err(|e| Failure::io(Code::Bundle, "opening bundle", path, &e))?;
        let len = file
            .metadata()
            .map_err(|e| Failure::io(Code::Bundle, "reading bundle", path, &e))?
            .len();
        let tail_len = len.min(TRAILER_LEN as u64);
        let mut tail = vec![0u8; tail_len as usize];
        file.read_exact_at(&mut tail, len - tail_len)
            .map_err(|e| Failure::io(Code::Bundle, "reading bundle", path, &e))?;
        let layout = Trailer::decode(&tail, len).map_err(|e| Failure::bundle(path, e))?;
        let t = &layout.trailer;
        let mut meta_bytes = vec![0u8; t.meta_len as usize];
        file.read_exact_at(&mut meta_bytes, t.meta_offset)
            .map_err(|e| Failure::io(Code::Bundle, "reading bundle", path, &e))?;
        if tote_format::sha256(&meta_bytes) != t.meta_hash {
            return Err(Failure::bundle(
                path,
                tote_format::FormatError::HashMismatch {
                    what: "metadata".into(),
                },
            ));
        }
        let meta = Meta::decode(&meta_bytes).map_err(|e| Failure::bundle(path, e))?;
        Ok(Payload {
            path: path.to_path_buf(),
            file,
            layout,
            meta,
        })
    }

    pub fn id(&self) -> BundleId {
        self.layout.trailer.bundle_id()
    }

    /// Map the whole bundle read-only.
    pub fn map(&self) -> Result<memmap2::Mmap> {
        crate::sys::map_readonly(&self.file).map_err(|e| Failure::io(Code::Bundle, "mapping bundle", &self.path, &e))
    }
}
