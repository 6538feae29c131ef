//! Mount mode's file system: the bundle's tree, read-only, over the FUSE
//! protocol. `fs` answers from the verified index and the blocks' frames (no
//! system calls); `protocol` reads requests from `/dev/fuse` and writes
//! the replies, on threads of its own.

mod fs;
mod protocol;

#[cfg_attr(not(feature = "remote"), allow(unused_imports))]
pub use fs::FsError;
pub use fs::{Frames, Fs, Mapped};
pub use protocol::{spawn, Server};
