//! Broker pauses and restarts (issue 10, item 2), through a real broker of the test's own:
//! posts stream in while the broker is frozen for 30 s (SIGSTOP, then SIGCONT), or killed and
//! started again with its in-memory storage gone. pagepulse must stay up (the same process, never
//! exiting), resume within seconds of the broker answering again, and lose nothing: every post
//! written gets its analysis. After a restart that lost the broker's data it must say so and
//! carry on with the topics the test recreates.

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{metric_value, wait_for, Broker, Pagepulse, TestEnv};

/// How long the broker stays frozen.
const OUTAGE: Duration = Duration::from_secs(30);

fn post(i: usize) -> (String, Vec<u8>) {
    let id = format!("post-{i}");
    let value = serde_json::json!({"id": id, "content": format!("outage test number {i} #resilience #t{}", i % 7)});
    (id, value.to_string().into_bytes())
}

fn run_vars() -> Vec<(&'static str, &'static str)> {
    vec![
        ("PAGEPULSE__pipelines__pages__enabled", "false"),
        ("PAGEPULSE__pipelines__pageviews__enabled", "false"),
        ("PAGEPULSE__pipelines__fans__enabled", "false"),
        ("NO_COLOR", "1"),
    ]
}

/// Writes posts `from..to` to `posts` at about `rate` per second from a thread; `sent` counts
/// those queued. The producer retries through outages (librdkafka's own retries).
fn stream(
    env: &TestEnv,
    from: usize,
    to: usize,
    rate: usize,
    sent: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let producer = env.producer();
    let topic = env.topic("posts");
    std::thread::spawn(move || {
        let started = Instant::now();
        let mut i = from;
        while i < to && !stop.load(Ordering::Acquire) {
            let due = from + (started.elapsed().as_secs_f64() * rate as f64) as usize;
            while i < due.min(to) {
                let (k, v) = post(i);
                producer.send(&topic, k.as_bytes(), Some(&v));
                i += 1;
            }
            sent.store(i - from, Ordering::Release);
            // Pacing the input at its steady rate: not a wait for a result.
            std::thread::sleep(Duration::from_millis(10));
        }
        producer.flush();
    })
}

fn counter(pp: &Pagepulse, name: &str, labels: &str) -> f64 {
    metric_value(&pp.metrics(), name, labels)
}

/// Waits until the value of `f` rises above `base`, returning how long it took; on timeout the
/// test fails with `pp`'s log.
fn until_rises(pp: &Pagepulse, what: &str, limit: Duration, base: f64, mut f: impl FnMut() -> f64) -> Duration {
    let t0 = Instant::now();
    while f() <= base {
        assert!(t0.elapsed() < limit, "timed out after {limit:?} waiting for {what}; log:\n{}", pp.log_text());
        std::thread::sleep(support::POLL_INTERVAL);
    }
    t0.elapsed()
}

/// Every post id in `ids` has an analysis in `env`'s `posts.analysis`.
fn all_analysed(env: &TestEnv, ids: &HashSet<String>, limit: Duration) -> usize {
    let mut seen = HashSet::new();
    let mut read = 0;
    let recs = env.read_until("posts.analysis", limit, |recs| {
        for r in &recs[read..] {
            if let Some(k) = &r.key {
                seen.insert(String::from_utf8_lossy(k).into_owned());
            }
        }
        read = recs.len();
        ids.iter().all(|id| seen.contains(id))
    });
    recs.len()
}

