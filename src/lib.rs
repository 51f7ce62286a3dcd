//! pagepulse: an actor-based stream processor for social and web audience analytics.
//!
//! Kafka topics feed actor pipelines that keep their state in memory; results go to output
//! topics and Prometheus metrics. The flow of one record:
//!
//! ```text
//! Kafka ─> kafka::source (polling thread + tokio-stream chunks) ─> engine::Router
//!   ─> engine::Task actor per (pipeline, partition): Processor::decode ─ bad? ─> deadletter
//!                                                    Processor::process ─> outputs, parts
//!   ─> kafka::KafkaSink ─> broker ack ─> engine::offsets (store offset when the batch is done)
//!   parts ─> engine::aggregate (cross-partition state, ticked by an actor) ─> outputs
//!
//! pages ─> pipelines::pages (a poll::scheduler::Schedule per partition) ─ due pages ─>
//!   poll::dispatch::Dispatcher per platform (limits, retries, pauses) ─> poll::platform::Platform
//!   ─> fans.observations ─> pipelines::fans ─> fans.stats, fans.top
//! ```
//!
//! # Layout
//!
//! - [`app`]: `pagepulse run`: wiring and the ordered, lossless shutdown.
//! - [`cli`]: the command line, one file per subcommand.
//! - [`clock`]: injected wall-clock time.
//! - [`config`]: typed configuration, validated once, every problem reported with its key.
//! - [`engine`]: tasks, router, processor trait, offsets, dead letters, aggregates, sinks.
//! - [`health`]: liveness and readiness flags.
//! - [`http`]: `/metrics`, `/healthz`, `/readyz`, and `/pages` (live fan figures).
//! - [`ingest`]: hourly pageview dumps and blacklists: opening, parsing, records, a dump generator.
//! - [`kafka`]: topic definitions and admin, consumer source, producer sink, client settings.
//! - [`metrics`]: every Prometheus metric, defined once.
//! - [`ops`]: plain building blocks: text analysis, top-N, sliding and hourly windows, rolling fan
//!   series.
//! - [`pipelines`]: the pipelines (posts, fans, pages, pageviews), each a processor made of ops.
//! - [`poll`]: polling platforms for audience counts: schedules, limits, the dispatcher, the
//!   platform trait and its Facebook and Mastodon clients over HTTP.
//! - [`simulate`]: simulated platforms (trajectories, a Graph-API- and Mastodon-compatible server).

#![warn(missing_docs)]

pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
pub mod engine;
pub mod health;
pub mod http;
pub mod ingest;
pub mod kafka;
pub mod metrics;
pub mod ops;
pub mod pipelines;
pub mod poll;
pub mod section;
pub mod simulate;
