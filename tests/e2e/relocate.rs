//! Launching where user namespaces are refused (relocated launches), with
//! each refusal made for real, as uid 65534 with /nix hidden:
//! - user.max_user_namespaces at 0 (a user namespace whose limit is 0; and
//!   `bwrap --disable-userns`);
//! - Docker's default seccomp profile (unshare and clone with
//!   CLONE_NEWUSER refused, clone3 ENOSYS);
//! - Ubuntu 24.04's AppArmor restriction as it looks from inside (a user
//!   namespace, but mount, pivot_root and the new mount API refused);
//! - a chroot, as Nomad's `no_pivot_root`;
//! - a real container engine (podman) with its default profile and with a
//!   Docker-like one.
//!
//! The refusals other than bwrap are exec chains (`tests/fixtures/refuse.c`,
//! `coreutils chroot`), so that exit statuses and deaths by signal reach the
//! test as the program's own.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::nomad::{first_200, flask_job, free_port, pid_ns_members, Task};
use crate::support::*;

/// How a simulated host refuses user namespaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Host {
    /// user.max_user_namespaces is 0.
    Exhausted,
    /// Docker's and Kubernetes' default seccomp profile.
    Docker,
    /// A user namespace can be made, but nothing can be mounted in it.
    AppArmor,
    /// A chroot: no user namespace can be made in one.
    Chroot,
}

const HOSTS: [Host; 4] = [Host::Exhausted, Host::Docker, Host::AppArmor, Host::Chroot];

/// Test tools built once: the `refuse` helper and the seccomp filters.
pub(crate) struct Tools {
    _dir: TestDir,
    pub(crate) refuse: PathBuf,
    filters: PathBuf,
}

pub(crate) fn tools() -> &'static Tools {
    static T: OnceLock<Tools> = OnceLock::new();
    T.get_or_init(|| {
        let dir = TestDir::new();
        let refuse = dir.join("refuse");
        let cc = Command::new("gcc")
            .args(["-O2", "-Wall", "-o"])
            .arg(&refuse)
            .arg(repo().join("tests/fixtures/refuse.c"))
            .output()
            .unwrap();
        assert!(cc.status.success(), "gcc refuse.c: {}", stderr(&cc));
        for kind in [
            "docker",
            "apparmor",
            "nothreads",
            "exhausted",
            "notmpfile",
            "json-docker",
        ] {
            let o = Command::new("/usr/bin/python3")
                .arg(repo().join("tests/fixtures/seccomp-filter"))
                .arg(kind)
                .arg(dir.join(kind))
                .output()
                .unwrap();
            assert!(o.status.success(), "seccomp-filter {kind}: {}", stderr(&o));
        }
        fs::set_permissions(dir.join("json-docker"), fs::Permissions::from_mode(0o644)).unwrap();
        Tools {
            refuse,
            filters: dir.path().to_path_buf(),
            _dir: dir,
        }
    })
}

pub(crate) fn filter(kind: &str) -> PathBuf {
    tools().filters.join(kind)
}

/// A launch on a simulated host, as uid 65534 with /nix hidden.
struct Refusing<'t> {
    host: Host,
    t: &'t TestDir,
    /// Under a new PID namespace, so the bundle is PID 1.
    pid1: bool,
    env: Vec<(String, String)>,
    stdin: Option<Vec<u8>>,
    /// The chroot's busybox root (Chroot only).
    chroot: Option<PathBuf>,
}

