//! `tote`: bundle a program and its closure into one executable file.

mod closure;
mod diff;
mod dir;
mod elf;
mod entrypoint;
mod flake;
mod input;
mod inspect;
mod items;
mod ls;
mod nomad;
mod oci;
mod output;
mod pack;
mod paths;
mod progress;
mod refscan;
mod scan;
mod stub;
mod style;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
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
    /// Print nothing but errors (bundle, extract and verify print their
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
    #[command(after_help = "Inputs:
  ./result, /nix/store/...   a Nix store path and its closure (from Nix's database, or
                             by scanning for references where Nix does not know it)
  .#app, path:./dir#app      a flake installable, built with `nix build`
  ./dir                      a directory; runs from the cache, or at --mount-at PATH
  /usr/bin/prog              a host ELF program with its libraries (add more with --add)
  image.tar, ./oci-dir       a docker-archive or OCI image (tar or tar.gz, or a layout dir)

Examples:
  nix build .#app && tote bundle ./result -o app && ./app --help
  tote bundle .#app -o app
  tote bundle ./dist --entrypoint bin/tool --mount-at /opt/tool
  tote bundle /usr/bin/python3.11 --add /usr/lib/python3.11 -o python
  tote bundle image.tar -o app")]
    Bundle(BundleArgs),
    /// Show a bundle's metadata, id, sizes and top-level items (largest first).
    #[command(
        after_help = "Top-level items are store paths for Nix bundles, the top directories of
an image's root, or a directory's own top-level entries.

Examples:
  tote inspect ./app
  tote inspect --json ./app | jq '.items[:5]'
  tote inspect --json ./app | jq .sizes.file"
    )]
    Inspect {
        /// The bundle.
        file: PathBuf,
        /// Print JSON (schema: docs/inspect.schema.json) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List a bundle's entries: mode, size, path (and symlink targets).
    #[command(after_help = "Examples:
  tote ls ./app
  tote ls ./app nix/store/abc…-hello/bin
  tote ls ./app | sort -k2 -n | tail   # the largest files")]
    Ls {
        /// The bundle.
        file: PathBuf,
        /// Only this entry and what is below it (a path inside the tree).
        path: Option<PathBuf>,
    },
    /// Compare two bundles: what changed, and what updating a host costs.
    ///
    /// Launch metadata, top-level items and entries added, removed and
    /// changed, and how much a host that ran OLD must extract to run NEW.
    #[command(
        after_help = "Items on one side only are listed as a whole; entries are listed for items
present on both sides. \"extract\" counts NEW's files whose content (SHA-256 and
executable bit) is not among OLD's: a host whose cache holds OLD (extracted
since its last boot) writes those and hard-links the rest.

