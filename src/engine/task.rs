//! The task actor: owns one (pipeline, partition), runs its [`Processor`] on each batch, sends the
//! outputs and dead letters to the sink, and releases the batch's processing guard. A task with
//! durable state ([`super::state`]) also flushes its state's changes to the changelog every
//! `flush_every` and when it stops, and holds each batch's offset until a flush covers it.
//!
//! With a transactional sink (exactly-once mode, [`crate::kafka::txn`]) every task flushes, with
//! or without state, and each flush ends with [`Sink::commit`]: the outputs, the changelog
//! records and the input position since the previous flush become visible as one transaction.

use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, AsyncContext, Context, StreamHandler};
use chrono::Utc;
use tokio::sync::mpsc;

use super::deadletter::dead_letter;
use super::offsets::BatchAck;
use super::processor::{Emit, Processor, RecordMeta};
use super::record::Batch;
use super::sink::{InputPosition, Sink};
use super::state::{flush_records, Change, Restored};
use crate::metrics::Metrics;

/// Merges a batch's parts into the pipeline's shared aggregate (see [`super::aggregate`]).
pub type MergeFn<T> = Arc<dyn Fn(&mut Vec<T>) + Send + Sync>;

/// The durable-state side of a task (see [`super::state`]).
pub struct Durable {
    /// Logical name of the changelog topic; `None` for a task without state that flushes only to
    /// commit its transaction (exactly-once mode).
    changelog: Option<&'static str>,
    /// Full name of the input topic, once a batch came from it: the position a commit records.
    input: Option<Arc<str>>,
    /// This incarnation's owner id (the one its restore fenced with).
    owner: u64,
    /// Input records before this offset are already in the restored state.
    skip_below: Option<i64>,
    /// The next input offset: what the next flush covers.
    next_offset: Option<i64>,
    /// The position the last flush recorded.
    flushed_position: Option<i64>,
    /// Batches processed since the last flush, each holding one pending output for it.
    unflushed: Vec<Arc<BatchAck>>,
    /// Changes to write before anything else: the repairs of a torn flush.
    changes: Vec<Change>,
    /// How often the state is flushed.
    flush_every: Duration,
}

impl Durable {
    /// The durable side of a task that restored `restored` under `owner`, writing to
    /// `changelog` every `flush_every`.
    pub fn new(changelog: &'static str, owner: u64, restored: &Restored, flush_every: Duration) -> Self {
        Self {
            changelog: Some(changelog),
            input: None,
            owner,
            skip_below: restored.position,
            next_offset: restored.position,
            flushed_position: restored.position,
            unflushed: Vec::new(),
            changes: restored.repairs(),
            flush_every,
        }
    }

    /// The flushing side of a task without durable state whose sink commits every `flush_every`
    /// (exactly-once mode): it writes no changelog, and its flushes only commit.
    pub fn commit_only(flush_every: Duration) -> Self {
        Self {
            changelog: None,
            input: None,
            owner: 0,
            skip_below: None,
            next_offset: None,
            flushed_position: None,
            unflushed: Vec::new(),
            changes: Vec::new(),
            flush_every,
        }
    }
}

/// Most batches a task holds between flushes; one more makes it flush early.
const MAX_UNFLUSHED: usize = 256;

/// One (pipeline, partition) task. The actor is a thin shell: [`Task::handle_batch`] and
/// [`Task::tick`] are plain methods that tests call directly.
pub struct Task<P: Processor> {
    pipeline: &'static str,
    partition: i32,
    processor: P,
    sink: Arc<dyn Sink>,
    merge: Option<MergeFn<P::Part>>,
    emit: Emit<P::Part>,
    metrics: Metrics,
    inbox_depth: prometheus::IntGauge,
    durable: Option<Durable>,
    /// Dropped when the task stops: the engine waits for every clone to go (drop-to-join).
    _done: Option<mpsc::Sender<()>>,
}

impl<P: Processor> Task<P> {
    /// A task for `pipeline`/`partition` running `processor`.
    pub fn new(
        pipeline: &'static str,
        partition: i32,
        processor: P,
        sink: Arc<dyn Sink>,
        merge: Option<MergeFn<P::Part>>,
        metrics: Metrics,
        done: Option<mpsc::Sender<()>>,
    ) -> Self {
        let inbox_depth = super::router::mailbox_gauge(&metrics, pipeline, partition);
        Self {
            pipeline,
            partition,
            processor,
            merge,
            emit: Emit::default(),
            metrics,
            inbox_depth,
            // A transactional sink needs every task to flush, to commit.
            durable: sink.commit_every().map(Durable::commit_only),
            sink,
            _done: done,
        }
    }

    /// Makes the task durable: it skips input its restored state covers, and flushes changes.
    /// `restored_out` is what [`Processor::restore`] emitted; it is sent first.
    pub fn with_durable(mut self, durable: Durable, restored_out: Emit<P::Part>) -> Self {
        self.durable = Some(durable);
        self.emit = restored_out;
        if !self.emit.records.is_empty() || !self.emit.parts.is_empty() {
            let ack = BatchAck::untracked();
            self.flush(&ack);
            ack.processed();
        }
        self
    }

