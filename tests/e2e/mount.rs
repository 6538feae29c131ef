//! Mount mode: the bundle served over FUSE from its own file, nothing
//! extracted. As root, and as uid 65534 in a user namespace with
//! /dev/fuse made accessible (a 0666 node bound over it in a private mount
//! namespace, as on hosts where /dev/fuse is 0666).

use std::ffi::OsStr;
use std::io::BufRead;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// Shell lines run before the bundle, in a private mount namespace.
const FUSE_FOR_ALL: &str = "mount -t tmpfs -o mode=0755 tote-fuse /mnt && mknod -m 0666 /mnt/fuse c 10 229 \
                            && mount --bind /mnt/fuse /dev/fuse";
const NO_NIX: &str = "mount -t tmpfs tote-no-nix /nix";

/// A prefix for `Launch::run_with` running `setup` first.
fn private(setup: &str) -> Vec<String> {
    ["unshare", "--mount", "--propagation", "private", "sh", "-c"]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("set -e; {setup}; exec \"$@\""), "sh".into()])
        .collect()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn users(t: &TestDir) -> [Launch; 2] {
    [Launch::root(t), Launch::nobody(t)]
}

/// Mount mode writes nothing but the empty directory it mounts on.
fn assert_nothing_extracted(t: &TestDir, l: &Launch) {
    let cache = l.cache.as_ref().unwrap();
    assert_eq!(t.entries(cache), ["mnt"], "cache {}", cache.display());
    assert!(t.entries(cache.join("mnt")).is_empty());
}

fn os(args: &[&str]) -> Vec<&'static OsStr> {
    args.iter()
        .map(|a| OsStr::new(Box::leak(a.to_string().into_boxed_str())))
        .collect()
}

#[test]
fn the_core_programs_run_mounted_and_nothing_is_extracted() {
    let f = fixture();
    let t = TestDir::new();
    let fuse = private(FUSE_FOR_ALL);
    let fuse_no_nix = private(&format!("{FUSE_FOR_ALL}; {NO_NIX}"));
    let deep = t.join("a dir/with spaces");
    std::fs::create_dir_all(&deep).unwrap();
    for l in users(&t) {
        let who = l.uid;
        // On a host with /nix (overlay over the host's store) and without
        // (a new root).
        for prefix in [&fuse, &fuse_no_nix] {
            let r = report(&l.run_with(&strs(prefix), &f.probe_mount, &[]));
            assert_eq!(field(&r, "exe"), format!("{}/bin/probe", f.probe_store), "uid {who}");
            assert_eq!(field(&r, "libc"), format!("{}/lib/libc.so.6", f.glibc_store));
            assert_eq!(field(&r, "uid"), who.to_string());
            assert!(!Path::new(&f.probe_store).exists());
        }
        // A script whose interpreter is another store path.
        let r = report(&l.run_with(&strs(&fuse), &f.greet_mount, &os(&["hello"])));
        assert_eq!(field(&r, "script"), format!("{}/bin/greet", f.script_store));
        assert_eq!(field(&r, "arg1"), hex(b"hello"));
        // Arguments byte for byte, argv[0] the entry point.
        let args: [&[u8]; 4] = [b"with space", b"line1\nline2", b"", b"\xff\xfe non-utf8"];
        let os_args: Vec<&OsStr> = args
            .iter()
            .map(|a| std::os::unix::ffi::OsStrExt::from_bytes(a))
            .collect();
        let r = report(&l.run_with(&strs(&fuse), &f.probe_mount, &os_args));
        assert_eq!(field(&r, "argc"), "5");
        assert_eq!(
            field(&r, "arg0"),
            hex(format!("{}/bin/probe", f.probe_store).as_bytes())
        );
        for (i, a) in args.iter().enumerate() {
            assert_eq!(field(&r, &format!("arg{}", i + 1)), hex(a));
        }
        // The caller's working directory and environment.
        let mut here = l.clone().env("TOTE_TEST_VAR", "from the caller");
        here.cwd = Some(deep.clone());
        let r = report(&here.run_with(&strs(&fuse), &f.probe_mount, &[]));
        assert_eq!(field(&r, "cwd"), deep.to_str().unwrap());
        assert_eq!(field(&r, "env"), "from the caller");
        // stdin, stdout and stderr are the program's.
        let input: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut piped = l.clone();
        piped.stdin = Some(input.clone());
        let o = piped.run_with(&strs(&fuse), &f.probe_mount, &os(&["cat"]));
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(o.stdout, input);
        assert!(o.stderr.is_empty(), "{}", stderr(&o));
        // Exit statuses and deaths by signal pass through.
        for code in [0, 1, 42] {
            let o = l.run_with(&strs(&fuse), &f.probe_mount, &os(&["exit", &code.to_string()]));
            assert_eq!(o.status.code(), Some(code));
        }
        assert_dies_like_the_program(&t, &l, &f.probe_mount, &strs(&fuse));
        assert_nothing_extracted(&t, &l);
    }
}

