//! `tote cache`: what a cache root holds (`ls`), and keeping it in check
//! by hand (`prune`, `rm`, `verify`). The root is the one a launch by this
//! user would choose, from the same environment variables, or `--root
//! DIR`. Every removal goes through the `tote-cache` crate, the stub's own
//! protocol: an entry a running launch pins is never removed (unless `rm
//! --force`), and a command killed half-way leaves nothing a launch would
//! use.

mod change;
mod ls;
mod verify;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Result};
use tote_cache::{Env, Listed, Quiet};

pub const HELP: &str = "The root is the one a launch by this user would choose ($TOTE_CACHE_DIR,
$XDG_CACHE_HOME/tote, ~/.cache/tote, $TMPDIR/tote-UID, /tmp/tote-UID,
/var/tmp/tote-UID), or --root DIR. Run it as the user who owns the root.

Examples:
  tote cache ls
  tote cache prune --max-size 5G --older-than 14d --dry-run
  tote cache rm 3c4f0e1a9b2d
  tote cache verify --repair
  tote cache ls --root /opt/tote-cache --json | jq '.entries[] | select(.in_use)'";

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// List entries (bundle, id, size on disk, last use, in use or not), the root's total and free space.
    #[command(after_help = ls::HELP)]
    Ls(ls::Args),
    /// Remove entries unused for longer than --older-than, then the least recently used until the root
    /// holds at most --max-size; never one in use. Without either: the limits a launch applies.
    #[command(after_help = change::PRUNE_HELP)]
    Prune(change::PruneArgs),
    /// Remove entries by id (or a unique prefix); refuses one in use unless --force.
    #[command(after_help = change::RM_HELP)]
    Rm(change::RmArgs),
    /// Check every entry in full against its bundle's index, as TOTE_VERIFY=1 does; --repair removes
    /// damaged ones.
    #[command(after_help = verify::HELP)]
    Verify(verify::Args),
}

/// `--root DIR`, shared by every subcommand.
#[derive(clap::Args)]
pub struct RootArg {
    /// The cache root [default: the one a launch by this user would choose].
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
}

pub fn run(args: &Args) -> Result<()> {
    match &args.command {
        Sub::Ls(a) => ls::run(a),
        Sub::Prune(a) => change::prune(a),
        Sub::Rm(a) => change::rm(a),
        Sub::Verify(a) => verify::run(a),
    }
}

/// The root to work on: `--root` (which must exist and be a cache root),
/// or the default one; `Err(path)` when the default does not exist yet
/// (nothing was launched: an empty cache, not an error).
fn root(arg: &RootArg) -> Result<std::result::Result<PathBuf, PathBuf>> {
    let uid = nix::unistd::geteuid().as_raw();
    let path = match &arg.root {
        Some(p) => std::path::absolute(p)?,
        None => match tote_cache::existing_root(&Env::from_process(), uid, &Quiet)? {
            (p, true) => p,
            (p, false) => return Ok(Err(p)),
        },
    };
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("cache root {}: no such directory; check --root", path.display())
        }
        Err(e) => bail!("cache root {}: {e}", path.display()),
    };
    let owner = std::os::unix::fs::MetadataExt::uid(&meta);
    if meta.is_dir() && owner != uid {
        bail!(
            "cache root {}: owned by uid {owner}, not {uid}; run tote cache as its owner (e.g. sudo -u '#{owner}' tote cache …)",
            path.display()
        );
    }
    if let Err(why) = tote_cache::usable(&path, uid, false, false) {
        bail!("cache root {}: {why}", path.display());
    }
    if let Some(stray) = not_ours(&path)? {
        bail!(
            "{} is not a tote cache root: it holds {stray:?}, which tote does not make; check --root",
            path.display()
        );
    }
    Ok(Ok(path))
}

/// The report when the default root is not made yet (nothing launched: an
/// empty cache): one line, or `as_json`.
fn not_made_yet(json: bool, path: &Path, as_json: impl FnOnce() -> serde_json::Value) -> Result<()> {
    crate::ui::report(json, as_json, |_| {
        format!(
            "no cache yet: a launch by this user would make {}
",
            path.display()
        )
    })
}

/// The first name in `root` that tote does not make there, if any.
fn not_ours(root: &Path) -> Result<Option<String>> {
    for e in std::fs::read_dir(root)? {
        let name = e?.file_name().to_string_lossy().into_owned();
        let ours = tote_cache::parse_entry_name(&name).is_some()
            || tote_cache::parse_blocks_name(&name).is_some()
            || name == tote_cache::OBJECTS
            || name == "mnt"
            || name == tote_cache::trust::RECORDS
            || name.starts_with(".tmp-")
            || name.starts_with(".new-")
            || name.starts_with(".lock-");
        if !ours {
            return Ok(Some(name));
        }
    }
    Ok(None)
}

/// `3c4f0e1a9b2d`, `3c4f0e1a9b2d-ab12c` for a relocated entry, or
/// `3c4f0e1a9b2d.blocks` for a thin bundle's fetched blocks: what `ls`
/// shows and `rm` takes.
fn short_name(e: &Listed) -> String {
    match &e.short {
        _ if e.blocks => format!("{}.blocks", &e.id[..12]),
        None => e.id[..12].to_string(),
        Some(s) => format!("{}-{s}", &e.id[..12]),
    }
}

/// `in use (pid 4242)`, `idle`, `incomplete`.
fn state(e: &Listed) -> String {
    if e.in_use {
        match e.pids.as_slice() {
            [] => "in use".into(),
            pids => format!(
                "in use (pid {})",
                pids.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
            ),
        }
    } else if e.complete {
        "idle".into()
    } else {
        "incomplete".into()
    }
}

/// `4 min ago`, `3 h ago`, `12 days ago`.
fn ago(t: Option<SystemTime>, now: SystemTime) -> String {
    let Some(t) = t else { return "-".into() };
    let s = now.duration_since(t).unwrap_or(Duration::ZERO).as_secs();
    match s {
        0..60 => "just now".into(),
        60..3600 => format!("{} min ago", s / 60),
        3600..172800 => format!("{} h ago", s / 3600),
        _ => format!("{} days ago", s / 86400),
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ui::rfc3339;

    #[test]
    fn dates() {
        let at = |s: u64| rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_796_132_096), "2026-12-01T13:34:56Z");
        assert_eq!(at(4_107_542_399), "2100-02-28T23:59:59Z");
    }

    #[test]
    fn ages() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1 << 30);
        let a = |s: u64| ago(Some(now - Duration::from_secs(s)), now);
        assert_eq!(a(5), "just now");
        assert_eq!(a(300), "5 min ago");
        assert_eq!(a(7300), "2 h ago");
        assert_eq!(a(86400 * 40), "40 days ago");
        assert_eq!(ago(None, now), "-");
    }
}
