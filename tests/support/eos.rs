//! The engine against librdkafka's mock cluster, for `tests/eos_mock.rs` and
//! `benches/eos_mock.rs`: the real consumer source, router, tasks and sinks, wired as `app.rs`
//! wires them (minus HTTP, admin and platforms), plus what the mock cluster lacks.
//!
//! ## What the mock cluster (librdkafka 2.12.1) lacks, and how it is emulated here
//!
//! Read in `rdkafka_mock_handlers.c` and confirmed by `the_mock_cluster_lacks_transaction_semantics`
//! in `tests/eos_mock.rs`. The mock speaks the whole transactional protocol (InitProducerId,
//! AddPartitionsToTxn, AddOffsetsToTxn, TxnOffsetCommit, EndTxn, with producer-id checks and
//! error injection), so librdkafka's transaction manager runs for real, but it keeps none of the
//! outcomes:
//!
//! 1. EndTxn writes no commit/abort markers, and Fetch answers `LastStableOffset = high
//!    watermark` with no aborted transactions: a `read_committed` consumer reads aborted records.
//! 2. TxnOffsetCommit checks its request and drops the offsets: a committed transaction moves no
//!    committed offset.
//! 3. InitProducerId from a new producer gives it a new producer id and leaves the old one valid:
//!    nothing is fenced.
//!
//! So the [`Ledger`] plays the broker's part for 1 and 2, from what the mock answered: every
//! record a task sends is stamped with the id of the transaction it belongs to (header
//! [`TXN_HEADER`]), and a transaction counts as committed exactly when the task's
//! `Sink::commit` returned `Ok` (its EndTxn succeeded). [`read`] with [`View::Committed`] then
//! shows what a `read_committed` consumer of a real broker would see, the [`LedgerBackend`]
//! restores changelogs the same way, and a committed transaction's input position is committed
//! to the group right after it (what the broker does with TxnOffsetCommit at commit). Fencing (3)
//! is the broker's decision; tests inject the error a real broker answers a zombie with.

#![allow(dead_code)] // each of the test and the bench uses part of it

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use actix::Arbiter;
use pagepulse::config::{Config, ProcessingGuarantee};
use pagepulse::engine::shutdown::Reason;
use pagepulse::engine::state::{self, Replay, Restored, StateBackend};
use pagepulse::engine::{
    BatchAck, CommitError, InputPosition, OffsetStore, OutRecord, Router, Shutdown, Sink, TaskFactory,
};
use pagepulse::health::Health;
use pagepulse::kafka::source::{self, Source, SourceContext};
use pagepulse::metrics::Metrics;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;

/// Header carrying the ledger's transaction id (8 bytes, little endian).
pub const TXN_HEADER: &str = "pagepulse.test.txn";

/// A mock cluster of one broker.
pub fn mock() -> (MockCluster<'static, DefaultProducerContext>, String) {
    let cluster = MockCluster::new(1).expect("mock cluster");
    let brokers = cluster.bootstrap_servers();
    (cluster, brokers)
}

/// A random name suffix, so tests of one process never share topics or groups.
pub fn unique() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// The engine's config for the mock cluster at `brokers`.
pub fn config(brokers: &str, prefix: &str, group: &str, guarantee: ProcessingGuarantee) -> Config {
    let mut cfg = Config::default();
    cfg.kafka.brokers = brokers.to_string();
    cfg.kafka.topic_prefix = prefix.to_string();
    cfg.kafka.group_id = group.to_string();
    cfg.kafka.commit_interval = Duration::from_millis(100);
    cfg.kafka.session_timeout = Duration::from_secs(6);
    cfg.engine.processing_guarantee = guarantee;
    cfg.engine.workers = std::num::NonZeroUsize::new(2).expect("2 > 0");
    cfg
}

