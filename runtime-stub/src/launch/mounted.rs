//! Mount mode: the bundle's tree served over FUSE from the mapped bundle,
//! nothing written to disk; or, for a thin bundle, from the blocks it
//! fetches as they are read (`remote::Lazy`), kept in the cache root. See
//! DESIGN.md, "Mount mode".
//!
//! This process (the one the caller started) makes the user and mount
//! namespaces, mounts FUSE on a tmpfs over the cache root's `mnt`
//! directory, and serves the mount from its threads. The program runs in a
//! new PID namespace whose first process (PID 1) sets up the launch view,
//! hides the staging mount, and supervises the program:
//!
//! ```text
//! stub (FUSE server, signals forwarded) ─ PID 1 (view, supervisor) ─ program
//! ```
//!
//! Whatever ends first ends everything: the program exiting ends PID 1,
//! which makes the kernel kill what is left in the namespace, which ends
//! the stub with the program's status; the stub dying kills PID 1 (parent
//! death signal), hence the namespace. The mount exists only in the private
//! mount namespace, which goes with its last process.

use std::convert::Infallible;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tote_format::Meta;

use super::context::{working_dir, Launch};
use super::exec::in_tree;
use super::plan;
use crate::debug::Debug;
use crate::error::{describe, Code, Failure};
use crate::fuse;
use crate::sys::{self, Step};

/// Decoded blocks kept for the reads that follow: the rest of a block whose
/// first file was just read (a package's other modules), the block a
/// sequential read crosses into. The kernel's page cache keeps what was
/// read, so recent blocks are all that is worth keeping: 8 MiB (128 blocks
/// of 64 KiB), or four blocks where they are larger.
const CACHE_BYTES: usize = 8 << 20;

/// Why mount mode did not start.
pub enum Refusal {
    /// FUSE or the namespaces are unusable here; nothing was changed
    /// that an extraction would mind (`auto` extracts instead).
    Unusable(String),
    /// A real failure (bad bundle, broken system call).
    Failed(Failure),
}

impl From<Failure> for Refusal {
    fn from(f: Failure) -> Refusal {
        Refusal::Failed(f)
    }
}

pub fn launch(l: &Launch<'_>) -> Result<Infallible, Refusal> {
    let (payload, root, argv, dbg) = (l.payload, l.root, &l.argv, l.dbg);
    check_usable()?;
    let uid = nix::unistd::geteuid().as_raw();
    let gid = nix::unistd::getegid().as_raw();
    // Now: joining the namespaces moves this process to their root.
    let cwd = working_dir()?;
    let (index, frames) = frames(l)?;
    // The only thing mount mode leaves on disk: an empty directory to mount on.
    let staging = root.join("mnt");
    match std::fs::create_dir(&staging) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Failure::io(Code::Cache, "creating", &staging, &e).into()),
    }
    let view = View {
        tree: staging.join("fs"),
        scratch: staging.join("scratch"),
        staging,
        cwd,
        uid,
        gid,
    };
    let fuse_fd = view.mount(dbg)?;

    let largest = index.blocks.iter().map(|b| b.rlen as usize).max().unwrap_or(0);
    let cache_bytes = CACHE_BYTES.max(4 * largest);
    let mask = sys::block_signals()?;
    let server = Arc::new(fuse::Server {
        fs: fuse::Fs::new(index, frames.boxed(), cache_bytes),
        bundle: payload.path.clone(),
        uid,
        gid,
        counts: Default::default(),
        offered: Default::default(),
    });
    let fuse_fd = Arc::new(fuse_fd);
    let threads = sys::cpus().clamp(2, 8);
    fuse::spawn(server.clone(), fuse_fd.clone(), threads)
        .map_err(|e| Failure::new(Code::Exec, format!("starting FUSE threads: {e}")))?;
    dbg.step(|| format!("serving on {threads} threads"));
    let mounted_at = std::time::Instant::now();
    frames.prefetch();

    let (child, status) = sys::fork_pid_namespace(fuse_fd.as_raw_fd(), &mask, |status| {
        view.pid1(&payload.meta, argv, dbg, status)
    })?;
    dbg.step(|| format!("PID namespace started: {child}"));
    let ended = sys::supervise(child, &sys::SigSet::all());
    dbg.step(|| {
        let s = server.fs.stats();
        format!(
            "FUSE server: {}; {} blocks decoded, {} cache hits, peak RSS {}",
            server.counts,
            s.decoded.load(Ordering::Relaxed),
            s.hits.load(Ordering::Relaxed),
            peak_rss()
        )
    });
    dbg.step(|| frames.report(mounted_at));
    // PID 1 has exited, so the pipe holds its report or nothing (it
    // failed before running the program, and its exit code says how).
    sys::end_like(sys::Ended::read(&status).unwrap_or(ended))
}

