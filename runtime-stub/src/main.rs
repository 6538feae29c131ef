//! The tote runtime stub. See DESIGN.md, "Launch sequence".
//!
//! 1. read the trailer and metadata of `/proc/self/exe` (here);
//! 2. choose the cache root (`cache`);
//! 3. warm: find the complete entry; cold: extract it atomically (`entry`);
//! 4. plan and enter the namespaces the bundle needs, or launch without
//!    them where the host refuses them (`launch`, `relocate`);
//! 5. exec the entry point in place (or supervise it when PID 1).

#![cfg_attr(not(test), no_main)]
// Under `cfg(test)` the C entry point is compiled out, and with it the launch path.
#![cfg_attr(test, allow(dead_code))]

mod debug;
mod entry;
mod error;
mod extract;
mod fs;
mod fuse;
mod launch;
mod mount;
mod payload;
mod plan;
mod relocate;
mod sys;

use std::convert::Infallible;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use debug::Debug;
use error::{Code, Failure, Result};
use payload::Payload;
use tote_format::{Mode, Relocation};

// No std runtime set-up: the stub needs none of it, and on glibc it reads
// /proc/self/maps to place a main-thread stack guard, on every launch. The
// arguments come from here, not `std::env::args_os`: std gets those from
// glibc's start-up code, which a musl-linked stub does not have.
#[cfg(not(test))]
#[allow(unsafe_code)] // `no_mangle`: this is the C entry point
#[no_mangle]
extern "C" fn main(argc: std::ffi::c_int, argv: *const *const std::ffi::c_char) -> std::ffi::c_int {
    let args = (0..argc.max(0) as usize)
        .map(|i| {
            // SAFETY: the C runtime passes `argc` valid NUL-terminated strings.
            let arg = unsafe { std::ffi::CStr::from_ptr(*argv.add(i)) };
            OsStr::from_bytes(arg.to_bytes()).to_os_string()
        })
        .collect();
    match run(args) {
        Ok(never) => match never {},
        Err(f) => fail(f),
    }
}

/// Linked against musl's `libc.a` (see bundler/build.rs), the stub still
/// carries libgcc's unwinder, which asks glibc's loader for the unwind
/// tables of an address. There is no loader in a static musl binary, and
/// with `panic = "abort"` nothing unwinds: "not found".
#[cfg(all(tote_musl, not(test)))]
#[allow(unsafe_code)] // `no_mangle`: a C symbol the unwinder links to
#[no_mangle]
extern "C" fn _dl_find_object(_pc: *mut std::ffi::c_void, _result: *mut std::ffi::c_void) -> std::ffi::c_int {
    -1
}

/// Print the one-line failure and exit with its code.
pub fn fail(f: Failure) -> ! {
    eprintln!("tote: {f}");
    std::process::exit(f.code as i32)
}

/// `1`, `yes`, `true`: on. Unset, empty or `0`: off.
fn flag(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty() && v != "0")
}

fn var(name: &str) -> Option<OsString> {
    std::env::var_os(name).filter(|v| !v.is_empty())
}

fn absolute(p: PathBuf) -> Result<PathBuf> {
    if p.is_absolute() {
        return Ok(p);
    }
    let cwd = std::env::current_dir()
        .map_err(|e| Failure::io(Code::Usage, "reading the working directory", Path::new("."), &e))?;
    Ok(cwd.join(p))
}

fn run(args: Vec<OsString>) -> Result<Infallible> {
    if let Some(code) = launch::trim_job(&args) {
        std::process::exit(code);
    }
    let dbg = Debug::new(flag("TOTE_DEBUG"));
    let exe = std::fs::read_link("/proc/self/exe").unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
    refuse_setuid(&exe)?;
    let payload = Payload::open(&exe)?;
    dbg.step(|| format!("bundle {} read, id {}", exe.display(), payload.id()));

    if flag("TOTE_INFO") {
        print_info(&payload);
        std::process::exit(0);
    }
    if let Some(dir) = var("TOTE_EXTRACT") {
        extract_to(&payload, &absolute(PathBuf::from(dir))?, &dbg)?;
        std::process::exit(0);
    }

    let meta = &payload.meta;
    let mode = launch_mode(meta)?;
    let uid = nix::unistd::geteuid().as_raw();
    let gid = nix::unistd::getegid().as_raw();
    let limits = tote_cache::Limits::from_env().map_err(|why| Failure::new(Code::Usage, why))?;
    let env = tote_cache::Env {
        cache_dir: var("TOTE_CACHE_DIR").map(PathBuf::from).map(absolute).transpose()?,
        xdg_cache_home: var("XDG_CACHE_HOME"),
        home: var("HOME"),
        tmpdir: var("TMPDIR"),
    };
    let root = tote_cache::choose_root(&env, uid, &dbg)?;
    let id = payload.id().to_hex();
    let boot = tote_cache::boot_id();

    let mut argv: Vec<Vec<u8>> = vec![meta.entrypoint.clone()];
    argv.extend(meta.args.iter().cloned());
    let caller: Vec<Vec<u8>> = args.into_iter().skip(1).map(OsString::into_vec).collect();
    argv.extend(if caller.is_empty() { meta.cmd.clone() } else { caller });
    for kv in &meta.env {
        // Validated by the format: a non-empty name, then `=`.
        let eq = kv.iter().position(|&c| c == b'=').unwrap_or(0);
        std::env::set_var(OsStr::from_bytes(&kv[..eq]), OsStr::from_bytes(&kv[eq + 1..]));
    }

    launch::launch(&launch::Launch {
        payload: &payload,
        root: &root,
        id: &id,
        boot: &boot,
        uid,
        gid,
        argv,
        mode,
        policy: namespace_policy()?,
        verify_all: flag("TOTE_VERIFY"),
        limits,
        dbg: &dbg,
    })
}

