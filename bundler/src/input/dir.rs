//! A plain directory: a relocatable program runs straight from the cache
//! (no namespace); with `--mount-at /opt/tool` the directory appears at that
//! absolute path, in place of whatever the host has there.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::{bail, Result};
use tote_format::{MountKind, MountSpec};

use super::entrypoint;
use super::model::{Input, Launch};
use super::paths::{bytes, clean_absolute, rel};
use super::tree::{ItemKind, Tree, TreeBuilder};

pub fn resolve(dir: &Path, mount_at: Option<&Path>, requested: Option<&Path>) -> Result<Input> {
    let mount_at = mount_at.map(|m| clean_absolute(m, "--mount-at")).transpose()?;
    let appears_at = mount_at.clone().unwrap_or_else(|| Path::new("/").to_path_buf());
    let mut b = TreeBuilder::default();
    if let Some(m) = &mount_at {
        b.ancestors(&rel(m));
    }
    b.add(dir, &rel(&appears_at))?;
    let tree = b.build()?;
    if tree.items.is_empty() {
        bail!(
            "{} is empty: nothing to bundle (put the program and its files in it)",
            dir.display()
        );
    }
    check_symlinks(&tree, &appears_at, dir)?;
    let entry = entrypoint::choose(&appears_at, &tree, requested)?;
    let launch = Launch {
        name: entry.file_name().to_string_lossy().into_owned(),
        entrypoint: entry.absolute,
        mounts: mount_at
            .iter()
            .map(|m| MountSpec::at_own_path(MountKind::Replace, &bytes(m)))
            .collect(),
        ..Launch::default()
    };
    let files = tree
        .items
        .iter()
        .filter(|i| matches!(i.kind, ItemKind::File { .. }))
        .count();
    let summary = match &mount_at {
        Some(m) => format!("directory at {}: {files} files", m.display()),
        None => format!("relocatable directory: {files} files"),
    };
    Ok(Input {
        tree,
        launch,
        summary,
        staging: None,
    })
}

/// Every symlink must lead somewhere: inside the tree, or (absolute, outside
/// where the tree appears) on this host.
fn check_symlinks(tree: &Tree, appears_at: &Path, origin: &Path) -> Result<()> {
    for item in &tree.items {
        let ItemKind::Symlink { target } = &item.kind else {
            continue;
        };
        let at = Path::new("/").join(OsStr::from_bytes(&item.path));
        let t = Path::new(OsStr::from_bytes(target));
        let inside = !t.is_absolute() || t.starts_with(appears_at) && appears_at != Path::new("/");
        let ok = if inside {
            entrypoint::resolves(tree, &at.parent().unwrap_or(Path::new("/")).join(t))
        } else {
            t.exists()
        };
        if !ok {
            let shown = origin.join(at.strip_prefix(appears_at).unwrap_or(&at));
            bail!(
                "{} is a dangling symlink (to {}): fix or remove it before bundling",
                shown.display(),
                t.display()
            );
        }
    }
    Ok(())
}
