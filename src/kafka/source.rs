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
use rdkafka::ClientContext;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use super::client;
use crate::config::{Config, ProcessingGuarantee};
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
        }
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
        for (name, topic) in &stats.topics {
            for (p, part) in &topic.partitions {
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
                router.revoke(&topic, partition);
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
/// dry. Chunks go through a bounded channel: when the router is behind, `blocking_send` waits and
/// this thread stops polling, so backpressure reaches the broker. The thread ends when `stop` is
/// set or the receiver is gone; chunks still in the channel are never dispatched, so their
/// offsets are never stored.
pub fn spawn_poller(
    consumer: Arc<Source>,
    topics: Vec<String>,
    cfg: &Config,
    stop: Arc<AtomicBool>,
) -> std::io::Result<(std::thread::JoinHandle<()>, mpsc::Receiver<Polled>)> {
    let (tx, rx) = mpsc::channel(2);
    let max = cfg.engine.batch_max_records.get();
    let wait = cfg.engine.batch_max_wait;
    let handle = std::thread::Builder::new().name("pp-consumer".into()).spawn(move || {
        let mut groups: Vec<PartitionRun> = Vec::new();
        let mut last_topic: Option<(String, Option<usize>)> = None;
        while !stop.load(Ordering::Acquire) {
            let mut n = 0;
            let mut first_at: Option<Instant> = None;
            while n < max && !stop.load(Ordering::Acquire) {
                // Block (briefly) only while the chunk is empty or young; otherwise drain what is
                // already queued and ship.
                let timeout = match first_at {
                    None => Duration::from_millis(100),
                    Some(t) => match wait.checked_sub(t.elapsed()) {
                        Some(left) => left.min(Duration::from_millis(1)),
                        None => break,
                    },
                };
                let polled = consumer.poll(timeout);
                // Rebalance callbacks run inside `poll`: records grouped so far were fetched
                // before it, whatever `poll` returned now after it. Ship them in that order.
                if consumer.context().rebalanced.swap(false, Ordering::AcqRel) {
                    let changes = consumer.context().take_changes();
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
                    None => continue,
                    Some(Err(e)) => {
                        consumer.context().metrics.kafka_errors.with_label_values(&["consume"]).inc();
                        tracing::warn!(error = %e, "consume error");
                        continue;
                    }
                    Some(Ok(m)) => m,
                };
                first_at.get_or_insert_with(Instant::now);
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
                let rec = raw_record(&msg);
                let partition = msg.partition();
                match groups.iter_mut().find(|(i, p, _)| *i == input && *p == partition) {
                    Some((_, _, recs)) => recs.push(rec),
                    None => groups.push((input, partition, vec![rec])),
                }
                n += 1;
            }
            if !groups.is_empty() && tx.blocking_send(Polled::Records(std::mem::take(&mut groups))).is_err() {
                return;
            }
        }
    })?;
    Ok((handle, rx))
}

/// The routing loop: takes chunks from the polling thread as a tokio stream, applies rebalance
/// events, and dispatches each partition's records to its task. Runs until `shutdown` triggers
/// (then returns at once) or a task dies. Dispatch waits while a task's inbox is full, which
/// fills the chunk channel and so pauses polling.
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
    loop {
        let polled = tokio::select! {
            biased;
            _ = &mut stop => return Ok(()),
            polled = chunks.next() => match polled {
                Some(p) => p,
                None => return Ok(()),
            },
        };
        let chunk = match polled {
            Polled::Records(chunk) => chunk,
            Polled::Rebalance(changes) => {
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
            router.dispatch(input, partition, records).await?;
        }
    }
}
