//! Launching without namespaces, where the host refuses them ("relocated").
//!
//! A Nix store bundle: the store directory (`/nix/store`, 10 bytes) is
//! replaced in every store reference by a path of the same length that the
//! user owns (`short_path`): a symlink to the store directory of a cache
//! entry extracted with that rewrite. No byte offset moves, so ELF
//! interpreters, RUNPATHs, `#!` lines and `.pyc` constants keep working, and
//! the rewritten entry point is exec'd with no namespace at all.
//!
//! A host ELF program runs through the bundle's own dynamic loader with the
//! bundle's library directories instead (`ld.so --library-path …`).

use std::convert::Infallible;
use std::ffi::OsStr;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

use tote_cache::Relocate;
use tote_format::Relocation;

use super::context::Launch;
use super::exec::exec;
use super::{plan, short_path};
use crate::error::{Code, Failure, Result};
use crate::tree::Want;

/// Launch without namespaces: a store bundle from a relocated entry through
/// its short path, a host ELF program through its own loader. `refused`
/// says why the namespaces could not be used.
pub fn launch(l: &Launch<'_>, refused: &Failure) -> Result<Infallible> {
    let meta = l.meta();
    match &meta.relocation {
        Relocation::Store { unrewritable } => {
            let (Some(store), [mount]) = (meta.store_dir(), meta.mounts.as_slice()) else {
                return Err(refused_too(refused, "the bundle names no store directory"));
            };
            let Some(marker) = store_path_of(&meta.entrypoint, store) else {
                return Err(refused_too(refused, "the entry point is not in the store directory"));
            };
            let candidates = short_path::candidates(l.uid, l.root, l.id, store.len());
            let store_of = |short: &[u8]| {
                l.root
                    .join(entry_name(l.id, short))
                    .join("tree")
                    .join(plan::path_of(&mount.source))
            };
            let claimed =
                short_path::claim(&candidates, l.uid, store_of, marker, l.dbg).map_err(|f| both(refused, f))?;
            let short = &claimed.short;
            let want = Want {
                name: entry_name(l.id, short),
                relocate: Some(Relocate {
                    store_dir: store,
                    to: short,
                }),
            };
            let found = l.found(&want).inspect_err(|_| claimed.release())?;
            // Pinned now; the short path is locked for the program, and
            // made again if a cleaner (or a removal that raced with this
            // launch) took it.
            short_path::hold(short, l.uid, &store_of(short), marker, l.dbg).map_err(|f| both(refused, f))?;
            for p in unrewritable {
                l.dbg.step(|| {
                    format!(
                        "relocated: /{} holds store references inside compressed data, left as they are",
                        String::from_utf8_lossy(p)
                    )
                });
            }
            let program = [&short[..], &meta.entrypoint[store.len()..]].concat();
            let mut argv = l.argv.clone();
            argv[0] = program.clone();
            exec(program, &argv, found, l.dbg)
        }
        Relocation::Loader {
            interpreter,
            library_path,
        } => {
            let found = l.found(&l.want())?;
            let (program, argv) = loader_exec(
                &found.entry.tree(),
                &meta.entrypoint,
                interpreter,
                library_path,
                &l.argv[1..],
            )?;
            l.dbg.step(|| "relocated: through the bundle's own loader".to_string());
            exec(program, &argv, found, l.dbg)
        }
        Relocation::None => Err(refused_too(refused, "the bundle cannot relocate")),
    }
}

/// The store path (`<hash>-name`) that `path` lies in, below `store`.
fn store_path_of<'p>(path: &'p [u8], store: &[u8]) -> Option<&'p [u8]> {
    let rest = path.strip_prefix(store)?.strip_prefix(b"/")?;
    let name = rest.split(|&c| c == b'/').next()?;
    (!name.is_empty()).then_some(name)
}

fn refused_too(refused: &Failure, why: &str) -> Failure {
    both(refused, Failure::new(Code::Namespace, why))
}

/// `<id>-<short name>`: the entry relocated for one short path.
fn entry_name(id: &str, short: &[u8]) -> String {
    let name = &short[short_path::DIR.len() + 1..];
    format!("{id}-{}", String::from_utf8_lossy(name))
}

