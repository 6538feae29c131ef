//! The image on disk, in one of three formats, written atomically:
//! `oci-archive` (a tar of an OCI image layout, what `skopeo copy
//! oci-archive:` and `podman load` read), `oci-dir` (the layout as a
//! directory) and `docker-archive` (what `docker load` reads, uncompressed
//! layers). Archives are deterministic tars (sorted members, mtime 1,
//! owner 0:0), and every JSON document has its keys in a fixed order.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::layer::{self, Blob, Compression};
use crate::pack::output;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A tar of an OCI image layout (`oci-archive:` to skopeo, `podman load`).
    OciArchive,
    /// An OCI image layout directory (`oci:` to skopeo, umoci).
    OciDir,
    /// What `docker save` writes and `docker load` reads (`docker-archive:`
    /// to skopeo); layers are uncompressed.
    DockerArchive,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::OciArchive => "oci-archive",
            Format::OciDir => "oci-dir",
            Format::DockerArchive => "docker-archive",
        }
    }
}

pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// What was written.
pub struct Written {
    /// The whole output's size (for a directory, its files').
    pub size: u64,
    /// `sha256:` of the manifest (OCI formats) or of the config (docker:
    /// the image id).
    pub digest: String,
}

/// A staging directory for the blobs: in the output's directory (so that
/// an `oci-dir` is renamed into place), hidden, removed on failure and on
/// Ctrl-C.
pub fn staging(out: &Path) -> Result<tempfile::TempDir> {
    let parent = output::out_dir(out)?;
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = tempfile::Builder::new()
        .prefix(&format!(".{name}.tote-"))
        .tempdir_in(&parent)
        .with_context(|| format!("creating a staging directory in {}", parent.display()))?;
    crate::ui::interrupt::remove_on_interrupt(dir.path());
    crate::ui::interrupt::create_dir_all_below(dir.path(), &blob_dir(dir.path()))
        .context("creating the staging directory")?;
    Ok(dir)
}

/// The directory layer blobs go to inside the staging directory.
pub fn blob_dir(staging: &Path) -> PathBuf {
    staging.join("blobs/sha256")
}

fn json_bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

fn digest_of(bytes: &[u8]) -> String {
    tote_format::sha256(bytes).to_hex()
}

/// One image of what `write` writes: its layers and config, and (in a
/// multi-architecture index) its architecture.
pub struct Image<'a> {
    pub blobs: &'a [Blob],
    pub config: &'a Value,
    pub arch: Option<tote_format::Arch>,
}

