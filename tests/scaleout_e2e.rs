//! Scale-out (issue 5, item 4), through the real broker: two pagepulse instances in one group
//! split the partitions of `pages`, `fans.observations` and `pageviews`, poll 200 tracked pages
//! from the in-process Graph API simulator (its clock frozen, so every count is known exactly
//! from `trajectory::fans_at`) and count a page-view stream written meanwhile.
//!
//! 1. One instance is SIGKILLed mid-stream. The survivor takes every partition over, restores the
//!    dead one's state (a moved page's `/pages/{key}` shows the samples the dead instance held,
//!    and its 24 h delta still measures from the first sample) and polls every page.
//! 2. A third instance joins: it takes partitions over and restores them, again without losing a
//!    page's history.
//!
//! Throughout, after the first handover settles, no page is polled twice for one slot (two
//! observations of a page are never closer than half its interval), and at the end every hourly
//! `pageviews.top` record equals the top computed here from the views written: nothing lost,
//! nothing counted twice, across the kill and the scale-out.

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pagepulse::clock::ManualClock;
use pagepulse::simulate::faults::SimConfig;
use pagepulse::simulate::graph_api::{self, Stats};
use pagepulse::simulate::trajectory::{fans_at, page_id};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use support::{http_get, restores_in_log, wait_for, Pagepulse, TestEnv, TestProducer};

/// Simulator time of the first round of polls (2026-11-23T10:00:00Z), then one and two hours on.
const T1: i64 = 1_795_428_000_000;
const T2: i64 = T1 + 3_600_000;
const T3: i64 = T2 + 3_600_000;
const PAGES: u64 = 200;
const INTERVAL_S: i64 = 10;
/// Input partitions of the group: `pages`, `fans.observations`, `pageviews` and
/// `pageviews.reports` (backfill jobs, which run with page views), 4 each.
const PARTITIONS: f64 = 16.0;

const H0: i64 = 1_795_424_400_000; // 2026-11-23T09:00:00Z
const HOUR: i64 = 3_600_000;
const MIN: i64 = 60_000;
const HOURS: i64 = 3;
const DOMAINS: [&str; 6] = ["en", "de", "fr.m", "ja", "es", "commons.m"];
const VIEWS_PER_HOUR: usize = 12_000;
const TOP_N: usize = 25;

/// The expected `pageviews.top` of every window: key -> (total views, top articles).
type Tops = BTreeMap<String, (u64, Vec<(String, u64)>)>;

fn simulator(clock: Arc<ManualClock>) -> (SocketAddr, Arc<Stats>) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            let cfg = SimConfig { pages: PAGES, clock, ..SimConfig::default() };
            let server = graph_api::start(cfg, "127.0.0.1:0".parse().expect("address")).expect("simulator");
            tx.send((server.addr(), server.stats())).expect("hand over the address");
            std::future::pending::<()>().await;
        });
    });
    rx.recv_timeout(Duration::from_secs(10)).expect("the simulator started")
}

fn key(i: u64) -> String {
    format!("facebook:{}", page_id(i))
}

fn fans(i: u64, t: i64) -> u64 {
    fans_at(&page_id(i), t).0
}

fn ms(rfc: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc).expect("RFC 3339").timestamp_millis()
}

/// `GET path` as JSON, if it answers 200 with JSON.
fn get_json(addr: &str, path: &str) -> Option<Value> {
    match http_get(addr, path)? {
        (200, body) => serde_json::from_str(&body).ok(),
        _ => None,
    }
}

fn assigned(pp: &Pagepulse) -> f64 {
    pp.metric("pagepulse_assigned_partitions", "")
}

/// The newest `fans.stats` value of every page, read from the beginning until `done` holds.
fn latest_stats(env: &TestEnv, mut done: impl FnMut(&HashMap<String, Value>) -> bool) -> HashMap<String, Value> {
    let mut last = HashMap::new();
    let mut seen = 0;
    env.read_until("fans.stats", Duration::from_secs(120), |recs| {
        for r in &recs[seen..] {
            let k = String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned();
            last.insert(k, serde_json::from_slice(r.value.as_deref().expect("stats value")).expect("JSON"));
        }
        seen = recs.len();
        done(&last)
    });
    last
}

