//! C symbols that a static link against musl's `libc.a` takes from here
//! rather than from libc (see bundler/build.rs): each does what musl's own
//! does in a static program, without what it would pull in.

#![cfg(all(tote_musl, not(test)))]

use std::ffi::{c_char, c_int, c_void};

/// libgcc's unwinder asks glibc's loader for the unwind tables of an
/// address. There is no loader in a static musl binary, and with
/// `panic = "abort"` nothing unwinds: "not found".
#[no_mangle]
extern "C" fn _dl_find_object(_pc: *mut c_void, _result: *mut c_void) -> c_int {
    -1
}

/// std looks some functions up at run time (its `weak!` symbols). A static
/// musl program has no loader: musl's `dlsym` finds nothing either, but
/// formats an error message with `vsnprintf` (and with it the whole of
/// printf, 10 KB) for a `dlerror` nobody calls.
#[no_mangle]
extern "C" fn dlsym(_handle: *mut c_void, _symbol: *const c_char) -> *mut c_void {
    std::ptr::null_mut()
}

/// std names a thread only when asked to, and the stub never asks; musl's
/// version would pull in `snprintf` for the `/proc` path it writes to.
#[no_mangle]
extern "C" fn pthread_setname_np(_thread: usize, _name: *const c_char) -> c_int {
    0
}

/// std's networking (the thin flavour only) asks glibc for its version to
/// decide whether a failed name lookup calls for `__res_init` (before
/// glibc 2.26, resolv.conf was read once). musl rereads it itself: a
/// version past that, so std never calls the shim below.
#[cfg(feature = "remote")]
#[no_mangle]
extern "C" fn gnu_get_libc_version() -> *const c_char {
    c"2.36".as_ptr()
}

#[cfg(feature = "remote")]
#[no_mangle]
extern "C" fn __res_init() -> c_int {
    0
}
