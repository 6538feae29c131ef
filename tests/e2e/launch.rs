//! Running a bundle: where, as whom, and how exactly like the program.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Stdio;

use crate::support::*;

fn assert_ran_from_bundle(r: &[(String, String)], f: &Fixture) {
    assert_eq!(field(r, "exe"), format!("{}/bin/probe", f.probe_store));
    assert_eq!(field(r, "libc"), format!("{}/lib/libc.so.6", f.glibc_store));
    // A thread ended by pthread_exit: glibc found libgcc_s in the closure.
    assert_eq!(field(r, "thread"), "42");
    // The store paths were deleted after bundling: only the bundle has them.
    assert!(!Path::new(&f.probe_store).exists());
}

#[test]
fn runs_as_root_from_its_own_closure() {
    let f = fixture();
    let t = TestDir::new();
    let r = report(&Launch::root(&t).run(&f.probe, &[]));
    assert_ran_from_bundle(&r, f);
    assert_eq!(field(&r, "uid"), "0");
}

/// A cold start joins the namespaces only once its extraction threads are
/// gone: setns refuses a multi-threaded caller, and a thread that was
/// joined may linger in the kernel (under load, a few cold starts in a
/// hundred). With TOTE_NAMESPACE=always such a refusal would exit 116
/// instead of going unnoticed into a relocated launch.
#[test]
fn cold_starts_as_root_and_as_nobody_always_join_the_namespaces() {
    let f = fixture();
    let t = TestDir::new();
    for (i, l) in [Launch::root(&t), Launch::nobody(&t)].into_iter().enumerate() {
        let cache = l.cache.clone().unwrap();
        let l = l.env("TOTE_NAMESPACE", "always");
        for round in 0..25 {
            let o = l.run(&f.probe, &[]);
            assert!(o.status.success(), "launcher {i}, cold start {round}: {}", stderr(&o));
            assert_ran_from_bundle(&report(&o), f);
            for e in std::fs::read_dir(&cache).unwrap().flatten() {
                if e.file_name().len() == 64 {
                    tote_cache_rm(&e.path());
                }
            }
        }
    }
}

/// Remove a cache entry the way a test may (its tree is read-only).
fn tote_cache_rm(entry: &Path) {
    let o = std::process::Command::new("chmod")
        .args(["-R", "u+w"])
        .arg(entry)
        .output()
        .unwrap();
    assert!(o.status.success());
    std::fs::remove_dir_all(entry).unwrap();
}

#[test]
fn runs_as_nobody() {
    let f = fixture();
    let t = TestDir::new();
    let r = report(&Launch::nobody(&t).run(&f.probe, &[]));
    assert_ran_from_bundle(&r, f);
    assert_eq!(field(&r, "uid"), NOBODY.to_string());
}

#[test]
fn runs_as_nobody_with_the_default_cache_root() {
    // No TOTE_CACHE_DIR, HOME=/nonexistent as under Nomad: falls back to /tmp.
    let f = fixture();
    let t = TestDir::new();
    let mut l = Launch::nobody(&t);
    l.cache = None;
    let o = l.clone().env("TOTE_DEBUG", "1").run(&f.probe, &[]);
    assert_ran_from_bundle(&report(&o), f);
    assert!(
        stderr(&o).contains(&format!("cache root /tmp/tote-{NOBODY}")),
        "{}",
        stderr(&o)
    );
}

#[test]
fn runs_where_nix_is_an_empty_tmpfs() {
    let f = fixture();
    let t = TestDir::new();
    for l in [Launch::root(&t), Launch::nobody(&t)] {
        let o = l.run_with(
            &[
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                "mount -t tmpfs none /nix && exec \"$@\"",
                "sh",
            ],
            &f.probe,
            &[],
        );
        assert_ran_from_bundle(&report(&o), f);
    }
}

#[test]
fn runs_in_a_busybox_rootfs_without_nix_usr_or_glibc() {
    let f = fixture();
    let t = TestDir::new();
    for user in USERS {
        let r = report(&in_busybox_root(&t, &f.probe, &["x y"], user));
        assert_ran_from_bundle(&r, f);
        assert_eq!(field(&r, "cwd"), "/work");
        assert_eq!(field(&r, "arg1"), hex(b"x y"));
        assert_eq!(field(&r, "env"), "from-caller");
        if !user.is_empty() {
            assert_eq!(field(&r, "uid"), "65534");
        }
    }
    assert!(is_static(&t.join("rootfs/bin/busybox")), "busybox-static is required");
}

