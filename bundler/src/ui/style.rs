//! Colour, only where a person reads it: on a terminal, and never with
//! `NO_COLOR` set to anything but the empty string (no-color.org) or with
//! `TERM=dumb`.

use std::io::IsTerminal;

/// Whether to paint text for one output stream.
#[derive(Debug, Clone, Copy)]
pub struct Paint(bool);

impl Paint {
    pub fn stdout() -> Paint {
        Paint(wanted(std::io::stdout().is_terminal()))
    }

    pub fn stderr() -> Paint {
        Paint(wanted(std::io::stderr().is_terminal()))
    }

    fn sgr(self, code: &str, text: &str) -> String {
        if self.0 {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    pub fn bold(self, text: &str) -> String {
        self.sgr("1", text)
    }

    pub fn added(self, text: &str) -> String {
        self.sgr("32", text)
    }

    pub fn removed(self, text: &str) -> String {
        self.sgr("31", text)
    }

    pub fn changed(self, text: &str) -> String {
        self.sgr("33", text)
    }

    pub fn error(self, text: &str) -> String {
        self.sgr("1;31", text)
    }
}

/// Colour for a stream that is (`tty`) or is not a terminal.
pub fn wanted(tty: bool) -> bool {
    tty && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::env::var_os("TERM").is_none_or(|t| t != "dumb")
}
