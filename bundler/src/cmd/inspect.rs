//! `tote inspect FILE`: a bundle's header (launch metadata, id, checksum),
//! its sizes and its top-level items largest first, as text or JSON
//! (docs/inspect.schema.json).

use std::path::{Path, PathBuf};

use anyhow::Result;
use tote_format::{Meta, Relocation};

use crate::items::{self, by_size, Item};
use crate::reader::{load, sha256_hex};
use crate::ui::{human, Paint};

pub const HELP: &str = "Top-level items are store paths for Nix bundles, the top directories of
an image's root, or a directory's own top-level entries.

Examples:
  tote inspect ./app
  tote inspect --json ./app | jq '.items[:5]'
  tote inspect --json ./app | jq .sizes.file";

#[derive(clap::Args)]
pub struct Args {
    /// The bundle.
    file: PathBuf,
    /// Print JSON (schema: docs/inspect.schema.json) instead of text.
    #[arg(long)]
    json: bool,
}

/// `auto (mounts where FUSE is usable)`: the mode and what it means for this bundle.
fn mode_summary(meta: &tote_format::Meta) -> String {
    use tote_format::Mode;
    let what = match meta.mode {
        Mode::Extract => "extracts into the cache",
        Mode::Mount => "mounts over FUSE, fails where FUSE is unusable",
        Mode::Auto if meta.mode.wants_mount(meta.stats.total_size) => "mounts over FUSE where usable, else extracts",
        Mode::Auto => "extracts: the tree is under 128 MiB",
    };
    format!("{} ({what})", meta.mode.name())
}

/// Everything `tote inspect` reports, computed once for either output.
struct Report {
    file: String,
    meta: Meta,
    version: u32,
    /// Store references a relocated launch rewrites.
    refs: u64,
    bundle_id: String,
    sha256: String,
    sizes: Sizes,
    entries: u64,
    blocks: u64,
    /// Blocks compressed against a base, and blocks stored as they are.
    based_blocks: u64,
    stored_blocks: u64,
    items: Vec<Item>,
    /// A thin bundle's full bundle: where, its size, its blocks' bytes.
    remote: Option<(tote_format::Location, u64, u64)>,
    /// Its signatures, each checked (no key is trusted here: `tote verify
    /// --trusted-keys` applies a policy).
    signatures: Option<tote_format::sign::Verdict>,
}

struct Sizes {
    file: u64,
    stub: u64,
    compressed: u64,
    metadata_and_index: u64,
    uncompressed: u64,
    after_dedup: u64,
}

impl Sizes {
    /// Uncompressed bytes per compressed byte (dedup included; a thin
    /// bundle's blocks are its full bundle's); None without file content.
    fn ratio(&self, remote_blocks: Option<u64>) -> Option<f64> {
        let compressed = remote_blocks.unwrap_or(self.compressed);
        (compressed > 0).then(|| self.uncompressed as f64 / compressed as f64)
    }
}

fn report(path: &Path) -> Result<Report> {
    let (o, meta, index) = load(path)?;
    let t = &o.layout.trailer;
    let compressed = t.meta_offset - t.data_offset;
    let items = by_size(items::items(&meta, &index).into_values());
    let remote = o
        .layout
        .remote
        .as_ref()
        .map(|r| (r.location.clone(), r.full_len, o.layout.data_len()));
    Ok(Report {
        file: path.display().to_string(),
        version: o.layout.version,
        refs: index.refs.len() as u64,
        bundle_id: t.bundle_id().to_string(),
        sha256: sha256_hex(&o.map),
        sizes: Sizes {
            file: o.layout.signed_len(),
            stub: t.data_offset,
            compressed,
            metadata_and_index: o.layout.file_len - t.meta_offset,
            uncompressed: meta.stats.total_size,
            after_dedup: meta.stats.unique_size,
        },
        entries: index.entries.len() as u64,
        blocks: index.blocks.len() as u64,
        based_blocks: index.blocks.iter().filter(|b| b.base.is_some()).count() as u64,
        stored_blocks: index
            .blocks
            .iter()
            .filter(|b| b.codec == tote_format::Codec::Stored)
            .count() as u64,
        items,
        meta,
        remote,
        signatures: o
            .layout
            .signed
            .is_some()
            .then(|| crate::signing::check(&o.layout, &o.map, &Default::default(), crate::signing::now())),
    })
}

pub fn run(args: &Args) -> Result<()> {
    let r = report(&args.file)?;
    crate::ui::report(args.json, || inspect_json(&r), |paint| inspect_text(&r, paint))
}

/// `3 files`, `1 entry`.
fn plural(n: u64, one: &str) -> String {
    match (n, one.strip_suffix('y')) {
        (1, _) => format!("1 {one}"),
        (_, Some(stem)) => format!("{n} {stem}ies"),
        _ => format!("{n} {one}s"),
    }
}

