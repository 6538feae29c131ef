//! `tote thin`: a thin bundle made from a full one, whose blocks its stub
//! fetches from where the full bundle is uploaded.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tote_format::{Location, TRAILER_LEN};

use crate::pack::output::write_bundle;
use crate::reader::load;

pub const HELP: &str = "\
Examples:
  tote thin app --url https://downloads.example.com/app-1.2 -o app-thin
  aws s3 cp app s3://apps/app-1.2 && tote thin app --url s3://apps/app-1.2 --endpoint http://minio:9000 -o app-thin

The full bundle stays as it is and is uploaded as usual; nothing else goes to
storage. A launch of the thin file fetches, with range requests, only the
blocks holding files its cache lacks, checking each against the index. For
s3:// URLs it signs with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and
AWS_SESSION_TOKEN) where set, else asks anonymously. TOTE_REMOTE_URL
overrides the recorded URL at launch (a mirror).";

#[derive(clap::Args)]
pub struct Args {
    /// The full bundle.
    bundle: PathBuf,
    /// Where the full bundle is (or will be) uploaded: http://…, https://… or s3://BUCKET/KEY.
    #[arg(long, value_name = "URL")]
    url: String,
    /// For s3:// URLs: the S3 endpoint (MinIO, Garage, …) [default: AWS's, by region].
    #[arg(long, value_name = "URL")]
    endpoint: Option<String>,
    /// For s3:// URLs: the region to sign for [default: AWS_REGION at launch, else us-east-1].
    #[arg(long)]
    region: Option<String>,
    /// Output file.
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
    /// Use this runtime stub instead of the embedded thin one.
    #[arg(long, value_name = "FILE")]
    stub: Option<PathBuf>,
}

pub fn run(args: &Args) -> Result<()> {
    crate::ui::interrupt::watch();
    let location = location(&args.url, args.endpoint.as_deref(), args.region.as_deref()).context("--url")?;
    write_thin(&args.bundle, &location, &args.output, args.stub.as_deref())
}

/// The remote location the options describe, checked.
pub fn location(url: &str, endpoint: Option<&str>, region: Option<&str>) -> Result<Location> {
    let location = Location {
        url: url.to_owned(),
        endpoint: endpoint.unwrap_or_default().to_owned(),
        region: region.unwrap_or_default().to_owned(),
    };
    location.check()?;
    Ok(location)
}

/// Write `out`, the thin bundle of the full bundle `path` at `location`
/// (with `stub`, else the embedded thin stub), and say so.
pub fn write_thin(path: &Path, location: &Location, out: &Path, stub: Option<&Path>) -> Result<()> {
    let (o, meta, _index) = load(path)?;
    if o.layout.remote.is_some() {
        bail!("{}: already a thin bundle; give the full bundle", path.display());
    }
    let t = &o.layout.trailer;
    let stub = match stub {
        Some(p) => crate::stub::load(Some(p), meta.arch)?,
        None => crate::stub::load_thin(meta.arch)?,
    };
    let meta_bytes = &o.map[t.meta_offset as usize..(t.meta_offset + t.meta_len) as usize];
    let index_bytes = &o.map[t.index_offset as usize..(t.index_offset + t.index_len) as usize];
    // A signed full bundle's trailer is before its signatures.
    let end = o.layout.file_len as usize;
    let full_trailer: [u8; TRAILER_LEN] = o.map[end - TRAILER_LEN..end]
        .try_into()
        .expect("a full bundle ends with its trailer");
    let thin = tote_format::encode_thin(
        &stub,
        meta_bytes,
        index_bytes,
        &full_trailer,
        o.layout.file_len,
        location,
    )
    .with_context(|| format!("{}", path.display()))?;
    let w = write_bundle(out, &thin, |_| Ok(()))?;
    if !crate::ui::progress::quiet() {
        println!(
            "{}: {} bytes, a thin bundle of {} ({} bytes) at {}",
            out.display(),
            w.len,
            path.display(),
            o.layout.file_len,
            location.url
        );
        println!("sha256:{}", w.sha256);
    }
    Ok(())
}