impl<'t> Refusing<'t> {
    fn new(host: Host, t: &'t TestDir) -> Refusing<'t> {
        Refusing {
            host,
            t,
            pid1: false,
            env: vec![("TOTE_TEST_VAR".into(), "from-caller".into())],
            stdin: None,
            chroot: None,
        }
    }

    fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    /// The cache root the launches use: owned by 65534, outside the chroot.
    fn cache(&self) -> PathBuf {
        self.t.cache(NOBODY)
    }

    /// Run `bundle args…` on this host, in `cwd` (made, open to all).
    fn run(&self, bundle: &Path, args: &[&[u8]]) -> Output {
        let cwd = self.t.join("work dir");
        fs::create_dir_all(&cwd).unwrap();
        fs::set_permissions(&cwd, fs::Permissions::from_mode(0o755)).unwrap();
        let no_core = "ulimit -c 0;";
        let mut c = match self.host {
            Host::Chroot => {
                let root = self.chroot.clone().unwrap_or_else(|| {
                    let r = self.t.join("rootfs");
                    if !r.exists() {
                        busybox_rootfs(self.t, bundle);
                        fs::create_dir_all(r.join("work")).unwrap();
                    }
                    fs::copy(bundle, r.join("app")).unwrap();
                    r
                });
                let mount_proc = if self.pid1 {
                    "mount -t proc proc \"$R/proc\""
                } else {
                    "mount --rbind /proc \"$R/proc\""
                };
                let script = format!(
                    "{no_core} {mount_proc} && mount --rbind /dev \"$R/dev\" && exec chroot --userspec=65534:65534 \
                     \"$R\" /bin/sh -c 'cd /work && exec /app \"$@\"' sh \"$@\""
                );
                let mut c = Command::new("unshare");
                c.arg("-m");
                if self.pid1 {
                    c.args(["--pid", "--fork"]);
                }
                c.args(["sh", "-c", &script, "sh"]).env("R", &root);
                c
            }
            host => {
                let then = match host {
                    Host::Exhausted => vec![],
                    Host::Docker => vec!["seccomp".into(), filter("docker")],
                    Host::AppArmor => vec!["seccomp".into(), filter("apparmor")],
                    Host::Chroot => unreachable!(),
                };
                let refuse = tools().refuse.display().to_string();
                let seccomp = if then.is_empty() {
                    String::new()
                } else {
                    format!("{refuse} seccomp {} ", then[1].display())
                };
                let script = format!(
                    "{no_core} mount -t tmpfs tote-no-nix /nix && exec setpriv --reuid 65534 --regid 65534 \
                     --clear-groups -- {seccomp}\"$@\""
                );
                let mut c = if host == Host::Exhausted {
                    let mut c = Command::new(&tools().refuse);
                    c.args(["userns-limit", "unshare", "-m"]);
                    c
                } else {
                    let mut c = Command::new("unshare");
                    c.arg("-m");
                    c
                };
                if self.pid1 {
                    c.args(["--pid", "--fork", "--mount-proc"]);
                }
                c.args(["sh", "-c", &script, "sh"]).arg(bundle);
                c.env("TOTE_CACHE_DIR", self.cache()).current_dir(&cwd);
                c
            }
        };
        c.args(args.iter().map(|a| OsStr::from_bytes(a)))
            .env("HOME", "/nonexistent")
            .env_remove("TOTE_DEBUG")
            .env_remove("TOTE_NAMESPACE")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        output_feeding(&mut c, self.stdin.clone())
    }

    /// Where the launch's cwd is, as the program sees it.
    fn cwd(&self) -> String {
        match self.host {
            Host::Chroot => "/work".into(),
            _ => self.t.join("work dir").display().to_string(),
        }
    }
}

/// `/tmp/` and five characters of the short-path alphabet.
fn short_prefix(path: &str) -> &str {
    let p = &path[..path.len().min(10)];
    assert!(
        p.len() == 10 && p.starts_with("/tmp/") && p[5..].bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
        "not under a short path: {path}"
    );
    p
}

fn hex_decode(h: &str) -> Vec<u8> {
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
        .collect()
}

fn base(p: &str) -> &str {
    Path::new(p).file_name().unwrap().to_str().unwrap()
}

/// argv byte for byte, the environment, the working directory, stdio,
/// exit codes and deaths by signal, and PID 1: what a launch on `host`
/// must keep, all without a namespace.
fn core_launch_checks(host: Host, t: &TestDir) {
    let f = fixture();
    let r = Refusing::new(host, t);
    let args: [&[u8]; 5] = [b"plain", b"with space", b"", b"new\nline", &[0xff, 0xfe, b'x']];
    let o = r.run(&f.probe, &args);
    let rep = report(&o);
    assert!(o.stderr.is_empty(), "{host:?}: silent: {}", stderr(&o));
    let arg0 = String::from_utf8(hex_decode(&field(&rep, "arg0"))).unwrap();
    let short = short_prefix(&arg0);
    assert_eq!(arg0, format!("{short}/{}/bin/probe", base(&f.probe_store)), "{host:?}");
    for (i, a) in args.iter().enumerate() {
        assert_eq!(
            hex_decode(&field(&rep, &format!("arg{}", i + 1))),
            *a,
            "{host:?}: arg {}",
            i + 1
        );
    }
    assert_eq!(field(&rep, "env"), "from-caller", "{host:?}");
    assert_eq!(field(&rep, "cwd"), r.cwd(), "{host:?}");
    assert_eq!(field(&rep, "uid"), "65534", "{host:?}");
    // glibc's dlopen of libgcc_s (to end a thread) follows the short path.
    assert_eq!(field(&rep, "thread"), "42", "{host:?}");
    // The libraries came through the short path too: the bundle's glibc.
    assert_eq!(
        field(&rep, "libc"),
        format!("{short}/{}/lib/libc.so.6", base(&f.glibc_store)),
        "{host:?}"
    );
    assert!(!Path::new(&f.probe_store).exists());

    // stdin to stdout, 200 KB.
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let mut cat = Refusing::new(host, t);
    cat.stdin = Some(data.clone());
    let o = cat.run(&f.probe, &[b"cat"]);
    assert!(o.stdout == data, "{host:?}: cat");
    // Exit codes, and deaths by signal with the program's own wait status.
    assert_eq!(r.run(&f.probe, &[b"exit", b"42"]).status.code(), Some(42), "{host:?}");
    let o = r.run(&f.probe, &[b"kill", b"15"]);
    assert_eq!(
        (o.status.signal(), o.status.core_dumped()),
        (Some(15), false),
        "{host:?}"
    );
    let o = r.run(&f.probe, &[b"segv"]);
    assert_eq!(o.status.signal(), Some(11), "{host:?}");
    // In place: the program has the launcher's PID (as PID 1 below, it does not).
    // As PID 1: orphans reaped, the program's status returned.
    let mut p1 = Refusing::new(host, t);
    p1.pid1 = true;
    let o = p1.run(&f.probe, &[b"orphan"]);
    assert_eq!(field(&report(&o), "zombies"), "0", "{host:?}");
    assert_eq!(p1.run(&f.probe, &[b"exit", b"7"]).status.code(), Some(7), "{host:?}");
}

#[test]
fn relocated_launches_keep_argv_env_cwd_stdio_status_and_pid1_where_user_namespaces_are_exhausted() {
    core_launch_checks(Host::Exhausted, &TestDir::new());
}

#[test]
fn relocated_launches_keep_argv_env_cwd_stdio_status_and_pid1_under_a_docker_like_seccomp_filter() {
    core_launch_checks(Host::Docker, &TestDir::new());
}

#[test]
fn relocated_launches_keep_argv_env_cwd_stdio_status_and_pid1_where_mounts_are_refused_in_a_user_namespace() {
    core_launch_checks(Host::AppArmor, &TestDir::new());
}

#[test]
fn relocated_launches_keep_argv_env_cwd_stdio_status_and_pid1_in_a_chroot() {
    core_launch_checks(Host::Chroot, &TestDir::new());
}

/// The demo app (CPython from the host, as a Nix closure), bundled.
fn demo_bundle(t: &TestDir) -> PathBuf {
    static D: OnceLock<(TestDir, PathBuf)> = OnceLock::new();
    let (dir, b) = D.get_or_init(|| {
        let dir = TestDir::new();
        let out = Command::new("nix-build")
            .arg(repo().join("examples/hello-python"))
            .args(["--argstr", "nonce", &nonce(), "--no-out-link", "--quiet"])
            .args(["--option", "sandbox", "false", "--option", "build-users-group", ""])
            .args(["--option", "substituters", ""])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "nix-build examples/hello-python: {}",
            stderr(&out)
        );
        let app = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        let b = dir.join("hello-python");
        bundle(&app, &b, &["--level", "3"]);
        (dir, b)
    });
    let _ = (t, dir);
    b.clone()
}

