//! Nix input: a store path (or a symlink to one) and its closure as
//! `nix-store --query --requisites` reports it.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

pub struct NixInput {
    /// The store directory, normally `/nix/store`.
    pub store_dir: PathBuf,
    /// The top-level store path the user named.
    pub root: PathBuf,
    /// What the user's path pointed at inside `root`, if deeper (`bin/app`).
    pub inner: Option<PathBuf>,
    /// Every store path of the closure, sorted.
    pub closure: Vec<PathBuf>,
}

impl NixInput {
    /// The store appears at its own path at launch.
    pub fn mount(&self) -> tote_format::MountSpec {
        let target = self.store_dir.as_os_str().as_bytes().to_vec();
        tote_format::MountSpec {
            source: target[1..].to_vec(),
            target,
        }
    }
}

pub fn store_dir() -> PathBuf {
    std::env::var_os("NIX_STORE_DIR")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("/nix/store"), PathBuf::from)
}

pub fn resolve(path: &Path) -> Result<NixInput> {
    let store_dir = store_dir();
    let real = std::fs::canonicalize(path).with_context(|| format!("{}: cannot resolve the path", path.display()))?;
    let Ok(rest) = real.strip_prefix(&store_dir) else {
        bail!(
            "{} is not in the Nix store ({}): pass a store path or a symlink to one, like ./result",
            path.display(),
            store_dir.display()
        );
    };
    let mut parts = rest.components();
    let Some(name) = parts.next() else {
        bail!("{} is the store directory itself, not a store path", path.display());
    };
    let root = store_dir.join(name);
    let inner = Some(parts.as_path().to_path_buf()).filter(|p| !p.as_os_str().is_empty());
    let closure = query_requisites(&root, &store_dir)?;
    Ok(NixInput {
        store_dir,
        root,
        inner,
        closure,
    })
}

fn query_requisites(root: &Path, store_dir: &Path) -> Result<Vec<PathBuf>> {
    let out = match Command::new("nix-store")
        .arg("--query")
        .arg("--requisites")
        .arg(root)
        .output()
    {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("nix-store not found on PATH: tote needs Nix to compute the closure of {} (install Nix, e.g. apt-get install nix-bin)", root.display())
        }
        Err(e) => return Err(e).context("running nix-store"),
    };
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let line = err
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("no message");
        let line = line.strip_prefix("error: ").unwrap_or(line);
        bail!("nix-store --query --requisites {} failed: {line}", root.display());
    }
    let mut paths: Vec<PathBuf> = out
        .stdout
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| PathBuf::from(OsStr::from_bytes(l)))
        .collect();
    for p in &paths {
        if p.parent() != Some(store_dir) {
            bail!(
                "nix-store reported {}, which is not a store path under {}",
                p.display(),
                store_dir.display()
            );
        }
    }
    paths.sort(); // determinism
    paths.dedup();
    Ok(paths)
}
