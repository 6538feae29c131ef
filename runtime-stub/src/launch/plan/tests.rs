//! The planner's cases, as data: hosts with and without a Nix store, merged
//! /usr or not, image roots, mount mode's view.

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
