use thiserror::Error;

/// Everything that can be wrong with a bundle's bytes.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FormatError {
    #[error("not a tote bundle, or truncated (no tote trailer at the end of the file)")]
    NotABundle,
    #[error("bundle format version {found} is not supported (this build reads versions {oldest} to {newest})")]
    UnsupportedVersion { found: u32, oldest: u32, newest: u32 },
    #[error("truncated {what}: need {need} bytes, have {have}")]
    Truncated { what: &'static str, need: u64, have: u64 },
    #[error("corrupt trailer: {0}")]
    Trailer(String),
    #[error("corrupt {what}: SHA-256 mismatch")]
    HashMismatch { what: String },
    #[error("corrupt metadata: {0}")]
    Meta(String),
    #[error("corrupt index: {0}")]
    Index(String),
    #[error("remote record: {0}")]
    Remote(String),
    #[error("signature section: {0}")]
    Signatures(String),
    #[error("corrupt block {block}: {reason}")]
    Block { block: u32, reason: String },
}
