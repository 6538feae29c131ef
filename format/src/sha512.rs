//! SHA-512 (FIPS 180-4) in its plain, rolled form: the hash inside every
//! Ed25519 verification (`sign::Signature::verifies`).
//!
//! Not `sha2::Sha512`: sha2 builds SHA-512 unrolled and with an AVX2
//! variant, about 18 KB of the runtime stub for a hash it runs on a few
//! hundred bytes per signature; this is under 2 KB and hashes those bytes
//! in microseconds. sha2 cannot be told to build SHA-512 compact alone
//! (its `sha2_backend_soft` setting also rolls up SHA-256's fallback,
//! which hashes every block on CPUs without SHA-NI). Pinned against
//! sha2's SHA-512 in the tests below.

use digest::consts::U64;
use digest::{FixedOutput, HashMarker, Output, OutputSizeUser, Update};

/// SHA-512's round constants.
const K: [u64; 80] = [
    0x428a2f98d728ae22,
    0x7137449123ef65cd,
    0xb5c0fbcfec4d3b2f,
    0xe9b5dba58189dbbc,
    0x3956c25bf348b538,
    0x59f111f1b605d019,
    0x923f82a4af194f9b,
    0xab1c5ed5da6d8118,
    0xd807aa98a3030242,
    0x12835b0145706fbe,
    0x243185be4ee4b28c,
    0x550c7dc3d5ffb4e2,
    0x72be5d74f27b896f,
    0x80deb1fe3b1696b1,
    0x9bdc06a725c71235,
    0xc19bf174cf692694,
    0xe49b69c19ef14ad2,
    0xefbe4786384f25e3,
    0x0fc19dc68b8cd5b5,
    0x240ca1cc77ac9c65,
    0x2de92c6f592b0275,
    0x4a7484aa6ea6e483,
    0x5cb0a9dcbd41fbd4,
    0x76f988da831153b5,
    0x983e5152ee66dfab,
    0xa831c66d2db43210,
    0xb00327c898fb213f,
    0xbf597fc7beef0ee4,
    0xc6e00bf33da88fc2,
    0xd5a79147930aa725,
    0x06ca6351e003826f,
    0x142929670a0e6e70,
    0x27b70a8546d22ffc,
    0x2e1b21385c26c926,
    0x4d2c6dfc5ac42aed,
    0x53380d139d95b3df,
    0x650a73548baf63de,
    0x766a0abb3c77b2a8,
    0x81c2c92e47edaee6,
    0x92722c851482353b,
    0xa2bfe8a14cf10364,
    0xa81a664bbc423001,
    0xc24b8b70d0f89791,
    0xc76c51a30654be30,
    0xd192e819d6ef5218,
    0xd69906245565a910,
    0xf40e35855771202a,
    0x106aa07032bbd1b8,
    0x19a4c116b8d2d0c8,
    0x1e376c085141ab53,
    0x2748774cdf8eeb99,
    0x34b0bcb5e19b48a8,
    0x391c0cb3c5c95a63,
    0x4ed8aa4ae3418acb,
    0x5b9cca4f7763e373,
    0x682e6ff3d6b2b8a3,
    0x748f82ee5defb2fc,
    0x78a5636f43172f60,
    0x84c87814a1f0ab72,
    0x8cc702081a6439ec,
    0x90befffa23631e28,
    0xa4506cebde82bde9,
    0xbef9a3f7b2c67915,
    0xc67178f2e372532b,
    0xca273eceea26619c,
    0xd186b8c721c0c207,
    0xeada7dd6cde0eb1e,
    0xf57d4f7fee6ed178,
    0x06f067aa72176fba,
    0x0a637dc5a2c898a6,
    0x113f9804bef90dae,
    0x1b710b35131c471b,
    0x28db77f523047d84,
    0x32caab7b40c72493,
    0x3c9ebe0a15c9bebc,
    0x431d67c49c100d4c,
    0x4cc5d4becb3e42b6,
    0x597f299cfc657e2a,
    0x5fcb6fab3ad6faec,
    0x6c44198c4a475817,
];

/// The initial hash value.
const H0: [u64; 8] = [
    0x6a09e667f3bcc908,
    0xbb67ae8584caa73b,
    0x3c6ef372fe94f82b,
    0xa54ff53a5f1d36f1,
    0x510e527fade682d1,
    0x9b05688c2b3e6c1f,
    0x1f83d9abfb41bd6b,
    0x5be0cd19137e2179,
];

const BLOCK: usize = 128;

/// A SHA-512 hasher, usable wherever a `Digest` with 64-byte output is.
#[derive(Clone)]
pub struct Sha512 {
    state: [u64; 8],
    /// The bytes of a block not yet full.
    pending: [u8; BLOCK],
    pending_len: usize,
    /// Bytes hashed so far.
    len: u128,
}

