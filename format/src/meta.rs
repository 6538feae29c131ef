//! The metadata section: launch metadata and summary figures, small and
//! uncompressed so that a warm start reads it without touching the index.

use crate::reader::Reader;
use crate::{Arch, FormatError};

/// How one path of the launch view is provided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountKind {
    /// A bundle directory layered over the host's directory of the same
    /// path (read-only overlay; the bundle wins on a name clash). Where the
    /// host has no such directory, the bundle's alone. Nix stores.
    Layer = 1,
    /// A bundle directory, file or symlink in place of whatever the host
    /// has at that path (read-only). Host ELF programs' `/usr`, `/lib64`,
    /// a plain directory's `--mount-at`.
    Replace = 2,
    /// A host path bound into a bundle-provided root; skipped when the
    /// host lacks it. OCI images' `/proc`, `/etc/resolv.conf`.
    Host = 3,
}

impl MountKind {
    /// `layer`, `replace` or `host`, as `tote inspect` and `TOTE_INFO` show it.
    pub fn name(self) -> &'static str {
        match self {
            MountKind::Layer => "layer",
            MountKind::Replace => "replace",
            MountKind::Host => "host",
        }
    }
}

/// How the bundle's files are made available at launch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    /// Extract into the cache (once), then run from there.
    #[default]
    Extract = 1,
    /// Serve the files read-only over FUSE from the bundle itself; nothing
    /// is written to disk. A launch where FUSE is unusable fails.
    Mount = 2,
    /// Mount when the tree is large ([`Mode::AUTO_MOUNT_MIN`]), FUSE is
    /// usable and no complete cache entry exists; otherwise extract.
    Auto = 3,
}

impl Mode {
    /// `auto` mounts trees whose files add up to at least this many bytes
    /// (`Stats::total_size`); smaller ones extract, which costs little once
    /// and then starts in milliseconds.
    pub const AUTO_MOUNT_MIN: u64 = 128 << 20;

    /// `extract`, `mount` or `auto`: the spelling of `--mode` and `TOTE_MODE`.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Extract => "extract",
            Mode::Mount => "mount",
            Mode::Auto => "auto",
        }
    }

    pub fn parse(s: &str) -> Option<Mode> {
        [Mode::Extract, Mode::Mount, Mode::Auto]
            .into_iter()
            .find(|m| m.name() == s)
    }

    /// May a launch of a tree of `total_size` bytes mount it (before asking
    /// whether FUSE is usable)?
    pub fn wants_mount(self, total_size: u64) -> bool {
        match self {
            Mode::Extract => false,
            Mode::Mount => true,
            Mode::Auto => total_size >= Mode::AUTO_MOUNT_MIN,
        }
    }
}

/// One path of the launch view and where its contents come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    pub kind: MountKind,
    /// `Layer`/`Replace`: a path inside the bundle's tree, relative, e.g.
    /// `nix/store`. `Host`: an absolute path on the host.
    pub source: Vec<u8>,
    /// Absolute path where it appears, e.g. `/nix/store`; never `/`.
    pub target: Vec<u8>,
}

impl MountSpec {
    /// A bundle subtree that appears at its own absolute path (`nix/store`
    /// at `/nix/store`).
    pub fn at_own_path(kind: MountKind, target: &[u8]) -> MountSpec {
        MountSpec {
            kind,
            source: target.strip_prefix(b"/").unwrap_or(target).to_vec(),
            target: target.to_vec(),
        }
    }
}

/// How a launch can do without namespaces (version 4; version 3 bundles
/// read as [`Relocation::None`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Relocation {
    /// Only with the namespaces the mounts need.
    #[default]
    None,
    /// A Nix store bundle (one layer mount, the store directory): the
    /// index records every store reference in the data stream, which a
    /// launch without namespaces rewrites to a path of the same length.
    Store {
        /// Tree paths of files that hold store references inside
        /// compressed data (gzip, xz, bzip2, zstd, zip members), which no
        /// rewrite reaches; sorted. Empty: relocation is clean.
        unrewritable: Vec<Vec<u8>>,
    },
    /// A host ELF program: without namespaces it runs through the bundle's
    /// own dynamic loader, with the bundle's library directories.
    Loader {
        /// The loader's absolute path at launch (the program's PT_INTERP);
        /// empty for a static program, which runs from the tree as it is.
        interpreter: Vec<u8>,
        /// Absolute directories holding the bundle's libraries, in the
        /// order the loader should search them.
        library_path: Vec<Vec<u8>>,
    },
}

