//! The cache entry a launch runs from: found complete (warm), verified
//! first (marked under another boot, or `TOTE_VERIFY=1`), or extracted now
//! (cold; one launch extracts while concurrent ones wait for it). An entry
//! is the bundle's tree as extracted, or as relocated for a short path
//! (see `launch::relocated`): entries `<id>` and `<id>-<short name>`. The protocol
//! itself (markers, pins, locks, staging) is the `tote-cache` crate's.
//!
//! The entry comes back pinned: nothing removes it while this launch, or
//! the program it execs, holds the pin.

use std::path::Path;

use tote_cache::{Entry, Limits, Lookup, Modes, Pin, Relocate};

use super::extract::{self, name_bundle};
use super::objects::Objects;
use crate::debug::Debug;
use crate::error::{Code, Failure, Result};
use crate::payload::Payload;
use crate::sys;

/// A bundle's entries under one cache root, as of this boot.
pub struct Cache<'a> {
    pub payload: &'a Payload,
    pub root: &'a Path,
    pub boot: &'a str,
    /// `TOTE_VERIFY=1`: check even a complete entry in full.
    pub verify_all: bool,
    pub dbg: &'a Debug,
}

/// Which entry of the bundle a launch wants.
pub struct Want<'a> {
    /// The entry's directory name under the root.
    pub name: String,
    /// How its tree is rewritten, for a relocated launch.
    pub relocate: Option<Relocate<'a>>,
}

/// An entry ready to run from.
pub struct Found {
    pub entry: Entry,
    pub pin: Pin,
    /// This launch extracted it (a cold start: trimming may follow).
    pub extracted: bool,
}

