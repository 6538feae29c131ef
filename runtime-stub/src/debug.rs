//! `TOTE_DEBUG=1`: per-step timings on stderr.

use std::time::Instant;

pub struct Debug {
    on: bool,
    start: Instant,
}

impl Debug {
    pub fn new(on: bool) -> Debug {
        Debug {
            on,
            start: Instant::now(),
        }
    }

    /// Print `msg` with the time since launch.
    pub fn step(&self, msg: impl FnOnce() -> String) {
        if self.on {
            let ms = self.start.elapsed().as_secs_f64() * 1e3;
            eprintln!("tote: debug: {ms:9.3} ms  {}", msg());
        }
    }
}
