//! Exactly-once mode (`engine.processing_guarantee = "exactly_once"`) against librdkafka's mock
//! cluster: tansu 0.6.0 has no transactions, and the mock speaks their whole protocol.
//!
//! The engine is the real one (consumer source, router, task actors, the `EosSink` with one
//! transactional producer per task, changelog flushes), running a word-count pipeline whose
//! correct output is known exactly: for a word seen `n` times, the records `word -> 1` ...
//! `word -> n`, each once. A repeated record means an output was duplicated; a missing one, lost;
//! a wrong count, state restored out of step with the input offsets.
//!
//! The mock does not keep transaction outcomes (no markers, no `read_committed` filtering, no
//! transactional offset commits, no fencing): `support/eos.rs` says exactly what it lacks and how
//! the ledger plays the broker's part, and `the_mock_cluster_lacks_transaction_semantics` pins
//! those gaps, so that it fails (and says what to change) the day the mock implements them.

#[path = "support/eos.rs"]
mod support;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use pagepulse::config::ProcessingGuarantee;
use pagepulse::engine::offsets::{OffsetTracker, RecordingStore};
use pagepulse::engine::shutdown::Reason;
use pagepulse::engine::state::{Change, Entries};
use pagepulse::engine::Store;
use pagepulse::engine::{
    BatchAck, CommitError, Emit, MemorySink, OutRecord, PipelineSpec, Processor, RawRecord, RecordMeta, RejectClass,
    Rejection, Shutdown, Sink, TaskFactory,
};
use pagepulse::health::Health;
use pagepulse::kafka::txn::{ConsumerGroup, EosSink, TransactionalOffsets};
use pagepulse::metrics::Metrics;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{Offset, TopicPartitionList};
use support::{LedgerBackend, LedgerSink, LedgerTaskSink, Read, View};

const PIPELINE: &str = "counts";
const INPUT: &str = "eos.words";
const OUTPUT: &str = "eos.counts";
const CHANGELOG: &str = "eos.counts-changelog";
const PARTITIONS: i32 = 3;
/// Longest one engine run may take.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// Counts records per key; emits `key -> count` for each; its state is the counts.
#[derive(Default)]
struct WordCount {
    counts: HashMap<Vec<u8>, u64>,
    changed: HashSet<Vec<u8>>,
}

impl Processor for WordCount {
    type Input<'a> = &'a [u8];
    type Part = ();

    fn decode<'a>(&self, _topic: &'static str, rec: &'a RawRecord) -> Result<&'a [u8], Rejection> {
        rec.key.as_deref().ok_or_else(|| Rejection::new(RejectClass::MissingField, "no key"))
    }

    fn process(&mut self, word: &[u8], _meta: &RecordMeta, out: &mut Emit<()>) {
        let n = self.counts.entry(word.to_vec()).or_default();
        *n += 1;
        out.record(OutRecord::new(OUTPUT, word.to_vec(), n.to_string().into_bytes()));
        self.changed.insert(word.to_vec());
    }

    fn take_changes(&mut self, out: &mut Vec<Change>) {
        for k in self.changed.drain() {
            let n = self.counts[&k];
            out.push((k, Some(n.to_le_bytes().to_vec())));
        }
    }

    fn restore(&mut self, entries: Entries, _out: &mut Emit<()>) {
        self.counts = entries
            .into_iter()
            .map(|(k, v)| (k, u64::from_le_bytes(v.try_into().expect("a count is 8 bytes"))))
            .collect();
    }
}

/// One mock cluster with the pipeline's topics, and the ledger of its transactions.
struct Setup {
    mock: MockCluster<'static, DefaultProducerContext>,
    brokers: String,
    prefix: String,
    cfg: pagepulse::config::Config,
    ledger: Arc<support::Ledger>,
    backend: Arc<LedgerBackend>,
}

impl Setup {
    fn new() -> Self {
        let (mock, brokers) = support::mock();
        let id = support::unique();
        let prefix = format!("t{id}.");
        for t in [INPUT, OUTPUT, CHANGELOG] {
            mock.create_topic(&format!("{prefix}{t}"), PARTITIONS, 1).expect("topic");
        }
        let cfg = support::config(&brokers, &prefix, &format!("g{id}"), ProcessingGuarantee::ExactlyOnce);
        let ledger = support::Ledger::new();
        let backend = LedgerBackend::new(&brokers, &prefix, ledger.clone());
        Self { mock, brokers, prefix, cfg, ledger, backend }
    }

    fn topic(&self, logical: &str) -> String {
        format!("{}{logical}", self.prefix)
    }

    fn input_ends(&self) -> HashMap<(String, i32), i64> {
        support::ends(&self.brokers, &self.topic(INPUT), PARTITIONS)
    }

