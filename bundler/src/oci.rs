//! OCI images (placeholder until the image input lands).

use std::path::Path;

use anyhow::{bail, Result};

use crate::input::Input;

pub fn looks_like_archive(_path: &Path) -> Result<bool> {
    Ok(false)
}

pub fn resolve(path: &Path, _requested: Option<&Path>) -> Result<Input> {
    bail!("{}: images are not supported yet", path.display())
}
