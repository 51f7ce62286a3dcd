//! The task actor: owns one (pipeline, partition), runs its [`Processor`] on each batch, sends the
//! outputs and dead letters to the sink, and releases the batch's processing guard.

use std::sync::Arc;

use actix::{Actor, AsyncContext, Context, StreamHandler};
use chrono::Utc;
use tokio::sync::mpsc;

use super::deadletter::dead_letter;
use super::offsets::BatchAck;
use super::processor::{Emit, Processor, RecordMeta};
use super::record::Batch;
use super::sink::Sink;
use crate::metrics::Metrics;

/// Merges a batch's parts into the pipeline's shared aggregate (see [`super::aggregate`]).
pub type MergeFn<T> = Arc<dyn Fn(&mut Vec<T>) + Send + Sync>;

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
        Self { pipeline, partition, processor, sink, merge, emit: Emit::default(), metrics, inbox_depth, _done: done }
    }

    /// Decodes and processes every record of `batch`, sends the outputs, then releases the batch.
    pub fn handle_batch(&mut self, batch: Batch) {
        let Batch { topic, full_topic, partition, records, ack } = batch;
        for rec in &records {
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
        self.flush(&ack);
        ack.processed();
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

    /// The inbox closed (revocation or shutdown) and every batch in it was handled: stop.
    fn finished(&mut self, ctx: &mut Self::Context) {
        actix::ActorContext::stop(ctx);
    }
}
