//! `tote image`'s pipeline: a [`Source`] (what `tote bundle` resolves, a
//! bundle's own tree and metadata, or an image's own layers) → [`plan`]
//! (which entries share a layer: `layering`) → `layer` (deterministic tar
//! blobs) → [`config`] → `write` (oci-archive, oci-dir, docker-archive).

pub mod diff;
pub mod layer;
pub mod layering;
pub mod write;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use serde_json::{json, Value};

use crate::input::{self, refscan, ItemKind, Launch, Tree};
use crate::pack::hash::{stamp, Stamp};
use layer::{Blob, Content, Entry, Layer, Node};

/// The time every image and layer says it was made (as Nix's images do).
pub const CREATED: &str = "1970-01-01T00:00:01Z";

/// What an image is made from.
pub struct Source {
    pub tree: Tree,
    pub launch: Launch,
    /// An image input: its config and layer files, kept as they are.
    pub image: Option<input::Image>,
    /// The bundle's id, for a bundle input.
    pub bundle_id: Option<String>,
    pub summary: String,
    /// Where the tree's files live (a bundle's extracted tree, an input's
    /// staging), removed once the image is written.
    pub _staging: Option<tempfile::TempDir>,
}

/// A bundle file: its tree, extracted (every hash checked) into a
/// temporary directory, and its launch metadata.
pub fn from_bundle(path: &Path) -> Result<Source> {
    let (o, meta, index) = crate::reader::load(path)?;
    let data = o.layout.data(&o.map).with_context(|| format!("{}", path.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(".tote-image-")
        .tempdir()
        .context("creating a temporary directory")?;
    crate::ui::interrupt::remove_on_interrupt(staging.path());
    // (Times are left as they are: a layer's tar sets its own.)
    tote_cache::unpack::write_tree(&index, data, staging.path(), false)
        .map_err(|e| anyhow::anyhow!("{}: {e:#}", path.display()))?;
    // The tree as the index gives it (sorted, every hash checked as it was
    // written), its files in the staging copy: no walk over it again.
    let items = index
        .entries
        .iter()
        .map(|e| input::Item {
            path: e.path.clone(),
            kind: match &e.kind {
                tote_format::EntryKind::Dir => ItemKind::Dir,
                tote_format::EntryKind::Symlink { target } => ItemKind::Symlink { target: target.clone() },
                tote_format::EntryKind::File { executable, size, .. } => ItemKind::File {
                    executable: *executable,
                    size: *size,
                    source: staging.path().join(std::ffi::OsStr::from_bytes(&e.path)),
                },
            },
        })
        .collect();
    let tree = Tree { items };
    let launch = Launch {
        name: meta.name.clone(),
        entrypoint: meta.entrypoint.clone(),
        args: meta.args.clone(),
        cmd: meta.cmd.clone(),
        env: meta.env.clone(),
        workdir: meta.workdir.clone(),
        root: meta.root.clone(),
        mounts: meta.mounts.clone(),
        mode: meta.mode,
        relocation: meta.relocation.clone(),
        arch: meta.arch,
    };
    Ok(Source {
        tree,
        launch,
        image: None,
        bundle_id: Some(o.layout.trailer.bundle_id().to_string()),
        summary: format!("bundle {}", meta.name),
        _staging: Some(staging),
    })
}

/// The layers planned for `src`, bottom first, and the state of every
/// input file before it was first read (checked again once the image is
/// written: what was read must be what was there).
pub struct Plan<'s> {
    pub layers: Vec<Layer<'s>>,
    pub stamps: Vec<(&'s Path, Stamp)>,
}

impl Plan<'_> {
    /// Every input file must still be as it was when first read.
    pub fn check_unchanged(&self) -> Result<()> {
        crate::pack::hash::unchanged(self.stamps.iter().map(|(p, s)| (*p, s)))
    }
}

pub fn plan(src: &Source, max_layers: usize) -> Result<Plan<'_>> {
    if let Some(image) = &src.image {
        let history = non_empty_history(&image.config);
        let layers = image
            .layers
            .iter()
            .enumerate()
            .map(|(i, (file, _))| Layer {
                created_by: history.get(i).cloned().unwrap_or_else(|| format!("layer {}", i + 1)),
                content: Content::Tar(file.clone()),
            })
            .collect();
        return Ok(Plan {
            layers,
            stamps: Vec::new(),
        });
    }
    check_mounts(&src.launch)?;
    // The tree's entries at their paths in the image.
    let entries: Vec<(usize, &[u8])> = src
        .tree
        .items
        .iter()
        .enumerate()
        .filter_map(|(i, it)| image_path(&src.launch, &it.path).map(|p| (i, p)))
        .collect();
    // A bundle's tree is a private copy, written by this command: nothing
    // else can change it.
    let stamps = entries
        .par_iter()
        .filter(|_| src.bundle_id.is_none())
        .filter_map(|&(i, _)| match &src.tree.items[i].kind {
            ItemKind::File { source, .. } => Some(source),
            _ => None,
        })
        .map(|source| Ok((source.as_path(), stamp(source)?)))
        .collect::<Result<Vec<_>>>()?;
    let groups = match src.launch.store_dir() {
        Some(store_dir) => store_groups(src, &entries, store_dir, max_layers)?,
        None => top_level_groups(&entries, max_layers),
    };
    let entry_point = src
        .launch
        .entrypoint
        .strip_prefix(b"/")
        .unwrap_or(&src.launch.entrypoint);
    let has_tmp = entries.iter().any(|(_, p)| *p == b"tmp");
    // /tmp (1777) goes with a store bundle's entry point, in the layer that
    // changes with the program anyway; else in the top layer.
    let tmp_layer = groups
        .layers
        .iter()
        .position(|l| l.iter().any(|&e| under(entry_point, entries[e].1)))
        .filter(|_| src.launch.store_dir().is_some())
        .unwrap_or(groups.layers.len().saturating_sub(1));
    let layers = groups
        .layers
        .iter()
        .enumerate()
        .map(|(n, members)| {
            let mut out: Vec<Entry<'_>> = groups
                .shared
                .iter()
                .chain(members)
                .map(|&e| entry(&src.tree, entries[e]))
                .collect();
            if n == tmp_layer && !has_tmp {
                out.push(Entry {
                    path: b"tmp".to_vec(),
                    node: Node::Dir { mode: 0o1777 },
                });
            }
            out.sort_by(|a, b| a.path.cmp(&b.path));
            Layer {
                created_by: format!("tote image: {}", groups.names[n]),
                content: Content::Entries(out),
            }
        })
        .collect();
    Ok(Plan { layers, stamps })
}

