//! The steps a launch view is built from (the plan's vocabulary), and
//! carrying them out: here, or in a helper child whose namespaces this
//! process then joins.
//!
//! Namespaces are built by a helper child ([`enter`]): it makes them, writes
//! its id maps and carries out every mount of the plan, then hands them
//! back, and this process joins them only if every step worked. A host
//! that lets a user namespace be made but refuses what comes next (Ubuntu's
//! AppArmor restriction, a seccomp filter on mount) thus leaves the launcher
//! where it was, free to launch without namespaces instead.

use std::ffi::OsString;
use std::fs::File;
use std::os::fd::{AsFd, FromRawFd, IntoRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::wait::waitpid;
use nix::unistd::{chdir, Pid};

use super::{arch, mount, namespace};
use crate::debug::Debug;
use crate::error::{describe, Code, Failure, Result};

/// One step of building a launch view, as planned (`launch::plan`).
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
    namespace::join(held.user.as_ref().filter(|_| user), &held.mnt).map_err(Refused)?;
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
    let pid = unsafe { arch::clone_as_fork(flags as nix::libc::c_ulong) };
    if pid == 0 {
        child(ids, steps, &w, dbg);
    }
    if pid < 0 {
        return Err(Refused(namespace::unshare_failure(user, Errno::last())));
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
            namespace::map_ids(uid, gid)?;
            dbg.step(|| format!("MapIds {{ uid: {uid}, gid: {gid} }}"));
        }
        let mut fuse = -1;
        for (i, step) in steps.iter().enumerate() {
            match step {
                Step::MountFuse { target, uid, gid } => fuse = mount::fuse(target, *uid, *gid)?,
                _ => run_step(step, dbg).map_err(|f| {
                    if i == 0 && ids.is_some() {
                        namespace::restricted(f)
                    } else {
                        f
                    }
                })?,
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

/// Carry out one step in this process.
fn run_step(step: &Step, dbg: &Debug) -> Result<()> {
    match step {
        Step::Unshare { user } => namespace::unshare(*user)?,
        Step::MapIds { uid, gid } => namespace::map_ids(*uid, *gid)?,
        Step::MountFuse { target, .. } => {
            // The connection must reach the launcher: only `enter` can.
            return Err(mount::ns(
                "mounting FUSE (outside a namespace helper) on",
                target,
                Errno::EINVAL,
            ));
        }
        Step::MakePrivate => mount::make_private()?,
        Step::MountTmpfs { target } => mount::tmpfs(target)?,
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
        Step::Bind { source, target } => mount::bind(source, target)?,
        Step::BundleMount {
            source,
            target,
            host_lower,
        } => {
            if mount::bundle(source, target, host_lower.as_deref(), dbg)? {
                return Ok(());
            }
        }
        Step::PivotRoot { new_root, put_old } => mount::pivot(new_root, put_old)?,
        Step::EnterRoot { path } => mount::enter_root(path)?,
        Step::Detach { path } => mount::detach(path)?,
        Step::RemountRootReadOnly => mount::remount_root_read_only()?,
        Step::Chdir { path } => restore_cwd(path)?,
    }
    dbg.step(|| format!("{step:?}"));
    Ok(())
}

fn restore_cwd(path: &Path) -> Result<()> {
    chdir(path).map_err(|e| {
        Failure::new(
            Code::Namespace,
            format!(
                "restoring the working directory {}: {} (it is not visible inside the bundle's view)",
                path.display(),
                describe(e)
            ),
        )
    })
}
