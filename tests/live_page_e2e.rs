//! pagepulse's live page (`/`) in a real browser: headless Chromium loads it with a read token,
//! the page fetches every part from the HTTP API, and the numbers it shows equal the API's
//! answers (read by the test over HTTP); the page logs no console error. The pipelines are fed
//! fan observations, posts, messages, an hour of page views and an app catalogue.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::{http, TestEnv};

const READ: &str = "live-page-read-token-0123456789";
const H: i64 = 3_600_000;

/// The text of every element of `dom` whose `data-k` is `key`.
fn shown(dom: &str, key: &str) -> Vec<String> {
    let attr = format!("data-k=\"{key}\"");
    dom.match_indices(&attr)
        .filter_map(|(i, _)| {
            let rest = &dom[i..];
            let start = rest.find('>')? + 1;
            let end = rest[start..].find('<')?;
            Some(decode(&rest[start..start + end]))
        })
        .collect()
}

/// `s` with the HTML entities Chromium writes for text decoded.
fn decode(s: &str) -> String {
    s.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&#39;", "'").replace("&amp;", "&")
}

#[test]
fn the_live_page_shows_what_the_api_answers() {
    let env = TestEnv::new();
    let dir = tempfile::tempdir().expect("tempdir");
    // Three pages observed 25 h apart; page wK gains 100 * K * K fans.
    let now = chrono::Utc::now().timestamp_millis();
    let t0 = now - now % H - 30 * H;
    let rfc = |ms: i64| chrono::DateTime::from_timestamp_millis(ms).expect("time").to_rfc3339();
    let mut records = Vec::new();
    for k in 1..=3i64 {
        for (at, gain) in [(t0, 0), (t0 + 12 * H, 50 * k * k), (t0 + 25 * H, 100 * k * k)] {
            let v = serde_json::json!({"platform": "facebook", "page_id": format!("w{k}"), "fans": 1000 + gain,
                "followers": null, "observed_at": rfc(at)});
            records.push((Some(format!("facebook:w{k}")), Some(v.to_string().into_bytes())));
        }
    }
    env.produce_python("fans.observations", &records);
    let mut pp = env.start_with(&[
        ("PAGEPULSE__http__public_reads", "false"),
        ("PAGEPULSE_READ_TOKEN", READ),
        ("PAGEPULSE__pipelines__pageviews__provisional_interval", "\"1s\""),
        ("PAGEPULSE__pipelines__messages__totals_interval", "\"1s\""),
        ("PAGEPULSE__pipelines__apps__mentions_interval", "\"1s\""),
    ]);
    pp.wait_ready(Duration::from_secs(60));
    env.load_demo_catalogue(dir.path(), 200);
    env.run(&["demo", "posts", "--rate", "0", "--count", "300", "--mention-every", "3"]);
    env.run(&["demo", "messages", "--rate", "0", "--count", "200"]);
    let hour = chrono::Utc::now().format("%Y-%m-%dT%H").to_string();
    env.ingest_demo_hour(dir.path(), &hour, 2000, 2);

    // The API's answers, once every part has one and the input is processed.
    let auth = format!("Bearer {READ}");
    let get = |path: &str| -> Option<serde_json::Value> {
        let a = http(&pp.addr, "GET", &format!("/api/v1{path}"), &[("Authorization", &auth)], b"")?;
        (a.status == 200).then(|| a.json())
    };
    // Settled: the same answer for 1.5 s (the pipelines write trending, totals and rankings every
    // second or so while input is being processed).
    let stable = |path: &str, ready: &dyn Fn(&serde_json::Value) -> bool| -> serde_json::Value {
        let mut seen: Option<(serde_json::Value, std::time::Instant)> = None;
        support::wait_for(&format!("{path} answered and settled"), Duration::from_secs(90), || {
            let now = get(path).filter(|v| ready(v))?;
            match &seen {
                Some((v, since)) if *v == now => (since.elapsed() >= Duration::from_millis(1500)).then(|| now.clone()),
                _ => {
                    seen = Some((now, std::time::Instant::now()));
                    None
                }
            }
        })
    };
    let top = stable("/pages/top", &|v| v["by_growth_24h_pct"].as_array().is_some_and(|a| a.len() == 3));
    let page = stable("/pages/facebook:w2?series=false", &|_| true);
    // (A chart's `to` is the time of the request: its points are what settles.)
    let chart = get("/pages/facebook:w2/chart").expect("the page's chart");
    let tags = stable("/posts/trending", &|v| v["tags"].as_array().is_some_and(|a| !a.is_empty()));
    let totals = stable("/messages/totals", &|v| v["total"].as_u64().is_some_and(|t| t > 0));
    let apps = stable("/apps/top/Book%2BMusic", &|v| v["apps"].as_array().is_some_and(|a| !a.is_empty()));
    let articles =
        stable(&format!("/pageviews/top/en/{hour}"), &|v| v["articles"].as_array().is_some_and(|a| !a.is_empty()));

    // The page, in headless Chromium, with the token in its address's fragment.
    let profile = tempfile::tempdir().expect("profile");
    let url = format!("http://{}/#token={READ}&page=facebook:w2", pp.addr);
    let out = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        .args(["--disable-component-update", "--no-first-run", "--enable-logging=stderr", "--v=0"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--virtual-time-budget=15000", "--dump-dom", &url])
        .stdin(Stdio::null())
        .output()
        .expect("chromium is installed (scripts/test.sh installs Debian's chromium)");
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "chromium failed: {log}");
    let console: Vec<&str> = log.lines().filter(|l| l.contains("CONSOLE")).collect();
    assert!(console.is_empty(), "the page logged to the console: {console:#?}");
    assert!(dom.contains("updated "), "the page did not finish a refresh: {}", shown(&dom, "status").join(""));

    // Every number shown equals the API's.
    assert_eq!(shown(&dom, "page-fans"), [page["stats"]["fans"].to_string()]);
    assert_eq!(shown(&dom, "page-delta-24h"), [page["stats"]["delta_24h"]["value"].to_string()]);
    let points = chart["points"].as_array().expect("points").len();
    assert!(points >= 2);
    assert_eq!(shown(&dom, "chart-points"), [format!("{points} points")]);
    assert_eq!(dom.matches("<polyline").count(), 1, "the chart is drawn");
    for e in top["by_growth_24h_pct"].as_array().expect("ranking") {
        let r = e["rank"].as_u64().expect("rank");
        assert_eq!(
            shown(&dom, &format!("top-growth-{r}-page")),
            [format!("facebook:{}", e["page_id"].as_str().expect("id"))]
        );
        assert_eq!(shown(&dom, &format!("top-growth-{r}-delta")), [e["delta_24h"].to_string()]);
    }
    // The test's own ranking: w3 grew most.
    assert_eq!(shown(&dom, "top-growth-1-page"), ["facebook:w3"]);
    for t in tags["tags"].as_array().expect("tags") {
        let r = t["rank"].as_u64().expect("rank");
        assert_eq!(shown(&dom, &format!("hashtag-{r}-tag")), [format!("#{}", t["tag"].as_str().expect("tag"))]);
        assert_eq!(shown(&dom, &format!("hashtag-{r}-count")), [t["count"].to_string()]);
    }
    assert_eq!(shown(&dom, "messages-total"), [totals["total"].to_string()]);
    assert_eq!(shown(&dom, "messages-users"), [totals["users"].to_string()]);
    for c in totals["top_cities"].as_array().expect("cities") {
        let r = c["rank"].as_u64().expect("rank");
        assert_eq!(shown(&dom, &format!("city-{r}-name")), [c["city"].as_str().expect("city")]);
        assert_eq!(shown(&dom, &format!("city-{r}-count")), [c["count"].to_string()]);
    }
    for a in apps["apps"].as_array().expect("apps") {
        let r = a["rank"].as_u64().expect("rank");
        assert_eq!(shown(&dom, &format!("app-{r}-name")), [a["track_name"].as_str().expect("name")]);
        assert_eq!(shown(&dom, &format!("app-{r}-mentions")), [a["mentions_total"].to_string()]);
    }
    for a in articles["articles"].as_array().expect("articles") {
        let r = a["rank"].as_u64().expect("rank");
        assert_eq!(shown(&dom, &format!("article-{r}-title")), [a["title"].as_str().expect("title")]);
        assert_eq!(shown(&dom, &format!("article-{r}-views")), [a["views"].to_string()]);
    }

    // Without a token the page shows nothing it may not: the API refuses it, and it says so.
    let url = format!("http://{}/", pp.addr);
    let out = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        .args(["--disable-component-update", "--no-first-run"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--virtual-time-budget=5000", "--dump-dom", &url])
        .stdin(Stdio::null())
        .output()
        .expect("chromium");
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(dom.contains("some parts failed") && dom.contains("401"), "{dom}");
    assert!(shown(&dom, "messages-total") == ["—"]);
    pp.signal(libc::SIGTERM);
    assert!(pp.wait_exit(Duration::from_secs(10)).success());
}