/// A plain producer (idempotent, not transactional) to the mock cluster.
pub fn producer(brokers: &str) -> ThreadedProducer<DefaultProducerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .set("enable.idempotence", "true")
        .create()
        .expect("producer")
}

/// Produces `records` (key, value) to `topic`, partitioned by key, and waits for every ack.
pub fn produce(brokers: &str, topic: &str, records: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>) {
    let p = producer(brokers);
    for (k, v) in records {
        let mut rec = BaseRecord::<[u8], [u8]>::to(topic).key(&k[..]).payload(&v[..]);
        loop {
            match p.send(rec) {
                Ok(()) => break,
                Err((_, back)) => {
                    rec = back;
                    p.poll(Duration::from_millis(10));
                }
            }
        }
    }
    p.flush(Duration::from_secs(30)).expect("every input record acknowledged");
}

/// The next offset of every partition of `topic` (its high watermark; exact on the mock).
pub fn ends(brokers: &str, topic: &str, partitions: i32) -> HashMap<(String, i32), i64> {
    let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", brokers).create().expect("consumer");
    (0..partitions)
        .map(|p| {
            let (_, high) = c.fetch_watermarks(topic, p, Duration::from_secs(10)).expect("watermarks");
            ((topic.to_string(), p), high)
        })
        .collect()
}

/// One record as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    /// Partition.
    pub partition: i32,
    /// Key.
    pub key: Vec<u8>,
    /// Value.
    pub value: Option<Vec<u8>>,
    /// The ledger transaction it was sent in, if any.
    pub txn: Option<u64>,
    /// The `pagepulse.owner` header (changelog records).
    pub owner: Option<u64>,
}

/// How [`read`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// Everything on the broker (`isolation.level=read_uncommitted`).
    Uncommitted,
    /// What the mock itself shows with `isolation.level=read_committed`.
    MockReadCommitted,
}

fn header_u64(msg: &impl Message, name: &str) -> Option<u64> {
    let h = msg.headers()?;
    let v = h.iter().find(|h| h.key == name)?.value?;
    Some(u64::from_le_bytes(v.try_into().ok()?))
}

/// Every record of `topic` (all `partitions`), read from the beginning to the current end.
pub fn read(brokers: &str, topic: &str, partitions: i32, view: View) -> Vec<Read> {
    let isolation = match view {
        View::Uncommitted => "read_uncommitted",
        View::MockReadCommitted => "read_committed",
    };
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("reader-{}", unique()))
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .create()
        .expect("consumer");
    let ends = ends(brokers, topic, partitions);
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning).expect("partition");
    }
    c.assign(&tpl).expect("assign");
    let mut next: HashMap<i32, i64> = (0..partitions).map(|p| (p, 0)).collect();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while next.iter().any(|(p, o)| *o < ends[&(topic.to_string(), *p)]) {
        assert!(Instant::now() < deadline, "timed out reading {topic}: at {next:?}, ends {ends:?}");
        let Some(msg) = c.poll(Duration::from_millis(50)) else { continue };
        let msg = msg.expect("consume");
        next.insert(msg.partition(), msg.offset() + 1);
        out.push(Read {
            partition: msg.partition(),
            key: msg.key().unwrap_or_default().to_vec(),
            value: msg.payload().map(<[u8]>::to_vec),
            txn: header_u64(&msg, TXN_HEADER),
            owner: header_u64(&msg, state::OWNER_HEADER),
        });
    }
    out
}

/// Input positions reached, by (full topic, partition): committed ones, or stored ones.
#[derive(Debug, Default)]
pub struct Progress {
    positions: Mutex<HashMap<(String, i32), i64>>,
}

impl Progress {
    fn record(&self, topic: &str, partition: i32, next_offset: i64) {
        let mut p = self.positions.lock().expect("lock");
        let e = p.entry((topic.to_string(), partition)).or_insert(next_offset);
        *e = (*e).max(next_offset);
    }

