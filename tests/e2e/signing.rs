//! Signed bundles (issue 27): keys from Debian's Nix and from tote, minisign
//! interoperability, tampering with each region, the stub's policy
//! (`TOTE_TRUSTED_KEYS`, `/etc/tote/trusted-keys` in a private mount
//! namespace), reproducibility, `tote run` and `tote nomad`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::nomad::{Garage, Task};
use crate::support::*;

/// A busybox bundle (no namespaces needed: a relocatable tree).
fn busybox(t: &TestDir, name: &str) -> PathBuf {
    let dir = t.join(format!("{name}-tree"));
    fs::create_dir_all(dir.join("bin")).unwrap();
    fs::copy("/bin/busybox", dir.join("bin/busybox")).unwrap();
    let file = t.join(name);
    bundle(
        dir.to_str().unwrap(),
        &file,
        &["--entrypoint", "bin/busybox", "--level", "3"],
    );
    file
}

/// `tote key generate NAME`: (secret file, public key text).
fn key(t: &TestDir, name: &str) -> (PathBuf, String) {
    let secret = t.join(format!("{name}.secret"));
    let o = tote()
        .args(["key", "generate", name, "-o"])
        .arg(&secret)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(fs::metadata(&secret).unwrap().permissions().mode() & 0o777, 0o600);
    let public = String::from_utf8(o.stdout).unwrap().trim().to_string();
    assert!(public.starts_with(&format!("{name}:")), "{public}");
    (secret, public)
}

fn ok(o: Output, what: &str) -> Output {
    assert!(
        o.status.success(),
        "{what}: {}\n{}",
        stderr(&o),
        String::from_utf8_lossy(&o.stdout)
    );
    o
}

fn sign(file: &Path, secret: &Path, extra: &[&str]) {
    ok(
        tote()
            .arg("sign")
            .arg(file)
            .arg("--key")
            .arg(secret)
            .args(extra)
            .output()
            .unwrap(),
        "tote sign",
    );
}

/// Run `file` (busybox) with `args`, a fresh cache, and `env`.
fn launch(t: &TestDir, file: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let cache = t.join(format!("cache-{}", nonce()));
    fs::create_dir_all(&cache).unwrap();
    fs::set_permissions(&cache, fs::Permissions::from_mode(0o700)).unwrap();
    Command::new(file)
        .args(args)
        .env("TOTE_CACHE_DIR", &cache)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn verify_json(file: &Path, extra: &[&str]) -> (bool, serde_json::Value) {
    let o = tote()
        .arg("verify")
        .arg("--json")
        .arg(file)
        .args(extra)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(&o)));
    (o.status.success(), v)
}

#[test]
fn keys_from_debian_nix_sign_and_tote_keys_sign_for_nix() {
    let t = TestDir::new();
    let file = busybox(&t, "app");
    // nix-store --generate-binary-cache-key (Debian's Nix 2.8).
    let (sec, publ) = (t.join("nix.sec"), t.join("nix.pub"));
    let o = Command::new("nix-store")
        .arg("--generate-binary-cache-key")
        .arg("nix-made-1")
        .arg(&sec)
        .arg(&publ)
        .output()
        .unwrap();
    ok(o, "nix-store --generate-binary-cache-key");
    let nix_public = fs::read_to_string(&publ).unwrap();
    sign(&file, &sec, &[]);
    let (good, v) = verify_json(&file, &["--trusted-keys", publ.to_str().unwrap()]);
    assert!(good, "{v}");
    assert_eq!(v["signatures"][0]["name"], "nix-made-1");
    assert_eq!(v["signatures"][0]["status"], "trusted");
    assert_eq!(v["signatures"][0]["key"], nix_public.trim());
    assert_eq!(v["trusted"], true);
    // tote's own view of the key matches Nix's.
    let o = ok(
        tote().args(["key", "public"]).arg(&sec).output().unwrap(),
        "tote key public",
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), nix_public.trim());

    // And the other way: a tote key signs a store path, and Nix checks it.
    let (tote_sec, tote_pub) = key(&t, "tote-made-1");
    let path = build("probe", &nonce());
    let nix = |args: &[&str]| {
        Command::new("nix")
            .args(["--extra-experimental-features", "nix-command"])
            .args(args)
            .output()
            .unwrap()
    };
    ok(
        nix(&["store", "sign", "--key-file", tote_sec.to_str().unwrap(), &path]),
        "nix store sign",
    );
    let check = |key: &str| {
        nix(&[
            "store",
            "verify",
            "--no-contents",
            "--sigs-needed",
            "1",
            "--trusted-public-keys",
            key,
            &path,
        ])
        .status
        .success()
    };
    assert!(check(&tote_pub), "Nix accepts tote's key");
    assert!(!check(nix_public.trim()), "and refuses another");
}