fn all_at(last: &HashMap<String, Value>, t: i64) -> bool {
    (1..=PAGES).all(|i| last.get(&key(i)).is_some_and(|v| v["fans"].as_u64() == Some(fans(i, t))))
}

/// Page views of `HOURS` hours, event time rising with up to 2 minutes of disorder (less than the
/// allowed lateness), then one view per domain past the last hour's end plus the lateness, which
/// closes every window by watermark (the idle timeout is an hour: no window closes early while
/// the test waits between phases).
fn page_views(rng: &mut StdRng) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for h in 0..HOURS {
        for j in 0..VIEWS_PER_HOUR {
            let d = DOMAINS[rng.gen_range(0..DOMAINS.len())];
            let idx = (1500.0 * rng.gen::<f64>().powi(3)) as usize;
            let base = H0 + h * HOUR + j as i64 * HOUR / VIEWS_PER_HOUR as i64;
            let ts = (base + rng.gen_range(-2 * MIN..=2 * MIN)).clamp(H0, H0 + HOURS * HOUR - 1);
            let views = rng.gen_range(1..=4);
            out.push((
                d.to_string(),
                json!({"domain": d, "title": format!("Article_{idx}"), "views": views, "ts": ts}),
            ));
        }
    }
    for d in DOMAINS {
        let ts = H0 + HOURS * HOUR + 6 * MIN;
        out.push((d.to_string(), json!({"domain": d, "title": "Closing", "views": 1, "ts": ts})));
    }
    out
}

/// The expected top of every window closed by the stream: key -> (total views, articles).
fn expected_tops(views: &[(String, Value)], blacklist: &[(&str, &str)]) -> Tops {
    let mut counts: BTreeMap<String, (String, HashMap<String, u64>)> = BTreeMap::new();
    for (d, v) in views {
        let hour = v["ts"].as_i64().expect("ts").div_euclid(HOUR) * HOUR;
        if hour >= H0 + HOURS * HOUR {
            continue; // the closing views' window stays open
        }
        let t = chrono::DateTime::from_timestamp_millis(hour).expect("hour");
        let key = format!("{d}|{}", t.format("%Y-%m-%dT%H"));
        *counts
            .entry(key)
            .or_insert_with(|| (d.clone(), HashMap::new()))
            .1
            .entry(v["title"].as_str().expect("title").to_string())
            .or_default() += v["views"].as_u64().expect("views");
    }
    counts
        .into_iter()
        .map(|(key, (d, c))| {
            let total = c.values().sum();
            let mut ranked: Vec<(String, u64)> =
                c.into_iter().filter(|(t, _)| !blacklist.iter().any(|(bd, bt)| *bd == d && bt == t)).collect();
            ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.as_bytes().cmp(b.0.as_bytes())));
            ranked.truncate(TOP_N);
            (key, (total, ranked))
        })
        .collect()
}

/// Writes `views[range]` to `pageviews` over about `over` (pacing the input, not waiting for
/// results), on a thread.
fn stream_views(
    producer: Arc<TestProducer>,
    topic: String,
    views: Arc<Vec<(String, Value)>>,
    range: std::ops::Range<usize>,
    over: Duration,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let started = Instant::now();
        let n = range.len();
        let mut i = 0;
        while i < n {
            let due = ((started.elapsed().as_secs_f64() / over.as_secs_f64()) * n as f64).ceil() as usize;
            while i < due.min(n) {
                let (d, v) = &views[range.start + i];
                producer.send(&topic, d.as_bytes(), Some(v.to_string().as_bytes()));
                i += 1;
            }
            // Pacing the producer to its steady rate, not a wait for a result.
            std::thread::sleep(Duration::from_millis(20));
        }
        producer.flush();
    })
}

