//! Applying an image's layers, bottom first, onto a staging directory: tar
//! members with `.wh.` whiteouts and `.wh..wh..opq` opaque directories. Every
//! write resolves symlinks inside the root, so no layer can write outside
//! it; device nodes and fifos are skipped and counted.

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufReader, Read, Seek};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use super::archive::{check_digest, decompressed, safe_relative};
use crate::input::paths;
use crate::ui::interrupt::create_dir_all_below;

/// Apply one layer onto `root`. Returns how many device/fifo entries were skipped.
pub fn apply_layer(layer: &Path, digest: Option<&str>, root: &Path, image: &Path) -> Result<usize> {
    let shown = || digest.map_or_else(|| layer.display().to_string(), String::from);
    if !layer.is_file() {
        bail!(
            "{}: layer {} named by the manifest is missing",
            image.display(),
            shown()
        );
    }
    if let Some(d) = digest {
        check_digest(layer, d, image)?;
    }
    let mut f = fs::File::open(layer).with_context(|| format!("opening layer {}", layer.display()))?;
    f.rewind()?;
    let mut ar = tar::Archive::new(decompressed(BufReader::new(f))?);
    let mut this_layer: BTreeSet<PathBuf> = BTreeSet::new();
    let mut skipped = 0;
    let bad = |what: String| anyhow!("{}: layer {}: {what}", image.display(), shown());
    for entry in ar.entries().map_err(|e| bad(format!("not a tar archive ({e})")))? {
        let mut entry = entry.map_err(|e| bad(format!("unreadable ({e})")))?;
        let name = entry
            .path()
            .map_err(|e| bad(format!("a member has a bad name ({e})")))?
            .into_owned();
        let rel = safe_relative(&name).ok_or_else(|| bad(format!("member {} escapes the root", name.display())))?;
        let Some(file_name) = rel.file_name().map(|n| n.as_bytes().to_vec()) else {
            continue; // the root itself
        };
        let parent = resolve_in(root, rel.parent().unwrap_or(Path::new("")))?;
        if file_name == b".wh..wh..opq" {
            // Opaque directory: what lower layers put there is hidden.
            if let Ok(rd) = fs::read_dir(&parent) {
                for e in rd.flatten() {
                    let child = rel.parent().unwrap_or(Path::new("")).join(e.file_name());
                    if !this_layer.contains(&child) {
                        remove(&e.path())?;
                    }
                }
            }
            continue;
        }
        if let Some(hidden) = file_name.strip_prefix(b".wh.") {
            remove(&parent.join(std::ffi::OsStr::from_bytes(hidden)))?;
            continue;
        }
        this_layer.insert(rel.clone());
        let dest = parent.join(std::ffi::OsStr::from_bytes(&file_name));
        if !write_member(&mut entry, &name, &dest, &parent, root, &bad)? {
            skipped += 1;
        }
    }
    Ok(skipped)
}

/// Write one tar member at `dest` (in `parent`, both inside `root`),
/// replacing what lower layers put there. False for what the format cannot
/// hold (device nodes, fifos), which is skipped.
fn write_member<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    name: &Path,
    dest: &Path,
    parent: &Path,
    root: &Path,
    bad: &dyn Fn(String) -> anyhow::Error,
) -> Result<bool> {
    let kind = entry.header().entry_type();
    let mode = entry.header().mode().unwrap_or(0o644);
    match kind {
        tar::EntryType::Directory => {
            if fs::symlink_metadata(dest).is_ok_and(|m| !m.is_dir()) {
                remove(dest)?;
            }
            create_dir_all_below(root, dest).with_context(|| format!("creating {}", dest.display()))?;
        }
        tar::EntryType::Regular | tar::EntryType::Continuous => {
            remove(dest)?;
            create_dir_all_below(root, parent)?;
            let mut out = fs::File::create(dest).with_context(|| format!("writing {}", dest.display()))?;
            std::io::copy(entry, &mut out).map_err(|e| bad(format!("reading {} ({e})", name.display())))?;
            let exec = if mode & 0o111 != 0 { 0o755 } else { 0o644 };
            fs::set_permissions(dest, fs::Permissions::from_mode(exec))?;
        }
        tar::EntryType::Symlink => {
            let target = entry
                .link_name()
                .ok()
                .flatten()
                .ok_or_else(|| bad(format!("symlink {} has no target", name.display())))?;
            remove(dest)?;
            create_dir_all_below(root, parent)?;
            std::os::unix::fs::symlink(&target, dest).with_context(|| format!("creating {}", dest.display()))?;
        }
        tar::EntryType::Link => {
            let target = entry
                .link_name()
                .ok()
                .flatten()
                .ok_or_else(|| bad(format!("hard link {} has no target", name.display())))?;
            let target =
                safe_relative(&target).ok_or_else(|| bad(format!("hard link {} escapes the root", name.display())))?;
            let src = resolve_in(root, &target)?;
            remove(dest)?;
            create_dir_all_below(root, parent)?;
            fs::hard_link(&src, dest)
                .map_err(|e| bad(format!("hard link {} to {}: {e}", name.display(), target.display())))?;
        }
        tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => return Ok(false),
        _ => {} // PAX/GNU headers are consumed by the tar reader
    }
    Ok(true)
}

/// `rel` inside `root`, following symlinks as if `root` were `/` (so no
/// layer can write outside it). Missing components are returned as they are.
fn resolve_in(root: &Path, rel: &Path) -> Result<PathBuf> {
    let inside = |p: &Path| root.join(p.strip_prefix("/").unwrap_or(p));
    let end = paths::resolve(
        rel,
        |next| Ok(fs::read_link(inside(next)).ok()),
        || anyhow!("{}: too many levels of symbolic links in the image", rel.display()),
    )?;
    Ok(inside(&end))
}

fn remove(p: &Path) -> Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p).with_context(|| format!("removing {}", p.display())),
        Ok(_) => fs::remove_file(p).with_context(|| format!("removing {}", p.display())),
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_paths_stay_inside_the_root() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        fs::create_dir(r.join("usr")).unwrap();
        std::os::unix::fs::symlink("/", r.join("up")).unwrap();
        std::os::unix::fs::symlink("../../..", r.join("usr/back")).unwrap();
        std::os::unix::fs::symlink("usr", r.join("u")).unwrap();
        assert_eq!(resolve_in(r, Path::new("up/etc")).unwrap(), r.join("etc"));
        assert_eq!(resolve_in(r, Path::new("usr/back/etc")).unwrap(), r.join("etc"));
        assert_eq!(resolve_in(r, Path::new("u/lib")).unwrap(), r.join("usr/lib"));
        assert_eq!(safe_relative(Path::new("./a/../b")), None);
        assert_eq!(safe_relative(Path::new("/a/b")), Some(PathBuf::from("a/b")));
    }
}
