//! The task's isolation, as Nomad's exec driver (libcontainer) sets it up:
//! new mount, PID and IPC namespaces; the task directory as the root, entered
//! with pivot_root; the default chroot_env bound in read-only; a fresh /dev
//! (tmpfs with null, zero, full, random, urandom, tty, devpts, shm, mqueue;
//! no fuse), /proc (kcore masked, sys read-only) and a read-only /sys;
//! `/alloc`, `/local`, `/tmp` and a noexec tmpfs `/secrets`; then the user
//! nobody and the program as PID 1.
//!
//! Everything here runs in the forked child, which becomes PID 1 of the new
//! PID namespace, and ends in execve.

use std::ffi::CString;
use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::unistd::{chdir, execve, pivot_root, setgroups, setresgid, setresuid, Gid, Uid};

/// Nomad's default `chroot_env`: host paths that appear in the task.
pub const CHROOT_ENV: [&str; 7] = ["/bin", "/etc", "/lib", "/lib32", "/lib64", "/sbin", "/usr"];

pub struct Launch {
    /// The job's `config { no_pivot_root = true }`: chroot into the task
    /// directory instead (the task then cannot make user namespaces).
    pub no_pivot_root: bool,
    /// A seccomp BPF program for the task (`--seccomp`), standing in for a
    /// host's policy (Docker's profile, Ubuntu's AppArmor restriction).
    pub seccomp: Option<Vec<u8>>,
    pub task_dir: PathBuf,
    pub alloc_dir: PathBuf,
    /// Host volumes: host path, destination in the task, read-only.
    pub volumes: Vec<(PathBuf, String, bool)>,
    pub command: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub stdin: OwnedFd,
}

fn at(root: &Path, p: &str) -> PathBuf {
    root.join(p.trim_start_matches('/'))
}

