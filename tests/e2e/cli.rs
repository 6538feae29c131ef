//! `tote bundle`, `tote inspect`, `tote verify` from the outside.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

use crate::support::*;

fn live_probe() -> String {
    // Not the shared fixture: these tests need the store path to exist.
    build("probe", "cli")
}

#[test]
fn bundle_reports_path_size_closure_and_sha256() {
    let t = TestDir::new();
    let p = live_probe();
    let out = t.join("app");
    let o = bundle(&p, &out, &[]);
    let text = String::from_utf8(o.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with(&format!("{}: ", out.display())), "{text}");
    assert!(lines[0].contains("closure: 2 store paths"), "{text}");
    assert_eq!(lines[1], format!("sha256:{}", sha256_file(&out)));
    assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o7777, 0o755);
}

#[test]
fn default_output_is_named_after_the_entry_point() {
    let t = TestDir::new();
    let p = live_probe();
    // Through a ./result-style symlink, with a restrictive umask.
    std::os::unix::fs::symlink(&p, t.join("result")).unwrap();
    let o = Command::new("sh")
        .arg("-c")
        .arg("umask 077 && exec \"$@\"")
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_tote"))
        .args(["bundle", "./result"])
        .current_dir(t.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::metadata(t.join("probe")).unwrap().permissions().mode() & 0o7777,
        0o755
    );
    assert_eq!(t.entries("."), ["probe", "result"]);
}

#[test]
fn several_executables_need_an_explicit_entry_point() {
    let t = TestDir::new();
    let p = build("twobin", "cli");
    let o = tote().arg("bundle").arg(&p).current_dir(t.path()).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(
        e.contains("has 2 executables (one, two)") && e.contains("--entrypoint"),
        "{e}"
    );
    assert!(t.entries(".").is_empty(), "nothing may be written on error");

    bundle(&p, &t.join("two"), &["--entrypoint", "bin/two"]);
    let r = report(&Launch::root(&t).run(&t.join("two"), &[]));
    assert_eq!(field(&r, "arg0"), hex(format!("{p}/bin/two").as_bytes()));
}

fn fails_with(args: &[&str], path_env: Option<&str>, needle: &str) {
    let t = TestDir::new();
    let mut c = tote();
    c.args(args).current_dir(t.path());
    if let Some(p) = path_env {
        c.env("PATH", p);
    }
    let o = c.output().unwrap();
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{args:?}: {e}");
    assert_eq!(e.lines().count(), 1, "one line expected: {e}");
    assert!(e.starts_with("tote: ") && e.contains(needle), "{args:?}: {e}");
    assert!(!e.contains("panicked") && !e.contains("RUST_BACKTRACE"));
    assert!(
        t.entries(".").is_empty(),
        "nothing may be written on error: {:?}",
        t.entries(".")
    );
}

#[test]
fn bad_inputs_give_one_line_and_exit_1() {
    let p = live_probe();
    let t = TestDir::new();
    std::fs::write(t.join("notes.txt"), "just text").unwrap();
    let notes = t.join("notes.txt");
    fails_with(
        &["bundle", notes.to_str().unwrap()],
        None,
        "not a Nix store path, flake installable, directory, ELF program or image archive",
    );
    fails_with(&["bundle", "/nonexistent/x"], None, "/nonexistent/x");
    fails_with(
        &["bundle", &p, "--entrypoint", "bin/nope"],
        None,
        "not found in the closure",
    );
    fails_with(
        &["bundle", &p, "--entrypoint", "../x"],
        None,
        "must be a path relative to",
    );
    fails_with(&["inspect", "/nonexistent/app"], None, "/nonexistent/app");

    // A directory in the store that Nix does not know: its references are
    // scanned, and it has no program.
    let fake = format!("/nix/store/{}-not-valid", "0".repeat(32));
    std::fs::create_dir_all(format!("{fake}/bin")).unwrap();
    fails_with(&["bundle", &fake], None, "no executable in");
    std::fs::remove_dir_all(&fake).unwrap();
    fails_with(
        &["bundle", &p, "--add", "/etc"],
        None,
        "--add does not apply to a Nix store path",
    );
    fails_with(
        &["bundle", &p, "--mount-at", "/opt/x"],
        None,
        "--mount-at does not apply",
    );

    // The inspection commands name what they were given.
    let dir = t.path().to_str().unwrap();
    for cmd in ["inspect", "ls", "verify"] {
        fails_with(&[cmd, dir], None, "a directory, not a tote bundle");
        fails_with(&[cmd, notes.to_str().unwrap()], None, "notes.txt: not a tote bundle");
    }
    fails_with(
        &["diff", notes.to_str().unwrap(), "/nonexistent/new"],
        None,
        "notes.txt: not a tote bundle",
    );
    let app = t.join("app");
    bundle(&p, &app, &["--level", "1"]);
    fails_with(
        &["diff", app.to_str().unwrap(), "/nonexistent/new"],
        None,
        "/nonexistent/new",
    );

    // A bundle is not an input: it would nest two stubs.
    fails_with(
        &["bundle", app.to_str().unwrap()],
        None,
        "already a tote bundle; bundle what it was made from",
    );

    // The default output never replaces the input (an ELF program named
    // after itself, bundled in its own directory).
    let prog = t.join("true");
    std::fs::copy("/bin/true", &prog).unwrap();
    let before = std::fs::read(&prog).unwrap();
    let o = tote()
        .args(["bundle", "./true"])
        .current_dir(t.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o).trim(),
        "tote: output ./true is the input ./true: bundling would replace it; name another output with -o"
    );
    assert_eq!(std::fs::read(&prog).unwrap(), before);
}