#[test]
fn minisign_verifies_the_minisig_and_refuses_a_changed_byte() {
    let t = TestDir::new();
    let file = busybox(&t, "app");
    let (secret, _) = key(&t, "mini-1");
    sign(&file, &secret, &["--minisig"]);
    let o = ok(
        tote()
            .args(["key", "public", "--minisign"])
            .arg(&secret)
            .output()
            .unwrap(),
        "tote key public --minisign",
    );
    let text = String::from_utf8(o.stdout).unwrap();
    let pubkey = text.lines().last().unwrap().to_string();
    fs::write(t.join("mini.pub"), &text).unwrap();
    let minisign = |args: &[&str]| Command::new("minisign").args(args).output().unwrap();
    let f = file.to_str().unwrap();
    let o = minisign(&["-V", "-P", &pubkey, "-m", f]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("Signature and comment signature verified"));
    // The key file form too.
    assert!(minisign(&["-V", "-p", t.join("mini.pub").to_str().unwrap(), "-m", f])
        .status
        .success());
    let mut bytes = fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    fs::write(&file, bytes).unwrap();
    let o = minisign(&["-V", "-P", &pubkey, "-m", f]);
    assert!(!o.status.success(), "minisign accepted a changed file");
}

/// Where each region of `file` starts and ends: (name, offset of a byte
/// in it that the stub's own execution does not depend on).
fn regions(file: &Path) -> Vec<(&'static str, usize)> {
    let bytes = fs::read(file).unwrap();
    let tail = &bytes[bytes.len().saturating_sub(tote_format::MAX_TAIL)..];
    let l = tote_format::Trailer::decode(tail, bytes.len() as u64).unwrap();
    let t = &l.trailer;
    let end = l.file_len as usize;
    vec![
        // The stripped stub ends with its section headers: the last byte
        // is the top byte of a section's entry size, which nothing reads
        // at run time.
        ("stub", t.data_offset as usize - 1),
        ("block", t.data_offset as usize + 40),
        ("metadata", t.meta_offset as usize + 4),
        ("index", (t.index_offset + t.index_len / 2) as usize),
        ("trailer", end - 100),
        ("signature", bytes.len() - 17),
    ]
}

#[test]
fn every_tampered_region_is_refused_by_a_checked_launch_and_named_by_verify() {
    let t = TestDir::new();
    let file = busybox(&t, "app");
    let (secret, public) = key(&t, "region-1");
    sign(&file, &secret, &[]);
    let policy = [("TOTE_TRUSTED_KEYS", public.as_str())];
    let o = launch(&t, &file, &["echo", "intact"], &policy);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "intact\n", "{}", stderr(&o));
    let good = fs::read(&file).unwrap();
    for (region, at) in regions(&file) {
        let bad = t.join(format!("bad-{region}"));
        let mut bytes = good.clone();
        bytes[at] ^= 0x10;
        fs::write(&bad, &bytes).unwrap();
        fs::set_permissions(&bad, fs::Permissions::from_mode(0o755)).unwrap();
        let o = launch(&t, &bad, &["echo", "ran"], &policy);
        assert!(
            !String::from_utf8_lossy(&o.stdout).contains("ran"),
            "{region}: a changed bundle ran: {}",
            stderr(&o)
        );
        let code = o.status.code();
        assert!(
            matches!(code, Some(114 | 119)),
            "{region}: exit {code:?}: {}",
            stderr(&o)
        );
        assert!(stderr(&o).starts_with("tote: "), "{region}: {}", stderr(&o));
        let v = tote().arg("verify").arg(&bad).output().unwrap();
        assert!(!v.status.success(), "{region}: tote verify passed");
        let line = stderr(&v);
        assert!(line.contains(region), "{region}: tote verify does not name it: {line}");
    }
}

