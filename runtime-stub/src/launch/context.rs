//! What every way of launching works from: the bundle, the cache root, the
//! caller's ids and arguments, and the `TOTE_NAMESPACE` policy; and the
//! cache entry a launch runs from, with the trim that follows a cold start.

use std::path::{Path, PathBuf};

use tote_format::{Meta, Mode};

use crate::debug::Debug;
use crate::error::{Code, Failure, Result};
use crate::payload::Payload;
use crate::tree::{self, Cache, Found, Want};

/// `TOTE_NAMESPACE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Never,
    Auto,
    Always,
}

impl Policy {
    pub fn parse(s: &str) -> Option<Policy> {
        match s {
            "never" => Some(Policy::Never),
            "auto" => Some(Policy::Auto),
            "always" => Some(Policy::Always),
            _ => None,
        }
    }
}

/// Everything a launch works from.
pub struct Launch<'a> {
    pub payload: &'a Payload,
    pub root: &'a Path,
    pub id: &'a str,
    pub boot: &'a str,
    pub uid: u32,
    pub gid: u32,
    pub argv: Vec<Vec<u8>>,
    pub mode: Mode,
    pub policy: Policy,
    pub verify_all: bool,
    /// What the cache root is trimmed to after a cold start.
    pub limits: tote_cache::Limits,
    pub dbg: &'a Debug,
}

impl Launch<'_> {
    pub fn meta(&self) -> &Meta {
        &self.payload.meta
    }

    fn cache(&self) -> Cache<'_> {
        Cache {
            payload: self.payload,
            root: self.root,
            boot: self.boot,
            verify_all: self.verify_all,
            dbg: self.dbg,
        }
    }

    /// The entry for `want`, pinned; after a cold start, the cache root is
    /// trimmed to its limits by a process of its own, off the start path
    /// (and before any namespace, whose view may hide the root).
    pub fn found(&self, want: &Want<'_>) -> Result<Found> {
        let found = self.cache().find_or_extract(want)?;
        if found.extracted {
            tree::trim::later(
                self.root,
                self.limits,
                self.payload.layout.trailer.data_offset,
                self.dbg,
            );
        }
        Ok(found)
    }

    /// The bundle's own entry, as extracted.
    pub fn want(&self) -> Want<'static> {
        Want {
            name: self.id.to_string(),
            relocate: None,
        }
    }
}

/// The caller's working directory, read before any namespace is joined.
pub fn working_dir() -> Result<PathBuf> {
    std::env::current_dir()
        .map_err(|e| Failure::io(Code::Namespace, "reading the working directory", Path::new("."), &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse() {
        for (s, p) in [
            ("never", Policy::Never),
            ("auto", Policy::Auto),
            ("always", Policy::Always),
        ] {
            assert_eq!(Policy::parse(s), Some(p));
        }
        assert_eq!(Policy::parse("Always"), None);
        assert_eq!(Policy::parse(""), None);
    }
}
