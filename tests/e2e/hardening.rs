//! Faults and hostile conditions: concurrent and killed launches, power
//! loss, a full disk, corrupted bundles, a modified cache, untrusted cache
//! roots, hosts that refuse user namespaces, PID 1, set-user-ID.
//! Trial counts default to the figures; `TOTE_TRIALS_SCALE` (a
//! multiplier, e.g. 10) runs longer soaks with `scripts/soak`.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

const USAGE: i32 = 113;
const BUNDLE_ERROR: i32 = 114;
const CACHE_ERROR: i32 = 115;
const NAMESPACE_ERROR: i32 = 116;

pub(crate) fn scale(n: usize) -> usize {
    n * std::env::var("TOTE_TRIALS_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// A small reproducible random number generator (the seed is printed on failure).
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new() -> Rng {
        let seed = std::env::var("TOTE_TEST_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("random seed (TOTE_TEST_SEED): {seed}");
        Rng(seed | 1)
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}

/// Temp dirs in a cache root (staging and trash of killed launches).
pub(crate) fn leftovers(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(root)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".tmp-"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Nothing but, at most, an object store holding no object.
fn holds_nothing(root: &Path) -> bool {
    fs::read_dir(root).unwrap().flatten().all(|e| {
        e.file_name() == "objects"
            && fs::read_dir(e.path())
                .unwrap()
                .flatten()
                .all(|o| o.file_name() == ".boot")
    })
}

pub(crate) fn entries(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(root)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.') && n != "objects")
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// What `app` reports when launched alone from this test dir (own cache).
fn reference(t: &TestDir, app: &Path) -> Vec<(String, String)> {
    let mut l = Launch::nobody(t);
    let c = t.join("reference-cache");
    fs::create_dir(&c).unwrap();
    std::os::unix::fs::chown(&c, Some(NOBODY), Some(NOBODY)).unwrap();
    fs::set_permissions(&c, fs::Permissions::from_mode(0o700)).unwrap();
    l.cache = Some(c);
    stable(&l.run(app, &[]))
}

/// The probe's report without its pid: what "ran the right files" means.
fn stable(o: &Output) -> Vec<(String, String)> {
    report(o).into_iter().filter(|(k, _)| k != "pid").collect()
}

fn one_line(o: &Output, code: i32, needle: &str) -> String {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(code), "{e}");
    assert_eq!(e.lines().count(), 1, "not one line: {e}");
    assert!(e.starts_with("tote: ") && e.contains(needle), "{needle:?} not in: {e}");
    assert!(
        o.stdout.is_empty(),
        "the program ran: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    e
}

/// Wait for `child`, killing it (and failing) after `limit`.
fn wait_or_kill(child: &mut std::process::Child, limit: Duration, what: &str) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("{what}: hung for {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn output_within(c: Command, limit: Duration, what: &str) -> Output {
    try_output_within(c, limit, what).unwrap()
}

/// `output_within`, or the error that kept the program from starting.
fn try_output_within(mut c: Command, limit: Duration, what: &str) -> std::io::Result<Output> {
    let mut child = try_spawn(c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()))?;
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut out, &mut b).unwrap();
        b
    });
    let mut e = Vec::new();
    std::io::Read::read_to_end(&mut err, &mut e).unwrap();
    let status = wait_or_kill(&mut child, limit, what);
    Ok(Output {
        status,
        stdout: reader.join().unwrap(),
        stderr: e,
    })
}

// 1. Concurrency

#[test]
fn thirty_two_simultaneous_cold_launches_extract_once() {
    let f = fixture();
    let t = TestDir::new();
    let l = Launch::nobody(&t);
    let expected = reference(&t, &f.probe);
    let mut children: Vec<_> = (0..32)
        .map(|_| {
            let mut c = l.command(&[], &f.probe, &[]);
            spawn(c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()))
        })
        .collect();
    for (i, c) in children.drain(..).enumerate() {
        let o = c.wait_with_output().unwrap();
        assert_eq!(stable(&o), expected, "launch {i}: {}", stderr(&o));
    }
    let root = l.cache.unwrap();
    assert_eq!(entries(&root).len(), 1, "{:?}", entries(&root));
    assert!(leftovers(&root).is_empty(), "left behind: {:?}", leftovers(&root));
}