#[test]
fn runs_mounted_in_a_busybox_rootfs() {
    // No /nix, /usr or glibc; bwrap's /dev with the host's /dev/fuse in it.
    let f = fixture();
    let t = TestDir::new();
    let root = busybox_rootfs(&t, &f.probe_mount);
    for user in USERS {
        let o = Command::new("bwrap")
            .args(user)
            .arg("--bind")
            .arg(&root)
            .args([
                "/",
                "--proc",
                "/proc",
                "--dev",
                "/dev",
                "--dev-bind",
                "/dev/fuse",
                "/dev/fuse",
            ])
            .args(["--setenv", "TOTE_DEBUG", "1", "--chdir", "/tmp", "--", "/app", "x y"])
            .output()
            .unwrap();
        let r = report(&o);
        assert_eq!(field(&r, "exe"), format!("{}/bin/probe", f.probe_store));
        assert_eq!(field(&r, "arg1"), hex(b"x y"));
        assert!(stderr(&o).contains("FUSE mounted on"), "{}", stderr(&o));
    }
}

/// The connection number of the FUSE mount `pid` sees (its `fuse.tote`
/// mount's device minor), as `/sys/fs/fuse/connections` names it.
fn fuse_connection(pid: u32) -> PathBuf {
    let info = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let line = info
        .lines()
        .find(|l| l.contains(" - fuse.tote "))
        .unwrap_or_else(|| panic!("no fuse.tote mount in\n{info}"));
    let dev = line.split_whitespace().nth(2).unwrap();
    let minor = dev.split(':').nth(1).unwrap();
    PathBuf::from(format!("/sys/fs/fuse/connections/{minor}"))
}

/// FUSE's control file system, where every live connection has a directory.
fn fusectl() {
    let dir = Path::new("/sys/fs/fuse/connections");
    let mounted = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.contains(" /sys/fs/fuse/connections "));
    if !mounted {
        let o = Command::new("mount")
            .args(["-t", "fusectl", "fusectl"])
            .arg(dir)
            .output()
            .unwrap();
        assert!(o.status.success() || stderr(&o).contains("busy"), "{}", stderr(&o));
    }
}

fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect()
}

/// Processes whose mount namespace is `ns` (`mnt:[…]`).
fn in_namespace(ns: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/ns/mnt")).is_ok_and(|l| l.to_string_lossy() == ns))
        .collect()
}

/// Poll until `done` or 10 seconds have passed.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(10), "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[derive(Debug, Clone, Copy)]
enum End {
    /// SIGKILL to the launcher, the process the caller started.
    KillLauncher,
    /// SIGKILL to the program.
    KillProgram,
    /// SIGTERM to the launcher, forwarded to the program.
    TermLauncher,
    /// The program exits, leaving a child running in the background.
    ExitWithBackgroundChild,
}

#[test]
fn however_the_program_ends_no_mount_and_no_process_is_left() {
    fusectl();
    let t = TestDir::new();
    // A shell in mount mode, to leave a background child behind.
    let dash = build("dash", "mount-mode");
    let app = t.join("dash");
    bundle(&dash, &app, &["--mode", "mount", "--entrypoint", "bin/dash"]);
    // Without /nix the view binds the FUSE mount itself, so its connection
    // number can be read from the launcher's mountinfo.
    let prefix = private(&format!("{FUSE_FOR_ALL}; {NO_NIX}"));
    let script = "echo ready; if [ \"$1\" = bg ]; then sleep 600 & sleep 0.3; exit 3; fi; exec sleep 600";
    for l in users(&t) {
        for end in [
            End::KillLauncher,
            End::KillProgram,
            End::TermLauncher,
            End::ExitWithBackgroundChild,
        ] {
            let what = format!("uid {}, {end:?}", l.uid);
            let arg = if matches!(end, End::ExitWithBackgroundChild) {
                "bg"
            } else {
                "fg"
            };
            let mut c = l.command(&strs(&prefix), &app, &os(&["-c", script, "sh", arg]));
            let mut child = spawn(c.stdout(Stdio::piped()).stderr(Stdio::piped()));
            let mut line = String::new();
            std::io::BufReader::new(child.stdout.as_mut().unwrap())
                .read_line(&mut line)
                .unwrap();
            assert_eq!(line, "ready\n", "{what}");
            let launcher = child.id();
            let ns = std::fs::read_link(format!("/proc/{launcher}/ns/mnt"))
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let conn = fuse_connection(launcher);
            assert!(conn.exists(), "{what}: {} missing", conn.display());
            let init = children(launcher)[0];
            let program = children(init)[0];
            let kill = |pid: u32, sig| nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig).unwrap();
            use nix::sys::signal::Signal::{SIGKILL, SIGTERM};
            match end {
                End::KillLauncher => kill(launcher, SIGKILL),
                End::KillProgram => kill(program, SIGKILL),
                End::TermLauncher => kill(launcher, SIGTERM),
                End::ExitWithBackgroundChild => {}
            }
            let status = child.wait().unwrap();
            let want = match end {
                End::KillLauncher | End::KillProgram => (Some(9), None),
                End::TermLauncher => (Some(15), None),
                End::ExitWithBackgroundChild => (None, Some(3)),
            };
            assert_eq!((status.signal(), status.code()), want, "{what}");
            eventually(&format!("{what}: processes left in {ns}"), || {
                in_namespace(&ns).is_empty()
            });
            eventually(&format!("{what}: FUSE connection {} left", conn.display()), || {
                !conn.exists()
            });
        }
    }
}

