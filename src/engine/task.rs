//! The task actor: owns one (pipeline, partition), runs its [`Processor`] on each batch, sends the
//! outputs and dead letters to the sink, and hands each batch's ack to its [`Flusher`], which
//! decides when the batch completes: at once, after a state flush that covers it (durable
//! state, [`super::state`]), or at the transaction that commits it (exactly-once,
//! [`crate::kafka::txn`]). The flush protocol itself is plain code in [`super::flush`]; this
//! actor only calls it every `flush_every` and when it stops.

use std::sync::Arc;

use actix::{Actor, AsyncContext, Context, StreamHandler};
use chrono::Utc;
use prometheus::IntGauge;
use tokio::sync::mpsc;

use super::aggregate::{LeaderGuard, MergeFn, PublishFn};
use super::deadletter::dead_letter;
use super::flush::Flusher;
use super::offsets::BatchAck;
use super::processor::{Emit, Processor, RecordMeta};
use super::record::Batch;
use super::sink::Sink;
use crate::metrics::Metrics;

/// The gauge of batches waiting in the inbox of `pipeline`'s task for `partition`: the router
/// increments it when it queues a batch, the task decrements it when it takes one out.
pub fn mailbox_gauge(metrics: &Metrics, pipeline: &str, partition: i32) -> IntGauge {
    metrics.mailbox_depth.with_label_values(&[pipeline, &partition.to_string()])
}

/// One (pipeline, partition) task. The actor is a thin shell: [`Task::handle_batch`] and
/// [`Task::tick`] are plain methods that tests call directly.
pub struct Task<P: Processor> {
    pipeline: &'static str,
    partition: i32,
    processor: P,
    sink: Arc<dyn Sink>,
    merge: Option<MergeFn<P::Part>>,
    /// Instead of `merge`: turns parts into share records (see [`super::aggregate`]).
    publish: Option<PublishFn<P::Part>>,
    /// Held by the task of partition 0 of a pipeline whose aggregate this instance then writes.
    _leader: Option<LeaderGuard>,
    emit: Emit<P::Part>,
    metrics: Metrics,
    inbox_depth: IntGauge,
    flusher: Flusher,
    /// Dropped when the task stops: the engine waits for every clone to go (drop-to-join).
    _done: Option<mpsc::Sender<()>>,
}

impl<P: Processor> Task<P> {
    /// A task for `pipeline`/`partition` running `processor`, without durable state (it still
    /// flushes to commit if `sink` is transactional).
    pub fn new(
        pipeline: &'static str,
        partition: i32,
        processor: P,
        sink: Arc<dyn Sink>,
        merge: Option<MergeFn<P::Part>>,
        metrics: Metrics,
        done: Option<mpsc::Sender<()>>,
    ) -> Self {
        let inbox_depth = mailbox_gauge(&metrics, pipeline, partition);
        Self {
            pipeline,
            partition,
            processor,
            merge,
            publish: None,
            _leader: None,
            emit: Emit::default(),
            metrics,
            inbox_depth,
            flusher: Flusher::without_store(&*sink, partition),
            sink,
            _done: done,
        }
    }

    /// Publishes the parts as share records with `publish` instead of merging them, and holds
    /// `leader` (if any) while it runs (see [`super::aggregate`]).
    pub fn with_shares(mut self, publish: PublishFn<P::Part>, leader: Option<LeaderGuard>) -> Self {
        self.publish = Some(publish);
        self._leader = leader;
        self
    }

    /// Makes the task durable: `flusher` ([`Flusher::with_store`]) skips the input its restored
    /// state covers and flushes the changes. `restored_out` is what [`Processor::restore`]
    /// emitted; it is sent first.
    pub fn with_store(mut self, flusher: Flusher, restored_out: Emit<P::Part>) -> Self {
        self.flusher = flusher;
        self.emit = restored_out;
        self.send_unprompted();
        self
    }

    /// Decodes and processes every record of `batch`, sends the outputs, then hands the batch to
    /// the flusher.
    pub fn handle_batch(&mut self, batch: Batch) {
        let Batch { topic, full_topic, partition, records, ack, fanout } = batch;
        let skip_below = self.flusher.skip_below();
        let mut skipped = 0;
        for rec in records.iter() {
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
        let out = self.flusher.output_ack(Some(&ack));
        self.send(&out);
        out.processed();
        let next_offset = records.last().map(|r| r.offset + 1);
        if self.flusher.batch_processed(&*self.sink, full_topic, next_offset, ack, fanout) {
            self.flush_state();
        }
    }

    /// Flushes the state's changes since the last flush with the task's flush protocol (see
    /// [`super::flush`]). Does nothing for a task that does not flush.
    pub fn flush_state(&mut self) {
        self.flush_and_commit(false);
    }

    /// [`flush_state`](Task::flush_state); `closing` for the task's last flush.
    fn flush_and_commit(&mut self, closing: bool) {
        let processor = &mut self.processor;
        if let Err(e) = self.flusher.flush(&*self.sink, |changes| processor.take_changes(changes), closing) {
            // The sink has counted and logged it, and refuses what follows; see CommitError.
            tracing::debug!(pipeline = self.pipeline, partition = self.partition, error = %e, "commit failed");
        }
    }

    /// Runs the processor's periodic work at `now`.
    pub fn tick(&mut self, now: chrono::DateTime<Utc>) {
        self.processor.on_tick(now, &mut self.emit);
        self.send_unprompted();
    }

    /// Sends what the processor emitted outside a batch (timers, a restore), if anything.
    fn send_unprompted(&mut self) {
        if !self.emit.records.is_empty() || !self.emit.parts.is_empty() {
            let ack = self.flusher.output_ack(None);
            self.send(&ack);
            ack.processed();
        }
    }

    /// Sends the emitted records with `ack` and merges the emitted parts into the aggregate.
    fn send(&mut self, ack: &Arc<BatchAck>) {
        for rec in self.emit.records.drain(..) {
            self.sink.send(rec, ack);
        }
        if !self.emit.parts.is_empty() {
            if let Some(publish) = &self.publish {
                let mut shares = Vec::new();
                publish(self.partition, &mut self.emit.parts, &mut shares);
                for rec in shares {
                    self.sink.send(rec, ack);
                }
            }
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
        if let Some(every) = self.flusher.flush_every() {
            ctx.run_interval(every, |task, _| task.flush_state());
            // The repairs of a torn flush go out before anything else.
            if self.flusher.has_repairs() {
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
