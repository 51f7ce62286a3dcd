//! `pagepulse topics create|list|docs`.

use clap::Subcommand;

use crate::config::Config;
use crate::kafka::admin::{self, Created};
use crate::kafka::topics;

/// Topic commands.
#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Create every topic defined in topics/ that does not exist yet (idempotent).
    Create,
    /// List the broker's topics, marking pagepulse's own.
    List,
    /// Print the topic reference (Markdown) generated from topics/.
    Docs,
}

/// Runs a topic command.
pub fn run(cmd: &TopicsCommand, cfg: &Config) -> anyhow::Result<()> {
    match cmd {
        TopicsCommand::Create => {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            for c in rt.block_on(admin::create(cfg, topics::all()))? {
                match c {
                    Created::Created(n) => println!("created {n}"),
                    Created::Existed(n) => println!("exists  {n}"),
                }
            }
        }
        TopicsCommand::List => {
            for t in admin::list(cfg)? {
                let mark = t.logical.map(|l| format!("  (pagepulse: {l})")).unwrap_or_default();
                println!("{}\t{} partitions{}", t.name, t.partitions, mark);
            }
        }
        TopicsCommand::Docs => print!("{}", topics::markdown()),
    }
    Ok(())
}
