//! Stalls stay local (issue 10, item 3), through the real broker: the engine's own consumer
//! source, router and tasks run in this process against tansu, with a test pipeline whose task
//! for partition 0 holds its batch (a stand-in for a slow sink or a stuck processor) for longer
//! than `max.poll.interval.ms`. The consumer must keep polling (so the group keeps this member:
//! no revocation, no lost session), partition 0 must be paused rather than the whole consumer,
//! and the other three partitions must keep flowing at their rate. Once released, partition 0
//! catches up with nothing lost or repeated.

mod support;

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use actix::Arbiter;
use pagepulse::engine::shutdown::Reason;
use pagepulse::engine::{Emit, OffsetStore, PipelineSpec, Processor, RawRecord, RecordMeta, Rejection, Router};
use pagepulse::engine::{OutRecord, Shutdown, TaskFactory};
use pagepulse::health::Health;
use pagepulse::kafka::source::{self, Source, SourceContext};
use pagepulse::kafka::KafkaSink;
use pagepulse::metrics::Metrics;
use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};
use support::{TestEnv, TestProducer};
use tokio::sync::mpsc;

/// Partitions of `posts`.
const PARTITIONS: i32 = 4;
/// `max.poll.interval.ms` of the consumer under test.
const MAX_POLL_INTERVAL: Duration = Duration::from_secs(8);
/// How long partition 0's task is held: well past the poll interval.
const HOLD: Duration = Duration::from_secs(20);

/// A gate the held task waits at.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    cv: Condvar,
    /// Set once the task is waiting at the gate.
    holding: AtomicBool,
}

impl Gate {
    fn wait(&self) {
        self.holding.store(true, Ordering::SeqCst);
        let mut open = self.open.lock().expect("gate lock");
        while !*open {
            open = self.cv.wait(open).expect("gate wait");
        }
    }

    fn open(&self) {
        *self.open.lock().expect("gate lock") = true;
        self.cv.notify_all();
    }
}

/// Writes every record to `posts.analysis` unchanged, counting per partition; the task of
/// partition 0 waits at the gate on the record whose value is `hold`.
struct HoldingEcho {
    partition: i32,
    gate: Arc<Gate>,
    seen: Arc<[AtomicU64; PARTITIONS as usize]>,
    /// Offsets of partition 0 processed, in order.
    offsets: Arc<Mutex<Vec<i64>>>,
}

impl Processor for HoldingEcho {
    type Input<'a> = &'a RawRecord;
    type Part = ();

    fn decode<'a>(&self, _topic: &'static str, rec: &'a RawRecord) -> Result<Self::Input<'a>, Rejection> {
        Ok(rec)
    }

    fn process(&mut self, rec: &RawRecord, meta: &RecordMeta, out: &mut Emit<()>) {
        if self.partition == 0 && rec.value.as_deref() == Some(b"hold") {
            self.gate.wait();
        }
        self.seen[self.partition as usize].fetch_add(1, Ordering::SeqCst);
        if self.partition == 0 {
            self.offsets.lock().expect("offsets").push(meta.offset);
        }
        out.record(OutRecord::new(
            "posts.analysis",
            rec.key.clone().unwrap_or_default(),
            rec.value.clone().unwrap_or_default(),
        ));
    }
}

/// Stores offsets in the consumer, as `pagepulse run` does.
struct ConsumerOffsets(Arc<Source>);

impl OffsetStore for ConsumerOffsets {
    fn store(&self, topic: &str, partition: i32, next_offset: i64) {
        let mut tpl = TopicPartitionList::with_capacity(1);
        tpl.add_partition_offset(topic, partition, Offset::Offset(next_offset)).expect("valid offset");
        // Err only after a revocation, which this test asserts never happens.
        let _ = self.0.store_offsets(&tpl);
    }
}

fn send(producer: &TestProducer, topic: &str, partition: i32, i: u64, value: &[u8]) {
    producer.send_to(topic, partition, format!("k{partition}-{i}").as_bytes(), Some(value));
}

