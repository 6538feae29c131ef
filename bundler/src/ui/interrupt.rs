//! Ctrl-C (SIGINT), SIGTERM and SIGHUP while a command writes staging
//! directories: they are removed before the process dies of the signal.
//! [`watch`] blocks the signals in the calling thread, before any other
//! thread exists (threads inherit the mask), and a thread of its own waits
//! for them; it then removes what was registered and re-raises the signal
//! unblocked, so the process ends as it would have (after any handler,
//! such as the one removing a named temporary output file).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::sys::signal::{raise, SigSet, Signal};

static REGISTERED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Start watching; call first thing, before any thread is started.
pub fn watch() {
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    if set.thread_block().is_err() {
        return;
    }
    std::thread::spawn(move || {
        let Ok(sig) = set.wait() else { return };
        for dir in std::mem::take(&mut *REGISTERED.lock().unwrap_or_else(|p| p.into_inner())) {
            let _ = std::fs::remove_dir_all(dir);
        }
        let _ = set.thread_unblock();
        let _ = raise(sig);
        std::process::exit(128 + sig as i32);
    });
}

/// Remove `dir` (and all below it) if the process is interrupted.
pub fn remove_on_interrupt(dir: &Path) {
    REGISTERED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(dir.to_path_buf());
}

/// `dir` is no longer to be removed.
pub fn forget(dir: &Path) {
    REGISTERED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|d| d != dir);
}
