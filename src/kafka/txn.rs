//! Exactly-once mode (`engine.processing_guarantee = "exactly_once"`): each task's outputs, its
//! changelog records and its input offsets commit in one Kafka transaction, so a consumer that
//! reads with `isolation.level=read_committed` sees each result once, across crashes.
//!
//! ## Design
//!
//! - **One transactional producer per task** ([`TxnSink`]), with `transactional.id =
//!   <kafka.group_id>-<pipeline>-<partition>`. The id depends only on what the task is, so the
//!   task's next incarnation (after a crash, a restart or a rebalance, in this process or
//!   another) uses the same id; its `InitProducerId` fences the previous incarnation (whose
//!   later writes and commits the broker refuses) and aborts its open transaction.
//! - **The sink is opened before the state is restored** ([`crate::engine::Sink::for_task`],
//!   called by the router): the restore reads the changelog with `read_committed`, which would
//!   otherwise wait for the zombie's open transaction until `transaction.timeout.ms`.
//! - **Every task flushes** every `kafka.commit_interval` and when it stops, with or without a
//!   state store ([`crate::engine::task`]). A flush sends the state's changes and position marker
//!   (if it has a store), then calls [`crate::engine::Sink::commit`] with the input position:
//!   `send_offsets_to_transaction` (with the consumer's group metadata, so a commit from a
//!   consumer that lost its generation is refused too) + `commit_transaction` +
//!   `begin_transaction`. Everything the task sent since the previous commit — outputs of its
//!   batches and its timers, dead letters, changelog records — is in that transaction.
//! - **Offsets are committed only by transactions**: the consumer has `enable.auto.commit=false`
//!   and `isolation.level=read_committed` ([`super::client::exactly_once_consumer`]), and the
//!   router's offset store is [`TransactionalOffsets`], which stores nothing. The changelog
//!   restore already reads with `read_committed` ([`super::changelog`]), so an aborted flush is
//!   never restored, and the restored position marker always equals the committed offset.
//!
//! ## Failures
//!
//! A commit that fails aborts the transaction: none of its records become visible and its
//! offsets do not move. The task's in-memory state, though, already includes the aborted work,
//! and rewinding one task in place would mean rebuilding its processor from the changelog and
//! seeking the shared consumer back, while the cross-partition aggregates have already merged
//! its parts. So a failed commit **stops the process** (a fatal shutdown, exit non-zero, like a
//! refused delivery in at-least-once mode); its restart restores every task from the last
//! committed transaction and redoes the rest, exactly once. Two failures stay local to the task:
//!
//! - its **last** commit (the partition was revoked, or the engine is stopping): only that
//!   task's work is lost, and the partition's next owner redoes it;
//! - being **fenced**: a newer incarnation owns the transactional id and redoes the work.
//!
//! In both cases the task's sink refuses everything after the failure.
//!
//! ## Trade-offs
//!
//! - One producer per task costs librdkafka threads and a connection per task, and a commit
//!   round trip (flush, AddOffsetsToTxn, TxnOffsetCommit, EndTxn) per task every commit interval,
//!   blocking that task's worker thread while it runs. Kafka Streams' "EOS v2" shares one
//!   producer per thread instead, which needs every task of the thread to commit together; the
//!   per-task producer keeps tasks independent and fences by transactional id alone.
//! - Results become visible to `read_committed` consumers only at commits: end-to-end latency
//!   grows by up to `kafka.commit_interval`.
//! - A rebalance that lands during a (non-final) commit can fail it and so restart the process.
//!
//! ## What stays at-least-once
//!
//! Outputs that no task writes are sent by the shared idempotent producer, outside any
//! transaction: the cross-partition aggregates (`posts.trending`, `fans.top`, ...; they are
//! re-emitted from the restored state, as in at-least-once mode), the poll dispatchers'
//! `fans.observations`, and the dead letters of the readers that re-read a compacted input from
//! its beginning (the `pages` pipeline on every assignment, the `pageviews.blacklist` global
//! table at every start: they commit no offsets, so they have nothing to transact). A stateful pipeline run with `engine.durable_state = false` commits its outputs
//! exactly once, but its state still starts empty after a restart.
//!
//! ## Brokers
//!
//! This needs a broker with transactions (Apache Kafka, Redpanda, ...). tansu 0.6.0 has none: it
//! answers InitProducerId and TxnOffsetCommit but not EndTxn, so the tasks' producers open and
//! the first commit fails; pagepulse then stops (exit 1) with an error that says the broker does
//! not support transactions and names `engine.processing_guarantee` (checked by hand against
//! tansu 0.6.0).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts};
use rdkafka::consumer::{Consumer, ConsumerGroupMetadata};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::client;
use super::sink::{base_record, full_name, topic_names};
use super::source::Source;
use crate::config::Config;
use crate::engine::shutdown::Reason;
use crate::engine::{BatchAck, CommitError, InputPosition, OffsetStore, OutRecord, Shutdown, Sink};
use crate::metrics::Metrics;