/// The tests of this file measure rates and count records exactly: one at a time, so that
/// neither's load (two cores here) disturbs the other.
static SERIAL: Mutex<()> = Mutex::new(());

/// The engine under test: the real consumer source, polling thread, router and tasks of a
/// `HoldingEcho` pipeline reading `topic`, started inside an actix system.
struct Engine {
    metrics: Metrics,
    shutdown: Shutdown,
    sink: Arc<KafkaSink>,
    gate: Arc<Gate>,
    seen: Arc<[AtomicU64; PARTITIONS as usize]>,
    offsets: Arc<Mutex<Vec<i64>>>,
    arbiters: Vec<Arbiter>,
    done_rx: mpsc::Receiver<()>,
    consumer: Arc<Source>,
    router: Router,
    stop: Arc<AtomicBool>,
    poller: std::thread::JoinHandle<()>,
    chunks: Option<mpsc::Receiver<source::Polled>>,
}

impl Engine {
    fn start(cfg: &pagepulse::config::Config, topic: &str) -> Self {
        let metrics = Metrics::new();
        let shutdown = Shutdown::new();
        let health = Arc::new(Health::default());
        let sink = Arc::new(KafkaSink::new(cfg, metrics.clone(), shutdown.clone(), &[]).expect("sink"));
        let gate = Arc::new(Gate::default());
        let seen: Arc<[AtomicU64; PARTITIONS as usize]> = Arc::new(Default::default());
        let offsets = Arc::new(Mutex::new(Vec::new()));
        let (g, s, o) = (gate.clone(), seen.clone(), offsets.clone());
        let spec: Arc<dyn TaskFactory> = Arc::new(PipelineSpec::new(
            "echo",
            vec!["posts"],
            move |partition| HoldingEcho { partition, gate: g.clone(), seen: s.clone(), offsets: o.clone() },
            sink.clone(),
            None,
            metrics.clone(),
        ));
        let arbiters: Vec<Arbiter> = (0..cfg.engine.workers.get()).map(|_| Arbiter::new()).collect();
        let (done_tx, done_rx) = mpsc::channel::<()>(1);
        let consumer = source::subscribe(cfg, SourceContext::new(cfg, metrics.clone(), health), &[topic.to_string()])
            .expect("consumer");
        let router = Router::new(
            vec![spec],
            |l| cfg.topic(l),
            arbiters.iter().map(|a| a.handle()).collect(),
            Arc::new(ConsumerOffsets(consumer.clone())),
            metrics.clone(),
            cfg.engine.inbox_capacity.get(),
            done_tx,
            cfg.engine.partition_buffer_bytes.get(),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let (poller, chunks) =
            source::spawn_poller(consumer.clone(), router.topics(), cfg, stop.clone(), false).expect("poller");
        Self {
            metrics,
            shutdown,
            sink,
            gate,
            seen,
            offsets,
            arbiters,
            done_rx,
            consumer,
            router,
            stop,
            poller,
            chunks: Some(chunks),
        }
    }

    /// Stops the polling thread, the router and every task, and flushes the outputs.
    async fn finish(mut self) {
        self.stop.store(true, Ordering::Release);
        self.poller.join().expect("poller thread");
        drop(self.router);
        tokio::time::timeout(Duration::from_secs(30), self.done_rx.recv()).await.expect("every task stops");
        self.sink.flush(Duration::from_secs(10)).expect("outputs acknowledged");
        for a in &self.arbiters {
            a.stop();
        }
    }
}

#[test]
fn a_held_partition_is_paused_while_the_others_keep_flowing_and_the_member_stays() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let env = TestEnv::new();
    let mut cfg = env.config();
    cfg.kafka.session_timeout = Duration::from_secs(6);
    cfg.kafka.consumer.insert("max.poll.interval.ms".into(), MAX_POLL_INTERVAL.as_millis().to_string());
    // One worker thread per partition, so that holding partition 0's thread holds nothing else.
    cfg.engine.workers = NonZeroUsize::new(PARTITIONS as usize).expect("> 0");
    cfg.engine.inbox_capacity = NonZeroUsize::new(4).expect("> 0");
    cfg.engine.batch_max_records = NonZeroUsize::new(100).expect("> 0");
    cfg.engine.partition_buffer_bytes = NonZeroUsize::new(64 << 10).expect("> 0");
    let topic = env.topic("posts");
    let producer = env.producer();

