//! `pagepulse run`: wires config, Kafka, pipelines, tasks and HTTP together, keeps the engine
//! running through recoverable failures, and stops it in the order that loses nothing.
//!
//! [`start`] returns a [`Running`] handle: the HTTP endpoint, and a supervisor that runs engine
//! incarnations ([`run_engine`]); [`Running::shutdown`] (or SIGINT/SIGTERM, in [`run`]) is the
//! one way to stop. An incarnation ends by an operator's stop, a fatal failure (pagepulse exits
//! non-zero) or a recoverable one (the supervisor starts a new incarnation from the last
//! committed offsets and durable state; see README, Self-healing consumption).
//!
//! However it ends, an incarnation stops through one ordered list of parts
//! ([`crate::engine::stop::Parts`]): the membership watchdog; the polling thread; the tasks
//! (every inbox closed, each task finishes its batches and flushes its state; drop-to-join); the
//! global table readers; the poll dispatchers; the aggregates (last emission); the producer
//! (every output acknowledged, so its offsets are stored); the consumer (stored offsets
//! committed, the group left); the task threads. Whatever is not done within
//! `engine.shutdown_timeout` is not committed, and is redone by the next owner.
//!
//! In exactly-once mode (`engine.processing_guarantee`, see [`crate::kafka::txn`]) the tasks'
//! last flushes commit their transactions, input offsets included; the consumer commits nothing.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use actix::{Arbiter, Recipient};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio::time::{timeout_at, Instant};

use crate::clock::{Clock, SystemClock};
use crate::config::{Config, ProcessingGuarantee};
use crate::engine::aggregate::Flush;
use crate::engine::shutdown::Reason;
use crate::engine::state;
use crate::engine::stop::{Parts, Step, Worker};
use crate::engine::{OffsetStore, Router, Shutdown, Sink, StateBackend, Store, TaskFactory};
use crate::health::Health;
use crate::kafka::changelog::KafkaBackend;
use crate::kafka::source::{self, Source, SourceContext};
use crate::kafka::txn::{ConsumerGroup, EosSink, TransactionalOffsets};
use crate::kafka::{admin, KafkaSink};
use crate::metrics::Metrics;
use crate::pipelines::{GlobalTable, LiveViews, Wiring, REGISTRY};
use crate::{engine, http};

