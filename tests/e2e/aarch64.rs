//! aarch64 bundles, built and run on this x86-64 machine: closures of
//! Debian arm64 files built by Nix as `aarch64-linux` derivations
//! (tests/fixtures/aarch64.nix), launched under qemu-user through
//! binfmt_misc.
//!
//! qemu-user runs every program with a helper thread, and the kernel
//! refuses `unshare(CLONE_NEWNS)` and `CLONE_NEWUSER` to a process with
//! more than one thread: under qemu the stub always launches relocated
//! (as on a host that refuses namespaces), and mount mode, which needs a
//! mount namespace, falls back to extracting. What runs in a namespace on real aarch64
//! hardware is the same code as on x86-64 but for `sys/arch.rs`.

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use tote_format::Arch;

use crate::hostile::{write_bundle, Craft};
use crate::support::*;

/// qemu-aarch64 registered with binfmt_misc (registered here when it is
/// missing, as scripts/setup does).
fn qemu() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let binfmt = Path::new("/proc/sys/fs/binfmt_misc");
        if binfmt.join("qemu-aarch64").exists() {
            return;
        }
        if !binfmt.join("register").exists() {
            let _ = Command::new("mount")
                .args(["-t", "binfmt_misc", "binfmt_misc"])
                .arg(binfmt)
                .status();
        }
        let line = fs::read("/usr/lib/binfmt.d/qemu-aarch64.conf")
            .expect("no /usr/lib/binfmt.d/qemu-aarch64.conf: install qemu-user-static (scripts/setup does)");
        fs::write(binfmt.join("register"), line)
            .expect("cannot register qemu-aarch64 with binfmt_misc (needs root and binfmt_misc)");
        eprintln!("aarch64 tests: registered qemu-aarch64 with binfmt_misc");
    });
}

