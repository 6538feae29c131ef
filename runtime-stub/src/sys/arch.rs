//! The kernel interface the stub spells out itself instead of taking it from
//! nix: system-call numbers for `syscall(2)`, argument orders, structure
//! layouts and constants. What differs between architectures is here and
//! nowhere else.
//!
//! The numbers come from the `libc` crate, which has each architecture's
//! own (x86-64: clone 56, capget 125, ioprio_set 251; aarch64's generic
//! table: 220, 90, 30; close_range is 436 on both). Structure layouts that
//! pass through the C library (stat, dirent64, sigaction, sigset_t,
//! siginfo_t, cpu_set_t) come from the gnu target's bindings; musl lays
//! them out the same way on x86-64 and aarch64 (tests/fixtures/layout.c,
//! checked by a test), and another architecture must be checked the same
//! way before its stub links musl.

use nix::libc::{c_int, c_long, c_ulong};

pub use nix::libc::{SYS_capget as CAPGET, SYS_close_range as CLOSE_RANGE, SYS_ioprio_set as IOPRIO_SET};

/// `clone(2)` used as `fork` with `flags`: no new stack, no thread ids, no
/// TLS. x86-64 takes (flags, stack, parent_tid, child_tid, tls), aarch64
/// (flags, stack, parent_tid, tls, child_tid): with all but the flags zero,
/// one call fits both.
///
/// # Safety
///
/// As `fork`: the child runs on a copy of the caller's stack, so the caller
/// must be single-threaded, or the child must only run code that is safe
/// after a fork.
pub unsafe fn clone_as_fork(flags: c_ulong) -> c_long {
    // SAFETY: the caller's, above; the arguments are plain integers.
    unsafe { nix::libc::syscall(nix::libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) }
}

/// `capget(2)`'s `struct __user_cap_header_struct` (the same on every
/// architecture).
#[repr(C)]
pub struct CapHeader {
    pub version: u32,
    pub pid: i32,
}

/// `struct __user_cap_data_struct`; version 3 takes two (64 capability bits).
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct CapData {
    pub effective: u32,
    pub permitted: u32,
    pub inheritable: u32,
}

/// `_LINUX_CAPABILITY_VERSION_3`.
pub const CAP_VERSION_3: u32 = 0x2008_0522;
pub const CAP_SYS_ADMIN: u32 = 21;

/// `ioprio_set(IOPRIO_WHO_PROCESS, 0, …)`, class best-effort at level 7.
pub const IOPRIO_WHO_PROCESS: c_int = 1;
pub const IOPRIO_BEST_EFFORT_LOWEST: c_int = (2 << 13) | 7;

/// The smallest page size (x86-64's only one; aarch64 kernels use 4, 16
/// or 64 KiB): what the bundle's mapping is rounded to. A larger page only
/// leaves a little more of the mapping's tail resident.
pub const MIN_PAGE: usize = 4096;
