//! Launcher failures: one line each, with a documented exit code.

use std::fmt;
use std::path::Path;

use nix::errno::Errno;
use tote_format::FormatError;

/// The launcher's own exit codes (documented in the README). They sit in a
/// range that programs rarely use, away from 1/2, 126/127 and 128+n.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// A `TOTE_*` variable has a value the launcher cannot use, or the
    /// launch itself is refused (set-user-ID or set-group-ID).
    Usage = 113,
    /// The bundle is not a bundle, truncated, corrupt or of another version.
    Bundle = 114,
    /// No usable cache directory, or extraction failed (I/O, disk full).
    Cache = 115,
    /// Setting up the namespace or mounts failed.
    Namespace = 116,
    /// The entry point could not be executed.
    Exec = 117,
    /// A thin bundle's blocks could not be fetched, or what came was not
    /// the bundle's.
    #[cfg_attr(not(feature = "remote"), allow(dead_code))]
    Remote = 118,
    /// The host's signing policy refuses the bundle: unsigned, not signed
    /// by a trusted key, or signed for other bytes (or the policy itself
    /// cannot be read or is not root's).
    Untrusted = 119,
}

#[derive(Debug)]
pub struct Failure {
    pub code: Code,
    pub message: String,
    /// The system call's error, when one caused the failure.
    pub errno: Option<Errno>,
}

impl Failure {
    pub fn new(code: Code, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
            errno: None,
        }
    }

    pub fn with_errno(mut self, errno: Errno) -> Failure {
        self.errno = Some(errno);
        self
    }

    /// Out of space or quota?
    pub fn is_no_space(&self) -> bool {
        matches!(self.errno, Some(Errno::ENOSPC | Errno::EDQUOT))
    }

    /// A failed system call on a path.
    pub fn sys(code: Code, step: &str, path: &Path, errno: Errno) -> Failure {
        Failure::new(code, format!("{step} {}: {}", path.display(), describe(errno))).with_errno(errno)
    }

    pub fn io(code: Code, step: &str, path: &Path, err: &std::io::Error) -> Failure {
        match err.raw_os_error() {
            Some(n) => Failure::sys(code, step, path, Errno::from_raw(n)),
            None => Failure::new(code, format!("{step} {}: {err}", path.display())),
        }
    }

    pub fn bundle(exe: &Path, err: FormatError) -> Failure {
        Failure::new(Code::Bundle, format!("bundle {}: {err}", exe.display()))
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// `ENOSPC (No space left on device)`.
pub fn describe(errno: Errno) -> String {
    format!("{errno:?} ({})", errno.desc())
}

pub type Result<T> = std::result::Result<T, Failure>;

/// Print the one-line failure and exit with its code.
pub fn fail(f: Failure) -> ! {
    // One line, whatever the message holds (names from a bundle).
    eprintln!("tote: {}", tote_format::printable(f.message.as_bytes()));
    std::process::exit(f.code as i32)
}

/// The cache's failures are the launcher's exit 115.
impl From<tote_cache::Error> for Failure {
    fn from(e: tote_cache::Error) -> Failure {
        Failure {
            code: Code::Cache,
            message: e.message,
            errno: e.errno,
        }
    }
}
