//! Memory: the bundle mapped whole for mount mode, its pages dropped from
//! this process once decoded, and the peak resident size for `TOTE_DEBUG`.

use std::fs::File;
use std::path::Path;

use super::arch::MIN_PAGE;
use crate::error::{Code, Failure, Result};

/// Map the whole file read-only for the life of the process. (Its bytes
/// cannot change under us: it is this process's executable, so the kernel
/// refuses writes to it with ETXTBSY.)
pub fn map_file(file: &File, path: &Path) -> Result<&'static [u8]> {
    let len = file
        .metadata()
        .map_err(|e| Failure::io(Code::Bundle, "reading bundle", path, &e))?
        .len() as usize;
    let Some(nonzero) = std::num::NonZeroUsize::new(len) else {
        return Ok(&[]);
    };
    // SAFETY: a fresh private read-only mapping; see above for why its
    // contents stay put. It is never unmapped, hence `'static`.
    let ptr = unsafe {
        nix::sys::mman::mmap(
            None,
            nonzero,
            nix::sys::mman::ProtFlags::PROT_READ,
            nix::sys::mman::MapFlags::MAP_PRIVATE,
            file,
            0,
        )
    }
    .map_err(|e| Failure::sys(Code::Bundle, "mapping bundle", path, e))?;
    let start = ptr.as_ptr() as usize;
    let _ = MAPPED.set((start, (start + len).next_multiple_of(MIN_PAGE)));
    // SAFETY: `len` readable bytes at `ptr`, valid forever (never unmapped).
    Ok(unsafe { std::slice::from_raw_parts(ptr.as_ptr().cast::<u8>(), len) })
}

/// Peak resident set size of this process, in KiB.
pub fn peak_rss_kib() -> i64 {
    // SAFETY: a zeroed rusage is valid; getrusage fills it.
    let mut usage: nix::libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer for the call.
    if unsafe { nix::libc::getrusage(nix::libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0;
    }
    usage.ru_maxrss
}

/// The bundle's mapping, `[start, end)`, once `map_file` made it.
static MAPPED: std::sync::OnceLock<(usize, usize)> = std::sync::OnceLock::new();

/// Drop this process's mapping of the pages under `bytes` (part of the
/// `map_file` mapping): the next access maps them again from the page
/// cache. Keeps the pages a long-running server has read out of its memory.
/// Rounded out to 2 MiB: a page fault maps the pages around it too (the
/// kernel's fault-around, which maps whole large folios of the page cache:
/// 1 MiB for 16 pages touched, measured on Linux 6.18 with ext4), and those
/// would stay. Clamped to the mapping: MADV_DONTNEED on a neighbouring
/// anonymous mapping would zero it.
pub fn unmap_pages(bytes: &[u8]) {
    const WINDOW: usize = 2 << 20;
    let Some(&(lo, hi)) = MAPPED.get() else { return };
    let start = (bytes.as_ptr() as usize & !(WINDOW - 1)).max(lo);
    let end = (bytes.as_ptr() as usize + bytes.len()).next_multiple_of(WINDOW).min(hi);
    if start >= end {
        return;
    }
    if let Some(ptr) = std::ptr::NonNull::new(start as *mut std::ffi::c_void) {
        // SAFETY: whole pages inside the private read-only file mapping,
        // which is never unmapped; MADV_DONTNEED only drops them from the
        // page tables, so later reads fault the same bytes back in.
        let _ = unsafe { nix::sys::mman::madvise(ptr, end - start, nix::sys::mman::MmapAdvise::MADV_DONTNEED) };
    }
}