/// Layers as lists of entries (indexes into the planned entries).
struct Groups {
    /// Entries every layer repeats (`nix`, `nix/store`).
    shared: Vec<usize>,
    layers: Vec<Vec<usize>>,
    /// What each layer holds, for its history.
    names: Vec<String>,
}

/// Store bundles: one group per store path, layered by popularity (see
/// `layering`); the references between paths are found as Nix finds them,
/// by scanning contents and symlink targets for the other paths' hashes.
fn store_groups(src: &Source, entries: &[(usize, &[u8])], store_dir: &[u8], max_layers: usize) -> Result<Groups> {
    let prefix = store_dir.strip_prefix(b"/").unwrap_or(store_dir);
    let mut shared = Vec::new();
    let mut by_path: BTreeMap<&[u8], Vec<usize>> = BTreeMap::new();
    let mut rest = Vec::new();
    for (e, &(_, p)) in entries.iter().enumerate() {
        if under(prefix, p) {
            shared.push(e);
        } else if let Some(inside) = p.strip_prefix(prefix).and_then(|r| r.strip_prefix(b"/")) {
            let name = inside.split(|&c| c == b'/').next().unwrap_or(inside);
            by_path.entry(name).or_default().push(e);
        } else {
            rest.push(e);
        }
    }
    let names: Vec<&[u8]> = by_path.keys().copied().collect();
    let members: Vec<Vec<usize>> = by_path.into_values().collect();
    let candidates: HashMap<[u8; 32], usize> = names
        .iter()
        .enumerate()
        .filter_map(|(i, n)| refscan::hash_part(n).map(|h| (h, i)))
        .collect();
    let refs: Vec<BTreeSet<usize>> = members
        .par_iter()
        .enumerate()
        .map(|(i, m)| {
            let mut found = BTreeSet::new();
            for &e in m {
                match &src.tree.items[entries[e].0].kind {
                    ItemKind::File { source, .. } => refscan::search_file(source, &candidates, &mut found)
                        .with_context(|| format!("reading {}", source.display()))?,
                    ItemKind::Symlink { target } => refscan::search(target, &candidates, &mut found),
                    ItemKind::Dir => {}
                }
            }
            let mut refs: BTreeSet<usize> = found.iter().map(|h| candidates[h]).collect();
            refs.remove(&i);
            Ok(refs)
        })
        .collect::<Result<_>>()?;
    let order = layering::store_layers(&names, &refs, max_layers);
    let shown = |i: usize| {
        format!(
            "/{}/{}",
            String::from_utf8_lossy(prefix),
            String::from_utf8_lossy(names[i])
        )
    };
    let mut layers: Vec<Vec<usize>> = order
        .iter()
        .map(|l| l.iter().flat_map(|&i| members[i].clone()).collect())
        .collect();
    let mut layer_names: Vec<String> = order.iter().map(|l| describe(l, "store paths", shown)).collect();
    if !rest.is_empty() {
        match layers.last_mut() {
            Some(top) => top.extend(rest),
            None => {
                layers.push(rest);
                layer_names.push("other files".to_string());
            }
        }
    }
    Ok(Groups {
        shared,
        layers,
        names: layer_names,
    })
}

