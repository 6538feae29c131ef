//! OCI images: a docker-archive (`docker save`, Nix's dockerTools), an OCI
//! image layout directory or an OCI archive (skopeo, umoci, buildah), each
//! as tar or tar.gz. Layers are applied in order with their whiteouts into a
//! staging directory that becomes the bundle's root; Entrypoint, Cmd, Env
//! and WorkingDir come from the image config. At launch the image's rootfs
//! is `/`, with the host paths of [`HOST_PATHS`] and the caller's working
//! directory bound in.

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufReader, Read, Seek};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tote_format::{MountKind, MountSpec};

use crate::input::Input;
use crate::pack::Launch;
use crate::paths::clean;
use crate::scan::TreeBuilder;

/// Host paths an image sees at launch (each only where the host has it).
pub const HOST_PATHS: [&str; 6] = ["/dev", "/proc", "/sys", "/tmp", "/etc/hosts", "/etc/resolv.conf"];
/// The tree path of the image's root file system.
const ROOTFS: &str = "rootfs";
/// Docker's PATH when the image sets none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

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
fn decompressed<'a, R: std::io::BufRead + 'a>(mut r: R) -> Result<Box<dyn Read + 'a>> {
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
struct Image {
    config: Value,
    /// Layer files, bottom first, with their expected digest (OCI) if any.
    layers: Vec<(PathBuf, Option<String>)>,
}

pub fn resolve(path: &Path, requested: Option<&Path>) -> Result<Input> {
    let unpacked;
    let dir = if path.is_dir() {
        path.to_path_buf()
    } else {
        unpacked = tempfile::Builder::new()
            .prefix(".tote-image-")
            .tempdir()
            .context("creating a temporary directory")?;
        unpack_archive(path, unpacked.path())?;
        unpacked.path().to_path_buf()
    };
    let image = if dir.join("oci-layout").is_file() {
        read_oci(&dir, path)?
    } else if dir.join("manifest.json").is_file() {
        read_docker(&dir, path)?
    } else {
        bail!(
            "{}: neither an OCI image layout (oci-layout, index.json) nor a docker-archive (manifest.json)",
            path.display()
        );
    };

    let staging = tempfile::Builder::new()
        .prefix(".tote-rootfs-")
        .tempdir()
        .context("creating a temporary directory")?;
    let mut skipped = 0usize;
    for (layer, digest) in &image.layers {
        skipped += apply_layer(layer, digest.as_deref(), staging.path(), path)?;
    }

    let cfg = image.config.get("config").cloned().unwrap_or(Value::Null);
    let strings = |key: &str| -> Result<Vec<String>> {
        match cfg.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(String::from)
                        .ok_or_else(|| anyhow!("{}: config {key} holds a non-string", path.display()))
                })
                .collect(),
            Some(_) => bail!("{}: config {key} is not a list of strings", path.display()),
        }
    };
    let (entrypoint, cmd, env) = (strings("Entrypoint")?, strings("Cmd")?, strings("Env")?);
    for e in &env {
        if e.find('=').is_none_or(|i| i == 0) || e.contains('\0') {
            bail!("{}: config Env entry {e:?} is not KEY=value", path.display());
        }
    }
    let workdir = cfg
        .get("WorkingDir")
        .and_then(Value::as_str)
        .unwrap_or("")
        .trim_end_matches('/')
        .to_string();
    if !workdir.is_empty() {
        crate::input::clean_absolute(Path::new(&workdir), "the image's WorkingDir")?;
        fs::create_dir_all(staging.path().join(&workdir[1..])).context("creating the image's WorkingDir")?;
    }
    if let Some(user) = cfg
        .get("User")
        .and_then(Value::as_str)
        .filter(|u| !["", "0", "root", "0:0", "root:root"].contains(u))
    {
        eprintln!("tote: note: the image's User {user:?} is not applied; the program runs as whoever runs the bundle");
    }

    let mut b = TreeBuilder::default();
    b.add(staging.path(), Path::new(ROOTFS))?;
    let tree = b.build()?;

    // What runs: --entrypoint, else Entrypoint + Cmd, else Cmd.
    let (program, args, cmd) = match requested {
        Some(r) => (format!("/{}", r.display()), Vec::new(), Vec::new()),
        None if !entrypoint.is_empty() => (entrypoint[0].clone(), entrypoint[1..].to_vec(), cmd),
        None if !cmd.is_empty() => (cmd[0].clone(), Vec::new(), cmd[1..].to_vec()),
        None => bail!(
            "{}: the image sets neither Entrypoint nor Cmd: name the program with --entrypoint REL",
            path.display()
        ),
    };
    let search = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH)
        .to_string();
    let absolute = locate(&tree, &program, &search, &workdir)
        .with_context(|| format!("{}: entry point {program}", path.display()))?;
    let name = Path::new(&absolute)
        .file_name()
        .map_or("app".into(), |n| n.to_string_lossy().into_owned());
    let launch = Launch {
        name,
        entrypoint: absolute.into_bytes(),
        args: args.into_iter().map(String::into_bytes).collect(),
        cmd: cmd.into_iter().map(String::into_bytes).collect(),
        env: env.into_iter().map(String::into_bytes).collect(),
        workdir: workdir.into_bytes(),
        root: ROOTFS.as_bytes().to_vec(),
        mounts: HOST_PATHS
            .iter()
            .map(|p| MountSpec {
                kind: MountKind::Host,
                source: p.as_bytes().to_vec(),
                target: p.as_bytes().to_vec(),
            })
            .collect(),
        ..Launch::default()
    };
    let special = if skipped > 0 {
        format!(", {skipped} device/fifo entries skipped")
    } else {
        String::new()
    };
    Ok(Input {
        tree,
        launch,
        summary: format!("image with {} layers{special}", image.layers.len()),
        staging: Some(staging),
    })
}

