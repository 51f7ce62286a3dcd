//! Rolling fan counts through a real broker: an independent client (Python confluent-kafka)
//! produces observations of 60 pages, shuffled and with duplicates, as an external scraper would;
//! the last `fans.stats` record of every page must equal figures computed independently here, and
//! `fans.top` must rank the pages as computed here. The running process serves the same state
//! over HTTP (`/pages/...`): each page's figures equal its last `fans.stats` record, its chart and
//! rows are the samples produced, and `/pages/top` is the last `fans.top` record.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use support::{http_get, wait_for, TestEnv};

const PAGES: i64 = 60;
const H: i64 = 3_600_000;

/// Page `p`'s fans at sample `k` (samples 5 h apart): most pages grow, every fourth declines.
fn fans(p: i64, k: i64) -> i64 {
    let base = 1000 * (p + 1);
    if p % 4 == 3 {
        base - k * (p + 1)
    } else {
        base + k * p * 7
    }
}

fn rfc(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).expect("valid").to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// `GET path` as (status, JSON body); `None` while nothing answers or the body is not JSON.
fn get_json(addr: &str, path: &str) -> Option<(u16, serde_json::Value)> {
    let (status, body) = http_get(addr, path)?;
    Some((status, serde_json::from_str(&body).ok()?))
}