#[test]
fn the_demo_app_runs_on_every_refusing_host() {
    let app = demo_bundle(&TestDir::new());
    for host in HOSTS {
        let t = TestDir::new();
        let o = Refusing::new(host, &t).run(&app, &[b"hi there"]);
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{host:?}: {}", stderr(&o));
        assert!(out.contains("hello from a tote bundle"), "{host:?}: {out}");
        assert!(out.contains("arguments: ['hi there']"), "{host:?}: {out}");
        assert!(out.contains("running as uid 65534"), "{host:?}: {out}");
        let python = out.lines().find(|l| l.contains("python 3.11")).unwrap();
        short_prefix(python.rsplit(" at ").next().unwrap());
    }
    // And bwrap's own switch: --disable-userns, /nix hidden, run as 65534.
    let t = TestDir::new();
    let cache = t.cache(NOBODY);
    let o = Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups", "--"])
        .args([
            "bwrap",
            "--unshare-user",
            "--disable-userns",
            "--dev-bind",
            "/",
            "/",
            "--tmpfs",
            "/nix",
        ])
        .arg("--setenv")
        .arg("TOTE_CACHE_DIR")
        .arg(&cache)
        .arg("--")
        .arg(&app)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && out.contains("hello from a tote bundle"),
        "bwrap: {out}{}",
        stderr(&o)
    );
    assert!(out.contains("at /tmp/"), "{out}");
}

#[test]
fn auto_relocates_and_says_why_and_never_and_always_force_either_way() {
    let f = fixture();
    let t = TestDir::new();
    // Docker-like: auto relocates, TOTE_DEBUG says why.
    let o = Refusing::new(Host::Docker, &t)
        .env("TOTE_DEBUG", "1")
        .run(&f.probe, &[]);
    let e = stderr(&o);
    assert!(
        e.contains("no namespaces (unshare(CLONE_NEWUSER|CLONE_NEWNS): EPERM"),
        "{e}"
    );
    assert!(
        e.contains("a seccomp filter refuses it") && e.contains("launching relocated"),
        "{e}"
    );
    short_prefix(&field(&report(&o), "exe").replace(&t.cache(NOBODY).display().to_string(), "/tmp/xxxxx"));
    // always: today's exit 116, one line with the cause and the fix.
    let o = Refusing::new(Host::Docker, &t)
        .env("TOTE_NAMESPACE", "always")
        .run(&f.probe, &[]);
    let e = stderr(&o);
    assert_eq!((o.status.code(), e.lines().count()), (Some(116), 1), "{e}");
    assert!(e.starts_with("tote: unshare(CLONE_NEWUSER|CLONE_NEWNS): EPERM"), "{e}");
    assert!(
        e.contains("--security-opt seccomp=unconfined") && e.contains("TOTE_NAMESPACE=always"),
        "{e}"
    );
    assert!(o.stdout.is_empty());
    // The AppArmor case names restricted user namespaces and the fix.
    let o = Refusing::new(Host::AppArmor, &t)
        .env("TOTE_NAMESPACE", "always")
        .run(&f.probe, &[]);
    let e = stderr(&o);
    assert_eq!((o.status.code(), e.lines().count()), (Some(116), 1), "{e}");
    assert!(e.contains("making private /: EPERM"), "{e}");
    assert!(
        e.contains("user namespaces are restricted here") && e.contains("kernel.apparmor_restrict_unprivileged_userns"),
        "{e}"
    );
    // never: relocated where namespaces work (uid 65534 on this host).
    let l = Launch::nobody(&t).env("TOTE_NAMESPACE", "never");
    let r = report(&l.run(&f.probe, &[]));
    short_prefix(&String::from_utf8(hex_decode(&field(&r, "arg0"))).unwrap());
    // A bad value: 113.
    let o = Launch::nobody(&t).env("TOTE_NAMESPACE", "sometimes").run(&f.probe, &[]);
    assert_eq!(o.status.code(), Some(113));
    assert_eq!(
        stderr(&o),
        "tote: TOTE_NAMESPACE=sometimes: expected never, auto or always\n"
    );
}

#[test]
fn mount_mode_falls_back_to_a_relocated_launch() {
    let f = fixture();
    let t = TestDir::new();
    for host in [Host::Docker, Host::AppArmor] {
        let o = Refusing::new(host, &t).env("TOTE_DEBUG", "1").run(&f.probe_mount, &[]);
        let r = report(&o);
        short_prefix(&String::from_utf8(hex_decode(&field(&r, "arg0"))).unwrap());
        assert!(stderr(&o).contains("mount mode unusable"), "{host:?}: {}", stderr(&o));
    }
}

/// Every store reference in `bytes`: `/nix/store/` + 32 nix-base32 + `-`.
fn store_refs(bytes: &[u8]) -> usize {
    tote_format::refs::find(bytes, b"/nix/store").len()
}

/// Every regular file below `dir`, with its bytes.
fn files(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
    for e in fs::read_dir(dir).unwrap().flatten() {
        let t = e.file_type().unwrap();
        if t.is_dir() {
            files(&e.path(), out);
        } else if t.is_file() {
            out.push((e.path(), fs::read(e.path()).unwrap()));
        }
    }
}

