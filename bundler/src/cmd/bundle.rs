//! `tote bundle INPUT`: resolve the input, pack it after the stub into the
//! output file (atomically), and print its size and `sha256:` checksum.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::input::{self, ItemKind};
use crate::pack::{self, output};
use crate::stub;
use crate::ui::{human, progress};

pub const HELP: &str = "Inputs:
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
  tote bundle image.tar -o app";

#[derive(clap::Args)]
pub struct Args {
    /// What to bundle: a Nix store path (or a symlink to one, like ./result),
    /// a flake installable, a directory, an ELF program or an image.
    #[arg(value_name = "INPUT")]
    pub path: PathBuf,
    /// Output file [default: ./<entry point's file name>].
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub input: InputArgs,
    /// zstd compression level: 19 (the default) for the smallest bundle, 12
    /// to bundle about 5 times as fast for a bundle about 10 % larger.
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
    /// Uncompressed size of a data block, in KiB [default: 64 where the
    /// bundle may be mounted, else 8192].
    #[arg(long, value_name = "KIB", hide = true, value_parser = clap::value_parser!(u32).range(16..=16384))]
    pub block_kib: Option<u32>,
    /// Also write a thin bundle of it, OUTPUT-thin, whose launch fetches the
    /// blocks it lacks from URL: where OUTPUT will be uploaded (http://…,
    /// https://… or s3://BUCKET/KEY; see `tote thin`).
    #[arg(long, value_name = "URL")]
    pub thin: Option<String>,
    /// With --thin s3://…: the S3 endpoint (MinIO, Garage, …).
    #[arg(long, value_name = "URL", requires = "thin")]
    pub endpoint: Option<String>,
    /// With --thin s3://…: the region to sign for.
    #[arg(long, value_name = "NAME", requires = "thin")]
    pub region: Option<String>,
    /// Sign the bundle (and its thin bundle) with this secret key file
    /// (repeatable; see `tote sign`).
    #[arg(long, value_name = "SECRET")]
    pub sign: Vec<PathBuf>,
}

/// The options that shape an input (`tote bundle` and `tote image`).
#[derive(clap::Args)]
pub struct InputArgs {
    /// Program to run, relative to the input's top [default: meta.mainProgram of a
    /// flake package, else the single executable in bin/; an image's Entrypoint/Cmd].
    #[arg(long, value_name = "REL")]
    pub entrypoint: Option<PathBuf>,
    /// Directory input: make it appear at this absolute path at launch.
    #[arg(long, value_name = "PATH")]
    pub mount_at: Option<PathBuf>,
    /// ELF input: also include this file or directory (dlopen'ed libraries,
    /// data, NSS modules...), with the libraries its ELF files need.
    #[arg(long, value_name = "PATH")]
    pub add: Vec<PathBuf>,
    /// Store path input: find the closure by scanning file contents for
    /// references, even where Nix's database knows it.
    #[arg(long)]
    pub scan_references: bool,
    /// Bundle for this architecture (x86_64 or aarch64) [default: the entry
    /// point's, read from its ELF header or its script's interpreter].
    #[arg(long, value_name = "ARCH", value_parser = parse_arch)]
    pub arch: Option<tote_format::Arch>,
    /// ELF input: the program (given by its absolute path inside DIR) and
    /// everything it needs are found inside DIR, a foreign root such as
    /// Debian arm64 packages unpacked with `dpkg-deb -x`.
    #[arg(long, value_name = "DIR")]
    pub sysroot: Option<PathBuf>,
}

fn parse_arch(s: &str) -> std::result::Result<tote_format::Arch, String> {
    tote_format::Arch::parse(s)
        .ok_or_else(|| format!("{s:?} is not an architecture tote bundles for (x86_64, aarch64)"))
}

