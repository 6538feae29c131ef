//! Where the cache says what it did: the stub's `TOTE_DEBUG` lines, or
//! nothing. Messages are built only when someone listens.

pub trait Log {
    /// Does anyone listen?
    fn on(&self) -> bool;
    fn line(&self, msg: &str);
}

/// Call `msg` and log it, if anyone listens.
pub fn step(log: &dyn Log, msg: impl FnOnce() -> String) {
    if log.on() {
        log.line(&msg());
    }
}

/// Says nothing.
pub struct Quiet;

impl Log for Quiet {
    fn on(&self) -> bool {
        false
    }
    fn line(&self, _: &str) {}
}