Examples:
  tote diff ./app-1.0 ./app-1.1
  tote diff --json old new | jq .extract.bytes"
    )]
    Diff {
        /// The bundle a host already ran.
        old: PathBuf,
        /// The bundle to compare it with.
        new: PathBuf,
        /// Print JSON (schema: docs/diff.schema.json) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Write a bundle's files into a directory (as TOTE_EXTRACT=DIR does), without running it.
    #[command(after_help = "Examples:
  tote extract ./app ./app-files
  tote extract ./app /tmp/x && ls /tmp/x/nix/store")]
    Extract {
        /// The bundle.
        file: PathBuf,
        /// A new directory, or an empty one.
        dir: PathBuf,
    },
    /// Check every hash in a bundle; exits 1 on any mismatch.
    #[command(after_help = "Example:\n  tote verify ./app && echo intact")]
    Verify {
        /// The bundle.
        file: PathBuf,
    },
    /// Print a Nomad job (HCL) that downloads a bundle and runs it with the exec driver.
    #[command(
        after_help = "The job downloads FILE with an artifact block (mode \"file\", destination
local/<FILE's name>, its sha256 checksum) and runs it with driver \"exec\".

Examples:
  aws s3 cp app s3://releases/app
  tote nomad app --url s3://releases/app --port http=8080 > app.nomad.hcl
  AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... \\
    tote nomad app --url s3://releases/app --endpoint http://minio:9000 --region us-east-1
  tote nomad app --url https://files.example.com/app -- --listen 0.0.0.0:8080
  nomad job run app.nomad.hcl"
    )]
    Nomad(nomad::NomadArgs),
    /// Print a shell completion script for tote.
    #[command(after_help = "Examples:
  tote completions bash > /usr/share/bash-completion/completions/tote
  tote completions zsh > \"${fpath[1]}/_tote\"
  tote completions fish > ~/.config/fish/completions/tote.fish
  scripts/install installs them all, with the man pages")]
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Print tote's man page (roff), or write one page per command into DIR.
    #[command(after_help = "Examples:
  tote man | man -l -
  tote man --dir /usr/local/share/man/man1   # tote.1, tote-bundle.1, ...")]
    Man {
        /// Write tote.1 and tote-<command>.1 into this directory instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
pub struct BundleArgs {
    /// What to bundle: a Nix store path (or a symlink to one, like ./result),
    /// a flake installable, a directory, an ELF program or an image.
    #[arg(value_name = "INPUT")]
    pub path: PathBuf,
    /// Output file [default: ./<entry point's file name>].
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Program to run, relative to the input's top [default: meta.mainProgram of a
    /// flake package, else the single executable in bin/; an image's Entrypoint/Cmd].
    #[arg(long, value_name = "REL")]
    pub entrypoint: Option<PathBuf>,
    /// Directory input: make it appear at this absolute path at launch.
    #[arg(long, value_name = "PATH")]
    pub mount_at: Option<PathBuf>,
    /// ELF input: also bundle this file or directory (dlopen'ed libraries,
    /// data, NSS modules...), with the libraries its ELF files need.
    #[arg(long, value_name = "PATH")]
    pub add: Vec<PathBuf>,
    /// Store path input: find the closure by scanning file contents for
    /// references, even where Nix's database knows it.
    #[arg(long)]
    pub scan_references: bool,
    /// zstd compression level.
    #[arg(long, value_name = "N", default_value_t = pack::DEFAULT_LEVEL,
          value_parser = clap::value_parser!(i32).range(1..=22))]
    pub level: i32,
    /// Use this runtime stub instead of the embedded one.
    #[arg(long, value_name = "FILE")]
    pub stub: Option<PathBuf>,
    /// How the bundle makes its files available at launch: `extract` them into
    /// a cache once; `mount` them over FUSE from the bundle, writing nothing;
    /// `auto`: mount trees of 128 MiB and more where FUSE is usable, else
    /// extract. TOTE_MODE overrides it at launch.
    #[arg(long, value_name = "MODE", default_value = "auto",
          value_parser = clap::builder::TypedValueParser::map(
              clap::builder::PossibleValuesParser::new(["extract", "mount", "auto"]),
              |m: String| tote_format::Mode::parse(&m).unwrap_or_default()))]
    pub mode: tote_format::Mode,
    /// Uncompressed size of a data block, in KiB [default: 128 where the
    /// bundle may be mounted, else 8192].
    #[arg(long, value_name = "KIB", hide = true, value_parser = clap::value_parser!(u32).range(16..=16384))]
    pub block_kib: Option<u32>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    progress::init(match (cli.quiet, cli.verbose) {
        (true, _) => progress::Level::Quiet,
        (_, true) => progress::Level::Verbose,
        _ => progress::Level::Normal,
    });
    let result: Result<()> = match cli.command {
        Command::Bundle(args) => bundle(&args),
        Command::Inspect { file, json } => inspect::inspect(&file, json),
        Command::Diff { old, new, json } => diff::diff(&old, &new, json),
        Command::Verify { file } => inspect::verify(&file),
        Command::Nomad(args) => nomad::nomad(&args),
        Command::Ls { file, path } => ls::ls(&file, path.as_deref()),
        Command::Extract { file, dir } => ls::extract(&file, &dir),
        Command::Completions { shell } => completions(shell),
        Command::Man { dir } => man(dir.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{} {e:#}", style::Paint::stderr().error("tote:"));
            ExitCode::from(1)
        }
    }
}

/// Text for stdout: a reader that went away (`| head`) is not an error.
pub(crate) fn print(write: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>) -> Result<()> {
    match write(&mut std::io::stdout().lock()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(anyhow::anyhow!("writing to stdout: {e}")),
        _ => Ok(()),
    }
}

