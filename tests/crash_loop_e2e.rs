//! Crash equivalence (issue 5, item 3) and self-healing restarts (issue 10), through the real
//! broker: a four-hour, six-domain page-view stream and three simulated days of fan observations
//! for 300 pages are written by the test **while** pagepulse runs, and pagepulse is SIGKILLed and
//! restarted twenty times at random moments after it started processing, plus seven more times
//! early (before it joins the group or while it restores). No help is given to the broker's group
//! coordinator (tansu 0.6.0 leaves a dead member's partitions orphaned and hands a member that
//! joins meanwhile nothing): every measured restart must process input within the session
//! timeout plus 10 s on its own. A final run then finishes the input (the last hour closes by a
//! short idle timeout).
//!
//! A clean run of the same input, in another prefix and group on the same broker, is never killed.
//! The killed run must end with exactly the clean run's results: every `pageviews.top` record
//! (one distinct final value per (domain, hour), repeats of that identical value allowed in
//! at-least-once mode and counted) and every `fans.stats` value per (page, observation). Both runs
//! are also checked against figures computed here from the input, independently of pagepulse.
//!
//! Why a broken restore fails this: a page's 1 h and 24 h deltas compare each observation with
//! observations that an earlier incarnation processed (a page is observed once per simulated
//! hour, and the whole stream lasts a minute), and every hour's page views are counted by several
//! incarnations; a task that started empty, or counted an input record twice, writes different
//! figures.

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use support::fans::{check_stats, rfc, Obs};
use support::{metric_value, restores_in_log, wait_for, RestoreLine, TestEnv, TestProducer};

const H0: i64 = 1_795_424_400_000; // 2026-11-23T09:00:00Z
const HOUR: i64 = 3_600_000;
const MIN: i64 = 60_000;
/// Hours of page-view event time.
const HOURS: i64 = 4;
const DOMAINS: [&str; 6] = ["en", "de", "fr.m", "ja", "es", "commons.m"];
/// Relative traffic of each domain.
const DOMAIN_WEIGHTS: [u32; 6] = [35, 20, 15, 12, 10, 8];
const VIEWS_PER_HOUR: usize = 45_000;
/// Distinct titles per domain (Zipf-like popularity).
const TITLES: usize = 4000;
const TOP_N: usize = 25;
/// Pages observed, each about once per simulated hour.
const PAGES: usize = 300;
const FAN_HOURS: i64 = 72;
/// Wall-clock time over which the input is written at most (the rest is written at once when the
/// kill loop ends): input keeps arriving during the whole loop.
const STREAM: Duration = Duration::from_secs(400);
/// Restarts measured and killed after they processed input.
const KILLS: usize = 20;
/// The session timeout the tests run with (`TestEnv::cli`).
const SESSION_TIMEOUT: Duration = Duration::from_secs(6);
/// Longest a restart may take to process input: the session timeout plus 10 s.
const FIRST_RECORD_LIMIT: Duration = Duration::from_secs(SESSION_TIMEOUT.as_secs() + 10);
const IDLE_TIMEOUT: &str = "\"8s\"";

/// The expected `pageviews.top` of every window: key -> (total views, top articles).
type Tops = BTreeMap<String, (u64, Vec<(String, u64)>)>;

fn hour_key(domain: &str, hour_start: i64) -> String {
    let t = chrono::DateTime::from_timestamp_millis(hour_start).expect("valid");
    format!("{domain}|{}", t.format("%Y-%m-%dT%H"))
}

fn title(idx: usize) -> String {
    match idx % 4 {
        0 => format!("Title_{idx}"),
        1 => format!("Zürich_{idx}"),
        2 => format!("東京_{idx}"),
        _ => format!("\"Quoted\"/{idx}"),
    }
}

struct View {
    domain: &'static str,
    title: String,
    views: u64,
    ts: i64,
}