/// `TOTE_MODE` if set, else the bundle's mode.
fn launch_mode(meta: &tote_format::Meta) -> Result<Mode> {
    match var("TOTE_MODE") {
        None => Ok(meta.mode),
        Some(v) => v.to_str().and_then(Mode::parse).ok_or_else(|| {
            Failure::new(
                Code::Usage,
                format!("TOTE_MODE={}: expected extract, mount or auto", v.to_string_lossy()),
            )
        }),
    }
}

/// `TOTE_NAMESPACE`: `auto` unless set.
fn namespace_policy() -> Result<launch::Policy> {
    match var("TOTE_NAMESPACE") {
        None => Ok(launch::Policy::Auto),
        Some(v) => v.to_str().and_then(launch::Policy::parse).ok_or_else(|| {
            Failure::new(
                Code::Usage,
                format!("TOTE_NAMESPACE={}: expected never, auto or always", v.to_string_lossy()),
            )
        }),
    }
}

fn working_dir() -> Result<PathBuf> {
    std::env::current_dir()
        .map_err(|e| Failure::io(Code::Namespace, "reading the working directory", Path::new("."), &e))
}

/// `tree` + the absolute bundle path `path`.
fn in_tree(tree: &Path, path: &[u8]) -> Vec<u8> {
    let mut p = tree.as_os_str().as_bytes().to_vec();
    p.extend_from_slice(path);
    p
}

/// CPUs this process may run on. (Not `available_parallelism`: its cgroup
/// parsing costs 5 KB of stub and a handful of file reads per launch, and
/// decoding threads are capped by memory anyway.)
fn threads() -> usize {
    nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).map_or(1, |set| {
        (0..nix::sched::CpuSet::count())
            .filter(|&i| set.is_set(i).unwrap_or(false))
            .count()
            .max(1)
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

/// `TOTE_EXTRACT=DIR`: the bundle's tree into DIR (new, or an empty directory).
fn extract_to(payload: &Payload, dir: &Path, dbg: &Debug) -> Result<()> {
    let usage = |m: &str| Failure::new(Code::Usage, format!("TOTE_EXTRACT={}: {m}", dir.display()));
    if let Ok(mut rd) = std::fs::read_dir(dir) {
        if rd.next().is_some() {
            return Err(usage("the directory is not empty"));
        }
    } else if dir.symlink_metadata().is_ok() {
        return Err(usage("exists and is not a directory"));
    }
    let parent = dir
        .parent()
        .filter(|p| p.is_dir())
        .ok_or_else(|| usage("its parent directory does not exist"))?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let staging = tote_cache::Staging::new(parent, &name)?;
    let index = payload.index()?;
    extract::extract(
        &index,
        payload,
        &staging.dir,
        tote_cache::Modes::USER,
        threads(),
        None,
        None,
    )
    .map_err(|f| entry::name_bundle(f, &payload.path))?;
    if !staging.commit(dir)? {
        return Err(usage("the directory was filled by someone else meanwhile"));
    }
    dbg.step(|| format!("extracted {} entries into {}", index.entries.len(), dir.display()));
    Ok(())
}

fn print_info(p: &Payload) {
    let m = &p.meta;
    let t = &p.layout.trailer;
    let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    println!("name: {}", m.name);
    println!("bundle id: {}", p.id());
    println!("format version: {}", p.layout.version);
    println!("creator: {}", m.creator);
    println!("entry point: {}", lossy(&m.entrypoint));
    for a in &m.args {
        println!("argument: {}", lossy(a));
    }
    for a in &m.cmd {
        println!("default argument: {}", lossy(a));
    }
    for e in &m.env {
        println!("environment: {}", lossy(e));
    }
    if !m.root.is_empty() {
        println!("root: {}", lossy(&m.root));
    }
    if !m.workdir.is_empty() {
        println!("working directory: {}", lossy(&m.workdir));
    }
    for mt in &m.mounts {
        println!(
            "mount ({}): {} -> {}",
            mt.kind.name(),
            lossy(&mt.source),
            lossy(&mt.target)
        );
    }
    println!("mode: {}", m.mode.name());
    match &m.relocation {
        Relocation::None => println!("relocation: none"),
        Relocation::Store { unrewritable } => {
            println!("relocation: store ({} files unrewritable)", unrewritable.len());
            for f in unrewritable {
                println!("unrewritable: /{}", lossy(f));
            }
        }
        Relocation::Loader { interpreter, .. } => println!("relocation: loader {}", lossy(interpreter)),
    }
    println!("entries: {} ({} files)", m.stats.entries, m.stats.files);
    println!(
        "content size: {} bytes ({} after deduplication)",
        m.stats.total_size, m.stats.unique_size
    );
    println!(
        "payload: {} bytes in {} blocks",
        t.meta_offset - t.data_offset,
        m.stats.blocks
    );
    println!("stub: {} bytes", t.data_offset);
    println!("file: {} bytes", p.layout.file_len);
}