/// The pages whose `/pages/{key}` an instance serves (the pages of its `fans` partitions), with
/// their current view.
/// The pages `pp` holds itself (answered without forwarding: no `X-Pagepulse-Served-By`), with
/// what it shows of them.
fn served_pages(pp: &Pagepulse) -> BTreeMap<u64, Value> {
    (1..=PAGES)
        .filter_map(|i| {
            let a = support::http(&pp.addr, "GET", &format!("/api/v1/pages/{}", key(i)), &[], b"")?;
            (a.status == 200 && a.header("x-pagepulse-served-by").is_none()).then(|| (i, a.json()))
        })
        .collect()
}

fn table_times(view: &Value) -> Vec<String> {
    view["table"]
        .as_array()
        .expect("table")
        .iter()
        .map(|r| r["observed_at"].as_str().expect("observed_at").to_string())
        .collect()
}

/// Restores an instance's log reports per store: (restores, changelog records read).
fn restore_totals(pp: &Pagepulse) -> BTreeMap<String, (usize, u64)> {
    let mut out: BTreeMap<String, (usize, u64)> = BTreeMap::new();
    for r in restores_in_log(&pp.log_text()) {
        let e = out.entry(r.store).or_default();
        e.0 += 1;
        e.1 += r.records;
    }
    out
}