// 2. Crashes

#[test]
fn sigkill_at_random_moments_of_a_cold_start_never_breaks_the_next_launch() {
    let f = fixture();
    let t = TestDir::new();
    let l = Launch::nobody(&t);
    let root = l.cache.clone().unwrap();
    let expected = stable(&l.run(&f.probe, &[]));
    // How long a cold start takes here: kill anywhere within 1.5 times that.
    let start = Instant::now();
    remove_entries(&root);
    report(&l.run(&f.probe, &[]));
    let cold_us = start.elapsed().as_micros() as u64 * 3 / 2;
    let mut rng = Rng::new();
    let trials = scale(100);
    let (mut killed_mid_way, mut swept) = (0, 0);
    for trial in 0..trials {
        remove_entries(&root);
        let mut c = l.command(&[], &f.probe, &[]);
        let mut child = spawn(c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()));
        std::thread::sleep(Duration::from_micros(rng.below(cold_us)));
        let _ = child.kill();
        let status = child.wait().unwrap();
        if status.code().is_none() {
            killed_mid_way += 1;
        }
        let had_leftovers = !leftovers(&root).is_empty();
        let o = l.run(&f.probe, &[]);
        assert_eq!(stable(&o), expected, "trial {trial}: {}", stderr(&o));
        assert!(
            leftovers(&root).is_empty(),
            "trial {trial}: left {:?}",
            leftovers(&root)
        );
        assert_eq!(entries(&root).len(), 1, "trial {trial}");
        if had_leftovers {
            swept += 1;
        }
    }
    eprintln!("{trials} trials, {killed_mid_way} killed before exit, {swept} left leftovers that were swept");
    assert!(killed_mid_way > trials / 4, "the kills came too late to test anything");
}

/// Empty a cache root (entries are read-only trees) but keep the root.
fn remove_entries(root: &Path) {
    remove_from(root, |_| true);
}

/// Remove the bundle entries of a cache root, keeping its object store.
fn remove_entries_but_objects(root: &Path) {
    remove_from(root, |name| !name.starts_with('.') && name != "objects");
}

fn remove_from(root: &Path, which: impl Fn(&str) -> bool) {
    for e in fs::read_dir(root).unwrap().flatten() {
        if !which(&e.file_name().to_string_lossy()) {
            continue;
        }
        let p = e.path();
        let _ = Command::new("chmod").args(["-R", "u+w"]).arg(&p).status();
        if p.is_dir() {
            fs::remove_dir_all(&p).unwrap();
        } else {
            fs::remove_file(&p).unwrap();
        }
    }
}

// 3. Power loss, simulated: the marker says another boot; the data may be gone.

fn set_mtime_1(p: &Path) {
    let ts = nix::sys::time::TimeSpec::new(1, 0);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        p,
        &ts,
        &ts,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}