#[test]
fn observations_become_exact_rolling_stats_and_rankings() {
    let env = TestEnv::new();
    let now = chrono::Utc::now().timestamp_millis();
    let t0 = now - now % H - 30 * H;
    // Six samples per page at 0, 5, ..., 25 h: the newest is at 25 h, so the 1 h baseline is the
    // 20 h sample, the 24 h baseline the 0 h sample, and 7 d is partial (baseline: the oldest).
    let mut records = Vec::new();
    for p in 0..PAGES {
        for k in 0..6 {
            let v = serde_json::json!({"platform": "facebook", "page_id": format!("page-{p:03}"),
                "fans": fans(p, k), "followers": fans(p, k) + 10, "observed_at": rfc(t0 + k * 5 * H)});
            let rec = (Some(format!("facebook:page-{p:03}")), Some(v.to_string().into_bytes()));
            if k % 2 == 0 {
                records.push(rec.clone()); // duplicates must change nothing
            }
            records.push(rec);
        }
    }
    // One more page, whose id needs percent-encoding in a URL. A single sample: its 0% growth and
    // +0 delta rank below the top 25 of the 60 pages above.
    let ana = serde_json::json!({"platform": "mastodon", "page_id": "@ana@example.social", "fans": 42,
        "followers": null, "observed_at": rfc(t0 + 25 * H)});
    records.push((Some("mastodon:@ana@example.social".into()), Some(ana.to_string().into_bytes())));
    records.shuffle(&mut rand::rngs::StdRng::seed_from_u64(7));
    env.produce_python("fans.observations", &records);

    let mut pp = env.start();
    pp.wait_ready(Duration::from_secs(60));
    let expect = |p: i64| {
        let (now, h1, h24) = (fans(p, 5), fans(p, 4), fans(p, 0));
        (now, now - h1, now - h24, (now - h24) as f64 / h24 as f64 * 100.0)
    };
    // The last record per page reflects every observation (the state does not depend on order).
    let mut last: HashMap<String, serde_json::Value> = HashMap::new();
    let mut seen = 0;
    env.read_until("fans.stats", Duration::from_secs(90), |recs| {
        for r in &recs[seen..] {
            let key = String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned();
            last.insert(key, serde_json::from_slice(r.value.as_deref().expect("value")).expect("JSON"));
        }
        seen = recs.len();
        (0..PAGES).all(|p| {
            last.get(&format!("facebook:page-{p:03}")).is_some_and(|v| v["fans"].as_i64() == Some(expect(p).0))
        })
    });
    for p in 0..PAGES {
        let v = &last[&format!("facebook:page-{p:03}")];
        let (now, d1, d24, pct) = expect(p);
        assert_eq!(v["fans"].as_i64(), Some(now), "page {p}: {v}");
        assert_eq!(v["followers"].as_i64(), Some(now + 10));
        assert_eq!(v["observed_at"], rfc(t0 + 25 * H));
        assert_eq!(
            (v["delta_1h"]["value"].as_i64(), v["delta_1h"]["partial"].as_bool()),
            (Some(d1), Some(false)),
            "page {p}"
        );
        assert_eq!(v["delta_1h"]["since"], rfc(t0 + 20 * H));
        assert_eq!(
            (v["delta_24h"]["value"].as_i64(), v["delta_24h"]["partial"].as_bool()),
            (Some(d24), Some(false)),
            "page {p}"
        );
        assert_eq!(
            (v["delta_7d"]["value"].as_i64(), v["delta_7d"]["partial"].as_bool()),
            (Some(d24), Some(true)),
            "page {p}"
        );
        let got = v["growth_24h_pct"].as_f64().expect("growth");
        assert!((got - pct).abs() < 1e-9, "page {p}: growth {got} vs {pct}");
    }

    // The live state over HTTP: each page's figures are its last fans.stats value, its chart and
    // rows are the samples produced (6 samples 5 h apart: one 10-minute point each, all in the
    // table, whose rows carry the followers too).
    for p in [0, 5] {
        let key = format!("facebook:page-{p:03}");
        let v =
            wait_for(&format!("GET /pages/{key} to equal its last fans.stats record"), Duration::from_secs(30), || {
                match get_json(&pp.addr, &format!("/api/v1/pages/{key}")) {
                    Some((200, v)) if v["stats"] == last[&key] => Some(v),
                    _ => None,
                }
            });
        assert_eq!((&v["platform"], &v["page_id"]), (&"facebook".into(), &format!("page-{p:03}").into()));
        let want_series: Vec<serde_json::Value> = (0..6)
            .map(|k| serde_json::json!({"at": rfc(t0 + k * 5 * H), "fans": fans(p, k), "followers": fans(p, k) + 10}))
            .collect();
        assert_eq!(v["series"], serde_json::Value::from(want_series), "{key}");
        let want_table: Vec<serde_json::Value> = (0..6)
            .rev()
            .map(|k| {
                serde_json::json!({"observed_at": rfc(t0 + k * 5 * H), "fans": fans(p, k), "followers": fans(p, k) + 10})
            })
            .collect();
        assert_eq!(v["table"], serde_json::Value::from(want_table), "{key}");
    }
    // Several pages compared, figures only; a page nobody observed is named as missing.
    let (status, cmp) = get_json(
        &pp.addr,
        "/api/v1/pages?keys=facebook:page-001,facebook:page-059,facebook:page-999,facebook:page-002&series=false",
    )
    .expect("JSON answer");
    assert_eq!(status, 200, "{cmp}");
    let ids: Vec<&str> = cmp["pages"].as_array().expect("pages").iter().filter_map(|v| v["page_id"].as_str()).collect();
    assert_eq!(ids, ["page-001", "page-059", "page-002"]);
    for v in cmp["pages"].as_array().expect("pages") {
        let key = format!("facebook:{}", v["page_id"].as_str().unwrap_or_default());
        assert_eq!(v["stats"], last[&key], "{key}");
        assert!(v.get("series").is_none() && v.get("table").is_none(), "series=false: {v}");
    }
    assert_eq!(cmp["missing"], serde_json::json!(["facebook:page-999"]));
    let (status, err) = get_json(&pp.addr, "/api/v1/pages/facebook:page-999").expect("JSON answer");
    assert_eq!((status, &err["status"], &err["field"]), (404, &404.into(), &"key".into()), "{err}");
    assert!(
        err["detail"].as_str().is_some_and(|d| d.contains("facebook:page-999")),
        "the problem names the page: {err}"
    );
    let (status, v) = wait_for("the mastodon page over HTTP", Duration::from_secs(30), || {
        get_json(&pp.addr, "/api/v1/pages/mastodon:%40ana%40example.social").filter(|(s, _)| *s == 200)
    });
    assert_eq!((status, &v["page_id"], &v["stats"]["fans"]), (200, &"@ana@example.social".into(), &42.into()));
    assert_eq!(v["table"], serde_json::json!([{"observed_at": rfc(t0 + 25 * H), "fans": 42, "followers": null}]));

    // Rankings: top 25 by delta and by growth, ties by page key.
    let mut by_delta: Vec<(i64, String)> = (0..PAGES).map(|p| (expect(p).2, format!("page-{p:03}"))).collect();
    by_delta.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let want_delta: Vec<String> = by_delta.iter().take(25).map(|(_, n)| n.clone()).collect();
    let mut by_growth: Vec<(f64, String)> = (0..PAGES).map(|p| (expect(p).3, format!("page-{p:03}"))).collect();
    by_growth.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let want_growth: Vec<String> = by_growth.iter().take(25).map(|(_, n)| n.clone()).collect();
    let names = |v: &serde_json::Value, k: &str| -> Vec<String> {
        v[k].as_array()
            .map(|a| a.iter().map(|e| e["page_id"].as_str().unwrap_or("").to_string()).collect())
            .unwrap_or_default()
    };
    let tops = env.read_until("fans.top", Duration::from_secs(60), |recs| {
        recs.last()
            .and_then(|r| serde_json::from_slice::<serde_json::Value>(r.value.as_deref()?).ok())
            .is_some_and(|v| names(&v, "by_delta_24h") == want_delta && names(&v, "by_growth_24h_pct") == want_growth)
    });
    let top: serde_json::Value =
        serde_json::from_slice(tops.last().and_then(|r| r.value.as_deref()).expect("value")).expect("JSON");
    assert_eq!(top["by_delta_24h"][0]["rank"], 1);
    assert_eq!(top["by_delta_24h"][0]["partial"], false);
    assert_eq!(tops.last().and_then(|r| r.key.as_deref()), Some(&b"top"[..]));
    // The same ranking over HTTP: the value of the last fans.top record.
    wait_for("GET /pages/top to equal the last fans.top record", Duration::from_secs(30), || {
        get_json(&pp.addr, "/api/v1/pages/top").filter(|(s, v)| *s == 200 && *v == top)
    });
    assert_eq!(pp.metric("pagepulse_records_consumed_total", "topic=\"fans.observations\""), records.len() as f64);
    pp.signal(libc::SIGTERM);
    assert!(pp.wait_exit(Duration::from_secs(10)).success());
}

