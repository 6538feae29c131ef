//! Mount mode for a thin bundle: the mount's blocks come from the cache
//! root's block store (`tote_cache::open_blocks`), and a block not there
//! yet is fetched when the program first reads it.
//!
//! - A read of a missing block fetches it and the missing blocks after it,
//!   up to `DEMAND` bytes in one request, and blocks only that read; a
//!   read of a block being fetched waits for it.
//! - Meanwhile `prefetch` (unless `TOTE_PREFETCH=off`) fetches every
//!   other block, in data order, in ranges of up to `PREFETCH_RANGE` bytes
//!   on `PREFETCH_THREADS` connections; it starts a request only once no
//!   read has waited for one for `QUIET` (reads go first: a program's start
//!   reads in bursts, and a prefetch sharing the link would slow each of
//!   its reads). Once it is done the program no longer needs the storage.
//!   One launch per store prefetches (an exclusive `flock` on its `have`
//!   file); another waits for that lock and then fetches what is left.
//! - Every fetched block matched its SHA-256 before it is kept, and the
//!   reader (the FUSE file system) checks every block it gets from the
//!   store again before zstd sees it; a block that fails that check is
//!   fetched once more ([`Frames::reject`]).
//! - A read whose block cannot be fetched (after the client's retries)
//!   fails with EIO, with one line on stderr per block.

use std::borrow::Cow;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use tote_cache::BlockStore;
use tote_format::{BlockRef, Index, Remote};
use tote_net::Client;

use super::common::{check_object, client, fetch_checked, places, Places};
use crate::error::{Code, Failure, Result};
use crate::fuse::{Frames, FsError};

/// Most bytes a read's own request fetches: the block read and the missing
/// blocks after it (the rest of the file, most often). More would make the
/// waiting read wait longer; fewer, wait more often.
const DEMAND: u64 = 1 << 20;
/// Most bytes in one prefetch request, and prefetch requests in flight.
const PREFETCH_RANGE: u64 = 2 << 20;
/// How long reads must have needed no request before a prefetch request
/// starts.
const QUIET: Duration = Duration::from_millis(200);
const PREFETCH_THREADS: usize = 4;

#[derive(Clone, Copy, PartialEq, Eq)]
enum St {
    Missing,
    Fetching,
    Present,
}

struct Progress {
    blocks: Vec<St>,
    /// Reads waiting for a request of their own.
    demand: usize,
    /// When the last of them ended (or the store was opened).
    last_demand: Instant,
    /// The next block prefetch looks at.
    cursor: usize,
    prefetch_failed: bool,
}

/// A thin bundle's blocks for mount mode; see the module's comment. Its
/// clones share everything.
#[derive(Clone)]
pub struct Lazy {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    full_len: u64,
    data_at: u64,
    blocks: Places,
    store: BlockStore,
    state: Mutex<Progress>,
    changed: Condvar,
    /// Bytes fetched by this launch.
    fetched: AtomicU64,
    /// Blocks whose failure was reported (one line each).
    reported: Vec<AtomicBool>,
    store_failed: AtomicBool,
    /// When the prefetch found nothing left to fetch.
    complete: Mutex<Option<Instant>>,
    /// `TOTE_PREFETCH` is not `off`.
    prefetch: bool,
}

/// `TOTE_PREFETCH`: `on` (the default) or `off` (fetch only what the
/// program reads: the least transfer, but the program needs the storage
/// for as long as it runs).
fn prefetch_wanted() -> Result<bool> {
    match std::env::var_os("TOTE_PREFETCH").filter(|v| !v.is_empty()) {
        None => Ok(true),
        Some(v) if v == "on" => Ok(true),
        Some(v) if v == "off" => Ok(false),
        Some(v) => Err(Failure::new(
            Code::Usage,
            format!("TOTE_PREFETCH={}: expected on or off", v.to_string_lossy()),
        )),
    }
}