#[test]
fn an_interrupted_bundle_leaves_nothing_behind() {
    let t = TestDir::new();
    let p = live_probe();
    for delay_ms in [5u64, 50, 200] {
        let out = t.join("app");
        let _ = std::fs::remove_file(&out);
        let status = interrupted_after(tote().args(["bundle", &p, "--level", "22", "-o"]).arg(&out), delay_ms);
        let left: Vec<String> = t.entries(".").into_iter().filter(|n| n != "app").collect();
        assert!(left.is_empty(), "leftovers after SIGINT at {delay_ms} ms: {left:?}");
        if out.exists() {
            // It was written before the signal came (the process may still
            // die of it, after the rename): then it must be complete.
            assert!(status.success() || status.signal() == Some(2), "{status:?}");
            assert!(tote().arg("verify").arg(&out).output().unwrap().status.success());
        }
    }
}

/// Where the file system has no unnamed temporary files (`O_TMPFILE`
/// refused by a seccomp filter), the bundle is written through a hidden
/// named file: complete when it appears, and removed on Ctrl-C.
#[test]
fn without_o_tmpfile_a_hidden_named_file_is_used_and_removed_on_ctrl_c() {
    let t = TestDir::new();
    let p = live_probe();
    let refused = || {
        let mut c = Command::new(&crate::relocate::tools().refuse);
        c.arg("seccomp")
            .arg(crate::relocate::filter("notmpfile"))
            .arg(env!("CARGO_BIN_EXE_tote"));
        c
    };
    let out = t.join("app");
    let o = refused().args(["bundle", &p, "-o"]).arg(&out).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(tote().arg("verify").arg(&out).output().unwrap().status.success());
    assert_eq!(t.entries("."), ["app"]);
    let mut interrupted = 0;
    for delay_ms in [5u64, 50, 200] {
        std::fs::remove_file(&out).ok();
        let status = interrupted_after(
            refused().args(["bundle", &p, "--level", "22", "-o"]).arg(&out),
            delay_ms,
        );
        let left: Vec<String> = t.entries(".").into_iter().filter(|n| n != "app").collect();
        assert!(left.is_empty(), "leftovers after SIGINT at {delay_ms} ms: {left:?}");
        if out.exists() {
            assert!(status.success() || status.signal() == Some(2), "{status:?}");
            assert!(tote().arg("verify").arg(&out).output().unwrap().status.success());
        } else {
            assert_eq!(status.signal(), Some(2), "at {delay_ms} ms: {status:?}");
            interrupted += 1;
        }
    }
    assert!(interrupted > 0, "no run was interrupted: the test proves nothing");
}

#[test]
fn inspect_and_verify() {
    let t = TestDir::new();
    let p = live_probe();
    let out = t.join("app");
    bundle(&p, &out, &[]);
    let o = tote().arg("inspect").arg(&out).output().unwrap();
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.starts_with("probe\n"), "{text}");
    for want in [
        &format!("  entry point     {p}/bin/probe\n"),
        "  mount (layer)   nix/store -> /nix/store\n",
        "  mode            auto (extracts: the tree is under 128 MiB)\n",
        &format!("  format version  {}\n", tote_format::VERSION),
        "  sha256          sha256:",
        "\nsizes\n",
        "\n2 top-level items, largest first\n",
    ] {
        assert!(text.contains(want), "{want:?} missing in\n{text}");
    }
    let v = tote().arg("verify").arg(&out).output().unwrap();
    assert!(v.status.success(), "{}", stderr(&v));
    assert!(String::from_utf8_lossy(&v.stdout).contains(": ok ("));
}

