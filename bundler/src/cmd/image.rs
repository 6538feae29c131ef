//! `tote image INPUT -o OUT`: the same input as `tote bundle` (or a bundle
//! file, or an image), as a layered OCI or docker image (see `image`).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::image::layer::{self, Compression};
use crate::image::write::{self, Format};
use crate::image::{self, Source};
use crate::input::{self, ItemKind};
use crate::ui::{human, progress};

pub const HELP: &str = "Layers:
  Nix store paths      one layer per store path, dependencies first; above --max-layers the
                       most depended-on paths keep their own layer, the rest share the top one
  directories, ELF     one layer per top-level item
  images               their own layers, as they are
  a bundle file        its tree and launch metadata, layered as its input would be

Every image also has /tmp (mode 1777). The same input gives the same digests on any machine.

Examples:
  tote image ./result -o app.tar && skopeo copy oci-archive:app.tar docker://registry.example/app:1.0
  tote image ./app -o app.tar --tag app:1.0      # from a bundle already in object storage
  tote image ./result -o app --format oci-dir --compression zstd
  tote image ./result -o app-docker.tar --format docker-archive && podman load -i app-docker.tar
  tote image ./result-v2 -o v2.tar --diff v1.tar # which layers changed, what a host must pull";

#[derive(clap::Args)]
pub struct Args {
    /// What to make an image of: anything `tote bundle` takes, or a bundle file.
    #[arg(value_name = "INPUT")]
    pub path: PathBuf,
    /// More inputs, one per architecture (the same app built for another):
    /// together they make one multi-architecture image index.
    #[arg(value_name = "INPUT")]
    pub more: Vec<PathBuf>,
    /// Output file (a directory with --format oci-dir).
    #[arg(short, long, value_name = "OUT")]
    pub output: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "oci-archive")]
    pub format: Format,
    /// Image name and tag [default: <entry point's file name>:latest].
    #[arg(long, value_name = "NAME:TAG")]
    pub tag: Option<String>,
    /// At most this many layers (Nix closures; other trees by top-level item).
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=125))]
    pub max_layers: u32,
    /// Layer compression for the OCI formats [default: gzip]; docker-archive
    /// layers are uncompressed.
    #[arg(long, value_enum, value_name = "ALGO")]
    pub compression: Option<Compression>,
    /// Compare with an earlier image: which layers changed, what a host that
    /// holds it must pull.
    #[arg(long, value_name = "OLD")]
    pub diff: Option<PathBuf>,
    #[command(flatten)]
    pub input: super::bundle::InputArgs,
}

pub fn run(args: &Args) -> Result<()> {
    crate::ui::interrupt::watch();
    let compression = match (args.format, args.compression) {
        (Format::DockerArchive, Some(c)) => bail!(
            "--compression {}: a docker-archive's layers are uncompressed (use --format oci-archive)",
            if c == Compression::Zstd { "zstd" } else { "gzip" }
        ),
        (Format::DockerArchive, None) => Compression::None,
        (_, c) => c.unwrap_or(Compression::Gzip),
    };
    if let Some(tag) = &args.tag {
        check_tag(tag)?;
    }
    // Read before the work: a bad OLD is a usage error.
    let old = match &args.diff {
        Some(old) => Some(image::diff::read(old).with_context(|| format!("--diff {}", old.display()))?),
        None => None,
    };
    if !args.more.is_empty() {
        return several(args, compression);
    }
    let phase = progress::Phase::start("scanning", progress::Counting::Files);
    let src = source(args, &args.path);
    phase.done();
    let src = src?;
    let staging = write::staging(&args.output)?;
    let (blobs, config) = layers(args, &src, compression, staging.path())?;
    let tag = tag_of(args, &src.launch.name);
    let one = write::Image {
        blobs: &blobs,
        config: &config,
        arch: None,
    };
    let written = write::write(args.format, &args.output, staging, &[one], compression, &tag)?;
    if !progress::quiet() {
        let files = src
            .tree
            .items
            .iter()
            .filter(|i| matches!(i.kind, ItemKind::File { .. }))
            .count();
        let what = match &src.image {
            Some(_) => "image layers kept".to_string(),
            None => format!("{}, {} in {files} files", src.summary, human(src.tree.total_size())),
        };
        println!(
            "{}: {} ({}, {} {}, {tag}; {what})",
            args.output.display(),
            human(written.size),
            args.format.name(),
            blobs.len(),
            if blobs.len() == 1 { "layer" } else { "layers" },
        );
        println!("{}", written.digest);
    }
    if let Some(old) = old {
        let r = image::diff::Report {
            old,
            new: image::diff::Side::written(&args.output, &blobs),
        };
        crate::ui::print(|w| w.write_all(image::diff::text(&r, crate::ui::Paint::stdout()).as_bytes()))?;
    }
    Ok(())
}