#[test]
fn script_with_its_interpreter_in_another_store_path() {
    let f = fixture();
    let t = TestDir::new();
    for l in [Launch::root(&t), Launch::nobody(&t)] {
        let o = l.run(&f.greet, &["hello"]);
        let r = report(&o);
        assert_eq!(field(&r, "script"), format!("{}/bin/greet", f.script_store));
        assert_eq!(field(&r, "arg1"), hex(b"hello"));
        assert_ran_from_bundle(&r, f);
    }
}

#[test]
fn argv_arrives_unchanged_and_argv0_is_the_entry_point() {
    let f = fixture();
    let t = TestDir::new();
    let args: Vec<&[u8]> = vec![
        b"with space",
        b"line1\nline2",
        b"",
        b"\xff\xfe non-utf8",
        b"--help",
        b"-",
    ];
    let os: Vec<&OsStr> = args.iter().map(|a| OsStr::from_bytes(a)).collect();
    for l in [Launch::root(&t), Launch::nobody(&t)] {
        let r = report(&l.run_with(&[], &f.probe, &os));
        assert_eq!(field(&r, "argc"), (args.len() + 1).to_string());
        assert_eq!(
            field(&r, "arg0"),
            hex(format!("{}/bin/probe", f.probe_store).as_bytes())
        );
        for (i, a) in args.iter().enumerate() {
            assert_eq!(field(&r, &format!("arg{}", i + 1)), hex(a), "argument {i}");
        }
    }
}

#[test]
fn stdin_stdout_and_stderr_are_the_programs() {
    let f = fixture();
    let t = TestDir::new();
    let input: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut l = Launch::nobody(&t);
    l.stdin = Some(input.clone());
    let o = l.run(&f.probe, &["cat"]);
    assert!(o.status.success());
    assert_eq!(o.stdout, input);
    assert!(o.stderr.is_empty());

    let o = Launch::root(&t).run(&f.probe, &["stderr", "to stderr only"]);
    assert!(o.stdout.is_empty());
    assert_eq!(o.stderr, b"to stderr only");
}

#[test]
fn cwd_and_environment_are_the_callers() {
    let f = fixture();
    let t = TestDir::new();
    let deep = t.join("a dir/with spaces");
    std::fs::create_dir_all(&deep).unwrap();
    for mut l in [Launch::root(&t), Launch::nobody(&t)] {
        l.cwd = Some(deep.clone());
        let r = report(&l.env("TOTE_TEST_VAR", "from the caller").run(&f.probe, &[]));
        assert_eq!(field(&r, "cwd"), deep.to_str().unwrap());
        assert_eq!(field(&r, "env"), "from the caller");
    }
}

#[test]
fn the_program_replaces_the_launcher_in_place() {
    // Same PID as the process we started: no supervisor, signals go straight
    // to the program.
    let f = fixture();
    let t = TestDir::new();
    for l in [Launch::root(&t), Launch::nobody(&t)] {
        let child = spawn(l.command(&[], &f.probe, &[]).stdout(Stdio::piped()));
        let pid = child.id();
        let r = report(&child.wait_with_output().unwrap());
        assert_eq!(field(&r, "pid"), pid.to_string());
    }
}

#[test]
fn exit_status_passes_through() {
    let f = fixture();
    let t = TestDir::new();
    for code in [0, 1, 42] {
        let o = Launch::nobody(&t).run(&f.probe, &["exit", &code.to_string()]);
        assert_eq!(o.status.code(), Some(code));
    }
}

#[test]
fn death_by_signal_looks_like_a_direct_run() {
    let f = fixture();
    let t = TestDir::new();
    assert_dies_like_the_program(&t, &Launch::root(&t), &f.probe, &[]);
}

