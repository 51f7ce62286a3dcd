//! The HTTP API's reads of results through the real broker (issue 13): a post's analysis, an
//! hour's top articles of a domain (provisional, then final; JSON and CSV), a domain's trending
//! view, and a page's chart over a range and its paginated table, each compared with a count the
//! test makes itself from the records it produced with an independent client (Python).

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use support::{http, Answer, Pagepulse, TestEnv};

const READ: &str = "read-token-0123456789abcdef";
const WRITE: &str = "write-token-0123456789abcdef";

fn start(env: &TestEnv, extra: &[(&str, &str)]) -> Pagepulse {
    let mut vars = vec![
        ("PAGEPULSE_WRITE_TOKEN", WRITE),
        ("PAGEPULSE_READ_TOKEN", READ),
        ("PAGEPULSE__http__public_reads", "false"),
        ("PAGEPULSE__pipelines__pages__enabled", "false"),
    ];
    vars.extend_from_slice(extra);
    let mut pp = env.start_with(&vars);
    pp.wait_ready(Duration::from_secs(60));
    pp
}

fn get(pp: &Pagepulse, path: &str) -> Answer {
    let auth = format!("Bearer {READ}");
    http(&pp.addr, "GET", path, &[("Authorization", &auth)], b"").expect("an HTTP answer")
}

/// Waits (with a deadline) for `path` to answer 200 with a body `ok` accepts.
fn wait_get(pp: &Pagepulse, path: &str, what: &str, mut ok: impl FnMut(&Answer) -> bool) -> Answer {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let a = get(pp, path);
        if a.status == 200 && ok(&a) {
            return a;
        }
        assert!(Instant::now() < deadline, "{what}: last answer {} {}", a.status, String::from_utf8_lossy(&a.body));
        std::thread::sleep(support::POLL_INTERVAL);
    }
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).expect("time").to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[test]
fn a_posts_analysis_is_read_back_by_id_and_an_unknown_id_is_named() {
    let env = TestEnv::new();
    let pp = start(&env, &[]);
    // Plain lower-case words: any word rule counts them the same way.
    let texts = ["alpha beta gamma", "one two three four five", "streams"];
    let records: Vec<_> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let v = serde_json::json!({"id": format!("an-{i}"), "content": t}).to_string().into_bytes();
            (Some(format!("an-{i}")), Some(v))
        })
        .collect();
    env.produce_python("posts", &records);
    for (i, t) in texts.iter().enumerate() {
        let a = wait_get(&pp, &format!("/api/v1/posts/an-{i}/analysis"), "the analysis", |_| true);
        let v = a.json();
        let words: Vec<&str> = t.split(' ').collect();
        assert_eq!(v["id"], format!("an-{i}"));
        assert_eq!(v["word_count"].as_u64(), Some(words.len() as u64), "{v}");
        let avg = words.iter().map(|w| w.len()).sum::<usize>() as f64 / words.len() as f64;
        assert!((v["avg_word_length"].as_f64().unwrap() - avg).abs() < 0.01, "{v} vs {avg}");
        assert!(a.header("etag").is_some());
    }
    let missing = get(&pp, "/api/v1/posts/never-posted/analysis");
    assert_eq!(missing.status, 404, "{:?}", missing.json());
    assert_eq!(missing.header("content-type"), Some("application/problem+json"));
    assert!(missing.json()["detail"].as_str().unwrap().contains("never-posted"), "{}", missing.json());
    assert_eq!(missing.json()["field"], "id");
}