#[test]
fn a_relocated_tree_holds_no_store_reference_but_the_reported_compressed_ones() {
    let t = TestDir::new();
    let store = build("compressed", &nonce());
    let app = t.join("app");
    let o = bundle(&store, &app, &["--level", "3"]);
    // tote bundle names the file whose references it cannot rewrite...
    let where_gz = format!("/{}/share/where.gz", &store[1..]);
    let e = stderr(&o);
    assert!(
        e.contains("tote: note: 1 file holds store references inside compressed data") && e.contains(&where_gz),
        "{e}"
    );
    // ...and so does tote inspect, in text and JSON.
    let text = String::from_utf8(tote().arg("inspect").arg(&app).output().unwrap().stdout).unwrap();
    assert!(
        text.contains("files hold references inside compressed data") && text.contains(&where_gz),
        "{text}"
    );
    let j = inspect_json(&app);
    assert_eq!(j["relocation"]["kind"], "store");
    assert_eq!(j["relocation"]["clean"], false);
    assert_eq!(j["relocation"]["unrewritable"][0], where_gz.as_str());
    let clean = inspect_json(&fixture().probe);
    assert_eq!(
        (
            clean["relocation"]["clean"].as_bool(),
            clean["relocation"]["unrewritable"].as_array().map(Vec::len)
        ),
        (Some(true), Some(0))
    );

    // A relocated launch runs it, and TOTE_DEBUG names the file.
    let r = Refusing::new(Host::Docker, &t).env("TOTE_DEBUG", "1");
    let o = r.run(&app, &[]);
    report(&o);
    assert!(
        stderr(&o).contains(&format!(
            "relocated: {where_gz} holds store references inside compressed data"
        )),
        "{}",
        stderr(&o)
    );

    // In the relocated tree: every file that held a reference holds none
    // now, but the reported one; the normal tree holds them where they were.
    let cache = r.cache();
    let entry = fs::read_dir(&cache)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().unwrap().to_string_lossy().contains('-'))
        .expect("a relocated entry <id>-<short>");
    let mut relocated = Vec::new();
    files(&entry.join("tree"), &mut relocated);
    let dir = TestDir::new();
    let plain = dir.join("plain");
    assert!(tote().arg("extract").arg(&app).arg(&plain).status().unwrap().success());
    let mut original = Vec::new();
    files(&plain, &mut original);
    let short = &entry.file_name().unwrap().to_string_lossy()[65..];
    let (mut held, mut gz) = (Vec::new(), 0);
    for (p, bytes) in &original {
        let rel = p.strip_prefix(&plain).unwrap();
        let (_, now) = relocated
            .iter()
            .find(|(q, _)| q.strip_prefix(entry.join("tree")).unwrap() == rel)
            .unwrap();
        assert_eq!(now.len(), bytes.len(), "{}: lengths kept", rel.display());
        if rel.ends_with("share/where.gz") {
            gz += 1;
            assert_eq!(now, bytes, "the compressed file is left as it is");
            continue;
        }
        if store_refs(bytes) > 0 {
            held.push(rel.iter().skip(3).collect::<PathBuf>());
            assert_eq!(store_refs(now), 0, "{} still names /nix/store", rel.display());
            let to = format!("/tmp/{short}/");
            let n = now.windows(to.len()).filter(|w| *w == to.as_bytes()).count();
            assert_eq!(
                n,
                store_refs(bytes),
                "{}: each reference rewritten to {to}",
                rel.display()
            );
        } else {
            assert_eq!(now, bytes, "{}: untouched", rel.display());
        }
    }
    assert_eq!(gz, 1);
    held.sort();
    assert_eq!(
        held,
        [Path::new("bin/probe"), Path::new("lib/libc.so.6")],
        "the probe and glibc's libc (its RUNPATH, for libgcc_s) hold references"
    );
}

#[test]
fn two_users_on_one_host_each_get_their_own_short_path() {
    let f = fixture();
    let t = TestDir::new();
    let mut seen = Vec::new();
    for uid in [NOBODY, NOBODY - 1] {
        let mut l = Launch::nobody(&t).env("TOTE_NAMESPACE", "never");
        l.uid = uid;
        l.cache = Some(t.cache(uid));
        let r = report(&l.run(&f.probe, &[]));
        let arg0 = String::from_utf8(hex_decode(&field(&r, "arg0"))).unwrap();
        let short = short_prefix(&arg0).to_string();
        let m = fs::symlink_metadata(&short).unwrap();
        assert!(m.is_dir());
        assert_eq!(m.uid(), uid, "{short} is the user's own");
        assert_eq!(m.mode() & 0o7777, 0o755, "{short}: nobody else may write in it");
        seen.push(short);
    }
    assert_ne!(seen[0], seen[1]);
}

/// The short path a relocated launch of the probe by 65534 uses, with a
/// cache of its own; and the launch's stderr with TOTE_DEBUG.
fn short_path_of(t: &TestDir, cache: &Path) -> (String, String) {
    let mut l = Launch::nobody(t).env("TOTE_NAMESPACE", "never").env("TOTE_DEBUG", "1");
    l.cache = Some(cache.to_path_buf());
    let o = l.run(&fixture().probe, &[]);
    let r = report(&o);
    let arg0 = String::from_utf8(hex_decode(&field(&r, "arg0"))).unwrap();
    (short_prefix(&arg0).to_string(), stderr(&o))
}

/// The store path a short path's launch runs from: `<hash>-tote-test-probe`.
fn probe_store_path(short: &str) -> PathBuf {
    fs::read_dir(short)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with("-tote-test-probe"))
        .unwrap()
}

/// Make `path` a directory of `uid`'s with `mode`.
fn dir_of(path: &Path, uid: u32, mode: u32) {
    fs::create_dir(path).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    std::os::unix::fs::chown(path, Some(uid), Some(uid)).unwrap();
}

fn link_of(target: &Path, path: &Path, uid: u32) {
    std::os::unix::fs::symlink(target, path).unwrap();
    std::os::unix::fs::lchown(path, Some(uid), Some(uid)).unwrap();
}

fn remove_any(path: &str) {
    let _ = fs::remove_file(path).or_else(|_| fs::remove_dir_all(path));
}

#[test]
fn a_squatted_short_path_is_never_used() {
    let t = TestDir::new();
    let cache = t.cache(NOBODY);
    let (first, _) = short_path_of(&t, &cache);
    let marker = probe_store_path(&first);
    let name = marker.file_name().unwrap().to_owned();
    let target = fs::read_link(&marker).unwrap();
    let store = target.parent().unwrap().to_path_buf();
    type Squat<'a> = (&'a str, &'a dyn Fn(&Path));
    let squats: [Squat<'_>; 6] = [
        ("another uid's directory of links to the same tree", &|p| {
            dir_of(p, NOBODY - 2, 0o755);
            link_of(&target, &p.join(&name), NOBODY - 2);
        }),
        ("another uid's symlink to the same store directory", &|p| {
            link_of(&store, p, NOBODY - 2);
        }),
        ("a directory of the user's own that others can write to", &|p| {
            dir_of(p, NOBODY, 0o777);
        }),
        ("a directory of the user's own holding a file of its own", &|p| {
            dir_of(p, NOBODY, 0o755);
            fs::write(p.join("notes"), b"mine").unwrap();
        }),
        ("the user's own short path for another bundle", &|p| {
            dir_of(p, NOBODY, 0o755);
            link_of(&Path::new("/elsewhere").join(&name), &p.join(&name), NOBODY);
        }),
        ("the user's own symlink to somewhere else", &|p| {
            link_of(Path::new("/etc"), p, NOBODY);
        }),
    ];
    for (what, squat) in squats {
        remove_any(&first);
        squat(Path::new(&first));
        let before = fs::symlink_metadata(&first).unwrap();
        let inside = fs::read_dir(&first).map(|d| d.count()).unwrap_or(0);
        let (now, e) = short_path_of(&t, &cache);
        assert_ne!(now, first, "{what}: used anyway");
        assert!(e.contains(&format!("short path {first} skipped")), "{what}: {e}");
        let after = fs::symlink_metadata(&first).unwrap();
        assert_eq!(
            (before.ino(), before.uid(), before.mode(), before.mtime_nsec()),
            (after.ino(), after.uid(), after.mode(), after.mtime_nsec()),
            "{what}: touched"
        );
        assert_eq!(
            fs::read_dir(&first).map(|d| d.count()).unwrap_or(0),
            inside,
            "{what}: touched"
        );
        remove_any(&now);
    }
    remove_any(&first);
}