/// A report on stdout: pretty JSON with `--json`, else text (coloured on a
/// terminal).
pub(crate) fn report(
    json: bool,
    as_json: impl FnOnce() -> serde_json::Value,
    as_text: impl FnOnce(style::Paint) -> String,
) -> Result<()> {
    let text = if json {
        let mut s = serde_json::to_string_pretty(&as_json())?;
        s.push('\n');
        s
    } else {
        as_text(style::Paint::stdout())
    };
    print(|w| w.write_all(text.as_bytes()))
}

/// `tote completions SHELL`.
fn completions(shell: clap_complete::Shell) -> Result<()> {
    use clap_complete::Generator;
    let mut cmd = Cli::command();
    cmd.set_bin_name("tote");
    cmd.build();
    print(|out| shell.try_generate(&cmd, out))
}

/// `tote man`: the page for tote to stdout, or every page into `dir`.
fn man(dir: Option<&std::path::Path>) -> Result<()> {
    use anyhow::Context;
    let cmd = Cli::command();
    let Some(dir) = dir else {
        return print(|out| clap_mangen::Man::new(cmd).render(out));
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut pages = vec![("tote.1".to_string(), cmd.clone())];
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = format!("tote-{}", sub.get_name());
        let page = sub
            .clone()
            .name(&*name.clone().leak())
            .version(env!("CARGO_PKG_VERSION"));
        pages.push((format!("{name}.1"), page));
    }
    for (file, page) in pages {
        let path = dir.join(&file);
        let mut bytes = Vec::new();
        clap_mangen::Man::new(page)
            .render(&mut bytes)
            .context("rendering a man page")?;
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn bundle(args: &BundleArgs) -> Result<()> {
    let stub = stub::load(args.stub.as_deref())?;
    let phase = progress::Phase::start("scanning", progress::Counting::Files);
    let resolved = input::resolve(args);
    let took = phase.done();
    let mut input = resolved?;
    progress::step(|| {
        format!(
            "{}: {} files, {} in {:.2} s",
            input.summary,
            input
                .tree
                .items
                .iter()
                .filter(|i| matches!(i.kind, scan::ItemKind::File { .. }))
                .count(),
            human(input.tree.total_size()),
            took.as_secs_f64()
        )
    });
    input.launch.mode = args.mode;
    let block_kib = args
        .block_kib
        .unwrap_or_else(|| pack::block_kib(args.mode, input.tree.total_size()));
    let output = match &args.output {
        Some(o) => o.clone(),
        None => PathBuf::from(".").join(&input.launch.name),
    };
    if let (Ok(i), Ok(o)) = (std::fs::metadata(&args.path), std::fs::metadata(&output)) {
        use std::os::unix::fs::MetadataExt;
        if (i.dev(), i.ino()) == (o.dev(), o.ino()) {
            anyhow::bail!(
                "output {} is the input {}: bundling would replace it; name another output with -o",
                output.display(),
                args.path.display()
            );
        }
    }
    let written = output::write_bundle(&output, &stub, |w| {
        pack::pack(
            &input.tree,
            &input.launch,
            args.level,
            block_kib as usize * 1024,
            stub.len() as u64,
            w,
        )
    })?;
    progress::step(|| format!("wrote {}", output.display()));
    if !progress::quiet() {
        println!(
            "{}: {} ({}, {} in {} files)",
            output.display(),
            human(written.len),
            input.summary,
            human(written.stats.total_size),
            written.stats.files,
        );
        println!("sha256:{}", written.sha256);
    }
    drop(input.staging); // an image's unpacked layers
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_help_shows_an_example() {
        let mut cli = Cli::command();
        cli.build();
        let mut help = cli.render_long_help().to_string();
        assert!(help.contains("Examples:\n  nix build"), "{help}");
        for sub in cli.get_subcommands_mut().filter(|s| s.get_name() != "help") {
            let name = sub.get_name().to_string();
            help = sub.render_long_help().to_string();
            assert!(
                help.contains("Example") && help.contains(&format!("\n  tote {name} ")),
                "tote {name} --help has no example:\n{help}"
            );
        }
    }
}
