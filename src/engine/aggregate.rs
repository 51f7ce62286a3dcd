//! Cross-partition aggregates: state that needs every partition's records, such as a global
//! top-N. An [`AggregatorActor`] ticks the aggregate to emit results.
//!
//! Two ways parts reach the aggregate:
//!
//! - **Within one instance** ([`merge_fn`]): tasks merge their parts into the instance's shared
//!   aggregate after each batch (a short lock per batch, no queue to bound). Exact only for the
//!   partitions this instance holds.
//! - **Across instances** ([`PublishFn`]): each task turns its parts into **share** records (its
//!   partition's current contribution, keyed by partition and what it counts, so the latest record
//!   per key is the truth) and sends them to the pipeline's internal shares topic with the batch's
//!   outputs, so they are as durable as any output. Every instance reads that topic whole (a
//!   global table, `crate::kafka::global`) into its aggregate, which then holds every
//!   partition's share, wherever the partition runs: the union a single instance holding every
//!   partition would have. Only the instance that holds partition 0 of the pipeline's input
//!   writes the results ([`Leadership`]): one writer per output key at a time; the others keep
//!   the same ranking for their own queries. This is Kafka Streams' repartition topic, with the
//!   partition as the grouping key and the aggregate re-read by everyone instead of one task.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::{Actor, AsyncContext, Context, Handler, Message};
use chrono::{DateTime, Utc};

use super::offsets::BatchAck;
use super::processor::{Emit, Processor, RecordMeta, RejectClass, Rejection};
use super::record::{OutRecord, RawRecord};
use super::sink::Sink;

/// Merges a batch's parts into the pipeline's shared aggregate: what a task calls after each batch.
pub type MergeFn<T> = Arc<dyn Fn(&mut Vec<T>) + Send + Sync>;

/// Turns the parts a task of partition `.0` emitted in one batch (drained from `.1`) into share
/// records (pushed to `.2`), sent with the batch's outputs.
pub type PublishFn<T> = Arc<dyn Fn(i32, &mut Vec<T>, &mut Vec<OutRecord>) + Send + Sync>;

/// Whether this instance writes a pipeline's aggregate results: while it runs the task of the
/// pipeline's partition 0 (the consumer group gives that partition to one instance at a time).
/// Clones share the flag.
#[derive(Debug, Clone, Default)]
pub struct Leadership {
    tasks: Arc<AtomicUsize>,
    gauge: Option<prometheus::IntGauge>,
}

impl Leadership {
    /// Not leading until a task holds a [`LeaderGuard`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Shows the role in `gauge` (1 while leading), e.g. `pagepulse_aggregate_writer{pipeline}`.
    pub fn with_gauge(mut self, gauge: prometheus::IntGauge) -> Self {
        gauge.set(0);
        self.gauge = Some(gauge);
        self
    }

    /// A guard that makes this instance the leader while it lives (held by the partition 0 task).
    pub fn guard(&self) -> LeaderGuard {
        self.tasks.fetch_add(1, Ordering::SeqCst);
        if let Some(g) = &self.gauge {
            g.set(1);
        }
        LeaderGuard { tasks: self.tasks.clone(), gauge: self.gauge.clone() }
    }

    /// True while a task of partition 0 runs here.
    pub fn leading(&self) -> bool {
        self.tasks.load(Ordering::SeqCst) > 0
    }
}

/// Held by the task of partition 0: see [`Leadership`].
#[derive(Debug)]
pub struct LeaderGuard {
    tasks: Arc<AtomicUsize>,
    gauge: Option<prometheus::IntGauge>,
}

impl Drop for LeaderGuard {
    fn drop(&mut self) {
        let left = self.tasks.fetch_sub(1, Ordering::SeqCst) - 1;
        if let Some(g) = &self.gauge {
            g.set(i64::from(left > 0));
        }
    }
}

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

    /// Forgets what was emitted, so the next [`on_tick`](Aggregate::on_tick) emits the current
    /// results even if unchanged: called when this instance becomes the writer (the previous
    /// writer may not have written the latest results before it lost the role). The default
    /// does nothing.
    fn forget_emitted(&mut self) {}
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
    /// With shares: who writes, and whether the shares table is read up to where it ended at
    /// start-up (before that the aggregate holds only part of the shares).
    cluster: Option<(Leadership, Arc<AtomicBool>)>,
    was_leading: bool,
}

