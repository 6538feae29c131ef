//! Store references: where a Nix store path is named inside a file or a
//! symlink target, `<store dir>/` + 32 nix-base32 characters + `-` (for
//! example `/nix/store/0123…xyz-hello`). A relocated launch replaces the
//! store directory of exactly these with a path of the same length, so no
//! byte offset moves. The writer records where they are in the data stream
//! (version 4 index); readers rewrite symlink targets with [`find`].

/// Nix's base-32 alphabet (no e, o, t, u).
pub const NIX_BASE32: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";
/// Length of a store path's hash part.
pub const HASH_LEN: usize = 32;

/// Is `c` a nix-base32 character?
pub fn is_base32(c: u8) -> bool {
    matches!(c, b'0'..=b'9' | b'a'..=b'z') && !matches!(c, b'e' | b'o' | b't' | b'u')
}

/// Bytes a reference takes from its start to the `-` after the hash.
pub fn ref_len(store_dir: &[u8]) -> usize {
    store_dir.len() + 1 + HASH_LEN + 1
}

/// Is there a store reference at `pos` of `hay`?
pub fn at(hay: &[u8], pos: usize, store_dir: &[u8]) -> bool {
    let n = store_dir.len();
    let Some(r) = hay.get(pos..pos + ref_len(store_dir)) else {
        return false;
    };
    &r[..n] == store_dir
        && r[n] == b'/'
        && r[n + 1..n + 1 + HASH_LEN].iter().all(|&c| is_base32(c))
        && r[r.len() - 1] == b'-'
}

/// The start of every store reference in `hay`, ascending. (References
/// cannot overlap: a store directory starts with `/`, which no hash holds.)
pub fn find(hay: &[u8], store_dir: &[u8]) -> Vec<usize> {
    let Some(&first) = store_dir.first() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i + ref_len(store_dir) <= hay.len() {
        match hay[i..].iter().position(|&c| c == first) {
            None => break,
            Some(k) => {
                i += k;
                if at(hay, i, store_dir) {
                    out.push(i);
                    i += ref_len(store_dir);
                } else {
                    i += 1;
                }
            }
        }
    }
    out
}

/// Replace the store directory of every reference in `hay` with `to`, a
/// path of the same length.
pub fn rewrite(hay: &mut [u8], store_dir: &[u8], to: &[u8]) {
    debug_assert_eq!(store_dir.len(), to.len());
    for pos in find(hay, store_dir) {
        hay[pos..pos + to.len()].copy_from_slice(to);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "0123456789abcdfghijklmnpqrsvwxyz";

    #[test]
    fn the_alphabet_is_nix_base32() {
        for c in 0..=255u8 {
            assert_eq!(is_base32(c), NIX_BASE32.contains(&c), "{c}");
        }
    }

    #[test]
    fn references_are_found_exactly() {
        let s = b"/nix/store";
        let text = format!("#!/nix/store/{H}-bash/bin/sh\n/nix/store/{H}-x:/nix/store/short-x /nix/store/{H}");
        assert_eq!(find(text.as_bytes(), s), [2, 58]);
        // A hash with an 'e', a missing '-', a prefix of a longer directory.
        let bad = format!(
            "/nix/store/{}-x /nix/store/{H}x /x/nix/storex/{H}-y",
            H.replace('0', "e")
        );
        assert!(find(bad.as_bytes(), s).is_empty());
        // At the very end, and one byte short of it.
        let end = format!("/nix/store/{H}-");
        assert_eq!(find(end.as_bytes(), s), [0]);
        assert!(find(&end.as_bytes()[..end.len() - 1], s).is_empty());
        // Another store directory.
        let other = format!("/gnu/store/{H}-guile");
        assert_eq!(find(other.as_bytes(), b"/gnu/store"), [0]);
        assert!(find(other.as_bytes(), s).is_empty());
    }

    #[test]
    fn rewriting_keeps_every_offset() {
        let text = format!("a /nix/store/{H}-p/bin and /nix/store/{H}-q");
        let mut b = text.clone().into_bytes();
        rewrite(&mut b, b"/nix/store", b"/tmp/abcde");
        assert_eq!(b.len(), text.len());
        assert_eq!(
            String::from_utf8(b).unwrap(),
            format!("a /tmp/abcde/{H}-p/bin and /tmp/abcde/{H}-q")
        );
    }
}