#[test]
fn second_launch_is_warm_and_other_bundles_get_other_entries() {
    let f = fixture();
    let t = TestDir::new();
    let l = Launch::nobody(&t).env("TOTE_DEBUG", "1");
    let first = l.run(&f.probe, &[]);
    assert!(stderr(&first).contains("cold:"), "{}", stderr(&first));
    let cache = l.cache.clone().unwrap();
    let entries = bundle_entries(&t, &cache);
    assert_eq!(entries.len(), 1, "{entries:?}");
    let ino = std::fs::metadata(cache.join(&entries[0]).join("tree")).unwrap().ino();

    let second = l.run(&f.probe, &[]);
    assert!(stderr(&second).contains("warm:"), "{}", stderr(&second));
    assert!(!stderr(&second).contains("cold:"));
    let without_pid = |o| report(o).into_iter().filter(|(k, _)| k != "pid").collect::<Vec<_>>();
    assert_eq!(without_pid(&second), without_pid(&first));
    assert_eq!(
        std::fs::metadata(cache.join(&entries[0]).join("tree")).unwrap().ino(),
        ino
    );

    report(&l.run(&f.greet, &[]));
    let after = bundle_entries(&t, &cache);
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(after.contains(&entries[0]));
}

/// Cache entries (named by bundle id), without the shared object store.
fn bundle_entries(t: &TestDir, cache: &Path) -> Vec<String> {
    t.entries(cache)
        .into_iter()
        .filter(|n| n != "objects" && !n.starts_with("."))
        .collect()
}

#[test]
fn an_update_extracts_only_what_the_cache_lacks() {
    // greet's closure (script, dash, probe, glibc) contains probe's (probe,
    // glibc): after probe ran, greet's first launch links those files from
    // the object store and decompresses only blocks holding the rest.
    let f = fixture();
    let t = TestDir::new();
    let l = Launch::nobody(&t).env("TOTE_DEBUG", "1");
    report(&l.run(&f.probe, &[]));
    let o = l.run(&f.greet, &["x"]);
    assert_eq!(field(&report(&o), "arg1"), hex(b"x"));
    let log = stderr(&o);
    let line = log
        .lines()
        .find(|l| l.contains("files linked from the object store"))
        .expect(&log);
    // "... extracted: W files (S bytes) written from B of N blocks, L files linked ..."
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    let [written, bytes, blocks, total, linked] = nums[nums.len() - 5..] else {
        panic!("{line}")
    };
    assert!(linked >= 4, "{line}"); // probe, ld.so, libc, libm, ...
    assert!(written >= 2, "{line}"); // greet, dash
    assert!(blocks < total, "{line}");
    // `tote diff` predicted exactly that.
    let d = tote()
        .arg("diff")
        .arg("--json")
        .arg(&f.probe)
        .arg(&f.greet)
        .output()
        .unwrap();
    let d: serde_json::Value = serde_json::from_slice(&d.stdout).unwrap();
    let x = &d["extract"];
    assert_eq!(
        [written, bytes, blocks, total, linked],
        ["files", "bytes", "blocks", "blocks_total", "linked_files"].map(|k| x[k].as_u64().unwrap()),
        "{line}"
    );
    let added: Vec<&str> = d["items"]["added"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["path"].as_str().unwrap())
        .collect();
    assert!(added.contains(&f.script_store.as_str()), "{d:#}");
    assert_eq!(d["items"]["removed"], serde_json::json!([]));

    // The shared files are one inode in both entries.
    let cache = l.cache.clone().unwrap();
    let libc = |entry: &String| {
        let p = cache
            .join(entry)
            .join("tree")
            .join(&f.glibc_store[1..])
            .join("lib/libc.so.6");
        std::fs::metadata(p).unwrap().ino()
    };
    let entries = bundle_entries(&t, &cache);
    assert_eq!(entries.len(), 2);
    assert_eq!(libc(&entries[0]), libc(&entries[1]));
}