impl<A: Aggregate> AggregatorActor<A> {
    /// An actor ticking `shared` every `interval`, sending to `sink`.
    pub fn new(shared: Arc<Mutex<A>>, interval: Duration, sink: Arc<dyn Sink>) -> Self {
        Self { shared, interval, sink, cluster: None, was_leading: false }
    }

    /// For an aggregate fed by a shares table (see the module docs): it is ticked only once the
    /// table is `caught_up`, and its results are sent only while `leadership` says this instance
    /// leads (the ticks still update what queries read on every instance).
    pub fn with_shares(mut self, leadership: Leadership, caught_up: Arc<AtomicBool>) -> Self {
        self.cluster = Some((leadership, caught_up));
        self
    }

    fn tick(&mut self) {
        let mut out = Vec::new();
        let ack = BatchAck::untracked();
        let leading = match &self.cluster {
            None => true,
            Some((_, caught_up)) if !caught_up.load(Ordering::Acquire) => return,
            Some((leadership, _)) => leadership.leading(),
        };
        {
            let mut shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
            if leading && !self.was_leading && self.cluster.is_some() {
                shared.forget_emitted();
            }
            shared.on_tick(Utc::now(), &mut out);
            if !leading {
                out.clear();
            }
            if !out.is_empty() {
                shared.sent(&ack);
            }
        }
        self.was_leading = leading;
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

/// The key of a share record of `partition`: `<partition>/<what>` (`what` names the part of the
/// partition's share, e.g. a bucket and a tag).
pub fn share_key(partition: i32, what: &str) -> Vec<u8> {
    format!("{partition}/{what}").into_bytes()
}

/// Decodes one share record into a part: the partition and the rest of its key, and its value
/// (`None`: a tombstone).
pub type DecodeShare<T> = fn(i32, &str, Option<&[u8]>) -> Result<T, Rejection>;

/// Reads a shares topic (as a global table, on every instance) into an aggregate: each record is
/// decoded into a part and merged at once. A record that does not decode is refused (and
/// dead-lettered by the table's reader).
pub struct SharesReader<A: Aggregate> {
    shared: Arc<Mutex<A>>,
    decode: DecodeShare<A::Part>,
}

impl<A: Aggregate> SharesReader<A> {
    /// A reader merging into `shared`, decoding with `decode`.
    pub fn new(shared: Arc<Mutex<A>>, decode: DecodeShare<A::Part>) -> Self {
        Self { shared, decode }
    }
}

impl<A: Aggregate> Processor for SharesReader<A>
where
    A::Part: Unpin,
{
    type Input<'a> = A::Part;
    type Part = ();

    fn decode(&self, _topic: &'static str, rec: &RawRecord) -> Result<A::Part, Rejection> {
        let (partition, what) = split_share_key(rec.key.as_deref())?;
        (self.decode)(partition, what, rec.value.as_deref())
    }

    fn process(&mut self, part: A::Part, _meta: &RecordMeta, _out: &mut Emit<()>) {
        self.shared.lock().unwrap_or_else(|p| p.into_inner()).merge(&mut vec![part]);
    }
}

/// The partition and the rest of a share record's key `<partition>/<what>`.
fn split_share_key(key: Option<&[u8]>) -> Result<(i32, &str), Rejection> {
    let key = key.and_then(|k| std::str::from_utf8(k).ok()).ok_or_else(|| {
        Rejection::new(RejectClass::MissingField, "a share record needs a UTF-8 key `<partition>/<what>`")
    })?;
    key.split_once('/').and_then(|(p, w)| Some((p.parse::<i32>().ok().filter(|p| *p >= 0)?, w))).ok_or_else(|| {
        Rejection::new(RejectClass::InvalidValue, format!("share key `{key}` is not `<partition>/<what>`"))
    })
}

/// Merges share records into `aggregate` as an instance reading the shares topic does, in order;
/// returns the refusals of records that do not decode. What tests and in-process harnesses use
/// instead of a broker.
pub fn read_shares<A: Aggregate>(
    aggregate: &mut A,
    records: &[OutRecord],
    decode: DecodeShare<A::Part>,
) -> Vec<Rejection> {
    let mut refused = Vec::new();
    for r in records {
        match split_share_key(r.key.as_deref()).and_then(|(p, what)| decode(p, what, r.value.as_deref())) {
            Ok(part) => aggregate.merge(&mut vec![part]),
            Err(why) => refused.push(why),
        }
    }
    refused
}
