//! Which kind of input the user named, and the dispatch to that kind's
//! module. The kinds never depend on this module.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::model::Input;
use super::{arch, dir, elf, flake, nix, oci};

/// What `tote bundle` was asked to bundle, and the options that shape the input.
pub struct Request<'a> {
    pub path: &'a Path,
    pub entrypoint: Option<&'a Path>,
    pub mount_at: Option<&'a Path>,
    pub add: &'a [PathBuf],
    pub scan_references: bool,
    /// `--arch`: the architecture, whatever the closure says.
    pub arch: Option<tote_format::Arch>,
    /// `--sysroot`: an ELF program's root directory (a foreign one).
    pub sysroot: Option<&'a Path>,
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

/// Which kind of input `path` is; a bundle is refused with advice.
pub fn detect(path: &Path) -> Result<Kind> {
    if flake::is_installable(path) {
        return Ok(Kind::Flake);
    }
    let meta = std::fs::metadata(path).with_context(|| format!("{}: cannot read the input", path.display()))?;
    if nix::in_store(path) {
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
pub fn is_bundle(path: &Path, len: u64) -> bool {
    use std::os::unix::fs::FileExt;
    let mut tail = [0u8; tote_format::TRAILER_LEN];
    let Some(at) = len.checked_sub(tail.len() as u64) else {
        return false;
    };
    std::fs::File::open(path)
        .and_then(|f| f.read_exact_at(&mut tail, at))
        .is_ok_and(|()| tote_format::Trailer::decode(&tail, len).is_ok())
}

pub fn resolve(req: &Request<'_>) -> Result<Input> {
    // With --sysroot the input is an ELF program inside that root.
    let kind = match req.sysroot {
        Some(_) => Kind::Elf,
        None => detect(req.path)?,
    };
    let only = |given: bool, flag: &str, fits: &[Kind]| -> Result<()> {
        if given && !fits.contains(&kind) {
            bail!("{flag} does not apply to {} ({})", kind.name(), req.path.display());
        }
        Ok(())
    };
    only(req.mount_at.is_some(), "--mount-at", &[Kind::Directory])?;
    only(!req.add.is_empty(), "--add", &[Kind::Elf])?;
    only(
        req.scan_references,
        "--scan-references",
        &[Kind::StorePath, Kind::Flake],
    )?;
    let mut input = match kind {
        Kind::Flake => {
            let installable = req.path.to_str().context("a flake installable must be UTF-8")?;
            let built = flake::build(installable)?;
            nix::input(
                &built.out,
                req.scan_references,
                req.entrypoint,
                built.main_program.as_deref(),
            )
        }
        Kind::StorePath => nix::input(req.path, req.scan_references, req.entrypoint, None),
        Kind::Directory => dir::resolve(req.path, req.mount_at, req.entrypoint),
        Kind::Elf => elf::resolve(req.path, req.add, req.entrypoint.is_some(), req.sysroot),
        Kind::Image => oci::resolve(req.path, req.entrypoint, req.arch),
    }?;
    let choice = arch::choose(&input.tree, &input.launch, req.arch)?;
    for note in &choice.notes {
        eprintln!("tote: note: {note}");
    }
    input.launch.arch = choice.arch;
    Ok(input)
}
