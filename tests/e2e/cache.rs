//! The cache on a long-lived host: last use, pins, automatic trimming after
//! cold starts, `tote cache ls|prune|rm|verify`, and the races and crashes
//! a shared cache sees (concurrent launches, a prune killed half-way, two
//! Nomad allocations on one host volume).

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use nix::fcntl::{Flock, FlockArg, OFlag};
use nix::sys::stat::Mode;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::support::*;

const MIB: u64 = 1 << 20;

/// A directory bundle (relocatable: run from the cache without
/// namespaces) named `name`: `files` under `data/`, a manifest of their
/// SHA-256, the host's static busybox, and `bin/<name>`, which checks every
/// data file against the manifest (so a launch proves it ran a complete
/// tree), then runs `then` (a shell snippet; `$here` is the tree's top).
fn dir_bundle(t: &TestDir, name: &str, files: &[(String, Vec<u8>)], then: &str, extra: &[&str]) -> PathBuf {
    let d = t.join(format!("in-{name}"));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(d.join("bin")).unwrap();
    fs::create_dir_all(d.join("data")).unwrap();
    fs::copy("/bin/busybox", d.join("bin/busybox")).unwrap();
    let mut manifest = String::new();
    for (f, bytes) in files {
        let p = d.join("data").join(f);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, bytes).unwrap();
        manifest.push_str(&format!("{}  data/{f}\n", hex(&Sha256::digest(bytes))));
    }
    fs::write(d.join("manifest"), manifest).unwrap();
    let run = format!(
        "#!/bin/sh\nhere=$(cd \"$(dirname \"$0\")/..\" && pwd)\ncd \"$here\" && ./bin/busybox sha256sum -c -s manifest || \
         {{ echo \"incomplete tree in $here\" >&2; exit 70; }}\ncd /\n{then}\n"
    );
    let program = format!("bin/{name}");
    fs::write(d.join(&program), run).unwrap();
    fs::set_permissions(d.join(&program), fs::Permissions::from_mode(0o755)).unwrap();
    let out = t.join(name);
    let mut args = vec!["--entrypoint", &program, "--level", "3"];
    args.extend_from_slice(extra);
    bundle(d.to_str().unwrap(), &out, &args);
    fs::remove_dir_all(&d).unwrap();
    out
}

/// `n` small files of `size` bytes whose content depends on `seed`.
fn small_files(seed: &str, n: usize, size: usize) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let mut b = format!("{seed}/{i}\n").into_bytes();
            b.resize(size, b'.');
            (format!("d{}/f{i}", i % 8), b)
        })
        .collect()
}

/// `bytes` of data unique to `seed` (a 64 KiB pseudo-random block,
/// repeated: each version's content differs, and still compresses).
fn big_file(seed: u64, bytes: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let block: Vec<u8> = (0..65536)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    block.iter().copied().cycle().take(bytes).collect()
}

/// The `lazy` fixture bundled, its store paths then deleted from the
/// host's store: what it reads can only come from its cache entry.
pub(crate) fn lazy_bundle(t: &TestDir) -> PathBuf {
    let store = build("lazy", &nonce());
    let out = t.join("lazy");
    bundle(&store, &out, &[]);
    let all = closure(&store);
    let del = Command::new("nix-store")
        .args(["--delete", "--ignore-liveness"])
        .args(&all)
        .output()
        .unwrap();
    assert!(del.status.success(), "nix-store --delete: {}", stderr(&del));
    out
}

pub(crate) fn bundle_id(bundle: &Path) -> String {
    inspect_json(bundle)["bundle_id"].as_str().unwrap().to_owned()
}

/// Launch `bundle` as root with the cache root `cache` and `env`.
fn launch(bundle: &Path, cache: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let l = Launch {
        uid: 0,
        cache: Some(cache.to_path_buf()),
        cwd: Some(PathBuf::from("/")),
        env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        stdin: None,
    };
    l.run(bundle, args)
}