#[test]
fn a_corrupt_block_gives_the_reader_eio_never_wrong_bytes() {
    let t = TestDir::new();
    // A directory with a reader and 1 MiB of incompressible data: eight
    // blocks of 64 KiB; one in the middle is damaged.
    let dir = t.join("input");
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let reader = dir.join("bin/read");
    std::fs::write(
        &reader,
        "#!/bin/sh\nd=$(dirname \"$0\")/../data\ncase $1 in\n  all) exec cat \"$d/blob\" ;;\n  \
         head) exec head -c \"$2\" \"$d/blob\" ;;\n  other) exec cat \"$d/other\" ;;\nesac\n",
    )
    .unwrap();
    std::fs::set_permissions(&reader, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut rng = 0x9e3779b97f4a7c15u64;
    let blob: Vec<u8> = (0..1 << 20)
        .map(|_| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng as u8
        })
        .collect();
    std::fs::write(dir.join("data/blob"), &blob).unwrap();
    std::fs::write(dir.join("data/other"), "intact\n").unwrap();
    let app = t.join("app");
    bundle(
        dir.to_str().unwrap(),
        &app,
        &["--mode", "mount", "--entrypoint", "bin/read"],
    );

    // The block holding the blob's bytes 512 KiB onwards.
    let index = bundle_index(&app);
    let blob_at = index
        .entries
        .iter()
        .find_map(|e| match e.kind {
            tote_format::EntryKind::File { offset, .. } if e.path.ends_with(b"data/blob") => Some(offset),
            _ => None,
        })
        .unwrap();
    let bad = index.blocks_for(blob_at + (512 << 10), 1).start;
    let b = index.blocks[bad];
    assert!(b.rlen <= 64 << 10);
    let mut bytes = std::fs::read(&app).unwrap();
    let at = stub_len(&app) + b.offset + u64::from(b.clen) / 2;
    bytes[at as usize] ^= 0x20;
    std::fs::write(&app, &bytes).unwrap();
    std::fs::set_permissions(&app, std::fs::Permissions::from_mode(0o755)).unwrap();

    let good_until = (b.raw_offset - blob_at) as usize;
    for l in users(&t) {
        let fuse = private(FUSE_FOR_ALL);
        let o = l.run_with(&strs(&fuse), &app, &os(&["all"]));
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        let e = stderr(&o);
        assert!(e.contains("Input/output error"), "{e}");
        assert!(
            e.contains(&format!("block {bad} is corrupt")) && e.contains(app.to_str().unwrap()),
            "{e}"
        );
        // What came out before the error is the blob's own bytes.
        assert_eq!(o.stdout, &blob[..o.stdout.len()]);
        assert!(o.stdout.len() <= good_until);
        // Everything before the damaged block, and other files, read fine.
        let n = good_until.to_string();
        let o = l.run_with(&strs(&fuse), &app, &os(&["head", &n]));
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(o.stdout, &blob[..good_until]);
        let o = l.run_with(&strs(&fuse), &app, &os(&["other"]));
        assert_eq!(o.stdout, b"intact\n");
    }
}

