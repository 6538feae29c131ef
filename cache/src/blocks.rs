//! Fetched blocks: what a thin bundle's mount-mode launches fetched of its
//! full bundle, kept compressed in `<bundle-id>.blocks/`, so that the next
//! launch (or the prefetch of this one) fetches only the rest.
//!
//! The directory holds the bundle's `trailer`, `meta` and `index` (as an
//! entry does), `data` (the full bundle's data section at its own offsets,
//! a sparse file), `have` (one byte per block: 1 once the block's bytes
//! are in `data`) and the completion marker. It is made whole, then renamed
//! into place; a launch pins it as it pins an entry, and trims, `tote cache
//! ls`, `prune` and `rm` treat it as one (its size is what `data` holds).
//!
//! A block's bytes are written only after they matched the index, and its
//! `have` byte after them; readers check every block against the index
//! anyway before using it (a crash may leave a `have` byte whose bytes did
//! not reach the disk), so `have` only saves fetching a block again.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::build::{discard, Staging};
use crate::entry::{mark, marker_text, pin, Lookup, Pin, Use, MARKER};
use crate::error::{Error, Result};

const SUFFIX: &str = ".blocks";

/// `<id>.blocks`: the fetched blocks of bundle `id`.
pub fn blocks_name(id: &str) -> String {
    format!("{id}{SUFFIX}")
}

/// The bundle id of a block store's directory name.
pub fn parse_blocks_name(name: &str) -> Option<&str> {
    let id = name.strip_suffix(SUFFIX)?;
    (id.len() == 64 && id.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))).then_some(id)
}

/// An open block store, pinned for as long as this lives.
pub struct BlockStore {
    pub dir: PathBuf,
    /// The data section's bytes at their offsets (holes where not fetched).
    pub data: File,
    /// One byte per block.
    pub have: File,
    /// Made by this call (the root may want a trim).
    pub created: bool,
    _pin: Pin,
}

/// The sections a block store keeps, as the bundle holds them.
pub struct Sections<'a> {
    pub trailer: &'a [u8],
    pub meta: &'a [u8],
    pub index: &'a [u8],
}

/// Open the block store of bundle `id` under `root` (a data section of
/// `data_len` bytes in `blocks` blocks), making it if there is none; a
/// store of other sizes (tampered with) is replaced by a new one.
pub fn open_blocks(
    root: &Path,
    id: &str,
    boot: &str,
    data_len: u64,
    blocks: usize,
    sections: &Sections<'_>,
) -> Result<BlockStore> {
    let name = blocks_name(id);
    let dest = root.join(&name);
    let mut created = false;
    for _ in 0..4 {
        let (found, pin) = pin(root, &name, boot, Use::Launch);
        let found = match found {
            Lookup::Complete(e) => Some((e, false)),
            Lookup::OtherBoot(e) => Some((e, true)),
            Lookup::Missing => None,
        };
        match (found, pin) {
            (Some((e, other_boot)), Some(p)) => {
                let opened = open_file(&e.dir, "data", data_len)
                    .and_then(|d| Ok((d, open_file(&e.dir, "have", blocks as u64)?)));
                match opened {
                    Ok((data, have)) => {
                        // Its last use, and this boot's marker (the check on
                        // every read does not depend on the boot).
                        if other_boot {
                            let _ = mark(&e, boot);
                        }
                        return Ok(BlockStore {
                            dir: e.dir,
                            data,
                            have,
                            created,
                            _pin: p,
                        });
                    }
                    Err(_) => {
                        drop(p);
                        crate::remove_entry(root, &name)?;
                    }
                }
            }
            (_, pin) => {
                drop(pin);
                let staging = Staging::new(root, &name)?;
                for (file, bytes) in [
                    ("trailer", sections.trailer),
                    ("meta", sections.meta),
                    ("index", sections.index),
                ] {
                    let p = staging.dir.join(file);
                    fs::write(&p, bytes).map_err(|e| Error::io("writing", &p, &e))?;
                }
                for (file, len) in [("data", data_len), ("have", blocks as u64)] {
                    let p = staging.dir.join(file);
                    File::create(&p)
                        .and_then(|f| f.set_len(len))
                        .map_err(|e| Error::io("creating", &p, &e))?;
                }
                let marker = staging.dir.join(MARKER);
                fs::write(&marker, marker_text(boot)).map_err(|e| Error::io("writing", &marker, &e))?;
                if staging.commit(&dest)? {
                    created = true;
                } else if matches!(crate::lookup(root, &name, boot), Lookup::Missing) {
                    // Something without a marker sits there.
                    discard(root, &dest)?;
                }
            }
        }
    }
    Err(Error::new(format!(
        "{}: could not be opened or made (removed by a trim each time?)",
        dest.display()
    )))
}

