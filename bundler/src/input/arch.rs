//! Which architecture a bundle is for: read from the closure. The entry
//! point's ELF header says it (a script is followed to its interpreter);
//! `--arch` overrides. The entry point's own interpreter and libraries
//! must be of its architecture; other ELF files of another one are named.

use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use goblin::elf::Elf;
use tote_format::Arch;

use super::model::Launch;
use super::tree::{ItemKind, Tree};

/// At most this many `#!` hops from the entry point to a program (the
/// kernel allows 4 levels of interpreters).
const MAX_HOPS: usize = 4;

/// The architecture chosen, and what the user should know about it.
pub struct Choice {
    pub arch: Arch,
    pub notes: Vec<String>,
}

/// Choose the architecture of a bundle of `tree` launched as `launch`.
pub fn choose(tree: &Tree, launch: &Launch, forced: Option<Arch>) -> Result<Choice> {
    let view = View { tree, launch };
    let mut notes = Vec::new();
    let entry = PathBuf::from(OsStr::from_bytes(&launch.entrypoint));
    let program = view.program(&entry)?;
    let entry_arch = match &program {
        Some((path, source)) => match machine(source)? {
            Some(m) => match Arch::from_elf_machine(m) {
                Some(a) => {
                    check_own(&view, path, source, a)?;
                    Some(a)
                }
                None if forced.is_some() => {
                    notes.push(format!("the entry point {} is a program for {}", path.display(), machine_name(m)));
                    None
                }
                None => bail!(
                    "the entry point {} is a program for {}: tote bundles x86_64 and aarch64 programs (--arch forces one)",
                    path.display(),
                    machine_name(m)
                ),
            },
            None => None,
        },
        None => None,
    };
    let census = census(tree)?;
    let arch = forced
        .or(entry_arch)
        .or_else(|| census.most())
        .unwrap_or_else(|| Arch::native().unwrap_or(Arch::X86_64));
    if let (Some(f), Some(e)) = (forced, entry_arch) {
        if f != e {
            notes.push(format!(
                "--arch {f}, but the entry point {} is an {e} program: it runs only where {e} programs run",
                entry.display()
            ));
        }
    }
    let others: Vec<&(Vec<u8>, u16)> = census.elves.iter().filter(|(_, m)| *m != arch.elf_machine()).collect();
    if let Some((first, m)) = others.first() {
        notes.push(format!(
            "{} ELF file{} in the closure {} not {arch} (first: {}, {}); {} cannot run on an {arch} host",
            others.len(),
            if others.len() == 1 { "" } else { "s" },
            if others.len() == 1 { "is" } else { "are" },
            String::from_utf8_lossy(first),
            machine_name(*m),
            if others.len() == 1 { "it" } else { "they" },
        ));
    }
    Ok(Choice { arch, notes })
}

/// The launch's view of the tree: paths as the program sees them.
struct View<'a> {
    tree: &'a Tree,
    launch: &'a Launch,
}

