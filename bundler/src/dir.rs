//! A plain directory: a relocatable program runs straight from the cache
//! (no namespace); with `--mount-at /opt/tool` the directory appears at that
//! absolute path, in place of whatever the host has there.

use std::path::Path;

use anyhow::{bail, Result};
use tote_format::{MountKind, MountSpec};

use crate::input::{bytes, check_symlinks, clean_absolute, rel, Input};
use crate::pack::Launch;
use crate::scan::TreeBuilder;

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
    let entry = crate::entrypoint::choose(&appears_at, &tree, requested)?;
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
        .filter(|i| matches!(i.kind, crate::scan::ItemKind::File { .. }))
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