impl Relocation {
    /// `none`, `store` or `loader`, as `tote inspect` shows it.
    pub fn name(&self) -> &'static str {
        match self {
            Relocation::None => "none",
            Relocation::Store { .. } => "store",
            Relocation::Loader { .. } => "loader",
        }
    }
}

/// Summary figures, recorded at bundle time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Number of index entries (directories, files, symlinks).
    pub entries: u64,
    /// Number of regular files.
    pub files: u64,
    /// Sum of all file sizes: the size of the extracted tree's contents.
    pub total_size: u64,
    /// Bytes of file content after deduplication (the data stream length).
    pub unique_size: u64,
    /// Number of data blocks.
    pub blocks: u64,
}

/// Launch metadata: one model for every input. The launch view is a root
/// (the host's, or a bundle subtree) with paths provided on top of it
/// (`mounts`); then the entry point is executed with `args`, the caller's
/// arguments (or `cmd` when there are none) and the caller's environment
/// with `env` set over it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    /// Display name (the entry point's file name unless set otherwise).
    pub name: String,
    /// Tool and version that wrote the bundle, e.g. `tote 0.1.0`.
    pub creator: String,
    /// Absolute path of the program to exec, as seen at launch. With an
    /// empty `root` and no mounts: relative to the extracted tree.
    pub entrypoint: Vec<u8>,
    /// Arguments inserted before the caller's arguments.
    pub args: Vec<Vec<u8>>,
    /// Arguments used when the caller passes none (an image's `Cmd`).
    pub cmd: Vec<Vec<u8>>,
    /// `KEY=value` pairs set over the caller's environment.
    pub env: Vec<Vec<u8>>,
    /// Working directory at launch; empty: the caller's.
    pub workdir: Vec<u8>,
    /// Empty: the host's root. Otherwise the bundle subtree (relative) that
    /// becomes `/`.
    pub root: Vec<u8>,
    /// What appears where. With an empty `root` and no mounts the program
    /// runs from the cache, without a namespace.
    pub mounts: Vec<MountSpec>,
    /// Extract, mount, or choose at launch.
    pub mode: Mode,
    /// How a launch can do without namespaces (version 4).
    pub relocation: Relocation,
    /// The architecture of the bundle's programs and stub (version 6;
    /// x86-64 before).
    pub arch: Arch,
    pub stats: Stats,
}

impl Meta {
    /// Decode metadata of format `version` (3 to 6).
    pub fn decode(buf: &[u8], version: u32) -> Result<Meta, FormatError> {
        let mut r = Reader::new(buf, "metadata");
        let name = utf8(r.blob()?, "name")?;
        let creator = utf8(r.blob()?, "creator")?;
        let entrypoint = r.blob()?.to_vec();
        let args = blobs(&mut r)?;
        let cmd = blobs(&mut r)?;
        let env = blobs(&mut r)?;
        let workdir = r.blob()?.to_vec();
        let root = r.blob()?.to_vec();
        let nmounts = r.u32()?;
        if nmounts as usize > crate::MAX_MOUNTS {
            return Err(FormatError::Meta(format!(
                "{nmounts} mounts (at most {})",
                crate::MAX_MOUNTS
            )));
        }
        let mut mounts = Vec::new();
        for _ in 0..nmounts {
            let kind = match r.u8()? {
                1 => MountKind::Layer,
                2 => MountKind::Replace,
                3 => MountKind::Host,
                k => return Err(FormatError::Meta(format!("unknown mount kind {k}"))),
            };
            let source = r.blob()?.to_vec();
            let target = r.blob()?.to_vec();
            mounts.push(MountSpec { kind, source, target });
        }
        let mode = match r.u8()? {
            1 => Mode::Extract,
            2 => Mode::Mount,
            3 => Mode::Auto,
            m => return Err(FormatError::Meta(format!("unknown mode {m}"))),
        };
        let relocation = if version >= 4 {
            decode_relocation(&mut r)?
        } else {
            Relocation::None
        };
        let arch = if version >= 6 {
            let m = r.u16()?;
            Arch::from_elf_machine(m)
                .ok_or_else(|| FormatError::Meta(format!("unknown architecture (ELF machine {m})")))?
        } else {
            Arch::X86_64
        };
        let stats = Stats {
            entries: r.u64()?,
            files: r.u64()?,
            total_size: r.u64()?,
            unique_size: r.u64()?,
            blocks: r.u64()?,
        };
        if r.remaining() != 0 {
            return Err(FormatError::Meta(format!(
                "{} unexpected trailing bytes",
                r.remaining()
            )));
        }
        let meta = Meta {
            name,
            creator,
            entrypoint,
            args,
            cmd,
            env,
            workdir,
            root,
            mounts,
            mode,
            relocation,
            arch,
            stats,
        };
        meta.validate()?;
        Ok(meta)
    }

