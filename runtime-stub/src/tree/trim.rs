//! The cache root trimmed to its limits after a cold start, in a process
//! of its own that the program never sees; and that process's side: a copy
//! of the stub started as `tote: trim ROOT MAX_BYTES|off MAX_AGE|off`.

use std::path::Path;

use crate::debug::Debug;
use crate::sys;

/// Trim `root` to `limits`, in a process of its own that the program never
/// sees (none with both limits `off`). That process runs a copy of the stub
/// (the first `stub_len` bytes of this file) from memory
/// (`sys::exec_self_copy`): it must not keep the bundle file busy, which
/// would make writing a new version over it fail (`ETXTBSY`) while the trim
/// runs, and the launch goes on only once that copy runs. Where it cannot
/// run, the forked process trims itself.
pub fn later(root: &Path, limits: tote_cache::Limits, stub_len: u64, dbg: &Debug) {
    if limits == tote_cache::Limits::none() {
        return;
    }
    let root = root.to_path_buf();
    let argv = trim_argv(&root, &limits);
    let spawned = sys::spawn_detached(move |started| {
        let _ = sys::exec_self_copy(stub_len, &argv);
        // The launch waits no longer; the bundle stays busy while this
        // process trims.
        drop(started);
        let _ = tote_cache::trim(&root, &limits, false, &tote_cache::Quiet);
    });
    dbg.step(|| {
        if spawned {
            "cold start: trimming the cache root in the background".to_string()
        } else {
            "cold start: could not start the trim".to_string()
        }
    });
}

/// `argv[0]` of the stub copy that trims a root.
const TRIM: &str = "tote: trim";

/// `tote: trim ROOT MAX_BYTES|off MAX_AGE_SECONDS|off`.
fn trim_argv(root: &Path, limits: &tote_cache::Limits) -> Vec<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    let num = |n: Option<u64>| n.map_or_else(|| "off".to_string(), |n| n.to_string());
    [
        TRIM.as_bytes().to_vec(),
        root.as_os_str().as_bytes().to_vec(),
        num(limits.max_size).into_bytes(),
        num(limits.max_age.map(|d| d.as_secs())).into_bytes(),
    ]
    .into_iter()
    .filter_map(|a| std::ffi::CString::new(a).ok())
    .collect()
}

/// If this process is a stub copy started to trim (`trim_argv`): trim, and
/// return the exit code.
pub fn job(args: &[std::ffi::OsString]) -> Option<i32> {
    let [first, root, size, age] = args else { return None };
    if first != TRIM {
        return None;
    }
    let size = tote_cache::parse_size(size.to_str()?).ok()?;
    let age = match age.to_str()? {
        "off" => None,
        secs => Some(std::time::Duration::from_secs(secs.parse().ok()?)),
    };
    let limits = tote_cache::Limits {
        max_size: size,
        max_age: age,
        min_free: None,
    };
    Some(
        match tote_cache::trim(Path::new(root), &limits, false, &tote_cache::Quiet) {
            Ok(_) => 0,
            Err(_) => 1,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trim_job_reads_back_its_arguments() {
        let limits = tote_cache::Limits {
            max_size: Some(200 << 20),
            max_age: None,
            min_free: None,
        };
        let argv = trim_argv(Path::new("/c/r"), &limits);
        let args: Vec<std::ffi::OsString> = argv
            .iter()
            .map(|c| std::ffi::OsString::from(c.to_str().unwrap()))
            .collect();
        assert_eq!(args, ["tote: trim", "/c/r", "209715200", "off"]);
        // Not a trim job: a normal launch's arguments.
        assert_eq!(job(&["./app".into(), "a".into(), "b".into(), "c".into()]), None);
        assert_eq!(job(&["tote: trim".into()]), None);
    }
}
