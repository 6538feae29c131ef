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
            // Integer formatting: float formatting would add ~15 KB to the stub.
            let us = self.start.elapsed().as_micros();
            let msg = msg();
            eprintln!(
                "tote: debug: {:5}.{:03} ms  {}",
                us / 1000,
                us % 1000,
                tote_format::printable(msg.as_bytes())
            );
        }
    }
}

impl tote_cache::Log for Debug {
    fn on(&self) -> bool {
        self.on
    }
    fn line(&self, msg: &str) {
        self.step(|| msg.to_string());
    }
}