/// `abs` (a path as the program would see it in the launch view) inside
/// `tree`, following symlinks the way the kernel would in that view: an
/// absolute target leads back to `tree`, never out of it. Components that
/// are missing are kept as they are.
fn confine(tree: &Path, abs: &[u8]) -> Result<PathBuf> {
    let mut pending: Vec<Vec<u8>> = Path::new(OsStr::from_bytes(abs))
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.as_bytes().to_vec()),
            Component::ParentDir => Some(b"..".to_vec()),
            _ => None,
        })
        .collect();
    let mut cur = PathBuf::new();
    let mut hops = 0;
    while let Some(c) = pending.pop() {
        if c == b".." {
            cur.pop();
            continue;
        }
        let next = cur.join(OsStr::from_bytes(&c));
        match std::fs::read_link(tree.join(&next)) {
            Ok(target) => {
                hops += 1;
                if hops > 40 {
                    return Err(Failure::new(
                        Code::Exec,
                        format!("{}: too many levels of symbolic links", String::from_utf8_lossy(abs)),
                    ));
                }
                if target.is_absolute() {
                    cur = PathBuf::new();
                }
                pending.extend(target.components().rev().filter_map(|c| match c {
                    Component::Normal(n) => Some(n.as_bytes().to_vec()),
                    Component::ParentDir => Some(b"..".to_vec()),
                    _ => None,
                }));
            }
            Err(_) => cur = next,
        }
    }
    Ok(tree.join(cur))
}

/// The exec of a host ELF program through the bundle's own loader:
/// `loader --library-path DIRS [--argv0 ARGV0] PROGRAM ARGS…`, every path
/// inside `tree`. argv[0] is the entry point's path in the tree (glibc's
/// loader takes `--argv0` from 2.33; an older one gets the program's real
/// path). A static program (no loader) is exec'd from the tree directly.
fn loader_exec(
    tree: &Path,
    entrypoint: &[u8],
    interpreter: &[u8],
    library_path: &[Vec<u8>],
    args: &[Vec<u8>],
) -> Result<(Vec<u8>, Vec<Vec<u8>>)> {
    let argv0 = [tree.as_os_str().as_bytes(), entrypoint].concat();
    let program = confine(tree, entrypoint)?.into_os_string().into_vec();
    if interpreter.is_empty() {
        let mut argv = vec![argv0];
        argv.extend_from_slice(args);
        return Ok((program, argv));
    }
    let loader = confine(tree, interpreter)?.into_os_string().into_vec();
    let mut dirs = Vec::new();
    for d in library_path {
        let real = confine(tree, d)?;
        if real.is_dir() {
            dirs.push(real.into_os_string().into_vec());
        }
    }
    let mut argv = vec![loader.clone(), b"--library-path".to_vec(), dirs.join(&b':')];
    if takes_argv0(Path::new(OsStr::from_bytes(&loader))) {
        argv.extend([b"--argv0".to_vec(), argv0]);
    }
    argv.push(program);
    argv.extend_from_slice(args);
    Ok((loader, argv))
}

/// Does this glibc loader know `--argv0` (2.33 and later)?
fn takes_argv0(loader: &Path) -> bool {
    std::fs::read(loader).is_ok_and(|b| b.windows(7).any(|w| w == b"--argv0"))
}

/// A failure to relocate, after the namespaces were refused: both causes.
fn both(refused: &Failure, relocating: Failure) -> Failure {
    let mut f = relocating;
    f.message = format!(
        "{}; launching without namespaces failed too: {}",
        refused.message, f.message
    );
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relocated_entries_are_named_after_the_short_path() {
        assert_eq!(entry_name("abc", b"/tmp/xy9z0"), "abc-xy9z0");
    }

    #[test]
    fn the_entry_points_store_path_marks_the_short_path() {
        fn of(p: &[u8]) -> Option<&[u8]> {
            store_path_of(p, b"/nix/store")
        }
        assert_eq!(of(b"/nix/store/aaa-app/bin/app"), Some(&b"aaa-app"[..]));
        assert_eq!(of(b"/nix/store/aaa-app"), Some(&b"aaa-app"[..]));
        assert_eq!(of(b"/nix/store/"), None);
        assert_eq!(of(b"/nix/storex/aaa"), None);
        assert_eq!(of(b"/usr/bin/x"), None);
    }

    #[test]
    fn paths_are_confined_to_the_tree() {
        let t = tempfile::tempdir().unwrap();
        let tree = t.path();
        std::fs::create_dir_all(tree.join("usr/lib/x86_64-linux-gnu")).unwrap();
        std::fs::write(tree.join("usr/lib/x86_64-linux-gnu/ld.so"), b"").unwrap();
        std::os::unix::fs::symlink("usr/lib", tree.join("lib")).unwrap();
        std::fs::create_dir_all(tree.join("usr/lib64")).unwrap();
        std::os::unix::fs::symlink("usr/lib64", tree.join("lib64")).unwrap();
        // Debian's absolute link: inside the tree, it must stay there.
        std::os::unix::fs::symlink("/lib/x86_64-linux-gnu/ld.so", tree.join("usr/lib64/ld.so")).unwrap();
        assert_eq!(
            confine(tree, b"/lib64/ld.so").unwrap(),
            tree.join("usr/lib/x86_64-linux-gnu/ld.so")
        );
        assert_eq!(confine(tree, b"/usr/../../../etc").unwrap(), tree.join("etc"));
        std::os::unix::fs::symlink("/loop", tree.join("loop")).unwrap();
        assert!(confine(tree, b"/loop/x").is_err());
    }
}
