//! A host ELF program: its closure found by reading the ELF files (PT_INTERP,
//! DT_NEEDED, RPATH/RUNPATH with `$ORIGIN`, ld.so.conf, the default
//! directories), recursively, plus whatever `--add` names. Files keep their
//! absolute paths; symlinks on the way (`/lib64 -> usr/lib64`) are kept as
//! symlinks. At launch the bundle's `/usr`, `/lib*`, `/bin`, `/sbin` replace
//! the host's and every other path is mounted on its own, so only the
//! bundle's libraries can be loaded; the bundle carries this host's
//! `/etc/ld.so.cache`, which names only paths the bundle provides or hides.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use goblin::elf::{header, program_header, Elf};
use tote_format::{MountKind, MountSpec};

use super::model::{Input, Launch};
use super::paths::{self, bytes, rel};
use super::tree::{Item, ItemKind, TreeBuilder};

/// Top-level directories that are replaced whole at launch.
const SYSTEM: [&str; 7] = ["bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr"];
/// glibc's default search directories (Debian's multiarch first), for the
/// architecture whose multiarch triple is `triple`.
fn default_dirs(triple: &str) -> [PathBuf; 6] {
    [
        PathBuf::from(format!("/lib/{triple}")),
        PathBuf::from(format!("/usr/lib/{triple}")),
        PathBuf::from("/lib64"),
        PathBuf::from("/usr/lib64"),
        PathBuf::from("/lib"),
        PathBuf::from("/usr/lib"),
    ]
}
const LD_SO_CACHE: &str = "/etc/ld.so.cache";

/// The program's closure. With `sysroot`, every path (the program's, each
/// `--add`, what the ELF files name, ld.so.conf, ld.so.cache) is a path
/// inside that directory, as a foreign root (arm64 packages unpacked with
/// `dpkg-deb -x`) sees it.
pub fn resolve(program: &Path, adds: &[PathBuf], entry_given: bool, sysroot: Option<&Path>) -> Result<Input> {
    if entry_given {
        bail!("--entrypoint does not apply to an ELF program: the program named is the entry point");
    }
    let root = match sysroot {
        Some(r) => {
            if !r.is_dir() {
                bail!("--sysroot {}: not a directory", r.display());
            }
            if !program.is_absolute() {
                bail!(
                    "{}: with --sysroot, name the program by its absolute path inside the root (/usr/bin/…)",
                    program.display()
                );
            }
            Some(absolute(r)?)
        }
        None => None,
    };
    let host = |p: &Path| host_path(root.as_deref(), p);
    let program = absolute(program)?;
    let bytes_of_program = fs::read(host(&program)).with_context(|| format!("reading {}", host(&program).display()))?;
    let machine = check_arch(&program, &bytes_of_program)?;
    if fs::metadata(host(&program))?.permissions().mode() & 0o111 == 0 {
        bail!(
            "{} is not executable: chmod +x it, or bundle the directory holding it with --entrypoint",
            program.display()
        );
    }
    let mut c = Collector {
        items: BTreeMap::new(),
        roots: BTreeSet::new(),
        elves: Vec::new(),
        seen_elves: BTreeSet::new(),
        search_conf: ld_so_conf_dirs(&host(Path::new("/etc/ld.so.conf")), root.as_deref()),
        root: root.clone(),
        machine,
        libraries: 0,
        program: PathBuf::new(),
        interpreter: None,
        library_dirs: Vec::new(),
    };
    c.program = c.add(&program, true)?;
    for a in adds {
        let a = absolute(a)?;
        if fs::symlink_metadata(host(&a)).is_err() {
            bail!("--add {}: no such file or directory", a.display());
        }
        c.add(&a, true)?;
    }
    if host(Path::new(LD_SO_CACHE)).is_file() {
        c.add(Path::new(LD_SO_CACHE), true)?;
    }
    // Every ELF file reached needs its own libraries, found as ld.so
    // would; then what glibc dlopens, and in turn what that needs.
    loop {
        while let Some((path, origin)) = c.elves.pop() {
            c.needs(&path, &origin)?;
        }
        c.add_glibc_dlopens()?;
        if c.elves.is_empty() {
            break;
        }
    }

    let mut mounts: BTreeSet<PathBuf> = BTreeSet::new();
    for r in &c.roots {
        let first = r
            .components()
            .nth(1)
            .map(|x| x.as_os_str().to_string_lossy().into_owned());
        match first {
            Some(f) if SYSTEM.contains(&f.as_str()) => mounts.insert(Path::new("/").join(f)),
            _ => mounts.insert(r.clone()),
        };
    }
    // A path inside another mounted path is already provided.
    let mounts: Vec<PathBuf> = mounts
        .iter()
        .filter(|m| !mounts.iter().any(|o| o != *m && m.starts_with(o)))
        .cloned()
        .collect();
    let mut b = TreeBuilder::default();
    for (path, kind) in c.items {
        b.push(Item {
            path: bytes(&rel(&path)),
            kind,
        });
    }
    let tree = b.build()?;
    let name = program
        .file_name()
        .map_or("app".into(), |n| n.to_string_lossy().into_owned());
    let launch = Launch {
        name,
        entrypoint: bytes(&program),
        mounts: mounts
            .iter()
            .map(|m| MountSpec::at_own_path(MountKind::Replace, &bytes(m)))
            .collect(),
        relocation: tote_format::Relocation::Loader {
            interpreter: c.interpreter.as_deref().map(bytes).unwrap_or_default(),
            library_path: c.library_dirs.iter().map(|d| bytes(d)).collect(),
        },
        ..Launch::default()
    };
    Ok(Input {
        tree,
        launch,
        summary: format!("ELF program with {} libraries", c.libraries),
        staging: None,
    })
}

