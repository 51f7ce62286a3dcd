//! What exactly-once mode costs: the posts pipeline (the real processor, with its state store)
//! run through the real engine in at-least-once mode and in exactly-once mode, in the same run,
//! on the same input, against librdkafka's in-process mock cluster (tansu 0.6.0 has no
//! transactions). Prints both throughputs and their ratio, for a commit interval of 1 s (the
//! default) and 100 ms.
//!
//!   cargo bench --bench eos_mock [-- N PARTITIONS ROUNDS]     (default 200000 6 2)
//!
//! Each round runs each mode on a fresh consumer group over the same input topic. Two rates per
//! run, both from its first consumed record: `committed`, to the moment every input offset is
//! done (stored for commit after every output and the last state flush are acknowledged, or
//! committed in a transaction), which includes waiting up to one commit interval for the last
//! flush; and `consumed`, to the moment the last record was handed to its task (the pipeline's
//! pace, commits blocking the tasks included). The mock cluster answers in-process with no disk and no replication, so the
//! figures say what the protocol costs the engine (a commit round trip per task per interval, one
//! producer per task), not what a real cluster would add (transaction markers, fsync). The mock
//! keeps at most 5 MiB per partition (older message sets are dropped): N is bounded accordingly.

#[path = "../tests/support/eos.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use pagepulse::clock::SystemClock;
use pagepulse::config::{Config, ProcessingGuarantee};
use pagepulse::engine::shutdown::Reason;
use pagepulse::engine::state::changelog_topic;
use pagepulse::engine::Store;
use pagepulse::engine::{PipelineSpec, Shutdown, Sink, TaskFactory};
use pagepulse::health::Health;
use pagepulse::kafka::changelog::KafkaBackend;
use pagepulse::kafka::txn::{ConsumerGroup, EosSink, TransactionalOffsets};
use pagepulse::kafka::KafkaSink;
use pagepulse::metrics::Metrics;
use pagepulse::pipelines::posts::{self, PostsProcessor};
use support::{ConsumerOffsets, Ledger, LedgerSink, Progress};

/// One run's figures.
struct Figures {
    /// First consumed record to the last offset done.
    processing: Duration,
    /// First consumed record to the last one.
    consuming: Duration,
    /// Engine start to the last offset done (group join, restores, producers included).
    total: Duration,
}

fn run_once(cfg: &Config, n: u64, ends: &std::collections::HashMap<(String, i32), i64>) -> Figures {
    actix_rt::System::new().block_on(async {
        let (metrics, shutdown) = (Metrics::new(), Shutdown::new());
        let changelog: &'static str = Box::leak(changelog_topic(&cfg.kafka.group_id, posts::PIPELINE).into_boxed_str());
        let shared = Arc::new(KafkaSink::new(cfg, metrics.clone(), shutdown.clone(), &[changelog]).expect("sink"));
        let group = ConsumerGroup::new();
        let exactly_once = cfg.engine.processing_guarantee == ProcessingGuarantee::ExactlyOnce;
        // Records committed positions only: no header, no emulation (nothing is aborted here).
        let ledger = Ledger::new();
        ledger.observe_only.store(true, std::sync::atomic::Ordering::Relaxed);
        let sink: Arc<dyn Sink> = if exactly_once {
            let eos = EosSink::new(cfg, metrics.clone(), shutdown.clone(), &[changelog], shared.clone(), group.clone());
            LedgerSink::new(Arc::new(eos), ledger.clone())
        } else {
            shared.clone()
        };
        let store = Store {
            name: posts::PIPELINE,
            changelog,
            backend: Arc::new(KafkaBackend::new(cfg).expect("changelog backend")),
            flush_every: cfg.kafka.commit_interval,
            health: Arc::new(Health::default()),
        };
        let pc = cfg.posts.clone();
        let spec: Arc<dyn TaskFactory> = Arc::new(
            PipelineSpec::new(
                posts::PIPELINE,
                vec![posts::INPUT],
                move |p| PostsProcessor::new(&pc, Arc::new(SystemClock)).for_partition(p),
                sink,
                None,
                metrics.clone(),
            )
            .with_store(Some(store)),
        );
        let stored = Arc::new(Progress::default());
        let started = Instant::now();
        let (mut first, mut last): (Option<Instant>, Option<Instant>) = (None, None);
        let consumed = metrics.consumed.with_label_values(&[posts::INPUT]);
        let reason = support::run_engine(
            cfg,
            &metrics,
            &shutdown,
            vec![spec],
            |c| {
                group.set(c);
                match exactly_once {
                    true => Arc::new(TransactionalOffsets),
                    false => ConsumerOffsets::new(c.clone(), stored.clone()),
                }
            },
            || {
                if first.is_none() && consumed.get() > 0 {
                    first = Some(Instant::now());
                }
                if last.is_none() && consumed.get() >= n {
                    last = Some(Instant::now());
                }
                match exactly_once {
                    true => ledger.progress.covers(ends),
                    false => stored.covers(ends),
                }
            },
            Duration::from_secs(600),
        )
        .await;
        let done = Instant::now();
        assert_eq!(reason, Some(Reason::Requested), "the run failed");
        assert_eq!(consumed.get(), n, "every input record was consumed once");
        let first = first.expect("records were consumed");
        Figures { processing: done - first, consuming: last.unwrap_or(done) - first, total: done - started }
    })
}

