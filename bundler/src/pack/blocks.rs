//! Step 3: cut the data stream into blocks of at most `block_size` bytes. A
//! new top-level item (store path) starts a new block, so a bundle that
//! shares store paths with one the host already ran needs only the blocks
//! of the items that changed. So does a large file (1 MiB or more): similar
//! large files (`cc1` and `cc1plus`, a library and its PIC build) then
//! start their blocks alike, and each block of the second finds the first's
//! matching block whole, to be compressed against (see `bases`).

use super::order::Content;

/// One run of bytes of a distinct content inside a block.
pub struct Piece {
    /// Index into the stream's distinct contents.
    pub source: usize,
    pub offset: u64,
    pub len: usize,
}

/// Files at least this large start a block.
const LARGE: u64 = 1 << 20;

pub fn cut(unique: &[Content<'_>], block_size: usize) -> Vec<Vec<Piece>> {
    let mut blocks: Vec<Vec<Piece>> = Vec::new();
    let mut cur: Vec<Piece> = Vec::new();
    let mut fill = 0usize;
    for (source, content) in unique.iter().enumerate() {
        let new_item = source > 0 && unique[source - 1].group != content.group;
        if fill > 0 && (new_item || content.size >= LARGE) {
            blocks.push(std::mem::take(&mut cur));
            fill = 0;
        }
        let mut off = 0u64;
        while off < content.size {
            let take = ((content.size - off) as usize).min(block_size - fill);
            cur.push(Piece {
                source,
                offset: off,
                len: take,
            });
            off += take as u64;
            fill += take;
            if fill == block_size {
                blocks.push(std::mem::take(&mut cur));
                fill = 0;
            }
        }
    }
    if !cur.is_empty() {
        blocks.push(cur);
    }
    blocks
}
