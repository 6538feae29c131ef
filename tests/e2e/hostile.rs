//! Hostile bundles that pass every hash check: internally consistent, every
//! block and section hashed right, but made to hurt whatever trusts them.
//! Each is crafted with the format crate's writer (`Craft`), then run
//! through every `tote` command and through the stub in each way it
//! launches, as uid 65534; each run's exit code, its one line, what it left
//! and where, its peak memory and its time are checked (docs/security.md,
//! "Hostile bundles").

use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use tote_format::{
    encode_block, sha256, BlockRef, Codec, Digest32, Entry, EntryKind, Index, Meta, Mode, MountKind, MountSpec,
    Relocation, Sections,
};

use crate::support::*;

/// What every command and launch stays within for a hostile bundle under
/// 16 MB: 10 s on this 2-core machine for a release build (the tests run
/// `tote` as built for them, without optimization: three times that), and
/// 512 MiB of peak resident memory.
const SECONDS: f64 = if cfg!(debug_assertions) { 30.0 } else { 10.0 };
const RSS_KIB: u64 = 512 * 1024;

pub const STORE: &str = "nix/store/00000000000000000000000000000000-hostile";

/// A bundle made by hand: a tree, its contents cut into blocks (each a
/// zstd frame with its true SHA-256), metadata that agrees with it. What
/// makes one hostile is done to its parts before they are put together.
pub struct Craft {
    pub entries: Vec<Entry>,
    stream: Vec<u8>,
    pub block: usize,
    pub meta: Meta,
}

impl Craft {
    /// Nothing yet: an empty tree, metadata to fill in.
    pub fn empty() -> Craft {
        Craft {
            entries: Vec::new(),
            stream: Vec::new(),
            block: 1 << 20,
            meta: Meta {
                name: "hostile".into(),
                creator: "hostile test".into(),
                args: vec![b"echo".to_vec(), b"a hostile bundle ran".to_vec()],
                mode: Mode::Extract,
                ..Meta::default()
            },
        }
    }

    /// A store bundle whose entry point, a static busybox, prints "a
    /// hostile bundle ran".
    pub fn new() -> Craft {
        let mut c = Craft::empty();
        c.meta.entrypoint = format!("/{STORE}/bin/busybox").into_bytes();
        c.meta.mounts = vec![MountSpec::at_own_path(MountKind::Layer, b"/nix/store")];
        c.meta.relocation = Relocation::Store { unrewritable: vec![] };
        for d in ["nix", "nix/store", STORE, &format!("{STORE}/bin")] {
            c.dir(d);
        }
        c.file(&format!("{STORE}/bin/busybox"), &busybox(), true);
        c
    }

    pub fn dir(&mut self, p: &str) -> &mut Self {
        self.entries.push(Entry {
            path: p.as_bytes().to_vec(),
            kind: EntryKind::Dir,
        });
        self
    }

    /// A file whose bytes follow in the stream, declared with their hash.
    pub fn file(&mut self, p: &str, bytes: &[u8], executable: bool) -> &mut Self {
        self.entries.push(Entry {
            path: p.as_bytes().to_vec(),
            kind: EntryKind::File {
                executable,
                size: bytes.len() as u64,
                offset: self.stream.len() as u64,
                hash: sha256(bytes),
            },
        });
        self.stream.extend_from_slice(bytes);
        self
    }

    pub fn link(&mut self, p: &str, target: &[u8]) -> &mut Self {
        self.entries.push(Entry {
            path: p.as_bytes().to_vec(),
            kind: EntryKind::Symlink {
                target: target.to_vec(),
            },
        });
        self
    }

    /// The file at `p` declared with `hash` instead of its own.
    pub fn declare(&mut self, p: &str, declared: Digest32) -> &mut Self {
        for e in &mut self.entries {
            if e.path == p.as_bytes() {
                if let EntryKind::File { hash, .. } = &mut e.kind {
                    *hash = declared;
                }
            }
        }
        self
    }

    /// The whole bundle, after `stub`.
    pub fn bytes(&self, stub: &[u8]) -> Vec<u8> {
        let (data, blocks) = self.blocks();
        self.around(stub, &data, blocks)
    }

    /// The stream cut into blocks, each a zstd frame with its true SHA-256:
    /// the data section and its block table.
    pub fn blocks(&self) -> (Vec<u8>, Vec<BlockRef>) {
        let (mut data, mut blocks) = (Vec::new(), Vec::new());
        for (n, raw) in self.stream.chunks(self.block).enumerate() {
            let e = encode_block(raw, 3, None).unwrap();
            blocks.push(BlockRef {
                codec: e.codec,
                ..BlockRef::zstd(
                    data.len() as u64,
                    e.bytes.len() as u32,
                    (n * self.block) as u64,
                    raw.len() as u32,
                    e.hash,
                )
            });
            data.extend_from_slice(&e.bytes);
        }
        (data, blocks)
    }

    /// The bundle of this tree over `data` cut into `blocks`, with metadata
    /// that agrees with them, after `stub`.
    pub fn around(&self, stub: &[u8], data: &[u8], blocks: Vec<BlockRef>) -> Vec<u8> {
        let mut entries = self.entries.clone();
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        let index = Index {
            blocks,
            entries,
            refs: vec![],
        };
        let mut meta = self.meta.clone();
        meta.stats = index.stats();
        assemble(stub, data, &meta, &index.encode())
    }
}

