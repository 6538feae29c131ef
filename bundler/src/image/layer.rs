//! Layer blobs: a tar of chosen entries (or an image's own layer, as it
//! is), written the same way on every machine: entries in the order given
//! (sorted by the caller), mtime 1, owner 0:0 without names, modes 0755
//! (directories, executables), 0644 (other files), 0777 (symlinks), GNU
//! long names; compressed by gzip without a timestamp or name, or zstd.
//! Each blob is hashed as it is written: its digest, and the digest of the
//! tar itself (the config's `diff_id`).

use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rayon::prelude::*;

use crate::pack::hash::changed;
use crate::pack::output::Hashing;

/// How layer blobs are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Compression {
    /// gzip (level 6): what every registry and runtime reads.
    Gzip,
    /// zstd (level 12): smaller and faster to unpack; needs a recent
    /// runtime (containerd 1.5, Podman 3.1, Docker 23).
    Zstd,
    /// None: a docker-archive's layers.
    #[value(skip)]
    None,
}

impl Compression {
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
        }
    }
}

/// The zstd level of zstd layers.
const ZSTD_LEVEL: i32 = 12;

/// One entry of a layer, at its path in the image (relative, no leading `/`).
pub struct Entry<'a> {
    pub path: Vec<u8>,
    pub node: Node<'a>,
}

pub enum Node<'a> {
    Dir {
        mode: u32,
    },
    File {
        executable: bool,
        size: u64,
        source: &'a Path,
    },
    Symlink {
        target: &'a [u8],
    },
}

pub enum Content<'a> {
    /// Entries to write, in order.
    Entries(Vec<Entry<'a>>),
    /// An image's layer, as a file (tar, tar.gz or tar.zst): its tar passes
    /// through unchanged.
    Tar(PathBuf),
}

pub struct Layer<'a> {
    /// What the layer holds, for the config's history (`tote image: …`).
    pub created_by: String,
    pub content: Content<'a>,
}

/// A written layer blob.
#[derive(Debug, Clone)]
pub struct Blob {
    /// Hex SHA-256 of the tar.
    pub diff_id: String,
    /// Hex SHA-256 of the blob (the tar, compressed).
    pub digest: String,
    pub size: u64,
    /// Where it was written: `dir/<digest>`.
    pub file: PathBuf,
    pub created_by: String,
}

/// Write every layer into `dir` (in parallel), each as `dir/<digest>`.
pub fn write_layers(layers: &[Layer<'_>], compression: Compression, dir: &Path) -> Result<Vec<Blob>> {
    layers
        .par_iter()
        .enumerate()
        .map(|(i, layer)| {
            let temp = dir.join(format!("layer-{i}.tmp"));
            let (diff_id, digest, size) = write_blob(&layer.content, compression, &temp)?;
            let file = dir.join(&digest);
            std::fs::rename(&temp, &file).with_context(|| format!("writing {}", file.display()))?;
            Ok(Blob {
                diff_id,
                digest,
                size,
                file,
                created_by: layer.created_by.clone(),
            })
        })
        .collect()
}

/// Returns the diff id, digest and size of the blob written to `path`.
fn write_blob(content: &Content<'_>, compression: Compression, path: &Path) -> Result<(String, String, u64)> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let outer = Hashing::new(BufWriter::with_capacity(1 << 20, file));
    let (outer, diff_id) = match compression {
        Compression::None => {
            let mut w = outer;
            write_tar(content, &mut w)?;
            (w, None)
        }
        Compression::Gzip => {
            let gz = flate2::GzBuilder::new()
                .mtime(0)
                .operating_system(255)
                .write(outer, flate2::Compression::new(6));
            let mut inner = Hashing::new(gz);
            write_tar(content, &mut inner)?;
            let (gz, diff_id, _) = inner.finish();
            (gz.finish().context("compressing a layer")?, Some(diff_id))
        }
        Compression::Zstd => {
            let z = zstd::Encoder::new(outer, ZSTD_LEVEL).context("compressing a layer")?;
            let mut inner = Hashing::new(z);
            write_tar(content, &mut inner)?;
            let (z, diff_id, _) = inner.finish();
            (z.finish().context("compressing a layer")?, Some(diff_id))
        }
    };
    let (w, digest, size) = outer.finish();
    w.into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok((diff_id.unwrap_or_else(|| digest.clone()), digest, size))
}

fn write_tar(content: &Content<'_>, w: &mut dyn Write) -> Result<()> {
    match content {
        Content::Tar(file) => {
            let f = File::open(file).with_context(|| format!("opening {}", file.display()))?;
            let mut r = crate::input::decompressed(BufReader::with_capacity(1 << 20, f))?;
            std::io::copy(&mut r, w).with_context(|| format!("reading {}", file.display()))?;
            Ok(())
        }
        Content::Entries(entries) => {
            let mut b = tar::Builder::new(w);
            for e in entries {
                append(&mut b, e)?;
            }
            b.into_inner().context("writing a layer")?;
            Ok(())
        }
    }
}

/// A header with everything but the path, type, mode and size fixed.
pub fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(1);
    h.set_uid(0);
    h.set_gid(0);
    h
}

fn append(b: &mut tar::Builder<&mut dyn Write>, e: &Entry<'_>) -> Result<()> {
    let path = Path::new(OsStr::from_bytes(&e.path));
    let written = match &e.node {
        Node::Dir { mode } => {
            let mut h = header(tar::EntryType::Directory, *mode, 0);
            b.append_data(&mut h, path, std::io::empty())
        }
        Node::Symlink { target } => {
            let mut h = header(tar::EntryType::Symlink, 0o777, 0);
            b.append_link(&mut h, path, Path::new(OsStr::from_bytes(target)))
        }
        Node::File {
            executable,
            size,
            source,
        } => {
            let mode = if *executable { 0o755 } else { 0o644 };
            let mut h = header(tar::EntryType::Regular, mode, *size);
            if *size == 0 {
                b.append_data(&mut h, path, std::io::empty())
            } else {
                // Streamed, and exactly `size` bytes: a file that changed
                // since it was stamped (longer or shorter) fails the layer.
                let f = File::open(source).with_context(|| format!("reading {}", source.display()))?;
                let mut exact = Exact {
                    inner: f.take(size + 1),
                    left: *size,
                };
                let res = b.append_data(&mut h, path, &mut exact);
                if res.is_err() || exact.left != 0 {
                    bail!(changed(source));
                }
                res
            }
        }
    };
    written.with_context(|| format!("writing /{} into a layer", path.display()))
}

/// A file's bytes, read as the layer's tar takes them: an error if there
/// are more than the `left` its header says (the file grew), and `left`
/// says how many were missing at the end (it shrank).
struct Exact<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n as u64 > self.left {
            return Err(std::io::Error::other("the file grew"));
        }
        self.left -= n as u64;
        Ok(n)
    }
}