/// Overwrite a read-only cache file in place, keeping its size, mode and mtime.
fn tamper(p: &Path, content: &[u8]) {
    let mode = fs::metadata(p).unwrap().permissions().mode();
    fs::set_permissions(p, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(p, content).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
    set_mtime_1(p);
}

fn other_boot(entry: &Path) {
    let ok = entry.join("ok");
    let text = fs::read_to_string(&ok).unwrap();
    assert!(text.starts_with("tote cache entry v2\nboot "), "{text}");
    fs::write(&ok, "tote cache entry v2\nboot 00000000-0000-0000-0000-000000000000\n").unwrap();
}

#[test]
fn after_a_reboot_an_entry_is_verified_once_and_lost_data_is_extracted_again() {
    let f = fixture();
    let t = TestDir::new();
    let l = Launch::nobody(&t).env("TOTE_DEBUG", "1");
    let root = l.cache.clone().unwrap();
    let expected = stable(&l.run(&f.greet, &["x"]));
    let entry = root.join(&entries(&root)[0]);
    let greet = entry.join("tree").join(&f.script_store[1..]).join("bin/greet");
    let original = fs::read(&greet).unwrap();

    // Intact data, another boot: verified, marked, then warm as usual.
    other_boot(&entry);
    let o = l.run(&f.greet, &["x"]);
    assert_eq!(stable(&o), expected);
    let log = stderr(&o);
    assert!(
        log.contains("marked under another boot") && log.contains("verified"),
        "{log}"
    );
    let o = l.run(&f.greet, &["x"]);
    assert!(
        stderr(&o).contains("warm:") && !stderr(&o).contains("verif"),
        "{}",
        stderr(&o)
    );

    // The page cache never reached the disk: zeros where the script was.
    tamper(&greet, &vec![0u8; original.len()]);
    other_boot(&entry);
    let o = l.run(&f.greet, &["x"]);
    assert_eq!(stable(&o), expected, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("has other content; extracting it again"),
        "{}",
        stderr(&o)
    );
    assert_eq!(fs::read(&greet).unwrap(), original);

    // Objects written under another boot are not trusted either.
    let objects = root.join("objects");
    fs::write(objects.join(".boot"), "00000000-0000-0000-0000-000000000000").unwrap();
    let count = fs::read_dir(&objects).unwrap().count();
    assert!(count > 2, "objects: {count}");
    remove_entries_but_objects(&root);
    let o = l.run(&f.greet, &["x"]);
    assert_eq!(stable(&o), expected);
    assert!(
        stderr(&o).contains(", 0 files linked from the object store"),
        "{}",
        stderr(&o)
    );
    let boot = fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    assert_eq!(
        fs::read_to_string(objects.join(".boot")).unwrap(),
        format!("{}\nchecked\n", boot.trim()),
        "the stamp of a store whose objects were checked"
    );
}

// 4. Disk full

/// A tmpfs at `at` (created) with mount options `opts`, unmounted on drop.
fn tmpfs(at: &Path, opts: &str) -> Unmount {
    fs::create_dir_all(at).unwrap();
    mount(&["-t", "tmpfs", "-o", opts, "tote-test"], at);
    Unmount(at.to_path_buf())
}

fn mount(args: &[&str], at: &Path) {
    let s = Command::new("mount").args(args).arg(at).status().unwrap();
    assert!(s.success(), "mount {args:?} {}", at.display());
}

struct Unmount(PathBuf);
impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_cache_disk_gives_one_line_leaves_nothing_and_recovers() {
    let f = fixture();
    let t = TestDir::new();
    let root = t.join("small");
    let _u = tmpfs(&root, "size=1m,mode=0700");
    let mut l = Launch::root(&t);
    l.cache = Some(root.clone());
    let o = l.run(&f.probe, &[]);
    let e = one_line(&o, CACHE_ERROR, "not enough space in ");
    assert!(e.contains(&root.display().to_string()) && e.contains("needs"), "{e}");
    assert_eq!(
        fs::read_dir(&root).unwrap().count(),
        0,
        "left behind in {}",
        root.display()
    );

    // Space freed: the next launch works.
    mount(&["-o", "remount,size=64m"], &root);
    report(&l.run(&f.probe, &[]));
    let used = |r: &Path| nix::sys::statvfs::statvfs(r).unwrap();
    let before = fs::read_dir(root.join("objects")).unwrap().count();

    // Running out half-way (the object store is not empty, so no check up
    // front): the same line, and the partial entry and its objects are gone.
    let v = used(&root);
    let in_use = (v.blocks() - v.blocks_free()) * v.fragment_size();
    mount(&["-o", &format!("remount,size={}", in_use + 8 * 1024)], &root);
    let o = l.run(&f.greet, &["x"]);
    let e = one_line(&o, CACHE_ERROR, "not enough space in ");
    assert!(e.contains("ENOSPC"), "{e}");
    assert_eq!(entries(&root).len(), 1);
    assert!(leftovers(&root).is_empty(), "{:?}", leftovers(&root));
    assert_eq!(fs::read_dir(root.join("objects")).unwrap().count(), before);
}

// 5. Corruption

#[test]
fn random_flips_and_truncations_never_run_and_always_say_why() {
    let f = fixture();
    let t = TestDir::new();
    let good = fs::read(&f.probe).unwrap();
    let stub = stub_len(&f.probe) as usize;
    let payload = good.len() - stub;
    let app = t.join("app");
    fs::write(&app, &good).unwrap();
    fs::set_permissions(&app, fs::Permissions::from_mode(0o755)).unwrap();
    let l = Launch::root(&t);
    let root = l.cache.clone().unwrap();
    let expected = stable(&l.run(&app, &[]));
    remove_entries(&root);

    // A third of the flips in each region: data blocks; metadata and
    // index; the 144-byte trailer.
    let tail = &good[good.len() - tote_format::TRAILER_LEN..];
    let layout = tote_format::Trailer::decode(tail, good.len() as u64).unwrap();
    let meta_at = layout.trailer.meta_offset as usize;
    let trailer_at = good.len() - tote_format::TRAILER_LEN;
    let regions = [(stub, meta_at), (meta_at, trailer_at), (trailer_at, good.len())];
    assert!(payload > 0 && regions.iter().all(|(a, b)| a < b));
    let mut rng = Rng::new();
    let flips = scale(2000);
    let mut by_message: std::collections::BTreeMap<String, usize> = Default::default();
    let mut verify_checked = 0;
    for trial in 0..flips {
        let (from, to) = regions[trial % 3];
        let off = from + rng.below((to - from) as u64) as usize;
        let bit = 1u8 << rng.below(8);
        let mut bytes = good.clone();
        bytes[off] ^= bit;
        fs::write(&app, &bytes).unwrap();
        let what = format!("flip {trial}: bit {bit:#x} at {off} of {}", good.len());
        let o = output_within(l.command(&[], &app, &[]), Duration::from_secs(20), &what);
        if o.status.success() {
            // Only acceptable if what ran is exactly the bundle's content.
            assert_eq!(stable(&o), expected, "{what}: ran modified content");
            *by_message.entry("ran unmodified content".into()).or_default() += 1;
            remove_entries(&root);
            continue;
        }
        let e = one_line(&o, BUNDLE_ERROR, "tote: bundle ");
        let kind = e
            .split(": ")
            .nth(2)
            .unwrap_or("?")
            .split(' ')
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        *by_message.entry(kind).or_default() += 1;
        assert!(holds_nothing(&root), "{what}: cache not clean");
        if trial % 20 == 0 {
            let v = tote().arg("verify").arg(&app).output().unwrap();
            assert_eq!(v.status.code(), Some(1), "{what}: verify accepted it");
            verify_checked += 1;
        }
    }
    for trial in 0..scale(100) {
        let len = rng.below(good.len() as u64) as usize;
        fs::write(&app, &good[..len]).unwrap();
        let what = format!("truncation {trial} to {len} bytes");
        if len >= stub {
            let o = output_within(l.command(&[], &app, &[]), Duration::from_secs(20), &what);
            one_line(&o, BUNDLE_ERROR, "tote: bundle ");
        } else {
            // Shorter than the stub: not even a complete program. The
            // kernel refuses it (ENOEXEC: headers cut), or it dies.
            match try_output_within(l.command(&[], &app, &[]), Duration::from_secs(20), &what) {
                Ok(o) => assert!(!o.status.success(), "{what}"),
                Err(e) => assert_eq!(e.raw_os_error(), Some(8), "{what}: {e}"),
            }
        }
        assert!(holds_nothing(&root), "{what}: cache not clean");
    }
    eprintln!("{flips} flips ({verify_checked} also through tote verify): {by_message:?}");
}

// 5b. What a warm start checks, and what TOTE_VERIFY=1 adds.

#[test]
fn a_modified_cache_entry_runs_warm_but_tote_verify_restores_it() {
    let f = fixture();
    let t = TestDir::new();
    let l = Launch::nobody(&t);
    let root = l.cache.clone().unwrap();
    let expected = stable(&l.run(&f.greet, &["x"]));
    let entry = root.join(&entries(&root)[0]);
    let greet = entry.join("tree").join(&f.script_store[1..]).join("bin/greet");
    let original = fs::read_to_string(&greet).unwrap();
    // Same size, mode and mtime: only the content differs.
    tamper(&greet, original.replace("script=$0", "script=!0").as_bytes());

    // Documented: a warm start trusts a complete entry, as Nix trusts its store.
    let o = l.run(&f.greet, &["x"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("script=!0"));

    let v = l.clone().env("TOTE_VERIFY", "1");
    let o = v.run(&f.greet, &["x"]);
    assert_eq!(stable(&o), expected, "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("bin/greet has other content; extracting it again"), "{e}");
    assert_eq!(fs::read_to_string(&greet).unwrap(), original);
    // Verified and clean: no message the second time.
    let o = v.run(&f.greet, &["x"]);
    assert_eq!(stable(&o), expected);
    assert!(stderr(&o).is_empty(), "{}", stderr(&o));
}

// 6. Hostile archives

mod hostile {
    use super::*;
    use crate::hostile::assemble;
    use tote_format::{encode_block, sha256, BlockRef, Entry, EntryKind, Index, Meta, MountKind, MountSpec};

    const STORE: &str = "nix/store/00000000000000000000000000000000-x";

    fn meta(index: &Index) -> Meta {
        Meta {
            name: "x".into(),
            creator: "hostile test".into(),
            entrypoint: format!("/{STORE}/bin/x").into_bytes(),
            mounts: vec![MountSpec::at_own_path(MountKind::Layer, b"/nix/store")],
            stats: index.stats(),
            ..Meta::default()
        }
    }

    fn dir(p: &str) -> Entry {
        Entry {
            path: p.as_bytes().to_vec(),
            kind: EntryKind::Dir,
        }
    }

    fn file(p: &str, size: u64) -> Entry {
        Entry {
            path: p.as_bytes().to_vec(),
            kind: EntryKind::File {
                executable: true,
                size,
                offset: 0,
                hash: sha256(b"#!/bin/sh\necho pwned\n"),
            },
        }
    }

    fn prefix() -> Vec<Entry> {
        vec![dir("nix"), dir("nix/store"), dir(STORE), dir(&format!("{STORE}/bin"))]
    }

    /// One block holding `raw`, declared as `rlen` bytes.
    fn block(raw: &[u8], rlen: u32) -> (Vec<u8>, BlockRef) {
        let e = encode_block(raw, 3, None).unwrap();
        let b = BlockRef {
            codec: e.codec,
            ..BlockRef::zstd(0, e.bytes.len() as u32, 0, rlen, e.hash)
        };
        (e.bytes, b)
    }

    fn case(
        stub: &[u8],
        entries: Vec<Entry>,
        raw: &[u8],
        rlen: u32,
        patch: impl Fn(&mut Vec<u8>, &mut Meta),
    ) -> Vec<u8> {
        let (data, b) = block(raw, rlen);
        let index = Index {
            blocks: vec![b],
            entries,
            refs: vec![],
        };
        let mut m = meta(&index);
        let mut index_raw = index.encode();
        patch(&mut index_raw, &mut m);
        assemble(stub, &data, &m, &index_raw)
    }

    #[test]
    fn hostile_archives_are_refused_by_verify_and_at_launch_before_writing() {
        let f = fixture();
        let t = TestDir::new();
        let good = fs::read(&f.probe).unwrap();
        let stub = &good[..stub_len(&f.probe) as usize];
        let outside = t.join("outside");
        fs::create_dir(&outside).unwrap();
        let script = b"#!/bin/sh\necho pwned\n";
        let n = script.len() as u64;
        let with = |extra: Vec<Entry>| [prefix(), extra].concat();
        let none = |_: &mut Vec<u8>, _: &mut Meta| {};
        let x = format!("{STORE}/bin/x");

        // The control: the same writer, well-formed, passes verify.
        let control = case(stub, with(vec![file(&x, n)]), script, n as u32, none);
        let mut cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "a path with ..",
                case(
                    stub,
                    with(vec![file(&format!("{STORE}/bin/../../../../x"), n)]),
                    script,
                    n as u32,
                    none,
                ),
            ),
            (
                "an absolute path",
                case(
                    stub,
                    [vec![file("/tmp/x", n)], prefix()].concat(),
                    script,
                    n as u32,
                    none,
                ),
            ),
            (
                "an empty name",
                case(
                    stub,
                    with(vec![file(&format!("{STORE}/bin/"), n)]),
                    script,
                    n as u32,
                    none,
                ),
            ),
            (
                "a duplicate path",
                case(stub, with(vec![file(&x, n), file(&x, n)]), script, n as u32, none),
            ),
            (
                "a file written through a symlink pointing outside",
                case(
                    stub,
                    with(vec![
                        Entry {
                            path: format!("{STORE}/bin/l").into_bytes(),
                            kind: EntryKind::Symlink {
                                target: outside.as_os_str().as_encoded_bytes().to_vec(),
                            },
                        },
                        file(&format!("{STORE}/bin/l/evil"), n),
                    ]),
                    script,
                    n as u32,
                    none,
                ),
            ),
            (
                "a file larger than the data",
                case(stub, with(vec![file(&x, n + 1)]), script, n as u32, none),
            ),
            (
                "sizes that disagree with the metadata",
                case(stub, with(vec![file(&x, n)]), script, n as u32, |_, m| {
                    m.stats.total_size += 1
                }),
            ),
            (
                "a decompression bomb (16 MiB of zeros declared as 4 KiB)",
                case(stub, with(vec![file(&x, 4096)]), &vec![0u8; 16 << 20], 4096, none),
            ),
            (
                "a block declared over 16 MiB",
                case(stub, with(vec![file(&x, n)]), script, (16 << 20) + 1, none),
            ),
        ];
        // Device and fifo entries: kinds the format has no number for.
        for (what, kind) in [("a device entry", 5u8), ("a fifo entry", 6u8)] {
            let patched = case(stub, with(vec![file(&x, n)]), script, n as u32, |raw, _| {
                // The last entry's kind byte: after the path of the file entry.
                let needle = x.as_bytes();
                let at = raw.windows(needle.len()).rposition(|w| w == needle).unwrap() - 3;
                assert_eq!(raw[at], 3, "not the kind byte");
                raw[at] = kind;
            });
            cases.push((what, patched));
        }
        // Nesting 10,000 deep.
        let mut deep = prefix();
        let mut p = format!("{STORE}/bin");
        for _ in 0..10_000 {
            p.push_str("/d");
            deep.push(dir(&p));
        }
        cases.push(("nesting 10,000 deep", case(stub, deep, script, n as u32, none)));

        let app = t.join("app");
        let write = |bytes: &[u8]| {
            fs::write(&app, bytes).unwrap();
            fs::set_permissions(&app, fs::Permissions::from_mode(0o755)).unwrap();
        };
        write(&control);
        let v = tote().arg("verify").arg(&app).output().unwrap();
        assert!(v.status.success(), "control: {}", stderr(&v));

        let l = Launch::root(&t);
        let root = l.cache.clone().unwrap();
        for (what, bytes) in &cases {
            write(bytes);
            let v = tote().arg("verify").arg(&app).output().unwrap();
            assert_eq!(v.status.code(), Some(1), "verify accepted {what}");
            assert_eq!(stderr(&v).lines().count(), 1, "{what}: {}", stderr(&v));
            let o = l.run(&app, &[]);
            one_line(&o, BUNDLE_ERROR, "tote: bundle ");
            assert!(holds_nothing(&root), "{what}: wrote into the cache");
            assert!(
                fs::read_dir(&outside).unwrap().next().is_none(),
                "{what}: wrote outside"
            );
            eprintln!("{what}: {}", stderr(&o).trim());
        }
    }
}

// 7. Cache trust

#[test]
fn untrusted_cache_roots_are_skipped_for_the_next_candidate() {
    let f = fixture();
    let t = TestDir::new();
    // Owned by root, used by nobody: skipped. Writable by others: skipped.
    // On a noexec mount: skipped. Then TMPDIR's is used.
    let foreign = t.join("foreign");
    fs::create_dir_all(foreign.join("tote")).unwrap();
    let open = t.join("open");
    fs::create_dir_all(open.join("tote-65534")).unwrap();
    fs::set_permissions(open.join("tote-65534"), fs::Permissions::from_mode(0o777)).unwrap();
    std::os::unix::fs::chown(open.join("tote-65534"), Some(NOBODY), Some(NOBODY)).unwrap();
    let noexec = t.join("noexec");
    let _u = tmpfs(&noexec, "noexec,mode=0777");
    let tmp = t.join("tmp");
    fs::create_dir(&tmp).unwrap();
    std::os::unix::fs::chown(&tmp, Some(NOBODY), Some(NOBODY)).unwrap();

    let mut l = Launch::nobody(&t)
        .env("XDG_CACHE_HOME", foreign.to_str().unwrap())
        .env("HOME", noexec.to_str().unwrap())
        .env("TMPDIR", tmp.to_str().unwrap())
        .env("TOTE_DEBUG", "1");
    l.cache = None;
    let o = l.run(&f.probe, &[]);
    report(&o);
    let log = stderr(&o);
    assert!(log.contains("owned by uid 0, not 65534"), "{log}");
    assert!(log.contains("on a noexec mount"), "{log}");
    assert!(
        log.contains(&format!("cache root {}/tote-65534 (from TMPDIR)", tmp.display())),
        "{log}"
    );
    assert_eq!(entries(&tmp.join("tote-65534")).len(), 1);
    assert!(entries(&foreign.join("tote")).is_empty());

    // Group/other-writable, given explicitly: a documented refusal.
    let mut l = Launch::nobody(&t);
    l.cache = Some(open.join("tote-65534"));
    let o = l.run(&f.probe, &[]);
    one_line(&o, CACHE_ERROR, "writable by group or others (mode 777)");
}

// 8. Locked-down hosts

#[test]
fn refused_user_namespaces_relocate_or_give_one_line_with_the_cause_and_the_fix() {
    let f = fixture();
    let t = TestDir::new();
    let l = Launch::nobody(&t);
    // bwrap as root: a user namespace in which nobody may create another.
    let app = t.join("app");
    fs::copy(&f.probe, &app).unwrap();
    // Inside, uid 65534 is the caller's real uid (root) mapped: a cache
    // directory owned by root is the sandbox user's own.
    let cache = t.cache(0);
    let bwrap = |policy: &str| {
        let mut c = Command::new("bwrap");
        c.args([
            "--dev-bind",
            "/",
            "/",
            "--unshare-user",
            "--disable-userns",
            "--uid",
            "65534",
            "--gid",
            "65534",
        ])
        .arg("--setenv")
        .arg("TOTE_CACHE_DIR")
        .arg(&cache)
        .args(["--setenv", "TOTE_NAMESPACE", policy, "--"])
        .arg(&app);
        output_within(c, Duration::from_secs(30), "bwrap")
    };
    let e = one_line(&bwrap("always"), NAMESPACE_ERROR, "unshare(CLONE_NEWUSER|CLONE_NEWNS)");
    assert!(e.contains("user.max_user_namespaces"), "{e}");
    assert!(e.contains("TOTE_NAMESPACE=always"), "{e}");
    // auto (the default): the same host runs it without namespaces.
    let exe = field(&report(&bwrap("auto")), "exe");
    assert!(
        exe.starts_with("/tmp/") && exe.ends_with("-tote-test-probe/bin/probe"),
        "{exe}"
    );

    // user.max_user_namespaces=0 set inside a child user namespace; root
    // there holds CAP_SYS_ADMIN in it: a mount namespace only, and the
    // program runs from /nix/store as usual.
    let script = format!(
        "echo 0 > /proc/sys/user/max_user_namespaces && exec env TOTE_CACHE_DIR={} {}",
        t.cache(0).display(),
        app.display()
    );
    let mut c = Command::new("unshare");
    c.args(["--user", "--map-root-user", "sh", "-c", &script]);
    let o = output_within(c, Duration::from_secs(30), "unshare");
    assert_eq!(field(&report(&o), "uid"), "0");
    assert!(field(&report(&o), "exe").starts_with("/nix/store/"));

    // The same knob at 0 for a non-root user: relocated, or with
    // TOTE_NAMESPACE=always one line that names it. The child user
    // namespace maps 0..65536 (written from here, as root outside); its
    // root switches the knob off, then becomes nobody.
    // (sh execs itself once mapped: capabilities come back with an exec as uid 0.)
    for policy in ["always", "auto"] {
        let inner = format!(
            "echo 0 > /proc/sys/user/max_user_namespaces && exec setpriv --reuid 65534 --regid 65534 \
             --clear-groups env TOTE_NAMESPACE={policy} TOTE_CACHE_DIR={} {}",
            l.cache.clone().unwrap().display(),
            app.display()
        );
        let mut c = Command::new("unshare");
        c.args(["--user", "sh", "-c", "read go && exec sh -c \"$INNER\""])
            .env("INNER", inner);
        let mut child = spawn(c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()));
        let pid = child.id();
        // Wait until unshare has entered the new namespace (then execs sh).
        let own = fs::read_link("/proc/self/ns/user").unwrap();
        let start = Instant::now();
        while fs::read_link(format!("/proc/{pid}/ns/user")).is_ok_and(|n| n == own) {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "unshare never entered its namespace"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        fs::write(format!("/proc/{pid}/uid_map"), "0 0 65536").unwrap();
        fs::write(format!("/proc/{pid}/gid_map"), "0 0 65536").unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"go\n").unwrap();
        let o = child.wait_with_output().unwrap();
        if policy == "always" {
            let e = one_line(&o, NAMESPACE_ERROR, "user.max_user_namespaces is 0");
            assert!(e.contains("set it to"), "{e}");
        } else {
            let r = report(&o);
            assert!(field(&r, "exe").starts_with("/tmp/"), "{r:?}");
            assert_eq!(field(&r, "uid"), "65534");
        }
    }
}

