//! The bundled broker keeps its data (issue 16): tansu with its SQLite storage, as the quickstart
//! runs it, is killed (SIGKILL) twice while fan observations stream in and pagepulse processes
//! them, and each time started again on the same database and port.
//!
//! Why SIGKILL and not SIGTERM: tansu 0.6.0's SQLite engine, asked to stop gracefully, stops its
//! storage first and answers every request on the open connections with UNKNOWN_SERVER_ERROR for
//! 5 s before it exits (the memory engine keeps answering). A librdkafka idempotent producer then
//! bumps its epoch, and the restarted broker's storage task panics on that producer's next batch
//! (`more or less than one row`, tansu-storage lite.rs:503, in `idempotent_message_check`): from
//! then on it answers every produce and fetch, of every client, with UNKNOWN_SERVER_ERROR. A kill
//! is safe (SQLite in WAL mode loses nothing acknowledged when the process dies), so
//! `scripts/quickstart.sh` stops its broker after its clients, and README says how to stop it.
//!
//! After each restart, checked against what was read from the broker just before it went down:
//! every topic is still there with its partitions (the inputs, the outputs and pagepulse's
//! changelog), the group's committed offsets are still there (not reset, never behind), and the
//! changelog still holds its records. pagepulse (the same process across the SIGKILL) must carry
//! on by itself; it is then replaced by a new instance, which restores its state from the
//! changelog written through the crash, before the second kill.
//!
//! At the end every `fans.stats` value is checked against figures computed here from the input:
//! each page's deltas compare an observation with observations processed before the broker
//! restarts, so lost history (a changelog or offsets gone) gives different figures. Repeats of
//! the identical value are allowed (at-least-once), a different value never is.
//!
//! tansu applies compaction at start-up (then every 10 minutes): the changelog's restore after the
//! restarts reads fewer records than were written to it when it does.
//!
//! Skipped, with a message, when the SQLite build of tansu is not installed
//! (`scripts/install-tansu.sh` installs it; `scripts/test.sh` runs that first).

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use serde_json::Value;
use support::fans::{check_stats, rfc, Obs};
use support::{metric_value, wait_for, Broker, Pagepulse, TestEnv, TestProducer};

const H0: i64 = 1_795_424_400_000; // 2026-11-23T09:00:00Z
const HOUR: i64 = 3_600_000;
/// Pages observed, each about once per simulated hour.
const PAGES: usize = 150;
const FAN_HOURS: i64 = 72;
/// Wall-clock time over which the input is written: both broker restarts land inside it.
const STREAM: Duration = Duration::from_secs(75);
const PARTITIONS: i32 = 4;

/// Every page's observations, oldest first, by page key.
type Samples = BTreeMap<String, Vec<Obs>>;
/// Input records in the order written: (key, value).
type Records = Vec<(String, Vec<u8>)>;

/// Every page's observations (oldest first) and the records to write, in order: observations by
/// time, one in 20 sent again a little later (a scraper retrying; it changes nothing).
fn generate(seed: u64) -> (Samples, Records) {
    let mut rng = StdRng::seed_from_u64(seed);
    let (samples, all) = support::fans::observations(&mut rng, PAGES, FAN_HOURS, H0 - FAN_HOURS * HOUR);
    let mut stream = all.clone();
    let mut inserted = 0;
    for (i, o) in all.iter().enumerate() {
        if rng.gen_ratio(1, 20) {
            let at = (i + inserted + rng.gen_range(1..50)).min(stream.len());
            stream.insert(at, o.clone());
            inserted += 1;
        }
    }
    let records = stream
        .iter()
        .map(|o| {
            let value = serde_json::json!({"platform": o.platform, "page_id": o.page_id, "fans": o.fans,
                "followers": o.followers, "observed_at": rfc(o.at)});
            (o.key(), value.to_string().into_bytes())
        })
        .collect();
    (samples, records)
}

/// Writes `records` to `topic` evenly over [`STREAM`] (pacing the input, not waiting for
/// results), then flushes; `sent` counts the records queued.
fn stream(
    producer: Arc<TestProducer>,
    topic: String,
    records: Arc<Records>,
    sent: Arc<AtomicUsize>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let never = AtomicBool::new(false);
        support::fans::pace(records.len(), STREAM, &sent, &never, |i| {
            let (key, value) = &records[i];
            producer.send(&topic, key.as_bytes(), Some(value));
        });
        producer.flush();
    })
}

