//! Reading an image as it is stored: a docker-archive (`docker save`, Nix's
//! dockerTools), an OCI image layout directory or an OCI archive (skopeo,
//! umoci, buildah), each as tar or tar.gz. Gives the image config and the
//! layer files, bottom first; OCI blobs are checked against their digests.

use std::fs;
use std::io::{BufReader, Read};
use std::path::{Component, Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use tote_format::Arch;

use crate::ui::interrupt::create_dir_all_below;
use sha2::{Digest, Sha256};

/// A tar (or gzip/zstd-compressed tar) whose members make an image?
pub fn looks_like_archive(path: &Path) -> Result<bool> {
    let f = fs::File::open(path).with_context(|| format!("{}: cannot open the input", path.display()))?;
    let mut r = decompressed(BufReader::new(f))?;
    let mut head = [0u8; 512];
    let mut n = 0;
    while n < head.len() {
        match r.read(&mut head[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    Ok(n == 512 && &head[257..262] == b"ustar")
}

/// A reader that undoes gzip or zstd compression, detected by magic bytes.
pub fn decompressed<'a, R: std::io::BufRead + 'a>(mut r: R) -> Result<Box<dyn Read + 'a>> {
    let magic = r.fill_buf().context("reading")?;
    Ok(if magic.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(r))
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(r).context("reading zstd")?)
    } else {
        Box::new(r)
    })
}

/// The parts of an image that matter here.
pub struct Image {
    pub config: Value,
    /// Layer files, bottom first, with their expected digest (OCI) if any.
    pub layers: Vec<(PathBuf, Option<String>)>,
    /// The unpacked outer archive, while the layer files are needed.
    _unpacked: Option<tempfile::TempDir>,
}

/// Open the image at `path` (a layout directory, or an archive unpacked
/// into a temporary directory for as long as the `Image` lives). Of a
/// multi-architecture index, the linux manifest for `arch`; without one,
/// the host's architecture's, else amd64's, else the first.
pub fn open(path: &Path, arch: Option<Arch>) -> Result<Image> {
    let mut unpacked = None;
    let dir = if path.is_dir() {
        path.to_path_buf()
    } else {
        let tmp = tempfile::Builder::new()
            .prefix(".tote-image-")
            .tempdir()
            .context("creating a temporary directory")?;
        crate::ui::interrupt::remove_on_interrupt(tmp.path());
        unpack_archive(path, tmp.path())?;
        let dir = tmp.path().to_path_buf();
        unpacked = Some(tmp);
        dir
    };
    let (config, layers) = if dir.join("oci-layout").is_file() {
        read_oci(&dir, path, arch)?
    } else if dir.join("manifest.json").is_file() {
        read_docker(&dir, path)?
    } else {
        bail!(
            "{}: neither an OCI image layout (oci-layout, index.json) nor a docker-archive (manifest.json)",
            path.display()
        );
    };
    // An image of one architecture, chosen for another.
    let declared = config.get("architecture").and_then(Value::as_str);
    if let (Some(want), Some(has)) = (arch, declared) {
        if has != want.go_name() {
            bail!(
                "{}: the image is linux/{has}, not linux/{} (--arch)",
                path.display(),
                want.go_name()
            );
        }
    }
    Ok(Image {
        config,
        layers,
        _unpacked: unpacked,
    })
}

/// A layer's files, bottom first, with their expected digest (OCI) if any.
type Layers = Vec<(PathBuf, Option<String>)>;

/// Extract the outer archive (regular files and directories only).
fn unpack_archive(path: &Path, into: &Path) -> Result<()> {
    let f = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut ar = tar::Archive::new(decompressed(BufReader::new(f))?);
    for entry in ar
        .entries()
        .with_context(|| format!("{}: reading the archive", path.display()))?
    {
        let mut entry = entry.with_context(|| format!("{}: reading the archive", path.display()))?;
        let name = entry
            .path()
            .with_context(|| format!("{}: a member has a bad name", path.display()))?
            .into_owned();
        let Some(rel) = safe_relative(&name) else {
            bail!("{}: member {} escapes the archive", path.display(), name.display());
        };
        let dest = into.join(&rel);
        match entry.header().entry_type() {
            tar::EntryType::Directory => create_dir_all_below(into, &dest)?,
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if let Some(parent) = dest.parent() {
                    create_dir_all_below(into, parent)?;
                }
                let mut out = fs::File::create(&dest).with_context(|| format!("writing {}", dest.display()))?;
                std::io::copy(&mut entry, &mut out)
                    .with_context(|| format!("{}: reading member {}", path.display(), name.display()))?;
            }
            _ => {} // symlinks in the outer archive (docker-archive's legacy layout) are not needed
        }
    }
    Ok(())
}

