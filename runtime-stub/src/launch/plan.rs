//! The namespace plan as plain data: what to unshare, which ids to map,
//! which mounts to make, where to pivot. Built from the bundle's metadata and
//! a view of the host, tested as data (`plan/tests.rs`); `sys` carries it out.
//!
//! The launch view is a *base* (the host's root, or a bundle subtree for OCI
//! images) with *targets* on top: bundle paths over a host root, host paths
//! into a bundle root. Where every target already fits the base (the host
//! has `/nix/store` for a Nix bundle), the host's root stays as it is and
//! the targets are mounted in place: a warm start costs one mount.
//!
//! Otherwise a new root: a scratch tmpfs becomes the root first (the old
//! root at `/oldroot`), a second tmpfs at `/newroot` gets the base's entries
//! bound in (whole where every target below them fits, else rebuilt one level
//! deeper), then the targets, then `/newroot` becomes the root and the
//! scratch root with the old root under it is detached.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use tote_format::{Meta, MountKind};

use crate::sys::Step;

/// What is at a path (not following a final symlink).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKind {
    Dir,
    Symlink(OsString),
    Other,
}

/// Read-only view of the file system, so that planning needs no syscalls in tests.
pub trait Host {
    /// Entries of directory `dir`, sorted by name; `None` if it is not a directory.
    fn list(&self, dir: &Path) -> Option<Vec<(OsString, HostKind)>>;
    /// Is `path` a directory (following symlinks)? Cheaper than listing it.
    fn is_dir(&self, path: &Path) -> bool;
    /// What is at `path`, not following a final symlink.
    fn kind(&self, path: &Path) -> Option<HostKind>;
}

/// How a target is provided (the metadata's mount kinds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provide {
    /// Bundle directory over the host's (overlay).
    Layer,
    /// Bundle path instead of the host's.
    Replace,
    /// Host path into a bundle root.
    Host,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub provide: Provide,
    /// Real path of the source (in the cache entry's tree, or on the host).
    pub source: PathBuf,
    /// Where it appears in the launch view.
    pub target: PathBuf,
}

pub struct Request<'a> {
    /// Holds CAP_SYS_ADMIN (root, outside a container): a mount namespace
    /// only, since a user namespace would drop the host's capabilities.
    pub privileged: bool,
    /// The namespaces exist already, ids mapped and mounts private (mount
    /// mode made them to mount FUSE): start from the mounts.
    pub entered: bool,
    /// Mount mode's staging mount (a tmpfs holding the FUSE mount), a host
    /// path: hidden from the program once the targets are bound.
    pub staging: Option<&'a Path>,
    pub uid: u32,
    pub gid: u32,
    /// The cache entry's empty `mnt` directory (host path).
    pub scratch: &'a Path,
    /// `None`: the host's root is the base. `Some`: this directory of the
    /// extracted tree (real path) becomes `/`.
    pub base: Option<PathBuf>,
    pub mounts: Vec<Mount>,
    /// The caller's working directory: restored, and bound into a bundle root.
    pub cwd: &'a Path,
    /// Where the program starts instead of `cwd` (an image's WorkingDir).
    pub workdir: Option<PathBuf>,
}

/// The launch view of a bundle whose tree (extracted, or mounted) is at
/// `tree`, for a caller in `cwd`.
pub fn view<'a>(meta: &Meta, tree: &Path, scratch: &'a Path, cwd: &'a Path, uid: u32, gid: u32) -> Request<'a> {
    Request {
        privileged: false,
        entered: false,
        staging: None,
        uid,
        gid,
        scratch,
        base: (!meta.root.is_empty()).then(|| tree.join(path_of(&meta.root))),
        mounts: meta
            .mounts
            .iter()
            .map(|m| Mount {
                provide: match m.kind {
                    MountKind::Layer => Provide::Layer,
                    MountKind::Replace => Provide::Replace,
                    MountKind::Host => Provide::Host,
                },
                source: match m.kind {
                    MountKind::Host => path_of(&m.source),
                    _ => tree.join(path_of(&m.source)),
                },
                target: path_of(&m.target),
            })
            .collect(),
        cwd,
        workdir: (!meta.workdir.is_empty()).then(|| path_of(&meta.workdir)),
    }
}

const OLD: &str = "/oldroot";
const NEW: &str = "/newroot";

/// A target with the kind of thing that must appear there.
struct Target<'m> {
    mount: &'m Mount,
    what: HostKind,
}

