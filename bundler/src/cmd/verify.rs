//! `tote verify`: every hash in a bundle checked (the stub, trailer,
//! metadata and index, every block's hash and decompression, every file's
//! content); exits 1 on any mismatch, naming it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use tote_format::{Decoded, Digest32, EntryKind, Index};

use crate::reader::open;
use crate::signing;

pub const HELP: &str = "Examples:
  tote verify ./app && echo intact
  tote verify --remote ./app-thin
  tote verify --trusted-keys builds-1.public --trusted-keys builds-2:BASE64 --sigs-needed 2 ./app
  tote verify --json --trusted-keys /etc/tote/trusted-keys ./app | jq .signatures

Signatures are always checked: one that does not verify, or a bundle whose
stub or trailer is not what was signed, fails. With --trusted-keys, the
bundle must also be signed by enough of those keys (unexpired).";

#[derive(clap::Args)]
pub struct Args {
    /// The bundle.
    file: PathBuf,
    /// A thin bundle: also fetch every block from its full bundle's URL
    /// (TOTE_REMOTE_URL overrides it; S3 credentials as at launch) and
    /// check it.
    #[arg(long)]
    remote: bool,
    /// A trusted public key (NAME:BASE64), or a file of them in the form of
    /// /etc/tote/trusted-keys (repeatable): fail unless enough of them signed.
    #[arg(long, value_name = "KEY|FILE")]
    trusted_keys: Vec<String>,
    /// How many trusted keys must have signed [default: 1, or the files'].
    #[arg(long, value_name = "N", requires = "trusted_keys",
          value_parser = clap::value_parser!(u32).range(1..=32))]
    sigs_needed: Option<u32>,
    /// Print the result as JSON on stdout (also when the check fails).
    #[arg(long)]
    json: bool,
}

pub fn run(args: &Args) -> Result<()> {
    let result = verify(args);
    if args.json {
        let out = match &result {
            Ok(v) => v.clone(),
            Err(e) => serde_json::json!({
                "file": args.file.display().to_string(),
                "ok": false,
                "error": format!("{e:#}"),
            }),
        };
        println!("{}", serde_json::to_string_pretty(&out).expect("JSON of JSON values"));
    }
    result.map(|_| ())
}

/// Check the signatures of the bundle `o` under the policy of `args`;
/// fails naming the region that is not what was signed.
fn check_signatures(args: &Args, o: &crate::reader::Opened) -> Result<tote_format::sign::Verdict> {
    let path = args.file.display();
    let policy = signing::policy_from_args(&args.trusted_keys, args.sigs_needed.map(|n| n as usize))?;
    let verdict = signing::check(&o.layout, &o.map, &policy, signing::now());
    if o.layout.signed.is_some() {
        if let Some(region) = verdict.changed {
            let why = verdict.refused.clone().unwrap_or_default();
            bail!("{path}: {region}: {why}");
        }
        if signing::any_invalid(&verdict) {
            bail!("{path}: signature: {}", verdict.refused.clone().unwrap_or_default());
        }
    }
    if !args.trusted_keys.is_empty() {
        if let Some(why) = &verdict.refused {
            bail!("{path}: not trusted: {why}");
        }
    }
    Ok(verdict)
}

fn verify(args: &Args) -> Result<serde_json::Value> {
    let path: &Path = &args.file;
    let o = open(path)?;
    let ctx = || format!("{}", path.display());
    let stub_arch = crate::stub::check(&o.map[..o.layout.trailer.data_offset as usize])
        .with_context(|| format!("{}: stub", path.display()))?;
    let meta = o.layout.meta(&o.map).with_context(ctx)?;
    if stub_arch != meta.arch {
        bail!(
            "{}: the stub is an {stub_arch} program, but the metadata says the bundle is for {}",
            path.display(),
            meta.arch
        );
    }
    let index = o.layout.index(&o.map).with_context(ctx)?;
    meta.check_stats(&index).with_context(ctx)?;
    let verdict = check_signatures(args, &o)?;
    let quiet = crate::ui::progress::quiet() || args.json;
    let report = |thin: Option<&str>| {
        if !quiet {
            for line in signing::signer_lines(&verdict, !args.trusted_keys.is_empty()) {
                println!("  signed by {line}");
            }
        }
        serde_json::json!({
            "file": path.display().to_string(),
            "ok": true,
            "bundle_id": o.layout.trailer.bundle_id().to_hex(),
            "arch": meta.arch.to_string(),
            "blocks": index.blocks.len(),
            "entries": index.entries.len(),
            "blocks_checked": thin.is_none(),
            "signatures": signing::signers_json(&verdict),
            "trusted": (!args.trusted_keys.is_empty()).then_some(verdict.refused.is_none()),
        })
    };
    let fetched;
    let data = match &o.layout.remote {
        None if args.remote => bail!("{}: --remote is for thin bundles, and this one is full", path.display()),
        None => o.layout.data(&o.map).with_context(ctx)?,
        Some(r) if !args.remote => {
            if !quiet {
                println!(
                    "{}: ok ({}, thin: {} blocks at {} not checked (--remote checks them), {} entries, bundle id {})",
                    path.display(),
                    meta.arch,
                    index.blocks.len(),
                    r.location.url,
                    index.entries.len(),
                    o.layout.trailer.bundle_id()
                );
            }
            return Ok(report(Some(&r.location.url)));
        }
        Some(r) => {
            fetched = fetch_data(r, o.layout.data_len()).with_context(ctx)?;
            &fetched[..]
        }
    };

    // Every block once: its hash, its decompression, and the hash of every
    // file whose bytes it holds.
    let (blocks_bad, files_bad) = check_blocks_and_files(&index, data);
    if let Some(first) = blocks_bad.first() {
        bail!(
            "{}: {first} ({} of {} blocks corrupt): the file is damaged; copy or download it again",
            path.display(),
            blocks_bad.len(),
            index.blocks.len()
        );
    }
    if let Some(first) = files_bad.first() {
        bail!(
            "{}: content of /{first} does not match its SHA-256 ({} files): the file is damaged; copy or download it again",
            path.display(),
            files_bad.len()
        );
    }
    if !quiet {
        println!(
            "{}: ok ({}, {} blocks, {} entries, bundle id {})",
            path.display(),
            meta.arch,
            index.blocks.len(),
            index.entries.len(),
            o.layout.trailer.bundle_id()
        );
    }
    Ok(report(None))
}