pub(crate) fn launch_ok(bundle: &Path, cache: &Path, env: &[(&str, &str)]) -> String {
    let o = launch(bundle, cache, env, &[]);
    assert!(
        o.status.success(),
        "{} exited {:?}: {}",
        bundle.display(),
        o.status,
        stderr(&o)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn cache_cmd(args: &[&str], root: &Path) -> Output {
    tote()
        .arg("cache")
        .args(args)
        .arg("--root")
        .arg(root)
        .env_remove("TOTE_CACHE_MAX")
        .env_remove("TOTE_CACHE_MAX_AGE")
        .output()
        .unwrap()
}

pub(crate) fn cache_json(args: &[&str], root: &Path) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let o = cache_cmd(&all, root);
    assert!(o.status.success(), "tote cache {args:?}: {}", stderr(&o));
    serde_json::from_slice(&o.stdout).expect("JSON")
}

pub(crate) fn ls(root: &Path) -> Value {
    cache_json(&["ls"], root)
}

/// Entry directory names in the listing.
pub(crate) fn names(l: &Value) -> Vec<String> {
    let mut v: Vec<String> = l["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect();
    v.sort();
    v
}

/// Wait until no trim holds the root and `done` holds for its listing
/// (the trim after a cold start runs in the background); the listing.
pub(crate) fn settled(root: &Path, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let free = {
            let fd = nix::fcntl::open(root, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty()).unwrap();
            Flock::lock(fd, FlockArg::LockExclusiveNonblock).is_ok()
        };
        let l = ls(root);
        if free && done(&l) {
            return l;
        }
        assert!(Instant::now() < end, "{what}: never happened; the root holds {l:#}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Set an entry's last use (its marker's mtime) to `ago` before now.
fn set_last_use(root: &Path, name: &str, ago: Duration) {
    let t = SystemTime::now() - ago;
    let ts = nix::sys::time::TimeSpec::from(t.duration_since(SystemTime::UNIX_EPOCH).unwrap());
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        &root.join(name).join("ok"),
        &ts,
        &ts,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}

fn last_use_age(root: &Path, name: &str) -> Duration {
    let m = fs::metadata(root.join(name).join("ok")).unwrap().modified().unwrap();
    SystemTime::now().duration_since(m).unwrap_or_default()
}

const DAY: u64 = 86400;

/// A launched program that printed `ready` and waits for a line on a FIFO
/// (its first argument) before it goes on.
pub(crate) struct Waiting {
    child: std::process::Child,
    out: std::io::BufReader<std::process::ChildStdout>,
    fifo: PathBuf,
}

impl Waiting {
    /// Launch `bundle` (cache root `root`, `env`) and wait for its `ready`.
    pub(crate) fn start(t: &TestDir, name: &str, bundle: &Path, root: &Path, env: &[(&str, &str)]) -> Waiting {
        let fifo = t.join(format!("go-{name}"));
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)).unwrap();
        let mut l = Launch::root(t).env("TOTE_CACHE_DIR", root.to_str().unwrap());
        for (k, v) in env {
            l = l.env(k, v);
        }
        let mut child = l
            .command(&[], bundle, &[fifo.as_os_str()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        assert_eq!(line, "ready\n", "{name}");
        Waiting { child, out, fifo }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Let it go on; its exit status, the rest of its output and its stderr.
    pub(crate) fn wake(mut self) -> (std::process::ExitStatus, String, String) {
        fs::OpenOptions::new()
            .write(true)
            .open(&self.fifo)
            .unwrap()
            .write_all(b"go\n")
            .unwrap();
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut self.out, &mut rest).unwrap();
        let status = self.child.wait().unwrap();
        let mut err = String::new();
        std::io::Read::read_to_string(&mut self.child.stderr.take().unwrap(), &mut err).unwrap();
        (status, rest, err)
    }
}

#[test]
fn forty_versions_under_a_200m_limit_keep_the_newest_and_stay_under_it() {
    let t = TestDir::new();
    let root = t.cache(0);
    let limit = 200 * MIB;
    let mut ids = Vec::new();
    for v in 0..40u64 {
        let b = dir_bundle(
            &t,
            &format!("v{v}"),
            &[("blob".into(), big_file(v, 20 * MIB as usize))],
            "",
            &[],
        );
        ids.push(bundle_id(&b));
        launch_ok(&b, &root, &[("TOTE_CACHE_MAX", "200M")]);
        fs::remove_file(&b).unwrap();
        let l = settled(&root, &format!("v{v}: the root back under 200M"), |l| {
            l["total_bytes"].as_u64().unwrap() <= limit
        });
        // The newest entries are the ones kept: a run of versions ending
        // with the one just launched.
        let kept = names(&l);
        let k = kept.len();
        let mut newest: Vec<String> = ids[ids.len() - k..].to_vec();
        newest.sort();
        assert_eq!(kept, newest, "v{v}: not the {k} newest");
        if v >= 9 {
            assert!(k >= 8, "v{v}: only {k} entries of ~20 MiB kept under 200 MiB");
        }
    }
}

/// A running program keeps its entry through launches that trim everything
/// else and through `tote cache prune --max-size 1`, then reads files of
/// its tree it never opened before.
#[test]
fn a_running_program_survives_a_prune_and_then_reads_what_it_had_not_opened() {
    let t = TestDir::new();
    let nix = lazy_bundle(&t);
    let dir = dir_bundle(
        &t,
        "lazy-dir",
        &[("lazy.txt".into(), b"lazy data of a directory bundle\n".to_vec())],
        "echo ready; read -r go < \"$1\"; cat \"$here/data/lazy.txt\"",
        &[],
    );
    let others: Vec<PathBuf> = (0..2)
        .map(|i| {
            dir_bundle(
                &t,
                &format!("other{i}"),
                &small_files(&format!("o{i}"), 20, 1000),
                "",
                &[],
            )
        })
        .collect();
    // In namespaces, relocated (no namespaces), and a directory bundle.
    for (what, bundle, env, want) in [
        ("namespaced", &nix, "auto", "lazy data "),
        ("relocated", &nix, "never", "lazy data "),
        ("directory", &dir, "auto", "lazy data of a directory bundle"),
    ] {
        let root = t.cache(0);
        let _ = fs::remove_dir_all(&root);
        let root = t.cache(0);
        let waiting = Waiting::start(&t, what, bundle, &root, &[("TOTE_NAMESPACE", env)]);
        let mine = names(&ls(&root));
        assert_eq!(mine.len(), 1, "{what}");
        assert_eq!(mine[0].len() > 64, what == "relocated", "{what}: {mine:?}");
        // Other versions, each trimming all it can after its cold start
        // (all but the pinned: the entry it runs from, and ours).
        for o in &others {
            launch_ok(o, &root, &[("TOTE_CACHE_MAX", "0")]);
        }
        // (The last one's trim may run before or after its program ends.)
        let first = bundle_id(&others[0]);
        let l = settled(&root, "the trims after the other launches", |l| {
            let n = names(l);
            n.contains(&mine[0]) && !n.contains(&first) && n.len() <= 2
        });
        let e = l["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == mine[0].as_str())
            .unwrap();
        assert_eq!(e["in_use"], true, "{what}: {l:#}");
        assert_eq!(e["pids"][0].as_u64(), Some(u64::from(waiting.pid())), "{what}: {l:#}");
        let p = cache_json(&["prune", "--max-size", "1"], &root);
        assert_eq!(p["kept_in_use"], serde_json::json!([mine[0]]), "{what}: {p:#}");
        assert_eq!(names(&ls(&root)), mine);
        // Wake it: it reads what it had not opened yet.
        let (status, rest, err) = waiting.wake();
        assert!(status.success(), "{what}: {status:?}: {err}");
        assert!(rest.starts_with(want), "{what}: {rest:?} {err}");
        // Not in use any more: the next prune takes it.
        let p = cache_json(&["prune", "--max-size", "1"], &root);
        assert_eq!(p["removed"][0]["name"], mine[0].as_str(), "{what}: {p:#}");
        assert_eq!(names(&ls(&root)), Vec::<String>::new());
        if what == "relocated" {
            let short = mine[0].rsplit('-').next().unwrap();
            assert!(
                fs::symlink_metadata(Path::new("/tmp").join(short)).is_err(),
                "the removal takes the short path /tmp/{short} with it"
            );
        }
    }
}

#[test]
fn entries_unused_for_longer_than_the_age_limit_go_and_warm_starts_record_use_hourly() {
    let t = TestDir::new();
    let root = t.cache(0);
    let b: Vec<PathBuf> = (0..4)
        .map(|i| dir_bundle(&t, &format!("age{i}"), &small_files(&format!("a{i}"), 10, 500), "", &[]))
        .collect();
    let id: Vec<String> = b.iter().map(|x| bundle_id(x)).collect();
    for x in &b[..3] {
        launch_ok(x, &root, &[]);
    }
    settled(&root, "three entries", |l| names(l).len() == 3);
    set_last_use(&root, &id[0], Duration::from_secs(40 * DAY));
    set_last_use(&root, &id[1], Duration::from_secs(10 * DAY));
    let l = ls(&root);
    let age_of = |l: &Value, i: usize| {
        let e = l["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["id"] == id[i].as_str())
            .unwrap();
        let unix = e["last_used_unix"].as_u64().unwrap();
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        (now - unix) / DAY
    };
    assert_eq!(age_of(&l, 0), 40);
    assert_eq!(age_of(&l, 1), 10);
    // Most recently used first.
    assert_eq!(l["entries"][2]["id"], id[0].as_str());
    // `tote cache prune` with no limits given: the launch's (30 days).
    let p = cache_json(&["prune"], &root);
    let removed: Vec<(&str, &str)> = p["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["id"].as_str().unwrap(), r["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(removed, [(id[0].as_str(), "unused")], "{p:#}");
    assert_eq!(p["limits"]["max_age_seconds"], 30 * DAY);
    // A cold start under TOTE_CACHE_MAX_AGE=7d takes the 10-day one too.
    launch_ok(&b[3], &root, &[("TOTE_CACHE_MAX_AGE", "7d")]);
    let l = settled(&root, "the 10-day entry trimmed", |l| names(l).len() == 2);
    let mut want = vec![id[2].clone(), id[3].clone()];
    want.sort();
    assert_eq!(names(&l), want);
    // A warm start records its use once an hour, not more.
    set_last_use(&root, &id[2], Duration::from_secs(1800));
    launch_ok(&b[2], &root, &[]);
    assert!(
        last_use_age(&root, &id[2]) >= Duration::from_secs(1790),
        "touched within the hour"
    );
    set_last_use(&root, &id[2], Duration::from_secs(7200));
    launch_ok(&b[2], &root, &[]);
    assert!(
        last_use_age(&root, &id[2]) < Duration::from_secs(60),
        "not touched after two hours"
    );
    // `tote cache verify` looks without using.
    set_last_use(&root, &id[3], Duration::from_secs(7200));
    cache_json(&["verify"], &root);
    assert!(last_use_age(&root, &id[3]) >= Duration::from_secs(7190));
}

#[test]
fn objects_shared_with_a_kept_entry_survive_and_unlinked_ones_go() {
    let t = TestDir::new();
    let root = t.cache(0);
    let common = big_file(7, 300_000);
    let only_a = b"only in a\n".repeat(1000);
    let only_b = b"only in b\n".repeat(1000);
    let a = dir_bundle(
        &t,
        "sa",
        &[("common".into(), common.clone()), ("mine".into(), only_a.clone())],
        "",
        &[],
    );
    let b = dir_bundle(
        &t,
        "sb",
        &[("common".into(), common.clone()), ("mine".into(), only_b.clone())],
        "",
        &[],
    );
    let (ia, ib) = (bundle_id(&a), bundle_id(&b));
    launch_ok(&a, &root, &[]);
    launch_ok(&b, &root, &[]);
    let object = |bytes: &[u8]| root.join("objects").join(hex(&Sha256::digest(bytes)));
    for o in [&common, &only_a, &only_b] {
        assert!(object(o).exists(), "every file written is an object");
    }
    let l = ls(&root);
    for e in l["entries"].as_array().unwrap() {
        assert!(e["shared_bytes"].as_u64().unwrap() >= 300_000, "{l:#}");
    }
    let total_before = l["total_bytes"].as_u64().unwrap();
    // Counted once: not two copies of the shared file.
    let du = Command::new("du").args(["-s", "-B1"]).arg(&root).output().unwrap();
    let du: u64 = String::from_utf8_lossy(&du.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(total_before, du, "tote cache ls counts as du does");
    set_last_use(&root, &ia, Duration::from_secs(2 * DAY));
    let p = cache_json(&["prune", "--older-than", "1d"], &root);
    assert_eq!(p["removed"][0]["id"], ia.as_str(), "{p:#}");
    assert!(object(&common).exists(), "shared with the kept entry");
    assert!(!object(&only_a).exists(), "linked by no entry any more");
    assert!(object(&only_b).exists());
    let l = ls(&root);
    assert_eq!(names(&l), std::slice::from_ref(&ib));
    assert_eq!(l["entries"][0]["shared_bytes"], 0, "{l:#}");
    assert_eq!(l["unlinked_object_bytes"], 0, "{l:#}");
    let tree_common = root.join(&ib).join("tree/data/common");
    assert_eq!(
        fs::metadata(&tree_common).unwrap().nlink(),
        2,
        "the entry's file and its object"
    );
    let v = cache_json(&["verify"], &root);
    assert_eq!(v["entries"][0]["status"], "ok", "{v:#}");
    // Launching a again links the shared file from the store.
    let o = launch(&a, &root, &[("TOTE_DEBUG", "1")], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    // busybox, the shared file and the script (the same bytes in both).
    assert!(
        stderr(&o).contains("3 files linked from the object store"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn cache_json_follows_its_documented_schema() {
    let validator = crate::cli::json_schema("cache");
    let t = TestDir::new();
    let root = t.cache(0);
    let nix = lazy_bundle(&t);
    let a = dir_bundle(&t, "ja", &small_files("ja", 10, 300), "", &[]);
    let b = dir_bundle(&t, "jb", &small_files("jb", 10, 300), "", &[]);
    let sleeper = dir_bundle(
        &t,
        "jsleep",
        &small_files("js", 3, 300),
        "echo ready; read -r go < \"$1\"",
        &[],
    );
    // No trims after the cold starts: one running late would take the
    // incomplete entry made below.
    let no_trim = [("TOTE_CACHE_MAX", "off"), ("TOTE_CACHE_MAX_AGE", "off")];
    // An entry relocated for a short path, one in use, one damaged, one
    // incomplete.
    let o = launch(
        &nix,
        &root,
        &[no_trim[0], no_trim[1], ("TOTE_NAMESPACE", "never")],
        &["/dev/null"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    launch_ok(&a, &root, &no_trim);
    launch_ok(&b, &root, &no_trim);
    let waiting = Waiting::start(&t, "sleeper", &sleeper, &root, &no_trim);
    let (ia, ib, is) = (bundle_id(&a), bundle_id(&b), bundle_id(&sleeper));
    let victim = root.join(&ia).join("tree/data/d3/f3");
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&victim, b"tampered").unwrap();
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o444)).unwrap();
    fs::remove_file(root.join(&ib).join("ok")).unwrap();

    let l = ls(&root);
    crate::cli::assert_valid(&validator, "cache", &l);
    assert_eq!(l["schema"], "tote-cache-ls/1");
    let entry = |l: &Value, id: &str| {
        l["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["id"] == id)
            .cloned()
            .unwrap()
    };
    let relocated = l["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| !e["relocated_for"].is_null())
        .unwrap();
    let short = relocated["relocated_for"].as_str().unwrap();
    assert!(
        short.starts_with("/tmp/") && short.len() == "/nix/store".len(),
        "{short}"
    );
    assert_eq!(relocated["bundle"], "lazy");
    assert_eq!(entry(&l, &is)["in_use"], true);
    assert_eq!(entry(&l, &ib)["complete"], false);
    assert!(entry(&l, &ib)["last_used"].is_null());
    assert_eq!(entry(&l, &ia)["bundle"], "ja");

    let v = cache_cmd(&["verify", "--json"], &root);
    assert_eq!(v.status.code(), Some(1), "a damaged entry: exit 1");
    let err = stderr(&v);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("1 of 4 entries damaged; tote cache verify --repair removes them"),
        "{err}"
    );
    let v: Value = serde_json::from_slice(&v.stdout).unwrap();
    crate::cli::assert_valid(&validator, "cache", &v);
    let status = |v: &Value, id: &str| entry(v, id)["status"].as_str().unwrap().to_owned();
    assert_eq!(status(&v, &ia), "damaged");
    assert!(
        entry(&v, &ia)["problem"].as_str().unwrap().contains("data/d3/f3"),
        "{v:#}"
    );
    assert_eq!(status(&v, &ib), "incomplete");
    assert_eq!(status(&v, &is), "ok");
    assert_eq!(
        status(&v, relocated["id"].as_str().unwrap()),
        "ok",
        "a relocated tree checks as rewritten"
    );

    let v = cache_json(&["verify", "--repair"], &root);
    crate::cli::assert_valid(&validator, "cache", &v);
    assert_eq!(entry(&v, &ia)["removed"], true);
    assert_eq!(entry(&v, &ib)["removed"], true);
    assert_eq!(entry(&v, &is)["removed"], false);
    launch_ok(&a, &root, &no_trim);

    let p = cache_json(&["prune", "--max-size", "0", "--dry-run"], &root);
    crate::cli::assert_valid(&validator, "cache", &p);
    assert_eq!(p["dry_run"], true);
    assert_eq!(names(&ls(&root)).len(), 3, "a dry run removes nothing");
    let p = cache_json(&["prune", "--max-size", "0"], &root);
    crate::cli::assert_valid(&validator, "cache", &p);
    assert_eq!(p["kept_in_use"], serde_json::json!([is]));
    assert_eq!(p["removed"].as_array().unwrap().len(), 2, "{p:#}");
    assert!(waiting.wake().0.success());

    // No root yet (HOME's, by default): an empty listing.
    let home = t.join("home");
    fs::create_dir_all(&home).unwrap();
    let o = tote()
        .args(["cache", "ls", "--json"])
        .env("HOME", &home)
        .env_remove("TOTE_CACHE_DIR")
        .env_remove("XDG_CACHE_HOME")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let l: Value = serde_json::from_slice(&o.stdout).unwrap();
    crate::cli::assert_valid(&validator, "cache", &l);
    assert_eq!(l["exists"], false);
    assert_eq!(l["root"], home.join(".cache/tote").to_str().unwrap());
}

#[test]
fn the_default_root_is_the_one_a_launch_chooses() {
    let t = TestDir::new();
    let home = t.join("home");
    fs::create_dir_all(&home).unwrap();
    let b = dir_bundle(&t, "homed", &small_files("h", 3, 100), "", &[]);
    let env = |c: &mut Command| {
        c.env("HOME", &home)
            .env_remove("TOTE_CACHE_DIR")
            .env_remove("XDG_CACHE_HOME");
    };
    let o = {
        let mut c = tote();
        c.args(["cache", "ls"]);
        env(&mut c);
        c.output().unwrap()
    };
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains(&format!(
            "no cache yet: a launch by this user would make {}/.cache/tote",
            home.display()
        )),
        "{text}"
    );
    let mut c = Command::new(&b);
    env(&mut c);
    assert!(c.output().unwrap().status.success());
    let mut c = tote();
    c.args(["cache", "ls"]);
    env(&mut c);
    let o = c.output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("homed") && text.contains("idle"), "{text}");
    assert!(
        text.contains(&format!("1 entry in {}/.cache/tote", home.display())),
        "{text}"
    );
}

#[test]
fn bad_limits_roots_and_ids_are_refused_with_one_line() {
    let t = TestDir::new();
    let root = t.cache(0);
    let b = dir_bundle(
        &t,
        "refuse",
        &small_files("r", 3, 100),
        "echo ready; read -r go < \"$1\"",
        &[],
    );
    for (k, v, needle) in [
        (
            "TOTE_CACHE_MAX",
            "abc",
            "TOTE_CACHE_MAX=abc: expected a size such as 2G, 500M or 0, or off",
        ),
        ("TOTE_CACHE_MAX", "-1G", "TOTE_CACHE_MAX=-1G: expected a size"),
        (
            "TOTE_CACHE_MAX_AGE",
            "-1d",
            "TOTE_CACHE_MAX_AGE=-1d: expected a duration such as 30d",
        ),
        (
            "TOTE_CACHE_MAX_AGE",
            "1.5d",
            "TOTE_CACHE_MAX_AGE=1.5d: expected a duration",
        ),
    ] {
        let o = launch(&b, &root, &[(k, v)], &["/dev/null"]);
        assert_eq!(o.status.code(), Some(113), "{k}={v}: {}", stderr(&o));
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("tote: ") && err.contains(needle), "{err}");
    }
    assert_eq!(t.entries(&root), Vec::<String>::new(), "nothing made");

    let one_line = |o: &Output, code: i32, needle: &str| {
        let err = stderr(o);
        assert_eq!(o.status.code(), Some(code), "{err}");
        assert!(err.contains(needle), "{needle:?} not in {err}");
        if code == 1 {
            assert_eq!(err.lines().count(), 1, "{err}");
            assert!(err.starts_with("tote: "), "{err}");
        }
    };
    one_line(
        &cache_cmd(&["ls"], &t.join("nowhere")),
        1,
        "no such directory; check --root",
    );
    one_line(
        &cache_cmd(&["prune"], Path::new("/etc")),
        1,
        "/etc is not a tote cache root",
    );
    assert!(Path::new("/etc/passwd").exists());
    let theirs = t.cache(NOBODY);
    one_line(
        &cache_cmd(&["ls"], &theirs),
        1,
        "owned by uid 65534, not 0; run tote cache as its owner (e.g. sudo -u '#65534' tote cache",
    );
    one_line(
        &cache_cmd(&["prune", "--older-than", "-1d"], &root),
        2,
        "expected a duration",
    );
    one_line(
        &cache_cmd(&["prune", "--max-size", "lots"], &root),
        2,
        "expected a size",
    );
    one_line(&cache_cmd(&["rm", "zz"], &root), 1, "\"zz\": not an entry id");
    one_line(&cache_cmd(&["rm", "0000"], &root), 1, "no entry 0000 in");
    let o = tote()
        .args(["cache", "ls"])
        .env("TOTE_CACHE_DIR", &root)
        .env("TOTE_CACHE_MAX", "abc")
        .output()
        .unwrap();
    one_line(&o, 1, "TOTE_CACHE_MAX=abc: expected a size");

    // rm: an entry in use is refused, and removed with --force (which says
    // what that risks; the program fails to read what it had not opened).
    let waiting = Waiting::start(&t, "refuse", &b, &root, &[]);
    let id = bundle_id(&b);
    let short = &id[..12];
    one_line(
        &cache_cmd(&["rm", short], &root),
        1,
        &format!(
            "entry {short} (refuse) is in use (pid {}): a running program reads its files from it; --force",
            waiting.pid()
        ),
    );
    assert!(root.join(&id).join("ok").exists());
    let o = cache_cmd(&["rm", "--force", &id[..6]], &root);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("tote: warning: removing entry"), "{}", stderr(&o));
    assert!(stderr(&o).contains("any it opens from now on"), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains(&format!("removed {short} (refuse,")));
    assert!(!root.join(&id).exists());
    assert!(waiting.wake().0.success());
}

/// `tote cache prune --max-size 0` in a loop while 16 launches start at
/// once: 8 of a bundle whose entry the prune keeps removing, 8 of bundles
/// never launched, all with TOTE_CACHE_MAX=0 (so every cold start trims
/// everything it can, too). Every launch runs a complete tree.
#[test]
fn prunes_racing_sixteen_cold_launches_never_break_one() {
    let t = TestDir::new();
    let root = t.cache(0);
    let pruned = dir_bundle(&t, "pruned", &small_files("p", 300, 2000), "", &[]);
    let fresh: Vec<PathBuf> = (0..8)
        .map(|i| {
            dir_bundle(
                &t,
                &format!("fresh{i}"),
                &small_files(&format!("f{i}"), 300, 2000),
                "",
                &[],
            )
        })
        .collect();
    launch_ok(&pruned, &root, &[]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pruner = {
        let (stop, root) = (stop.clone(), root.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let o = cache_cmd(&["prune", "--max-size", "0"], &root);
                assert!(o.status.success(), "prune: {}", stderr(&o));
                n += 1;
            }
            n
        })
    };
    let launches: Vec<_> = (0..16)
        .map(|i| {
            let b = if i % 2 == 0 {
                pruned.clone()
            } else {
                fresh[i / 2].clone()
            };
            let root = root.clone();
            std::thread::spawn(move || (b.clone(), launch(&b, &root, &[("TOTE_CACHE_MAX", "0")], &[])))
        })
        .collect();
    let mut failed = Vec::new();
    for l in launches {
        let (b, o) = l.join().unwrap();
        if !o.status.success() {
            failed.push(format!("{}: {:?}: {}", b.display(), o.status, stderr(&o)));
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let prunes = pruner.join().unwrap();
    assert!(
        failed.is_empty(),
        "{} launches failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
    assert!(prunes >= 1);
    let v = cache_json(&["verify"], &root);
    for e in v["entries"].as_array().unwrap() {
        assert_eq!(e["status"], "ok", "{v:#}");
    }
}

/// A tiny deterministic generator (the seed is printed on failure).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// Every entry with a marker has its whole tree: the files its manifest
/// names are all there (the launches check their content).
fn markers_have_trees(root: &Path, files: usize) -> Result<(), String> {
    for e in fs::read_dir(root).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.len() != 64 || !e.path().join("ok").exists() {
            continue;
        }
        let data = e.path().join("tree/data");
        let n = walk_count(&data);
        if n != files {
            return Err(format!("{name} has its marker but {n} of {files} files"));
        }
    }
    Ok(())
}

fn walk_count(p: &Path) -> usize {
    fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .map(|e| if e.path().is_dir() { walk_count(&e.path()) } else { 1 })
                .sum()
        })
        .unwrap_or(0)
}

/// A prune killed with SIGKILL at a random point, 100 times: after each,
/// every entry with a marker has its tree, every launch works, and the
/// next prune cleans up what the killed one left.
#[test]
fn a_prune_killed_at_any_point_leaves_a_cache_every_launch_and_prune_accepts() {
    let t = TestDir::new();
    let root = t.cache(0);
    const FILES: usize = 400;
    let bundles: Vec<PathBuf> = (0..3)
        .map(|i| {
            dir_bundle(
                &t,
                &format!("k{i}"),
                &small_files(&format!("k{i}"), FILES, 4096),
                "",
                &[],
            )
        })
        .collect();
    let fill = || {
        for b in &bundles {
            launch_ok(b, &root, &[("TOTE_CACHE_MAX", "off"), ("TOTE_CACHE_MAX_AGE", "off")]);
        }
    };
    let prune = || {
        Command::new(env!("CARGO_BIN_EXE_tote"))
            .args(["cache", "prune", "--max-size", "0", "--root"])
            .arg(&root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    // How long one takes, unkilled: the kills land anywhere in it.
    fill();
    let start = Instant::now();
    assert!(prune().wait().unwrap().success());
    let span = start.elapsed().as_micros() as u64;
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let mut rng = Rng(seed);
    let mut interrupted = 0;
    for round in 0..100 {
        fill();
        let mut p = prune();
        std::thread::sleep(Duration::from_micros(rng.below(span)));
        let _ = p.kill();
        let _ = p.wait();
        let left = fs::read_dir(&root)
            .unwrap()
            .flatten()
            .filter(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.starts_with(".tmp-") || (n.len() == 64 && !e.path().join("ok").exists())
            })
            .count();
        if left > 0 {
            interrupted += 1;
        }
        if let Err(e) = markers_have_trees(&root, FILES) {
            panic!("round {round} (seed {seed}, span {span} us): {e}");
        }
        if round % 20 == 19 {
            let v = cache_json(&["verify"], &root);
            for e in v["entries"].as_array().unwrap() {
                assert!(
                    matches!(e["status"].as_str(), Some("ok" | "incomplete")),
                    "round {round} (seed {seed}): {v:#}"
                );
            }
        }
    }
    eprintln!("{interrupted} of 100 kills landed during a removal (seed {seed}, span {span} us)");
    assert!(
        interrupted >= 3,
        "only {interrupted} of 100 kills landed during a removal (seed {seed}, span {span} us)"
    );
    // Every launch works, and one prune leaves nothing behind.
    fill();
    let p = cache_json(&["prune", "--max-size", "0"], &root);
    assert_eq!(p["removed"].as_array().unwrap().len(), 3, "{p:#}");
    let left: Vec<String> = t.entries(&root).into_iter().filter(|n| n != "objects").collect();
    assert_eq!(left, Vec::<String>::new());
    assert_eq!(
        fs::read_dir(root.join("objects"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name() != ".boot")
            .count(),
        0
    );
}

/// Two allocations of one job on one client, sharing a host volume: they
/// start the same new version at once (one extracts, the other waits for
/// it), and a third starts warm.
#[test]
fn nomad_allocations_on_one_client_share_the_cache_volume() {
    let t = TestDir::new();
    let file = dir_bundle(
        &t,
        "shared",
        &small_files("n", 500, 4096),
        "echo \"ran from $here\"",
        &[],
    );
    let garage = crate::nomad::Garage::start(&t);
    garage.upload(&file, "shared");
    let text = garage.job(
        &file,
        "shared",
        &[
            "--cache-volume",
            "tote-cache",
            "--cache-max",
            "2G",
            "--env",
            "TOTE_DEBUG=1",
        ],
    );
    let body = hcl::parse(&text).unwrap();
    let job = body.blocks().next().unwrap();
    let group = job.body().blocks().find(|b| b.identifier() == "group").unwrap();
    assert!(group.body().blocks().any(|b| b.identifier() == "volume"), "{text}");
    assert!(text.contains("TOTE_CACHE_DIR = \"/tote-cache\""), "{text}");
    assert!(text.contains("TOTE_CACHE_MAX = \"2G\""), "{text}");
    let job_file = t.join("shared.nomad.hcl");
    fs::write(&job_file, &text).unwrap();
    // The client's host volume: a directory the task's user owns, 0700.
    let volume = t.cache(NOBODY);
    let sim = |alloc: &str| {
        Command::new(crate::nomad::sim_binary())
            .arg(&job_file)
            .arg("--alloc-dir")
            .arg(t.join(alloc))
            .args([
                OsStr::new("--host-volume"),
                OsStr::new(&format!("tote-cache={}", volume.display())),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let both = [sim("a1"), sim("a2")];
    for (i, c) in both.into_iter().enumerate() {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "allocation {i}: {}", stderr(&o));
    }
    let logs = |alloc: &str| {
        let d = t.join(alloc).join("alloc/logs");
        (
            fs::read_to_string(d.join("shared.stdout.0")).unwrap(),
            fs::read_to_string(d.join("shared.stderr.0")).unwrap(),
        )
    };
    let id = bundle_id(&file);
    for a in ["a1", "a2"] {
        let (out, err) = logs(a);
        assert!(
            out.contains(&format!("ran from /tote-cache/{id}/tree")),
            "{a}: {out}\n{err}"
        );
    }
    let cold = ["a1", "a2"]
        .iter()
        .filter(|a| logs(a).1.contains("cold: no complete cache entry"))
        .count();
    assert_eq!(cold, 1, "one allocation extracts, the other uses its entry");
    let o = sim("a3").wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let (_, err) = logs("a3");
    assert!(err.contains("warm:"), "{err}");
    // One entry, owned by the task's user.
    let entries: Vec<String> = t.entries(&volume).into_iter().filter(|n| n.len() == 64).collect();
    assert_eq!(entries, std::slice::from_ref(&id));
    assert_eq!(fs::metadata(volume.join(&id)).unwrap().uid(), NOBODY);
}

/// The trim after a cold start runs from a copy of the stub in memory: the
/// bundle file is free the moment the program ends, so a new version can
/// be written over it at once (no "Text file busy"), as over the program.
#[test]
fn a_new_version_can_be_written_over_a_bundle_right_after_its_cold_start() {
    let t = TestDir::new();
    let root = t.cache(0);
    let versions: Vec<Vec<u8>> = (0..10)
        .map(|i| {
            let b = dir_bundle(
                &t,
                &format!("busy{i}"),
                &small_files(&format!("b{i}"), 50, 1000),
                "",
                &[],
            );
            fs::read(&b).unwrap()
        })
        .collect();
    let app = t.join("app");
    fs::write(&app, &versions[0]).unwrap();
    fs::set_permissions(&app, fs::Permissions::from_mode(0o755)).unwrap();
    for (i, next) in versions.iter().enumerate().skip(1) {
        launch_ok(&app, &root, &[("TOTE_CACHE_MAX", "0")]);
        if let Err(e) = fs::write(&app, next) {
            panic!("writing version {i} over the bundle right after a cold start: {e}");
        }
    }
}
