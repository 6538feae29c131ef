//! OCI images: a docker-archive (`docker save`, Nix's dockerTools), an OCI
//! image layout directory or an OCI archive (skopeo, umoci, buildah), each
//! as tar or tar.gz. Layers are applied in order with their whiteouts into a
//! staging directory that becomes the bundle's root; Entrypoint, Cmd, Env
//! and WorkingDir come from the image config. At launch the image's rootfs
//! is `/`, with the host paths of [`HOST_PATHS`] and the caller's working
//! directory bound in.

mod archive;
mod layers;

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use tote_format::{MountKind, MountSpec};

pub use archive::{decompressed, looks_like_archive, open as open_image, Image};

use super::entrypoint;
use super::model::{Input, Launch};
use super::paths::{clean, clean_absolute};
use super::tree::{Tree, TreeBuilder};
use crate::ui::interrupt::create_dir_all_below;

/// Host paths an image sees at launch (each only where the host has it).
pub const HOST_PATHS: [&str; 6] = ["/dev", "/proc", "/sys", "/tmp", "/etc/hosts", "/etc/resolv.conf"];
/// The tree path of the image's root file system.
const ROOTFS: &str = "rootfs";
/// Docker's PATH when the image sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub fn resolve(path: &Path, requested: Option<&Path>, arch: Option<tote_format::Arch>) -> Result<Input> {
    let image = archive::open(path, arch)?;
    let staging = tempfile::Builder::new()
        .prefix(".tote-rootfs-")
        .tempdir()
        .context("creating a temporary directory")?;
    crate::ui::interrupt::remove_on_interrupt(staging.path());
    let mut skipped = 0usize;
    for (layer, digest) in &image.layers {
        skipped += layers::apply_layer(layer, digest.as_deref(), staging.path(), path)?;
    }
    let config = Config::read(&image.config, path)?;
    if !config.workdir.is_empty() {
        create_dir_all_below(staging.path(), &staging.path().join(&config.workdir[1..]))
            .context("creating the image's WorkingDir")?;
    }

    let mut b = TreeBuilder::default();
    b.add(staging.path(), Path::new(ROOTFS))?;
    let tree = b.build()?;
    let launch = launch(&tree, config, requested, path)?;
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

/// What the image config says about running it.
struct Config {
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    env: Vec<String>,
    /// Empty, or a clean absolute path without a trailing `/`.
    workdir: String,
}

impl Config {
    fn read(image_config: &Value, path: &Path) -> Result<Config> {
        let cfg = image_config.get("config").cloned().unwrap_or(Value::Null);
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
            clean_absolute(Path::new(&workdir), "the image's WorkingDir")?;
        }
        if let Some(user) = cfg
            .get("User")
            .and_then(Value::as_str)
            .filter(|u| !["", "0", "root", "0:0", "root:root"].contains(u))
        {
            eprintln!(
                "tote: note: the image's User {user:?} is not applied; the program runs as whoever runs the bundle"
            );
        }
        Ok(Config {
            entrypoint,
            cmd,
            env,
            workdir,
        })
    }
}

/// What runs: `--entrypoint`, else Entrypoint + Cmd, else Cmd; the image's
/// root as `/` with the host paths bound in.
fn launch(tree: &Tree, config: Config, requested: Option<&Path>, path: &Path) -> Result<Launch> {
    let Config {
        entrypoint,
        cmd,
        env,
        workdir,
    } = config;
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
    let absolute = locate(tree, &program, &search, &workdir)
        .with_context(|| format!("{}: entry point {program}", path.display()))?;
    let name = Path::new(&absolute)
        .file_name()
        .map_or("app".into(), |n| n.to_string_lossy().into_owned());
    Ok(Launch {
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
    })
}

/// The program's absolute path in the image: as given when it has a `/`
/// (relative to WorkingDir), else the first executable on the image's PATH.
fn locate(tree: &Tree, program: &str, search: &str, workdir: &str) -> Result<String> {
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
        if entrypoint::executable(tree, &in_tree).is_ok() {
            return Ok(clean.to_string_lossy().into_owned());
        }
    }
    match candidates.as_slice() {
        [one] => {
            let in_tree = Path::new("/")
                .join(ROOTFS)
                .join(clean(one).strip_prefix("/").unwrap_or(one));
            let why = entrypoint::executable(tree, &in_tree).err().unwrap_or_default();
            bail!("{}: {why}", clean(one).display())
        }
        _ => bail!("not found on the image's PATH ({search})"),
    }
}
