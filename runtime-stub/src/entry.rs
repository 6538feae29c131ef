//! The cache entry a launch runs from: found complete (warm), verified
//! first (marked under another boot, or `TOTE_VERIFY=1`), or extracted now
//! (cold; one launch extracts while concurrent ones wait for it). An entry
//! is the bundle's tree as extracted, or as relocated for a short path
//! (see `relocate`): entries `<id>` and `<id>-<short name>`.

use std::path::Path;

use crate::debug::Debug;
use crate::error::{Code, Failure, Result};
use crate::extract::{self, Relocate};
use crate::payload::Payload;
use crate::{cache, threads, verify};

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

/// The complete cache entry for the bundle: trusted as it is (warm),
/// verified first (marked under another boot, or `TOTE_VERIFY=1`), or
/// extracted now (cold; one launch extracts while concurrent ones wait).
impl Cache<'_> {
    pub fn find_or_extract(&self, want: &Want<'_>) -> Result<cache::Entry> {
        let Cache {
            payload,
            root,
            boot,
            verify_all,
            dbg,
        } = *self;
        let id = want.name.as_str();
        let mut lock = None;
        loop {
            match cache::lookup(root, id, boot) {
                cache::Lookup::Complete(e) if !verify_all => {
                    dbg.step(|| format!("warm: {} is complete", e.dir.display()));
                    return Ok(e);
                }
                cache::Lookup::Complete(e) | cache::Lookup::OtherBoot(e) => {
                    let index = payload.index()?;
                    let why = if verify_all {
                        "TOTE_VERIFY"
                    } else {
                        "marked under another boot"
                    };
                    dbg.step(|| format!("verifying {} ({why})", e.dir.display()));
                    match verify::tree(&index, &e.tree(), extract::Modes::CACHE, threads(), want.relocate) {
                        Ok(()) => {
                            cache::mark(&e, boot)?;
                            dbg.step(|| format!("verified {}", e.dir.display()));
                            return Ok(e);
                        }
                        Err(m) => {
                            eprintln!(
                                "tote: cache entry {}: /{} {}; extracting it again",
                                e.dir.display(),
                                m.path,
                                m.what
                            );
                            // Its files may be hard links to objects: trust none.
                            cache::discard(root, &root.join("objects"))?;
                            cache::discard(root, &e.dir)?;
                            continue;
                        }
                    }
                }
                cache::Lookup::Missing if lock.is_none() => {
                    lock = Some(cache::lock_entry(root, id, || {
                        dbg.step(|| "waiting for another launch extracting this bundle".into())
                    })?);
                    continue; // it may be complete now
                }
                cache::Lookup::Missing => {}
            }
            return self.cold(want);
        }
    }

    /// Extract into a new cache entry (the caller holds the entry's lock).
    fn cold(&self, want: &Want<'_>) -> Result<cache::Entry> {
        let (payload, root, boot, dbg) = (self.payload, self.root, self.boot, self.dbg);
        let id = want.name.as_str();
        dbg.step(|| "cold: no complete cache entry".into());
        cache::sweep(root, dbg);
        let stale = root.join(id);
        if stale.symlink_metadata().is_ok() {
            dbg.step(|| format!("removing incomplete {}", stale.display()));
            cache::discard(root, &stale)?;
        }
        let index = payload.index()?;
        dbg.step(|| {
            format!(
                "index verified: {} entries, {} blocks",
                index.entries.len(),
                index.blocks.len()
            )
        });
        let objects_dir = root.join("objects");
        let (bytes, inodes) = extract::space_needed(&index);
        let probe = extract::Objects::probe(&objects_dir, boot);
        if self.verify_all || !probe.any {
            // Everything will be written: refuse now rather than half-way.
            cache::check_space(root, bytes, inodes)?;
        }
        let objects = extract::Objects::open(&objects_dir, boot, !self.verify_all, &probe)?;
        let entry = cache::create(root, id, boot, |tree| {
            let r = extract::extract(
                &index,
                payload,
                tree,
                extract::Modes::CACHE,
                threads(),
                Some(&objects),
                want.relocate,
            )
            .map_err(|f| name_bundle(f, &payload.path))
            .map_err(|f| {
                if f.is_no_space() {
                    Failure::new(
                        Code::Cache,
                        format!(
                            "not enough space in {}: extracting this bundle needs up to {} ({}); free space \
                             there or set TOTE_CACHE_DIR to a larger disk",
                            root.display(),
                            cache::human(bytes),
                            f.message
                        ),
                    )
                } else {
                    f
                }
            })?;
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
            Ok(())
        })?;
        dbg.step(|| format!("extracted into {}", entry.dir.display()));
        Ok(entry)
    }
}

/// Corrupt-block failures from extraction get the bundle's path in front.
pub fn name_bundle(f: Failure, bundle: &Path) -> Failure {
    if f.code == Code::Bundle {
        Failure::new(Code::Bundle, format!("bundle {}: {}", bundle.display(), f.message))
    } else {
        f
    }
}