/// The program's absolute path in the image: as given when it has a `/`
/// (relative to WorkingDir), else the first executable on the image's PATH.
fn locate(tree: &crate::scan::Tree, program: &str, search: &str, workdir: &str) -> Result<String> {
    let candidates: Vec<PathBuf> = if program.contains('/') {
        let base = if workdir.is_empty() { "/" } else { workdir };
        vec![Path::new(base).join(program)]
    } else {
        search
            .split(':')
            .filter(|d| d.starts_with('/'))
            .map(|d| Path::new(d).join(program))
            .collect()
    };
    for c in &candidates {
        let clean = clean(c);
        let in_tree = Path::new("/")
            .join(ROOTFS)
            .join(clean.strip_prefix("/").unwrap_or(&clean));
        if crate::entrypoint::executable(tree, &in_tree).is_ok() {
            return Ok(clean.to_string_lossy().into_owned());
        }
    }
    match candidates.as_slice() {
        [one] => {
            let in_tree = Path::new("/")
                .join(ROOTFS)
                .join(clean(one).strip_prefix("/").unwrap_or(one));
            let why = crate::entrypoint::executable(tree, &in_tree).err().unwrap_or_default();
            bail!("{}: {why}", clean(one).display())
        }
        _ => bail!("not found on the image's PATH ({search})"),
    }
}

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
            tar::EntryType::Directory => fs::create_dir_all(&dest)?,
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if let Some(parent) = dest.parent() {
                    fs::create_dir_all(parent)?;
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
fn safe_relative(p: &Path) -> Option<PathBuf> {
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

fn read_docker(dir: &Path, image: &Path) -> Result<Image> {
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
    Ok(Image { config, layers })
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

fn read_oci(dir: &Path, image: &Path) -> Result<Image> {
    let mut doc = read_json(&dir.join("index.json"), "index.json", image)?;
    // Descend through image indexes to one manifest, preferring linux/amd64.
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
            return Ok(Image { config, layers });
        }
        let manifests = doc
            .get("manifests")
            .and_then(Value::as_array)
            .filter(|m| !m.is_empty())
            .ok_or_else(|| anyhow!("{}: index.json is malformed: no manifests", image.display()))?;
        let amd64 = manifests.iter().find(|m| {
            m.pointer("/platform/architecture").and_then(Value::as_str) == Some("amd64")
                && m.pointer("/platform/os").and_then(Value::as_str) == Some("linux")
        });
        let chosen = amd64.unwrap_or(&manifests[0]);
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

fn check_digest(path: &Path, digest: &str, image: &Path) -> Result<()> {
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

/// Apply one layer onto `root`. Returns how many device/fifo entries were skipped.
fn apply_layer(layer: &Path, digest: Option<&str>, root: &Path, image: &Path) -> Result<usize> {
    let shown = || digest.map_or_else(|| layer.display().to_string(), String::from);
    if !layer.is_file() {
        bail!(
            "{}: layer {} named by the manifest is missing",
            image.display(),
            shown()
        );
    }
    if let Some(d) = digest {
        check_digest(layer, d, image)?;
    }
    let mut f = fs::File::open(layer).with_context(|| format!("opening layer {}", layer.display()))?;
    f.rewind()?;
    let mut ar = tar::Archive::new(decompressed(BufReader::new(f))?);
    let mut this_layer: BTreeSet<PathBuf> = BTreeSet::new();
    let mut skipped = 0;
    let bad = |what: String| anyhow!("{}: layer {}: {what}", image.display(), shown());
    for entry in ar.entries().map_err(|e| bad(format!("not a tar archive ({e})")))? {
        let mut entry = entry.map_err(|e| bad(format!("unreadable ({e})")))?;
        let name = entry
            .path()
            .map_err(|e| bad(format!("a member has a bad name ({e})")))?
            .into_owned();
        let rel = safe_relative(&name).ok_or_else(|| bad(format!("member {} escapes the root", name.display())))?;
        let Some(file_name) = rel.file_name().map(|n| n.as_bytes().to_vec()) else {
            continue; // the root itself
        };
        let parent = resolve_in(root, rel.parent().unwrap_or(Path::new("")))?;
        if file_name == b".wh..wh..opq" {
            // Opaque directory: what lower layers put there is hidden.
            if let Ok(rd) = fs::read_dir(&parent) {
                for e in rd.flatten() {
                    let child = rel.parent().unwrap_or(Path::new("")).join(e.file_name());
                    if !this_layer.contains(&child) {
                        remove(&e.path())?;
                    }
                }
            }
            continue;
        }
        if let Some(hidden) = file_name.strip_prefix(b".wh.") {
            remove(&parent.join(std::ffi::OsStr::from_bytes(hidden)))?;
            continue;
        }
        this_layer.insert(rel.clone());
        let dest = parent.join(std::ffi::OsStr::from_bytes(&file_name));
        let kind = entry.header().entry_type();
        let mode = entry.header().mode().unwrap_or(0o644);
        match kind {
            tar::EntryType::Directory => {
                if fs::symlink_metadata(&dest).is_ok_and(|m| !m.is_dir()) {
                    remove(&dest)?;
                }
                fs::create_dir_all(&dest).with_context(|| format!("creating {}", dest.display()))?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                remove(&dest)?;
                fs::create_dir_all(&parent)?;
                let mut out = fs::File::create(&dest).with_context(|| format!("writing {}", dest.display()))?;
                std::io::copy(&mut entry, &mut out).map_err(|e| bad(format!("reading {} ({e})", name.display())))?;
                let exec = if mode & 0o111 != 0 { 0o755 } else { 0o644 };
                fs::set_permissions(&dest, fs::Permissions::from_mode(exec))?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .ok()
                    .flatten()
                    .ok_or_else(|| bad(format!("symlink {} has no target", name.display())))?;
                remove(&dest)?;
                fs::create_dir_all(&parent)?;
                std::os::unix::fs::symlink(&target, &dest).with_context(|| format!("creating {}", dest.display()))?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .ok()
                    .flatten()
                    .ok_or_else(|| bad(format!("hard link {} has no target", name.display())))?;
                let target = safe_relative(&target)
                    .ok_or_else(|| bad(format!("hard link {} escapes the root", name.display())))?;
                let src = resolve_in(root, &target)?;
                remove(&dest)?;
                fs::create_dir_all(&parent)?;
                fs::hard_link(&src, &dest)
                    .map_err(|e| bad(format!("hard link {} to {}: {e}", name.display(), target.display())))?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => skipped += 1,
            _ => {} // PAX/GNU headers are consumed by the tar reader
        }
    }
    Ok(skipped)
}

/// `rel` inside `root`, following symlinks as if `root` were `/` (so no
/// layer can write outside it). Missing components are returned as they are.
fn resolve_in(root: &Path, rel: &Path) -> Result<PathBuf> {
    let inside = |p: &Path| root.join(p.strip_prefix("/").unwrap_or(p));
    let end = crate::paths::resolve(
        rel,
        |next| Ok(fs::read_link(inside(next)).ok()),
        || anyhow!("{}: too many levels of symbolic links in the image", rel.display()),
    )?;
    Ok(inside(&end))
}

fn remove(p: &Path) -> Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p).with_context(|| format!("removing {}", p.display())),
        Ok(_) => fs::remove_file(p).with_context(|| format!("removing {}", p.display())),
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_paths_stay_inside_the_root() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        fs::create_dir(r.join("usr")).unwrap();
        std::os::unix::fs::symlink("/", r.join("up")).unwrap();
        std::os::unix::fs::symlink("../../..", r.join("usr/back")).unwrap();
        std::os::unix::fs::symlink("usr", r.join("u")).unwrap();
        assert_eq!(resolve_in(r, Path::new("up/etc")).unwrap(), r.join("etc"));
        assert_eq!(resolve_in(r, Path::new("usr/back/etc")).unwrap(), r.join("etc"));
        assert_eq!(resolve_in(r, Path::new("u/lib")).unwrap(), r.join("usr/lib"));
        assert_eq!(safe_relative(Path::new("./a/../b")), None);
        assert_eq!(safe_relative(Path::new("/a/b")), Some(PathBuf::from("a/b")));
    }
}