    /// The store directory of a Nix store bundle (`/nix/store`): the
    /// target of its one layer mount.
    pub fn store_dir(&self) -> Option<&[u8]> {
        match (&self.relocation, self.mounts.as_slice()) {
            (Relocation::Store { .. }, [m]) => Some(&m.target),
            _ => None,
        }
    }

    /// Does the launch need a namespace (something appears at an absolute
    /// path), or does the program run straight from the cache?
    pub fn needs_namespace(&self) -> bool {
        !self.root.is_empty() || !self.mounts.is_empty()
    }

    /// The summary figures must be the index's: a bundle whose declared
    /// sizes disagree with its contents is refused. So must its store
    /// references: only a store bundle has them, each inside the stream.
    pub fn check_stats(&self, index: &crate::Index) -> Result<(), FormatError> {
        match self.store_dir() {
            None if !index.refs.is_empty() => {
                return Err(FormatError::Meta(
                    "store references in a bundle that is not a store bundle".into(),
                ))
            }
            Some(dir)
                if index
                    .refs
                    .last()
                    .is_some_and(|&r| r + dir.len() as u64 > index.stream_len()) =>
            {
                return Err(FormatError::Meta(
                    "a store reference lies outside the data stream".into(),
                ))
            }
            _ => {}
        }
        let (m, i) = (&self.stats, index.stats());
        if *m == i {
            return Ok(());
        }
        let what = if m.entries != i.entries || m.files != i.files {
            "entry counts"
        } else if m.total_size != i.total_size || m.unique_size != i.unique_size {
            "content sizes"
        } else {
            "block count"
        };
        Err(FormatError::Meta(format!("its {what} disagree with the index")))
    }

    fn validate(&self) -> Result<(), FormatError> {
        let bad = |what: &str| Err(FormatError::Meta(what.into()));
        if !is_clean_absolute(&self.entrypoint) {
            return bad("entry point is not a clean absolute path");
        }
        for e in &self.env {
            if e.contains(&0) || e.iter().position(|&c| c == b'=').is_none_or(|i| i == 0) {
                return bad("an environment entry is not KEY=value");
            }
        }
        if !self.workdir.is_empty() && (self.root.is_empty() || !is_clean_absolute(&self.workdir)) {
            return bad("working directory is not a clean absolute path inside a bundle root");
        }
        if !self.root.is_empty() && !crate::index::is_clean_relative(&self.root) {
            return bad("root is not a clean relative path");
        }
        for m in &self.mounts {
            let source_ok = match m.kind {
                MountKind::Host => is_clean_absolute(&m.source),
                MountKind::Layer | MountKind::Replace => crate::index::is_clean_relative(&m.source),
            };
            if !source_ok {
                return bad("mount source is not a clean path");
            }
            if !is_clean_absolute(&m.target) || m.target == b"/" {
                return bad("mount target is not a clean absolute path");
            }
            // A host root gets bundle paths on top; a bundle root gets host paths.
            if (m.kind == MountKind::Host) == self.root.is_empty() {
                return bad("mount kind does not fit the root");
            }
        }
        match &self.relocation {
            Relocation::None => {}
            Relocation::Store { unrewritable } => {
                let fits = matches!(self.mounts.as_slice(),
                    [m] if m.kind == MountKind::Layer && m.target.len() >= MIN_STORE_DIR && is_below(&self.entrypoint, &m.target));
                if !fits {
                    return bad("a store relocation needs one layer mount holding the entry point");
                }
                if !unrewritable.iter().all(|p| crate::index::is_clean_relative(p))
                    || unrewritable.windows(2).any(|w| w[0] >= w[1])
                {
                    return bad("unrewritable files are not sorted clean paths");
                }
            }
            Relocation::Loader {
                interpreter,
                library_path,
            } => {
                let interpreter_ok = interpreter.is_empty() || is_clean_absolute(interpreter);
                if !interpreter_ok || !library_path.iter().all(|d| is_clean_absolute(d)) {
                    return bad("loader paths are not clean absolute paths");
                }
            }
        }
        Ok(())
    }