#[test]
fn a_removed_short_path_is_made_again_without_extracting() {
    let t = TestDir::new();
    let cache = t.cache(NOBODY);
    let (short, e) = short_path_of(&t, &cache);
    assert!(e.contains("cold: no complete cache entry"), "{e}");
    let links = fs::read_dir(&short).unwrap().count();
    assert!(links >= 2, "the probe and its glibc: {links} links");
    // Removed (a reboot, a cleaner), or one of its links removed.
    fs::remove_dir_all(&short).unwrap();
    let (again, e) = short_path_of(&t, &cache);
    assert_eq!(again, short);
    assert!(e.contains(&format!("short path {short} made")), "{e}");
    assert!(
        e.contains(&format!("short path {short} filled: {links} links made")),
        "{e}"
    );
    assert!(e.contains("warm: ") && !e.contains("cold"), "{e}");
    fs::remove_file(probe_store_path(&short)).unwrap();
    let (again, e) = short_path_of(&t, &cache);
    assert_eq!(again, short);
    assert!(e.contains(&format!("short path {short} filled: 1 links made")), "{e}");
    // Complete and sealed: the next launch makes nothing.
    let (_, e) = short_path_of(&t, &cache);
    assert!(
        !e.contains("filled") && e.contains(&format!("short path {short} locked")),
        "{e}"
    );
    remove_any(&short);
}

#[test]
fn relocated_entries_keep_the_cache_guarantees() {
    let f = fixture();
    let t = TestDir::new();
    let cache = t.cache(NOBODY);
    let launch = |env: &[(&str, &str)]| {
        let mut l = Launch::nobody(&t).env("TOTE_NAMESPACE", "never");
        for (k, v) in env {
            l = l.env(k, v);
        }
        l.cache = Some(cache.clone());
        l
    };
    // 32 simultaneous cold launches: one tree, every launch runs.
    let children: Vec<_> = (0..32)
        .map(|_| {
            let mut c = launch(&[]).command(&[], &f.probe, &[]);
            spawn(c.stdout(Stdio::piped()).stderr(Stdio::piped()))
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        report(&o);
    }
    let entries: Vec<String> = fs::read_dir(&cache)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "objects")
        .collect();
    assert_eq!(entries.len(), 1, "one relocated entry, nothing left over: {entries:?}");
    let entry = cache.join(&entries[0]);

    // An intact relocated tree passes the full check (rewritten references
    // and all): TOTE_VERIFY finds nothing to repair.
    let o = launch(&[("TOTE_VERIFY", "1"), ("TOTE_DEBUG", "1")]).run(&f.probe, &[]);
    report(&o);
    assert!(
        stderr(&o).contains("verified") && !stderr(&o).contains("extracting it again"),
        "{}",
        stderr(&o)
    );
    // A changed reference is caught, and the entry extracted again.
    let libc = fs::read_dir(entry.join("tree/nix/store"))
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with("-tote-test-probe"))
        .unwrap()
        .path()
        .join("bin/probe");
    let mut bytes = fs::read(&libc).unwrap();
    let at = bytes.windows(5).position(|w| w == b"/tmp/").unwrap();
    bytes[at + 5] = if bytes[at + 5] == b'a' { b'b' } else { b'a' };
    let perm = fs::metadata(libc.parent().unwrap()).unwrap().permissions();
    fs::set_permissions(libc.parent().unwrap(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&libc, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&libc, &bytes).unwrap();
    fs::set_permissions(&libc, fs::Permissions::from_mode(0o555)).unwrap();
    // As extracted but for the content: mtime 1.
    assert!(Command::new("touch")
        .args(["-h", "-d", "@1"])
        .arg(&libc)
        .status()
        .unwrap()
        .success());
    fs::set_permissions(libc.parent().unwrap(), perm).unwrap();
    let o = launch(&[("TOTE_VERIFY", "1")]).run(&f.probe, &[]);
    report(&o);
    assert!(
        stderr(&o).contains("has other content") && stderr(&o).contains("extracting it again"),
        "{}",
        stderr(&o)
    );
    // Marked under another boot (power lost since): checked in full once,
    // found intact, marked anew.
    let ok = entry.join("ok");
    let text = fs::read_to_string(&ok).unwrap();
    fs::set_permissions(&entry, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(
        &ok,
        text.replace(&text[text.find("boot ").unwrap() + 5..], "other-boot\n"),
    )
    .unwrap();
    let o = launch(&[("TOTE_DEBUG", "1")]).run(&f.probe, &[]);
    report(&o);
    assert!(
        stderr(&o).contains("marked under another boot") && stderr(&o).contains("verified"),
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains("extracting it again"), "{}", stderr(&o));
}

#[test]
fn a_relocated_cold_start_killed_at_any_moment_leaves_a_cache_the_next_launch_accepts() {
    let f = fixture();
    let t = TestDir::new();
    let cache = t.cache(NOBODY);
    for i in 0..12u64 {
        let mut l = Launch::nobody(&t).env("TOTE_NAMESPACE", "never");
        l.cache = Some(cache.clone());
        let mut c = l.command(&[], &f.probe, &[]);
        let mut child = spawn(c.stdout(Stdio::null()).stderr(Stdio::null()));
        std::thread::sleep(Duration::from_millis(1 + i * 7 % 60));
        let _ = child.kill();
        let _ = child.wait();
        let r = report(&l.run(&f.probe, &[]));
        short_prefix(&String::from_utf8(hex_decode(&field(&r, "arg0"))).unwrap());
        // Start cold again half the time.
        if i % 2 == 0 {
            for e in fs::read_dir(&cache).unwrap().flatten() {
                let _ = Command::new("rm").arg("-rf").arg(e.path()).status();
            }
        }
    }
}

#[test]
fn with_no_threads_the_stub_extracts_on_its_own_thread_and_never_panics() {
    let f = fixture();
    let t = TestDir::new();
    // Mount mode as root: /dev/fuse opens, so the thread check is reached.
    for (bundle, what, uid) in [(&f.probe, "extract", NOBODY), (&f.probe_mount, "mount", 0)] {
        let cache = t.cache(uid);
        let id = uid.to_string();
        let o = Command::new("setpriv")
            .args(["--reuid", &id, "--regid", &id, "--clear-groups", "--"])
            .arg(&tools().refuse)
            .arg("seccomp")
            .arg(filter("nothreads"))
            .arg(bundle)
            .env("TOTE_CACHE_DIR", &cache)
            .env("TOTE_DEBUG", "1")
            .output()
            .unwrap();
        let e = stderr(&o);
        assert!(!e.contains("panicked") && o.status.code() != Some(134), "{what}: {e}");
        assert_eq!(field(&report(&o), "uid"), id, "{what}");
        if what == "mount" {
            assert!(e.contains("threads cannot be created"), "{e}");
        }
    }
}

#[test]
fn a_host_elf_bundle_runs_through_its_own_loader_and_python_imports_sqlite3_and_json() {
    let t = TestDir::new();
    let py = t.join("python");
    let o = tote()
        .args([
            "bundle",
            "/usr/bin/python3.11",
            "--add",
            "/usr/lib/python3.11",
            "--level",
            "3",
            "-o",
        ])
        .arg(&py)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let j = inspect_json(&py);
    assert_eq!(j["relocation"]["kind"], "loader");
    // A busybox root (no /usr, no glibc), user namespaces refused by bwrap.
    let code = "import sys, json, sqlite3\n\
                print('prefix=' + sys.prefix)\n\
                print('json=' + json.dumps([1]))\n\
                print('sqlite=' + str(sqlite3.connect(':memory:').execute('select 6*7').fetchone()[0]))\n\
                print('argv0=' + sys.argv[0])";
    let o = in_busybox_root(
        &t,
        &py,
        &["-c", code, "x"],
        &["--unshare-user", "--uid", "65534", "--gid", "65534", "--disable-userns"],
    );
    assert!(o.status.success(), "{:?}: {}", o.status, stderr(&o));
    let r: Vec<(String, String)> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.into(), v.into())))
        .collect();
    assert!(field(&r, "prefix").ends_with("/tree/usr"), "{r:?}");
    assert_eq!(field(&r, "json"), "[1]");
    assert_eq!(field(&r, "sqlite"), "42");
}

