//! Routes consumed records to tasks: one task per (pipeline, partition), created when its
//! partition first delivers records and stopped when the partition is revoked.
//!
//! The router runs on the consumer's thread. Each task's inbox is a bounded channel, so a slow
//! task (or a slow sink behind it) makes [`Router::dispatch`] wait, which stops the consumer from
//! polling: backpressure reaches the broker instead of memory growing.

use std::collections::HashMap;
use std::sync::Arc;

use actix::ArbiterHandle;
use prometheus::IntGauge;
use tokio::sync::mpsc;

use super::offsets::{OffsetStore, OffsetTracker};
use super::record::{Batch, RawRecord};
use super::spec::TaskFactory;
use super::task::mailbox_gauge;
use crate::metrics::Metrics;

/// The offset store of inputs that are never committed.
struct NoCommit;

impl OffsetStore for NoCommit {
    fn store(&self, _topic: &str, _partition: i32, _next_offset: i64) {}
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
    /// Tasks are spread over `arbiters` round-robin.
    pub fn new(
        pipelines: Vec<Arc<dyn TaskFactory>>,
        full_name: impl Fn(&str) -> String,
        arbiters: Vec<ArbiterHandle>,
        store: Arc<dyn OffsetStore>,
        metrics: Metrics,
        inbox_capacity: usize,
        done: mpsc::Sender<()>,
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

    /// Hands `records` (consecutive, of one partition of input `input`) to their task, waiting
    /// while its inbox is full.
    pub async fn dispatch(&mut self, input: usize, partition: i32, records: Vec<RawRecord>) -> Result<(), TaskGone> {
        let Some(last) = records.last() else { return Ok(()) };
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
        // The task decrements the same gauge when it takes the batch out of its inbox.
        depth.inc();
        tx.send(batch).await.map_err(|_| {
            depth.dec();
            TaskGone { topic: inp.full.to_string(), partition }
        })
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

    /// The partition was revoked: stop its task once its inbox drains, and stop storing its
    /// offsets (its next owner starts from the last committed offset).
    pub fn revoke(&mut self, full_topic: &str, partition: i32) {
        let Some(input) = self.input_index(full_topic) else { return };
        if let Some(tracker) = self.trackers.remove(&(input, partition)) {
            tracker.revoke();
        }
        let pipeline = self.inputs[input].pipeline;
        // Dropping the sender closes the inbox; the task drains it (bringing its depth gauge back
        // to 0) and stops. The gauge stays: partitions are few and may come back.
        self.tasks.remove(&(pipeline, partition));
    }

    /// Every live offset tracker.
    pub fn trackers(&self) -> Vec<Arc<OffsetTracker>> {
        self.trackers.values().cloned().collect()
    }
}