/// The input, in the order it is written: (logical topic, key, value).
struct Input {
    views: Vec<View>,
    /// Distinct observations per page, oldest first.
    samples: BTreeMap<String, Vec<Obs>>,
    records: Vec<(&'static str, String, Vec<u8>)>,
    blacklist: Vec<(&'static str, String)>,
    duplicates: usize,
}

/// The domain index a number below the total weight falls on.
fn pick(mut w: u32) -> usize {
    for (i, dw) in DOMAIN_WEIGHTS.iter().enumerate() {
        if w < *dw {
            return i;
        }
        w -= dw;
    }
    DOMAIN_WEIGHTS.len() - 1
}

fn generate(seed: u64) -> Input {
    let mut rng = StdRng::seed_from_u64(seed);
    // Page views: event time rises through the stream with up to 2 minutes of disorder, less
    // than the allowed lateness (5 minutes), so no event is late and every window is exact.
    let total_weight: u32 = DOMAIN_WEIGHTS.iter().sum();
    let mut views = Vec::with_capacity(VIEWS_PER_HOUR * HOURS as usize);
    for h in 0..HOURS {
        for j in 0..VIEWS_PER_HOUR {
            let d = pick(rng.gen_range(0..total_weight));
            let idx = (TITLES as f64 * rng.gen::<f64>().powi(3)) as usize;
            let views_n = if rng.gen_ratio(1, 200) { rng.gen_range(20..200) } else { rng.gen_range(1..=3) };
            let base = H0 + h * HOUR + j as i64 * HOUR / VIEWS_PER_HOUR as i64;
            let ts = (base + rng.gen_range(-2 * MIN..=2 * MIN)).clamp(H0, H0 + HOURS * HOUR - 1);
            views.push(View { domain: DOMAINS[d], title: title(idx), views: views_n, ts });
        }
    }
    // The most popular title of three domains is blacklisted: it must never be ranked.
    let blacklist: Vec<(&'static str, String)> = DOMAINS[..3].iter().map(|d| (*d, title(0))).collect();

    // Fan observations: page p every 55 to 65 minutes of simulated time for 72 hours (at most one
    // sample per 10-minute bucket, so every delta is exact), growing or shrinking at its own pace.
    let (samples, all) = support::fans::observations(&mut rng, PAGES, FAN_HOURS, H0 - FAN_HOURS * HOUR);
    // One observation in 20 is sent again a little later (a scraper retrying): it changes nothing.
    let mut obs_stream: Vec<Obs> = all.clone();
    let mut duplicates = 0;
    for (i, o) in all.iter().enumerate() {
        if rng.gen_ratio(1, 20) {
            let at = (i + duplicates + rng.gen_range(1..50)).min(obs_stream.len());
            obs_stream.insert(at, o.clone());
            duplicates += 1;
        }
    }

    let view_record = |v: &View| {
        let value = serde_json::json!({"domain": v.domain, "title": v.title, "views": v.views, "ts": v.ts});
        ("pageviews", v.domain.to_string(), value.to_string().into_bytes())
    };
    let obs_record = |o: &Obs| {
        let value = serde_json::json!({"platform": o.platform, "page_id": o.page_id, "fans": o.fans,
            "followers": o.followers, "observed_at": rfc(o.at)});
        ("fans.observations", o.key(), value.to_string().into_bytes())
    };
    // Both streams spread evenly over the whole write.
    let (nv, no) = (views.len(), obs_stream.len());
    let mut records = Vec::with_capacity(nv + no);
    let (mut iv, mut io) = (0, 0);
    while iv < nv || io < no {
        if io >= no || (iv < nv && iv * no <= io * nv) {
            records.push(view_record(&views[iv]));
            iv += 1;
        } else {
            records.push(obs_record(&obs_stream[io]));
            io += 1;
        }
    }
    Input { views, samples, records, blacklist, duplicates }
}

/// The expected `pageviews.top` of every window: key -> (total views, top articles).
fn expected_tops(input: &Input) -> Tops {
    let mut counts: BTreeMap<String, (&str, HashMap<&str, u64>)> = BTreeMap::new();
    for v in &input.views {
        let hour = v.ts.div_euclid(HOUR) * HOUR;
        *counts
            .entry(hour_key(v.domain, hour))
            .or_insert_with(|| (v.domain, HashMap::new()))
            .1
            .entry(&v.title)
            .or_default() += v.views;
    }
    counts
        .into_iter()
        .map(|(key, (domain, c))| {
            let total = c.values().sum();
            let mut ranked: Vec<(String, u64)> = c
                .into_iter()
                .filter(|(t, _)| !input.blacklist.iter().any(|(d, b)| *d == domain && b == t))
                .map(|(t, n)| (t.to_string(), n))
                .collect();
            ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.as_bytes().cmp(b.0.as_bytes())));
            ranked.truncate(TOP_N);
            (key, (total, ranked))
        })
        .collect()
}

fn by_key(recs: &[support::Rec]) -> HashMap<String, Vec<Value>> {
    let mut out: HashMap<String, Vec<Value>> = HashMap::new();
    for r in recs {
        let k = String::from_utf8(r.key.clone().expect("key")).expect("UTF-8 key");
        out.entry(k).or_default().push(serde_json::from_slice(r.value.as_deref().expect("value")).expect("JSON"));
    }
    out
}

/// `fans.stats` values by (page key, observed_at).
fn stats_by_observation(recs: &[support::Rec]) -> HashMap<(String, String), Vec<Value>> {
    let mut out: HashMap<(String, String), Vec<Value>> = HashMap::new();
    for (k, vs) in by_key(recs) {
        for v in vs {
            let at = v["observed_at"].as_str().expect("observed_at").to_string();
            out.entry((k.clone(), at)).or_default().push(v);
        }
    }
    out
}

/// Writes `records` to logical topics under every prefix in `prefixes`, evenly over `over`
/// (pacing the input, not waiting for results), or the rest at once after `hurry` is set, then
/// flushes.
fn stream(
    producer: Arc<TestProducer>,
    input: Arc<Input>,
    prefixes: Vec<String>,
    over: Duration,
    sent: Arc<AtomicUsize>,
    hurry: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        support::fans::pace(input.records.len(), over, &sent, &hurry, |i| {
            let (topic, key, value) = &input.records[i];
            for p in &prefixes {
                producer.send(&format!("{p}{topic}"), key.as_bytes(), Some(value));
            }
        });
        producer.flush();
    })
}