    fn output(&self) -> Vec<Read> {
        support::read(&self.brokers, &self.topic(OUTPUT), PARTITIONS, View::Uncommitted)
    }

    /// The word-count pipeline in exactly-once mode, wired as `app.rs` wires a stateful
    /// pipeline, with the ledger around its sink and its changelog restores.
    fn spec(&self, metrics: &Metrics, shutdown: &Shutdown, group: &Arc<ConsumerGroup>) -> Arc<dyn TaskFactory> {
        // No aggregate or dispatcher writes in this pipeline: the shared sink stays empty.
        let shared = MemorySink::new();
        let eos = Arc::new(EosSink::new(
            &self.cfg,
            metrics.clone(),
            shutdown.clone(),
            &[OUTPUT, CHANGELOG],
            shared,
            group.clone(),
        ));
        let store = Store {
            name: PIPELINE,
            changelog: CHANGELOG,
            backend: self.backend.clone(),
            flush_every: self.cfg.kafka.commit_interval,
            health: Arc::new(Health::default()),
        };
        Arc::new(
            PipelineSpec::new(
                PIPELINE,
                vec![INPUT],
                |_| WordCount::default(),
                LedgerSink::new(eos, self.ledger.clone()),
                None,
                metrics.clone(),
            )
            .with_store(Some(store)),
        )
    }

    /// Runs the engine with fresh metrics until `until` holds or a fatal error stops it.
    async fn run(&self, until: impl FnMut() -> bool) -> (Option<Reason>, Metrics) {
        let (metrics, shutdown, group) = (Metrics::new(), Shutdown::new(), ConsumerGroup::new());
        let spec = self.spec(&metrics, &shutdown, &group);
        let reason = support::run_engine(
            &self.cfg,
            &metrics,
            &shutdown,
            vec![spec],
            |c| {
                group.set(c);
                self.ledger.set_consumer(c);
                Arc::new(TransactionalOffsets)
            },
            until,
            RUN_LIMIT,
        )
        .await;
        (reason, metrics)
    }
}

/// Input records `from..to`: 17 words, keyed by word (so each word stays in one partition).
fn words(range: std::ops::Range<u32>) -> Vec<(Vec<u8>, Vec<u8>)> {
    range.map(|i| (format!("w{:02}", i % 17).into_bytes(), i.to_string().into_bytes())).collect()
}

/// What the pipeline must show for `input`, sorted: `word -> 1..=n` for a word seen `n` times.
fn expected(input: &[(Vec<u8>, Vec<u8>)]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut n: HashMap<&[u8], u64> = HashMap::new();
    for (k, _) in input {
        *n.entry(k).or_default() += 1;
    }
    let mut out: Vec<_> =
        n.into_iter().flat_map(|(k, n)| (1..=n).map(move |i| (k.to_vec(), i.to_string().into_bytes()))).collect();
    out.sort();
    out
}

/// The (key, value) pairs of `records`, sorted.
fn pairs<'a>(records: impl IntoIterator<Item = &'a Read>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut v: Vec<_> = records.into_iter().map(|r| (r.key.clone(), r.value.clone().unwrap_or_default())).collect();
    v.sort();
    v
}

/// The value of `pagepulse_transactions_total{outcome="<outcome>"}`.
fn transactions(metrics: &Metrics, outcome: &str) -> u64 {
    let line = format!("pagepulse_transactions_total{{outcome=\"{outcome}\"}} ");
    let text = metrics.render();
    let value = text.lines().find_map(|l| l.strip_prefix(line.as_str())).expect("metric present");
    value.trim().parse().expect("a count")
}

#[test]
fn each_result_is_committed_once() {
    actix_rt::System::new().block_on(async {
        let s = Setup::new();
        let input = words(0..600);
        support::produce(&s.brokers, &s.topic(INPUT), input.clone());
        let ends = s.input_ends();

        let (reason, metrics) = s.run(|| s.ledger.progress.covers(&ends)).await;
        assert_eq!(reason, Some(Reason::Requested));

        let raw = s.output();
        assert!(raw.iter().all(|r| r.txn.is_some()), "every output went through its task's transaction");
        let visible: Vec<&Read> = raw.iter().filter(|r| s.ledger.visible(r)).collect();
        assert_eq!(pairs(visible), expected(&input), "read_committed: each count once");
        assert_eq!(pairs(&raw), expected(&input), "nothing was aborted, so nothing was duplicated");
        assert!(transactions(&metrics, "committed") >= PARTITIONS as u64);
        assert_eq!(transactions(&metrics, "aborted"), 0);
        assert_eq!(s.ledger.offset_errors.lock().expect("lock").as_slice(), &[] as &[String]);
    });
}