#[test]
fn a_killed_instance_hands_its_partitions_and_state_to_the_survivor_and_a_new_one_takes_some_over() {
    let test_started = Instant::now();
    let seed: u64 = std::env::var("PAGEPULSE_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    eprintln!("scale-out: seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let env = TestEnv::new();
    let clock = Arc::new(ManualClock::at_ms(T1));
    let (sim, stats) = simulator(clock.clone());
    let base = format!("http://{sim}");

    // Tracked pages and a blacklist, then two instances.
    let producer = Arc::new(env.producer());
    for i in 1..=PAGES {
        let v = json!({"platform": "facebook", "page_id": page_id(i), "interval_s": INTERVAL_S}).to_string();
        producer.send(&env.topic("pages"), key(i).as_bytes(), Some(v.as_bytes()));
    }
    let blacklist = [("en", "Article_0"), ("ja", "Article_1")];
    for (d, t) in blacklist {
        let v = json!({"domain": d, "title": t}).to_string();
        producer.send(&env.topic("pageviews.blacklist"), format!("{d} {t}").as_bytes(), Some(v.as_bytes()));
    }
    producer.flush();
    let views = Arc::new(page_views(&mut rng));
    let tops = expected_tops(&views, &blacklist);
    assert_eq!(tops.len(), DOMAINS.len() * HOURS as usize);

    let vars = [
        ("PAGEPULSE__platforms__facebook__base_url", base.as_str()),
        ("PAGEPULSE_FACEBOOK_TOKEN", "e2e-token"),
        ("PAGEPULSE__pipelines__posts__enabled", "false"),
        // The partitions counted here are those of pages, fans.observations, pageviews and
        // pageviews.reports.
        ("PAGEPULSE__pipelines__messages__enabled", "false"),
        ("PAGEPULSE__pipelines__apps__enabled", "false"),
        ("PAGEPULSE__pipelines__pageviews__idle_timeout", "\"1h\""),
        ("NO_COLOR", "1"),
    ];
    // A first, so that A leads the group when B joins: tansu 0.6 never reassigns the partitions
    // of a group whose *leader* missed its heartbeats (the heartbeat path drops the dead member
    // but keeps the group formed under the dead leader, so the survivor's rejoin gets its old
    // assignment back). On Kafka either instance may die; on tansu the test kills the follower.
    let mut a = env.start_with(&vars);
    wait_for("A to own every partition", Duration::from_secs(60), || (assigned(&a) == PARTITIONS).then_some(()));
    let mut b = env.start_with(&vars);
    wait_for("both instances to own partitions", Duration::from_secs(90), || {
        (assigned(&a) > 0.0 && assigned(&b) > 0.0 && assigned(&a) + assigned(&b) == PARTITIONS).then_some(())
    });
    a.wait_ready(Duration::from_secs(60));
    b.wait_ready(Duration::from_secs(60));
    eprintln!(
        "two instances own {} + {} partitions after {:.1} s",
        assigned(&a),
        assigned(&b),
        test_started.elapsed().as_secs_f64()
    );

    // Round 1 at T1: every page polled once, by whichever instance owns its `pages` partition.
    latest_stats(&env, |last| all_at(last, T1));
    // The pages whose state lives in B, with what B shows of them.
    let b_pages = served_pages(&b);
    assert!(!b_pages.is_empty() && b_pages.len() < PAGES as usize, "B serves {} pages", b_pages.len());

    // Page views start flowing; B dies at a random point once it has counted some.
    let pv_topic = env.topic("pageviews");
    let (cut1, cut2) = (views.len() * 2 / 5, views.len() * 3 / 4);
    let seg1 = stream_views(producer.clone(), pv_topic.clone(), views.clone(), 0..cut1, Duration::from_secs(6));
    wait_for("B to count page views", Duration::from_secs(30), || {
        (b.metric("pagepulse_records_consumed_total", r#"topic="pageviews""#) > 0.0).then_some(())
    });
    // A random kill point, mid-stream: the point of the test, not a wait for a result.
    std::thread::sleep(Duration::from_millis(rng.gen_range(0..2000)));
    let b_consumed = b.metric("pagepulse_records_consumed_total", r#"topic="pageviews""#);
    b.signal(libc::SIGKILL);
    b.wait_exit(Duration::from_secs(10));
    let killed_at = Instant::now();
    clock.set_ms(T2);
    let a_restores_before = restore_totals(&a);
    seg1.join().expect("segment 1 written");
    let seg2 = stream_views(producer.clone(), pv_topic.clone(), views.clone(), cut1..cut2, Duration::from_secs(6));

    // The survivor takes every partition, restores, and polls every page (round 2, at T2).
    // The group notices B's death after its session timeout: on Kafka A then owns everything;
    // tansu 0.6 only has A keep its old assignment, and pagepulse's membership watchdog makes A
    // rejoin (no help from the test).
    let deadline = Instant::now() + Duration::from_secs(60);
    while assigned(&a) != PARTITIONS {
        assert!(
            Instant::now() < deadline,
            "the survivor owns {} partitions 60 s after the kill; log:\n{}",
            assigned(&a),
            a.log_text()
        );
        std::thread::sleep(support::POLL_INTERVAL);
    }
    a.wait_ready(Duration::from_secs(60));
    let takeover = killed_at.elapsed();
    let watchdog_rejoins = a.metric("pagepulse_group_rejoins_total", r#"reason="orphaned_partitions""#);
    eprintln!(
        "A owns all {PARTITIONS} partitions {:.1} s after the kill ({watchdog_rejoins} watchdog rejoins)",
        takeover.as_secs_f64(),
    );
    latest_stats(&env, |last| all_at(last, T2));
    let settled_ms = chrono::Utc::now().timestamp_millis();
    let serves_at_settle: Vec<u32> = (1..=PAGES).map(|i| stats.serves(i)).collect();
    let polls_from = Instant::now();
    let repolled = killed_at.elapsed();
    let a_restores = restore_totals(&a);
    let restored_fans = a_restores.get("fans").copied().unwrap_or_default();
    let restored_fans_before = a_restores_before.get("fans").copied().unwrap_or_default();
    assert!(
        restored_fans.0 > restored_fans_before.0 && restored_fans.1 > restored_fans_before.1,
        "the survivor restored no fans state after the kill: {a_restores_before:?} -> {a_restores:?}"
    );

    // B's pages now live in A, with the history B held: every sample B showed, and the 24 h
    // delta still measured from the first sample (taken at T1, before the kill).
    for (i, before) in &b_pages {
        let deadline = Instant::now() + Duration::from_secs(30);
        let now = loop {
            let got = get_json(&a.addr, &format!("/api/v1/pages/{}", key(*i)));
            if let Some(v) = got.as_ref().filter(|v| v["stats"]["fans"].as_u64() == Some(fans(*i, T2))) {
                break v.clone();
            }
            assert!(
                Instant::now() < deadline,
                "A does not serve {} at T2 after 30 s: {got:?}; A's log:\n{}",
                key(*i),
                a.log_text()
            );
            std::thread::sleep(support::POLL_INTERVAL);
        };
        let rows: HashSet<String> = table_times(&now).into_iter().collect();
        for t in table_times(before) {
            assert!(rows.contains(&t), "{}: the sample of {t} B held is gone after the handover: {now}", key(*i));
        }
        let first = table_times(before).last().cloned().expect("B had a sample");
        let d24 = &now["stats"]["delta_24h"];
        assert_eq!(
            (d24["baseline_fans"].as_u64(), d24["since"].as_str(), d24["partial"].as_bool()),
            (Some(fans(*i, T1)), Some(first.as_str()), Some(true)),
            "{}: the 24 h delta must measure from the first sample, taken before the kill: {now}",
            key(*i)
        );
    }

    // Scale-out: a third instance joins mid-stream and takes partitions over.
    seg2.join().expect("segment 2 written");
    let a_before_c = restore_totals(&a);
    let mut c = env.start_with(&vars);
    let seg3 =
        stream_views(producer.clone(), pv_topic.clone(), views.clone(), cut2..views.len(), Duration::from_secs(6));
    let joined_at = Instant::now();
    wait_for("the new instance to take partitions over", Duration::from_secs(90), || {
        let (na, nc) = (assigned(&a), assigned(&c));
        (nc > 0.0 && na > 0.0 && na + nc == PARTITIONS).then_some(())
    });
    c.wait_ready(Duration::from_secs(60));
    a.wait_ready(Duration::from_secs(60));
    let scaled = joined_at.elapsed();
    clock.set_ms(T3);
    let last = latest_stats(&env, |last| all_at(last, T3));
    let c_pages = served_pages(&c);
    assert!(!c_pages.is_empty(), "the new instance serves no page");
    let c_restores = restore_totals(&c);
    assert!(
        c_restores.get("fans").is_some_and(|(n, records)| *n > 0 && *records > 0),
        "the new instance restored no fans state: {c_restores:?}"
    );

    // Nothing lost at either handover: every page's latest figures are its count at T3, with the
    // 24 h delta measured from its first sample at T1, whichever instance holds it now.
    for i in 1..=PAGES {
        let v = &last[&key(i)];
        let d24 = &v["delta_24h"];
        assert_eq!(
            (d24["baseline_fans"].as_u64(), d24["value"].as_i64(), d24["partial"].as_bool()),
            (Some(fans(i, T1)), Some(fans(i, T3) as i64 - fans(i, T1) as i64), Some(true)),
            "{}: {v}",
            key(i)
        );
    }
    // The new instance's pages kept their early samples, those taken before the kill included.
    for (i, view) in &c_pages {
        let rows: HashSet<String> = table_times(view).into_iter().collect();
        assert!(
            rows.iter().any(|t| ms(t) < settled_ms),
            "{}: the new instance lost the page's early samples: {view}",
            key(*i)
        );
        for t in b_pages.get(i).map(table_times).unwrap_or_default() {
            assert!(rows.contains(&t), "{}: the sample of {t} (held by the killed instance) is gone: {view}", key(*i));
        }
    }

    // Each page keeps being polled, and never for the same slot twice: after the first handover
    // settled, every page gets at least three more polls; two polls of a page are never closer
    // than a third of the interval (two instances polling one slot would be well under a second
    // apart; consecutive slots are an interval apart, less only by a drop in lateness); and no
    // page was served more often than once per slot elapsed since then.
    let mut seen = 0;
    let mut times: HashMap<String, Vec<i64>> = HashMap::new();
    env.read_until("fans.observations", Duration::from_secs(90), |recs| {
        for r in &recs[seen..] {
            let v: Value = serde_json::from_slice(r.value.as_deref().unwrap_or(b"null")).unwrap_or(Value::Null);
            let k = String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned();
            times.entry(k).or_default().push(ms(v["observed_at"].as_str().unwrap_or("1970-01-01T00:00:00Z")));
        }
        seen = recs.len();
        (1..=PAGES).all(|i| times.get(&key(i)).is_some_and(|t| t.iter().filter(|&&t| t >= settled_ms).count() >= 3))
    });
    let mut closest = i64::MAX;
    for i in 1..=PAGES {
        let mut t: Vec<i64> = times[&key(i)].iter().copied().filter(|&t| t >= settled_ms).collect();
        t.sort_unstable();
        for w in t.windows(2) {
            closest = closest.min(w[1] - w[0]);
            assert!(w[1] - w[0] >= INTERVAL_S * 1000 / 3, "{} polled twice within {} ms: {t:?}", key(i), w[1] - w[0]);
        }
    }
    let slots = polls_from.elapsed().as_secs() as i64 / INTERVAL_S + 2;
    for i in 1..=PAGES {
        let more = i64::from(stats.serves(i) - serves_at_settle[(i - 1) as usize]);
        assert!(more <= slots, "{} served {more} times in {slots} slots", key(i));
    }

    // Page views: every hourly window final, equal to the independent computation; repeats of
    // the identical final value are allowed (at-least-once), anything else is not.
    seg3.join().expect("segment 3 written");
    let mut got: HashMap<String, Vec<Value>> = HashMap::new();
    let mut seen = 0;
    env.read_until("pageviews.top", Duration::from_secs(90), |recs| {
        for r in &recs[seen..] {
            let k = String::from_utf8(r.key.clone().expect("key")).expect("UTF-8");
            got.entry(k).or_default().push(serde_json::from_slice(r.value.as_deref().expect("value")).expect("JSON"));
        }
        seen = recs.len();
        tops.keys().all(|k| got.contains_key(k))
    });
    let mut duplicates = 0;
    for (k, values) in &got {
        let (total, want) = tops.get(k).unwrap_or_else(|| panic!("unexpected window {k}: {values:?}"));
        for v in values {
            let have: Vec<(String, u64)> = v["articles"]
                .as_array()
                .expect("articles")
                .iter()
                .map(|a| (a["title"].as_str().expect("title").to_string(), a["views"].as_u64().expect("views")))
                .collect();
            assert_eq!((&have, v["total_views"].as_u64(), &v["final"]), (want, Some(*total), &json!(true)), "{k}: {v}");
            assert_eq!(v["late_events"], 0, "{k}: {v}");
        }
        assert!(values.windows(2).all(|w| w[0] == w[1]), "{k}: different final values {values:?}");
        duplicates += values.len() - 1;
    }
    assert!(
        c.metric("pagepulse_records_consumed_total", r#"topic="pageviews""#) > 0.0,
        "the new instance counted no page views"
    );
    let a_final = restore_totals(&a);
    eprintln!(
        "scale-out: B killed after counting {b_consumed} page views; A owned all {PARTITIONS} partitions {:.1} s later and \
         had re-polled every page {:.1} s after the kill; restores (count, changelog records) in A before the kill {a_restores_before:?}, \
         after it {a_before_c:?}, at the end {a_final:?}; C took {} partitions {:.1} s after starting, restores {c_restores:?}; \
         {} pages moved to A, {} served by C; closest two polls of a page after the handover {closest} ms; {} windows exact, \
         {duplicates} repeated final records; test took {:.0} s",
        takeover.as_secs_f64(),
        repolled.as_secs_f64(),
        assigned(&c),
        scaled.as_secs_f64(),
        b_pages.len(),
        c_pages.len(),
        tops.len(),
        test_started.elapsed().as_secs_f64()
    );
    for pp in [&mut a, &mut c] {
        pp.signal(libc::SIGTERM);
        assert!(pp.wait_exit(Duration::from_secs(15)).success(), "graceful stop; log:\n{}", pp.log_text());
    }
}
