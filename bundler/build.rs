//! Embed the runtime stub: build `tote-stub` as a fully static binary (its
//! own target directory, an explicit `--target` so the static flag never
//! reaches proc-macros or build scripts) and expose it as `OUT_DIR/tote-stub`.
//!
//! `TOTE_STUB=/path/to/stub` skips the nested build and embeds that file.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "x86_64-unknown-linux-gnu";

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let dest = out.join("tote-stub");
    println!("cargo:rerun-if-env-changed=TOTE_STUB");
    if let Some(stub) = env::var_os("TOTE_STUB") {
        println!("cargo:rerun-if-changed={}", Path::new(&stub).display());
        std::fs::copy(&stub, &dest).expect("copying TOTE_STUB");
        return;
    }
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest.parent().expect("workspace root");
    for p in [
        "runtime-stub/src",
        "runtime-stub/Cargo.toml",
        "format/src",
        "format/Cargo.toml",
        "cache/src",
        "cache/Cargo.toml",
        "Cargo.toml",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }
    let target_dir = out.join("stub-target");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args([
            "build",
            "--quiet",
            "-p",
            "tote-stub",
            "--profile",
            "stub",
            "--target",
            TARGET,
        ])
        .arg("--target-dir")
        .arg(&target_dir);
    if env::var_os("CARGO_NET_OFFLINE").is_some() {
        cmd.arg("--offline");
    }
    for (k, _) in env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("CARGO_FEATURE_") || k.starts_with("CARGO_CFG_") || k.contains("RUSTFLAGS") {
            cmd.env_remove(&*k);
        }
    }
    // Static, non-PIE; no unwind tables (panic = abort) and no .eh_frame_hdr:
    // together 0.1 MB less to write into every bundle.
    let flags = [
        "-Ctarget-feature=+crt-static",
        "-Crelocation-model=static",
        "-Cforce-unwind-tables=no",
        "-Clink-arg=-Wl,--no-eh-frame-hdr",
        // Fold identical functions whose address is never taken (lld, the
        // default linker here).
        "-Clink-arg=-Wl,--icf=safe",
    ];
    cmd.env("CARGO_ENCODED_RUSTFLAGS", flags.join("\u{1f}"));
    // zstd's decoder built for the stub only: no unwind tables, and one of
    // its two Huffman and two sequence decoders (each otherwise also built
    // twice, with and without BMI2). Measured on the large benchmark closure:
    // as fast as all four at -O3, 60 KB smaller, so the stub stays in budget.
    cmd.env(
        format!("CFLAGS_{}", TARGET.replace('-', "_")),
        "-fno-asynchronous-unwind-tables -DHUF_FORCE_DECOMPRESS_X1 -DZSTD_FORCE_DECOMPRESS_SEQUENCES_SHORT",
    );
    let status = cmd.status().expect("running cargo to build the runtime stub");
    assert!(status.success(), "building the runtime stub failed");
    let built = target_dir.join(TARGET).join("stub").join("tote-stub");
    std::fs::copy(&built, &dest).expect("copying the built stub");
}