/// Longest one transactional call (init, send offsets, commit, abort) may block a task's thread.
/// librdkafka retries retriable errors within it.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Times a commit step is tried again when librdkafka says it may be (`is_retriable`).
const RETRIES: u32 = 3;

/// The transactional id of the task for `pipeline`/`partition` in application `group_id`.
pub fn transactional_id(group_id: &str, pipeline: &str, partition: i32) -> String {
    format!("{group_id}-{pipeline}-{partition}")
}

/// Errors of opening a task's transactional producer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The producer could not be created (a bad property in `kafka.producer`).
    #[error("cannot create the transactional producer {id}: {source}")]
    Create {
        /// The transactional id.
        id: String,
        /// librdkafka's error.
        source: KafkaError,
    },
    /// The broker refused to start transactions.
    #[error(
        "cannot start transactions as {id} (engine.processing_guarantee = \"exactly_once\" needs a broker \
         with transactions): {source}"
    )]
    Init {
        /// The transactional id.
        id: String,
        /// librdkafka's error.
        source: KafkaError,
    },
}

/// The offset store of exactly-once mode: stores nothing, because input offsets are committed
/// only inside the tasks' transactions.
#[derive(Debug, Default)]
pub struct TransactionalOffsets;

impl OffsetStore for TransactionalOffsets {
    fn store(&self, _topic: &str, _partition: i32, _next_offset: i64) {}
}

/// The consumer whose group the transactions commit offsets to. The sinks are made before the
/// consumer (it subscribes to the pipelines' inputs), so it is [`set`](ConsumerGroup::set) later.
#[derive(Default)]
pub struct ConsumerGroup {
    consumer: OnceLock<Weak<Source>>,
}

impl ConsumerGroup {
    /// An empty slot.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Names the consumer; only the first call counts.
    pub fn set(&self, consumer: &Arc<Source>) {
        // Err only if already set: one consumer per engine, so the first is the one.
        let _ = self.consumer.set(Arc::downgrade(consumer));
    }

    /// The group's current metadata (member id and generation), asked at each commit so that the
    /// coordinator can refuse offsets from a member that lost its generation.
    fn metadata(&self) -> Option<ConsumerGroupMetadata> {
        self.consumer.get()?.upgrade()?.group_metadata()
    }
}

/// Transaction metrics, registered once per [`Metrics`] registry.
#[derive(Clone)]
struct TxnMetrics {
    /// Transactions by outcome: `committed`, `aborted`, `fenced`.
    outcomes: IntCounterVec,
    /// Time a commit took (offsets, flush, EndTxn).
    commit_seconds: Histogram,
}

impl TxnMetrics {
    fn register(metrics: &Metrics) -> Self {
        let outcomes = IntCounterVec::new(
            Opts::new(
                "pagepulse_transactions_total",
                "Task transactions (exactly-once mode) by outcome: committed, aborted, fenced.",
            ),
            &["outcome"],
        )
        .expect("metric definition is valid");
        let commit_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "pagepulse_transaction_commit_seconds",
                "Time a task's transaction commit took: input offsets, flush of its records, EndTxn.",
            )
            .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
        )
        .expect("metric definition is valid");
        let registry = metrics.registry();
        registry.register(Box::new(outcomes.clone())).expect("one EosSink per Metrics registers these once");
        registry.register(Box::new(commit_seconds.clone())).expect("one EosSink per Metrics registers these once");
        for o in ["committed", "aborted", "fenced"] {
            outcomes.with_label_values(&[o]);
        }
        Self { outcomes, commit_seconds }
    }
}

