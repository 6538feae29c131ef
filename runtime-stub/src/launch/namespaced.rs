//! The usual launch: the cache entry's tree made to appear at the bundle's
//! own paths in a private user and mount namespace (`plan`), then the exec.

use tote_format::Relocation;

use super::context::{working_dir, Launch, Policy};
use super::plan;
use crate::error::Result;
use crate::sys::{self, Refused};
use crate::tree::Found;

/// The bundle's view in namespaces: the entry and the program to exec, or
/// why the namespaces could not be made (this process unchanged).
pub fn enter(l: &Launch<'_>) -> Result<std::result::Result<(Found, Vec<u8>), Refused>> {
    let meta = l.meta();
    let privileged = sys::has_cap_sys_admin();
    // On a cold start where relocation could follow, find out first, so as
    // not to extract a tree the launch cannot use.
    let cold = !matches!(
        tote_cache::lookup(l.root, l.id, l.boot),
        tote_cache::Lookup::Complete(_) | tote_cache::Lookup::OtherBoot(_)
    );
    if cold && l.policy == Policy::Auto && meta.relocation != Relocation::None {
        if let Err(r) = sys::probe(privileged, l.uid, l.gid, l.dbg) {
            return Ok(Err(r));
        }
    }
    let found = l.found(&l.want())?;
    let cwd = working_dir()?;
    let (tree, scratch) = (found.entry.tree(), found.entry.mnt());
    let mut req = plan::view(meta, &tree, &scratch, &cwd, l.uid, l.gid);
    req.privileged = privileged;
    let steps = plan::plan(&req, &plan::RealHost);
    l.dbg.step(|| format!("planned {} steps", steps.len()));
    Ok(sys::enter(&steps, l.dbg).map(|_| (found, meta.entrypoint.clone())))
}