impl Cache<'_> {
    /// The complete entry for `want`, pinned: trusted as it is (warm),
    /// verified first (marked under another boot, or `TOTE_VERIFY=1`), or
    /// extracted now (cold; one launch extracts while concurrent ones wait).
    pub fn find_or_extract(&self, want: &Want<'_>) -> Result<Found> {
        let (root, boot, dbg) = (self.root, self.boot, self.dbg);
        let name = want.name.as_str();
        let mut lock = None;
        let mut extracted = false;
        loop {
            match tote_cache::pin(root, name, boot, tote_cache::Use::Launch) {
                (Lookup::Complete(entry), Some(pin)) if !self.verify_all || extracted => {
                    dbg.step(|| format!("warm: {} is complete", entry.dir.display()));
                    return Ok(Found { entry, pin, extracted });
                }
                (Lookup::Complete(e) | Lookup::OtherBoot(e), Some(pin)) => {
                    if self.verified(&e, want)? {
                        tote_cache::mark(&e, boot)?;
                        dbg.step(|| format!("verified {}", e.dir.display()));
                        return Ok(Found {
                            entry: e,
                            pin,
                            extracted,
                        });
                    }
                    // Its files may be hard links to objects: trust none.
                    drop(pin);
                    tote_cache::discard(root, &root.join(tote_cache::OBJECTS))?;
                    tote_cache::discard(root, &e.dir)?;
                    continue;
                }
                _ if lock.is_none() => {
                    lock = Some(tote_cache::lock_entry(root, name, || {
                        dbg.step(|| "waiting for another launch extracting this bundle".into())
                    })?);
                    continue; // it may be complete now
                }
                _ if extracted => {
                    return Err(Failure::new(
                        Code::Cache,
                        format!(
                            "cache entry {} vanished as it was made; launch again",
                            root.join(name).display()
                        ),
                    ))
                }
                _ => {}
            }
            self.cold(want)?;
            extracted = true;
        }
    }

    /// The full check of an entry against the bundle's index: true if
    /// intact; false (said on stderr) if not.
    fn verified(&self, e: &Entry, want: &Want<'_>) -> Result<bool> {
        let index = self.payload.index()?;
        let why = if self.verify_all {
            "TOTE_VERIFY"
        } else {
            "marked under another boot"
        };
        self.dbg.step(|| format!("verifying {} ({why})", e.dir.display()));
        match tote_cache::verify_tree(&index, &e.tree(), Modes::CACHE, sys::cpus(), want.relocate) {
            Ok(()) => Ok(true),
            Err(m) => {
                let line = format!(
                    "cache entry {}: /{} {}; extracting it again",
                    e.dir.display(),
                    m.path,
                    m.what
                );
                eprintln!("tote: {}", tote_format::printable(line.as_bytes()));
                Ok(false)
            }
        }
    }

    /// Extract into a new cache entry (the caller holds the entry's lock).
    fn cold(&self, want: &Want<'_>) -> Result<()> {
        let (payload, root, boot, dbg) = (self.payload, self.root, self.boot, self.dbg);
        let name = want.name.as_str();
        dbg.step(|| "cold: no complete cache entry".into());
        tote_cache::sweep(root, dbg);
        let stale = root.join(name);
        if stale.symlink_metadata().is_ok() {
            dbg.step(|| format!("removing incomplete {}", stale.display()));
            tote_cache::discard(root, &stale)?;
        }
        let (index, index_bytes) = payload.index_and_bytes()?;
        dbg.step(|| {
            format!(
                "index verified: {} entries, {} blocks",
                index.entries.len(),
                index.blocks.len()
            )
        });
        let objects_dir = root.join(tote_cache::OBJECTS);
        let (bytes, inodes) = extract::space_needed(&index);
        let probe = Objects::probe(&objects_dir, boot);
        if self.verify_all || !probe.any {
            // Everything will be written: refuse now rather than half-way,
            // after making what room unused entries take.
            if tote_cache::check_space(root, bytes, inodes).is_err() {
                self.make_room(bytes);
                tote_cache::check_space(root, bytes, inodes)?;
            }
        }
        let objects = Objects::open(&objects_dir, boot, !self.verify_all, &probe)?;
        let files: [(&str, &[u8]); 3] = [
            ("meta", &payload.meta_bytes),
            ("index", &index_bytes),
            ("trailer", &payload.trailer_bytes),
        ];
        let entry = tote_cache::create(root, name, boot, &files, |tree| {
            let r = extract::extract(
                &index,
                payload,
                tree,
                Modes::CACHE,
                sys::cpus(),
                Some(&objects),
                want.relocate,
            )
            .map_err(|f| name_bundle(f, &payload.path))?;
            dbg.step(|| {
                format!(
                    "extracted: {} files ({} bytes) written from {} of {} blocks, {} files linked from the object store",
                    r.written,
                    r.bytes,
                    r.blocks,
                    index.blocks.len(),
                    r.linked
                )
            });
            if r.fetched > 0 || r.rebuilt > 0 {
                dbg.step(|| {
                    format!(
                        "fetched {} bytes of blocks (a thin bundle); {} base blocks rebuilt from cached files",
                        r.fetched, r.rebuilt
                    )
                });
            }
            Ok::<(), Failure>(())
        })
        .map_err(|f| no_space(f, root, bytes))?;
        dbg.step(|| format!("extracted into {}", entry.dir.display()));
        Ok(())
    }

    /// Short of space: remove unused entries, least recently used first,
    /// until the file system has `bytes` free (or nothing more can go).
    fn make_room(&self, bytes: u64) {
        let limits = Limits {
            min_free: Some(bytes),
            ..Limits::none()
        };
        match tote_cache::trim(self.root, &limits, false, self.dbg) {
            Ok(r) => self
                .dbg
                .step(|| format!("short of space: removed {} unused entries", r.removed.len())),
            Err(e) => self.dbg.step(|| format!("short of space: trimming failed ({e})")),
        }
    }
}

/// Out of space half-way: one line naming the directory and what it needs.
fn no_space(f: Failure, root: &Path, bytes: u64) -> Failure {
    if !f.is_no_space() {
        return f;
    }
    Failure::new(
        Code::Cache,
        format!(
            "not enough space in {}: extracting this bundle needs up to {} ({}); free space there or set \
             TOTE_CACHE_DIR to a larger disk",
            root.display(),
            tote_cache::human(bytes),
            f.message
        ),
    )
}