/// Write the image: `staging` holds the layer blobs (`blob_dir`). Several
/// `images` (one per architecture) become one image index, whose digest
/// is the one returned; a docker-archive holds one image.
pub fn write(
    format: Format,
    out: &Path,
    staging: tempfile::TempDir,
    images: &[Image<'_>],
    compression: Compression,
    tag: &str,
) -> Result<Written> {
    if format == Format::DockerArchive {
        let [one] = images else {
            bail!("a docker-archive holds one architecture's image: write an oci-archive or an oci-dir");
        };
        let config_bytes = json_bytes(one.config);
        let config_digest = digest_of(&config_bytes);
        let manifest = json!([{
            "Config": format!("{config_digest}.json"),
            "RepoTags": [tag],
            "Layers": one.blobs.iter().map(|b| format!("{}.tar", b.digest)).collect::<Vec<_>>(),
        }]);
        let mut members: Vec<(String, Member<'_>)> =
            vec![(format!("{config_digest}.json"), Member::Bytes(config_bytes))];
        for b in one.blobs {
            members.push((format!("{}.tar", b.digest), Member::File(&b.file)));
        }
        members.push(("manifest.json".into(), Member::Bytes(json_bytes(&manifest))));
        let written = write_archive(out, &members)?;
        return Ok(Written {
            size: written,
            digest: format!("sha256:{config_digest}"),
        });
    }
    let dir = blob_dir(staging.path());
    let mut names: Vec<String> = Vec::new();
    let mut entries: Vec<Value> = Vec::new();
    for image in images {
        let config_bytes = json_bytes(image.config);
        let config_digest = digest_of(&config_bytes);
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": {"mediaType": CONFIG, "digest": format!("sha256:{config_digest}"), "size": config_bytes.len()},
            "layers": image.blobs.iter().map(|b| json!({
                "mediaType": compression.media_type(),
                "digest": format!("sha256:{}", b.digest),
                "size": b.size,
            })).collect::<Vec<_>>(),
        });
        let manifest_bytes = json_bytes(&manifest);
        let manifest_digest = digest_of(&manifest_bytes);
        write_new(&dir.join(&config_digest), &config_bytes)?;
        write_new(&dir.join(&manifest_digest), &manifest_bytes)?;
        let mut entry = json!({
            "mediaType": MANIFEST,
            "digest": format!("sha256:{manifest_digest}"),
            "size": manifest_bytes.len(),
        });
        if let Some(a) = image.arch {
            entry["platform"] = json!({"architecture": a.go_name(), "os": "linux"});
        }
        entries.push(entry);
        names.extend(image.blobs.iter().map(|b| b.digest.clone()));
        names.push(config_digest);
        names.push(manifest_digest);
    }
    // One image: index.json names its manifest. Several: an image index
    // blob lists them by platform, and index.json names that.
    let top = if let [entry] = entries.as_slice() {
        entry.clone()
    } else {
        let index_bytes = json_bytes(&json!({
            "schemaVersion": 2,
            "mediaType": INDEX,
            "manifests": entries,
        }));
        let index_digest = digest_of(&index_bytes);
        write_new(&dir.join(&index_digest), &index_bytes)?;
        names.push(index_digest.clone());
        json!({
            "mediaType": INDEX,
            "digest": format!("sha256:{index_digest}"),
            "size": index_bytes.len(),
        })
    };
    let digest = top["digest"].as_str().unwrap_or_default().to_string();
    let mut top = top;
    top["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
    let index = json!({
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": [top],
    });
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec();
    if format == Format::OciDir {
        write_new(&staging.path().join("index.json"), &json_bytes(&index))?;
        write_new(&staging.path().join("oci-layout"), &layout)?;
        let size = dir_size(staging.path())?;
        place_dir(staging, out)?;
        return Ok(Written { size, digest });
    }
    names.sort();
    names.dedup();
    let mut members: Vec<(String, Member<'_>)> =
        vec![("blobs/".into(), Member::Dir), ("blobs/sha256/".into(), Member::Dir)];
    let paths: Vec<PathBuf> = names.iter().map(|n| dir.join(n)).collect();
    for (n, p) in names.iter().zip(&paths) {
        members.push((format!("blobs/sha256/{n}"), Member::File(p)));
    }
    members.push(("index.json".into(), Member::Bytes(json_bytes(&index))));
    members.push(("oci-layout".into(), Member::Bytes(layout)));
    let size = write_archive(out, &members)?;
    drop(staging);
    Ok(Written { size, digest })
}

enum Member<'a> {
    Dir,
    Bytes(Vec<u8>),
    File(&'a Path),
}

/// A deterministic tar of `members` at `out`, atomically; its size.
fn write_archive(out: &Path, members: &[(String, Member<'_>)]) -> Result<u64> {
    let written = output::write_file(out, 0o644, |w| {
        let mut b = tar::Builder::new(w);
        for (name, m) in members {
            match m {
                Member::Dir => {
                    let mut h = layer::header(tar::EntryType::Directory, 0o755, 0);
                    b.append_data(&mut h, name, std::io::empty())?;
                }
                Member::Bytes(bytes) => {
                    let mut h = layer::header(tar::EntryType::Regular, 0o644, bytes.len() as u64);
                    b.append_data(&mut h, name, bytes.as_slice())?;
                }
                Member::File(p) => {
                    let f = File::open(p).with_context(|| format!("opening {}", p.display()))?;
                    let len = f.metadata()?.len();
                    let mut h = layer::header(tar::EntryType::Regular, 0o644, len);
                    b.append_data(&mut h, name, f)?;
                }
            }
        }
        b.into_inner()?;
        Ok(())
    })
    .with_context(|| format!("writing {}", out.display()))?;
    Ok(written.len)
}

fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = File::create(path).with_context(|| format!("writing {}", path.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

fn dir_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let m = e.metadata()?;
        total += if m.is_dir() { dir_size(&e.path())? } else { m.len() };
    }
    Ok(total)
}

/// Move the staged layout to `out`: a new name, or in place of an earlier
/// OCI layout there (swapped atomically, then removed); anything else at
/// `out` is left alone.
fn place_dir(staging: tempfile::TempDir, out: &Path) -> Result<()> {
    let staged = staging.path().to_path_buf();
    std::fs::set_permissions(&staged, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .with_context(|| format!("setting the mode of {}", staged.display()))?;
    match std::fs::symlink_metadata(out) {
        Err(_) => {
            std::fs::rename(&staged, out).with_context(|| format!("moving the image into {}", out.display()))?;
            let _ = staging.keep();
        }
        Ok(m) if m.is_dir() && out.join("oci-layout").is_file() => {
            nix::fcntl::renameat2(
                nix::fcntl::AT_FDCWD,
                &staged,
                nix::fcntl::AT_FDCWD,
                out,
                nix::fcntl::RenameFlags::RENAME_EXCHANGE,
            )
            .with_context(|| format!("replacing the image at {}", out.display()))?;
            // `staging` now names the old layout, removed on drop.
        }
        Ok(_) => bail!(
            "output {} exists and is not an OCI image layout: remove it or choose another -o",
            out.display()
        ),
    }
    crate::ui::interrupt::forget(&staged);
    Ok(())
}