impl View<'_> {
    /// The tree path of launch path `abs` (absolute, no symlink followed).
    fn tree_path(&self, abs: &Path) -> Vec<u8> {
        let rel = abs.as_os_str().as_bytes().strip_prefix(b"/").unwrap_or_default();
        if !self.launch.root.is_empty() {
            return [&self.launch.root[..], b"/", rel].concat();
        }
        for m in &self.launch.mounts {
            let t = m.target.strip_prefix(b"/").unwrap_or(&m.target);
            if let Some(rest) = rel.strip_prefix(t) {
                if rest.is_empty() || rest.starts_with(b"/") {
                    return [&m.source[..], rest].concat();
                }
            }
        }
        rel.to_vec()
    }

    /// Follow `abs`'s symlinks in the view to a file: its launch path and
    /// its source, or `None` where it is not in the tree.
    fn file(&self, abs: &Path) -> Option<(PathBuf, PathBuf)> {
        let kind_at = |p: &Path| self.tree.get(&self.tree_path(p)).map(|i| &i.kind);
        let end = super::paths::resolve(
            abs,
            |next| match kind_at(next) {
                None => Err(()),
                Some(ItemKind::Symlink { target }) => Ok(Some(PathBuf::from(OsStr::from_bytes(target)))),
                Some(_) => Ok(None),
            },
            || (),
        )
        .ok()?;
        match kind_at(&end)? {
            ItemKind::File { source, .. } => Some((end, source.clone())),
            _ => None,
        }
    }

    /// The program `abs` runs: itself if it is an ELF file, else its `#!`
    /// interpreter's, followed up to [`MAX_HOPS`]; `None` where the chain
    /// leaves the tree (a script for the host's `/bin/sh`).
    fn program(&self, abs: &Path) -> Result<Option<(PathBuf, PathBuf)>> {
        let mut at = abs.to_path_buf();
        for _ in 0..MAX_HOPS {
            let Some((path, source)) = self.file(&at) else {
                return Ok(None);
            };
            let head = head(&source, 256)?;
            match interpreter(&head) {
                Some(next) => at = next,
                None => return Ok(Some((path, source))),
            }
        }
        Ok(None)
    }
}

/// The first `n` bytes of `source` (fewer if it is shorter).
fn head(source: &Path, n: u64) -> Result<Vec<u8>> {
    let mut head = Vec::new();
    File::open(source)
        .and_then(|f| f.take(n).read_to_end(&mut head))
        .with_context(|| format!("reading {}", source.display()))?;
    Ok(head)
}

/// The interpreter a `#!` line names.
fn interpreter(head: &[u8]) -> Option<PathBuf> {
    let line = head.strip_prefix(b"#!")?;
    let line = &line[..line.iter().position(|&b| b == b'\n').unwrap_or(line.len())];
    let path = line.split(|b| *b == b' ' || *b == b'\t').find(|w| !w.is_empty())?;
    path.starts_with(b"/").then(|| PathBuf::from(OsStr::from_bytes(path)))
}

/// The ELF machine of the file at `source`, if it is an ELF file.
fn machine(source: &Path) -> Result<Option<u16>> {
    Ok(elf_machine(&head(source, 20)?))
}

/// The ELF machine in a file's first 20 bytes, if they are an ELF header.
fn elf_machine(head: &[u8]) -> Option<u16> {
    if head.len() < 20 || &head[..4] != b"\x7fELF" {
        return None;
    }
    let m = [head[18], head[19]];
    match head[5] {
        1 => Some(u16::from_le_bytes(m)),
        2 => Some(u16::from_be_bytes(m)),
        _ => None,
    }
}

/// A name for ELF machine `m`.
fn machine_name(m: u16) -> String {
    match Arch::from_elf_machine(m) {
        Some(a) => a.name().to_string(),
        None => match m {
            3 => "i386".into(),
            8 => "MIPS".into(),
            20 | 21 => "PowerPC".into(),
            22 => "s390".into(),
            40 => "32-bit ARM".into(),
            243 => "RISC-V".into(),
            m => format!("ELF machine {m}"),
        },
    }
}