/// A thin bundle's whole data section, fetched from its full bundle in
/// 16 MiB ranges, several at a time, after checking that the object there
/// is that bundle (its size and trailer).
#[allow(unsafe_code)]
fn fetch_data(r: &tote_format::Remote, len: u64) -> Result<memmap2::Mmap> {
    use std::os::unix::fs::FileExt;
    let l = &r.location;
    let client = tote_net::Client::for_location(&l.url, &l.endpoint, &l.region).map_err(anyhow::Error::msg)?;
    let (start, most) = r.object_probe();
    let (got, total) = client.probe(start, most).map_err(|e| anyhow::anyhow!("{e}"))?;
    if !r.is_object(&got, total) {
        bail!(
            "{}: the object there ({total} bytes) is not the bundle this thin file was made from ({} bytes): it \
             was replaced",
            client.target.url,
            r.full_len
        );
    }
    let file = tempfile::tempfile().context("a temporary file for the fetched blocks")?;
    file.set_len(len).context("sizing the temporary file")?;
    const CHUNK: u64 = 16 << 20;
    let chunks: Vec<u64> = (0..len.div_ceil(CHUNK)).map(|i| i * CHUNK).collect();
    chunks.par_iter().try_for_each(|&at| -> Result<()> {
        let n = CHUNK.min(len - at);
        let bytes = client
            .range(r.data_offset() + at, n, total)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        file.write_all_at(&bytes, at).context("writing fetched blocks")
    })?;
    // SAFETY: a private temporary file nobody else holds.
    unsafe { memmap2::Mmap::map(&file) }.context("mapping the fetched blocks")
}

/// Decode every block (in parallel batches) and hash every file's bytes as
/// the blocks go by. Returns the block errors and the paths of bad files.
fn check_blocks_and_files(index: &Index, data: &[u8]) -> (Vec<String>, Vec<String>) {
    // Distinct stream ranges (dedup makes entries share them), by block.
    let mut ranges: BTreeMap<(u64, u64), (Digest32, Vec<usize>)> = BTreeMap::new();
    for (i, e) in index.entries.iter().enumerate() {
        if let EntryKind::File { size, offset, hash, .. } = &e.kind {
            ranges
                .entry((*offset, *size))
                .or_insert_with(|| (*hash, Vec::new()))
                .1
                .push(i);
        }
    }
    let ranges: Vec<_> = ranges.into_iter().collect();
    let mut by_block: Vec<Vec<usize>> = vec![Vec::new(); index.blocks.len()];
    let mut hashers: Vec<Sha256> = Vec::with_capacity(ranges.len());
    let mut bad_files = Vec::new();
    for (r, ((offset, size), (hash, entries))) in ranges.iter().enumerate() {
        hashers.push(Sha256::new());
        let blocks = index.blocks_for(*offset, *size);
        if blocks.is_empty() && Digest32(Sha256::digest([]).into()) != *hash {
            bad_files.extend(
                entries
                    .iter()
                    .map(|&i| String::from_utf8_lossy(&index.entries[i].path).into_owned()),
            );
        }
        for b in blocks {
            by_block[b].push(r);
        }
    }
    let mut bad_blocks = Vec::new();
    let batch = rayon::current_num_threads() * 2;
    let numbered: Vec<usize> = (0..index.blocks.len()).collect();
    for chunk in numbered.chunks(batch) {
        let decoded: Vec<_> = chunk
            .par_iter()
            .map(|&n| {
                // Its base blocks decoded again: each thread on its own.
                Decoded::default().block(index, data, n)
            })
            .collect();
        for (&n, res) in chunk.iter().zip(decoded) {
            let out = match res {
                Ok(out) => out,
                Err(e) => {
                    bad_blocks.push(e.to_string());
                    continue;
                }
            };
            let block = &index.blocks[n];
            let bend = block.raw_offset + u64::from(block.rlen);
            for &r in &by_block[n] {
                let ((offset, size), (hash, entries)) = &ranges[r];
                hashers[r].update(&out[block.overlap(*offset, offset + size)]);
                if offset + size <= bend {
                    let d: [u8; 32] = std::mem::take(&mut hashers[r]).finalize().into();
                    if d != hash.0 {
                        bad_files.extend(
                            entries
                                .iter()
                                .map(|&i| String::from_utf8_lossy(&index.entries[i].path).into_owned()),
                        );
                    }
                }
            }
        }
    }
    (bad_blocks, bad_files)
}