fn source(args: &Args, path: &std::path::Path) -> Result<Source> {
    let is_bundle = std::fs::metadata(path)
        .ok()
        .filter(|m| m.is_file())
        .is_some_and(|m| input::is_bundle(path, m.len()));
    if is_bundle {
        if let Some(flag) = args.input.kind_options().first() {
            bail!("{flag} does not apply to a tote bundle ({})", path.display());
        }
        let mut src = image::from_bundle(path)?;
        if let Some(e) = &args.input.entrypoint {
            image::set_entrypoint(&mut src, e)?;
        }
        return Ok(src);
    }
    if input::detect(path)? == input::Kind::Image {
        let mut given = args.input.kind_options();
        if args.input.entrypoint.is_some() {
            given.insert(0, "--entrypoint");
        }
        if let Some(flag) = given.first() {
            bail!(
                "{flag} does not apply to an image, whose layers and config are kept as they are ({}); \
                 bundle it and make the image from the bundle to change them",
                path.display()
            );
        }
        let image = input::open_image(path, args.input.arch)?;
        let first = ["/config/Entrypoint/0", "/config/Cmd/0"]
            .iter()
            .find_map(|p| image.config.pointer(p).and_then(serde_json::Value::as_str));
        let name = first
            .and_then(|f| std::path::Path::new(f).file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "image".into());
        return Ok(Source {
            tree: input::Tree { items: Vec::new() },
            launch: input::Launch {
                name,
                ..input::Launch::default()
            },
            image: Some(image),
            bundle_id: None,
            summary: String::new(),
            _staging: None,
        });
    }
    let resolved = input::resolve(&args.input.request(path))?;
    Ok(Source {
        tree: resolved.tree,
        launch: resolved.launch,
        image: None,
        bundle_id: None,
        summary: resolved.summary,
        _staging: resolved.staging,
    })
}

/// `src`'s layers written into `staging`'s blob directory (checked
/// against the inputs as they were first read), and its config.
fn layers(
    args: &Args,
    src: &Source,
    compression: Compression,
    staging: &std::path::Path,
) -> Result<(Vec<layer::Blob>, serde_json::Value)> {
    let plan = image::plan(src, args.max_layers as usize)?;
    let phase = progress::Phase::start("writing layers", progress::Counting::Files);
    let blobs = layer::write_layers(&plan.layers, compression, &write::blob_dir(staging));
    phase.done();
    let blobs = blobs?;
    plan.check_unchanged()?;
    let config = image::config(src, &blobs);
    Ok((blobs, config))
}

/// `--tag`, or one made from the entry point's file name.
fn tag_of(args: &Args, name: &str) -> String {
    args.tag.clone().unwrap_or_else(|| default_tag(name))
}