/// `docs/<name>.schema.json`, checked complete (every member it describes
/// is documented and required, and no other is allowed), and compiled.
pub(crate) fn json_schema(name: &str) -> jsonschema::Validator {
    let text = std::fs::read_to_string(repo().join("docs").join(format!("{name}.schema.json"))).unwrap();
    let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
    fn all_required(s: &serde_json::Value, at: &str) {
        if let Some(props) = s.get("properties").and_then(|p| p.as_object()) {
            let mut required: Vec<&str> = s["required"]
                .as_array()
                .unwrap_or_else(|| panic!("{at}: no `required`"))
                .iter()
                .map(|r| r.as_str().unwrap())
                .collect();
            let mut names: Vec<&str> = props.keys().map(String::as_str).collect();
            required.sort();
            names.sort();
            assert_eq!(required, names, "{at}: required differs from properties");
            assert_eq!(s["additionalProperties"], false, "{at}");
            for (k, v) in props {
                assert!(
                    v.get("description").is_some() || k == "schema",
                    "{at}.{k}: undocumented"
                );
                all_required(v, &format!("{at}.{k}"));
            }
        }
        if let Some(items) = s.get("items") {
            all_required(items, &format!("{at}[]"));
        }
        for (k, v) in s.get("$defs").and_then(|d| d.as_object()).into_iter().flatten() {
            all_required(v, &format!("$defs.{k}"));
        }
    }
    all_required(&schema, "$");
    jsonschema::validator_for(&schema).expect("the schema is a valid JSON Schema")
}

pub(crate) fn assert_valid(v: &jsonschema::Validator, name: &str, j: &serde_json::Value) {
    if let Err(e) = v.validate(j) {
        panic!("the output does not follow docs/{name}.schema.json: {e}\n{j:#}");
    }
}

fn sha256_file(path: &std::path::Path) -> String {
    hex(&Sha256::digest(std::fs::read(path).unwrap()))
}

