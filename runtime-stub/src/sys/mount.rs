//! Mounts, one function per kind a launch view needs: private propagation,
//! tmpfs, bind, the bundle's read-only trees (overlaid on the host's where
//! asked), `pivot_root`, detaching, FUSE and `/proc`.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::unistd::{chdir, pivot_root};

use crate::debug::Debug;
use crate::error::{describe, Code, Failure, Result};

const NONE: Option<&str> = None;

pub fn ns(step: &str, path: &Path, e: Errno) -> Failure {
    Failure::sys(Code::Namespace, step, path, e)
}

/// Stop mount events from reaching the host.
pub fn make_private() -> Result<()> {
    mount(NONE, "/", NONE, MsFlags::MS_REC | MsFlags::MS_PRIVATE, NONE)
        .map_err(|e| ns("making private", Path::new("/"), e))
}

pub fn tmpfs(target: &Path) -> Result<()> {
    mount(
        Some("tote"),
        target,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    )
    .map_err(|e| ns("mounting tmpfs on", target, e))
}

/// Recursive bind mount, writable as the source is.
pub fn bind(source: &Path, target: &Path) -> Result<()> {
    mount(Some(source), target, NONE, MsFlags::MS_BIND | MsFlags::MS_REC, NONE)
        .map_err(|e| ns(&format!("binding {} on", source.display()), target, e))
}

/// A tree of the bundle's at `target`, read-only: layered over
/// `host_lower` with overlayfs if given (true: done so), else, or if
/// overlayfs is refused, bound alone.
pub fn bundle(source: &Path, target: &Path, host_lower: Option<&Path>, dbg: &Debug) -> Result<bool> {
    let ro = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    if let Some(lower) = host_lower {
        let mut opts = OsString::from("lowerdir=");
        opts.push(escape_overlay(source.as_os_str()));
        opts.push(":");
        opts.push(escape_overlay(lower.as_os_str()));
        match mount(Some("tote"), target, Some("overlay"), ro, Some(opts.as_os_str())) {
            Ok(()) => {
                dbg.step(|| format!("overlay of bundle and host on {}", target.display()));
                return Ok(true);
            }
            Err(e) => dbg.step(|| format!("overlay refused ({}), bundle only on {}", describe(e), target.display())),
        }
    }
    bind(source, target)?;
    mount(NONE, target, NONE, MsFlags::MS_BIND | MsFlags::MS_REMOUNT | ro, NONE)
        .map_err(|e| ns("making read-only", target, e))?;
    Ok(false)
}

/// `pivot_root(new_root, put_old)`, then into the new root.
pub fn pivot(new_root: &Path, put_old: &Path) -> Result<()> {
    pivot_root(new_root, put_old).map_err(|e| pivot_failure(new_root, e))?;
    chdir("/").map_err(|e| ns("entering", Path::new("/"), e))
}

/// Make `path` the root and detach everything else.
pub fn enter_root(path: &Path) -> Result<()> {
    chdir(path).map_err(|e| ns("entering", path, e))?;
    pivot_root(".", ".").map_err(|e| pivot_failure(path, e))?;
    // The previous root is now stacked on top of the new one: detach it.
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| ns("detaching the old root at", path, e))?;
    chdir("/").map_err(|e| ns("entering", Path::new("/"), e))
}

/// Lazily unmount `path` and everything below it.
pub fn detach(path: &Path) -> Result<()> {
    umount2(path, MntFlags::MNT_DETACH).map_err(|e| ns("detaching", path, e))
}

pub fn remount_root_read_only() -> Result<()> {
    let flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    mount(NONE, "/", NONE, flags, NONE).map_err(|e| ns("making read-only", Path::new("/"), e))
}

/// `/dev/fuse`, for mount mode.
pub fn open_fuse() -> std::result::Result<OwnedFd, Errno> {
    nix::fcntl::open(
        "/dev/fuse",
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
}

/// Mount the FUSE connection `fd` read-only at `target`, owned by
/// `uid`/`gid` (ids inside the namespace); the kernel checks permissions
/// from the modes the server reports, for every user.
fn mount_fuse(target: &Path, fd: &OwnedFd, uid: u32, gid: u32) -> std::result::Result<(), Errno> {
    let opts = format!(
        "fd={},rootmode=40000,user_id={uid},group_id={gid},allow_other,default_permissions",
        fd.as_raw_fd()
    );
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    mount(Some("tote"), target, Some("fuse.tote"), flags, Some(opts.as_str()))
}

/// Open `/dev/fuse` (in the current user namespace, where the kernel
/// requires it to have been opened) and mount it at `target`; returns the
/// connection's raw descriptor.
pub fn fuse(target: &Path, uid: u32, gid: u32) -> Result<RawFd> {
    let fd = open_fuse().map_err(|e| Failure::sys(Code::Namespace, "opening", Path::new("/dev/fuse"), e))?;
    mount_fuse(target, &fd, uid, gid).map_err(|e| Failure::sys(Code::Namespace, "mounting FUSE on", target, e))?;
    Ok(fd.into_raw_fd())
}

/// Mount a procfs of the current PID namespace over `/proc`.
pub fn mount_proc() -> std::result::Result<(), Errno> {
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(Some("proc"), "/proc", Some("proc"), flags, None::<&str>)
}

fn pivot_failure(path: &Path, e: Errno) -> Failure {
    let mut f = ns("pivot_root into", path, e);
    if e == Errno::EINVAL {
        f.message
            .push_str(": the current root is not a mount point (a chroot, or Nomad's no_pivot_root)");
    }
    f
}

/// overlayfs option values treat `,` `:` and `\` specially.
fn escape_overlay(p: &OsStr) -> OsString {
    let mut out = Vec::new();
    for &b in p.as_bytes() {
        if matches!(b, b',' | b':' | b'\\') {
            out.push(b'\\');
        }
        out.push(b);
    }
    OsString::from_vec(out)
}
