//! The launch, once the bundle is read and the cache root chosen: this
//! module chooses how it goes, one module per way.
//!
//! - `mounted`: mount mode, the tree served over FUSE (where it applies);
//! - `namespaced`: the cache entry at the bundle's own paths in private
//!   namespaces, as `plan` lays them out;
//! - `relocated`: without namespaces where the host refuses them, through
//!   a `short_path`, or the bundle's own loader;
//! - `exec`: the program itself, exec'd in place or as PID 1's child.
//!
//! `context` is what they all work from. None of them calls back here.
//!
//! `TOTE_NAMESPACE` decides: `auto` (the default) relocates where the
//! namespaces cannot be made, `always` exits 116 there instead, `never`
//! relocates without trying them.

mod context;
mod exec;
mod mounted;
mod namespaced;
mod plan;
mod relocated;
mod short_path;

use std::convert::Infallible;

use tote_format::{Meta, Mode, MountKind, Relocation};

pub use context::{Launch, Policy};
pub use exec::{apply_env, argv};

use crate::error::{Code, Failure, Result};
use crate::sys::Refused;

pub fn launch(l: &Launch<'_>) -> Result<Infallible> {
    let meta = l.meta();
    if l.mode.wants_mount(meta.stats.total_size) && l.policy != Policy::Never {
        try_mount(l)?;
    }
    if !meta.needs_namespace() {
        // A relocatable tree: run it from the cache, no namespace.
        let found = l.found(&l.want())?;
        let program = exec::in_tree(&found.entry.tree(), &meta.entrypoint);
        return exec::exec(program, &l.argv, found, l.dbg);
    }
    let refused = match l.policy {
        Policy::Never => Refused(Failure::new(Code::Namespace, "TOTE_NAMESPACE=never")),
        _ => match namespaced::enter(l)? {
            Ok((found, program)) => return exec::exec(program, &l.argv, found, l.dbg),
            Err(r) => r,
        },
    };
    if l.policy == Policy::Always || meta.relocation == Relocation::None {
        return Err(needs_namespaces(meta, l.policy, refused.0));
    }
    l.dbg
        .step(|| format!("no namespaces ({}): launching relocated", refused.0.message));
    relocated::launch(l, &refused.0)
}

/// Mount mode, if it can run here; returns when it cannot and the launch
/// should extract instead.
fn try_mount(l: &Launch<'_>) -> Result<()> {
    let warm = l.mode == Mode::Auto
        && matches!(
            tote_cache::lookup(l.root, l.id, l.boot),
            tote_cache::Lookup::Complete(_)
        );
    if warm {
        l.dbg.step(|| "auto: the cache holds this bundle, extract mode".into());
        return Ok(());
    }
    l.dbg.step(|| format!("{}: mount mode", l.mode.name()));
    match mounted::launch(l) {
        Ok(never) => match never {},
        Err(mounted::Refusal::Unusable(why)) if l.mode == Mode::Auto || l.policy == Policy::Auto => {
            l.dbg
                .step(|| format!("{}: mount mode unusable ({why}), extracting", l.mode.name()));
            Ok(())
        }
        Err(mounted::Refusal::Unusable(why)) => Err(Failure::new(
            Code::Namespace,
            format!("mount mode: {why}; TOTE_MODE=extract runs the bundle by extracting it instead"),
        )),
        Err(mounted::Refusal::Failed(f)) => Err(f),
    }
}

/// The exit-116 line when the namespaces could not be made and the launch
/// cannot (or may not) do without them: the cause, and what the bundle
/// needs them for.
fn needs_namespaces(meta: &Meta, policy: Policy, refused: Failure) -> Failure {
    let what = if !meta.root.is_empty() {
        "an OCI image, whose root file system must become /".to_string()
    } else if let Some(m) = meta.mounts.iter().find(|m| m.kind == MountKind::Replace) {
        format!("its files must appear at {}", String::from_utf8_lossy(&m.target))
    } else {
        "its files must appear at their own paths".to_string()
    };
    let mut f = refused;
    f.message = match policy {
        Policy::Always => format!("{} (TOTE_NAMESPACE=always: no launch without namespaces)", f.message),
        Policy::Never => format!("TOTE_NAMESPACE=never, but this bundle needs user and mount namespaces: {what}"),
        Policy::Auto => format!("{}; this bundle cannot launch without them: {what}", f.message),
    };
    f.code = Code::Namespace;
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use tote_format::MountSpec;

    #[test]
    fn the_exit_116_line_says_what_the_namespaces_were_for() {
        let refused = || Failure::new(Code::Namespace, "unshare: EPERM: a seccomp filter refuses it");
        let image = Meta {
            root: b"rootfs".to_vec(),
            ..Meta::default()
        };
        let m = needs_namespaces(&image, Policy::Auto, refused()).message;
        assert!(m.starts_with("unshare: EPERM: a seccomp filter refuses it; "), "{m}");
        assert!(m.contains("an OCI image"), "{m}");
        let dir = Meta {
            mounts: vec![MountSpec::at_own_path(MountKind::Replace, b"/opt/tool")],
            ..Meta::default()
        };
        assert!(needs_namespaces(&dir, Policy::Auto, refused())
            .message
            .contains("appear at /opt/tool"));
        let m = needs_namespaces(&dir, Policy::Never, refused()).message;
        assert!(m.starts_with("TOTE_NAMESPACE=never, but"), "{m}");
        let m = needs_namespaces(&dir, Policy::Always, refused()).message;
        assert!(
            m.ends_with("(TOTE_NAMESPACE=always: no launch without namespaces)"),
            "{m}"
        );
    }
}
