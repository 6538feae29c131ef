//! The namespace plan as plain data: what to unshare, which ids to map,
//! which mounts to make, where to pivot. Built from the bundle's metadata and
//! a view of the host, tested as data; `sys` carries it out.
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `unshare(CLONE_NEWNS)`, plus `CLONE_NEWUSER` unless already root.
    Unshare {
        user: bool,
    },
    /// setgroups deny, then map `uid`/`gid` to themselves.
    MapIds {
        uid: u32,
        gid: u32,
    },
    /// Stop mount events from reaching the host.
    MakePrivate,
    MountTmpfs {
        target: PathBuf,
    },
    Mkdir {
        path: PathBuf,
    },
    Symlink {
        target: OsString,
        path: PathBuf,
    },
    /// An empty file to bind a non-directory onto.
    Touch {
        path: PathBuf,
    },
    /// Recursive bind mount of a host path (writable as on the host).
    Bind {
        source: PathBuf,
        target: PathBuf,
    },
    /// A path of the bundle's tree, read-only. With `host_lower` (a Nix
    /// store over the host's, so that the host's own programs keep working)
    /// the two are layered with overlayfs, the bundle's on top; if overlayfs
    /// is refused, the bundle's alone.
    BundleMount {
        source: PathBuf,
        target: PathBuf,
        host_lower: Option<PathBuf>,
    },
    /// `pivot_root(new_root, put_old)`.
    PivotRoot {
        new_root: PathBuf,
        put_old: PathBuf,
    },
    /// Make `path` the root and detach everything else.
    EnterRoot {
        path: PathBuf,
    },
    /// Open `/dev/fuse` inside the namespace and mount the connection at
    /// `target`, owned by `uid`/`gid` (mount mode; the launcher serves it).
    MountFuse {
        target: PathBuf,
        uid: u32,
        gid: u32,
    },
    RemountRootReadOnly,
    /// Lazily unmount `path` and everything below it.
    Detach {
        path: PathBuf,
    },
    Chdir {
        path: PathBuf,
    },
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

const OLD: &str = "/oldroot";
const NEW: &str = "/newroot";

