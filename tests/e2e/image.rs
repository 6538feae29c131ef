//! `tote image`: layered OCI and docker images of the same inputs, read by
//! real clients (skopeo, umoci, podman with runc), nothing mocked.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

/// `tote image INPUT -o OUT ARGS…`, which must succeed.
fn image(input: &Path, out: &Path, args: &[&str]) -> Output {
    let o = tote()
        .arg("image")
        .arg(input)
        .arg("-o")
        .arg(out)
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "tote image {}: {}", input.display(), stderr(&o));
    o
}

fn skopeo(args: &[&str]) -> Output {
    let o = Command::new("skopeo").args(args).output().unwrap();
    assert!(o.status.success(), "skopeo {args:?}: {}", stderr(&o));
    o
}

/// `skopeo inspect [--config] REF` as JSON.
fn inspect(reference: &str, config: bool) -> Value {
    let mut args = vec!["inspect"];
    if config {
        args.push("--config");
    }
    args.push(reference);
    serde_json::from_slice(&skopeo(&args).stdout).unwrap()
}

/// `created_by` of each history entry.
fn history(config: &Value) -> Vec<String> {
    config["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["created_by"].as_str().unwrap().to_string())
        .collect()
}

fn diff_ids(config: &Value) -> Vec<String> {
    config["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_string())
        .collect()
}

fn nix_build(example: &str, args: &[&str]) -> String {
    let out = Command::new("nix-build")
        .arg(repo().join("examples").join(example))
        .args(args)
        .args(["--no-out-link", "--quiet", "--option", "sandbox", "false"])
        .args(["--option", "build-users-group", "", "--option", "substituters", ""])
        .output()
        .unwrap();
    assert!(out.status.success(), "nix-build examples/{example}: {}", stderr(&out));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The demo app's store path (4 store paths: glibc, Python's libraries,
/// Python, the app).
fn demo() -> &'static str {
    static D: OnceLock<String> = OnceLock::new();
    D.get_or_init(|| nix_build("hello-python", &[]))
}

fn podman_run(args: &[&str]) -> Output {
    podman_run_command().args(args).output().unwrap()
}

/// Removes a podman image when the test ends, passed or not.
struct Loaded(String);

impl Drop for Loaded {
    fn drop(&mut self) {
        let _ = podman().args(["rmi", "-f", &self.0]).output();
    }
}

fn podman_load(archive: &Path, name: &str) -> Loaded {
    let o = podman().arg("load").arg("-i").arg(archive).output().unwrap();
    assert!(o.status.success(), "podman load {}: {}", archive.display(), stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains(&format!("Loaded image: localhost/{name}")), "{text}");
    Loaded(format!("localhost/{name}"))
}

/// Every entry below `root`: kind, content (or target) and executable bit.
fn tree(root: &Path) -> BTreeMap<String, String> {
    fn walk(dir: &Path, rel: &str, out: &mut BTreeMap<String, String>) {
        let mut names: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        for n in names {
            let p = dir.join(&n);
            let r = format!("{rel}/{}", n.to_string_lossy());
            let m = fs::symlink_metadata(&p).unwrap();
            let v = if m.file_type().is_symlink() {
                format!("-> {}", fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                walk(&p, &r, out);
                "dir".into()
            } else {
                format!("{} {}", m.permissions().mode() & 0o100 != 0, hex(&sha2_of(&p)))
            };
            out.insert(r, v);
        }
    }
    let mut out = BTreeMap::new();
    walk(root, "", &mut out);
    out
}

fn sha2_of(p: &Path) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(fs::read(p).unwrap()).to_vec()
}

fn umoci_unpack(layout_ref: &str, into: &Path) -> PathBuf {
    let o = Command::new("umoci")
        .args(["unpack", "--image", layout_ref])
        .arg(into)
        .output()
        .unwrap();
    assert!(o.status.success(), "umoci unpack {layout_ref}: {}", stderr(&o));
    into.join("rootfs")
}

#[test]
fn skopeo_reads_every_format_and_converts_between_them() {
    let t = TestDir::new();
    let app = Path::new(demo());
    let (oci, dir, docker) = (t.join("app.tar"), t.join("app-oci"), t.join("app-docker.tar"));
    let o = image(app, &oci, &[]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("(oci-archive, 4 layers, hello-python:latest;"), "{text}");
    image(app, &dir, &["--format", "oci-dir", "--compression", "zstd"]);
    image(app, &docker, &["--format", "docker-archive", "--tag", "demo/hello:1.0"]);
    let refs = [
        format!("oci-archive:{}", oci.display()),
        format!("oci:{}:hello-python:latest", dir.display()),
        format!("docker-archive:{}", docker.display()),
    ];
    let entry = format!("{}/bin/hello-python", demo());
    let first = diff_ids(&inspect(&refs[0], true));
    assert_eq!(first.len(), 4);
    for r in &refs {
        let i = inspect(r, false);
        assert_eq!(i["Layers"].as_array().unwrap().len(), 4, "{r}");
        assert_eq!(i["Architecture"], "amd64");
        let c = inspect(r, true);
        assert_eq!(c["config"]["Entrypoint"], serde_json::json!([entry]), "{r}");
        let path = c["config"]["Env"][0].as_str().unwrap();
        assert!(path.starts_with(&format!("PATH={}/bin:", demo())), "{path}");
        assert_eq!(c["config"]["Labels"]["dev.tote.version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(diff_ids(&c), first, "{r}: the same layers whatever the format");
    }
    let manifest = Command::new("tar")
        .arg("-xOf")
        .arg(&docker)
        .arg("manifest.json")
        .output()
        .unwrap();
    let manifest: Value = serde_json::from_slice(&manifest.stdout).unwrap();
    assert_eq!(manifest[0]["RepoTags"], serde_json::json!(["demo/hello:1.0"]));
    // Conversions: OCI archive to docker-archive, docker-archive to a layout.
    let converted = t.join("converted.tar");
    skopeo(&[
        "copy",
        "-q",
        &refs[0],
        &format!("docker-archive:{}:x/y:z", converted.display()),
    ]);
    let layout = t.join("converted-oci");
    skopeo(&["copy", "-q", &refs[2], &format!("oci:{}:v", layout.display())]);
    skopeo(&[
        "copy",
        "-q",
        &refs[1],
        &format!("oci-archive:{}", t.join("z.tar").display()),
    ]);
    for r in [
        format!("docker-archive:{}", converted.display()),
        format!("oci:{}:v", layout.display()),
        format!("oci-archive:{}", t.join("z.tar").display()),
    ] {
        assert_eq!(diff_ids(&inspect(&r, true)), first, "{r}");
    }
    // tote reads what skopeo wrote, and finds nothing changed.
    let o = tote().arg("diff").arg(&oci).arg(&converted).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("layers: 4 of 4 shared"));
}

#[test]
fn umoci_unpacks_a_root_whose_entry_point_runs_in_a_chroot() {
    let t = TestDir::new();
    let app = Path::new(demo());
    let dir = t.join("layout");
    image(app, &dir, &["--format", "oci-dir", "--tag", "demo:1"]);
    let rootfs = umoci_unpack(&format!("{}:demo:1", dir.display()), &t.join("bundle"));
    let mut top: Vec<String> = fs::read_dir(&rootfs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(top, ["nix", "tmp"]);
    assert_eq!(
        fs::metadata(rootfs.join("tmp")).unwrap().permissions().mode() & 0o7777,
        0o1777
    );
    let o = Command::new("/usr/sbin/chroot")
        .arg(&rootfs)
        .arg(format!("{}/bin/hello-python", demo()))
        .arg("from a chroot")
        .env_clear()
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}{}", stderr(&o));
    assert!(
        out.contains("hello from a tote bundle") && out.contains("'from a chroot'"),
        "{out}"
    );
    // The same files as the closure itself.
    for p in closure(demo()) {
        let inside = rootfs.join(p.trim_start_matches('/'));
        assert_eq!(tree(&inside), tree(Path::new(&p)), "{p}");
    }
}

#[test]
fn podman_loads_both_archives_and_runs_the_demo() {
    let t = TestDir::new();
    let app = Path::new(demo());
    let n = nonce().replace(['-'], "");
    for (format, file) in [("oci-archive", "oci.tar"), ("docker-archive", "docker.tar")] {
        let name = format!("tote-test-{format}:{n}");
        let archive = t.join(file);
        image(app, &archive, &["--format", format, "--tag", &name]);
        let loaded = podman_load(&archive, &name);
        let o = podman_run(&["--network", "none", &loaded.0, "from podman"]);
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{format}: {out}{}", stderr(&o));
        assert!(
            out.contains("hello from a tote bundle") && out.contains("'from podman'"),
            "{format}: {out}"
        );
        // Exit status comes through, as from the program itself.
        let o = podman_run(&["--network", "none", "--entrypoint", "/bin/sh", &loaded.0]);
        assert!(!o.status.success(), "the image holds the closure only: no /bin/sh");
    }
}

#[test]
fn the_flask_example_answers_http_from_podman_on_the_host_network() {
    let t = TestDir::new();
    let app = nix_build("hello-flask", &[]);
    let archive = t.join("flask.tar");
    let name = format!("tote-test-flask:{}", nonce().replace('-', ""));
    image(Path::new(&app), &archive, &["--tag", &name]);
    let loaded = podman_load(&archive, &name);
    let port = crate::nomad::free_port();
    let container = format!("tote-flask-{}", nonce());
    let child = podman_run_command()
        .args(["--name", &container, "--network", "host"])
        .args([
            "-e",
            "NOMAD_IP_http=127.0.0.1",
            "-e",
            &format!("NOMAD_PORT_http={port}"),
        ])
        .arg(&loaded.0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut page = None;
    while started.elapsed() < Duration::from_secs(120) && page.is_none() {
        if let Some((200, body)) = crate::nomad::http_get(port) {
            page = Some(body);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = podman().args(["stop", "-t", "10", &container]).output();
    let out = child.wait_with_output().unwrap();
    let page = page.unwrap_or_else(|| panic!("no HTTP 200 on port {port}: {}", stderr(&out)));
    assert!(page.contains("hello from a tote bundle under Nomad"), "{page}");
    assert!(
        page.contains("uid 0 pid 1 "),
        "the program is the container's PID 1: {page}"
    );
    assert!(page.contains("python 3") && page.contains("/nix/store/"), "{page}");
}

/// The same input gives the same bytes: built twice (one thread, then
/// many), and for a directory, from a copy with other mtimes, umask and
/// location.
#[test]
fn the_same_input_gives_the_same_digests() {
    let t = TestDir::new();
    let app = Path::new(demo());
    let sha = |p: &Path| hex(&sha2_of(p));
    let (a, b) = (t.join("a.tar"), t.join("b.tar"));
    let o = tote()
        .args(["image", "-q"])
        .arg(app)
        .arg("-o")
        .arg(&a)
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    image(app, &b, &["-q"]);
    assert_eq!(sha(&a), sha(&b), "built twice, one thread and many");
    let (za, zb) = (t.join("za.tar"), t.join("zb.tar"));
    image(app, &za, &["--compression", "zstd"]);
    image(app, &zb, &["--compression", "zstd"]);
    assert_eq!(sha(&za), sha(&zb), "zstd");

    // A directory, and a copy of it made under umask 077 with other mtimes.
    let src = t.join("src");
    for d in ["bin", "share/doc", "lib"] {
        fs::create_dir_all(src.join(d)).unwrap();
    }
    fs::copy("/bin/busybox", src.join("bin/tool")).unwrap();
    fs::write(src.join("share/doc/README"), "read me\n").unwrap();
    fs::write(src.join("lib/data"), vec![7u8; 100_000]).unwrap();
    std::os::unix::fs::symlink("../share/doc/README", src.join("bin/readme")).unwrap();
    let copy = t.join("elsewhere/copy");
    let cp = Command::new("sh")
        .arg("-c")
        .arg("umask 077 && mkdir -p \"$2\" && cp -r \"$1\"/. \"$2\" && find \"$2\" -exec touch -h -d '2001-02-03 04:05' {} +")
        .arg("sh")
        .arg(&src)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(cp.success());
    assert_eq!(
        fs::metadata(copy.join("bin/tool")).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let (da, db) = (t.join("da.tar"), t.join("db.tar"));
    image(&src, &da, &["--entrypoint", "bin/tool"]);
    image(&copy, &db, &["--entrypoint", "bin/tool"]);
    assert_eq!(sha(&da), sha(&db), "a copy with other mtimes, umask and place");
    // One layer per top-level item (tmp goes into the top one).
    let c = inspect(&format!("oci-archive:{}", da.display()), true);
    let made = history(&c);
    assert_eq!(made, ["tote image: /bin", "tote image: /lib", "tote image: /share"]);
}

#[test]
fn two_versions_of_the_demo_share_all_but_the_app_layer() {
    let t = TestDir::new();
    let v2 = nix_build("hello-python", &["--argstr", "greeting", "hello from version 2"]);
    let (a, b) = (t.join("v1.tar"), t.join("v2.tar"));
    image(Path::new(demo()), &a, &[]);
    let o = image(Path::new(&v2), &b, &["--diff", a.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("layers: 3 of 4 shared with"), "{text}");
    let (ca, cb) = (
        diff_ids(&inspect(&format!("oci-archive:{}", a.display()), true)),
        diff_ids(&inspect(&format!("oci-archive:{}", b.display()), true)),
    );
    assert_eq!(ca[..3], cb[..3]);
    assert_ne!(ca[3], cb[3]);
    let o = tote().args(["diff", "--json"]).arg(&a).arg(&b).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let d: Value = serde_json::from_slice(&o.stdout).unwrap();
    crate::cli::assert_valid(&crate::cli::json_schema("image-diff"), "image-diff", &d);
    assert_eq!(d["shared"], 3);
    assert_eq!(d["added"][0]["diff_id"], cb[3]);
    assert!(d["added"][0]["created_by"].as_str().unwrap().ends_with("-hello-python"));
    // What to pull: the new layer as stored, and nothing else.
    let raw: Value =
        serde_json::from_slice(&skopeo(&["inspect", "--raw", &format!("oci-archive:{}", b.display())]).stdout).unwrap();
    assert_eq!(d["pull"]["bytes"], raw["layers"][3]["size"]);
    assert_eq!(d["pull"]["layers"], 1);
}

#[test]
fn an_image_of_a_bundle_equals_the_image_of_its_input() {
    let t = TestDir::new();
    let app = demo();
    let bundled = t.join("hello-python");
    bundle(app, &bundled, &["--level", "3"]);
    let (from_input, from_bundle) = (t.join("input.tar"), t.join("bundle.tar"));
    image(Path::new(app), &from_input, &[]);
    image(&bundled, &from_bundle, &[]);
    let mut ci = inspect(&format!("oci-archive:{}", from_input.display()), true);
    let mut cb = inspect(&format!("oci-archive:{}", from_bundle.display()), true);
    assert_eq!(diff_ids(&ci), diff_ids(&cb), "the same layers, byte for byte");
    let id = inspect_json(&bundled)["bundle_id"].clone();
    assert_eq!(cb["config"]["Labels"]["dev.tote.bundle-id"], id);
    for c in [&mut ci, &mut cb] {
        c["config"]["Labels"]
            .as_object_mut()
            .unwrap()
            .remove("dev.tote.bundle-id");
    }
    assert_eq!(ci, cb, "the same config but for the bundle id");
    // --entrypoint on a bundle names another program of its tree.
    let python = format!(
        "{}/bin/python3",
        closure(app).into_iter().find(|p| p.ends_with("-host-python3")).unwrap()
    );
    let other = t.join("python.tar");
    image(&bundled, &other, &["--entrypoint", &python[1..]]);
    let c = inspect(&format!("oci-archive:{}", other.display()), true);
    assert_eq!(c["config"]["Entrypoint"], serde_json::json!([python]));
}

#[test]
fn max_layers_3_on_a_six_path_closure_gives_3_layers_that_hold_everything() {
    let t = TestDir::new();
    let six = build("six", &nonce());
    let paths = closure(&six);
    assert_eq!(paths.len(), 6, "{paths:?}");
    let dir = t.join("layout");
    image(
        Path::new(&six),
        &dir,
        &["--format", "oci-dir", "--max-layers", "3", "--tag", "six:3"],
    );
    let c = inspect(&format!("oci:{}:six:3", dir.display()), true);
    let made = history(&c);
    assert_eq!(made.len(), 3, "{made:?}");
    assert!(
        made[0].ends_with("-host-glibc"),
        "the most depended-on path first: {made:?}"
    );
    assert!(made[2].starts_with("tote image: 4 store paths: "), "{made:?}");
    let rootfs = umoci_unpack(&format!("{}:six:3", dir.display()), &t.join("bundle"));
    for p in &paths {
        assert_eq!(tree(&rootfs.join(&p[1..])), tree(Path::new(p)), "{p}");
    }
    let o = Command::new("chroot")
        .arg(&rootfs)
        .arg(format!("{six}/bin/six"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("script="), "{}", stderr(&o));
}

/// An image input keeps its layers (the same diff_ids), its config and its
/// whiteouts; a bundle of it becomes an image with the same files.
#[test]
fn an_image_input_keeps_its_layers_and_a_bundle_of_it_its_files() {
    let t = TestDir::new();
    let layout = crate::oci::umoci_image(
        t.path(),
        &[
            &|r: &Path| {
                for d in ["bin", "etc"] {
                    fs::create_dir_all(r.join(d)).unwrap();
                }
                fs::copy("/bin/busybox", r.join("bin/busybox")).unwrap();
                std::os::unix::fs::symlink("busybox", r.join("bin/sh")).unwrap();
                fs::write(r.join("etc/doomed"), "lower layer\n").unwrap();
            },
            &|r: &Path| {
                fs::remove_file(r.join("etc/doomed")).unwrap();
                fs::write(r.join("etc/new"), "new\n").unwrap();
            },
        ],
        &[
            "--config.entrypoint",
            "/bin/sh",
            "--config.cmd",
            "-c",
            "--config.cmd",
            "echo hi",
            "--config.exposedports",
            "8080/tcp",
        ],
    );
    let original = inspect(&format!("oci:{}:latest", layout.display()), true);
    let out = t.join("kept.tar");
    image(&layout, &out, &["--compression", "zstd"]);
    let kept = inspect(&format!("oci-archive:{}", out.display()), true);
    assert_eq!(diff_ids(&kept), diff_ids(&original));
    assert_eq!(kept["config"]["ExposedPorts"], original["config"]["ExposedPorts"]);
    assert_eq!(kept["config"]["Cmd"], serde_json::json!(["-c", "echo hi"]));
    assert_eq!(kept["config"]["Labels"]["dev.tote.version"], env!("CARGO_PKG_VERSION"));

    let bundled = t.join("app");
    let o = tote()
        .arg("bundle")
        .arg(&layout)
        .args(["--level", "3", "-o"])
        .arg(&bundled)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let again = t.join("again");
    image(&bundled, &again, &["--format", "oci-dir", "--tag", "again:1"]);
    let ours = umoci_unpack(&format!("{}:again:1", again.display()), &t.join("ours"));
    let theirs = umoci_unpack(&format!("{}:latest", layout.display()), &t.join("theirs"));
    let (mut a, b) = (tree(&ours), tree(&theirs));
    assert!(!b.contains_key("/etc/doomed"));
    // The bundle adds an empty WorkingDir-less /tmp; the rest is the same.
    a.remove("/tmp");
    assert_eq!(a, b);
    let c = inspect(&format!("oci:{}:again:1", again.display()), true);
    assert_eq!(c["config"]["Entrypoint"], serde_json::json!(["/bin/sh"]));
    assert_eq!(c["config"]["Cmd"], serde_json::json!(["-c", "echo hi"]));
}

#[test]
fn bad_inputs_and_options_get_one_line_and_leave_nothing() {
    let t = TestDir::new();
    let app = demo();
    let out = t.join("out").join("img.tar");
    fs::create_dir(t.join("out")).unwrap();
    fs::create_dir(t.join("out/taken")).unwrap();
    fs::write(t.join("out/taken/file"), "x").unwrap();
    let cases: Vec<(Vec<String>, &str, i32)> = vec![
        (
            vec![
                app.into(),
                "-o".into(),
                out.display().to_string(),
                "--format".into(),
                "docker-archive".into(),
                "--compression".into(),
                "zstd".into(),
            ],
            "a docker-archive's layers are uncompressed",
            1,
        ),
        (
            vec![
                app.into(),
                "-o".into(),
                out.display().to_string(),
                "--tag".into(),
                "Bad:Tag".into(),
            ],
            "--tag Bad:Tag: ",
            1,
        ),
        (
            vec!["/nonexistent/x".into(), "-o".into(), out.display().to_string()],
            "/nonexistent/x",
            1,
        ),
        (
            vec![app.into(), "-o".into(), t.join("missing/img.tar").display().to_string()],
            "does not exist (create it first)",
            1,
        ),
        (
            vec![
                app.into(),
                "-o".into(),
                t.join("out/taken").display().to_string(),
                "--format".into(),
                "oci-dir".into(),
            ],
            "exists and is not an OCI image layout",
            1,
        ),
        (
            vec![
                app.into(),
                "-o".into(),
                out.display().to_string(),
                "--diff".into(),
                "/nonexistent/old.tar".into(),
            ],
            "--diff /nonexistent/old.tar",
            1,
        ),
        (
            vec![
                app.into(),
                "-o".into(),
                out.display().to_string(),
                "--add".into(),
                "/bin/sh".into(),
            ],
            "--add does not apply",
            1,
        ),
        (
            vec![
                app.into(),
                "-o".into(),
                out.display().to_string(),
                "--max-layers".into(),
                "0".into(),
            ],
            "--max-layers",
            2,
        ),
        (
            vec![
                app.into(),
                "-o".into(),
                out.display().to_string(),
                "--format".into(),
                "squashfs".into(),
            ],
            "--format",
            2,
        ),
    ];
    for (args, want, code) in cases {
        let o = tote().arg("image").args(&args).output().unwrap();
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(code), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        if code == 1 {
            assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
            assert!(err.starts_with("tote: "), "{err}");
        }
        assert_eq!(t.entries("out"), ["taken"], "{args:?}: nothing left behind");
    }
    // Images and bundles are not compared with each other.
    let b = t.join("b");
    bundle(app, &b, &["--level", "3"]);
    image(Path::new(app), &out, &[]);
    let o = tote().arg("diff").arg(&b).arg(&out).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("one is an image, the other not"), "{}", stderr(&o));
}

#[test]
fn a_directory_that_changes_while_read_is_refused() {
    let t = TestDir::new();
    crate::inputs::refused_while_a_file_changes(&t, "image", &t.join("out.tar"));
    assert_eq!(t.entries("."), ["tool"], "nothing written");
}

#[test]
fn an_interrupted_image_leaves_nothing_behind() {
    let t = TestDir::new();
    let app = demo();
    let dir = t.join("out");
    fs::create_dir(&dir).unwrap();
    let mut interrupted = 0;
    for (delay_ms, format) in [
        (20u64, "oci-archive"),
        (150, "oci-dir"),
        (400, "oci-archive"),
        (800, "docker-archive"),
    ] {
        let out = dir.join("img");
        let _ = fs::remove_file(&out);
        let _ = fs::remove_dir_all(&out);
        let mut args = vec!["image", app, "--format", format];
        if format != "docker-archive" {
            args.extend(["--compression", "zstd"]);
        }
        let status = interrupted_after(tote().args(&args).arg("-o").arg(&out), delay_ms);
        let left: Vec<String> = t.entries("out").into_iter().filter(|n| n != "img").collect();
        assert!(left.is_empty(), "leftovers after SIGINT at {delay_ms} ms: {left:?}");
        use std::os::unix::process::ExitStatusExt;
        if out.exists() {
            // Written before the signal came (the process may still die of
            // it, after the rename): then it must be complete.
            assert!(
                status.success() || status.signal() == Some(2),
                "{format} at {delay_ms} ms: {status:?}"
            );
            let r = match format {
                "oci-dir" => format!("oci:{}:hello-python:latest", out.display()),
                f => format!("{f}:{}", out.display()),
            };
            assert_eq!(inspect(&r, false)["Layers"].as_array().unwrap().len(), 4);
        } else {
            assert_eq!(status.signal(), Some(2), "{format} at {delay_ms} ms: {status:?}");
            interrupted += 1;
        }
    }
    assert!(interrupted > 0, "no run was interrupted: the test proves nothing");
}