fn build_arm(attr: &str, nonce: &str) -> String {
    let out = Command::new(repo().join("tests/fixtures/build.sh"))
        .args(["--aarch64", attr, nonce])
        .output()
        .expect("running nix-build");
    assert!(
        out.status.success(),
        "nix-build {attr} (aarch64) failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The aarch64 fixtures, bundled once: the script (busybox sh, then the
/// probe) and the probe alone.
struct Arm {
    _dir: TestDir,
    greet: PathBuf,
    probe: PathBuf,
    script_store: String,
}

fn arm() -> &'static Arm {
    static A: OnceLock<Arm> = OnceLock::new();
    A.get_or_init(|| {
        qemu();
        let n = nonce();
        let script_store = build_arm("script", &n);
        let probe_store = build_arm("probe", &n);
        let dir = TestDir::new();
        let (greet, probe) = (dir.join("greet"), dir.join("probe"));
        for (store, out) in [(&script_store, &greet), (&probe_store, &probe)] {
            let o = bundle(store, out, &[]);
            assert!(o.status.success(), "{}", stderr(&o));
        }
        Arm {
            _dir: dir,
            greet,
            probe,
            script_store,
        }
    })
}

/// The ELF machine in a file's header.
fn elf_machine(path: &Path) -> u16 {
    let head = fs::read(path).unwrap();
    u16::from_le_bytes([head[18], head[19]])
}

#[test]
fn an_aarch64_closure_becomes_an_aarch64_bundle() {
    let a = arm();
    assert_eq!(elf_machine(&a.greet), 183, "the aarch64 stub");
    let j = inspect_json(&a.greet);
    assert_eq!(j["arch"], "aarch64");
    assert_eq!(j["format_version"], 6);
    let text = tote().arg("inspect").arg(&a.greet).output().unwrap();
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("  architecture    aarch64\n"),
        "{}",
        String::from_utf8_lossy(&text.stdout)
    );
    let ls = tote().arg("ls").arg(&a.greet).output().unwrap();
    assert!(ls.status.success());
    assert!(stderr(&ls).contains("programs for aarch64"), "{}", stderr(&ls));
    let v = tote().arg("verify").arg(&a.greet).output().unwrap();
    assert!(v.status.success(), "{}", stderr(&v));
    assert!(String::from_utf8_lossy(&v.stdout).contains("ok (aarch64,"));
    // The same closure forced to x86-64: another stub, and diff says so.
    let t = TestDir::new();
    let forced = t.join("forced");
    let o = bundle(&a.script_store, &forced, &["--arch", "x86_64"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--arch x86_64, but the entry point"),
        "a note: {}",
        stderr(&o)
    );
    assert_eq!(elf_machine(&forced), 62);
    let d = tote()
        .arg("diff")
        .arg("--json")
        .arg(&a.greet)
        .arg(&forced)
        .output()
        .unwrap();
    let d: serde_json::Value = serde_json::from_slice(&d.stdout).unwrap();
    let changed: Vec<&serde_json::Value> = d["metadata"].as_array().unwrap().iter().collect();
    assert!(
        changed
            .iter()
            .any(|c| c["field"] == "arch" && c["old"] == "aarch64" && c["new"] == "x86_64"),
        "{d}"
    );
}

#[test]
fn an_aarch64_bundle_behaves_like_its_program_as_uid_65534() {
    let a = arm();
    let t = TestDir::new();
    let l = Launch::nobody(&t).env("TOTE_TEST_VAR", "from-caller");
    let o = l.run(&a.greet, &["one", "two words"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(out.contains("arch=aarch64"), "{out}");
    let r = report(&o);
    assert_eq!(field(&r, "argc"), "3");
    assert_eq!(field(&r, "arg1"), hex(b"one"));
    assert_eq!(field(&r, "arg2"), hex(b"two words"));
    assert_eq!(field(&r, "cwd"), t.path().to_str().unwrap());
    assert_eq!(field(&r, "uid"), NOBODY.to_string());
    assert_eq!(field(&r, "env"), "from-caller");
    // Exit codes, stdin, stderr.
    assert_eq!(l.run(&a.probe, &["exit", "7"]).status.code(), Some(7));
    let mut with_stdin = l.clone();
    with_stdin.stdin = Some(b"fed through\n".to_vec());
    assert_eq!(with_stdin.run(&a.probe, &["cat"]).stdout, b"fed through\n");
    let e = l.run(&a.probe, &["stderr", "only here"]);
    assert_eq!(
        (e.stdout.as_slice(), e.stderr.as_slice()),
        (&b""[..], &b"only here"[..])
    );
    // A signal the program raises ends the bundle the same way.
    let k = l.run(&a.probe, &["kill", "15"]);
    assert_eq!(k.status.signal(), Some(15), "{:?}", k.status);
    // TOTE_EXTRACT writes the tree and runs nothing.
    let writable = t.join("out");
    fs::create_dir(&writable).unwrap();
    std::os::unix::fs::chown(&writable, Some(NOBODY), Some(NOBODY)).unwrap();
    let dir = writable.join("x");
    let x = l.clone().env("TOTE_EXTRACT", dir.to_str().unwrap()).run(&a.greet, &[]);
    assert!(x.status.success(), "{}", stderr(&x));
    let busybox = fs::read_dir(dir.join("nix/store"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with("-arm64-busybox"))
        .expect("the busybox store path");
    assert_eq!(elf_machine(&busybox.join("bin/busybox")), 183);
}

#[test]
fn an_aarch64_bundle_runs_as_pid_1_and_where_namespaces_are_refused() {
    let a = arm();
    let t = TestDir::new();
    let l = Launch::root(&t);
    // PID 1 of a new PID namespace (what Nomad's exec driver gives): the
    // exit code comes back, orphans are reaped.
    let pid1 = ["unshare", "--pid", "--fork", "--mount-proc", "--"];
    let o = l.run_with(&pid1, &a.probe, &["orphan".as_ref()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("zombies=0"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let e = l.run_with(&pid1, &a.probe, &["exit".as_ref(), "3".as_ref()]);
    assert_eq!(e.status.code(), Some(3));
    // As uid 65534 where user namespaces are refused (bwrap
    // --disable-userns): relocated, the same output.
    let o = l.run_with(&userns_refused(true), &a.greet, &["x".as_ref()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("arch=aarch64"));
    // Mount mode needs a mount namespace, which qemu-user cannot give: the
    // launch extracts instead, as where FUSE is unusable, and says so only
    // under TOTE_DEBUG.
    let m = l.clone().env("TOTE_MODE", "mount").run(&a.greet, &[]);
    assert!(m.status.success(), "{}", stderr(&m));
    assert!(String::from_utf8_lossy(&m.stdout).contains("arch=aarch64"));
    assert!(m.stderr.is_empty(), "{}", stderr(&m));
}

#[test]
fn a_closure_that_mixes_architectures_is_refused() {
    qemu();
    let n = nonce();
    let mixed = build_arm("mixed", &n);
    let t = TestDir::new();
    let out = t.join("mixed");
    let o = tote().arg("bundle").arg(&mixed).arg("-o").arg(&out).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.starts_with("tote: the entry point ")
            && e.contains("is an aarch64 program, but its interpreter ")
            && e.contains("ld-linux-x86-64.so.2 is x86_64: the closure mixes architectures"),
        "{e}"
    );
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(!out.exists());
}

#[test]
fn a_stub_of_another_architecture_than_the_metadata_is_refused() {
    let a = arm();
    let t = TestDir::new();
    let arm_stub = fs::read(&a.greet).unwrap()[..stub_len(&a.greet) as usize].to_vec();
    let x86_stub = crate::hostile::stub();
    for (stub, meta_arch, stub_arch) in [
        (&x86_stub, Arch::Aarch64, "x86_64"),
        (&arm_stub, Arch::X86_64, "aarch64"),
    ] {
        let mut c = Craft::new();
        c.meta.arch = meta_arch;
        let path = t.join(format!("wrong-{stub_arch}"));
        write_bundle(&path, &c.bytes(stub));
        let o = Launch::nobody(&t).run(&path, &[]);
        assert_eq!(o.status.code(), Some(114), "{}", stderr(&o));
        let e = stderr(&o);
        assert!(
            e.contains(&format!(
                "its programs are for {meta_arch}, but its stub is an {stub_arch} program"
            )),
            "{e}"
        );
        assert_eq!(e.lines().count(), 1, "{e}");
        assert!(o.stdout.is_empty(), "nothing ran");
        let v = tote().arg("verify").arg(&path).output().unwrap();
        assert_eq!(v.status.code(), Some(1));
        assert!(
            stderr(&v).contains(&format!(
                "the stub is an {stub_arch} program, but the metadata says the bundle is for {meta_arch}"
            )),
            "{}",
            stderr(&v)
        );
    }
    // `--stub` of the wrong architecture is refused when bundling.
    let x86_file = t.join("x86-stub");
    fs::write(&x86_file, &x86_stub).unwrap();
    let o = tote()
        .args(["bundle", &a.script_store, "--stub", x86_file.to_str().unwrap(), "-o"])
        .arg(t.join("never"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("is an x86_64 program, but the bundle is for aarch64 (its programs are"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_program_of_an_unknown_architecture_is_named() {
    let t = TestDir::new();
    let dir = t.join("rv");
    fs::create_dir_all(dir.join("bin")).unwrap();
    // An ELF header for RISC-V (machine 243), and nothing else.
    let mut elf = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0".to_vec();
    elf.extend(243u16.to_le_bytes());
    elf.resize(256, 0);
    fs::write(dir.join("bin/prog"), &elf).unwrap();
    fs::set_permissions(
        dir.join("bin/prog"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let out = t.join("rv-bundle");
    let o = tote()
        .args(["bundle", dir.to_str().unwrap(), "--entrypoint", "bin/prog", "-o"])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("is a program for RISC-V: tote bundles x86_64 and aarch64 programs"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists());
    // Forced, it bundles; the launch then names what went wrong.
    let o = tote()
        .args([
            "bundle",
            dir.to_str().unwrap(),
            "--entrypoint",
            "bin/prog",
            "--arch",
            "x86_64",
            "-o",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let r = Launch::nobody(&t).run(&out, &[]);
    assert_eq!(r.status.code(), Some(117));
    assert!(
        stderr(&r).contains("ENOEXEC (Exec format error): not a program this host runs"),
        "{}",
        stderr(&r)
    );
}

/// Every structure the stub passes to the C library has the same layout
/// in musl as in glibc, on both architectures: the condition for linking
/// the stub (built for the gnu target) against musl's libc.a.
#[test]
fn musl_lays_out_the_stubs_structures_as_glibc_does() {
    qemu();
    let t = TestDir::new();
    let src = repo().join("tests/fixtures/layout.c");
    let specs = "/usr/lib/aarch64-linux-musl/musl-gcc.specs";
    let builds: [(&str, Vec<&str>); 4] = [
        ("x86_64 glibc", vec!["gcc", "-static"]),
        ("x86_64 musl", vec!["musl-gcc", "-static"]),
        ("aarch64 glibc", vec!["aarch64-linux-gnu-gcc", "-static"]),
        (
            "aarch64 musl",
            vec!["aarch64-linux-gnu-gcc", "-static", "-specs", specs],
        ),
    ];
    let mut outs = Vec::new();
    for (what, cc) in &builds {
        let exe = t.join(what.replace(' ', "-"));
        let c = Command::new(cc[0])
            .args(&cc[1..])
            .arg("-o")
            .arg(&exe)
            .arg(&src)
            .output()
            .unwrap();
        assert!(c.status.success(), "{what}: {}", stderr(&c));
        let o = Command::new(&exe).output().unwrap();
        assert!(o.status.success(), "{what}");
        outs.push(String::from_utf8(o.stdout).unwrap());
    }
    assert!(outs[0].lines().count() > 20, "{}", outs[0]);
    assert_eq!(outs[0], outs[1], "x86_64: musl and glibc differ");
    assert_eq!(outs[2], outs[3], "aarch64: musl and glibc differ");
}

/// `skopeo inspect [--override-arch ARCH] oci-archive:PATH` as JSON.
fn skopeo_inspect(archive: &Path, arch: &str, config: bool) -> serde_json::Value {
    let mut c = Command::new("skopeo");
    c.args(["inspect", "--override-arch", arch]);
    if config {
        c.arg("--config");
    }
    let o = c.arg(format!("oci-archive:{}", archive.display())).output().unwrap();
    assert!(o.status.success(), "skopeo: {}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn images_of_aarch64_input_are_linux_arm64_and_two_architectures_make_one_index() {
    let a = arm();
    let f = fixture();
    let t = TestDir::new();
    // One aarch64 input: a linux/arm64 image.
    let single = t.join("arm.tar");
    let o = tote()
        .arg("image")
        .arg(&a.greet)
        .arg("-o")
        .arg(&single)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(skopeo_inspect(&single, "arm64", true)["architecture"], "arm64");
    // One input per architecture: one index, each platform its manifest,
    // the x86-64 one the same as its single-architecture image's.
    let multi = t.join("multi.tar");
    let o = tote()
        .arg("image")
        .arg(&f.greet)
        .arg(&a.greet)
        .args(["--tag", "greet:multi", "-o"])
        .arg(&multi)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("linux/amd64 + linux/arm64"));
    let x86_only = t.join("x86.tar");
    let o = tote()
        .arg("image")
        .arg(&f.greet)
        .args(["--tag", "greet:multi", "-o"])
        .arg(&x86_only)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci-archive:{}", multi.display()))
        .output()
        .unwrap();
    let index: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    let platforms: Vec<(String, String)> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["platform"]["architecture"].as_str().unwrap().to_string(),
                m["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let x86_digest = skopeo_inspect(&x86_only, "amd64", false)["Digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(platforms.len(), 2, "{index}");
    assert_eq!(platforms[0], ("amd64".to_string(), x86_digest));
    assert_eq!(platforms[1].0, "arm64");
    for (arch, want) in [("amd64", "amd64"), ("arm64", "arm64")] {
        assert_eq!(skopeo_inspect(&multi, arch, true)["architecture"], want);
    }
    // podman runs the arm64 image here, under qemu.
    let name = format!("localhost/tote-arm64-{}:1", std::process::id());
    let copy = Command::new("skopeo")
        .args(["copy", "-q", "--override-arch", "arm64"])
        .arg(format!("oci-archive:{}", multi.display()))
        .arg(format!("containers-storage:{name}"))
        .output()
        .unwrap();
    assert!(copy.status.success(), "{}", stderr(&copy));
    let run = podman_run_command()
        .args(["--arch", "arm64", "--network", "none", &name, "from podman"])
        .output()
        .unwrap();
    let _ = podman().args(["rmi", "-f", &name]).output();
    assert!(run.status.success(), "{}", stderr(&run));
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(out.contains("arch=aarch64"), "{out}");
    assert!(out.contains(&format!("arg1={}", hex(b"from podman"))), "{out}");
    // Bundling the index: --arch picks its manifest, else this host's.
    for (arch, want) in [(Some("arm64"), "aarch64"), (None, "x86_64")] {
        let out = t.join(format!("from-index-{want}"));
        let mut c = tote();
        c.arg("bundle").arg(&multi).arg("-o").arg(&out);
        if let Some(a) = arch {
            c.args(["--arch", a]);
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(inspect_json(&out)["arch"], want);
    }
    let o = tote()
        .arg("bundle")
        .arg(&x86_only)
        .args(["--arch", "aarch64", "-o"])
        .arg(t.join("never"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("the image is linux/amd64, not linux/arm64 (--arch)"),
        "{}",
        stderr(&o)
    );
    // A docker-archive holds one image; two inputs of one architecture
    // are refused.
    for (inputs, want) in [
        (
            vec![&f.greet, &a.greet],
            "a docker-archive holds one architecture's image",
        ),
        (
            vec![&a.greet, &a.probe],
            "are both for aarch64: give one input per architecture",
        ),
    ] {
        let out = t.join("refused.tar");
        let mut c = tote();
        c.arg("image").args(inputs).arg("-o").arg(&out);
        if want.contains("docker") {
            c.args(["--format", "docker-archive"]);
        }
        let o = c.output().unwrap();
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(stderr(&o).contains(want), "{}", stderr(&o));
        assert!(!out.exists());
    }
}

/// A directory bundle of a static busybox: this host's, or Debian's arm64
/// one.
fn busybox_bundle(t: &TestDir, arm: bool) -> PathBuf {
    let name = if arm { "bb-aarch64" } else { "bb-x86_64" };
    let dir = t.join(format!("{name}-dir"));
    fs::create_dir_all(dir.join("bin")).unwrap();
    let src = if arm {
        tools().join("arm64/bin/busybox")
    } else {
        PathBuf::from("/bin/busybox")
    };
    assert!(src.exists(), "{} is missing: run scripts/setup", src.display());
    fs::copy(&src, dir.join("bin/busybox")).unwrap();
    let file = t.join(name);
    let o = bundle(dir.to_str().unwrap(), &file, &["--entrypoint", "bin/busybox"]);
    assert!(o.status.success(), "{}", stderr(&o));
    file
}

#[test]
fn one_nomad_job_runs_each_architectures_bundle_on_its_own_clients() {
    qemu();
    let t = TestDir::new();
    let files = [busybox_bundle(&t, false), busybox_bundle(&t, true)];
    let garage = crate::nomad::Garage::start(&t);
    let bucket = garage.var("TOTE_BUCKET");
    for f in &files {
        garage.upload(f, f.file_name().unwrap().to_str().unwrap());
    }
    let o = tote()
        .arg("nomad")
        .args(&files)
        .args(["--url", &format!("s3://{bucket}/bb-x86_64")])
        .args(["--url", &format!("s3://{bucket}/bb-aarch64")])
        .args([
            "--endpoint",
            &garage.var("AWS_ENDPOINT_URL"),
            "--region",
            "garage",
            "--job",
            "bb",
        ])
        .args(["--", "sh", "-c", "uname -m; exec sleep 1000"])
        .env("AWS_ACCESS_KEY_ID", garage.var("TOTE_READ_KEY_ID"))
        .env("AWS_SECRET_ACCESS_KEY", garage.var("TOTE_READ_SECRET"))
        .env_remove("AWS_SESSION_TOKEN")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    let job_file = t.join("bb.nomad.hcl");
    fs::write(&job_file, &text).unwrap();
    // Each group: its architecture's constraint, its file, its checksum.
    let body = hcl::parse(&text).unwrap();
    let job = body.blocks().find(|b| b.identifier() == "job").unwrap();
    let groups: Vec<&hcl::Block> = job.body().blocks().filter(|b| b.identifier() == "group").collect();
    assert_eq!(groups.len(), 2, "{text}");
    for (g, (file, arch)) in groups.iter().zip(files.iter().zip(["amd64", "arm64"])) {
        let g_text = hcl::to_string(g.body()).unwrap();
        assert!(g_text.contains(&format!("value = \"{arch}\"")), "{g_text}");
        assert!(g_text.contains("attr.cpu.arch"), "{g_text}");
        let sum = tote_format::sha256(&fs::read(file).unwrap()).to_hex();
        assert!(g_text.contains(&format!("sha256:{sum}")), "{g_text}");
        let key = file.file_name().unwrap().to_str().unwrap();
        assert!(g_text.contains(&format!("/{bucket}/{key}")), "{g_text}");
    }
    // The exec-driver stand-in, as a client of each architecture: its own
    // bundle downloaded, checked and run as PID 1; SIGINT stops it.
    for (cpu, machine) in [("amd64", "x86_64"), ("arm64", "aarch64")] {
        let alloc = t.join(format!("alloc-{cpu}"));
        let task = crate::nomad::Task::start_with(&job_file, &alloc, &["--cpu-arch".as_ref(), cpu.as_ref()]);
        let log = alloc.join("alloc/logs/bb.stdout.0");
        let end = std::time::Instant::now() + Duration::from_secs(60);
        while !fs::read_to_string(&log).unwrap_or_default().contains(machine) {
            assert!(
                std::time::Instant::now() < end,
                "{cpu}: no {machine} in {}",
                log.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let (code, report) = task.stop();
        assert_eq!(code, 130, "{cpu}: {report:#?}");
        assert!(
            report
                .iter()
                .any(|l| l.contains(&format!("/bb-{machine} -> local/bb-{machine}"))),
            "{cpu}: {report:#?}"
        );
    }
}

/// A `tote` built for aarch64 (scripts/build-aarch64) writes the same bytes
/// as this one, for either architecture's input, and installs. Slow (a
/// release build, then bundling under qemu): scripts/soak runs it, with
/// TOTE_AARCH64_TOTE naming the built tote.
#[test]
#[ignore = "needs TOTE_AARCH64_TOTE (scripts/soak builds it)"]
fn an_aarch64_tote_writes_the_same_bytes_as_this_one() {
    let other = PathBuf::from(std::env::var_os("TOTE_AARCH64_TOTE").expect("TOTE_AARCH64_TOTE: the aarch64 tote"));
    assert_eq!(
        elf_machine(&other),
        183,
        "{} is not an aarch64 program",
        other.display()
    );
    let a = arm();
    let x86 = build("probe", &nonce());
    let t = TestDir::new();
    for (what, store) in [("aarch64", &a.script_store), ("x86_64", &x86)] {
        let mine = t.join(format!("{what}-here"));
        let theirs = t.join(format!("{what}-aarch64-tote"));
        let o = bundle(store, &mine, &[]);
        assert!(o.status.success(), "{}", stderr(&o));
        let o = Command::new(&other)
            .args(["bundle", store, "-o"])
            .arg(&theirs)
            .output()
            .unwrap();
        assert!(o.status.success(), "the aarch64 tote: {}", stderr(&o));
        assert!(
            fs::read(&mine).unwrap() == fs::read(&theirs).unwrap(),
            "{what}: the two totes wrote different bundles"
        );
    }
    let prefix = t.join("prefix");
    let o = Command::new(repo().join("scripts/install"))
        .args(["--tote", other.to_str().unwrap(), "--prefix", prefix.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "scripts/install: {}", stderr(&o));
    assert_eq!(elf_machine(&prefix.join("bin/tote")), 183);
    assert!(prefix.join("share/man/man1/tote.1").is_file());
}

/// Where scripts/setup unpacks Debian's arm64 packages.
fn tools() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache"))
        .join("tote-tools")
}

#[test]
fn a_program_of_a_foreign_arm64_root_is_bundled_with_sysroot() {
    qemu();
    let root = tools().join("arm64-root");
    assert!(
        root.join("usr/bin/hello").exists(),
        "{} holds no Debian hello:arm64: run scripts/setup",
        root.display()
    );
    let t = TestDir::new();
    let out = t.join("hello");
    let o = tote()
        .args(["bundle", "/usr/bin/hello", "--sysroot", root.to_str().unwrap(), "-o"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let j = inspect_json(&out);
    assert_eq!(j["arch"], "aarch64");
    assert_eq!(j["entrypoint"], "/usr/bin/hello");
    // The program, its loader and libc, from the root and not this host.
    let paths: Vec<String> = bundle_index(&out)
        .entries
        .iter()
        .map(|e| String::from_utf8_lossy(&e.path).into_owned())
        .collect();
    assert!(
        paths.iter().any(|p| p.ends_with("aarch64-linux-gnu/libc.so.6")),
        "{paths:?}"
    );
    assert!(!paths.iter().any(|p| p.contains("x86_64")), "{paths:?}");
    let r = Launch::nobody(&t).run(&out, &["--greeting", "hi from arm64"]);
    assert!(r.status.success(), "{}", stderr(&r));
    assert_eq!(r.stdout, b"hi from arm64\n");
    // The program is named inside the root.
    let o = tote()
        .args(["bundle", "usr/bin/hello", "--sysroot", root.to_str().unwrap(), "-o"])
        .arg(t.join("never"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("with --sysroot, name the program by its absolute path"),
        "{}",
        stderr(&o)
    );
    let o = tote()
        .args(["bundle", "/usr/bin/absent", "--sysroot", root.to_str().unwrap(), "-o"])
        .arg(t.join("never"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("/usr/bin/absent"), "{}", stderr(&o));
    assert!(!t.join("never").exists());
}

/// A root that holds only Debian's static arm64 busybox (no /nix, /usr or
/// any libc) and `app` as /app, with a cache directory /work/cache.
fn bare_arm64_root(t: &TestDir, app: &Path) -> PathBuf {
    let root = t.join("rootfs");
    for d in ["bin", "proc", "dev", "tmp", "work/cache"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::set_permissions(root.join("tmp"), std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
    fs::set_permissions(
        root.join("work/cache"),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    fs::copy(tools().join("arm64/bin/busybox"), root.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
    fs::copy(app, root.join("app")).unwrap();
    for absent in ["nix", "usr", "lib", "lib64", "etc"] {
        assert!(!root.join(absent).exists());
    }
    root
}

/// `/app ARGS` in `root` as uid 65534, in /work, with an empty environment
/// but for TOTE_CACHE_DIR=/work/cache and TOTE_TEST_VAR=inside. Inside,
/// uid 65534 is the caller's real uid (root) mapped: the cache directory,
/// owned by root, is the sandbox user's own.
fn run_in_root(root: &Path, args: &[&str]) -> std::process::Output {
    Command::new("bwrap")
        .args(["--unshare-user", "--uid", "65534", "--gid", "65534", "--bind"])
        .arg(root)
        .args([
            "/",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--chdir",
            "/work",
            "--clearenv",
        ])
        .args([
            "--setenv",
            "TOTE_CACHE_DIR",
            "/work/cache",
            "--setenv",
            "TOTE_TEST_VAR",
            "inside",
            "--",
        ])
        .arg("/app")
        .args(args)
        .output()
        .unwrap()
}

/// In a bare arm64 busybox root, as uid 65534: the aarch64 bundle brings
/// everything.
#[test]
fn an_aarch64_bundle_runs_in_a_bare_arm64_busybox_root_as_uid_65534() {
    let a = arm();
    let t = TestDir::new();
    let root = bare_arm64_root(&t, &a.greet);
    let o = run_in_root(&root, &["one", "two"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(out.contains("arch=aarch64"), "{out}");
    let r = report(&o);
    assert_eq!(field(&r, "argc"), "3", "{out}");
    assert_eq!(field(&r, "arg2"), hex(b"two"));
    assert_eq!(field(&r, "cwd"), "/work");
    assert_eq!(field(&r, "uid"), "65534");
    assert_eq!(field(&r, "env"), "inside");
    assert_eq!(field(&r, "thread"), "42", "glibc found libgcc_s in the closure");
    assert!(field(&r, "libc").ends_with("-arm64-glibc/lib/libc.so.6"), "{out}");
    // Warm: the same, from the entry the first run left.
    let again = run_in_root(&root, &["exit", "5"]);
    assert_eq!(again.status.code(), Some(5), "{}", stderr(&again));
}

/// The demo (examples/hello-python: CPython with its standard library and
/// sqlite3) built from Debian's arm64 packages, in a bare arm64 root.
#[test]
fn the_demo_app_built_for_aarch64_runs_in_a_bare_arm64_root() {
    qemu();
    let app = build_arm("hello-python", &nonce());
    let t = TestDir::new();
    let file = t.join("hello-python");
    let o = bundle(&app, &file, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(inspect_json(&file)["arch"], "aarch64");
    let root = bare_arm64_root(&t, &file);
    for run in ["cold", "warm"] {
        let o = run_in_root(&root, &["hello world"]);
        assert!(o.status.success(), "{run}: {}", stderr(&o));
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        for want in [
            "hello from a tote bundle\n",
            "-arm64-python3/bin/python3\n",
            "sum(0..999) = 499500\n",
            "arguments: ['hello world']\n",
            "working directory: /work\n",
            "running as uid 65534\n",
        ] {
            assert!(out.contains(want), "{run}: no {want:?} in\n{out}");
        }
    }
}

/// The deploy example (examples/hello-flask) built for aarch64, through
/// S3 and `tote nomad` to the exec-driver stand-in as an arm64 client:
/// it serves its page as uid 65534 under the bundle as PID 1, and stops
/// on SIGINT with nothing left behind.
#[test]
fn the_flask_app_built_for_aarch64_runs_under_the_exec_driver_and_stops_on_sigint() {
    qemu();
    let app = build_arm("hello-flask", &nonce());
    let t = TestDir::new();
    let port = crate::nomad::free_port();
    let (_garage, file, text) = crate::nomad::flask_job_of(&t, &app, port);
    assert_eq!(inspect_json(&file)["arch"], "aarch64");
    // Placed on arm64 clients only.
    let body = hcl::parse(&text).unwrap();
    let constraint = ["job", "group", "constraint"].iter().fold(&body, |b, id| {
        b.blocks()
            .find(|x| x.identifier() == *id)
            .unwrap_or_else(|| panic!("no {id} block in\n{text}"))
            .body()
    });
    let value = |k: &str| {
        constraint
            .attributes()
            .find(|a| a.key() == k)
            .map(|a| a.expr().to_string())
    };
    assert_eq!(value("attribute").as_deref(), Some("\"${attr.cpu.arch}\""), "{text}");
    assert_eq!(value("value").as_deref(), Some("\"arm64\""), "{text}");
    let job = t.join("hello-flask.nomad.hcl");
    fs::write(&job, &text).unwrap();
    let (_, page) = crate::nomad::serve_then_stop(
        &job,
        &t.join("alloc"),
        port,
        &["--cpu-arch".as_ref(), "arm64".as_ref()],
        "arm64",
    );
    for want in [
        "hello from a tote bundle under Nomad",
        "task hello-flask in /local",
        "-arm64-python3-flask/bin/python3\n",
    ] {
        assert!(page.contains(want), "no {want:?} in the page:\n{page}");
    }
}

/// The cache on aarch64: a running bundle's entry is pinned against the
/// trims of other launches and against `tote cache prune`, and the program
/// then reads a file it had not opened; once it has exited, a prune takes
/// the entry and its short path.
#[test]
fn a_running_aarch64_bundle_pins_its_entry_against_trims_and_prunes() {
    use crate::cache::{bundle_id, cache_json, launch_ok, ls, names, settled, Waiting};
    let a = arm();
    let t = TestDir::new();
    let waiter = t.join("waiter");
    let o = bundle(&build_arm("waiter", &nonce()), &waiter, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let root = t.cache(0);
    let waiting = Waiting::start(&t, "waiter", &waiter, &root, &[]);
    let mine = names(&ls(&root));
    assert_eq!(mine.len(), 1, "{mine:?}");
    // Under qemu, relocated: the entry's name carries its short path.
    assert!(
        mine[0].starts_with(&bundle_id(&waiter)) && mine[0].len() > 64,
        "{mine:?}"
    );
    // Two other aarch64 bundles, each trimming all it can after its cold
    // start: all but the pinned entries (the waiter's, and its own).
    for other in [&a.greet, &a.probe] {
        launch_ok(other, &root, &[("TOTE_CACHE_MAX", "0")]);
    }
    let greet = bundle_id(&a.greet);
    let l = settled(&root, "the trims after the other launches", |l| {
        let n = names(l);
        n.contains(&mine[0]) && !n.iter().any(|e| e.starts_with(&greet)) && n.len() <= 2
    });
    let e = l["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == mine[0].as_str())
        .unwrap();
    assert_eq!(e["in_use"], true, "{l:#}");
    assert_eq!(e["pids"][0].as_u64(), Some(u64::from(waiting.pid())), "{l:#}");
    let p = cache_json(&["prune", "--max-size", "1"], &root);
    assert_eq!(p["kept_in_use"], serde_json::json!([mine[0]]), "{p:#}");
    assert_eq!(names(&ls(&root)), mine);
    let (status, rest, err) = waiting.wake();
    assert!(status.success(), "{status:?}: {err}");
    assert_eq!(rest, "lazy data of an aarch64 bundle\n", "{err}");
    // Not in use any more: the next prune takes it, short path and all.
    let p = cache_json(&["prune", "--max-size", "1"], &root);
    assert_eq!(p["removed"][0]["name"], mine[0].as_str(), "{p:#}");
    assert_eq!(names(&ls(&root)), Vec::<String>::new());
    let short = mine[0].rsplit('-').next().unwrap();
    assert!(
        fs::symlink_metadata(Path::new("/tmp").join(short)).is_err(),
        "/tmp/{short} is left"
    );
}

/// The integrity checks, in the aarch64 stub: a byte flipped in the data,
/// metadata, index or trailer, or the file cut short, and nothing runs.
#[test]
fn a_damaged_aarch64_bundle_never_runs() {
    let a = arm();
    let t = TestDir::new();
    let bytes = fs::read(&a.probe).unwrap();
    let (n, stub) = (bytes.len(), stub_len(&a.probe) as usize);
    let mut damaged: Vec<(String, Vec<u8>)> = [stub, stub + (n - stub) / 2, n - 400, n - 144, n - 20]
        .iter()
        .map(|&off| {
            let mut b = bytes.clone();
            b[off] ^= 0x40;
            (format!("flip at {off}"), b)
        })
        .collect();
    damaged.extend(
        [stub + 1, (stub + n) / 2, n - 1]
            .iter()
            .map(|&len| (format!("cut to {len}"), bytes[..len].to_vec())),
    );
    for (i, (what, b)) in damaged.iter().enumerate() {
        let app = t.join(format!("damaged-{i}"));
        fs::write(&app, b).unwrap();
        fs::set_permissions(&app, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        crate::bad_bundles::refused(&t, &app, what);
    }
}

/// A thin aarch64 bundle: the aarch64 thin stub fetches its blocks from
/// nginx and runs the program, under qemu.
#[test]
fn an_aarch64_thin_bundle_fetches_its_blocks_and_runs() {
    let a = arm();
    let t = TestDir::new();
    let nginx = crate::thin::Nginx::start(&t);
    nginx.upload(&a.greet, "greet");
    let thin = t.join("greet-thin");
    crate::thin::thin(&a.greet, &nginx.url("greet"), &thin, &[]);
    assert_eq!(elf_machine(&thin), 183, "the aarch64 thin stub");
    assert_eq!(inspect_json(&thin)["arch"], "aarch64");
    let o = Launch::nobody(&t).run(&thin, &["via", "nginx"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(out.contains("arch=aarch64"), "{out}");
    assert_eq!(field(&report(&o), "argc"), "3");
    assert!(nginx.served().iter().all(|(s, _)| *s == 206) && !nginx.served().is_empty());
}
