//! Routes consumed records to tasks: one task per (pipeline, partition), created when its
//! partition first delivers records and stopped when the partition is revoked.
//!
//! The router runs on the routing loop and never waits: each task's inbox is a bounded channel,
//! and a batch that does not fit is parked ([`super::flow`]); a partition that falls too far
//! behind is paused in the consumer. Backpressure reaches the broker per partition, the consumer
//! keeps polling, and the other partitions keep flowing.
//!
//! **Fan-out.** Several pipelines may read the same topic (the app-catalogue pipeline counts
//! mentions in the `posts` the posts pipeline analyses). The consumer reads the topic once; the
//! router hands each partition's batch to the task of every pipeline reading it (the *readers*,
//! in registry order), as copies sharing the records. The partition has one offset tracker: the
//! batch is registered once, each copy gets a reader ack chained to it
//! ([`super::offsets::BatchAck::reader`]), and the offset is stored only when every reader's
//! task is done with it (outputs acknowledged, and the state flush covering it, per reader). Each
//! reader's task has its own inbox, flush protocol and durable state, so a restore skips input
//! below *its* restored position only; a reader whose inbox is full parks its copies in a lane of
//! its own, and the partition is paused for all when one lane exceeds its budget.

use std::collections::HashMap;
use std::sync::Arc;

use actix::ArbiterHandle;
use prometheus::IntGauge;
use tokio::sync::mpsc;

use super::flow::{FlowChange, Parking};
use super::offsets::{BatchAck, OffsetStore, OffsetTracker, SharedPositions};
use super::record::{Batch, FanOut, RawRecord};
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
    /// The pipelines reading it, in registry order.
    readers: Vec<usize>,
}

/// The dispatch table from (topic, partition) to task inboxes and offset trackers.
pub struct Router {
    inputs: Vec<Input>,
    pipelines: Vec<Arc<dyn TaskFactory>>,
    arbiters: Vec<ArbiterHandle>,
    next_arbiter: usize,
    tasks: HashMap<(usize, i32), (mpsc::Sender<Batch>, IntGauge)>,
    trackers: HashMap<(usize, i32), Partition>,
    store: Arc<dyn OffsetStore>,
    metrics: Metrics,
    inbox_capacity: usize,
    done: mpsc::Sender<()>,
    parking: Parking,
}