#[test]
fn an_hours_top_articles_are_provisional_then_final_in_json_and_csv() {
    let env = TestEnv::new();
    let pp = start(
        &env,
        &[
            ("PAGEPULSE__pipelines__fans__enabled", "false"),
            ("PAGEPULSE__pipelines__pageviews__provisional_interval", "\"1s\""),
            ("PAGEPULSE__pipelines__pageviews__idle_timeout", "\"3s\""),
            ("PAGEPULSE__pipelines__pageviews__top_n", "5"),
        ],
    );
    // Hour H of domain "xx": 8 titles with known views, one at a time (views = 1 each record).
    let h0 = chrono::DateTime::parse_from_rfc3339("2026-01-01T10:00:00Z").unwrap().timestamp_millis();
    let mut views: HashMap<String, u64> = HashMap::new();
    let mut records = Vec::new();
    for (t, n) in [("A", 9u64), ("B", 7), ("C", 7), ("D", 5), ("E", 4), ("F", 3), ("G,with comma", 8), ("H", 1)] {
        for k in 0..n {
            let ts = h0 + (k as i64) * 60_000 + 1;
            let v = serde_json::json!({"domain": "xx", "title": t, "ts": rfc3339(ts)});
            records.push((Some("xx".to_string()), Some(v.to_string().into_bytes())));
        }
        views.insert(t.to_string(), n);
    }
    env.produce_python("pageviews", &records);
    // The independent ranking: views descending, then title ascending; top 5.
    let mut want: Vec<(String, u64)> = views.into_iter().collect();
    want.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    want.truncate(5);

    let path = "/api/v1/pageviews/top/xx/2026-01-01T10";
    let ranked = |a: &Answer| -> Vec<(String, u64)> {
        a.json()["articles"]
            .as_array()
            .map(|v| {
                v.iter().map(|x| (x["title"].as_str().unwrap().to_string(), x["views"].as_u64().unwrap())).collect()
            })
            .unwrap_or_default()
    };
    // Final once the partition is idle; before that, provisional records may be read.
    let fin = wait_get(&pp, path, "the final hour", |a| a.json()["final"] == true);
    assert_eq!(ranked(&fin), want);
    assert_eq!(fin.json()["total_views"].as_u64(), Some(9 + 7 + 7 + 5 + 4 + 3 + 8 + 1));
    assert!(fin.header("cache-control").unwrap().contains("immutable"), "a final hour never changes");
    // CSV, parsed with a CSV reader: the same rows, the comma-bearing title quoted.
    let auth = format!("Bearer {READ}");
    let csv = http(&pp.addr, "GET", path, &[("Authorization", &auth), ("Accept", "text/csv")], b"").expect("answer");
    assert_eq!(csv.status, 200);
    assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
    let mut rdr = csv::Reader::from_reader(&csv.body[..]);
    assert_eq!(
        rdr.headers().unwrap().iter().collect::<Vec<_>>(),
        ["domain", "hour_start", "final", "rank", "title", "views"]
    );
    let rows: Vec<(String, u64)> =
        rdr.records().map(|r| r.unwrap()).map(|r| (r[4].to_string(), r[5].parse().unwrap())).collect();
    assert_eq!(rows, want);
    assert_eq!(get(&pp, &format!("{path}?format=csv")).body, csv.body);

    // The trending view of the domain holds the same articles (all within its 60 minutes).
    let tr = wait_get(&pp, "/api/v1/pageviews/trending/xx", "trending", |a| !ranked(a).is_empty());
    assert_eq!(ranked(&tr).first().map(|a| a.0.clone()), Some("A".to_string()));

    // Refusals: a malformed hour is a 400 naming it; an hour with no views a 404.
    let bad = get(&pp, "/api/v1/pageviews/top/xx/2026-01-01");
    assert_eq!((bad.status, bad.json()["field"].as_str()), (400, Some("hour")));
    let none = get(&pp, "/api/v1/pageviews/top/xx/2026-01-01T11");
    assert_eq!(none.status, 404);
    assert_eq!(get(&pp, &format!("{path}?format=xml")).status, 400);
}

