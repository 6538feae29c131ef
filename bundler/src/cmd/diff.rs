//! `tote diff OLD NEW`: what changed between two bundles (launch metadata,
//! top-level items, entries) and what a host that ran OLD must extract to
//! run NEW; for two images, which layers changed (`image::diff`).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use anyhow::Result;
use tote_format::printable;
use tote_format::{Digest32, Entry, EntryKind, Index, Meta};

use crate::items::{self, Item};
use crate::reader::{load, sha256_hex};
use crate::ui::{human, Paint};

pub const HELP: &str = "Items on one side only are listed as a whole; entries are listed for items
present on both sides. \"extract\" counts NEW's files whose content (SHA-256 and
executable bit) is not among OLD's: a host whose cache holds OLD (extracted
since its last boot) writes those and hard-links the rest.

Two images (OCI archive or directory, docker-archive) are compared layer by layer: the
layers NEW shares with OLD, those it adds, and the bytes a host holding OLD pulls for NEW
(--json: docs/image-diff.schema.json).

Examples:
  tote diff ./app-1.0 ./app-1.1
  tote diff --json old new | jq .extract.bytes
  tote diff app-1.0.tar app-1.1.tar";

#[derive(clap::Args)]
pub struct Args {
    /// The bundle (or image) a host already ran.
    old: PathBuf,
    /// The bundle (or image) to compare it with.
    new: PathBuf,
    /// Print JSON (schema: docs/diff.schema.json) instead of text.
    #[arg(long)]
    json: bool,
}

/// The `schema` member of `tote diff --json` (docs/diff.schema.json).
pub const JSON_SCHEMA: &str = "tote-diff/1";

/// One side of the comparison.
struct Side {
    file: String,
    size: u64,
    sha256: String,
    bundle_id: String,
    meta: Meta,
    index: Index,
}

fn side(path: &Path) -> Result<Side> {
    let (o, meta, index) = load(path)?;
    Ok(Side {
        file: path.display().to_string(),
        size: o.layout.file_len,
        sha256: sha256_hex(&o.map),
        bundle_id: o.layout.trailer.bundle_id().to_string(),
        meta,
        index,
    })
}

/// A launch field that differs: its name, old and new values.
struct MetaChange {
    field: &'static str,
    old: serde_json::Value,
    new: serde_json::Value,
}