/// The steps that build the launch view `req` asks for on `host`.
pub fn plan(req: &Request<'_>, host: &dyn Host) -> Vec<Step> {
    let mut steps = Vec::new();
    if !req.entered {
        steps.push(Step::Unshare { user: !req.privileged });
        if !req.privileged {
            steps.push(Step::MapIds {
                uid: req.uid,
                gid: req.gid,
            });
        }
        steps.push(Step::MakePrivate);
    }

    // Host paths the host lacks are skipped; the caller's cwd joins a
    // bundle root unless a host path already covers it.
    let mut mounts = req.mounts.clone();
    if req.base.is_some() && req.cwd != Path::new("/") && !mounts.iter().any(|m| req.cwd.starts_with(&m.target)) {
        mounts.push(Mount {
            provide: Provide::Host,
            source: req.cwd.to_path_buf(),
            target: req.cwd.to_path_buf(),
        });
    }
    let targets: Vec<Target<'_>> = mounts
        .iter()
        .filter_map(|m| {
            let what = match m.provide {
                Provide::Layer => HostKind::Dir,
                Provide::Replace => host.kind(&m.source)?,
                Provide::Host if host.is_dir(&m.source) => HostKind::Dir,
                Provide::Host => host.kind(&m.source).map(|_| HostKind::Other)?,
            };
            Some(Target { mount: m, what })
        })
        .collect();
    let workdir = req.workdir.clone().unwrap_or_else(|| req.cwd.to_path_buf());

    let base = Base {
        list: req.base.clone().unwrap_or_else(|| PathBuf::from("/")),
        bind: under(OLD, req.base.as_deref().unwrap_or(Path::new("/"))),
        bundle: req.base.is_some(),
    };
    if !base.bundle && !targets.is_empty() && fits(Path::new("/"), &targets, &base, host) {
        in_place(req, &targets, &mut steps);
    } else {
        new_root(req, &targets, &base, host, &mut steps);
    }
    steps.push(Step::Chdir { path: workdir });
    steps
}

/// Every target fits the host (a host with Nix): mount in place. The root
/// stays the host's, untouched; no new root needed.
fn in_place(req: &Request<'_>, targets: &[Target<'_>], steps: &mut Vec<Step>) {
    for t in targets {
        if !matches!(t.what, HostKind::Symlink(_)) {
            steps.push(Step::BundleMount {
                source: t.mount.source.clone(),
                target: t.mount.target.clone(),
                host_lower: (t.mount.provide == Provide::Layer).then(|| t.mount.target.clone()),
            });
        }
    }
    if let Some(staging) = req.staging {
        steps.push(Step::Detach {
            path: staging.to_path_buf(),
        });
    }
}

/// A new root: the scratch tmpfs becomes the root, the base is rebuilt on
/// a second tmpfs at `/newroot`, the targets go on top, and `/newroot`
/// becomes the root, read-only.
fn new_root(req: &Request<'_>, targets: &[Target<'_>], base: &Base, host: &dyn Host, steps: &mut Vec<Step>) {
    steps.push(Step::MountTmpfs {
        target: req.scratch.to_path_buf(),
    });
    for d in [NEW, OLD] {
        steps.push(Step::Mkdir {
            path: req.scratch.join(&d[1..]),
        });
    }
    steps.push(Step::PivotRoot {
        new_root: req.scratch.to_path_buf(),
        put_old: req.scratch.join(&OLD[1..]),
    });
    steps.push(Step::MountTmpfs {
        target: PathBuf::from(NEW),
    });
    replicate(Path::new("/"), targets, base, host, steps);
    for t in targets {
        let target = under(NEW, &t.mount.target);
        match (t.mount.provide, &t.what) {
            (_, HostKind::Symlink(_)) => {}
            (Provide::Host, _) => steps.push(Step::Bind {
                source: under(OLD, &t.mount.source),
                target,
            }),
            (provide, _) => steps.push(Step::BundleMount {
                source: under(OLD, &t.mount.source),
                target,
                host_lower: (provide == Provide::Layer && host.is_dir(&t.mount.target))
                    .then(|| under(OLD, &t.mount.target)),
            }),
        }
    }
    steps.push(Step::EnterRoot {
        path: PathBuf::from(NEW),
    });
    steps.push(Step::RemountRootReadOnly);
}

/// The tree the new root starts from.
struct Base {
    /// Real path to list (`/`, or the bundle's root subtree).
    list: PathBuf,
    /// The same, seen from the scratch root (under `/oldroot`).
    bind: PathBuf,
    /// Bundle contents are bound read-only.
    bundle: bool,
}

impl Base {
    fn real(&self, path: &Path) -> PathBuf {
        under_path(&self.list, path)
    }
}