impl Default for Sha512 {
    fn default() -> Sha512 {
        Sha512 {
            state: H0,
            pending: [0; BLOCK],
            pending_len: 0,
            len: 0,
        }
    }
}

fn compress(state: &mut [u64; 8], block: &[u8; BLOCK]) {
    let mut w = [0u64; 80];
    for (i, chunk) in block.chunks_exact(8).enumerate() {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        w[i] = u64::from_be_bytes(word);
    }
    for i in 16..80 {
        let s0 = w[i - 15].rotate_right(1) ^ w[i - 15].rotate_right(8) ^ (w[i - 15] >> 7);
        let s1 = w[i - 2].rotate_right(19) ^ w[i - 2].rotate_right(61) ^ (w[i - 2] >> 6);
        w[i] = w[i - 16].wrapping_add(s0).wrapping_add(w[i - 7]).wrapping_add(s1);
    }
    let mut v = *state;
    for (k, w) in K.iter().zip(w) {
        let [a, b, c, d, e, f, g, h] = v;
        let s1 = e.rotate_right(14) ^ e.rotate_right(18) ^ e.rotate_right(41);
        let ch = (e & f) ^ (!e & g);
        let t1 = h.wrapping_add(s1).wrapping_add(ch).wrapping_add(*k).wrapping_add(w);
        let s0 = a.rotate_right(28) ^ a.rotate_right(34) ^ a.rotate_right(39);
        let maj = (a & b) ^ (a & c) ^ (b & c);
        v = [
            t1.wrapping_add(s0.wrapping_add(maj)),
            a,
            b,
            c,
            d.wrapping_add(t1),
            e,
            f,
            g,
        ];
    }
    for (s, x) in state.iter_mut().zip(v) {
        *s = s.wrapping_add(x);
    }
}

impl Update for Sha512 {
    fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u128;
        while !data.is_empty() {
            let take = (BLOCK - self.pending_len).min(data.len());
            self.pending[self.pending_len..self.pending_len + take].copy_from_slice(&data[..take]);
            self.pending_len += take;
            data = &data[take..];
            if self.pending_len == BLOCK {
                compress(&mut self.state, &self.pending);
                self.pending_len = 0;
            }
        }
    }
}

impl OutputSizeUser for Sha512 {
    type OutputSize = U64;
}

impl FixedOutput for Sha512 {
    fn finalize_into(mut self, out: &mut Output<Self>) {
        let bits = self.len.wrapping_mul(8);
        // 0x80, zeros to 16 bytes short of a block's end, the length.
        let pad = if self.pending_len < BLOCK - 16 {
            BLOCK
        } else {
            2 * BLOCK
        } - self.pending_len;
        let mut tail = [0u8; 2 * BLOCK];
        tail[0] = 0x80;
        tail[pad - 16..pad].copy_from_slice(&bits.to_be_bytes());
        let len = self.len;
        self.update(&tail[..pad]);
        self.len = len;
        for (o, s) in out.chunks_exact_mut(8).zip(self.state) {
            o.copy_from_slice(&s.to_be_bytes());
        }
    }
}

impl HashMarker for Sha512 {}

#[cfg(test)]
mod tests {
    use super::Sha512;
    use digest::Digest as _;

    fn ours(parts: &[&[u8]]) -> Vec<u8> {
        let mut h = Sha512::default();
        for p in parts {
            digest::Update::update(&mut h, p);
        }
        h.finalize().to_vec()
    }

    fn reference(data: &[u8]) -> Vec<u8> {
        <sha2::Sha512 as sha2::Digest>::digest(data).to_vec()
    }

    #[test]
    fn known_answers() {
        // FIPS 180-4's examples ("abc" and the two-block message).
        let hex = |b: Vec<u8>| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        assert_eq!(
            hex(ours(&[b"abc"])),
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
             2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
        );
        assert_eq!(
            hex(ours(&[b"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmn\
                         hijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu"])),
            "8e959b75dae313da8cf4f72814fc143f8f7779c6eb9f7fa17299aeadb6889018\
             501d289e4900f7e4331b99dec4b5433ac7d329eeb6dd26545e96e55b874be909"
        );
    }

    #[test]
    fn matches_sha2_at_every_length_and_split() {
        // Every length across the padding's edges (111, 112, 127, 128, …),
        // fed whole and in two parts at each split point.
        let data: Vec<u8> = (0..600u32).map(|i| (i * 131 + 7) as u8).collect();
        for n in 0..=data.len() {
            let want = reference(&data[..n]);
            assert_eq!(ours(&[&data[..n]]), want, "length {n}");
            for cut in [0, 1, n / 2, n.saturating_sub(1), n.min(128), n.min(129)] {
                let cut = cut.min(n);
                assert_eq!(ours(&[&data[..cut], &data[cut..n]]), want, "length {n} cut {cut}");
            }
        }
        let big = vec![0xa5u8; 1 << 20];
        assert_eq!(ours(&[&big]), reference(&big));
    }
}
