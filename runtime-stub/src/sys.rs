//! The only place that makes namespace and mount system calls, maps memory,
//! forks or execs. Everything here either succeeds or returns a `Failure`
//! naming the step, the path and the errno.
//!
//! Namespaces are built by a helper child ([`enter`]): it makes them, writes
//! its id maps and carries out every mount of the plan, then hands them
//! back, and this process joins them only if every step worked. A host
//! that lets a user namespace be made but refuses what comes next (Ubuntu's
//! AppArmor restriction, a seccomp filter on mount) thus leaves the launcher
//! where it was, free to launch without namespaces instead.

#![allow(unsafe_code)]

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{chdir, execv, fork, pivot_root, ForkResult, Pid};

use crate::debug::Debug;
use crate::error::{describe, Code, Failure, Result};
use crate::plan::Step;

/// Carry out the plan's steps in order, in this process (which is already
/// in the namespaces they need: mount mode's PID 1).
pub fn run(steps: &[Step], dbg: &Debug) -> Result<()> {
    for step in steps {
        run_step(step, dbg)?;
    }
    Ok(())
}

/// Why the namespaces of a launch could not be made. This process is as it
/// was: another way to launch may follow.
#[derive(Debug)]
pub struct Refused(pub Failure);

/// What [`enter`] left this process holding.
pub struct Entered {
    /// The FUSE connection a `MountFuse` step opened.
    pub fuse: Option<OwnedFd>,
}

/// Carry out a plan that starts with `Unshare` (and `MapIds`): a helper
/// child makes the namespaces and carries out every step but the final
/// `Chdir`s; then this process joins its namespaces and changes directory.
/// Any failure before the join is `Refused`: nothing here has changed.
pub fn enter(steps: &[Step], dbg: &Debug) -> std::result::Result<Entered, Refused> {
    let (user, ids) = match steps {
        [Step::Unshare { user: true }, Step::MapIds { uid, gid }, ..] => (true, Some((*uid, *gid))),
        [Step::Unshare { user: false }, ..] => (false, None),
        _ => {
            return Err(Refused(Failure::new(
                Code::Namespace,
                "the plan does not start by unsharing",
            )))
        }
    };
    let skip = if user { 2 } else { 1 };
    let tail = steps
        .iter()
        .rposition(|s| !matches!(s, Step::Chdir { .. }))
        .map_or(skip, |i| i + 1);
    let (inside, after) = (&steps[skip..tail.max(skip)], &steps[tail.max(skip)..]);
    let held = build_in_child(user, ids, inside, dbg)?;
    join(&held, user).map_err(Refused)?;
    for step in after {
        run_step(step, dbg).map_err(Refused)?;
    }
    Ok(Entered { fuse: held.fuse })
}

/// Can this process make namespaces and mount in them? Tried by a helper
/// child, whose namespaces go with it: a cold start asks before it
/// extracts a tree it may not be able to use.
pub fn probe(privileged: bool, uid: u32, gid: u32, dbg: &Debug) -> std::result::Result<(), Refused> {
    let ids = (!privileged).then_some((uid, gid));
    build_in_child(!privileged, ids, &[Step::MakePrivate], dbg).map(drop)
}

/// Namespace descriptors (and a FUSE connection) a helper child opened in
/// the descriptor table it shares with this process.
struct Held {
    user: Option<OwnedFd>,
    mnt: OwnedFd,
    fuse: Option<OwnedFd>,
}