    /// True once every partition in `ends` reached its end.
    pub fn covers(&self, ends: &HashMap<(String, i32), i64>) -> bool {
        let p = self.positions.lock().expect("lock");
        ends.iter().all(|(k, end)| p.get(k).is_some_and(|o| o >= end))
    }

    /// Positions so far.
    pub fn positions(&self) -> HashMap<(String, i32), i64> {
        self.positions.lock().expect("lock").clone()
    }
}

/// The broker's side of transactions, as the mock does not keep it (see the module docs).
#[derive(Default)]
pub struct Ledger {
    next_txn: AtomicU64,
    committed: Mutex<HashSet<u64>>,
    /// Input positions of committed transactions.
    pub progress: Progress,
    /// The running engine's consumer, to commit positions of committed transactions with.
    consumer: Mutex<Option<Weak<Source>>>,
    /// Emulated offset commits that failed (tests assert there are none).
    pub offset_errors: Mutex<Vec<String>>,
    /// When set, stamp no header and emulate nothing (the bench measures the plain engine).
    pub observe_only: AtomicBool,
}

impl Ledger {
    /// An empty ledger.
    pub fn new() -> Arc<Self> {
        Arc::new(Self { next_txn: AtomicU64::new(1), ..Self::default() })
    }

    fn new_txn(&self) -> u64 {
        self.next_txn.fetch_add(1, Ordering::Relaxed)
    }

    /// The consumer of the engine now running.
    pub fn set_consumer(&self, c: &Arc<Source>) {
        *self.consumer.lock().expect("lock") = Some(Arc::downgrade(c));
    }

    /// True when transaction `txn` committed.
    pub fn is_committed(&self, txn: u64) -> bool {
        self.committed.lock().expect("lock").contains(&txn)
    }

    /// Number of transactions that committed.
    pub fn committed_count(&self) -> usize {
        self.committed.lock().expect("lock").len()
    }

    /// A record is visible to `read_committed` when it was sent outside any transaction or in a
    /// committed one.
    pub fn visible(&self, r: &Read) -> bool {
        r.txn.is_none_or(|t| self.is_committed(t))
    }

    fn committed(&self, txn: u64, position: Option<InputPosition<'_>>) {
        self.committed.lock().expect("lock").insert(txn);
        let Some(p) = position else { return };
        self.progress.record(p.topic, p.partition, p.next_offset);
        if self.observe_only.load(Ordering::Relaxed) {
            return;
        }
        // What the broker does with the transaction's TxnOffsetCommit once EndTxn commits it.
        let consumer = self.consumer.lock().expect("lock").as_ref().and_then(Weak::upgrade);
        let Some(consumer) = consumer else {
            self.offset_errors.lock().expect("lock").push("no consumer".into());
            return;
        };
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(p.topic, p.partition, Offset::Offset(p.next_offset)).expect("offset");
        if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
            self.offset_errors.lock().expect("lock").push(format!("{}/{}: {e}", p.topic, p.partition));
        }
    }
}

/// Wraps the engine's sink: each task's own sink is wrapped in a [`LedgerTaskSink`].
pub struct LedgerSink {
    inner: Arc<dyn Sink>,
    ledger: Arc<Ledger>,
}

impl LedgerSink {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Sink>, ledger: Arc<Ledger>) -> Arc<Self> {
        Arc::new(Self { inner, ledger })
    }
}

impl Sink for LedgerSink {
    fn send(&self, rec: OutRecord, ack: &Arc<BatchAck>) {
        self.inner.send(rec, ack);
    }

    fn for_task(&self, pipeline: &'static str, partition: i32) -> Option<Arc<dyn Sink>> {
        let inner = self.inner.for_task(pipeline, partition)?;
        Some(LedgerTaskSink::new(inner, self.ledger.clone()))
    }
}

/// Stamps a task's records with their transaction and records the outcome of its commits.
pub struct LedgerTaskSink {
    inner: Arc<dyn Sink>,
    ledger: Arc<Ledger>,
    txn: AtomicU64,
}

