//! What an entry keeps of its bundle: the trailer, metadata and index
//! sections exactly as the bundle held them (`trailer`, `meta`, `index`
//! beside `tree/`). The trailer's hashes authenticate the other two, and
//! derive the bundle id the entry is named after, so `tote cache verify`
//! checks a tree in full without the bundle at hand.

use std::fs;
use std::path::Path;

use tote_format::{Index, Layout, Meta, TRAILER_LEN};

use crate::error::{Error, Result};
use crate::relocate::Relocate;
use crate::verify::{self, Modes};

/// An entry's bundle sections, verified.
pub struct Stored {
    pub layout: Layout,
    pub meta: Meta,
    pub index: Index,
}

/// Read and verify the sections the entry at `dir` keeps; `id` is the
/// bundle id its name carries.
pub fn stored(dir: &Path, id: &str) -> Result<Stored> {
    let read = |f: &str| {
        let p = dir.join(f);
        fs::read(&p).map_err(|e| Error::io("reading", &p, &e))
    };
    let bad = |what: String| Error::new(format!("{}: {what}", dir.display()));
    let trailer = read("trailer")?;
    if trailer.len() != TRAILER_LEN {
        return Err(bad(format!("trailer is {} bytes, not {TRAILER_LEN}", trailer.len())));
    }
    // The bundle's length, as the trailer implies it: the index ends where
    // the trailer starts.
    let field = |at: usize| u64::from_le_bytes(trailer[at..at + 8].try_into().expect("8 bytes"));
    let file_len = field(24)
        .checked_add(field(32))
        .and_then(|n| n.checked_add(TRAILER_LEN as u64))
        .ok_or_else(|| bad("trailer: offsets overflow".into()))?;
    let layout = tote_format::Trailer::decode(&trailer, file_len).map_err(|e| bad(format!("trailer: {e}")))?;
    let derived = layout.trailer.bundle_id().to_hex();
    if derived != id {
        return Err(bad(format!("its sections belong to bundle {derived}, not {id}")));
    }
    let meta = layout
        .decode_meta(&read("meta")?)
        .map_err(|e| bad(format!("meta: {e}")))?;
    let index = layout
        .decode_index(&read("index")?)
        .map_err(|e| bad(format!("index: {e}")))?;
    meta.check_stats(&index).map_err(|e| bad(e.to_string()))?;
    Ok(Stored { layout, meta, index })
}

/// How checking one entry in full came out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    Intact,
    /// The first difference: a path in the tree and what is wrong with it.
    Damaged(String),
    /// It keeps no sections to check against (made by an older tote, or
    /// they are unreadable): why.
    Unverifiable(String),
}

/// `TOTE_VERIFY`'s full check of the entry `name` at `dir`: every path,
/// kind, mode, time, size and symlink target, and every file's SHA-256,
/// against its bundle's index (relocated entries as they were rewritten).
pub fn check_entry(dir: &Path, name: &str, threads: usize) -> Checked {
    let Some((id, short)) = crate::parse_entry_name(name) else {
        return Checked::Unverifiable("not an entry name".into());
    };
    if !dir.join("trailer").exists() {
        return Checked::Unverifiable("it keeps no copy of its bundle's index (made by an older tote)".into());
    }
    let s = match stored(dir, id) {
        Ok(s) => s,
        Err(e) => return Checked::Damaged(e.message),
    };
    let to = short.map(|s| format!("{}/{s}", crate::relocate::SHORT_DIR));
    let relocate = match (&to, s.meta.store_dir()) {
        (Some(to), Some(store_dir)) if to.len() == store_dir.len() => Some(Relocate {
            store_dir,
            to: to.as_bytes(),
        }),
        (Some(_), _) => {
            return Checked::Damaged(format!("{}: relocated, but not for its bundle's store", dir.display()))
        }
        (None, _) => None,
    };
    match verify::tree(&s.index, &dir.join("tree"), Modes::CACHE, threads, relocate) {
        Ok(()) => Checked::Intact,
        Err(m) => Checked::Damaged(format!("/{} {}", m.path, m.what)),
    }
}
