//! Embed the runtime stubs, one per architecture: build `tote-stub` as a
//! fully static binary for x86-64 and for aarch64 (each in its own target
//! directory, with an explicit `--target` so the static flags never reach
//! proc-macros or build scripts) and expose them as
//! `OUT_DIR/tote-stub-x86_64` and `OUT_DIR/tote-stub-aarch64`.
//!
//! `TOTE_STUB_X86_64=/path` or `TOTE_STUB_AARCH64=/path` skips that build
//! and embeds the file (`TOTE_STUB` is the x86-64 one's older name).
//! A stub that cannot be built here (no aarch64 toolchain) is embedded
//! empty, with a warning: `tote` then refuses to bundle for that
//! architecture, and the test `every_wanted_stub_is_embedded` fails.
//! `TOTE_STUB_ARCHES=x86_64` (a comma-separated list) builds only those.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// An architecture the stub is built for.
struct Arch {
    /// `uname -m`, and the suffix of the embedded file's name.
    name: &'static str,
    target: &'static str,
    /// Debian's cross compiler's prefix, and musl's directory under
    /// `/usr/lib` (`musl-dev:arm64` installs `/usr/lib/aarch64-linux-musl`).
    triple: &'static str,
}

const ARCHES: [Arch; 2] = [
    Arch {
        name: "x86_64",
        target: "x86_64-unknown-linux-gnu",
        triple: "x86_64-linux-gnu",
    },
    Arch {
        name: "aarch64",
        target: "aarch64-unknown-linux-gnu",
        triple: "aarch64-linux-gnu",
    },
];

/// Which C library a stub is linked against, and through which compiler.
enum Libc {
    /// Debian's musl `libc.a`, through `musl-gcc` (native) or the cross
    /// gcc with musl's specs file.
    Musl { cc: String, specs: Option<String> },
    /// Static glibc, through the given compiler (`None`: rustc's default).
    Glibc { cc: Option<String> },
}