/// A target with the kind of thing that must appear there.
struct Target<'m> {
    mount: &'m Mount,
    what: HostKind,
}

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
        // Every target fits the host (a host with Nix): mount in place. The
        // root stays the host's, untouched; no new root needed.
        for t in &targets {
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
        steps.push(Step::Chdir { path: workdir });
        return steps;
    }

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
    replicate(Path::new("/"), &targets, &base, host, &mut steps);
    for t in &targets {
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
    steps.push(Step::Chdir { path: workdir });
    steps
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
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    struct FakeHost(BTreeMap<&'static str, Vec<(&'static str, HostKind)>>);

    impl Host for FakeHost {
        fn list(&self, dir: &Path) -> Option<Vec<(OsString, HostKind)>> {
            self.0
                .get(dir.to_str().unwrap())
                .map(|v| v.iter().map(|(n, k)| (OsString::from(n), k.clone())).collect())
        }

        fn is_dir(&self, path: &Path) -> bool {
            self.0.contains_key(path.to_str().unwrap())
        }

        fn kind(&self, path: &Path) -> Option<HostKind> {
            if self.is_dir(path) {
                return Some(HostKind::Dir);
            }
            let (dir, name) = (path.parent()?, path.file_name()?);
            self.list(dir)?.into_iter().find(|(n, _)| n == name).map(|(_, k)| k)
        }
    }

    fn req<'a>(privileged: bool, cwd: &'a Path) -> Request<'a> {
        Request {
            privileged,
            entered: false,
            staging: None,
            uid: 1000,
            gid: 100,
            scratch: Path::new("/c/id/mnt"),
            base: None,
            mounts: vec![layer("/c/id/tree/nix/store", "/nix/store")],
            cwd,
            workdir: None,
        }
    }

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    fn mount(provide: Provide, source: &str, target: &str) -> Mount {
        Mount {
            provide,
            source: p(source),
            target: p(target),
        }
    }

    fn layer(source: &str, target: &str) -> Mount {
        mount(Provide::Layer, source, target)
    }

    fn debian() -> FakeHost {
        FakeHost(BTreeMap::from([(
            "/",
            vec![
                ("bin", HostKind::Symlink("usr/bin".into())),
                ("etc", HostKind::Dir),
                ("swapfile", HostKind::Other),
                ("usr", HostKind::Dir),
            ],
        )]))
    }

    #[test]
    fn host_without_nix() {
        let steps = plan(&req(false, Path::new("/home/u")), &debian());
        assert_eq!(
            steps,
            vec![
                Step::Unshare { user: true },
                Step::MapIds { uid: 1000, gid: 100 },
                Step::MakePrivate,
                Step::MountTmpfs { target: p("/c/id/mnt") },
                Step::Mkdir {
                    path: p("/c/id/mnt/newroot")
                },
                Step::Mkdir {
                    path: p("/c/id/mnt/oldroot")
                },
                Step::PivotRoot {
                    new_root: p("/c/id/mnt"),
                    put_old: p("/c/id/mnt/oldroot")
                },
                Step::MountTmpfs { target: p("/newroot") },
                Step::Symlink {
                    target: "usr/bin".into(),
                    path: p("/newroot/bin")
                },
                Step::Mkdir {
                    path: p("/newroot/etc")
                },
                Step::Bind {
                    source: p("/oldroot/etc"),
                    target: p("/newroot/etc")
                },
                Step::Touch {
                    path: p("/newroot/swapfile")
                },
                Step::Bind {
                    source: p("/oldroot/swapfile"),
                    target: p("/newroot/swapfile")
                },
                Step::Mkdir {
                    path: p("/newroot/usr")
                },
                Step::Bind {
                    source: p("/oldroot/usr"),
                    target: p("/newroot/usr")
                },
                Step::Mkdir {
                    path: p("/newroot/nix")
                },
                Step::Mkdir {
                    path: p("/newroot/nix/store")
                },
                Step::BundleMount {
                    source: p("/oldroot/c/id/tree/nix/store"),
                    target: p("/newroot/nix/store"),
                    host_lower: None
                },
                Step::EnterRoot { path: p("/newroot") },
                Step::RemountRootReadOnly,
                Step::Chdir { path: p("/home/u") },
            ]
        );
    }

    #[test]
    fn cap_sys_admin_skips_the_user_namespace() {
        let steps = plan(&req(true, Path::new("/")), &debian());
        assert_eq!(steps[0], Step::Unshare { user: false });
        assert!(!steps.iter().any(|s| matches!(s, Step::MapIds { .. })));
    }

    #[test]
    fn host_with_the_store_gets_the_bundle_layered_in_place() {
        let mut h = debian();
        h.0.get_mut("/").unwrap().push(("nix", HostKind::Dir));
        h.0.insert("/nix", vec![("store", HostKind::Dir), ("var", HostKind::Dir)]);
        h.0.insert("/nix/store", vec![]);
        let steps = plan(&req(false, Path::new("/srv")), &h);
        assert_eq!(
            steps,
            vec![
                Step::Unshare { user: true },
                Step::MapIds { uid: 1000, gid: 100 },
                Step::MakePrivate,
                Step::BundleMount {
                    source: p("/c/id/tree/nix/store"),
                    target: p("/nix/store"),
                    host_lower: Some(p("/nix/store"))
                },
                Step::Chdir { path: p("/srv") },
            ]
        );
    }

    #[test]
    fn mount_mode_starts_inside_its_namespace_and_hides_the_staging_mount() {
        let mut h = debian();
        h.0.get_mut("/").unwrap().push(("nix", HostKind::Dir));
        h.0.insert("/nix", vec![("store", HostKind::Dir)]);
        h.0.insert("/nix/store", vec![]);
        let staging = p("/c/mnt");
        let r = Request {
            entered: true,
            staging: Some(&staging),
            scratch: Path::new("/c/mnt/scratch"),
            mounts: vec![layer("/c/mnt/fs/nix/store", "/nix/store")],
            ..req(false, Path::new("/srv"))
        };
        assert_eq!(
            plan(&r, &h),
            vec![
                Step::BundleMount {
                    source: p("/c/mnt/fs/nix/store"),
                    target: p("/nix/store"),
                    host_lower: Some(p("/nix/store"))
                },
                Step::Detach { path: p("/c/mnt") },
                Step::Chdir { path: p("/srv") },
            ]
        );
        // A new root leaves the staging mount behind with the old root.
        let steps = plan(&r, &debian());
        assert!(
            !steps.iter().any(|s| matches!(
                s,
                Step::Unshare { .. } | Step::MapIds { .. } | Step::MakePrivate | Step::Detach { .. }
            )),
            "{steps:#?}"
        );
        assert_eq!(
            steps[0],
            Step::MountTmpfs {
                target: p("/c/mnt/scratch")
            }
        );
        assert!(steps.contains(&Step::BundleMount {
            source: p("/oldroot/c/mnt/fs/nix/store"),
            target: p("/newroot/nix/store"),
            host_lower: None
        }));
        assert!(steps.contains(&Step::EnterRoot { path: p("/newroot") }));
    }

    #[test]
    fn one_missing_target_means_a_new_root_that_keeps_the_hosts_store() {
        let mut h = debian();
        h.0.get_mut("/").unwrap().push(("nix", HostKind::Dir));
        h.0.insert("/nix", vec![("store", HostKind::Dir), ("var", HostKind::Dir)]);
        h.0.insert("/nix/store", vec![]);
        let mut r = req(false, Path::new("/"));
        r.mounts.push(layer("/c/id/tree/opt/tool", "/opt/tool"));
        let steps = plan(&r, &h);
        let tail: Vec<_> = steps
            .iter()
            .skip_while(|s| {
                **s != Step::Mkdir {
                    path: p("/newroot/nix"),
                }
            })
            .cloned()
            .collect();
        // The host's /nix has the store: bound whole, the bundle's store
        // layered on top of it; /opt is missing: made on the tmpfs.
        assert_eq!(
            tail,
            [
                Step::Mkdir {
                    path: p("/newroot/nix")
                },
                Step::Bind {
                    source: p("/oldroot/nix"),
                    target: p("/newroot/nix")
                },
                Step::Mkdir {
                    path: p("/newroot/opt")
                },
                Step::Mkdir {
                    path: p("/newroot/opt/tool")
                },
                Step::BundleMount {
                    source: p("/oldroot/c/id/tree/nix/store"),
                    target: p("/newroot/nix/store"),
                    host_lower: Some(p("/oldroot/nix/store"))
                },
                Step::BundleMount {
                    source: p("/oldroot/c/id/tree/opt/tool"),
                    target: p("/newroot/opt/tool"),
                    host_lower: None
                },
                Step::EnterRoot { path: p("/newroot") },
                Step::RemountRootReadOnly,
                Step::Chdir { path: p("/") },
            ]
        );
    }

    /// A host ELF program's view: /usr replaced, /lib64 a symlink, the
    /// bundle's ld.so.cache over the host's file.
    fn elf_mounts() -> Vec<Mount> {
        vec![
            mount(Provide::Replace, "/c/id/tree/etc/ld.so.cache", "/etc/ld.so.cache"),
            mount(Provide::Replace, "/c/id/tree/lib64", "/lib64"),
            mount(Provide::Replace, "/c/id/tree/usr", "/usr"),
        ]
    }

    fn with_elf_tree(mut h: FakeHost) -> FakeHost {
        h.0.insert(
            "/c/id/tree",
            vec![
                ("etc", HostKind::Dir),
                ("lib64", HostKind::Symlink("usr/lib64".into())),
                ("usr", HostKind::Dir),
            ],
        );
        h.0.insert("/c/id/tree/etc", vec![("ld.so.cache", HostKind::Other)]);
        h.0.insert("/c/id/tree/usr", vec![]);
        h
    }

    #[test]
    fn elf_view_fits_a_merged_usr_host_in_place() {
        let mut h = debian();
        h.0.get_mut("/")
            .unwrap()
            .push(("lib64", HostKind::Symlink("usr/lib64".into())));
        h.0.insert(
            "/etc",
            vec![("ld.so.cache", HostKind::Other), ("passwd", HostKind::Other)],
        );
        h.0.insert("/usr", vec![]);
        let h = with_elf_tree(h);
        let mut r = req(false, Path::new("/home/u"));
        r.mounts = elf_mounts();
        let steps = plan(&r, &h);
        assert_eq!(
            steps[3..],
            [
                Step::BundleMount {
                    source: p("/c/id/tree/etc/ld.so.cache"),
                    target: p("/etc/ld.so.cache"),
                    host_lower: None
                },
                Step::BundleMount {
                    source: p("/c/id/tree/usr"),
                    target: p("/usr"),
                    host_lower: None
                },
                Step::Chdir { path: p("/home/u") },
            ]
        );
    }

    #[test]
    fn elf_view_on_a_bare_host_builds_a_new_root() {
        // /etc without ld.so.cache, no /usr, /lib64 a real directory.
        let mut h = FakeHost(BTreeMap::from([
            (
                "/",
                vec![("etc", HostKind::Dir), ("lib64", HostKind::Dir), ("tmp", HostKind::Dir)],
            ),
            ("/etc", vec![("passwd", HostKind::Other)]),
            ("/lib64", vec![]),
        ]));
        h = with_elf_tree(h);
        let mut r = req(false, Path::new("/tmp"));
        r.mounts = elf_mounts();
        let steps = plan(&r, &h);
        let i = steps
            .iter()
            .position(|s| *s == Step::MountTmpfs { target: p("/newroot") })
            .unwrap();
        assert_eq!(
            steps[i + 1..],
            [
                Step::Mkdir {
                    path: p("/newroot/etc")
                },
                Step::Touch {
                    path: p("/newroot/etc/passwd")
                },
                Step::Bind {
                    source: p("/oldroot/etc/passwd"),
                    target: p("/newroot/etc/passwd")
                },
                Step::Touch {
                    path: p("/newroot/etc/ld.so.cache")
                },
                Step::Mkdir {
                    path: p("/newroot/tmp")
                },
                Step::Bind {
                    source: p("/oldroot/tmp"),
                    target: p("/newroot/tmp")
                },
                Step::Symlink {
                    target: "usr/lib64".into(),
                    path: p("/newroot/lib64")
                },
                Step::Mkdir {
                    path: p("/newroot/usr")
                },
                Step::BundleMount {
                    source: p("/oldroot/c/id/tree/etc/ld.so.cache"),
                    target: p("/newroot/etc/ld.so.cache"),
                    host_lower: None
                },
                Step::BundleMount {
                    source: p("/oldroot/c/id/tree/usr"),
                    target: p("/newroot/usr"),
                    host_lower: None
                },
                Step::EnterRoot { path: p("/newroot") },
                Step::RemountRootReadOnly,
                Step::Chdir { path: p("/tmp") },
            ]
        );
    }

    #[test]
    fn image_root_gets_host_paths_and_the_callers_cwd() {
        let h = FakeHost(BTreeMap::from([
            (
                "/",
                vec![("etc", HostKind::Dir), ("home", HostKind::Dir), ("proc", HostKind::Dir)],
            ),
            (
                "/etc",
                vec![("hosts", HostKind::Other), ("resolv.conf", HostKind::Other)],
            ),
            ("/home", vec![("u", HostKind::Dir)]),
            ("/home/u", vec![]),
            ("/proc", vec![]),
            // The image: /bin a symlink, /etc with hosts but no resolv.conf, no /proc.
            (
                "/c/id/tree/rootfs",
                vec![
                    ("bin", HostKind::Symlink("usr/bin".into())),
                    ("etc", HostKind::Dir),
                    ("usr", HostKind::Dir),
                ],
            ),
            (
                "/c/id/tree/rootfs/etc",
                vec![("hosts", HostKind::Other), ("os-release", HostKind::Other)],
            ),
            ("/c/id/tree/rootfs/usr", vec![]),
        ]));
        let host = |path: &str| mount(Provide::Host, path, path);
        let r = Request {
            base: Some(p("/c/id/tree/rootfs")),
            mounts: vec![
                host("/proc"),
                host("/sys"),
                host("/etc/hosts"),
                host("/etc/resolv.conf"),
            ],
            workdir: Some(p("/srv")),
            ..req(false, Path::new("/home/u"))
        };
        let steps = plan(&r, &h);
        let i = steps
            .iter()
            .position(|s| *s == Step::MountTmpfs { target: p("/newroot") })
            .unwrap();
        let img = |rest: &str| p(&format!("/oldroot/c/id/tree/rootfs{rest}"));
        assert_eq!(
            steps[i + 1..],
            [
                Step::Symlink {
                    target: "usr/bin".into(),
                    path: p("/newroot/bin")
                },
                Step::Mkdir {
                    path: p("/newroot/etc")
                },
                Step::Touch {
                    path: p("/newroot/etc/os-release")
                },
                Step::BundleMount {
                    source: img("/etc/os-release"),
                    target: p("/newroot/etc/os-release"),
                    host_lower: None
                },
                Step::Touch {
                    path: p("/newroot/etc/hosts")
                },
                Step::Touch {
                    path: p("/newroot/etc/resolv.conf")
                },
                Step::Mkdir {
                    path: p("/newroot/usr")
                },
                Step::BundleMount {
                    source: img("/usr"),
                    target: p("/newroot/usr"),
                    host_lower: None
                },
                Step::Mkdir {
                    path: p("/newroot/proc")
                },
                Step::Mkdir {
                    path: p("/newroot/home")
                },
                Step::Mkdir {
                    path: p("/newroot/home/u")
                },
                // /sys is missing on this host: skipped.
                Step::Bind {
                    source: p("/oldroot/proc"),
                    target: p("/newroot/proc")
                },
                Step::Bind {
                    source: p("/oldroot/etc/hosts"),
                    target: p("/newroot/etc/hosts")
                },
                Step::Bind {
                    source: p("/oldroot/etc/resolv.conf"),
                    target: p("/newroot/etc/resolv.conf")
                },
                Step::Bind {
                    source: p("/oldroot/home/u"),
                    target: p("/newroot/home/u")
                },
                Step::EnterRoot { path: p("/newroot") },
                Step::RemountRootReadOnly,
                Step::Chdir { path: p("/srv") },
            ]
        );
    }

    #[test]
    fn host_nix_without_store_and_nix_as_symlink() {
        let mut h = debian();
        h.0.get_mut("/").unwrap().push(("nix", HostKind::Dir));
        h.0.insert("/nix", vec![("var", HostKind::Dir)]);
        let steps = plan(&req(false, Path::new("/")), &h);
        assert!(steps.contains(&Step::Mkdir {
            path: p("/newroot/nix/store")
        }));
        assert!(steps.contains(&Step::Bind {
            source: p("/oldroot/nix/var"),
            target: p("/newroot/nix/var")
        }));

        let mut h = debian();
        h.0.get_mut("/")
            .unwrap()
            .push(("nix", HostKind::Symlink("/data/nix".into())));
        let steps = plan(&req(false, Path::new("/")), &h);
        assert!(!steps
            .iter()
            .any(|s| matches!(s, Step::Symlink { path, .. } if *path == p("/newroot/nix"))));
        assert!(steps.contains(&Step::Mkdir {
            path: p("/newroot/nix/store")
        }));
    }
}
