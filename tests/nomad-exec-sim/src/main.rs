//! `nomad-exec-sim JOB.hcl --alloc-dir DIR [--task NAME] [--attach] [--seccomp FILE]
//!   [--host-volume NAME=PATH]... [--cpu-arch amd64|arm64]`
//!
//! Runs one task of a Nomad job the way the exec driver does, without Nomad:
//! downloads its artifacts (go-getter's rules, a real S3 client), builds the
//! task directory, starts the command as PID 1 of new mount, PID and IPC
//! namespaces inside a pivot_root'ed chroot as user nobody, and stops it like
//! `nomad alloc stop`: on SIGINT or SIGTERM to this process it sends the
//! task's kill_signal, waits kill_timeout, then SIGKILLs.
//!
//! The job's `config { no_pivot_root = true }` chroots the task instead, as
//! Nomad does; `--seccomp FILE` gives the task a seccomp BPF program, the
//! way a host's policy would (Docker's profile, Ubuntu's AppArmor
//! restriction as it looks from inside). `--host-volume NAME=PATH` is the
//! client's `host_volume "NAME" { path = "PATH" }`: a group `volume` of
//! type "host" with that source, mounted by the task's `volume_mount`, is
//! bound at its destination. `--cpu-arch` is the client's
//! `${attr.cpu.arch}` (default: this machine's): a group whose
//! `constraint` on it names another is not placed here.
//!
//! Reports go to stderr, one line each, starting `nomad-exec-sim:`. The exit
//! status is the task's (128+n if signal n killed it); 125 if the task could
//! not be started. The task's output goes to DIR/alloc/logs/<task>.stdout.0
//! and .stderr.0, as with Nomad (or to this terminal with --attach).

mod fetch;
mod job;
mod task;

use std::fs::{self, File, OpenOptions};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

struct Args {
    job: PathBuf,
    alloc_dir: PathBuf,
    task: Option<String>,
    attach: bool,
    seccomp: Option<PathBuf>,
    host_volumes: Vec<(String, PathBuf)>,
    cpu_arch: String,
    /// Nomad variables: (path, key, value).
    vars: Vec<(String, String, String)>,
}

fn usage() -> ! {
    eprintln!(
        "usage: nomad-exec-sim JOB.hcl --alloc-dir DIR [--task NAME] [--attach] [--seccomp FILE] \
         [--host-volume NAME=PATH]... [--cpu-arch amd64|arm64] [--var PATH:KEY=VALUE]..."
    );
    std::process::exit(2)
}

fn args() -> Args {
    let mut it = std::env::args().skip(1);
    let (mut job, mut alloc_dir, mut task, mut attach, mut seccomp) = (None, None, None, false, None);
    let mut host_volumes = Vec::new();
    let mut vars = Vec::new();
    let mut cpu_arch = if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        "amd64"
    }
    .to_owned();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--alloc-dir" => alloc_dir = it.next().map(PathBuf::from),
            "--task" => task = it.next(),
            "--attach" => attach = true,
            "--cpu-arch" => cpu_arch = it.next().unwrap_or_else(|| usage()),
            "--seccomp" => seccomp = it.next().map(PathBuf::from),
            "--host-volume" => match it.next().as_deref().and_then(|v| v.split_once('=')) {
                Some((name, path)) => host_volumes.push((name.to_owned(), PathBuf::from(path))),
                None => usage(),
            },
            "--var" => match it.next().as_deref().and_then(|v| {
                let (path, kv) = v.split_once(':')?;
                let (k, val) = kv.split_once('=')?;
                Some((path.to_owned(), k.to_owned(), val.to_owned()))
            }) {
                Some(v) => vars.push(v),
                None => usage(),
            },
            "-h" | "--help" => usage(),
            _ if job.is_none() && !a.starts_with('-') => job = Some(PathBuf::from(a)),
            _ => usage(),
        }
    }
    match (job, alloc_dir) {
        (Some(job), Some(alloc_dir)) => Args {
            job,
            alloc_dir,
            task,
            attach,
            seccomp,
            host_volumes,
            cpu_arch,
            vars,
        },
        _ => usage(),
    }
}

fn say(msg: impl std::fmt::Display) {
    eprintln!("nomad-exec-sim: {msg}");
}

fn main() -> ExitCode {
    match run(&args()) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            say(format!("error: {e:#}"));
            ExitCode::from(125)
        }
    }
}

