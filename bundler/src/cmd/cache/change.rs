//! `tote cache prune` and `tote cache rm`: removals, through the same
//! protocol as the stub's own trimming (an entry is removed only under an
//! exclusive lock no pinned entry gives; `rm --force` is the one
//! exception, and says what it risks).

use std::time::Duration;

use anyhow::{bail, Result};
use serde_json::json;
use tote_cache::{Limits, Listed, TrimReport};

use super::{not_made_yet, root, short_name, state, RootArg};
use crate::ui::{human, Paint};

pub const PRUNE_HELP: &str = "SIZE: 2G, 500M, 1.5GiB, 4096 (bytes), 0 (keep only entries in use) or off.
AGE: 30d, 12h, 90m, 600s, 2w, 0 (remove every entry not in use) or off.
With neither option, the limits a launch trims to after a cold start
(TOTE_CACHE_MAX, TOTE_CACHE_MAX_AGE, or 10G and 30d); with one, only that
one applies. Objects no entry links are removed in any case.

Examples:
  tote cache prune
  tote cache prune --max-size 5G --dry-run
  tote cache prune --older-than 7d --json";

pub const RM_HELP: &str = "ID is what `tote cache ls` shows (12 characters of the bundle id, and
`-NAME` for an entry relocated for /tmp/NAME, `.blocks` for a thin bundle's
fetched blocks), the full id, or any unique prefix of at least 4
characters; an id alone names all of its bundle's entries and blocks.

Examples:
  tote cache rm 3c4f0e1a9b2d
  tote cache rm --force 3c4f";

/// A size limit given on the command line (`off`: none).
#[derive(Clone, Copy)]
pub struct SizeLimit(Option<u64>);

/// An age limit given on the command line (`off`: none).
#[derive(Clone, Copy)]
pub struct AgeLimit(Option<Duration>);

fn size_arg(s: &str) -> std::result::Result<SizeLimit, String> {
    tote_cache::parse_size(s).map(SizeLimit)
}

fn age_arg(s: &str) -> std::result::Result<AgeLimit, String> {
    tote_cache::parse_age(s).map(AgeLimit)
}

#[derive(clap::Args)]
pub struct PruneArgs {
    #[command(flatten)]
    root: RootArg,
    /// Remove the least recently used entries until the root holds at most SIZE.
    #[arg(long, value_name = "SIZE", value_parser = size_arg, allow_hyphen_values = true)]
    max_size: Option<SizeLimit>,
    /// Remove entries unused for longer than AGE.
    #[arg(long, value_name = "AGE", value_parser = age_arg, allow_hyphen_values = true)]
    older_than: Option<AgeLimit>,
    /// Say what would be removed; remove nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print JSON (schema: docs/cache.schema.json, `tote-cache-prune/1`) instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct RmArgs {
    #[command(flatten)]
    root: RootArg,
    /// Entries to remove (see below).
    #[arg(required = true, value_name = "ID")]
    ids: Vec<String>,
    /// Remove entries even while a running program uses them.
    #[arg(long)]
    force: bool,
}

pub fn prune(args: &PruneArgs) -> Result<()> {
    let limits = if args.max_size.is_none() && args.older_than.is_none() {
        Limits::from_env().map_err(anyhow::Error::msg)?
    } else {
        Limits {
            max_size: args.max_size.and_then(|s| s.0),
            max_age: args.older_than.and_then(|a| a.0),
            min_free: None,
        }
    };
    let root = match root(&args.root)? {
        Ok(p) => p,
        Err(p) => {
            let empty = TrimReport::default();
            return not_made_yet(args.json, &p, || prune_json(&p, args.dry_run, &limits, &empty, 0));
        }
    };
    let log = crate::ui::progress::Verbose;
    let report = tote_cache::trim(&root, &limits, args.dry_run, &log)?;
    let after = if args.dry_run {
        report.after
    } else {
        tote_cache::scan(&root)?.total
    };
    crate::ui::report(
        args.json,
        || prune_json(&root, args.dry_run, &limits, &report, after),
        |paint| prune_text(&root, args.dry_run, &report, after, paint),
    )
}

fn prune_json(root: &std::path::Path, dry_run: bool, limits: &Limits, r: &TrimReport, after: u64) -> serde_json::Value {
    json!({
        "schema": "tote-cache-prune/1",
        "root": root.to_string_lossy(),
        "dry_run": dry_run,
        "limits": {
            "max_size_bytes": limits.max_size,
            "max_age_seconds": limits.max_age.map(|d| d.as_secs()),
        },
        "removed": r.removed.iter().map(|x| json!({
            "name": x.name,
            "id": &x.name[..64],
            "bundle": x.bundle,
            "reason": x.why.key(),
            "freed_bytes": x.frees,
        })).collect::<Vec<_>>(),
        "kept_in_use": r.kept_in_use,
        "objects_removed": r.objects,
        "unlinked_object_bytes": r.object_bytes,
        "before_bytes": r.before,
        "after_bytes": after,
    })
}

