//! Signatures: Ed25519 keys in Nix's `name:base64` form, the signature
//! section appended after a bundle, the statement each signature signs,
//! and the trust policy every checker applies (docs/FORMAT.md,
//! "Signatures"; docs/security.md, "Signed bundles").
//!
//! The section lies outside what the bundle id hashes: removing it gives
//! the unsigned bundle back byte for byte.

use std::fmt;

use curve25519_dalek::edwards::CompressedEdwardsY;
use ed25519_dalek::{Signature as EdSignature, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::hash::{BundleId, Digest32};
use crate::reader::Reader;
use crate::FormatError;

/// The last 8 bytes of a signed bundle.
pub const SIG_MAGIC: [u8; 8] = *b"TOTESIGS";
/// The section's own version (the bundle inside keeps its own).
pub const SIG_VERSION: u32 = 1;
/// `u32 records_len`, `u32 version`, magic.
pub const SIG_FOOTER_LEN: usize = 16;
/// At most this many signatures, in at most this many bytes (records and
/// footer): read with the trailer at every launch.
pub const MAX_SIGNATURES: usize = 32;
pub const MAX_SIG_SECTION: usize = 16 << 10;
/// What every statement starts with: never a prefix of a Nix narinfo
/// fingerprint (`1;/nix/store/…`) or of a minisign message.
pub const DOMAIN: &[u8] = b"tote signed bundle v1\0";
/// Fixed part of a record: name length, key, expiry, signature.
const RECORD_FIXED: usize = 1 + 32 + 8 + 64;

/// A key's name: what Nix calls it (`cache.example.org-1`).
fn check_name(name: &[u8]) -> Result<&str, String> {
    let s = std::str::from_utf8(name).map_err(|_| "a key name that is not UTF-8".to_string())?;
    if s.is_empty() || s.len() > 255 {
        return Err("a key name must be 1 to 255 bytes".into());
    }
    if s.chars().any(|c| c == ':' || c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "key name {:?} holds a colon, a space or a control character",
            s
        ));
    }
    Ok(s)
}

/// A public key: `name:base64(32 bytes)`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PublicKey {
    pub name: String,
    pub key: [u8; 32],
}

impl PublicKey {
    pub fn parse(text: &str) -> Result<PublicKey, String> {
        let (name, b64) = split_key(text)?;
        let raw = base64_decode(b64).ok_or_else(|| format!("key {name}: not valid base64"))?;
        let key: [u8; 32] = raw
            .try_into()
            .map_err(|v: Vec<u8>| format!("key {name}: {} bytes, a public key has 32", v.len()))?;
        VerifyingKey::from_bytes(&key).map_err(|_| format!("key {name}: not an Ed25519 public key"))?;
        Ok(PublicKey { name, key })
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, base64_encode(&self.key))
    }
}

fn split_key(text: &str) -> Result<(String, &str), String> {
    let text = text.trim();
    let (name, b64) = text
        .split_once(':')
        .ok_or_else(|| "a key is written NAME:BASE64 (as Nix writes it)".to_string())?;
    Ok((check_name(name.as_bytes())?.to_string(), b64))
}

/// One signature record.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Signature {
    pub name: String,
    pub key: [u8; 32],
    /// Unix seconds after which it no longer counts; 0: never.
    pub expires: u64,
    pub sig: [u8; 64],
}

impl Signature {
    pub fn public(&self) -> PublicKey {
        PublicKey {
            name: self.name.clone(),
            key: self.key,
        }
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(self.name.len() as u8);
        out.extend_from_slice(self.name.as_bytes());
        out.extend_from_slice(&self.key);
        out.extend_from_slice(&self.expires.to_le_bytes());
        out.extend_from_slice(&self.sig);
    }

    fn encoded(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(RECORD_FIXED + self.name.len());
        self.encode_into(&mut v);
        v
    }

