//! Path helpers shared by the input kinds: lexical cleaning, tree paths and
//! metadata bytes, and resolving a path through symlinks the way the kernel
//! does, over any file tree (the host, an image's staging rootfs, the
//! bundle's own tree).

use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Result};

/// `p` as a tree path: relative, without the leading `/`.
pub fn rel(p: &Path) -> PathBuf {
    p.strip_prefix("/").unwrap_or(p).to_path_buf()
}

/// `p` as metadata bytes.
pub fn bytes(p: &Path) -> Vec<u8> {
    p.as_os_str().as_bytes().to_vec()
}

/// A clean absolute path (`--mount-at`, image paths): no `.`, `..` or empty
/// components, not `/` itself.
pub fn clean_absolute(p: &Path, what: &str) -> Result<PathBuf> {
    let ok = p.is_absolute()
        && p.components().count() > 1
        && p.components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if !ok {
        bail!(
            "{what} {}: must be a clean absolute path other than /, like /opt/tool",
            p.display()
        );
    }
    Ok(p.to_path_buf())
}

/// `p` as an absolute path with `.` dropped and `..` popping (never above `/`).
pub fn clean(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out
}

/// Resolve `path` from `/`, component by component. `visit(p)` says what is
/// at `p`: `Some(target)` for a symlink, which is then followed (an absolute
/// target from `/`), `None` for anything else. After 40 symlinks, `too_many()`.
/// Returns the path reached, which holds no symlink.
pub fn resolve<E>(
    path: &Path,
    mut visit: impl FnMut(&Path) -> Result<Option<PathBuf>, E>,
    too_many: impl FnOnce() -> E,
) -> Result<PathBuf, E> {
    let mut pending: Vec<PathBuf> = path.components().rev().map(|c| PathBuf::from(c.as_os_str())).collect();
    let mut cur = PathBuf::from("/");
    let mut hops = 0;
    while let Some(c) = pending.pop() {
        match c.components().next() {
            Some(Component::Normal(_)) => {}
            Some(Component::ParentDir) => {
                cur.pop();
                continue;
            }
            _ => continue,
        }
        let next = cur.join(&c);
        match visit(&next)? {
            Some(target) => {
                hops += 1;
                if hops > 40 {
                    return Err(too_many());
                }
                if target.is_absolute() {
                    cur = PathBuf::from("/");
                }
                pending.extend(target.components().rev().map(|c| PathBuf::from(c.as_os_str())));
            }
            None => cur = next,
        }
    }
    Ok(cur)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn paths_are_cleaned() {
        assert_eq!(clean(Path::new("/usr/bin/../lib/./x")), PathBuf::from("/usr/lib/x"));
        assert_eq!(clean(Path::new("../../x")), PathBuf::from("/x"));
    }

    #[test]
    fn symlinks_are_followed_like_the_kernel_does() {
        let links: HashMap<&str, &str> = HashMap::from([
            ("/lib64", "usr/lib64"),
            ("/usr/lib64/ld.so", "../lib/ld.so"),
            ("/loop", "/loop"),
        ]);
        let visit = |p: &Path| Ok::<_, String>(links.get(p.to_str().unwrap()).map(PathBuf::from));
        assert_eq!(
            resolve(Path::new("/lib64/ld.so"), visit, || "loop".to_string()),
            Ok(PathBuf::from("/usr/lib/ld.so"))
        );
        assert_eq!(
            resolve(Path::new("/loop/x"), visit, || "loop".to_string()),
            Err("loop".to_string())
        );
    }
}
