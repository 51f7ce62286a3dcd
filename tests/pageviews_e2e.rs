//! Page views end to end: the test writes a three-hour, four-domain Wikimedia-style dump (one hour
//! gzipped) and a blacklist, loads them with `pagepulse ingest` into the real broker, and compares
//! every `pageviews.top` record, and the last `pageviews.trending` view of each domain, with
//! counts and rankings computed here from the lines it wrote.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use support::{wait_for, TestEnv};

const H0: i64 = 1_795_424_400_000; // 2026-11-23T09:00:00Z
const HOUR: i64 = 3_600_000;
const DOMAINS: [&str; 4] = ["en", "de", "fr.m", "ja"];
const HOURS: i64 = 3;
const TOP_N: usize = 25;

/// The Wikimedia name of hour `hour`'s dump: the time in it is the end of the hour.
fn file_name(hour: i64) -> String {
    let t = chrono::DateTime::from_timestamp_millis(H0 + (hour + 1) * HOUR).expect("time");
    format!("pageviews-{}0000", t.format("%Y%m%d-%H"))
}

fn title(rng: &mut StdRng, i: usize) -> String {
    match i % 5 {
        0 => format!("Title_{i}"),
        1 => format!("Zürich_{i}"),
        2 => format!("東京_{i}"),
        3 => format!("\"Quoted\"/{i}"),
        _ => format!("Special:Random{}", rng.gen_range(0..3)),
    }
}

/// Writes the dump files and returns the lines written: (hour, domain, title, views).
fn write_dump(dir: &Path) -> Vec<(i64, String, String, u64)> {
    let mut rng = StdRng::seed_from_u64(23);
    let mut lines = Vec::new();
    for h in 0..HOURS {
        let mut text = String::new();
        for d in DOMAINS {
            for i in 0..rng.gen_range(300..600) {
                let t = title(&mut rng, i);
                // A few dozen popular titles with coarse counts (ties at the top-25 boundary),
                // then a long tail.
                let views = if i < 40 { rng.gen_range(1..20) * 100 } else { rng.gen_range(1..4) };
                text.push_str(&format!("{d} {t} {views} 0\n"));
                lines.push((h, d.to_string(), t, views));
            }
        }
        let path = dir.join(file_name(h));
        if h == 1 {
            let f = std::fs::File::create(path.with_extension("gz")).expect("create");
            let mut gz = flate2::write::GzEncoder::new(f, flate2::Compression::default());
            gz.write_all(text.as_bytes()).expect("write gz");
            gz.finish().expect("finish gz");
        } else {
            std::fs::write(&path, text).expect("write dump");
        }
    }
    lines
}

fn ranked(counts: &HashMap<String, u64>, excluded: &[(String, String)], domain: &str) -> Vec<(String, u64)> {
    let mut all: Vec<(&String, &u64)> =
        counts.iter().filter(|(t, _)| !excluded.iter().any(|(d, x)| d == domain && x == *t)).collect();
    all.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.as_bytes().cmp(b.0.as_bytes())));
    all.into_iter().take(TOP_N).map(|(t, n)| (t.clone(), *n)).collect()
}

fn run_ok(env: &TestEnv, args: &[&str]) -> String {
    let out = env.cli(args).output().expect("run pagepulse");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "pagepulse {args:?} failed: {err}");
    err
}