#[test]
fn a_pages_chart_and_paginated_table_equal_the_observations() {
    let env = TestEnv::new();
    let pp = start(&env, &[("PAGEPULSE__pipelines__pageviews__enabled", "false")]);
    // Three days of observations every 10 minutes (the last one newest), fans = minutes elapsed.
    let t0 = chrono::DateTime::parse_from_rfc3339("2026-11-01T00:00:00Z").unwrap().timestamp_millis();
    let n = 3 * 24 * 6;
    let obs: Vec<(i64, u64)> = (0..n).map(|i| (t0 + i * 600_000 + 30_000, (i * 10) as u64 + 1000)).collect();
    let records: Vec<_> = obs
        .iter()
        .map(|(at, fans)| {
            let v = serde_json::json!({"platform": "facebook", "page_id": "chart-page", "fans": fans, "observed_at": rfc3339(*at)});
            (Some("facebook:chart-page".to_string()), Some(v.to_string().into_bytes()))
        })
        .collect();
    env.produce_python("fans.observations", &records);
    let newest = obs.last().unwrap().0;
    let base = "/api/v1/pages/facebook:chart-page";
    wait_get(&pp, base, "the page", |a| a.json()["stats"]["observed_at"] == rfc3339(newest).as_str());

    // Hourly chart of the last 12 hours: the last observation of each hour, independently.
    let (from, to) = (newest - 12 * 3_600_000, newest + 1);
    let mut by_hour: std::collections::BTreeMap<i64, (i64, u64)> = Default::default();
    for &(at, fans) in obs.iter().filter(|(at, _)| *at >= from && *at < to) {
        let e = by_hour.entry(at.div_euclid(3_600_000)).or_insert((at, fans));
        if at > e.0 {
            *e = (at, fans);
        }
    }
    let a =
        get(&pp, &format!("{base}/chart?from={}&to={}&resolution=1h", rfc3339(from), rfc3339(to)).replace('+', "%2B"));
    assert_eq!(a.status, 200, "{:?}", a.json());
    let got: Vec<(String, u64)> = a.json()["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["at"].as_str().unwrap().to_string(), p["fans"].as_u64().unwrap()))
        .collect();
    let want: Vec<(String, u64)> = by_hour.values().map(|(at, f)| (rfc3339(*at), *f)).collect();
    assert_eq!(got, want);
    // At 10 minutes over the last 6 hours every observation is a point (one per bucket).
    let a = get(&pp, &format!("{base}/chart?from={}&resolution=10m", newest - 6 * 3_600_000 + 1));
    assert_eq!(a.json()["points"].as_array().unwrap().len(), 36, "{}", a.json());

    // The table, 50 rows at a time through next_cursor: newest first, no row twice, far more
    // than the 24 latest samples, and the newest 24 rows are exactly the latest observations.
    let mut rows: Vec<(String, u64)> = Vec::new();
    let mut path = format!("{base}/table?limit=50");
    let mut pages = 0;
    loop {
        let a = get(&pp, &path);
        assert_eq!(a.status, 200, "{:?}", a.json());
        pages += 1;
        for r in a.json()["rows"].as_array().unwrap() {
            rows.push((r["observed_at"].as_str().unwrap().to_string(), r["fans"].as_u64().unwrap()));
        }
        match a.json()["next_cursor"].as_str() {
            Some(c) => {
                assert!(a.header("link").is_some_and(|l| l.contains(c) && l.contains("rel=\"next\"")));
                path = format!("{base}/table?limit=50&cursor={c}");
            }
            None => break,
        }
        assert!(pages < 100, "pagination ends");
    }
    assert!(pages > 2 && rows.len() > 100, "{pages} pages, {} rows", rows.len());
    let times: Vec<i64> =
        rows.iter().map(|(at, _)| chrono::DateTime::parse_from_rfc3339(at).unwrap().timestamp_millis()).collect();
    assert!(times.windows(2).all(|w| w[0] > w[1]), "newest first, no row twice");
    let latest: Vec<(String, u64)> = obs.iter().rev().take(24).map(|(at, f)| (rfc3339(*at), *f)).collect();
    assert_eq!(rows[..24], latest[..]);
    // Every row is an observation that was produced, with its own fan count.
    let produced: HashMap<String, u64> = obs.iter().map(|(at, f)| (rfc3339(*at), *f)).collect();
    assert!(rows.iter().all(|(at, f)| produced.get(at) == Some(f)));
    // Refusals name the parameter.
    for (q, field) in [("limit=0", "limit"), ("cursor=zzz", "cursor"), ("resolution=5m", "resolution")] {
        let route = if field == "resolution" { "chart" } else { "table" };
        let a = get(&pp, &format!("{base}/{route}?{q}"));
        assert_eq!((a.status, a.json()["field"].as_str()), (400, Some(field)), "{q}");
    }
}

#[test]
fn messages_written_over_http_give_the_minutes_and_totals_counted_independently() {
    let env = TestEnv::new();
    let pp = start(
        &env,
        &[
            ("PAGEPULSE__pipelines__fans__enabled", "false"),
            ("PAGEPULSE__pipelines__pageviews__enabled", "false"),
            ("PAGEPULSE__pipelines__messages__idle_timeout", "\"3s\""),
            ("PAGEPULSE__pipelines__messages__totals_interval", "\"1s\""),
        ],
    );
    // 40 messages over two past minutes, from 5 users in 3 states and 4 cities (spelled
    // differently: grouped case-insensitively, whitespace collapsed, shown as first seen).
    let m0 = chrono::DateTime::parse_from_rfc3339("2025-03-01T10:00:00Z").unwrap().timestamp_millis();
    let places =
        [("NY", "New York"), (" ny", "new  york"), ("CA", "Los Angeles"), ("TX", "Austin"), ("CA", "San Diego")];
    // Per minute: messages, distinct users, messages per state.
    type Minute = (u64, std::collections::BTreeSet<String>, HashMap<String, u64>);
    let mut per_minute: HashMap<i64, Minute> = HashMap::new();
    let auth = format!("Bearer {WRITE}");
    for i in 0..40usize {
        let (state, city) = places[i % places.len()];
        let user = format!("user{}", i % 5);
        // Minute 0's messages first, so that none is late (the watermark trails by 30 s).
        let ts = m0 + (i as i64 / 20) * 60_000 + (i as i64 % 20) * 1000;
        let body = serde_json::json!({"username": user, "city": city, "state": state, "message": format!("hi {i}"), "ts": rfc3339(ts)});
        let a = http(
            &pp.addr,
            "POST",
            "/api/v1/messages",
            &[("Content-Type", "application/json"), ("Authorization", &auth)],
            body.to_string().as_bytes(),
        )
        .expect("answer");
        assert_eq!(a.status, 202, "{:?}", a.json());
        let e = per_minute.entry(ts.div_euclid(60_000) * 60_000).or_default();
        e.0 += 1;
        e.1.insert(user);
        *e.2.entry(state.trim().to_uppercase()).or_default() += 1;
    }
    // A message the pipeline would dead-letter is refused with the field named, and not written.
    let bad = serde_json::json!({"username": "u", "city": "X", "state": "", "message": "m"}).to_string();
    let a = http(
        &pp.addr,
        "POST",
        "/api/v1/messages",
        &[("Content-Type", "application/json"), ("Authorization", &auth)],
        bad.as_bytes(),
    )
    .expect("answer");
    assert_eq!(a.status, 422, "{:?}", a.json());
    assert!(a.json()["detail"].as_str().unwrap().contains("state"), "{}", a.json());

    for (minute, (total, users, by_state)) in &per_minute {
        let key = chrono::DateTime::from_timestamp_millis(*minute).unwrap().format("%Y-%m-%dT%H:%M").to_string();
        let a =
            wait_get(&pp, &format!("/api/v1/messages/stats/{key}"), "a final minute", |a| a.json()["final"] == true);
        let v = a.json();
        assert_eq!(v["total"].as_u64(), Some(*total), "{v}");
        assert_eq!(v["users"].as_u64(), Some(users.len() as u64), "{v}");
        let got: HashMap<String, u64> = v["by_state"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["state"].as_str().unwrap().to_string(), s["count"].as_u64().unwrap()))
            .collect();
        assert_eq!(&got, by_state);
        assert!(a.header("cache-control").unwrap().contains("immutable"));
        // The same minute as CSV, in long form, against the independent counts.
        let c = get(&pp, &format!("/api/v1/messages/stats/{key}?format=csv"));
        assert_eq!(c.status, 200);
        assert!(c.header("content-type").unwrap().starts_with("text/csv"), "{:?}", c.headers);
        let rows = csv_rows(&c.body);
        assert_eq!(rows[0], ["minute_start", "final", "scope", "rank", "state", "city", "count"]);
        assert!(rows[1..].iter().all(|r| r[0] == v["minute_start"].as_str().unwrap() && r[1] == "true"), "{rows:?}");
        let figure = |scope: &str| rows.iter().find(|r| r[2] == scope).map(|r| r[6].parse::<u64>().unwrap());
        assert_eq!(figure("total"), Some(*total));
        assert_eq!(figure("users"), Some(users.len() as u64));
        let got: HashMap<String, u64> =
            rows.iter().filter(|r| r[2] == "state").map(|r| (r[4].clone(), r[6].parse().unwrap())).collect();
        assert_eq!(&got, by_state, "{rows:?}");
    }
    let t = wait_get(&pp, "/api/v1/messages/totals", "the totals", |a| a.json()["total"] == 40);
    assert_eq!(t.json()["users"].as_u64(), Some(5));
    let ny = t.json()["top_cities"].as_array().unwrap().iter().find(|c| c["state"] == "NY").cloned().unwrap();
    assert_eq!(
        (ny["city"].as_str(), ny["count"].as_u64()),
        (Some("New York"), Some(16)),
        "grouped, first spelling shown"
    );
    assert_eq!(get(&pp, "/api/v1/messages/stats/2025-03-01").status, 400);
    // The totals as CSV, asked for with `Accept`.
    let auth = format!("Bearer {READ}");
    let c = http(&pp.addr, "GET", "/api/v1/messages/totals", &[("Authorization", &auth), ("Accept", "text/csv")], b"")
        .expect("answer");
    assert_eq!(c.status, 200);
    let rows = csv_rows(&c.body);
    assert_eq!(rows[0], ["as_of", "scope", "rank", "state", "city", "count"]);
    let total = rows.iter().find(|r| r[1] == "total").map(|r| r[5].clone());
    assert_eq!(total.as_deref(), Some("40"), "{rows:?}");
    assert!(rows.iter().any(|r| r[1] == "city" && r[3] == "NY" && r[4] == "New York" && r[5] == "16"), "{rows:?}");
    assert_eq!(get(&pp, "/api/v1/messages/totals?format=xml").status, 400);
}