/// The entry point's interpreter (PT_INTERP) and the libraries it names
/// (DT_NEEDED, found as the loader would in the tree) are of its `arch`.
fn check_own(view: &View<'_>, path: &Path, source: &Path, arch: Arch) -> Result<()> {
    let bytes = std::fs::read(source).with_context(|| format!("reading {}", source.display()))?;
    // A file that does not parse is left to the loader: only the header
    // was needed to choose.
    let Ok(elf) = Elf::parse(&bytes) else {
        return Ok(());
    };
    let differs = |what: &str, found: &Path, src: &Path| -> Result<()> {
        match machine(src)? {
            Some(m) if m != arch.elf_machine() => bail!(
                "the entry point {} is an {arch} program, but its {what} {} is {}: the closure mixes architectures \
                 (build it for one)",
                path.display(),
                found.display(),
                machine_name(m)
            ),
            _ => Ok(()),
        }
    };
    if let Some(interp) = elf.interpreter {
        if let Some((found, src)) = view.file(Path::new(interp)) {
            differs("interpreter", &found, &src)?;
        }
    }
    let origin = path.parent().unwrap_or(Path::new("/"));
    let mut dirs: Vec<PathBuf> = elf
        .runpaths
        .iter()
        .chain(&elf.rpaths)
        .flat_map(|s| s.split(':'))
        .filter(|d| !d.is_empty())
        .map(|d| {
            let d = d.replace("${ORIGIN}", "$ORIGIN");
            match d.strip_prefix("$ORIGIN") {
                Some(rest) => PathBuf::from(format!("{}{rest}", origin.display())),
                None => PathBuf::from(d),
            }
        })
        .collect();
    let triple = match arch {
        Arch::X86_64 => "x86_64-linux-gnu",
        Arch::Aarch64 => "aarch64-linux-gnu",
    };
    for d in [
        &format!("/lib/{triple}"),
        &format!("/usr/lib/{triple}"),
        "/lib64",
        "/usr/lib64",
        "/lib",
        "/usr/lib",
    ] {
        dirs.push(PathBuf::from(d));
    }
    for lib in &elf.libraries {
        // The loader skips a library of another machine and searches on:
        // only a name no directory holds in this architecture is wrong.
        let found: Vec<(PathBuf, PathBuf)> = dirs.iter().filter_map(|d| view.file(&d.join(lib))).collect();
        let mut wrong = None;
        for (f, src) in &found {
            match machine(src)? {
                Some(m) if m == arch.elf_machine() => {
                    wrong = None;
                    break;
                }
                _ if wrong.is_none() => wrong = Some((f.clone(), src.clone())),
                _ => {}
            }
        }
        if let Some((f, src)) = wrong {
            differs("library", &f, &src)?;
        }
    }
    Ok(())
}

/// Every ELF file of the tree, with its machine.
struct Census {
    elves: Vec<(Vec<u8>, u16)>,
}

impl Census {
    /// The architecture most of the tree's ELF files are for.
    fn most(&self) -> Option<Arch> {
        Arch::ALL
            .into_iter()
            .map(|a| (self.elves.iter().filter(|(_, m)| *m == a.elf_machine()).count(), a))
            .filter(|(n, _)| *n > 0)
            .max_by_key(|(n, _)| *n)
            .map(|(_, a)| a)
    }
}

fn census(tree: &Tree) -> Result<Census> {
    let mut elves = Vec::new();
    for item in &tree.items {
        if let ItemKind::File { size, source, .. } = &item.kind {
            if *size >= 20 {
                if let Some(m) = elf_machine(&head(source, 20)?) {
                    elves.push((item.path.clone(), m));
                }
            }
        }
    }
    Ok(Census { elves })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shebang_lines_name_their_interpreter() {
        assert_eq!(interpreter(b"#!/bin/sh -e\necho"), Some(PathBuf::from("/bin/sh")));
        assert_eq!(
            interpreter(b"#! /usr/bin/env python3\n"),
            Some(PathBuf::from("/usr/bin/env"))
        );
        assert_eq!(interpreter(b"#!python\n"), None, "not absolute");
        assert_eq!(interpreter(b"\x7fELF"), None);
    }

    #[test]
    fn elf_headers_give_their_machine() {
        let mut h = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0".to_vec();
        h.extend(183u16.to_le_bytes());
        assert_eq!(elf_machine(&h), Some(183));
        h[5] = 2;
        assert_eq!(elf_machine(&h), Some(183u16.swap_bytes()));
        assert_eq!(elf_machine(&h[..19]), None, "too short");
        assert_eq!(machine_name(243), "RISC-V");
        assert_eq!(machine_name(62), "x86_64");
    }
}