#[test]
fn policies_count_signers_rotate_keys_and_expire() {
    let t = TestDir::new();
    let file = busybox(&t, "app");
    let (old, old_pub) = key(&t, "builds-1");
    let (new, new_pub) = key(&t, "builds-2");
    let run = |env: &[(&str, &str)]| launch(&t, &file, &["echo", "ran"], env);
    // Unsigned: refused, and so with an empty list.
    for keys in [old_pub.as_str(), ""] {
        let o = run(&[("TOTE_TRUSTED_KEYS", keys)]);
        assert_eq!(o.status.code(), Some(119), "{}", stderr(&o));
        assert!(stderr(&o).contains("it is not signed"), "{}", stderr(&o));
    }
    // Without a policy it runs as ever.
    assert!(run(&[]).status.success());
    sign(&file, &old, &[]);
    sign(&file, &new, &[]);
    // Rotation: hosts trusting either key run it.
    for keys in [&old_pub, &new_pub] {
        let o = run(&[("TOTE_TRUSTED_KEYS", keys)]);
        assert_eq!(String::from_utf8_lossy(&o.stdout), "ran\n", "{keys}: {}", stderr(&o));
    }
    // Two needed: both keys, in the list's own words.
    let both = format!("{old_pub} {new_pub} sigs-needed 2");
    assert!(run(&[("TOTE_TRUSTED_KEYS", &both)]).status.success());
    let one = format!("{old_pub} sigs-needed 2");
    let o = run(&[("TOTE_TRUSTED_KEYS", &one)]);
    assert_eq!(o.status.code(), Some(119));
    assert!(
        stderr(&o).contains("1 signature by a trusted key, 2 needed (signed by builds-2, not trusted here)"),
        "{}",
        stderr(&o)
    );
    let (good, v) = verify_json(
        &file,
        &[
            "--trusted-keys",
            &old_pub,
            "--trusted-keys",
            &new_pub,
            "--sigs-needed",
            "2",
        ],
    );
    assert!(good, "{v}");
    let (good, v) = verify_json(&file, &["--trusted-keys", &old_pub, "--sigs-needed", "2"]);
    assert!(!good && v["error"].as_str().unwrap().contains("2 needed"), "{v}");
    let (bad_key, _) = key(&t, "other-1");
    let o = tote()
        .arg("verify")
        .arg(&file)
        .arg("--trusted-keys")
        .arg(fs::read_to_string(&bad_key).unwrap().trim())
        .output()
        .unwrap();
    assert!(!o.status.success());

    // An expired signature by a trusted key refuses the bundle.
    let secret = tote_format::sign::SecretKey::parse(&fs::read_to_string(&old).unwrap()).unwrap();
    let bytes = fs::read(&file).unwrap();
    let tail = &bytes[bytes.len().saturating_sub(tote_format::MAX_TAIL)..];
    let l = tote_format::Trailer::decode(tail, bytes.len() as u64).unwrap();
    let sigs = l.signed.as_deref().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut list: Vec<_> = sigs.list.iter().filter(|s| s.name != "builds-1").cloned().collect();
    list.push(secret.sign(&sigs.statement, now - 60));
    let section = tote_format::sign::encode_section(&sigs.statement, &list).unwrap();
    let expired = t.join("expired");
    fs::write(&expired, [&bytes[..l.file_len as usize], &section].concat()).unwrap();
    fs::set_permissions(&expired, fs::Permissions::from_mode(0o755)).unwrap();
    let o = launch(&t, &expired, &["echo", "ran"], &[("TOTE_TRUSTED_KEYS", &old_pub)]);
    assert_eq!(o.status.code(), Some(119), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("the signature by builds-1 has expired"),
        "{}",
        stderr(&o)
    );
    // Its other signer still counts where only that key is trusted.
    let o = launch(&t, &expired, &["echo", "ran"], &[("TOTE_TRUSTED_KEYS", &new_pub)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (good, v) = verify_json(&expired, &["--trusted-keys", &old_pub]);
    assert!(!good, "{v}");
    let inspect = inspect_json(&expired);
    let statuses: Vec<_> = inspect["signatures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].clone())
        .collect();
    assert_eq!(statuses, ["untrusted", "untrusted"], "no policy in inspect");
}

/// Run `file` in a mount namespace whose /etc/tote is `etc_tote`.
fn with_policy_dir(etc_tote: &Path, file: &Path, t: &TestDir) -> Output {
    let cache = t.join(format!("cache-{}", nonce()));
    fs::create_dir_all(&cache).unwrap();
    fs::set_permissions(&cache, fs::Permissions::from_mode(0o700)).unwrap();
    Command::new("bwrap")
        .args(["--dev-bind", "/", "/", "--bind"])
        .arg(etc_tote)
        .args(["/etc/tote", "--"])
        .arg(file)
        .args(["echo", "ran"])
        .env("TOTE_CACHE_DIR", &cache)
        .env_remove("TOTE_TRUSTED_KEYS")
        .output()
        .unwrap()
}

#[test]
fn the_policy_file_must_be_roots_and_not_writable_by_others() {
    let t = TestDir::new();
    let file = busybox(&t, "app");
    let (secret, public) = key(&t, "file-1");
    let (_, other) = key(&t, "file-2");
    sign(&file, &secret, &[]);
    let dir = t.join("etc-tote");
    fs::create_dir_all(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    let policy = dir.join("trusted-keys");
    let write = |text: &str, mode: u32| {
        fs::write(&policy, text).unwrap();
        fs::set_permissions(&policy, fs::Permissions::from_mode(mode)).unwrap();
    };
    write(&format!("# this host\n{public}\n"), 0o644);
    let o = with_policy_dir(&dir, &file, &t);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "ran\n", "{}", stderr(&o));
    write(&format!("{other}\n"), 0o644);
    let o = with_policy_dir(&dir, &file, &t);
    assert_eq!(o.status.code(), Some(119), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("refused by the signing policy of /etc/tote/trusted-keys"),
        "{}",
        stderr(&o)
    );
    // Group-writable: refused, whatever it lists.
    write(&format!("{public}\n"), 0o664);
    let o = with_policy_dir(&dir, &file, &t);
    assert_eq!(o.status.code(), Some(119), "{}", stderr(&o));
    assert_eq!(
        stderr(&o),
        "tote: /etc/tote/trusted-keys: refused as a signing policy: it is writable by its group (mode 0664); make it \
         root's and chmod go-w /etc/tote/trusted-keys\n"
    );
    assert!(!String::from_utf8_lossy(&o.stdout).contains("ran"));
    write(&format!("{public}\nnot-a-key\n"), 0o644);
    let o = with_policy_dir(&dir, &file, &t);
    assert_eq!(o.status.code(), Some(119));
    assert!(
        stderr(&o).contains("/etc/tote/trusted-keys: line 2: "),
        "{}",
        stderr(&o)
    );
}

#[test]
fn signatures_come_off_exactly_and_in_any_order_make_the_same_file() {
    let t = TestDir::new();
    let file = busybox(&t, "app");
    let unsigned = fs::read(&file).unwrap();
    let (a, _) = key(&t, "order-a");
    let (b, _) = key(&t, "order-b");
    let other = t.join("app2");
    fs::copy(&file, &other).unwrap();
    sign(&file, &a, &[]);
    sign(&file, &b, &[]);
    sign(&other, &b, &[]);
    sign(&other, &a, &[]);
    assert!(
        fs::read(&file).unwrap() == fs::read(&other).unwrap(),
        "order changed the bytes"
    );
    // Signing again with a key replaces its signature: the same bytes.
    sign(&other, &a, &[]);
    assert!(fs::read(&file).unwrap() == fs::read(&other).unwrap());
    assert_eq!(inspect_json(&file)["bundle_id"], inspect_json(&other)["bundle_id"]);
    ok(
        tote().arg("sign").arg(&file).arg("--remove").output().unwrap(),
        "tote sign --remove",
    );
    assert!(
        fs::read(&file).unwrap() == unsigned,
        "removing the signatures does not give back the bundle"
    );
    // A bundle whose bytes changed after signing cannot be signed on top.
    let mut bytes = fs::read(&other).unwrap();
    let stub_byte = regions(&other)[0].1;
    bytes[stub_byte] ^= 1;
    fs::write(&other, bytes).unwrap();
    let o = tote().arg("sign").arg(&other).arg("--key").arg(&a).output().unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("its stub changed since"), "{}", stderr(&o));
}

#[test]
fn tote_run_runs_the_bytes_it_checked() {
    let t = TestDir::new();
    let file = busybox(&t, "app");
    let (secret, public) = key(&t, "run-1");
    let run = |f: &Path, args: &[&str], env: &[(&str, &str)]| {
        let cache = t.join(format!("cache-{}", nonce()));
        fs::create_dir_all(&cache).unwrap();
        fs::set_permissions(&cache, fs::Permissions::from_mode(0o700)).unwrap();
        tote()
            .arg("run")
            .arg(f)
            .args(args)
            .env("TOTE_CACHE_DIR", &cache)
            .env_remove("TOTE_TRUSTED_KEYS")
            .envs(env.iter().copied())
            .output()
            .unwrap()
    };
    // No policy: refused. Unsigned: refused.
    let o = run(&file, &["echo", "ran"], &[]);
    assert_eq!(o.status.code(), Some(119), "{}", stderr(&o));
    assert!(stderr(&o).contains("no signing policy"), "{}", stderr(&o));
    let o = run(&file, &["echo", "ran"], &[("TOTE_TRUSTED_KEYS", &public)]);
    assert_eq!(o.status.code(), Some(119));
    sign(&file, &secret, &[]);
    // Arguments, the exit status and the environment as a direct run.
    let o = run(
        &file,
        &["sh", "-c", "echo \"$0 $1 $GREETING\"; exit 7", "a b", "-x"],
        &[("TOTE_TRUSTED_KEYS", &public), ("GREETING", "hello")],
    );
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "a b -x hello\n");
    let with_flag = tote()
        .arg("run")
        .arg("--trusted-keys")
        .arg(&public)
        .arg(&file)
        .args(["echo", "--trusted-keys"])
        .env_remove("TOTE_TRUSTED_KEYS")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&with_flag.stdout),
        "--trusted-keys\n",
        "{}",
        stderr(&with_flag)
    );

    // Replaced between the check and the exec: the checked bytes run.
    let evil_tree = t.join("evil-tree");
    fs::create_dir_all(evil_tree.join("bin")).unwrap();
    fs::write(evil_tree.join("bin/x"), "#!/bin/sh\necho EVIL\n").unwrap();
    fs::set_permissions(evil_tree.join("bin/x"), fs::Permissions::from_mode(0o755)).unwrap();
    let evil = t.join("evil");
    bundle(
        evil_tree.to_str().unwrap(),
        &evil,
        &["--entrypoint", "bin/x", "--level", "3"],
    );
    let hook = format!(
        "cp {} {}.new && mv {}.new {}",
        evil.display(),
        file.display(),
        file.display(),
        file.display()
    );
    let o = run(
        &file,
        &["echo", "checked"],
        &[("TOTE_TRUSTED_KEYS", &public), ("TOTE_TEST_BEFORE_EXEC", &hook)],
    );
    assert!(
        fs::read(&file).unwrap() == fs::read(&evil).unwrap(),
        "the hook replaced the file"
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout), "checked\n", "{}", stderr(&o));
    // The replacement itself is refused (unsigned).
    let o = run(&file, &["echo"], &[("TOTE_TRUSTED_KEYS", &public)]);
    assert_eq!(o.status.code(), Some(119));
    assert!(!String::from_utf8_lossy(&o.stdout).contains("EVIL"));
    // A file others can write is refused.
    fs::set_permissions(&file, fs::Permissions::from_mode(0o777)).unwrap();
    let o = run(&file, &["echo"], &[("TOTE_TRUSTED_KEYS", &public)]);
    assert_eq!(o.status.code(), Some(119));
    assert!(stderr(&o).contains("another user can change it"), "{}", stderr(&o));
}

