//! Inputs other than `./result`: store paths without Nix's database, flake
//! installables, plain directories, host ELF programs. Each is bundled and
//! run hermetically (a busybox root without /nix, /usr or glibc).

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::*;

/// `/app args…` in a busybox root, as root and as uid 65534.
fn in_busybox_roots(t: &TestDir, bundle: &Path, args: &[&str]) -> Vec<Output> {
    USERS
        .iter()
        .map(|user| in_busybox_root(t, bundle, args, user))
        .collect()
}

fn ok_stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "{:?}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        stderr(o)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn tote_ok(args: &[&str], cwd: &Path) -> Output {
    let o = tote().args(args).current_dir(cwd).output().unwrap();
    assert!(o.status.success(), "tote {args:?}: {}", stderr(&o));
    o
}

fn tote_fails(args: &[&str], cwd: &Path, needle: &str) {
    let o = tote().args(args).current_dir(cwd).output().unwrap();
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "tote {args:?}: {e}");
    assert_eq!(e.lines().count(), 1, "one line expected: {e}");
    assert!(e.starts_with("tote: ") && e.contains(needle), "tote {args:?}: {e}");
}

// ---- store paths without Nix's database --------------------------------

fn scanned_closure(path: &str, extra: &[&str]) -> Vec<String> {
    // `tote inspect` lists the bundle's top-level items: its store paths.
    let t = TestDir::new();
    let out = t.join("app");
    let mut args = vec![
        "bundle",
        path,
        "--scan-references",
        "--level",
        "1",
        "-o",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    tote_ok(&args, t.path());
    let mut paths: Vec<String> = inspect_json(&out)["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["path"].as_str().unwrap().to_string())
        .collect();
    paths.sort();
    paths.dedup();
    paths
}

#[test]
fn scanning_for_references_finds_what_nix_store_finds() {
    let n = nonce();
    for attr in ["probe", "script", "twobin"] {
        let p = build(attr, &n);
        let mut want = closure(&p);
        want.sort();
        assert!(want.len() >= 2, "{attr}: {want:?}");
        let extra: &[&str] = if attr == "twobin" {
            &["--entrypoint", "bin/one"]
        } else {
            &[]
        };
        assert_eq!(scanned_closure(&p, extra), want, "{attr}");
    }
}

#[test]
fn a_closure_copied_by_hand_runs_without_nix() {
    // The closure stays in the store but Nix is not on PATH: tote scans.
    let p = build("script", &nonce());
    let t = TestDir::new();
    let out = t.join("greet");
    let o = tote()
        .args(["bundle", &p, "--level", "1", "-o"])
        .arg(&out)
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("references scanned"));
    for o in in_busybox_roots(&t, &out, &["hi"]) {
        let r = report(&o);
        assert_eq!(field(&r, "script"), format!("{p}/bin/greet"));
        assert_eq!(field(&r, "arg1"), hex(b"hi"));
    }
}

// ---- flakes -------------------------------------------------------------

/// A flake without inputs around the test closures.
fn flake_dir(t: &TestDir) -> PathBuf {
    let d = t.join("flake");
    fs::create_dir(&d).unwrap();
    for f in ["closures.nix", "host.nix", "probe.c"] {
        fs::copy(repo().join("tests/fixtures").join(f), d.join(f)).unwrap();
    }
    let n = nonce();
    fs::write(
        d.join("flake.nix"),
        format!(
            r#"{{
  outputs = {{ self }}: let c = import ./closures.nix {{ nonce = "{n}"; }}; in {{
    packages.x86_64-linux = {{
      default = c.probe;
      two = c.twobin // {{ meta.mainProgram = "two"; }};
      both = c.twobin;
    }};
  }};
}}
"#
        ),
    )
    .unwrap();
    d
}

fn offline_nix(c: &mut Command) -> &mut Command {
    c.env("NIX_CONFIG", "substituters =\nsandbox = false\nbuild-users-group =\n")
}

#[test]
fn flake_installables_build_and_pick_main_program() {
    let t = TestDir::new();
    let d = flake_dir(&t);
    let run = |installable: &str, out: &str| {
        let mut c = tote();
        offline_nix(&mut c)
            .args(["bundle", installable, "--level", "1", "-o", out])
            .current_dir(t.path());
        c.output().unwrap()
    };
    // `path:` with an attribute, and `.#` from inside the flake's directory.
    let o = run(&format!("path:{}#default", d.display()), "probe");
    assert!(o.status.success(), "{}", stderr(&o));
    let mut c = tote();
    offline_nix(&mut c)
        .args(["bundle", ".#two", "--level", "1", "-o"])
        .arg(t.join("two"))
        .current_dir(&d);
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));

    for (i, app) in ["probe", "two"].iter().enumerate() {
        let root = TestDir::new();
        for o in in_busybox_roots(&root, &t.join(app), &["x"]) {
            let r = report(&o);
            if i == 0 {
                assert!(field(&r, "exe").ends_with("-tote-test-probe/bin/probe"));
            } else {
                assert!(
                    field(&r, "arg0").ends_with(&hex(b"/bin/two")),
                    "meta.mainProgram picks bin/two"
                );
            }
            assert_eq!(field(&r, "arg1"), hex(b"x"));
        }
    }

    // Without mainProgram, two executables need --entrypoint.
    let o = run(&format!("path:{}#both", d.display()), "both");
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("has 2 executables"), "{}", stderr(&o));
    // An attribute that does not exist: Nix's own words, on one line.
    let o = run(&format!("path:{}#nope", d.display()), "nope");
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(
        e.contains("nix build") && e.contains("does not provide attribute") && e.contains("nope"),
        "{e}"
    );
    assert!(!t.join("nope").exists() && !t.join("both").exists());
}

