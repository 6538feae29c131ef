//! `tote key`: Ed25519 signing keys in Nix's `name:base64` form.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use anyhow::{Context, Result};
use tote_format::sign::SecretKey;

use crate::signing;

pub const HELP: &str = "\
Examples:
  tote key generate builds.example.org-1 -o builds-1.secret > builds-1.public
  tote key public builds-1.secret
  tote key public --minisign builds-1.secret > builds-1.pub

Keys are Nix's: a key from `nix key generate-secret --key-name NAME` or
`nix-store --generate-binary-cache-key NAME SECRET PUBLIC` works unchanged,
and one tote makes signs store paths for Nix.";

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: KeyCommand,
}

#[derive(clap::Subcommand)]
enum KeyCommand {
    /// Make a secret key (written to a new file, mode 0600) and print its public key.
    Generate {
        /// The key's name, e.g. builds.example.org-1 (no colon or space).
        name: String,
        /// The secret key's file [default: NAME.secret].
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Print the public key of a secret key file.
    Public {
        /// The secret key's file.
        secret: PathBuf,
        /// Print it in minisign's form (for `minisign -V -p FILE`, or its last
        /// line for `minisign -V -P KEY`).
        #[arg(long)]
        minisign: bool,
    },
}

pub fn run(args: &Args) -> Result<()> {
    match &args.command {
        KeyCommand::Generate { name, output } => generate(name, output.clone()),
        KeyCommand::Public { secret, minisign } => {
            let key = signing::read_secret(secret)?.public();
            if *minisign {
                print!("{}", signing::minisign_public(&key));
            } else {
                println!("{key}");
            }
            Ok(())
        }
    }
}

fn generate(name: &str, output: Option<PathBuf>) -> Result<()> {
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut seed))
        .context("reading /dev/urandom for a new key")?;
    let key = SecretKey::from_seed(name, seed).map_err(anyhow::Error::msg)?;
    let path = output.unwrap_or_else(|| PathBuf::from(format!("{name}.secret")));
    // A new file only, never readable by others, even for a moment.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating {} (an existing key is never overwritten)", path.display()))?;
    let written = f.write_all(key.to_text().as_bytes()).and_then(|()| f.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(&path);
        return Err(e).with_context(|| format!("writing {}", path.display()));
    }
    println!("{}", key.public());
    if !crate::ui::progress::quiet() {
        eprintln!("secret key written to {} (keep it private)", path.display());
    }
    Ok(())
}
