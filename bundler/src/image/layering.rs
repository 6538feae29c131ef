//! Which paths share a layer, decided as data (names and references in,
//! groups out), so that the rule is tested on its own.
//!
//! Store paths: one layer per path, ordered by popularity (how many other
//! paths of the closure reach it), most popular first, then by name. A
//! path's dependencies are always more popular than it is (everything that
//! reaches it reaches them too, and it reaches them itself), so the order
//! puts dependencies first. Above `max_layers`, the `max_layers - 1` most
//! popular paths keep a layer each and the rest share the top layer, as
//! nixpkgs' `buildLayeredImage` does: the paths most images share are the
//! ones worth a layer of their own.

use std::collections::BTreeSet;

/// The layers of a closure of `names.len()` store paths, bottom first, as
/// indexes into `names`; `refs[i]` holds the paths that path `i` refers to.
pub fn store_layers(names: &[&[u8]], refs: &[BTreeSet<usize>], max_layers: usize) -> Vec<Vec<usize>> {
    let n = names.len();
    let mut popularity = vec![0usize; n];
    for from in 0..n {
        let mut seen = vec![false; n];
        seen[from] = true;
        let mut todo = vec![from];
        while let Some(x) = todo.pop() {
            for &y in &refs[x] {
                if !seen[y] {
                    seen[y] = true;
                    popularity[y] += 1;
                    todo.push(y);
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| popularity[b].cmp(&popularity[a]).then_with(|| names[a].cmp(names[b])));
    merge_above(order, max_layers, |a, b| names[a].cmp(names[b]))
}

/// One layer per item in `order`; above `max_layers`, the items from the
/// `max_layers`-th on share the top layer (sorted by `by`).
pub fn merge_above(
    order: Vec<usize>,
    max_layers: usize,
    by: impl Fn(usize, usize) -> std::cmp::Ordering,
) -> Vec<Vec<usize>> {
    let max_layers = max_layers.max(1);
    if order.len() <= max_layers {
        return order.into_iter().map(|i| vec![i]).collect();
    }
    let mut layers: Vec<Vec<usize>> = order[..max_layers - 1].iter().map(|&i| vec![i]).collect();
    let mut top = order[max_layers - 1..].to_vec();
    top.sort_by(|&a, &b| by(a, b));
    layers.push(top);
    layers
}

#[cfg(test)]
mod tests {
    use super::*;

    /// app -> python -> {libc, zlib}; app -> libc; tool -> libc (6 paths
    /// with `extra`, referenced by python).
    fn closure() -> (Vec<&'static [u8]>, Vec<BTreeSet<usize>>) {
        let names: Vec<&[u8]> = vec![b"a-app", b"b-python", b"c-libc", b"d-zlib", b"e-tool", b"f-extra"];
        let refs = vec![
            BTreeSet::from([1, 2, 4]),
            BTreeSet::from([2, 3, 5]),
            BTreeSet::new(),
            BTreeSet::from([2]),
            BTreeSet::from([2]),
            BTreeSet::new(),
        ];
        (names, refs)
    }

    #[test]
    fn one_layer_per_path_with_dependencies_first() {
        let (names, refs) = closure();
        let layers = store_layers(&names, &refs, 100);
        let order: Vec<usize> = layers.iter().map(|l| l[0]).collect();
        assert!(layers.iter().all(|l| l.len() == 1));
        // libc is reached by 4 paths, zlib and extra by 2, python and tool by 1.
        assert_eq!(order, [2, 3, 5, 1, 4, 0]);
        for (pos, &i) in order.iter().enumerate() {
            for &dep in &refs[i] {
                let dep_pos = order.iter().position(|&x| x == dep).unwrap();
                assert!(dep_pos < pos, "{} before its dependency {}", i, dep);
            }
        }
    }

    #[test]
    fn above_the_limit_the_least_popular_share_the_top_layer() {
        let (names, refs) = closure();
        let layers = store_layers(&names, &refs, 3);
        assert_eq!(layers, vec![vec![2], vec![3], vec![0, 1, 4, 5]]);
        let all: BTreeSet<usize> = layers.iter().flatten().copied().collect();
        assert_eq!(all.len(), names.len());
        assert_eq!(store_layers(&names, &refs, 1), vec![vec![0, 1, 2, 3, 4, 5]]);
    }

    #[test]
    fn a_new_version_of_the_app_moves_no_other_path() {
        let (mut names, refs) = closure();
        let before = store_layers(&names, &refs, 100);
        names[0] = b"z-app-2";
        assert_eq!(store_layers(&names, &refs, 100), before);
    }
}
