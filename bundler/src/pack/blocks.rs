//! Step 3: cut the data stream into blocks of at most `block_size` bytes. A
//! new top-level item (store path) starts a new block, so a bundle that
//! shares store paths with one the host already ran needs only the blocks
//! of the items that changed.

use super::order::Content;

/// One run of bytes of a distinct content inside a block.
pub struct Piece {
    /// Index into the stream's distinct contents.
    pub source: usize,
    pub offset: u64,
    pub len: usize,
}

pub fn cut(unique: &[Content<'_>], block_size: usize) -> Vec<Vec<Piece>> {
    let mut blocks: Vec<Vec<Piece>> = Vec::new();
    let mut cur: Vec<Piece> = Vec::new();
    let mut fill = 0usize;
    for (source, content) in unique.iter().enumerate() {
        if fill > 0 && source > 0 && unique[source - 1].group != content.group {
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