/// What the broker holds for one test: its topics under the prefix (name -> partitions), the
/// group's committed offsets of `fans.observations`, and the fans changelog's high watermarks.
#[derive(Debug, Clone, PartialEq)]
struct Holdings {
    topics: BTreeMap<String, usize>,
    committed: Vec<i64>,
    changelog_ends: Vec<i64>,
}

fn holdings(env: &TestEnv) -> Holdings {
    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", &env.brokers).create().expect("metadata client");
    let md = consumer.fetch_metadata(None, Duration::from_secs(10)).expect("metadata");
    let topics = md
        .topics()
        .iter()
        .filter(|t| t.name().starts_with(&env.prefix) && t.error().is_none())
        .map(|t| (t.name().to_string(), t.partitions().len()))
        .collect();
    let changelog = env.changelog("fans");
    let changelog_ends = ends_of(env, changelog.strip_prefix(&env.prefix).expect("prefixed"));
    Holdings { topics, committed: env.committed("fans.observations", PARTITIONS), changelog_ends }
}

/// The high watermark of every partition of logical topic `topic` (-1: unknown to the broker).
fn ends_of(env: &TestEnv, topic: &str) -> Vec<i64> {
    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", &env.brokers).create().expect("metadata client");
    (0..PARTITIONS)
        .map(|p| consumer.fetch_watermarks(&env.topic(topic), p, Duration::from_secs(10)).map_or(-1, |w| w.1))
        .collect()
}

fn run_vars() -> Vec<(&'static str, &'static str)> {
    vec![
        ("PAGEPULSE__pipelines__pages__enabled", "false"),
        ("PAGEPULSE__pipelines__pageviews__enabled", "false"),
        ("PAGEPULSE__pipelines__posts__enabled", "false"),
        ("PAGEPULSE__pipelines__messages__enabled", "false"),
        ("PAGEPULSE__pipelines__apps__enabled", "false"),
        ("NO_COLOR", "1"),
    ]
}