/// One input partition's offset bookkeeping, shared by every reader of its topic.
struct Partition {
    tracker: Arc<OffsetTracker>,
    /// Exactly-once fan-out: where each reader's transactions have put the input; `None` with one
    /// reader.
    positions: Option<Arc<SharedPositions>>,
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
    /// `partition_budget` bytes beyond its task's inbox is paused (see [`super::flow`]). Pipelines
    /// that read the same topic all get its records (see the module docs).
    ///
    /// # Panics
    /// If pipelines that read the same topic disagree on
    /// [`commits_offsets`](TaskFactory::commits_offsets): a topic is either re-read at every
    /// assignment or consumed from its committed offsets, not both. The registry's pipelines
    /// never do; this is a programming error.
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
        let mut inputs: Vec<Input> = Vec::new();
        for (idx, p) in pipelines.iter().enumerate() {
            for &logical in p.inputs() {
                match inputs.iter_mut().find(|i| i.logical == logical) {
                    Some(input) => {
                        let first = &pipelines[input.readers[0]];
                        assert_eq!(
                            first.commits_offsets(),
                            p.commits_offsets(),
                            "pipelines {} and {} read {logical} but only one commits its offsets",
                            first.pipeline(),
                            p.pipeline()
                        );
                        input.readers.push(idx);
                    }
                    None => inputs.push(Input { logical, full: full_name(logical).into(), readers: vec![idx] }),
                }
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

    /// Full names of every input topic, each once, to subscribe to.
    pub fn topics(&self) -> Vec<String> {
        self.inputs.iter().map(|i| i.full.to_string()).collect()
    }

    /// The input index of full topic name `full`: what [`dispatch`](Router::dispatch) takes.
    pub fn input_index(&self, full: &str) -> Option<usize> {
        self.inputs.iter().position(|i| &*i.full == full)
    }

    /// Hands `records` (consecutive, of one partition of input `input`) to the task of every
    /// pipeline reading it, or parks a copy when its task's inbox is full or earlier batches of
    /// the partition wait for that task. Returns a pause when the partition went over its budget:
    /// the consumer must stop fetching it.
    pub fn dispatch(
        &mut self,
        input: usize,
        partition: i32,
        records: Vec<RawRecord>,
    ) -> Result<Option<FlowChange>, TaskGone> {
        let Some(last) = records.last() else { return Ok(None) };
        let next_offset = last.offset + 1;
        let inp = self.inputs[input].clone();
        let part = self.trackers.entry((input, partition)).or_insert_with(|| {
            let store: Arc<dyn OffsetStore> =
                if self.pipelines[inp.readers[0]].commits_offsets() { self.store.clone() } else { Arc::new(NoCommit) };
            // Latency is observed per reader, by its own ack.
            let tracker = OffsetTracker::new(inp.full.clone(), partition, store, None);
            let positions = (inp.readers.len() > 1).then(|| SharedPositions::new(inp.readers.len()));
            Partition { tracker, positions }
        });
        let (tracker, positions) = (part.tracker.clone(), part.positions.clone());
        let timestamps: Vec<i64> = records.iter().filter_map(|r| r.timestamp_ms).collect();
        let shared = tracker.begin(next_offset, Vec::new());
        self.metrics.consumed.with_label_values(&[inp.logical]).inc_by(records.len() as u64);
        let records = Arc::new(records);
        let mut pause = None;
        let mut result = Ok(());
        for (reader, &pipeline) in inp.readers.iter().enumerate() {
            let name = self.pipelines[pipeline].pipeline();
            let latency = self.metrics.e2e_latency.with_label_values(&[name]);
            let ack = BatchAck::reader(&shared, Some(latency), timestamps.clone());
            let fanout = positions.clone().map(|positions| FanOut { reader, positions });
            let batch = Batch {
                topic: inp.logical,
                full_topic: inp.full.clone(),
                partition,
                records: records.clone(),
                ack,
                fanout,
            };
            match self.send(input, reader, pipeline, partition, batch) {
                Ok(p) => pause = pause.or(p),
                Err(gone) => result = Err(gone),
            }
        }
        // Every copy holds the shared ack now: release the router's guard.
        shared.processed();
        result.map(|()| pause)
    }

    /// Sends one reader's copy to its task, or parks it.
    fn send(
        &mut self,
        input: usize,
        reader: usize,
        pipeline: usize,
        partition: i32,
        batch: Batch,
    ) -> Result<Option<FlowChange>, TaskGone> {
        let (tx, depth) = self.task(pipeline, partition);
        if self.parking.is_parked((input, partition), reader) {
            // Behind earlier batches of its partition: order within a partition is the contract.
            return Ok(self.parking.park((input, partition), reader, batch));
        }
        // The task decrements the same gauge when it takes the batch out of its inbox.
        depth.inc();
        match tx.try_send(batch) {
            Ok(()) => Ok(None),
            Err(mpsc::error::TrySendError::Full(batch)) => {
                depth.dec();
                Ok(self.parking.park((input, partition), reader, batch))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                depth.dec();
                Err(TaskGone { topic: self.inputs[input].full.to_string(), partition })
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
            |(input, partition), reader, batch| match tasks.get(&(inputs[input].readers[reader], partition)) {
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

    /// True if full topic `full` is the input of pipelines that rebuild their state by re-reading
    /// it at every assignment (see [`TaskFactory::commits_offsets`]).
    pub fn rereads(&self, full: &str) -> bool {
        self.input_index(full).is_some_and(|i| !self.pipelines[self.inputs[i].readers[0]].commits_offsets())
    }

    /// Names of the pipelines reading full topic `full`, in registry order.
    pub fn readers(&self, full: &str) -> Vec<&'static str> {
        let Some(i) = self.input_index(full) else { return Vec::new() };
        self.inputs[i].readers.iter().map(|&p| self.pipelines[p].pipeline()).collect()
    }

    /// Full name of input `input`.
    pub fn input_name(&self, input: usize) -> &str {
        &self.inputs[input].full
    }

    /// The partition was assigned: start its readers' tasks now (restoring their state), not only
    /// when its first records arrive.
    pub fn assign(&mut self, full_topic: &str, partition: i32) {
        let Some(input) = self.input_index(full_topic) else { return };
        for reader in self.inputs[input].readers.clone() {
            self.task(reader, partition);
        }
    }

    /// The partition was revoked: stop its readers' tasks once their inboxes drain, drop what was
    /// parked for it, and stop storing its offsets (its next owner starts from the last committed
    /// offset).
    /// Returns a resume when the partition was paused (so that it is not still paused should it
    /// be assigned again).
    pub fn revoke(&mut self, full_topic: &str, partition: i32) -> Option<FlowChange> {
        let input = self.input_index(full_topic)?;
        let resume = self.parking.forget((input, partition));
        if let Some(part) = self.trackers.remove(&(input, partition)) {
            part.tracker.revoke();
        }
        for reader in &self.inputs[input].readers {
            // Dropping the sender closes the inbox; the task drains it (bringing its depth gauge
            // back to 0) and stops. The gauge stays: partitions are few and may come back.
            self.tasks.remove(&(*reader, partition));
        }
        resume
    }

    /// Every live offset tracker.
    pub fn trackers(&self) -> Vec<Arc<OffsetTracker>> {
        self.trackers.values().map(|p| p.tracker.clone()).collect()
    }
}
