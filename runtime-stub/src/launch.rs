//! The launch, once the bundle is read and the cache root chosen: mount mode
//! where it applies; else the cache entry, and the namespaces the bundle's
//! view needs; where the host refuses those, a launch without namespaces
//! (`relocate`); then the exec, in place or as PID 1's child.
//!
//! `TOTE_NAMESPACE` decides: `auto` (the default) relocates where the
//! namespaces cannot be made, `always` exits 116 there instead, `never`
//! relocates without trying them.

use std::convert::Infallible;
use std::path::Path;

use tote_format::{Meta, Mode, MountKind, Relocation};

use crate::debug::Debug;
use crate::entry::{Cache, Found, Want};
use crate::error::{Code, Failure, Result};
use crate::payload::Payload;
use crate::sys::Refused;
use crate::{mount, plan, relocate, sys};
use tote_cache::Relocate;

/// `TOTE_NAMESPACE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Never,
    Auto,
    Always,
}

impl Policy {
    pub fn parse(s: &str) -> Option<Policy> {
        match s {
            "never" => Some(Policy::Never),
            "auto" => Some(Policy::Auto),
            "always" => Some(Policy::Always),
            _ => None,
        }
    }
}

/// Everything a launch works from.
pub struct Launch<'a> {
    pub payload: &'a Payload,
    pub root: &'a Path,
    pub id: &'a str,
    pub boot: &'a str,
    pub uid: u32,
    pub gid: u32,
    pub argv: Vec<Vec<u8>>,
    pub mode: Mode,
    pub policy: Policy,
    pub verify_all: bool,
    /// What the cache root is trimmed to after a cold start.
    pub limits: tote_cache::Limits,
    pub dbg: &'a Debug,
}

impl Launch<'_> {
    fn meta(&self) -> &Meta {
        &self.payload.meta
    }

    fn cache(&self) -> Cache<'_> {
        Cache {
            payload: self.payload,
            root: self.root,
            boot: self.boot,
            verify_all: self.verify_all,
            dbg: self.dbg,
        }
    }

    /// The entry for `want`, pinned; after a cold start, the cache root is
    /// trimmed to its limits by a process of its own, off the start path
    /// (and before any namespace, whose view may hide the root).
    fn found(&self, want: &Want<'_>) -> Result<Found> {
        let found = self.cache().find_or_extract(want)?;
        if found.extracted {
            trim_later(self);
        }
        Ok(found)
    }

    fn want(&self) -> Want<'static> {
        Want {
            name: self.id.to_string(),
            relocate: None,
        }
    }
}

pub fn launch(l: &Launch<'_>) -> Result<Infallible> {
    let meta = l.meta();
    if l.mode.wants_mount(meta.stats.total_size) && l.policy != Policy::Never {
        try_mount(l)?;
    }
    if !meta.needs_namespace() {
        // A relocatable tree: run it from the cache, no namespace.
        let found = l.found(&l.want())?;
        let program = crate::in_tree(&found.entry.tree(), &meta.entrypoint);
        return exec(l, program, &l.argv, found);
    }
    let refused = match l.policy {
        Policy::Never => Refused(Failure::new(Code::Namespace, "TOTE_NAMESPACE=never")),
        _ => match namespaced(l)? {
            Ok((found, program)) => return exec(l, program, &l.argv, found),
            Err(r) => r,
        },
    };
    if l.policy == Policy::Always || meta.relocation == Relocation::None {
        return Err(needs_namespaces(meta, l.policy, refused.0));
    }
    l.dbg
        .step(|| format!("no namespaces ({}): launching relocated", refused.0.message));
    relocated(l, &refused.0)
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
    match mount::launch(l.payload, l.root, &l.argv, l.dbg) {
        Ok(never) => match never {},
        Err(mount::Refusal::Unusable(why)) if l.mode == Mode::Auto || l.policy == Policy::Auto => {
            l.dbg
                .step(|| format!("{}: mount mode unusable ({why}), extracting", l.mode.name()));
            Ok(())
        }
        Err(mount::Refusal::Unusable(why)) => Err(Failure::new(
            Code::Namespace,
            format!("mount mode: {why}; TOTE_MODE=extract runs the bundle by extracting it instead"),
        )),
        Err(mount::Refusal::Failed(f)) => Err(f),
    }
}

