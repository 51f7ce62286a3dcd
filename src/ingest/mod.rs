//! Loading Wikimedia-style hourly pageview dumps and blacklist files into Kafka: the plain,
//! Kafka-free parts (the CLI in [`crate::cli::ingest`] only moves their output to a producer).
//!
//! - [`dump`]: opening a dump (gzip detected by magic bytes), the hour a file covers, parsing a
//!   dump line or a blacklist line, and why a line is malformed.
//! - [`record`]: the Kafka records (key, JSON value) of the `pageviews` and `pageviews.blacklist`
//!   topics.
//! - [`generate`]: a deterministic generator of realistic dumps (Zipf-distributed domains and
//!   titles), for tests and benchmarks.
//! - [`apps`]: App Store catalogue files (Kaggle's `AppleStore.csv`, both published forms): CSV
//!   rows, the header, typed `apps` records.
//! - [`apps_generate`]: a deterministic generator of catalogues in the same CSV form, for the
//!   quickstart (the Kaggle file is not shipped) and tests.

pub mod apps;
pub mod apps_generate;
pub mod dump;
pub mod generate;
pub mod record;

/// Logical name of the topic of pageview counts (one record per dump line).
pub const PAGEVIEWS_TOPIC: &str = "pageviews";
/// Logical name of the compacted topic of blacklisted `(domain, title)` pairs.
pub const BLACKLIST_TOPIC: &str = "pageviews.blacklist";
/// Logical name of the compacted topic of the app catalogue (one record per app, key = app id).
pub const APPS_TOPIC: &str = "apps";

/// Errors of reading dumps.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The operating system's or the decompressor's error.
        source: std::io::Error,
    },
    /// Neither `--hour` nor the file name says which hour a dump covers.
    #[error(
        "{path}: cannot tell which hour the file covers: name it like pageviews-YYYYMMDD-HH0000[.gz] or pass --hour YYYY-MM-DDTHH"
    )]
    NoHour {
        /// The file.
        path: String,
    },
    /// An hour given on the command line is not `YYYY-MM-DDTHH`.
    #[error("invalid hour {0:?}: expected YYYY-MM-DDTHH in UTC, e.g. 2026-11-23T10")]
    BadHour(String),
}

/// Result of reading dumps.
pub type Result<T, E = Error> = std::result::Result<T, E>;
