//! The pipelines, one folder each, and [`REGISTRY`], the one list of them that the app loops
//! over.
//!
//! Every pipeline folder has the same parts:
//!
//! - `config.rs`: its `[pipelines.<name>]` section, typed, documented and checked (composed by
//!   [`crate::config`]);
//! - `processor.rs`: its plain per-partition logic, a [`crate::engine::Processor`] made of
//!   [`crate::ops`] blocks;
//! - `store.rs`, for a stateful pipeline: its durable state, one type that owns `take_changes`
//!   and `restore` (see [`crate::engine::state`]);
//! - `live.rs`, where it has one: the view HTTP queries read while the tasks write it;
//! - `export.rs`, where it has results to chart: its bounded result gauges, filled from the live
//!   views at each scrape (see [`crate::metrics::results`] and [`export`]);
//! - `mod.rs`: its topics and its line in the registry, whose `build` wires the parts together.
//!
//! Several pipelines may read the same topic (`apps` counts mentions in the `posts` the posts
//! pipeline analyses): the engine reads it once and hands its records to each.
//!
//! Adding a pipeline: a new folder, its `topics/*.json` files, one line in [`REGISTRY`], and its
//! section in [`crate::config::Config`].

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;

use actix::{Arbiter, Recipient};

use crate::clock::Clock;
use crate::config::Config;
use crate::engine::aggregate::Flush;
use crate::engine::{Processor, Sink, Store, TaskFactory};
use crate::kafka::global;
use crate::metrics::results::{Export, Family};
use crate::metrics::Metrics;
use crate::ops::latest::{Bounds, LatestTable};

pub mod apps;
pub mod decode;
pub mod export;
pub mod fans;
pub mod messages;
pub mod pages;
pub mod pageviews;
pub mod posts;

/// Every pipeline, in the order the app starts them.
///
/// Pipelines reading the same topic get its records in this order (see [`crate::engine::router`]):
/// the first of them dead-letters what it refuses; `posts` comes before `apps`, which counts
/// mentions in the same posts.
pub const REGISTRY: &[Pipeline] = &[
    posts::ENTRY,
    fans::ENTRY,
    pages::ENTRY,
    pageviews::ENTRY,
    pageviews::backfill::ENTRY,
    messages::ENTRY,
    apps::ENTRY,
];

/// One line of the [`REGISTRY`]: a pipeline as the app sees it before anything runs (to check its
/// topics and create its changelog), and how to build it.
pub struct Pipeline {
    /// The pipeline's name: a metric label, the `pagepulse.pipeline` dead-letter header, and the
    /// name of its store.
    pub name: &'static str,
    /// Whether `cfg` runs it (`pipelines.<name>.enabled`).
    pub enabled: fn(&Config) -> bool,
    /// Logical topics it reads.
    pub inputs: &'static [&'static str],
    /// Logical topics it writes (the dead-letter topic, shared by all, aside).
    pub outputs: &'static [&'static str],
    /// For a pipeline with durable state, the input whose partitions its store follows: the
    /// store's changelog gets one partition per partition of that input.
    pub store_input: Option<&'static str>,
    /// Outputs the HTTP API reads by key: every instance reads them whole into a bounded
    /// [`LatestTable`] (see [`crate::kafka::results`]).
    pub served: &'static [&'static str],
    /// The result gauges it exports to Prometheus.
    pub exports: &'static [&'static Family],
    /// Fills its result gauges from the live views, at each scrape (bounds from `cfg`); `None`
    /// for a pipeline with no results to chart.
    pub export: Option<fn(&Config, &LiveViews, &mut Export)>,
    /// Starts what the pipeline needs and returns what the engine runs.
    pub build: fn(Wiring<'_>) -> Result<Built, Error>,
}

/// What a pipeline's `build` gets from the app.
pub struct Wiring<'a> {
    /// The whole configuration (a pipeline reads its own section, and whatever it shares).
    pub cfg: &'a Config,
    /// Where outputs and dead letters go.
    pub sink: Arc<dyn Sink>,
    /// The process's metrics.
    pub metrics: &'a Metrics,
    /// Wall-clock time.
    pub clock: Arc<dyn Clock>,
    /// Where its durable state lives; `None` for a stateless pipeline, or when state is kept in
    /// memory only (`engine.durable_state = false`).
    pub store: Option<Store>,
    /// The live views HTTP reads; a pipeline with one registers its tasks' state there.
    pub live: &'a LiveViews,
}

/// What a pipeline's `build` returns: what the engine runs, and what the app stops at shutdown.
pub struct Built {
    /// Starts the pipeline's task for each assigned partition.
    pub tasks: Arc<dyn TaskFactory>,
    /// Its cross-partition aggregates' actors, flushed once the tasks have finished.
    pub aggregators: Vec<Recipient<Flush>>,
    /// Global tables it reads whole on every instance.
    pub globals: Vec<GlobalTable>,
    /// A thread of helper actors (the poll dispatchers), stopped once the tasks have finished.
    pub helpers: Option<Arbiter>,
}

