//! Crash and restore equivalence of the messages pipeline, through the real broker: 9,000
//! messages over eight minutes of event time are written while pagepulse runs, and pagepulse is
//! SIGKILLed twice at random moments after it started counting, then restarted. A clean run of
//! the same input, in another prefix and group on the same broker, is never killed. The killed
//! run must end with exactly the clean run's results: for every minute the one final value
//! (repeats of that identical value allowed: at-least-once), equal to the count made here, and the
//! same all-time totals.
//!
//! Why a broken restore fails this: every minute's users and cities are counted by several
//! incarnations (the input is written over 25 s, each minute over about 3 s), and a minute closes
//! only when every partition has passed it: a task that started empty, a minute closed before a
//! restoring partition was back, or an input record counted twice writes different figures.

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use support::{metric_value, restores_in_log, wait_for, TestEnv, TestProducer};

const MIN: i64 = 60_000;
const MESSAGES: usize = 9_000;
const MINUTES: i64 = 8;
const USERS: usize = 300;
const STREAM: Duration = Duration::from_secs(25);
const KILLS: usize = 2;
const CITIES: &[(&str, &str)] = &[
    ("New York", "NY"),
    ("Los Angeles", "CA"),
    ("Austin", "TX"),
    ("Buffalo", "NY"),
    ("Portland", "OR"),
    ("Portland", "ME"),
];

struct Msg {
    user: String,
    state: &'static str,
    city: String,
    ts: i64,
}

fn generate(seed: u64, base: i64) -> Vec<Msg> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..MESSAGES)
        .map(|i| {
            let u = ((USERS as f64) * rng.gen::<f64>().powi(2)) as usize;
            let (city, state) = CITIES[((CITIES.len() as f64) * rng.gen::<f64>().powi(2)) as usize];
            let city = if rng.gen_ratio(1, 5) { city.to_uppercase() } else { city.to_string() };
            let slot = base + i as i64 * MINUTES * MIN / MESSAGES as i64;
            Msg {
                user: format!("user{u}"),
                state,
                city,
                ts: (slot + rng.gen_range(-4_000..=4_000)).clamp(base, base + MINUTES * MIN - 1),
            }
        })
        .collect()
}

/// A minute as counted here: (total, users, top cities as (state, city, count)).
type Minute = (u64, u64, Vec<(String, String, u64)>);

/// Each minute's figures counted here.
fn expected(msgs: &[Msg]) -> BTreeMap<String, Minute> {
    let mut minutes: BTreeMap<i64, Vec<&Msg>> = BTreeMap::new();
    for m in msgs {
        minutes.entry(m.ts.div_euclid(MIN) * MIN).or_default().push(m);
    }
    minutes
        .into_iter()
        .map(|(start, ms)| {
            let users: HashSet<&str> = ms.iter().map(|m| m.user.as_str()).collect();
            // (state, lower-cased city) -> (count, earliest (event time, spelling)).
            type Tally<'a> = HashMap<(&'a str, String), (u64, (i64, String))>;
            let mut cities: Tally<'_> = HashMap::new();
            for m in &ms {
                let e = cities.entry((m.state, m.city.to_lowercase())).or_insert((0, (m.ts, m.city.clone())));
                e.0 += 1;
                e.1 = e.1.clone().min((m.ts, m.city.clone()));
            }
            let mut top: Vec<(String, String, u64)> =
                cities.into_iter().map(|((s, _), (n, (_, c)))| (s.to_string(), c, n)).collect();
            top.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)).then(a.1.cmp(&b.1)));
            top.truncate(10);
            let key = chrono::DateTime::from_timestamp_millis(start).expect("t").format("%Y-%m-%dT%H:%M").to_string();
            (key, (ms.len() as u64, users.len() as u64, top))
        })
        .collect()
}

/// Writes the messages to both prefixes, evenly over [`STREAM`] (pacing the input, not waiting
/// for results), the rest at once when `hurry` is set.
fn stream(
    producer: Arc<TestProducer>,
    msgs: Arc<Vec<Msg>>,
    prefixes: Vec<String>,
    sent: Arc<AtomicUsize>,
    hurry: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let started = Instant::now();
        let mut i = 0;
        while i < msgs.len() {
            let due = match hurry.load(Ordering::Acquire) {
                true => msgs.len(),
                false => ((started.elapsed().as_secs_f64() / STREAM.as_secs_f64()) * msgs.len() as f64).ceil() as usize,
            };
            while i < due.min(msgs.len()) {
                let m = &msgs[i];
                let v = serde_json::json!({"username": m.user, "city": m.city, "state": m.state, "message": "hi", "ts": m.ts});
                for p in &prefixes {
                    producer.send(&format!("{p}messages"), m.user.as_bytes(), Some(v.to_string().as_bytes()));
                }
                i += 1;
            }
            sent.store(i, Ordering::Release);
            // Pacing the producer to its steady rate, not a wait for a result.
            std::thread::sleep(Duration::from_millis(20));
        }
        producer.flush();
    })
}

fn run_vars() -> Vec<(&'static str, &'static str)> {
    vec![
        ("PAGEPULSE__pipelines__messages__idle_timeout", "\"8s\""),
        ("PAGEPULSE__pipelines__messages__totals_interval", "\"1s\""),
        ("PAGEPULSE__pipelines__posts__enabled", "false"),
        ("PAGEPULSE__pipelines__pages__enabled", "false"),
        ("PAGEPULSE__pipelines__fans__enabled", "false"),
        ("PAGEPULSE__pipelines__pageviews__enabled", "false"),
        ("NO_COLOR", "1"),
    ]
}