/// A day of 10-minute history restored through the broker: `demo fans-changelog` writes the fans
/// changelog of 300 pages x 25 h (the simulator's fan counts at each page's poll phase), a fresh
/// instance restores it from Kafka, and every page's figures equal a brute-force computation over
/// the samples here; then a new observation is processed on top of the restored history.
#[test]
fn a_day_of_history_restores_from_the_changelog_and_processing_resumes() {
    use pagepulse::poll::scheduler::phase_ms;
    use pagepulse::simulate::trajectory::{fans_at, page_id};
    const PAGES: u64 = 300;
    const SLOT: i64 = 600_000;
    let env = TestEnv::new();
    let now = chrono::Utc::now().timestamp_millis();
    let end = now - now % H;
    env.run(&[
        "demo",
        "fans-changelog",
        "--pages",
        &PAGES.to_string(),
        "--hours",
        "25",
        "--jitter-ms",
        "0",
        "--end",
        &rfc(end),
    ]);
    // The samples `demo fans-changelog` promises: 150 slots ending before `end`, each page at
    // slot + its poll phase.
    let slots: i64 = 25 * 6;
    let first_slot = (end - SLOT).div_euclid(SLOT) * SLOT - (slots - 1) * SLOT;
    let samples = |i: u64| -> Vec<(i64, u64)> {
        let key = format!("facebook:{}", page_id(i));
        let phase = phase_ms(&key, SLOT);
        (0..slots).map(|k| first_slot + k * SLOT + phase).map(|at| (at, fans_at(&page_id(i), at).0)).collect()
    };
    // Brute force: the newest sample minus the latest one at or before newest - h.
    let delta = |s: &[(i64, u64)], h: i64| -> (i64, bool) {
        let (n_at, n_fans) = *s.last().expect("samples");
        match s.iter().rev().find(|(at, _)| *at <= n_at - h) {
            Some((_, f)) => (n_fans as i64 - *f as i64, false),
            None => (n_fans as i64 - s[0].1 as i64, true),
        }
    };
    let mut pp = env.start();
    pp.wait_ready(Duration::from_secs(60));
    assert!(pp.metric("pagepulse_state_restored_records_total", "store=\"fans\"") >= PAGES as f64);
    for i in [1, 2, 77, 150, 299, 300] {
        let key = format!("facebook:{}", page_id(i));
        let s = samples(i);
        let (status, v) = get_json(&pp.addr, &format!("/api/v1/pages/{key}?series=false")).expect("JSON answer");
        assert_eq!(status, 200, "{key}: {v}");
        let st = &v["stats"];
        assert_eq!(st["fans"].as_u64(), Some(s.last().expect("samples").1), "{key}: {st}");
        assert_eq!(st["observed_at"], rfc(s.last().expect("samples").0));
        for (name, h) in [("delta_1h", H), ("delta_24h", 24 * H), ("delta_7d", 168 * H)] {
            let (value, partial) = delta(&s, h);
            assert_eq!(
                (st[name]["value"].as_i64(), st[name]["partial"].as_bool()),
                (Some(value), Some(partial)),
                "{key} {name}: {st}"
            );
        }
    }
    // Processing resumes on the restored history: one more sample of page 77, ten minutes on.
    let key = format!("facebook:{}", page_id(77));
    let mut s = samples(77);
    let at = s.last().expect("samples").0 + SLOT;
    let fans = s.last().expect("samples").1 + 1234;
    s.push((at, fans));
    let v = serde_json::json!({"platform": "facebook", "page_id": page_id(77), "fans": fans, "observed_at": rfc(at)});
    env.produce_python("fans.observations", &[(Some(key.clone()), Some(v.to_string().into_bytes()))]);
    let st =
        wait_for("the new observation on top of the restored history", Duration::from_secs(60), || {
            match get_json(&pp.addr, &format!("/api/v1/pages/{key}?series=false")) {
                Some((200, v)) if v["stats"]["fans"].as_u64() == Some(fans) => Some(v["stats"].clone()),
                _ => None,
            }
        });
    for (name, h) in [("delta_1h", H), ("delta_24h", 24 * H)] {
        let (value, partial) = delta(&s, h);
        assert_eq!(
            (st[name]["value"].as_i64(), st[name]["partial"].as_bool()),
            (Some(value), Some(partial)),
            "{name}: {st}"
        );
    }
    pp.signal(libc::SIGTERM);
    assert!(pp.wait_exit(Duration::from_secs(10)).success());
}