/// Runs half the input, lets it commit, injects `error` into the next `api` request (between the
/// produce of the second half's outputs and their commit), and checks that the failed commit
/// aborts and stops the engine, and that a restart redoes exactly the aborted work.
/// `flushed_before_failing`: the failing step comes after librdkafka flushed the transaction's
/// records (EndTxn), so the aborted changelog records are on the broker too; a failed
/// TxnOffsetCommit comes before that flush, and the abort purges what was still queued.
fn aborted_commit_is_invisible_and_redone(api: RDKafkaApiKey, error: RDKafkaRespErr, flushed_before_failing: bool) {
    actix_rt::System::new().block_on(async {
        let s = Setup::new();
        let input = words(0..900);
        let (first, second) = input.split_at(450);
        support::produce(&s.brokers, &s.topic(INPUT), first.to_vec());
        let first_ends = s.input_ends();

        let mut injected = false;
        let (reason, metrics) = s
            .run(|| {
                if !injected && s.ledger.progress.covers(&first_ends) {
                    s.mock.request_errors(api, &[error]);
                    support::produce(&s.brokers, &s.topic(INPUT), second.to_vec());
                    injected = true;
                }
                false // until the failed commit stops the engine
            })
            .await;
        assert!(matches!(reason, Some(Reason::Fatal(_))), "a failed commit stops the engine: {reason:?}");
        assert_eq!(transactions(&metrics, "aborted"), 1);

        // The restart: state from the committed changelog, input from the committed offsets.
        let ends = s.input_ends();
        let (reason, _) = s.run(|| s.ledger.progress.covers(&ends)).await;
        assert_eq!(reason, Some(Reason::Requested));

        let raw = s.output();
        let (visible, aborted): (Vec<&Read>, Vec<&Read>) = raw.iter().partition(|r| s.ledger.visible(r));
        assert_eq!(pairs(visible.iter().copied()), expected(&input), "read_committed: each count once, none lost");
        // Outputs of the aborted transaction reach the broker when it failed after the flush; when it
        // failed before, the abort purges what librdkafka still held, and what it had sent already
        // (timing: its linger passed) is there too. Either way, nothing aborted is visible.
        if flushed_before_failing {
            assert!(!aborted.is_empty(), "read_uncommitted sees the aborted transaction's outputs");
            assert_ne!(pairs(&raw), expected(&input), "read_uncommitted sees duplicates: the check above can fail");
        }
        let redone: HashSet<_> = pairs(visible.iter().copied()).into_iter().collect();
        for a in pairs(aborted.iter().copied()) {
            assert!(redone.contains(&a), "aborted output {a:?} was redone");
        }
        let changelog = support::read(&s.brokers, &s.topic(CHANGELOG), PARTITIONS, View::Uncommitted);
        let uncommitted = changelog.iter().filter(|r| !s.ledger.visible(r)).count() as u64;
        assert_eq!(
            s.backend.skipped.load(Ordering::Relaxed),
            uncommitted,
            "the restart's restore (one per partition) skipped exactly the aborted changelog records"
        );
        if flushed_before_failing {
            assert!(uncommitted > 0, "the aborted flush's changelog records reached the broker");
        }
        assert_eq!(s.ledger.offset_errors.lock().expect("lock").as_slice(), &[] as &[String]);
    });
}

#[test]
fn a_failed_end_txn_aborts_and_the_restart_redoes_the_work_once() {
    // The broker lost the producer's state (e.g. its records expired): commit fails, abortable.
    aborted_commit_is_invisible_and_redone(
        RDKafkaApiKey::EndTxn,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_PRODUCER_ID,
        true,
    );
}

#[test]
fn a_failed_offset_commit_aborts_and_the_restart_redoes_the_work_once() {
    // The group moved to a new generation while the task committed: abortable.
    aborted_commit_is_invisible_and_redone(
        RDKafkaApiKey::TxnOffsetCommit,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION,
        false,
    );
}

fn count(word: &str, n: u64) -> OutRecord {
    let mut r = OutRecord::new(OUTPUT, word, n.to_string().into_bytes());
    r.partition = Some(0);
    r
}

