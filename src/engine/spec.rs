//! What the router starts: a [`TaskFactory`] per pipeline, usually a [`PipelineSpec`] (a processor
//! constructor, the pipeline's sink and aggregate, and optionally the [`Store`] its durable state
//! lives in). Spawning a task of a stateful pipeline restores its partition's state first
//! ([`read_changelog`]), off the worker threads.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix::{Actor, ArbiterHandle, StreamHandler};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::aggregate::{Leadership, MergeFn, PublishFn};
use super::flush::Flusher;
use super::processor::{Emit, Processor};
use super::record::Batch;
use super::sink::Sink;
use super::state::{self, StateBackend};
use super::task::Task;
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
    /// Parts published as share records, and the leadership partition 0's task holds.
    shares: Option<(PublishFn<P::Part>, Leadership)>,
    /// Partition -> how many tasks of it this instance has started: a task's merges count only
    /// while it is its partition's newest (see [`current_only`]).
    generations: Arc<RwLock<HashMap<i32, u64>>>,
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
    pub flush_every: Duration,
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
        Self {
            name,
            inputs,
            make: Arc::new(make),
            sink,
            merge,
            metrics,
            commits: true,
            store: None,
            shares: None,
            generations: Arc::default(),
        }
    }

    /// Keeps the tasks' state in `store`: each task restores its partition before its first
    /// batch and flushes its changes (see [`state`]). `None` keeps state in memory only.
    pub fn with_store(mut self, store: Option<Store>) -> Self {
        self.store = store;
        self
    }

    /// Publishes the tasks' parts as share records with `publish` (sent with each batch's
    /// outputs) instead of merging them, and gives `leadership` to this instance while it runs
    /// the task of partition 0 (see [`super::aggregate`]).
    pub fn with_shares(mut self, publish: PublishFn<P::Part>, leadership: Leadership) -> Self {
        self.shares = Some((publish, leadership));
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
        let (name, make, sink, metrics) = (self.name, self.make.clone(), self.sink.clone(), self.metrics.clone());
        let generation = {
            let mut generations = self.generations.write().unwrap_or_else(|p| p.into_inner());
            let g = generations.entry(partition).or_insert(0);
            *g += 1;
            *g
        };
        let merge = self.merge.clone().map(|m| current_only(m, self.generations.clone(), partition, generation));
        let shares = self.shares.clone();
        let with_shares = move |task: Task<P>| match shares {
            Some((publish, leadership)) => task.with_shares(publish, (partition == 0).then(|| leadership.guard())),
            None => task,
        };
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
                with_shares(Task::new(name, partition, make(partition), sink, merge, metrics, Some(done)))
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
            let restored = read_changelog(&store, partition);
            // Revoked while restoring (its inbox closed), or the engine is stopping: the task
            // never starts. Building its processor now could even register a live view after
            // the one of the partition's next task, which started later but restored sooner.
            let Some((owner, restored)) = restored.filter(|_| !inbox.is_closed()) else {
                restoring.dec();
                store.health.set_restoring(false);
                return;
            };
            if inbox.is_closed() {
                // Revoked while restoring: the task would only redo batches its partition's next
                // owner redoes too. It never starts; its inbox and `done` go.
                tracing::info!(store = store.name, partition, "revoked while restoring: the task does not start");
                restoring.dec();
                store.health.set_restoring(false);
                return;
            }
            let flusher = Flusher::with_store(&*sink, partition, store.changelog, owner, &restored, store.flush_every);
            let (records, bytes, torn, position) =
                (restored.records, restored.bytes, restored.torn.len(), restored.position);
            // Rebuilt here too, not on the arbiter: a big restore must not stall its other tasks.
            let mut processor = make(partition);
            let mut out = Emit::default();
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
                with_shares(Task::new(name, partition, processor, sink, merge, metrics, Some(done)))
                    .with_store(flusher, out)
            });
        });
        if let Err(e) = spawned {
            // Without the thread the inbox is never read: the router reports the task gone.
            tracing::error!(pipeline = name, partition, error = %e, "cannot start the restore thread");
        }
    }
}

/// `merge`, for the task of `partition` started as its `generation`th: once a newer task of the
/// partition has started on this instance (the partition was revoked and assigned again), the
/// older one's parts are dropped. They are superseded: the newer task restores the partition's
/// durable state and redoes its uncommitted input, and an aggregate that replaces a partition's
/// share on restore would otherwise take a late restore or late batches of the old task on top of
/// (or instead of) the new one's. The check and the merge happen under one read lock that
/// [`PipelineSpec::spawn`] takes for writing, so no old part lands after a newer task started.
fn current_only<T: 'static>(
    merge: MergeFn<T>,
    generations: Arc<RwLock<HashMap<i32, u64>>>,
    partition: i32,
    generation: u64,
) -> MergeFn<T> {
    Arc::new(move |parts: &mut Vec<T>| {
        let generations = generations.read().unwrap_or_else(|p| p.into_inner());
        if generations.get(&partition) == Some(&generation) {
            merge(parts);
        } else {
            tracing::debug!(partition, dropped = parts.len(), "parts of a superseded task dropped");
            parts.clear();
        }
    })
}

/// Fences and reads `partition` of `store`'s changelog under a new owner id, retrying until it
/// can be read (processing without the state would produce wrong results) or the engine stops
/// (`None`).
pub fn read_changelog(store: &Store, partition: i32) -> Option<(u64, state::Restored)> {
    let owner = state::new_owner();
    let mut wait = Duration::from_millis(200);
    loop {
        match store.backend.restore(store.changelog, partition, owner) {
            Ok(r) => return Some((owner, r)),
            Err(_) if store.backend.cancelled() => return None,
            Err(e) => {
                tracing::warn!(store = store.name, partition, error = %e, retry_in = ?wait, "state restore failed");
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_secs(10));
            }
        }
    }
}
