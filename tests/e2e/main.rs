//! End-to-end tests: real Nix closures, real namespaces, real kernels.
//! Run as root (the test script sets the machine up); see README "Tests".

mod support;

mod bad_bundles;
mod cli;
mod determinism;
mod elf;
mod hardening;
mod inputs;
mod launch;
mod mount;
mod nomad;
mod oci;