/// `./a/b` or `/a/b` as `a/b`; `None` if it has `..`.
pub fn safe_relative(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

fn read_json(path: &Path, what: &str, image: &Path) -> Result<Value> {
    let text =
        fs::read(path).with_context(|| format!("{}: {what} ({}) is missing", image.display(), path.display()))?;
    serde_json::from_slice(&text).map_err(|e| anyhow!("{}: {what} is malformed: {e}", image.display()))
}

fn read_docker(dir: &Path, image: &Path) -> Result<(Value, Layers)> {
    let manifest = read_json(&dir.join("manifest.json"), "manifest.json", image)?;
    let first = manifest.as_array().and_then(|a| a.first()).ok_or_else(|| {
        anyhow!(
            "{}: manifest.json is malformed: expected a list with one image",
            image.display()
        )
    })?;
    let config_name = first
        .get("Config")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("{}: manifest.json is malformed: no Config", image.display()))?;
    let config = read_json(&dir.join(checked(config_name, image)?), "the image config", image)?;
    let layers = first
        .get("Layers")
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow!("{}: manifest.json is malformed: no Layers", image.display()))?
        .iter()
        .map(|l| {
            let name = l
                .as_str()
                .ok_or_else(|| anyhow!("{}: manifest.json is malformed: a layer is not a path", image.display()))?;
            Ok((dir.join(checked(name, image)?), None))
        })
        .collect::<Result<_>>()?;
    Ok((config, layers))
}

fn checked(name: &str, image: &Path) -> Result<PathBuf> {
    safe_relative(Path::new(name))
        .ok_or_else(|| anyhow!("{}: the manifest names {name}, outside the image", image.display()))
}

fn blob(dir: &Path, digest: &str, image: &Path) -> Result<PathBuf> {
    let hex = digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|c| c.is_ascii_hexdigit()))
        .ok_or_else(|| anyhow!("{}: unsupported or malformed digest {digest:?}", image.display()))?;
    Ok(dir.join("blobs/sha256").join(hex))
}

fn read_oci(dir: &Path, image: &Path, arch: Option<Arch>) -> Result<(Value, Layers)> {
    let mut doc = read_json(&dir.join("index.json"), "index.json", image)?;
    // Descend through image indexes to one manifest: linux/`arch`.
    for _ in 0..8 {
        let is_manifest = doc.get("layers").is_some();
        if is_manifest {
            let config_digest = doc
                .pointer("/config/digest")
                .and_then(Value::as_str)
                .ok_or_else(|| anyhow!("{}: the image manifest is malformed: no config digest", image.display()))?;
            let config_path = blob(dir, config_digest, image)?;
            check_digest(&config_path, config_digest, image)?;
            let config = read_json(&config_path, "the image config", image)?;
            let layers = doc["layers"]
                .as_array()
                .ok_or_else(|| {
                    anyhow!(
                        "{}: the image manifest is malformed: layers is not a list",
                        image.display()
                    )
                })?
                .iter()
                .map(|l| {
                    let d = l.get("digest").and_then(Value::as_str).ok_or_else(|| {
                        anyhow!(
                            "{}: the image manifest is malformed: a layer has no digest",
                            image.display()
                        )
                    })?;
                    Ok((blob(dir, d, image)?, Some(d.to_string())))
                })
                .collect::<Result<_>>()?;
            return Ok((config, layers));
        }
        let manifests = doc
            .get("manifests")
            .and_then(Value::as_array)
            .filter(|m| !m.is_empty())
            .ok_or_else(|| anyhow!("{}: index.json is malformed: no manifests", image.display()))?;
        let platform = |m: &Value| {
            let at = |p: &str| m.pointer(p).and_then(Value::as_str).unwrap_or("?").to_string();
            format!("{}/{}", at("/platform/os"), at("/platform/architecture"))
        };
        let linux = |a: Arch| {
            let want = format!("linux/{}", a.go_name());
            manifests.iter().find(|m| platform(m) == want)
        };
        // An index without platforms (one level of a nested index) is
        // descended into as it is.
        let any_platform = manifests.iter().any(|m| m.get("platform").is_some());
        let chosen = match arch {
            Some(a) if any_platform => linux(a).ok_or_else(|| {
                let has: Vec<String> = manifests.iter().map(platform).collect();
                anyhow!(
                    "{}: the image has no linux/{} manifest (it has {}): choose one with --arch",
                    image.display(),
                    a.go_name(),
                    has.join(", ")
                )
            })?,
            _ => Arch::native()
                .and_then(linux)
                .or_else(|| linux(Arch::X86_64))
                .unwrap_or(&manifests[0]),
        };
        let digest = chosen
            .get("digest")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("{}: index.json is malformed: a manifest has no digest", image.display()))?;
        let p = blob(dir, digest, image)?;
        check_digest(&p, digest, image)?;
        doc = read_json(&p, "the image manifest", image)?;
    }
    bail!("{}: image indexes nested too deep", image.display())
}

pub fn check_digest(path: &Path, digest: &str, image: &Path) -> Result<()> {
    let mut f = fs::File::open(path)
        .map_err(|_| anyhow!("{}: blob {digest} named by the manifest is missing", image.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    let got = tote_format::Digest32(h.finalize().into()).to_hex();
    if digest.strip_prefix("sha256:") != Some(got.as_str()) {
        bail!(
            "{}: blob {digest} does not match its digest (sha256:{got}): the image is corrupt",
            image.display()
        );
    }
    Ok(())
}