#[test]
fn a_fenced_zombie_commits_nothing_and_does_not_stop_the_process() {
    let s = Setup::new();
    let (metrics, shutdown) = (Metrics::new(), Shutdown::new());
    let eos = EosSink::new(
        &s.cfg,
        metrics.clone(),
        shutdown.clone(),
        &[OUTPUT, CHANGELOG],
        MemorySink::new(),
        ConsumerGroup::new(),
    );

    // The old incarnation of task counts/0 sends, then the new one starts with the same id.
    let old = eos.open_task(PIPELINE, 0).expect("old incarnation");
    let id = old.transactional_id().to_string();
    let old = LedgerTaskSink::new(Arc::new(old), s.ledger.clone());
    for n in 1..=3 {
        let ack = BatchAck::untracked();
        old.send(count("zombie", n), &ack);
        ack.processed();
    }
    let new = eos.open_task(PIPELINE, 0).expect("new incarnation");
    assert_eq!(new.transactional_id(), id, "the new incarnation takes over the same transactional id");
    let new = LedgerTaskSink::new(Arc::new(new), s.ledger.clone());

    // What a real broker answers the old incarnation now (the mock does not fence by itself).
    s.mock.request_errors(RDKafkaApiKey::EndTxn, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_PRODUCER_FENCED]);
    let r = old.commit(None, false);
    assert!(matches!(r, Err(CommitError::Fenced(_))), "{r:?}");
    assert_eq!(shutdown.reason(), None, "a fenced zombie stops itself, not the process");
    assert_eq!(transactions(&metrics, "fenced"), 1);

    // The zombie refuses whatever it is still given.
    let tracker = OffsetTracker::new("in".into(), 0, Arc::new(RecordingStore::default()), None);
    let ack = tracker.begin(10, vec![]);
    old.send(count("zombie", 4), &ack);
    ack.processed();
    assert!(tracker.is_poisoned(), "a zombie's record fails");
    assert_eq!(old.commit(None, true), Err(CommitError::Closed));

    // The new incarnation is unaffected.
    for n in 1..=3 {
        let ack = BatchAck::untracked();
        new.send(count("owner", n), &ack);
        ack.processed();
    }
    new.commit(None, false).expect("the new owner commits");

    let raw = s.output();
    assert_eq!(raw.len(), 6, "both incarnations' records reached the broker: {raw:?}");
    let visible: Vec<&Read> = raw.iter().filter(|r| s.ledger.visible(r)).collect();
    assert!(visible.iter().all(|r| r.key == b"owner"), "read_committed sees only the owner's records: {visible:?}");
    assert_eq!(visible.len(), 3);
}

fn txn_producer(brokers: &str, id: &str) -> ThreadedProducer<DefaultProducerContext> {
    let p: ThreadedProducer<DefaultProducerContext> =
        ClientConfig::new().set("bootstrap.servers", brokers).set("transactional.id", id).create().expect("producer");
    p.init_transactions(Duration::from_secs(10)).expect("init");
    p
}

/// Pins the gaps of librdkafka's mock cluster that `support/eos.rs` emulates. When one of these
/// fails, the mock has learned it: use the real behaviour instead of the ledger's.
#[test]
fn the_mock_cluster_lacks_transaction_semantics() {
    let (mock, brokers) = support::mock();
    let topic = format!("canary-{}", support::unique());
    mock.create_topic(&topic, 1, 1).expect("topic");
    let send = |p: &ThreadedProducer<DefaultProducerContext>, v: &str| {
        p.send(BaseRecord::<str, str>::to(&topic).key("k").payload(v)).map_err(|(e, _)| e).expect("send");
        p.flush(Duration::from_secs(10)).expect("flush");
    };

    // 1. No markers, no LSO: read_committed reads an aborted transaction's records.
    let a = txn_producer(&brokers, "canary");
    a.begin_transaction().expect("begin");
    send(&a, "aborted");
    a.abort_transaction(Duration::from_secs(10)).expect("abort");
    let seen = support::read(&brokers, &topic, 1, View::MockReadCommitted);
    assert_eq!(
        seen.len(),
        1,
        "the mock now hides aborted records from read_committed: read with View::MockReadCommitted instead of the ledger"
    );

    // 3. A second producer with the same transactional id does not fence the first.
    let b = txn_producer(&brokers, "canary");
    a.begin_transaction().expect("begin");
    send(&a, "zombie");
    assert!(
        a.commit_transaction(Duration::from_secs(10)).is_ok(),
        "the mock now fences zombies: drop the injected PRODUCER_FENCED in the zombie test"
    );

    // 2. A committed transaction's offsets are not committed.
    let group = format!("canary-{}", support::unique());
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    c.subscribe(&[&topic]).expect("subscribe");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while c.assignment().expect("assignment").count() == 0 {
        assert!(std::time::Instant::now() < deadline, "no assignment");
        let _ = c.poll(Duration::from_millis(50)); // records are not the point here
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, Offset::Offset(1)).expect("offset");
    b.begin_transaction().expect("begin");
    b.send_offsets_to_transaction(&tpl, &c.group_metadata().expect("group metadata"), Duration::from_secs(10))
        .expect("send offsets");
    b.commit_transaction(Duration::from_secs(10)).expect("commit");
    let committed = c.committed(Duration::from_secs(10)).expect("committed offsets");
    let offset = committed.find_partition(&topic, 0).map(|e| e.offset());
    assert_ne!(
        offset,
        Some(Offset::Offset(1)),
        "the mock now commits transactional offsets: drop the ledger's emulated offset commit"
    );
}