fn open_file(dir: &Path, name: &str, len: u64) -> Result<File> {
    let p = dir.join(name);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(&p)
        .map_err(|e| Error::io("opening", &p, &e))?;
    let m = f.metadata().map_err(|e| Error::io("reading", &p, &e))?;
    if !m.is_file() || m.len() != len {
        return Err(Error::new(format!("{}: {} bytes, not {len}", p.display(), m.len())));
    }
    Ok(f)
}

/// `tote cache verify` of the block store at `dir`: every block its `have`
/// file claims, against the index it keeps. Err names the first bad one.
pub fn check_blocks(dir: &Path, id: &str) -> std::result::Result<usize, String> {
    let s = crate::stored(dir, id).map_err(|e| e.message)?;
    let read = |f: &str| fs::read(dir.join(f)).map_err(|e| format!("{}: {e}", dir.join(f).display()));
    let have = read("have")?;
    let data = File::open(dir.join("data")).map_err(|e| format!("{}: {e}", dir.join("data").display()))?;
    if have.len() != s.index.blocks.len() {
        return Err(format!(
            "have: {} bytes for {} blocks",
            have.len(),
            s.index.blocks.len()
        ));
    }
    let mut buf = Vec::new();
    let mut n = 0;
    for (b, block) in s.index.blocks.iter().enumerate().filter(|(b, _)| have[*b] != 0) {
        buf.resize(block.clen as usize, 0);
        data.read_exact_at(&mut buf, block.offset)
            .map_err(|e| format!("data: block {b}: {e}"))?;
        if tote_format::sha256(&buf) != block.hash {
            return Err(format!("data: block {b} does not match its SHA-256 in the index"));
        }
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sections() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        (vec![1; 144], b"meta".to_vec(), b"index".to_vec())
    }

    #[test]
    fn names() {
        let id = "ab".repeat(32);
        assert_eq!(parse_blocks_name(&blocks_name(&id)), Some(id.as_str()));
        assert_eq!(parse_blocks_name(&id), None);
        assert_eq!(parse_blocks_name("x.blocks"), None);
        assert_eq!(crate::parse_entry_name(&blocks_name(&id)), None, "not an entry");
    }

    #[test]
    fn made_once_then_reopened_and_pinned() {
        let t = tempfile::tempdir().unwrap();
        let (tr, m, i) = sections();
        let s = Sections {
            trailer: &tr,
            meta: &m,
            index: &i,
        };
        let id = "cd".repeat(32);
        let a = open_blocks(t.path(), &id, "boot", 1 << 20, 3, &s).unwrap();
        assert!(a.created);
        a.data.write_all_at(b"fetched", 4096).unwrap();
        let b = open_blocks(t.path(), &id, "other", 1 << 20, 3, &s).unwrap();
        assert!(!b.created);
        let mut got = [0u8; 7];
        b.data.read_exact_at(&mut got, 4096).unwrap();
        assert_eq!(&got, b"fetched");
        let l = crate::scan(t.path()).unwrap();
        assert_eq!(l.entries.len(), 1);
        assert!(l.entries[0].blocks && l.entries[0].in_use && l.entries[0].complete);
        assert!(!crate::remove_entry(t.path(), &blocks_name(&id)).unwrap(), "pinned");
        drop((a, b));
        // Sizes that do not fit the bundle: made anew.
        let c = open_blocks(t.path(), &id, "boot", 2 << 20, 3, &s).unwrap();
        assert!(c.created);
        assert_eq!(c.data.metadata().unwrap().len(), 2 << 20);
    }
}
