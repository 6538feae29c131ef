use std::fmt;

use sha2::{Digest, Sha256};

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Digest32(pub [u8; 32]);

impl Digest32 {
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
            s.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
        }
        s
    }
}

impl fmt::Debug for Digest32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Display for Digest32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> Digest32 {
    Digest32(Sha256::digest(data).into())
}

/// The bundle id: names the cache entry. Derived from the hashes of the
/// metadata and the index (which holds the hash of every block), so it
/// commits to the whole payload without hashing the payload at launch.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct BundleId(pub Digest32);

impl BundleId {
    pub const DOMAIN: &'static [u8] = b"tote bundle id v1\0";

    pub fn derive(meta_hash: &Digest32, index_hash: &Digest32) -> BundleId {
        let mut h = Sha256::new();
        h.update(Self::DOMAIN);
        h.update(meta_hash.0);
        h.update(index_hash.0);
        BundleId(Digest32(h.finalize().into()))
    }

    pub fn to_hex(&self) -> String {
        self.0.to_hex()
    }
}

impl fmt::Display for BundleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}
