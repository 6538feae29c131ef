//! `tote sign`: add signatures to a bundle (or take them all off), in
//! place and atomically; and what `tote bundle --sign` uses.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use tote_format::sign::{self, SecretKey, Signature};
use tote_format::Index;

use crate::pack::output::write_file;
use crate::reader::load;
use crate::signing;

pub const HELP: &str = "\
Examples:
  tote sign app --key builds-1.secret
  tote sign app --key builds-2.secret --expires 90d
  tote sign app --key builds-1.secret --minisig && minisign -V -P KEY -m app
  tote sign app --remove

Signatures go after the bundle, outside its id: the unsigned bundle is
unchanged, `--remove` gives it back byte for byte, and signatures added in
any order make the same file. Signing again with a key replaces its
signature. A host refuses unsigned or untrusted bundles where
/etc/tote/trusted-keys exists or TOTE_TRUSTED_KEYS is set (docs/security.md).";

#[derive(clap::Args)]
pub struct Args {
    /// The bundle (full or thin), signed in place.
    file: PathBuf,
    /// A secret key file (repeatable: one signature per key).
    #[arg(long, value_name = "SECRET", required_unless_present = "remove")]
    key: Vec<PathBuf>,
    /// When the signatures stop counting: a date (2027-06-30), a UTC time
    /// (2027-06-30T12:00:00Z) or a span (90d, 12h) [default: never].
    #[arg(long, value_name = "WHEN")]
    expires: Option<String>,
    /// Also write FILE.minisig, minisign's detached signature of the signed
    /// file, by the first --key.
    #[arg(long)]
    minisig: bool,
    /// Take every signature off instead.
    #[arg(long, conflicts_with_all = ["key", "expires", "minisig"])]
    remove: bool,
}

pub fn run(args: &Args) -> Result<()> {
    crate::ui::interrupt::watch();
    let path = &args.file;
    if args.remove {
        let (o, _, _) = load(path)?;
        let Some(sigs) = &o.layout.signed else {
            bail!("{}: not signed; nothing to remove", path.display());
        };
        let n = sigs.list.len();
        rewrite(path, &o.map[..o.layout.file_len as usize], &[])?;
        say(format!("{}: {n} signature{} removed", path.display(), plural(n)));
        return Ok(());
    }
    let keys: Vec<SecretKey> = args
        .key
        .iter()
        .map(|k| signing::read_secret(k))
        .collect::<Result<_>>()?;
    let now = signing::now();
    let expires = match &args.expires {
        Some(t) => signing::parse_expiry(t, now)?,
        None => 0,
    };
    let names = sign_file(path, &keys, expires)?;
    say(format!("{}: signed by {}", path.display(), names.join(", ")));
    if args.minisig {
        let file = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let name = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let out = PathBuf::from(format!("{}.minisig", path.display()));
        write_file(&out, 0o644, |w| {
            w.write_all(signing::minisig(&keys[0], &file, &name).as_bytes())
                .context("writing the signature")
        })?;
        say(format!("{}: minisign signature by {}", out.display(), keys[0].name));
    }
    Ok(())
}

fn say(line: String) {
    if !crate::ui::progress::quiet() {
        println!("{line}");
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// Sign `path` in place with `keys`, keeping its other signatures (a
/// key's earlier one is replaced). The bundle is checked first: its
/// stub, sections and every block's SHA-256 (a thin bundle's blocks are
/// pinned by its index). Returns the signers' names.
pub fn sign_file(path: &Path, keys: &[SecretKey], expires: u64) -> Result<Vec<String>> {
    let (o, meta, index) = load(path)?;
    let ctx = || format!("{}", path.display());
    let stub_arch = crate::stub::check(&o.map[..o.layout.trailer.data_offset as usize])
        .with_context(|| format!("{}: stub", path.display()))?;
    if stub_arch != meta.arch {
        bail!(
            "{}: the stub is an {stub_arch} program, but the bundle is for {}",
            path.display(),
            meta.arch
        );
    }
    meta.check_stats(&index).with_context(ctx)?;
    if o.layout.remote.is_none() {
        check_block_hashes(&index, o.layout.data(&o.map).with_context(ctx)?).with_context(ctx)?;
    }
    let about = signing::statement_of(&o.layout, &o.map);
    let mut list: Vec<Signature> = match &o.layout.signed {
        Some(s) if s.statement != about => bail!(
            "{}: its signatures are for other bytes (its {} changed since); remove them first (tote sign --remove)",
            path.display(),
            s.statement.changed(&about).unwrap_or("content")
        ),
        Some(s) => s.list.clone(),
        None => Vec::new(),
    };
    for k in keys {
        list.retain(|s| s.key != k.public().key);
        list.push(k.sign(&about, expires));
    }
    if list.len() > sign::MAX_SIGNATURES {
        bail!("{}: at most {} signatures", path.display(), sign::MAX_SIGNATURES);
    }
    let section = sign::encode_section(&about, &list).with_context(ctx)?;
    rewrite(path, &o.map[..o.layout.file_len as usize], &section)?;
    Ok(keys.iter().map(|k| k.name.clone()).collect())
}

/// Every block's stored bytes against the index's SHA-256.
fn check_block_hashes(index: &Index, data: &[u8]) -> Result<()> {
    index.blocks.par_iter().enumerate().try_for_each(|(n, b)| {
        let stored = b.frame(data);
        if tote_format::sha256(stored) != b.hash {
            bail!("block {n}: SHA-256 mismatch: the file is damaged; copy or download it again");
        }
        Ok(())
    })
}

/// Replace `path` atomically with `bundle` then `section`, keeping its mode.
fn rewrite(path: &Path, bundle: &[u8], section: &[u8]) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .permissions()
        .mode()
        & 0o7777;
    write_file(path, mode, |w| {
        w.write_all(bundle)
            .and_then(|()| w.write_all(section))
            .with_context(|| format!("writing {}", path.display()))
    })?;
    Ok(())
}
