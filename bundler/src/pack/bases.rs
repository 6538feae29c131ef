//! Step 3b: give blocks a *base* — an earlier block they are compressed
//! against (zstd's reference prefix) — where that block holds similar
//! bytes: `cc1plus` against the `cc1` it shares most of its code with,
//! `libpython3.11-pic.a` against `libpython3.11.a`, Python modules against
//! other Python modules. Independent blocks cannot see past themselves; a
//! solid archive with a long window can. A base recovers much of that
//! difference and keeps every block decodable from itself and one other
//! (never a chain: a block that has a base is never another's base).
//!
//! A block's candidate is the earlier block it shares the most *anchors*
//! with: the 8-byte windows whose hash has its top 6 bits zero (one
//! position in 64, wherever the same bytes recur, whatever their offset),
//! the smallest [`SKETCH`] of them per block. Whether the candidate is worth
//! it is then tried: the block compressed at a fast level with and without
//! it (shared anchors say little about binaries, where relocated addresses
//! break most 8-byte windows but zstd still finds the rest). The choices
//! depend only on the stream, never on the thread count.

use std::collections::HashMap;

use anyhow::Result;
use rayon::prelude::*;
use tote_format::Base;

use super::blocks::Piece;
use super::compress::read_block;
use super::order::Content;

/// Distinct anchor hashes kept per block.
const SKETCH: usize = 1024;
/// Anchors found in more blocks than this say nothing about which block
/// is similar (runs of zeros, padding): not used to find candidates.
const COMMON: usize = 64;
/// The zstd level of the trial that decides whether a candidate base is
/// worth it: the fastest level that uses a base (levels 1 to 5 hardly
/// look into one), about 25 times as fast as level 19.
const TRIAL_LEVEL: i32 = 9;
/// A base is taken when the trial compresses the block this much smaller
/// with it than without: a base costs a decode (and compression time).
const MIN_GAIN: f64 = 0.08;