/// A free loopback port, as Nomad would pick for a dynamic port.
fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn environment(t: &job::Task, alloc_id: &str) -> Result<Vec<(String, String)>> {
    let mut env: Vec<(String, String)> = [
        ("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
        ("HOME", "/nonexistent"),
        ("USER", "nobody"),
        ("NOMAD_TASK_DIR", "/local"),
        ("NOMAD_ALLOC_DIR", "/alloc"),
        ("NOMAD_SECRETS_DIR", "/secrets"),
        ("NOMAD_JOB_NAME", &t.job),
        ("NOMAD_JOB_ID", &t.job),
        ("NOMAD_GROUP_NAME", &t.group),
        ("NOMAD_TASK_NAME", &t.name),
        ("NOMAD_ALLOC_ID", alloc_id),
        ("NOMAD_ALLOC_INDEX", "0"),
        ("NOMAD_NAMESPACE", "default"),
        ("NOMAD_REGION", "global"),
        ("NOMAD_DC", "dc1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    env.push(("NOMAD_ALLOC_NAME".into(), format!("{}.{}[0]", t.job, t.group)));
    env.push(("NOMAD_CPU_LIMIT".into(), t.cpu.to_string()));
    env.push(("NOMAD_MEMORY_LIMIT".into(), t.memory.to_string()));
    for (label, port) in &t.ports {
        let port = match port {
            Some(p) => *p,
            None => free_port()?,
        };
        for (k, v) in [
            ("PORT", port.to_string()),
            ("HOST_PORT", port.to_string()),
            ("IP", "127.0.0.1".to_owned()),
            ("HOST_IP", "127.0.0.1".to_owned()),
            ("ADDR", format!("127.0.0.1:{port}")),
            ("HOST_ADDR", format!("127.0.0.1:{port}")),
        ] {
            env.push((format!("NOMAD_{k}_{label}"), v));
        }
    }
    for (k, v) in &t.env {
        env.retain(|(n, _)| n != k);
        env.push((k.clone(), v.clone()));
    }
    Ok(env)
}

fn log_file(path: &Path) -> Result<OwnedFd> {
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    Ok(f.into())
}

/// Processes whose PID namespace is `ns` (as /proc/PID/ns/pid names it).
fn members(ns: &str) -> Vec<i32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| fs::read_link(format!("/proc/{pid}/ns/pid")).is_ok_and(|l| l.to_string_lossy() == ns))
        .collect()
}

fn run(a: &Args) -> Result<u8> {
    let text = fs::read_to_string(&a.job).with_context(|| format!("reading {}", a.job.display()))?;
    let t = job::parse(&text, a.task.as_deref(), &a.cpu_arch).with_context(|| format!("{}", a.job.display()))?;
    let kill_signal = Signal::from_str(&t.kill_signal).with_context(|| format!("kill_signal {:?}", t.kill_signal))?;
    let task_dir = task::build_dirs(&a.alloc_dir, &t.name)?;

    let started = Instant::now();
    for art in &t.artifacts {
        let dest = fetch::fetch(art, &task_dir)?;
        say(format!(
            "artifact {} -> {} ({} bytes, {} ms)",
            art.source.split('?').next().unwrap_or(""),
            dest.strip_prefix(&task_dir).unwrap_or(&dest).display(),
            fs::metadata(&dest)?.len(),
            started.elapsed().as_millis()
        ));
    }
    let command = task::lookup(&task_dir, &t.command)?;
    if command.exists() {
        // (a host program from the chroot_env is bound in later, as it is)
        task::make_executable(&command)?;
    }
    let inside = Path::new("/").join(
        command
            .strip_prefix(&task_dir)
            .context("command outside the task dir")?,
    );

    let alloc_id = format!("{:08x}-sim", std::process::id());
    let mut env = environment(&t, &alloc_id)?;
    // Templates, rendered into the task directory; `env = true` ones also
    // into the environment (KEY=VALUE lines), as Nomad does.
    for tpl in &t.templates {
        let text = job::render(&tpl.data, &a.vars)?;
        let dest = task_dir.join(tpl.destination.trim_start_matches('/'));
        if !dest.starts_with(&task_dir) || tpl.destination.contains("..") {
            bail!("template destination {:?}: outside the task directory", tpl.destination);
        }
        fs::create_dir_all(dest.parent().context("a destination")?)?;
        fs::write(&dest, &text)?;
        if tpl.env {
            for line in text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
            {
                let (k, v) = line
                    .split_once('=')
                    .with_context(|| format!("template {}: {line:?} is not KEY=VALUE", tpl.destination))?;
                env.retain(|(ek, _)| ek != k);
                env.push((k.to_owned(), v.to_owned()));
            }
        }
        say(format!("template -> {}", tpl.destination));
    }
    let logs = a.alloc_dir.join("alloc/logs");
    let (stdout, stderr): (OwnedFd, OwnedFd) = if a.attach {
        (
            std::os::fd::AsFd::as_fd(&std::io::stdout()).try_clone_to_owned()?,
            std::os::fd::AsFd::as_fd(&std::io::stderr()).try_clone_to_owned()?,
        )
    } else {
        (
            log_file(&logs.join(format!("{}.stdout.0", t.name)))?,
            log_file(&logs.join(format!("{}.stderr.0", t.name)))?,
        )
    };
    let seccomp = a
        .seccomp
        .as_ref()
        .map(|p| fs::read(p).with_context(|| format!("reading {}", p.display())))
        .transpose()?;
    let volumes = t
        .volumes
        .iter()
        .map(|v| match a.host_volumes.iter().find(|(n, _)| *n == v.source) {
            Some((_, path)) => Ok((path.clone(), v.destination.clone(), v.read_only)),
            None => bail!(
                "host volume {:?}: not configured on this client (--host-volume)",
                v.source
            ),
        })
        .collect::<Result<Vec<_>>>()?;
    let launch = task::Launch {
        volumes,
        no_pivot_root: t.no_pivot_root,
        seccomp,
        task_dir: task_dir.clone(),
        alloc_dir: a.alloc_dir.join("alloc"),
        command: inside.to_string_lossy().into_owned(),
        args: t.args.clone(),
        env,
        stdout,
        stderr,
        stdin: File::open("/dev/null")?.into(),
    };

    // Signals are taken synchronously; the child restores the mask.
    let mut watched = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGCHLD] {
        watched.add(s);
    }
    watched.thread_block()?;
    unshare(CloneFlags::CLONE_NEWPID).context("unshare(PID)")?;
    // SAFETY: this program is single-threaded; the child only sets up mounts
    // and ids and then execs or exits.
    #[allow(unsafe_code)]
    let child = match unsafe { fork() }.context("fork")? {
        ForkResult::Child => {
            // The task must not outlive this stand-in (tests kill it).
            let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
            let e = task::enter(&launch);
            say(format!("task {}: failed to start: {e:#}", t.name));
            std::process::exit(125);
        }
        ForkResult::Parent { child } => child,
    };
    drop(launch);
    let ns = fs::read_link(format!("/proc/{child}/ns/pid"))
        .map(|l| l.to_string_lossy().into_owned())
        .unwrap_or_default();
    say(format!(
        "task {} started: pid {child}, PID namespace {ns}, command {}",
        t.name,
        inside.display()
    ));
    let status = supervise(child, &watched, kill_signal, t.kill_timeout)?;
    // The kernel kills the rest of the namespace when its PID 1 exits; give
    // it a moment, then report what is left.
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut left = members(&ns);
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        left = members(&ns);
    }
    say(format!("processes left: {}", left.len()));
    Ok(status)
}

