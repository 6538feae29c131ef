//! Ctrl-C (SIGINT), SIGTERM and SIGHUP while a command writes staging
//! directories or a named temporary output: they are removed before the
//! process dies of the signal.
//! [`watch`] blocks the signals in the calling thread, before any other
//! thread exists (threads inherit the mask), and a thread of its own waits
//! for them; it then removes what was registered and re-raises the signal
//! unblocked, so the process ends as it would have.
//!
//! Other threads go on working while the watcher removes, so a staged
//! tree is only ever created below a registered root that already exists
//! ([`create_dir_all_below`]): once the root is gone every later create
//! fails, and the watcher removes again until it stays gone. A command
//! that ends while the watcher works, in error or not, waits for the
//! signal instead ([`exit_if_interrupted`]), so an interrupted command
//! always dies of its signal.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use nix::sys::signal::{raise, SigSet, Signal};

static REGISTERED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

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
        INTERRUPTED.store(true, Ordering::SeqCst);
        for path in std::mem::take(&mut *REGISTERED.lock().unwrap_or_else(|p| p.into_inner())) {
            remove_for_good(&path);
        }
        let _ = set.thread_unblock();
        let _ = raise(sig);
        std::process::exit(128 + sig as i32);
    });
}

/// Remove a registered file; or a directory, for good, while other threads
/// may still be writing into it. The directory is first renamed away, so
/// that a create by path fails from then on (nothing recreates `path`
/// itself: [`create_dir_all_below`]); a create already under way may still
/// land in the renamed tree, so its removal is retried until it is gone.
fn remove_for_good(path: &Path) {
    if std::fs::symlink_metadata(path).is_ok_and(|m| !m.is_dir()) {
        let _ = std::fs::remove_file(path);
        return;
    }
    let mut gone = path.as_os_str().to_owned();
    gone.push(".removing");
    let gone = PathBuf::from(gone);
    let target = match std::fs::rename(path, &gone) {
        Ok(()) => gone.as_path(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return,
        Err(_) => path,
    };
    for _ in 0..1000 {
        match std::fs::remove_dir_all(target) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => std::thread::sleep(Duration::from_millis(1)),
            _ => return,
        }
    }
}

/// Called where a command ends: if a signal came, wait for the watcher to
/// finish removing and end the process with that signal.
pub fn exit_if_interrupted() {
    if INTERRUPTED.load(Ordering::SeqCst) {
        loop {
            std::thread::park();
        }
    }
}

/// Remove `path` (a file, or a directory and all below it) if the process
/// is interrupted.
pub fn remove_on_interrupt(path: &Path) {
    REGISTERED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(path.to_path_buf());
}

/// `path` is no longer to be removed.
pub fn forget(path: &Path) {
    REGISTERED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|d| d != path);
}

/// `create_dir_all(dir)` for a `dir` below `root`, that never creates
/// `root` or anything above it: if `root` was removed (by an interrupt),
/// this fails rather than bringing it back.
pub fn create_dir_all_below(root: &Path, dir: &Path) -> io::Result<()> {
    let Ok(rel) = dir.strip_prefix(root) else {
        return Err(io::Error::other(format!(
            "{} is not below {}",
            dir.display(),
            root.display()
        )));
    };
    let mut path = root.to_path_buf();
    for c in rel.components() {
        path.push(c);
        match std::fs::create_dir(&path) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => {}
            r => r?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creating_below_a_removed_root_fails_and_leaves_it_gone() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("staging");
        std::fs::create_dir(&root).unwrap();
        create_dir_all_below(&root, &root.join("a/b/c")).unwrap();
        create_dir_all_below(&root, &root.join("a/b")).unwrap();
        assert!(root.join("a/b/c").is_dir());
        std::fs::write(root.join("f"), "").unwrap();
        assert!(create_dir_all_below(&root, &root.join("f/g")).is_err());
        std::fs::remove_dir_all(&root).unwrap();
        assert!(create_dir_all_below(&root, &root.join("a/b")).is_err());
        assert!(!root.exists());
        assert!(create_dir_all_below(&root, &t.path().join("elsewhere")).is_err());
    }

    #[test]
    fn a_tree_still_being_written_is_removed_for_good() {
        for _ in 0..20 {
            let t = tempfile::tempdir().unwrap();
            let root = t.path().join("staging");
            create_dir_all_below(t.path(), &root.join("blobs")).unwrap();
            let writer = {
                let blobs = root.join("blobs");
                std::thread::spawn(move || {
                    // As the layer writers do: files by path, until the root is gone.
                    let mut n = 0u32;
                    while std::fs::write(blobs.join(n.to_string()), [0u8; 64]).is_ok() {
                        n += 1;
                    }
                    n
                })
            };
            while std::fs::read_dir(root.join("blobs")).map_or(0, |d| d.count()) < 100 {
                std::thread::yield_now();
            }
            remove_for_good(&root);
            assert_eq!(
                std::fs::read_dir(t.path()).unwrap().count(),
                0,
                "a file written during the removal kept the tree"
            );
            assert!(writer.join().unwrap() >= 100);
        }
    }
}
