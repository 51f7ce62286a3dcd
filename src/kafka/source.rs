//! The consumer source: one rdkafka consumer reads every input topic on a dedicated polling
//! thread, which cuts the records into per-partition chunks; the routing loop takes them as a
//! tokio stream and hands each partition's records to its task through the [`Router`].

use std::sync::{Arc, Mutex};

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, TopicPartitionList};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use super::client;
use super::guard::{PositionGuard, Verdict};
use crate::config::{Config, ProcessingGuarantee};
use crate::engine::flow::FlowChange;
use crate::engine::router::TaskGone;
use crate::engine::{RawRecord, Router, Shutdown};
use crate::health::Health;
use crate::metrics::Metrics;

/// A rebalance, queued by the rebalance callback for the routing loop: (full topic, partition)
/// pairs whose tasks must stop (revoked) or start, restoring their state (assigned).
pub type Revoked = Vec<(String, i32)>;

/// One queued rebalance event.
#[derive(Debug)]
pub enum Change {
    /// Partitions assigned to this instance.
    Assigned(Revoked),
    /// Partitions taken away.
    Revoked(Revoked),
}

/// What the polling thread hands the routing loop, in the order it happened: records, and
/// rebalances between them (so no record fetched before a rebalance reaches a task started
/// after it).
#[derive(Debug)]
pub enum Polled {
    /// Records, per partition.
    Records(Vec<PartitionRun>),
    /// A rebalance.
    Rebalance(Vec<Change>),
}

/// Receives rebalances, statistics and errors from librdkafka.
pub struct SourceContext {
    metrics: Metrics,
    prefix: String,
    health: Arc<Health>,
    changes: Mutex<Vec<Change>>,
    rebalanced: AtomicBool,
    rejoin: AtomicBool,
    flow: Mutex<Vec<FlowChange>>,
}

impl SourceContext {
    /// A context reporting into `metrics` and `health`.
    pub fn new(cfg: &Config, metrics: Metrics, health: Arc<Health>) -> Self {
        Self {
            metrics,
            prefix: cfg.kafka.topic_prefix.clone(),
            health,
            changes: Mutex::new(Vec::new()),
            rebalanced: AtomicBool::new(false),
            rejoin: AtomicBool::new(false),
            flow: Mutex::new(Vec::new()),
        }
    }

    /// Asks the polling thread to pause or resume a partition (it owns the position guard that
    /// must see every resume, see [`super::guard`]).
    pub fn queue_flow(&self, change: FlowChange) {
        self.flow.lock().unwrap_or_else(|p| p.into_inner()).push(change);
    }

