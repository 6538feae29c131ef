//! `tote cache verify`: every entry checked in full against the index it
//! keeps, as a launch with `TOTE_VERIFY=1` checks its own. Each entry is
//! pinned while it is checked (a trim cannot take it away half-way), and
//! its last use is left as it was. `--repair` removes damaged entries that
//! nothing uses, and the object store with them (their files may be its
//! objects); the next launch of their bundle extracts it again.

use anyhow::{bail, Result};
use serde_json::json;
use tote_cache::{Checked, Listed, Lookup, Use};

use super::{not_made_yet, root, short_name, state, RootArg};
use crate::ui::Paint;

pub const HELP: &str = "Exits 1 if a damaged entry is left (without --repair, or one in use).

Examples:
  tote cache verify
  tote cache verify --repair";

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    root: RootArg,
    /// Remove damaged (and incomplete) entries nothing uses; the next launch extracts them again.
    #[arg(long)]
    repair: bool,
    /// Print JSON (schema: docs/cache.schema.json, `tote-cache-verify/1`) instead of text.
    #[arg(long)]
    json: bool,
}

/// One entry's result.
struct Outcome<'a> {
    entry: &'a Listed,
    /// `ok`, `damaged`, `incomplete`, `unverifiable`.
    status: &'static str,
    problem: Option<String>,
    removed: bool,
}

pub fn run(args: &Args) -> Result<()> {
    let root = match root(&args.root)? {
        Ok(p) => p,
        Err(p) => {
            return not_made_yet(
                args.json,
                &p,
                || json!({ "schema": SCHEMA, "root": p.to_string_lossy(), "repair": args.repair, "entries": [] }),
            )
        }
    };
    let listing = tote_cache::scan(&root)?;
    let boot = tote_cache::boot_id();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut outcomes = Vec::new();
    for e in &listing.entries {
        let (status, problem) = if !e.complete {
            if tote_cache::being_removed(&root, &e.name) {
                continue; // a trim or prune is taking it now
            }
            (
                "incomplete",
                Some("no completion marker (a removal or check was interrupted)".to_string()),
            )
        } else {
            match tote_cache::pin(&root, &e.name, &boot, Use::Look) {
                (Lookup::Complete(_) | Lookup::OtherBoot(_), Some(_pin)) => {
                    match tote_cache::check_entry(&root.join(&e.name), &e.name, threads) {
                        Checked::Intact => ("ok", None),
                        Checked::Damaged(why) => ("damaged", Some(why)),
                        Checked::Unverifiable(why) => ("unverifiable", Some(why)),
                    }
                }
                _ => continue, // removed meanwhile
            }
        };
        crate::ui::progress::step(|| format!("{}: {status}", e.name));
        outcomes.push(Outcome {
            entry: e,
            status,
            problem,
            removed: false,
        });
    }
    let mut damaged_objects = false;
    if args.repair {
        for o in outcomes
            .iter_mut()
            .filter(|o| matches!(o.status, "damaged" | "incomplete"))
        {
            o.removed = tote_cache::remove_entry(&root, &o.entry.name)?;
            damaged_objects |= o.status == "damaged";
        }
        if damaged_objects {
            // A damaged file may be an object other entries link: trust no
            // object (the entries keep their own links; only sharing with
            // future extractions is lost).
            tote_cache::discard(&root, &root.join(tote_cache::OBJECTS))?;
        }
    }
    crate::ui::report(
        args.json,
        || verify_json(&root, args.repair, &outcomes),
        |paint| verify_text(&outcomes, paint),
    )?;
    let left = outcomes.iter().filter(|o| o.status == "damaged" && !o.removed).count();
    if left > 0 {
        let how = if args.repair {
            "in use: stop what uses them, then run tote cache verify --repair again"
        } else {
            "tote cache verify --repair removes them (the next launch extracts them again)"
        };
        bail!("{left} of {} entries damaged; {how}", outcomes.len());
    }
    Ok(())
}

const SCHEMA: &str = "tote-cache-verify/1";

fn verify_json(root: &std::path::Path, repair: bool, outcomes: &[Outcome<'_>]) -> serde_json::Value {
    json!({
        "schema": SCHEMA,
        "root": root.to_string_lossy(),
        "repair": repair,
        "entries": outcomes.iter().map(|o| json!({
            "name": o.entry.name,
            "id": o.entry.id,
            "bundle": o.entry.bundle,
            "status": o.status,
            "problem": o.problem,
            "in_use": o.entry.in_use,
            "removed": o.removed,
        })).collect::<Vec<_>>(),
    })
}

fn verify_text(outcomes: &[Outcome<'_>], paint: Paint) -> String {
    let mut out = String::new();
    for o in outcomes {
        let e = o.entry;
        let what = match (&o.problem, o.status) {
            (None, _) => paint.added("ok"),
            (Some(p), "unverifiable") => format!("unverifiable: {p}"),
            (Some(p), s) => paint.error(&format!("{s}: {p}")),
        };
        let tail = if o.removed {
            ", removed".to_string()
        } else if o.problem.is_some() && e.in_use {
            format!(", kept: {}", state(e))
        } else {
            String::new()
        };
        out.push_str(&format!(
            "{}  {}  {what}{tail}\n",
            short_name(e),
            e.bundle.as_deref().unwrap_or("-")
        ));
    }
    if outcomes.is_empty() {
        out.push_str("no entries\n");
    }
    out
}