/// `73.8 %` of `whole`; `-` for nothing.
fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        "-".into()
    } else {
        format!("{:.1} %", part as f64 * 100.0 / whole as f64)
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `tote inspect --json`: the schema is docs/inspect.schema.json.
fn inspect_json(r: &Report) -> serde_json::Value {
    let m = &r.meta;
    let strings = |v: &[Vec<u8>]| v.iter().map(|a| lossy(a)).collect::<Vec<_>>();
    let optional = |b: &[u8]| (!b.is_empty()).then(|| lossy(b));
    let s = &r.sizes;
    serde_json::json!({
        "schema": JSON_SCHEMA,
        "file": r.file,
        "name": m.name,
        "entrypoint": lossy(&m.entrypoint),
        "arch": m.arch.name(),
        "args": strings(&m.args),
        "cmd": strings(&m.cmd),
        "env": strings(&m.env),
        "workdir": optional(&m.workdir),
        "root": optional(&m.root),
        "mounts": m.mounts.iter().map(|x| serde_json::json!({
            "kind": x.kind.name(),
            "source": lossy(&x.source),
            "target": lossy(&x.target),
        })).collect::<Vec<_>>(),
        "namespace": m.needs_namespace(),
        "mode": m.mode.name(),
        "mounts_where_fuse_works": m.mode.wants_mount(m.stats.total_size),
        "bundle_id": r.bundle_id,
        "sha256": r.sha256,
        "format_version": r.version,
        "creator": m.creator,
        "relocation": relocation_json(r),
        "sizes": {
            "file": s.file,
            "stub": s.stub,
            "compressed": s.compressed,
            "metadata_and_index": s.metadata_and_index,
            "uncompressed": s.uncompressed,
            "after_dedup": s.after_dedup,
            "dedup_saved": s.uncompressed - s.after_dedup,
            "ratio": s.ratio(r.remote.as_ref().map(|x| x.2)),
        },
        "signatures": r.signatures.as_ref().map_or_else(|| serde_json::json!([]), crate::signing::signers_json),
        "remote": r.remote.as_ref().map(|(l, full, blocks)| serde_json::json!({
            "url": l.url,
            "endpoint": (!l.endpoint.is_empty()).then(|| l.endpoint.clone()),
            "region": (!l.region.is_empty()).then(|| l.region.clone()),
            "full_size": full,
            "compressed": blocks,
        })),
        "counts": {
            "entries": r.entries,
            "files": m.stats.files,
            "blocks": r.blocks,
            "based_blocks": r.based_blocks,
            "stored_blocks": r.stored_blocks,
            "items": r.items.len(),
        },
        "items": r.items.iter().map(|i| serde_json::json!({
            "path": i.path,
            "size": i.size,
            "files": i.files,
            "entries": i.entries,
        })).collect::<Vec<_>>(),
    })
}

/// How the bundle runs where namespaces are refused, in a line.
fn relocation_summary(r: &Report) -> String {
    match &r.meta.relocation {
        Relocation::None if r.meta.needs_namespace() => "none: needs user and mount namespaces".into(),
        Relocation::None => "none needed (runs from the cache)".into(),
        Relocation::Store { unrewritable } if unrewritable.is_empty() => {
            format!(
                "clean ({} store references rewritten where namespaces are refused)",
                r.refs
            )
        }
        Relocation::Store { unrewritable } => format!(
            "{} store references rewritten where namespaces are refused; {} files hold references \
             inside compressed data, which stay unrewritten:",
            r.refs,
            unrewritable.len()
        ),
        Relocation::Loader { .. } => "the bundle's own loader where namespaces are refused".into(),
    }
}

/// The `relocation` member of `tote inspect --json`.
fn relocation_json(r: &Report) -> serde_json::Value {
    let strings = |v: &[Vec<u8>]| v.iter().map(|a| lossy(a)).collect::<Vec<_>>();
    match &r.meta.relocation {
        Relocation::None => serde_json::json!({ "kind": "none" }),
        Relocation::Store { unrewritable } => serde_json::json!({
            "kind": "store",
            "clean": unrewritable.is_empty(),
            "references": r.refs,
            "unrewritable": unrewritable.iter().map(|p| format!("/{}", lossy(p))).collect::<Vec<_>>(),
        }),
        Relocation::Loader {
            interpreter,
            library_path,
        } => serde_json::json!({
            "kind": "loader",
            "interpreter": (!interpreter.is_empty()).then(|| lossy(interpreter)),
            "library_path": strings(library_path),
        }),
    }
}

/// The `schema` member of `tote inspect --json`; bumped when a member
/// changes meaning or goes away (new members may appear without).
pub const JSON_SCHEMA: &str = "tote-inspect/1";

/// `tote inspect`: header, sizes, then the items table.
fn inspect_text(r: &Report, paint: Paint) -> String {
    let mut out = format!("{}\n", paint.bold(&tote_format::printable(r.meta.name.as_bytes())));
    header_text(r, &mut out);
    sizes_text(r, paint, &mut out);
    items_text(r, paint, &mut out);
    out
}

/// `  label           value`, the layout of the header and sizes.
fn labelled(out: &mut String, label: &str, value: &str) {
    use std::fmt::Write;
    let _ = writeln!(out, "  {label:<16}{}", tote_format::printable(value.as_bytes()));
}

/// Launch metadata, id, checksum, version.
fn header_text(r: &Report, out: &mut String) {
    let m = &r.meta;
    let mut head = vec![
        ("entry point", lossy(&m.entrypoint)),
        ("architecture", m.arch.name().into()),
    ];
    head.extend(m.args.iter().map(|a| ("argument", lossy(a))));
    head.extend(m.cmd.iter().map(|a| ("default arg", lossy(a))));
    head.extend(m.env.iter().map(|e| ("environment", lossy(e))));
    if !m.root.is_empty() {
        head.push(("root", format!("{} (the bundle's)", lossy(&m.root))));
    }
    if !m.workdir.is_empty() {
        head.push(("working dir", lossy(&m.workdir)));
    }
    for (l, v) in &head {
        labelled(out, l, v);
    }
    for x in &m.mounts {
        let label = format!("mount ({})", x.kind.name());
        labelled(out, &label, &format!("{} -> {}", lossy(&x.source), lossy(&x.target)));
    }
    if !m.needs_namespace() {
        labelled(out, "namespace", "none (runs from the cache)");
    }
    labelled(out, "mode", &mode_summary(m));
    labelled(out, "bundle id", &r.bundle_id);
    labelled(out, "sha256", &format!("sha256:{}", r.sha256));
    match &r.signatures {
        None => labelled(out, "signed", "no"),
        Some(v) => {
            for line in crate::signing::signer_lines(v, false) {
                labelled(out, "signed by", &line);
            }
            if let Some(region) = v.changed.filter(|r| *r != "signature") {
                labelled(out, "  changed", &format!("its {region} is not what was signed"));
            }
        }
    }
    labelled(out, "relocation", &relocation_summary(r));
    if let Relocation::Store { unrewritable } = &m.relocation {
        for p in unrewritable {
            labelled(out, "  unrewritable", &format!("/{}", lossy(p)));
        }
    }
    if let Some((l, full, _)) = &r.remote {
        labelled(out, "blocks at", &l.url);
        if !l.endpoint.is_empty() {
            labelled(out, "  endpoint", &l.endpoint);
        }
        if !l.region.is_empty() {
            labelled(out, "  region", &l.region);
        }
        labelled(out, "  full bundle", &format!("{} ({full} bytes)", human(*full)));
    }
    labelled(out, "format version", &r.version.to_string());
    labelled(out, "creator", &m.creator);
}

/// File, stub, compressed and uncompressed sizes, ratio, dedup.
fn sizes_text(r: &Report, paint: Paint, out: &mut String) {
    let s = &r.sizes;
    out.push_str(&format!("\n{}\n", paint.bold("sizes")));
    labelled(out, "file", &format!("{} ({} bytes)", human(s.file), s.file));
    labelled(out, "stub", &format!("{} ({} bytes)", human(s.stub), s.stub));
    let mut compressed = format!("{} in {}", human(s.compressed), plural(r.blocks, "block"));
    let kinds: Vec<String> = [(r.based_blocks, "against a base"), (r.stored_blocks, "stored")]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
    if !kinds.is_empty() {
        compressed.push_str(&format!(" ({})", kinds.join(", ")));
    }
    if let Some((_, _, blocks)) = &r.remote {
        compressed = format!("{} in {}, fetched as needed", human(*blocks), plural(r.blocks, "block"));
    }
    labelled(out, "compressed", &compressed);
    labelled(out, "metadata+index", &human(s.metadata_and_index));
    let uncompressed = format!(
        "{} in {}, {}",
        human(s.uncompressed),
        plural(r.meta.stats.files, "file"),
        plural(r.entries, "entry")
    );
    labelled(out, "uncompressed", &uncompressed);
    let ratio = s
        .ratio(r.remote.as_ref().map(|x| x.2))
        .map_or("-".into(), |x| format!("{x:.2} (uncompressed / compressed)"));
    labelled(out, "ratio", &ratio);
    let saved = s.uncompressed - s.after_dedup;
    let dedup = format!("{} ({})", human(saved), percent(saved, s.uncompressed));
    labelled(out, "dedup saved", &dedup);
}

/// The top-level items, largest first.
fn items_text(r: &Report, paint: Paint, out: &mut String) {
    use std::fmt::Write;
    if r.items.is_empty() {
        return;
    }
    let title = format!("{}, largest first", plural(r.items.len() as u64, "top-level item"));
    let _ = writeln!(out, "\n{}", paint.bold(&title));
    let columns = format!("  {:>10}  {:>7}  {:>7}  ITEM", "SIZE", "SHARE", "FILES");
    let _ = writeln!(out, "{}", paint.bold(&columns));
    for i in &r.items {
        let _ = writeln!(
            out,
            "  {:>10}  {:>7}  {:>7}  {}",
            human(i.size),
            percent(i.size, r.sizes.uncompressed),
            i.files,
            tote_format::printable(i.path.as_bytes())
        );
    }
}
