//! The runtime stub: embedded at build time, or given with `--stub`.
//! Only sanity checks here; the stub's bytes are never modified.

use std::path::Path;

use anyhow::{bail, Context, Result};
use goblin::elf::{header, program_header, Elf};

static EMBEDDED: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/tote-stub"));

pub fn load(path: Option<&Path>) -> Result<Vec<u8>> {
    let (bytes, what) = match path {
        Some(p) => (
            std::fs::read(p).with_context(|| format!("reading stub {}", p.display()))?,
            p.display().to_string(),
        ),
        None => (EMBEDDED.to_vec(), "embedded stub".to_string()),
    };
    check(&bytes).with_context(|| format!("stub {what}"))?;
    Ok(bytes)
}

/// A static x86-64 ELF executable without a payload of its own.
pub fn check(bytes: &[u8]) -> Result<()> {
    let elf = Elf::parse(bytes).context("not an ELF file")?;
    if elf.header.e_machine != header::EM_X86_64 || !elf.is_64 {
        bail!("not an x86-64 program");
    }
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
    let tail = &bytes[bytes.len().saturating_sub(tote_format::TRAILER_LEN)..];
    if tote_format::Trailer::decode(tail, bytes.len() as u64).is_ok() {
        bail!("is already a bundle, not a bare stub");
    }
    Ok(())
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

    #[test]
    fn embedded_stub_is_static() {
        super::check(super::EMBEDDED).unwrap();
    }

    /// The stub is prepended to every bundle. Linked against musl (the
    /// build's default where musl-gcc is installed): 0.75 MiB at most.
    /// Against static glibc (the fallback): 1.4 MiB at most (it was 1.25 MiB
    /// before mount mode's FUSE server added 27 KB, 1.3 MiB before
    /// launching without namespaces added 30 KB, 1.35 MiB before the
    /// cache's trimming added 49 KB).
    #[test]
    fn embedded_stub_fits_its_size_budget() {
        let budget = if cfg!(tote_stub_musl) {
            75 * 1024 * 1024 / 100
        } else {
            140 * 1024 * 1024 / 100
        };
        assert!(
            super::EMBEDDED.len() <= budget,
            "stub is {} bytes, budget {budget}",
            super::EMBEDDED.len()
        );
    }
}
