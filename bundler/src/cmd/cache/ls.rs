//! `tote cache ls`: one line per entry, most recently used first, then the
//! root's total (every file counted once, however many entries link it)
//! and the limits launches trim it to. `--json`: docs/cache.schema.json.

use std::time::SystemTime;

use anyhow::Result;
use serde_json::json;
use tote_cache::{Limits, Listing};

use super::{ago, not_made_yet, root, short_name, state, unix, RootArg};
use crate::ui::rfc3339;
use crate::ui::{human, Paint};

pub const HELP: &str = "OWN is what removing the entry frees; SHARED, files it shares with other
entries (counted once in the total). ID.blocks entries are a thin bundle's
blocks as mount mode fetched them (compressed), trimmed like the others.

Examples:
  tote cache ls
  tote cache ls --json | jq '.entries[] | select(.in_use) | .id'";

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    root: RootArg,
    /// Print JSON (schema: docs/cache.schema.json, `tote-cache-ls/1`) instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &Args) -> Result<()> {
    let limits = Limits::from_env().map_err(anyhow::Error::msg)?;
    let mut l = match root(&args.root)? {
        Ok(path) => tote_cache::scan(&path)?,
        Err(path) => {
            return not_made_yet(args.json, &path, || {
                json!({
                    "schema": SCHEMA, "root": path.to_string_lossy(), "exists": false,
                    "total_bytes": 0, "free_bytes": null, "unlinked_object_bytes": 0,
                    "limits": limits_json(&limits), "entries": [],
                })
            })
        }
    };
    // Most recently used first; never used (incomplete) last.
    l.entries
        .sort_by(|a, b| b.last_used.cmp(&a.last_used).then_with(|| a.name.cmp(&b.name)));
    let now = SystemTime::now();
    crate::ui::report(
        args.json,
        || ls_json(&l, &limits),
        |paint| ls_text(&l, &limits, now, paint),
    )
}

const SCHEMA: &str = "tote-cache-ls/1";

fn limits_json(l: &Limits) -> serde_json::Value {
    json!({
        "max_size_bytes": l.max_size,
        "max_age_seconds": l.max_age.map(|d| d.as_secs()),
    })
}

fn ls_json(l: &Listing, limits: &Limits) -> serde_json::Value {
    json!({
        "schema": SCHEMA,
        "root": l.root.to_string_lossy(),
        "exists": true,
        "total_bytes": l.total,
        "free_bytes": l.free,
        "unlinked_object_bytes": l.unlinked_objects,
        "limits": limits_json(limits),
        "entries": l.entries.iter().map(|e| json!({
            "name": e.name,
            "id": e.id,
            "fetched_blocks": e.blocks,
            "relocated_for": e.short.as_ref().map(|s| format!("{}/{s}", tote_cache::SHORT_DIR)),
            "bundle": e.bundle,
            "complete": e.complete,
            "own_bytes": e.own,
            "shared_bytes": e.shared,
            "last_used": e.last_used.map(rfc3339),
            "last_used_unix": e.last_used.map(unix),
            "in_use": e.in_use,
            "pids": e.pids,
        })).collect::<Vec<_>>(),
    })
}

fn ls_text(l: &Listing, limits: &Limits, now: SystemTime, paint: Paint) -> String {
    let mut rows = vec![[
        "ENTRY".to_string(),
        "BUNDLE".into(),
        "OWN".into(),
        "SHARED".into(),
        "LAST USED".into(),
        "STATE".into(),
    ]];
    for e in &l.entries {
        rows.push([
            short_name(e),
            tote_format::printable(e.bundle.as_deref().unwrap_or("-").as_bytes()).into_owned(),
            human(e.own),
            human(e.shared),
            ago(e.last_used, now),
            state(e),
        ]);
    }
    let mut widths = [0usize; 6];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    if !l.entries.is_empty() {
        for (i, r) in rows.iter().enumerate() {
            let mut line = String::new();
            for (k, (c, w)) in r.iter().zip(widths).enumerate() {
                let cell = if k == 5 { c.clone() } else { format!("{c:<w$}  ") };
                line.push_str(&cell);
            }
            let line = line.trim_end().to_string();
            out.push_str(&if i == 0 { paint.bold(&line) } else { line });
            out.push('\n');
        }
    }
    let n = l.entries.len();
    out.push_str(&format!(
        "{n} {} in {}: {} on disk (files shared by entries counted once",
        if n == 1 { "entry" } else { "entries" },
        l.root.display(),
        human(l.total)
    ));
    if l.unlinked_objects > 0 {
        out.push_str(&format!(
            "; {} of it unlinked objects the next trim removes",
            human(l.unlinked_objects)
        ));
    }
    out.push_str(&format!("), {} free\n", human(l.free)));
    out.push_str(&format!("trimmed after cold starts to: {}\n", limits_text(limits)));
    out
}

/// `at most 10.0 GiB, entries unused for 30 days removed`.
pub fn limits_text(l: &Limits) -> String {
    let size = match l.max_size {
        Some(0) => "only entries in use kept".to_string(),
        Some(s) => format!("at most {}", human(s)),
        None => "no size limit".into(),
    };
    let age = match l.max_age.map(|d| d.as_secs()) {
        Some(0) => "entries not in use removed".to_string(),
        Some(s) if s % 86400 == 0 => format!("entries unused for {} days removed", s / 86400),
        Some(s) if s % 3600 == 0 => format!("entries unused for {} hours removed", s / 3600),
        Some(s) => format!("entries unused for {s} seconds removed"),
        None => "no age limit".into(),
    };
    format!("{size}, {age} (TOTE_CACHE_MAX, TOTE_CACHE_MAX_AGE)")
}