/// The bundle's view in namespaces: the entry and the program to exec, or
/// why the namespaces could not be made (this process unchanged).
fn namespaced(l: &Launch<'_>) -> Result<std::result::Result<(Found, Vec<u8>), Refused>> {
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
    let cwd = crate::working_dir()?;
    let (tree, scratch) = (found.entry.tree(), found.entry.mnt());
    let mut req = view(meta, &tree, &scratch, &cwd, l.uid, l.gid);
    req.privileged = privileged;
    let steps = plan::plan(&req, &plan::RealHost);
    l.dbg.step(|| format!("planned {} steps", steps.len()));
    Ok(sys::enter(&steps, l.dbg).map(|_| (found, meta.entrypoint.clone())))
}

/// The launch view of the bundle's tree (extracted, or mounted) at `tree`.
pub fn view<'a>(meta: &Meta, tree: &Path, scratch: &'a Path, cwd: &'a Path, uid: u32, gid: u32) -> plan::Request<'a> {
    plan::Request {
        privileged: false,
        entered: false,
        staging: None,
        uid,
        gid,
        scratch,
        base: (!meta.root.is_empty()).then(|| tree.join(plan::path_of(&meta.root))),
        mounts: meta
            .mounts
            .iter()
            .map(|m| plan::Mount {
                provide: match m.kind {
                    MountKind::Layer => plan::Provide::Layer,
                    MountKind::Replace => plan::Provide::Replace,
                    MountKind::Host => plan::Provide::Host,
                },
                source: match m.kind {
                    MountKind::Host => plan::path_of(&m.source),
                    _ => tree.join(plan::path_of(&m.source)),
                },
                target: plan::path_of(&m.target),
            })
            .collect(),
        cwd,
        workdir: (!meta.workdir.is_empty()).then(|| plan::path_of(&meta.workdir)),
    }
}

/// Launch without namespaces: a store bundle from a relocated entry through
/// its short path, a host ELF program through its own loader.
fn relocated(l: &Launch<'_>, refused: &Failure) -> Result<Infallible> {
    let meta = l.meta();
    match &meta.relocation {
        Relocation::Store { unrewritable } => {
            let (Some(store), [mount]) = (meta.store_dir(), meta.mounts.as_slice()) else {
                return Err(refused_too(refused, "the bundle names no store directory"));
            };
            let candidates = relocate::candidates(l.uid, l.root, l.id, store.len());
            let tree_of = |short: &[u8]| {
                l.root
                    .join(entry_name(l.id, short))
                    .join("tree")
                    .join(plan::path_of(&mount.source))
            };
            let short = relocate::claim(&candidates, l.uid, tree_of, l.dbg).map_err(|f| relocate::both(refused, f))?;
            let want = Want {
                name: entry_name(l.id, &short),
                relocate: Some(Relocate {
                    store_dir: store,
                    to: &short,
                }),
            };
            let found = l.found(&want)?;
            // Pinned now: a removal that raced with it may have taken the
            // short path with the entry.
            relocate::claim(std::slice::from_ref(&short), l.uid, tree_of, l.dbg)
                .map_err(|f| relocate::both(refused, f))?;
            for p in unrewritable {
                l.dbg.step(|| {
                    format!(
                        "relocated: /{} holds store references inside compressed data, left as they are",
                        String::from_utf8_lossy(p)
                    )
                });
            }
            let program = [&short[..], &meta.entrypoint[store.len()..]].concat();
            let mut argv = l.argv.clone();
            argv[0] = program.clone();
            exec(l, program, &argv, found)
        }
        Relocation::Loader {
            interpreter,
            library_path,
        } => {
            let found = l.found(&l.want())?;
            let (program, argv) = relocate::loader_exec(
                &found.entry.tree(),
                &meta.entrypoint,
                interpreter,
                library_path,
                &l.argv[1..],
            )?;
            l.dbg.step(|| "relocated: through the bundle's own loader".to_string());
            exec(l, program, &argv, found)
        }
        Relocation::None => Err(refused_too(refused, "the bundle cannot relocate")),
    }
}

