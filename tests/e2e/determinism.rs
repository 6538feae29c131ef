//! The same inputs always give the byte-identical bundle.

use std::process::Command;

use crate::support::*;

#[test]
fn same_closure_same_bytes_whatever_mtimes_umask_order_or_threads() {
    let t = TestDir::new();
    let p = build("script", "determinism");
    let a = t.join("a");
    let b = t.join("b");
    let c = t.join("c");
    let d = t.join("d");
    bundle(&p, &a, &[]);
    bundle(&p, &b, &[]);
    let o = tote()
        .arg("bundle")
        .arg(&p)
        .arg("-o")
        .arg(&c)
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .unwrap();
    assert!(o.status.success());
    let first = std::fs::read(&a).unwrap();
    assert_eq!(first, std::fs::read(&b).unwrap());
    assert_eq!(first, std::fs::read(&c).unwrap(), "thread count changed the bytes");

    // The closure copied with new mtimes, umask 022 -> 077 and files created
    // in reverse order, bound over the store paths in a mount namespace.
    let paths = closure(&p);
    let script = r#"
set -eu
copy=$1; out=$2; root=$3; shift 3
umask 077
for sp in "$@"; do
  dst="$copy$sp"
  mkdir -p "$dst"
  ( cd "$sp" && find . -mindepth 1 | sort -r ) | while read -r rel; do
    src="$sp/$rel"
    if [ -L "$src" ]; then mkdir -p "$(dirname "$dst/$rel")"; ln -s "$(readlink "$src")" "$dst/$rel"
    elif [ -d "$src" ]; then mkdir -p "$dst/$rel"
    else mkdir -p "$(dirname "$dst/$rel")"; cat "$src" > "$dst/$rel"; [ -x "$src" ] && chmod u+x "$dst/$rel"; touch -d '2001-02-03' "$dst/$rel"
    fi
  done
  mount --bind "$dst" "$sp"
done
exec "$TOTE" bundle "$root" -o "$out"
"#;
    let o = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", script, "sh"])
        .arg(t.join("copy"))
        .arg(&d)
        .arg(&p)
        .args(&paths)
        .env("TOTE", env!("CARGO_BIN_EXE_tote"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    // The copy really differs in mtime and mode bits.
    let probe_copy = t
        .join("copy")
        .join(&closure(&p).iter().find(|s| s.ends_with("-tote-test-probe")).unwrap()[1..])
        .join("bin/probe");
    let m = std::fs::metadata(&probe_copy).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(m.mode() & 0o777, 0o700);
    assert_ne!(m.mtime(), 1);
    assert_eq!(first, std::fs::read(&d).unwrap(), "a copy of the tree gave other bytes");
}
