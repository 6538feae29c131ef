//! A bundle's tree written into a new directory with tote's own decoder
//! (`tote extract`, and `tote image` of a bundle file; here beside
//! `beneath` so that the fuzz targets reach it too): every block's SHA-256
//! checked before it is decoded and every file's once written; each file
//! written block by block, so memory stays at a few decoded blocks
//! whatever its size; every entry made through its parent directory's
//! descriptor, never through a link (`beneath`).

use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fchmod, mkdirat, utimensat, Mode, UtimensatFlags};
use sha2::{Digest, Sha256};
use tote_format::{Decoded, EntryKind, Index};

use crate::beneath::{self, Beneath, Parents};
use crate::error::{Error, Result};

/// Write `index`'s tree, its bytes in `data` (the data section), into
/// `root`, an empty directory. Modes 0755/0644 (directories 0755); with
/// `times`, times 1 second after the epoch, as `TOTE_EXTRACT` writes them.
pub fn write_tree(index: &Index, data: &[u8], root: &Path, times: bool) -> Result<()> {
    let tree = Beneath::open(root).map_err(|e| Error::sys("opening", root, e))?;
    let fail = |path: &[u8], step: &str, e: Errno| {
        let mut err = Error::sys(step, &root.join(OsStr::from_bytes(path)), e);
        if beneath::is_collision(e) {
            err.message.push_str(&format!(": {}", beneath::COLLISION));
        }
        err
    };
    let mut parents = Parents::default();
    // Blocks decoded lately, for files (and bases) that share them.
    let mut decoded = Decoded::default();
    for e in &index.entries {
        let path = e.path.as_slice();
        let (dir, name) = parents.of(&tree, path).map_err(|err| fail(path, "reaching", err))?;
        match &e.kind {
            EntryKind::Dir => {
                mkdirat(dir, name, Mode::from_bits_truncate(0o755)).map_err(|err| fail(path, "creating", err))?
            }
            EntryKind::Symlink { target } => {
                nix::unistd::symlinkat(target.as_slice(), dir, name).map_err(|err| fail(path, "creating", err))?
            }
            EntryKind::File {
                executable,
                size,
                offset,
                hash,
            } => {
                let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
                let f = File::from(
                    openat(dir, name, flags, Mode::from_bits_truncate(0o600))
                        .map_err(|err| fail(path, "creating", err))?,
                );
                let mut h = Sha256::new();
                for b in index.blocks_for(*offset, *size) {
                    let raw = decoded.block(index, data, b).map_err(|e| Error::new(e.to_string()))?;
                    let block = &index.blocks[b];
                    let part = block.overlap(*offset, offset + size);
                    let at = block.raw_offset + part.start as u64 - offset;
                    h.update(&raw[part.clone()]);
                    f.write_all_at(&raw[part], at)
                        .map_err(|e| Error::io("writing", &tree.path(path), &e))?;
                }
                if h.finalize().as_slice() != hash.0 {
                    return Err(Error::new(format!(
                        "content of /{} does not match its SHA-256",
                        String::from_utf8_lossy(path)
                    )));
                }
                let mode = if *executable { 0o755 } else { 0o644 };
                fchmod(&f, Mode::from_bits_truncate(mode)).map_err(|err| fail(path, "setting the mode of", err))?;
            }
        }
    }
    // mtime and atime 1 second after the epoch, as the stub extracts (the
    // Nix store's time); directories last, once their contents are written.
    let one = nix::sys::time::TimeSpec::new(1, 0);
    for e in index.entries.iter().rev().filter(|_| times) {
        let path = e.path.as_slice();
        let (dir, name) = parents.of(&tree, path).map_err(|err| fail(path, "reaching", err))?;
        utimensat(dir, name, &one, &one, UtimensatFlags::NoFollowSymlink)
            .map_err(|err| fail(path, "setting the time of", err))?;
    }
    Ok(())
}
