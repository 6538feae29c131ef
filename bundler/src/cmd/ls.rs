//! `tote ls` and `tote extract`: a bundle's entries, listed or written out,
//! read with tote's own decoder (the bundle's stub is never run).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tote_format::{EntryKind, Index};

use crate::reader::open;

pub const LS_HELP: &str = "Examples:
  tote ls ./app
  tote ls ./app nix/store/abc…-hello/bin
  tote ls ./app | sort -k2 -n | tail   # the largest files";

pub const EXTRACT_HELP: &str = "Examples:
  tote extract ./app ./app-files
  tote extract ./app /tmp/x && ls /tmp/x/nix/store";

#[derive(clap::Args)]
pub struct LsArgs {
    /// The bundle.
    file: PathBuf,
    /// Only this entry and what is below it (a path inside the tree).
    path: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct ExtractArgs {
    /// The bundle.
    file: PathBuf,
    /// A new directory, or an empty one.
    dir: PathBuf,
}

/// `ls -l`-style mode of an entry, as `tote extract` writes it.
fn mode_string(kind: &EntryKind) -> &'static str {
    match kind {
        EntryKind::Dir => "drwxr-xr-x",
        EntryKind::File { executable: true, .. } => "-rwxr-xr-x",
        EntryKind::File { .. } => "-rw-r--r--",
        EntryKind::Symlink { .. } => "lrwxrwxrwx",
    }
}

/// The entries at or below `under` (a path inside the tree; a leading `/`
/// is ignored), in path order.
fn select<'i>(index: &'i Index, under: Option<&Path>) -> Vec<&'i tote_format::Entry> {
    let prefix: Option<Vec<u8>> = under.map(|p| {
        let b = p.as_os_str().as_bytes();
        let b = b.trim_ascii_start().strip_prefix(b"/").unwrap_or(b);
        b.strip_suffix(b"/").unwrap_or(b).to_vec()
    });
    index
        .entries
        .iter()
        .filter(|e| match &prefix {
            None => true,
            Some(p) if p.is_empty() => true,
            Some(p) => e.path == *p || (e.path.starts_with(p) && e.path.get(p.len()) == Some(&b'/')),
        })
        .collect()
}

pub fn ls(args: &LsArgs) -> Result<()> {
    let (file, under): (&Path, Option<&Path>) = (&args.file, args.path.as_deref());
    let o = open(file)?;
    // The listing reads the tree alone; the metadata only names the
    // architecture in the summary.
    let arch = o.layout.meta(&o.map).map(|m| m.arch);
    let index = o.layout.index(&o.map).with_context(|| format!("{}", file.display()))?;
    let entries = select(&index, under);
    if entries.is_empty() {
        if let Some(p) = under {
            bail!(
                "{}: no entry {} (paths are relative to the bundle's tree, e.g. nix/store/…; \
                 `tote ls {}` lists them all)",
                file.display(),
                p.display(),
                file.display()
            );
        }
    }
    let listed = entries.len();
    let mut out = String::new();
    for e in entries {
        let path = tote_format::printable(&e.path);
        let (size, link) = match &e.kind {
            EntryKind::Dir => ("-".to_string(), String::new()),
            EntryKind::File { size, .. } => (size.to_string(), String::new()),
            EntryKind::Symlink { target } => (
                target.len().to_string(),
                format!(" -> {}", tote_format::printable(target)),
            ),
        };
        out.push_str(&format!("{} {size:>12}  {path}{link}\n", mode_string(&e.kind)));
    }
    crate::ui::print(|w| w.write_all(out.as_bytes()))?;
    // On standard error: the listing stays one entry a line for pipes.
    if !crate::ui::progress::quiet() {
        let arch = match arch {
            Ok(a) => format!("programs for {a}"),
            Err(e) => format!("metadata unreadable: {e}"),
        };
        eprintln!(
            "{}: {listed} of {} entries; {arch}",
            file.display(),
            index.entries.len()
        );
    }
    Ok(())
}

/// `tote extract FILE DIR`: the tree into DIR (new, or an empty directory),
/// through a sibling staging directory renamed into place at the end, so a
/// failure leaves nothing. Every block's hash is checked before it is
/// decoded and every file's before it is written.
pub fn extract(args: &ExtractArgs) -> Result<()> {
    let (file, dir): (&Path, &Path) = (&args.file, &args.dir);
    let o = open(file)?;
    let ctx = || format!("{}", file.display());
    let index = o.layout.index(&o.map).with_context(ctx)?;
    let data = o.layout.data(&o.map).with_context(ctx)?;
    let usage = |m: &str| anyhow::anyhow!("{}: {m}", dir.display());
    if let Ok(mut rd) = std::fs::read_dir(dir) {
        if rd.next().is_some() {
            return Err(usage("the directory is not empty; choose a new or empty one"));
        }
    } else if dir.symlink_metadata().is_ok() {
        return Err(usage("exists and is not a directory"));
    }
    let parent = match dir.parent() {
        Some(p) if p.as_os_str().is_empty() => Path::new("."),
        Some(p) => p,
        None => return Err(usage("has no parent directory")),
    };
    if !parent.is_dir() {
        return Err(usage("its parent directory does not exist"));
    }
    let stage = tempfile::Builder::new()
        .prefix(&format!(
            ".{}.tote-",
            dir.file_name().map(OsStr::to_string_lossy).unwrap_or_default()
        ))
        .tempdir_in(parent)
        .with_context(|| format!("creating a staging directory in {}", parent.display()))?;
    tote_cache::unpack::write_tree(&index, data, stage.path(), true)
        .map_err(|e| anyhow::anyhow!("{}: {e:#}", file.display()))?;
    let staged = stage.keep();
    if let Err(e) = std::fs::rename(&staged, dir) {
        let _ = std::fs::remove_dir_all(&staged);
        return Err(e).with_context(|| format!("moving the tree into {}", dir.display()));
    }
    if !crate::ui::progress::quiet() {
        println!(
            "{}: {} entries from {}",
            dir.display(),
            index.entries.len(),
            file.display()
        );
    }
    Ok(())
}