impl LedgerTaskSink {
    /// Wraps one task's sink.
    pub fn new(inner: Arc<dyn Sink>, ledger: Arc<Ledger>) -> Arc<Self> {
        let txn = AtomicU64::new(ledger.new_txn());
        Arc::new(Self { inner, ledger, txn })
    }

    /// The ledger id of the open transaction.
    pub fn txn(&self) -> u64 {
        self.txn.load(Ordering::Relaxed)
    }
}

impl Sink for LedgerTaskSink {
    fn send(&self, mut rec: OutRecord, ack: &Arc<BatchAck>) {
        if !self.ledger.observe_only.load(Ordering::Relaxed) {
            rec.headers.push((TXN_HEADER, self.txn().to_le_bytes().to_vec()));
        }
        self.inner.send(rec, ack);
    }

    fn commit_every(&self) -> Option<Duration> {
        self.inner.commit_every()
    }

    fn commit(&self, position: Option<InputPosition<'_>>, closing: bool) -> Result<(), CommitError> {
        let txn = self.txn();
        let r = self.inner.commit(position, closing);
        if r.is_ok() {
            self.ledger.committed(txn, position);
        }
        self.txn.store(self.ledger.new_txn(), Ordering::Relaxed);
        r
    }
}

/// Restores changelogs as a `read_committed` reader of a real broker would: like
/// `kafka::changelog::KafkaBackend` (fence, then read up to the fence), skipping records of
/// transactions the ledger does not know as committed.
pub struct LedgerBackend {
    brokers: String,
    prefix: String,
    ledger: Arc<Ledger>,
    producer: ThreadedProducer<DefaultProducerContext>,
    /// Changelog records skipped because their transaction did not commit.
    pub skipped: AtomicU64,
}

impl LedgerBackend {
    /// A backend for changelogs named `<prefix><logical>` on the mock at `brokers`.
    pub fn new(brokers: &str, prefix: &str, ledger: Arc<Ledger>) -> Arc<Self> {
        Arc::new(Self {
            brokers: brokers.to_string(),
            prefix: prefix.to_string(),
            ledger,
            producer: producer(brokers),
            skipped: AtomicU64::new(0),
        })
    }
}

impl StateBackend for LedgerBackend {
    fn restore(&self, topic: &'static str, partition: i32, owner: u64) -> Result<Restored, state::Error> {
        let full = format!("{}{topic}", self.prefix);
        let err = |reason: String| state::Error { topic: full.clone(), partition, reason };
        let fence = state::fence_record(topic, partition, owner);
        let value = fence.value.clone().unwrap_or_default();
        let headers =
            OwnedHeaders::new().insert(Header { key: state::OWNER_HEADER, value: Some(&owner.to_le_bytes()[..]) });
        self.producer
            .send(
                BaseRecord::<[u8], [u8]>::to(&full)
                    .partition(partition)
                    .key(state::FENCE_KEY)
                    .payload(&value[..])
                    .headers(headers),
            )
            .map_err(|(e, _)| err(e.to_string()))?;
        self.producer.flush(Duration::from_secs(10)).map_err(|e| err(e.to_string()))?;
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", format!("restore-{}", unique()))
            .set("enable.auto.commit", "false")
            .create()
            .map_err(|e| err(e.to_string()))?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&full, partition, Offset::Beginning).map_err(|e| err(e.to_string()))?;
        c.assign(&tpl).map_err(|e| err(e.to_string()))?;
        let mut replay = Replay::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if Instant::now() > deadline {
                return Err(err("fence not read back".into()));
            }
            let Some(msg) = c.poll(Duration::from_millis(50)) else { continue };
            let msg = msg.map_err(|e| err(e.to_string()))?;
            let rec_owner = header_u64(&msg, state::OWNER_HEADER);
            let key = msg.key().unwrap_or_default();
            if key == state::FENCE_KEY && rec_owner == Some(owner) {
                return Ok(replay.finish());
            }
            if header_u64(&msg, TXN_HEADER).is_some_and(|t| !self.ledger.is_committed(t)) {
                self.skipped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            replay.apply(key, msg.payload(), rec_owner);
        }
    }
}

