//! A thin bundle's blocks fetched for an extraction.
//!
//! An extraction names the blocks it will decode, in the order it will
//! decode them; they are fetched in ranges of adjacent blocks (up to
//! `COALESCE` bytes) by up to `IN_FLIGHT` connections, each block checked
//! against its SHA-256 in the index before it is kept, into an unnamed
//! file next to the tree being written. Decoding starts as soon as the
//! first block is in: a reader waits for its own block only. Nothing
//! unverified is ever handed out, and the file vanishes with the launch.

use std::collections::VecDeque;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use tote_format::{BlockRef, Index, Remote};
use tote_net::Client;

use super::common::{check_object, client, fetch_checked, places, Places};
use crate::error::{Code, Failure, Result};

/// Most bytes in one request: adjacent blocks are fetched together up to
/// this (AWS's guidance for range GETs: 8–16 MiB).
const COALESCE: u64 = 8 << 20;
/// Most requests in flight.
const IN_FLIGHT: usize = 8;

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Missing,
    Queued,
    Ready,
}

struct Shared {
    client: Client,
    full_len: u64,
    data_at: u64,
    store: File,
    blocks: Places,
    state: Mutex<Progress>,
    changed: Condvar,
}

struct Progress {
    blocks: Vec<State>,
    queue: VecDeque<(usize, usize)>,
    failed: Option<String>,
    stop: bool,
    /// Bytes fetched so far (for TOTE_DEBUG).
    fetched: u64,
}

/// Fetching, for one extraction; stops and joins its threads when dropped.
pub struct Fetch {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl Fetch {
    /// Check that the object at the remote location is the full bundle this
    /// thin file names, then start fetching `order` (block numbers, in the
    /// order they will be read) into an unnamed file in `dir`.
    pub fn start(remote: &Remote, index: &Index, order: &[usize], dir: &Path) -> Result<Fetch> {
        let client = client(remote)?;
        // The object's length (the full bundle's, or more if it was signed).
        let object_len = match order.is_empty() {
            true => remote.full_len,
            false => check_object(&client, remote)?,
        };
        let store = unnamed_file(dir)?;
        let blocks = places(index);
        let mut states = vec![State::Missing; blocks.len()];
        let mut queue = VecDeque::new();
        let mut seen = vec![false; blocks.len()];
        let mut run: Option<(usize, usize, u64)> = None;
        for &b in order {
            if std::mem::replace(&mut seen[b], true) {
                continue;
            }
            states[b] = State::Queued;
            let len = u64::from(blocks[b].1);
            run = match run {
                Some((first, last, bytes)) if b == last + 1 && bytes + len <= COALESCE => Some((first, b, bytes + len)),
                Some((first, last, _)) => {
                    queue.push_back((first, last));
                    Some((b, b, len))
                }
                None => Some((b, b, len)),
            };
        }
        if let Some((first, last, _)) = run {
            queue.push_back((first, last));
        }
        let n = queue.len().min(IN_FLIGHT);
        let shared = Arc::new(Shared {
            client,
            full_len: object_len,
            data_at: remote.data_offset(),
            store,
            blocks,
            state: Mutex::new(Progress {
                blocks: states,
                queue,
                failed: None,
                stop: false,
                fetched: 0,
            }),
            changed: Condvar::new(),
        });
        // As many as can be made: with none (a host that refuses threads),
        // the reads fetch the queue themselves.
        let workers = (0..n)
            .map_while(|_| {
                let s = Arc::clone(&shared);
                std::thread::Builder::new().spawn(move || s.work()).ok()
            })
            .collect();
        Ok(Fetch { shared, workers })
    }

    /// Block `b`'s stored bytes into `buf`, once fetched and checked.
    pub fn read(&self, block: &BlockRef, buf: &mut Vec<u8>) -> Result<()> {
        let s = &self.shared;
        let b = s
            .blocks
            .binary_search_by_key(&block.offset, |x| x.0)
            .map_err(|_| Failure::new(Code::Bundle, "a block the index does not list"))?;
        let mut p = s.lock();
        loop {
            if let Some(f) = &p.failed {
                return Err(Failure::new(Code::Remote, f.clone()));
            }
            match p.blocks[b] {
                State::Ready => break,
                State::Queued if self.workers.is_empty() => {
                    // No thread could be made: fetch the queue here, in
                    // order (the order of the reads), until b is in.
                    let (first, last) = p.queue.pop_front().unwrap_or((b, b));
                    drop(p);
                    s.fetch_range(first, last);
                    p = s.lock();
                    continue;
                }
                State::Queued => {}
                State::Missing => {
                    // Not announced (so no worker will fetch it): fetch it
                    // here, now.
                    p.blocks[b] = State::Queued;
                    drop(p);
                    s.fetch_range(b, b);
                    p = s.lock();
                    continue;
                }
            }
            p = s.changed.wait(p).unwrap_or_else(|e| e.into_inner());
        }
        drop(p);
        buf.resize(block.clen as usize, 0);
        s.store
            .read_exact_at(buf, block.offset)
            .map_err(|e| Failure::new(Code::Cache, format!("reading fetched blocks: {e}")))
    }

    /// Bytes fetched so far.
    pub fn fetched(&self) -> u64 {
        self.shared.lock().fetched
    }
}

impl Drop for Fetch {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.changed.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn work(&self) {
        loop {
            let next = {
                let mut p = self.lock();
                if p.stop || p.failed.is_some() {
                    return;
                }
                p.queue.pop_front()
            };
            match next {
                Some((first, last)) => self.fetch_range(first, last),
                None => return,
            }
        }
    }

    /// Fetch blocks `first..=last` in one request, check each, keep them.
    fn fetch_range(&self, first: usize, last: usize) {
        let start = self.blocks[first].0;
        let result = fetch_checked(&self.client, &self.blocks, self.data_at, self.full_len, first, last);
        let mut p = self.lock();
        match result.and_then(|bytes| {
            self.store
                .write_all_at(&bytes, start)
                .map_err(|e| format!("keeping fetched blocks: {e}"))
                .map(|()| bytes.len())
        }) {
            Ok(n) => {
                p.fetched += n as u64;
                for s in &mut p.blocks[first..=last] {
                    *s = State::Ready;
                }
            }
            Err(e) => {
                p.failed.get_or_insert(e);
            }
        }
        self.changed.notify_all();
    }
}

/// An unnamed file in `dir` (`O_TMPFILE`), else one created and unlinked.
fn unnamed_file(dir: &Path) -> Result<File> {
    let fail = |e| Failure::sys(Code::Cache, "creating a file for fetched blocks in", dir, e);
    match nix::fcntl::open(
        dir,
        OFlag::O_TMPFILE | OFlag::O_RDWR | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    ) {
        Ok(fd) => Ok(File::from(fd)),
        Err(_) => {
            let p = dir.join(format!(".tote-fetch-{}", std::process::id()));
            let fd: OwnedFd = nix::fcntl::open(
                &p,
                OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
                Mode::from_bits_truncate(0o600),
            )
            .map_err(fail)?;
            let _ = std::fs::remove_file(&p);
            Ok(File::from(fd))
        }
    }
}
