//! Inputs: what the user named, turned into a tree of files and launch
//! metadata ([`Input`]), one model for every kind (see `tote_format::Meta`).
//!
//! `detect` tells the kinds apart and calls the kind's module: `nix` (store
//! paths, with `refscan` where Nix's database cannot say), `flake`, `dir`,
//! `elf`, `oci`. The kinds share `tree` (walking files into sorted items),
//! `paths` (cleaning and kernel-like symlink walks) and `entrypoint`; none
//! of them depends on `detect`.

mod arch;
mod detect;
mod dir;
mod elf;
mod entrypoint;
mod flake;
mod model;
mod nix;
mod oci;
mod paths;
pub mod refscan;
mod tree;

pub use detect::{detect, is_bundle, resolve, Kind, Request};
pub use model::{Input, Launch};
pub use oci::{decompressed, open_image, Image, DEFAULT_PATH};
pub use tree::{Item, ItemKind, Tree};