fn busybox() -> Vec<u8> {
    fs::read("/bin/busybox").unwrap()
}

/// A bundle around `index_raw` (encoded by hand where the writer can't).
pub fn assemble(stub: &[u8], data: &[u8], meta: &Meta, index_raw: &[u8]) -> Vec<u8> {
    let s = Sections::encode_raw(meta, index_raw, stub.len() as u64, data.len() as u64, 3).unwrap();
    [stub, data, &s.meta, &s.index, &s.trailer.encode()].concat()
}

/// The stub of the fixtures' bundles.
pub fn stub() -> Vec<u8> {
    let f = fixture();
    fs::read(&f.probe).unwrap()[..stub_len(&f.probe) as usize].to_vec()
}

/// Write `bytes` as an executable bundle at `path`.
pub fn write_bundle(path: &Path, bytes: &[u8]) {
    fs::write(path, bytes).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// One run, measured.
#[derive(Debug)]
struct Run {
    what: String,
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: String,
    secs: f64,
    rss_kib: u64,
}

/// Where the runs of one test work: a directory uid 65534 may write in.
struct Work {
    t: TestDir,
    n: std::cell::Cell<usize>,
}

impl Work {
    fn new() -> Work {
        Work::in_dir(TestDir::new())
    }

    /// On a tmpfs of its own (unmounted when the test is done): for trees
    /// of half a million entries, which a disk takes minutes to write and
    /// delete.
    fn on_tmpfs() -> Work {
        let t = TestDir::new();
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "mode=0755,size=8g,nr_inodes=0", "tote-hostile"])
            .arg(t.path())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        Work::in_dir(t)
    }

    fn in_dir(t: TestDir) -> Work {
        let w = t.join("work");
        fs::create_dir(&w).unwrap();
        std::os::unix::fs::chown(&w, Some(NOBODY), Some(NOBODY)).unwrap();
        Work {
            t,
            n: std::cell::Cell::new(0),
        }
    }

    /// A new path in the work directory (not made).
    fn fresh(&self, what: &str) -> PathBuf {
        self.n.set(self.n.get() + 1);
        self.t.join("work").join(format!("{what}-{}", self.n.get()))
    }

    /// Run `argv` as uid 65534 (after `prefix`, run as root), with `env`,
    /// under /usr/bin/time.
    fn run(&self, what: &str, prefix: &[&str], argv: &[&OsStr], env: &[(&str, &OsStr)]) -> Run {
        let times = self.fresh("time");
        let mut c = Command::new(prefix.first().copied().unwrap_or("/usr/bin/time"));
        if !prefix.is_empty() {
            c.args(&prefix[1..]).arg("/usr/bin/time");
        }
        c.args(["-f", "%e %M", "-o"])
            .arg(&times)
            .args([
                "setpriv",
                "--reuid",
                "65534",
                "--regid",
                "65534",
                "--clear-groups",
                "--",
            ])
            .args(argv)
            .current_dir(self.t.join("work"))
            .env("HOME", "/nonexistent")
            .env("TOTE_CACHE_DIR", self.cache())
            .env_remove("TOTE_DEBUG")
            .env_remove("TOTE_NAMESPACE")
            .stdin(Stdio::null());
        for (k, v) in env {
            c.env(k, v);
        }
        let o = c.output().unwrap();
        let t = fs::read_to_string(&times).unwrap_or_default();
        let last = t.lines().last().unwrap_or("0 0").to_string();
        let mut f = last.split_whitespace();
        let secs = f.next().and_then(|s| s.parse().ok()).unwrap_or(0.0);
        let rss_kib = f.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        Run {
            what: what.to_string(),
            code: o.status.code(),
            stdout: o.stdout,
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            secs,
            rss_kib,
        }
    }

    /// The cache root of 65534's launches.
    fn cache(&self) -> PathBuf {
        let c = self.t.join("cache");
        if !c.exists() {
            fs::create_dir(&c).unwrap();
            fs::set_permissions(&c, fs::Permissions::from_mode(0o700)).unwrap();
            std::os::unix::fs::chown(&c, Some(NOBODY), Some(NOBODY)).unwrap();
        }
        c
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        // A tmpfs of `on_tmpfs`: its contents go with it.
        let p = self.t.path().to_str().unwrap().to_string();
        if fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .contains(&format!(" {p} "))
        {
            let _ = Command::new("umount").arg("-l").arg(&p).status();
        }
    }
}

/// Makes /dev/fuse usable by uid 65534, in a private mount namespace.
const FUSE_FOR_ALL: &[&str] = &[
    "unshare",
    "-m",
    "--propagation",
    "private",
    "sh",
    "-c",
    "mount -t tmpfs -o mode=0755 tote-fuse /mnt && mknod -m 0666 /mnt/fuse c 10 229 && mount --bind /mnt/fuse \
     /dev/fuse && exec \"$@\"",
    "sh",
];