/// Trim the cache root to the limits, in a process of its own that the
/// program never sees (none with both limits `off`). That process runs a
/// copy of the stub from memory (`sys::exec_self_copy`): it must not keep
/// the bundle file busy, which would make writing a new version over it
/// fail (`ETXTBSY`) while the trim runs, and the launch goes on only once
/// that copy runs. Where it cannot run, the forked process trims itself.
fn trim_later(l: &Launch<'_>) {
    let limits = l.limits;
    if limits == tote_cache::Limits::none() {
        return;
    }
    let root = l.root.to_path_buf();
    let argv = trim_argv(&root, &limits);
    let stub_len = l.payload.layout.trailer.data_offset;
    let spawned = sys::spawn_detached(move |started| {
        let _ = sys::exec_self_copy(stub_len, &argv);
        // The launch waits no longer; the bundle stays busy while this
        // process trims.
        drop(started);
        let _ = tote_cache::trim(&root, &limits, false, &tote_cache::Quiet);
    });
    l.dbg.step(|| {
        if spawned {
            "cold start: trimming the cache root in the background".to_string()
        } else {
            "cold start: could not start the trim".to_string()
        }
    });
}

/// `argv[0]` of the stub copy that trims a root.
const TRIM: &str = "tote: trim";

/// `tote: trim ROOT MAX_BYTES|off MAX_AGE_SECONDS|off`.
fn trim_argv(root: &Path, limits: &tote_cache::Limits) -> Vec<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    let num = |n: Option<u64>| n.map_or_else(|| "off".to_string(), |n| n.to_string());
    [
        TRIM.as_bytes().to_vec(),
        root.as_os_str().as_bytes().to_vec(),
        num(limits.max_size).into_bytes(),
        num(limits.max_age.map(|d| d.as_secs())).into_bytes(),
    ]
    .into_iter()
    .filter_map(|a| std::ffi::CString::new(a).ok())
    .collect()
}

/// If this process is a stub copy started to trim (`trim_argv`): trim, and
/// return the exit code.
pub fn trim_job(args: &[std::ffi::OsString]) -> Option<i32> {
    let [first, root, size, age] = args else { return None };
    if first != TRIM {
        return None;
    }
    let size = tote_cache::parse_size(size.to_str()?).ok()?;
    let age = match age.to_str()? {
        "off" => None,
        secs => Some(std::time::Duration::from_secs(secs.parse().ok()?)),
    };
    let limits = tote_cache::Limits {
        max_size: size,
        max_age: age,
        min_free: None,
    };
    Some(
        match tote_cache::trim(Path::new(root), &limits, false, &tote_cache::Quiet) {
            Ok(_) => 0,
            Err(_) => 1,
        },
    )
}

fn refused_too(refused: &Failure, why: &str) -> Failure {
    relocate::both(refused, Failure::new(Code::Namespace, why))
}

/// `<id>-<short name>`: the entry relocated for one short path.
fn entry_name(id: &str, short: &[u8]) -> String {
    let name = &short[relocate::DIR.len() + 1..];
    format!("{id}-{}", String::from_utf8_lossy(name))
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

/// Exec the program in place, or as PID 1 run and supervise it. The
/// program inherits the entry's pin.
fn exec(l: &Launch<'_>, program: Vec<u8>, argv: &[Vec<u8>], found: Found) -> Result<Infallible> {
    let fd = found.pin.keep_across_exec();
    l.dbg.step(|| format!("entry pinned (descriptor {fd})"));
    l.dbg.step(|| format!("exec {}", String::from_utf8_lossy(&program)));
    if std::process::id() == 1 {
        sys::exec_as_init(&program, argv, l.dbg, None);
    }
    Err(sys::exec(&program, argv))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tote_format::MountSpec;

    #[test]
    fn policies_parse() {
        for (s, p) in [
            ("never", Policy::Never),
            ("auto", Policy::Auto),
            ("always", Policy::Always),
        ] {
            assert_eq!(Policy::parse(s), Some(p));
        }
        assert_eq!(Policy::parse("Always"), None);
        assert_eq!(Policy::parse(""), None);
    }

    #[test]
    fn the_trim_job_reads_back_its_arguments() {
        let limits = tote_cache::Limits {
            max_size: Some(200 << 20),
            max_age: None,
            min_free: None,
        };
        let argv = trim_argv(Path::new("/c/r"), &limits);
        let args: Vec<std::ffi::OsString> = argv
            .iter()
            .map(|c| std::ffi::OsString::from(c.to_str().unwrap()))
            .collect();
        assert_eq!(args, ["tote: trim", "/c/r", "209715200", "off"]);
        // Not a trim job: a normal launch's arguments.
        assert_eq!(trim_job(&["./app".into(), "a".into(), "b".into(), "c".into()]), None);
        assert_eq!(trim_job(&["tote: trim".into()]), None);
    }

    #[test]
    fn relocated_entries_are_named_after_the_short_path() {
        assert_eq!(entry_name("abc", b"/tmp/xy9z0"), "abc-xy9z0");
    }

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
