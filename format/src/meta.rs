//! The metadata section: launch metadata and summary figures, small and
//! uncompressed so that a warm start reads it without touching the index.

use crate::reader::Reader;
use crate::FormatError;

/// A subtree of the bundle that must appear at an absolute path at launch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    /// Path inside the bundle's tree, relative, e.g. `nix/store`.
    pub source: Vec<u8>,
    /// Absolute path where it appears, e.g. `/nix/store`.
    pub target: Vec<u8>,
}

/// Summary figures, recorded at bundle time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Number of index entries (directories, files, symlinks).
    pub entries: u64,
    /// Number of regular files.
    pub files: u64,
    /// Sum of all file sizes: the size of the extracted tree's contents.
    pub total_size: u64,
    /// Bytes of file content after deduplication (the data stream length).
    pub unique_size: u64,
    /// Number of data blocks.
    pub blocks: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    /// Display name (the entry point's file name unless set otherwise).
    pub name: String,
    /// Tool and version that wrote the bundle, e.g. `tote 0.1.0`.
    pub creator: String,
    /// Absolute path of the program to exec, as seen at launch.
    pub entrypoint: Vec<u8>,
    /// Arguments inserted before the caller's arguments.
    pub args: Vec<Vec<u8>>,
    /// Which subtrees appear where. Empty: the program runs from the cache.
    pub mounts: Vec<MountSpec>,
    pub stats: Stats,
}

impl Meta {
    pub fn decode(buf: &[u8]) -> Result<Meta, FormatError> {
        let mut r = Reader::new(buf, "metadata");
        let name = utf8(r.blob()?, "name")?;
        let creator = utf8(r.blob()?, "creator")?;
        let entrypoint = r.blob()?.to_vec();
        let nargs = r.u32()?;
        let mut args = Vec::new();
        for _ in 0..nargs {
            args.push(r.blob()?.to_vec());
        }
        let nmounts = r.u32()?;
        let mut mounts = Vec::new();
        for _ in 0..nmounts {
            let source = r.blob()?.to_vec();
            let target = r.blob()?.to_vec();
            mounts.push(MountSpec { source, target });
        }
        let stats = Stats {
            entries: r.u64()?,
            files: r.u64()?,
            total_size: r.u64()?,
            unique_size: r.u64()?,
            blocks: r.u64()?,
        };
        if r.remaining() != 0 {
            return Err(FormatError::Meta(format!(
                "{} unexpected trailing bytes",
                r.remaining()
            )));
        }
        let meta = Meta {
            name,
            creator,
            entrypoint,
            args,
            mounts,
            stats,
        };
        meta.validate()?;
        Ok(meta)
    }

    /// The summary figures must be the index's: a bundle whose declared
    /// sizes disagree with its contents is refused.
    pub fn check_stats(&self, index: &crate::Index) -> Result<(), FormatError> {
        let (m, i) = (&self.stats, index.stats());
        if *m == i {
            return Ok(());
        }
        let what = if m.entries != i.entries || m.files != i.files {
            "entry counts"
        } else if m.total_size != i.total_size || m.unique_size != i.unique_size {
            "content sizes"
        } else {
            "block count"
        };
        Err(FormatError::Meta(format!("its {what} disagree with the index")))
    }

    fn validate(&self) -> Result<(), FormatError> {
        if !is_clean_absolute(&self.entrypoint) {
            return Err(FormatError::Meta("entry point is not a clean absolute path".into()));
        }
        for m in &self.mounts {
            if !crate::index::is_clean_relative(&m.source) {
                return Err(FormatError::Meta("mount source is not a clean relative path".into()));
            }
            if !is_clean_absolute(&m.target) || m.target == b"/" {
                return Err(FormatError::Meta("mount target is not a clean absolute path".into()));
            }
        }
        Ok(())
    }

    #[cfg(feature = "write")]
    pub fn encode(&self) -> Vec<u8> {
        use crate::reader::put_blob;
        let mut out = Vec::new();
        put_blob(&mut out, self.name.as_bytes());
        put_blob(&mut out, self.creator.as_bytes());
        put_blob(&mut out, &self.entrypoint);
        out.extend_from_slice(&(self.args.len() as u32).to_le_bytes());
        for a in &self.args {
            put_blob(&mut out, a);
        }
        out.extend_from_slice(&(self.mounts.len() as u32).to_le_bytes());
        for m in &self.mounts {
            put_blob(&mut out, &m.source);
            put_blob(&mut out, &m.target);
        }
        let s = &self.stats;
        for v in [s.entries, s.files, s.total_size, s.unique_size, s.blocks] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }
}

fn utf8(b: &[u8], what: &str) -> Result<String, FormatError> {
    String::from_utf8(b.to_vec()).map_err(|_| FormatError::Meta(format!("{what} is not UTF-8")))
}

/// `/a/b`: absolute, no empty, `.` or `..` components, no trailing slash.
pub(crate) fn is_clean_absolute(p: &[u8]) -> bool {
    match p.split_first() {
        Some((b'/', rest)) => rest.is_empty() || crate::index::is_clean_relative(rest),
        _ => false,
    }
}

#[cfg(all(test, feature = "write"))]
mod tests {
    use super::*;

    fn sample() -> Meta {
        Meta {
            name: "hello".into(),
            creator: "tote 0.1.0".into(),
            entrypoint: b"/nix/store/abc-hello/bin/hello".to_vec(),
            args: vec![b"--flag".to_vec(), vec![0xff, 0x00]],
            mounts: vec![MountSpec {
                source: b"nix/store".to_vec(),
                target: b"/nix/store".to_vec(),
            }],
            stats: Stats {
                entries: 1,
                files: 2,
                total_size: 3,
                unique_size: 4,
                blocks: 5,
            },
        }
    }

    #[test]
    fn round_trip() {
        assert_eq!(Meta::decode(&sample().encode()).unwrap(), sample());
    }

    #[test]
    fn every_prefix_is_an_error() {
        let enc = sample().encode();
        for n in 0..enc.len() {
            assert!(Meta::decode(&enc[..n]).is_err(), "prefix {n}");
        }
    }

    #[test]
    fn unclean_paths_are_refused() {
        for bad in [&b"relative"[..], b"/a/../b", b"/a//b", b"/a/", b""] {
            let mut m = sample();
            m.entrypoint = bad.to_vec();
            assert!(Meta::decode(&m.encode()).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let mut m = sample();
        m.mounts[0].target = b"/".to_vec();
        assert!(Meta::decode(&m.encode()).is_err());
    }
}
