//! The FUSE protocol, server side, read-only: requests read from
//! `/dev/fuse`, answered from `fs::Fs`, replies written back. Our own code
//! rather than libfuse or a crate: the stub is static and small, mounts
//! with mount(2) inside its user namespace (no fusermount), and needs only
//! the read-only subset. Layouts follow `include/uapi/linux/fuse.h`; every
//! request is bounds-checked, so a short or odd request gets an error reply,
//! never a panic.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use nix::errno::Errno;

#[cfg(test)]
use super::fs::ROOT;
use super::fs::{Attr, Fs, FsError, S_IFDIR};

const S_IFMT: u32 = 0o170000;

// Opcodes.
const LOOKUP: u32 = 1;
const FORGET: u32 = 2;
const GETATTR: u32 = 3;
const READLINK: u32 = 5;
const OPEN: u32 = 14;
const READ: u32 = 15;
const STATFS: u32 = 17;
const RELEASE: u32 = 18;
const FLUSH: u32 = 25;
const INIT: u32 = 26;
const OPENDIR: u32 = 27;
const READDIR: u32 = 28;
const RELEASEDIR: u32 = 29;
const INTERRUPT: u32 = 36;
const DESTROY: u32 = 38;
const BATCH_FORGET: u32 = 42;
const READDIRPLUS: u32 = 44;

// INIT flags we ask for (each only if the kernel offers it).
const ASYNC_READ: u32 = 1 << 0;
const DO_READDIRPLUS: u32 = 1 << 13;
const READDIRPLUS_AUTO: u32 = 1 << 14;
const PARALLEL_DIROPS: u32 = 1 << 18;
const MAX_PAGES: u32 = 1 << 22;
const CACHE_SYMLINKS: u32 = 1 << 23;
// Offered by kernels (5.1+) that accept ENOSYS for OPEN and OPENDIR and then
// open without asking, keeping the page cache and listings cached: one
// round trip (and a RELEASE) less per file opened.
const NO_OPEN_SUPPORT: u32 = 1 << 17;
const NO_OPENDIR_SUPPORT: u32 = 1 << 24;
const WANTED: u32 = ASYNC_READ | DO_READDIRPLUS | READDIRPLUS_AUTO | PARALLEL_DIROPS | MAX_PAGES | CACHE_SYMLINKS;

// open_flags of OPEN/OPENDIR replies: keep the kernel's page cache of a
// file across opens (the tree never changes), and cache listings.
const FOPEN_KEEP_CACHE: u32 = 1 << 1;
const FOPEN_CACHE_DIR: u32 = 1 << 3;

/// The protocol version we speak (7.31: Linux 5.4's), or the kernel's if older.
const MAJOR: u32 = 7;
const MINOR: u32 = 31;

/// Reads of up to 1 MiB per request (256 pages) where the kernel allows it.
const PAGES: u16 = 256;
/// The tree never changes while mounted: names and attributes stay valid.
const TTL_SECS: u64 = 365 * 24 * 3600;
const HEADER: usize = 40;
/// Enough for any request a read-only mount receives (names are ≤ 255
/// bytes, writes are refused by the kernel before they are sent), and the
/// kernel's minimum (8 KiB).
const REQUEST_BUFFER: usize = 64 * 1024;

pub struct Server {
    pub fs: Fs<'static>,
    /// The bundle's path, for the one line a corrupt block gets on stderr.
    pub bundle: std::path::PathBuf,
    /// Owner of every inode: the launching user (mapped to itself).
    pub uid: u32,
    pub gid: u32,
    /// Requests served, by opcode (for TOTE_DEBUG).
    pub counts: Counts,
    /// The INIT flags the kernel offered.
    pub offered: AtomicU32,
}

/// Requests served: lookups, getattrs, reads (and bytes), listings, others.
#[derive(Default)]
pub struct Counts {
    pub lookup: AtomicU64,
    pub getattr: AtomicU64,
    pub read: AtomicU64,
    pub read_bytes: AtomicU64,
    pub readdir: AtomicU64,
    pub other: AtomicU64,
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        write!(
            f,
            "{} lookups, {} getattrs, {} reads ({} KiB), {} listings, {} others",
            n(&self.lookup),
            n(&self.getattr),
            n(&self.read),
            n(&self.read_bytes) >> 10,
            n(&self.readdir),
            n(&self.other)
        )
    }
}

