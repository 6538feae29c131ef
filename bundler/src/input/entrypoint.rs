//! Which program the bundle runs.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Result};

use super::tree::{ItemKind, Tree};

pub struct EntryPoint {
    /// Absolute path at launch, e.g. `/nix/store/abc-hello/bin/hello`.
    pub absolute: Vec<u8>,
}

impl EntryPoint {
    pub fn file_name(&self) -> &OsStr {
        Path::new(OsStr::from_bytes(&self.absolute))
            .file_name()
            .unwrap_or(OsStr::new("app"))
    }
}

/// `root`: where the input's top appears at launch (`/nix/store/<hash>-app`,
/// `/opt/tool`, or `/` for a relocatable directory). `requested` is relative
/// to it; without one, the single executable in `root/bin`.
pub fn choose(root: &Path, tree: &Tree, requested: Option<&Path>) -> Result<EntryPoint> {
    let rel = match requested.map(Path::to_path_buf) {
        Some(r) => {
            if r.is_absolute() || r.components().any(|c| !matches!(c, Component::Normal(_))) {
                bail!(
                    "entry point {}: must be a path relative to {}, like bin/app",
                    r.display(),
                    root.display()
                );
            }
            let abs = root.join(&r);
            match resolve(tree, &abs) {
                Ok(()) => r,
                Err(why) => bail!("entry point {}: {why}", abs.display()),
            }
        }
        None => only_executable_in_bin(root, tree)?,
    };
    Ok(EntryPoint {
        absolute: root.join(rel).as_os_str().as_bytes().to_vec(),
    })
}

/// Does `abs` resolve, inside the tree, to an executable file? The reason if not.
pub fn executable(tree: &Tree, abs: &Path) -> std::result::Result<(), String> {
    resolve(tree, abs)
}

/// Does `abs` resolve inside the tree (following its symlinks)?
pub fn resolves(tree: &Tree, abs: &Path) -> bool {
    follow(tree, abs).is_ok()
}

fn only_executable_in_bin(root: &Path, tree: &Tree) -> Result<PathBuf> {
    let bin = root.join("bin");
    let listed = match follow(tree, &bin) {
        Ok((real, ItemKind::Dir)) => real,
        _ => bail!(
            "{} does not exist: name the program with --entrypoint REL (relative to {})",
            bin.display(),
            root.display()
        ),
    };
    let prefix = [&rel_bytes(&listed)[..], b"/"].concat();
    let candidates: Vec<String> = tree
        .items
        .iter()
        .filter_map(|i| i.path.strip_prefix(prefix.as_slice()).filter(|n| !n.contains(&b'/')))
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .filter(|n| resolve(tree, &bin.join(n)).is_ok())
        .collect();
    match candidates.as_slice() {
        [one] => Ok(Path::new("bin").join(one)),
        [] => bail!(
            "no executable in {}: name the program with --entrypoint REL (relative to {})",
            bin.display(),
            root.display()
        ),
        many => bail!(
            "{} has {} executables ({}): pick one with --entrypoint bin/NAME",
            bin.display(),
            many.len(),
            many.join(", ")
        ),
    }
}

fn rel_bytes(p: &Path) -> Vec<u8> {
    p.strip_prefix("/").unwrap_or(p).as_os_str().as_bytes().to_vec()
}

/// The entry point must resolve, inside the bundle's tree, to an executable file.
fn resolve(tree: &Tree, abs: &Path) -> std::result::Result<(), String> {
    match follow(tree, abs)? {
        (_, ItemKind::File { executable: true, .. }) => Ok(()),
        (_, ItemKind::File { .. }) => Err("is not executable".into()),
        (_, ItemKind::Dir) => Err("is a directory".into()),
        (_, ItemKind::Symlink { .. }) => Err("is a dangling symlink".into()),
    }
}

/// Resolve `abs` component by component inside the tree, following symlinks
/// (absolute ones from the tree's root) the way the kernel will at launch.
fn follow<'t>(tree: &'t Tree, abs: &Path) -> std::result::Result<(PathBuf, &'t ItemKind), String> {
    let kind_at = |p: &Path| tree.get(&rel_bytes(p)).map(|i| &i.kind);
    let end = super::paths::resolve(
        abs,
        |next| {
            let parent = next.parent().unwrap_or(Path::new("/"));
            if matches!(kind_at(parent), Some(ItemKind::File { .. })) {
                return Err(format!("{} is not a directory", parent.display()));
            }
            match kind_at(next) {
                None => Err("not found in the closure".to_string()),
                Some(ItemKind::Symlink { target }) => Ok(Some(PathBuf::from(OsStr::from_bytes(target)))),
                Some(_) => Ok(None),
            }
        },
        || "too many levels of symbolic links".to_string(),
    )?;
    kind_at(&end)
        .map(|k| (end, k))
        .ok_or_else(|| "not found in the closure".into())
}
