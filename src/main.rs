//! The `pagepulse` binary: parses the command line and calls the library.

use clap::Parser;

/// mimalloc instead of glibc malloc: records are allocated on the polling thread and freed on
/// task threads, a pattern glibc's per-thread arenas handle poorly (measured in benches).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use tracing_subscriber::EnvFilter;

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("PAGEPULSE_LOG").unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .init();
    let cli = pagepulse::cli::Cli::parse();
    match pagepulse::cli::dispatch(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