#[test]
fn nomad_refuses_unsigned_and_tote_run_is_pid_1_under_the_exec_driver() {
    let t = TestDir::new();
    let file = busybox(&t, "busybox");
    let (secret, public) = key(&t, "nomad-1");
    let garage = Garage::start(&t);
    let o = tote()
        .arg("nomad")
        .arg(&file)
        .args(["--url", &format!("s3://{}/apps/busybox", garage.var("TOTE_BUCKET"))])
        .args(["--endpoint", &garage.var("AWS_ENDPOINT_URL"), "--region", "garage"])
        .args(["--trusted-keys", &public])
        .env("AWS_ACCESS_KEY_ID", garage.var("TOTE_READ_KEY_ID"))
        .env("AWS_SECRET_ACCESS_KEY", garage.var("TOTE_READ_SECRET"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("not trusted, no job written: it is not signed"),
        "{}",
        stderr(&o)
    );
    assert!(o.stdout.is_empty());
    sign(&file, &secret, &[]);
    garage.upload(&file, "apps/busybox");
    let env = format!("TOTE_TRUSTED_KEYS={public}");
    let text = garage.job(
        &file,
        "apps/busybox",
        &[
            "--trusted-keys",
            &public,
            "--tote-run",
            "--env",
            &env,
            "--",
            "sh",
            "-c",
            "echo pid=$$ ppid=$PPID; exit 3",
        ],
    );
    assert!(text.contains("command = \"/usr/local/bin/tote\""), "{text}");
    let job_file = t.join("busybox.nomad.hcl");
    fs::write(&job_file, &text).unwrap();
    // The client's tote, on the task's PATH (the chroot binds /usr).
    let tote_bin = Path::new(env!("CARGO_BIN_EXE_tote"));
    let installed = Path::new("/usr/local/bin/tote");
    let staged = Path::new("/usr/local/bin/.tote-test-new");
    fs::copy(tote_bin, staged).unwrap();
    fs::rename(staged, installed).unwrap();
    let alloc = t.join("alloc");
    let mut task = Task::start_with(&job_file, &alloc, &[]);
    task.wait_for("task exited", std::time::Duration::from_secs(60));
    let (code, report) = task.stop();
    let err = fs::read_to_string(alloc.join("alloc/logs/busybox.stderr.0")).unwrap_or_default();
    assert_eq!(code, 3, "{report:?}\n{err}");
    let out = fs::read_to_string(alloc.join("alloc/logs/busybox.stdout.0")).unwrap();
    // tote execs the stub in its own place: the stub is PID 1, the
    // program its child.
    assert_eq!(
        out,
        format!("pid={} ppid=1\n", out.split(['=', ' ']).nth(1).unwrap()),
        "{out}"
    );
    assert_ne!(out, "pid=1 ppid=0\n");
}

#[test]
fn a_signed_full_bundle_serves_its_thin_bundle_and_the_thin_file_is_signed_too() {
    use crate::thin::{thin, Nginx};
    let t = TestDir::new();
    let file = busybox(&t, "app");
    let (secret, public) = key(&t, "thin-1");
    sign(&file, &secret, &[]);
    let nginx = Nginx::start(&t);
    nginx.upload(&file, "app");
    let thin_file = t.join("app-thin");
    thin(&file, &nginx.url("app"), &thin_file, &[]);
    // The thin file is signed on its own: unsigned, a policy refuses it.
    let policy = [("TOTE_TRUSTED_KEYS", public.as_str())];
    let o = launch(&t, &thin_file, &["echo", "ran"], &policy);
    assert_eq!(o.status.code(), Some(119), "{}", stderr(&o));
    sign(&thin_file, &secret, &[]);
    // Its blocks come from the signed upload, which is longer than the
    // bundle the thin file names by the signatures alone.
    for mode in ["extract", "mount"] {
        let o = launch(&t, &thin_file, &["echo", "ran"], &[policy[0], ("TOTE_MODE", mode)]);
        assert_eq!(String::from_utf8_lossy(&o.stdout), "ran\n", "{mode}: {}", stderr(&o));
    }
    let o = tote()
        .args(["verify", "--remote"])
        .arg(&thin_file)
        .args(["--trusted-keys", &public])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    // Anything else appended to the upload is another object.
    let mut other = fs::read(&file).unwrap();
    other.extend_from_slice(b"appended");
    let bad = t.join("bad-upload");
    fs::write(&bad, other).unwrap();
    nginx.upload(&bad, "app");
    let o = launch(&t, &thin_file, &["echo", "ran"], &policy);
    assert_eq!(o.status.code(), Some(118), "{}", stderr(&o));
    assert!(stderr(&o).contains("it was replaced"), "{}", stderr(&o));
}