/// `p` made absolute against the working directory and cleaned lexically.
fn absolute(p: &Path) -> Result<PathBuf> {
    if p.is_absolute() {
        return Ok(paths::clean(p));
    }
    let cwd = std::env::current_dir().context("reading the working directory")?;
    Ok(paths::clean(&cwd.join(p)))
}

/// Where logical path `p` (of the root the program sees) is on this host.
fn host_path(root: Option<&Path>, p: &Path) -> PathBuf {
    match root {
        Some(r) => r.join(p.strip_prefix("/").unwrap_or(p)),
        None => p.to_path_buf(),
    }
}

/// The program's ELF machine, where tote bundles for it.
fn check_arch(path: &Path, bytes: &[u8]) -> Result<u16> {
    let h = Elf::parse_header(bytes).map_err(|e| anyhow::anyhow!("{}: not a valid ELF file ({e})", path.display()))?;
    let known = tote_format::Arch::from_elf_machine(h.e_machine).is_some();
    if !known || h.e_ident[header::EI_CLASS] != header::ELFCLASS64 {
        bail!(
            "{} is an ELF file for {} ({}-bit): tote bundles x86_64 and aarch64 programs",
            path.display(),
            header::machine_to_str(h.e_machine),
            if h.e_ident[header::EI_CLASS] == header::ELFCLASS64 {
                64
            } else {
                32
            }
        );
    }
    Ok(h.e_machine)
}

/// Is `path` a 64-bit ELF file of `machine` (what ld.so accepts for this
/// program)?
fn is_compatible_elf(path: &Path, machine: u16) -> bool {
    let mut head = [0u8; 64];
    let ok = fs::File::open(path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head));
    ok.is_ok()
        && Elf::parse_header(&head)
            .is_ok_and(|h| h.e_machine == machine && h.e_ident[header::EI_CLASS] == header::ELFCLASS64)
}

struct Collector {
    items: BTreeMap<PathBuf, ItemKind>,
    /// Paths added explicitly or as libraries (their mounts derive from these).
    roots: BTreeSet<PathBuf>,
    /// ELF files still to read: (real path, `$ORIGIN`).
    elves: Vec<(PathBuf, PathBuf)>,
    seen_elves: BTreeSet<PathBuf>,
    /// ld.so.conf's directories, in order.
    search_conf: Vec<PathBuf>,
    libraries: usize,
    /// The program's real path, and its PT_INTERP (none: static).
    program: PathBuf,
    interpreter: Option<PathBuf>,
    /// Where libraries were found, in the order they were: a launch without
    /// namespaces gives these to the bundle's own loader.
    library_dirs: Vec<PathBuf>,
    /// `--sysroot`: the directory every path is inside (None: `/`).
    root: Option<PathBuf>,
    /// The program's ELF machine: libraries of another are skipped.
    machine: u16,
}