/// Every command and every way of launching, on `bundle` (`control`: a
/// sound bundle to diff it with). Each run is within the time and memory
/// targets; `check` judges it.
fn every_way(w: &Work, bundle: &Path, control: &Path, check: &dyn Fn(&Run)) -> Vec<Run> {
    let tote = env!("CARGO_BIN_EXE_tote");
    let b = bundle.as_os_str();
    let out = |what: &str| w.fresh(what).into_os_string();
    let (ex, im, te) = (out("extract"), out("image.tar"), out("tote-extract"));
    let runs = vec![
        w.run("tote verify", &[], &[tote.as_ref(), "verify".as_ref(), b], &[]),
        w.run("tote ls", &[], &[tote.as_ref(), "ls".as_ref(), b], &[]),
        w.run("tote inspect", &[], &[tote.as_ref(), "inspect".as_ref(), b], &[]),
        w.run(
            "tote inspect --json",
            &[],
            &[tote.as_ref(), "inspect".as_ref(), "--json".as_ref(), b],
            &[],
        ),
        w.run(
            "tote diff",
            &[],
            &[tote.as_ref(), "diff".as_ref(), control.as_os_str(), b],
            &[],
        ),
        w.run("tote extract", &[], &[tote.as_ref(), "extract".as_ref(), b, &ex], &[]),
        w.run(
            "tote image",
            &[],
            &[tote.as_ref(), "image".as_ref(), b, "-o".as_ref(), &im],
            &[("TMPDIR", w.t.join("work").as_os_str())],
        ),
        w.run("launch (extract)", &[], &[b], &[("TOTE_MODE", "extract".as_ref())]),
        w.run("TOTE_EXTRACT", &[], &[b], &[("TOTE_EXTRACT", &te)]),
        w.run("launch (mount)", FUSE_FOR_ALL, &[b], &[("TOTE_MODE", "mount".as_ref())]),
        w.run(
            "launch (relocated)",
            &[],
            &[b],
            &[("TOTE_NAMESPACE", "never".as_ref()), ("TOTE_MODE", "extract".as_ref())],
        ),
    ];
    for r in &runs {
        assert!(r.secs <= SECONDS, "{}: {} s", r.what, r.secs);
        assert!(r.rss_kib <= RSS_KIB, "{}: peak {} KiB", r.what, r.rss_kib);
        check(r);
    }
    runs
}

/// A run that refused the bundle: one `tote:` line that holds `needle`,
/// exit 1 (`tote`) or 114 (the stub), nothing run.
fn refused(needle: &'static str) -> impl Fn(&Run) {
    move |r: &Run| {
        let want = if r.what.starts_with("tote ") { 1 } else { 114 };
        assert_eq!(r.code, Some(want), "{}: {}", r.what, r.stderr);
        assert_eq!(r.stderr.lines().count(), 1, "{}: {}", r.what, r.stderr);
        assert!(r.stderr.starts_with("tote: "), "{}: {}", r.what, r.stderr);
        assert!(
            r.stderr.contains(needle),
            "{}: {} (wanted {needle:?})",
            r.what,
            r.stderr
        );
        assert!(
            !String::from_utf8_lossy(&r.stdout).contains("a hostile bundle ran"),
            "{}: it ran",
            r.what
        );
    }
}

/// Nothing left where the runs worked but their own outputs: no staging,
/// no temporary files, no cache entry.
fn left_nothing(w: &Work) {
    let mut left: Vec<String> = fs::read_dir(w.t.join("work"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("time-"))
        .collect();
    left.sort();
    assert!(left.is_empty(), "left in the work directory: {left:?}");
    let cache: Vec<String> = fs::read_dir(w.cache())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "objects" && n != "mnt")
        .collect();
    assert!(cache.is_empty(), "left in the cache: {cache:?}");
}

/// A sound bundle of the crafting tool, as the control.
fn control(w: &Work, stub: &[u8]) -> PathBuf {
    let p = w.t.join("control");
    write_bundle(&p, &Craft::new().bytes(stub));
    p
}

#[test]
fn the_control_runs_every_way() {
    let w = Work::new();
    let stub = stub();
    let c = control(&w, &stub);
    every_way(&w, &c, &c, &|r| {
        assert_eq!(r.code, Some(0), "{}: {}", r.what, r.stderr);
        if r.what.starts_with("launch") {
            assert_eq!(r.stdout, b"a hostile bundle ran\n", "{}", r.what);
        }
    });
}

#[test]
fn claims_past_what_the_file_holds_are_refused_fast_and_small() {
    let w = Work::new();
    let stub = stub();
    let c = control(&w, &stub);
    let with_blocks = |zeros: u32, frames: usize, files: Vec<(String, u64, u64)>| {
        // `frames` copies of one frame of `zeros` zero bytes, after the
        // sound blocks; `files` point into that stretch.
        let mut craft = Craft::new();
        craft.block = 16 << 20;
        let (mut data, mut blocks) = craft.blocks();
        let start = craft.stream.len() as u64;
        let zero = encode_block(&vec![0u8; zeros as usize], 19, None).unwrap();
        assert_eq!(zero.codec, Codec::Zstd);
        for n in 0..frames {
            blocks.push(BlockRef::zstd(
                data.len() as u64,
                zero.bytes.len() as u32,
                start + n as u64 * u64::from(zeros),
                zeros,
                zero.hash,
            ));
            data.extend_from_slice(&zero.bytes);
        }
        for (p, size, at) in files {
            craft.entries.push(Entry {
                path: p.into_bytes(),
                kind: EntryKind::File {
                    executable: false,
                    size,
                    offset: start + at,
                    hash: sha256(b""),
                },
            });
        }
        craft.around(&stub, &data, blocks)
    };
    let mib16 = 16u32 << 20;
    let cases: Vec<(&str, Vec<u8>, &'static str)> = vec![
        (
            "64 GiB of blocks",
            with_blocks(mib16, 4096, vec![(format!("{STORE}/big"), 64 << 30, 0)]),
            "its blocks decode to",
        ),
        (
            "8 TiB of files over one block",
            with_blocks(
                mib16,
                1,
                (0..500_000)
                    .map(|i| (format!("{STORE}/f{i:07}"), u64::from(mib16), 0))
                    .collect(),
            ),
            "its files total",
        ),
    ];
    let mut many = Craft::new();
    for i in 0..(tote_format::MAX_ENTRIES + 1) {
        many.dir(&format!("{STORE}/d{i:07}"));
    }
    let mut cases = cases;
    cases.push((
        "one entry past the limit",
        many.bytes(&stub),
        "entries (at most 524288)",
    ));
    for (what, bytes, needle) in cases {
        assert!(bytes.len() < 16 << 20, "{what}: {} bytes", bytes.len());
        let b = w.t.join("case");
        write_bundle(&b, &bytes);
        eprintln!("{what}: {} bytes", bytes.len());
        every_way(&w, &b, &c, &refused(needle));
        left_nothing(&w);
    }
}

