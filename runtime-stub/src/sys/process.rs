//! Processes: exec in place, PID 1's supervision of the program (signals
//! forwarded, zombies reaped, the same ending), a detached low-priority
//! child, a copy of the stub run from memory, the first process of a PID
//! namespace; and the CPUs this process may use.

use std::ffi::{CString, OsStr};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{execv, fork, ForkResult, Pid};

use super::arch;
use crate::debug::Debug;
use crate::error::{describe, fail, Code, Failure, Result};

/// CPUs this process may run on. (Not `available_parallelism`: its cgroup
/// parsing costs 5 KB of stub and a handful of file reads per launch, and
/// decoding threads are capped by memory anyway.)
pub fn cpus() -> usize {
    nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).map_or(1, |set| {
        (0..nix::sched::CpuSet::count())
            .filter(|&i| set.is_set(i).unwrap_or(false))
            .count()
            .max(1)
    })
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
        Errno::ENOEXEC if cfg!(target_arch = "aarch64") => {
            ": not a program this host runs (not an aarch64 program, and no binfmt_misc handler takes it)"
        }
        Errno::ENOEXEC => ": not a program this host runs (not an x86_64 program, and no binfmt_misc handler takes it)",
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
    let old = block_signals().unwrap_or_else(|f| fail(f));
    // SAFETY: single-threaded at this point (extraction threads were joined;
    // mount mode's PID 1 was forked without its parent's threads), so the
    // child may run any code before exec.
    match unsafe { fork() } {
        Err(e) => fail(Failure::new(Code::Exec, format!("fork: {}", describe(e)))),
        Ok(ForkResult::Child) => {
            let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
            fail(exec(path, argv));
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
                // SAFETY: `_exit` ends the intermediate child, running no
                // exit handlers of this process.
                Ok(ForkResult::Parent { .. }) => unsafe { nix::libc::_exit(0) },
                // SAFETY: as above.
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
                if nix::libc::syscall(arch::CLOSE_RANGE, 4u32, u32::MAX, 0u32) != 0 {
                    for fd in 4..4096 {
                        nix::libc::close(fd);
                    }
                }
                nix::libc::setpriority(nix::libc::PRIO_PROCESS, 0, 19);
                // This process, best effort at the lowest level.
                nix::libc::syscall(
                    arch::IOPRIO_SET,
                    arch::IOPRIO_WHO_PROCESS,
                    0,
                    arch::IOPRIO_BEST_EFFORT_LOWEST,
                );
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

    /// What `exec_as_init` wrote to its status pipe `fd`, if anything.
    pub fn read(fd: &OwnedFd) -> Option<Ended> {
        let mut report = [0u8; 2];
        match nix::unistd::read(fd, &mut report) {
            Ok(2) => Ended::decode(&report),
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
            fail(child(status_w))
        }
        Ok(ForkResult::Parent { child }) => {
            drop(alive_r);
            drop(status_w);
            std::mem::forget(alive_w); // closed by the kernel when this process ends
            Ok((child, status_r))
        }
    }
}
