//! What tote says while it works. A live progress display on stderr when
//! stderr is a terminal (and never otherwise); one line per finished step
//! with `--verbose`; nothing but errors with `--quiet`.

use std::io::IsTerminal;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::human;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Quiet,
    Normal,
    Verbose,
}

struct Ui {
    level: Level,
    /// Draw progress: stderr is a terminal and not `--quiet`.
    live: bool,
    colour: bool,
    started: Instant,
    /// The phase being drawn, for counters bumped far from it (the scan).
    current: Mutex<Option<ProgressBar>>,
}

static UI: OnceLock<Ui> = OnceLock::new();

fn ui() -> &'static Ui {
    UI.get_or_init(|| make(Level::Normal))
}

fn make(level: Level) -> Ui {
    let tty = std::io::stderr().is_terminal();
    Ui {
        level,
        live: tty && level > Level::Quiet,
        colour: super::style::wanted(tty),
        started: Instant::now(),
        current: Mutex::new(None),
    }
}

/// Set the level once, from the command line.
pub fn init(level: Level) {
    let _ = UI.set(make(level));
}

/// `--quiet`: print results only where they are the point (inspect, ls, diff).
pub fn quiet() -> bool {
    ui().level == Level::Quiet
}

/// With `--verbose`: one line on stderr, `tote: 1.234s message`.
pub fn step(message: impl FnOnce() -> String) {
    let ui = ui();
    if ui.level == Level::Verbose {
        eprintln!("tote: {:>7.3}s {}", ui.started.elapsed().as_secs_f64(), message());
    }
}

/// The cache crate's log lines, as `--verbose` steps.
pub struct Verbose;

impl tote_cache::Log for Verbose {
    fn on(&self) -> bool {
        ui().level == Level::Verbose
    }
    fn line(&self, msg: &str) {
        step(|| msg.to_string());
    }
}

/// What a phase counts.
#[derive(Debug, Clone, Copy)]
pub enum Counting {
    /// Files, total unknown (a spinner).
    Files,
    /// Bytes out of a known total (a bar with rate and ETA).
    Bytes(u64),
}

/// One phase of the work, drawn while it runs.
pub struct Phase {
    bar: ProgressBar,
    started: Instant,
}

impl Phase {
    pub fn start(label: &str, counting: Counting) -> Phase {
        let ui = ui();
        let bar = if ui.live {
            let (bar, template) = match counting {
                Counting::Files => (
                    ProgressBar::new_spinner(),
                    format!("{{spinner}} {label:<11} {{human_pos}} files  {{elapsed}}"),
                ),
                Counting::Bytes(total) => (
                    ProgressBar::new(total),
                    // Fits 80 columns.
                    format!(
                        "{{spinner}} {label:<11} [{{bar:20{}}}] {{binary_bytes}}/{{binary_total_bytes}} \
                         {{binary_bytes_per_sec}} ETA {{eta}}",
                        if ui.colour { ".cyan/blue" } else { "" }
                    ),
                ),
            };
            bar.set_draw_target(ProgressDrawTarget::stderr_with_hz(10));
            bar.set_style(
                ProgressStyle::with_template(&template)
                    .expect("a valid template")
                    .progress_chars("=> "),
            );
            bar.tick(); // drawn at once, however short the phase
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        } else {
            ProgressBar::hidden()
        };
        *ui.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(bar.clone());
        Phase {
            bar,
            started: Instant::now(),
        }
    }

    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
    }

    /// Clear the display; returns the time the phase took.
    pub fn done(self) -> Duration {
        self.bar.finish_and_clear();
        *ui().current.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.started.elapsed()
    }
}

/// Count `n` for the phase being drawn, if any.
pub fn count(n: u64) {
    if let Some(bar) = ui().current.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
        bar.inc(n);
    }
}

/// `in 1.20 s (2.5 MiB/s)` for `bytes` in `took`.
pub fn rate(bytes: u64, took: Duration) -> String {
    let s = took.as_secs_f64().max(1e-6);
    format!("in {s:.2} s ({}/s)", human((bytes as f64 / s) as u64))
}
