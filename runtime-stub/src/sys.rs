//! The only place that makes namespace and mount system calls, maps memory,
//! forks or execs. Everything here either succeeds or returns a `Failure`
//! naming the step, the path and the errno.

#![allow(unsafe_code)]

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
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

/// Carry out the plan's steps in order.
pub fn run(steps: &[Step], dbg: &Debug) -> Result<()> {
    for step in steps {
        run_step(step, dbg)?;
    }
    Ok(())
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
    std::fs::write(path, data).map_err(|e| {
        let mut f = Failure::io(Code::Namespace, "writing", Path::new(path), &e);
        f.message.push_str(": the host refuses unprivileged user namespaces (AppArmor's kernel.apparmor_restrict_unprivileged_userns, or a seccomp profile)");
        f
    })
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

/// As PID 1 (Nomad exec's own PID namespace): run the entry point as a
/// child, forward every catchable signal to it, reap every zombie, and exit
/// with its status (128+n if it died of signal n). Never returns.
pub fn exec_as_init(path: &[u8], argv: &[Vec<u8>], dbg: &Debug) -> ! {
    let all = SigSet::all();
    let mut old = SigSet::empty();
    if let Err(e) = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&all), Some(&mut old)) {
        crate::fail(Failure::new(Code::Exec, format!("blocking signals: {}", describe(e))));
    }
    // SAFETY: single-threaded at this point (extraction threads were joined),
    // so the child may run any code before exec.
    match unsafe { fork() } {
        Err(e) => crate::fail(Failure::new(Code::Exec, format!("fork: {}", describe(e)))),
        Ok(ForkResult::Child) => {
            let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
            crate::fail(exec(path, argv));
        }
        Ok(ForkResult::Parent { child }) => {
            dbg.step(|| format!("running as PID 1: child {child}"));
            supervise(child, &all)
        }
    }
}

fn supervise(child: Pid, set: &SigSet) -> ! {
    loop {
        let sig = match set.wait() {
            Ok(s) => s,
            Err(_) => continue,
        };
        if sig != Signal::SIGCHLD {
            let _ = kill(child, sig);
            continue;
        }
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == child => std::process::exit(code),
                Ok(WaitStatus::Signaled(pid, s, _)) if pid == child => std::process::exit(128 + s as i32),
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    }
}
