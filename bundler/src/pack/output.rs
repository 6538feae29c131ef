//! Writing the output file so that a failure, Ctrl-C or a crash never
//! leaves a half-written bundle: the bytes go to an unnamed file
//! (`O_TMPFILE`) that gets a name only when complete, then is renamed over
//! the destination. Where the file system lacks `O_TMPFILE`, a hidden named
//! temporary file is used and removed on error and, through
//! [`crate::ui::interrupt`] (which every command writing an output starts
//! with), on SIGINT/SIGTERM/SIGHUP; so is the hidden name an unnamed file
//! gets just before its rename.

#![allow(unsafe_code)]

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::libc;
use sha2::{Digest, Sha256};

use crate::ui::interrupt;

pub struct Written<T> {
    pub len: u64,
    pub sha256: String,
    /// What `fill` returned.
    pub packed: T,
}

/// Counts and hashes what passes through.
pub struct Hashing<W> {
    inner: W,
    hash: Sha256,
    len: u64,
}

impl<W: Write> Hashing<W> {
    pub fn new(inner: W) -> Hashing<W> {
        Hashing {
            inner,
            hash: Sha256::new(),
            len: 0,
        }
    }

    /// The inner writer, and the hex SHA-256 and length of what passed.
    pub fn finish(self) -> (W, String, u64) {
        (
            self.inner,
            tote_format::Digest32(self.hash.finalize().into()).to_hex(),
            self.len,
        )
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

pub fn write_bundle<T>(out: &Path, stub: &[u8], fill: impl FnOnce(&mut dyn Write) -> Result<T>) -> Result<Written<T>> {
    write_file(out, 0o755, |w| {
        w.write_all(stub).context("writing the bundle")?;
        fill(w)
    })
}

/// The directory `out` goes into, which must exist.
pub fn out_dir(out: &Path) -> Result<PathBuf> {
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        bail!(
            "output {}: directory {} does not exist (create it first)",
            out.display(),
            dir.display()
        );
    }
    Ok(dir)
}

/// Write `out` (mode `mode`) with what `fill` writes, atomically.
pub fn write_file<T>(out: &Path, mode: u32, fill: impl FnOnce(&mut dyn Write) -> Result<T>) -> Result<Written<T>> {
    let dir = out_dir(out)?;
    if out.is_dir() {
        bail!("output {} is a directory: give a file name with -o", out.display());
    }
    let temp = Temp::create(&dir).with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    let file = temp.file.try_clone().context("duplicating the output descriptor")?;
    let mut w = Hashing::new(BufWriter::with_capacity(1 << 20, file));
    let packed = fill(&mut w)?;
    w.flush().with_context(|| format!("writing {}", out.display()))?;
    let (inner, sha256, len) = w.finish();
    drop(inner);
    temp.file
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting mode {mode:o}"))?;
    temp.file
        .sync_all()
        .with_context(|| format!("writing {}", out.display()))?;
    temp.persist(&dir, out)?;
    Ok(Written { len, sha256, packed })
}

struct Temp {
    file: File,
    /// Set for the named fallback; removed on drop unless persisted.
    named: Option<PathBuf>,
}

impl Temp {
    fn create(dir: &Path) -> Result<Temp> {
        match OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_TMPFILE)
            .mode(0o600)
            .open(dir)
        {
            Ok(file) => return Ok(Temp { file, named: None }),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL | libc::ENOENT)
                ) => {}
            Err(e) => return Err(e.into()),
        }
        let (file, path) = tempfile::Builder::new().prefix(".tote-").tempfile_in(dir)?.keep()?;
        interrupt::remove_on_interrupt(&path);
        Ok(Temp {
            file,
            named: Some(path),
        })
    }

    fn persist(mut self, dir: &Path, out: &Path) -> Result<()> {
        let named = match self.named.take() {
            Some(p) => p,
            None => {
                // Give the unnamed file a hidden name, then rename it over `out`.
                let name = dir.join(format!(".tote-{}-{}", std::process::id(), self.file.as_raw_fd()));
                interrupt::remove_on_interrupt(&name);
                let src = CString::new(format!("/proc/self/fd/{}", self.file.as_raw_fd()))?;
                let dst = CString::new(name.as_os_str().as_bytes())?;
                // SAFETY: both are valid NUL-terminated paths.
                let rc = unsafe {
                    libc::linkat(
                        libc::AT_FDCWD,
                        src.as_ptr(),
                        libc::AT_FDCWD,
                        dst.as_ptr(),
                        libc::AT_SYMLINK_FOLLOW,
                    )
                };
                if rc != 0 {
                    interrupt::forget(&name);
                    return Err(std::io::Error::last_os_error()).with_context(|| format!("naming {}", name.display()));
                }
                name
            }
        };
        let res = std::fs::rename(&named, out).with_context(|| format!("renaming into {}", out.display()));
        if res.is_err() {
            let _ = std::fs::remove_file(&named);
        }
        interrupt::forget(&named);
        res
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        if let Some(p) = self.named.take() {
            let _ = std::fs::remove_file(&p);
            interrupt::forget(&p);
        }
    }
}
