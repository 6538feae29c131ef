//! What the user named, turned into a tree of files and launch metadata:
//! one model for every kind of input (see `tote_format::Meta`).

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::pack::Launch;
use crate::scan::Tree;
use crate::{closure, dir, elf, entrypoint, flake, oci, BundleArgs};

pub struct Input {
    pub tree: Tree,
    pub launch: Launch,
    /// What was bundled, for the summary line: `closure: 3 store paths`.
    pub summary: String,
    /// Staging directories the tree's files live in until packing is done.
    pub staging: Option<tempfile::TempDir>,
}

/// The kinds of input, as `tote bundle` tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Flake,
    StorePath,
    Directory,
    Elf,
    Image,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Flake => "a flake installable",
            Kind::StorePath => "a Nix store path",
            Kind::Directory => "a directory",
            Kind::Elf => "an ELF program",
            Kind::Image => "an OCI image",
        }
    }
}

pub fn detect(path: &Path) -> Result<Kind> {
    if flake::is_installable(path) {
        return Ok(Kind::Flake);
    }
    let meta = std::fs::metadata(path).with_context(|| format!("{}: cannot read the input", path.display()))?;
    if closure::in_store(path) {
        return Ok(Kind::StorePath);
    }
    if meta.is_dir() {
        return Ok(if path.join("oci-layout").is_file() {
            Kind::Image
        } else {
            Kind::Directory
        });
    }
    let mut magic = [0u8; 4];
    let n = {
        use std::io::Read;
        let mut f = std::fs::File::open(path).with_context(|| format!("{}: cannot open the input", path.display()))?;
        f.read(&mut magic)
            .with_context(|| format!("{}: cannot read the input", path.display()))?
    };
    if n == 4 && magic == *b"\x7fELF" {
        if is_bundle(path, meta.len()) {
            bail!(
                "{}: already a tote bundle; bundle what it was made from (`tote inspect {}` names its \
                 entry point), or `tote extract` it into a directory and bundle that",
                path.display(),
                path.display()
            );
        }
        return Ok(Kind::Elf);
    }
    if oci::looks_like_archive(path)? {
        return Ok(Kind::Image);
    }
    bail!(
        "{}: not a Nix store path, flake installable, directory, ELF program or image archive (docker-archive or OCI, tar or tar.gz)",
        path.display()
    )
}

/// Does `path` end with a tote trailer?
fn is_bundle(path: &Path, len: u64) -> bool {
    use std::os::unix::fs::FileExt;
    let mut tail = [0u8; tote_format::TRAILER_LEN];
    let Some(at) = len.checked_sub(tail.len() as u64) else {
        return false;
    };
    std::fs::File::open(path)
        .and_then(|f| f.read_exact_at(&mut tail, at))
        .is_ok_and(|()| tote_format::Trailer::decode(&tail, len).is_ok())
}

pub fn resolve(args: &BundleArgs) -> Result<Input> {
    let kind = detect(&args.path)?;
    let only = |given: bool, flag: &str, fits: &[Kind]| -> Result<()> {
        if given && !fits.contains(&kind) {
            bail!("{flag} does not apply to {} ({})", kind.name(), args.path.display());
        }
        Ok(())
    };
    only(args.mount_at.is_some(), "--mount-at", &[Kind::Directory])?;
    only(!args.add.is_empty(), "--add", &[Kind::Elf])?;
    only(
        args.scan_references,
        "--scan-references",
        &[Kind::StorePath, Kind::Flake],
    )?;
    match kind {
        Kind::Flake => {
            let installable = args.path.to_str().context("a flake installable must be UTF-8")?;
            let built = flake::build(installable)?;
            nix(&built.out, args, built.main_program.as_deref())
        }
        Kind::StorePath => nix(&args.path, args, None),
        Kind::Directory => dir::resolve(&args.path, args.mount_at.as_deref(), args.entrypoint.as_deref()),
        Kind::Elf => elf::resolve(&args.path, &args.add, args.entrypoint.is_some()),
        Kind::Image => oci::resolve(&args.path, args.entrypoint.as_deref()),
    }
}

/// A store path and its closure, the store layered over the host's.
fn nix(path: &Path, args: &BundleArgs, main_program: Option<&str>) -> Result<Input> {
    let input = closure::resolve(path, args.scan_references)?;
    let tree = crate::scan::scan_store_paths(&input.store_dir, &input.closure)?;
    let requested = args
        .entrypoint
        .clone()
        .or_else(|| input.inner.clone())
        .or_else(|| main_program.map(|m| Path::new("bin").join(m)));
    let entry = entrypoint::choose(&input.root, &tree, requested.as_deref())?;
    let launch = Launch {
        name: entry.file_name().to_string_lossy().into_owned(),
        entrypoint: entry.absolute,
        mounts: vec![input.mount()],
        ..Launch::default()
    };
    let how = if input.scanned { ", references scanned" } else { "" };
    Ok(Input {
        tree,
        launch,
        summary: format!("closure: {} store paths{how}", input.closure.len()),
        staging: None,
    })
}

/// `p` as a tree path: relative, without the leading `/`.
pub fn rel(p: &Path) -> PathBuf {
    p.strip_prefix("/").unwrap_or(p).to_path_buf()
}

/// `p` as metadata bytes.
pub fn bytes(p: &Path) -> Vec<u8> {
    p.as_os_str().as_bytes().to_vec()
}

/// A clean absolute path (`--mount-at`, image paths): no `.`, `..` or empty
/// components, not `/` itself.
pub fn clean_absolute(p: &Path, what: &str) -> Result<PathBuf> {
    use std::path::Component;
    let ok = p.is_absolute()
        && p.components().count() > 1
        && p.components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if !ok {
        bail!(
            "{what} {}: must be a clean absolute path other than /, like /opt/tool",
            p.display()
        );
    }
    Ok(p.to_path_buf())
}

/// Directory trees: every symlink must lead somewhere, inside the tree or
/// (absolute, outside where the tree appears) on this host.
pub fn check_symlinks(tree: &Tree, appears_at: &Path, origin: &Path) -> Result<()> {
    for item in &tree.items {
        let crate::scan::ItemKind::Symlink { target } = &item.kind else {
            continue;
        };
        let at = Path::new("/").join(std::ffi::OsStr::from_bytes(&item.path));
        let t = Path::new(std::ffi::OsStr::from_bytes(target));
        let inside = !t.is_absolute() || t.starts_with(appears_at) && appears_at != Path::new("/");
        let ok = if inside {
            entrypoint::resolves(tree, &at.parent().unwrap_or(Path::new("/")).join(t))
        } else {
            t.exists()
        };
        if !ok {
            let shown = origin.join(at.strip_prefix(appears_at).unwrap_or(&at));
            bail!(
                "{} is a dangling symlink (to {}): fix or remove it before bundling",
                shown.display(),
                t.display()
            );
        }
    }
    Ok(())
}