    /// Does the signature verify (strictly) for this statement? What
    /// ed25519-dalek's `verify_strict` checks, with the compact SHA-512
    /// (`crate::sha512`): `s` canonical, `R` a point, neither `R` nor the
    /// key of small order, and `[s]B = R + [H(R ‖ A ‖ M)]A`.
    pub fn verifies(&self, about: &Statement) -> bool {
        let Ok(key) = VerifyingKey::from_bytes(&self.key) else {
            return false;
        };
        let mut r = [0u8; 32];
        r.copy_from_slice(&self.sig[..32]);
        match CompressedEdwardsY(r).decompress() {
            Some(r) if !r.is_small_order() && !key.is_weak() => {}
            _ => return false,
        }
        ed25519_dalek::hazmat::raw_verify::<crate::sha512::Sha512>(
            &key,
            &about.message(&self.name, self.expires),
            &EdSignature::from_bytes(&self.sig),
        )
        .is_ok()
    }
}

/// A signed bundle's signature section, decoded.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Signatures {
    /// What the signatures say they sign. A checker compares it with the
    /// bundle's own (see [`Statement::changed`]).
    pub statement: Statement,
    /// In canonical order (by encoded record), at most one per key.
    pub list: Vec<Signature>,
    /// The section's length in bytes (statement, records and footer): the
    /// signed file is this much longer than the bundle it signs.
    pub section_len: u64,
}

/// The section for `list` (any order; at most one per key) signing
/// `about`, or nothing for no signature.
pub fn encode_section(about: &Statement, list: &[Signature]) -> Result<Vec<u8>, FormatError> {
    if list.is_empty() {
        return Ok(Vec::new());
    }
    let mut records: Vec<Vec<u8>> = list.iter().map(Signature::encoded).collect();
    records.sort();
    let mut out = about.encode().to_vec();
    out.extend_from_slice(&records.concat());
    let body_len = out.len();
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.extend_from_slice(&SIG_VERSION.to_le_bytes());
    out.extend_from_slice(&SIG_MAGIC);
    // What it wrote, read back as every reader will.
    let back = decode_section(&out, about.file_len.saturating_add(out.len() as u64))?;
    if back.list.len() != list.len() || &back.statement != about {
        return Err(FormatError::Signatures("signatures did not read back".into()));
    }
    Ok(out)
}

/// Decode the section at the end of `tail` (the file's last bytes; at
/// least the whole section). `file_len` is the signed file's length.
pub fn decode_section(tail: &[u8], file_len: u64) -> Result<Signatures, FormatError> {
    let bad = |m: String| FormatError::Signatures(m);
    if tail.len() < SIG_FOOTER_LEN || file_len < SIG_FOOTER_LEN as u64 {
        return Err(FormatError::Truncated {
            what: "signature section",
            need: SIG_FOOTER_LEN as u64,
            have: file_len.min(tail.len() as u64),
        });
    }
    let foot = &tail[tail.len() - SIG_FOOTER_LEN..];
    let mut r = Reader::new(foot, "signature section");
    let (body_len, version) = (r.u32()? as usize, r.u32()?);
    if version != SIG_VERSION {
        return Err(bad(format!("version {version} is not supported (this build reads 1)")));
    }
    let section_len = body_len.saturating_add(SIG_FOOTER_LEN);
    if section_len > MAX_SIG_SECTION {
        return Err(bad(format!("{section_len} bytes, at most {MAX_SIG_SECTION} allowed")));
    }
    if section_len as u64 >= file_len || tail.len() < section_len {
        return Err(FormatError::Truncated {
            what: "signature section",
            need: section_len as u64 + 1,
            have: file_len.min(tail.len() as u64),
        });
    }
    let body = &tail[tail.len() - section_len..tail.len() - SIG_FOOTER_LEN];
    let mut r = Reader::new(body, "signature section");
    let statement = Statement::decode(r.array()?);
    if statement.file_len != file_len - section_len as u64 {
        return Err(bad(format!(
            "it signs a bundle of {} bytes, and {} bytes precede it",
            statement.file_len,
            file_len - section_len as u64
        )));
    }
    let mut list: Vec<Signature> = Vec::new();
    let mut last: Option<&[u8]> = None;
    while r.remaining() > 0 {
        if list.len() == MAX_SIGNATURES {
            return Err(bad(format!("more than {MAX_SIGNATURES} signatures")));
        }
        let start = body.len() - r.remaining();
        let name_len = usize::from(r.u8()?);
        let name = check_name(r.bytes(name_len)?).map_err(bad)?.to_string();
        let s = Signature {
            name,
            key: r.array()?,
            expires: r.u64()?,
            sig: r.array()?,
        };
        let raw = &body[start..body.len() - r.remaining()];
        if last.is_some_and(|l| l >= raw) {
            return Err(bad("records out of order or repeated".into()));
        }
        if list.iter().any(|o| o.key == s.key) {
            return Err(bad(format!("two signatures by the key of {}", s.name)));
        }
        last = Some(raw);
        list.push(s);
    }
    if list.is_empty() {
        return Err(bad("no signature in it".into()));
    }
    Ok(Signatures {
        statement,
        list,
        section_len: section_len as u64,
    })
}

