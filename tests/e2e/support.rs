//! Test helpers: temp dirs, the test closures (built with real Nix), and
//! running bundles as root, as nobody, and in stripped-down roots.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

pub const NOBODY: u32 = 65534;

pub fn tote() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tote"))
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// A temp dir every user can enter (tests also run bundles as nobody).
pub struct TestDir {
    pub dir: tempfile::TempDir,
}

impl TestDir {
    pub fn new() -> TestDir {
        let dir = tempfile::Builder::new().prefix("tote-test-").tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        TestDir { dir }
    }
    /// In `parent` rather than `$TMPDIR` (for tests that put a tmpfs over /tmp).
    pub fn new_in(parent: &Path) -> TestDir {
        let dir = tempfile::Builder::new()
            .prefix("tote-test-")
            .tempdir_in(parent)
            .unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        TestDir { dir }
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.dir.path().join(p)
    }
    /// A cache directory owned by `uid`.
    pub fn cache(&self, uid: u32) -> PathBuf {
        let c = self.join(format!("cache-{uid}"));
        fs::create_dir_all(&c).unwrap();
        fs::set_permissions(&c, fs::Permissions::from_mode(0o700)).unwrap();
        chown(&c, Some(uid), Some(uid)).unwrap();
        c
    }
    pub fn entries(&self, p: impl AsRef<Path>) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.join(p))
            .map(|rd| {
                rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

pub fn build(attr: &str, nonce: &str) -> String {
    let out = Command::new(repo().join("tests/fixtures/build.sh"))
        .args([attr, nonce])
        .output()
        .expect("running nix-build");
    assert!(
        out.status.success(),
        "nix-build {attr} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

pub fn closure(path: &str) -> Vec<String> {
    let out = Command::new("nix-store")
        .args(["--query", "--requisites", path])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

pub fn nonce() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    format!("{}-{}", std::process::id(), t.as_nanos())
}

pub fn bundle(store_path: &str, out: &Path, extra: &[&str]) -> Output {
    let o = tote()
        .arg("bundle")
        .arg(store_path)
        .arg("-o")
        .arg(out)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "tote bundle failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// `tote inspect --json FILE`, parsed.
pub fn inspect_json(bundle: &Path) -> serde_json::Value {
    let o = tote().arg("inspect").arg("--json").arg(bundle).output().unwrap();
    assert!(o.status.success(), "tote inspect --json: {}", stderr(&o));
    serde_json::from_slice(&o.stdout).expect("tote inspect --json prints JSON")
}

/// The stub's length in a bundle, as `tote inspect` reports it.
pub fn stub_len(bundle: &Path) -> u64 {
    inspect_json(bundle)["sizes"]["stub"].as_u64().unwrap()
}

pub struct Fixture {
    /// Keeps the bundles' directory alive for the whole run.
    pub _dir: TestDir,
    pub probe: PathBuf,
    pub greet: PathBuf,
    /// The same two, bundled with `--mode mount`.
    pub probe_mount: PathBuf,
    pub greet_mount: PathBuf,
    pub probe_store: String,
    pub script_store: String,
    pub glibc_store: String,
}

pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let n = nonce();
        let probe_store = build("probe", &n);
        let script_store = build("script", &n);
        let glibc_store = build("glibc", &n);
        let dir = TestDir::new();
        let probe = dir.join("probe");
        let greet = dir.join("greet");
        bundle(&probe_store, &probe, &[]);
        bundle(&script_store, &greet, &[]);
        let probe_mount = dir.join("probe-mount");
        let greet_mount = dir.join("greet-mount");
        bundle(&probe_store, &probe_mount, &["--mode", "mount"]);
        bundle(&script_store, &greet_mount, &["--mode", "mount"]);
        let all = closure(&script_store);
        let del = Command::new("nix-store")
            .arg("--delete")
            .arg("--ignore-liveness")
            .args(&all)
            .output()
            .unwrap();
        assert!(
            del.status.success(),
            "deleting fixtures from the store: {}",
            String::from_utf8_lossy(&del.stderr)
        );
        for p in &all {
            assert!(!Path::new(p).exists(), "{p} still in the store");
        }
        Fixture {
            _dir: dir,
            probe,
            greet,
            probe_mount,
            greet_mount,
            probe_store,
            script_store,
            glibc_store,
        }
    })
}

/// How to launch: as whom, with which cache.
#[derive(Clone)]
pub struct Launch {
    pub uid: u32,
    pub cache: Option<PathBuf>,
    pub cwd: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    pub stdin: Option<Vec<u8>>,
}

impl Launch {
    pub fn root(t: &TestDir) -> Launch {
        Launch {
            uid: 0,
            cache: Some(t.cache(0)),
            cwd: Some(t.path().to_path_buf()),
            env: vec![],
            stdin: None,
        }
    }
    pub fn nobody(t: &TestDir) -> Launch {
        Launch {
            uid: NOBODY,
            cache: Some(t.cache(NOBODY)),
            ..Launch::root(t)
        }
    }
    pub fn env(mut self, k: &str, v: &str) -> Launch {
        self.env.push((k.into(), v.into()));
        self
    }

    /// `prefix` wraps the command (unshare, bwrap...); the bundle and its
    /// arguments follow it.
    pub fn command(&self, prefix: &[&str], program: &Path, args: &[&OsStr]) -> Command {
        let mut argv: Vec<&OsStr> = prefix.iter().map(OsStr::new).collect();
        let uid = self.uid.to_string();
        if self.uid != 0 {
            argv.extend(["setpriv", "--reuid", &uid, "--regid", &uid, "--clear-groups", "--"].map(OsStr::new));
        }
        argv.push(program.as_os_str());
        argv.extend_from_slice(args);
        let mut c = Command::new(argv[0]);
        c.args(&argv[1..]);
        c.env_remove("TOTE_DEBUG")
            .env_remove("TOTE_INFO")
            .env_remove("TOTE_EXTRACT");
        if self.uid != 0 {
            c.env("HOME", "/nonexistent");
        }
        if let Some(cache) = &self.cache {
            c.env("TOTE_CACHE_DIR", cache);
        }
        if let Some(cwd) = &self.cwd {
            c.current_dir(cwd);
        }
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    pub fn run(&self, program: &Path, args: &[&str]) -> Output {
        let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        self.run_with(&[], program, &args)
    }

    pub fn run_with(&self, prefix: &[&str], program: &Path, args: &[&OsStr]) -> Output {
        output_feeding(&mut self.command(prefix, program, args), self.stdin.clone())
    }
}

/// Run `c` to its end with `stdin` as its input (else /dev/null), its
/// stdout and stderr collected.
pub fn output_feeding(c: &mut Command, stdin: Option<Vec<u8>>) -> Output {
    c.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = spawn(c);
    // Feed stdin from a thread: the child's stdout must be drained meanwhile.
    let feeder = stdin.map(|input| {
        let mut pipe = child.stdin.take().unwrap();
        std::thread::spawn(move || {
            use std::io::Write;
            let _ = pipe.write_all(&input);
        })
    });
    let out = child.wait_with_output().unwrap();
    if let Some(f) = feeder {
        f.join().unwrap();
    }
    out
}

/// Spawn, retrying while the program is "busy": another test thread may have
/// forked while this one still held the freshly written file open for
/// writing, and that child keeps the descriptor until it execs.
pub fn spawn(c: &mut Command) -> std::process::Child {
    try_spawn(c).unwrap()
}

/// `spawn`, returning the error (other than "busy") instead of panicking.
pub fn try_spawn(c: &mut Command) -> std::io::Result<std::process::Child> {
    for _ in 0..100 {
        match c.spawn() {
            Err(e) if e.raw_os_error() == Some(26) => std::thread::sleep(std::time::Duration::from_millis(20)),
            r => return r,
        }
    }
    panic!("{c:?}: text file stayed busy")
}

/// `key=value` lines of the probe's report.
pub fn report(o: &Output) -> Vec<(String, String)> {
    assert!(
        o.status.success(),
        "probe failed: {:?}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect()
}

pub fn field(r: &[(String, String)], key: &str) -> String {
    r.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("no {key} in {r:?}"))
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Start `cmd` (output discarded), send it SIGINT after `delay_ms`, and
/// wait for it: how a user's Ctrl-C reaches a command.
pub fn interrupted_after(cmd: &mut Command, delay_ms: u64) -> std::process::ExitStatus {
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(delay_ms));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    child.wait().unwrap()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A minimal root file system: static busybox only. No /nix, /usr or glibc.
pub fn busybox_rootfs(t: &TestDir, bundle: &Path) -> PathBuf {
    busybox_rootfs_at(&t.join("rootfs"), bundle)
}

/// The same at `r`.
pub fn busybox_rootfs_at(r: &Path, bundle: &Path) -> PathBuf {
    let r = r.to_path_buf();
    for d in ["bin", "proc", "dev", "tmp", "work"] {
        fs::create_dir_all(r.join(d)).unwrap();
    }
    fs::set_permissions(r.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::copy("/bin/busybox", r.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", r.join("bin/sh")).unwrap();
    fs::copy(bundle, r.join("app")).unwrap();
    r
}

/// The command prefix of a launch where user namespaces are refused (bwrap
/// `--disable-userns`), the whole host visible; `nobody`: as uid 65534
/// (the caller's real uid mapped, so a root-owned cache is its own).
pub fn userns_refused(nobody: bool) -> Vec<&'static str> {
    let mut v = vec!["bwrap", "--unshare-user", "--disable-userns"];
    if nobody {
        v.extend(["--uid", "65534", "--gid", "65534"]);
    }
    v.extend(["--bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--"]);
    v
}

/// Run as root, then as uid 65534 in a user namespace.
pub const USERS: [&[&str]; 2] = [&[], &["--unshare-user", "--uid", "65534", "--gid", "65534"]];

/// Run `/app args…` with bwrap in `t`'s busybox root (made on first use,
/// with the bundle at `/app` and an empty `/work/marker`), cwd `/work`,
/// TOTE_TEST_VAR and FOO set to `from-caller`.
pub fn in_busybox_root(t: &TestDir, bundle: &Path, args: &[&str], user: &[&str]) -> Output {
    let root = t.join("rootfs");
    if !root.exists() {
        busybox_rootfs(t, bundle);
        fs::write(root.join("work/marker"), "").unwrap();
    }
    for missing in ["nix", "usr", "lib", "lib64", "etc"] {
        assert!(!root.join(missing).exists());
    }
    Command::new("bwrap")
        .args(user)
        .arg("--bind")
        .arg(&root)
        .args([
            "/", "--proc", "/proc", "--dev", "/dev", "--chdir", "/work", "--", "/app",
        ])
        .args(args)
        .env("TOTE_TEST_VAR", "from-caller")
        .env("FOO", "from-caller")
        .output()
        .unwrap()
}

/// Is `path` statically linked? (busybox must be, for the rootfs tests.)
pub fn is_static(path: &Path) -> bool {
    let bytes = fs::read(path).unwrap();
    let elf = goblin::elf::Elf::parse(&bytes).unwrap();
    elf.interpreter.is_none() && elf.libraries.is_empty()
}

/// The probe built on the host, run directly: what a launch must look like.
pub fn host_probe(t: &TestDir) -> PathBuf {
    let direct = t.join("probe-direct");
    if !direct.exists() {
        let cc = Command::new("gcc")
            .arg("-O2")
            .arg("-o")
            .arg(&direct)
            .arg(repo().join("tests/fixtures/probe.c"))
            .status()
            .unwrap();
        assert!(cc.success());
    }
    direct
}

/// A bundled probe killed by a signal (raised, or a segfault) ends with the
/// same wait status as the host's probe: same signal, no core dump.
pub fn assert_dies_like_the_program(t: &TestDir, l: &Launch, bundle: &Path, prefix: &[&str]) {
    use std::os::unix::process::ExitStatusExt;
    let direct = host_probe(t);
    let mut no_core = prefix.to_vec();
    no_core.extend(["sh", "-c", "ulimit -c 0; exec \"$@\"", "sh"]);
    for args in [&["kill", "15"][..], &["segv"][..]] {
        let os: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        let want = Launch::root(t).run_with(&no_core, &direct, &os).status;
        let got = l.run_with(&no_core, bundle, &os).status;
        assert!(want.signal().is_some());
        assert_eq!(
            (got.signal(), got.code(), got.core_dumped()),
            (want.signal(), want.code(), want.core_dumped()),
            "{args:?}"
        );
    }
}

/// A bundle's index, read with the format crate.
pub fn bundle_index(bundle: &Path) -> tote_format::Index {
    let bytes = fs::read(bundle).unwrap();
    let tail = &bytes[bytes.len() - tote_format::TRAILER_LEN..];
    let layout = tote_format::Trailer::decode(tail, bytes.len() as u64).unwrap();
    layout.index(&bytes).unwrap()
}

/// `len` bytes of pseudo-random lower-case text (compresses, but slowly
/// at high levels).
pub fn random_text(len: usize) -> Vec<u8> {
    let mut x: u64 = 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 16) as u8 + b'a'
        })
        .collect()
}

/// A thread that rewrites a file every millisecond until dropped.
pub struct Rewriting {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Rewriting {
    pub fn start(path: PathBuf) -> Rewriting {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut n = 0u64;
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                fs::write(&path, format!("version {n}\n")).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        });
        Rewriting {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Rewriting {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `podman` with the runtime and cgroup manager this machine needs.
pub fn podman() -> Command {
    let mut c = Command::new("podman");
    c.args(["--runtime", "runc", "--cgroup-manager", "cgroupfs"]);
    c
}

/// `podman run --rm` with the limits this machine's runc needs.
pub fn podman_run_command() -> Command {
    let mut c = podman();
    c.args([
        "run",
        "--rm",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
    ]);
    c
}