#[test]
fn ingested_dumps_become_exact_hourly_top_articles_minus_the_blacklist() {
    let env = TestEnv::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let lines = write_dump(dir.path());

    let mut pp = env.start_with(&[("PAGEPULSE__pipelines__pageviews__idle_timeout", "\"3s\"")]);
    pp.wait_ready(Duration::from_secs(60));

    // The blacklist first: the hottest title of each domain in hour 0, plus one pair that is
    // then removed again (a tombstone).
    let mut hot: BTreeMap<&str, (&str, u64)> = BTreeMap::new();
    for (h, d, t, v) in &lines {
        if *h == 0 && hot.get(d.as_str()).is_none_or(|(_, best)| v > best) {
            hot.insert(d, (t, *v));
        }
    }
    let mut blacklist: Vec<(String, String)> = hot.iter().map(|(d, (t, _))| (d.to_string(), t.to_string())).collect();
    let removed = blacklist.pop().expect("a pair to remove");
    let bl_file = dir.path().join("blacklist.txt");
    let mut text: String = blacklist.iter().map(|(d, t)| format!("{d} {t}\n")).collect();
    text.push_str(&format!("# comment\n{} {}\n", removed.0, removed.1));
    std::fs::write(&bl_file, text).expect("blacklist");
    run_ok(&env, &["ingest", "blacklist", bl_file.to_str().expect("path")]);
    let rm_file = dir.path().join("remove.txt");
    std::fs::write(&rm_file, format!("{} {}\n", removed.0, removed.1)).expect("remove list");
    run_ok(&env, &["ingest", "blacklist", "--remove", rm_file.to_str().expect("path")]);
    let bl_records = (blacklist.len() + 2) as f64;
    wait_for("the blacklist applied", Duration::from_secs(30), || {
        (pp.metric("pagepulse_records_consumed_total", r#"topic="pageviews.blacklist""#) >= bl_records).then_some(())
    });

    let mut files: Vec<String> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").path().to_string_lossy().into_owned())
        .filter(|p| p.contains("pageviews-"))
        .collect();
    files.sort();
    let mut args = vec!["ingest", "pageviews", "--quiet"];
    args.extend(files.iter().map(String::as_str));
    run_ok(&env, &args);

    // Independent computation.
    let mut expected: BTreeMap<String, (i64, String, HashMap<String, u64>)> = BTreeMap::new();
    for (h, d, t, v) in &lines {
        let key =
            format!("{d}|{}", chrono::DateTime::from_timestamp_millis(H0 + h * HOUR).expect("t").format("%Y-%m-%dT%H"));
        *expected.entry(key).or_insert_with(|| (*h, d.clone(), HashMap::new())).2.entry(t.clone()).or_default() += v;
    }
    let windows = expected.len();
    assert_eq!(windows, DOMAINS.len() * HOURS as usize);

    let recs = env.read_until("pageviews.top", Duration::from_secs(120), |recs| recs.len() >= windows);
    // Exactly one final record per window, and nothing else (no provisional records by default).
    let mut got: HashMap<String, Value> = HashMap::new();
    for r in &recs {
        let key = String::from_utf8(r.key.clone().expect("key")).expect("utf8");
        let v: Value = serde_json::from_slice(r.value.as_deref().expect("value")).expect("JSON");
        assert_eq!(v["final"], true, "{key}: {v}");
        assert!(got.insert(key.clone(), v).is_none(), "two records for {key}");
    }
    assert_eq!(got.len(), windows);
    for (key, (h, domain, counts)) in &expected {
        let v = &got[key];
        let want = ranked(counts, &blacklist, domain);
        let have: Vec<(String, u64)> = v["articles"]
            .as_array()
            .expect("articles")
            .iter()
            .map(|a| (a["title"].as_str().expect("title").to_string(), a["views"].as_u64().expect("views")))
            .collect();
        assert_eq!(have, want, "{key}");
        let ranks: Vec<u64> =
            v["articles"].as_array().expect("a").iter().map(|a| a["rank"].as_u64().expect("r")).collect();
        assert_eq!(ranks, (1..=want.len() as u64).collect::<Vec<_>>());
        assert_eq!(v["total_views"].as_u64(), Some(counts.values().sum::<u64>()), "{key}");
        assert_eq!(v["late_events"].as_u64(), Some(0));
        assert_eq!(v["domain"], domain.as_str());
        let start = chrono::DateTime::parse_from_rfc3339(v["hour_start"].as_str().expect("hour")).expect("t");
        assert_eq!(start.timestamp_millis(), H0 + h * HOUR);
        if *h == 0 {
            // The removed pair is ranked again; the blacklisted ones are not.
            if domain == &removed.0 {
                assert!(have.iter().any(|(t, _)| t == &removed.1), "{key}: the un-blacklisted title is ranked again");
            }
            assert!(!have.iter().any(|(t, _)| blacklist.contains(&(domain.clone(), t.clone()))), "{key}");
        }
    }

    // Trending now: per domain, the last hour of event time holds only the last dump's hour. The
    // newest record of every domain must come to equal that hour's ranking.
    let last_hour = |d: &str| {
        let t = chrono::DateTime::from_timestamp_millis(H0 + (HOURS - 1) * HOUR).expect("t");
        ranked(&expected[&format!("{d}|{}", t.format("%Y-%m-%dT%H"))].2, &blacklist, d)
    };
    let mut last: HashMap<String, Value> = HashMap::new();
    let mut seen = 0;
    env.read_until("pageviews.trending", Duration::from_secs(60), |recs| {
        for r in &recs[seen..] {
            let v: Value = serde_json::from_slice(r.value.as_deref().expect("value")).expect("JSON");
            last.insert(v["domain"].as_str().expect("domain").to_string(), v);
        }
        seen = recs.len();
        DOMAINS.iter().all(|d| {
            last.get(*d).is_some_and(|v| {
                let have: Vec<(String, u64)> = v["articles"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|a| (a["title"].as_str().unwrap_or("").to_string(), a["views"].as_u64().unwrap_or(0)))
                            .collect()
                    })
                    .unwrap_or_default();
                have == last_hour(d)
            })
        })
    });
    for d in DOMAINS {
        let end = chrono::DateTime::parse_from_rfc3339(last[d]["window_end"].as_str().expect("end")).expect("t");
        assert_eq!(
            end.timestamp_millis(),
            H0 + (HOURS - 1) * HOUR + 60_000,
            "{d}: the window ends with the newest minute"
        );
    }
    pp.signal(libc::SIGTERM);
    assert!(pp.wait_exit(Duration::from_secs(15)).success());
}