#[test]
fn inspect_json_follows_its_documented_schema() {
    let validator = json_schema("inspect");

    // A Nix bundle: its items are its closure's store paths, with real sizes.
    let t = TestDir::new();
    let p = live_probe();
    let app = t.join("app");
    bundle(&p, &app, &[]);
    let j = inspect_json(&app);
    assert_valid(&validator, "inspect", &j);
    assert_eq!(j["schema"], "tote-inspect/1");
    assert_eq!(j["file"], app.to_str().unwrap());
    assert_eq!(j["name"], "probe");
    assert_eq!(j["entrypoint"], format!("{p}/bin/probe"));
    assert_eq!(j["sha256"], sha256_file(&app));
    assert_eq!(j["format_version"], tote_format::VERSION);
    assert_eq!(j["arch"], "x86_64");
    assert_eq!(j["creator"], format!("tote {}", env!("CARGO_PKG_VERSION")));
    assert_eq!(j["mounts"][0]["target"], "/nix/store");
    assert_eq!(j["namespace"], true);
    let s = &j["sizes"];
    let n = |v: &serde_json::Value| v.as_u64().unwrap();
    assert_eq!(n(&s["file"]), std::fs::metadata(&app).unwrap().len());
    assert_eq!(
        n(&s["file"]),
        n(&s["stub"]) + n(&s["compressed"]) + n(&s["metadata_and_index"])
    );
    assert_eq!(n(&s["dedup_saved"]), n(&s["uncompressed"]) - n(&s["after_dedup"]));
    let ratio = n(&s["uncompressed"]) as f64 / n(&s["compressed"]) as f64;
    assert!((s["ratio"].as_f64().unwrap() - ratio).abs() < 1e-9);
    let items = j["items"].as_array().unwrap();
    let mut paths: Vec<&str> = items.iter().map(|i| i["path"].as_str().unwrap()).collect();
    paths.sort();
    let mut want = closure(&p);
    want.sort();
    assert_eq!(paths, want);
    for i in items {
        let dir = std::path::Path::new(i["path"].as_str().unwrap());
        let files = Command::new("find").arg(dir).args(["-type", "f"]).output().unwrap();
        assert_eq!(
            n(&i["files"]),
            files.stdout.split(|&c| c == b'\n').filter(|l| !l.is_empty()).count() as u64
        );
        let file_bytes: u64 = String::from_utf8_lossy(&files.stdout)
            .lines()
            .map(|f| std::fs::metadata(f).unwrap().len())
            .sum();
        assert_eq!(n(&i["size"]), file_bytes, "{i}");
    }
    let sizes: Vec<u64> = items.iter().map(|i| n(&i["size"])).collect();
    assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "largest first: {sizes:?}");
    assert_eq!(sizes.iter().sum::<u64>(), n(&s["uncompressed"]));
    assert_eq!(n(&j["counts"]["items"]), items.len() as u64);
    assert_eq!(n(&j["counts"]["entries"]), bundle_index(&app).entries.len() as u64);

    // A directory bundle runs from the cache: items are its top entries.
    let dir = snapshot_tree(&t);
    let d = t.join("d");
    let o = tote()
        .args(["bundle", "--entrypoint", "bin/tool", "-o"])
        .arg(&d)
        .arg(&dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let j = inspect_json(&d);
    assert_valid(&validator, "inspect", &j);
    assert_eq!(j["namespace"], false);
    assert_eq!(j["root"], serde_json::Value::Null);
    let paths: Vec<&str> = j["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["lib", "share", "bin", "link"]);
    assert_eq!(j["sizes"]["dedup_saved"], 40_000);
}

/// A small tree with a duplicate file, an empty one and a symlink, whose
/// bundle is the same on every machine (but for its stub).
fn snapshot_tree(t: &TestDir) -> std::path::PathBuf {
    let dir = t.join("tree");
    for d in ["bin", "lib", "share/doc"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::write(dir.join("bin/tool"), "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(dir.join("bin/tool"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut x: u32 = 1;
    let data: Vec<u8> = (0..40_000)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (x >> 16) as u8 % 16 + b'a'
        })
        .collect();
    std::fs::write(dir.join("lib/data.bin"), &data).unwrap();
    std::fs::write(dir.join("lib/copy.bin"), &data).unwrap();
    std::fs::write(dir.join("share/doc/README"), "hello\n".repeat(100)).unwrap();
    std::fs::write(dir.join("share/empty"), "").unwrap();
    std::os::unix::fs::symlink("bin/tool", dir.join("link")).unwrap();
    dir
}

/// Compare `text` with the snapshot `name`, or rewrite the snapshot when
/// TOTE_UPDATE_SNAPSHOTS is set.
fn assert_snapshot(name: &str, text: &str) {
    let path = repo().join("tests/e2e/snapshots").join(name);
    if std::env::var_os("TOTE_UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, text).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        text == want,
        "{name} differs from tests/e2e/snapshots/{name} (TOTE_UPDATE_SNAPSHOTS=1 rewrites it)\n--- got\n{text}\n--- want\n{want}"
    );
}

#[test]
fn inspect_table_layout_snapshot() {
    let t = TestDir::new();
    let dir = snapshot_tree(&t);
    let app = t.join("tool");
    let o = tote()
        .args(["bundle", "--entrypoint", "bin/tool", "--level", "19", "-o"])
        .arg(&app)
        .arg(&dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let o = tote().arg("inspect").arg(&app).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    // What depends on the stub (and so on this build) is checked against
    // the JSON output, then masked.
    let j = inspect_json(&app);
    let (file, stub) = (
        j["sizes"]["file"].as_u64().unwrap(),
        j["sizes"]["stub"].as_u64().unwrap(),
    );
    let masked: String = text
        .lines()
        .map(|l| {
            let value = |label: &str| l.strip_prefix(&format!("  {label:<16}"));
            let mask = |label: &str, v: &str, want: String| {
                assert_eq!(v, want, "{label}");
                format!("  {label:<16}<{label}>\n")
            };
            if let Some(v) = value("bundle id") {
                mask("bundle id", v, j["bundle_id"].as_str().unwrap().to_string())
            } else if let Some(v) = value("sha256") {
                mask("sha256", v, format!("sha256:{}", sha256_file(&app)))
            } else if let Some(v) = value("creator") {
                mask("creator", v, format!("tote {}", env!("CARGO_PKG_VERSION")))
            } else if let Some(v) = value("file") {
                mask("file", v.rsplit_once(" (").unwrap().1, format!("{file} bytes)"))
            } else if let Some(v) = value("stub") {
                mask("stub", v.rsplit_once(" (").unwrap().1, format!("{stub} bytes)"))
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    assert_snapshot("inspect-dir.txt", &masked);
}

#[test]
fn the_stub_is_static() {
    // Embedded stub: no PT_INTERP, no DT_NEEDED (goblin), checked on a bundle.
    let t = TestDir::new();
    let out = t.join("app");
    bundle(&live_probe(), &out, &[]);
    let bytes = std::fs::read(&out).unwrap();
    let elf = goblin::elf::Elf::parse(&bytes).unwrap();
    assert!(elf.interpreter.is_none());
    assert!(elf.libraries.is_empty());
    assert!(!elf
        .program_headers
        .iter()
        .any(|p| p.p_type == goblin::elf::program_header::PT_INTERP));
    assert!(!elf
        .dynamic
        .as_ref()
        .is_some_and(|d| d.dyns.iter().any(|d| d.d_tag == goblin::elf::dynamic::DT_NEEDED)));
}

#[test]
fn stub_override() {
    let t = TestDir::new();
    let p = live_probe();
    // The stub cut from a bundle is a valid --stub; the result is identical.
    let a = t.join("a");
    bundle(&p, &a, &[]);
    let bytes = std::fs::read(&a).unwrap();
    let elf_end = stub_len(&a) as usize;
    let stub = t.join("stub");
    std::fs::write(&stub, &bytes[..elf_end]).unwrap();
    let b = t.join("b");
    bundle(&p, &b, &["--stub", stub.to_str().unwrap()]);
    assert_eq!(bytes, std::fs::read(&b).unwrap());

    // A dynamically linked program, or a whole bundle, is refused.
    for (bad, why) in [
        ("/bin/true", "dynamically linked"),
        (a.to_str().unwrap(), "already a bundle"),
    ] {
        let o = tote()
            .args(["bundle", &p, "-o"])
            .arg(t.join("c"))
            .args(["--stub", bad])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1));
        assert!(stderr(&o).contains(why), "{}", stderr(&o));
        assert!(!t.join("c").exists());
    }
}

/// `tote completions SHELL`, loaded into the real shell.
fn completion_script(shell: &str, t: &TestDir) -> std::path::PathBuf {
    let o = tote().args(["completions", shell]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!o.stdout.is_empty());
    let path = t.join(format!("tote.{shell}"));
    std::fs::write(&path, &o.stdout).unwrap();
    path
}

#[test]
fn completions_work_in_bash_zsh_and_fish() {
    let t = TestDir::new();
    // bash: the completion function answers for subcommands and --mode values.
    let bash = completion_script("bash", &t);
    let ask = |words: &str, cword: usize| {
        let script = format!(
            "source {}; COMP_WORDS=({words}); COMP_CWORD={cword}; \
             _tote tote \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; echo \"${{COMPREPLY[*]}}\"",
            bash.display()
        );
        let o = Command::new("bash").args(["-c", &script]).output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    assert_eq!(ask("tote bu", 1), "bundle");
    assert_eq!(ask("tote bundle --mode ''", 3), "extract mount auto");
    assert!(ask("tote ''", 1).split(' ').any(|w| w == "completions"));
    assert_eq!(ask("tote di", 1), "diff");
    assert!(ask("tote inspect --", 2).split(' ').any(|w| w == "--json"));
    // zsh: the script parses.
    let zsh = completion_script("zsh", &t);
    let o = Command::new("zsh").arg("-n").arg(&zsh).output().unwrap();
    assert!(o.status.success(), "zsh -n: {}", stderr(&o));
    assert!(std::fs::read_to_string(&zsh).unwrap().starts_with("#compdef tote"));
    // fish: completions as fish itself computes them.
    let fish = completion_script("fish", &t);
    let o = Command::new("fish")
        .arg("-c")
        .arg(format!(
            "source {}; complete -C 'tote bu'; complete -C 'tote bundle --mode '",
            fish.display()
        ))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| l.split('\t').next().unwrap().to_string())
        .collect();
    assert_eq!(lines, ["bundle", "auto", "extract", "mount"]);
    // A bad shell name: clap's usage error.
    assert_eq!(
        tote().args(["completions", "nosh"]).output().unwrap().status.code(),
        Some(2)
    );
}

#[test]
fn man_pages_render_and_the_install_script_installs_everything() {
    let t = TestDir::new();
    let prefix = t.join("prefix");
    let o = Command::new(repo().join("scripts/install"))
        .arg("--prefix")
        .arg(&prefix)
        .arg("--tote")
        .arg(env!("CARGO_BIN_EXE_tote"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let v = Command::new(prefix.join("bin/tote")).arg("--version").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&v.stdout).trim(),
        format!("tote {}", env!("CARGO_PKG_VERSION"))
    );
    let man1 = prefix.join("share/man/man1");
    let pages = t.entries(&man1);
    for cmd in [
        "",
        "-bundle",
        "-inspect",
        "-diff",
        "-ls",
        "-extract",
        "-verify",
        "-nomad",
        "-completions",
        "-man",
    ] {
        assert!(
            pages.contains(&format!("tote{cmd}.1")),
            "tote{cmd}.1 missing in {pages:?}"
        );
    }
    // man itself renders them: the options and the examples are there.
    let render = |page: &str| {
        let o = Command::new("man")
            .arg("-l")
            .arg(man1.join(page))
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "100")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let bundle = render("tote-bundle.1");
    for want in [
        "SYNOPSIS",
        "--mode <MODE> [default: auto]",
        "Possible values:",
        "tote bundle ./result -o app",
    ] {
        assert!(bundle.contains(want), "{want:?} missing in\n{bundle}");
    }
    assert!(render("tote.1").contains("nomad"));
    // The completion files are what `tote completions` prints.
    for (shell, file) in [
        ("bash", "share/bash-completion/completions/tote"),
        ("zsh", "share/zsh/site-functions/_tote"),
        ("fish", "share/fish/vendor_completions.d/tote.fish"),
    ] {
        let want = tote().args(["completions", shell]).output().unwrap().stdout;
        assert_eq!(std::fs::read(prefix.join(file)).unwrap(), want, "{shell}");
    }
    // A bad argument changes nothing.
    let o = Command::new(repo().join("scripts/install"))
        .args(["--prefix", t.join("other").to_str().unwrap(), "--bogus"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(!t.join("other").exists());
}

#[test]
fn ls_lists_every_entry_with_mode_and_size() {
    let t = TestDir::new();
    let p = live_probe();
    let app = t.join("app");
    bundle(&p, &app, &[]);
    let index = bundle_index(&app);
    let o = tote().arg("ls").arg(&app).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    assert_eq!(text.lines().count(), index.entries.len());
    let rel = p.trim_start_matches('/');
    let size = std::fs::metadata(format!("{p}/bin/probe")).unwrap().len();
    let line = format!("-rwxr-xr-x {size:>12}  {rel}/bin/probe");
    assert!(text.lines().any(|l| l == line), "{line:?} missing in\n{text}");
    assert!(text.lines().any(|l| l == format!("drwxr-xr-x            -  {rel}/bin")));
    // Symlinks show their target; plain files their size.
    let dir = t.join("d");
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::write(dir.join("bin/run"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(dir.join("bin/run"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(dir.join("data"), "12345").unwrap();
    std::os::unix::fs::symlink("data", dir.join("link")).unwrap();
    let d = t.join("d-app");
    bundle(dir.to_str().unwrap(), &d, &[]);
    let o = tote().arg("ls").arg(&d).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "drwxr-xr-x            -  bin\n\
         -rwxr-xr-x           10  bin/run\n\
         -rw-r--r--            5  data\n\
         lrwxrwxrwx            4  link -> data\n"
    );
    // Below a path, with or without the leading slash.
    for under in [format!("{rel}/bin"), format!("{p}/bin/")] {
        let o = tote().arg("ls").arg(&app).arg(&under).output().unwrap();
        let lines: Vec<String> = String::from_utf8_lossy(&o.stdout).lines().map(String::from).collect();
        assert_eq!(lines.len(), 2, "{under}: {lines:?}");
        assert!(lines[1].ends_with("/bin/probe"));
    }
    let o = tote().arg("ls").arg(&app).arg("nix/store/nope").output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains("no entry nix/store/nope") && e.contains("tote ls"), "{e}");
}

/// Every entry of a tree: path, kind, mode, mtime, content or target.
fn tree_listing(root: &std::path::Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            let m = std::fs::symlink_metadata(&path).unwrap();
            let what = if m.is_dir() {
                stack.push(path.clone());
                "dir".to_string()
            } else if m.is_symlink() {
                format!("-> {}", std::fs::read_link(&path).unwrap().display())
            } else {
                hex(&Sha256::digest(std::fs::read(&path).unwrap()))
            };
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            out.push(format!("{rel} {:o} {} {what}", m.mode(), m.mtime()));
        }
    }
    out.sort();
    out
}

#[test]
fn extract_writes_what_tote_extract_writes_or_nothing() {
    let t = TestDir::new();
    let app = t.join("app");
    bundle(&live_probe(), &app, &[]);
    let ours = t.join("ours");
    let o = tote().arg("extract").arg(&app).arg(&ours).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let stubs = t.join("stubs");
    let o = Command::new(&app).env("TOTE_EXTRACT", &stubs).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let listing = tree_listing(&ours);
    assert!(listing.len() > 10);
    assert_eq!(listing, tree_listing(&stubs));

    // Refused: a non-empty directory (left as it was), a missing parent.
    let o = tote().arg("extract").arg(&app).arg(&ours).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not empty"), "{}", stderr(&o));
    assert_eq!(tree_listing(&ours), listing);
    let o = tote().arg("extract").arg(&app).arg(t.join("no/such")).output().unwrap();
    assert!(stderr(&o).contains("parent directory does not exist"), "{}", stderr(&o));

    // A corrupt block: one line naming it, and nothing written.
    let index = bundle_index(&app);
    let b = index.blocks[index.blocks.len() / 2];
    let mut bytes = std::fs::read(&app).unwrap();
    bytes[(stub_len(&app) + b.offset + u64::from(b.clen) / 2) as usize] ^= 1;
    let bad = t.join("bad");
    std::fs::write(&bad, &bytes).unwrap();
    let before = t.entries(".");
    let o = tote().arg("extract").arg(&bad).arg(t.join("out")).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains("block") && e.contains("SHA-256"), "{e}");
    assert_eq!(t.entries("."), before, "nothing left behind");
}

/// `tote bundle DIR --entrypoint bin/tool -o OUT`.
fn bundle_tree(dir: &std::path::Path, out: &std::path::Path) {
    let o = tote()
        .args(["bundle", "--entrypoint", "bin/tool", "-o"])
        .arg(out)
        .arg(dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn diff_lists_changes_and_what_an_update_really_extracts() {
    let validator = json_schema("diff");
    let t = TestDir::new();
    let old_tree = snapshot_tree(&t);
    let new_tree = t.join("tree2");
    assert!(Command::new("cp")
        .arg("-a")
        .arg(&old_tree)
        .arg(&new_tree)
        .status()
        .unwrap()
        .success());
    let at = |p: &str| new_tree.join(p);
    let mut data = std::fs::read(at("lib/data.bin")).unwrap();
    data.push(b'x');
    std::fs::write(at("lib/data.bin"), data).unwrap(); // content
    std::fs::set_permissions(at("share/doc/README"), std::fs::Permissions::from_mode(0o755)).unwrap(); // mode
    std::fs::remove_file(at("share/empty")).unwrap();
    std::fs::write(at("lib/new.txt"), "new\n").unwrap();
    std::fs::create_dir(at("etc")).unwrap(); // an item added
    std::fs::write(at("etc/conf"), "a=1\n").unwrap();
    std::fs::remove_file(at("link")).unwrap(); // an item removed
    let (old, new) = (t.join("old"), t.join("new"));
    bundle_tree(&old_tree, &old);
    bundle_tree(&new_tree, &new);

    let o = tote().arg("diff").arg("--json").arg(&old).arg(&new).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_valid(&validator, "diff", &j);
    let paths = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.get("path").unwrap_or(x).as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(j["identical"], false);
    assert_eq!(j["metadata"], serde_json::json!([]));
    assert_eq!(j["old"]["sha256"], sha256_file(&old));
    assert_eq!(j["new"]["bundle_id"], inspect_json(&new)["bundle_id"]);
    assert_eq!(paths(&j["items"]["added"]), ["etc"]);
    assert_eq!(paths(&j["items"]["removed"]), ["link"]);
    assert_eq!(paths(&j["items"]["changed"]), ["lib", "share"]);
    assert_eq!(j["items"]["unchanged"], 1);
    let lib = &j["items"]["changed"][0];
    assert_eq!((&lib["old_size"], &lib["new_size"]), (&80_000.into(), &80_005.into()));
    assert_eq!((&lib["entries_added"], &lib["entries_changed"]), (&1.into(), &1.into()));
    assert_eq!(paths(&j["entries"]["added"]), ["lib/new.txt"]);
    assert_eq!(paths(&j["entries"]["removed"]), ["share/empty"]);
    assert_eq!(
        j["entries"]["changed"],
        serde_json::json!([
            { "path": "lib/data.bin", "what": "content" },
            { "path": "share/doc/README", "what": "mode" },
        ])
    );

    // The extraction figures are what the stub really does: run OLD, then
    // NEW with the same cache, and read its debug report.
    let cache = t.join("cache");
    let run = |app: &std::path::Path| {
        let o = Command::new(app)
            .env("TOTE_CACHE_DIR", &cache)
            .env("TOTE_DEBUG", "1")
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&o.stdout), "hi\n", "{}", stderr(&o));
        stderr(&o)
    };
    run(&old);
    let log = run(&new);
    let line = log.lines().find(|l| l.contains("extracted: ")).expect(&log);
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    let x = &j["extract"];
    let want: Vec<u64> = ["files", "bytes", "blocks", "blocks_total", "linked_files"]
        .iter()
        .map(|k| x[k].as_u64().unwrap())
        .collect();
    assert_eq!(nums[nums.len() - 5..], want[..], "{line}\n{x:#}");
    assert_eq!(x["files"], 4, "data.bin, new.txt, README (now executable), etc/conf");
    assert_eq!(x["bytes"], 40_001 + 4 + 600 + 4);
    assert_eq!(x["linked_bytes"], 40_000 + 18);

    // The text, its layout pinned (the header names temp paths and ids).
    let o = tote().arg("diff").arg(&old).arg(&new).output().unwrap();
    let text = String::from_utf8(o.stdout).unwrap();
    let mut lines = text.lines();
    for (tag, side, path) in [("OLD", "old", &old), ("NEW", "new", &new)] {
        let head = lines.next().unwrap();
        let id = &j[side]["bundle_id"].as_str().unwrap()[..16];
        assert!(
            head.starts_with(&format!("{tag}  {}  tool  bundle id {id}  ", path.display())),
            "{head}"
        );
    }
    assert_snapshot("diff-dir.txt", &lines.map(|l| format!("{l}\n")).collect::<String>());

    // A bundle against itself.
    let o = tote().arg("diff").arg("--json").arg(&old).arg(&old).output().unwrap();
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_valid(&validator, "diff", &j);
    assert_eq!(j["identical"], true);
    assert_eq!(j["extract"]["bytes"], 0);
    assert_eq!(j["items"]["unchanged"], 4);
    let o = tote().arg("diff").arg(&old).arg(&old).output().unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("\nidentical contents"));
}

/// `sh -c "exec CMD"` on a new pseudo-terminal (`script`), with `env` set;
/// returns everything the terminal showed and the exit status.
fn on_a_terminal(cmd: &str, env: &[(&str, &str)]) -> (String, std::process::ExitStatus) {
    let mut c = Command::new("script");
    // `exec`: the command itself is the terminal's foreground job.
    c.args(["-q", "-e", "-c", &format!("exec {cmd}"), "/dev/null"])
        .env("SHELL", "/bin/sh")
        .env_remove("NO_COLOR")
        .env("TERM", "xterm")
        .stdin(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    (String::from_utf8_lossy(&o.stdout).into_owned(), o.status)
}

/// Colour: SGR sequences such as `ESC[1m` or `ESC[36m` (not cursor moves).
fn has_colour(s: &str) -> bool {
    s.split('\x1b').skip(1).any(|rest| {
        rest.strip_prefix('[')
            .and_then(|r| {
                r.find(|c: char| !(c.is_ascii_digit() || c == ';'))
                    .map(|i| r[i..].starts_with('m'))
            })
            .unwrap_or(false)
    })
}

#[test]
fn progress_and_colour_show_on_a_terminal_only() {
    let t = TestDir::new();
    let p = live_probe();
    let tote_bin = env!("CARGO_BIN_EXE_tote");
    let out = t.join("app");
    let cmd = format!("{tote_bin} bundle {p} --level 19 -o {}", out.display());

    // On a terminal: the phases are drawn, with a coloured bar; then the result.
    let (shown, status) = on_a_terminal(&cmd, &[]);
    assert!(status.success(), "{shown}");
    for phase in ["scanning", "hashing", "compressing"] {
        assert!(shown.contains(phase), "{phase} not drawn: {shown:?}");
    }
    assert!(shown.contains("MiB") && shown.contains("ETA"), "{shown:?}");
    assert!(has_colour(&shown), "{shown:?}");
    assert!(shown.contains(&format!("sha256:{}", sha256_file(&out))), "{shown:?}");
    // Cleared once done: the last lines are the result alone.
    let tail: Vec<&str> = shown.trim_end().rsplit("\r\n").take(2).collect();
    assert!(
        tail[0].starts_with("sha256:") && tail[1].ends_with(" files)"),
        "{tail:?}"
    );

    // NO_COLOR: still drawn, never coloured.
    let (shown, status) = on_a_terminal(&cmd, &[("NO_COLOR", "1")]);
    assert!(status.success() && shown.contains("compressing"), "{shown:?}");
    assert!(!has_colour(&shown), "colour despite NO_COLOR: {shown:?}");

    // --quiet on a terminal: nothing at all.
    let (shown, status) = on_a_terminal(&format!("{cmd} --quiet"), &[]);
    assert!(status.success());
    assert_eq!(shown, "");

    // Piped: no progress, no colour; stdout has the two result lines.
    let o = tote()
        .args(["bundle", &p, "--level", "19", "-o"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(o.stderr.is_empty(), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 2);
    assert!(!has_colour(&String::from_utf8_lossy(&o.stdout)));

    // --verbose, piped: one line per step on stderr, nothing drawn.
    let o = tote().args(["bundle", &p, "-v", "-o"]).arg(&out).output().unwrap();
    assert!(o.status.success());
    let e = stderr(&o);
    for want in [
        "running nix-store --query",
        "closure: 2 store paths: 10 files",
        "hashed 10 files",
        "distinct contents",
        "blocks of up to",
        "compressed ",
        "wrote ",
    ] {
        assert!(e.contains(want), "{want:?} missing in {e}");
    }
    assert!(e.lines().all(|l| l.starts_with("tote: ")), "{e}");
    assert!(!e.contains('\r') && !e.contains('\x1b'), "{e:?}");

    // --quiet, piped: nothing; the exit code tells.
    let o = tote().args(["bundle", &p, "-q", "-o"]).arg(&out).output().unwrap();
    assert!(o.status.success() && o.stdout.is_empty() && o.stderr.is_empty());
    let o = tote().args(["verify", "-q"]).arg(&out).output().unwrap();
    assert!(o.status.success() && o.stdout.is_empty() && o.stderr.is_empty());

    // Errors: coloured on a terminal, not with NO_COLOR, not piped.
    let bad = format!("{tote_bin} inspect {}", t.join("missing").display());
    let (shown, status) = on_a_terminal(&bad, &[]);
    assert_eq!(status.code(), Some(1));
    assert!(shown.contains("\x1b[1;31mtote:\x1b[0m "), "{shown:?}");
    let (shown, _) = on_a_terminal(&bad, &[("NO_COLOR", "1")]);
    assert!(shown.starts_with("tote: ") && !has_colour(&shown), "{shown:?}");
    // inspect's headings are bold on a terminal only.
    let (shown, _) = on_a_terminal(&format!("{tote_bin} inspect {}", out.display()), &[]);
    assert!(shown.starts_with("\x1b[1mprobe\x1b[0m\r\n"), "{shown:?}");
}