fn consumed(pp: &Pagepulse) -> f64 {
    metric_value(&pp.metrics(), "pagepulse_records_consumed_total", r#"topic="fans.observations""#)
}

fn produced(pp: &Pagepulse) -> f64 {
    metric_value(&pp.metrics(), "pagepulse_records_produced_total", r#"topic="fans.stats""#)
}

/// Checks that the broker, just restarted, still holds everything of `before`: every topic with
/// its partitions, committed offsets at or past the ones read before (not reset), changelog ends
/// at or past the ones before.
fn assert_kept(env: &TestEnv, before: &Holdings, what: &str) -> Holdings {
    let after = holdings(env);
    assert_eq!(after.topics, before.topics, "{what}: the topics changed");
    for p in 0..PARTITIONS as usize {
        assert!(
            after.committed[p] >= before.committed[p] && after.committed[p] > 0,
            "{what}: committed offset of fans.observations/{p} is {} (was {} before)",
            after.committed[p],
            before.committed[p]
        );
        assert!(
            after.changelog_ends[p] >= before.changelog_ends[p] && after.changelog_ends[p] > 0,
            "{what}: the changelog's partition {p} ends at {} (was {} before)",
            after.changelog_ends[p],
            before.changelog_ends[p]
        );
    }
    after
}

/// SIGKILLs the broker and starts it again on its data, then checks it kept everything of
/// `before` and that `pp` consumes again; reports what it saw (`written`: input records written
/// at the kill).
fn kill_and_check(broker: &mut Broker, env: &TestEnv, pp: &Pagepulse, before: &Holdings, what: &str, written: usize) {
    let consumed_at_kill = consumed(pp);
    broker.restart_after(libc::SIGKILL);
    let restarted = Instant::now();
    let after = assert_kept(env, before, &format!("after the {what}"));
    until_rises(
        pp,
        &format!("processing after the {what} restart"),
        Duration::from_secs(90),
        consumed_at_kill,
        consumed,
    );
    eprintln!(
        "{what} at {written} records written: {} topics kept, committed {:?} -> {:?}, changelog ends {:?} -> {:?}; \
         pagepulse consumed again {:.2} s after the restart",
        after.topics.len(),
        before.committed,
        after.committed,
        before.changelog_ends,
        after.changelog_ends,
        restarted.elapsed().as_secs_f64()
    );
}

/// Waits until `f()` is above `base`, failing with `pp`'s log after `limit`; returns the wait.
fn until_rises(pp: &Pagepulse, what: &str, limit: Duration, base: f64, f: impl Fn(&Pagepulse) -> f64) -> Duration {
    let t0 = Instant::now();
    while f(pp) <= base {
        assert!(t0.elapsed() < limit, "timed out after {limit:?} waiting for {what}; log:\n{}", pp.log_text());
        std::thread::sleep(support::POLL_INTERVAL);
    }
    t0.elapsed()
}

#[test]
fn a_sqlite_broker_restarted_under_load_keeps_topics_offsets_and_changelogs_and_processing_carries_on() {
    let Some(mut broker) = Broker::start_sqlite() else {
        eprintln!(
            "SKIPPED: the SQLite build of tansu is not installed (run scripts/install-tansu.sh, which links it as \
             ~/.cargo/bin/tansu-sqlite, or set TANSU_SQLITE_BIN)"
        );
        return;
    };
    let test_started = Instant::now();
    let seed: u64 = std::env::var("PAGEPULSE_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    eprintln!("broker restart: seed {seed} (PAGEPULSE_TEST_SEED={seed} repeats the input)");
    let (samples, records) = generate(seed);
    let observations: usize = samples.values().map(Vec::len).sum();
    let total = records.len();
    let records = Arc::new(records);

    let env = TestEnv::on(broker.addr.clone());
    let mut pp = env.start_with(&run_vars());
    pp.wait_ready(Duration::from_secs(60));
    let sent = Arc::new(AtomicUsize::new(0));
    let writer = stream(Arc::new(env.producer()), env.topic("fans.observations"), records.clone(), sent.clone());
    let written = || sent.load(Ordering::Acquire);

    // 1. SIGKILL mid-load, once a fifth of the input is written and pagepulse has committed
    // offsets and flushed state.
    wait_for("committed offsets and changelog records before the crash", Duration::from_secs(60), || {
        let h = holdings(&env);
        (written() >= total / 5 && h.committed.iter().all(|&o| o > 0) && h.changelog_ends.iter().all(|&e| e > 0))
            .then_some(h)
    });
    let before = holdings(&env);
    assert!(before.topics.contains_key(&env.changelog("fans")), "no changelog topic: {:?}", before.topics);
    assert!(written() < total, "the input was all written before the crash: raise STREAM");
    kill_and_check(&mut broker, &env, &pp, &before, "SIGKILL", written());

    // 2. A new pagepulse instance restores its state from the changelog kept through the crash.
    let base = produced(&pp);
    until_rises(&pp, "outputs after the SIGKILL restart", Duration::from_secs(60), base, produced);
    pp.signal(libc::SIGTERM);
    assert!(pp.wait_exit(Duration::from_secs(20)).success(), "graceful stop; log:\n{}", pp.log_text());
    let mut pp = env.start_with(&run_vars());
    pp.wait_ready(Duration::from_secs(90));
    let restored_records = || metric_value(&pp.metrics(), "pagepulse_state_restored_records_total", r#"store="fans""#);
    let restored = wait_for("the new instance to restore state from the changelog", Duration::from_secs(90), || {
        let n = restored_records();
        (n > 0.0).then_some(n)
    });

    // 3. A second SIGKILL mid-load, while the new instance processes.
    eprintln!("a new pagepulse instance restored {restored} changelog records");
    wait_for("three fifths of the input written", Duration::from_secs(60), || {
        (written() >= total * 3 / 5).then_some(())
    });
    let base = consumed(&pp);
    until_rises(&pp, "processing by the new instance", Duration::from_secs(60), base, consumed);
    let before = holdings(&env);
    let stats_ends = ends_of(&env, "fans.stats");
    let written_at_kill = written();
    assert!(written_at_kill < total, "the input was all written before the second kill: raise STREAM");
    kill_and_check(&mut broker, &env, &pp, &before, "second SIGKILL", written_at_kill);

    // 4. The rest of the input, then the results against the independent computation. fans.stats
    // is compacted (key: the page), and the broker compacted it at each start-up: of the values
    // written before the last restart only each page's latest is left. So: every value left is
    // exactly right; every observation written after the last restart has its value; each page's
    // latest value is its last observation's.
    writer.join().expect("the input writer finished");
    let index: HashMap<(String, String), usize> = samples
        .iter()
        .flat_map(|(key, obs)| obs.iter().enumerate().map(move |(i, o)| ((key.clone(), rfc(o.at)), i)))
        .collect();
    let pair_of = |value: &[u8]| -> (String, String) {
        let v: Value = serde_json::from_slice(value).expect("JSON input");
        let key = format!("{}:{}", v["platform"].as_str().expect("platform"), v["page_id"].as_str().expect("page_id"));
        (key, v["observed_at"].as_str().expect("observed_at").to_string())
    };
    // Records queued after the kill was asked (the writer counts a 20 ms tick's worth at once).
    let after_restart: HashSet<(String, String)> =
        records[(written_at_kill + 100).min(total)..].iter().map(|(_, v)| pair_of(v)).collect();
    let mut pairs = HashSet::new();
    let mut seen = 0;
    let stats = env.read_until("fans.stats", Duration::from_secs(120), |recs| {
        for r in &recs[seen..] {
            let v: Value = serde_json::from_slice(r.value.as_deref().unwrap_or(b"null")).unwrap_or(Value::Null);
            let key = String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned();
            pairs.insert((key, v["observed_at"].as_str().unwrap_or("").to_string()));
        }
        seen = recs.len();
        after_restart.iter().all(|p| pairs.contains(p))
    });
    let mut latest: HashMap<String, Value> = HashMap::new();
    let mut per_obs: HashMap<(String, String), usize> = HashMap::new();
    for r in &stats {
        let key = String::from_utf8(r.key.clone().expect("key")).expect("UTF-8 key");
        let v: Value = serde_json::from_slice(r.value.as_deref().expect("value")).expect("JSON");
        let pair = (key.clone(), v["observed_at"].as_str().expect("observed_at").to_string());
        let i = *index.get(&pair).unwrap_or_else(|| panic!("fans.stats has a value for {pair:?}, never observed"));
        if let Err(e) = check_stats(&v, &samples[&key], i) {
            panic!("{pair:?}: {v} is wrong: {e}");
        }
        *per_obs.entry(pair).or_default() += 1;
        latest.insert(key, v); // a page's records are all in one partition, read in offset order
    }
    for (key, obs) in &samples {
        let last = &latest.get(key).unwrap_or_else(|| panic!("no fans.stats for {key}"))["observed_at"];
        assert_eq!(
            last,
            &serde_json::json!(rfc(obs[obs.len() - 1].at)),
            "{key}: the latest value is not the last observation's"
        );
    }
    let repeats: usize = per_obs.values().map(|n| n - 1).sum();
    // Compaction: below the ends read just before the last kill, no page has two values left.
    let mut before_keys = HashSet::new();
    let mut before_records = 0;
    for r in stats.iter().filter(|r| r.offset < stats_ends[r.partition as usize]) {
        before_records += 1;
        assert!(
            before_keys.insert(r.key.clone()),
            "fans.stats was not compacted at the broker's start-up: two values of {:?} below offset {}",
            r.key.as_deref().map(String::from_utf8_lossy),
            stats_ends[r.partition as usize]
        );
    }
    let written_before: i64 = stats_ends.iter().sum();
    eprintln!(
        "fans.stats: {} records read, {} observations with a value ({} written after the last restart, all there), \
         {repeats} identical repeats; of the {written_before} offsets written before the last kill, {before_records} \
         records are left (one per page: compacted at start-up)",
        stats.len(),
        per_obs.len(),
        after_restart.len(),
    );

    // 5. The changelog, as the next owner would restore it (once nothing runs): live entries for
    // every page, a durable position at or past every committed offset.
    pp.signal(libc::SIGTERM);
    assert!(pp.wait_exit(Duration::from_secs(20)).success(), "graceful stop; log:\n{}", pp.log_text());
    let committed = env.committed("fans.observations", PARTITIONS);
    let ends = holdings(&env).changelog_ends;
    let restored = env.restore_changelog("fans", PARTITIONS);
    for (p, r) in restored.iter().enumerate() {
        let position = r.position.unwrap_or(0);
        assert!(
            position >= committed[p],
            "fans/{p}: committed offset {} is past the durable position {position}",
            committed[p]
        );
    }
    let entries: usize = restored.iter().map(|r| r.entries.len()).sum();
    let read: u64 = restored.iter().map(|r| r.records).sum();
    let span: i64 = ends.iter().sum();
    assert!(entries >= PAGES, "the changelog holds {entries} live entries for {PAGES} pages");
    eprintln!(
        "broker restart: {total} records ({observations} distinct observations) in {:.0} s; every fans.stats value \
         left equals the independent computation; committed offsets {committed:?}; \
         changelog: {entries} live entries, a restore read {read} records of offsets 0..{span} ({})",
        test_started.elapsed().as_secs_f64(),
        if (read as i64) < span { "compacted at the broker's start-up" } else { "not compacted" },
    );
}
