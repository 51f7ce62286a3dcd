//! Tracked pages end to end: an independent client (Python confluent-kafka) tracks 1,000 pages
//! in the real broker's `pages` topic; pagepulse polls them from the Graph API and Mastodon
//! simulator over HTTP every 10 s and turns the counts into `fans.stats`. The simulator's clock
//! is frozen, then moved an hour on, so every page's figures are known exactly from
//! `trajectory::fans_at`, computed here independently of what pagepulse wrote.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pagepulse::clock::ManualClock;
use pagepulse::simulate::faults::SimConfig;
use pagepulse::simulate::graph_api::{self, Stats};
use pagepulse::simulate::trajectory::{fans_at, page_id};
use serde_json::{json, Value};
use support::{wait_for, TestEnv};

/// 2026-11-23T10:00:00Z: the simulator's time for the first round of polls.
const T1: i64 = 1_795_428_000_000;
/// An hour later: the second round.
const T2: i64 = T1 + 3_600_000;
const POPULATION: u64 = 1000;
/// Pages 1..=950 are Facebook pages, 951..=1000 Mastodon accounts.
const FACEBOOK: u64 = 950;
/// Tracked on Facebook but outside the simulator's population: the Graph API answers code 100.
const UNKNOWN: &str = "page-005000";

/// The simulator on its own thread and actix system, for the whole test.
fn simulator(clock: Arc<ManualClock>) -> (SocketAddr, Arc<Stats>) {
    simulator_with(SimConfig { pages: POPULATION, clock, ..SimConfig::default() })
}

fn simulator_with(cfg: SimConfig) -> (SocketAddr, Arc<Stats>) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            let server = graph_api::start(cfg, "127.0.0.1:0".parse().expect("address")).expect("simulator");
            tx.send((server.addr(), server.stats())).expect("hand over the address");
            std::future::pending::<()>().await;
        });
    });
    rx.recv_timeout(Duration::from_secs(10)).expect("the simulator started")
}

fn key(i: u64) -> String {
    if i <= FACEBOOK {
        format!("facebook:{}", page_id(i))
    } else {
        format!("mastodon:{}", page_id(i))
    }
}

/// What pagepulse must report for page `i` at simulator time `t`: Mastodon has only followers,
/// which both figures carry.
fn expected(i: u64, t: i64) -> (u64, u64) {
    let (fans, followers) = fans_at(&page_id(i), t);
    if i <= FACEBOOK {
        (fans, followers)
    } else {
        (followers, followers)
    }
}

fn record(k: &str, v: Option<Value>) -> (Option<String>, Option<Vec<u8>>) {
    (Some(k.to_string()), v.map(|v| v.to_string().into_bytes()))
}

/// The newest `fans.stats` value of every page, read from the beginning until `done` holds.
fn latest_stats(
    env: &TestEnv,
    timeout: Duration,
    mut done: impl FnMut(&HashMap<String, Value>) -> bool,
) -> HashMap<String, Value> {
    let mut last = HashMap::new();
    let mut seen = 0;
    env.read_until("fans.stats", timeout, |recs| {
        for r in &recs[seen..] {
            let k = String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned();
            last.insert(k, serde_json::from_slice(r.value.as_deref().expect("stats value")).expect("JSON"));
        }
        seen = recs.len();
        done(&last)
    });
    last
}

fn matches_time(last: &HashMap<String, Value>, t: i64) -> bool {
    (1..=POPULATION).all(|i| {
        last.get(&key(i)).is_some_and(|v| {
            let (fans, followers) = expected(i, t);
            v["fans"].as_u64() == Some(fans) && v["followers"].as_u64() == Some(followers)
        })
    })
}