fn meta_changes(a: &Meta, b: &Meta) -> Vec<MetaChange> {
    let s = |v: &[u8]| serde_json::Value::from(String::from_utf8_lossy(v).into_owned());
    let list = |v: &[Vec<u8>]| serde_json::Value::from(v.iter().map(|x| s(x)).collect::<Vec<_>>());
    let mounts = |m: &Meta| {
        serde_json::Value::from(
            m.mounts
                .iter()
                .map(|x| {
                    format!(
                        "{} {} -> {}",
                        x.kind.name(),
                        String::from_utf8_lossy(&x.source),
                        String::from_utf8_lossy(&x.target)
                    )
                })
                .collect::<Vec<_>>(),
        )
    };
    let fields: [(&'static str, serde_json::Value, serde_json::Value); 10] = [
        ("name", a.name.clone().into(), b.name.clone().into()),
        ("arch", a.arch.name().into(), b.arch.name().into()),
        ("entrypoint", s(&a.entrypoint), s(&b.entrypoint)),
        ("args", list(&a.args), list(&b.args)),
        ("cmd", list(&a.cmd), list(&b.cmd)),
        ("env", list(&a.env), list(&b.env)),
        ("workdir", s(&a.workdir), s(&b.workdir)),
        ("root", s(&a.root), s(&b.root)),
        ("mounts", mounts(a), mounts(b)),
        ("mode", a.mode.name().into(), b.mode.name().into()),
    ];
    fields
        .into_iter()
        .filter(|(_, o, n)| o != n)
        .map(|(field, old, new)| MetaChange { field, old, new })
        .collect()
}

/// How an entry present on both sides differs: `kind`, `target`,
/// `content`, `mode` (comma-separated), or None if it does not.
fn entry_change(a: &EntryKind, b: &EntryKind) -> Option<String> {
    match (a, b) {
        (EntryKind::Dir, EntryKind::Dir) => None,
        (EntryKind::Symlink { target: x }, EntryKind::Symlink { target: y }) => (x != y).then(|| "target".into()),
        (
            EntryKind::File {
                executable: xe,
                hash: xh,
                size: xs,
                ..
            },
            EntryKind::File {
                executable: ye,
                hash: yh,
                size: ys,
                ..
            },
        ) => {
            let what: Vec<&str> = [(xh != yh || xs != ys, "content"), (xe != ye, "mode")]
                .into_iter()
                .filter_map(|(changed, w)| changed.then_some(w))
                .collect();
            (!what.is_empty()).then(|| what.join(", "))
        }
        _ => Some("kind".into()),
    }
}

/// An item present on both sides whose entries differ.
struct ChangedItem {
    path: String,
    old_size: u64,
    new_size: u64,
    added: u64,
    removed: u64,
    changed: u64,
}

/// Entry-level changes outside added and removed items.
#[derive(Default)]
struct EntryChanges {
    added: Vec<String>,
    removed: Vec<String>,
    /// Path and what changed.
    changed: Vec<(String, String)>,
}

/// What running NEW costs a host whose cache holds OLD's files (the object
/// store is shared by all bundles, content-addressed by SHA-256 and
/// executable bit; empty files are always written).
#[derive(Default)]
struct Extract {
    files: u64,
    bytes: u64,
    blocks: u64,
    compressed_bytes: u64,
    /// What a thin bundle of NEW fetches: those blocks but the base blocks
    /// rebuilt from linked files, and the trailer's check (none if nothing).
    thin_fetched_bytes: u64,
    linked_files: u64,
    linked_bytes: u64,
}

fn extract_cost(old: &Index, new: &Index) -> Extract {
    let present: HashSet<(Digest32, bool)> = old
        .entries
        .iter()
        .filter_map(|e| match e.kind {
            EntryKind::File {
                executable, size, hash, ..
            } if size > 0 => Some((hash, executable)),
            _ => None,
        })
        .collect();
    let mut x = Extract::default();
    let mut blocks = BTreeSet::new();
    let mut linked = Vec::new();
    for (i, e) in new.entries.iter().enumerate() {
        if let EntryKind::File {
            executable,
            size,
            offset,
            hash,
        } = e.kind
        {
            if size > 0 && present.contains(&(hash, executable)) {
                x.linked_files += 1;
                x.linked_bytes += size;
                linked.push(i);
            } else {
                x.files += 1;
                x.bytes += size;
                blocks.extend(new.blocks_for(offset, size));
            }
        }
    }
    // The blocks decoded: those holding the files, and the base blocks of
    // those that have one (as the stub plans it).
    let mut needed = vec![false; new.blocks.len()];
    for b in blocks {
        needed[b] = true;
    }
    let units = tote_format::units(new, &needed);
    let mut decoded: Vec<usize> = units.iter().flat_map(|u| u.decodes().collect::<Vec<_>>()).collect();
    decoded.sort_unstable();
    decoded.dedup();
    x.blocks = decoded.len() as u64;
    let clen = |b: &usize| u64::from(new.blocks[*b].clen);
    x.compressed_bytes = decoded.iter().map(clen).sum();
    let rebuilt = tote_format::rebuildable(new, &units, &tote_format::held_spans(new, &linked));
    let fetched: u64 = decoded.iter().filter(|&&b| !rebuilt[b]).map(clen).sum();
    x.thin_fetched_bytes = if fetched > 0 {
        fetched + tote_format::TRAILER_LEN as u64
    } else {
        0
    };
    x
}

struct Report {
    old: Side,
    new: Side,
    meta: Vec<MetaChange>,
    added: Vec<Item>,
    removed: Vec<Item>,
    changed: Vec<ChangedItem>,
    unchanged: u64,
    entries: EntryChanges,
    extract: Extract,
}

fn by_path(i: &Index) -> BTreeMap<&[u8], &Entry> {
    i.entries.iter().map(|e| (e.path.as_slice(), e)).collect()
}

fn report(old: Side, new: Side) -> Report {
    let (oi, ni) = (items::items(&old.meta, &old.index), items::items(&new.meta, &new.index));
    let (oe, ne) = (by_path(&old.index), by_path(&new.index));
    let (ob, nb) = (
        items::bases(&old.meta.mounts, &old.meta.root),
        items::bases(&new.meta.mounts, &new.meta.root),
    );
    let mut per_item: BTreeMap<Vec<u8>, (u64, u64, u64)> = BTreeMap::new();
    let mut entries = EntryChanges::default();
    let lossy = |p: &[u8]| String::from_utf8_lossy(p).into_owned();
    // Entries of items on both sides (or of no item).
    let shared = |item: Option<&[u8]>| item.is_none_or(|k| oi.contains_key(k) && ni.contains_key(k));
    for (path, e) in &oe {
        let item = items::item_of_entry(path, &ob);
        let mut count = |f: fn(&mut (u64, u64, u64))| {
            if let Some(k) = item {
                f(per_item.entry(k.to_vec()).or_default());
            }
        };
        match ne.get(path) {
            None if shared(item) => {
                entries.removed.push(lossy(path));
                count(|c| c.1 += 1);
            }
            None => {}
            Some(n) => {
                if let Some(what) = entry_change(&e.kind, &n.kind) {
                    entries.changed.push((lossy(path), what));
                    count(|c| c.2 += 1);
                }
            }
        }
    }
    for path in ne.keys().filter(|p| !oe.contains_key(*p)) {
        let item = items::item_of_entry(path, &nb);
        if shared(item) {
            entries.added.push(lossy(path));
            if let Some(k) = item {
                per_item.entry(k.to_vec()).or_default().0 += 1;
            }
        }
    }
    let mut r = Report {
        meta: meta_changes(&old.meta, &new.meta),
        added: items::by_size(ni.iter().filter(|(k, _)| !oi.contains_key(*k)).map(|(_, i)| i.clone())),
        removed: items::by_size(oi.iter().filter(|(k, _)| !ni.contains_key(*k)).map(|(_, i)| i.clone())),
        changed: Vec::new(),
        unchanged: 0,
        entries,
        extract: extract_cost(&old.index, &new.index),
        old,
        new,
    };
    for (k, o) in &oi {
        let Some(n) = ni.get(k) else { continue };
        match per_item.get(k) {
            Some(&(added, removed, changed)) => r.changed.push(ChangedItem {
                path: n.path.clone(),
                old_size: o.size,
                new_size: n.size,
                added,
                removed,
                changed,
            }),
            None => r.unchanged += 1,
        }
    }
    r.changed
        .sort_by(|a, b| b.new_size.cmp(&a.new_size).then_with(|| a.path.cmp(&b.path)));
    if r.old.bundle_id == r.new.bundle_id {
        // The same cache entry: nothing to extract at all.
        r.extract = Extract::default();
    }
    r
}

pub fn run(args: &Args) -> Result<()> {
    let image = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| !(m.is_file() && crate::input::is_bundle(p, m.len())))
            && crate::input::detect(p).is_ok_and(|k| k == crate::input::Kind::Image)
    };
    match (image(&args.old), image(&args.new)) {
        (true, true) => {
            let r = crate::image::diff::Report {
                old: crate::image::diff::read(&args.old)?,
                new: crate::image::diff::read(&args.new)?,
            };
            return crate::ui::report(
                args.json,
                || crate::image::diff::json(&r),
                |paint| crate::image::diff::text(&r, paint),
            );
        }
        (true, false) | (false, true) => anyhow::bail!(
            "{} and {}: one is an image, the other not; tote diff compares two bundles or two images",
            args.old.display(),
            args.new.display()
        ),
        (false, false) => {}
    }
    let r = report(side(&args.old)?, side(&args.new)?);
    crate::ui::report(args.json, || diff_json(&r), |paint| diff_text(&r, paint))
}

