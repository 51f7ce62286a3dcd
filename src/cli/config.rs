//! `pagepulse config docs`.

use clap::Subcommand;

use crate::config::reference;

/// Configuration commands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the configuration reference (Markdown) generated from the config doc comments.
    Docs,
}

/// Runs a configuration command. None needs the configuration itself.
pub fn run(cmd: &ConfigCommand) {
    match cmd {
        ConfigCommand::Docs => print!("{}", reference::markdown()),
    }
}