    fn take_flow(&self) -> Vec<FlowChange> {
        std::mem::take(&mut *self.flow.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Asks the polling thread to leave the group and join it again (see
    /// [`crate::kafka::watchdog`]): the coordinator then computes a fresh assignment.
    pub fn request_rejoin(&self) {
        self.rejoin.store(true, Ordering::Release);
    }

    fn take_changes(&self) -> Vec<Change> {
        std::mem::take(&mut *self.changes.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn logical<'a>(&self, full: &'a str) -> &'a str {
        full.strip_prefix(self.prefix.as_str()).unwrap_or(full)
    }
}

impl ClientContext for SourceContext {
    fn stats(&self, stats: Statistics) {
        self.health.set_broker_up(stats.brokers.values().any(|b| b.state == "UP"));
        let fetched: u64 = stats.topics.values().flat_map(|t| t.partitions.values()).map(|p| p.fetchq_size).sum();
        self.metrics.memory.set_queue("kafka_fetch_queue", i64::try_from(fetched).unwrap_or(i64::MAX));
        for (name, topic) in &stats.topics {
            for (p, part) in &topic.partitions {
                if *p >= 0 && part.desired {
                    tracing::debug!(topic = %name, partition = p, fetch_state = %part.fetch_state, next_offset = part.next_offset, app_offset = part.app_offset, hi = part.hi_offset, ls = part.ls_offset, lag = part.consumer_lag, fetchq = part.fetchq_cnt, msgs = part.msgs, "partition stats");
                }
                // Partition -1 is librdkafka's internal "unassigned" bucket; a negative lag
                // means "unknown" (nothing fetched yet).
                if *p >= 0 && part.consumer_lag >= 0 && part.desired {
                    self.metrics
                        .consumer_lag
                        .with_label_values(&[self.logical(name), &p.to_string()])
                        .set(part.consumer_lag);
                }
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let kind = match error.rdkafka_error_code() {
            Some(rdkafka::types::RDKafkaErrorCode::AllBrokersDown) => {
                self.health.set_broker_up(false);
                "all_brokers_down"
            }
            Some(rdkafka::types::RDKafkaErrorCode::BrokerTransportFailure) => "transport",
            _ => "consumer",
        };
        self.metrics.kafka_errors.with_label_values(&[kind]).inc();
        tracing::warn!(%error, reason, "consumer error");
    }
}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        // Asked here: by the time of `post_rebalance` the unassignment has cleared the flag.
        let Rebalance::Revoke(tpl) = rebalance else { return };
        if consumer.assignment_lost() {
            // The coordinator no longer knew this member (its session expired, e.g. while the
            // broker was paused): librdkafka rejoins by itself; the watchdog makes sure the new
            // assignment is not left empty on a coordinator that does that.
            self.metrics.group_rejoins.with_label_values(&["session_lost"]).inc();
            tracing::warn!("the consumer group session was lost: its partitions are revoked and the group rejoined");
            // librdkafka commits the stored offsets of revoked partitions, even of a lost
            // assignment, to whichever coordinator answers next. After a broker restart that
            // lost its data that is a new, empty log, where an old offset would skip records.
            // Their next owner redoes the uncommitted work instead.
            let mut forget = TopicPartitionList::with_capacity(tpl.count());
            for e in tpl.elements() {
                // Err only for an invalid partition number, which the broker just gave us.
                let _ = forget.add_partition_offset(e.topic(), e.partition(), rdkafka::Offset::Invalid);
            }
            if let Err(e) = consumer.store_offsets(&forget) {
                tracing::debug!(error = %e, "stored offsets of a lost assignment not cleared");
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let pairs = |tpl: &rdkafka::TopicPartitionList| {
            tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect::<Vec<_>>()
        };
        let change = match rebalance {
            Rebalance::Assign(tpl) => {
                tracing::info!(assigned = ?pairs(tpl), "rebalance");
                // Not ready until the routing loop has started (and so begun restoring) its tasks.
                self.health.set_assigning(true);
                Change::Assigned(pairs(tpl))
            }
            Rebalance::Revoke(tpl) => {
                tracing::info!(revoked = ?pairs(tpl), "rebalance");
                Change::Revoked(pairs(tpl))
            }
            Rebalance::Error(e) => {
                self.metrics.kafka_errors.with_label_values(&["rebalance"]).inc();
                tracing::warn!(error = %e, "rebalance error");
                return;
            }
        };
        let owned = consumer.assignment().map(|a| a.count()).unwrap_or(0);
        self.health.set_assigned(owned);
        self.metrics.assigned_partitions.set(owned as i64);
        self.changes.lock().unwrap_or_else(|p| p.into_inner()).push(change);
        self.rebalanced.store(true, Ordering::Release);
    }
}

/// Ends an assignment's "not ready" window when dropped (see [`Health::set_assigning`]).
struct Assigning<'a>(&'a Health);

impl Drop for Assigning<'_> {
    fn drop(&mut self) {
        self.0.set_assigning(false);
    }
}

/// Applies one rebalance to the router: tasks of revoked partitions stop, tasks of assigned ones
/// start (restoring their state).
fn apply_rebalance(
    consumer: &Source,
    router: &mut Router,
    change: Change,
    rebuilding: &mut std::collections::HashMap<(String, i32), i64>,
    health: &Health,
) {
    match change {
        Change::Assigned(pairs) => {
            // The tasks below start (and count themselves as restoring) before this ends.
            let _assigning = Assigning(health);
            for (topic, partition) in pairs {
                router.assign(&topic, partition);
                if !router.rereads(&topic) || rebuilding.contains_key(&(topic.clone(), partition)) {
                    continue;
                }
                match consumer.fetch_watermarks(&topic, partition, Duration::from_secs(5)) {
                    Ok((low, high)) if high > low => {
                        health.set_restoring(true);
                        rebuilding.insert((topic, partition), high);
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(topic, partition, error = %e, "cannot read the end offset"),
                }
            }
        }
        Change::Revoked(pairs) => {
            for (topic, partition) in pairs {
                // The polling thread clears the partition's pause flag itself (it saw the revocation
                // first); the router only drops what it had parked.
                let _resume = router.revoke(&topic, partition);
                if rebuilding.remove(&(topic.clone(), partition)).is_some() {
                    health.set_restoring(false);
                }
                let logical = consumer.context().logical(&topic).to_string();
                // Err only when lag was never reported for it: nothing to remove.
                let _ =
                    consumer.context().metrics.consumer_lag.remove_label_values(&[&logical, &partition.to_string()]);
            }
        }
    }
}

/// Copies a consumed message out of librdkafka's buffers.
pub fn raw_record(msg: &rdkafka::message::BorrowedMessage<'_>) -> RawRecord {
    RawRecord {
        key: msg.key().map(<[u8]>::to_vec),
        value: msg.payload().map(<[u8]>::to_vec),
        offset: msg.offset(),
        timestamp_ms: msg.timestamp().to_millis(),
    }
}

/// The consumer type pagepulse runs.
pub type Source = BaseConsumer<SourceContext>;

/// Errors of the source.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The consumer could not be created or subscribed.
    #[error("cannot start the Kafka consumer: {0}")]
    Kafka(#[from] KafkaError),
    /// A task died.
    #[error(transparent)]
    TaskGone(#[from] TaskGone),
}

/// Creates the consumer and subscribes it to `topics` (full names). In exactly-once mode it
/// commits nothing itself and reads committed records only ([`client::exactly_once_consumer`]).
pub fn subscribe(cfg: &Config, ctx: SourceContext, topics: &[String]) -> Result<Arc<Source>, Error> {
    let mut cc = client::consumer(&cfg.kafka);
    if cfg.engine.processing_guarantee == ProcessingGuarantee::ExactlyOnce {
        client::exactly_once_consumer(&mut cc);
    }
    let consumer: Source = cc.create_with_context(ctx)?;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&names)?;
    Ok(Arc::new(consumer))
}

/// Records of one input partition, in offset order: (input index, partition, records).
pub type PartitionRun = (usize, i32, Vec<RawRecord>);

/// The polling thread: reads librdkafka's queue with the cheap blocking `poll` (measured: the
/// per-message cost of polling through an async stream made one thread the bottleneck of the
/// whole engine), copies records out and groups them per partition into chunks of at most
/// `engine.batch_max_records`, cut early after `engine.batch_max_wait` or when the queue runs
/// dry. Chunks go through a bounded channel to the routing loop, which never waits for a task
/// (it parks batches and pauses partitions instead, see [`crate::engine::flow`]), so this thread
/// keeps polling and the group keeps this member. It also carries out the watchdog's rejoins. The
/// thread ends when `stop` is set or the receiver is gone; chunks still in the channel are never
/// dispatched, so their offsets are never stored.
pub fn spawn_poller(
    consumer: Arc<Source>,
    topics: Vec<String>,
    cfg: &Config,
    stop: Arc<AtomicBool>,
    from_beginning: bool,
) -> std::io::Result<(std::thread::JoinHandle<()>, mpsc::Receiver<Polled>)> {
    let (tx, rx) = mpsc::channel(2);
    let max = cfg.engine.batch_max_records.get();
    let wait = cfg.engine.batch_max_wait;
    let commit_interval = cfg.kafka.commit_interval;
    let handle = std::thread::Builder::new().name("pp-consumer".into()).spawn(move || {
        let mut poller = Poller::new(&consumer, &topics, from_beginning.then_some(3 * commit_interval));
        let mut groups: Vec<PartitionRun> = Vec::new();
        let mut last_topic: Option<(String, Option<usize>)> = None;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        while !stop.load(Ordering::Acquire) {
            if consumer.context().rejoin.swap(false, Ordering::AcqRel) {
                // Leaving (the revocation arrives through a later poll, in order) and subscribing
                // again joins as a new member, which makes the coordinator rebalance the group.
                consumer.unsubscribe();
                if let Err(e) = consumer.subscribe(&names) {
                    tracing::error!(error = %e, "cannot subscribe again after leaving the group");
                }
            }
            poller.apply_flow();
            poller.unstick();
            let mut n = 0;
            let mut first_at: Option<Instant> = None;
            // What is left of `batch_max_wait`, read from the clock every CLOCK_EVERY records (a
            // clock read per record was a visible share of this thread's CPU; 64 polls of queued
            // records take a few microseconds, well inside the 1 ms granularity of the wait).
            let mut left = wait;
            while n < max && !stop.load(Ordering::Acquire) {
                // Block (briefly) only while the chunk is empty or young; otherwise drain what is
                // already queued and ship. While a partition is paused, wake often enough to
                // resume it promptly.
                let idle = if poller.paused.is_empty() { Duration::from_millis(100) } else { Duration::from_millis(5) };
                let timeout = match first_at {
                    None => idle,
                    Some(t) => {
                        if n % CLOCK_EVERY == 0 {
                            match wait.checked_sub(t.elapsed()) {
                                Some(l) => left = l,
                                None => break,
                            }
                        }
                        left.min(Duration::from_millis(1))
                    }
                };
                let polled = consumer.poll(timeout);
                // Rebalance callbacks run inside `poll`: records grouped so far were fetched
                // before it, whatever `poll` returned now after it. Ship them in that order.
                if consumer.context().rebalanced.swap(false, Ordering::AcqRel) {
                    let changes = consumer.context().take_changes();
                    poller.rebalanced(&changes);
                    poller.taken(&groups);
                    if !groups.is_empty() && tx.blocking_send(Polled::Records(std::mem::take(&mut groups))).is_err() {
                        return;
                    }
                    if tx.blocking_send(Polled::Rebalance(changes)).is_err() {
                        return;
                    }
                    n = 0;
                    first_at = None;
                }
                let msg = match polled {
                    None if first_at.is_some() => break,
                    None => {
                        // Idle: the silence check must run here too (a resume inside tansu's
                        // last record batch gets nothing until it fetches again from further
                        // back, see `Poller::unstick`), and rejoins must not wait for input.
                        if !poller.paused.is_empty() {
                            poller.apply_flow();
                        }
                        poller.unstick();
                        if consumer.context().rejoin.load(Ordering::Acquire) {
                            break;
                        }
                        continue;
                    }
                    Some(Err(e)) => {
                        consumer.context().metrics.kafka_errors.with_label_values(&["consume"]).inc();
                        tracing::warn!(error = %e, "consume error");
                        continue;
                    }
                    Some(Ok(m)) => m,
                };
                let topic = msg.topic();
                let input = match &last_topic {
                    Some((name, idx)) if name == topic => *idx,
                    _ => {
                        let idx = topics.iter().position(|t| t == topic);
                        last_topic = Some((topic.to_string(), idx));
                        idx
                    }
                };
                let Some(input) = input else { continue };
                let partition = msg.partition();
                if !poller.admit(input, partition, msg.offset()) {
                    continue;
                }
                if first_at.is_none() {
                    first_at = Some(Instant::now());
                    left = wait;
                }
                let rec = raw_record(&msg);
                match groups.iter_mut().find(|(i, p, _)| *i == input && *p == partition) {
                    Some((_, _, recs)) => recs.push(rec),
                    None => groups.push((input, partition, vec![rec])),
                }
                n += 1;
            }
            poller.taken(&groups);
            if !groups.is_empty() && tx.blocking_send(Polled::Records(std::mem::take(&mut groups))).is_err() {
                return;
            }
        }
    })?;
    Ok((handle, rx))
}

/// When each partition's first record after the broker's data loss was delivered.
type FirstDelivered = std::collections::HashMap<(usize, i32), Instant>;

/// The polling thread's own bookkeeping: which partitions it paused, and the position guard
/// ([`guard`](super::guard)) that checks every partition continues where it should after an
/// assignment or a resume.
struct Poller<'a> {
    consumer: &'a Source,
    topics: &'a [String],
    guard: PositionGuard,
    paused: std::collections::HashSet<(usize, i32)>,
    /// After the broker lost its data: partitions read from their beginning on every assignment
    /// until this long after their first record was delivered (by then a commit of this
    /// incarnation covers them), whatever the group's committed offsets say. `None` otherwise.
    from_beginning: Option<(Duration, FirstDelivered)>,
    /// When guarded partitions were last checked for silence.
    last_unstick: Instant,
}

/// How long a positioned partition may stay silent before it is fetched again from further back,
/// when nothing says records exist after its position.
const SILENCE: Duration = Duration::from_secs(3);
/// The same when the broker's high watermark shows records after the position.
const SILENCE_BEHIND: Duration = Duration::from_millis(500);
/// How often guarded partitions are checked for silence.
const SILENCE_CHECK: Duration = Duration::from_millis(100);

impl<'a> Poller<'a> {
    fn new(consumer: &'a Source, topics: &'a [String], from_beginning: Option<Duration>) -> Self {
        let from_beginning = from_beginning.map(|d| (d, std::collections::HashMap::new()));
        Self {
            consumer,
            topics,
            guard: PositionGuard::new(),
            paused: std::collections::HashSet::new(),
            from_beginning,
            last_unstick: Instant::now(),
        }
    }

    /// Whether `key` is still to be read from its beginning on assignment.
    fn reads_from_beginning(&self, key: (usize, i32)) -> bool {
        self.from_beginning.as_ref().is_some_and(|(wait, first)| first.get(&key).is_none_or(|at| at.elapsed() < *wait))
    }

    fn key(&self, topic: &str, partition: i32) -> Option<(usize, i32)> {
        self.topics.iter().position(|t| t == topic).map(|i| (i, partition))
    }

    /// Notes the last offset of each run about to be shipped (what a resume continues after).
    fn taken(&mut self, groups: &[PartitionRun]) {
        for (input, partition, recs) in groups {
            if let Some(last) = recs.last() {
                self.guard.taken((*input, *partition), last.offset);
            }
        }
    }

    /// Applies the pauses and resumes the routing loop asked for (see [`crate::engine::flow`]).
    fn apply_flow(&mut self) {
        for change in self.consumer.context().take_flow() {
            let (topic, partition, pause) = match &change {
                FlowChange::Pause(t, p) => (t, *p, true),
                FlowChange::Resume(t, p) => (t, *p, false),
            };
            let Some(key) = self.key(topic, partition) else { continue };
            let mut tpl = TopicPartitionList::with_capacity(1);
            tpl.add_partition(topic, partition);
            let metrics = &self.consumer.context().metrics;
            if pause {
                match self.consumer.pause(&tpl) {
                    Ok(()) => {
                        self.paused.insert(key);
                        metrics.partition_pauses.inc();
                        tracing::debug!(topic = &**topic, partition, "partition paused: its task is behind");
                    }
                    // No longer assigned: nothing to pause.
                    Err(e) => tracing::debug!(topic = &**topic, partition, error = %e, "pause not applied"),
                }
            } else if self.paused.remove(&key) {
                match self.consumer.resume(&tpl) {
                    Ok(()) => {
                        self.guard.resumed(key);
                        tracing::debug!(topic = &**topic, partition, "partition resumed");
                    }
                    Err(e) => tracing::debug!(topic = &**topic, partition, error = %e, "resume not applied"),
                }
            }
        }
        metrics_paused(self.consumer, self.paused.len());
    }

    /// Fetches again, from further back, a guarded partition from which nothing came since it was
    /// positioned (see [`PositionGuard::silent`]): after [`SILENCE_BEHIND`] when the broker's last
    /// fetch answer said records exist from the expected offset on, after [`SILENCE`] otherwise
    /// (an idle partition: one rewind shows the log really ends there). Paused partitions wait.
    /// Checked every [`SILENCE_CHECK`] while any partition is guarded.
    fn unstick(&mut self) {
        if self.guard.guarded() == 0 || self.last_unstick.elapsed() < SILENCE_CHECK {
            return;
        }
        self.last_unstick = Instant::now();
        let (consumer, topics, paused) = (self.consumer, self.topics, &self.paused);
        let patience = |(input, partition): (usize, i32), expected: i64| {
            if paused.contains(&(input, partition)) {
                return None;
            }
            // librdkafka's cached watermarks from the last fetch answer: no network call.
            match client::cached_high_watermark(consumer, &topics[input], partition) {
                Some(high) if high > expected => Some(SILENCE_BEHIND),
                _ => Some(SILENCE),
            }
        };
        for ((input, partition), to) in self.guard.silent(Instant::now(), patience) {
            let topic = &self.topics[input];
            self.consumer.context().metrics.consumer_rewinds.inc();
            tracing::debug!(
                topic,
                partition,
                fetch_from = to,
                "nothing came since the partition was positioned: fetching again from further back"
            );
            if let Err(e) = self.consumer.seek(topic, partition, rdkafka::Offset::Offset(to), Duration::from_secs(10)) {
                tracing::debug!(topic, partition, error = %e, "cannot fetch again from an earlier offset");
            }
        }
    }

    /// Guards the partitions of `tpl`, just assigned, from their committed offsets.
    fn guard_committed(&mut self, tpl: TopicPartitionList) {
        if tpl.count() == 0 {
            return;
        }
        let committed = match self.consumer.committed_offsets(tpl, Duration::from_secs(10)) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the committed offsets of an assignment: not guarded");
                return;
            }
        };
        for e in committed.elements() {
            if let (Some(key), rdkafka::Offset::Offset(at)) = (self.key(e.topic(), e.partition()), e.offset()) {
                self.guard.assigned(key, at);
            }
        }
    }

    /// Guards the partitions just assigned from their committed offsets, forgets revoked ones.
    fn rebalanced(&mut self, changes: &[Change]) {
        for change in changes {
            match change {
                Change::Assigned(pairs) if self.from_beginning.is_some() => {
                    // Positioned at the low watermark: the first record fetched from the
                    // committed offset is "ahead", and the guard fetches again from there.
                    let mut rest = TopicPartitionList::new();
                    let mut reset = 0;
                    for (t, p) in pairs {
                        match self.key(t, *p) {
                            Some(key) if self.reads_from_beginning(key) => {
                                let low =
                                    self.consumer.fetch_watermarks(t, *p, Duration::from_secs(10)).map_or(0, |w| w.0);
                                self.guard.assigned(key, low);
                                reset += 1;
                            }
                            _ => {
                                rest.add_partition(t, *p);
                            }
                        }
                    }
                    if reset > 0 {
                        tracing::warn!(
                            partitions = reset,
                            "the broker lost its data: reading the input again from the beginning, not from the committed \
                             offsets (records processed since the loss are processed again)"
                        );
                    }
                    self.guard_committed(rest);
                }
                Change::Assigned(pairs) => {
                    let mut tpl = TopicPartitionList::new();
                    for (t, p) in pairs {
                        tpl.add_partition(t, *p);
                    }
                    self.guard_committed(tpl);
                }
                Change::Revoked(pairs) => {
                    for (t, p) in pairs {
                        if let Some(key) = self.key(t, *p) {
                            self.guard.revoked(key);
                            if self.paused.remove(&key) {
                                // Clear the consumer's pause flag, should the partition come back.
                                let mut tpl = TopicPartitionList::with_capacity(1);
                                tpl.add_partition(t, *p);
                                // Err: already unassigned, nothing paused any more.
                                let _ = self.consumer.resume(&tpl);
                            }
                        }
                    }
                    metrics_paused(self.consumer, self.paused.len());
                }
            }
        }
    }

    /// Whether the record at `offset` of (`input`, `partition`) goes to its task; a record the
    /// guard refuses is dropped, and a skip by the broker is repaired by fetching again.
    fn admit(&mut self, input: usize, partition: i32, offset: i64) -> bool {
        let verdict = self.guard.check((input, partition), offset);
        if let (Some((_, first)), Verdict::Deliver | Verdict::GapAccepted { .. }) = (&mut self.from_beginning, &verdict)
        {
            first.entry((input, partition)).or_insert_with(Instant::now);
        }
        match verdict {
            Verdict::Deliver | Verdict::GapAccepted { .. } if !self.guard.fresh((input, partition), offset) => {
                self.consumer.context().metrics.consumer_redelivered.inc();
                tracing::debug!(topic = &self.topics[input], partition, offset, "dropped a record delivered again");
                false
            }
            Verdict::Deliver => true,
            Verdict::Duplicate => false,
            Verdict::Rewind(to) => {
                let topic = &self.topics[input];
                self.consumer.context().metrics.consumer_rewinds.inc();
                tracing::info!(
                    topic,
                    partition,
                    got = offset,
                    fetch_from = to,
                    "the broker skipped records after the consumer was positioned: fetching again from further back"
                );
                if let Err(e) =
                    self.consumer.seek(topic, partition, rdkafka::Offset::Offset(to), Duration::from_secs(10))
                {
                    tracing::warn!(topic, partition, error = %e, "cannot fetch again from an earlier offset");
                }
                false
            }
            Verdict::GapAccepted { expected } => {
                tracing::warn!(
                    topic = &self.topics[input],
                    partition,
                    expected,
                    got = offset,
                    "records between the expected offset and this one cannot be fetched: carrying on from here"
                );
                true
            }
        }
    }
}

fn metrics_paused(consumer: &Source, n: usize) {
    consumer.context().metrics.partitions_paused.set(n as i64);
}

/// How many records the polling thread takes between two reads of the clock (see
/// [`spawn_poller`]).
const CLOCK_EVERY: usize = 64;

/// The routing loop: takes chunks from the polling thread as a tokio stream, applies rebalance
/// events, and dispatches each partition's records to its task. Runs until `shutdown` triggers
/// (then returns at once) or a task dies. It never waits for a task: a full inbox parks the batch
/// and, past the partition's budget, pauses the partition; parked batches are offered again every
/// few milliseconds (see [`crate::engine::flow`]).
pub async fn run(
    consumer: &Source,
    chunks: mpsc::Receiver<Polled>,
    router: &mut Router,
    shutdown: &Shutdown,
) -> Result<(), Error> {
    let mut chunks = ReceiverStream::new(chunks);
    let stop = shutdown.wait();
    tokio::pin!(stop);
    // Partitions of re-read inputs (tables rebuilt at every assignment, e.g. `pages`) still being
    // read up to the end they had when assigned: the instance is not ready until they are.
    let mut rebuilding: std::collections::HashMap<(String, i32), i64> = std::collections::HashMap::new();
    let health = consumer.context().health.clone();
    let mut retry = tokio::time::interval(UNPARK_EVERY);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let polled = tokio::select! {
            biased;
            _ = &mut stop => return Ok(()),
            _ = retry.tick(), if router.has_parked() => None,
            polled = chunks.next() => match polled {
                Some(p) => Some(p),
                None => return Ok(()),
            },
        };
        if router.has_parked() {
            for change in router.unpark()? {
                consumer.context().queue_flow(change);
            }
        }
        let chunk = match polled {
            None => continue,
            Some(Polled::Records(chunk)) => chunk,
            Some(Polled::Rebalance(changes)) => {
                for change in changes {
                    apply_rebalance(consumer, router, change, &mut rebuilding, &health);
                }
                continue;
            }
        };
        for (input, partition, records) in chunk {
            if !rebuilding.is_empty() {
                let key = (router.input_name(input).to_string(), partition);
                let done = records.last().is_some_and(|r| rebuilding.get(&key).is_some_and(|&end| r.offset + 1 >= end));
                if done {
                    rebuilding.remove(&key);
                    health.set_restoring(false);
                }
            }
            if let Some(pause) = router.dispatch(input, partition, records)? {
                consumer.context().queue_flow(pause);
            }
        }
    }
}

/// How often parked batches are offered to their inboxes again.
const UNPARK_EVERY: Duration = Duration::from_millis(2);
