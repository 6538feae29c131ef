//! Nix input: a store path (or a symlink to one) and its closure as
//! `nix-store --query --requisites` reports it, or, without Nix or without
//! the path in Nix's database, as a scan of the files for references finds
//! it. At launch the store appears at its own path, over the host's.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::model::{Input, Launch};
use super::tree::{Tree, TreeBuilder};
use super::{entrypoint, refscan};
use crate::ui::progress;

/// A store path and its closure as an input, the store layered over the
/// host's. `given`: the entry point named with `--entrypoint`;
/// `main_program`: a flake package's `meta.mainProgram`.
pub fn input(path: &Path, scan: bool, given: Option<&Path>, main_program: Option<&str>) -> Result<Input> {
    let input = resolve(path, scan)?;
    let tree = scan_store_paths(&input.store_dir, &input.closure)?;
    let requested = given
        .map(Path::to_path_buf)
        .or_else(|| input.inner.clone())
        .or_else(|| main_program.map(|m| Path::new("bin").join(m)));
    let entry = entrypoint::choose(&input.root, &tree, requested.as_deref())?;
    let launch = Launch {
        name: entry.file_name().to_string_lossy().into_owned(),
        entrypoint: entry.absolute,
        mounts: vec![input.mount()],
        relocation: relocation(&input.store_dir),
        ..Launch::default()
    };
    let how = if input.scanned { ", references scanned" } else { "" };
    Ok(Input {
        tree,
        launch,
        summary: format!("closure: {} store paths{how}", input.closure.len()),
        staging: None,
    })
}

/// A store bundle relocates where namespaces are refused, if its store
/// directory is long enough to be replaced by `/tmp/` and a name.
fn relocation(store_dir: &Path) -> tote_format::Relocation {
    if store_dir.as_os_str().len() >= tote_format::MIN_STORE_DIR {
        tote_format::Relocation::Store {
            unrewritable: Vec::new(),
        }
    } else {
        tote_format::Relocation::None
    }
}

/// Every store path of a closure, with the store directory's ancestors.
fn scan_store_paths(store_dir: &Path, paths: &[PathBuf]) -> Result<Tree> {
    let mut b = TreeBuilder::default();
    let rel = store_dir.strip_prefix("/").unwrap_or(store_dir);
    b.ancestors(&rel.join("x"));
    for p in paths {
        b.add(p, p.strip_prefix("/").unwrap_or(p))?;
    }
    b.build()
}

struct NixInput {
    /// The store directory, normally `/nix/store`.
    pub store_dir: PathBuf,
    /// The top-level store path the user named.
    pub root: PathBuf,
    /// What the user's path pointed at inside `root`, if deeper (`bin/app`).
    pub inner: Option<PathBuf>,
    /// Every store path of the closure, sorted.
    pub closure: Vec<PathBuf>,
    /// Found by scanning contents rather than from Nix's database.
    pub scanned: bool,
}

impl NixInput {
    /// The store appears at its own path at launch, over the host's.
    pub fn mount(&self) -> tote_format::MountSpec {
        tote_format::MountSpec::at_own_path(tote_format::MountKind::Layer, self.store_dir.as_os_str().as_bytes())
    }
}

pub fn store_dir() -> PathBuf {
    std::env::var_os("NIX_STORE_DIR")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("/nix/store"), PathBuf::from)
}

/// Is `path` (after symlinks) inside the store directory?
pub fn in_store(path: &Path) -> bool {
    std::fs::canonicalize(path).is_ok_and(|p| p.starts_with(store_dir()))
}

/// `scan`: compute the closure from file contents even where Nix could
/// answer (it does so anyway when Nix is missing or does not know the path).
fn resolve(path: &Path, scan: bool) -> Result<NixInput> {
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
        bail!(
            "{} is the store directory itself, not a store path: pass one of its store paths, like ./result",
            path.display()
        );
    };
    let root = store_dir.join(name);
    let inner = Some(parts.as_path().to_path_buf()).filter(|p| !p.as_os_str().is_empty());
    if refscan::hash_part(name.as_os_str().as_bytes()).is_none() {
        bail!("{} is not a store path: its name must be <hash>-<name>", root.display());
    }
    let from_db = if scan {
        None
    } else {
        query_requisites(&root, &store_dir)?
    };
    let scanned = from_db.is_none();
    let closure = match from_db {
        Some(c) => c,
        None => refscan::closure(&store_dir, &root)?,
    };
    Ok(NixInput {
        store_dir,
        root,
        inner,
        closure,
        scanned,
    })
}

/// `None` when Nix is not installed or its database does not know `root`
/// (a closure copied by hand): the caller scans instead.
fn query_requisites(root: &Path, store_dir: &Path) -> Result<Option<Vec<PathBuf>>> {
    progress::step(|| format!("running nix-store --query --requisites {}", root.display()));
    let out = match Command::new("nix-store")
        .arg("--query")
        .arg("--requisites")
        .arg(root)
        .output()
    {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).context("running nix-store"),
    };
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && (err.contains("is not valid") || err.contains("does not exist")) {
        return Ok(None);
    }
    if !out.status.success() {
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
    Ok(Some(paths))
}