    #[cfg(feature = "write")]
    pub fn encode(&self) -> Vec<u8> {
        use crate::reader::put_blob;
        let mut out = Vec::new();
        put_blob(&mut out, self.name.as_bytes());
        put_blob(&mut out, self.creator.as_bytes());
        put_blob(&mut out, &self.entrypoint);
        for list in [&self.args, &self.cmd, &self.env] {
            put_blobs(&mut out, list);
        }
        put_blob(&mut out, &self.workdir);
        put_blob(&mut out, &self.root);
        out.extend_from_slice(&(self.mounts.len() as u32).to_le_bytes());
        for m in &self.mounts {
            out.push(m.kind as u8);
            put_blob(&mut out, &m.source);
            put_blob(&mut out, &m.target);
        }
        out.push(self.mode as u8);
        match &self.relocation {
            Relocation::None => out.push(0),
            Relocation::Store { unrewritable } => {
                out.push(1);
                put_blobs(&mut out, unrewritable);
            }
            Relocation::Loader {
                interpreter,
                library_path,
            } => {
                out.push(2);
                put_blob(&mut out, interpreter);
                put_blobs(&mut out, library_path);
            }
        }
        out.extend_from_slice(&self.arch.elf_machine().to_le_bytes());
        let s = &self.stats;
        for v in [s.entries, s.files, s.total_size, s.unique_size, s.blocks] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }
}

/// The shortest store directory a relocation can replace: `/tmp/` and two
/// characters.
pub const MIN_STORE_DIR: usize = 7;

fn decode_relocation(r: &mut Reader<'_>) -> Result<Relocation, FormatError> {
    Ok(match r.u8()? {
        0 => Relocation::None,
        1 => Relocation::Store {
            unrewritable: blobs(r)?,
        },
        2 => Relocation::Loader {
            interpreter: r.blob()?.to_vec(),
            library_path: blobs(r)?,
        },
        k => return Err(FormatError::Meta(format!("unknown relocation kind {k}"))),
    })
}

#[cfg(feature = "write")]
fn put_blobs(out: &mut Vec<u8>, list: &[Vec<u8>]) {
    out.extend_from_slice(&(list.len() as u32).to_le_bytes());
    for a in list {
        crate::reader::put_blob(out, a);
    }
}

fn blobs(r: &mut Reader<'_>) -> Result<Vec<Vec<u8>>, FormatError> {
    let n = r.u32()?;
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(r.blob()?.to_vec());
    }
    Ok(out)
}

fn utf8(b: &[u8], what: &str) -> Result<String, FormatError> {
    String::from_utf8(b.to_vec()).map_err(|_| FormatError::Meta(format!("{what} is not UTF-8")))
}

/// `path` is strictly below the directory `dir`.
fn is_below(path: &[u8], dir: &[u8]) -> bool {
    path.starts_with(dir) && path.get(dir.len()) == Some(&b'/')
}

/// `/a/b`: absolute, no empty, `.` or `..` components, no trailing slash.
pub(crate) fn is_clean_absolute(p: &[u8]) -> bool {
    match p.split_first() {
        Some((b'/', rest)) => rest.is_empty() || crate::index::is_clean_relative(rest),
        _ => false,
    }
}

#[cfg(all(test, feature = "write"))]
mod tests {
    use super::*;