/// Does `tail` (a file's last bytes) end with a signature section?
pub fn is_signed(tail: &[u8]) -> bool {
    tail.len() >= 8 && tail[tail.len() - 8..] == SIG_MAGIC
}

/// What a signature signs, apart from its own name and expiry: the bundle
/// as every byte of it is pinned (docs/FORMAT.md, "Signatures").
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Statement {
    /// The unsigned bundle's length.
    pub file_len: u64,
    /// SHA-256 of the runtime stub (bytes `0..data_offset`).
    pub stub: Digest32,
    /// SHA-256 of the trailer (144 bytes, or a thin bundle's 248).
    pub trailer: Digest32,
    pub id: BundleId,
}

/// A statement's encoded length.
pub const STATEMENT_LEN: usize = 8 + 32 + 32 + 32;

impl Statement {
    pub fn encode(&self) -> [u8; STATEMENT_LEN] {
        let mut out = [0u8; STATEMENT_LEN];
        out[..8].copy_from_slice(&self.file_len.to_le_bytes());
        out[8..40].copy_from_slice(&self.stub.0);
        out[40..72].copy_from_slice(&self.trailer.0);
        out[72..].copy_from_slice(&self.id.0 .0);
        out
    }

    fn decode(raw: [u8; STATEMENT_LEN]) -> Statement {
        let part = |at: usize| {
            let mut d = [0u8; 32];
            d.copy_from_slice(&raw[at..at + 32]);
            Digest32(d)
        };
        let mut len = [0u8; 8];
        len.copy_from_slice(&raw[..8]);
        Statement {
            file_len: u64::from_le_bytes(len),
            stub: part(8),
            trailer: part(40),
            id: BundleId(part(72)),
        }
    }

    /// Which part of the bundle differs from what `self` (a signed
    /// statement) says: the region a checker names.
    pub fn changed(&self, actual: &Statement) -> Option<&'static str> {
        if self.file_len != actual.file_len {
            Some("length")
        } else if self.stub != actual.stub {
            Some("stub")
        } else if self.trailer != actual.trailer || self.id != actual.id {
            Some("trailer")
        } else {
            None
        }
    }

    /// The bytes a signature by `name` with `expires` signs.
    pub fn message(&self, name: &str, expires: u64) -> Vec<u8> {
        let mut m = Vec::with_capacity(DOMAIN.len() + STATEMENT_LEN + 8 + 1 + name.len());
        m.extend_from_slice(DOMAIN);
        m.extend_from_slice(&self.encode());
        m.extend_from_slice(&expires.to_le_bytes());
        m.push(name.len() as u8);
        m.extend_from_slice(name.as_bytes());
        m
    }
}

/// SHA-256 of the stub's bytes, fed in pieces.
pub fn stub_hasher() -> Sha256 {
    Sha256::new()
}

/// Which public keys a host trusts, and how many of them must have signed.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    pub keys: Vec<PublicKey>,
    /// At least 1.
    pub sigs_needed: usize,
}

