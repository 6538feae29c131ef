//! OCI images built here by real tools (umoci, skopeo): a busybox image whose
//! second layer deletes a file of the first, and an image with a dynamically
//! linked program and its glibc. Every form (layout dir, OCI archive,
//! docker-archive, gzipped) gives the same bundle, which runs in a busybox
//! root where the host has neither /etc/hosts nor /etc/resolv.conf.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

pub(crate) fn run(cmd: &str, args: &[&str], cwd: &Path) {
    let o = Command::new(cmd).args(args).current_dir(cwd).output().unwrap();
    assert!(
        o.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// An OCI layout at `dir/img` tagged `latest`: one layer per closure call
/// (each edits the unpacked rootfs of the previous state), then `config`
/// (umoci config flags).
pub(crate) fn umoci_image(dir: &Path, layers: &[&dyn Fn(&Path)], config: &[&str]) -> PathBuf {
    run("umoci", &["init", "--layout", "img"], dir);
    run("umoci", &["new", "--image", "img:latest"], dir);
    for edit in layers {
        let _ = fs::remove_dir_all(dir.join("work"));
        run("umoci", &["unpack", "--image", "img:latest", "work"], dir);
        edit(&dir.join("work/rootfs"));
        run("umoci", &["repack", "--image", "img:latest", "work"], dir);
    }
    let mut args = vec!["config", "--image", "img:latest"];
    args.extend_from_slice(config);
    run("umoci", &args, dir);
    fs::remove_dir_all(dir.join("work")).unwrap();
    dir.join("img")
}

/// `bin/busybox` in the root file system `r`.
fn busybox_in(r: &Path) {
    fs::create_dir_all(r.join("bin")).unwrap();
    fs::copy("/bin/busybox", r.join("bin/busybox")).unwrap();
}

/// `skopeo copy -q SRC DST` in `cwd`.
fn skopeo_copy(src: &str, dst: &str, cwd: &Path) {
    run("skopeo", &["copy", "-q", src, dst], cwd);
}

/// Every form of the same image: layout dir, OCI archive, docker-archive
/// (as `docker save` writes it) and the docker-archive gzipped.
fn forms(dir: &Path, layout: &Path) -> Vec<PathBuf> {
    let src = format!("oci:{}:latest", layout.display());
    let oci_tar = dir.join("image-oci.tar");
    let docker_tar = dir.join("image-docker.tar");
    skopeo_copy(&src, &format!("oci-archive:{}", oci_tar.display()), dir);
    skopeo_copy(
        &src,
        &format!("docker-archive:{}:tote/test:latest", docker_tar.display()),
        dir,
    );
    run("sh", &["-c", "gzip -k image-docker.tar"], dir);
    vec![
        layout.to_path_buf(),
        oci_tar,
        docker_tar.clone(),
        dir.join("image-docker.tar.gz"),
    ]
}

fn bundle_all(t: &TestDir, images: &[PathBuf]) -> PathBuf {
    let mut shas = Vec::new();
    for (i, img) in images.iter().enumerate() {
        let out = t.join(format!("app{i}"));
        let o = tote()
            .arg("bundle")
            .arg(img)
            .args(["--level", "3", "-o"])
            .arg(&out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}: {}", img.display(), stderr(&o));
        shas.push(String::from_utf8_lossy(&o.stdout).lines().last().unwrap().to_string());
    }
    assert!(
        shas.windows(2).all(|w| w[0] == w[1]),
        "every form gives the same bundle: {shas:?}"
    );
    t.join("app0")
}

#[test]
fn a_busybox_image_with_a_whiteout_layer() {
    let t = TestDir::new();
    let layout = umoci_image(
        t.path(),
        &[
            &|r: &Path| {
                for d in ["bin", "etc", "srv/data"] {
                    fs::create_dir_all(r.join(d)).unwrap();
                }
                fs::copy("/bin/busybox", r.join("bin/busybox")).unwrap();
                symlink("busybox", r.join("bin/sh")).unwrap();
                fs::write(r.join("etc/doomed"), "lower layer\n").unwrap();
                fs::write(r.join("srv/data/kept"), "kept\n").unwrap();
                fs::write(r.join("srv/data/old"), "old\n").unwrap();
            },
            &|r: &Path| {
                fs::remove_file(r.join("etc/doomed")).unwrap();
                // An opaque directory: replaced wholesale by this layer.
                fs::remove_dir_all(r.join("srv/data")).unwrap();
                fs::create_dir(r.join("srv/data")).unwrap();
                fs::write(r.join("srv/data/new"), "new\n").unwrap();
            },
        ],
        &[
            "--config.entrypoint",
            "/bin/sh",
            "--config.entrypoint",
            "-c",
            "--config.cmd",
            "echo default-cmd",
            "--config.env",
            "FOO=from-image",
            "--config.env",
            "PATH=/bin",
            "--config.workingdir",
            "/srv",
        ],
    );
    let app = bundle_all(&t, &forms(t.path(), &layout));
    let script = "echo cwd=$(pwd); echo foo=$FOO; echo var=$TOTE_TEST_VAR; echo root=$(ls / | tr '\\n' ' '); \
                  echo etc=$(ls /etc | tr '\\n' ' '); echo data=$(ls /srv/data | tr '\\n' ' '); \
                  echo work=$(ls /work | tr '\\n' ' '); echo id=$(id -u); touch /srv/x 2>/dev/null || echo readonly=yes; \
                  touch /tmp/ok && echo tmp=writable";
    for user in USERS {
        let o = in_busybox_root(&t, &app, &[script], user);
        assert!(o.status.success(), "{}", stderr(&o));
        let r: Vec<(String, String)> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, v)| (k.into(), v.trim().into())))
            .collect();
        assert_eq!(field(&r, "cwd"), "/srv", "WorkingDir");
        assert_eq!(field(&r, "foo"), "from-image", "the image's Env wins");
        assert_eq!(field(&r, "var"), "from-caller", "the caller's environment stays");
        assert_eq!(
            field(&r, "root"),
            "bin dev etc proc srv tmp work",
            "/work is the caller's cwd, bound in"
        );
        assert_eq!(
            field(&r, "etc"),
            "",
            "etc/doomed was deleted by the upper layer; the host has no hosts/resolv.conf"
        );
        assert_eq!(field(&r, "data"), "new", "opaque directory");
        assert_eq!(field(&r, "work"), "marker", "the caller's cwd is the host's");
        assert_eq!(field(&r, "id"), if user.is_empty() { "0" } else { "65534" });
        assert_eq!(field(&r, "readonly"), "yes");
        assert_eq!(field(&r, "tmp"), "writable");
    }
    // No arguments: the image's Cmd.
    let o = in_busybox_root(&t, &app, &[], &[]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "default-cmd\n", "{}", stderr(&o));
    // Exit status and signals come through as with any bundle.
    let o = in_busybox_root(&t, &app, &["exit 7"], &[]);
    assert_eq!(o.status.code(), Some(7));
}