    fn sample() -> Meta {
        Meta {
            name: "hello".into(),
            creator: "tote 0.1.0".into(),
            entrypoint: b"/nix/store/abc-hello/bin/hello".to_vec(),
            args: vec![b"--flag".to_vec(), vec![0xff, 0x00]],
            cmd: vec![b"serve".to_vec()],
            env: vec![b"LANG=C.UTF-8".to_vec(), b"EMPTY=".to_vec()],
            workdir: Vec::new(),
            root: Vec::new(),
            mounts: vec![MountSpec::at_own_path(MountKind::Layer, b"/nix/store")],
            mode: Mode::Auto,
            relocation: Relocation::None,
            arch: Arch::X86_64,
            stats: Stats {
                entries: 1,
                files: 2,
                total_size: 3,
                unique_size: 4,
                blocks: 5,
            },
        }
    }

    #[test]
    fn round_trip() {
        assert_eq!(Meta::decode(&sample().encode(), crate::VERSION).unwrap(), sample());
    }

    #[test]
    fn more_mounts_than_a_launch_plans_are_refused() {
        let with = |n: usize| {
            let mut m = sample();
            m.mounts = (0..n)
                .map(|i| MountSpec::at_own_path(MountKind::Replace, format!("/opt/m{i}").as_bytes()))
                .collect();
            Meta::decode(&m.encode(), crate::VERSION)
        };
        assert!(with(crate::MAX_MOUNTS).is_ok());
        let e = with(crate::MAX_MOUNTS + 1).unwrap_err().to_string();
        assert!(e.contains("257 mounts (at most 256)"), "{e}");
    }

    #[test]
    fn every_prefix_is_an_error() {
        let enc = sample().encode();
        for n in 0..enc.len() {
            assert!(Meta::decode(&enc[..n], crate::VERSION).is_err(), "prefix {n}");
        }
    }