#[test]
fn mount_bundles_have_small_blocks_and_extract_bundles_large_ones() {
    let f = fixture();
    let mounted = bundle_index(&f.probe_mount);
    assert!(mounted.blocks.iter().all(|b| b.rlen <= 64 << 10));
    // The probe's closure holds glibc: several MiB.
    let extracted = bundle_index(&f.probe);
    assert!(extracted.blocks.iter().any(|b| b.rlen > 1 << 20));
    assert!(mounted.blocks.len() > 4 * extracted.blocks.len());
    let info = |app: &Path| {
        let o = Command::new(app).env("TOTE_INFO", "1").output().unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert!(info(&f.probe_mount).contains("mode: mount"));
    assert!(info(&f.probe).contains("mode: auto"));
}

#[test]
fn tote_mode_overrides_the_bundle_and_bad_values_are_refused() {
    let f = fixture();
    let t = TestDir::new();
    let fuse = private(FUSE_FOR_ALL);
    // An auto bundle (small: it would extract) mounted on request, and a
    // mount bundle extracted on request.
    let l = Launch::nobody(&t).env("TOTE_MODE", "mount");
    let r = report(&l.run_with(&strs(&fuse), &f.probe, &[]));
    assert_eq!(field(&r, "exe"), format!("{}/bin/probe", f.probe_store));
    assert_nothing_extracted(&t, &l);
    let l = Launch::root(&t).env("TOTE_MODE", "extract");
    report(&l.run(&f.probe_mount, &[]));
    assert!(t.entries(l.cache.as_ref().unwrap()).len() > 1, "extracted");

    let o = Launch::root(&t).env("TOTE_MODE", "fuse").run(&f.probe_mount, &[]);
    assert_eq!(o.status.code(), Some(113));
    assert_eq!(stderr(&o), "tote: TOTE_MODE=fuse: expected extract, mount or auto\n");
    // Mount mode where /dev/fuse is root's only: extracted instead (the
    // bundle's mode is a preference)...
    let o = Launch::nobody(&t).run(&f.probe_mount, &[]);
    assert_eq!(field(&report(&o), "exe"), format!("{}/bin/probe", f.probe_store));
    assert!(o.stderr.is_empty(), "{}", stderr(&o));
    // ...unless TOTE_NAMESPACE=always asks for mount mode or nothing: one
    // line naming the fix.
    let o = Launch::nobody(&t)
        .env("TOTE_NAMESPACE", "always")
        .run(&f.probe_mount, &[]);
    assert_eq!(o.status.code(), Some(116), "{}", stderr(&o));
    let e = stderr(&o);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(
        e.starts_with("tote: mount mode: /dev/fuse: EACCES") && e.contains("TOTE_MODE=extract"),
        "{e}"
    );
    assert!(o.stdout.is_empty());
}

/// A directory of 130 files of 1 MiB each (compressible, all different):
/// over auto's 128 MiB threshold, so an auto bundle of it mounts.
fn large_auto_bundle(t: &TestDir) -> PathBuf {
    let dir = t.join("large");
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let run = dir.join("bin/run");
    std::fs::write(
        &run,
        "#!/bin/sh\necho \"large ok $(cat \"$(dirname \"$0\")/../data/f077\" | wc -c)\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).unwrap();
    for i in 0..130 {
        let text: String = (0..1 << 14)
            .map(|n| format!("file {i:03} line {n:05} {:.<43}\n", ""))
            .collect();
        assert_eq!(text.len(), 1 << 20);
        std::fs::write(dir.join(format!("data/f{i:03}")), text).unwrap();
    }
    let app = t.join("large-app");
    bundle(
        dir.to_str().unwrap(),
        &app,
        &["--level", "1", "--entrypoint", "bin/run"],
    );
    std::fs::remove_dir_all(&dir).unwrap();
    app
}

#[test]
fn auto_mounts_large_bundles_and_falls_back_silently_where_it_cannot() {
    let t = TestDir::new();
    let app = large_auto_bundle(&t);
    let info = Command::new(&app).env("TOTE_INFO", "1").output().unwrap();
    assert!(String::from_utf8_lossy(&info.stdout).contains("mode: auto"));
    let fuse = private(FUSE_FOR_ALL);
    let want = "large ok 1048576\n";

    // FUSE usable: mounted, nothing extracted.
    let l = Launch::nobody(&t).env("TOTE_DEBUG", "1");
    let o = l.run_with(&strs(&fuse), &app, &[]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), want, "{}", stderr(&o));
    assert!(stderr(&o).contains("FUSE mounted on"), "{}", stderr(&o));
    assert_nothing_extracted(&t, &l);

    // /dev/fuse root's only: extracted, and not a word about it...
    let l = Launch::nobody(&t);
    let o = l.run(&app, &[]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), want);
    assert!(o.stderr.is_empty(), "{}", stderr(&o));
    assert!(t.entries(l.cache.as_ref().unwrap()).len() > 1, "extracted");
    // ...unless TOTE_DEBUG asks why.
    let o = l.clone().env("TOTE_DEBUG", "1").run(&app, &[]);
    assert!(
        stderr(&o).contains("auto: the cache holds this bundle, extract mode"),
        "a complete cache entry is the fastest start: {}",
        stderr(&o)
    );
    let fresh = TestDir::new();
    let o = Launch::nobody(&fresh).env("TOTE_DEBUG", "1").run(&app, &[]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), want);
    assert!(
        stderr(&o).contains("auto: mount mode unusable (/dev/fuse: EACCES (Permission denied)), extracting"),
        "{}",
        stderr(&o)
    );

    // /dev/fuse opens but is no FUSE device (so the mount is refused after
    // the namespaces exist, in the helper that made them): extracted,
    // silently, by a launcher that never joined them.
    let not_fuse = private("mount --bind /dev/null /dev/fuse");
    for l in users(&fresh) {
        let uid = l.uid;
        let cache = |what: &str| {
            let c = fresh.join(format!("cache-not-fuse-{what}-{uid}"));
            std::fs::create_dir(&c).unwrap();
            std::os::unix::fs::chown(&c, Some(uid), Some(uid)).unwrap();
            Some(c)
        };
        let mut quiet = l.clone();
        quiet.cache = cache("quiet");
        let o = quiet.run_with(&strs(&not_fuse), &app, &[]);
        assert_eq!(String::from_utf8_lossy(&o.stdout), want, "uid {uid}: {}", stderr(&o));
        assert!(o.stderr.is_empty(), "uid {uid}: {}", stderr(&o));
        let mut debug = l.env("TOTE_DEBUG", "1");
        debug.cache = cache("debug");
        let o = debug.run_with(&strs(&not_fuse), &app, &[]);
        assert_eq!(String::from_utf8_lossy(&o.stdout), want, "uid {uid}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("auto: mount mode unusable (mounting FUSE on") && stderr(&o).contains(": EINVAL"),
            "uid {uid}: {}",
            stderr(&o)
        );
    }

    // User namespaces refused (bwrap's uid 65534 is the host's root, so
    // /dev/fuse opens): extracted, silently.
    let o = Command::new("bwrap")
        .args(["--unshare-user", "--disable-userns", "--uid", "65534", "--gid", "65534"])
        .args([
            "--bind",
            "/",
            "/",
            "--dev-bind",
            "/dev/fuse",
            "/dev/fuse",
            "--proc",
            "/proc",
        ])
        .arg("--setenv")
        .arg("TOTE_CACHE_DIR")
        .arg(t.join("cache-bwrap"))
        .arg("--")
        .arg(&app)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), want, "{}", stderr(&o));
    assert!(o.stderr.is_empty(), "{}", stderr(&o));
    assert!(t.entries("cache-bwrap").len() > 1, "extracted");
}