/// One request's header (`struct fuse_in_header`).
struct Request<'a> {
    opcode: u32,
    unique: u64,
    node: u64,
    body: &'a [u8],
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn parse(buf: &[u8]) -> Option<Request<'_>> {
    let len = u32_at(buf, 0)? as usize;
    if len < HEADER || len > buf.len() {
        return None;
    }
    Some(Request {
        opcode: u32_at(buf, 4)?,
        unique: u64_at(buf, 8)?,
        node: u64_at(buf, 16)?,
        body: &buf[HEADER..len],
    })
}

fn errno_of(e: FsError) -> Errno {
    match e {
        FsError::NotFound => Errno::ENOENT,
        FsError::NotDir => Errno::ENOTDIR,
        FsError::IsDir => Errno::EISDIR,
        FsError::Invalid => Errno::EINVAL,
        FsError::Io => Errno::EIO,
    }
}

/// A reply being built: header first, its length patched in at the end.
struct Reply<'b> {
    out: &'b mut Vec<u8>,
}

impl<'b> Reply<'b> {
    fn new(out: &'b mut Vec<u8>, unique: u64) -> Reply<'b> {
        out.clear();
        out.extend_from_slice(&[0; 8]);
        out.extend_from_slice(&unique.to_le_bytes());
        Reply { out }
    }

    fn u16(&mut self, v: u16) -> &mut Self {
        self.out.extend_from_slice(&v.to_le_bytes());
        self
    }

    fn u32(&mut self, v: u32) -> &mut Self {
        self.out.extend_from_slice(&v.to_le_bytes());
        self
    }

    fn u64(&mut self, v: u64) -> &mut Self {
        self.out.extend_from_slice(&v.to_le_bytes());
        self
    }

    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.out.extend_from_slice(b);
        self
    }

    fn error(self, e: Errno) {
        self.out.truncate(16);
        self.out[4..8].copy_from_slice(&(-(e as i32)).to_le_bytes());
        self.finish();
    }

    fn finish(self) {
        let len = self.out.len() as u32;
        self.out[0..4].copy_from_slice(&len.to_le_bytes());
    }
}

impl Server {
    /// `struct fuse_attr`.
    fn attr(&self, r: &mut Reply<'_>, a: &Attr) {
        r.u64(a.ino).u64(a.size).u64(a.size.div_ceil(512));
        // atime, mtime, ctime: 1 s after the epoch, as extraction stamps them.
        r.u64(1).u64(1).u64(1).u32(0).u32(0).u32(0);
        r.u32(a.mode).u32(a.nlink).u32(self.uid).u32(self.gid);
        r.u32(0).u32(4096).u32(0); // rdev, blksize, flags
    }

    /// `struct fuse_entry_out`; inode 0 caches a negative entry.
    fn entry(&self, r: &mut Reply<'_>, a: Option<&Attr>) {
        r.u64(a.map_or(0, |a| a.ino))
            .u64(0)
            .u64(TTL_SECS)
            .u64(TTL_SECS)
            .u32(0)
            .u32(0);
        match a {
            Some(a) => self.attr(r, a),
            None => {
                r.bytes(&[0; 88]);
            }
        }
    }

