//! Format version 5's blocks compressed against a base: a closure whose
//! second file repeats most of its first (`twins`) is bundled with bases,
//! and every reader gets the bytes right — a cold extraction, mount mode,
//! a relocated launch (which rewrites store references in based blocks),
//! `tote verify`, `tote extract` and `tote cache verify`.

use std::fs;
use std::path::Path;
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::support::*;

struct Twins {
    store: String,
    /// SHA-256 of `share/a` and `share/b`, as built.
    sums: [String; 2],
}

/// The fixture, built, hashed, and deleted from the store (only the
/// bundles have it then).
fn twins(t: &TestDir, bundles: &[(&str, &[&str])]) -> Twins {
    let store = build("twins", &nonce());
    let sum = |f: &str| hex(&Sha256::digest(fs::read(format!("{store}/share/{f}")).unwrap()));
    let sums = [sum("a"), sum("b")];
    for (name, extra) in bundles {
        bundle(&store, &t.join(name), extra);
    }
    let del = Command::new("nix-store")
        .args(["--delete", "--ignore-liveness"])
        .args(closure(&store))
        .output()
        .unwrap();
    assert!(del.status.success(), "{}", stderr(&del));
    Twins { store, sums }
}

fn based_blocks(bundle: &Path) -> u64 {
    inspect_json(bundle)["counts"]["based_blocks"].as_u64().unwrap()
}

/// `sha256sum` of both files, run by the bundle's busybox.
fn sums_through(l: &Launch, bundle: &Path, tw: &Twins) -> Vec<String> {
    let a = format!("{}/share/a", tw.store);
    let b = format!("{}/share/b", tw.store);
    let o = l.run(bundle, &["sha256sum", &a, &b]);
    assert!(o.status.success(), "{}", stderr(&o));
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split_whitespace().next().unwrap().to_owned())
        .collect()
}

#[test]
fn blocks_with_bases_read_back_exactly_everywhere() {
    let t = TestDir::new();
    let tw = twins(&t, &[("app", &[]), ("app-mount", &["--mode", "mount"])]);
    let (app, mounted) = (t.join("app"), t.join("app-mount"));
    for b in [&app, &mounted] {
        assert!(based_blocks(b) >= 1, "{}: no block has a base", b.display());
        let v = tote().arg("verify").arg(b).output().unwrap();
        assert!(v.status.success(), "{}", stderr(&v));
    }
    // The second random file costs next to nothing: it is stored as its
    // differences from the first (9 MiB), beside busybox, glibc and the
    // stub (3.5 MiB); without bases the bundle would be 22 MiB.
    let len = fs::metadata(&app).unwrap().len();
    assert!(len < 13 << 20, "{len} bytes for 18 MiB of twins");

    // Extracted (cold, then warm), as root and as nobody.
    for l in [Launch::root(&t), Launch::nobody(&t)] {
        for _ in 0..2 {
            assert_eq!(sums_through(&l, &app, &tw), tw.sums);
        }
    }
    // Mounted: blocks decoded as the reads come, bases first.
    let l = Launch::root(&t).env("TOTE_MODE", "mount");
    assert_eq!(sums_through(&l, &mounted, &tw), tw.sums);

    // Relocated: the based blocks' store references rewritten, their bases
    // not (the frames were compressed against the original bytes). The
    // full check of the cache entries says every file is as rewritten.
    let l = Launch::nobody(&t).env("TOTE_NAMESPACE", "never");
    let o = l.run(&app, &["true"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v = Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_tote"))
        .args(["cache", "verify", "--json", "--root"])
        .arg(l.cache.as_ref().unwrap())
        .output()
        .unwrap();
    assert!(v.status.success(), "{}", stderr(&v));
    let v: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
    let entries = v["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{v:#}");
    assert!(entries.iter().all(|e| e["status"] == "ok"), "{v:#}");

    // tote extract writes the same bytes.
    let dir = t.join("out");
    let o = tote().arg("extract").arg(&app).arg(&dir).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    for (f, want) in ["a", "b"].iter().zip(&tw.sums) {
        let got = hex(&Sha256::digest(
            fs::read(dir.join(&tw.store[1..]).join("share").join(f)).unwrap(),
        ));
        assert_eq!(&got, want, "{f}");
    }
}