/// Why `run` failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Topics missing or the broker unreachable.
    #[error(transparent)]
    Admin(#[from] admin::Error),
    /// The HTTP endpoint could not start.
    #[error(transparent)]
    Http(#[from] http::Error),
    /// The producer could not start.
    #[error(transparent)]
    Sink(#[from] crate::kafka::sink::Error),
    /// The consumer could not start.
    #[error(transparent)]
    Source(#[from] source::Error),
    /// A platform client could not be built.
    #[error("{0}")]
    Platform(String),
    /// Every pipeline is disabled.
    #[error("no pipeline is enabled (pipelines.*.enabled)")]
    NothingToRun,
    /// A fatal error stopped the engine; nothing past it was committed.
    #[error("stopped after a fatal error: {0}")]
    Fatal(String),
}

/// Stores completed offsets in the consumer, for its auto-commit.
struct ConsumerOffsets(Arc<Source>);

impl OffsetStore for ConsumerOffsets {
    fn store(&self, topic: &str, partition: i32, next_offset: i64) {
        // Not `store_offset`: it calls librdkafka's legacy rd_kafka_offset_store, which stores
        // `offset + 1`, so passing the next offset would skip a record at every commit boundary
        // (the crash test caught exactly that). A partition list is stored as given.
        let mut tpl = TopicPartitionList::with_capacity(1);
        if let Err(e) = tpl.add_partition_offset(topic, partition, Offset::Offset(next_offset)) {
            tracing::error!(topic, partition, error = %e, "invalid offset to store");
            return;
        }
        if let Err(e) = self.0.store_offsets(&tpl) {
            // Happens when the partition was revoked meanwhile: its next owner redoes the work.
            tracing::debug!(topic, partition, error = %e, "offset not stored");
        }
    }
}

/// What [`pipelines`] starts.
struct Pipelines {
    /// One per enabled pipeline.
    factories: Vec<Arc<dyn TaskFactory>>,
    /// Global tables every instance reads whole.
    globals: Vec<GlobalTable>,
    /// Aggregates to flush at shutdown.
    aggregators: Vec<Recipient<Flush>>,
    /// Threads of helper actors (the platform dispatchers), stopped once the tasks are drained.
    dispatchers: Vec<Arbiter>,
}

/// Builds every pipeline of the [registry](REGISTRY) that `cfg` enables, with the aggregators
/// that must be flushed at shutdown. Pipelines with a live view register in `live`.
fn pipelines(
    cfg: &Config,
    sink: Arc<dyn Sink>,
    metrics: &Metrics,
    clock: Arc<dyn Clock>,
    live: &LiveViews,
    stores: &Stores,
) -> Result<Pipelines, Error> {
    let mut out =
        Pipelines { factories: Vec::new(), globals: Vec::new(), aggregators: Vec::new(), dispatchers: Vec::new() };
    for p in REGISTRY.iter().filter(|p| (p.enabled)(cfg)) {
        let wiring =
            Wiring { cfg, sink: sink.clone(), metrics, clock: clock.clone(), store: stores.store(p.name), live };
        let built = (p.build)(wiring).map_err(|e| Error::Platform(e.to_string()))?;
        out.factories.push(built.tasks);
        out.globals.extend(built.globals);
        out.aggregators.extend(built.aggregators);
        out.dispatchers.extend(built.helpers);
    }
    Ok(out)
}

/// The durable state stores of the enabled pipelines (see [`crate::engine::state`]): each stateful
/// pipeline has one store, named after the pipeline, with changelog
/// `<kafka.group_id>-<store>-changelog`.
struct Stores {
    /// (store, logical changelog, logical input) of every enabled stateful pipeline.
    changelogs: Vec<(&'static str, &'static str, &'static str)>,
    backend: Arc<dyn StateBackend>,
    flush_every: Duration,
    health: Arc<Health>,
}

impl Stores {
    fn new(cfg: &Config, backend: Arc<dyn StateBackend>, health: Arc<Health>) -> Self {
        let mut stateful = Vec::new();
        if !cfg.engine.durable_state {
            tracing::warn!("engine.durable_state = false: state lives in memory only and is lost on restart");
        } else {
            for p in REGISTRY.iter().filter(|p| (p.enabled)(cfg)) {
                stateful.extend(p.store_input.map(|input| (p.name, input)));
            }
        }
        let changelogs = stateful
            .into_iter()
            .map(|(store, input)| {
                // A handful per process, made once: leaked to be `&'static` like every topic name.
                let topic: &'static str =
                    Box::leak(state::changelog_topic(&cfg.kafka.group_id, store).into_boxed_str());
                (store, topic, input)
            })
            .collect();
        Self { changelogs, backend, flush_every: cfg.kafka.commit_interval, health }
    }

    /// Logical names of every changelog.
    fn topics(&self) -> Vec<&'static str> {
        self.changelogs.iter().map(|c| c.1).collect()
    }

    /// The store of `pipeline`, unless it is stateless or state is in memory only.
    fn store(&self, pipeline: &'static str) -> Option<Store> {
        let (name, changelog, _) = *self.changelogs.iter().find(|c| c.0 == pipeline)?;
        Some(Store {
            name,
            changelog,
            backend: self.backend.clone(),
            flush_every: self.flush_every,
            health: self.health.clone(),
        })
    }
}

/// Logical topics the enabled pipelines read or write.
pub fn required_topics(cfg: &Config) -> Vec<&'static str> {
    let mut t = vec![engine::deadletter::TOPIC];
    for p in REGISTRY.iter().filter(|p| (p.enabled)(cfg)) {
        for &topic in p.inputs.iter().chain(p.outputs) {
            if !t.contains(&topic) {
                t.push(topic);
            }
        }
    }
    t
}
/// Runs pagepulse until SIGINT/SIGTERM (then returns `Ok`) or a fatal error.
pub fn run(cfg: Config) -> Result<(), Error> {
    actix_rt::System::new().block_on(async move {
        let running = start(cfg).await?;
        watch_signals(running.signals.clone());
        running.stopped().await
    })
}

/// A running pagepulse: its HTTP endpoint and its engine, which restarts in-process after
/// recoverable failures. [`Running::shutdown`] is the one way to stop it; SIGINT/SIGTERM take it
/// too (see [`run`]).
pub struct Running {
    server: http::Server,
    signals: Shutdown,
    engine: tokio::task::JoinHandle<Result<(), Error>>,
}

impl Running {
    /// Where the HTTP endpoint listens.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.server.addr()
    }

    /// Stops the engine (its parts in order, see [`crate::engine::stop`]: polling, tasks,
    /// global tables, dispatchers, aggregates, producer, commit), waiting for it until
    /// `deadline` at most, then the HTTP endpoint. Returns how the engine ended.
    pub async fn shutdown(self, deadline: Instant) -> Result<(), Error> {
        self.signals.trigger(Reason::Requested);
        let ended = match timeout_at(deadline, self.engine).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(Error::Fatal(format!("the engine task failed: {e}"))),
            Err(_) => Err(Error::Fatal("the engine did not stop before the shutdown deadline".into())),
        };
        self.server.stop().await;
        ended
    }

    /// Waits until the engine stops by itself (a signal was handled, or a fatal failure), then
    /// stops the HTTP endpoint. Returns how the engine ended.
    pub async fn stopped(self) -> Result<(), Error> {
        let ended = match self.engine.await {
            Ok(result) => result,
            Err(e) => Err(Error::Fatal(format!("the engine task failed: {e}"))),
        };
        self.server.stop().await;
        if ended.is_ok() {
            tracing::info!("stopped cleanly");
        }
        ended
    }
}