    /// Answer one request into `out`. `false`: no reply is due (forgets,
    /// interrupts, notifications).
    pub fn handle(&self, buf: &[u8], out: &mut Vec<u8>) -> bool {
        let Some(req) = parse(buf) else {
            return false;
        };
        if req.unique == 0 {
            return false;
        }
        let counter = match req.opcode {
            LOOKUP => &self.counts.lookup,
            GETATTR => &self.counts.getattr,
            READ => &self.counts.read,
            READDIR | READDIRPLUS => &self.counts.readdir,
            _ => &self.counts.other,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let mut r = Reply::new(out, req.unique);
        let result: Result<(), Errno> = match req.opcode {
            FORGET | BATCH_FORGET | INTERRUPT => return false,
            INIT => self.init(&req, &mut r),
            LOOKUP => self.lookup(&req, &mut r),
            GETATTR => self.fs.attr(req.node).map_err(errno_of).map(|a| {
                r.u64(TTL_SECS).u32(0).u32(0);
                self.attr(&mut r, &a);
            }),
            READLINK => self.fs.readlink(req.node).map_err(errno_of).map(|t| {
                r.bytes(t);
            }),
            OPEN if self.offered.load(Ordering::Relaxed) & NO_OPEN_SUPPORT != 0 => Err(Errno::ENOSYS),
            OPENDIR if self.offered.load(Ordering::Relaxed) & NO_OPENDIR_SUPPORT != 0 => Err(Errno::ENOSYS),
            OPEN => self.open(&req, &mut r),
            READ => self.read(&req, &mut r),
            OPENDIR => self.opendir(&req, &mut r),
            READDIR | READDIRPLUS => match (u64_at(req.body, 8), u32_at(req.body, 16)) {
                (Some(offset), Some(size)) => self.readdir(&req, offset, size as usize, &mut r),
                _ => Err(Errno::EINVAL),
            },
            STATFS => {
                // blocks, bfree, bavail, files, ffree: a full, read-only file system.
                r.u64(0).u64(0).u64(0).u64(0).u64(0);
                r.u32(4096).u32(255).u32(4096).u32(0).bytes(&[0; 24]);
                Ok(())
            }
            RELEASE | RELEASEDIR | DESTROY => Ok(()),
            // Nothing to flush on a read-only tree: ENOSYS makes the kernel
            // stop sending one (and waiting for it) on every close.
            FLUSH => Err(Errno::ENOSYS),
            // Everything else writes, locks or is optional: the kernel
            // refuses writes on a read-only mount before asking, and treats
            // ENOSYS as "not supported, do not ask again".
            _ => Err(Errno::ENOSYS),
        };
        match result {
            Ok(()) => r.finish(),
            Err(e) => r.error(e),
        }
        true
    }

    fn lookup(&self, req: &Request<'_>, r: &mut Reply<'_>) -> Result<(), Errno> {
        let name = req.body.split(|&c| c == 0).next().unwrap_or_default();
        match self.fs.lookup(req.node, name) {
            Ok(ino) => self.fs.attr(ino).map(|a| self.entry(r, Some(&a))).map_err(errno_of),
            // Cached by the kernel: programs probe many paths that
            // do not exist (library and module search paths).
            Err(FsError::NotFound) => {
                self.entry(r, None);
                Ok(())
            }
            Err(e) => Err(errno_of(e)),
        }
    }

    fn open(&self, req: &Request<'_>, r: &mut Reply<'_>) -> Result<(), Errno> {
        let flags = u32_at(req.body, 0).unwrap_or(0);
        if flags & 3 != 0 {
            Err(Errno::EROFS)
        } else {
            self.fs.check_file(req.node).map_err(errno_of).map(|()| {
                r.u64(0).u32(FOPEN_KEEP_CACHE).u32(0);
            })
        }
    }

    fn read(&self, req: &Request<'_>, r: &mut Reply<'_>) -> Result<(), Errno> {
        let (Some(offset), Some(size)) = (u64_at(req.body, 8), u32_at(req.body, 16)) else {
            return Err(Errno::EINVAL);
        };
        let mut data = std::mem::take(r.out);
        let at = data.len();
        let res = self.fs.read(req.node, offset, size, &mut data);
        self.counts
            .read_bytes
            .fetch_add((data.len() - at) as u64, Ordering::Relaxed);
        *r.out = data;
        if res.is_err() {
            r.out.truncate(at);
        }
        res.map_err(errno_of)
    }

    fn opendir(&self, req: &Request<'_>, r: &mut Reply<'_>) -> Result<(), Errno> {
        match self.fs.attr(req.node) {
            Ok(a) if a.mode & S_IFMT == S_IFDIR => {
                r.u64(0).u32(FOPEN_KEEP_CACHE | FOPEN_CACHE_DIR).u32(0);
                Ok(())
            }
            Ok(_) => Err(Errno::ENOTDIR),
            Err(e) => Err(errno_of(e)),
        }
    }

    fn init(&self, req: &Request<'_>, r: &mut Reply<'_>) -> Result<(), Errno> {
        let (Some(major), Some(minor), Some(readahead), Some(flags)) = (
            u32_at(req.body, 0),
            u32_at(req.body, 4),
            u32_at(req.body, 8),
            u32_at(req.body, 12),
        ) else {
            return Err(Errno::EINVAL);
        };
        if major < MAJOR {
            return Err(Errno::EPROTO);
        }
        let minor = if major > MAJOR { MINOR } else { minor.min(MINOR) };
        self.offered.store(flags, Ordering::Relaxed);
        r.u32(MAJOR).u32(minor).u32(readahead).u32(flags & WANTED);
        if minor < 23 {
            // `FUSE_COMPAT_22_INIT_OUT_SIZE`: max_background,
            // congestion_threshold, max_write.
            r.u16(0).u16(0).u32(4096);
            return Ok(());
        }
        r.u16(0).u16(0).u32(4096).u32(1); // max_background, congestion, max_write, time_gran
        r.u16(PAGES).u16(0).u32(0).u32(0).bytes(&[0; 24]); // max_pages, map_alignment, flags2, stack depth
        Ok(())
    }

    fn readdir(&self, req: &Request<'_>, offset: u64, size: usize, r: &mut Reply<'_>) -> Result<(), Errno> {
        let plus = req.opcode == READDIRPLUS;
        let entries = self.fs.readdir(req.node, offset).map_err(errno_of)?;
        let start = r.out.len();
        for e in entries {
            let padded = (24 + e.name.len()).div_ceil(8) * 8;
            let need = padded + if plus { 128 } else { 0 };
            if r.out.len() - start + need > size {
                break;
            }
            if plus {
                // Dot entries carry no inode: the kernel links no dentry for them.
                let attr = match e.name {
                    b"." | b".." => None,
                    _ => Some(self.fs.attr(e.ino).map_err(errno_of)?),
                };
                self.entry(r, attr.as_ref());
            }
            r.u64(e.ino).u64(e.next).u32(e.name.len() as u32).u32(e.kind >> 12);
            r.bytes(e.name);
            r.bytes(&[0; 8][..padded - 24 - e.name.len()]);
        }
        Ok(())
    }
}

/// Serve `/dev/fuse` on `threads` threads until the mount goes away. The
/// threads are detached: the process exits when the program does.
pub fn spawn(server: Arc<Server>, fd: Arc<OwnedFd>, threads: usize) -> std::io::Result<()> {
    for _ in 0..threads.max(1) {
        let (server, fd) = (server.clone(), fd.clone());
        std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || serve(&server, &fd))?;
    }
    Ok(())
}