/// Why a pipeline could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A platform client could not be built (the message names the config section).
    #[error("{0}")]
    Platform(String),
}

/// The live (queryable) views of the pipelines that have one. Made before anything runs, so the
/// HTTP server can hold them from the start; each pipeline's tasks register their partitions'
/// state in their own view. Clones share the views.
#[derive(Clone)]
pub struct LiveViews {
    /// The fans pipeline's pages and ranking (`/api/v1/pages`).
    pub fans: fans::FansLive,
    /// The posts pipeline's trending hashtags (`/api/v1/posts/trending`).
    pub posts: posts::PostsLive,
    /// The latest record per key of every served output topic (see [`Pipeline::served`]).
    pub results: Results,
}

/// The tables of served output topics, by logical topic name.
#[derive(Clone, Default)]
pub struct Results(HashMap<&'static str, LatestTable>);

impl Results {
    /// One table per topic served by an enabled pipeline of `cfg`, bounded by `http.results_*`.
    pub fn new(cfg: &Config) -> Self {
        let bounds = Bounds {
            retention_ms: cfg.http.results_retention.as_millis().try_into().unwrap_or(i64::MAX),
            max_bytes: cfg.http.results_max_bytes,
        };
        let topics = REGISTRY.iter().filter(|p| (p.enabled)(cfg)).flat_map(|p| p.served.iter());
        Self(topics.map(|t| (*t, LatestTable::new(bounds))).collect())
    }

    /// The table of logical topic `topic`, if served (its pipeline runs on this instance).
    pub fn table(&self, topic: &str) -> Option<&LatestTable> {
        self.0.get(topic)
    }

    /// Every table, with its topic.
    pub fn tables(&self) -> Vec<(&'static str, LatestTable)> {
        let mut v: Vec<_> = self.0.iter().map(|(t, l)| (*t, l.clone())).collect();
        v.sort_by_key(|(t, _)| *t);
        v
    }
}

impl LiveViews {
    /// Empty views for `cfg`.
    pub fn new(cfg: &Config) -> Self {
        Self {
            fans: fans::FansLive::new(cfg.fans.top_n).with_watch_max(cfg.fans.watch_max),
            posts: posts::PostsLive::new(),
            results: Results::new(cfg),
        }
    }
}

/// A global table a pipeline reads whole on every instance (see [`crate::kafka::global`]),
/// waiting to be started.
pub struct GlobalTable {
    /// The pipeline its dead letters are attributed to.
    pub pipeline: &'static str,
    /// Its logical topic.
    pub topic: &'static str,
    caught_up: Arc<AtomicBool>,
    start: StartTable,
}

/// Starts a global table's reader (see [`global::spawn`]).
type StartTable =
    Box<dyn FnOnce(&Config, global::Wiring, Arc<AtomicBool>) -> Result<JoinHandle<()>, global::Error> + Send>;

impl GlobalTable {
    /// Table `topic`, applied through `processor`, its dead letters attributed to `pipeline`.
    pub fn new<P: Processor<Part = ()> + Send>(pipeline: &'static str, topic: &'static str, processor: P) -> Self {
        let start =
            move |cfg: &Config, wiring, caught_up| global::spawn(cfg, pipeline, topic, processor, wiring, caught_up);
        Self { pipeline, topic, caught_up: Arc::new(AtomicBool::new(false)), start: Box::new(start) }
    }

    /// Sets `flag` (instead of a flag of its own) once the reader has read the whole table as it
    /// was when it started (see [`global::spawn`]): a pipeline that must not work on a partial
    /// table waits for it.
    pub fn with_caught_up(mut self, flag: Arc<AtomicBool>) -> Self {
        self.caught_up = flag;
        self
    }

    /// Starts reading the table on a thread of its own (see [`global::spawn`]).
    pub fn spawn(self, cfg: &Config, wiring: global::Wiring) -> Result<JoinHandle<()>, global::Error> {
        (self.start)(cfg, wiring, self.caught_up)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn the_registry_names_each_pipeline_once_and_every_topic_is_defined() {
        let names: HashSet<&str> = REGISTRY.iter().map(|p| p.name).collect();
        assert_eq!(names.len(), REGISTRY.len());
        let defined: HashSet<String> = crate::kafka::topics::all().iter().map(|d| d.name.clone()).collect();
        for p in REGISTRY {
            for t in p.inputs.iter().chain(p.outputs) {
                assert!(defined.contains(*t), "{}: topic {t} has no topics/{t}.json", p.name);
            }
            if let Some(input) = p.store_input {
                assert!(p.inputs.contains(&input), "{}: its store follows one of its inputs", p.name);
            }
        }
    }
}
