//! The object store: files by content, shared by every cache entry under
//! one root (hard links), so that a file an earlier extraction wrote is
//! linked rather than written again.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Mutex;

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::Mode;
use nix::unistd::linkat;
use tote_format::Digest32;

use crate::error::{Code, Failure, Result};

/// Content-addressed files shared by all cache entries under one root:
/// `objects/<sha256 hex>`, with `x` appended for executables (another mode,
/// so another inode). `objects/.boot` holds the boot id the objects were
/// written under: after a reboot (and a possible power loss) the store is
/// emptied rather than trusted.
pub struct Objects {
    fd: OwnedFd,
    /// Nothing to take: skip a failing `linkat` per file on a first launch.
    empty: bool,
    /// Names published by this extraction, unlinked if it fails.
    published: Mutex<Vec<String>>,
}

const BOOT_FILE: &str = tote_cache::OBJECTS_BOOT;

/// The object store as found: written under this boot, holding objects.
pub struct Probe {
    current: bool,
    pub any: bool,
}

impl Objects {
    /// What the store at `dir` holds for this `boot` (read once, before
    /// deciding whether to check free space and before opening it).
    pub fn probe(dir: &Path, boot: &str) -> Probe {
        let current = std::fs::read_to_string(dir.join(BOOT_FILE)).is_ok_and(|b| b == boot);
        let any =
            current && std::fs::read_dir(dir).is_ok_and(|mut d| d.any(|e| e.is_ok_and(|e| e.file_name() != BOOT_FILE)));
        Probe { current, any }
    }

    /// Open (or create) the store at `dir` for this `boot`, as `probe`
    /// found it. With `take` false nothing is linked from it
    /// (`TOTE_VERIFY=1`), only published.
    pub fn open(dir: &Path, boot: &str, take: bool, probe: &Probe) -> Result<Objects> {
        if !probe.current {
            if dir.exists() {
                // Another boot's objects: set them aside for removal.
                tote_cache::discard(dir.parent().unwrap_or(Path::new("/")), dir)?;
            }
            match std::fs::create_dir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Failure::io(Code::Cache, "creating", dir, &e)),
            }
            let b = dir.join(BOOT_FILE);
            std::fs::write(&b, boot).map_err(|e| Failure::io(Code::Cache, "writing", &b, &e))?;
        }
        Ok(Objects {
            fd: open_dir(dir)?,
            empty: !take || !probe.any,
            published: Mutex::new(Vec::new()),
        })
    }

    /// Unlink what this extraction published (it failed: leave nothing).
    pub fn unpublish(&self) {
        for name in self.published.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            let _ = nix::unistd::unlinkat(&self.fd, name.as_str(), nix::unistd::UnlinkatFlags::NoRemoveDir);
        }
    }

    fn name(hash: &Digest32, executable: bool) -> String {
        let mut n = hash.to_hex();
        if executable {
            n.push('x');
        }
        n
    }

    /// Hard-link the object into place; false if there is none (or the
    /// link is impossible, e.g. too many links).
    pub fn take(&self, hash: &Digest32, executable: bool, dir: &OwnedFd, path: &[u8]) -> bool {
        !self.empty
            && linkat(
                &self.fd,
                Self::name(hash, executable).as_str(),
                dir,
                path,
                AtFlags::empty(),
            )
            .is_ok()
    }

    /// Offer a finished file (final mode and time) to later extractions.
    pub fn publish(&self, hash: &Digest32, executable: bool, dir: &OwnedFd, path: &[u8]) {
        let name = Self::name(hash, executable);
        if linkat(dir, path, &self.fd, name.as_str(), AtFlags::empty()).is_ok() {
            self.published.lock().unwrap_or_else(|p| p.into_inner()).push(name);
        }
    }
}

/// A directory's descriptor, for the `*at` calls that work below it.
pub fn open_dir(path: &Path) -> Result<OwnedFd> {
    nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Failure::sys(Code::Cache, "opening", path, e))
}