#[test]
fn an_image_with_a_dynamically_linked_program() {
    let t = TestDir::new();
    let src = t.join("probe.c");
    fs::copy(repo().join("tests/fixtures/probe.c"), &src).unwrap();
    let probe = t.join("probe");
    run(
        "gcc",
        &["-O2", "-o", probe.to_str().unwrap(), src.to_str().unwrap()],
        t.path(),
    );
    let layout = umoci_image(
        t.path(),
        &[&|r: &Path| {
            for d in ["usr/local/bin", "lib/x86_64-linux-gnu", "lib64"] {
                fs::create_dir_all(r.join(d)).unwrap();
            }
            fs::copy(&probe, r.join("usr/local/bin/probe")).unwrap();
            fs::copy("/lib64/ld-linux-x86-64.so.2", r.join("lib64/ld-linux-x86-64.so.2")).unwrap();
            // libc and what it dlopens, as Debian's libc6 brings libgcc-s1.
            for lib in ["libc.so.6", "libgcc_s.so.1"] {
                fs::copy(
                    Path::new("/lib/x86_64-linux-gnu").join(lib),
                    r.join("lib/x86_64-linux-gnu").join(lib),
                )
                .unwrap();
            }
        }],
        &["--config.cmd", "probe", "--config.env", "PATH=/usr/local/bin:/usr/bin"],
    );
    let app = bundle_all(&t, &forms(t.path(), &layout)[..2]);
    for user in USERS {
        let o = in_busybox_root(&t, &app, &["a b"], user);
        let r = report(&o);
        assert_eq!(field(&r, "exe"), "/usr/local/bin/probe");
        assert_eq!(field(&r, "libc"), "/lib/x86_64-linux-gnu/libc.so.6");
        assert_eq!(field(&r, "cwd"), "/work", "no WorkingDir: the caller's");
        assert_eq!(field(&r, "arg1"), hex(b"a b"), "the caller's arguments replace Cmd's");
        assert_eq!(field(&r, "env"), "from-caller");
    }
}