impl Lazy {
    /// Open (or make) the block store of the bundle with this index under
    /// cache root `root`; if blocks are missing, check the remote object
    /// first (exit 118 if it is unreachable or not this bundle's). A store
    /// holding every block makes no request at all.
    pub fn open(
        remote: &Remote,
        index: &Index,
        root: &std::path::Path,
        boot: &str,
        sections: &tote_cache::Sections<'_>,
    ) -> Result<Lazy> {
        let prefetch = prefetch_wanted()?;
        let id = remote.full.bundle_id().to_hex();
        let data_len = remote.full.meta_offset - remote.full.data_offset;
        let store = tote_cache::open_blocks(root, &id, boot, data_len, index.blocks.len(), sections)
            .map_err(|e| Failure::new(Code::Cache, e.message))?;
        let mut have = vec![0u8; index.blocks.len()];
        store
            .have
            .read_exact_at(&mut have, 0)
            .map_err(|e| Failure::io(Code::Cache, "reading", &store.dir.join("have"), &e))?;
        let blocks: Vec<St> = have
            .iter()
            .map(|&h| if h == 1 { St::Present } else { St::Missing })
            .collect();
        let client = client(remote)?;
        // The object's length (the full bundle's, or more if it was signed).
        let object_len = match blocks.contains(&St::Missing) {
            true => check_object(&client, remote)?,
            false => remote.full_len,
        };
        Ok(Lazy {
            inner: Arc::new(Inner {
                client,
                full_len: object_len,
                data_at: remote.data_offset(),
                blocks: places(index),
                reported: (0..blocks.len()).map(|_| AtomicBool::new(false)).collect(),
                state: Mutex::new(Progress {
                    blocks,
                    demand: 0,
                    last_demand: Instant::now(),
                    cursor: 0,
                    prefetch_failed: false,
                }),
                changed: Condvar::new(),
                fetched: AtomicU64::new(0),
                store,
                store_failed: AtomicBool::new(false),
                complete: Mutex::new(None),
                prefetch,
            }),
        })
    }

    /// Was the store made by this launch (the cache root may want a trim)?
    pub fn created(&self) -> bool {
        self.inner.store.created
    }

    /// Blocks the store holds, of how many.
    pub fn held(&self) -> (usize, usize) {
        let p = self.inner.lock();
        let n = p.blocks.iter().filter(|s| **s == St::Present).count();
        (n, p.blocks.len())
    }

    pub fn url(&self) -> &str {
        &self.inner.client.target.url
    }

    /// Where the fetched blocks are kept.
    pub fn dir(&self) -> &std::path::Path {
        &self.inner.store.dir
    }

    /// Start prefetching every missing block, in the background (unless
    /// `TOTE_PREFETCH=off`).
    pub fn prefetch(&self) {
        if !self.inner.prefetch {
            return;
        }
        let inner = Arc::clone(&self.inner);
        let _ = std::thread::Builder::new().spawn(move || inner.prefetch());
    }

    /// For TOTE_DEBUG: bytes fetched, and when the store became complete.
    pub fn report(&self, since: Instant) -> String {
        let (held, of) = self.held();
        let done = match *self.inner.complete.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(t) => format!(", complete {} ms after the mount", t.duration_since(since).as_millis()),
            None => String::new(),
        };
        format!(
            "fetched {} bytes from {}; the store holds {held} of {of} blocks{done}",
            self.inner.fetched.load(Ordering::Relaxed),
            self.url()
        )
    }
}