fn diff_json(r: &Report) -> serde_json::Value {
    let side = |s: &Side| {
        serde_json::json!({
            "file": s.file,
            "name": s.meta.name,
            "bundle_id": s.bundle_id,
            "sha256": s.sha256,
            "size": s.size,
        })
    };
    let item = |i: &Item| serde_json::json!({ "path": i.path, "size": i.size, "files": i.files });
    let x = &r.extract;
    serde_json::json!({
        "schema": JSON_SCHEMA,
        "old": side(&r.old),
        "new": side(&r.new),
        "identical": r.old.bundle_id == r.new.bundle_id,
        "metadata": r.meta.iter().map(|m| serde_json::json!({
            "field": m.field, "old": m.old, "new": m.new,
        })).collect::<Vec<_>>(),
        "items": {
            "added": r.added.iter().map(item).collect::<Vec<_>>(),
            "removed": r.removed.iter().map(item).collect::<Vec<_>>(),
            "changed": r.changed.iter().map(|c| serde_json::json!({
                "path": c.path,
                "old_size": c.old_size,
                "new_size": c.new_size,
                "entries_added": c.added,
                "entries_removed": c.removed,
                "entries_changed": c.changed,
            })).collect::<Vec<_>>(),
            "unchanged": r.unchanged,
        },
        "entries": {
            "added": r.entries.added,
            "removed": r.entries.removed,
            "changed": r.entries.changed.iter().map(|(p, w)| serde_json::json!({ "path": p, "what": w })).collect::<Vec<_>>(),
        },
        "extract": {
            "files": x.files,
            "bytes": x.bytes,
            "blocks": x.blocks,
            "blocks_total": r.new.index.blocks.len(),
            "compressed_bytes": x.compressed_bytes,
            "thin_fetched_bytes": x.thin_fetched_bytes,
            "linked_files": x.linked_files,
            "linked_bytes": x.linked_bytes,
        },
    })
}

