//! A store path's closure without Nix's database: scan file contents and
//! symlink targets for the hash parts of the other store paths present in
//! the store directory, as Nix does after a build, and follow what is found.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rayon::prelude::*;

/// Nix's base-32 alphabet (no e, o, t, u).
const ALPHABET: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";
const HASH_LEN: usize = 32;

/// `<32 base-32 chars>-<name>`: the hash part of a store path's file name.
pub fn hash_part(name: &[u8]) -> Option<[u8; HASH_LEN]> {
    if name.len() < HASH_LEN + 2 || name[HASH_LEN] != b'-' || !name[..HASH_LEN].iter().all(|c| ALPHABET.contains(c)) {
        return None;
    }
    name[..HASH_LEN].try_into().ok()
}

/// Every store path reachable from `root` by references, sorted.
pub fn closure(store_dir: &Path, root: &Path) -> Result<Vec<PathBuf>> {
    let mut candidates: HashMap<[u8; HASH_LEN], PathBuf> = HashMap::new(); // lookups only, never iterated
    for e in fs::read_dir(store_dir).with_context(|| format!("listing {}", store_dir.display()))? {
        let e = e.with_context(|| format!("listing {}", store_dir.display()))?;
        let name = e.file_name();
        if let Some(h) = hash_part(name.as_bytes()) {
            candidates.insert(h, e.path());
        }
    }
    let mut done: BTreeSet<PathBuf> = BTreeSet::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(p) = todo.pop() {
        if !done.insert(p.clone()) {
            continue;
        }
        for h in references(&p, &candidates)? {
            let found = &candidates[&h];
            if !done.contains(found) {
                todo.push(found.clone());
            }
        }
    }
    Ok(done.into_iter().collect()) // determinism: sorted
}

/// Hash parts of candidates that occur anywhere in the files under `path`.
fn references(path: &Path, candidates: &HashMap<[u8; HASH_LEN], PathBuf>) -> Result<BTreeSet<[u8; HASH_LEN]>> {
    let mut files = Vec::new();
    let mut found = BTreeSet::new();
    collect(path, &mut files, &mut |bytes| search(bytes, candidates, &mut found))?;
    let from_files: Vec<BTreeSet<[u8; HASH_LEN]>> = files
        .par_iter()
        .map(|f: &PathBuf| {
            let mut s = BTreeSet::new();
            search_file(f, candidates, &mut s).with_context(|| format!("reading {}", f.display()))?;
            Ok(s)
        })
        .collect::<Result<_>>()?;
    found.extend(from_files.into_iter().flatten());
    Ok(found)
}

/// Regular files under `path` into `files`; symlink targets straight to `scan`.
fn collect(path: &Path, files: &mut Vec<PathBuf>, scan: &mut dyn FnMut(&[u8])) -> Result<()> {
    let m = fs::symlink_metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if m.is_dir() {
        for e in fs::read_dir(path).with_context(|| format!("listing {}", path.display()))? {
            collect(
                &e.with_context(|| format!("listing {}", path.display()))?.path(),
                files,
                scan,
            )?;
        }
    } else if m.file_type().is_symlink() {
        let t = fs::read_link(path).with_context(|| format!("reading symlink {}", path.display()))?;
        scan(t.as_os_str().as_bytes());
    } else if m.is_file() {
        files.push(path.to_path_buf());
    }
    Ok(())
}

/// `search` over the file at `path`, read 1 MiB at a time (a hash that
/// spans two reads is found: each read keeps the last bytes of the one
/// before); an empty file is not opened.
pub fn search_file<V>(
    path: &Path,
    candidates: &HashMap<[u8; HASH_LEN], V>,
    found: &mut BTreeSet<[u8; HASH_LEN]>,
) -> std::io::Result<()> {
    use std::io::Read;
    if fs::symlink_metadata(path)?.len() == 0 {
        return Ok(());
    }
    let mut f = fs::File::open(path)?;
    let mut buf = vec![0u8; (1 << 20) + HASH_LEN];
    let mut kept = 0;
    loop {
        let n = f.read(&mut buf[kept..])?;
        if n == 0 {
            return Ok(());
        }
        let end = kept + n;
        search(&buf[..end], candidates, found);
        // The last HASH_LEN - 1 bytes may start a hash the next read ends.
        let keep = end.min(HASH_LEN - 1);
        buf.copy_within(end - keep..end, 0);
        kept = keep;
    }
}

/// Every 32-character run of base-32 characters that names a candidate.
pub fn search<V>(bytes: &[u8], candidates: &HashMap<[u8; HASH_LEN], V>, found: &mut BTreeSet<[u8; HASH_LEN]>) {
    let mut is32 = [false; 256];
    for &c in ALPHABET {
        is32[c as usize] = true;
    }
    let mut i = 0;
    while i + HASH_LEN <= bytes.len() {
        // Find the last non-base-32 byte in the window; skip past it.
        match bytes[i..i + HASH_LEN].iter().rposition(|&c| !is32[c as usize]) {
            Some(j) => i += j + 1,
            None => {
                let window: &[u8; HASH_LEN] = bytes[i..i + HASH_LEN].try_into().unwrap_or(&[0; HASH_LEN]);
                if candidates.contains_key(window) {
                    found.insert(*window);
                }
                i += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_hashes_inside_longer_runs_and_at_the_edges() {
        let a = *b"0123456789abcdfghijklmnpqrsvwxyz";
        let b = *b"zyxwvsrqpnmlkjihgfdcba9876543210";
        let candidates = HashMap::from([(a, PathBuf::from("/a")), (b, PathBuf::from("/b"))]);
        let mut found = BTreeSet::new();
        let text = [&b"/nix/store/"[..], &a, b"-x\0", b"zz", &b].concat();
        search(&text, &candidates, &mut found);
        assert_eq!(found, BTreeSet::from([a, b]));
        let mut none = BTreeSet::new();
        search(&a[..31], &candidates, &mut none);
        search(b"0123456789abcdefghijklmnpqrsvwxyz", &candidates, &mut none); // has an 'e'
        assert!(none.is_empty());
    }

    #[test]
    fn hash_parts_need_the_alphabet_and_a_name() {
        assert!(hash_part(b"0123456789abcdfghijklmnpqrsvwxyz-hello").is_some());
        assert!(hash_part(b"0123456789abcdfghijklmnpqrsvwxyz-").is_none());
        assert!(hash_part(b"0123456789abcdefghijklmnpqrsvwxy-hello").is_none());
        assert!(hash_part(b".links").is_none());
    }
}