    /// Decodes and processes every record of `batch`, sends the outputs, then releases the batch.
    pub fn handle_batch(&mut self, batch: Batch) {
        let Batch { topic, full_topic, partition, records, ack } = batch;
        let skip_below = self.durable.as_ref().and_then(|d| d.skip_below).unwrap_or(i64::MIN);
        let mut skipped = 0;
        for rec in &records {
            if rec.offset < skip_below {
                // Its effect is in the restored state already (committed offsets lag flushes).
                skipped += 1;
                continue;
            }
            match self.processor.decode(topic, rec) {
                Ok(input) => {
                    let meta = RecordMeta { topic, partition, offset: rec.offset, timestamp_ms: rec.timestamp_ms };
                    self.processor.process(input, &meta, &mut self.emit);
                }
                Err(why) => {
                    self.metrics.deadlettered.with_label_values(&[topic, why.class.as_str()]).inc();
                    tracing::debug!(pipeline = self.pipeline, partition, offset = rec.offset, reason = %why, "dead letter");
                    self.emit.record(dead_letter(rec, self.pipeline, &full_topic, partition, &why));
                }
            }
        }
        if skipped > 0 {
            self.metrics.state_skipped.with_label_values(&[self.pipeline]).inc_by(skipped);
        }
        self.flush(&ack);
        match &mut self.durable {
            None => ack.processed(),
            Some(d) => {
                if d.input.is_none() {
                    d.input = Some(full_topic);
                }
                if let Some(last) = records.last() {
                    d.next_offset = Some(d.next_offset.unwrap_or(i64::MIN).max(last.offset + 1));
                }
                // Held until a flush covers the batch.
                ack.add_output();
                ack.processed();
                d.unflushed.push(ack);
                if d.unflushed.len() >= MAX_UNFLUSHED {
                    self.flush_state();
                }
            }
        }
    }

    /// Writes the state's changes since the last flush, then a marker for the input position
    /// they cover, and releases the batches the flush covers once all of it is acknowledged;
    /// then commits the sink (a no-op unless it is transactional). Does nothing for a task that
    /// does not flush.
    pub fn flush_state(&mut self) {
        self.flush_and_commit(false);
    }

    /// [`flush_state`](Task::flush_state); `closing` for the task's last flush.
    fn flush_and_commit(&mut self, closing: bool) {
        let Some(d) = &mut self.durable else { return };
        self.processor.take_changes(&mut d.changes);
        if !d.changes.is_empty() || !d.unflushed.is_empty() || d.next_offset != d.flushed_position {
            let flush = BatchAck::chained(std::mem::take(&mut d.unflushed));
            match d.changelog {
                Some(changelog) => {
                    for rec in flush_records(changelog, self.partition, d.owner, d.changes.drain(..), d.next_offset) {
                        self.sink.send(rec, &flush);
                    }
                }
                // No store (engine.durable_state = false): the changes have nowhere to go.
                None => d.changes.clear(),
            }
            d.flushed_position = d.next_offset;
            flush.processed();
        }
        // Even with nothing new to flush: timer outputs may be waiting in the transaction.
        let position = d.input.as_deref().zip(d.next_offset).map(|(topic, next_offset)| InputPosition {
            topic,
            partition: self.partition,
            next_offset,
        });
        if let Err(e) = self.sink.commit(position, closing) {
            // The sink has counted and logged it, and refuses what follows; see CommitError.
            tracing::debug!(pipeline = self.pipeline, partition = self.partition, error = %e, "commit failed");
        }
    }

    /// Runs the processor's periodic work at `now`.
    pub fn tick(&mut self, now: chrono::DateTime<Utc>) {
        self.processor.on_tick(now, &mut self.emit);
        if !self.emit.records.is_empty() || !self.emit.parts.is_empty() {
            let ack = BatchAck::untracked();
            self.flush(&ack);
            ack.processed();
        }
    }

    fn flush(&mut self, ack: &Arc<BatchAck>) {
        for rec in self.emit.records.drain(..) {
            self.sink.send(rec, ack);
        }
        if !self.emit.parts.is_empty() {
            match &self.merge {
                Some(merge) => merge(&mut self.emit.parts),
                None => self.emit.parts.clear(),
            }
        }
    }
}

impl<P: Processor + Unpin> Actor for Task<P> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.metrics.tasks.with_label_values(&[self.pipeline]).inc();
        if let Some(every) = self.processor.tick_interval() {
            ctx.run_interval(every, |task, _| task.tick(Utc::now()));
        }
        if let Some(d) = &self.durable {
            ctx.run_interval(d.flush_every, |task, _| task.flush_state());
            // The repairs of a torn flush go out before anything else.
            if !d.changes.is_empty() {
                self.flush_state();
            }
        }
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.metrics.tasks.with_label_values(&[self.pipeline]).dec();
        tracing::debug!(pipeline = self.pipeline, partition = self.partition, "task stopped");
    }
}

impl<P: Processor + Unpin> StreamHandler<Batch> for Task<P> {
    fn handle(&mut self, batch: Batch, _ctx: &mut Self::Context) {
        self.inbox_depth.dec();
        self.handle_batch(batch);
    }

    /// The inbox closed (revocation or shutdown) and every batch in it was handled: flush the
    /// state and stop. (After a revocation the partition's next owner has fenced the changelog,
    /// so this last flush is ignored by its restores; after a shutdown it saves the restart a
    /// replay.)
    fn finished(&mut self, ctx: &mut Self::Context) {
        self.flush_and_commit(true);
        actix::ActorContext::stop(ctx);
    }
}