#[test]
fn images_and_mount_at_directories_still_need_namespaces_and_say_so() {
    let t = TestDir::new();
    let f = fixture();
    // A directory at /opt/tool.
    let dir = t.join("tool");
    fs::create_dir_all(dir.join("bin")).unwrap();
    fs::copy(&f.probe, dir.join("bin/x")).unwrap();
    fs::write(dir.join("bin/tool"), "#!/bin/sh\necho tool\n").unwrap();
    fs::set_permissions(dir.join("bin/tool"), fs::Permissions::from_mode(0o755)).unwrap();
    let app = t.join("tool-app");
    let o = tote()
        .arg("bundle")
        .arg(&dir)
        .args([
            "--entrypoint",
            "bin/tool",
            "--mount-at",
            "/opt/tool",
            "--level",
            "3",
            "-o",
        ])
        .arg(&app)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let o = Refusing::new(Host::Docker, &t).run(&app, &[]);
    let e = stderr(&o);
    assert_eq!((o.status.code(), e.lines().count()), (Some(116), 1), "{e}");
    assert!(e.contains("--security-opt seccomp=unconfined"), "the host setting: {e}");
    assert!(e.contains("its files must appear at /opt/tool"), "why: {e}");
    let o = Launch::nobody(&t).env("TOTE_NAMESPACE", "never").run(&app, &[]);
    let e = stderr(&o);
    assert_eq!((o.status.code(), e.lines().count()), (Some(116), 1), "{e}");
    assert!(
        e.starts_with("tote: TOTE_NAMESPACE=never, but this bundle needs user and mount namespaces"),
        "{e}"
    );
}

/// A busybox root as a podman image (imported once).
fn podman_image() -> &'static str {
    static I: OnceLock<()> = OnceLock::new();
    I.get_or_init(|| {
        let t = TestDir::new();
        let r = t.join("root");
        for d in ["bin", "tmp", "proc", "dev", "etc", "work"] {
            fs::create_dir_all(r.join(d)).unwrap();
        }
        fs::set_permissions(r.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
        fs::copy("/bin/busybox", r.join("bin/busybox")).unwrap();
        std::os::unix::fs::symlink("busybox", r.join("bin/sh")).unwrap();
        fs::write(
            r.join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nnobody:x:65534:65534::/nonexistent:/bin/sh\n",
        )
        .unwrap();
        let tar = t.join("root.tar");
        assert!(Command::new("tar")
            .arg("-C")
            .arg(&r)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap()
            .success());
        // The previous run's image goes, not left behind untagged.
        let _ = podman().args(["rmi", "-f", "tote-test-busybox"]).output();
        let o = podman()
            .arg("import")
            .arg(&tar)
            .arg("tote-test-busybox")
            .output()
            .unwrap();
        assert!(o.status.success(), "podman import: {}", stderr(&o));
    });
    "tote-test-busybox"
}

#[test]
fn in_a_podman_container_as_root_and_as_65534_with_the_default_and_a_docker_like_profile() {
    let f = fixture();
    let demo = demo_bundle(&TestDir::new());
    let image = podman_image();
    for (profile, relocated) in [(None, false), (Some(filter("json-docker")), true)] {
        for user in ["0:0", "65534:65534"] {
            let run = |bundle: &Path, args: &[&str]| {
                let mut c = podman_run_command();
                c.args(["--user", user, "--workdir", "/work", "-e", "TOTE_TEST_VAR=from-caller"])
                    .arg("-v")
                    .arg(format!("{}:/app:ro", bundle.display()));
                if let Some(p) = &profile {
                    c.arg("--security-opt").arg(format!("seccomp={}", p.display()));
                }
                c.arg(image).arg("/app").args(args);
                c.output().unwrap()
            };
            let what = format!("user {user}, profile {profile:?}");
            let r = report(&run(&f.probe, &["a b"]));
            let arg0 = String::from_utf8(hex_decode(&field(&r, "arg0"))).unwrap();
            if relocated {
                short_prefix(&arg0);
            } else {
                assert_eq!(arg0, format!("{}/bin/probe", f.probe_store), "{what}: namespaced");
            }
            assert_eq!(hex_decode(&field(&r, "arg1")), b"a b", "{what}");
            assert_eq!(field(&r, "env"), "from-caller", "{what}");
            assert_eq!(field(&r, "cwd"), "/work", "{what}");
            assert_eq!(field(&r, "uid"), user.split(':').next().unwrap(), "{what}");
            assert_eq!(run(&f.probe, &["exit", "9"]).status.code(), Some(9), "{what}");
            let o = run(&demo, &["from podman"]);
            let out = String::from_utf8_lossy(&o.stdout);
            assert!(
                out.contains("hello from a tote bundle") && out.contains("'from podman'"),
                "{what}: {out}{}",
                stderr(&o)
            );
        }
    }
}

