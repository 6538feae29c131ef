//! End-to-end tests: real Nix closures, real namespaces, real kernels.
//! Run as root: `sudo scripts/test` installs what they need and runs them
//! (README, "Set up on a fresh Debian 12 machine").

mod support;

mod aarch64;
mod bad_bundles;
mod bases;
mod cache;
mod cli;
mod determinism;
mod elf;
mod hardening;
mod hostile;
mod image;
mod inputs;
mod launch;
mod mount;
mod nomad;
mod oci;
mod relocate;
mod signing;
mod thin;
