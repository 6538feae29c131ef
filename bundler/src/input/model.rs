//! What every input kind produces and the rest of the bundler sees: a tree
//! of files and the launch metadata (one model for every kind of input; see
//! `tote_format::Meta`).

use tote_format::{Arch, Mode, MountKind, MountSpec, Relocation};

use super::tree::Tree;

pub struct Input {
    pub tree: Tree,
    pub launch: Launch,
    /// What was bundled, for the summary line: `closure: 3 store paths`.
    pub summary: String,
    /// Staging directories the tree's files live in until packing is done.
    pub staging: Option<tempfile::TempDir>,
}

/// What the bundle runs and where its files appear (the metadata's launch
/// fields; see `tote_format::Meta`).
#[derive(Debug, Default, Clone)]
pub struct Launch {
    pub name: String,
    pub entrypoint: Vec<u8>,
    pub args: Vec<Vec<u8>>,
    pub cmd: Vec<Vec<u8>>,
    pub env: Vec<Vec<u8>>,
    pub workdir: Vec<u8>,
    pub root: Vec<u8>,
    pub mounts: Vec<MountSpec>,
    pub mode: Mode,
    /// How a launch can do without namespaces; for a store bundle the
    /// unrewritable files are found while packing.
    pub relocation: Relocation,
    /// What the programs run on (chosen from the tree: `super::arch`).
    pub arch: Arch,
}

impl Launch {
    /// The store directory whose references packing records: a store
    /// bundle's one layer mount.
    pub fn store_dir(&self) -> Option<&[u8]> {
        match (&self.relocation, self.mounts.as_slice()) {
            (Relocation::Store { .. }, [m]) if m.kind == MountKind::Layer => Some(&m.target),
            _ => None,
        }
    }
}
