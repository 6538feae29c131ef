//! The caller's controls: `TOTE_*` environment variables, read where the
//! launch needs each one (never arguments: those are the program's).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use tote_format::{Meta, Mode};

use crate::error::{Code, Failure, Result};
use crate::launch::Policy;

/// `1`, `yes`, `true`: on. Unset, empty or `0`: off.
pub fn flag(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty() && v != "0")
}

/// A variable's value, if set and not empty.
pub fn var(name: &str) -> Option<OsString> {
    std::env::var_os(name).filter(|v| !v.is_empty())
}

/// `p`, relative to the working directory if it is not absolute.
pub fn absolute(p: PathBuf) -> Result<PathBuf> {
    if p.is_absolute() {
        return Ok(p);
    }
    let cwd = std::env::current_dir()
        .map_err(|e| Failure::io(Code::Usage, "reading the working directory", Path::new("."), &e))?;
    Ok(cwd.join(p))
}

/// `TOTE_MODE` if set, else the bundle's mode.
pub fn mode(meta: &Meta) -> Result<Mode> {
    match var("TOTE_MODE") {
        None => Ok(meta.mode),
        Some(v) => v.to_str().and_then(Mode::parse).ok_or_else(|| {
            Failure::new(
                Code::Usage,
                format!("TOTE_MODE={}: expected extract, mount or auto", v.to_string_lossy()),
            )
        }),
    }
}

/// `TOTE_NAMESPACE`: `auto` unless set.
pub fn namespace_policy() -> Result<Policy> {
    match var("TOTE_NAMESPACE") {
        None => Ok(Policy::Auto),
        Some(v) => v.to_str().and_then(Policy::parse).ok_or_else(|| {
            Failure::new(
                Code::Usage,
                format!("TOTE_NAMESPACE={}: expected never, auto or always", v.to_string_lossy()),
            )
        }),
    }
}

/// Where the cache root may be: `TOTE_CACHE_DIR`, then the usual places.
pub fn cache_env() -> Result<tote_cache::Env> {
    Ok(tote_cache::Env {
        cache_dir: var("TOTE_CACHE_DIR").map(PathBuf::from).map(absolute).transpose()?,
        xdg_cache_home: var("XDG_CACHE_HOME"),
        home: var("HOME"),
        tmpdir: var("TMPDIR"),
    })
}