    #[test]
    fn unclean_paths_are_refused() {
        for bad in [&b"relative"[..], b"/a/../b", b"/a//b", b"/a/", b""] {
            let mut m = sample();
            m.entrypoint = bad.to_vec();
            assert!(
                Meta::decode(&m.encode(), crate::VERSION).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut m = sample();
        m.mounts[0].target = b"/".to_vec();
        assert!(Meta::decode(&m.encode(), crate::VERSION).is_err());
    }

    #[test]
    fn a_bundle_root_takes_host_mounts_only() {
        let mut m = sample();
        m.root = b"rootfs".to_vec();
        assert!(
            Meta::decode(&m.encode(), crate::VERSION).is_err(),
            "bundle mount on a bundle root"
        );
        m.mounts = vec![MountSpec {
            kind: MountKind::Host,
            source: b"/etc/resolv.conf".to_vec(),
            target: b"/etc/resolv.conf".to_vec(),
        }];
        m.workdir = b"/srv".to_vec();
        assert_eq!(Meta::decode(&m.encode(), crate::VERSION).unwrap(), m);
        m.mounts[0].source = b"etc/resolv.conf".to_vec();
        assert!(Meta::decode(&m.encode(), crate::VERSION).is_err(), "relative host path");
        let mut m = sample();
        m.workdir = b"/srv".to_vec();
        assert!(
            Meta::decode(&m.encode(), crate::VERSION).is_err(),
            "working directory without a bundle root"
        );
    }

    #[test]
    fn modes_round_trip_and_unknown_ones_are_refused() {
        for mode in [Mode::Extract, Mode::Mount, Mode::Auto] {
            let mut m = sample();
            m.mode = mode;
            assert_eq!(Meta::decode(&m.encode(), crate::VERSION).unwrap().mode, mode);
            assert_eq!(Mode::parse(mode.name()), Some(mode));
        }
        let mut enc = sample().encode();
        let at = enc.len() - 5 * 8 - 2 - 2; // mode, the relocation kind (none), the architecture
        assert_eq!(enc[at], Mode::Auto as u8);
        for bad in [0u8, 4, 255] {
            enc[at] = bad;
            let err = Meta::decode(&enc, crate::VERSION).unwrap_err().to_string();
            assert!(err.contains(&format!("unknown mode {bad}")), "{err}");
        }
        assert_eq!(Mode::parse("Mount"), None);
    }

    #[test]
    fn auto_mounts_large_trees_only() {
        assert!(!Mode::Auto.wants_mount(Mode::AUTO_MOUNT_MIN - 1));
        assert!(Mode::Auto.wants_mount(Mode::AUTO_MOUNT_MIN));
        assert!(Mode::Mount.wants_mount(0));
        assert!(!Mode::Extract.wants_mount(u64::MAX));
    }

    #[test]
    fn environment_entries_need_a_name_and_no_nul() {
        for bad in [&b"=x"[..], b"NOEQUALS", b"A=\0"] {
            let mut m = sample();
            m.env = vec![bad.to_vec()];
            assert!(Meta::decode(&m.encode(), crate::VERSION).is_err(), "{bad:?}");
        }
    }

    fn store_bundle() -> Meta {
        Meta {
            relocation: Relocation::Store {
                unrewritable: vec![b"nix/store/abc-x/a.gz".to_vec(), b"nix/store/abc-x/b.jar".to_vec()],
            },
            ..sample()
        }
    }

    #[test]
    fn relocations_round_trip_and_must_fit_the_bundle() {
        let m = store_bundle();
        assert_eq!(Meta::decode(&m.encode(), crate::VERSION).unwrap(), m);
        assert_eq!(m.store_dir(), Some(&b"/nix/store"[..]));
        let loader = Meta {
            relocation: Relocation::Loader {
                interpreter: b"/lib64/ld-linux-x86-64.so.2".to_vec(),
                library_path: vec![b"/usr/lib/x86_64-linux-gnu".to_vec()],
            },
            mounts: vec![MountSpec::at_own_path(MountKind::Replace, b"/usr")],
            ..sample()
        };
        assert_eq!(Meta::decode(&loader.encode(), crate::VERSION).unwrap(), loader);
        assert_eq!(loader.store_dir(), None);
        let refused = |m: Meta| Meta::decode(&m.encode(), crate::VERSION).is_err();
        let mut m = store_bundle();
        m.mounts[0].kind = MountKind::Replace;
        assert!(refused(m), "a store relocation without a layer mount");
        let mut m = store_bundle();
        m.entrypoint = b"/opt/x".to_vec();
        assert!(refused(m), "an entry point outside the store");
        let mut m = store_bundle();
        m.mounts = vec![MountSpec::at_own_path(MountKind::Layer, b"/n/s")];
        m.entrypoint = b"/n/s/abc/x".to_vec();
        assert!(refused(m), "a store directory too short to replace");
        let mut m = store_bundle();
        m.relocation = Relocation::Store {
            unrewritable: vec![b"b".to_vec(), b"a".to_vec()],
        };
        assert!(refused(m), "unsorted");
        let mut m = loader.clone();
        m.relocation = Relocation::Loader {
            interpreter: b"lib64/ld.so".to_vec(),
            library_path: vec![],
        };
        assert!(refused(m), "a relative loader");
        let mut enc = store_bundle().encode();
        let at = sample().encode().len() - 5 * 8 - 2 - 1; // the same fields come before it
        assert_eq!(enc[at], 1);
        enc[at] = 7;
        let err = Meta::decode(&enc, crate::VERSION).unwrap_err().to_string();
        assert!(err.contains("unknown relocation kind 7"), "{err}");
    }

    #[test]
    fn version_3_metadata_has_no_relocation() {
        let mut enc = sample().encode();
        let at = enc.len() - 5 * 8 - 2 - 1;
        assert_eq!(enc[at..at + 3], [0, 62, 0], "relocation kind none, x86-64");
        enc.drain(at..at + 3);
        assert_eq!(Meta::decode(&enc, 3).unwrap(), sample());
        assert!(Meta::decode(&enc, 4).is_err());
    }

    #[test]
    fn the_architecture_round_trips_and_is_x86_64_before_version_6() {
        let mut m = sample();
        m.arch = Arch::Aarch64;
        let mut enc = m.encode();
        assert_eq!(Meta::decode(&enc, crate::VERSION).unwrap(), m);
        let at = enc.len() - 5 * 8 - 2;
        assert_eq!(enc[at..at + 2], 183u16.to_le_bytes());
        enc[at] = 40; // EM_ARM: 32-bit ARM
        let err = Meta::decode(&enc, crate::VERSION).unwrap_err().to_string();
        assert!(err.contains("unknown architecture (ELF machine 40)"), "{err}");
        enc.drain(at..at + 2);
        for v in [4, 5] {
            assert_eq!(Meta::decode(&enc, v).unwrap().arch, Arch::X86_64);
        }
        assert!(Meta::decode(&enc, 6).is_err(), "version 6 requires the field");
    }
}