/// Other trees: one group per top-level item, by name; above the limit
/// the last ones share the top layer.
fn top_level_groups(entries: &[(usize, &[u8])], max_layers: usize) -> Groups {
    let mut by_item: BTreeMap<&[u8], Vec<usize>> = BTreeMap::new();
    for (e, &(_, p)) in entries.iter().enumerate() {
        let top = p.split(|&c| c == b'/').next().unwrap_or(p);
        by_item.entry(top).or_default().push(e);
    }
    let names: Vec<&[u8]> = by_item.keys().copied().collect();
    let members: Vec<Vec<usize>> = by_item.into_values().collect();
    let order = layering::merge_above((0..names.len()).collect(), max_layers, |a, b| names[a].cmp(names[b]));
    let shown = |i: usize| format!("/{}", String::from_utf8_lossy(names[i]));
    Groups {
        shared: Vec::new(),
        layers: order
            .iter()
            .map(|l| l.iter().flat_map(|&i| members[i].clone()).collect())
            .collect(),
        names: order.iter().map(|l| describe(l, "items", shown)).collect(),
    }
}

/// `/nix/store/…-hello`, or `3 store paths: a, b, c` (the first few).
fn describe(members: &[usize], what: &str, shown: impl Fn(usize) -> String) -> String {
    const SHOWN: usize = 3;
    match members {
        [one] => shown(*one),
        _ => {
            let mut list: Vec<String> = members.iter().take(SHOWN).map(|&i| shown(i)).collect();
            if members.len() > SHOWN {
                list.push(format!("and {} more", members.len() - SHOWN));
            }
            format!("{} {what}: {}", members.len(), list.join(", "))
        }
    }
}

fn entry<'t>(tree: &'t Tree, (i, path): (usize, &[u8])) -> Entry<'t> {
    let node = match &tree.items[i].kind {
        ItemKind::Dir => Node::Dir { mode: 0o755 },
        ItemKind::File {
            executable,
            size,
            source,
        } => Node::File {
            executable: *executable,
            size: *size,
            source,
        },
        ItemKind::Symlink { target } => Node::Symlink { target },
    };
    Entry {
        path: path.to_vec(),
        node,
    }
}

/// Is `path` `dir` or below it?
fn under(path: &[u8], dir: &[u8]) -> bool {
    path.starts_with(dir) && (path.len() == dir.len() || path[dir.len()] == b'/')
}

/// Where a tree path is in the image: itself (the tree appears at its own
/// paths), or below the bundle's root for an image's tree; None for the
/// root itself and anything outside it.
fn image_path<'p>(launch: &Launch, tree_path: &'p [u8]) -> Option<&'p [u8]> {
    if launch.root.is_empty() {
        return (!tree_path.is_empty()).then_some(tree_path);
    }
    tree_path
        .strip_prefix(launch.root.as_slice())
        .and_then(|r| r.strip_prefix(b"/"))
        .filter(|r| !r.is_empty())
}

/// Every tree mount must appear at its own path (as every input kind
/// makes them); the image then holds the tree as it is.
fn check_mounts(launch: &Launch) -> Result<()> {
    for m in &launch.mounts {
        if m.kind != tote_format::MountKind::Host && m.target.strip_prefix(b"/") != Some(m.source.as_slice()) {
            bail!(
                "the bundle puts {} at {}: an image can only hold trees that appear at their own paths",
                String::from_utf8_lossy(&m.source),
                String::from_utf8_lossy(&m.target)
            );
        }
    }
    Ok(())
}