/// The sink of exactly-once mode. Tasks get their own [`TxnSink`] from
/// [`for_task`](Sink::for_task); records sent to this sink directly (by aggregates and poll
/// dispatchers, which no task owns) go to the `shared` at-least-once sink.
pub struct EosSink {
    shared: Arc<dyn Sink>,
    cfg: Config,
    names: Arc<[(&'static str, String)]>,
    group: Arc<ConsumerGroup>,
    metrics: Metrics,
    txn: TxnMetrics,
    shutdown: Shutdown,
}

impl EosSink {
    /// The exactly-once sink of `cfg`'s cluster, writing the topics of `topics/` and
    /// `extra_topics` (logical names: the changelogs), committing offsets to `group`'s consumer;
    /// a failed commit triggers `shutdown` as fatal.
    pub fn new(
        cfg: &Config,
        metrics: Metrics,
        shutdown: Shutdown,
        extra_topics: &[&'static str],
        shared: Arc<dyn Sink>,
        group: Arc<ConsumerGroup>,
    ) -> Self {
        let txn = TxnMetrics::register(&metrics);
        let names = topic_names(cfg, extra_topics).into();
        Self { shared, cfg: cfg.clone(), names, group, metrics, txn, shutdown }
    }

    /// Opens the transactional sink of the task for `pipeline`/`partition`: creates its producer,
    /// fences the task's previous incarnation (and aborts its open transaction), and begins the
    /// first transaction. Blocks for up to 30 s while the broker answers.
    pub fn open_task(&self, pipeline: &'static str, partition: i32) -> Result<TxnSink, Error> {
        let id = transactional_id(&self.cfg.kafka.group_id, pipeline, partition);
        let ctx = TxnContext {
            metrics: self.metrics.clone(),
            prefix: self.cfg.kafka.topic_prefix.clone(),
            produced: DashMap::new(),
        };
        let producer: ThreadedProducer<TxnContext> =
            client::transactional_producer(&self.cfg.kafka, &self.cfg.engine, &id)
                .create_with_context(ctx)
                .map_err(|source| Error::Create { id: id.clone(), source })?;
        let started = Instant::now();
        producer.init_transactions(CALL_TIMEOUT).map_err(|source| Error::Init { id: id.clone(), source })?;
        producer.begin_transaction().map_err(|source| Error::Init { id: id.clone(), source })?;
        tracing::info!(transactional_id = %id, took = ?started.elapsed(), "transactional producer ready");
        Ok(TxnSink {
            id,
            producer,
            names: self.names.clone(),
            group: self.group.clone(),
            shutdown: self.shutdown.clone(),
            metrics: self.metrics.clone(),
            txn: self.txn.clone(),
            commit_every: self.cfg.kafka.commit_interval,
            dirty: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            committed: Mutex::new(None),
        })
    }
}

impl Sink for EosSink {
    fn send(&self, rec: OutRecord, ack: &Arc<BatchAck>) {
        self.shared.send(rec, ack);
    }

    fn for_task(&self, pipeline: &'static str, partition: i32) -> Option<Arc<dyn Sink>> {
        match self.open_task(pipeline, partition) {
            Ok(sink) => Some(Arc::new(sink)),
            Err(e) => {
                tracing::error!(pipeline, partition, error = %e, "cannot open the task's transactional producer");
                self.shutdown.trigger(Reason::Fatal(e.to_string()));
                Some(Arc::new(ClosedSink(self.metrics.clone())))
            }
        }
    }
}

/// The sink of a task whose transactional producer could not open: refuses everything (the
/// engine is stopping).
struct ClosedSink(Metrics);

impl Sink for ClosedSink {
    fn send(&self, rec: OutRecord, ack: &Arc<BatchAck>) {
        self.0.produce_errors.with_label_values(&[rec.topic]).inc();
        ack.add_output();
        ack.output_done(false);
    }

    fn commit(&self, _position: Option<InputPosition<'_>>, _closing: bool) -> Result<(), CommitError> {
        Err(CommitError::Closed)
    }
}

/// Delivery reports of a task's transactional producer.
struct TxnContext {
    metrics: Metrics,
    prefix: String,
    /// Resolved `produced` counters by full topic name (as in the shared sink).
    produced: DashMap<String, IntCounter>,
}

impl ClientContext for TxnContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.metrics.kafka_errors.with_label_values(&["producer"]).inc();
        tracing::warn!(%error, reason, "transactional producer error");
    }
}

impl ProducerContext for TxnContext {
    type DeliveryOpaque = Arc<BatchAck>;