/// The Flask example through S3 and the exec-driver stand-in on hosts that
/// refuse namespaces: answers HTTP, stops on SIGINT, leaves nothing.
#[test]
fn flask_answers_under_the_exec_driver_on_every_refusing_host() {
    let t = TestDir::new();
    let port = free_port();
    let (_garage, _file, text) = flask_job(&t, port);
    let chrooted = text.replacen("config {", "config {\n        no_pivot_root = true", 1);
    assert_ne!(chrooted, text);
    let (plain_job, chroot_job) = (t.join("job.hcl"), t.join("job-chroot.hcl"));
    fs::write(&plain_job, &text).unwrap();
    fs::write(&chroot_job, &chrooted).unwrap();
    for (what, job, filter_kind) in [
        ("exhausted", &plain_job, Some("exhausted")),
        ("docker", &plain_job, Some("docker")),
        ("apparmor", &plain_job, Some("apparmor")),
        ("chroot", &chroot_job, None),
    ] {
        let alloc = t.join(format!("alloc-{what}"));
        let extra: Vec<PathBuf> = filter_kind
            .map(|k| vec!["--seccomp".into(), filter(k)])
            .unwrap_or_default();
        let extra: Vec<&OsStr> = extra.iter().map(|p| p.as_os_str()).collect();
        let task = Task::start_with(job, &alloc, &extra);
        let (_, page) = first_200(&task, port);
        for want in ["hello from a tote bundle under Nomad", "uid 65534 ", "parent 1\n"] {
            assert!(page.contains(want), "{what}: no {want:?} in:\n{page}");
        }
        let python = page.lines().find(|l| l.starts_with("python ")).unwrap();
        short_prefix(python.rsplit(" at ").next().unwrap());
        let ns = task.ns.clone();
        let (code, report) = task.stop();
        let report = report.join("\n");
        assert_eq!(code, 0, "{what}: Flask exits 0 on SIGINT:\n{report}");
        assert!(report.contains("processes left: 0"), "{what}: {report}");
        assert_eq!(pid_ns_members(&ns), 0, "{what}");
    }
}

#[test]
fn every_store_reference_of_a_relocated_tree_resolves_into_it_through_the_short_path() {
    let f = fixture();
    let t = TestDir::new();
    let cache = t.cache(NOBODY);
    // The script: its interpreter (dash) and the probe it execs live in
    // other store paths; the probe's loader in a third.
    let mut l = Launch::nobody(&t).env("TOTE_NAMESPACE", "never");
    l.cache = Some(cache.clone());
    let o = l.run(&f.greet, &[]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("script=/tmp/"),
        "{}",
        stderr(&o)
    );
    let r = report(&o);
    let short = short_prefix(&String::from_utf8(hex_decode(&field(&r, "arg0"))).unwrap()).to_string();
    let entry = cache.join(format!("{}-{}", crate::cache::bundle_id(&f.greet), &short[5..]));
    let store = entry.join("tree/nix/store");
    let mut all = Vec::new();
    files(&entry.join("tree"), &mut all);
    let mut named = std::collections::BTreeSet::new();
    for (path, bytes) in &all {
        for at in tote_format::refs::find(bytes, short.as_bytes()) {
            let rest = &bytes[at + short.len() + 1..];
            let end = rest
                .iter()
                .position(|&c| c == b'/' || !c.is_ascii_graphic())
                .unwrap_or(rest.len());
            let name = String::from_utf8(rest[..end].to_vec()).unwrap();
            assert!(
                store.join(&name).exists(),
                "{}: {short}/{name} is not in the tree",
                path.display()
            );
            named.insert(name);
        }
    }
    assert!(named.len() >= 3, "dash, the probe and glibc: {named:?}");
    for name in &named {
        assert_eq!(
            fs::canonicalize(Path::new(&short).join(name)).unwrap(),
            fs::canonicalize(store.join(name)).unwrap(),
            "{short}/{name} lands in the tree"
        );
    }
    // Every store path of the tree has its link, and nothing else is there.
    let mut linked: Vec<_> = fs::read_dir(&short).unwrap().flatten().map(|e| e.file_name()).collect();
    let mut held: Vec<_> = fs::read_dir(&store).unwrap().flatten().map(|e| e.file_name()).collect();
    linked.sort();
    held.sort();
    assert_eq!(linked, held);
    remove_any(&short);
}

/// A mount namespace whose /tmp is a tmpfs of its own (and /nix hidden),
/// held open by a process that sleeps: relocated programs and /tmp
/// cleaners run in it through `nsenter`, and what they do to /tmp stays
/// there. Its test directory is in /var/tmp, outside that /tmp.
struct PrivateTmp {
    holder: std::process::Child,
    t: TestDir,
}