#[test]
fn names_and_strings_reach_a_terminal_escaped_and_json_exact() {
    let w = Work::new();
    let stub = stub();
    let evil = "\u{1b}]0;owned\u{7}\u{1b}[2K\rtote: fake line\n\u{202e}txt.exe";
    let mut c = Craft::new();
    c.meta.name = evil.into();
    c.meta.env = vec![format!("EVIL={evil}").into_bytes()];
    c.meta.args.push(evil.as_bytes().to_vec());
    c.file(&format!("{STORE}/bin/{evil}"), b"x", false);
    c.link(&format!("{STORE}/bin/l"), evil.as_bytes());
    let b = w.t.join("case");
    write_bundle(&b, &c.bytes(&stub));
    let ctl = control(&w, &stub);
    let clean = |what: &str, bytes: &[u8]| {
        let text = String::from_utf8_lossy(bytes);
        assert!(
            !text
                .chars()
                .any(|ch| (ch.is_control() && ch != '\n') || ('\u{202a}'..='\u{202e}').contains(&ch)),
            "{what}: raw control characters: {text:?}"
        );
        assert!(text.contains("\\u{1b}"), "{what}: {text:?}");
    };
    let tote = env!("CARGO_BIN_EXE_tote");
    for (what, args) in [
        ("tote ls", vec!["ls"]),
        ("tote inspect", vec!["inspect"]),
        ("tote diff", vec!["diff", ctl.to_str().unwrap()]),
    ] {
        let mut a: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        a.push(b.as_os_str());
        let r = w.run(what, &[], &[&[OsStr::new(tote)], &a[..]].concat(), &[]);
        assert_eq!(r.code, Some(0), "{what}: {}", r.stderr);
        clean(what, &r.stdout);
    }
    let r = w.run("TOTE_INFO", &[], &[b.as_os_str()], &[("TOTE_INFO", "1".as_ref())]);
    clean("TOTE_INFO", &r.stdout);
    // An error that names the bundle's file: one line, escaped.
    let mut bad = Craft::new();
    bad.file(&format!("{STORE}/{evil}"), b"real", false)
        .declare(&format!("{STORE}/{evil}"), sha256(b"declared"));
    let bb = w.t.join("bad");
    write_bundle(&bb, &bad.bytes(&stub));
    let r = w.run(
        "tote extract",
        &[],
        &[
            tote.as_ref(),
            "extract".as_ref(),
            bb.as_os_str(),
            w.fresh("x").as_os_str(),
        ],
        &[],
    );
    assert_eq!(r.code, Some(1));
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    clean("tote extract's error", r.stderr.as_bytes());
    let r = w.run("launch", &[], &[bb.as_os_str()], &[]);
    assert_eq!(r.code, Some(114), "{}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    clean("the stub's error", r.stderr.as_bytes());
    // JSON keeps every byte, escaped its own way.
    let j: serde_json::Value = serde_json::from_slice(
        &Command::new(tote)
            .args(["inspect", "--json"])
            .arg(&b)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(j["name"], evil);
    assert_eq!(j["env"][0], format!("EVIL={evil}"));
}

#[test]
fn the_bundles_environment_never_sets_how_it_is_launched() {
    let w = Work::new();
    let stub = stub();
    let mut c = Craft::new();
    c.meta.env = vec![
        b"TOTE_NAMESPACE=never".to_vec(),
        b"TOTE_VERIFY=1".to_vec(),
        b"TOTE_DEBUG=".to_vec(),
    ];
    c.meta.entrypoint = format!("/{STORE}/bin/busybox").into_bytes();
    c.meta.args = vec![b"sh".to_vec(), b"-c".to_vec(), b"echo \"$TOTE_NAMESPACE\"".to_vec()];
    let b = w.t.join("case");
    write_bundle(&b, &c.bytes(&stub));
    for _ in 0..2 {
        let r = w.run("launch", &[], &[b.as_os_str()], &[("TOTE_DEBUG", "1".as_ref())]);
        assert_eq!(r.code, Some(0), "{}", r.stderr);
        // The program gets the bundle's environment; the launch was
        // namespaced (planned, not relocated) and no full check of the warm
        // entry was made: the caller asked for neither.
        assert_eq!(r.stdout, b"never\n");
        assert!(r.stderr.contains("planned "), "{}", r.stderr);
        assert!(
            !r.stderr.contains("TOTE_VERIFY") && !r.stderr.contains("launching relocated"),
            "{}",
            r.stderr
        );
    }
}

#[test]
fn a_file_that_lies_about_its_hash_never_reaches_the_shared_object_store() {
    let w = Work::new();
    let stub = stub();
    let victim = b"#!/bin/sh\necho the honest program\n";
    let mut liar = Craft::new();
    liar.file(&format!("{STORE}/bin/payload"), b"#!/bin/sh\necho pwned\n", true)
        .declare(&format!("{STORE}/bin/payload"), sha256(victim));
    let l = w.t.join("liar");
    write_bundle(&l, &liar.bytes(&stub));
    let mut honest = Craft::new();
    honest.meta.name = "honest".into();
    honest.meta.args = vec![b"sh".to_vec(), format!("/{STORE}/bin/payload").into_bytes()];
    honest.file(&format!("{STORE}/bin/payload"), victim, true);
    let h = w.t.join("honest");
    write_bundle(&h, &honest.bytes(&stub));
    let objects = w.cache().join("objects");
    let name = sha256(victim).to_hex();
    for (what, namespace) in [("extract", "auto"), ("relocated", "never")] {
        let tmp_before = short_paths();
        let env = [
            ("TOTE_MODE", OsStr::new("extract")),
            ("TOTE_NAMESPACE", OsStr::new(namespace)),
        ];
        let r = w.run(&format!("launch ({what})"), &[], &[l.as_os_str()], &env);
        refused("content does not match its SHA-256")(&r);
        assert!(
            !objects.join(&name).exists() && !objects.join(format!("{name}x")).exists(),
            "{what}: published"
        );
        assert_eq!(short_paths(), tmp_before, "{what}: a short path left behind");
    }
    let r = w.run("the honest bundle", &[], &[h.as_os_str()], &[]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(r.stdout, b"the honest program\n");
}

/// The short paths in /tmp now.
fn short_paths() -> Vec<OsString> {
    let mut v: Vec<OsString> = fs::read_dir("/tmp")
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.len() == 5)
        .collect();
    v.sort();
    v
}

/// A poisoned object (as a stub that did not check content could leave
/// one): `tote cache verify` finds it and `--repair` removes it; a launch
/// with TOTE_VERIFY=1 that linked it puts right what it names.
#[test]
fn a_poisoned_object_is_found_and_removed() {
    let w = Work::new();
    let stub = stub();
    let mut c = Craft::new();
    c.file(&format!("{STORE}/bin/payload"), b"#!/bin/sh\necho honest\n", true);
    let b = w.t.join("case");
    write_bundle(&b, &c.bytes(&stub));
    let r = w.run("cold", &[], &[b.as_os_str()], &[]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let objects = w.cache().join("objects");
    let name = format!("{}x", sha256(b"#!/bin/sh\necho honest\n").to_hex());
    let object = objects.join(&name);
    assert!(object.exists(), "published");
    // Poisoned in place (every entry that links it sees it).
    fs::set_permissions(&object, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(&object, b"#!/bin/sh\necho pwned\n").unwrap();
    fs::set_permissions(&object, fs::Permissions::from_mode(0o555)).unwrap();
    let tote = env!("CARGO_BIN_EXE_tote");
    let cache = w.cache();
    let v = w.run(
        "verify",
        &[],
        &[tote.as_ref(), "cache".as_ref(), "verify".as_ref(), "--json".as_ref()],
        &[("TOTE_CACHE_DIR", cache.as_os_str())],
    );
    assert_eq!(v.code, Some(1), "{}", v.stderr);
    let j: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
    assert_eq!(j["damaged_objects"][0], name.as_str(), "{j:#}");
    let v = w.run(
        "repair",
        &[],
        &[tote.as_ref(), "cache".as_ref(), "verify".as_ref(), "--repair".as_ref()],
        &[],
    );
    assert_eq!(v.code, Some(0), "{}", v.stderr);
    assert!(!object.exists(), "still there");
    // And a launch with TOTE_VERIFY finds its own damage and puts it right.
    let r = w.run("cold again", &[], &[b.as_os_str()], &[]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let object = objects.join(&name);
    fs::set_permissions(&object, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(&object, b"#!/bin/sh\necho pwned\n").unwrap();
    fs::set_permissions(&object, fs::Permissions::from_mode(0o555)).unwrap();
    let r = w.run("TOTE_VERIFY", &[], &[b.as_os_str()], &[("TOTE_VERIFY", "1".as_ref())]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.stderr.contains("extracting it again"), "{}", r.stderr);
    assert!(
        !fs::read(objects.join(&name)).is_ok_and(|b| b.starts_with(b"#!/bin/sh\necho pwned")),
        "the poisoned object survived"
    );
}

/// A tree as deep as a bundle's may be, of names as long as they may be,
/// in a cache root with a long path, as uid 65534: launches (with
/// TOTE_VERIFY, again and again) and `tote cache ls`, `verify`, `rm` and
/// `prune` all work, say what they did, and leave nothing.
#[test]
fn cache_upkeep_works_on_the_deepest_tree_a_launch_accepts() {
    let w = Work::new();
    let stub = stub();
    let mut c = Craft::new();
    let mut p = format!("{STORE}/deep");
    c.dir(&p);
    // Down to the deepest a file may be.
    let levels = tote_format::MAX_DEPTH - p.split('/').count() - 1;
    for _ in 0..levels {
        p.push_str("/dddddddddddddd");
        c.dir(&p);
    }
    c.file(&format!("{p}/f"), b"at the bottom", false);
    let b = w.t.join("case");
    write_bundle(&b, &c.bytes(&stub));
    // A root 200 bytes long: with it, the deepest path passes PATH_MAX.
    let root = w.t.join("work").join("r".repeat(200));
    fs::create_dir(&root).unwrap();
    fs::set_permissions(&root, fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&root, Some(NOBODY), Some(NOBODY)).unwrap();
    let env = [("TOTE_CACHE_DIR", root.as_os_str())];
    for verify in ["0", "1", "1", "1"] {
        let r = w.run(
            "launch",
            &[],
            &[b.as_os_str()],
            &[env[0], ("TOTE_VERIFY", verify.as_ref())],
        );
        assert_eq!(r.code, Some(0), "{}", r.stderr);
        assert!(!r.stderr.contains("extracting it again"), "intact, yet: {}", r.stderr);
    }
    let trash = |root: &Path| {
        fs::read_dir(root)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .count()
    };
    assert_eq!(trash(&root), 0, "work in progress left behind");
    let tote = env!("CARGO_BIN_EXE_tote");
    let cache = |args: &[&str]| {
        let mut a: Vec<&OsStr> = vec![tote.as_ref(), "cache".as_ref()];
        a.extend(args.iter().map(OsStr::new));
        w.run("tote cache", &[], &a, &env)
    };
    let v = cache(&["verify"]);
    assert_eq!(v.code, Some(0), "{}", v.stderr);
    assert!(String::from_utf8_lossy(&v.stdout).contains(" ok"), "{:?}", v.stdout);
    let l = cache(&["ls", "--json"]);
    let j: serde_json::Value = serde_json::from_slice(&l.stdout).unwrap();
    let id = j["entries"][0]["id"].as_str().unwrap().to_string();
    assert!(
        j["entries"][0]["own_bytes"].as_u64().unwrap() > 256 * 4096,
        "the deep tree measured: {j:#}"
    );
    let rm = cache(&["rm", &id]);
    assert_eq!(rm.code, Some(0), "{}", rm.stderr);
    let left: Vec<_> = fs::read_dir(&root)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n != "objects")
        .collect();
    assert!(left.is_empty(), "removed, yet: {left:?}");
    // And the same through a trim after a cold start, and a prune.
    let r = w.run("launch", &[], &[b.as_os_str()], &env);
    assert_eq!(r.code, Some(0));
    let p = cache(&["prune", "--max-size", "0"]);
    assert_eq!(p.code, Some(0), "{}", p.stderr);
    assert_eq!(
        fs::read_dir(&root)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name() != "objects")
            .count(),
        0
    );
}

#[test]
fn a_tree_past_the_depth_limit_is_refused_and_the_bundler_never_writes_one() {
    let w = Work::new();
    let stub = stub();
    let mut c = Craft::new();
    let mut p = format!("{STORE}/deep");
    c.dir(&p);
    while p.split('/').count() <= tote_format::MAX_DEPTH {
        p.push_str("/d");
        c.dir(&p);
    }
    let b = w.t.join("case");
    write_bundle(&b, &c.bytes(&stub));
    let ctl = control(&w, &stub);
    every_way(&w, &b, &ctl, &refused("levels deep (at most 256)"));
    // tote bundle of such a directory: refused before it writes.
    let dir = w.t.join("deepdir");
    let mut d = dir.join("top");
    for _ in 0..tote_format::MAX_DEPTH {
        d = d.join("d");
    }
    fs::create_dir_all(&d).unwrap();
    fs::write(dir.join("top/run"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(dir.join("top/run"), fs::Permissions::from_mode(0o755)).unwrap();
    let out = w.t.join("deep.tote");
    let o = tote()
        .arg("bundle")
        .arg(&dir)
        .args(["--entrypoint", "top/run", "-o"])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("levels deep; a bundle's tree is at most 256"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists());
}

/// Honest but big: a gigabyte of zeros (30 KB of bundle) is verified,
/// extracted and imaged within the memory target (it took 1.2 GB before).
#[test]
fn a_gigabyte_of_zeros_streams() {
    let w = Work::new();
    let stub = stub();
    let mut c = Craft::new();
    c.block = 8 << 20;
    c.file(&format!("{STORE}/zeros"), &vec![0u8; 1 << 30], false);
    let b = w.t.join("case");
    let bytes = c.bytes(&stub);
    assert!(bytes.len() < 4 << 20, "{}", bytes.len());
    write_bundle(&b, &bytes);
    let tote: &OsStr = env!("CARGO_BIN_EXE_tote").as_ref();
    let (x, img) = (w.fresh("x"), w.fresh("img"));
    let tmp = [("TMPDIR", w.t.join("work").into_os_string())];
    let runs = [
        ("tote verify", vec![tote, "verify".as_ref(), b.as_os_str()]),
        (
            "tote extract",
            vec![tote, "extract".as_ref(), b.as_os_str(), x.as_os_str()],
        ),
        (
            "tote image",
            vec![tote, "image".as_ref(), b.as_os_str(), "-o".as_ref(), img.as_os_str()],
        ),
    ];
    for (what, args) in runs {
        let env: Vec<(&str, &OsStr)> = tmp.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
        let r = w.run(what, &[], &args, &env);
        assert_eq!(r.code, Some(0), "{what}: {}", r.stderr);
        assert!(r.rss_kib <= RSS_KIB, "{what}: peak {} KiB", r.rss_kib);
        eprintln!("{what}: {} s, {} KiB", r.secs, r.rss_kib);
    }
    assert_eq!(fs::metadata(x.join(format!("{STORE}/zeros"))).unwrap().len(), 1 << 30);
    assert!(fs::metadata(&img).unwrap().len() > 0);
}

/// A tree whose files total far more than they compress to (the same
/// megabyte of zeros 1,100 times: 1.1 GiB of files, a few hundred bytes of
/// data) is what readers refuse; `tote bundle` refuses it, naming the
/// figures, and writes nothing.
#[test]
fn the_bundler_never_writes_a_tree_whose_files_total_past_the_limit() {
    let w = Work::new();
    let dir = w.t.join("copies");
    fs::create_dir_all(dir.join("top")).unwrap();
    for i in 0..1100 {
        let f = fs::File::create(dir.join(format!("top/zeros-{i:04}"))).unwrap();
        f.set_len(1 << 20).unwrap();
    }
    fs::write(dir.join("top/run"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(dir.join("top/run"), fs::Permissions::from_mode(0o755)).unwrap();
    let out = w.t.join("copies.tote");
    let o = tote()
        .arg("bundle")
        .arg(&dir)
        .args(["--entrypoint", "top/run", "--mode", "extract", "-o"])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("past what a bundle may hold")
            && err.contains(&format!("its files total {} bytes", (1100u64 << 20) + 10))
            && err.contains("more than 256 times it plus 1 GiB"),
        "{err}"
    );
    assert!(!out.exists());
    let left: Vec<_> = fs::read_dir(w.t.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        left.iter().all(|n| !n.to_string_lossy().contains("copies.tote")),
        "{left:?}"
    );
}

/// As many mounts as a bundle may have (each planned over all the others):
/// the launch is quick; one more is refused.
#[test]
fn a_launch_plans_as_many_mounts_as_a_bundle_may_have_in_time() {
    let w = Work::new();
    let stub = stub();
    let with = |n: usize| {
        let mut c = Craft::empty();
        c.meta.entrypoint = b"/opt/m000/busybox".to_vec();
        c.dir("opt");
        for i in 0..n {
            c.dir(&format!("opt/m{i:03}"));
            c.meta.mounts.push(MountSpec::at_own_path(
                MountKind::Replace,
                format!("/opt/m{i:03}").as_bytes(),
            ));
        }
        c.file("opt/m000/busybox", &busybox(), true);
        c.bytes(&stub)
    };
    let b = w.t.join("case");
    write_bundle(&b, &with(tote_format::MAX_MOUNTS));
    for _ in 0..2 {
        let r = w.run("launch", &[], &[b.as_os_str()], &[]);
        assert_eq!(r.code, Some(0), "{}", r.stderr);
        assert_eq!(r.stdout, b"a hostile bundle ran\n");
        assert!(r.secs <= SECONDS, "{} s", r.secs);
        eprintln!("{} mounts: {} s", tote_format::MAX_MOUNTS, r.secs);
    }
    write_bundle(&b, &with(tote_format::MAX_MOUNTS + 1));
    let ctl = control(&w, &stub);
    let metadata = refused("257 mounts (at most 256)");
    every_way(&w, &b, &ctl, &|r| {
        // `tote ls` and `tote extract` read the tree only, which is sound.
        if r.what == "tote ls" || r.what == "tote extract" {
            assert_eq!(r.code, Some(0), "{}", r.stderr);
        } else {
            metadata(r);
        }
    });
}

/// A directory where two of a bundle's names are one
/// (tests/fixtures/casefold-fs), mounted while the test runs.
struct CaseFold {
    mnt: PathBuf,
    server: std::process::Child,
}

impl CaseFold {
    fn mount(w: &Work) -> CaseFold {
        let (src, mnt) = (w.t.join("cf-src"), w.t.join("cf"));
        for d in [&src, &mnt] {
            fs::create_dir(d).unwrap();
            std::os::unix::fs::chown(d, Some(NOBODY), Some(NOBODY)).unwrap();
        }
        let server = Command::new("/usr/bin/python3")
            .arg(repo().join("tests/fixtures/casefold-fs"))
            .arg(&src)
            .arg(&mnt)
            .spawn()
            .unwrap();
        // Unmounted and stopped by `drop`, whatever happens next.
        let cf = CaseFold { mnt, server };
        for _ in 0..100 {
            let mounted = fs::read_to_string("/proc/self/mountinfo")
                .unwrap()
                .contains(cf.mnt.to_str().unwrap());
            if mounted {
                return cf;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("casefold-fs did not mount");
    }
}

impl Drop for CaseFold {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// On a directory that folds names (case, or Unicode normalization), a
/// link of the bundle's and a file or directory whose name folds onto it
/// never lead a write through the link: `tote extract`, `tote image` (its
/// TMPDIR there), `TOTE_EXTRACT`, and launches whose cache is there
/// (extracted, relocated) each refuse with one line, and the file the link
/// points to is as it was.
#[test]
fn names_a_file_system_folds_together_never_write_through_a_link() {
    let w = Work::new();
    let stub = stub();
    let cf = CaseFold::mount(&w);
    let outside = w.t.join("outside");
    fs::create_dir(&outside).unwrap();
    let victim = outside.join("victim");
    fs::write(&victim, b"untouched\n").unwrap();
    std::os::unix::fs::chown(&victim, Some(NOBODY), Some(NOBODY)).unwrap();
    std::os::unix::fs::chown(&outside, Some(NOBODY), Some(NOBODY)).unwrap();
    let bin = format!("{STORE}/bin");
    // A file through a link, by case; a file below a directory through a
    // link to a directory, by Unicode normalization (NFD link, NFC name).
    let mut by_case = Craft::new();
    by_case
        .link(&format!("{bin}/L"), victim.as_os_str().as_encoded_bytes())
        .file(&format!("{bin}/l"), b"pwned\n", false);
    let mut by_form = Craft::new();
    by_form
        .link(&format!("{bin}/e\u{301}"), outside.as_os_str().as_encoded_bytes())
        .dir(&format!("{bin}/\u{e9}"))
        .file(&format!("{bin}/\u{e9}/victim"), b"pwned\n", false);
    let tote = env!("CARGO_BIN_EXE_tote");
    let cache = cf.mnt.join("cache");
    let tmp = cf.mnt.join("tmp");
    for d in [&cache, &tmp] {
        Command::new("setpriv")
            .args([
                "--reuid",
                "65534",
                "--regid",
                "65534",
                "--clear-groups",
                "mkdir",
                "-m",
                "0700",
            ])
            .arg(d)
            .status()
            .unwrap();
    }
    for (n, (what, craft)) in [("by case", by_case), ("by Unicode form", by_form)]
        .into_iter()
        .enumerate()
    {
        let b = w.t.join("case");
        write_bundle(&b, &craft.bytes(&stub));
        let (x, y, img) = (
            cf.mnt.join(format!("x{n}")),
            cf.mnt.join(format!("y{n}")),
            w.fresh("img"),
        );
        let runs = [
            w.run(
                "tote extract",
                &[],
                &[tote.as_ref(), "extract".as_ref(), b.as_os_str(), x.as_os_str()],
                &[],
            ),
            w.run(
                "tote image",
                &[],
                &[
                    tote.as_ref(),
                    "image".as_ref(),
                    b.as_os_str(),
                    "-o".as_ref(),
                    img.as_os_str(),
                ],
                &[("TMPDIR", tmp.as_os_str())],
            ),
            w.run(
                "TOTE_EXTRACT",
                &[],
                &[b.as_os_str()],
                &[("TOTE_EXTRACT", y.as_os_str())],
            ),
            w.run(
                "launch (extract)",
                &[],
                &[b.as_os_str()],
                &[("TOTE_CACHE_DIR", cache.as_os_str()), ("TOTE_MODE", "extract".as_ref())],
            ),
            w.run(
                "launch (relocated)",
                &[],
                &[b.as_os_str()],
                &[
                    ("TOTE_CACHE_DIR", cache.as_os_str()),
                    ("TOTE_MODE", "extract".as_ref()),
                    ("TOTE_NAMESPACE", "never".as_ref()),
                ],
            ),
        ];
        for r in &runs {
            let want = if r.what.starts_with("tote ") { 1 } else { 115 };
            assert_eq!(r.code, Some(want), "{what}, {}: {}", r.what, r.stderr);
            assert_eq!(r.stderr.lines().count(), 1, "{what}, {}: {}", r.what, r.stderr);
            assert!(
                r.stderr.contains("the file system folds names"),
                "{what}, {}: {}",
                r.what,
                r.stderr
            );
            assert_eq!(
                fs::read(&victim).unwrap(),
                b"untouched\n",
                "{what}, {}: written through",
                r.what
            );
            assert_eq!(
                fs::metadata(&victim).unwrap().permissions().mode() & 0o777,
                0o644,
                "{what}, {}",
                r.what
            );
            assert_eq!(
                fs::read_dir(&outside).unwrap().count(),
                1,
                "{what}, {}: written outside",
                r.what
            );
        }
        assert!(!x.exists() && !y.exists() && !img.exists(), "{what}: output left");
        let staged: Vec<_> = fs::read_dir(&tmp).unwrap().flatten().map(|e| e.file_name()).collect();
        assert!(staged.is_empty(), "{what}: staging left in TMPDIR: {staged:?}");
    }
}

/// As many entries as a bundle may have (2^19: directories, empty files
/// and links): accepted, and every command and launch within the targets.
#[test]
fn the_most_entries_a_bundle_may_have_stay_within_time_and_memory() {
    let w = Work::on_tmpfs();
    let stub = stub();
    let mut c = Craft::new();
    let room = tote_format::MAX_ENTRIES - c.entries.len();
    for i in 0..room / 1024 {
        let d = format!("{STORE}/d{i:04}");
        c.dir(&d);
        for j in 0..1023 {
            match j % 3 {
                0 => c.dir(&format!("{d}/e{j:04}")),
                1 => c.file(&format!("{d}/f{j:04}"), b"", false),
                _ => c.link(&format!("{d}/l{j:04}"), b"../d0000"),
            };
        }
    }
    let b = w.t.join("case");
    let bytes = c.bytes(&stub);
    eprintln!("{} entries, {} bytes", c.entries.len(), bytes.len());
    assert!(bytes.len() < 16 << 20);
    write_bundle(&b, &bytes);
    let ctl = control(&w, &stub);
    let runs = every_way(&w, &b, &ctl, &|r| {
        assert_eq!(r.code, Some(0), "{}: {}", r.what, r.stderr)
    });
    for r in runs {
        eprintln!("{:20} {:6.2} s {:8} KiB", r.what, r.secs, r.rss_kib);
    }
}
