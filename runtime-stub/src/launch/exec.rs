//! The program: its arguments and environment from the bundle and the
//! caller, and its exec, in place or as PID 1's child, holding the pin of
//! the entry it runs from.

use std::convert::Infallible;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use tote_format::Meta;

use crate::debug::Debug;
use crate::error::Result;
use crate::sys;
use crate::tree::Found;

/// The program's argv: the entry point, the bundle's fixed arguments, then
/// the caller's arguments (`args` without its argv[0]), or the bundle's
/// default ones if the caller gave none.
pub fn argv(meta: &Meta, args: Vec<OsString>) -> Vec<Vec<u8>> {
    let mut argv: Vec<Vec<u8>> = vec![meta.entrypoint.clone()];
    argv.extend(meta.args.iter().cloned());
    let caller: Vec<Vec<u8>> = args.into_iter().skip(1).map(OsString::into_vec).collect();
    argv.extend(if caller.is_empty() { meta.cmd.clone() } else { caller });
    argv
}

/// The bundle's environment variables, set in this process (the program
/// inherits them).
pub fn apply_env(meta: &Meta) {
    for kv in &meta.env {
        // Validated by the format: a non-empty name, then `=`.
        let eq = kv.iter().position(|&c| c == b'=').unwrap_or(0);
        std::env::set_var(OsStr::from_bytes(&kv[..eq]), OsStr::from_bytes(&kv[eq + 1..]));
    }
}

/// `tree` + the absolute bundle path `path`.
pub fn in_tree(tree: &Path, path: &[u8]) -> Vec<u8> {
    let mut p = tree.as_os_str().as_bytes().to_vec();
    p.extend_from_slice(path);
    p
}

/// Exec the program in place, or as PID 1 run and supervise it. The
/// program inherits the entry's pin.
pub fn exec(program: Vec<u8>, argv: &[Vec<u8>], found: Found, dbg: &Debug) -> Result<Infallible> {
    let fd = found.pin.keep_across_exec();
    dbg.step(|| format!("entry pinned (descriptor {fd})"));
    dbg.step(|| format!("exec {}", String::from_utf8_lossy(&program)));
    if std::process::id() == 1 {
        sys::exec_as_init(&program, argv, dbg, None);
    }
    Err(sys::exec(&program, argv))
}