/// What one killed incarnation did.
struct Kill {
    /// `early` (killed at a random moment after its start) or `processing` (killed at a random
    /// moment after its first processed record).
    phase: &'static str,
    /// From its start to its first processed record (`processing` kills only).
    first_record: Option<Duration>,
    after: Duration,
    assigned: f64,
    stream_done: f64,
    consumed: f64,
    produced: f64,
    restores: Vec<RestoreLine>,
}

fn run_vars() -> Vec<(&'static str, &'static str)> {
    vec![
        ("PAGEPULSE__pipelines__pageviews__idle_timeout", IDLE_TIMEOUT),
        ("PAGEPULSE__pipelines__posts__enabled", "false"),
        ("PAGEPULSE__pipelines__pages__enabled", "false"),
        ("NO_COLOR", "1"),
    ]
}

/// Reads `pageviews.top` and `fans.stats` of `env` until every expected window and every
/// (page, observation) has a value.
fn outputs(env: &TestEnv, tops: &Tops, observations: usize) -> (Vec<support::Rec>, Vec<support::Rec>) {
    let mut seen = 0;
    let mut keys = HashSet::new();
    let top = env.read_until("pageviews.top", Duration::from_secs(150), |recs| {
        for r in &recs[seen..] {
            keys.insert(r.key.clone().unwrap_or_default());
        }
        seen = recs.len();
        keys.len() >= tops.len()
    });
    let mut seen = 0;
    let mut pairs = HashSet::new();
    let stats = env.read_until("fans.stats", Duration::from_secs(60), |recs| {
        for r in &recs[seen..] {
            let v: Value = serde_json::from_slice(r.value.as_deref().unwrap_or(b"null")).unwrap_or(Value::Null);
            pairs.insert((r.key.clone().unwrap_or_default(), v["observed_at"].as_str().unwrap_or("").to_string()));
        }
        seen = recs.len();
        pairs.len() >= observations
    });
    (top, stats)
}

