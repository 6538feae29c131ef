//! User and mount namespaces: unsharing them, mapping ids, joining another
//! process's, and saying why a host refuses them, with the fix.

use std::os::fd::OwnedFd;
use std::path::Path;

use nix::errno::Errno;
use nix::sched::{setns, unshare as unshare_flags, CloneFlags};

use super::arch;
use crate::error::{describe, Code, Failure, Result};

/// `unshare(CLONE_NEWNS)`, with `CLONE_NEWUSER` if `user`.
pub fn unshare(user: bool) -> Result<()> {
    let mut flags = CloneFlags::CLONE_NEWNS;
    if user {
        flags |= CloneFlags::CLONE_NEWUSER;
        wait_single_threaded();
    }
    unshare_flags(flags).map_err(|e| unshare_failure(user, e))
}

/// In a new user namespace: deny setgroups, then map `uid`/`gid` to
/// themselves.
pub fn map_ids(uid: u32, gid: u32) -> Result<()> {
    write_proc("/proc/self/setgroups", b"deny")?;
    write_proc("/proc/self/uid_map", format!("{uid} {uid} 1").as_bytes())?;
    write_proc("/proc/self/gid_map", format!("{gid} {gid} 1").as_bytes())
}

/// Join another process's namespaces through their descriptors: the user
/// namespace first (this process then has every capability in it), then
/// the mount namespace, which also sets root and working directory to its
/// root.
pub fn join(user: Option<&OwnedFd>, mnt: &OwnedFd) -> Result<()> {
    // Neither namespace can be joined by a multi-threaded process (EINVAL),
    // and the extraction threads, joined already, may not have left the
    // kernel yet.
    wait_single_threaded();
    if let Some(u) = user {
        setns(u, CloneFlags::CLONE_NEWUSER).map_err(|e| {
            Failure::sys(
                Code::Namespace,
                "joining the user namespace of",
                Path::new("/proc/self/ns/user"),
                e,
            )
        })?;
    }
    setns(mnt, CloneFlags::CLONE_NEWNS).map_err(|e| {
        Failure::sys(
            Code::Namespace,
            "joining the mount namespace of",
            Path::new("/proc/self/ns/mnt"),
            e,
        )
    })
}

/// The first step inside a new user namespace failed: the host lets one be
/// made but refuses to let it do anything.
pub fn restricted(mut f: Failure) -> Failure {
    if matches!(f.errno, Some(Errno::EPERM | Errno::EACCES)) {
        f.message.push_str(&format!(": {}", restricted_cause()));
    }
    f
}

/// Ubuntu 23.10+ (and 24.04 LTS) by default; a seccomp filter on mount has
/// the same effect.
fn restricted_cause() -> &'static str {
    "user namespaces are restricted here: one can be made, but mounting in it is refused (Ubuntu's AppArmor \
     restriction, sysctl kernel.apparmor_restrict_unprivileged_userns=1: set it to 0, or give this program an \
     AppArmor profile with `userns,`; or a seccomp filter that refuses mount)"
}

/// Is `CAP_SYS_ADMIN` in this process's effective set? Root in a container
/// usually lacks it, and is then an unprivileged user here.
pub fn has_cap_sys_admin() -> bool {
    let mut header = arch::CapHeader {
        version: arch::CAP_VERSION_3,
        pid: 0,
    };
    let mut data = [arch::CapData::default(); 2];
    // SAFETY: both pointers are valid for capget's version 3 layout.
    let rc = unsafe { nix::libc::syscall(arch::CAPGET, &mut header, data.as_mut_ptr()) };
    rc == 0 && data[0].effective & (1 << arch::CAP_SYS_ADMIN) != 0
}

/// `unshare(CLONE_NEWUSER)` fails with EINVAL while the process has other
/// threads, and a joined thread stays in the thread group for a moment
/// after `pthread_join` returns. After a cold extraction, wait (briefly) until
/// the extraction threads are really gone.
fn wait_single_threaded() {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while std::fs::read_dir("/proc/self/task").map_or(1, |d| d.count()) > 1 && std::time::Instant::now() < deadline {
        std::thread::yield_now();
    }
}

fn write_proc(path: &str, data: &[u8]) -> Result<()> {
    std::fs::write(path, data).map_err(|e| restricted(Failure::io(Code::Namespace, "writing", Path::new(path), &e)))
}

/// The failure of `unshare` (or of a `clone` with the same flags).
pub fn unshare_failure(user: bool, e: Errno) -> Failure {
    let what = if user {
        "CLONE_NEWUSER|CLONE_NEWNS"
    } else {
        "CLONE_NEWNS"
    };
    let fix = match (user, e) {
        (true, Errno::EPERM | Errno::ENOSPC | Errno::EINVAL | Errno::EACCES) => userns_refusal_cause(e),
        (false, Errno::EPERM) => "CAP_SYS_ADMIN is missing".into(),
        _ => String::new(),
    };
    let sep = if fix.is_empty() { "" } else { ": " };
    Failure::new(Code::Namespace, format!("unshare({what}): {}{sep}{fix}", describe(e))).with_errno(e)
}

/// Why the host refuses an unprivileged user namespace, and the fix, from
/// the knobs that can cause it (checked in the order they apply).
fn userns_refusal_cause(e: Errno) -> String {
    let knob = |p: &str| std::fs::read_to_string(p).ok().map(|v| v.trim().to_string());
    if knob("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
        return "user namespaces are switched off (sysctl user.max_user_namespaces is 0 here; \
                set it to e.g. 15000 on the host, or in the enclosing namespace)"
            .into();
    }
    if e == Errno::ENOSPC {
        return "the limit on user namespaces is reached (sysctl user.max_user_namespaces, here or in an \
                enclosing namespace)"
            .into();
    }
    if knob("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        return "unprivileged user namespaces are switched off (sysctl kernel.unprivileged_userns_clone=1 \
                enables them)"
            .into();
    }
    if knob("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1") {
        return "AppArmor restricts unprivileged user namespaces (sysctl \
                kernel.apparmor_restrict_unprivileged_userns=0, or an AppArmor profile with `userns,` for \
                this program)"
            .into();
    }
    let seccomp = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Seccomp:").map(|v| v.trim() == "2"))
        })
        .unwrap_or(false);
    if seccomp {
        return "a seccomp filter refuses it (Docker's default profile does: run the container with a \
                profile that allows unshare and mount, or --security-opt seccomp=unconfined)"
            .into();
    }
    "user namespaces are refused here (already inside a namespace that forbids nesting, or a chroot); \
     run as root, or allow them with sysctl user.max_user_namespaces"
        .into()
}
