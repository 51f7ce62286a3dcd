//! Routes consumed records to tasks: one task per (pipeline, partition), created when its
//! partition first delivers records and stopped when the partition is revoked.
//!
//! The router runs on the routing loop and never waits: each task's inbox is a bounded channel,
//! and a batch that does not fit is parked ([`super::flow`]); a partition that falls too far
//! behind is paused in the consumer. Backpressure reaches the broker per partition, the consumer
//! keeps polling, and the other partitions keep flowing.

use std::collections::HashMap;
use std::sync::Arc;

use actix::{Actor, ArbiterHandle, StreamHandler};
use prometheus::IntGauge;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::flow::{FlowChange, Parking};
use super::offsets::{OffsetStore, OffsetTracker};
use super::processor::Processor;
use super::record::{Batch, RawRecord};
use super::sink::Sink;
use super::state::{self, StateBackend};
use super::task::{Durable, MergeFn, Task};
use crate::health::Health;
use crate::metrics::Metrics;

/// Starts tasks of one pipeline.
pub trait TaskFactory: Send + Sync + 'static {
    /// The pipeline's name (a metric label, and the `pagepulse.pipeline` dead-letter header).
    fn pipeline(&self) -> &'static str;

    /// Logical names of the topics the pipeline reads.
    fn inputs(&self) -> &[&'static str];

    /// Starts the task for `partition` on `arbiter`, reading batches from `inbox`; the task holds
    /// `done` until it stops.
    fn spawn(&self, partition: i32, arbiter: &ArbiterHandle, inbox: mpsc::Receiver<Batch>, done: mpsc::Sender<()>);

    /// Whether the pipeline's input offsets are committed (the default). A pipeline whose input
    /// is a compacted table it rebuilds its state from answers false: with no committed offset,
    /// every assignment reads its partitions from the beginning (`auto.offset.reset=earliest`).
    fn commits_offsets(&self) -> bool {
        true
    }
}

/// The offset store of inputs that are never committed.
struct NoCommit;

impl OffsetStore for NoCommit {
    fn store(&self, _topic: &str, _partition: i32, _next_offset: i64) {}
}

/// The gauge of batches waiting in the inbox of `pipeline`'s task for `partition`.
pub fn mailbox_gauge(metrics: &Metrics, pipeline: &str, partition: i32) -> IntGauge {
    metrics.mailbox_depth.with_label_values(&[pipeline, &partition.to_string()])
}

/// A pipeline made of a processor constructor: the usual [`TaskFactory`].
pub struct PipelineSpec<P: Processor> {
    name: &'static str,
    inputs: Vec<&'static str>,
    make: Arc<dyn Fn(i32) -> P + Send + Sync>,
    sink: Arc<dyn Sink>,
    merge: Option<MergeFn<P::Part>>,
    metrics: Metrics,
    commits: bool,
    store: Option<Store>,
}

/// Where a pipeline keeps its durable state (see [`state`]).
#[derive(Clone)]
pub struct Store {
    /// The store's name (a metric label).
    pub name: &'static str,
    /// Logical name of its changelog topic (see [`state::changelog_topic`]).
    pub changelog: &'static str,
    /// Reads and fences changelogs.
    pub backend: Arc<dyn StateBackend>,
    /// How often tasks flush their changes.
    pub flush_every: std::time::Duration,
    /// Told while tasks restore, so `/readyz` is not ready.
    pub health: Arc<Health>,
}

impl<P: Processor> PipelineSpec<P> {
    /// A pipeline `name` reading `inputs`, whose task for partition `p` runs `make(p)`.
    pub fn new(
        name: &'static str,
        inputs: Vec<&'static str>,
        make: impl Fn(i32) -> P + Send + Sync + 'static,
        sink: Arc<dyn Sink>,
        merge: Option<MergeFn<P::Part>>,
        metrics: Metrics,
    ) -> Self {
        Self { name, inputs, make: Arc::new(make), sink, merge, metrics, commits: true, store: None }
    }

    /// Keeps the tasks' state in `store`: each task restores its partition before its first
    /// batch and flushes its changes (see [`state`]). `None` keeps state in memory only.
    pub fn with_store(mut self, store: Option<Store>) -> Self {
        self.store = store;
        self
    }

