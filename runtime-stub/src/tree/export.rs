//! `TOTE_EXTRACT=DIR`: the bundle's tree written into a directory of the
//! caller's (new, or empty), with the caller's modes, nothing run.

use std::path::Path;

use super::extract::{self, name_bundle};
use crate::debug::Debug;
use crate::error::{Code, Failure, Result};
use crate::payload::Payload;
use crate::sys;

/// The bundle's tree into `dir` (new, or an empty directory), atomically.
pub fn into_dir(payload: &Payload, dir: &Path, dbg: &Debug) -> Result<()> {
    let usage = |m: &str| Failure::new(Code::Usage, format!("TOTE_EXTRACT={}: {m}", dir.display()));
    if let Ok(mut rd) = std::fs::read_dir(dir) {
        if rd.next().is_some() {
            return Err(usage("the directory is not empty"));
        }
    } else if dir.symlink_metadata().is_ok() {
        return Err(usage("exists and is not a directory"));
    }
    let parent = dir
        .parent()
        .filter(|p| p.is_dir())
        .ok_or_else(|| usage("its parent directory does not exist"))?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let staging = tote_cache::Staging::new(parent, &name)?;
    let index = payload.index()?;
    extract::extract(
        &index,
        payload,
        &staging.dir,
        tote_cache::Modes::USER,
        sys::cpus(),
        None,
        None,
    )
    .map_err(|f| name_bundle(f, &payload.path))?;
    if !staging.commit(dir)? {
        return Err(usage("the directory was filled by someone else meanwhile"));
    }
    dbg.step(|| format!("extracted {} entries into {}", index.entries.len(), dir.display()));
    Ok(())
}