/// What outlives an engine restart: the HTTP endpoint and what it reads, metrics, health, and
/// the operator's stop signal.
struct Process {
    metrics: Metrics,
    health: Arc<Health>,
    /// Triggered by SIGINT/SIGTERM only.
    signals: Shutdown,
    /// The pipelines' live views (what HTTP queries read), filled by each incarnation's tasks.
    live: LiveViews,
    /// Where the HTTP endpoint listens (instances tell each other).
    http: String,
    /// Member ids this process had in the group, across engine incarnations (the watchdog
    /// releases its predecessors').
    members: crate::kafka::watchdog::MemberHistory,
    /// Who holds which input partition (kept by the watchdog, read by HTTP).
    directory: Arc<crate::kafka::instances::Directory>,
}

/// How an engine incarnation ended, when not by an operator's stop.
enum EngineStop {
    /// Unrecoverable (configuration, or a broker without a needed feature): pagepulse exits.
    Fatal(Error),
    /// Recoverable: the engine starts again from the last committed offsets and durable state.
    Restart {
        /// A metric label: `broker_data_lost`, `delivery_failed`, `task_failed`, `startup_failed`.
        kind: &'static str,
        /// What happened, for the log.
        why: String,
    },
}

/// Shortest and longest wait before an engine restart (doubling in between; back to the
/// shortest after an incarnation that ran for [`HEALTHY_RUN`]).
const RESTART_DELAY: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(30));
/// An incarnation that ran this long resets the restart delay.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// Starts pagepulse: checks the broker and topics (failing fast, with a clear message, when
/// they are missing), starts the HTTP endpoint, and runs the engine on the current actix system.
pub async fn start(cfg: Config) -> Result<Running, Error> {
    let metrics = Metrics::new();
    let health = Arc::new(Health::default());
    let signals = Shutdown::new();
    admin::require(&cfg, &required_topics(&cfg))?;
    health.set_broker_up(true);
    let live = LiveViews::new(&cfg);
    let results = crate::pipelines::export::ResultsCollector::new(Arc::new(cfg.clone()), live.clone());
    metrics.register(Box::new(results)).expect("result metric names are unique");
    let directory = Arc::new(crate::kafka::instances::Directory::new());
    let server = http::start(&cfg, metrics.clone(), health.clone(), live.clone(), directory.clone())?;
    tracing::info!(addr = %server.addr(), "HTTP endpoint listening (/api/v1, /docs, /metrics, /healthz, /readyz)");
    let process = Process {
        metrics,
        health,
        signals: signals.clone(),
        live,
        http: cfg.http.advertise.clone().unwrap_or_else(|| server.addr().to_string()),
        members: Default::default(),
        directory,
    };
    let engine = actix_rt::spawn(supervise(cfg, process));
    Ok(Running { server, signals, engine })
}