    fn delivery(&self, result: &DeliveryResult<'_>, ack: Arc<BatchAck>) {
        match result {
            Ok(msg) => {
                let topic = msg.topic();
                if let Some(c) = self.produced.get(topic) {
                    c.inc();
                } else {
                    let logical = topic.strip_prefix(self.prefix.as_str()).unwrap_or(topic);
                    let c = self.metrics.produced.with_label_values(&[logical]);
                    c.inc();
                    self.produced.insert(topic.to_string(), c);
                }
                ack.output_done(true);
            }
            Err((err, msg)) => {
                let topic = msg.topic();
                let logical = topic.strip_prefix(self.prefix.as_str()).unwrap_or(topic);
                self.metrics.produce_errors.with_label_values(&[logical]).inc();
                // The transaction cannot commit now: the commit reports it and aborts. Records
                // purged by an abort land here too.
                tracing::debug!(topic, error = %err, "transactional record not delivered");
                ack.output_done(false);
            }
        }
    }
}

/// One task's transactional sink: every record it takes joins the open transaction, which
/// [`commit`](Sink::commit) commits together with the task's input position. See the module docs.
pub struct TxnSink {
    id: String,
    producer: ThreadedProducer<TxnContext>,
    names: Arc<[(&'static str, String)]>,
    group: Arc<ConsumerGroup>,
    shutdown: Shutdown,
    metrics: Metrics,
    txn: TxnMetrics,
    commit_every: Duration,
    /// A record was sent since the last commit.
    dirty: AtomicBool,
    /// The last commit is done, or a failure ended the sink: it refuses every record.
    closed: AtomicBool,
    /// The input position of the last committed transaction.
    committed: Mutex<Option<(String, i32, i64)>>,
}

/// Why a commit step failed.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error("the consumer has no group metadata (it is gone or not subscribed)")]
    NoGroup,
}

impl TxnSink {
    /// The task's transactional id.
    pub fn transactional_id(&self) -> &str {
        &self.id
    }

    /// Sends the offsets (if they moved) and commits, retrying what librdkafka calls retriable.
    fn try_commit(&self, offsets: Option<InputPosition<'_>>) -> Result<(), Failure> {
        if let Some(p) = offsets {
            let group = self.group.metadata().ok_or(Failure::NoGroup)?;
            let mut tpl = TopicPartitionList::with_capacity(1);
            tpl.add_partition_offset(p.topic, p.partition, Offset::Offset(p.next_offset))?;
            self.retrying("send offsets", || self.producer.send_offsets_to_transaction(&tpl, &group, CALL_TIMEOUT))?;
        }
        self.retrying("commit", || self.producer.commit_transaction(CALL_TIMEOUT))?;
        Ok(())
    }

    fn retrying(&self, what: &str, f: impl Fn() -> Result<(), KafkaError>) -> Result<(), KafkaError> {
        let mut attempt = 1;
        loop {
            match f() {
                Err(KafkaError::Transaction(e)) if e.is_retriable() && attempt < RETRIES => {
                    tracing::warn!(transactional_id = %self.id, attempt, error = %e, "{what} failed; retrying");
                    attempt += 1;
                }
                r => return r,
            }
        }
    }

    /// True when `failure` says a newer incarnation took the transactional id over.
    fn is_fenced(&self, failure: &Failure) -> bool {
        // librdkafka reports the broker's PRODUCER_FENCED / INVALID_PRODUCER_EPOCH as its own
        // `_FENCED` once the producer has raised it as a fatal error.
        let fenced = |c: RDKafkaErrorCode| {
            matches!(
                c,
                RDKafkaErrorCode::Fenced | RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::InvalidProducerEpoch
            )
        };
        match failure {
            Failure::Kafka(e) => {
                e.rdkafka_error_code().is_some_and(fenced)
                    || self.producer.client().fatal_error().is_some_and(|(c, _)| fenced(c))
            }
            Failure::NoGroup => false,
        }
    }

