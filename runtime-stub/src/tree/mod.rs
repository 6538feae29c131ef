//! The bundle's tree on disk: the cache entry a launch runs from (`entry`:
//! warm, verified or extracted), extraction itself (`extract`, sharing
//! files through the `objects` store), the trim after a cold start
//! (`trim`), and `TOTE_EXTRACT` (`export`). The cache's protocol (markers,
//! pins, locks, staging) is the `tote-cache` crate's.

mod entry;
mod export;
mod extract;
mod objects;
pub mod trim;

pub use entry::{Cache, Found, Want};
pub use export::into_dir;
