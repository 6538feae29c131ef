//! A bundle's names and strings made fit for a terminal: they come from
//! whoever wrote the bundle, and a terminal acts on what it is sent.

use std::borrow::Cow;
use std::fmt::Write;

/// Characters written escaped: controls (C0, DEL, C1: cursor movement,
/// colours, titles, erasing a line, a newline that forges another) and the
/// bidirectional-text controls, which reorder what is shown ("Trojan
/// Source").
fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `bytes` as text for a person to read: UTF-8 as it is, hidden characters
/// written `\u{1b}`, bytes that are not UTF-8 written `\xff`. (JSON output
/// keeps strings exact instead: its own escapes are unambiguous.)
pub fn printable(bytes: &[u8]) -> Cow<'_, str> {
    if let Ok(s) = std::str::from_utf8(bytes) {
        if !s.chars().any(hidden) {
            return Cow::Borrowed(s);
        }
    }
    let mut out = String::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if hidden(c) {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_terminal_would_act_on_is_written_out() {
        assert!(matches!(printable(b"nix/store/abc-hello/bin/hello"), Cow::Borrowed(_)));
        assert_eq!(
            printable("caf\u{e9} \u{2192} \u{4e2d}".as_bytes()),
            "caf\u{e9} \u{2192} \u{4e2d}"
        );
        assert_eq!(printable(b"\x1b]0;owned\x07title"), "\\u{1b}]0;owned\\u{7}title");
        assert_eq!(printable(b"a\nb\rc\td\x7f"), "a\\u{a}b\\u{d}c\\u{9}d\\u{7f}");
        assert_eq!(printable("\u{9b}2J".as_bytes()), "\\u{9b}2J");
        assert_eq!(printable("x\u{202e}gnp.exe".as_bytes()), "x\\u{202e}gnp.exe");
        assert_eq!(printable(b"\xff\xfeok"), "\\xff\\xfeok");
    }
}
