//! Jobs numbered `0..n` on several threads, stopping at the first error:
//! the shape of both extraction (a job per block) and verification (a job
//! per file). Where no thread can be created (a seccomp filter that refuses
//! `clone3` with EPERM), the calling thread does every job.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Run `job(i, &mut state)` for every `i` in `0..n` on up to `threads`
/// threads, each with its own `state` from `init`. After the first error
/// no new job starts, and that error is returned.
pub fn for_each<S, E: Send>(
    n: usize,
    threads: usize,
    init: impl Fn() -> S + Sync,
    job: impl Fn(usize, &mut S) -> Result<(), E> + Sync,
) -> Result<(), E> {
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let first: Mutex<Option<E>> = Mutex::new(None);
    let worker = || {
        let mut state = init();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= n || stop.load(Ordering::Relaxed) {
                return;
            }
            if let Err(e) = job(i, &mut state) {
                stop.store(true, Ordering::Relaxed);
                first.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
                return;
            }
        }
    };
    std::thread::scope(|s| {
        for _ in 1..threads.min(n).max(1) {
            if std::thread::Builder::new().spawn_scoped(s, worker).is_err() {
                break; // the jobs are shared: the threads there are do them all
            }
        }
        worker();
    });
    match first.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_job_runs_once_and_the_first_error_stops_the_rest() {
        let done = Mutex::new(Vec::new());
        for_each(
            100,
            4,
            || (),
            |i, _| {
                done.lock().unwrap().push(i);
                Ok::<(), ()>(())
            },
        )
        .unwrap();
        let mut d = done.into_inner().unwrap();
        d.sort();
        assert_eq!(d, (0..100).collect::<Vec<_>>());

        let ran = AtomicUsize::new(0);
        let r = for_each(
            1000,
            1,
            || (),
            |i, _| {
                ran.fetch_add(1, Ordering::Relaxed);
                if i == 10 {
                    Err(i)
                } else {
                    Ok(())
                }
            },
        );
        assert_eq!(r, Err(10));
        assert_eq!(ran.load(Ordering::Relaxed), 11);
    }
}