/// Where the mount's blocks come from.
enum Source {
    Mapped(&'static [u8]),
    #[cfg(feature = "remote")]
    Lazy(crate::remote::Lazy),
}

impl Source {
    fn boxed(&self) -> Box<dyn fuse::Frames> {
        match self {
            Source::Mapped(data) => Box::new(fuse::Mapped {
                data,
                done: sys::unmap_pages,
            }),
            #[cfg(feature = "remote")]
            Source::Lazy(l) => Box::new(l.clone()),
        }
    }

    fn prefetch(&self) {
        #[cfg(feature = "remote")]
        if let Source::Lazy(l) = self {
            l.prefetch();
        }
    }

    fn report(&self, since: std::time::Instant) -> String {
        match self {
            Source::Mapped(_) => {
                let _ = since;
                "blocks read from the mapped bundle".into()
            }
            #[cfg(feature = "remote")]
            Source::Lazy(l) => l.report(since),
        }
    }
}

/// The verified index, and where its blocks come from: the mapped bundle,
/// or a thin bundle's block store in the cache root (whose making is
/// followed by a trim of the root, as an extraction is).
fn frames(l: &Launch<'_>) -> Result<(tote_format::Index, Source), Failure> {
    let (payload, dbg) = (l.payload, l.dbg);
    #[cfg(feature = "remote")]
    if let Some(r) = &payload.layout.remote {
        let (index, index_bytes) = payload.index_and_bytes()?;
        let sections = tote_cache::Sections {
            trailer: &payload.trailer_bytes,
            meta: &payload.meta_bytes,
            index: &index_bytes,
        };
        let lazy = crate::remote::Lazy::open(r, &index, l.root, l.boot, &sections)?;
        let (held, of) = lazy.held();
        dbg.step(|| {
            format!(
                "index verified; thin bundle: {held} of {of} blocks in {}, the rest from {}",
                lazy.dir().display(),
                lazy.url()
            )
        });
        if lazy.created() {
            crate::tree::trim::later(l.root, l.limits, payload.layout.trailer.data_offset, dbg);
        }
        return Ok((index, Source::Lazy(lazy)));
    }
    let index = payload.index()?;
    let file = sys::map_file(payload.file(), &payload.path)?;
    let t = &payload.layout.trailer;
    let data = &file[t.data_offset as usize..t.meta_offset as usize];
    dbg.step(|| format!("index verified, bundle mapped: {} entries", index.entries.len()));
    Ok((index, Source::Mapped(data)))
}

/// Refuse quickly, changing nothing, where mount mode cannot run.
fn check_usable() -> Result<(), Refusal> {
    let fuse_unusable = |e| Refusal::Unusable(format!("/dev/fuse: {}", describe(e)));
    // Here first, to refuse quickly and change nothing where there is no
    // FUSE (Nomad's exec driver). It is opened again inside the user
    // namespace: the kernel mounts a connection only there if it was opened there.
    drop(sys::open_fuse().map_err(fuse_unusable)?);
    // The server needs threads: a seccomp filter that refuses clone3 with
    // EPERM (glibc falls back to clone only on ENOSYS) leaves none.
    std::thread::Builder::new()
        .spawn(|| {})
        .and_then(|t| t.join().map_err(|_| std::io::Error::other("panicked")))
        .map_err(|e| Refusal::Unusable(format!("threads cannot be created ({e})")))?;
    Ok(())
}

/// Where the mounted tree goes, and who sees it from where.
struct View {
    /// The cache root's `mnt`: a tmpfs holding `fs` and `scratch`.
    staging: PathBuf,
    /// The FUSE mount.
    tree: PathBuf,
    /// The empty directory the plan may build a new root on.
    scratch: PathBuf,
    cwd: PathBuf,
    uid: u32,
    gid: u32,
}

impl View {
    /// Namespaces, a tmpfs for the staging directory, the FUSE mount: made
    /// by the helper, so that a refusal at any step leaves this process as
    /// it was (`auto` then extracts, or launches without namespaces).
    /// Returns the FUSE connection, with this process in the namespaces.
    fn mount(&self, dbg: &Debug) -> Result<OwnedFd, Refusal> {
        let (uid, gid) = (self.uid, self.gid);
        let privileged = sys::has_cap_sys_admin();
        let mut steps = vec![Step::Unshare { user: !privileged }];
        if !privileged {
            steps.push(Step::MapIds { uid, gid });
        }
        steps.extend([
            Step::MakePrivate,
            Step::MountTmpfs {
                target: self.staging.clone(),
            },
            Step::Mkdir {
                path: self.tree.clone(),
            },
            Step::Mkdir {
                path: self.scratch.clone(),
            },
            Step::MountFuse {
                target: self.tree.clone(),
                uid,
                gid,
            },
        ]);
        let entered = sys::enter(&steps, dbg).map_err(|sys::Refused(f)| Refusal::Unusable(f.message))?;
        let fuse_fd = entered
            .fuse
            .ok_or_else(|| Refusal::Unusable("the namespace helper kept no FUSE connection".into()))?;
        std::env::set_current_dir(&self.cwd)
            .map_err(|e| Failure::io(Code::Namespace, "returning to", &self.cwd, &e))?;
        dbg.step(|| format!("FUSE mounted on {}", self.tree.display()));
        Ok(fuse_fd)
    }

