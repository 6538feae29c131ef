//! `tote`: bundle a program and its closure into one executable file.

mod closure;
mod entrypoint;
mod inspect;
mod output;
mod pack;
mod scan;
mod stub;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Turn a program and everything it needs into one executable file.
#[derive(Parser)]
#[command(name = "tote", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Bundle a Nix store path and its closure into one executable.
    #[command(after_help = "Example:\n  nix build .#app && tote bundle ./result -o app && ./app --help")]
    Bundle(BundleArgs),
    /// Show a bundle's metadata, entry point, id and sizes.
    #[command(after_help = "Example:\n  tote inspect ./app")]
    Inspect {
        /// The bundle.
        file: PathBuf,
    },
    /// Check every hash in a bundle; exits 1 on any mismatch.
    #[command(after_help = "Example:\n  tote verify ./app && echo intact")]
    Verify {
        /// The bundle.
        file: PathBuf,
    },
}

#[derive(clap::Args)]
pub struct BundleArgs {
    /// A Nix store path, or a symlink to one (like ./result).
    pub path: PathBuf,
    /// Output file [default: ./<entry point's file name>].
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Program to run, relative to PATH [default: the single executable in PATH/bin].
    #[arg(long, value_name = "REL")]
    pub entrypoint: Option<PathBuf>,
    /// zstd compression level.
    #[arg(long, value_name = "N", default_value_t = pack::DEFAULT_LEVEL,
          value_parser = clap::value_parser!(i32).range(1..=22))]
    pub level: i32,
    /// Use this runtime stub instead of the embedded one.
    #[arg(long, value_name = "FILE")]
    pub stub: Option<PathBuf>,
    /// Uncompressed size of a data block, in KiB.
    #[arg(long, value_name = "KIB", default_value_t = pack::DEFAULT_BLOCK_KIB, hide = true,
          value_parser = clap::value_parser!(u32).range(16..=16384))]
    pub block_kib: u32,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: Result<()> = match cli.command {
        Command::Bundle(args) => bundle(&args),
        Command::Inspect { file } => inspect::inspect(&file),
        Command::Verify { file } => inspect::verify(&file),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tote: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn bundle(args: &BundleArgs) -> Result<()> {
    let stub = stub::load(args.stub.as_deref())?;
    let input = closure::resolve(&args.path)?;
    let tree = scan::scan_store_paths(&input.store_dir, &input.closure)?;
    let entry = entrypoint::choose(&input, &tree, args.entrypoint.as_deref())?;
    let output = match &args.output {
        Some(o) => o.clone(),
        None => PathBuf::from(".").join(entry.file_name()),
    };
    let meta = pack::Launch {
        name: entry.file_name().to_string_lossy().into_owned(),
        entrypoint: entry.absolute.clone(),
        mounts: vec![input.mount()],
    };
    let written = output::write_bundle(&output, &stub, |w| {
        pack::pack(
            &tree,
            &meta,
            args.level,
            args.block_kib as usize * 1024,
            stub.len() as u64,
            w,
        )
    })?;
    println!(
        "{}: {} (closure: {} store paths, {} in {} files)",
        output.display(),
        human(written.len),
        input.closure.len(),
        human(written.stats.total_size),
        written.stats.files,
    );
    println!("sha256:{}", written.sha256);
    Ok(())
}

/// `1.6 MiB`.
pub fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