#[test]
fn bad_images_are_refused() {
    let t = TestDir::new();
    let layout = umoci_image(
        t.path(),
        &[&|r: &Path| {
            busybox_in(r);
        }],
        &["--config.cmd", "/bin/busybox"],
    );
    let fails = |img: &Path, needle: &str| {
        let o = tote()
            .arg("bundle")
            .arg(img)
            .arg("-o")
            .arg(t.join("out"))
            .output()
            .unwrap();
        let e = stderr(&o);
        assert_eq!((o.status.code(), e.lines().count()), (Some(1), 1), "{e}");
        assert!(e.contains(needle), "{needle:?} not in {e}");
        assert!(!t.join("out").exists());
    };
    let docker = t.join("image-docker.tar");
    skopeo_copy(
        &format!("oci:{}:latest", layout.display()),
        &format!("docker-archive:{}:x:y", docker.display()),
        t.path(),
    );

    // A malformed manifest in a docker-archive.
    let d = t.join("docker");
    fs::create_dir(&d).unwrap();
    run(
        "tar",
        &["-xf", docker.to_str().unwrap(), "-C", d.to_str().unwrap()],
        t.path(),
    );
    fs::write(d.join("manifest.json"), "{ not json").unwrap();
    run("sh", &["-c", "cd docker && tar -cf ../broken-manifest.tar *"], t.path());
    fails(&t.join("broken-manifest.tar"), "manifest.json is malformed");

    // A missing layer (OCI layout: the manifest names a blob that is gone).
    let manifest: serde_json::Value = {
        let index: serde_json::Value = serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
        let digest = index["manifests"][0]["digest"]
            .as_str()
            .unwrap()
            .strip_prefix("sha256:")
            .unwrap()
            .to_string();
        serde_json::from_slice(&fs::read(layout.join("blobs/sha256").join(digest)).unwrap()).unwrap()
    };
    let layer = manifest["layers"][0]["digest"].as_str().unwrap().to_string();
    let blob = layout.join("blobs/sha256").join(layer.strip_prefix("sha256:").unwrap());
    let saved = fs::read(&blob).unwrap();
    fs::remove_file(&blob).unwrap();
    fails(&layout, &format!("{layer} named by the manifest is missing"));
    // A layer whose bytes do not match its digest.
    let mut bad = saved.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 1;
    fs::write(&blob, &bad).unwrap();
    fails(&layout, "does not match its digest");
    fs::write(&blob, &saved).unwrap();
    // A command that is not in the image.
    let d2 = t.join("nocmd");
    fs::create_dir(&d2).unwrap();
    let layout2 = umoci_image(
        &d2,
        &[&|r: &Path| fs::create_dir_all(r.join("bin")).unwrap()],
        &["--config.cmd", "nope"],
    );
    fails(&layout2, "entry point nope: not found on the image's PATH");
}

/// Ctrl-C while bundling an image archive: the archive's unpacked copy and
/// the image's root file system, both staged in `TMPDIR`, go with the
/// process, and no output is left half-written.
#[test]
fn an_interrupted_bundle_of_an_image_leaves_no_staged_tree() {
    let t = TestDir::new();
    let layout = umoci_image(
        t.path(),
        &[&|r: &Path| {
            busybox_in(r);
            symlink("busybox", r.join("bin/sh")).unwrap();
            // Enough data that level 22 keeps the bundler busy for seconds.
            let mut x = 0x2545_f491_4f6c_dd1du64;
            let noise: Vec<u8> = (0..24 << 20)
                .map(|i| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    if i % 3 == 0 {
                        b'a'
                    } else {
                        x as u8
                    }
                })
                .collect();
            fs::write(r.join("bin/data"), noise).unwrap();
        }],
        &["--config.entrypoint", "/bin/sh"],
    );
    let archive = t.join("image-oci.tar");
    skopeo_copy(
        &format!("oci:{}:latest", layout.display()),
        &format!("oci-archive:{}", archive.display()),
        t.path(),
    );
    fs::create_dir(t.join("tmp")).unwrap();
    fs::create_dir(t.join("out")).unwrap();
    let mut interrupted = 0;
    for delay_ms in [20u64, 300, 1500] {
        let out = t.join("out/app");
        let _ = fs::remove_file(&out);
        let mut cmd = tote();
        cmd.arg("bundle").arg(&archive).args(["--level", "22", "-o"]).arg(&out);
        let status = interrupted_after(cmd.env("TMPDIR", t.join("tmp")), delay_ms);
        assert_eq!(
            t.entries("tmp"),
            Vec::<String>::new(),
            "staged trees left at {delay_ms} ms"
        );
        let left: Vec<String> = t.entries("out").into_iter().filter(|n| n != "app").collect();
        assert!(left.is_empty(), "leftovers after SIGINT at {delay_ms} ms: {left:?}");
        if out.exists() {
            assert!(tote().arg("verify").arg(&out).output().unwrap().status.success());
        } else {
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(status.signal(), Some(2), "at {delay_ms} ms: {status:?}");
            interrupted += 1;
        }
    }
    assert!(interrupted > 0, "no run was interrupted: the test proves nothing");
}