    let env = &env;
    actix_rt::System::new().block_on(async move {
        let mut engine = Engine::start(&cfg, &topic);
        let (metrics, gate, seen) = (engine.metrics.clone(), engine.gate.clone(), engine.seen.clone());
        let offsets = engine.offsets.clone();
        let chunks = engine.chunks.take().expect("chunks");
        let shutdown = engine.shutdown.clone();

        // The input: a steady stream to all four partitions, with the hold record early in
        // partition 0. Written from a thread, paced, while the engine runs.
        let sent: Arc<[AtomicU64; PARTITIONS as usize]> = Arc::new(Default::default());
        let writing = Arc::new(AtomicBool::new(true));
        // The writer waits on this channel between rounds: 2 ms, or less once told to stop.
        let (stop_writer, stop_rx) = std::sync::mpsc::channel::<()>();
        let writer = {
            let (sent, writing, topic) = (sent.clone(), writing.clone(), topic.clone());
            std::thread::spawn(move || {
                let mut i = 0u64;
                while writing.load(Ordering::Acquire) {
                    for p in 0..PARTITIONS {
                        let value = if p == 0 && i == 50 { b"hold".to_vec() } else { vec![b'x'; 200] };
                        send(&producer, &topic, p, i, &value);
                        sent[p as usize].fetch_add(1, Ordering::SeqCst);
                    }
                    i += 1;
                    // Pacing the input at about 4 x 500 records/s until told to stop.
                    if stop_rx.recv_timeout(Duration::from_millis(2)).is_ok() {
                        break;
                    }
                }
                producer.flush();
            })
        };

        let sd = shutdown.clone();
        let observed = async {
            let deadline = Instant::now() + Duration::from_secs(60);
            let rate = |from: &[u64; 4], to: &[u64; 4], secs: f64| -> Vec<f64> {
                (1..4).map(|p| (to[p] - from[p]) as f64 / secs).collect()
            };
            let snapshot = || -> [u64; 4] { std::array::from_fn(|p| seen[p].load(Ordering::SeqCst)) };
            // Polls conditions every 20 ms (each wait below has a deadline).
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            // Before the hold: every partition flows.
            while !gate.holding.load(Ordering::SeqCst) {
                assert!(Instant::now() < deadline, "the hold record never reached partition 0's task");
                tick.tick().await;
            }
            let held_at = Instant::now();
            let before = snapshot();
            // The early rate: until partitions 1-3 each processed 500 more records.
            while (1..4).any(|p| snapshot()[p] < before[p] + 500) {
                assert!(Instant::now() < deadline, "partitions 1-3 stopped flowing when partition 0 was held");
                tick.tick().await;
            }
            let early = snapshot();
            let early_window = held_at.elapsed();
            let early_rate = rate(&before, &early, early_window.as_secs_f64());
            let sent_early: [u64; 4] = std::array::from_fn(|p| sent[p].load(Ordering::SeqCst));
            let early_at = Instant::now();
            // Through the hold, well past max.poll.interval.ms.
            let mut paused_seen = false;
            while held_at.elapsed() < HOLD {
                paused_seen |= metrics.partitions_paused.get() == 1;
                tick.tick().await;
            }
            let late = snapshot();
            let late_window = early_at.elapsed().as_secs_f64();
            let late_rate = rate(&early, &late, late_window);
            let sent_late: [u64; 4] = std::array::from_fn(|p| sent[p].load(Ordering::SeqCst));
            // The input rate over the same window: what partitions 1-3 must keep up with.
            let input_rate = rate(&sent_early, &sent_late, late_window);
            let held_count = late[0];
            gate.open();
            writing.store(false, Ordering::Release);
            let _ = stop_writer.send(());
            (paused_seen, early_rate, late_rate, input_rate, held_count, held_at, deadline)
        };
        let consumer = engine.consumer.clone();
        let run = source::run(&consumer, chunks, &mut engine.router, &sd);
        let watch = async {
            let (paused_seen, early_rate, late_rate, input_rate, held_count, held_at, deadline) = observed.await;
            // After the release: everything written reaches the echo output exactly once.
            let mut release_tick = tokio::time::interval(Duration::from_millis(50));
            loop {
                let total: u64 = (0..4).map(|p| seen[p].load(Ordering::SeqCst)).sum();
                let want: u64 = (0..4).map(|p| sent[p].load(Ordering::SeqCst)).sum();
                if !writing.load(Ordering::Acquire) && total >= want && want > 0 {
                    break;
                }
                if Instant::now() >= deadline + HOLD {
                    let mut o = offsets.lock().expect("offsets").clone();
                    let n = o.len();
                    o.sort();
                    o.dedup();
                    let gaps: Vec<(i64, i64)> = o.windows(2).filter(|w| w[1] != w[0] + 1).map(|w| (w[0], w[1])).collect();
                    eprintln!("p0: {n} processed, {} distinct, first {:?} last {:?}, gaps {gaps:?}", o.len(), o.first(), o.last());
                }
                assert!(
                    Instant::now() < deadline + HOLD,
                    "processed {total} of {want} after the release: per partition {:?} of {:?}; paused now {}",
                    (0..4).map(|p| seen[p].load(Ordering::SeqCst)).collect::<Vec<_>>(),
                    (0..4).map(|p| sent[p].load(Ordering::SeqCst)).collect::<Vec<_>>(),
                    metrics.partitions_paused.get()
                );
                release_tick.tick().await;
            }
            sd.trigger(Reason::Requested);
            (paused_seen, early_rate, late_rate, input_rate, held_count, held_at)
        };
        let (ran, (paused_seen, early_rate, late_rate, input_rate, held_count, held_at)) = tokio::join!(run, watch);
        ran.expect("the routing loop ends without error");
        writer.join().expect("writer thread");
        engine.finish().await;

        let m = metrics.render();
        let rejoins = support::metric_sum(&m, "pagepulse_group_rejoins_total", "");
        eprintln!(
            "stall: held {:?}; partition 0 paused: {paused_seen}; partitions 1-3 records/s before {early_rate:?}, during {late_rate:?} (input {input_rate:?}); \
             partition 0 processed {held_count} before the hold; rejoins {}; pauses {}, rewinds {}",
            held_at.elapsed(),
            rejoins.abs(),
            metrics.partition_pauses.get(),
            metrics.consumer_rewinds.get()
        );
        assert!(paused_seen, "partition 0 was never paused in the consumer");
        assert_eq!(rejoins, 0.0, "the member lost its session or rejoined:\n{m}");
        assert_eq!(metrics.assigned_partitions.get(), PARTITIONS as i64, "the member kept its partitions");
        // Partitions 1-3 kept up with their input while partition 0 was held (compared with the
        // input rate, not the rate before the hold, which a catch-up burst after start can inflate).
        for (p, ((e, l), i)) in early_rate.iter().zip(&late_rate).zip(&input_rate).enumerate() {
            assert!(*e > 100.0, "partition {} flowed at only {e}/s before", p + 1);
            assert!(*l > 0.7 * i, "partition {} processed {l}/s of {i}/s input while partition 0 was held", p + 1);
        }
        // Exactly once per input record in this uninterrupted run (no revocation, no replay).
        let per_partition: BTreeMap<i32, (u64, u64)> = (0..PARTITIONS)
            .map(|p| (p, (seen[p as usize].load(Ordering::SeqCst), sent[p as usize].load(Ordering::SeqCst))))
            .collect();
        let mut o = offsets.lock().expect("offsets").clone();
        o.sort();
        let repeated: Vec<i64> = o.windows(2).filter(|w| w[0] == w[1]).map(|w| w[0]).collect();
        for (p, (got, want)) in &per_partition {
            assert_eq!(got, want, "partition {p}: processed {got} of {want}; partition 0 repeated {repeated:?}");
        }
        let outputs = env.read_until("posts.analysis", Duration::from_secs(30), |recs| {
            recs.len() as u64 >= per_partition.values().map(|v| v.1).sum::<u64>()
        });
        let mut keys: Vec<_> = outputs.iter().map(|r| r.key.clone()).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), outputs.len(), "no output repeated");
    });
}

