//! Cross-partition aggregates: state that needs every partition's records, such as a global
//! top-N. Tasks merge their parts into one shared aggregate per pipeline after each batch (a
//! short lock per batch, no queue to bound); an [`AggregatorActor`] ticks it to emit results.
//!
//! This is exact within one instance. With several instances each sees only its own partitions;
//! a repartition topic is the way to make it global across instances.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::{Actor, AsyncContext, Context, Handler, Message};
use chrono::{DateTime, Utc};

use super::offsets::BatchAck;
use super::record::OutRecord;
use super::sink::Sink;

/// Merges a batch's parts into the pipeline's shared aggregate: what a task calls after each batch.
pub type MergeFn<T> = Arc<dyn Fn(&mut Vec<T>) + Send + Sync>;

/// A pipeline-wide aggregate fed by every partition task.
pub trait Aggregate: Send + 'static {
    /// What tasks contribute.
    type Part: Send + 'static;

    /// Folds `parts` in, leaving the vector empty.
    fn merge(&mut self, parts: &mut Vec<Self::Part>);

    /// Periodic emission at wall-clock `now`: push results into `out`.
    fn on_tick(&mut self, now: DateTime<Utc>, out: &mut Vec<OutRecord>);

    /// Called right after an [`on_tick`](Aggregate::on_tick) that pushed records, with the ack
    /// they are sent with: it is done once the broker has acknowledged them all (or refused one:
    /// [`BatchAck::failed`]). For an aggregate that must not forget what it emitted before it is
    /// durable. The default ignores it.
    fn sent(&mut self, _ack: &Arc<BatchAck>) {}
}

/// A handle tasks use to merge into `shared`.
pub fn merge_fn<A: Aggregate>(shared: Arc<Mutex<A>>) -> MergeFn<A::Part> {
    Arc::new(move |parts: &mut Vec<A::Part>| {
        // A panic inside merge leaves counts, not broken invariants: keep serving.
        shared.lock().unwrap_or_else(|p| p.into_inner()).merge(parts)
    })
}

/// Ticks a shared aggregate every `interval` and sends what it emits.
pub struct AggregatorActor<A: Aggregate> {
    shared: Arc<Mutex<A>>,
    interval: Duration,
    sink: Arc<dyn Sink>,
}

impl<A: Aggregate> AggregatorActor<A> {
    /// An actor ticking `shared` every `interval`, sending to `sink`.
    pub fn new(shared: Arc<Mutex<A>>, interval: Duration, sink: Arc<dyn Sink>) -> Self {
        Self { shared, interval, sink }
    }

    fn tick(&mut self) {
        let mut out = Vec::new();
        let ack = BatchAck::untracked();
        {
            let mut shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
            shared.on_tick(Utc::now(), &mut out);
            if !out.is_empty() {
                shared.sent(&ack);
            }
        }
        if out.is_empty() {
            return;
        }
        for rec in out {
            self.sink.send(rec, &ack);
        }
        ack.processed();
    }
}

impl<A: Aggregate + Unpin> Actor for AggregatorActor<A> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.interval, |a, _| a.tick());
    }
}

/// Asks for one last emission (at shutdown, after every task has finished); the actor then stops.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Flush;

impl<A: Aggregate + Unpin> Handler<Flush> for AggregatorActor<A> {
    type Result = ();

    fn handle(&mut self, _: Flush, ctx: &mut Self::Context) {
        self.tick();
        // Sent once, when the engine stops: its ticks must not outlive the engine's sink.
        actix::ActorContext::stop(ctx);
    }
}
