//! `tote cache verify`: every entry checked in full against the index it
//! keeps, as a launch with `TOTE_VERIFY=1` checks its own (fetched blocks:
//! each block held, against its SHA-256). Each entry is
//! pinned while it is checked (a trim cannot take it away half-way), and
//! its last use is left as it was. `--repair` removes damaged entries that
//! nothing uses, and the object store with them (their files may be its
//! objects); the next launch of their bundle extracts it again.

use std::os::unix::fs::OpenOptionsExt;

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
                || json!({ "schema": SCHEMA, "root": p.to_string_lossy(), "repair": args.repair, "damaged_objects": [], "entries": [] }),
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
                (Lookup::Complete(_) | Lookup::OtherBoot(_), Some(_pin)) if e.blocks => {
                    // Fetched blocks: each one the store says it holds.
                    match tote_cache::check_blocks(&root.join(&e.name), &e.id) {
                        Ok(_) => ("ok", None),
                        Err(why) => ("damaged", Some(why)),
                    }
                }
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
    // Every object whose name is its content's hash, checked (a relocated
    // file's object is checked through the entries that link it).
    let bad_objects = damaged_objects(&root);
    let mut damaged_objects = !bad_objects.is_empty();
    if args.repair {
        for o in outcomes
            .iter_mut()
            .filter(|o| matches!(o.status, "damaged" | "incomplete"))
        {
            o.removed = tote_cache::remove_entry(&root, &o.entry.name)?;
            // (Damaged fetched blocks say nothing about the objects.)
            damaged_objects |= o.status == "damaged" && !o.entry.blocks;
        }
        if damaged_objects {
            // A damaged file may be an object other entries link: trust no
            // object (the entries keep their own links; only sharing with
            // future extractions is lost).
            tote_cache::discard(&root, &root.join(tote_cache::OBJECTS))?;
        }
    }
    let objects_left = if args.repair { 0 } else { bad_objects.len() };
    crate::ui::report(
        args.json,
        || verify_json(&root, args.repair, &outcomes, &bad_objects),
        |paint| verify_text(&outcomes, &bad_objects, args.repair, paint),
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
    if objects_left > 0 {
        bail!(
            "{objects_left} objects hold other content than their name says; tote cache verify --repair removes the \
             object store (entries keep their files; the next launches share files again)"
        );
    }
    Ok(())
}

const SCHEMA: &str = "tote-cache-verify/1";

/// Objects whose content is not what their name says (names, sorted).
fn damaged_objects(root: &std::path::Path) -> Vec<String> {
    use rayon::prelude::*;
    let dir = root.join(tote_cache::OBJECTS);
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let plain: Vec<String> = rd
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| tote_cache::is_object_name(n.as_bytes()) == Some(false))
        .collect();
    let mut bad: Vec<String> = plain
        .par_iter()
        .filter(|name| {
            let path = dir.join(name);
            let mut buf = vec![0u8; 1 << 20];
            // Opened without following a link: an object is a file.
            let opened = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(nix::libc::O_NOFOLLOW)
                .open(&path);
            match opened.map(|mut f| tote_cache::hash_file(&mut f, &mut buf, None)) {
                Ok(Ok(Some(h))) => tote_format::Digest32(h).to_hex() != name[..64],
                // Gone meanwhile (a trim): not damaged.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
                _ => true,
            }
        })
        .cloned()
        .collect();
    bad.sort();
    bad
}

fn verify_json(
    root: &std::path::Path,
    repair: bool,
    outcomes: &[Outcome<'_>],
    bad_objects: &[String],
) -> serde_json::Value {
    json!({
        "schema": SCHEMA,
        "root": root.to_string_lossy(),
        "repair": repair,
        "damaged_objects": bad_objects,
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

fn verify_text(outcomes: &[Outcome<'_>], bad_objects: &[String], repair: bool, paint: Paint) -> String {
    let mut out = String::new();
    for name in bad_objects {
        let tail = if repair { ", removed with the object store" } else { "" };
        out.push_str(&format!(
            "objects/{name}  {}{tail}\n",
            paint.error("damaged: its content is not what its name says")
        ));
    }
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
            tote_format::printable(e.bundle.as_deref().unwrap_or("-").as_bytes())
        ));
    }
    if outcomes.is_empty() {
        out.push_str("no entries\n");
    }
    out
}
