//! `pagepulse simulate graph-api`: a Graph-API-compatible server with deterministic audiences and
//! configurable faults, for the quickstart, tests and benchmarks, that also answers Mastodon's
//! account lookup (the same pages as accounts, the same faults). Runs until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::sync::Arc;

use clap::{Args, Subcommand};

use crate::clock::SystemClock;
use crate::simulate::faults::{SimConfig, MAX_PAGES, MAX_SLOW_MS};
use crate::simulate::graph_api;

/// Simulated platforms.
#[derive(Debug, Subcommand)]
pub enum SimulateCommand {
    /// Serve `GET /{version}/?ids=...&fields=fan_count,followers_count&access_token=...` for the
    /// pages page-000001 ..= page-N, with counts following deterministic trajectories, and
    /// Mastodon's `GET /api/v1/accounts/lookup?acct=page-000001` for the same pages.
    GraphApi(GraphApiArgs),
}

/// Arguments of `simulate graph-api`. Rates are probabilities per request in [0, 1].
#[derive(Debug, Args)]
pub struct GraphApiArgs {
    /// Address to listen on (port 0 picks a free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8787")]
    pub listen: SocketAddr,
    /// Number of simulated pages.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=MAX_PAGES))]
    pub pages: u64,
    /// API version in the path.
    #[arg(long, default_value = "v19.0")]
    pub api_version: String,
    /// Share of requests answered with HTTP 500 (code 2).
    #[arg(long, default_value_t = 0.0, value_parser = rate)]
    pub error_rate: f64,
    /// Throttle every Nth request (code 4, with usage headers).
    #[arg(long)]
    pub throttle_every: Option<NonZeroU64>,
    /// Share of requests throttled at random.
    #[arg(long, default_value_t = 0.0, value_parser = rate)]
    pub throttle_rate: f64,
    /// Delay of slow replies, in milliseconds.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=MAX_SLOW_MS))]
    pub slow_ms: u64,
    /// Share of replies delayed by --slow-ms (every reply unless given).
    #[arg(long, default_value_t = 1.0, value_parser = rate)]
    pub slow_rate: f64,
    /// Share of successful replies with a truncated or otherwise invalid JSON body.
    #[arg(long, default_value_t = 0.0, value_parser = rate)]
    pub malformed_rate: f64,
    /// Seed of the fault sequence (the same seed and request order give the same faults).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Parses a rate: a number in [0, 1]. Clap names the flag in the error.
fn rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        Ok(r) => Err(format!("{r} is not in [0, 1]")),
        Err(e) => Err(format!("not a number: {e}")),
    }
}

impl GraphApiArgs {
    /// The simulator configuration these arguments describe, on the system clock.
    pub fn config(&self) -> SimConfig {
        SimConfig {
            pages: self.pages,
            version: self.api_version.clone(),
            error_rate: self.error_rate,
            throttle_every: self.throttle_every,
            throttle_rate: self.throttle_rate,
            slow_ms: self.slow_ms,
            slow_rate: self.slow_rate,
            malformed_rate: self.malformed_rate,
            seed: self.seed,
            clock: Arc::new(SystemClock),
        }
    }
}

/// Runs a simulator until SIGINT or SIGTERM.
pub fn run(cmd: &SimulateCommand) -> anyhow::Result<()> {
    let SimulateCommand::GraphApi(args) = cmd;
    actix_rt::System::new().block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let (mut term, mut int) = (signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?);
        let server = graph_api::start(args.config(), args.listen)?;
        // stdout, one line, so scripts can read the address chosen for port 0: they parse the
        // first URL, so the Mastodon instance's comes after it.
        let addr = server.addr();
        println!(
            "graph-api simulator listening on http://{addr}/{}/ ({} pages; mastodon instance http://{addr})",
            args.api_version, args.pages
        );
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM"),
            _ = int.recv() => tracing::info!("SIGINT"),
        }
        let stats = server.stats().snapshot();
        server.stop().await;
        tracing::info!(?stats, "simulator stopped");
        Ok(())
    })
}