/// A base for each block, or none.
pub fn choose(blocks: &[Vec<Piece>], unique: &[Content<'_>], block_size: usize) -> Result<Vec<Option<Base>>> {
    let sketches: Vec<Vec<u64>> = blocks
        .par_iter()
        .map(|pieces| Ok(sketch(&read_block(pieces, unique, block_size)?)))
        .collect::<Result<_>>()?;
    let mut holders: HashMap<u64, Vec<u32>> = HashMap::new(); // lookups only, never iterated
    let mut earlier: Vec<HashMap<u32, u32>> = Vec::with_capacity(blocks.len());
    for (i, s) in sketches.iter().enumerate() {
        earlier.push(shared_anchors(s, &holders));
        for &h in s {
            holders.entry(h).or_default().push(i as u32);
        }
    }
    // base_of[i]: the block block i is compressed against. Two rounds, each
    // trying every undecided block's best candidate (in parallel), then
    // settling in stream order: a block that has a base is never a base,
    // so a block whose candidate took a base of its own tries its best
    // remaining candidate in the second round.
    let mut base_of: Vec<Option<usize>> = vec![None; blocks.len()];
    let mut is_base = vec![false; blocks.len()];
    // Blocks whose candidate was taken from them (it took a base itself):
    // they try again.
    let mut retry: Vec<bool> = vec![true; blocks.len()];
    let mut tried: Vec<Option<usize>> = vec![None; blocks.len()];
    let mut plain: Vec<Option<usize>> = vec![None; blocks.len()];
    for _round in 0..2 {
        let picks: Vec<Option<usize>> = (0..blocks.len())
            .map(|i| {
                if !retry[i] || base_of[i].is_some() || is_base[i] {
                    return None;
                }
                best(&earlier[i], |j| base_of[j].is_none() && tried[i] != Some(j))
            })
            .collect();
        let trials: Vec<Option<(usize, usize)>> = picks
            .par_iter()
            .enumerate()
            .map(|(i, p)| match *p {
                Some(j) => trial(&blocks[i], &blocks[j], plain[i], unique, block_size).map(Some),
                None => Ok(None),
            })
            .collect::<Result<_>>()?;
        for (i, (p, t)) in picks.into_iter().zip(trials).enumerate() {
            retry[i] = false;
            let (Some(j), Some((without, with))) = (p, t) else {
                continue;
            };
            (tried[i], plain[i]) = (Some(j), Some(without));
            let gain = 1.0 - with as f64 / without.max(1) as f64;
            if gain < MIN_GAIN || is_base[i] {
                continue;
            }
            if base_of[j].is_none() {
                base_of[i] = Some(j);
                is_base[j] = true;
            } else {
                retry[i] = true;
            }
        }
    }
    let mut starts = Vec::with_capacity(blocks.len());
    let mut at = 0u64;
    for b in blocks {
        starts.push(at);
        at += b.iter().map(|p| p.len as u64).sum::<u64>();
    }
    Ok(base_of
        .into_iter()
        .map(|j| {
            j.map(|j| Base {
                offset: starts[j],
                len: blocks[j].iter().map(|p| p.len as u32).sum(),
            })
        })
        .collect())
}

/// Block `pieces` compressed at the trial level without a base (`plain`,
/// if known already) and with block `base` as its base: both sizes.
fn trial(
    pieces: &[Piece],
    base: &[Piece],
    plain: Option<usize>,
    unique: &[Content<'_>],
    block_size: usize,
) -> Result<(usize, usize)> {
    let raw = read_block(pieces, unique, block_size)?;
    let base = read_block(base, unique, block_size)?;
    let plain = match plain {
        Some(n) => n,
        None => tote_format::encode_block(&raw, TRIAL_LEVEL, None)?.bytes.len(),
    };
    let with = tote_format::encode_block(&raw, TRIAL_LEVEL, Some(&base))?.bytes.len();
    Ok((plain, with))
}

/// How many of the anchors sketched by `s` each earlier block has.
fn shared_anchors(s: &[u64], holders: &HashMap<u64, Vec<u32>>) -> HashMap<u32, u32> {
    let mut shared: HashMap<u32, u32> = HashMap::new(); // lookups only, never iterated
    for h in s {
        if let Some(list) = holders.get(h).filter(|l| l.len() <= COMMON) {
            for &j in list {
                *shared.entry(j).or_default() += 1;
            }
        }
    }
    shared
}

/// Of the blocks `ok` allows, the one sharing the most anchors (the
/// earlier on a tie: determinism).
fn best(shared: &HashMap<u32, u32>, ok: impl Fn(usize) -> bool) -> Option<usize> {
    shared
        .iter()
        .filter(|(j, _)| ok(**j as usize))
        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
        .map(|(j, _)| *j as usize)
}

/// The smallest `SKETCH` distinct anchor hashes of `raw`, ascending. Kept
/// as they are found, so that memory stays at `SKETCH` hashes whatever the
/// block holds (a block of zeros is all anchors, every one the same).
fn sketch(raw: &[u8]) -> Vec<u64> {
    let mut kept = std::collections::BTreeSet::new();
    let anchors = raw
        .windows(8)
        .map(|w| u64::from_le_bytes(w.try_into().expect("8 bytes")).wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .filter(|h| h >> 58 == 0);
    for h in anchors {
        if kept.len() < SKETCH {
            kept.insert(h);
        } else if kept.last().is_some_and(|&max| h < max) && kept.insert(h) {
            kept.pop_last();
        }
    }
    kept.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(seed: u32, n: usize) -> Vec<u8> {
        let mut x = seed.wrapping_mul(2_654_435_761) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                b"abcdefghij klmnop\n"[(x % 18) as usize]
            })
            .collect()
    }

    #[test]
    fn the_block_sharing_most_anchors_is_the_candidate() {
        let a = text(1, 200_000);
        let mut b = a[1000..150_000].to_vec(); // most of a, shifted
        b.extend(text(2, 50_000));
        let c = text(3, 200_000);
        let mut holders: HashMap<u64, Vec<u32>> = HashMap::new();
        for (i, s) in [sketch(&c), sketch(&a)].iter().enumerate() {
            for &h in s {
                holders.entry(h).or_default().push(i as u32);
            }
        }
        let shared = shared_anchors(&sketch(&b), &holders);
        assert_eq!(best(&shared, |_| true), Some(1));
        assert_eq!(best(&shared, |j| j != 1), None, "c shares nothing");
        assert_eq!(
            best(&shared_anchors(&sketch(&text(4, 100_000)), &holders), |_| true),
            None
        );
    }

    /// The sketch is the smallest `SKETCH` distinct anchors, whatever the
    /// bytes: text, zeros (every window an anchor), a short repeated
    /// pattern, and a block with fewer anchors than `SKETCH`.
    #[test]
    fn the_sketch_is_the_smallest_distinct_anchors() {
        let naive = |raw: &[u8]| {
            let mut all: Vec<u64> = raw
                .windows(8)
                .map(|w| u64::from_le_bytes(w.try_into().unwrap()).wrapping_mul(0x9E37_79B9_7F4A_7C15))
                .filter(|h| h >> 58 == 0)
                .collect();
            all.sort_unstable();
            all.dedup();
            all.truncate(SKETCH);
            all
        };
        let pattern: Vec<u8> = (0..300_000).map(|i| (i % 7) as u8).collect();
        for raw in [text(5, 400_000), vec![0; 300_000], pattern, text(6, 20_000), vec![1; 7]] {
            let s = sketch(&raw);
            assert_eq!(s, naive(&raw));
            assert!(s.len() <= SKETCH);
        }
        assert_eq!(sketch(&text(5, 400_000)).len(), SKETCH);
        assert_eq!(sketch(&[0; 100]), [0]);
    }
}
