//! tote's cache: the one definition of where it lives, what an entry is,
//! how a launch finds, makes, pins and marks one, and how entries are
//! listed, trimmed, removed and verified. The runtime stub (launches, and
//! trimming after cold starts) and `tote cache` both use it.
//!
//! A root holds:
//! - `<bundle-id>/`: an entry, the bundle's tree as extracted;
//! - `<bundle-id>-<name>/`: the same bundle relocated for `/tmp/<name>`
//!   (the short path, a directory of links into it: `short_path`);
//! - `<bundle-id>.blocks/`: a thin bundle's fetched blocks (`blocks`),
//!   listed, pinned and trimmed as an entry is;
//! - `objects/`: files by content, hard-linked into entries;
//! - `mnt/`: mount mode's mount point;
//! - `.new-*`, `.tmp-*`, `.lock-*`: work in progress, and its locks.
//!
//! A trim holds an exclusive `flock` on the root directory itself.
//!
//! An entry holds `tree/`, `mnt/`, `trailer`, `meta` and `index` (the
//! bundle's own sections: its name, and everything a full check needs) and `ok`, the
//! completion marker, written last; the marker's mtime is the entry's last
//! use. A launch pins its entry with a shared `flock` on the entry's
//! directory, which the program it execs inherits; nothing removes an
//! entry whose directory it cannot lock exclusively.

pub mod beneath;
mod blocks;
mod build;
mod entry;
mod error;
mod limits;
mod log;
pub mod par;
mod relocate;
mod root;
mod scan;
pub mod short_path;
mod stored;
mod trim;
pub mod trust;
pub mod unpack;
mod verify;

pub use blocks::{blocks_name, check_blocks, open_blocks, parse_blocks_name, BlockStore, Sections};
pub use build::{check_space, create, discard, human, lock_entry, remove_tree, sweep, ExtractLock, Staging};
pub use entry::{boot_id, entry_name, last_used, lookup, mark, parse_entry_name, pin, Entry, Lookup, Pin, Use, MARKER};
pub use error::{describe, Error, Result};
pub use limits::{parse_age, parse_size, Limits};
pub use log::{Log, Quiet};
pub use relocate::{Relocate, SHORT_DIR};
pub use root::{candidates, choose_root, existing_root, usable, Env};
pub use scan::{scan, Listed, Listing};
pub use stored::{check_entry, stored, Checked, Stored};
pub use trim::{
    being_removed, plan, remove_entry, remove_entry_in_use, remove_unlinked_objects, trim, Removal, TrimReport, Why,
};
pub use verify::{hash_file, tree as verify_tree, Mismatch, Modes};

/// The object store's directory under a root.
pub const OBJECTS: &str = "objects";

/// The file in the object store that names the boot its objects were
/// written under (see the stub's `tree::objects`), and how: [`objects_stamp`].
pub const OBJECTS_BOOT: &str = ".boot";

/// What `objects/.boot` holds for a store written under `boot` by stubs
/// that publish only files whose content they checked against its name.
/// A store without it (an older stub's, or another boot's) is emptied
/// rather than trusted.
pub fn objects_stamp(boot: &str) -> String {
    format!("{boot}\nchecked\n")
}

/// An object's name: its content's SHA-256 in hex; for a relocated file's
/// content, a hash of its original content's and of the rewrite (which
/// `tote cache verify` cannot check on its own) and `r`; then `x` if
/// executable (another mode, so another inode).
pub fn object_name(hash: &tote_format::Digest32, relocated: bool, executable: bool) -> String {
    let mut n = hash.to_hex();
    if relocated {
        n.push('r');
    }
    if executable {
        n.push('x');
    }
    n
}

/// Is `name` an object's name? Some(true) for a relocated file's (whose
/// content is not its name's hash).
pub fn is_object_name(name: &[u8]) -> Option<bool> {
    let name = name.strip_suffix(b"x").unwrap_or(name);
    let (hex, relocated) = match name.strip_suffix(b"r") {
        Some(hex) => (hex, true),
        None => (name, false),
    };
    (hex.len() == 64 && hex.iter().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))).then_some(relocated)
}