/// The rows of a CSV answer whose fields hold no comma or quote.
fn csv_rows(body: &[u8]) -> Vec<Vec<String>> {
    let text = std::str::from_utf8(body).expect("UTF-8");
    assert!(text.ends_with("\r\n"), "CRLF line ends");
    text.split("\r\n").filter(|l| !l.is_empty()).map(|l| l.split(',').map(str::to_string).collect()).collect()
}

#[test]
fn the_catalogue_uploaded_over_http_ranks_and_counts_mentions_as_counted_independently() {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/AppleStore.csv");
    let Ok(body) = std::fs::read(&path) else {
        eprintln!("skipped: {} is absent", path.display());
        return;
    };
    let env = TestEnv::new();
    let pp = start(
        &env,
        &[
            ("PAGEPULSE__pipelines__fans__enabled", "false"),
            ("PAGEPULSE__pipelines__pageviews__enabled", "false"),
            ("PAGEPULSE__pipelines__messages__enabled", "false"),
            ("PAGEPULSE__pipelines__apps__mentions_interval", "\"1s\""),
        ],
    );
    // The independent reading: Python-free, the csv crate; the Book+Music top 10 by ratings,
    // ties by id, as (id, track_name, size_bytes, price).
    let mut rdr = csv::Reader::from_reader(&body[..]);
    let header: Vec<String> = rdr.headers().unwrap().iter().map(str::to_string).collect();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let (id, name, size, price, genre, ratings) =
        (col("id"), col("track_name"), col("size_bytes"), col("price"), col("prime_genre"), col("rating_count_tot"));
    let rows: Vec<csv::StringRecord> = rdr.records().map(|r| r.unwrap()).collect();
    let mut ranked: Vec<&csv::StringRecord> =
        rows.iter().filter(|r| r[genre] == *"Book" || r[genre] == *"Music").collect();
    ranked.sort_by(|a, b| {
        let n = |r: &csv::StringRecord| r[ratings].parse::<f64>().unwrap() as u64;
        n(b).cmp(&n(a)).then(a[id].parse::<u64>().unwrap().cmp(&b[id].parse::<u64>().unwrap()))
    });
    ranked.truncate(10);

    let auth = format!("Bearer {WRITE}");
    let a = http(&pp.addr, "POST", "/api/v1/apps", &[("Content-Type", "text/csv"), ("Authorization", &auth)], &body)
        .expect("answer");
    assert_eq!(a.status, 202, "{:?}", a.json());
    assert_eq!(a.json()["accepted"].as_u64(), Some(rows.len() as u64), "{}", a.json());
    assert_eq!(a.json()["refused"].as_u64(), Some(0));
    // A body that is not a catalogue is refused whole.
    let bad = http(
        &pp.addr,
        "POST",
        "/api/v1/apps",
        &[("Content-Type", "text/csv"), ("Authorization", &auth)],
        b"a,b\n1,2\n",
    )
    .expect("answer");
    assert_eq!(bad.status, 422, "{:?}", bad.json());

    // Three posts mention the rank-1 app by its name (cut at " - ").
    let first_name = ranked[0][name].split(" - ").next().unwrap().trim().to_lowercase();
    let posts: Vec<_> = (0..3)
        .map(|i| {
            let v = serde_json::json!({"id": format!("m{i}"), "content": format!("listening to {first_name} again!")});
            (Some(format!("m{i}")), Some(v.to_string().into_bytes()))
        })
        .collect();
    env.produce_python("posts", &posts);

    let top = "/api/v1/apps/top/Book%2BMusic?format=csv";
    let a = wait_get(&pp, top, "the ranking with the mentions", |a| {
        csv::Reader::from_reader(&a.body[..]).records().next().and_then(|r| r.ok()).is_some_and(|r| &r[2] == "3")
    });
    let mut got = csv::Reader::from_reader(&a.body[..]);
    assert_eq!(
        got.headers().unwrap().iter().collect::<Vec<_>>(),
        ["id", "track_name", "mentions_total", "size_bytes", "price", "prime_genre"]
    );
    let got: Vec<csv::StringRecord> = got.records().map(|r| r.unwrap()).collect();
    assert_eq!(got.len(), 10);
    for (g, w) in got.iter().zip(&ranked) {
        assert_eq!((&g[0], &g[1], &g[3], &g[5]), (&w[id], &w[name], &w[size], &w[genre]));
        assert_eq!(g[4].parse::<f64>().unwrap(), w[price].parse::<f64>().unwrap());
    }
    // One app: its catalogue record and its mentions.
    let one =
        wait_get(&pp, &format!("/api/v1/apps/{}", &ranked[0][id]), "one app", |a| a.json()["mentions_total"] == 3);
    assert_eq!(one.json()["app"]["track_name"], &ranked[0][name]);
    assert_eq!(get(&pp, "/api/v1/apps/0").status, 404);
}
