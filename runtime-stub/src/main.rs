//! The tote runtime stub. See DESIGN.md, "Launch sequence".
//!
//! 1. read the trailer and metadata of `/proc/self/exe` (`payload`), and
//!    the caller's `TOTE_*` controls (`controls`);
//! 2. choose the cache root (the `tote-cache` crate);
//! 3. warm: find the complete entry; cold: extract it atomically (`tree`);
//! 4. make the bundle's view: namespaced, relocated where the host refuses
//!    namespaces, or mounted over FUSE (`launch`, `fuse`);
//! 5. exec the entry point in place, or supervise it as PID 1 (`launch`).
//!
//! `sys` makes every system call that changes the process; `error`'s
//! `Failure` is the one `tote:` line a launch can end with.

#![cfg_attr(not(test), no_main)]
// Under `cfg(test)` the C entry point is compiled out, and with it the launch path.
#![cfg_attr(test, allow(dead_code))]

mod controls;
mod debug;
mod error;
mod fuse;
mod info;
mod launch;
mod payload;
#[cfg(feature = "remote")]
mod remote;
mod signed;
mod sys;
mod tree;

use std::convert::Infallible;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use debug::Debug;
use error::{Code, Failure, Result};
use payload::Payload;

// No std runtime set-up: the stub needs none of it, and on glibc it reads
// /proc/self/maps to place a main-thread stack guard, on every launch. The
// arguments come from here, not `std::env::args_os`: std gets those from
// glibc's start-up code, which a musl-linked stub does not have.
#[cfg(not(test))]
#[allow(unsafe_code)] // `no_mangle`: this is the C entry point
#[no_mangle]
extern "C" fn main(argc: std::ffi::c_int, argv: *const *const std::ffi::c_char) -> std::ffi::c_int {
    use std::os::unix::ffi::OsStrExt;
    let args = (0..argc.max(0) as usize)
        .map(|i| {
            // SAFETY: the C runtime passes `argc` valid NUL-terminated strings.
            let arg = unsafe { std::ffi::CStr::from_ptr(*argv.add(i)) };
            std::ffi::OsStr::from_bytes(arg.to_bytes()).to_os_string()
        })
        .collect();
    match run(args) {
        Ok(never) => match never {},
        Err(f) => error::fail(f),
    }
}

fn run(args: Vec<OsString>) -> Result<Infallible> {
    if let Some(code) = tree::trim::job(&args) {
        std::process::exit(code);
    }
    let dbg = Debug::new(controls::flag("TOTE_DEBUG"));
    let exe = std::fs::read_link("/proc/self/exe").unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
    refuse_setuid(&exe)?;
    let payload = Payload::open_self(&exe)?;
    dbg.step(|| format!("bundle {} read, id {}", exe.display(), payload.id()));

    if controls::flag("TOTE_INFO") {
        info::print_info(&payload);
        std::process::exit(0);
    }
    if let Some(dir) = controls::var("TOTE_EXTRACT") {
        signed::enforce(&payload, None, &dbg)?;
        tree::into_dir(&payload, &controls::absolute(PathBuf::from(dir))?, &dbg)?;
        std::process::exit(0);
    }

    let meta = &payload.meta;
    let mode = controls::mode(meta)?;
    let uid = nix::unistd::geteuid().as_raw();
    let gid = nix::unistd::getegid().as_raw();
    let limits = tote_cache::Limits::from_env().map_err(|why| Failure::new(Code::Usage, why))?;
    let env = controls::cache_env()?;
    let root = tote_cache::choose_root(&env, uid, &dbg)?;
    // Before any of the bundle is used.
    signed::enforce(
        &payload,
        (!controls::flag("TOTE_VERIFY")).then_some(root.as_path()),
        &dbg,
    )?;
    let id = payload.id().to_hex();
    let boot = tote_cache::boot_id();

    // The caller's controls, all read before the bundle's environment
    // applies: a bundle cannot set them for its own launch.
    let policy = controls::namespace_policy()?;
    let verify_all = controls::flag("TOTE_VERIFY");
    let argv = launch::argv(meta, args);
    launch::apply_env(meta);

    launch::launch(&launch::Launch {
        payload: &payload,
        root: &root,
        id: &id,
        boot: &boot,
        uid,
        gid,
        argv,
        mode,
        policy,
        verify_all,
        limits,
        dbg: &dbg,
    })
}

/// A set-user-ID bundle would extract and mount with another user's rights
/// on behalf of this one: never.
fn refuse_setuid(exe: &Path) -> Result<()> {
    use nix::unistd::{getegid, geteuid, getgid, getuid};
    let (uid, euid, gid, egid) = (getuid(), geteuid(), getgid(), getegid());
    if uid == euid && gid == egid {
        return Ok(());
    }
    Err(Failure::new(
        Code::Usage,
        format!(
            "{}: refusing to run set-user-ID or set-group-ID (uid {uid}, effective {euid}; gid {gid}, \
             effective {egid}); remove the bits with chmod u-s,g-s",
            exe.display()
        ),
    ))
}
