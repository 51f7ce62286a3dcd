//! The command line: one file per subcommand, each a thin layer over the library.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::Config;

pub mod backfill;
pub mod config;
pub mod consume;
pub mod demo;
pub mod ingest;
pub mod simulate;
pub mod topics;

/// pagepulse: actor-based stream processing for social and web audience analytics.
///
/// Reads JSON records from Kafka topics, runs them through pipelines of actors, and writes
/// results to output topics, Prometheus metrics and dashboards. Configuration comes from a TOML
/// file (--config) plus environment overrides such as PAGEPULSE_BROKERS.
#[derive(Debug, Parser)]
#[command(name = "pagepulse", version, about, long_about)]
pub struct Cli {
    /// TOML configuration file; without it the defaults and environment overrides apply.
    #[arg(long, short = 'c', global = true, env = "PAGEPULSE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the pipelines until SIGINT or SIGTERM (graceful: drain, flush, commit, exit 0).
    Run,
    /// Manage the topics defined in topics/.
    #[command(subcommand)]
    Topics(topics::TopicsCommand),
    /// The configuration file: its reference.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Produce demo records to an input topic.
    #[command(subcommand)]
    Demo(demo::DemoCommand),
    /// Load hourly pageview dumps or blacklist files into Kafka.
    #[command(subcommand)]
    Ingest(ingest::IngestCommand),
    /// Ask the running instances for the reports of a range of past hours, and follow them.
    #[command(subcommand)]
    Backfill(backfill::BackfillCommand),
    /// Print records of a topic (works against brokers that kcat cannot talk to, such as tansu).
    Consume(consume::ConsumeArgs),
    /// Run a simulated platform (a Graph-API-compatible server) until SIGINT or SIGTERM.
    #[command(subcommand)]
    Simulate(simulate::SimulateCommand),
}

impl Cli {
    /// Loads the configuration this invocation names.
    pub fn load_config(&self) -> anyhow::Result<Config> {
        Ok(Config::load(self.config.as_deref())?)
    }
}

/// Runs the parsed command line.
pub fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Topics(topics::TopicsCommand::Docs) => {
            print!("{}", crate::kafka::topics::markdown());
            Ok(())
        }
        Command::Config(cmd) => {
            config::run(cmd);
            Ok(())
        }
        Command::Run => {
            let cfg = cli.load_config()?;
            Ok(crate::app::run(cfg)?)
        }
        Command::Topics(cmd) => topics::run(cmd, &cli.load_config()?),
        Command::Demo(cmd) => demo::run(cmd, &cli.load_config()?),
        Command::Ingest(cmd) => ingest::run(cmd, &cli.load_config()?),
        Command::Consume(args) => consume::run(args, &cli.load_config()?),
        Command::Backfill(cmd) => backfill::run(cmd, &cli.load_config()?),
        Command::Simulate(cmd) => simulate::run(cmd),
    }
}
