//! The object store: files by content, shared by every cache entry under
//! one root (hard links), so that a file an earlier extraction wrote is
//! linked rather than written again.

use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::Mutex;

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::Mode;
use nix::unistd::linkat;

use crate::error::{Code, Failure, Result};

/// Content-addressed files shared by all cache entries under one root,
/// named by `tote_cache::object_name`. `objects/.boot` holds the boot id
/// the objects were written under (`tote_cache::objects_stamp`): after a
/// reboot (and a possible power loss), or where a stub that did not check
/// content wrote it, the store is emptied rather than trusted.
pub struct Objects {
    fd: OwnedFd,
    /// Nothing to take: skip a failing `linkat` per file on a first launch.
    empty: bool,
    /// `TOTE_VERIFY=1`: nothing is taken, and what is published replaces
    /// whatever held its name (which may have been damaged).
    replace: bool,
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
        let current = std::fs::read_to_string(dir.join(BOOT_FILE)).is_ok_and(|b| b == tote_cache::objects_stamp(boot));
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
            std::fs::write(&b, tote_cache::objects_stamp(boot))
                .map_err(|e| Failure::io(Code::Cache, "writing", &b, &e))?;
        }
        Ok(Objects {
            fd: open_dir(dir)?,
            empty: !take || !probe.any,
            replace: !take,
            published: Mutex::new(Vec::new()),
        })
    }

    /// Unlink what this extraction published (it failed: leave nothing).
    pub fn unpublish(&self) {
        for name in self.published.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            let _ = nix::unistd::unlinkat(&self.fd, name.as_str(), nix::unistd::UnlinkatFlags::NoRemoveDir);
        }
    }

    /// Hard-link the object `object` into place as `name` in `dir`; false
    /// if there is none (or the link is impossible, e.g. too many links).
    pub fn take(&self, object: &str, dir: BorrowedFd<'_>, name: &[u8]) -> bool {
        !self.empty && linkat(&self.fd, object, dir, name, AtFlags::empty()).is_ok()
    }

    /// Offer a finished file (final mode and time, its content checked
    /// against its name), `name` in `dir`, to later extractions as
    /// `object`. (`linkat` without AT_SYMLINK_FOLLOW: a link there would be
    /// linked itself.) With `replace`, it takes the place of what held the
    /// name.
    pub fn publish(&self, object: &str, dir: BorrowedFd<'_>, name: &[u8]) {
        let linked = match linkat(dir, name, &self.fd, object, AtFlags::empty()) {
            Err(nix::errno::Errno::EEXIST) if self.replace => {
                let fresh = format!(".new-{object}-{}", std::process::id());
                linkat(dir, name, &self.fd, fresh.as_str(), AtFlags::empty()).is_ok()
                    && (nix::fcntl::renameat(&self.fd, fresh.as_str(), &self.fd, object).is_ok()
                        || nix::unistd::unlinkat(&self.fd, fresh.as_str(), nix::unistd::UnlinkatFlags::NoRemoveDir)
                            .is_err())
            }
            other => other.is_ok(),
        };
        if linked {
            self.published
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(object.to_string());
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
