//! Embed the runtime stub: build `tote-stub` as a fully static binary (its
//! own target directory, an explicit `--target` so the static flag never
//! reaches proc-macros or build scripts) and expose it as `OUT_DIR/tote-stub`.
//!
//! `TOTE_STUB=/path/to/stub` skips the nested build and embeds that file.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "x86_64-unknown-linux-gnu";

/// Which C library the stub is linked against.
enum Libc {
    Musl,
    Glibc,
}

/// musl where `musl-gcc` is installed (scripts/setup installs it), unless
/// `TOTE_STUB_LIBC=glibc`; `TOTE_STUB_LIBC=musl` makes its absence an error.
fn libc_choice() -> Libc {
    let have_musl = Command::new("musl-gcc")
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    match env::var("TOTE_STUB_LIBC").as_deref() {
        Ok("glibc") => Libc::Glibc,
        Ok("musl") if !have_musl => panic!("TOTE_STUB_LIBC=musl, but musl-gcc is not installed (musl-tools)"),
        _ if have_musl => Libc::Musl,
        _ => Libc::Glibc,
    }
}

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let dest = out.join("tote-stub");
    // Set when the embedded stub is linked against musl (its size budget).
    println!("cargo::rustc-check-cfg=cfg(tote_stub_musl)");
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
    let mut flags = vec![
        "-Ctarget-feature=+crt-static".to_string(),
        "-Crelocation-model=static".into(),
        "-Cforce-unwind-tables=no".into(),
        "-Clink-arg=-Wl,--no-eh-frame-hdr".into(),
    ];
    // zstd's decoder built for the stub only: no unwind tables, and one of
    // its two Huffman and two sequence decoders (each otherwise also built
    // twice, with and without BMI2). Measured on the large benchmark closure:
    // as fast as all four at -O3, 60 KB smaller.
    let cflags = "-fno-asynchronous-unwind-tables -DHUF_FORCE_DECOMPRESS_X1 -DZSTD_FORCE_DECOMPRESS_SEQUENCES_SHORT";
    let target_env = TARGET.replace('-', "_");
    println!("cargo:rerun-if-env-changed=TOTE_STUB_LIBC");
    match libc_choice() {
        Libc::Musl => {
            // The gnu target's code, linked against Debian's musl libc.a
            // (musl-tools): 0.75 MB instead of 1.44 MB with static glibc,
            // whose locale, iconv and NSS machinery the stub never uses.
            // musl 1.2.3 keeps the `*64` symbols the gnu bindings name, and
            // lays out every structure the stub passes it as glibc does on
            // x86-64 (stat, statvfs, dirent64, sigaction, sigset_t, siginfo_t,
            // cpu_set_t). zstd's C code is compiled against musl too.
            flags.extend([
                "-Clinker=musl-gcc".to_string(),
                "-Clink-arg=-static".into(),
                "--cfg=tote_musl".into(),
            ]);
            // No unwind tables: std's bitcode asks for them (it is built to
            // unwind), but with `panic = "abort"` nothing unwinds, musl never
            // does either (no forced unwinding on thread exit), and without
            // an .eh_frame_hdr (and with the stub's `_dl_find_object`) the
            // unwinder could not find them anyway. 74 KB of every bundle.
            let script = out.join("discard-unwind.ld");
            std::fs::write(
                &script,
                "SECTIONS {\n  /DISCARD/ : { *(.eh_frame) *(.eh_frame.*) *(.gcc_except_table) *(.gcc_except_table.*) }\n}\nINSERT AFTER .text;\n",
            )
            .expect("writing the linker script");
            flags.push(format!("-Clink-arg=-Wl,-T,{}", script.display()));
            cmd.env(format!("CC_{target_env}"), "musl-gcc");
            println!("cargo:rustc-cfg=tote_stub_musl");
        }
        Libc::Glibc => {
            if env::var("TOTE_STUB_LIBC").as_deref() != Ok("glibc") {
                println!(
                    "cargo:warning=musl-gcc not found (apt-get install musl-tools): the runtime stub is linked \
                     against static glibc, 0.7 MB larger"
                );
            }
            // Fold identical functions whose address is never taken (lld, the
            // default linker here).
            flags.push("-Clink-arg=-Wl,--icf=safe".into());
        }
    }
    cmd.env("CARGO_ENCODED_RUSTFLAGS", flags.join("\u{1f}"));
    cmd.env(format!("CFLAGS_{target_env}"), cflags);
    let status = cmd.status().expect("running cargo to build the runtime stub");
    assert!(status.success(), "building the runtime stub failed");
    let built = target_dir.join(TARGET).join("stub").join("tote-stub");
    std::fs::copy(&built, &dest).expect("copying the built stub");
}