fn main() {
    let args: Vec<u64> =
        std::env::args().skip(1).filter(|a| a != "--bench").map(|a| a.parse().expect("a number")).collect();
    let n = args.first().copied().unwrap_or(200_000);
    let partitions = args.get(1).copied().unwrap_or(6) as i32;
    // ~110 bytes a post in the log; the mock drops a partition's oldest records past 5 MiB.
    assert!(n * 110 / partitions as u64 <= 4 << 20, "N too large for the mock's 5 MiB per partition: add partitions");
    let rounds = args.get(2).copied().unwrap_or(2);

    let (mock, brokers) = support::mock();
    let prefix = format!("b{}.", support::unique());
    for (t, p) in [(posts::INPUT, partitions), (posts::ANALYSIS, 4), (posts::TRENDING, 1), ("deadletter", 1)] {
        mock.create_topic(&format!("{prefix}{t}"), p, 1).expect("topic");
    }
    let input = format!("{prefix}{}", posts::INPUT);
    support::produce(
        &brokers,
        &input,
        (0..n).map(|i| {
            let v =
                format!(r#"{{"id":"p{i}","content":"hello world, a post about #Tag{} and #common things"}}"#, i % 50);
            (format!("p{i}").into_bytes(), v.into_bytes())
        }),
    );
    let ends = support::ends(&brokers, &input, partitions);
    println!("eos_mock: {n} posts in {partitions} partitions, librdkafka mock cluster (1 broker, in-process)");

    for interval_ms in [1000u64, 100] {
        let mut best = [[f64::MIN; 2]; 2];
        for round in 1..=rounds {
            for (m, guarantee) in
                [ProcessingGuarantee::AtLeastOnce, ProcessingGuarantee::ExactlyOnce].into_iter().enumerate()
            {
                let group = format!("g{}", support::unique());
                mock.create_topic(&format!("{prefix}{}", changelog_topic(&group, posts::PIPELINE)), partitions, 1)
                    .expect("changelog topic");
                let mut cfg = support::config(&brokers, &prefix, &group, guarantee);
                cfg.kafka.commit_interval = Duration::from_millis(interval_ms);
                let f = run_once(&cfg, n, &ends);
                let (committed, consumed) =
                    (n as f64 / f.processing.as_secs_f64(), n as f64 / f.consuming.as_secs_f64());
                best[m] = [best[m][0].max(committed), best[m][1].max(consumed)];
                println!(
                    "  commit_interval={interval_ms:>4}ms round {round} {:<13} committed {:>7.0}/s  consumed {:>7.0}/s  (total with start-up {:>6.2?})",
                    format!("{guarantee:?}"),
                    committed,
                    consumed,
                    f.total
                );
            }
        }
        for (i, what) in ["committed", "consumed"].into_iter().enumerate() {
            println!(
                "commit_interval={interval_ms}ms {what}: best at-least-once {:.0}/s, best exactly-once {:.0}/s, exactly-once/at-least-once = {:.2}",
                best[0][i],
                best[1][i],
                best[1][i] / best[0][i]
            );
        }
    }
}
