//! The runtime stubs, one per architecture: embedded at build time, or
//! given with `--stub`. Only sanity checks here; the stub's bytes are never
//! modified.

use std::path::Path;

use anyhow::{bail, Context, Result};
use goblin::elf::{program_header, Elf};
use tote_format::Arch;

static X86_64: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/tote-stub-x86_64"));
static AARCH64: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/tote-stub-aarch64"));
static THIN_X86_64: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/tote-stub-thin-x86_64"));
static THIN_AARCH64: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/tote-stub-thin-aarch64"));

/// The embedded stub for `arch`; empty where this tote was built without
/// it (bundler/build.rs).
pub fn embedded(arch: Arch) -> &'static [u8] {
    match arch {
        Arch::X86_64 => X86_64,
        Arch::Aarch64 => AARCH64,
    }
}

/// The embedded thin flavour for `arch` (it fetches blocks); empty where
/// this tote was built without it.
pub fn embedded_thin(arch: Arch) -> &'static [u8] {
    match arch {
        Arch::X86_64 => THIN_X86_64,
        Arch::Aarch64 => THIN_AARCH64,
    }
}

/// The thin stub a thin bundle for `arch` starts with.
pub fn load_thin(arch: Arch) -> Result<Vec<u8>> {
    let bytes = embedded_thin(arch);
    if bytes.is_empty() {
        bail!("this tote was built without the {arch} thin stub, so it cannot make thin bundles for {arch}");
    }
    let found = check(bytes).context("the embedded thin stub")?;
    if found != arch {
        bail!("the embedded thin stub for {arch} is an {found} program");
    }
    Ok(bytes.to_vec())
}

/// The stub a bundle for `arch` starts with: `path`, or the embedded one.
pub fn load(path: Option<&Path>, arch: Arch) -> Result<Vec<u8>> {
    let (bytes, what) = match path {
        Some(p) => (
            std::fs::read(p).with_context(|| format!("reading stub {}", p.display()))?,
            p.display().to_string(),
        ),
        None if embedded(arch).is_empty() => bail!(
            "this tote was built without the {arch} runtime stub (its build found no {arch} toolchain: \
             scripts/setup installs one), so it cannot bundle for {arch}"
        ),
        None => (embedded(arch).to_vec(), format!("embedded {arch} stub")),
    };
    let found = check(&bytes).with_context(|| format!("stub {what}"))?;
    if found != arch {
        bail!("stub {what} is an {found} program, but the bundle is for {arch} (its programs are; --arch chooses)");
    }
    Ok(bytes)
}

/// A static ELF executable of an architecture tote knows, without a
/// payload of its own: its architecture.
pub fn check(bytes: &[u8]) -> Result<Arch> {
    let elf = Elf::parse(bytes).context("not an ELF file")?;
    let arch = Arch::from_elf_machine(elf.header.e_machine)
        .filter(|_| elf.is_64 && elf.little_endian)
        .context("not an x86_64 or aarch64 program")?;
    if elf
        .program_headers
        .iter()
        .any(|p| p.p_type == program_header::PT_INTERP)
        || elf.interpreter.is_some()
    {
        bail!("is dynamically linked (has PT_INTERP): the stub must be static");
    }
    if !elf.libraries.is_empty() {
        bail!(
            "needs shared libraries ({}): the stub must be static",
            elf.libraries.join(", ")
        );
    }
    let tail = &bytes[bytes.len().saturating_sub(tote_format::MAX_TAIL)..];
    if tote_format::Trailer::decode(tail, bytes.len() as u64).is_ok() {
        bail!("is already a bundle, not a bare stub");
    }
    Ok(arch)
}

#[cfg(test)]
mod tests {
    /// Where musl-gcc is installed (as scripts/setup does), the embedded
    /// stub is the small, musl-linked one.
    #[test]
    fn the_stub_is_linked_against_musl_where_musl_gcc_is_installed() {
        let have_musl = std::process::Command::new("musl-gcc")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        let given = option_env!("TOTE_STUB").is_some() || option_env!("TOTE_STUB_LIBC") == Some("glibc");
        let musl = cfg!(tote_stub_musl);
        assert!(
            musl || !have_musl || given,
            "musl-gcc is installed, but the stub was linked against glibc"
        );
    }

    use tote_format::Arch;

    /// Every stub the build was asked for (`TOTE_STUB_ARCHES`, by default
    /// both) is there: CI fails where the aarch64 toolchain is missing.
    #[test]
    fn every_wanted_stub_is_embedded() {
        for name in env!("TOTE_STUB_ARCHES_WANTED").split(',') {
            let arch = Arch::parse(name.trim()).expect("an architecture");
            assert!(
                !super::embedded(arch).is_empty(),
                "no {arch} stub was built (see the build's warning)"
            );
        }
    }

    #[test]
    fn embedded_stubs_are_static_and_of_their_architecture() {
        for arch in Arch::ALL {
            for stub in [super::embedded(arch), super::embedded_thin(arch)] {
                if !stub.is_empty() {
                    assert_eq!(super::check(stub).unwrap(), arch);
                }
            }
        }
    }

    /// Each wanted architecture has its thin flavour too, within its
    /// budget (2 MiB), and ordinary bundles do not carry its code.
    #[test]
    fn every_wanted_thin_stub_is_embedded_within_its_budget() {
        for name in env!("TOTE_STUB_ARCHES_WANTED").split(',') {
            let arch = Arch::parse(name.trim()).expect("an architecture");
            let (plain, thin) = (super::embedded(arch), super::embedded_thin(arch));
            assert!(!thin.is_empty(), "no {arch} thin stub was built");
            assert!(thin.len() <= 2 << 20, "{arch} thin stub: {} bytes", thin.len());
            let has = |s: &[u8], what: &[u8]| s.windows(what.len()).any(|w| w == what);
            assert!(has(thin, b"AWS4-HMAC-SHA256") && !has(plain, b"AWS4-HMAC-SHA256"));
        }
    }

    /// The stub is prepended to every bundle. Linked against musl (the
    /// build's default where musl-gcc is installed): 0.8 MiB at most (it
    /// was 0.75 MiB before signature checks added 70 KB: Ed25519, SHA-512
    /// and the policy file's checks).
    /// Against static glibc (the fallback): 1.4 MiB at most (it was 1.25 MiB
    /// before mount mode's FUSE server added 27 KB, 1.3 MiB before
    /// launching without namespaces added 30 KB, 1.35 MiB before the
    /// cache's trimming added 49 KB).
    #[test]
    fn embedded_stub_fits_its_size_budget() {
        let budget = if cfg!(tote_stub_musl) {
            80 * 1024 * 1024 / 100
        } else {
            140 * 1024 * 1024 / 100
        };
        assert!(
            super::X86_64.len() <= budget,
            "stub is {} bytes, budget {budget}",
            super::X86_64.len()
        );
    }

    /// The aarch64 stub, linked against musl as on x86-64: 0.8 MiB at
    /// most (issue 25's budget; 0.63 MiB when it was added).
    #[test]
    fn the_aarch64_stub_fits_its_size_budget() {
        let stub = super::embedded(Arch::Aarch64);
        if cfg!(tote_stub_aarch64_musl) {
            assert!(
                stub.len() <= 8 * 1024 * 1024 / 10,
                "aarch64 stub is {} bytes",
                stub.len()
            );
        }
    }
}