impl PrivateTmp {
    fn new() -> PrivateTmp {
        let t = TestDir::new_in(Path::new("/var/tmp"));
        let mut holder = spawn(
            Command::new("unshare")
                .args(["-m", "--propagation", "private", "sh", "-c"])
                .arg(
                    "mount -t tmpfs -o mode=1777 tote-tmp /tmp && mount -t tmpfs tote-no-nix /nix && echo ready && \
                     exec sleep 3600",
                )
                .stdout(Stdio::piped()),
        );
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(holder.stdout.take().unwrap()), &mut line).unwrap();
        assert_eq!(line, "ready\n");
        PrivateTmp { holder, t }
    }

    /// `nsenter` into the namespace, before the command.
    fn prefix(&self) -> Vec<String> {
        ["nsenter", "-t", &self.holder.id().to_string(), "-m", "--"]
            .map(String::from)
            .to_vec()
    }

    /// Run `script` as root in the namespace.
    fn sh(&self, script: &str) -> Output {
        let o = Command::new("nsenter")
            .args(["-t", &self.holder.id().to_string(), "-m", "--", "sh", "-c", script])
            .output()
            .unwrap();
        assert!(o.status.success(), "{script}: {}", stderr(&o));
        o
    }

    fn exists(&self, path: &str) -> bool {
        self.sh(&format!("test -e {path} && echo yes || echo no")).stdout == b"yes\n"
    }

    /// The one short path in this /tmp.
    fn short_path(&self) -> String {
        let o = self.sh("ls /tmp");
        let names: Vec<&str> = std::str::from_utf8(&o.stdout).unwrap().lines().collect();
        assert_eq!(names.len(), 1, "{names:?}");
        short_prefix(&format!("/tmp/{}", names[0])).to_string()
    }

    /// Age everything at `path` and below: times in 2020.
    fn backdate(&self, path: &str) {
        self.sh(&format!("find {path} -exec touch -h -d 2020-01-01 {{}} +"));
    }

    /// `systemd-tmpfiles --clean` with a configuration that ages all of
    /// this /tmp by modification time, one second old and more.
    fn clean(&self) {
        let conf = self.t.join("tmp.conf");
        fs::write(&conf, "q /tmp 1777 root root m:1s\n").unwrap();
        self.sh(&format!("systemd-tmpfiles --clean {}", conf.display()));
    }

    /// Launch the `lazy` bundle relocated, as 65534, and wait until it is
    /// ready (it reads its file once the FIFO it waits on is written).
    fn start_lazy(&self, bundle: &Path, name: &str) -> Lazy {
        let fifo = self.t.join(format!("go-{name}"));
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o666)).unwrap();
        fs::set_permissions(&fifo, fs::Permissions::from_mode(0o666)).unwrap();
        let prefix = self.prefix();
        let prefix: Vec<&str> = prefix.iter().map(String::as_str).collect();
        let mut child = spawn(
            Launch::nobody(&self.t)
                .env("TOTE_NAMESPACE", "never")
                .env("TOTE_DEBUG", "1")
                .command(&prefix, bundle, &[fifo.as_os_str()])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        );
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        assert_eq!(line, "ready\n", "{name}");
        Lazy { child, out, fifo }
    }
}

impl Drop for PrivateTmp {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// The `lazy` bundle, waiting to read a file it has not opened yet.
struct Lazy {
    child: std::process::Child,
    out: std::io::BufReader<std::process::ChildStdout>,
    fifo: PathBuf,
}

impl Lazy {
    /// Let it read; its status, what it printed then, and its stderr.
    fn wake(mut self) -> (std::process::ExitStatus, String, String) {
        std::io::Write::write_all(
            &mut fs::OpenOptions::new().write(true).open(&self.fifo).unwrap(),
            b"go\n",
        )
        .unwrap();
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut self.out, &mut rest).unwrap();
        let status = self.child.wait().unwrap();
        let mut err = String::new();
        std::io::Read::read_to_string(&mut self.child.stderr.take().unwrap(), &mut err).unwrap();
        (status, rest, err)
    }
}

/// systemd-tmpfiles, for real: while a relocated program runs, aging its
/// /tmp leaves its short path (held with a lock the program inherited);
/// once the program has exited, the same clean takes it; the next launch
/// makes it again, without extracting.
#[test]
fn aging_tmp_never_takes_the_short_path_of_a_running_program() {
    let ns = PrivateTmp::new();
    let bundle = crate::cache::lazy_bundle(&ns.t);
    let lazy = ns.start_lazy(&bundle, "first");
    let short = ns.short_path();
    // Old enough by every time tmpfiles looks at (directories: their birth
    // too): only the lock can keep it.
    std::thread::sleep(Duration::from_millis(1500));
    ns.backdate(&short);
    ns.clean();
    assert!(
        ns.exists(&format!("{short}/*-tote-test-lazydata")),
        "the running program's short path was aged away"
    );
    let (status, rest, err) = lazy.wake();
    assert!(status.success(), "{status:?}: {err}");
    assert!(rest.starts_with("lazy data "), "{rest:?}: {err}");

    // Not in use: the same clean takes it.
    ns.backdate(&short);
    ns.clean();
    assert!(!ns.exists(&short), "an unused short path stays");

    let lazy = ns.start_lazy(&bundle, "again");
    let (status, rest, err) = lazy.wake();
    assert!(
        status.success() && rest.starts_with("lazy data "),
        "{status:?} {rest:?}: {err}"
    );
    assert!(err.contains(&format!("short path {short} made")), "{err}");
    assert!(
        err.contains("warm: ") && !err.contains("cold"),
        "made again without extracting: {err}"
    );
}

/// A cleaner that ignores locks (`rm -rf`) takes the short path of a
/// running program; another user then makes the same name, pointing into a
/// tree of their own. The running program is exposed: it reads that user's
/// file (docs/security.md says so, and what to do). The next launch sees a
/// name someone else holds, leaves it alone, and runs from another.
#[test]
fn after_a_cleaner_that_ignores_locks_the_next_launch_never_uses_the_name_another_user_took() {
    let ns = PrivateTmp::new();
    let bundle = crate::cache::lazy_bundle(&ns.t);
    let lazy = ns.start_lazy(&bundle, "victim");
    let short = ns.short_path();
    let data = ns
        .sh(&format!("basename $(readlink {short}/*-tote-test-lazydata)"))
        .stdout;
    let data = String::from_utf8(data).unwrap().trim().to_string();
    ns.sh(&format!("rm -rf {short}"));
    let other = NOBODY - 1;
    ns.sh(&format!(
        "setpriv --reuid {other} --regid {other} --clear-groups -- sh -c 'mkdir -p /tmp/theirs/{data}/share {short} && \
         echo hijacked > /tmp/theirs/{data}/share/lazy.txt && ln -s /tmp/theirs/{data} {short}/{data}'"
    ));
    let (status, rest, err) = lazy.wake();
    assert!(status.success(), "{status:?}: {err}");
    assert_eq!(rest, "hijacked\n", "exposed, as docs/security.md says");

    let again = ns.start_lazy(&bundle, "next");
    let (status, rest, err) = again.wake();
    assert!(
        status.success() && rest.starts_with("lazy data "),
        "{status:?} {rest:?}: {err}"
    );
    assert!(
        err.contains(&format!("short path {short} skipped: a directory of uid {other}")),
        "{err}"
    );
    let owner = ns.sh(&format!("stat -c %u {short}; readlink {short}/{data}")).stdout;
    assert_eq!(
        String::from_utf8(owner).unwrap(),
        format!("{other}\n/tmp/theirs/{data}\n"),
        "left as it was"
    );
}
