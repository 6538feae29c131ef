//! The only place that changes the process rather than a file: namespaces,
//! mounts, capabilities, signals, `fork`/`clone`/`exec`/`wait`, memory
//! mappings and scheduling; and the only place with `unsafe`, each block
//! with its SAFETY line. Everything here either succeeds or returns a
//! `Failure` naming the step, the path and the errno. It knows nothing of
//! bundles or launches: callers above say what to do, as data (`Step`) or
//! as a call.
//!
//! Reading and writing files and descriptors (extraction, the FUSE
//! connection's requests) stays with the code that does it, through std and
//! nix's safe wrappers.
//!
//! - `steps`: the steps a launch view is built from, carried out here or in
//!   a helper child whose namespaces this process then joins;
//! - `namespace`: unsharing, id maps, joining, and why a host refuses them;
//! - `mount`: each kind of mount a view needs;
//! - `process`: exec, PID 1's supervision, detached and PID-namespace
//!   children, signals, the C arguments, CPUs;
//! - `memory`: the bundle mapped for mount mode, pages dropped after use;
//! - `arch`: what differs between architectures (system-call numbers,
//!   argument orders, structure layouts);
//! - `link`: C symbols a static musl link takes from the stub instead of
//!   libc.

#![allow(unsafe_code)]

mod arch;
mod link;
mod memory;
mod mount;
mod namespace;
mod process;
mod steps;

pub use memory::{map_file, peak_rss_kib, unmap_pages};
pub use mount::{mount_proc, open_fuse};
pub use namespace::has_cap_sys_admin;
pub use process::{
    block_signals, cpus, end_like, exec, exec_as_init, exec_self_copy, fork_pid_namespace, spawn_detached, supervise,
    Ended,
};
pub use steps::{enter, probe, run, Refused, Step};

pub use nix::sys::signal::SigSet;
