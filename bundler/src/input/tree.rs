//! Walk input trees into a sorted list of items (the future index entries),
//! recording only what the format keeps: kind, exec bit, size, symlink
//! target. Owners, mtimes and other permission bits are not looked at.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

#[derive(Debug, Clone)]
pub enum ItemKind {
    Dir,
    File {
        executable: bool,
        size: u64,
        source: PathBuf,
    },
    Symlink {
        target: Vec<u8>,
    },
}

#[derive(Debug, Clone)]
pub struct Item {
    /// Path relative to `/`, e.g. `nix/store/abc-hello/bin/hello`.
    pub path: Vec<u8>,
    pub kind: ItemKind,
}

/// The tree a bundle holds, sorted by path bytes.
pub struct Tree {
    pub items: Vec<Item>,
}

impl Tree {
    pub fn get(&self, path: &[u8]) -> Option<&Item> {
        self.items
            .binary_search_by(|i| i.path.as_slice().cmp(path))
            .ok()
            .map(|n| &self.items[n])
    }

    /// Sum of the file sizes (the metadata's `total_size`).
    pub fn total_size(&self) -> u64 {
        self.items
            .iter()
            .map(|i| match i.kind {
                ItemKind::File { size, .. } => size,
                _ => 0,
            })
            .sum()
    }
}

/// Collects items from several places, then sorts them into a [`Tree`].
#[derive(Default)]
pub struct TreeBuilder {
    items: Vec<Item>,
}

impl TreeBuilder {
    /// The directories on the way to `rel` (not `rel` itself).
    pub fn ancestors(&mut self, rel: &Path) {
        let mut anc = PathBuf::new();
        let comps: Vec<_> = rel.components().collect();
        for c in comps.iter().take(comps.len().saturating_sub(1)) {
            anc.push(c);
            self.items.push(Item {
                path: anc.as_os_str().as_bytes().to_vec(),
                kind: ItemKind::Dir,
            });
        }
    }

    /// `src` (a file, symlink or whole directory) at tree path `rel`; an
    /// empty `rel` puts a directory's contents at the top of the tree.
    pub fn add(&mut self, src: &Path, rel: &Path) -> Result<()> {
        walk(src, rel, &mut self.items)
    }

    pub fn push(&mut self, item: Item) {
        if matches!(item.kind, ItemKind::File { .. }) {
            crate::ui::progress::count(1);
        }
        self.items.push(item);
    }

    pub fn build(self) -> Result<Tree> {
        let mut items = self.items;
        items.sort_by(|a, b| a.path.cmp(&b.path)); // determinism: never inode order
                                                   // The same directory reached twice (an ancestor and a walked dir) is one entry.
        items.dedup_by(|b, a| a.path == b.path && matches!((&a.kind, &b.kind), (ItemKind::Dir, ItemKind::Dir)));
        for w in items.windows(2) {
            if w[0].path == w[1].path {
                bail!("/{} appears twice in the input", String::from_utf8_lossy(&w[0].path));
            }
        }
        Ok(Tree { items })
    }
}

fn walk(path: &Path, rel_path: &Path, items: &mut Vec<Item>) -> Result<()> {
    let meta = fs::symlink_metadata(path).with_context(|| format!("reading {}", path.display()))?;
    let rel = rel_path.as_os_str().as_bytes().to_vec();
    let ft = meta.file_type();
    if ft.is_dir() {
        if !rel.is_empty() {
            items.push(Item {
                path: rel,
                kind: ItemKind::Dir,
            });
        }
        let mut children: Vec<std::ffi::OsString> = fs::read_dir(path)
            .with_context(|| format!("listing {}", path.display()))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .with_context(|| format!("listing {}", path.display()))?;
        children.sort();
        for c in children {
            walk(&path.join(&c), &rel_path.join(&c), items)?;
        }
    } else if ft.is_file() {
        let executable = meta.permissions().mode() & 0o111 != 0;
        crate::ui::progress::count(1);
        items.push(Item {
            path: rel,
            kind: ItemKind::File {
                executable,
                size: meta.len(),
                source: path.to_path_buf(),
            },
        });
    } else if ft.is_symlink() {
        let target = fs::read_link(path).with_context(|| format!("reading symlink {}", path.display()))?;
        items.push(Item {
            path: rel,
            kind: ItemKind::Symlink {
                target: target.as_os_str().as_bytes().to_vec(),
            },
        });
    } else {
        bail!(
            "{}: unsupported file type (only directories, regular files and symlinks can be bundled)",
            path.display()
        );
    }
    Ok(())
}
