//! A thin bundle's blocks, fetched from its full bundle (the thin stub
//! flavour only: `--features remote`): for an extraction (`extract`), and
//! as they are read for mount mode (`lazy`); `common` is what both share.

mod common;
mod extract;
mod lazy;

pub use extract::Fetch;
pub use lazy::Lazy;