impl Frames for Lazy {
    fn frame(&self, number: usize, _r: &BlockRef) -> std::result::Result<Cow<'_, [u8]>, FsError> {
        self.inner.frame(number).map(Cow::Owned)
    }

    fn reject(&self, number: usize) -> bool {
        let s = &self.inner;
        let mut p = s.lock();
        if p.blocks[number] == St::Present {
            p.blocks[number] = St::Missing;
            let _ = s.store.have.write_all_at(&[0], number as u64);
        }
        true
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Progress> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait<'a>(&self, p: MutexGuard<'a, Progress>) -> MutexGuard<'a, Progress> {
        self.changed.wait(p).unwrap_or_else(|e| e.into_inner())
    }

    /// Block `b`'s bytes: from the store, or fetched now.
    fn frame(&self, b: usize) -> std::result::Result<Vec<u8>, FsError> {
        let mut p = self.lock();
        loop {
            match p.blocks[b] {
                St::Present => {
                    drop(p);
                    let (off, clen, _) = self.blocks[b];
                    let mut buf = vec![0u8; clen as usize];
                    return match self.store.data.read_exact_at(&mut buf, off) {
                        Ok(()) => Ok(buf),
                        Err(e) => {
                            self.report(b, &format!("reading {}: {e}", self.store.dir.join("data").display()));
                            Err(FsError::Io)
                        }
                    };
                }
                St::Fetching => p = self.wait(p),
                St::Missing => {
                    if self.on_disk(b) {
                        // Another launch fetched it meanwhile.
                        p.blocks[b] = St::Present;
                        continue;
                    }
                    let mut last = b;
                    let mut bytes = u64::from(self.blocks[b].1);
                    while let Some(&(_, clen, _)) = self.blocks.get(last + 1) {
                        if p.blocks[last + 1] != St::Missing || bytes + u64::from(clen) > DEMAND {
                            break;
                        }
                        last += 1;
                        bytes += u64::from(clen);
                    }
                    p.blocks[b..=last].fill(St::Fetching);
                    p.demand += 1;
                    drop(p);
                    let fetched = self.fetch(b, last);
                    p = self.lock();
                    p.demand -= 1;
                    p.last_demand = Instant::now();
                    let kept = fetched.as_ref().is_ok_and(|(_, kept)| *kept);
                    p.blocks[b..=last].fill(if kept { St::Present } else { St::Missing });
                    self.changed.notify_all();
                    drop(p);
                    return match fetched {
                        Ok((mut bytes, _)) => {
                            // The range starts with block b.
                            bytes.truncate(self.blocks[b].1 as usize);
                            Ok(bytes)
                        }
                        Err(e) => {
                            self.report(b, &e);
                            Err(FsError::Io)
                        }
                    };
                }
            }
        }
    }

    /// Does the store's `have` file say block `b` is there?
    fn on_disk(&self, b: usize) -> bool {
        let mut h = [0u8];
        self.store.have.read_exact_at(&mut h, b as u64).is_ok() && h[0] == 1
    }

    /// Fetch blocks `first..=last` (checked), and keep them in the store:
    /// their bytes, and whether they were kept.
    fn fetch(&self, first: usize, last: usize) -> std::result::Result<(Vec<u8>, bool), String> {
        let bytes = fetch_checked(&self.client, &self.blocks, self.data_at, self.full_len, first, last)?;
        self.fetched.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let kept = self
            .store
            .data
            .write_all_at(&bytes, self.blocks[first].0)
            .and_then(|()| self.store.have.write_all_at(&vec![1u8; last - first + 1], first as u64));
        if let Err(e) = &kept {
            if !self.store_failed.swap(true, Ordering::Relaxed) {
                eprintln!(
                    "tote: keeping fetched blocks in {}: {e}; they are fetched again when needed",
                    self.store.dir.display()
                );
            }
        }
        Ok((bytes, kept.is_ok()))
    }

    /// One line per block that a read could not get.
    fn report(&self, b: usize, why: &str) {
        if !self.reported[b].swap(true, Ordering::Relaxed) {
            eprintln!("tote: block {b}: {why}; reading the files it holds fails with EIO");
        }
    }

    fn prefetch(self: Arc<Self>) {
        // One launch per store prefetches; the others wait their turn and
        // then fetch what is left (if the first one ended before it was done).
        let Ok(f) = File::open(self.store.dir.join("have")) else {
            return;
        };
        let _turn = match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((f, Errno::EWOULDBLOCK)) => match Flock::lock(f, FlockArg::LockExclusive) {
                Ok(l) => l,
                Err(_) => return,
            },
            Err(_) => return,
        };
        let worker = || {
            while let Some((first, last)) = self.next_range() {
                let fetched = self.fetch(first, last);
                let mut p = self.lock();
                let kept = fetched.as_ref().is_ok_and(|(_, kept)| *kept);
                p.blocks[first..=last].fill(if kept { St::Present } else { St::Missing });
                if let Err(e) = &fetched {
                    if !std::mem::replace(&mut p.prefetch_failed, true) {
                        eprintln!("tote: prefetching stopped: {e}; blocks not fetched yet are fetched when read");
                    }
                }
                self.changed.notify_all();
                if fetched.is_err() || !kept {
                    return;
                }
            }
        };
        // This thread and as many more as can be made.
        std::thread::scope(|s| {
            for _ in 1..PREFETCH_THREADS {
                if std::thread::Builder::new().spawn_scoped(s, worker).is_err() {
                    break;
                }
            }
            worker();
        });
        let p = self.lock();
        if !p.blocks.contains(&St::Missing) {
            *self.complete.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        }
    }

    /// The next run of missing blocks to prefetch (marked as being
    /// fetched), once no read waits for a request; None when done.
    fn next_range(&self) -> Option<(usize, usize)> {
        let mut p = self.lock();
        loop {
            if p.prefetch_failed {
                return None;
            }
            let quiet = p.last_demand.elapsed();
            if p.demand > 0 {
                p = self.wait(p);
            } else if quiet < QUIET {
                p = self
                    .changed
                    .wait_timeout(p, QUIET - quiet)
                    .map_or_else(|e| e.into_inner().0, |(g, _)| g);
            } else {
                break;
            }
        }
        let n = p.blocks.len();
        let mut first = p.cursor;
        while first < n && (p.blocks[first] != St::Missing || self.on_disk_fresh(&mut p, first)) {
            first += 1;
        }
        if first == n {
            p.cursor = n;
            return None;
        }
        let mut last = first;
        let mut bytes = u64::from(self.blocks[first].1);
        while last + 1 < n
            && p.blocks[last + 1] == St::Missing
            && bytes + u64::from(self.blocks[last + 1].1) <= PREFETCH_RANGE
        {
            last += 1;
            bytes += u64::from(self.blocks[last].1);
        }
        p.blocks[first..=last].fill(St::Fetching);
        p.cursor = last + 1;
        Some((first, last))
    }

    /// Block `b` is missing here but another launch may have fetched it:
    /// if so, it is present now.
    fn on_disk_fresh(&self, p: &mut Progress, b: usize) -> bool {
        let there = self.on_disk(b);
        if there {
            p.blocks[b] = St::Present;
        }
        there
    }
}