/// Runs engine incarnations until the operator stops pagepulse (`Ok`) or one fails fatally; a
/// recoverable failure starts a new incarnation after a growing delay. An engine restart waits
/// for missing topics or an absent broker instead of failing (the broker may be coming back).
async fn supervise(cfg: Config, process: Process) -> Result<(), Error> {
    let mut delay = RESTART_DELAY.0;
    let mut first = true;
    let mut from_beginning = false;
    loop {
        let started = Instant::now();
        let ended = run_engine(&cfg, &process, first, from_beginning).await;
        first = false;
        // After the broker lost its data, every input record it holds is new since the loss,
        // and the group's committed offsets may be ones the last incarnation (or librdkafka, on
        // its behalf) wrote into the new, empty logs from positions in the lost ones: they would
        // skip new records. The next incarnation reads its first assignment from the beginning
        // (what the last incarnation processed after the loss is processed again: at-least-once).
        from_beginning = matches!(&ended, Err(EngineStop::Restart { kind: "broker_data_lost", .. }));
        match ended {
            Ok(()) => return Ok(()),
            Err(EngineStop::Fatal(e)) => return Err(e),
            Err(EngineStop::Restart { kind, why }) => {
                if process.signals.reason().is_some() {
                    return Ok(());
                }
                if started.elapsed() >= HEALTHY_RUN {
                    delay = RESTART_DELAY.0;
                }
                process.metrics.engine_restarts.with_label_values(&[kind]).inc();
                tracing::error!(
                    reason = kind,
                    %why,
                    retry_in = ?delay,
                    "the engine stopped after a failure and restarts in-process from the last committed offsets and durable state"
                );
                process.health.reset_engine();
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = process.signals.wait() => return Ok(()),
                }
                delay = (delay * 2).min(RESTART_DELAY.1);
            }
        }
    }
}