/// The helper: `clone` with new namespaces and a shared descriptor table;
/// the child reports on a pipe, then exits.
fn build_in_child(
    user: bool,
    ids: Option<(u32, u32)>,
    steps: &[Step],
    dbg: &Debug,
) -> std::result::Result<Held, Refused> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Refused(Failure::new(Code::Namespace, format!("pipe: {}", describe(e)))))?;
    let mut flags = nix::libc::CLONE_NEWNS | nix::libc::CLONE_FILES | nix::libc::SIGCHLD;
    if user {
        flags |= nix::libc::CLONE_NEWUSER;
    }
    // SAFETY: a fork-like clone (no new stack: the child runs on a copy of
    // this one). This process is single-threaded here, so the child may run
    // any code; it never returns from `child`.
    let pid = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_clone,
            flags as nix::libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid == 0 {
        child(ids, steps, &w, dbg);
    }
    if pid < 0 {
        return Err(Refused(unshare_failure(user, Errno::last())));
    }
    let _ = waitpid(Pid::from_raw(pid as i32), None);
    // The child's descriptors live in the table we share: nothing reaches
    // EOF on `r` while `w` is open here, so read the one report it wrote.
    let report = read_report(&r);
    drop((r, w));
    report.map_err(Refused)
}

/// The helper child's work: id maps, every step, then descriptors of its
/// namespaces for the parent. Reports `Ok` or the failure, and exits.
fn child(ids: Option<(u32, u32)>, steps: &[Step], w: &OwnedFd, dbg: &Debug) -> ! {
    let work = || -> Result<[i32; 3]> {
        if let Some((uid, gid)) = ids {
            write_proc("/proc/self/setgroups", b"deny")?;
            write_proc("/proc/self/uid_map", format!("{uid} {uid} 1").as_bytes())?;
            write_proc("/proc/self/gid_map", format!("{gid} {gid} 1").as_bytes())?;
            dbg.step(|| format!("MapIds {{ uid: {uid}, gid: {gid} }}"));
        }
        let mut fuse = -1;
        for (i, step) in steps.iter().enumerate() {
            match step {
                Step::MountFuse { target, uid, gid } => fuse = mount_fuse_step(target, *uid, *gid)?,
                _ => run_step(step, dbg).map_err(|f| if i == 0 && ids.is_some() { restricted(f) } else { f })?,
            }
        }
        let open = |p: &str| {
            nix::fcntl::open(
                p,
                nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .map(|fd| fd.into_raw_fd())
            .map_err(|e| Failure::sys(Code::Namespace, "opening", Path::new(p), e))
        };
        let user = if ids.is_some() { open("/proc/self/ns/user")? } else { -1 };
        Ok([user, open("/proc/self/ns/mnt")?, fuse])
    };
    // A status byte (0 ok, 1 failed), then the descriptors, or the failure.
    let msg = match work() {
        Ok(fds) => std::iter::once(0)
            .chain(fds.iter().flat_map(|fd| fd.to_le_bytes()))
            .collect::<Vec<u8>>(),
        Err(f) => {
            let mut m = vec![1, f.code as u8];
            m.extend_from_slice(&f.errno.map_or(0, |e| e as i32).to_le_bytes());
            m.extend_from_slice(f.message.as_bytes());
            m
        }
    };
    let mut framed = (msg.len() as u32).to_le_bytes().to_vec();
    framed.extend_from_slice(&msg);
    let _ = nix::unistd::write(w, &framed);
    // SAFETY: ends the helper without running this process's exit handlers.
    unsafe { nix::libc::_exit(0) }
}

fn read_report(r: &OwnedFd) -> Result<Held> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let lost = || Failure::new(Code::Namespace, "the namespace helper ended without a report");
    loop {
        if buf.len() >= 4 && buf.len() >= 4 + u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize {
            break;
        }
        // The report is in the pipe before the helper exits, or never.
        let mut fds = [nix::poll::PollFd::new(r.as_fd(), nix::poll::PollFlags::POLLIN)];
        if nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO) != Ok(1) {
            return Err(lost());
        }
        match nix::unistd::read(r, &mut chunk) {
            Ok(0) | Err(_) => return Err(lost()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let msg = &buf[4..];
    if msg.first() == Some(&1) && msg.len() >= 6 {
        let code = match msg[1] {
            113 => Code::Usage,
            114 => Code::Bundle,
            115 => Code::Cache,
            117 => Code::Exec,
            _ => Code::Namespace,
        };
        let errno = i32::from_le_bytes([msg[2], msg[3], msg[4], msg[5]]);
        let mut f = Failure::new(code, String::from_utf8_lossy(&msg[6..]).into_owned());
        if errno != 0 {
            f = f.with_errno(Errno::from_raw(errno));
        }
        return Err(f);
    }
    if msg.first() != Some(&0) {
        return Err(lost());
    }
    let fd = |i: usize| -> Option<OwnedFd> {
        let raw = i32::from_le_bytes(msg.get(1 + i * 4..1 + i * 4 + 4)?.try_into().ok()?);
        // SAFETY: the helper opened these in the table we share and keeps
        // no copy: from here on this process owns them.
        (raw >= 0).then(|| unsafe { OwnedFd::from_raw_fd(raw) })
    };
    Ok(Held {
        user: fd(0),
        mnt: fd(1).ok_or_else(lost)?,
        fuse: fd(2),
    })
}

/// Join the helper's namespaces: the user namespace first (this process
/// then has every capability in it), then the mount namespace, which also
/// sets root and working directory to its root.
fn join(held: &Held, user: bool) -> Result<()> {
    use nix::sched::{setns, CloneFlags};
    // Neither namespace can be joined by a multi-threaded process (EINVAL),
    // and the extraction threads, joined already, may not have left the
    // kernel yet.
    wait_single_threaded();
    if let (true, Some(u)) = (user, &held.user) {
        setns(u, CloneFlags::CLONE_NEWUSER)
            .map_err(|e| ns("joining the user namespace of", Path::new("/proc/self/ns/user"), e))?;
    }
    setns(&held.mnt, CloneFlags::CLONE_NEWNS)
        .map_err(|e| ns("joining the mount namespace of", Path::new("/proc/self/ns/mnt"), e))
}

/// The first step inside a new user namespace failed: the host lets one be
/// made but refuses to let it do anything.
fn restricted(mut f: Failure) -> Failure {
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
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    const CAP_SYS_ADMIN: u32 = 21;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: both pointers are valid for capget's version 3 layout.
    let rc = unsafe { nix::libc::syscall(nix::libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    rc == 0 && data[0].effective & (1 << CAP_SYS_ADMIN) != 0
}

fn ns(step: &str, path: &Path, e: Errno) -> Failure {
    Failure::sys(Code::Namespace, step, path, e)
}

fn run_step(step: &Step, dbg: &Debug) -> Result<()> {
    let none: Option<&str> = None;
    match step {
        Step::Unshare { user } => {
            let mut flags = CloneFlags::CLONE_NEWNS;
            if *user {
                flags |= CloneFlags::CLONE_NEWUSER;
                wait_single_threaded();
            }
            unshare(flags).map_err(|e| unshare_failure(*user, e))?;
        }
        Step::MapIds { uid, gid } => {
            write_proc("/proc/self/setgroups", b"deny")?;
            write_proc("/proc/self/uid_map", format!("{uid} {uid} 1").as_bytes())?;
            write_proc("/proc/self/gid_map", format!("{gid} {gid} 1").as_bytes())?;
        }
        Step::MountFuse { target, .. } => {
            // The connection must reach the launcher: only `enter` can.
            return Err(ns(
                "mounting FUSE (outside a namespace helper) on",
                target,
                Errno::EINVAL,
            ));
        }
        Step::MakePrivate => {
            mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)
                .map_err(|e| ns("making private", Path::new("/"), e))?;
        }
        Step::MountTmpfs { target } => {
            mount(
                Some("tote"),
                target,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                Some("mode=0755"),
            )
            .map_err(|e| ns("mounting tmpfs on", target, e))?;
        }
        Step::Mkdir { path } => {
            std::fs::create_dir(path).map_err(|e| Failure::io(Code::Namespace, "creating mount point", path, &e))?;
        }
        Step::Symlink { target, path } => {
            std::os::unix::fs::symlink(target, path)
                .map_err(|e| Failure::io(Code::Namespace, "creating symlink", path, &e))?;
        }
        Step::Touch { path } => {
            File::create(path).map_err(|e| Failure::io(Code::Namespace, "creating mount point", path, &e))?;
        }
        Step::Bind { source, target } => {
            mount(
                Some(source.as_path()),
                target,
                none,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                none,
            )
            .map_err(|e| ns(&format!("binding {} on", source.display()), target, e))?;
        }
        Step::BundleMount {
            source,
            target,
            host_lower,
        } => {
            let ro = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
            if let Some(lower) = host_lower {
                let mut opts = OsString::from("lowerdir=");
                opts.push(escape_overlay(source.as_os_str()));
                opts.push(":");
                opts.push(escape_overlay(lower.as_os_str()));
                match mount(Some("tote"), target, Some("overlay"), ro, Some(opts.as_os_str())) {
                    Ok(()) => {
                        dbg.step(|| format!("overlay of bundle and host on {}", target.display()));
                        return Ok(());
                    }
                    Err(e) => {
                        dbg.step(|| format!("overlay refused ({}), bundle only on {}", describe(e), target.display()))
                    }
                }
            }
            mount(
                Some(source.as_path()),
                target,
                none,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                none,
            )
            .map_err(|e| ns(&format!("binding {} on", source.display()), target, e))?;
            mount(none, target, none, MsFlags::MS_BIND | MsFlags::MS_REMOUNT | ro, none)
                .map_err(|e| ns("making read-only", target, e))?;
        }
        Step::PivotRoot { new_root, put_old } => {
            pivot_root(new_root, put_old).map_err(|e| pivot_failure(new_root, e))?;
            chdir("/").map_err(|e| ns("entering", Path::new("/"), e))?;
        }
        Step::EnterRoot { path } => {
            chdir(path).map_err(|e| ns("entering", path, e))?;
            pivot_root(".", ".").map_err(|e| pivot_failure(path, e))?;
            // The previous root is now stacked on top of the new one: detach it.
            umount2(".", MntFlags::MNT_DETACH).map_err(|e| ns("detaching the old root at", path, e))?;
            chdir("/").map_err(|e| ns("entering", Path::new("/"), e))?;
        }
        Step::Detach { path } => {
            umount2(path.as_path(), MntFlags::MNT_DETACH).map_err(|e| ns("detaching", path, e))?;
        }
        Step::RemountRootReadOnly => {
            let flags =
                MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
            mount(none, "/", none, flags, none).map_err(|e| ns("making read-only", Path::new("/"), e))?;
        }
        Step::Chdir { path } => {
            chdir(path.as_path()).map_err(|e| {
                Failure::new(
                    Code::Namespace,
                    format!(
                        "restoring the working directory {}: {} (it is not visible inside the bundle's view)",
                        path.display(),
                        describe(e)
                    ),
                )
            })?;
        }
    }
    dbg.step(|| format!("{step:?}"));
    Ok(())
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

/// Open `/dev/fuse` (in the current user namespace, where the kernel
/// requires it to have been opened) and mount it at `target`; returns the
/// connection's raw descriptor.
fn mount_fuse_step(target: &Path, uid: u32, gid: u32) -> Result<RawFd> {
    let fd = open_fuse().map_err(|e| Failure::sys(Code::Namespace, "opening", Path::new("/dev/fuse"), e))?;
    mount_fuse(target, &fd, uid, gid).map_err(|e| Failure::sys(Code::Namespace, "mounting FUSE on", target, e))?;
    Ok(fd.into_raw_fd())
}

fn unshare_failure(user: bool, e: Errno) -> Failure {
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

fn cstr(b: &[u8]) -> Result<CString> {
    CString::new(b).map_err(|_| Failure::new(Code::Exec, "an argument contains a NUL byte"))
}

/// Replace this process with the entry point. Only returns on failure.
pub fn exec(path: &[u8], argv: &[Vec<u8>]) -> Failure {
    let args: Result<Vec<CString>> = argv.iter().map(|a| cstr(a)).collect();
    let (prog, args) = match (cstr(path), args) {
        (Ok(p), Ok(a)) => (p, a),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    let e = execv(&prog, &args).unwrap_err();
    let hint = match e {
        Errno::ENOENT => ": the entry point (or its interpreter) is missing in the bundle's view",
        Errno::EACCES => ": not executable, or the cache is on a noexec mount",
        _ => "",
    };
    Failure::new(
        Code::Exec,
        format!(
            "executing {}: {}{hint}",
            Path::new(OsStr::from_bytes(path)).display(),
            describe(e)
        ),
    )
}

/// As PID 1 (Nomad exec's own PID namespace, or mount mode's): run the
/// entry point as a child, forward signals to it, reap every zombie, and
/// exit with its status (128+n if it died of signal n: PID 1 cannot die of
/// a signal it sent itself). `status`, if given, gets how the program ended
/// (`Ended::encode`) for a parent that can die the same way. Never returns.
pub fn exec_as_init(path: &[u8], argv: &[Vec<u8>], dbg: &Debug, status: Option<OwnedFd>) -> ! {
    let old = block_signals().unwrap_or_else(|f| crate::fail(f));
    // SAFETY: single-threaded at this point (extraction threads were joined;
    // mount mode's PID 1 was forked without its parent's threads), so the
    // child may run any code before exec.
    match unsafe { fork() } {
        Err(e) => crate::fail(Failure::new(Code::Exec, format!("fork: {}", describe(e)))),
        Ok(ForkResult::Child) => {
            let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
            crate::fail(exec(path, argv));
        }
        Ok(ForkResult::Parent { child }) => {
            dbg.step(|| format!("running as PID 1: child {child}"));
            let ended = supervise(child, &SigSet::all());
            if let Some(fd) = status {
                let _ = nix::unistd::write(&fd, &ended.encode());
            }
            std::process::exit(ended.code())
        }
    }
}

/// Run `job` in a process of its own, detached from this one: a grandchild
/// in a new session, its standard streams on `/dev/null` and every other
/// descriptor closed (so that nothing waiting on this process's pipes, or
/// on an entry's pin, waits on it too), at the lowest CPU and I/O priority
/// (best effort, not idle: an idle-class process can starve for as long
/// as the disk stays busy).
///
/// `job` is handed a close-on-exec descriptor, `started`, and this returns
/// only once the grandchild has let go of it (by an exec or by dropping
/// it): until then the grandchild shares this process's memory image, and
/// with it the running file, which a new version written over the bundle
/// at that moment would find busy (`ETXTBSY`). Returns whether the job
/// started.
pub fn spawn_detached(job: impl FnOnce(OwnedFd)) -> bool {
    let Ok((wait_end, started)) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) else {
        return false;
    };
    // SAFETY: single-threaded here (extraction threads were joined), so the
    // child may run any code.
    match unsafe { fork() } {
        Err(_) => false,
        Ok(ForkResult::Parent { child }) => {
            drop(started);
            let ok = matches!(waitpid(child, None), Ok(WaitStatus::Exited(_, 0)));
            // EOF once no process holds `started`: the grandchild exec'd,
            // dropped it, or ended.
            let mut b = [0u8; 1];
            while matches!(nix::unistd::read(&wait_end, &mut b), Ok(1) | Err(Errno::EINTR)) {}
            ok
        }
        Ok(ForkResult::Child) => {
            drop(wait_end);
            let _ = nix::unistd::setsid();
            // SAFETY: as above; the intermediate child exits at once.
            match unsafe { fork() } {
                Ok(ForkResult::Child) => {}
                Ok(ForkResult::Parent { .. }) => unsafe { nix::libc::_exit(0) },
                Err(_) => unsafe { nix::libc::_exit(1) },
            }
            let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
            // `started` moves to descriptor 3 (still close-on-exec), out of
            // the way of the standard streams.
            let raw = started.into_raw_fd();
            if raw != 3 {
                // SAFETY: descriptor numbers of this process; the old one
                // is owned by nothing once moved.
                unsafe {
                    if nix::libc::dup3(raw, 3, nix::libc::O_CLOEXEC) != 3 {
                        nix::libc::_exit(1);
                    }
                    nix::libc::close(raw);
                }
            }
            // SAFETY: descriptor 3 is now `started`, owned here alone.
            let started = unsafe { OwnedFd::from_raw_fd(3) };
            if let Ok(null) = nix::fcntl::open("/dev/null", nix::fcntl::OFlag::O_RDWR, nix::sys::stat::Mode::empty()) {
                for fd in 0..3 {
                    // SAFETY: dup2 onto the standard descriptors.
                    unsafe { nix::libc::dup2(null.as_raw_fd(), fd) };
                }
                if null.as_raw_fd() < 3 {
                    let _ = null.into_raw_fd();
                }
            }
            // SAFETY: plain system calls on this process; nothing in it
            // owns a descriptor above 3 from here on.
            unsafe {
                if nix::libc::syscall(nix::libc::SYS_close_range, 4u32, u32::MAX, 0u32) != 0 {
                    for fd in 4..4096 {
                        nix::libc::close(fd);
                    }
                }
                nix::libc::setpriority(nix::libc::PRIO_PROCESS, 0, 19);
                // IOPRIO_WHO_PROCESS, this process, IOPRIO_CLASS_BE level 7.
                nix::libc::syscall(nix::libc::SYS_ioprio_set, 1, 0, (2 << 13) | 7);
            }
            job(started);
            // SAFETY: end the grandchild without running this process's
            // exit handlers a second time.
            unsafe { nix::libc::_exit(0) }
        }
    }
}

/// Exec a copy of this stub (the first `len` bytes of the running file,
/// its ELF image without the payload) from memory, with `argv`: the
/// process then holds no reference to the bundle file. Returns only if it
/// could not.
pub fn exec_self_copy(len: u64, argv: &[CString]) -> Errno {
    let run = || -> std::result::Result<std::convert::Infallible, Errno> {
        let exe = nix::fcntl::open(
            "/proc/self/exe",
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )?;
        let name = CString::new("tote-trim").map_err(|_| Errno::EINVAL)?;
        // SAFETY: memfd_create with a valid name; the fd is owned below.
        let fd = Errno::result(unsafe { nix::libc::memfd_create(name.as_ptr(), nix::libc::MFD_CLOEXEC) })?;
        // SAFETY: a descriptor just returned, owned by nothing else.
        let memfd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut copied = 0u64;
        while copied < len {
            let n = nix::sys::sendfile::sendfile(&memfd, &exe, None, (len - copied) as usize)?;
            if n == 0 {
                return Err(Errno::EIO);
            }
            copied += n as u64;
        }
        let env: Vec<CString> = std::env::vars_os()
            .filter_map(|(k, v)| CString::new([k.as_bytes(), b"=", v.as_bytes()].concat()).ok())
            .collect();
        nix::unistd::fexecve(&memfd, argv, &env)
    };
    match run() {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

/// How a supervised child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Exited(i32),
    Signaled(Signal),
}

impl Ended {
    /// The exit code a shell would report.
    pub fn code(self) -> i32 {
        match self {
            Ended::Exited(c) => c,
            Ended::Signaled(s) => 128 + s as i32,
        }
    }

    /// Two bytes for a status pipe.
    pub fn encode(self) -> [u8; 2] {
        match self {
            Ended::Exited(c) => [0, c as u8],
            Ended::Signaled(s) => [1, s as u8],
        }
    }

    pub fn decode(b: &[u8]) -> Option<Ended> {
        match b {
            [0, c] => Some(Ended::Exited(i32::from(*c))),
            [1, s] => Signal::try_from(i32::from(*s)).ok().map(Ended::Signaled),
            _ => None,
        }
    }
}

/// Wait for `child`, forwarding signals to it and reaping every zombie,
/// and say how it ended. All signals must be blocked.
///
/// Signals the kernel sent (a terminal's Ctrl-C, Ctrl-\\, Ctrl-Z, window
/// size change, hang-up) are not forwarded: the terminal sent them to the
/// whole foreground process group, the program included, which must get
/// them once. After a stop signal this process stops too, so that a shell
/// sees its job stopped (PID 1 cannot stop, and does not).
pub fn supervise(child: Pid, set: &SigSet) -> Ended {
    loop {
        // SAFETY: a zeroed siginfo_t is valid; sigwaitinfo fills it.
        let mut info: nix::libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: both pointers are valid for the call.
        let n = unsafe { nix::libc::sigwaitinfo(set.as_ref(), &mut info) };
        let Ok(sig) = Signal::try_from(n) else {
            continue; // EINTR
        };
        if sig != Signal::SIGCHLD {
            if info.si_code != nix::libc::SI_KERNEL {
                let _ = kill(child, sig);
            }
            if matches!(sig, Signal::SIGTSTP | Signal::SIGTTIN | Signal::SIGTTOU) {
                let _ = kill(Pid::this(), Signal::SIGSTOP);
            }
            continue;
        }
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == child => return Ended::Exited(code),
                Ok(WaitStatus::Signaled(pid, s, _)) if pid == child => return Ended::Signaled(s),
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    }
}

/// End this process as `ended` ended the child: the same exit code, or
/// death by the same signal (with a core dump where the limits allow one),
/// so that the caller cannot tell the launcher from the program.
pub fn end_like(ended: Ended) -> ! {
    if let Ended::Signaled(sig) = ended {
        let dfl = nix::sys::signal::SigAction::new(
            nix::sys::signal::SigHandler::SigDfl,
            nix::sys::signal::SaFlags::empty(),
            SigSet::empty(),
        );
        // SAFETY: restoring the default disposition.
        let _ = unsafe { nix::sys::signal::sigaction(sig, &dfl) };
        let mut only = SigSet::empty();
        only.add(sig);
        let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&only), None);
        let _ = nix::sys::signal::raise(sig);
    }
    std::process::exit(ended.code())
}

/// Block every signal (so that threads started later never take one, and
/// `supervise` can wait for them); returns the mask to restore.
pub fn block_signals() -> Result<SigSet> {
    let mut old = SigSet::empty();
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&SigSet::all()), Some(&mut old))
        .map_err(|e| Failure::new(Code::Exec, format!("blocking signals: {}", describe(e))))?;
    Ok(old)
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
pub fn mount_fuse(target: &Path, fd: &OwnedFd, uid: u32, gid: u32) -> std::result::Result<(), Errno> {
    let opts = format!(
        "fd={},rootmode=40000,user_id={uid},group_id={gid},allow_other,default_permissions",
        fd.as_raw_fd()
    );
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    mount(Some("tote"), target, Some("fuse.tote"), flags, Some(opts.as_str()))
}

/// Map the whole file read-only for the life of the process. (Its bytes
/// cannot change under us: it is this process's executable, so the kernel
/// refuses writes to it with ETXTBSY.)
pub fn map_file(path: &Path) -> Result<&'static [u8]> {
    let file = File::open(path).map_err(|e| Failure::io(Code::Bundle, "opening bundle", path, &e))?;
    let len = file
        .metadata()
        .map_err(|e| Failure::io(Code::Bundle, "reading bundle", path, &e))?
        .len() as usize;
    let Some(nonzero) = std::num::NonZeroUsize::new(len) else {
        return Ok(&[]);
    };
    // SAFETY: a fresh private read-only mapping; see above for why its
    // contents stay put. It is never unmapped, hence `'static`.
    let ptr = unsafe {
        nix::sys::mman::mmap(
            None,
            nonzero,
            nix::sys::mman::ProtFlags::PROT_READ,
            nix::sys::mman::MapFlags::MAP_PRIVATE,
            &file,
            0,
        )
    }
    .map_err(|e| Failure::sys(Code::Bundle, "mapping bundle", path, e))?;
    let start = ptr.as_ptr() as usize;
    let _ = MAPPED.set((start, (start + len).next_multiple_of(4096)));
    // SAFETY: `len` readable bytes at `ptr`, valid forever (never unmapped).
    Ok(unsafe { std::slice::from_raw_parts(ptr.as_ptr().cast::<u8>(), len) })
}

/// Peak resident set size of this process, in KiB.
pub fn peak_rss_kib() -> i64 {
    // SAFETY: a zeroed rusage is valid; getrusage fills it.
    let mut usage: nix::libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer for the call.
    if unsafe { nix::libc::getrusage(nix::libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0;
    }
    usage.ru_maxrss
}

/// The bundle's mapping, `[start, end)`, once `map_file` made it.
static MAPPED: std::sync::OnceLock<(usize, usize)> = std::sync::OnceLock::new();

/// Drop this process's mapping of the pages under `bytes` (part of the
/// `map_file` mapping): the next access maps them again from the page
/// cache. Keeps the pages a long-running server has read out of its memory.
/// Rounded out to 2 MiB: a page fault maps the pages around it too (the
/// kernel's fault-around, which maps whole large folios of the page cache:
/// 1 MiB for 16 pages touched, measured on Linux 6.18 with ext4), and those
/// would stay. Clamped to the mapping: MADV_DONTNEED on a neighbouring
/// anonymous mapping would zero it.
pub fn unmap_pages(bytes: &[u8]) {
    const WINDOW: usize = 2 << 20;
    let Some(&(lo, hi)) = MAPPED.get() else { return };
    let start = (bytes.as_ptr() as usize & !(WINDOW - 1)).max(lo);
    let end = (bytes.as_ptr() as usize + bytes.len()).next_multiple_of(WINDOW).min(hi);
    if start >= end {
        return;
    }
    if let Some(ptr) = std::ptr::NonNull::new(start as *mut std::ffi::c_void) {
        // SAFETY: whole pages inside the private read-only file mapping,
        // which is never unmapped; MADV_DONTNEED only drops them from the
        // page tables, so later reads fault the same bytes back in.
        let _ = unsafe { nix::sys::mman::madvise(ptr, end - start, nix::sys::mman::MmapAdvise::MADV_DONTNEED) };
    }
}

/// Mount a procfs of the current PID namespace over `/proc`.
pub fn mount_proc() -> std::result::Result<(), Errno> {
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(Some("proc"), "/proc", Some("proc"), flags, None::<&str>)
}

/// Fork the first process of a new PID namespace. It runs `child` with
/// the signal mask `mask`, never holding `close` (the FUSE connection, so
/// that the connection ends with this process), and is killed when this
/// process dies, however it dies; when it exits, the kernel kills every
/// process left in its namespace. This process may have threads: the child
/// only runs code that is safe after such a fork with glibc.
///
/// `child` gets the write end of a status pipe for `exec_as_init`; the
/// read end is returned with the child's PID.
pub fn fork_pid_namespace(
    close: RawFd,
    mask: &SigSet,
    child: impl FnOnce(OwnedFd) -> Failure,
) -> Result<(Pid, OwnedFd)> {
    unshare(CloneFlags::CLONE_NEWPID)
        .map_err(|e| Failure::new(Code::Namespace, format!("unshare(CLONE_NEWPID): {}", describe(e))).with_errno(e))?;
    let pipe = || {
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| Failure::new(Code::Namespace, format!("pipe: {}", describe(e))))
    };
    let (alive_r, alive_w) = pipe()?;
    let (status_r, status_w) = pipe()?;
    // SAFETY: see the function's comment.
    match unsafe { fork() } {
        Err(e) => Err(Failure::new(Code::Exec, format!("fork: {}", describe(e)))),
        Ok(ForkResult::Child) => {
            drop(alive_w);
            drop(status_r);
            let _ = nix::unistd::close(close);
            let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
            // Died before the line above? Its end of the pipe is closed.
            let mut fds = [nix::poll::PollFd::new(alive_r.as_fd(), nix::poll::PollFlags::POLLIN)];
            if nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO) != Ok(0) {
                std::process::exit(Code::Exec as i32);
            }
            drop(alive_r);
            let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(mask), None);
            crate::fail(child(status_w))
        }
        Ok(ForkResult::Parent { child }) => {
            drop(alive_r);
            drop(status_w);
            std::mem::forget(alive_w); // closed by the kernel when this process ends
            Ok((child, status_r))
        }
    }
}