/// Regression: extracted files carried the extraction time, so CPython's
/// `.pyc` files (which record their source's mtime, 1 in a Nix store) all
/// looked stale and every launch recompiled the standard library.
#[test]
fn cache_entries_look_like_the_store_read_only_with_mtime_1() {
    let f = fixture();
    let t = TestDir::new();
    let l = Launch::nobody(&t);
    report(&l.run(&f.probe, &[]));
    let cache = l.cache.unwrap();
    let entry = cache.join(&bundle_entries(&t, &cache)[0]);
    let bin = entry.join("tree").join(&f.probe_store[1..]).join("bin");
    assert_eq!(std::fs::metadata(bin.join("probe")).unwrap().mode() & 0o7777, 0o555);
    assert_eq!(std::fs::metadata(&bin).unwrap().mode() & 0o7777, 0o555);
    let tree = entry.join("tree");
    let mut checked = 0;
    let mut stack = vec![tree.clone()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        if p != tree {
            assert_eq!(m.mtime(), 1, "{}", p.display());
            checked += 1;
        }
        if m.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
    }
    assert!(checked > 5);
}

#[test]
fn tote_extract_writes_the_tree_and_exits() {
    let f = fixture();
    let t = TestDir::new();
    let parent = t.cache(NOBODY); // a directory nobody may write to
    let dest = parent.join("out");
    let o = Launch::nobody(&t)
        .env("TOTE_EXTRACT", dest.to_str().unwrap())
        .run(&f.probe, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(o.stdout.is_empty(), "the program must not run");
    let probe = dest.join(&f.probe_store[1..]).join("bin/probe");
    assert_eq!(std::fs::metadata(&probe).unwrap().mode() & 0o111, 0o111);
    assert_eq!(std::fs::metadata(&probe).unwrap().uid(), NOBODY);
    // Not empty now: a second extraction is refused with the usage code.
    let o = Launch::nobody(&t)
        .env("TOTE_EXTRACT", dest.to_str().unwrap())
        .run(&f.probe, &[]);
    assert_eq!(o.status.code(), Some(113));
    assert!(stderr(&o).starts_with("tote: TOTE_EXTRACT="), "{}", stderr(&o));
    assert_eq!(t.entries(&parent), ["out"]);
}

#[test]
fn tote_info_prints_metadata_and_exits() {
    let f = fixture();
    let t = TestDir::new();
    let l = Launch::nobody(&t);
    let o = l.clone().env("TOTE_INFO", "1").run(&f.probe, &[]);
    assert_eq!(o.status.code(), Some(0));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(&format!("entry point: {}/bin/probe", f.probe_store)),
        "{out}"
    );
    assert!(out.contains("bundle id: "));
    assert!(out.contains(&format!("format version: {}", tote_format::VERSION)));
    assert!(out.contains("architecture: x86_64\n"), "{out}");
    assert!(out.contains("mode: auto"), "{out}");
    assert!(out.contains("mount (layer): nix/store -> /nix/store"), "{out}");
    assert!(t.entries(l.cache.unwrap()).is_empty(), "TOTE_INFO must not extract");
}

#[test]
fn as_pid1_it_forwards_signals_and_returns_the_status() {
    let f = fixture();
    let t = TestDir::new();
    let pidns = ["unshare", "--pid", "--fork", "--mount-proc"];
    let os = |a: &[&str]| a.iter().map(|s| OsStr::new(*s).to_os_string()).collect::<Vec<_>>();
    let o = Launch::root(&t).run_with(
        &pidns,
        &f.probe,
        &os(&["exit", "7"]).iter().map(|s| s.as_os_str()).collect::<Vec<_>>(),
    );
    assert_eq!(o.status.code(), Some(7));
    let o = Launch::root(&t).run_with(
        &pidns,
        &f.probe,
        &os(&["kill", "15"]).iter().map(|s| s.as_os_str()).collect::<Vec<_>>(),
    );
    assert_eq!(o.status.code(), Some(128 + 15));

    // SIGTERM sent from outside to PID 1 reaches the program.
    let mut c = Launch::root(&t).command(&pidns, &f.probe, &[OsStr::new("sleep")]);
    let mut child = spawn(c.stdout(Stdio::piped()).stderr(Stdio::piped()));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.as_mut().unwrap()), &mut line).unwrap();
    assert_eq!(line, "ready\n");
    let children = std::fs::read_to_string(format!("/proc/{}/task/{}/children", child.id(), child.id())).unwrap();
    let init: i32 = children.split_whitespace().next().unwrap().parse().unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(init), nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(128 + 15));
}
