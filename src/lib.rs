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
//!   engine::flush: when a batch is done (acked; after the state flush that covers it; or
//!                  at its transaction's commit)
//!   parts ─> share records ─> `<pipeline>.shares` ─> read whole by every instance
//!         ─> engine::aggregate (cross-partition state, ticked by an actor) ─> outputs (written by
//!            the instance holding partition 0; every instance answers queries from it)
//!
//! pages ─> pipelines::pages (a poll::scheduler::Schedule per partition) ─ due pages ─>
//!   poll::dispatch::Dispatcher per platform (limits, retries, pauses) ─> poll::platform::Platform
//!   ─> fans.observations (poll::observation) ─> pipelines::fans ─> fans.stats, fans.top
//! ```
//!
//! # Layout
//!
//! Top down: each module uses only modules listed below it. The one exception is by design:
//! [`config`] composes the pipelines' sections from `pipelines/<name>/config.rs`, leaf files
//! that use only [`section`].
//!
//! - [`cli`]: the command line, one file per subcommand.
//! - [`app`]: `pagepulse run`: wiring (loops over [`pipelines::REGISTRY`]) and the ordered,
//!   lossless shutdown.
//! - [`http`]: `/metrics`, `/healthz`, `/readyz`, and `/api/v1` over the live views; reads of keys
//!   another instance holds are forwarded to it (`http::forward`).
//! - [`pipelines`]: the registry and one folder per pipeline (posts, fans, pages, pageviews with
//!   its backfill jobs, messages, apps), each with `config.rs`, `processor.rs`, `store.rs` (durable state) and `live.rs`
//!   (what queries read) where it has them, and a `mod.rs` whose `build` wires them.
//! - [`kafka`]: topic definitions and admin, consumer source, producer sinks (at-least-once and
//!   transactional), changelog backend, global tables, client settings.
//! - [`config`]: typed configuration, validated once, every problem reported with its key;
//!   composes the sections; its [`config::reference`] is generated from their doc comments.
//! - [`poll`]: polling platforms for audience counts: schedules, limits, the dispatcher, the
//!   `fans.observations` record, the platform trait and its Facebook and Mastodon clients.
//! - [`engine`]: what every pipeline runs on, one part per file: records, the processor trait,
//!   offsets, sinks, the changelog protocol (`state`), the flush protocol (`flush`),
//!   aggregates, the task actor, pipeline specs (`spec`) and the router.
//! - [`ingest`]: hourly pageview dumps and blacklists: opening, parsing, records, a dump generator.
//! - [`simulate`]: simulated platforms (trajectories, faults, a Graph-API- and
//!   Mastodon-compatible server).
//! - [`ops`]: plain building blocks: text analysis, top-N, sliding and hourly windows, rolling fan
//!   series, a binary codec.
//! - [`section`]: reading one section of the configuration file (typed keys, defaults, problems).
//! - [`secret`]: secrets (tokens) that never print and compare in constant time.
//! - [`metrics`]: every Prometheus metric, defined once.
//! - [`health`]: liveness and readiness flags.
//! - [`clock`]: injected wall-clock time, and the one way timestamps are written.

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
pub mod secret;
pub mod section;
pub mod simulate;