#[test]
fn a_thirty_second_broker_pause_loses_nothing_and_processing_resumes_within_seconds() {
    let broker = Broker::start();
    let env = TestEnv::on(broker.addr.clone());
    let mut pp = env.start_with(&run_vars());
    pp.wait_ready(Duration::from_secs(60));
    const N: usize = 60_000;
    let sent = Arc::new(AtomicUsize::new(0));
    let writer = stream(&env, 0, N, 1_500, sent.clone(), Arc::new(AtomicBool::new(false)));
    let produced = |pp: &Pagepulse| counter(pp, "pagepulse_records_produced_total", r#"topic="posts.analysis""#);
    let consumed = |pp: &Pagepulse| counter(pp, "pagepulse_records_consumed_total", r#"topic="posts""#);
    wait_for("analyses before the outage", Duration::from_secs(30), || (produced(&pp) > 5_000.0).then_some(()));

    broker.pause();
    let paused_at = Instant::now();
    // The outage itself (the scenario), not a wait for a result.
    std::thread::sleep(OUTAGE);
    let (before_c, before_p) = (consumed(&pp), produced(&pp));
    broker.resume();
    let frozen = paused_at.elapsed();
    let first_consumed =
        until_rises(&pp, "consumption after the resume", Duration::from_secs(60), before_c, || consumed(&pp));
    let first_produced =
        until_rises(&pp, "analyses after the resume", Duration::from_secs(60), before_p, || produced(&pp));
    writer.join().expect("writer");
    let ids: HashSet<String> = (0..N).map(|i| post(i).0).collect();
    let outputs = all_analysed(&env, &ids, Duration::from_secs(180));
    assert!(pp.running(), "pagepulse exited; log:\n{}", pp.log_text());
    let m = pp.metrics();
    eprintln!(
        "broker pause: frozen {:.1} s; after the resume: first record processed (consumed and handed to its task) in {:.2} s, first analysis acknowledged in {:.2} s; \
         all {N} posts analysed ({outputs} analyses, {} repeated); rejoins: session_lost {}, orphaned {}; engine restarts {}",
        frozen.as_secs_f64(),
        first_consumed.as_secs_f64(),
        first_produced.as_secs_f64(),
        outputs - N,
        metric_value(&m, "pagepulse_group_rejoins_total", r#"reason="session_lost""#),
        metric_value(&m, "pagepulse_group_rejoins_total", r#"reason="orphaned_partitions""#),
        support::metric_sum(&m, "pagepulse_engine_restarts_total", "").abs(),
    );
    assert!(first_consumed < Duration::from_secs(20), "processing resumed only {first_consumed:?} after the broker");
    pp.signal(libc::SIGTERM);
    assert!(pp.wait_exit(Duration::from_secs(20)).success(), "graceful stop; log:\n{}", pp.log_text());
}

#[test]
fn a_broker_restart_that_lost_its_data_is_reported_and_processing_carries_on() {
    let mut broker = Broker::start();
    let env = TestEnv::on(broker.addr.clone());
    let mut pp = env.start_with(&run_vars());
    pp.wait_ready(Duration::from_secs(60));
    let sent = Arc::new(AtomicUsize::new(0));
    let writer = stream(&env, 0, 10_000, 5_000, sent.clone(), Arc::new(AtomicBool::new(false)));
    writer.join().expect("writer");
    let first: HashSet<String> = (0..10_000).map(|i| post(i).0).collect();
    all_analysed(&env, &first, Duration::from_secs(60));

    broker.restart();
    let restarted = Instant::now();
    // The operator recreates the topics (memory storage keeps nothing), then input resumes.
    env.create_topics();
    let recreated = restarted.elapsed();
    let produced = |pp: &Pagepulse| counter(pp, "pagepulse_records_produced_total", r#"topic="posts.analysis""#);
    let before = produced(&pp);
    let writer = stream(&env, 10_000, 30_000, 5_000, sent.clone(), Arc::new(AtomicBool::new(false)));
    let first_produced =
        until_rises(&pp, "analyses after the broker restart", Duration::from_secs(90), before, || produced(&pp));
    writer.join().expect("writer");
    let second: HashSet<String> = (10_000..30_000).map(|i| post(i).0).collect();
    let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        all_analysed(&env, &second, Duration::from_secs(120));
    }));
    if let Err(e) = read {
        eprintln!("not every new post was analysed; metrics:\n{}\nlog:\n{}", pp.metrics(), pp.log_text());
        std::panic::resume_unwind(e);
    }
    assert!(pp.running(), "pagepulse exited; log:\n{}", pp.log_text());
    let log = support::strip_ansi(&pp.log_text());
    assert!(log.contains("the broker lost its data"), "pagepulse did not say what happened; log:\n{log}");
    let m = pp.metrics();
    // The restart's reason is the first symptom seen: the watchdog's missing topics
    // (`broker_data_lost`) or a delivery the broker refused because it no longer knows the producer.
    let restarts = support::metric_sum(&m, "pagepulse_engine_restarts_total", "");
    assert!(restarts >= 1.0, "no engine restart counted:\n{m}");
    pp.wait_ready(Duration::from_secs(30));
    eprintln!(
        "broker restart: topics recreated {:.2} s after it; first analysis of new input {:.2} s after the restart; \
         all 20000 new posts analysed; engine restarts {restarts}",
        recreated.as_secs_f64(),
        (recreated + first_produced).as_secs_f64(),
    );
    pp.signal(libc::SIGTERM);
    assert!(pp.wait_exit(Duration::from_secs(20)).success(), "graceful stop; log:\n{}", pp.log_text());
}