/// Outputs acknowledged of this incarnation: it processed input.
fn produced(pp: &support::Pagepulse) -> f64 {
    let m = pp.metrics();
    metric_value(&m, "pagepulse_records_produced_total", r#"topic="fans.stats""#)
        + metric_value(&m, "pagepulse_records_produced_total", r#"topic="pageviews.top""#)
}

#[test]
fn restarts_after_sigkills_heal_on_their_own_and_end_equal_to_an_uninterrupted_run() {
    let test_started = Instant::now();
    let seed: u64 = std::env::var("PAGEPULSE_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    eprintln!("crash loop: seed {seed} (PAGEPULSE_TEST_SEED={seed} repeats the input and the kill points)");
    let mut rng = StdRng::seed_from_u64(seed);
    let input = Arc::new(generate(seed));
    let tops = expected_tops(&input);
    let observations: usize = input.samples.values().map(Vec::len).sum();
    assert_eq!(tops.len(), DOMAINS.len() * HOURS as usize);

    let killed = TestEnv::new();
    let clean = TestEnv::new();
    let producer = Arc::new(killed.producer());
    for env in [&killed, &clean] {
        for (d, t) in &input.blacklist {
            let value = serde_json::json!({"domain": d, "title": t}).to_string();
            producer.send(&env.topic("pageviews.blacklist"), format!("{d} {t}").as_bytes(), Some(value.as_bytes()));
        }
    }
    producer.flush();

    let sent = Arc::new(AtomicUsize::new(0));
    let hurry = Arc::new(AtomicBool::new(false));
    let writer = stream(
        producer.clone(),
        input.clone(),
        vec![killed.prefix.clone(), clean.prefix.clone()],
        STREAM,
        sent.clone(),
        hurry.clone(),
    );
    let stream_done = || sent.load(Ordering::Acquire) as f64 / input.records.len() as f64;
    let vars = run_vars();

    // The kill loop: every restart is left to heal on its own.
    let mut kills: Vec<Kill> = Vec::new();
    let mut measured = 0;
    while measured < KILLS {
        // Every third round starts with an extra early kill: before the incarnation joined the
        // group, or while it restores (its partitions are then orphaned on tansu).
        let phase = if kills.len() % 3 == 1 { "early" } else { "processing" };
        let mut pp = killed.start_with(&vars);
        let started = Instant::now();
        let mut first_record = None;
        if phase == "processing" {
            let t = wait_for_first_record(&mut pp, started);
            first_record = Some(t);
            measured += 1;
        }
        // A random kill point: this is the point of the test, not a wait for a result.
        std::thread::sleep(Duration::from_millis(rng.gen_range(if phase == "early" { 200 } else { 0 }..3000)));
        let metrics = pp.metrics();
        let owned = metric_value(&metrics, "pagepulse_assigned_partitions", "");
        let consumed = metric_value(&metrics, "pagepulse_records_consumed_total", r#"topic="pageviews""#)
            + metric_value(&metrics, "pagepulse_records_consumed_total", r#"topic="fans.observations""#);
        // Outputs this incarnation got acknowledged: it was processing when it died.
        let produced = produced(&pp);
        pp.signal(libc::SIGKILL);
        pp.wait_exit(Duration::from_secs(10));
        let restores = restores_in_log(&pp.log_text());
        let k = Kill {
            phase,
            first_record,
            after: started.elapsed(),
            assigned: owned,
            stream_done: stream_done(),
            consumed,
            produced,
            restores,
        };
        eprintln!(
            "kill {:2} ({phase:10}): first record {}, killed after {:5.1} s, {} partitions, consumed {:6}, produced {:6}, {} restores ({} changelog records), input written {:3.0}%",
            kills.len() + 1,
            k.first_record.map_or("-".to_string(), |t| format!("{:5.2} s", t.as_secs_f64())),
            k.after.as_secs_f64(),
            k.assigned,
            k.consumed,
            k.produced,
            k.restores.len(),
            k.restores.iter().map(|r| r.records).sum::<u64>(),
            k.stream_done * 100.0
        );
        kills.push(k);
    }
    let loop_done = test_started.elapsed();
    hurry.store(true, Ordering::Release);
    writer.join().expect("the input writer finished");

    // The final run of the killed deployment, and the clean run, side by side.
    let mut last = killed.start_with(&vars);
    let last_started = Instant::now();
    let mut reference = clean.start_with(&vars);
    let last_first = wait_for_first_record(&mut last, last_started);
    wait_for("the final run to own all 8 partitions", Duration::from_secs(60), || {
        (metric_value(&last.metrics(), "pagepulse_assigned_partitions", "") >= 8.0).then_some(())
    });
    last.wait_ready(Duration::from_secs(90));
    reference.wait_ready(Duration::from_secs(90));
    let (killed_top, killed_stats) = outputs(&killed, &tops, observations);
    let (clean_top, clean_stats) = outputs(&clean, &tops, observations);
    let last_metrics = last.metrics();
    let last_restores = restores_in_log(&last.log_text());
    let rejoins = support::metric_sum(&last_metrics, "pagepulse_group_rejoins_total", "");
    for pp in [&mut last, &mut reference] {
        pp.signal(libc::SIGTERM);
        assert!(pp.wait_exit(Duration::from_secs(15)).success(), "graceful stop; log:\n{}", pp.log_text());
    }
    let mut firsts: Vec<Duration> = kills.iter().filter_map(|k| k.first_record).chain([last_first]).collect();
    firsts.sort();

    // pageviews.top: the clean run has exactly one final record per window, equal to the
    // independent computation; the killed run has that same value for every window, possibly
    // repeated, and nothing else.
    let (killed_top, clean_top) = (by_key(&killed_top), by_key(&clean_top));
    let window_keys: HashSet<&String> = tops.keys().collect();
    assert_eq!(clean_top.keys().collect::<HashSet<_>>(), window_keys, "clean run windows");
    assert_eq!(killed_top.keys().collect::<HashSet<_>>(), window_keys, "killed run windows");
    let mut top_duplicates = 0;
    for (key, (total, want)) in &tops {
        let reference = &clean_top[key];
        assert_eq!(reference.len(), 1, "{key}: the clean run wrote {} records: {reference:?}", reference.len());
        let reference = &reference[0];
        assert_eq!(reference["final"], true, "{key}: {reference}");
        assert_eq!(reference["total_views"].as_u64(), Some(*total), "{key}");
        assert_eq!(reference["late_events"].as_u64(), Some(0), "{key}");
        let have: Vec<(String, u64)> = reference["articles"]
            .as_array()
            .expect("articles")
            .iter()
            .map(|a| (a["title"].as_str().expect("title").to_string(), a["views"].as_u64().expect("views")))
            .collect();
        assert_eq!(&have, want, "{key}: the clean run's ranking");
        for v in &killed_top[key] {
            assert_eq!(v, reference, "{key}: the killed run wrote a different result");
        }
        top_duplicates += killed_top[key].len() - 1;
    }

    // fans.stats: one value per (page, observation) in the clean run, equal to the independent
    // computation; the killed run has the same value for each, possibly repeated, and no other.
    let (killed_stats, clean_stats) = (stats_by_observation(&killed_stats), stats_by_observation(&clean_stats));
    assert_eq!(clean_stats.len(), observations, "clean run observations");
    assert_eq!(killed_stats.len(), observations, "killed run observations");
    let mut stats_duplicates = 0;
    for (key, samples) in &input.samples {
        for (i, s) in samples.iter().enumerate() {
            let pair = (key.clone(), rfc(s.at));
            let reference = clean_stats.get(&pair).unwrap_or_else(|| panic!("clean run: no stats for {pair:?}"));
            assert_eq!(reference.len(), 1, "{pair:?}: the clean run wrote {reference:?}");
            let reference = &reference[0];
            if let Err(e) = check_stats(reference, samples, i) {
                panic!("{pair:?}: the clean run's value {reference} is wrong: {e}");
            }
            let got = killed_stats.get(&pair).unwrap_or_else(|| panic!("killed run: no stats for {pair:?}"));
            for v in got {
                assert_eq!(v, reference, "{pair:?}: the killed run wrote a different value");
            }
            stats_duplicates += got.len() - 1;
        }
    }

    // The state was really kept and restored: the changelogs exist and replay to live entries
    // (as the next owner would restore them), each partition's durable position is at or past
    // its committed offset (an offset is committed only once a flush covers it), and restores
    // read changelog records in the kill loop and in the final run.
    let mut live = BTreeMap::new();
    for (store, input_topic) in [("pageviews", "pageviews"), ("fans", "fans.observations")] {
        assert_eq!(killed.partitions_of(&killed.changelog(store)), Some(4), "changelog of {store}");
        let restored = killed.restore_changelog(store, 4);
        let committed = killed.committed(input_topic, 4);
        for (p, r) in restored.iter().enumerate() {
            let position = r.position.unwrap_or(0);
            assert!(
                position >= committed[p],
                "{store}/{p}: committed offset {} is past the durable position {position}",
                committed[p]
            );
        }
        let entries: usize = restored.iter().map(|r| r.entries.len()).sum();
        assert!(entries > 0, "the {store} changelog holds no live state");
        live.insert(store, entries);
    }
    let all_restores: Vec<&RestoreLine> = kills.iter().flat_map(|k| &k.restores).chain(&last_restores).collect();
    for store in ["pageviews", "fans"] {
        let n = all_restores.iter().filter(|r| r.store == store).count();
        let records: u64 = all_restores.iter().filter(|r| r.store == store).map(|r| r.records).sum();
        assert!(n > 0 && records > 0, "{store}: {n} restores read {records} changelog records");
        let last_records =
            metric_value(&last_metrics, "pagepulse_state_restored_records_total", &format!(r#"store="{store}""#));
        assert!(last_records > 0.0, "the final run restored no {store} state");
    }
    // A kill lands "while processing" when its incarnation had produced results: the partition
    // count read at the kill may be 0 for an incarnation caught in a rebalance after it processed.
    let processing_kills = kills.iter().filter(|k| k.phase == "processing" && k.produced > 0.0).count();
    let mid_stream = kills.iter().filter(|k| k.stream_done < 1.0).count();
    assert!(processing_kills >= KILLS, "only {processing_kills} kills landed while records were processed");
    let early_kills = kills.iter().filter(|k| k.phase == "early").count();
    let slowest_restore = all_restores.iter().map(|r| r.took_ms).fold(0.0, f64::max);
    eprintln!(
        "crash loop: {} kills in {:.0} s ({processing_kills} while processing, {early_kills} early, {mid_stream} while input was still being written; \
         no help to the group coordinator); restart to first processed record over {} restarts: median {:.2} s, worst {:.2} s \
         (limit {FIRST_RECORD_LIMIT:?}); final run rejoins {rejoins}; \
         {} restores ({} torn keys repaired, slowest {slowest_restore:.0} ms) before the final run and {} in it; live changelog entries {live:?}; {} windows and {observations} observations \
         ({} duplicate observations in the input) equal the clean run; repeated identical outputs: {top_duplicates} \
         pageviews.top, {stats_duplicates} fans.stats; test took {:.0} s",
        kills.len(),
        loop_done.as_secs_f64(),
        firsts.len(),
        firsts[firsts.len() / 2].as_secs_f64(),
        firsts[firsts.len() - 1].as_secs_f64(),
        kills.iter().map(|k| k.restores.len()).sum::<usize>(),
        all_restores.iter().map(|r| r.torn).sum::<u64>(),
        last_restores.len(),
        tops.len(),
        input.duplicates,
        test_started.elapsed().as_secs_f64()
    );
}

/// Waits for the first output of `pp`, which started at `started`, failing the test if it takes
/// longer than [`FIRST_RECORD_LIMIT`]; returns the time from the start.
fn wait_for_first_record(pp: &mut support::Pagepulse, started: Instant) -> Duration {
    loop {
        if produced(pp) > 0.0 {
            return started.elapsed();
        }
        assert!(pp.running(), "pagepulse exited; log:\n{}", pp.log_text());
        assert!(
            started.elapsed() < FIRST_RECORD_LIMIT,
            "a restart processed nothing within {FIRST_RECORD_LIMIT:?} (session timeout + 10 s); log:\n{}",
            pp.log_text()
        );
        std::thread::sleep(support::POLL_INTERVAL);
    }
}
