//! Truncated, corrupted and payload-less bundles: one line, exit 114, and
//! the program never runs.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::support::*;

const BUNDLE_ERROR: i32 = 114;

fn copy_exec(from: &Path, to: &Path) {
    std::fs::copy(from, to).unwrap();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755)).unwrap();
}

pub(crate) fn refused(t: &TestDir, app: &Path, what: &str) {
    let l = Launch::root(t);
    let o = l.run(app, &[]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(BUNDLE_ERROR), "{what}: {e}");
    assert!(o.stdout.is_empty(), "{what}: the program ran");
    assert_eq!(e.lines().count(), 1, "{what}: {e}");
    assert!(e.starts_with("tote: bundle "), "{what}: {e}");
    let cache = l.cache.unwrap();
    let left: Vec<String> = t.entries(&cache).into_iter().filter(|n| n != "objects").collect();
    assert!(left.is_empty(), "{what}: cache not clean: {left:?}");
}

#[test]
fn the_stub_without_a_payload_is_refused() {
    let f = fixture();
    let t = TestDir::new();
    let n = stub_len(&f.probe);
    let bare = t.join("bare");
    copy_exec(&f.probe, &bare);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&bare)
        .unwrap()
        .set_len(n)
        .unwrap();
    refused(&t, &bare, "bare stub");
    assert!(stderr(&Launch::root(&t).run(&bare, &[])).contains("not a tote bundle"));
}

#[test]
fn empty_and_truncated_files_are_refused_by_inspect_and_verify() {
    let f = fixture();
    let t = TestDir::new();
    let empty = t.join("empty");
    std::fs::write(&empty, b"").unwrap();
    let len = std::fs::metadata(&f.probe).unwrap().len();
    let cut = t.join("cut");
    copy_exec(&f.probe, &cut);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&cut)
        .unwrap()
        .set_len(len - 1)
        .unwrap();
    for file in [&empty, &cut] {
        for cmd in ["inspect", "verify"] {
            let o = tote().arg(cmd).arg(file).output().unwrap();
            assert_eq!(o.status.code(), Some(1));
            assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
        }
    }
}

#[test]
fn truncated_bundles_are_refused() {
    let f = fixture();
    let t = TestDir::new();
    let len = std::fs::metadata(&f.probe).unwrap().len();
    let stub = stub_len(&f.probe);
    let mut cuts = vec![stub, stub + 1, len - 145, len - 144, len - 100, len - 16, len - 1];
    cuts.extend((1..12).map(|i| stub + (len - stub) * i / 12));
    for cut in cuts {
        let app = t.join(format!("cut-{cut}"));
        copy_exec(&f.probe, &app);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&app)
            .unwrap()
            .set_len(cut)
            .unwrap();
        refused(&t, &app, &format!("truncated to {cut}"));
    }
}

#[test]
fn a_flipped_byte_anywhere_in_the_payload_never_runs() {
    let f = fixture();
    let t = TestDir::new();
    let bytes = std::fs::read(&f.probe).unwrap();
    let stub = stub_len(&f.probe) as usize;
    // Data blocks, metadata, index and trailer.
    let offsets = [
        stub,
        stub + 1000,
        stub + (bytes.len() - stub) / 2,
        bytes.len() - 400,
        bytes.len() - 144,
        bytes.len() - 60,
        bytes.len() - 20,
    ];
    for off in offsets {
        let app = t.join(format!("flip-{off}"));
        let mut b = bytes.clone();
        b[off] ^= 0x40;
        std::fs::write(&app, &b).unwrap();
        std::fs::set_permissions(&app, std::fs::Permissions::from_mode(0o755)).unwrap();
        refused(&t, &app, &format!("flip at {off}"));
        let v = tote().arg("verify").arg(&app).output().unwrap();
        assert_eq!(v.status.code(), Some(1), "verify missed a flip at {off}");
    }
}