// ---- plain directories --------------------------------------------------

/// A relocatable tool: a static busybox and a script that finds its data
/// next to itself.
pub(crate) fn tool_dir(t: &TestDir) -> PathBuf {
    let d = t.join("tool");
    fs::create_dir_all(d.join("bin")).unwrap();
    fs::create_dir_all(d.join("share")).unwrap();
    fs::copy("/bin/busybox", d.join("bin/busybox")).unwrap();
    fs::write(d.join("share/greeting"), "hello from the tool\n").unwrap();
    fs::write(
        d.join("bin/tool"),
        "#!/bin/sh\nhere=$(dirname \"$0\")\necho \"self=$0\"\necho \"cwd=$(pwd)\"\ncat \"$here/../share/greeting\"\n\"$here/busybox\" ls /opt/tool/share 2>&1\nexit 0\n",
    )
    .unwrap();
    fs::set_permissions(d.join("bin/tool"), fs::Permissions::from_mode(0o755)).unwrap();
    symlink("greeting", d.join("share/hello")).unwrap();
    d
}

#[test]
fn a_relocatable_directory_runs_from_the_cache_without_a_namespace() {
    let t = TestDir::new();
    let d = tool_dir(&t);
    let out = t.join("tool-app");
    tote_ok(
        &[
            "bundle",
            d.to_str().unwrap(),
            "--entrypoint",
            "bin/tool",
            "-o",
            out.to_str().unwrap(),
        ],
        t.path(),
    );
    let info = Launch::root(&t).env("TOTE_INFO", "1").run(&out, &[]);
    let info = ok_stdout(&info);
    assert!(!info.contains("mount"), "{info}");
    for o in in_busybox_roots(&t, &out, &[]) {
        let text = ok_stdout(&o);
        // Run from the cache entry's tree, not from /opt/tool.
        assert!(text.contains("/tree/bin/tool"), "{text}");
        assert!(text.contains("cwd=/work"), "{text}");
        assert!(text.contains("hello from the tool"), "{text}");
        assert!(
            text.contains("/opt/tool/share") && text.contains("No such file"),
            "{text}"
        );
    }
    // Nothing to mount: it even runs where user namespaces are refused.
    let refused = userns_refused(false);
    let o = Command::new(refused[0])
        .args(&refused[1..])
        .arg(&out)
        .env("TOTE_CACHE_DIR", t.join("nouserns"))
        .output()
        .unwrap();
    assert!(ok_stdout(&o).contains("hello from the tool"));
}

#[test]
fn a_directory_mounted_at_an_absolute_path() {
    let t = TestDir::new();
    let d = tool_dir(&t);
    let out = t.join("tool-app");
    tote_ok(
        &[
            "bundle",
            d.to_str().unwrap(),
            "--mount-at",
            "/opt/tool",
            "-o",
            out.to_str().unwrap(),
            "--entrypoint",
            "bin/tool",
        ],
        t.path(),
    );
    for o in in_busybox_roots(&t, &out, &[]) {
        let text = ok_stdout(&o);
        assert!(text.contains("self=/opt/tool/bin/tool"), "{text}");
        assert!(text.contains("cwd=/work"), "{text}");
        assert!(text.contains("hello from the tool"), "{text}");
        assert!(
            text.contains("greeting") && text.contains("hello"),
            "ls of /opt/tool/share: {text}"
        );
    }
}

#[test]
fn bad_directories_are_refused() {
    let t = TestDir::new();
    let d = tool_dir(&t);
    symlink("../nowhere", d.join("share/broken")).unwrap();
    let ds = d.to_str().unwrap();
    tote_fails(
        &["bundle", ds, "--entrypoint", "bin/tool"],
        t.path(),
        "share/broken is a dangling symlink",
    );
    fs::remove_file(d.join("share/broken")).unwrap();
    tote_fails(
        &["bundle", ds, "--entrypoint", "bin/tool", "--mount-at", "opt/x"],
        t.path(),
        "must be a clean absolute path",
    );
    tote_fails(
        &["bundle", ds, "--entrypoint", "share/greeting"],
        t.path(),
        "is not executable",
    );
    tote_fails(&["bundle", ds], t.path(), "has 2 executables");
    let empty = t.join("empty");
    fs::create_dir(&empty).unwrap();
    tote_fails(&["bundle", empty.to_str().unwrap()], t.path(), "is empty");
    assert_eq!(t.entries("."), ["empty", "tool"], "nothing may be written on error");
}

/// Run `tote COMMAND <tool dir> --entrypoint bin/tool -o OUT` while a
/// thread keeps rewriting one of the directory's files: refused with one
/// line naming that file (exit 1).
pub(crate) fn refused_while_a_file_changes(t: &TestDir, command: &str, out: &Path) {
    let d = tool_dir(t);
    // Enough data that compressing takes a while.
    fs::write(d.join("share/big"), random_text(8 << 20)).unwrap();
    let writer = Rewriting::start(d.join("share/greeting"));
    std::thread::sleep(std::time::Duration::from_millis(20));
    let o = tote()
        .args([command, d.to_str().unwrap(), "--entrypoint", "bin/tool", "-o"])
        .arg(out)
        .output()
        .unwrap();
    drop(writer);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains("share/greeting changed while it was being read"), "{e}");
}

#[test]
fn a_directory_that_changes_while_bundled_is_refused() {
    let t = TestDir::new();
    refused_while_a_file_changes(&t, "bundle", &t.join("out"));
    assert!(!t.join("out").exists());
}