    /// Never commits the input offsets, so every assignment re-reads the input from the
    /// beginning: for compacted inputs that are the pipeline's state (see
    /// [`TaskFactory::commits_offsets`]).
    pub fn reread_on_assignment(mut self) -> Self {
        self.commits = false;
        self
    }
}

impl<P: Processor + Unpin + Send> TaskFactory for PipelineSpec<P> {
    fn pipeline(&self) -> &'static str {
        self.name
    }

    fn inputs(&self) -> &[&'static str] {
        &self.inputs
    }

    fn commits_offsets(&self) -> bool {
        self.commits
    }

    fn spawn(&self, partition: i32, arbiter: &ArbiterHandle, inbox: mpsc::Receiver<Batch>, done: mpsc::Sender<()>) {
        let (name, make, sink, merge, metrics) =
            (self.name, self.make.clone(), self.sink.clone(), self.merge.clone(), self.metrics.clone());
        // A task of its own sink (exactly-once: its transactional producer), unless the pipeline
        // re-reads its input on assignment: it commits nothing, so it has nothing to transact.
        let commits = self.commits;
        let task_sink = move |sink: Arc<dyn Sink>| match commits {
            true => sink.for_task(name, partition).unwrap_or(sink),
            false => sink,
        };
        let Some(store) = self.store.clone() else {
            Task::start_in_arbiter(arbiter, move |ctx| {
                let sink = task_sink(sink);
                Task::add_stream(ReceiverStream::new(inbox), ctx);
                Task::new(name, partition, make(partition), sink, merge, metrics, Some(done))
            });
            return;
        };
        // Restoring reads the changelog: off the arbiter, so other partitions' tasks keep going.
        // The inbox fills meanwhile, which pauses the consumer (backpressure, as for a slow task).
        let arbiter = arbiter.clone();
        store.health.set_restoring(true);
        let restoring = metrics.state_restoring.with_label_values(&[store.name]);
        restoring.inc();
        let spawned = std::thread::Builder::new().name(format!("pp-restore-{name}-{partition}")).spawn(move || {
            let started = std::time::Instant::now();
            // First: opening a transactional sink fences the previous incarnation and aborts its
            // open transaction, whose changelog records a read_committed restore would wait for.
            let sink = task_sink(sink);
            let Some((owner, restored)) = read_changelog(&store, partition) else {
                // The engine is stopping: the task never starts; its inbox and `done` go.
                restoring.dec();
                store.health.set_restoring(false);
                return;
            };
            let durable = Durable::new(store.changelog, owner, &restored, store.flush_every);
            let (records, bytes, torn, position) =
                (restored.records, restored.bytes, restored.torn.len(), restored.position);
            // Rebuilt here too, not on the arbiter: a big restore must not stall its other tasks.
            let mut processor = make(partition);
            let mut out = super::processor::Emit::default();
            processor.restore(restored.entries, &mut out);
            let took = started.elapsed();
            metrics.state_restore_seconds.with_label_values(&[store.name]).observe(took.as_secs_f64());
            metrics.state_restored_records.with_label_values(&[store.name]).inc_by(records);
            metrics.state_restored_bytes.with_label_values(&[store.name]).inc_by(bytes);
            tracing::info!(store = store.name, partition, records, bytes, torn, ?position, ?took, "state restored");
            restoring.dec();
            store.health.set_restoring(false);
            Task::start_in_arbiter(&arbiter, move |ctx| {
                Task::add_stream(ReceiverStream::new(inbox), ctx);
                Task::new(name, partition, processor, sink, merge, metrics, Some(done)).with_durable(durable, out)
            });
        });
        if let Err(e) = spawned {
            // Without the thread the inbox is never read: the router reports the task gone.
            tracing::error!(pipeline = name, partition, error = %e, "cannot start the restore thread");
        }
    }
}

/// Fences and reads `partition` of `store`'s changelog under a new owner id, retrying until it
/// can be read (processing without the state would produce wrong results) or the engine stops
/// (`None`).
fn read_changelog(store: &Store, partition: i32) -> Option<(u64, state::Restored)> {
    let owner = state::new_owner();
    let mut wait = std::time::Duration::from_millis(200);
    loop {
        match store.backend.restore(store.changelog, partition, owner) {
            Ok(r) => return Some((owner, r)),
            Err(_) if store.backend.cancelled() => return None,
            Err(e) => {
                tracing::warn!(store = store.name, partition, error = %e, retry_in = ?wait, "state restore failed");
                std::thread::sleep(wait);
                wait = (wait * 2).min(std::time::Duration::from_secs(10));
            }
        }
    }
}