/// `tote image A B… -o OUT`: one image per input, each of another
/// architecture, under one image index.
fn several(args: &Args, compression: Compression) -> Result<()> {
    if args.format == Format::DockerArchive {
        bail!("a docker-archive holds one architecture's image: write an oci-archive or an oci-dir for several inputs");
    }
    if args.diff.is_some() || args.input.arch.is_some() {
        bail!("--diff and --arch take one input; with several, each input's architecture is its own");
    }
    let staging = write::staging(&args.output)?;
    let mut done: Vec<(PathBuf, tote_format::Arch, Vec<layer::Blob>, serde_json::Value, String)> = Vec::new();
    for path in std::iter::once(&args.path).chain(&args.more) {
        let src = source(args, path).with_context(|| path.display().to_string())?;
        let arch = match &src.image {
            Some(i) => i
                .config
                .get("architecture")
                .and_then(serde_json::Value::as_str)
                .and_then(tote_format::Arch::parse)
                .with_context(|| format!("{}: the image names no architecture tote knows", path.display()))?,
            None => src.launch.arch,
        };
        if let Some((other, ..)) = done.iter().find(|d| d.1 == arch) {
            bail!(
                "{} and {} are both for {arch}: give one input per architecture",
                other.display(),
                path.display()
            );
        }
        let (blobs, config) = layers(args, &src, compression, staging.path())?;
        done.push((path.clone(), arch, blobs, config, src.launch.name.clone()));
    }
    let tag = tag_of(args, &done[0].4);
    let images: Vec<write::Image<'_>> = done
        .iter()
        .map(|(_, arch, blobs, config, _)| write::Image {
            blobs,
            config,
            arch: Some(*arch),
        })
        .collect();
    let written = write::write(args.format, &args.output, staging, &images, compression, &tag)?;
    if !progress::quiet() {
        let archs: Vec<&str> = done.iter().map(|d| d.1.go_name()).collect();
        println!(
            "{}: {} ({}, linux/{}, {tag})",
            args.output.display(),
            human(written.size),
            args.format.name(),
            archs.join(" + linux/")
        );
        println!("{}", written.digest);
    }
    Ok(())
}

/// `name:latest` from the entry point's file name, lower case, with what a
/// reference cannot hold replaced by `-`.
fn default_tag(name: &str) -> String {
    let mut n: String = name
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '.' | '_' | '-' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '-',
        })
        .collect();
    n = n.trim_matches(|c: char| !c.is_ascii_alphanumeric()).to_string();
    if n.is_empty() {
        n = "app".into();
    }
    format!("{n}:latest")
}

/// `[host[:port]/]path[:tag]`, as Docker references are written.
fn check_tag(tag: &str) -> Result<()> {
    let bad = |why: &str| {
        anyhow::anyhow!("--tag {tag}: {why}; expected NAME[:TAG], e.g. app:1.0 or registry.example/team/app:1.0")
    };
    let (name, t) = match tag.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n, Some(t)),
        _ => (tag, None),
    };
    if let Some(t) = t {
        let ok = !t.is_empty()
            && t.len() <= 128
            && !t.starts_with(['.', '-'])
            && t.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if !ok {
            return Err(bad("the tag may hold letters, digits, '.', '_' and '-' (128 at most)"));
        }
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    if parts.len() > 1 && (parts[0].contains(['.', ':']) || parts[0] == "localhost") {
        let host = parts.remove(0);
        if host.is_empty() || !host.chars().all(|c| c.is_ascii_alphanumeric() || ".-:".contains(c)) {
            return Err(bad("bad registry host"));
        }
    }
    let component = |p: &&str| {
        !p.is_empty()
            && p.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && p.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
    };
    if parts.is_empty() || !parts.iter().all(component) {
        return Err(bad(
            "the name may hold lower-case letters, digits and '.', '_', '-' between them",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_follow_docker_references() {
        for ok in [
            "app",
            "app:1.0",
            "team/app:v2",
            "registry.example:5000/team/app:1.0",
            "localhost/app",
            "a_b-c.d:X_1",
        ] {
            assert!(check_tag(ok).is_ok(), "{ok}");
        }
        for bad in ["App", "app:", "app:-x", "/app", "app/", "app:1:2", "-app", "a b"] {
            assert!(check_tag(bad).is_err(), "{bad}");
        }
        assert_eq!(default_tag("Hello World!"), "hello-world:latest");
        assert_eq!(default_tag("python3.11"), "python3.11:latest");
        assert_eq!(default_tag("+++"), "app:latest");
        assert!(check_tag(&default_tag("My App")).is_ok());
    }
}
