//! The namespace plan as plain data: what to unshare, which ids to map,
//! which mounts to make, where to pivot. Built from the bundle's metadata and
//! a view of the host, tested as data; `sys` carries it out.
//!
//! Where every mount target already exists on the host (`/nix/store` on a
//! host with Nix), the bundle's subtree is layered over it in place: the
//! host's root stays as it is, and a warm start costs one mount.
//!
//! Otherwise, the shape of the launch view: a scratch tmpfs becomes the root first (the old
//! root at `/oldroot`), a second tmpfs at `/newroot` gets the host's entries
//! bound in (all but those on the way to a bundle mount, which are rebuilt
//! one level deeper), then the bundle's subtrees, then `/newroot` becomes the
//! root and the scratch root with the old root under it is detached.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// What the host has at a path, as far as the plan cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKind {
    Dir,
    Symlink(OsString),
    Other,
}

/// Read-only view of the host, so that planning needs no syscalls in tests.
pub trait Host {
    /// Entries of directory `dir`, sorted by name; `None` if it is not a directory.
    fn list(&self, dir: &Path) -> Option<Vec<(OsString, HostKind)>>;
    /// Is `path` a directory (following symlinks)? Cheaper than listing it.
    fn is_dir(&self, path: &Path) -> bool;
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
    /// Recursive bind mount.
    Bind {
        source: PathBuf,
        target: PathBuf,
    },
    /// The bundle's subtree, read-only. Where the host has a directory at the
    /// same place (`/nix/store` on NixOS) it is layered under the bundle's
    /// with overlayfs, so the host's own programs keep working; if overlayfs
    /// is refused, the bundle's subtree alone.
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
    RemountRootReadOnly,
    Chdir {
        path: PathBuf,
    },
}

pub struct Request<'a> {
    /// Already root (euid 0): mount namespace only.
    pub root: bool,
    pub uid: u32,
    pub gid: u32,
    /// The cache entry's empty `mnt` directory (host path).
    pub scratch: &'a Path,
    /// (source on the host, absolute target) for each bundle subtree.
    pub mounts: Vec<(PathBuf, PathBuf)>,
    /// The caller's working directory.
    pub cwd: &'a Path,
}

const OLD: &str = "/oldroot";
const NEW: &str = "/newroot";