/// The at-least-once offset store of `app.rs` (stores into the consumer for its auto-commit),
/// also recording what it stored.
pub struct ConsumerOffsets {
    consumer: Arc<Source>,
    /// What was stored.
    pub progress: Arc<Progress>,
}

impl ConsumerOffsets {
    /// Stores into `consumer`, recording into `progress`.
    pub fn new(consumer: Arc<Source>, progress: Arc<Progress>) -> Arc<Self> {
        Arc::new(Self { consumer, progress })
    }
}

impl OffsetStore for ConsumerOffsets {
    fn store(&self, topic: &str, partition: i32, next_offset: i64) {
        let mut tpl = TopicPartitionList::with_capacity(1);
        tpl.add_partition_offset(topic, partition, Offset::Offset(next_offset)).expect("offset");
        if self.consumer.store_offsets(&tpl).is_ok() {
            self.progress.record(topic, partition, next_offset);
        }
    }
}

/// Runs the engine (consumer source, router, `factories`' tasks on two worker arbiters) until
/// `until` holds (then stops it gracefully, as `app.rs` does) or `shutdown` triggers (a fatal
/// error); returns why it stopped. `until` is polled every 2 ms, and may act (inject a fault,
/// produce more input) between polls. `wire` sees the consumer once it exists and returns the
/// router's offset store.
pub async fn run_engine(
    cfg: &Config,
    metrics: &Metrics,
    shutdown: &Shutdown,
    factories: Vec<Arc<dyn TaskFactory>>,
    wire: impl FnOnce(&Arc<Source>) -> Arc<dyn OffsetStore>,
    mut until: impl FnMut() -> bool,
    limit: Duration,
) -> Option<Reason> {
    let health = Arc::new(Health::default());
    let arbiters: Vec<Arbiter> = (0..cfg.engine.workers.get()).map(|_| Arbiter::new()).collect();
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let topics: Vec<String> = factories.iter().flat_map(|f| f.inputs().iter().map(|l| cfg.topic(l))).collect();
    let consumer =
        source::subscribe(cfg, SourceContext::new(cfg, metrics.clone(), health), &topics).expect("consumer subscribes");
    let store = wire(&consumer);
    let mut router = Router::new(
        factories,
        |l| cfg.topic(l),
        arbiters.iter().map(|a| a.handle()).collect(),
        store,
        metrics.clone(),
        cfg.engine.inbox_capacity.get(),
        done_tx,
        cfg.engine.partition_buffer_bytes.get(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let (poller, chunks) =
        source::spawn_poller(consumer.clone(), router.topics(), cfg, stop.clone(), false).expect("poller");
    let deadline = tokio::time::Instant::now() + limit;
    let watch = async {
        while !until() && shutdown.reason().is_none() {
            assert!(tokio::time::Instant::now() < deadline, "the engine did not get there within {limit:?}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        shutdown.trigger(Reason::Requested);
    };
    let (ran, ()) = tokio::join!(source::run(&consumer, chunks, &mut router, shutdown), watch);
    ran.expect("the routing loop ends without error");
    stop.store(true, Ordering::Release);
    poller.join().expect("poller thread");
    drop(router); // tasks drain their inboxes, flush, commit (or not), and stop
    tokio::time::timeout(Duration::from_secs(30), done_rx.recv()).await.expect("every task stops");
    for a in &arbiters {
        a.stop();
    }
    drop(consumer);
    shutdown.reason()
}

/// Waits for `f` on the current runtime, for at most `limit`.
pub async fn until(what: &str, limit: Duration, f: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