// 9. PID 1

#[test]
fn as_pid1_sigint_reaches_the_program_and_orphans_are_reaped() {
    let f = fixture();
    let t = TestDir::new();
    let pidns = ["unshare", "--pid", "--fork", "--mount-proc"];
    let o = Launch::root(&t).run_with(&pidns, &f.probe, &[OsStr::new("orphan")]);
    assert_eq!(field(&report(&o), "zombies"), "0");

    for (sig, n) in [
        (nix::sys::signal::Signal::SIGINT, 2),
        (nix::sys::signal::Signal::SIGTERM, 15),
    ] {
        let mut c = Launch::nobody(&t).command(&pidns, &f.probe, &[OsStr::new("sleep")]);
        let mut child = spawn(c.stdout(Stdio::piped()).stderr(Stdio::piped()));
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.as_mut().unwrap()), &mut line).unwrap();
        assert_eq!(line, "ready\n");
        let children = fs::read_to_string(format!("/proc/{}/task/{}/children", child.id(), child.id())).unwrap();
        let pid1: i32 = children.split_whitespace().next().unwrap().parse().unwrap();
        // As nobody, the stub is the setpriv's exec'd process: PID 1 itself.
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid1), sig).unwrap();
        let status = wait_or_kill(&mut child, Duration::from_secs(10), "pid 1");
        assert_eq!(status.code(), Some(128 + n), "{sig:?}");
    }
}

// 11. Set-user-ID

#[test]
fn a_setuid_or_setgid_bundle_refuses_to_run() {
    let f = fixture();
    let t = TestDir::new();
    for mode in [0o4755, 0o2755] {
        let app = t.join(format!("app-{mode:o}"));
        fs::copy(&f.probe, &app).unwrap();
        fs::set_permissions(&app, fs::Permissions::from_mode(mode)).unwrap();
        assert_eq!(fs::metadata(&app).unwrap().mode() & 0o7777, mode);
        let o = Launch::nobody(&t).run(&app, &[]);
        one_line(&o, USAGE, "refusing to run set-user-ID or set-group-ID");
    }
}