/// Can every target at or below `dir` be mounted onto what the base already
/// has there (so `dir` can be bound whole, targets on top)?
fn fits(dir: &Path, targets: &[Target<'_>], base: &Base, host: &dyn Host) -> bool {
    targets.iter().filter(|t| t.mount.target.starts_with(dir)).all(|t| {
        let real = base.real(&t.mount.target);
        match &t.what {
            HostKind::Dir => host.is_dir(&real),
            HostKind::Other => host.kind(&real) == Some(HostKind::Other),
            link => host.kind(&real).as_ref() == Some(link),
        }
    })
}

/// Rebuild base directory `dir` inside the new root: bind every entry that
/// no target is at or below (or all of whose targets fit), recurse into the
/// others, then make the targets' own mount points.
fn replicate(dir: &Path, targets: &[Target<'_>], base: &Base, host: &dyn Host, steps: &mut Vec<Step>) {
    let listing = host.list(&base.real(dir)).unwrap_or_default();
    for (name, kind) in &listing {
        let path = dir.join(name);
        if targets.iter().any(|t| t.mount.target == path) {
            continue;
        }
        let new = under(NEW, &path);
        let below = targets.iter().any(|t| t.mount.target.starts_with(&path));
        if below && kind == &HostKind::Dir && !fits(&path, targets, base, host) {
            steps.push(Step::Mkdir { path: new });
            replicate(&path, targets, base, host, steps);
            continue;
        }
        let source = under_path(&base.bind, &path);
        match kind {
            HostKind::Symlink(to) => {
                steps.push(Step::Symlink {
                    target: to.clone(),
                    path: new,
                });
                continue;
            }
            HostKind::Dir => steps.push(Step::Mkdir { path: new.clone() }),
            HostKind::Other => steps.push(Step::Touch { path: new.clone() }),
        }
        steps.push(if base.bundle {
            Step::BundleMount {
                source,
                target: new,
                host_lower: None,
            }
        } else {
            Step::Bind { source, target: new }
        });
    }
    // Directories on the way to a target that the base lacks (or has as a
    // non-directory, which is then hidden), and the targets themselves.
    let present = |path: &Path| listing.iter().any(|(n, k)| dir.join(n) == path && *k == HostKind::Dir);
    make_mount_points(dir, targets, &present, steps);
}

/// Mount points at the next level below `dir` on the way to targets: each
/// target's own, and the directories the base lacks there (`present` says
/// which it has as directories), recursively below those.
fn make_mount_points(dir: &Path, targets: &[Target<'_>], present: &dyn Fn(&Path) -> bool, steps: &mut Vec<Step>) {
    let mut made: Vec<PathBuf> = Vec::new();
    for t in targets {
        let Ok(rest) = t.mount.target.strip_prefix(dir) else {
            continue;
        };
        let Some(first) = rest.components().next() else {
            continue;
        };
        let path = dir.join(first);
        let is_target = t.mount.target == path;
        if (present(&path) && !is_target) || made.contains(&path) {
            continue;
        }
        // A hidden entry of the same name: drop the steps made for it.
        let new = under(NEW, &path);
        steps.retain(|s| !matches!(s, Step::Symlink { path: p, .. } | Step::Touch { path: p } | Step::Mkdir { path: p } | Step::Bind { target: p, .. } | Step::BundleMount { target: p, .. } if *p == new));
        steps.push(match (&t.what, is_target) {
            (HostKind::Symlink(to), true) => Step::Symlink {
                target: to.clone(),
                path: new,
            },
            (HostKind::Other, true) => Step::Touch { path: new },
            _ => Step::Mkdir { path: new },
        });
        if !is_target {
            make_mount_points(&path, targets, &|_| false, steps);
        }
        made.push(path);
    }
}

/// `/newroot` + `/nix/store` = `/newroot/nix/store`.
pub fn under(prefix: &str, path: &Path) -> PathBuf {
    under_path(Path::new(prefix), path)
}

fn under_path(prefix: &Path, path: &Path) -> PathBuf {
    if prefix == Path::new("/") {
        return path.to_path_buf();
    }
    let mut s = OsString::from(prefix.as_os_str());
    if path != Path::new("/") {
        s.push(path.as_os_str());
    }
    PathBuf::from(s)
}

/// A view of the real file system.
pub struct RealHost;

fn kind_of(t: std::fs::FileType, path: impl FnOnce() -> PathBuf) -> HostKind {
    if t.is_dir() {
        HostKind::Dir
    } else if t.is_symlink() {
        std::fs::read_link(path())
            .map(|to| HostKind::Symlink(to.into_os_string()))
            .unwrap_or(HostKind::Other)
    } else {
        HostKind::Other
    }
}

impl Host for RealHost {
    fn list(&self, dir: &Path) -> Option<Vec<(OsString, HostKind)>> {
        let rd = std::fs::read_dir(dir).ok()?;
        let mut out: Vec<(OsString, HostKind)> = rd
            .flatten()
            .map(|e| {
                let kind = e.file_type().map_or(HostKind::Other, |t| kind_of(t, || e.path()));
                (e.file_name(), kind)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0)); // determinism: the same host gives the same plan
        Some(out)
    }

    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }

    fn kind(&self, path: &Path) -> Option<HostKind> {
        let m = std::fs::symlink_metadata(path).ok()?;
        Some(kind_of(m.file_type(), || path.to_path_buf()))
    }
}

/// Mount targets as paths, from the metadata's byte strings.
pub fn path_of(bytes: &[u8]) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(bytes))
}

#[cfg(test)]
mod tests;