pub fn plan(req: &Request<'_>, host: &dyn Host) -> Vec<Step> {
    let mut steps = vec![Step::Unshare { user: !req.root }];
    if !req.root {
        steps.push(Step::MapIds {
            uid: req.uid,
            gid: req.gid,
        });
    }
    steps.push(Step::MakePrivate);
    if !req.mounts.is_empty() && req.mounts.iter().all(|(_, t)| host.is_dir(t)) {
        // Every target exists (a host with Nix): layer the bundle over it in
        // place. The root stays the host's, untouched; no new root needed.
        for (source, target) in &req.mounts {
            steps.push(Step::BundleMount {
                source: source.clone(),
                target: target.clone(),
                host_lower: Some(target.clone()),
            });
        }
        steps.push(Step::Chdir {
            path: req.cwd.to_path_buf(),
        });
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

    let targets: Vec<&Path> = req.mounts.iter().map(|(_, t)| t.as_path()).collect();
    replicate(Path::new("/"), &targets, host, &mut steps);
    for (source, target) in &req.mounts {
        let host_lower = host.is_dir(target).then(|| under(OLD, target));
        steps.push(Step::BundleMount {
            source: under(OLD, source),
            target: under(NEW, target),
            host_lower,
        });
    }

    steps.push(Step::EnterRoot {
        path: PathBuf::from(NEW),
    });
    steps.push(Step::RemountRootReadOnly);
    steps.push(Step::Chdir {
        path: req.cwd.to_path_buf(),
    });
    steps
}

/// Rebuild host directory `dir` inside the new root: bind every entry that
/// is not on the way to a target, recurse into the ones that are.
fn replicate(dir: &Path, targets: &[&Path], host: &dyn Host, steps: &mut Vec<Step>) {
    let listing = host.list(dir).unwrap_or_default();
    for (name, kind) in &listing {
        let path = dir.join(name);
        if targets.iter().any(|t| *t == path) {
            continue;
        }
        let new = under(NEW, &path);
        if targets.iter().any(|t| t.starts_with(&path)) && kind == &HostKind::Dir {
            steps.push(Step::Mkdir { path: new });
            replicate(&path, targets, host, steps);
            continue;
        }
        match kind {
            HostKind::Dir => {
                steps.push(Step::Mkdir { path: new.clone() });
                steps.push(Step::Bind {
                    source: under(OLD, &path),
                    target: new,
                });
            }
            HostKind::Symlink(to) => steps.push(Step::Symlink {
                target: to.clone(),
                path: new,
            }),
            HostKind::Other => {
                steps.push(Step::Touch { path: new.clone() });
                steps.push(Step::Bind {
                    source: under(OLD, &path),
                    target: new,
                });
            }
        }
    }
    // Directories on the way to a target that the host lacks (or has as a
    // non-directory, which is then hidden), and the targets themselves.
    let mut made: Vec<PathBuf> = Vec::new();
    for t in targets {
        let Ok(rest) = t.strip_prefix(dir) else {
            continue;
        };
        let Some(first) = rest.components().next() else {
            continue;
        };
        let path = dir.join(first);
        let present = listing.iter().any(|(n, k)| dir.join(n) == path && *k == HostKind::Dir);
        let is_target = *t == path;
        if (!present || is_target) && !made.contains(&path) {
            // A hidden non-directory of the same name: drop the steps made for it.
            let new = under(NEW, &path);
            steps.retain(|s| !matches!(s, Step::Symlink { path: p, .. } | Step::Touch { path: p } | Step::Bind { target: p, .. } if *p == new));
            steps.push(Step::Mkdir { path: new });
            if !is_target {
                replicate_missing(&path, targets, steps);
            }
            made.push(path);
        }
    }
}

/// Directories below `dir` on the way to targets, none of which the host has.
fn replicate_missing(dir: &Path, targets: &[&Path], steps: &mut Vec<Step>) {
    let mut made: Vec<PathBuf> = Vec::new();
    for t in targets {
        let Ok(rest) = t.strip_prefix(dir) else {
            continue;
        };
        let Some(first) = rest.components().next() else {
            continue;
        };
        let path = dir.join(first);
        if !made.contains(&path) {
            steps.push(Step::Mkdir {
                path: under(NEW, &path),
            });
            if *t != path {
                replicate_missing(&path, targets, steps);
            }
            made.push(path);
        }
    }
}

/// `/newroot` + `/nix/store` = `/newroot/nix/store`.
pub fn under(prefix: &str, path: &Path) -> PathBuf {
    let mut s = OsString::from(prefix);
    if path != Path::new("/") {
        s.push(path.as_os_str());
    }
    PathBuf::from(s)
}

/// A host directory listing from the real file system.
pub struct RealHost;

impl Host for RealHost {
    fn list(&self, dir: &Path) -> Option<Vec<(OsString, HostKind)>> {
        let rd = std::fs::read_dir(dir).ok()?;
        let mut out: Vec<(OsString, HostKind)> = rd
            .flatten()
            .map(|e| {
                let kind = match e.file_type() {
                    Ok(t) if t.is_dir() => HostKind::Dir,
                    Ok(t) if t.is_symlink() => std::fs::read_link(e.path())
                        .map(|to| HostKind::Symlink(to.into_os_string()))
                        .unwrap_or(HostKind::Other),
                    _ => HostKind::Other,
                };
                (e.file_name(), kind)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0)); // determinism: the same host gives the same plan
        Some(out)
    }

    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
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
    }

    fn req<'a>(root: bool, cwd: &'a Path) -> Request<'a> {
        Request {
            root,
            uid: 1000,
            gid: 100,
            scratch: Path::new("/c/id/mnt"),
            mounts: vec![(PathBuf::from("/c/id/tree/nix/store"), PathBuf::from("/nix/store"))],
            cwd,
        }
    }

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
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
    fn root_skips_the_user_namespace() {
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
    fn one_missing_target_means_a_new_root_that_keeps_the_hosts_store() {
        let mut h = debian();
        h.0.get_mut("/").unwrap().push(("nix", HostKind::Dir));
        h.0.insert("/nix", vec![("store", HostKind::Dir), ("var", HostKind::Dir)]);
        h.0.insert("/nix/store", vec![]);
        let mut r = req(false, Path::new("/"));
        r.mounts.push((p("/c/id/tree/opt/tool"), p("/opt/tool")));
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
        assert_eq!(
            tail[..5],
            [
                Step::Mkdir {
                    path: p("/newroot/nix")
                },
                Step::Mkdir {
                    path: p("/newroot/nix/var")
                },
                Step::Bind {
                    source: p("/oldroot/nix/var"),
                    target: p("/newroot/nix/var")
                },
                Step::Mkdir {
                    path: p("/newroot/nix/store")
                },
                Step::Mkdir {
                    path: p("/newroot/opt")
                },
            ]
        );
        assert!(steps.contains(&Step::BundleMount {
            source: p("/oldroot/c/id/tree/nix/store"),
            target: p("/newroot/nix/store"),
            host_lower: Some(p("/oldroot/nix/store"))
        }));
        assert!(steps.contains(&Step::BundleMount {
            source: p("/oldroot/c/id/tree/opt/tool"),
            target: p("/newroot/opt/tool"),
            host_lower: None
        }));
        // The host's /nix itself is never bound wholesale.
        assert!(!steps.contains(&Step::Bind {
            source: p("/oldroot/nix"),
            target: p("/newroot/nix")
        }));
        let mkdirs = |t: &str| steps.iter().filter(|s| **s == Step::Mkdir { path: p(t) }).count();
        assert_eq!((mkdirs("/newroot/nix/store"), mkdirs("/newroot/opt/tool")), (1, 1));
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