impl Collector {
    fn host(&self, p: &Path) -> PathBuf {
        host_path(self.root.as_deref(), p)
    }

    /// The multiarch triple of the program's machine.
    fn triple(&self) -> &'static str {
        match tote_format::Arch::from_elf_machine(self.machine) {
            Some(tote_format::Arch::Aarch64) => "aarch64-linux-gnu",
            _ => "x86_64-linux-gnu",
        }
    }

    /// `path` with every symlink on the way to it, and (for a directory)
    /// everything below it. Returns the real path.
    fn add(&mut self, path: &Path, root: bool) -> Result<PathBuf> {
        let real = self.chain(path, root)?;
        if root {
            self.roots.insert(real.clone());
        }
        let meta = fs::symlink_metadata(self.host(&real)).with_context(|| format!("reading {}", real.display()))?;
        if meta.is_dir() {
            self.walk(&real)?;
        } else {
            self.file(&real, &meta)?;
        }
        Ok(real)
    }

    /// Record the directories and symlinks on the way to `path`; return
    /// where it really is.
    fn chain(&mut self, path: &Path, root: bool) -> Result<PathBuf> {
        paths::resolve(
            path,
            |next| {
                let meta =
                    fs::symlink_metadata(self.host(next)).with_context(|| format!("reading {}", next.display()))?;
                if !meta.file_type().is_symlink() {
                    if meta.is_dir() {
                        self.items.entry(next.to_path_buf()).or_insert(ItemKind::Dir);
                    }
                    return Ok(None);
                }
                let target =
                    fs::read_link(self.host(next)).with_context(|| format!("reading symlink {}", next.display()))?;
                self.items.insert(
                    next.to_path_buf(),
                    ItemKind::Symlink {
                        target: target.as_os_str().as_bytes().to_vec(),
                    },
                );
                if root {
                    self.roots.insert(next.to_path_buf());
                }
                Ok(Some(target))
            },
            || anyhow::anyhow!("{}: too many levels of symbolic links", path.display()),
        )
    }

    fn walk(&mut self, dir: &Path) -> Result<()> {
        self.items.insert(dir.to_path_buf(), ItemKind::Dir);
        let mut names: Vec<std::ffi::OsString> = fs::read_dir(self.host(dir))
            .with_context(|| format!("listing {}", dir.display()))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .with_context(|| format!("listing {}", dir.display()))?;
        names.sort();
        for n in names {
            let p = dir.join(&n);
            let meta = fs::symlink_metadata(self.host(&p)).with_context(|| format!("reading {}", p.display()))?;
            if meta.file_type().is_symlink() {
                let target =
                    fs::read_link(self.host(&p)).with_context(|| format!("reading symlink {}", p.display()))?;
                self.items.insert(
                    p.clone(),
                    ItemKind::Symlink {
                        target: target.as_os_str().as_bytes().to_vec(),
                    },
                );
                // What it points at comes along (certificates, alternatives);
                // a dangling link stays as it is on the host.
                let to = dir.join(&target);
                if self.host(&to).exists() && !self.items.contains_key(&absolute(&to)?) {
                    self.add(&to, !to.starts_with(dir))?;
                }
            } else if meta.is_dir() {
                self.walk(&p)?;
            } else {
                self.file(&p, &meta)?;
            }
        }
        Ok(())
    }

    fn file(&mut self, path: &Path, meta: &fs::Metadata) -> Result<()> {
        if !meta.is_file() {
            bail!(
                "{}: unsupported file type (only directories, regular files and symlinks can be bundled)",
                path.display()
            );
        }
        self.items.insert(
            path.to_path_buf(),
            ItemKind::File {
                executable: meta.permissions().mode() & 0o111 != 0,
                size: meta.len(),
                source: self.host(path),
            },
        );
        if is_compatible_elf(&self.host(path), self.machine) && self.seen_elves.insert(path.to_path_buf()) {
            let origin = path.parent().unwrap_or(Path::new("/")).to_path_buf();
            self.elves.push((path.to_path_buf(), origin));
        }
        Ok(())
    }

    /// The interpreter and libraries `path` needs, found the way ld.so finds them.
    fn needs(&mut self, path: &Path, origin: &Path) -> Result<()> {
        let data = fs::read(self.host(path)).with_context(|| format!("reading {}", path.display()))?;
        let elf = Elf::parse(&data).map_err(|e| anyhow::anyhow!("{}: not a valid ELF file ({e})", path.display()))?;
        if let Some(interp) = elf
            .program_headers
            .iter()
            .find(|p| p.p_type == program_header::PT_INTERP)
        {
            let raw = data
                .get(interp.p_offset as usize..(interp.p_offset + interp.p_filesz) as usize)
                .with_context(|| format!("{}: PT_INTERP out of bounds", path.display()))?;
            let interp = Path::new(OsStr::from_bytes(raw.split(|&c| c == 0).next().unwrap_or(raw)));
            if fs::metadata(self.host(interp)).is_err() {
                bail!(
                    "{}: its interpreter {} does not exist",
                    path.display(),
                    interp.display()
                );
            }
            if path == self.program {
                self.interpreter = Some(interp.to_path_buf());
            }
            if !self.items.contains_key(interp) {
                self.libraries += 1;
                self.add(interp, true)?;
            }
        }
        let expand = |list: &[&str]| -> Vec<PathBuf> {
            list.iter()
                .flat_map(|l| l.split(':'))
                .filter(|d| !d.is_empty())
                .flat_map(|d| {
                    let o = origin.to_string_lossy();
                    let d = d
                        .replace("$ORIGIN", &o)
                        .replace("${ORIGIN}", &o)
                        .replace("$PLATFORM", self.triple().split('-').next().unwrap_or_default());
                    [format!("lib/{}", self.triple()).as_str(), "lib64"]
                        .iter()
                        .map(|lib| PathBuf::from(d.replace("$LIB", lib).replace("${LIB}", lib)))
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        // RPATH counts only where there is no RUNPATH (ld.so's rule).
        let rpath = if elf.runpaths.is_empty() {
            expand(&elf.rpaths)
        } else {
            Vec::new()
        };
        let runpath = expand(&elf.runpaths);
        let defaults = default_dirs(self.triple());
        for lib in &elf.libraries {
            let found = if lib.contains('/') {
                Some(origin.join(lib)).filter(|p| self.host(p).is_file())
            } else {
                rpath
                    .iter()
                    .chain(&runpath)
                    .chain(&self.search_conf)
                    .chain(&defaults)
                    .map(|d| d.join(lib))
                    .find(|p| is_compatible_elf(&self.host(p), self.machine))
            };
            let Some(found) = found else {
                bail!(
                    "{} needs {lib}, which is not in its RPATH/RUNPATH, ld.so.conf or the default directories: add the directory holding it with --add",
                    path.display()
                );
            };
            self.add_library(&found)?;
        }
        Ok(())
    }
}

impl Collector {
    /// Where the closure holds glibc (a `libc.so.6`), add the library
    /// glibc itself dlopens, as ld.so would find it from libc's
    /// directory: `libgcc_s.so.1`, without which a thread's exit or
    /// cancellation aborts ("libgcc_s.so.1 must be installed for
    /// pthread_exit to work"); no DT_NEEDED names it (Nix's glibc carries
    /// it for this). Absent on the host: left out, as there.
    fn add_glibc_dlopens(&mut self) -> Result<()> {
        let libc_dirs: Vec<PathBuf> = self
            .items
            .keys()
            .filter(|p| p.file_name() == Some(OsStr::new("libc.so.6")))
            .filter_map(|p| p.parent().map(Path::to_path_buf))
            .collect();
        if libc_dirs.is_empty() {
            return Ok(());
        }
        let found = libc_dirs
            .iter()
            .chain(&self.library_dirs)
            .chain(&self.search_conf)
            .chain(&default_dirs(self.triple()))
            .map(|d| d.join("libgcc_s.so.1"))
            .find(|p| is_compatible_elf(&self.host(p), self.machine));
        match found {
            Some(found) => self.add_library(&found),
            None => Ok(()),
        }
    }

    /// The library at `found`, unless it is already in, and its directory
    /// as the loader will search it: the real path (`$ORIGIN/../lib` and
    /// symlinked directories resolved).
    fn add_library(&mut self, found: &Path) -> Result<()> {
        let dir = found.parent().and_then(|d| self.real_dir(d));
        if let Some(dir) = dir.filter(|d| !self.library_dirs.contains(d)) {
            self.library_dirs.push(dir);
        }
        if !self.items.contains_key(found) {
            self.libraries += 1;
            self.add(found, true)?;
        }
        Ok(())
    }

    /// A directory's real path as the loader will search it, in the root
    /// the program sees (its symlinks resolved inside that root).
    fn real_dir(&self, dir: &Path) -> Option<PathBuf> {
        match &self.root {
            None => fs::canonicalize(dir).ok(),
            Some(_) => paths::resolve(
                dir,
                |next| {
                    let meta = fs::symlink_metadata(self.host(next)).map_err(|_| ())?;
                    if meta.file_type().is_symlink() {
                        fs::read_link(self.host(next)).map(Some).map_err(|_| ())
                    } else {
                        Ok(None)
                    }
                },
                || (),
            )
            .ok(),
        }
    }
}

/// The directories `/etc/ld.so.conf` names, following `include` globs (an
/// absolute one inside `root`, where there is one).
fn ld_so_conf_dirs(conf: &Path, root: Option<&Path>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    read_conf(conf, root, &mut out, 0);
    out
}

fn read_conf(conf: &Path, root: Option<&Path>, out: &mut Vec<PathBuf>, depth: u32) {
    let Ok(text) = fs::read_to_string(conf) else {
        return;
    };
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if let Some(pattern) = line.strip_prefix("include").map(str::trim) {
            if depth < 8 {
                let pattern = if Path::new(pattern).is_absolute() {
                    host_path(root, Path::new(pattern))
                } else {
                    conf.parent().unwrap_or(Path::new("/")).join(pattern)
                };
                for f in glob_last(&pattern) {
                    read_conf(&f, root, out, depth + 1);
                }
            }
        } else if line.starts_with('/') {
            out.push(PathBuf::from(line));
        }
    }
}

/// Files matching `dir/prefix*suffix` (a `*` in the last component only,
/// which is what ld.so.conf files use), sorted.
fn glob_last(pattern: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (pattern.parent(), pattern.file_name().and_then(OsStr::to_str)) else {
        return Vec::new();
    };
    let Some((pre, suf)) = name.split_once('*') else {
        return vec![pattern.to_path_buf()];
    };
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.len() >= pre.len() + suf.len() && n.starts_with(pre) && n.ends_with(suf)
        })
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ld_so_conf_includes_are_followed() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir(t.path().join("d")).unwrap();
        fs::write(t.path().join("ld.so.conf"), "include d/*.conf\n/opt/top # comment\n").unwrap();
        fs::write(t.path().join("d/b.conf"), "/opt/b\n").unwrap();
        fs::write(t.path().join("d/a.conf"), "# only a comment\n/opt/a\n").unwrap();
        fs::write(t.path().join("d/skip.txt"), "/opt/no\n").unwrap();
        assert_eq!(
            ld_so_conf_dirs(&t.path().join("ld.so.conf"), None),
            [
                PathBuf::from("/opt/a"),
                PathBuf::from("/opt/b"),
                PathBuf::from("/opt/top")
            ]
        );
    }

    #[test]
    fn paths_are_cleaned() {
        assert_eq!(
            absolute(Path::new("/usr/bin/../lib/./x")).unwrap(),
            PathBuf::from("/usr/lib/x")
        );
    }
}
