//! Cache failures: one line naming the step, the path and the errno.

use std::fmt;
use std::path::Path;

use nix::errno::Errno;

#[derive(Debug)]
pub struct Error {
    pub message: String,
    /// The system call's error, when one caused the failure.
    pub errno: Option<Errno>,
}

impl Error {
    pub fn new(message: impl Into<String>) -> Error {
        Error {
            message: message.into(),
            errno: None,
        }
    }

    /// A failed system call on a path.
    pub fn sys(step: &str, path: &Path, errno: Errno) -> Error {
        Error {
            message: format!("{step} {}: {}", path.display(), describe(errno)),
            errno: Some(errno),
        }
    }

    pub fn io(step: &str, path: &Path, err: &std::io::Error) -> Error {
        match err.raw_os_error() {
            Some(n) => Error::sys(step, path, Errno::from_raw(n)),
            None => Error::new(format!("{step} {}: {err}", path.display())),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// `ENOSPC (No space left on device)`.
pub fn describe(errno: Errno) -> String {
    format!("{errno:?} ({})", errno.desc())
}

pub type Result<T> = std::result::Result<T, Error>;
