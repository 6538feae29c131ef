//! Flake installables (`.#app`, `path:./dir#app`, `github:o/r#x`): built with
//! `nix build --no-link --json`, which Nix 2.8 and newer both understand; the
//! entry point's name comes from `meta.mainProgram` where the package sets it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

const FEATURES: [&str; 2] = ["--extra-experimental-features", "nix-command flakes"];

/// Does the argument name a flake installable rather than a file?
pub fn is_installable(arg: &Path) -> bool {
    let Some(s) = arg.to_str() else {
        return false;
    };
    if arg.symlink_metadata().is_ok() {
        return false;
    }
    const SCHEMES: [&str; 11] = [
        "path:",
        "git+",
        "github:",
        "gitlab:",
        "sourcehut:",
        "flake:",
        "tarball+",
        "file+",
        "http:",
        "https:",
        "hg+",
    ];
    s.contains('#') || SCHEMES.iter().any(|p| s.starts_with(p))
}

pub struct Built {
    /// The output's store path.
    pub out: PathBuf,
    pub main_program: Option<String>,
}

pub fn build(installable: &str) -> Result<Built> {
    let json = nix(&["build", "--no-link", "--json", installable], installable)?;
    let v: serde_json::Value = serde_json::from_slice(&json)
        .with_context(|| format!("nix build {installable}: unexpected output (not JSON)"))?;
    let outputs = v
        .get(0)
        .and_then(|b| b.get("outputs"))
        .and_then(|o| o.as_object())
        .with_context(|| format!("nix build {installable}: no outputs in its JSON"))?;
    // `out` where there is one, else the first by name (determinism).
    let mut names: Vec<&String> = outputs.keys().collect();
    names.sort();
    let name = names
        .iter()
        .find(|n| n.as_str() == "out")
        .or(names.first())
        .with_context(|| format!("nix build {installable}: no outputs"))?;
    let out = outputs[name.as_str()]
        .as_str()
        .with_context(|| format!("nix build {installable}: output {name} has no path"))?;
    let main = nix(
        &[
            "eval",
            "--json",
            installable,
            "--apply",
            "p: p.meta.mainProgram or null",
        ],
        installable,
    )?;
    let main_program = match serde_json::from_slice(&main) {
        Ok(serde_json::Value::String(s)) => Some(s),
        _ => None,
    };
    Ok(Built {
        out: PathBuf::from(out),
        main_program,
    })
}

fn nix(args: &[&str], installable: &str) -> Result<Vec<u8>> {
    crate::ui::progress::step(|| format!("running nix {}", args.join(" ")));
    let out = match Command::new("nix").args(FEATURES).args(args).output() {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("nix not found on PATH: building the flake installable {installable} needs Nix (install it, e.g. apt-get install nix-bin)")
        }
        Err(e) => return Err(e).context("running nix"),
    };
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let line = err
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("error:"))
            .or_else(|| err.lines().map(str::trim).rfind(|l| !l.is_empty()))
            .unwrap_or("no message");
        let line = line.strip_prefix("error: ").unwrap_or(line);
        bail!("nix {} {installable} failed: {line}", args[0]);
    }
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installables_are_told_from_files() {
        for yes in [".#app", "path:./dir#app", "github:owner/repo", "./flake#default"] {
            assert!(is_installable(Path::new(yes)), "{yes}");
        }
        for no in ["./result", "/nix/store/abc-x", "/usr/bin/env", "image.tar", "/"] {
            assert!(!is_installable(Path::new(no)), "{no}");
        }
    }
}
