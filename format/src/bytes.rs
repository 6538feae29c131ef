//! Comparing paths eight bytes at a time. Index paths share long prefixes
//! (`nix/store/<hash>-name/lib/python3.11/...`), and decoding an index
//! compares each path with its neighbours several times; musl's `memcmp`,
//! which the stub links, walks one byte at a time, and made those
//! comparisons 2 ms of a large index's 9 ms decode.

use std::cmp::Ordering;

/// `a.cmp(b)` for byte strings (lexicographic, a prefix first).
#[inline]
pub fn cmp_bytes(a: &[u8], b: &[u8]) -> Ordering {
    let n = a.len().min(b.len());
    let (mut ca, mut cb) = (a[..n].chunks_exact(8), b[..n].chunks_exact(8));
    for (x, y) in (&mut ca).zip(&mut cb) {
        // Big-endian: the first differing byte decides, as in memcmp.
        let (x, y) = (word(x), word(y));
        if x != y {
            return x.cmp(&y);
        }
    }
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        if x != y {
            return x.cmp(y);
        }
    }
    a.len().cmp(&b.len())
}

/// `a == b` for byte strings.
#[inline]
pub fn eq_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && cmp_bytes(a, b) == Ordering::Equal
}

#[inline(always)]
fn word(c: &[u8]) -> u64 {
    u64::from_be_bytes(c.try_into().unwrap_or([0; 8]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agrees_with_slice_ordering() {
        let words: Vec<Vec<u8>> = [
            &b""[..],
            b"a",
            b"ab",
            b"abcdefgh",
            b"abcdefgh/",
            b"abcdefgh/i",
            b"abcdefgi",
            b"abcdefghabcdefgh",
            b"abcdefghabcdefgg",
            b"nix/store/0123456789abcdef0123456789abcdef-python/lib",
            b"nix/store/0123456789abcdef0123456789abcdef-python/lib/x",
            b"nix/store/0123456789abcdef0123456789abcdef-python-lib",
            b"\xff\x00\x01",
            b"\x00\xff",
        ]
        .iter()
        .map(|w| w.to_vec())
        .collect();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut random: Vec<Vec<u8>> = (0..300)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Short alphabets and shared prefixes: many near-equal pairs.
                (0..(x % 24)).map(|i| b"ab/"[((x >> (i * 2)) % 3) as usize]).collect()
            })
            .collect();
        random.extend(words);
        for a in &random {
            for b in &random {
                assert_eq!(cmp_bytes(a, b), a.cmp(b), "{a:?} {b:?}");
                assert_eq!(eq_bytes(a, b), a == b, "{a:?} {b:?}");
            }
        }
    }
}