fn bind(src: &Path, dst: &Path, read_only: bool) -> Result<()> {
    mount(
        Some(src),
        dst,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .with_context(|| format!("binding {} at {}", src.display(), dst.display()))?;
    if read_only {
        mount(
            None::<&str>,
            dst,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .with_context(|| format!("making {} read-only", dst.display()))?;
    }
    Ok(())
}

fn fs_mount(kind: &str, dst: &Path, flags: MsFlags, data: Option<&str>) -> Result<()> {
    fs::create_dir_all(dst).with_context(|| format!("creating {}", dst.display()))?;
    mount(Some(kind), dst, Some(kind), flags, data).with_context(|| format!("mounting {kind} at {}", dst.display()))
}

fn touch(p: &Path) -> Result<()> {
    fs::write(p, b"").with_context(|| format!("creating {}", p.display()))
}

/// Nomad's defaults for /proc, /dev and /sys (libcontainer's configureIsolation).
fn special_dirs(root: &Path) -> Result<()> {
    let hidden = MsFlags::MS_NOEXEC | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    fs_mount("proc", &at(root, "/proc"), hidden, None)?;
    let dev = at(root, "/dev");
    fs_mount(
        "tmpfs",
        &dev,
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755"),
    )?;
    for d in ["null", "zero", "full", "random", "urandom", "tty"] {
        let p = dev.join(d);
        touch(&p)?;
        bind(&Path::new("/dev").join(d), &p, false)?;
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        symlink(target, dev.join(name))?;
    }
    fs_mount(
        "devpts",
        &dev.join("pts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )?;
    fs_mount("tmpfs", &dev.join("shm"), hidden, Some("mode=1777,size=65536k"))?;
    fs_mount("mqueue", &dev.join("mqueue"), hidden, None)?;
    fs_mount("sysfs", &at(root, "/sys"), hidden | MsFlags::MS_RDONLY, None)?;
    // Masked and read-only paths.
    let kcore = at(root, "/proc/kcore");
    if kcore.exists() {
        bind(&dev.join("null"), &kcore, false)?;
    }
    let firmware = at(root, "/sys/firmware");
    if firmware.is_dir() {
        mount(
            Some("tmpfs"),
            &firmware,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .context("masking /sys/firmware")?;
    }
    for p in ["/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus"] {
        let p = at(root, p);
        if p.exists() {
            bind(&p, &p, true)?;
        }
    }
    Ok(())
}

/// Set up the namespaces and the root, become nobody and exec the command.
/// Returns only on failure.
pub fn enter(l: &Launch) -> anyhow::Error {
    match setup(l) {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

fn setup(l: &Launch) -> Result<std::convert::Infallible> {
    // Its own session, as a container's init: a Ctrl-C on the terminal that
    // runs this stand-in reaches the stand-in only, which then stops the task.
    nix::unistd::setsid().context("setsid")?;
    unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWIPC).context("unshare(mount, IPC)")?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("making mounts private")?;
    let root = &l.task_dir;
    bind(root, root, false)?; // pivot_root needs a mount point
    for host in CHROOT_ENV {
        let Ok(meta) = fs::symlink_metadata(host) else {
            continue;
        };
        let dst = at(root, host);
        if meta.file_type().is_symlink() {
            if fs::symlink_metadata(&dst).is_err() {
                symlink(fs::read_link(host)?, &dst)?;
            }
        } else {
            fs::create_dir_all(&dst)?;
            bind(Path::new(host), &dst, true)?;
        }
    }
    let alloc = at(root, "/alloc");
    fs::create_dir_all(&alloc)?;
    bind(&l.alloc_dir, &alloc, false)?;
    fs_mount(
        "tmpfs",
        &at(root, "/secrets"),
        MsFlags::MS_NOEXEC | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("size=1m,mode=0777"),
    )?;
    for (host, dest, read_only) in &l.volumes {
        let dst = at(root, dest);
        fs::create_dir_all(&dst).with_context(|| format!("creating {}", dst.display()))?;
        bind(host, &dst, *read_only)?;
    }
    special_dirs(root)?;

    chdir(root).context("chdir to the task directory")?;
    if l.no_pivot_root {
        nix::unistd::chroot(".").context("chroot")?;
    } else {
        pivot_root(".", ".").context("pivot_root")?;
        umount2(".", MntFlags::MNT_DETACH).context("detaching the old root")?;
    }
    chdir("/")?;

    let (uid, gid) = nobody()?;
    setgroups(&[]).context("setgroups")?;
    setresgid(gid, gid, gid).context("setresgid")?;
    setresuid(uid, uid, uid).context("setresuid")?;

    let path = CString::new(l.command.as_bytes())?;
    let mut argv = vec![path.clone()];
    for a in &l.args {
        argv.push(CString::new(a.as_bytes())?);
    }
    let env: Vec<CString> = l
        .env
        .iter()
        .map(|(k, v)| CString::new(format!("{k}={v}")))
        .collect::<Result<_, _>>()?;
    nix::unistd::dup2_stdin(&l.stdin).context("dup2")?;
    nix::unistd::dup2_stdout(&l.stdout).context("dup2")?;
    nix::unistd::dup2_stderr(&l.stderr).context("dup2")?;
    nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    )?;
    if let Some(bpf) = &l.seccomp {
        load_seccomp(bpf)?;
    }
    execve(&path, &argv, &env).with_context(|| format!("exec {}", l.command))
}

/// Install a seccomp filter (a BPF program as libseccomp exports it) for
/// this process and what it execs.
#[allow(unsafe_code)]
fn load_seccomp(bpf: &[u8]) -> Result<()> {
    use nix::libc;
    let filter: Vec<libc::sock_filter> = bpf
        .chunks_exact(8)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect();
    let prog = libc::sock_fprog {
        len: u16::try_from(filter.len()).context("seccomp filter too long")?,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: prctl with valid arguments; `prog` points at `filter`, which
    // outlives the call (the kernel copies the program).
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            bail!("PR_SET_NO_NEW_PRIVS: {}", std::io::Error::last_os_error());
        }
        if libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog) != 0 {
            bail!("PR_SET_SECCOMP: {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// nobody's ids, from the task's /etc/passwd (Nomad's default task user).
fn nobody() -> Result<(Uid, Gid)> {
    let passwd = fs::read_to_string("/etc/passwd").context("reading /etc/passwd in the task")?;
    for line in passwd.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() > 3 && f[0] == "nobody" {
            return Ok((Uid::from_raw(f[2].parse()?), Gid::from_raw(f[3].parse()?)));
        }
    }
    bail!("no user nobody in /etc/passwd")
}

/// The task directory, as Nomad builds it: `local/` (0777), `tmp/` (1777)
/// and `secrets/`, owned by nobody; and the alloc directory with `data/`,
/// `logs/` and `tmp/`.
pub fn build_dirs(alloc_dir: &Path, task: &str) -> Result<PathBuf> {
    let nobody = Uid::from_raw(65534);
    let nogroup = Gid::from_raw(65534);
    let mk = |p: &Path, mode: u32| -> Result<()> {
        fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))?;
        fs::set_permissions(p, fs::Permissions::from_mode(mode))?;
        nix::unistd::chown(p, Some(nobody), Some(nogroup))?;
        Ok(())
    };
    fs::create_dir_all(alloc_dir)?;
    fs::set_permissions(alloc_dir, fs::Permissions::from_mode(0o755))?;
    for d in ["alloc", "alloc/data", "alloc/logs", "alloc/tmp"] {
        mk(&alloc_dir.join(d), 0o777)?;
    }
    let task_dir = alloc_dir.join(task);
    mk(&task_dir, 0o777)?;
    mk(&task_dir.join("local"), 0o777)?;
    mk(&task_dir.join("tmp"), 0o1777)?;
    mk(&task_dir.join("secrets"), 0o777)?;
    Ok(task_dir)
}

/// Nomad's lookupTaskBin: `local/<cmd>`, then `<cmd>` in the task directory,
/// then a PATH search inside it. Nomad copies the chroot_env into the task
/// directory first; here it is bound in later, inside the task's mount
/// namespace, so a path under it is looked up on the host.
pub fn lookup(task_dir: &Path, command: &str) -> Result<PathBuf> {
    let rel = command.trim_start_matches('/');
    let in_chroot_env = |rel: &str| {
        let host = Path::new("/").join(rel);
        CHROOT_ENV.iter().any(|d| host.starts_with(d)) && host.is_file()
    };
    for p in [task_dir.join("local").join(rel), task_dir.join(rel)] {
        if p.exists() {
            return Ok(p);
        }
    }
    if in_chroot_env(rel) {
        return Ok(task_dir.join(rel));
    }
    if !command.contains('/') {
        for dir in ["usr/local/bin", "usr/bin", "bin"] {
            let p = task_dir.join(dir).join(command);
            if p.is_file() || in_chroot_env(&format!("{dir}/{command}")) {
                return Ok(p);
            }
        }
    }
    bail!("file {command} not found under path {}", task_dir.display())
}

/// Nomad's makeExecutable: add r-x for everyone to the command's mode.
pub fn make_executable(p: &Path) -> Result<()> {
    let mode = fs::metadata(p)?.permissions().mode() & 0o7777;
    if mode & 0o555 != 0o555 {
        fs::set_permissions(p, fs::Permissions::from_mode(mode | 0o555))?;
    }
    Ok(())
}