#[test]
fn ctrl_c_on_a_terminal_reaches_the_program_once() {
    // The terminal signals its whole foreground process group: the
    // launcher and PID 1 must not forward it again.
    let t = TestDir::new();
    let dash = build("dash", "mount-mode");
    let app = t.join("dash");
    bundle(&dash, &app, &["--mode", "mount", "--entrypoint", "bin/dash"]);
    let script = t.join("loop.sh");
    std::fs::write(
        &script,
        "trap 'echo got-int' INT\necho ready\ni=0\nwhile [ $i -lt 20 ]; do sleep 0.1; i=$((i+1)); done\necho done\n",
    )
    .unwrap();
    // `exec`: a shell left waiting in the foreground group would die of
    // the Ctrl-C itself (`script` runs $SHELL, and dash does not exec the
    // last command of `-c`).
    let cmd = format!(
        "TOTE_CACHE_DIR={} exec {} {}",
        t.cache(0).display(),
        app.display(),
        script.display()
    );
    let mut child = spawn(
        Command::new("script")
            .env("SHELL", "/bin/sh")
            .args(["-q", "-e", "-c", &cmd, "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
    );
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("ready") {
        let mut line = String::new();
        assert!(out.read_line(&mut line).unwrap() > 0, "no ready: {seen}");
        seen += &line;
    }
    use std::io::{Read, Write};
    child.stdin.as_mut().unwrap().write_all(b"\x03").unwrap();
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}: {rest:?}");
    assert_eq!(rest.matches("got-int").count(), 1, "{rest:?}");
    assert!(rest.contains("done"), "{rest:?}");
}
