//! What fetching for an extraction and for a mount share: the client for
//! the remote location, the check that the object there is the full
//! bundle, and ranges of blocks fetched and checked against the index.

use tote_format::{sha256, Index, Remote};
use tote_net::Client;

use crate::error::{Code, Failure, Result};

/// Where the blocks come from, as the launch resolves it: the recorded
/// location, or `TOTE_REMOTE_URL`'s (see `Client::for_location`).
pub fn client(remote: &Remote) -> Result<Client> {
    let l = &remote.location;
    let mut c = Client::for_location(&l.url, &l.endpoint, &l.region).map_err(|e| Failure::new(Code::Usage, e))?;
    if let Some(t) = timeout()? {
        c.timeout = t;
    }
    Ok(c)
}

/// `TOTE_REMOTE_TIMEOUT`: seconds one request waits to connect or for
/// bytes before it is tried again (default 30). Read here rather than in
/// `controls`, which the launch imports: this module sits below it.
fn timeout() -> Result<Option<std::time::Duration>> {
    let Some(v) = std::env::var_os("TOTE_REMOTE_TIMEOUT").filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    v.to_str()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0 && *s <= 3600.0)
        .map(|s| Some(std::time::Duration::from_secs_f64(s)))
        .ok_or_else(|| {
            Failure::new(
                Code::Usage,
                format!(
                    "TOTE_REMOTE_TIMEOUT={}: expected seconds, more than 0 and at most 3600",
                    v.to_string_lossy()
                ),
            )
        })
}

/// Refuse an object at the remote location that is not the full bundle
/// this thin file names (its length and trailer differ; a signed full
/// bundle may follow it with its signatures): one request. Returns the
/// object's length, which every range answer must then state.
pub fn check_object(client: &Client, remote: &Remote) -> Result<u64> {
    let fail = |what: String| Failure::new(Code::Remote, what);
    let (start, len) = remote.object_probe();
    let (got, total) = client.probe(start, len).map_err(|e| fail(e.to_string()))?;
    if !remote.is_object(&got, total) {
        return Err(fail(format!(
            "{}: the object there ({total} bytes) is not the bundle this thin file was made from \
             ({} bytes, bundle {}): it was replaced (by another build under the same name?); make \
             the thin file again, or point TOTE_REMOTE_URL at the right one",
            client.target.url,
            remote.full_len,
            remote.full.bundle_id()
        )));
    }
    Ok(total)
}

/// Every block's place in the data section, and its hash.
pub type Places = Vec<(u64, u32, [u8; 32])>;

pub fn places(index: &Index) -> Places {
    index.blocks.iter().map(|b| (b.offset, b.clen, b.hash.0)).collect()
}

/// Blocks `first..=last` (of `blocks`, at `data_at` in an object of
/// `full_len` bytes) in one request, each checked against its hash; a
/// range that does not match is fetched once more.
pub fn fetch_checked(
    client: &Client,
    blocks: &Places,
    data_at: u64,
    full_len: u64,
    first: usize,
    last: usize,
) -> std::result::Result<Vec<u8>, String> {
    let start = blocks[first].0;
    let end = blocks[last].0 + u64::from(blocks[last].1);
    let mut result = Err(String::new());
    for attempt in 0..2 {
        result = client
            .range(data_at + start, end - start, full_len)
            .map_err(|e| e.to_string())
            .and_then(|bytes| check(client, blocks, first, last, &bytes).map(|()| bytes));
        match &result {
            Err(e) if attempt == 0 && e.contains("does not match") => continue,
            _ => break,
        }
    }
    result
}

fn check(client: &Client, blocks: &Places, first: usize, last: usize, bytes: &[u8]) -> std::result::Result<(), String> {
    let start = blocks[first].0;
    for (b, (off, clen, hash)) in blocks.iter().enumerate().take(last + 1).skip(first) {
        let at = (off - start) as usize;
        if sha256(&bytes[at..at + *clen as usize]).0 != *hash {
            return Err(format!(
                "{}: block {b} does not match its SHA-256 in the index, twice: the object there is damaged, \
                 or not the bundle this thin file was made from",
                client.target.url
            ));
        }
    }
    Ok(())
}
