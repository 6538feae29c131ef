//! Mount mode's file system: the bundle's tree, read-only, over the FUSE
//! protocol. `fs` answers from the verified index and the mapped data (no
//! system calls); `protocol` reads requests from `/dev/fuse` and writes
//! the replies, on threads of its own.

mod fs;
mod protocol;

pub use fs::Fs;
pub use protocol::{spawn, Server};