impl InputArgs {
    pub fn request<'a>(&'a self, path: &'a std::path::Path) -> input::Request<'a> {
        input::Request {
            path,
            entrypoint: self.entrypoint.as_deref(),
            mount_at: self.mount_at.as_deref(),
            add: &self.add,
            scan_references: self.scan_references,
            arch: self.arch,
            sysroot: self.sysroot.as_deref(),
        }
    }

    /// The options given that apply to one input kind only.
    pub fn kind_options(&self) -> Vec<&'static str> {
        [
            (self.mount_at.is_some(), "--mount-at"),
            (!self.add.is_empty(), "--add"),
            (self.scan_references, "--scan-references"),
            (self.sysroot.is_some(), "--sysroot"),
        ]
        .into_iter()
        .filter_map(|(given, flag)| given.then_some(flag))
        .collect()
    }
}

pub fn run(args: &Args) -> Result<()> {
    crate::ui::interrupt::watch();
    // A bad --thin location is refused before anything is bundled.
    let thin = args
        .thin
        .as_deref()
        .map(|url| super::thin::location(url, args.endpoint.as_deref(), args.region.as_deref()))
        .transpose()
        .context("--thin")?;
    // So are keys that cannot sign.
    let keys: Vec<_> = args
        .sign
        .iter()
        .map(|k| crate::signing::read_secret(k))
        .collect::<Result<_>>()
        .context("--sign")?;
    let phase = progress::Phase::start("scanning", progress::Counting::Files);
    let resolved = input::resolve(&args.input.request(&args.path));
    let took = phase.done();
    let mut input: input::Input = resolved?;
    let stub = stub::load(args.stub.as_deref(), input.launch.arch)?;
    progress::step(|| {
        format!(
            "{}: {} files, {} in {:.2} s",
            input.summary,
            input
                .tree
                .items
                .iter()
                .filter(|i| matches!(i.kind, ItemKind::File { .. }))
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
    let mut sha256 = written.sha256.clone();
    if !keys.is_empty() {
        let names = super::sign::sign_file(&output, &keys, 0)
            .with_context(|| format!("{} is written, unsigned", output.display()))?;
        progress::step(|| format!("signed by {}", names.join(", ")));
        sha256 = crate::reader::sha256_hex(
            &std::fs::read(&output).with_context(|| format!("reading {}", output.display()))?,
        );
    }
    if !progress::quiet() {
        println!(
            "{}: {} ({}, {} in {} files)",
            output.display(),
            human(written.len),
            input.summary,
            human(written.packed.stats.total_size),
            written.packed.stats.files,
        );
        println!("sha256:{sha256}");
        note_unrewritable(&written.packed.unrewritable);
    }
    drop(input.staging); // an image's unpacked layers
    if let Some(location) = &thin {
        let mut name = output.clone().into_os_string();
        name.push("-thin");
        super::thin::write_thin(&output, location, Path::new(&name), None)
            .with_context(|| format!("{} is written; its thin bundle is not", output.display()))?;
        if !keys.is_empty() {
            super::sign::sign_file(Path::new(&name), &keys, 0)
                .with_context(|| format!("{} is written, unsigned", Path::new(&name).display()))?;
        }
    }
    Ok(())
}

/// Files a relocated launch cannot fix, named on stderr (all of them are
/// listed by `tote inspect`).
fn note_unrewritable(files: &[Vec<u8>]) {
    const SHOWN: usize = 5;
    if files.is_empty() {
        return;
    }
    let mut names: Vec<String> = files
        .iter()
        .take(SHOWN)
        .map(|p| format!("/{}", String::from_utf8_lossy(p)))
        .collect();
    if files.len() > SHOWN {
        names.push(format!("and {} more", files.len() - SHOWN));
    }
    eprintln!(
        "tote: note: {} {} store references inside compressed data, which a launch without namespaces \
         (relocated) cannot rewrite: {}; `tote inspect` lists them",
        files.len(),
        if files.len() == 1 { "file holds" } else { "files hold" },
        names.join(", ")
    );
}