/// One input topic as the router knows it.
#[derive(Debug, Clone)]
struct Input {
    logical: &'static str,
    full: Arc<str>,
    pipeline: usize,
}

/// The dispatch table from (topic, partition) to task inboxes and offset trackers.
pub struct Router {
    inputs: Vec<Input>,
    pipelines: Vec<Arc<dyn TaskFactory>>,
    arbiters: Vec<ArbiterHandle>,
    next_arbiter: usize,
    tasks: HashMap<(usize, i32), (mpsc::Sender<Batch>, IntGauge)>,
    trackers: HashMap<(usize, i32), Arc<OffsetTracker>>,
    store: Arc<dyn OffsetStore>,
    metrics: Metrics,
    inbox_capacity: usize,
    done: mpsc::Sender<()>,
    parking: Parking,
}

/// The task behind a partition is gone (it panicked or its arbiter stopped).
#[derive(Debug, thiserror::Error)]
#[error("the task for {topic}/{partition} is gone")]
pub struct TaskGone {
    /// Full topic name.
    pub topic: String,
    /// Partition.
    pub partition: i32,
}

impl Router {
    /// A router for `pipelines`; `full_name` maps a logical topic name to its name on the broker.
    /// Tasks are spread over `arbiters` round-robin. A partition whose batches wait for more than
    /// `partition_budget` bytes beyond its task's inbox is paused (see [`super::flow`]).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        pipelines: Vec<Arc<dyn TaskFactory>>,
        full_name: impl Fn(&str) -> String,
        arbiters: Vec<ArbiterHandle>,
        store: Arc<dyn OffsetStore>,
        metrics: Metrics,
        inbox_capacity: usize,
        done: mpsc::Sender<()>,
        partition_budget: usize,
    ) -> Self {
        assert!(!arbiters.is_empty(), "at least one worker arbiter");
        let mut inputs = Vec::new();
        for (idx, p) in pipelines.iter().enumerate() {
            for &logical in p.inputs() {
                inputs.push(Input { logical, full: full_name(logical).into(), pipeline: idx });
            }
        }
        Self {
            inputs,
            pipelines,
            arbiters,
            next_arbiter: 0,
            tasks: HashMap::new(),
            trackers: HashMap::new(),
            store,
            metrics,
            inbox_capacity,
            done,
            parking: Parking::new(partition_budget),
        }
    }

    /// Full names of every input topic, to subscribe to.
    pub fn topics(&self) -> Vec<String> {
        self.inputs.iter().map(|i| i.full.to_string()).collect()
    }

    /// The input index of full topic name `full`: what [`dispatch`](Router::dispatch) takes.
    pub fn input_index(&self, full: &str) -> Option<usize> {
        self.inputs.iter().position(|i| &*i.full == full)
    }

    /// Hands `records` (consecutive, of one partition of input `input`) to their task, or parks
    /// them when its inbox is full or earlier batches of the partition are parked. Returns a
    /// pause when the partition went over its budget: the consumer must stop fetching it.
    pub fn dispatch(
        &mut self,
        input: usize,
        partition: i32,
        records: Vec<RawRecord>,
    ) -> Result<Option<FlowChange>, TaskGone> {
        let Some(last) = records.last() else { return Ok(None) };
        let inp = self.inputs[input].clone();
        let tracker = self
            .trackers
            .entry((input, partition))
            .or_insert_with(|| {
                let store: Arc<dyn OffsetStore> = if self.pipelines[inp.pipeline].commits_offsets() {
                    self.store.clone()
                } else {
                    Arc::new(NoCommit)
                };
                OffsetTracker::new(
                    inp.full.clone(),
                    partition,
                    store,
                    Some(self.metrics.e2e_latency.with_label_values(&[self.pipelines[inp.pipeline].pipeline()])),
                )
            })
            .clone();
        let timestamps: Vec<i64> = records.iter().filter_map(|r| r.timestamp_ms).collect();
        let ack = tracker.begin(last.offset + 1, timestamps);
        self.metrics.consumed.with_label_values(&[inp.logical]).inc_by(records.len() as u64);
        let batch = Batch { topic: inp.logical, full_topic: inp.full.clone(), partition, records, ack };
        let (tx, depth) = self.task(inp.pipeline, partition);
        if self.parking.is_parked((input, partition)) {
            // Behind earlier batches of its partition: order within a partition is the contract.
            return Ok(self.parking.park((input, partition), batch));
        }
        // The task decrements the same gauge when it takes the batch out of its inbox.
        depth.inc();
        match tx.try_send(batch) {
            Ok(()) => Ok(None),
            Err(mpsc::error::TrySendError::Full(batch)) => {
                depth.dec();
                Ok(self.parking.park((input, partition), batch))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                depth.dec();
                Err(TaskGone { topic: inp.full.to_string(), partition })
            }
        }
    }

    /// True when batches wait for room in an inbox: call [`unpark`](Router::unpark) soon.
    pub fn has_parked(&self) -> bool {
        self.parking.any()
    }

    /// Partitions paused for lack of room right now.
    pub fn paused(&self) -> usize {
        self.parking.paused()
    }

    /// Moves parked batches into inboxes that have room, oldest first per partition. Returns the
    /// partitions to resume (their queue emptied).
    pub fn unpark(&mut self) -> Result<Vec<FlowChange>, TaskGone> {
        let (tasks, inputs) = (&self.tasks, &self.inputs);
        self.parking.drain(
            |(input, partition), batch| match tasks.get(&(inputs[input].pipeline, partition)) {
                Some((tx, depth)) => {
                    depth.inc();
                    tx.try_send(batch).inspect_err(|_| depth.dec())
                }
                // Its task was stopped (revoked) after the batch was parked: drop it, like every
                // batch of a revoked partition; its offsets are never stored.
                None => Ok(()),
            },
            |(input, partition), _| TaskGone { topic: inputs[input].full.to_string(), partition },
        )
    }

    fn task(&mut self, pipeline: usize, partition: i32) -> (mpsc::Sender<Batch>, IntGauge) {
        if let Some(entry) = self.tasks.get(&(pipeline, partition)) {
            return entry.clone();
        }
        let (tx, rx) = mpsc::channel(self.inbox_capacity);
        let depth = mailbox_gauge(&self.metrics, self.pipelines[pipeline].pipeline(), partition);
        let arbiter = &self.arbiters[self.next_arbiter % self.arbiters.len()];
        self.next_arbiter += 1;
        self.pipelines[pipeline].spawn(partition, arbiter, rx, self.done.clone());
        self.tasks.insert((pipeline, partition), (tx.clone(), depth.clone()));
        (tx, depth)
    }

    /// True if full topic `full` is the input of a pipeline that rebuilds its state by re-reading
    /// it at every assignment (see [`TaskFactory::commits_offsets`]).
    pub fn rereads(&self, full: &str) -> bool {
        self.input_index(full).is_some_and(|i| !self.pipelines[self.inputs[i].pipeline].commits_offsets())
    }

    /// Full name of input `input`.
    pub fn input_name(&self, input: usize) -> &str {
        &self.inputs[input].full
    }

    /// The partition was assigned: start its task now (restoring its state), not only when its
    /// first records arrive.
    pub fn assign(&mut self, full_topic: &str, partition: i32) {
        let Some(input) = self.input_index(full_topic) else { return };
        self.task(self.inputs[input].pipeline, partition);
    }

    /// The partition was revoked: stop its task once its inbox drains, drop what was parked for
    /// it, and stop storing its offsets (its next owner starts from the last committed offset).
    /// Returns a resume when the partition was paused (so that it is not still paused should it
    /// be assigned again).
    pub fn revoke(&mut self, full_topic: &str, partition: i32) -> Option<FlowChange> {
        let input = self.input_index(full_topic)?;
        let resume = self.parking.forget((input, partition));
        if let Some(tracker) = self.trackers.remove(&(input, partition)) {
            tracker.revoke();
        }
        let pipeline = self.inputs[input].pipeline;
        // Dropping the sender closes the inbox; the task drains it (bringing its depth gauge back
        // to 0) and stops. The gauge stays: partitions are few and may come back.
        self.tasks.remove(&(pipeline, partition));
        resume
    }

    /// Every live offset tracker.
    pub fn trackers(&self) -> Vec<Arc<OffsetTracker>> {
        self.trackers.values().cloned().collect()
    }
}
