//! Two images compared layer by layer (`tote diff OLD NEW` on images,
//! `tote image --diff OLD`): which layers NEW shares with OLD (same
//! `diff_id`, the digest of the layer's tar), which are new, and the bytes
//! a host or registry holding OLD must fetch for NEW (its new layers as
//! NEW stores them).

use std::collections::HashSet;
use std::path::Path;

use anyhow::{anyhow, Result};
use serde_json::{json, Value};

use crate::ui::{human, Paint};

/// The `schema` member of `tote diff --json` on images
/// (docs/image-diff.schema.json).
pub const JSON_SCHEMA: &str = "tote-image-diff/1";

pub struct LayerInfo {
    pub diff_id: String,
    /// As the image stores it (compressed, or not in a docker-archive).
    pub size: u64,
    pub created_by: String,
}

pub struct Side {
    pub file: String,
    pub layers: Vec<LayerInfo>,
}

impl Side {
    /// The image just written to `path` from `blobs`, as `read` would see it.
    pub fn written(path: &Path, blobs: &[super::layer::Blob]) -> Side {
        Side {
            file: path.display().to_string(),
            layers: blobs
                .iter()
                .map(|b| LayerInfo {
                    diff_id: format!("sha256:{}", b.diff_id),
                    size: b.size,
                    created_by: b.created_by.clone(),
                })
                .collect(),
        }
    }
}

pub fn read(path: &Path) -> Result<Side> {
    let image = crate::input::open_image(path, None)?;
    let diff_ids: Vec<String> = image
        .config
        .pointer("/rootfs/diff_ids")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default();
    if diff_ids.len() != image.layers.len() {
        return Err(anyhow!(
            "{}: the config lists {} layers, the manifest {}: the image is corrupt",
            path.display(),
            diff_ids.len(),
            image.layers.len()
        ));
    }
    let history = super::non_empty_history(&image.config);
    let layers = image
        .layers
        .iter()
        .zip(diff_ids)
        .enumerate()
        .map(|(i, ((file, _), diff_id))| {
            Ok(LayerInfo {
                diff_id,
                size: std::fs::metadata(file)?.len(),
                created_by: history.get(i).cloned().unwrap_or_default(),
            })
        })
        .collect::<Result<_>>()?;
    Ok(Side {
        file: path.display().to_string(),
        layers,
    })
}

pub struct Report {
    pub old: Side,
    pub new: Side,
}

impl Report {
    fn in_old(&self) -> HashSet<&str> {
        self.old.layers.iter().map(|l| l.diff_id.as_str()).collect()
    }

    fn in_new(&self) -> HashSet<&str> {
        self.new.layers.iter().map(|l| l.diff_id.as_str()).collect()
    }

    /// NEW's layers OLD does not have.
    pub fn added(&self) -> Vec<&LayerInfo> {
        let old = self.in_old();
        self.new
            .layers
            .iter()
            .filter(|l| !old.contains(l.diff_id.as_str()))
            .collect()
    }

    /// OLD's layers NEW no longer has.
    pub fn removed(&self) -> Vec<&LayerInfo> {
        let new = self.in_new();
        self.old
            .layers
            .iter()
            .filter(|l| !new.contains(l.diff_id.as_str()))
            .collect()
    }

    pub fn pull_bytes(&self) -> u64 {
        self.added().iter().map(|l| l.size).sum()
    }
}

pub fn json(r: &Report) -> Value {
    let layer = |l: &LayerInfo| json!({"diff_id": l.diff_id, "size": l.size, "created_by": l.created_by});
    let side = |s: &Side| json!({"file": s.file, "layers": s.layers.len(), "size": s.layers.iter().map(|l| l.size).sum::<u64>()});
    let added = r.added();
    json!({
        "schema": JSON_SCHEMA,
        "old": side(&r.old),
        "new": side(&r.new),
        "shared": r.new.layers.len() - added.len(),
        "added": added.iter().map(|l| layer(l)).collect::<Vec<_>>(),
        "removed": r.removed().iter().map(|l| layer(l)).collect::<Vec<_>>(),
        "pull": {"layers": added.len(), "bytes": r.pull_bytes()},
    })
}

pub fn text(r: &Report, paint: Paint) -> String {
    let added = r.added();
    let removed = r.removed();
    let mut out = format!(
        "layers: {} of {} shared with {}\n",
        r.new.layers.len() - added.len(),
        r.new.layers.len(),
        r.old.file
    );
    let short = |d: &str| {
        d.strip_prefix("sha256:")
            .unwrap_or(d)
            .chars()
            .take(12)
            .collect::<String>()
    };
    for l in &added {
        out.push_str(&paint.added(&format!(
            "+ {} {:>9}  {}\n",
            short(&l.diff_id),
            human(l.size),
            l.created_by
        )));
    }
    for l in &removed {
        out.push_str(&paint.removed(&format!(
            "- {} {:>9}  {}\n",
            short(&l.diff_id),
            human(l.size),
            l.created_by
        )));
    }
    out.push_str(&format!(
        "pull: {} in {} {}\n",
        human(r.pull_bytes()),
        added.len(),
        if added.len() == 1 { "layer" } else { "layers" }
    ));
    out
}
