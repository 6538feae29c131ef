//! A bundle's top-level items: the units people think in. For a Nix bundle
//! they are store paths; for an image, the top directories of its root;
//! for a directory, its own top-level entries. `pack` groups file contents
//! by item, `inspect` sizes them and `diff` compares them.

use std::collections::BTreeMap;

use tote_format::{EntryKind, Index, Meta, MountKind, MountSpec};

/// Tree paths whose children are the top-level items: the bundle subtrees
/// that appear at launch (`nix/store`, an image's root). None: the tree's
/// own top level is.
pub fn bases<'a>(mounts: &'a [MountSpec], root: &'a [u8]) -> Vec<&'a [u8]> {
    let mut bases: Vec<&[u8]> = mounts
        .iter()
        .filter(|m| m.kind != MountKind::Host)
        .map(|m| m.source.as_slice())
        .collect();
    if !root.is_empty() {
        bases.push(root);
    }
    bases
}

/// The item `path` belongs to: the child of the first base it is below,
/// else its first component.
pub fn item_of<'a>(path: &'a [u8], bases: &[&[u8]]) -> &'a [u8] {
    let base = bases.iter().find(|b| below(path, b)).map_or(0, |b| b.len() + 1);
    let end = path[base..]
        .iter()
        .position(|&c| c == b'/')
        .map_or(path.len(), |i| base + i);
    &path[..end]
}

/// The item of an entry, or None for the directories that lead to the
/// bases (`nix`, `nix/store`), which belong to no item.
pub fn item_of_entry<'a>(path: &'a [u8], bases: &[&[u8]]) -> Option<&'a [u8]> {
    if bases.iter().any(|b| *b == path || below(b, path)) {
        return None;
    }
    Some(item_of(path, bases))
}

/// `path` is strictly below `dir`.
fn below(path: &[u8], dir: &[u8]) -> bool {
    path.starts_with(dir) && path.get(dir.len()) == Some(&b'/')
}

/// Where a tree path appears when the bundle runs: below a mount's target
/// (`/nix/store/…`), below `/` for a bundle root, else as it is in the
/// cache entry (relative: the program runs from there).
pub fn launch_path(meta: &Meta, path: &[u8]) -> String {
    let shown = meta
        .mounts
        .iter()
        .filter(|m| m.kind != MountKind::Host)
        .find_map(|m| {
            (m.source == path || below(path, &m.source)).then(|| [&m.target[..], &path[m.source.len()..]].concat())
        })
        .or_else(|| {
            let root = &meta.root;
            (!root.is_empty() && (root == path || below(path, root))).then(|| {
                let rest = &path[root.len()..];
                if rest.is_empty() {
                    b"/".to_vec()
                } else {
                    rest.to_vec()
                }
            })
        })
        .unwrap_or_else(|| path.to_vec());
    String::from_utf8_lossy(&shown).into_owned()
}

/// One top-level item and what it holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Item {
    /// Where it appears at launch (see `launch_path`).
    pub path: String,
    /// Bytes of its files (before deduplication).
    pub size: u64,
    pub files: u64,
    /// Its entries: the item itself and everything below it.
    pub entries: u64,
}

/// The items of a bundle, keyed by tree path.
pub fn items(meta: &Meta, index: &Index) -> BTreeMap<Vec<u8>, Item> {
    let bases = bases(&meta.mounts, &meta.root);
    let mut items: BTreeMap<Vec<u8>, Item> = BTreeMap::new();
    for e in &index.entries {
        let Some(key) = item_of_entry(&e.path, &bases) else {
            continue;
        };
        let item = items.entry(key.to_vec()).or_insert_with(|| Item {
            path: launch_path(meta, key),
            ..Item::default()
        });
        item.entries += 1;
        if let EntryKind::File { size, .. } = e.kind {
            item.size += size;
            item.files += 1;
        }
    }
    items
}

/// Largest first; equal sizes by path.
pub fn by_size(items: impl IntoIterator<Item = Item>) -> Vec<Item> {
    let mut v: Vec<Item> = items.into_iter().collect();
    v.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.path.cmp(&b.path)));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Vec<&'static [u8]> {
        vec![b"nix/store"]
    }

    #[test]
    fn items_are_store_paths() {
        assert_eq!(item_of(b"nix/store/abc-py/lib/os.py", &store()), b"nix/store/abc-py");
        assert_eq!(item_of(b"nix/store/abc-py", &store()), b"nix/store/abc-py");
        assert_eq!(item_of(b"opt/x/y", &store()), b"opt");
        assert_eq!(item_of_entry(b"nix", &store()), None);
        assert_eq!(item_of_entry(b"nix/store", &store()), None);
        assert_eq!(item_of_entry(b"nix/storex", &store()), Some(&b"nix"[..]));
        assert_eq!(item_of(b"bin/x", &[]), b"bin");
    }

    #[test]
    fn launch_paths_follow_mounts_and_root() {
        let nix = Meta {
            mounts: vec![MountSpec::at_own_path(MountKind::Layer, b"/nix/store")],
            ..Meta::default()
        };
        assert_eq!(launch_path(&nix, b"nix/store/abc-py"), "/nix/store/abc-py");
        assert_eq!(launch_path(&nix, b"nix/storex"), "nix/storex");
        let image = Meta {
            root: b"rootfs".to_vec(),
            ..Meta::default()
        };
        assert_eq!(launch_path(&image, b"rootfs/usr"), "/usr");
        assert_eq!(launch_path(&image, b"rootfs"), "/");
        assert_eq!(launch_path(&Meta::default(), b"bin"), "bin");
    }
}
