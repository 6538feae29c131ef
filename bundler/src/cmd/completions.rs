//! `tote completions SHELL` and `tote man`: generated from the same
//! definition as the command line itself, so they cannot drift from it.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::ui::print;

pub const COMPLETIONS_HELP: &str = "Examples:
  tote completions bash > /usr/share/bash-completion/completions/tote
  tote completions zsh > \"${fpath[1]}/_tote\"
  tote completions fish > ~/.config/fish/completions/tote.fish
  scripts/install installs them all, with the man pages";

pub const MAN_HELP: &str = "Examples:
  tote man | man -l -
  tote man --dir /usr/local/share/man/man1   # tote.1, tote-bundle.1, ...";

#[derive(clap::Args)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell.
    #[arg(value_name = "SHELL")]
    shell: clap_complete::Shell,
}

#[derive(clap::Args)]
pub struct ManArgs {
    /// Write tote.1 and tote-<command>.1 into this directory instead.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// `tote completions SHELL` for the command line `cli`.
pub fn completions(args: &CompletionsArgs, mut cli: clap::Command) -> Result<()> {
    use clap_complete::Generator;
    cli.set_bin_name("tote");
    cli.build();
    print(|out| args.shell.try_generate(&cli, out))
}

/// `tote man`: the page for tote to stdout, or every page into `--dir`.
pub fn man(args: &ManArgs, cli: clap::Command) -> Result<()> {
    let Some(dir) = &args.dir else {
        return print(|out| clap_mangen::Man::new(cli).render(out));
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut pages = vec![("tote.1".to_string(), cli.clone())];
    for sub in cli.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = format!("tote-{}", sub.get_name());
        let page = sub
            .clone()
            .name(&*name.clone().leak())
            .version(env!("CARGO_PKG_VERSION"));
        pages.push((format!("{name}.1"), page));
    }
    for (file, page) in pages {
        let path = dir.join(&file);
        let mut bytes = Vec::new();
        clap_mangen::Man::new(page)
            .render(&mut bytes)
            .context("rendering a man page")?;
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
