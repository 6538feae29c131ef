//! A relocated tree (see the stub's `launch::relocated`): `store_dir` rewritten to a
//! path of the same length at every store reference the index lists. How
//! extraction writes it, how verification reads it back, and under which
//! object-store names its rewritten files live.

use tote_format::{Digest32, Index};

/// Where relocated launches keep their short paths: `/tmp/<short>`, a
/// directory of links into the entry's store directory (`short_path`).
pub const SHORT_DIR: &str = "/tmp";

/// A relocated extraction: `store_dir` (`/nix/store`) becomes `to` (a
/// path of the same length, e.g. `/tmp/abcde`) at every reference.
#[derive(Clone, Copy)]
pub struct Relocate<'a> {
    pub store_dir: &'a [u8],
    pub to: &'a [u8],
}

impl<'a> Relocate<'a> {
    /// The rewrite back: what it wrote becomes the store directory again.
    pub fn undo(&self) -> Relocate<'a> {
        Relocate {
            store_dir: self.to,
            to: self.store_dir,
        }
    }

    /// Rewrite the references among `refs` (stream offsets) that fall in
    /// `buf`, which holds stream bytes from `start`. Each must name the
    /// store directory (the index was written so): a difference means a
    /// corrupt bundle.
    pub fn patch(&self, buf: &mut [u8], start: u64, refs: &[u64]) -> std::result::Result<(), u64> {
        let n = self.store_dir.len() as u64;
        let end = start + buf.len() as u64;
        for &r in refs {
            for k in r.max(start)..(r + n).min(end) {
                let (i, j) = ((k - start) as usize, (k - r) as usize);
                if buf[i] != self.store_dir[j] {
                    return Err(r);
                }
                buf[i] = self.to[j];
            }
        }
        Ok(())
    }

    /// The references that touch stream bytes `from..to`.
    pub fn refs_touching<'i>(&self, index: &'i Index, from: u64, to: u64) -> &'i [u64] {
        index.refs_in(from.saturating_sub(self.store_dir.len() as u64 - 1), to)
    }

    /// A symlink target as a relocated launch sees it.
    pub fn target(&self, target: &[u8]) -> Vec<u8> {
        let mut t = target.to_vec();
        tote_format::refs::rewrite(&mut t, self.store_dir, self.to);
        t
    }

    /// The object-store name of a rewritten content: its own, never the
    /// original content's.
    pub fn object(&self, hash: &Digest32) -> Digest32 {
        let mut key = b"tote relocated object\0".to_vec();
        key.extend_from_slice(&hash.0);
        key.extend_from_slice(self.store_dir);
        key.push(0);
        key.extend_from_slice(self.to);
        tote_format::sha256(&key)
    }
}