/// Wait for the task; on SIGINT/SIGTERM stop it as Nomad does.
fn supervise(child: Pid, watched: &SigSet, kill_signal: Signal, timeout: Duration) -> Result<u8> {
    loop {
        let sig = watched.wait()?;
        if sig == Signal::SIGCHLD {
            if let Some(code) = reap(child)? {
                return Ok(code);
            }
            continue;
        }
        say(format!(
            "stop requested ({sig}): sending {kill_signal}, kill_timeout {timeout:?}"
        ));
        let stop = Instant::now();
        kill(child, kill_signal)?;
        while stop.elapsed() < timeout {
            if let Some(code) = reap(child)? {
                say(format!(
                    "task exited {} ms after {kill_signal}",
                    stop.elapsed().as_millis()
                ));
                return Ok(code);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        say("kill_timeout passed: sending SIGKILL");
        kill(child, Signal::SIGKILL)?;
        loop {
            if let Some(code) = reap(child)? {
                return Ok(code);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn reap(child: Pid) -> Result<Option<u8>> {
    match waitpid(child, Some(WaitPidFlag::WNOHANG))? {
        WaitStatus::Exited(_, code) => {
            say(format!("task exited: exit code {code}"));
            Ok(Some(code as u8))
        }
        WaitStatus::Signaled(_, sig, _) => {
            say(format!("task exited: killed by {sig}"));
            Ok(Some(128 + sig as u8))
        }
        WaitStatus::StillAlive => Ok(None),
        other => bail!("unexpected wait status {other:?}"),
    }
}