    /// Ends the sink after a failed commit: aborts, counts, and stops the process unless this
    /// was the task's last commit or the task was fenced (see the module docs).
    fn fail(&self, failure: Failure, closing: bool) -> CommitError {
        self.closed.store(true, Ordering::Release);
        let mut why = failure.to_string();
        if let Failure::Kafka(e) = &failure {
            if e.rdkafka_error_code() == Some(RDKafkaErrorCode::UnsupportedFeature) {
                why.push_str(
                    "; the broker does not support transactions, which engine.processing_guarantee = \"exactly_once\" needs",
                );
            }
        }
        if self.is_fenced(&failure) {
            self.txn.outcomes.with_label_values(&["fenced"]).inc();
            tracing::warn!(
                transactional_id = %self.id, error = %why,
                "fenced: a newer incarnation of this task took over and redoes its uncommitted work"
            );
            return CommitError::Fenced(why);
        }
        // Not committed either way: aborting just lets the broker end it now.
        if let Err(e) = self.producer.abort_transaction(CALL_TIMEOUT) {
            tracing::warn!(
                transactional_id = %self.id, error = %e,
                "abort failed; the broker aborts the transaction when it times out or when the task's next incarnation starts"
            );
        }
        self.txn.outcomes.with_label_values(&["aborted"]).inc();
        if closing {
            tracing::warn!(
                transactional_id = %self.id, error = %why,
                "the task's last commit failed and was aborted; the partition's next owner redoes that work"
            );
        } else {
            tracing::error!(transactional_id = %self.id, error = %why, "commit failed; transaction not committed");
            self.shutdown.trigger(Reason::Fatal(format!(
                "the transaction of {} failed and was not committed ({why}); a restart redoes the work since its last commit",
                self.id
            )));
        }
        CommitError::Aborted(why)
    }
}

impl Sink for TxnSink {
    fn send(&self, rec: OutRecord, ack: &Arc<BatchAck>) {
        ack.add_output();
        if self.closed.load(Ordering::Acquire) {
            // Whatever follows a failure would land in no transaction: refused, redone later.
            self.metrics.produce_errors.with_label_values(&[rec.topic]).inc();
            ack.output_done(false);
            return;
        }
        self.dirty.store(true, Ordering::Release);
        let full = full_name(&self.names, rec.topic);
        let record = base_record(full, &rec, ack.clone());
        let full_waits = &self.metrics.producer_queue_full;
        if let Err(err) = client::send_waiting(&self.producer, record, || full_waits.inc()) {
            // The producer is in an error state: the next commit fails and handles it.
            self.metrics.produce_errors.with_label_values(&[rec.topic]).inc();
            tracing::error!(transactional_id = %self.id, topic = full, error = %err, "cannot enqueue a transactional record");
            ack.output_done(false);
        }
    }

    fn commit_every(&self) -> Option<Duration> {
        Some(self.commit_every)
    }

    fn commit(&self, position: Option<InputPosition<'_>>, closing: bool) -> Result<(), CommitError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(CommitError::Closed);
        }
        let mut committed = self.committed.lock().unwrap_or_else(|p| p.into_inner());
        let moved = position.filter(|p| {
            committed
                .as_ref()
                .is_none_or(|(t, part, off)| (t.as_str(), *part, *off) != (p.topic, p.partition, p.next_offset))
        });
        let dirty = self.dirty.swap(false, Ordering::AcqRel);
        if !dirty && moved.is_none() {
            // Nothing to commit; the open transaction is empty (librdkafka has told the broker
            // nothing about it yet), so closing needs no round trip.
            if closing {
                self.closed.store(true, Ordering::Release);
            }
            return Ok(());
        }
        let started = Instant::now();
        if let Err(f) = self.try_commit(moved) {
            return Err(self.fail(f, closing));
        }
        self.txn.commit_seconds.observe(started.elapsed().as_secs_f64());
        self.txn.outcomes.with_label_values(&["committed"]).inc();
        if let Some(p) = moved {
            *committed = Some((p.topic.to_string(), p.partition, p.next_offset));
        }
        if closing {
            self.closed.store(true, Ordering::Release);
            return Ok(());
        }
        self.producer.begin_transaction().map_err(|e| self.fail(e.into(), closing))
    }
}

impl Drop for TxnSink {
    /// A task dropped without its last commit (it panicked, or its worker stopped): abort, so
    /// that `read_committed` readers of its partitions need not wait for the transaction to time
    /// out. Best effort: the task's next incarnation aborts it too.
    fn drop(&mut self) {
        if !self.closed.load(Ordering::Acquire) && self.dirty.load(Ordering::Acquire) {
            if let Err(e) = self.producer.abort_transaction(Duration::from_secs(5)) {
                tracing::debug!(transactional_id = %self.id, error = %e, "abort at drop failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_keeps_its_transactional_id_across_incarnations() {
        let a = transactional_id("pagepulse", "posts", 3);
        assert_eq!(a, "pagepulse-posts-3");
        assert_eq!(a, transactional_id("pagepulse", "posts", 3), "a restart must fence the old incarnation");
        assert_ne!(a, transactional_id("pagepulse", "posts", 4));
        assert_ne!(a, transactional_id("other-app", "posts", 3));
    }
}