fn diff_text(r: &Report, paint: Paint) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for (tag, s) in [("OLD", &r.old), ("NEW", &r.new)] {
        let _ = writeln!(
            out,
            "{}  {}  {}  bundle id {}  {}",
            paint.bold(tag),
            printable(s.file.as_bytes()),
            printable(s.meta.name.as_bytes()),
            &s.bundle_id[..16],
            human(s.size)
        );
    }
    if r.old.bundle_id == r.new.bundle_id {
        let _ = writeln!(
            out,
            "\nidentical contents and launch metadata (same bundle id): nothing to extract"
        );
        return out;
    }
    meta_text(r, paint, &mut out);
    items_text(r, paint, &mut out);
    entries_text(r, paint, &mut out);
    extract_text(r, paint, &mut out);
    out
}

/// Launch metadata fields that differ.
fn meta_text(r: &Report, paint: Paint, out: &mut String) {
    use std::fmt::Write;
    let show = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) if s.is_empty() => "(none)".to_string(),
        serde_json::Value::String(s) => printable(s.as_bytes()).into_owned(),
        serde_json::Value::Array(a) if a.is_empty() => "(none)".to_string(),
        other => printable(other.to_string().as_bytes()).into_owned(),
    };
    if r.meta.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n{}", paint.bold("launch metadata"));
    for m in &r.meta {
        let _ = writeln!(
            out,
            "  {} {:<12} {} -> {}",
            paint.changed("~"),
            m.field,
            show(&m.old),
            show(&m.new)
        );
    }
}

/// Top-level items added, removed and changed.
fn items_text(r: &Report, paint: Paint, out: &mut String) {
    use std::fmt::Write;
    let title = format!(
        "top-level items: {} added, {} removed, {} changed, {} unchanged",
        r.added.len(),
        r.removed.len(),
        r.changed.len(),
        r.unchanged
    );
    let _ = writeln!(out, "\n{}", paint.bold(&title));
    let marked = r
        .added
        .iter()
        .map(|i| (paint.added("+"), i))
        .chain(r.removed.iter().map(|i| (paint.removed("-"), i)));
    for (mark, i) in marked {
        let _ = writeln!(out, "  {mark} {:>10}  {}", human(i.size), printable(i.path.as_bytes()));
    }
    for c in &r.changed {
        let delta = match c.new_size.cmp(&c.old_size) {
            std::cmp::Ordering::Equal => "same size".to_string(),
            std::cmp::Ordering::Greater => format!("+{}", human(c.new_size - c.old_size)),
            std::cmp::Ordering::Less => format!("-{}", human(c.old_size - c.new_size)),
        };
        let counts: Vec<String> = [(c.added, "added"), (c.removed, "removed"), (c.changed, "changed")]
            .into_iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, what)| format!("{n} {what}"))
            .collect();
        let _ = writeln!(
            out,
            "  {} {:>10}  {}  ({delta}; entries {})",
            paint.changed("~"),
            human(c.new_size),
            printable(c.path.as_bytes()),
            counts.join(", ")
        );
    }
}

/// Entries added, removed and changed inside items on both sides.
fn entries_text(r: &Report, paint: Paint, out: &mut String) {
    use std::fmt::Write;
    let e = &r.entries;
    if e.added.is_empty() && e.removed.is_empty() && e.changed.is_empty() {
        return;
    }
    let title = format!(
        "entries in items on both sides: {} added, {} removed, {} changed",
        e.added.len(),
        e.removed.len(),
        e.changed.len()
    );
    let _ = writeln!(out, "\n{}", paint.bold(&title));
    for p in &e.added {
        let _ = writeln!(out, "  {} {}", paint.added("+"), printable(p.as_bytes()));
    }
    for p in &e.removed {
        let _ = writeln!(out, "  {} {}", paint.removed("-"), printable(p.as_bytes()));
    }
    for (p, what) in &e.changed {
        let _ = writeln!(out, "  {} {} ({what})", paint.changed("~"), printable(p.as_bytes()));
    }
}

/// What running NEW costs a host that ran OLD.
fn extract_text(r: &Report, paint: Paint, out: &mut String) {
    use std::fmt::Write;
    let x = &r.extract;
    let _ = writeln!(
        out,
        "\n{}",
        paint.bold("to run NEW where OLD ran (extract mode, same boot)")
    );
    let _ = writeln!(
        out,
        "  extract {} in {} files, from {} of {} blocks ({} compressed)",
        human(x.bytes),
        x.files,
        x.blocks,
        r.new.index.blocks.len(),
        human(x.compressed_bytes)
    );
    let _ = writeln!(
        out,
        "  fetch   {} as a thin bundle (base blocks rebuilt from cached files are not fetched)",
        human(x.thin_fetched_bytes)
    );
    let _ = writeln!(
        out,
        "  link    {} in {} files already in the cache",
        human(x.linked_bytes),
        x.linked_files
    );
}