/// `created_by` of an image config's history entries that made layers.
fn non_empty_history(config: &Value) -> Vec<String> {
    config
        .get("history")
        .and_then(Value::as_array)
        .map(|h| {
            h.iter()
                .filter(|e| e.get("empty_layer").and_then(Value::as_bool) != Some(true))
                .map(|e| e.get("created_by").and_then(Value::as_str).unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// tote's labels on every image it makes.
fn labels(src: &Source) -> serde_json::Map<String, Value> {
    let mut l = serde_json::Map::new();
    l.insert("dev.tote.version".into(), json!(env!("CARGO_PKG_VERSION")));
    if let Some(id) = &src.bundle_id {
        l.insert("dev.tote.bundle-id".into(), json!(id));
    }
    l
}

/// The image config (JSON, keys in a fixed order).
pub fn config(src: &Source, blobs: &[Blob]) -> Value {
    let diff_ids: Vec<Value> = blobs.iter().map(|b| json!(format!("sha256:{}", b.diff_id))).collect();
    if let Some(image) = &src.image {
        // An image input keeps its config; only tote's labels are added.
        let mut c = image.config.clone();
        if let Some(cfg) = c.get_mut("config").and_then(Value::as_object_mut) {
            let l = cfg.entry("Labels").or_insert_with(|| json!({}));
            if !l.is_object() {
                *l = json!({});
            }
            if let Some(l) = l.as_object_mut() {
                l.extend(labels(src));
            }
        }
        c["rootfs"] = json!({"type": "layers", "diff_ids": diff_ids});
        return c;
    }
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let launch = &src.launch;
    let mut env: Vec<String> = launch.env.iter().map(|e| text(e)).collect();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        let entry = Path::new(OsStr::from_bytes(&launch.entrypoint));
        let dir = entry.parent().map(|d| d.display().to_string()).unwrap_or_default();
        env.insert(0, format!("PATH={dir}:{}", input::DEFAULT_PATH));
    }
    let mut cfg = serde_json::Map::new();
    let mut entrypoint = vec![text(&launch.entrypoint)];
    entrypoint.extend(launch.args.iter().map(|a| text(a)));
    cfg.insert("Entrypoint".into(), json!(entrypoint));
    if !launch.cmd.is_empty() {
        cfg.insert(
            "Cmd".into(),
            json!(launch.cmd.iter().map(|a| text(a)).collect::<Vec<_>>()),
        );
    }
    cfg.insert("Env".into(), json!(env));
    if !launch.workdir.is_empty() {
        cfg.insert("WorkingDir".into(), json!(text(&launch.workdir)));
    }
    cfg.insert("Labels".into(), Value::Object(labels(src)));
    let history: Vec<Value> = blobs
        .iter()
        .map(|b| json!({"created": CREATED, "created_by": b.created_by}))
        .collect();
    json!({
        "created": CREATED,
        "architecture": launch.arch.go_name(),
        "os": "linux",
        "config": cfg,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    })
}

/// The entry point named with `--entrypoint REL` for a bundle input: the
/// tree's path, as the image sees it.
pub fn set_entrypoint(src: &mut Source, rel: &Path) -> Result<()> {
    let rel_bytes = rel.as_os_str().as_bytes();
    let rel_bytes = rel_bytes.strip_prefix(b"/").unwrap_or(rel_bytes);
    let in_tree: Vec<u8> = if src.launch.root.is_empty() {
        rel_bytes.to_vec()
    } else {
        [src.launch.root.as_slice(), b"/", rel_bytes].concat()
    };
    match src.tree.get(&in_tree).map(|i| &i.kind) {
        Some(ItemKind::File { executable: true, .. } | ItemKind::Symlink { .. }) => {}
        Some(ItemKind::File { .. }) => bail!("--entrypoint {}: not executable in the bundle", rel.display()),
        _ => bail!(
            "--entrypoint {}: no such file in the bundle (`tote ls` lists them)",
            rel.display()
        ),
    }
    src.launch.entrypoint = [b"/", rel_bytes].concat();
    src.launch.args.clear();
    src.launch.cmd.clear();
    src.launch.name = PathBuf::from(OsStr::from_bytes(rel_bytes))
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(())
}