/// A resume at the end of the log, inside its last record batch (issue 12: the messages
/// benchmark stalled a few hundred records short). tansu 0.6.0 answers a fetch from inside a batch
/// with the next batch, and after the last one there is none: the resumed partition got nothing,
/// and, since the polling thread only ran its checks between chunks, nothing ever fetched it again
/// from further back. Now a partition that stays silent after its positioning while the broker's
/// high watermark is past it is fetched again from further back within a second.
#[test]
fn a_partition_resumed_inside_the_last_record_batch_gets_the_rest_of_it() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    const BATCHES: i64 = 10;
    const BATCH: i64 = 200;
    const N: i64 = BATCHES * BATCH;
    let env = TestEnv::new();
    let mut cfg = env.config();
    cfg.engine.workers = NonZeroUsize::new(2).expect("> 0");
    // Pause as soon as a few chunks wait: the record held comes late in the last batch, and the
    // pause (so the resume) lands a few chunks after it, inside that batch.
    cfg.engine.inbox_capacity = NonZeroUsize::new(1).expect("> 0");
    cfg.engine.batch_max_records = NonZeroUsize::new(10).expect("> 0");
    cfg.engine.partition_buffer_bytes = NonZeroUsize::new(4 << 10).expect("> 0");
    let topic = env.topic("posts");
    // Bursts acknowledged one by one before the engine starts: one record batch each.
    let producer = env.producer_lingering(Duration::from_millis(500));
    let hold = N - BATCH / 2;
    for b in 0..BATCHES {
        for i in b * BATCH..(b + 1) * BATCH {
            send(&producer, &topic, 0, i as u64, if i == hold { b"hold" } else { &[b'x'; 200] });
        }
        producer.flush();
    }

    actix_rt::System::new().block_on(async move {
        let mut engine = Engine::start(&cfg, &topic);
        let (metrics, gate, seen) = (engine.metrics.clone(), engine.gate.clone(), engine.seen.clone());
        let offsets = engine.offsets.clone();
        let chunks = engine.chunks.take().expect("chunks");
        let sd = engine.shutdown.clone();
        let consumer = engine.consumer.clone();
        let run = source::run(&consumer, chunks, &mut engine.router, &sd);
        let watch = async {
            // Polls conditions every 20 ms (each wait below has a deadline).
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            let deadline = Instant::now() + Duration::from_secs(30);
            while !(gate.holding.load(Ordering::SeqCst) && metrics.partitions_paused.get() == 1) {
                assert!(Instant::now() < deadline, "partition 0 was never held and paused");
                tick.tick().await;
            }
            gate.open();
            let deadline = Instant::now() + Duration::from_secs(20);
            while (seen[0].load(Ordering::SeqCst) as i64) < N {
                assert!(
                    Instant::now() < deadline,
                    "after the resume partition 0 processed {} of {N} records within 20 s (rewinds {})",
                    seen[0].load(Ordering::SeqCst),
                    metrics.consumer_rewinds.get()
                );
                tick.tick().await;
            }
            sd.trigger(Reason::Requested);
        };
        let (ran, ()) = tokio::join!(run, watch);
        ran.expect("the routing loop ends without error");
        let (pauses, rewinds) = (metrics.partition_pauses.get(), metrics.consumer_rewinds.get());
        engine.finish().await;
        let got = offsets.lock().expect("offsets").clone();
        eprintln!("tail resume: {} records processed after {pauses} pauses and {rewinds} rewinds", got.len());
        assert!(pauses >= 1, "the partition was paused");
        assert_eq!(got, (0..N).collect::<Vec<_>>(), "every offset exactly once, in order");
    });
}