/// How one signature stands under a policy.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Status {
    /// Valid, by a key the policy trusts, not expired.
    Trusted,
    /// Valid, by a key the policy does not list.
    Untrusted,
    /// Does not verify: for other bytes, or damaged.
    Invalid,
    /// Valid, by a trusted key, but past its expiry.
    Expired,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Trusted => "trusted",
            Status::Untrusted => "untrusted",
            Status::Invalid => "invalid",
            Status::Expired => "expired",
        }
    }
}

/// The verdict on a bundle's signatures.
#[derive(Clone, Debug)]
pub struct Verdict {
    /// Each signature and its status, in the section's order.
    pub signers: Vec<(Signature, Status)>,
    /// The region of the bundle that is not what was signed (`stub`,
    /// `trailer`, `length`), or `signature` when no signature verifies
    /// over the statement the section records.
    pub changed: Option<&'static str>,
    /// Why the policy is not met, or None when it is.
    pub refused: Option<String>,
}

impl Policy {
    fn trusts(&self, s: &Signature) -> bool {
        self.keys.iter().any(|k| k.key == s.key && k.name == s.name)
    }

    /// Check `sigs` (None: an unsigned bundle) of the bundle whose own
    /// statement is `actual` against the policy at unix time `now`.
    /// `valid` says whether a signature verifies over the statement the
    /// section records (the caller may know from an earlier check; else
    /// [`Signature::verifies`]).
    ///
    /// Refused: a bundle that is not what its statement says (naming the
    /// region), any invalid signature (whoever's key), an expired trusted
    /// one, or fewer trusted valid signatures than `sigs_needed`.
    pub fn check(
        &self,
        sigs: Option<&Signatures>,
        actual: &Statement,
        now: u64,
        mut valid: impl FnMut(&Signature) -> bool,
    ) -> Verdict {
        let list = sigs.map(|s| &s.list[..]).unwrap_or(&[]);
        let signers: Vec<(Signature, Status)> = list
            .iter()
            .map(|s| {
                let status = if !valid(s) {
                    Status::Invalid
                } else if !self.trusts(s) {
                    Status::Untrusted
                } else if s.expires != 0 && s.expires <= now {
                    Status::Expired
                } else {
                    Status::Trusted
                };
                (s.clone(), status)
            })
            .collect();
        let count = |want: Status| signers.iter().filter(|(_, st)| *st == want).count();
        let named = |want: Status| {
            signers
                .iter()
                .filter(|(_, st)| *st == want)
                .map(|(s, _)| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let needed = self.sigs_needed.max(1);
        let changed = match sigs {
            Some(_) if count(Status::Invalid) == signers.len() => Some("signature"),
            Some(s) => s.statement.changed(actual),
            None => None,
        };
        let refused = if list.is_empty() {
            Some("it is not signed".to_string())
        } else if changed == Some("signature") {
            Some(
                "no signature verifies: the signature section is damaged or was not made for this statement"
                    .to_string(),
            )
        } else if let Some(region) = changed {
            Some(format!("its {region} is not what was signed (changed since signing)"))
        } else if count(Status::Invalid) > 0 {
            Some(format!(
                "the signature by {} is damaged (it does not verify)",
                named(Status::Invalid)
            ))
        } else if count(Status::Expired) > 0 {
            Some(format!("the signature by {} has expired", named(Status::Expired)))
        } else if count(Status::Trusted) < needed {
            let have = count(Status::Trusted);
            let others = named(Status::Untrusted);
            Some(format!(
                "{have} signature{} by a trusted key, {needed} needed{}",
                if have == 1 { "" } else { "s" },
                if others.is_empty() {
                    String::new()
                } else {
                    format!(" (signed by {others}, not trusted here)")
                }
            ))
        } else {
            None
        };
        Verdict {
            signers,
            changed,
            refused,
        }
    }
}

/// Parse a list of public keys: whitespace-separated `name:base64`
/// (Nix's `trusted-public-keys`), `#` starting a comment to the end of a
/// line, and `sigs-needed N` setting the count. Errors name the line.
pub fn parse_policy(text: &str) -> Result<Policy, String> {
    let mut policy = Policy {
        keys: Vec::new(),
        sigs_needed: 1,
    };
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("");
        let mut words = line.split_whitespace().peekable();
        while let Some(w) = words.next() {
            if w == "sigs-needed" {
                let v = words.next().and_then(|v| v.parse::<usize>().ok()).filter(|v| *v >= 1);
                policy.sigs_needed =
                    v.ok_or_else(|| format!("line {}: sigs-needed takes a number of at least 1", n + 1))?;
                continue;
            }
            let key = PublicKey::parse(w).map_err(|e| format!("line {}: {e}", n + 1))?;
            if !policy.keys.contains(&key) {
                policy.keys.push(key);
            }
        }
    }
    Ok(policy)
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (RFC 4648, section 4).
pub fn base64_encode(data: &[u8]) -> String {
    let mut s = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                s.push(char::from(B64[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// Decode standard padded base64; None for anything else (including
/// non-zero bits past the data, so each value has one spelling).
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let b = text.as_bytes();
    if !b.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(b.len() / 4 * 3);
    for (i, chunk) in b.chunks(4).enumerate() {
        let last = i == b.len() / 4 - 1;
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            let v = B64.iter().position(|&x| x == c)? as u32;
            n = (n << 6) | v;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        let keep = 3 - pad;
        if bytes[keep..].iter().any(|&x| x != 0) {
            return None;
        }
        out.extend_from_slice(&bytes[..keep]);
    }
    Some(out)
}

#[cfg(feature = "write")]
pub use secret::SecretKey;

#[cfg(feature = "write")]
mod secret {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    /// A secret key: `name:base64(seed ‖ public)`, as Nix (libsodium)
    /// writes it.
    #[derive(Clone)]
    pub struct SecretKey {
        pub name: String,
        key: SigningKey,
    }

    impl SecretKey {
        pub fn from_seed(name: &str, seed: [u8; 32]) -> Result<SecretKey, String> {
            Ok(SecretKey {
                name: check_name(name.as_bytes())?.to_string(),
                key: SigningKey::from_bytes(&seed),
            })
        }

        pub fn parse(text: &str) -> Result<SecretKey, String> {
            let (name, b64) = split_key(text)?;
            let raw = base64_decode(b64).ok_or_else(|| format!("secret key {name}: not valid base64"))?;
            if raw.len() == 32 {
                return Err(format!(
                    "key {name}: 32 bytes, a public key; signing needs the secret key (64 bytes)"
                ));
            }
            let raw: [u8; 64] = raw
                .try_into()
                .map_err(|v: Vec<u8>| format!("secret key {name}: {} bytes, a secret key has 64", v.len()))?;
            let key = SigningKey::from_keypair_bytes(&raw)
                .map_err(|_| format!("secret key {name}: its public half does not belong to its secret half"))?;
            Ok(SecretKey { name, key })
        }

        pub fn public(&self) -> PublicKey {
            PublicKey {
                name: self.name.clone(),
                key: self.key.verifying_key().to_bytes(),
            }
        }

        /// The text Nix reads: `name:base64(seed ‖ public)`.
        pub fn to_text(&self) -> String {
            format!("{}:{}", self.name, base64_encode(&self.key.to_keypair_bytes()))
        }

        /// Sign raw bytes (minisign's messages).
        pub fn sign_raw(&self, message: &[u8]) -> [u8; 64] {
            self.key.sign(message).to_bytes()
        }

        /// Sign a bundle's statement.
        pub fn sign(&self, about: &Statement, expires: u64) -> Signature {
            Signature {
                name: self.name.clone(),
                key: self.key.verifying_key().to_bytes(),
                expires,
                sig: self.sign_raw(&about.message(&self.name, expires)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (raw, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(raw.as_bytes()), enc);
            assert_eq!(base64_decode(enc).unwrap(), raw.as_bytes());
        }
        for bad in ["Zg=", "Zh==", "Z===", "Zm9v=Zm9", "Zm9*", "Zm8"] {
            assert!(base64_decode(bad).is_none(), "{bad}");
        }
    }

    /// `Signature::verifies` (compact SHA-512 through `raw_verify`, with
    /// the strict checks spelled out) decides every case as ed25519-dalek's
    /// `verify_strict` does: good signatures, each bit of `R` and `s`
    /// flipped, `s + ℓ`, another statement, a changed key, and keys and
    /// `R` of small order, which the plain equation accepts.
    #[test]
    fn verifies_exactly_as_verify_strict() {
        use ed25519_dalek::{Signer, SigningKey};
        let about = |i: u8| Statement {
            file_len: 1000 + u64::from(i),
            stub: Digest32([i; 32]),
            trailer: Digest32([i ^ 0x55; 32]),
            id: BundleId(Digest32([i.wrapping_mul(7); 32])),
        };
        let strict = |s: &Signature, a: &Statement| {
            VerifyingKey::from_bytes(&s.key).is_ok_and(|k| {
                k.verify_strict(&a.message(&s.name, s.expires), &EdSignature::from_bytes(&s.sig))
                    .is_ok()
            })
        };
        // ℓ, the group order, little-endian.
        let mut ell = [0u8; 32];
        ell[..16].copy_from_slice(&[
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
        ]);
        ell[31] = 0x10;
        let mut cases = Vec::new();
        for i in 0..12u8 {
            let sk = SigningKey::from_bytes(&Sha256::digest([i]).into());
            let (a, name, expires) = (about(i), format!("key-{i}"), u64::from(i) * 1000);
            let good = Signature {
                sig: sk.sign(&a.message(&name, expires)).to_bytes(),
                name,
                key: sk.verifying_key().to_bytes(),
                expires,
            };
            assert!(good.verifies(&a));
            for bit in 0..512 {
                let mut s = good.clone();
                s.sig[bit / 8] ^= 1 << (bit % 8);
                cases.push((s, a.clone()));
            }
            for bit in [0, 77, 254, 255] {
                let mut s = good.clone();
                s.key[bit / 8] ^= 1 << (bit % 8);
                cases.push((s, a.clone()));
            }
            let mut plus_ell = good.clone();
            let mut carry = 0u16;
            for (b, l) in plus_ell.sig[32..].iter_mut().zip(ell) {
                let sum = u16::from(*b) + u16::from(l) + carry;
                *b = sum as u8;
                carry = sum >> 8;
            }
            cases.push((plus_ell, a.clone()));
            let mut small_r = good.clone();
            small_r.sig[..32].copy_from_slice(&{
                let mut id = [0u8; 32];
                id[0] = 1;
                id
            });
            cases.push((small_r, a.clone()));
            cases.push((good.clone(), about(i + 100)));
            cases.push((good, a));
        }
        // The identity as key and as R, s = 0: [0]B = R + [k]A holds.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(&identity);
        let weak = Signature {
            name: "weak".into(),
            key: identity,
            expires: 0,
            sig,
        };
        let plain = ed25519_dalek::hazmat::raw_verify::<sha2::Sha512>(
            &VerifyingKey::from_bytes(&identity).unwrap(),
            &about(1).message("weak", 0),
            &EdSignature::from_bytes(&sig),
        );
        assert!(plain.is_ok(), "the plain equation accepts a small-order key");
        cases.push((weak, about(1)));
        let mut accepted = 0;
        for (s, a) in &cases {
            assert_eq!(s.verifies(a), strict(s, a), "{s:?}");
            accepted += usize::from(s.verifies(a));
        }
        assert_eq!(accepted, 12, "the good signatures, and only those");
    }

    #[test]
    fn policy_lines_keys_and_counts() {
        let good = "# hosts\nsigs-needed 2\n";
        assert_eq!(parse_policy(good).unwrap().sigs_needed, 2);
        let err = parse_policy("\n\nnot-a-key\n").unwrap_err();
        assert!(err.starts_with("line 3:"), "{err}");
        assert!(parse_policy("sigs-needed 0").is_err());
        assert!(parse_policy("a:b:c").is_err());
    }
}