fn prune_text(root: &std::path::Path, dry_run: bool, r: &TrimReport, after: u64, paint: Paint) -> String {
    let mut out = String::new();
    let verb = if dry_run { "would remove" } else { "removed" };
    for x in &r.removed {
        out.push_str(&format!(
            "{verb} {}  {}  {}  ({})\n",
            &x.name[..12],
            tote_format::printable(x.bundle.as_deref().unwrap_or("-").as_bytes()),
            human(x.frees),
            x.why.text()
        ));
    }
    for name in &r.kept_in_use {
        out.push_str(&format!("kept {} (in use)\n", &name[..12.min(name.len())]));
    }
    let n = r.removed.len();
    let summary = format!(
        "{} {n} {} ({}) and {} of objects no entry linked: {} {} -> {}",
        if dry_run { "would remove" } else { "removed" },
        if n == 1 { "entry" } else { "entries" },
        human(r.removed.iter().map(|x| x.frees).sum()),
        human(r.object_bytes),
        root.display(),
        human(r.before),
        human(after)
    );
    out.push_str(&paint.bold(&summary));
    out.push('\n');
    out
}

pub fn rm(args: &RmArgs) -> Result<()> {
    let root = match root(&args.root)? {
        Ok(p) => p,
        Err(p) => bail!("no cache yet at {}: nothing to remove", p.display()),
    };
    let listing = tote_cache::scan(&root)?;
    // Every ID resolved, and every refusal made, before anything goes.
    let mut chosen: Vec<&Listed> = Vec::new();
    for arg in &args.ids {
        for e in resolve(&listing.entries, arg, &root)? {
            if !chosen.iter().any(|c| c.name == e.name) {
                chosen.push(e);
            }
        }
    }
    if !args.force {
        if let Some(e) = chosen.iter().find(|e| e.in_use) {
            bail!(
                "entry {} ({}) is {}: a running program reads its files from it; --force removes it anyway \
                 (files it has open stay readable, any it opens later are gone and it may fail)",
                short_name(e),
                tote_format::printable(e.bundle.as_deref().unwrap_or("-").as_bytes()),
                state(e)
            );
        }
    }
    let paint = Paint::stderr();
    for e in chosen {
        let removed = if e.in_use {
            eprintln!(
                "{} removing entry {} ({}) while it is {}: files the program has open stay readable; any it opens \
                 from now on (a lazy import, a plugin, a locale) are gone, and it may fail",
                paint.error("tote: warning:"),
                short_name(e),
                tote_format::printable(e.bundle.as_deref().unwrap_or("-").as_bytes()),
                state(e)
            );
            tote_cache::remove_entry_in_use(&root, &e.name)?
        } else {
            tote_cache::remove_entry(&root, &e.name)?
        };
        if !removed && !args.force {
            bail!(
                "entry {}: a launch started using it just now; not removed (--force removes it anyway)",
                short_name(e)
            );
        }
        if !crate::ui::progress::quiet() {
            println!(
                "removed {} ({}, {})",
                short_name(e),
                tote_format::printable(e.bundle.as_deref().unwrap_or("-").as_bytes()),
                human(e.own)
            );
        }
    }
    tote_cache::remove_unlinked_objects(&root)?;
    Ok(())
}

/// The entries `arg` names (see `RM_HELP`).
fn resolve<'a>(entries: &'a [Listed], arg: &str, root: &std::path::Path) -> Result<Vec<&'a Listed>> {
    let (arg_id, blocks) = match arg.strip_suffix(".blocks") {
        Some(id) => (id, true),
        None => (arg, false),
    };
    let (id, short) = match arg_id.split_once('-') {
        Some((id, s)) if !blocks => (id, Some(s)),
        _ => (arg_id, None),
    };
    if id.len() < 4 || id.len() > 64 || !id.bytes().all(|c| c.is_ascii_hexdigit()) {
        bail!("{arg:?}: not an entry id (at least 4 hex digits of the bundle id, as `tote cache ls` shows)");
    }
    let id = id.to_ascii_lowercase();
    let found: Vec<&Listed> = entries
        .iter()
        .filter(|e| e.id.starts_with(&id) && short.is_none_or(|s| e.short.as_deref() == Some(s)))
        .filter(|e| !blocks || e.blocks)
        .collect();
    let Some(first) = found.first() else {
        bail!("no entry {arg} in {} (`tote cache ls` lists them)", root.display());
    };
    if let Some(other) = found.iter().find(|e| e.id != first.id) {
        bail!(
            "{arg} is ambiguous: it names entries of bundles {} and {}; give more of the id",
            &first.id[..16],
            &other.id[..16]
        );
    }
    Ok(found)
}