    /// PID 1 of the new PID namespace: the launch view over the mounted
    /// tree, its own `/proc`, then the program, supervised. Returns only
    /// on failure.
    fn pid1(&self, meta: &Meta, argv: &[Vec<u8>], dbg: &Debug, status: OwnedFd) -> Failure {
        let program = if !meta.needs_namespace() {
            in_tree(&self.tree, &meta.entrypoint)
        } else {
            let mut req = plan::view(meta, &self.tree, &self.scratch, &self.cwd, self.uid, self.gid);
            req.entered = true;
            req.staging = Some(&self.staging);
            let steps = plan::plan(&req, &plan::RealHost);
            dbg.step(|| format!("planned {} steps", steps.len()));
            if let Err(f) = sys::run(&steps, dbg) {
                return f;
            }
            meta.entrypoint.clone()
        };
        // Processes of this namespace only, as a container shows them.
        if let Err(e) = sys::mount_proc() {
            dbg.step(|| format!("/proc of the new PID namespace not mounted: {}", describe(e)));
        }
        dbg.step(|| format!("exec {}", String::from_utf8_lossy(&program)));
        sys::exec_as_init(&program, argv, dbg, Some(status))
    }
}

/// Peak resident memory of this process, e.g. `10240 KiB`. (Not from
/// `/proc/self`: the `/proc` of this mount namespace now shows the new PID
/// namespace, where this process is not.)
fn peak_rss() -> String {
    format!("{} KiB", sys::peak_rss_kib())
}