#[test]
fn a_thousand_tracked_pages_are_polled_and_become_exact_rolling_stats() {
    let env = TestEnv::new();
    let clock = Arc::new(ManualClock::at_ms(T1));
    let (sim, stats) = simulator(clock.clone());
    let base = format!("http://{sim}");

    let mut records: Vec<_> = (1..=POPULATION)
        .map(|i| {
            let (platform, id) = key(i).split_once(':').map(|(p, id)| (p.to_string(), id.to_string())).expect("key");
            record(&key(i), Some(json!({"platform": platform, "page_id": id, "interval_s": 10})))
        })
        .collect();
    records.push(record(&format!("facebook:{UNKNOWN}"), Some(json!({"page_id": UNKNOWN, "interval_s": 10}))));
    // Five invalid records: each must reach the dead-letter topic, none may stop the others.
    let invalid = [
        record("facebook:fast", Some(json!({"page_id": "fast", "interval_s": 5}))),
        record("myspace:tom", Some(json!({"platform": "myspace", "page_id": "tom"}))),
        record("facebook:nobody", Some(json!({"platform": "facebook"}))),
        record("facebook:one", Some(json!({"page_id": "another"}))),
        (Some("facebook:broken".to_string()), Some(b"{not json".to_vec())),
    ];
    records.extend(invalid.iter().cloned());
    env.produce_python("pages", &records);

    let started = Instant::now();
    let mut pp = env.start_with(&[
        ("PAGEPULSE__platforms__facebook__base_url", &base),
        ("PAGEPULSE__platforms__mastodon__base_url", &base),
        ("PAGEPULSE__platforms__mastodon__rate_per_sec", "100"),
        ("PAGEPULSE_FACEBOOK_TOKEN", "e2e-secret-token"),
    ]);
    pp.wait_ready(Duration::from_secs(60));

    // Round 1: every page's counts at T1, exactly.
    let last = latest_stats(&env, Duration::from_secs(120), |last| matches_time(last, T1));
    assert!(!last.contains_key(&format!("facebook:{UNKNOWN}")), "an unknown page has no stats");
    for i in [1, 500, 951, 1000] {
        let v = &last[&key(i)];
        assert_eq!(v["delta_1h"]["partial"], true, "{v}");
    }

    // Round 2: an hour later on the simulator's clock. The newest figures are the counts at T2,
    // and with less than an hour of (wall-clock) history the 1 h and 24 h deltas are partial,
    // measured from the first sample: the count at T1.
    clock.set_ms(T2);
    let last = latest_stats(&env, Duration::from_secs(120), |last| matches_time(last, T2));
    for i in 1..=POPULATION {
        let v = &last[&key(i)];
        let (now, then) = (expected(i, T2).0 as i64, expected(i, T1).0 as i64);
        assert_eq!(v["platform"], if i <= FACEBOOK { "facebook" } else { "mastodon" }, "{v}");
        assert_eq!(v["page_id"], page_id(i), "{v}");
        assert_eq!(
            (v["delta_1h"]["value"].as_i64(), v["delta_1h"]["partial"].as_bool()),
            (Some(now - then), Some(true)),
            "page {i}: {v}"
        );
        assert_eq!(v["delta_24h"]["value"].as_i64(), Some(now - then), "page {i}: {v}");
        let pct = v["growth_24h_pct"].as_f64().expect("growth");
        assert!((pct - (now - then) as f64 / then as f64 * 100.0).abs() < 1e-9, "page {i}: {v}");
    }

    // No page was polled more often than every 10 s: at most one poll per elapsed 10 s slot
    // (plus the first, which may come right away).
    let slots = started.elapsed().as_secs() / 10 + 2;
    let most = (1..=POPULATION).map(|i| stats.serves(i)).max().expect("pages");
    assert!(u64::from(most) <= slots, "a page was served {most} times in {slots} slots");

    // Metrics: tracked pages per platform, the failing page, polls and schedule delays.
    assert_eq!(pp.metric("pagepulse_pages_tracked", r#"platform="facebook""#), (FACEBOOK + 1) as f64);
    assert_eq!(pp.metric("pagepulse_pages_tracked", r#"platform="mastodon""#), (POPULATION - FACEBOOK) as f64);
    assert_eq!(pp.metric("pagepulse_pages_failing", r#"platform="facebook""#), 1.0);
    assert!(pp.metric("pagepulse_polls_total", r#"outcome="page_error",platform="facebook""#) >= 2.0);
    assert!(pp.metric("pagepulse_polls_total", r#"outcome="ok",platform="mastodon""#) >= 100.0);
    let delays = pp.metric("pagepulse_schedule_delay_seconds_count", r#"platform="facebook""#);
    let late = delays - pp.metric("pagepulse_schedule_delay_seconds_bucket", r#"platform="facebook",le="1""#);
    assert!(delays >= 2.0 * FACEBOOK as f64, "{delays} polls");
    assert!(late <= delays / 100.0, "{late} of {delays} polls were more than 1 s late");
    let metrics = pp.metrics();
    assert!(!metrics.contains("e2e-secret-token") && !pp.log_text().contains("e2e-secret-token"), "the token leaked");

    // Every invalid record is dead-lettered with the reason, naming the field.
    let dead = env.read_until("deadletter", Duration::from_secs(30), |recs| recs.len() >= invalid.len());
    let reasons: Vec<(String, String)> = dead
        .iter()
        .map(|r| {
            (
                String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned(),
                r.headers["pagepulse.reason"].clone(),
            )
        })
        .collect();
    assert_eq!(dead.len(), invalid.len(), "{reasons:?}");
    for (k, reason) in [
        ("facebook:fast", "invalid_value"),
        ("myspace:tom", "invalid_value"),
        ("facebook:nobody", "missing_field"),
        ("facebook:one", "invalid_value"),
        ("facebook:broken", "invalid_json"),
    ] {
        assert!(reasons.contains(&(k.to_string(), reason.to_string())), "{k} {reason} in {reasons:?}");
    }
    assert!(dead.iter().all(|r| r.headers["pagepulse.topic"] == env.topic("pages")));

    // A tombstone and `tracked: false` stop polling at once.
    env.produce_python("pages", &[record(&key(1), None), record(&key(951), Some(json!({"tracked": false})))]);
    wait_for("untracked pages leave the schedule", Duration::from_secs(30), || {
        (pp.metric("pagepulse_pages_tracked", r#"platform="facebook""#) == FACEBOOK as f64
            && pp.metric("pagepulse_pages_tracked", r#"platform="mastodon""#) == (POPULATION - FACEBOOK - 1) as f64)
            .then_some(())
    });
    let (stopped_fb, stopped_md, other) = (stats.serves(1), stats.serves(951), stats.serves(2));
    wait_for("two more rounds of polls", Duration::from_secs(60), || (stats.serves(2) >= other + 2).then_some(()));
    // One request may have been queued just before the tombstone; a tracked page got two more.
    assert!(stats.serves(1) <= stopped_fb + 1 && stats.serves(951) <= stopped_md + 1, "untracked pages were polled");

    pp.signal(libc::SIGTERM);
    assert!(pp.wait_exit(Duration::from_secs(15)).success());
}

/// The same through a platform that fails a third of its requests (HTTP 500, malformed bodies,
/// slow replies past the client's timeout): retries with backoff still deliver every page's
/// exact count, and the failures show in the metrics.
#[test]
fn pages_reach_exact_stats_through_server_errors_malformed_and_slow_replies() {
    let env = TestEnv::new();
    let clock = Arc::new(ManualClock::at_ms(T1));
    let (sim, _) = simulator_with(SimConfig {
        pages: 200,
        clock,
        error_rate: 0.15,
        malformed_rate: 0.15,
        slow_ms: 3000,
        slow_rate: 0.05,
        seed: 42,
        ..SimConfig::default()
    });
    let base = format!("http://{sim}");
    let records: Vec<_> = (1..=200u64)
        .map(|i| record(&format!("facebook:{}", page_id(i)), Some(json!({"page_id": page_id(i), "interval_s": 10}))))
        .collect();
    env.produce_python("pages", &records);
    let mut pp = env.start_with(&[
        ("PAGEPULSE__platforms__facebook__base_url", &base),
        ("PAGEPULSE__platforms__facebook__timeout", "\"1s\""),
        ("PAGEPULSE__platforms__facebook__retry_base", "\"100ms\""),
        ("PAGEPULSE__platforms__facebook__retries", "5"),
        ("PAGEPULSE_FACEBOOK_TOKEN", "e2e-secret-token"),
    ]);
    pp.wait_ready(Duration::from_secs(60));
    latest_stats(&env, Duration::from_secs(120), |last| {
        (1..=200u64).all(|i| {
            last.get(&format!("facebook:{}", page_id(i)))
                .is_some_and(|v| v["fans"].as_u64() == Some(fans_at(&page_id(i), T1).0))
        })
    });
    let requests = |outcome: &str| {
        pp.metric("pagepulse_poll_requests_total", &format!(r#"outcome="{outcome}",platform="facebook""#))
    };
    wait_for("every fault kind seen", Duration::from_secs(60), || {
        (requests("transient") >= 1.0 && requests("malformed") >= 1.0).then_some(())
    });
    assert!(requests("ok") >= 4.0);
    assert!(!pp.log_text().contains("e2e-secret-token"), "the token leaked into the log");
    pp.signal(libc::SIGTERM);
    assert!(pp.wait_exit(Duration::from_secs(15)).success());
}
