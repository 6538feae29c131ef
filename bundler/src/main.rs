//! `tote`: bundle a program and its closure into one executable file.
//!
//! This file only parses the command line and dispatches. The commands live
//! in `cmd/`; `tote bundle` runs the pipeline `input/` (what the user named,
//! as a tree and launch metadata) → `pack/` (blocks, sections, the file),
//! `tote image` the pipeline `input/` → `image/` (layers, config, archive).

mod cmd;
mod image;
mod input;
mod items;
mod pack;
mod reader;
mod signing;
mod stub;
mod ui;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// Turn a program and everything it needs into one executable file.
#[derive(Parser)]
#[command(
    name = "tote",
    version,
    about,
    long_about = None,
    after_help = "Examples:
  nix build .#app && tote bundle ./result -o app && ./app
  tote inspect app
  tote diff app-1.0 app-1.1
  tote help bundle"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Print nothing but errors (bundle, image, extract and verify print their
    /// results otherwise; the exit code still tells).
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// Say what each step of `tote bundle` did and how long it took, on stderr.
    #[arg(short, long, global = true)]
    verbose: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Bundle a program and everything it needs into one executable.
    #[command(after_help = cmd::bundle::HELP)]
    Bundle(cmd::bundle::Args),
    /// Make a layered OCI image of the same input, or of a bundle.
    #[command(after_help = cmd::image::HELP)]
    Image(cmd::image::Args),
    /// Show a bundle's metadata, id, sizes and top-level items (largest first).
    #[command(after_help = cmd::inspect::HELP)]
    Inspect(cmd::inspect::Args),
    /// List a bundle's entries: mode, size, path (and symlink targets).
    #[command(after_help = cmd::ls::LS_HELP)]
    Ls(cmd::ls::LsArgs),
    /// Compare two bundles: what changed, and what updating a host costs.
    ///
    /// Launch metadata, top-level items and entries added, removed and
    /// changed, and how much a host that ran OLD must extract to run NEW.
    #[command(after_help = cmd::diff::HELP)]
    Diff(cmd::diff::Args),
    /// Write a bundle's files into a directory (as TOTE_EXTRACT=DIR does), without running it.
    #[command(after_help = cmd::ls::EXTRACT_HELP)]
    Extract(cmd::ls::ExtractArgs),
    /// Make a thin bundle: a small file whose launch fetches only the blocks it lacks from the full bundle's URL.
    #[command(after_help = cmd::thin::HELP)]
    Thin(cmd::thin::Args),
    /// Check every hash in a bundle, and its signatures; exits 1 on any mismatch.
    #[command(after_help = cmd::verify::HELP)]
    Verify(cmd::verify::Args),
    /// Sign a bundle in place with a Nix (or tote) key, or take its signatures off.
    #[command(after_help = cmd::sign::HELP)]
    Sign(cmd::sign::Args),
    /// Make a signing key, or print a secret key's public key.
    #[command(after_help = cmd::key::HELP)]
    Key(cmd::key::Args),
    /// Run a bundle after checking its signatures and hashes, from the very bytes checked.
    #[command(after_help = cmd::run::HELP)]
    Run(cmd::run::Args),
    /// What the cache of launched bundles holds, and keeping it in check: ls, prune, rm, verify.
    #[command(after_help = cmd::cache::HELP)]
    Cache(cmd::cache::Args),
    /// Print a Nomad job (HCL) that downloads a bundle and runs it with the exec driver.
    #[command(after_help = cmd::nomad::HELP)]
    Nomad(cmd::nomad::Args),
    /// Print a shell completion script for tote.
    #[command(after_help = cmd::completions::COMPLETIONS_HELP)]
    Completions(cmd::completions::CompletionsArgs),
    /// Print tote's man page (roff), or write one page per command into DIR.
    #[command(after_help = cmd::completions::MAN_HELP)]
    Man(cmd::completions::ManArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    ui::progress::init(match (cli.quiet, cli.verbose) {
        (true, _) => ui::progress::Level::Quiet,
        (_, true) => ui::progress::Level::Verbose,
        _ => ui::progress::Level::Normal,
    });
    let result = match cli.command {
        Command::Bundle(a) => cmd::bundle::run(&a),
        Command::Image(a) => cmd::image::run(&a),
        Command::Inspect(a) => cmd::inspect::run(&a),
        Command::Ls(a) => cmd::ls::ls(&a),
        Command::Diff(a) => cmd::diff::run(&a),
        Command::Extract(a) => cmd::ls::extract(&a),
        Command::Thin(a) => cmd::thin::run(&a),
        Command::Verify(a) => cmd::verify::run(&a),
        Command::Sign(a) => cmd::sign::run(&a),
        Command::Key(a) => cmd::key::run(&a),
        Command::Run(a) => cmd::run::run(a),
        Command::Cache(a) => cmd::cache::run(&a),
        Command::Nomad(a) => cmd::nomad::run(&a),
        Command::Completions(a) => cmd::completions::completions(&a, Cli::command()),
        Command::Man(a) => cmd::completions::man(&a, Cli::command()),
    };
    ui::interrupt::exit_if_interrupted();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, whatever the error holds (names from a bundle).
            let line = format!("{e:#}");
            eprintln!(
                "{} {}",
                ui::Paint::stderr().error("tote:"),
                tote_format::printable(line.as_bytes())
            );
            ExitCode::from(1)
        }
    }
}
