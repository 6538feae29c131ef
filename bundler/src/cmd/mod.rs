//! One module per subcommand, each owning its arguments (`Args`), its help
//! examples (`HELP`) and its output; `main.rs` only parses and dispatches.

pub mod bundle;
pub mod cache;
pub mod completions;
pub mod diff;
pub mod image;
pub mod inspect;
pub mod key;
pub mod ls;
pub mod nomad;
pub mod run;
pub mod sign;
pub mod thin;
pub mod verify;

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn every_help_shows_an_example() {
        let mut cli = crate::Cli::command();
        cli.build();
        let mut help = cli.render_long_help().to_string();
        assert!(help.contains("Examples:\n  nix build"), "{help}");
        for sub in cli.get_subcommands_mut().filter(|s| s.get_name() != "help") {
            let name = sub.get_name().to_string();
            help = sub.render_long_help().to_string();
            assert!(
                help.contains("Example") && help.contains(&format!("\n  tote {name} ")),
                "tote {name} --help has no example:\n{help}"
            );
        }
    }
}