/// Every `messages.stats` value of `env` by minute, once every expected minute has one.
fn stats(env: &TestEnv, minutes: usize) -> HashMap<String, Vec<Value>> {
    let mut seen = HashSet::new();
    let mut n = 0;
    let recs = env.read_until("messages.stats", Duration::from_secs(90), |recs| {
        for r in &recs[n..] {
            seen.insert(r.key.clone().unwrap_or_default());
        }
        n = recs.len();
        seen.len() >= minutes
    });
    let mut out: HashMap<String, Vec<Value>> = HashMap::new();
    for r in recs {
        let k = String::from_utf8(r.key.expect("key")).expect("utf8");
        out.entry(k).or_default().push(serde_json::from_slice(r.value.as_deref().expect("value")).expect("JSON"));
    }
    out
}

/// The last `messages.totals` of `env`, once it counts `total` messages.
fn totals(env: &TestEnv, total: u64) -> Value {
    let mut last = Value::Null;
    env.read_until("messages.totals", Duration::from_secs(60), |recs| {
        if let Some(r) = recs.last() {
            last = serde_json::from_slice(r.value.as_deref().expect("value")).expect("JSON");
        }
        last["total"].as_u64() == Some(total)
    });
    last["as_of"] = Value::Null;
    last
}

fn consumed(pp: &support::Pagepulse) -> f64 {
    metric_value(&pp.metrics(), "pagepulse_records_consumed_total", r#"topic="messages""#)
}

#[test]
fn sigkilled_runs_end_equal_to_an_uninterrupted_run() {
    let started = Instant::now();
    let seed: u64 = std::env::var("PAGEPULSE_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    eprintln!("messages crash test: seed {seed} (PAGEPULSE_TEST_SEED={seed} repeats it)");
    let mut rng = StdRng::seed_from_u64(seed);
    let now = chrono::Utc::now().timestamp_millis();
    let msgs = Arc::new(generate(seed, (now - 86_400_000).div_euclid(MIN) * MIN));
    let want = expected(&msgs);
    assert_eq!(want.len(), MINUTES as usize);

    let killed = TestEnv::new();
    let clean = TestEnv::new();
    let vars = run_vars();
    let mut reference = clean.start_with(&vars);
    let mut pp = killed.start_with(&vars);
    reference.wait_ready(Duration::from_secs(60));
    let producer = Arc::new(killed.producer());
    let (sent, hurry) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
    let writer =
        stream(producer, msgs.clone(), vec![killed.prefix.clone(), clean.prefix.clone()], sent.clone(), hurry.clone());

    let mut restores = Vec::new();
    for kill in 0..KILLS {
        let t = Instant::now();
        wait_for("the incarnation to count messages", Duration::from_secs(30), || {
            assert!(pp.running(), "pagepulse exited; log:\n{}", pp.log_text());
            (consumed(&pp) > 0.0).then_some(())
        });
        let first = t.elapsed();
        // A random kill point: this is the point of the test, not a wait for a result.
        std::thread::sleep(Duration::from_millis(rng.gen_range(500..4_000)));
        let counted = consumed(&pp);
        pp.signal(libc::SIGKILL);
        pp.wait_exit(Duration::from_secs(10));
        restores.extend(restores_in_log(&pp.log_text()));
        eprintln!(
            "kill {}: first record {:.1} s after start, {counted} consumed, input written {:.0}%",
            kill + 1,
            first.as_secs_f64(),
            sent.load(Ordering::Acquire) as f64 * 100.0 / MESSAGES as f64
        );
        pp = killed.start_with(&vars);
    }
    let mid_stream = sent.load(Ordering::Acquire) < MESSAGES;
    hurry.store(true, Ordering::Release);
    writer.join().expect("the input writer finished");

    let (got, reference_got) = (stats(&killed, want.len()), stats(&clean, want.len()));
    let total = MESSAGES as u64;
    let (t_killed, t_clean) = (totals(&killed, total), totals(&clean, total));
    let last_restores = restores_in_log(&pp.log_text());
    for p in [&mut pp, &mut reference] {
        p.signal(libc::SIGTERM);
        assert!(p.wait_exit(Duration::from_secs(15)).success(), "graceful stop; log:\n{}", p.log_text());
    }

    let mut repeats = 0;
    for (key, (total, users, top)) in &want {
        let clean_values = &reference_got[key];
        assert_eq!(clean_values.len(), 1, "{key}: the clean run wrote {clean_values:?}");
        let v = &clean_values[0];
        let have: Vec<(String, String, u64)> = v["top_cities"]
            .as_array()
            .expect("top")
            .iter()
            .map(|c| {
                (
                    c["state"].as_str().expect("s").into(),
                    c["city"].as_str().expect("c").into(),
                    c["count"].as_u64().expect("n"),
                )
            })
            .collect();
        assert_eq!(
            (v["total"].as_u64(), v["users"].as_u64(), &have),
            (Some(*total), Some(*users), top),
            "{key}: clean run"
        );
        for k in &got[key] {
            assert_eq!(k, v, "{key}: the killed run wrote a different result");
        }
        repeats += got[key].len() - 1;
    }
    assert_eq!(got.len(), want.len(), "killed run minutes");
    assert_eq!(t_killed, t_clean, "all-time totals");
    let restored: u64 =
        restores.iter().chain(&last_restores).filter(|r| r.store == "messages").map(|r| r.records).sum();
    assert!(restored > 0, "no messages state was restored: the kills tested nothing");
    eprintln!(
        "messages crash test: {KILLS} kills ({}), {} minutes equal the clean run and the count made here, \
         {repeats} identical repeats, {restored} changelog records restored; took {:.0} s",
        if mid_stream { "while input was still written" } else { "input already written" },
        want.len(),
        started.elapsed().as_secs_f64()
    );
}