/// Runs one incarnation of the engine: topics, sinks, pipelines, consumer, router, watchdog.
/// Returns `Ok` once the operator's stop was carried out. `first` is the process's first
/// incarnation, whose set-up errors are fatal (later ones are retried); `from_beginning` reads
/// the first assignment's partitions from their beginning instead of their committed offsets.
async fn run_engine(cfg: &Config, process: &Process, first: bool, from_beginning: bool) -> Result<(), EngineStop> {
    let setup_failed = |e: Error| match first {
        true => EngineStop::Fatal(e),
        false => EngineStop::Restart { kind: "startup_failed", why: e.to_string() },
    };
    let (metrics, health) = (&process.metrics, &process.health);
    // This incarnation's stop: the operator's, or a failure inside it.
    let shutdown = Shutdown::new();
    {
        let (signals, shutdown) = (process.signals.clone(), shutdown.clone());
        actix_rt::spawn(async move {
            signals.wait().await;
            shutdown.trigger(Reason::Requested);
        });
    }
    if !first {
        admin::require(cfg, &required_topics(cfg)).map_err(|e| setup_failed(e.into()))?;
        health.set_broker_up(true);
    }
    let backend = Arc::new(
        KafkaBackend::new(cfg).map_err(|e| setup_failed(Error::Admin(e.into())))?.with_cancel(shutdown.clone()),
    );
    let stores = Stores::new(cfg, backend, health.clone());
    let pairs: Vec<(&str, &str)> = stores.changelogs.iter().map(|c| (c.1, c.2)).collect();
    let mut recreated = crate::kafka::changelog::ensure(cfg, &pairs).await.map_err(|e| setup_failed(e.into()))?;
    recreated.extend(crate::kafka::watchdog::ensure_topic(cfg).await.map_err(|e| setup_failed(e.into()))?);
    // pagepulse's own topics existed when the last incarnation ran: missing now, the broker lost
    // its data, whatever made that incarnation stop (the loss often shows first as a refused
    // delivery: the broker no longer knows the producer). Same remedy as when the watchdog sees it.
    let from_beginning = from_beginning
        || (!first && !recreated.is_empty() && {
            tracing::error!(
                missing = ?recreated,
                "the broker lost its data: pagepulse's own topics had to be created again; state kept in them is gone"
            );
            true
        });
    let shared = Arc::new(
        KafkaSink::new(cfg, metrics.clone(), shutdown.clone(), &stores.topics()).map_err(|e| setup_failed(e.into()))?,
    );
    let exactly_once = cfg.engine.processing_guarantee == ProcessingGuarantee::ExactlyOnce;
    let group = ConsumerGroup::new();
    let sink: Arc<dyn Sink> = if exactly_once {
        tracing::info!("exactly-once mode: each task commits its outputs, changelog and offsets in one transaction");
        if !cfg.engine.durable_state {
            tracing::warn!(
                "exactly_once with engine.durable_state = false: outputs commit once, but state restarts empty"
            );
        }
        Arc::new(EosSink::new(cfg, metrics.clone(), shutdown.clone(), &stores.topics(), shared.clone(), group.clone()))
    } else {
        shared.clone()
    };
    let Pipelines { factories, globals, aggregators, dispatchers } =
        pipelines(cfg, sink.clone(), metrics, Arc::new(SystemClock), &process.live, &stores)
            .map_err(EngineStop::Fatal)?;
    if factories.is_empty() {
        return Err(EngineStop::Fatal(Error::NothingToRun));
    }
    let stop_globals = Arc::new(AtomicBool::new(false));
    let mut global_readers = Vec::new();
    for g in globals {
        let reader = g
            .spawn(
                cfg,
                crate::kafka::global::Wiring {
                    sink: sink.clone(),
                    metrics: metrics.clone(),
                    health: health.clone(),
                    stop: stop_globals.clone(),
                },
            )
            .map_err(|e| setup_failed(Error::Fatal(e.to_string())))?;
        global_readers.push(reader);
    }
    if let Some(reader) =
        crate::kafka::results::spawn(cfg, &process.live.results.tables(), metrics.clone(), stop_globals.clone())
            .map_err(|e| setup_failed(Error::Fatal(e.to_string())))?
    {
        global_readers.push(reader);
    }
    let arbiters: Vec<Arbiter> = (0..cfg.engine.workers.get()).map(|_| Arbiter::new()).collect();
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    // Each topic once, however many pipelines read it (the router hands its records to each).
    let mut topics: Vec<String> = Vec::new();
    for t in factories.iter().flat_map(|f| f.inputs().iter().map(|l| cfg.topic(l))) {
        if !topics.contains(&t) {
            topics.push(t);
        }
    }
    let consumer = source::subscribe(cfg, SourceContext::new(cfg, metrics.clone(), health.clone()), &topics)
        .map_err(|e| setup_failed(e.into()))?;
    group.set(&consumer);
    let offsets: Arc<dyn OffsetStore> = match exactly_once {
        true => Arc::new(TransactionalOffsets),
        false => Arc::new(ConsumerOffsets(consumer.clone())),
    };
    let mut router = Router::new(
        factories,
        |l| cfg.topic(l),
        arbiters.iter().map(|a| a.handle()).collect(),
        offsets,
        metrics.clone(),
        cfg.engine.inbox_capacity.get(),
        done_tx,
        cfg.engine.partition_buffer_bytes.get(),
    );
    let stop_watchdog = Arc::new(AtomicBool::new(false));
    let watchdog = crate::kafka::watchdog::spawn(
        cfg,
        crate::kafka::watchdog::Setup {
            consumer: consumer.clone(),
            inputs: topics.clone(),
            internal: stores.topics().iter().map(|t| cfg.topic(t)).collect(),
            http: process.http.clone(),
            metrics: metrics.clone(),
            stop: stop_watchdog.clone(),
            shutdown: shutdown.clone(),
            members: process.members.clone(),
            directory: process.directory.clone(),
        },
    )
    .map_err(|e| setup_failed(Error::Fatal(format!("cannot start the membership watchdog: {e}"))))?;
    let stop_polling = Arc::new(AtomicBool::new(false));
    let (poller, chunks) =
        source::spawn_poller(consumer.clone(), router.topics(), cfg, stop_polling.clone(), from_beginning)
            .map_err(|e| EngineStop::Fatal(Error::Fatal(format!("cannot start the polling thread: {e}"))))?;
    tracing::info!(?topics, group = %cfg.kafka.group_id, workers = arbiters.len(), "pagepulse running");

    if let Err(e) = source::run(&consumer, chunks, &mut router, &shutdown).await {
        shutdown.trigger(Reason::Restart { kind: "task_failed", why: e.to_string() });
    }

    // --- Stopping: the parts of this incarnation, in the one order that loses nothing. ---
    let reason = shutdown.reason();
    let restarting = matches!(reason, Some(Reason::Restart { .. }));
    // Whether stored offsets may be committed: not when the broker lost its data, where an old
    // offset would skip records of a recreated topic.
    let commit = !matches!(&reason, Some(Reason::Restart { kind: "broker_data_lost", .. }));
    if !restarting {
        health.set_stopping();
    }
    // After the broker lost its data nothing of this incarnation can be saved: do not wait for
    // acknowledgements of topics that are gone.
    let drain = if commit { cfg.engine.shutdown_timeout } else { Duration::from_secs(1) };
    tracing::info!(?reason, "stopping");
    let trackers = router.trackers();
    let mut parts = Parts::new();
    // 1. No rejoins while stopping; its tombstone tells the others this instance is gone.
    parts.push(Worker::new("membership watchdog", stop_watchdog, watchdog));
    // 2. No new records: the polling thread notices within one poll (at most 100 ms).
    parts.push(Worker::new("polling thread", stop_polling, poller));
    // 3. Tasks finish the batches they hold, flush their state, and stop (drop-to-join).
    parts.push(Step::new("tasks", move |deadline: Instant| async move {
        drop(router); // closes every inbox
        if timeout_at(deadline, done_rx.recv()).await.is_err() {
            tracing::warn!("tasks did not finish before the shutdown deadline; unfinished work will be redone");
        }
    }));
    // 4. Global tables: nothing reads them any more.
    for r in global_readers {
        parts.push(Worker::new("global table reader", stop_globals.clone(), r));
    }
    // 5. Poll dispatchers: polls still in flight are abandoned; their pages are polled at their
    //    next slot by the partition's next owner.
    parts.push(Step::new("poll dispatchers", move |_| async move {
        for d in &dispatchers {
            d.stop();
        }
    }));
    // 6. Aggregates emit their last result (every task has merged its parts) and stop.
    parts.push(Step::new("aggregates", move |deadline: Instant| async move {
        for agg in &aggregators {
            if timeout_at(deadline, agg.send(Flush)).await.is_err() {
                tracing::warn!("an aggregate did not flush before the shutdown deadline");
            }
        }
    }));
    // 7. Every output acknowledged, so that the offsets of what it came from are stored.
    parts.push(Step::new("producer", move |deadline: Instant| async move {
        let left = deadline.saturating_duration_since(Instant::now());
        if let Err(e) = shared.flush(left) {
            tracing::warn!(error = %e, in_flight = shared.in_flight(), "producer not fully flushed; unacknowledged work will be redone");
        }
        // Delivery callbacks run on the producer's thread: give them until the deadline.
        while trackers.iter().any(|t| t.in_flight() > 0 && !t.is_poisoned()) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }));
    // 8. Stored offsets committed (in exactly-once mode the tasks' last transactions did it),
    //    then the consumer leaves the group.
    parts.push(Step::new("consumer", move |_| async move {
        if !exactly_once && commit {
            match consumer.commit_consumer_state(CommitMode::Sync) {
                Ok(()) => tracing::info!("offsets committed"),
                // NoOffset: nothing new was stored since the last commit.
                Err(e) => tracing::info!(error = %e, "final commit had nothing to do or failed"),
            }
        }
        drop(consumer);
    }));
    // 9. The task threads.
    parts.push(Step::new("worker threads", move |_| async move {
        for a in &arbiters {
            a.stop();
        }
    }));
    parts.stop(Instant::now() + drain).await;
    match reason {
        Some(Reason::Fatal(why)) => Err(EngineStop::Fatal(Error::Fatal(why))),
        Some(Reason::Restart { kind, why }) => Err(EngineStop::Restart { kind, why }),
        _ => Ok(()),
    }
}

/// First SIGINT/SIGTERM: graceful shutdown. A second one: exit at once (the work not committed
/// is redone on restart, so this loses nothing either).
fn watch_signals(shutdown: Shutdown) {
    use tokio::signal::unix::{signal, SignalKind};
    actix_rt::spawn(async move {
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        for n in 0..2 {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM"),
                _ = int.recv() => tracing::info!("SIGINT"),
            }
            if n == 0 {
                shutdown.trigger(Reason::Requested);
            } else {
                tracing::warn!("second signal: exiting now");
                std::process::exit(130);
            }
        }
    });
}