fn serve(server: &Server, fd: &OwnedFd) {
    let mut buf = vec![0u8; REQUEST_BUFFER];
    let mut out = Vec::with_capacity(1 << 20);
    loop {
        let n = match nix::unistd::read(fd.as_fd(), &mut buf) {
            Ok(n) => n,
            // Interrupted, or the request was withdrawn before we read it.
            Err(Errno::EINTR | Errno::ENOENT | Errno::EAGAIN) => continue,
            // ENODEV: unmounted. Anything else: the connection is unusable.
            Err(_) => return,
        };
        if server.handle(&buf[..n], &mut out) {
            // ENOENT: the request was interrupted meanwhile; nothing to do.
            let _ = nix::unistd::write(fd, &out);
        }
        while let Some(block) = server.fs.take_bad_block() {
            eprintln!(
                "tote: bundle {}: block {block} is corrupt (SHA-256 mismatch or bad zstd frame); reading the \
                 files it holds fails with EIO",
                server.bundle.display()
            );
        }
        if out.capacity() > 4 << 20 {
            out = Vec::with_capacity(1 << 20);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tote_format::{encode_block, sha256, BlockRef, Entry, EntryKind, Index};

    fn server() -> Server {
        let content = b"#!/bin/sh\necho hi\n";
        let e = encode_block(content, 3, None).unwrap();
        let frame = e.bytes;
        let index = Index {
            blocks: vec![BlockRef {
                codec: e.codec,
                ..BlockRef::zstd(0, frame.len() as u32, 0, content.len() as u32, e.hash)
            }],
            entries: vec![
                Entry {
                    path: b"bin".to_vec(),
                    kind: EntryKind::Dir,
                },
                Entry {
                    path: b"bin/run".to_vec(),
                    kind: EntryKind::File {
                        executable: true,
                        size: content.len() as u64,
                        offset: 0,
                        hash: sha256(content),
                    },
                },
                Entry {
                    path: b"sh".to_vec(),
                    kind: EntryKind::Symlink {
                        target: b"bin/run".to_vec(),
                    },
                },
            ],
            refs: vec![],
        };
        Server {
            fs: Fs::new(
                index,
                Box::new(crate::fuse::Mapped {
                    data: Box::leak(frame.into_boxed_slice()),
                    done: |_| {},
                }),
                1 << 20,
            ),
            bundle: "test".into(),
            uid: 1000,
            gid: 100,
            counts: Counts::default(),
            offered: AtomicU32::new(0),
        }
    }

    fn request(opcode: u32, node: u64, body: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&((HEADER + body.len()) as u32).to_le_bytes());
        b.extend_from_slice(&opcode.to_le_bytes());
        b.extend_from_slice(&77u64.to_le_bytes());
        b.extend_from_slice(&node.to_le_bytes());
        b.extend_from_slice(&[0; 16]); // uid, gid, pid, extlen, padding
        b.extend_from_slice(body);
        b
    }

    /// (error, payload) of the reply to one request.
    fn ask(s: &Server, opcode: u32, node: u64, body: &[u8]) -> (i32, Vec<u8>) {
        let mut out = Vec::new();
        assert!(s.handle(&request(opcode, node, body), &mut out));
        assert_eq!(u32_at(&out, 0).unwrap() as usize, out.len(), "length field");
        assert_eq!(u64_at(&out, 8), Some(77), "unique echoed");
        (i32::from_le_bytes(out[4..8].try_into().unwrap()), out[16..].to_vec())
    }

    fn read_in(offset: u64, size: u32) -> Vec<u8> {
        let mut b = vec![0u8; 40];
        b[8..16].copy_from_slice(&offset.to_le_bytes());
        b[16..20].copy_from_slice(&size.to_le_bytes());
        b
    }

    #[test]
    fn init_negotiates_version_and_flags() {
        let s = server();
        let mut body = Vec::new();
        for v in [7u32, 40, 128 * 1024, u32::MAX] {
            body.extend_from_slice(&v.to_le_bytes());
        }
        let (err, out) = ask(&s, INIT, 0, &body);
        assert_eq!(err, 0);
        assert_eq!(out.len(), 64);
        assert_eq!((u32_at(&out, 0), u32_at(&out, 4)), (Some(7), Some(MINOR)));
        assert_eq!(u32_at(&out, 8), Some(128 * 1024), "readahead as offered");
        assert_eq!(u32_at(&out, 12), Some(WANTED));
        body[4..8].copy_from_slice(&19u32.to_le_bytes());
        body[12..16].copy_from_slice(&ASYNC_READ.to_le_bytes());
        let (_, out) = ask(&s, INIT, 0, &body);
        assert_eq!(
            (out.len(), u32_at(&out, 4), u32_at(&out, 12)),
            (24, Some(19), Some(ASYNC_READ))
        );
    }

    #[test]
    fn opens_cost_no_round_trip_where_the_kernel_allows() {
        let s = server();
        assert_eq!(ask(&s, OPEN, 3, &[0; 8]).0, 0, "before INIT: OPEN answered");
        let mut body = Vec::new();
        for v in [7u32, 40, 128 * 1024, NO_OPEN_SUPPORT | NO_OPENDIR_SUPPORT] {
            body.extend_from_slice(&v.to_le_bytes());
        }
        ask(&s, INIT, 0, &body);
        assert_eq!(ask(&s, OPEN, 3, &[0; 8]).0, -(Errno::ENOSYS as i32));
        assert_eq!(ask(&s, OPENDIR, ROOT, &[0; 8]).0, -(Errno::ENOSYS as i32));
    }

    #[test]
    fn lookup_getattr_read_readlink() {
        let s = server();
        let (err, out) = ask(&s, LOOKUP, ROOT, b"bin\0");
        assert_eq!(err, 0);
        let bin = u64_at(&out, 0).unwrap();
        assert_eq!(u64_at(&out, 16), Some(TTL_SECS));
        let (_, out) = ask(&s, LOOKUP, bin, b"run\0");
        let run = u64_at(&out, 0).unwrap();
        // fuse_attr inside the entry: mode at 40 + 60, uid at 40 + 68.
        assert_eq!(u32_at(&out, 100), Some(0o100555));
        assert_eq!(u32_at(&out, 108), Some(1000));
        let (err, out) = ask(&s, LOOKUP, bin, b"nope\0");
        assert_eq!((err, u64_at(&out, 0)), (0, Some(0)), "negative entry, cached");
        let (err, out) = ask(&s, GETATTR, run, &[0; 16]);
        assert_eq!((err, u64_at(&out, 16 + 8)), (0, Some(18)), "size");
        let (err, out) = ask(&s, OPEN, run, &[0; 8]);
        assert_eq!((err, u32_at(&out, 8)), (0, Some(FOPEN_KEEP_CACHE)));
        assert_eq!(ask(&s, OPEN, run, &[2, 0, 0, 0, 0, 0, 0, 0]).0, -(Errno::EROFS as i32));
        assert_eq!(ask(&s, READ, run, &read_in(10, 100)), (0, b"echo hi\n".to_vec()));
        assert_eq!(ask(&s, READ, run, &read_in(100, 100)), (0, Vec::new()));
        let (_, out) = ask(&s, LOOKUP, ROOT, b"sh\0");
        let sh = u64_at(&out, 0).unwrap();
        assert_eq!(ask(&s, READLINK, sh, &[]), (0, b"bin/run".to_vec()));
        assert_eq!(ask(&s, READLINK, run, &[]).0, -(Errno::EINVAL as i32));
        assert_eq!(ask(&s, GETATTR, 99, &[]).0, -(Errno::ENOENT as i32));
        assert_eq!(ask(&s, 4 /* SETATTR */, run, &[]).0, -(Errno::ENOSYS as i32));
    }

    #[test]
    fn readdir_fits_the_buffer_and_resumes() {
        let s = server();
        let (err, out) = ask(&s, READDIR, ROOT, &read_in(0, 4096));
        assert_eq!(err, 0);
        let mut names = Vec::new();
        let mut at = 0;
        let mut last = 0;
        while at < out.len() {
            let len = u32_at(&out, at + 16).unwrap() as usize;
            names.push(String::from_utf8_lossy(&out[at + 24..at + 24 + len]).into_owned());
            last = u64_at(&out, at + 8).unwrap();
            at += (24 + len).div_ceil(8) * 8;
        }
        assert_eq!(names, [".", "..", "bin", "sh"]);
        assert_eq!(last, 4);
        // Room for two entries only: the listing continues from their offset.
        let (_, out) = ask(&s, READDIR, ROOT, &read_in(0, 64));
        assert_eq!(out.len(), 64);
        assert_eq!(u64_at(&out, 32 + 8), Some(2));
        let (_, plus) = ask(&s, READDIRPLUS, ROOT, &read_in(2, 4096));
        assert_eq!(u64_at(&plus, 0), Some(2), "bin's inode in its entry_out");
        assert_eq!(ask(&s, OPENDIR, ROOT, &[0; 8]).0, 0);
    }

    #[test]
    fn malformed_requests_get_no_panic() {
        let s = server();
        let mut out = Vec::new();
        for cut in 0..HEADER {
            assert!(!s.handle(&request(LOOKUP, ROOT, b"bin\0")[..cut], &mut out));
        }
        assert_eq!(ask(&s, READ, 3, &[1, 2, 3]).0, -(Errno::EINVAL as i32));
        assert_eq!(ask(&s, INIT, 0, &[7]).0, -(Errno::EINVAL as i32));
        assert_eq!(ask(&s, READDIR, 3, &read_in(0, 4096)).0, -(Errno::ENOTDIR as i32));
        let mut lying = request(GETATTR, ROOT, &[]);
        lying[0..4].copy_from_slice(&1000u32.to_le_bytes());
        assert!(!s.handle(&lying, &mut out), "length beyond the buffer");
        assert!(!s.handle(&request(FORGET, 3, &[1, 0, 0, 0, 0, 0, 0, 0]), &mut out));
    }
}