fn runs(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn output(cmd: &str, args: &[&str]) -> Option<String> {
    let o = Command::new(cmd).args(args).stderr(Stdio::null()).output().ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// The C compiler and C library for `arch`: musl where it is installed
/// (scripts/setup installs it), unless `TOTE_STUB_LIBC=glibc`;
/// `TOTE_STUB_LIBC=musl` makes its absence an error. `None`: no compiler
/// for `arch` at all.
fn libc_choice(arch: &Arch, native: bool) -> Option<Libc> {
    let cross = format!("{}-gcc", arch.triple);
    let specs = format!("/usr/lib/{}/musl-gcc.specs", arch.triple.replace("-gnu", "-musl"));
    let musl = if native && runs("musl-gcc", &["--version"]) {
        Some(Libc::Musl {
            cc: "musl-gcc".into(),
            specs: None,
        })
    } else if Path::new(&specs).exists() && runs(&cross, &["--version"]) {
        Some(Libc::Musl {
            cc: cross.clone(),
            specs: Some(specs),
        })
    } else {
        None
    };
    let glibc = if native {
        Some(Libc::Glibc { cc: None })
    } else {
        runs(&cross, &["--version"]).then_some(Libc::Glibc { cc: Some(cross) })
    };
    match env::var("TOTE_STUB_LIBC").as_deref() {
        Ok("glibc") => glibc,
        Ok("musl") if musl.is_none() => panic!(
            "TOTE_STUB_LIBC=musl, but there is no musl for {} (musl-tools, or musl-dev:arm64 and its cross gcc)",
            arch.name
        ),
        _ => musl.or(glibc),
    }
}

/// A rustc with `target`'s standard library: the one cargo runs, else
/// Debian's (`rustc-web` with `libstd-rust-web-dev:arm64`: rustup has no
/// aarch64 std to offer offline).
fn rustc_for(target: &str) -> Option<String> {
    let default = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    for rustc in [default.as_str(), "/usr/bin/rustc"] {
        if let Some(sysroot) = output(rustc, &["--print", "sysroot"]) {
            if Path::new(&sysroot)
                .join("lib/rustlib")
                .join(target)
                .join("lib")
                .is_dir()
            {
                return Some(rustc.to_string());
            }
        }
    }
    None
}

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    // Set when the embedded x86-64 (aarch64) stub is linked against musl
    // (its size budget).
    println!("cargo::rustc-check-cfg=cfg(tote_stub_musl)");
    println!("cargo::rustc-check-cfg=cfg(tote_stub_aarch64_musl)");
    println!("cargo:rerun-if-env-changed=TOTE_STUB_LIBC");
    println!("cargo:rerun-if-env-changed=TOTE_STUB_ARCHES");
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest.parent().expect("workspace root");
    for p in [
        "runtime-stub/src",
        "runtime-stub/Cargo.toml",
        "format/src",
        "format/Cargo.toml",
        "cache/src",
        "cache/Cargo.toml",
        "net/src",
        "net/Cargo.toml",
        "Cargo.toml",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }
    // The build machine's own musl-gcc serves its own architecture.
    let host = env::var("HOST").unwrap_or_default();
    let wanted = env::var("TOTE_STUB_ARCHES").unwrap_or_else(|_| "x86_64,aarch64".into());
    println!("cargo:rustc-env=TOTE_STUB_ARCHES_WANTED={wanted}");
    for arch in &ARCHES {
        let dest = out.join(format!("tote-stub-{}", arch.name));
        if !wanted.split(',').any(|w| w.trim() == arch.name) {
            std::fs::write(&dest, b"").expect("writing an empty stub");
            continue;
        }
        let var = format!("TOTE_STUB_{}", arch.name.to_uppercase());
        println!("cargo:rerun-if-env-changed={var}");
        println!("cargo:rerun-if-env-changed=TOTE_STUB");
        let given = env::var_os(&var).or_else(|| (arch.name == "x86_64").then(|| env::var_os("TOTE_STUB")).flatten());
        if let Some(stub) = given {
            println!("cargo:rerun-if-changed={}", Path::new(&stub).display());
            std::fs::copy(&stub, &dest).unwrap_or_else(|e| panic!("copying {var}: {e}"));
            continue;
        }
        let native = host.starts_with(arch.name);
        match build(root, &out, arch, native, false) {
            Ok(built) => {
                std::fs::copy(&built, &dest).expect("copying the built stub");
            }
            Err(why) => {
                println!(
                    "cargo:warning=no {} runtime stub: {why}; this tote cannot bundle for {} \
                     (scripts/setup installs what it needs)",
                    arch.name, arch.name
                );
                std::fs::write(&dest, b"").expect("writing an empty stub");
            }
        }
    }
    // The thin flavour of each stub that was built (or given).
    for arch in &ARCHES {
        let dest = out.join(format!("tote-stub-thin-{}", arch.name));
        let var = format!("TOTE_STUB_THIN_{}", arch.name.to_uppercase());
        println!("cargo:rerun-if-env-changed={var}");
        if let Some(stub) = env::var_os(&var) {
            println!("cargo:rerun-if-changed={}", Path::new(&stub).display());
            std::fs::copy(&stub, &dest).unwrap_or_else(|e| panic!("copying {var}: {e}"));
            continue;
        }
        let plain = std::fs::metadata(out.join(format!("tote-stub-{}", arch.name))).map_or(0, |m| m.len());
        let built = if plain == 0 {
            None
        } else {
            build(root, &out, arch, host.starts_with(arch.name), true).ok()
        };
        match built {
            Some(built) => {
                std::fs::copy(&built, &dest).expect("copying the built thin stub");
            }
            None => std::fs::write(&dest, b"").expect("writing an empty stub"),
        }
    }
}

/// Build the stub for `arch`; the built file's path, or why not.
fn build(root: &Path, out: &Path, arch: &Arch, native: bool, thin: bool) -> Result<PathBuf, String> {
    let rustc = rustc_for(arch.target).ok_or_else(|| {
        format!(
            "no rustc with the {} standard library (apt-get install rustc-web libstd-rust-web-dev:arm64)",
            arch.target
        )
    })?;
    let libc = libc_choice(arch, native)
        .ok_or_else(|| format!("no C compiler for {} (apt-get install gcc-{})", arch.name, arch.triple))?;
    let target_dir = out.join(format!("stub-target-{}", arch.name));
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
            arch.target,
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .env("RUSTC", &rustc);
    if thin {
        // The thin flavour: the same stub, able to fetch blocks.
        cmd.args(["--features", "remote"]);
    }
    if env::var_os("CARGO_NET_OFFLINE").is_some() {
        cmd.arg("--offline");
    }
    for (k, _) in env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("CARGO_FEATURE_")
            || k.starts_with("CARGO_CFG_")
            || k.contains("RUSTFLAGS")
            || k == "RUSTC_WRAPPER"
            || k == "RUSTC_WORKSPACE_WRAPPER"
        {
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
    let mut cflags =
        "-fno-asynchronous-unwind-tables -DHUF_FORCE_DECOMPRESS_X1 -DZSTD_FORCE_DECOMPRESS_SEQUENCES_SHORT".to_string();
    let target_env = arch.target.replace('-', "_");
    match &libc {
        Libc::Musl { cc, specs } => {
            // The gnu target's code, linked against Debian's musl libc.a:
            // 0.74 MB instead of 1.44 MB with static glibc on x86-64, whose
            // locale, iconv and NSS machinery the stub never uses. musl
            // 1.2.3 keeps the `*64` symbols the gnu bindings name, and lays
            // out every structure the stub passes it as glibc does, on
            // x86-64 and on aarch64 (stat, statvfs, dirent64, sigaction,
            // sigset_t, siginfo_t, cpu_set_t, …: tests/fixtures/layout.c
            // prints them, and a test compares musl's with glibc's on both;
            // musl's rusage only adds reserved bytes it never writes on
            // 64-bit). zstd's C code is compiled against musl too.
            flags.extend([
                format!("-Clinker={cc}"),
                "-Clink-arg=-static".into(),
                "--cfg=tote_musl".into(),
            ]);
            if let Some(specs) = specs {
                flags.push(format!("-Clink-arg=-specs={specs}"));
                cflags = format!("-specs={specs} {cflags}");
            }
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
            cmd.env(format!("CC_{target_env}"), cc);
            if arch.name == "x86_64" {
                println!("cargo:rustc-cfg=tote_stub_musl");
            } else {
                println!("cargo:rustc-cfg=tote_stub_aarch64_musl");
            }
        }
        Libc::Glibc { cc } => {
            if env::var("TOTE_STUB_LIBC").as_deref() != Ok("glibc") {
                println!(
                    "cargo:warning=no musl for {}: its runtime stub is linked against static glibc, \
                     0.7 MB larger (apt-get install musl-tools, or musl-dev:arm64)",
                    arch.name
                );
            }
            match cc {
                Some(cc) => {
                    flags.push(format!("-Clinker={cc}"));
                    cmd.env(format!("CC_{target_env}"), cc);
                }
                // Fold identical functions whose address is never taken
                // (lld, the default linker here).
                None => flags.push("-Clink-arg=-Wl,--icf=safe".into()),
            }
        }
    }
    // Ed25519 verification with the portable 64-bit field code only: the
    // AVX2 and AVX-512 backends (chosen at run time) add ~60 KB to every
    // bundle for a check the stub makes once per file.
    flags.push("--cfg=curve25519_dalek_backend=\"serial\"".into());
    cmd.env("CARGO_ENCODED_RUSTFLAGS", flags.join("\u{1f}"));
    cmd.env(format!("CFLAGS_{target_env}"), cflags);
    let status = cmd
        .status()
        .map_err(|e| format!("running cargo to build the runtime stub: {e}"))?;
    if !status.success() {
        // A toolchain that is there but fails is a bug to see, not a
        // missing stub to warn about.
        panic!("building the {} runtime stub failed", arch.name);
    }
    Ok(target_dir.join(arch.target).join("stub").join("tote-stub"))
}
