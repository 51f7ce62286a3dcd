//! The HTTP API through the real broker (issue 13): writes are checked by the pipelines' own
//! decoders and produced only when accepted; reads come from the live views; tokens, scopes,
//! rate limits and every bound answer `application/problem+json` 4xx, with nothing produced and
//! the process unharmed; the OpenAPI document and `/docs` are served.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use support::{http, Answer, Pagepulse, TestEnv};

const WRITE: &str = "write-token-0123456789abcdef";
const READ: &str = "read-token-0123456789abcdef";

fn start(env: &TestEnv, extra: &[(&str, &str)]) -> Pagepulse {
    let mut vars = vec![
        ("PAGEPULSE_WRITE_TOKEN", WRITE),
        ("PAGEPULSE_READ_TOKEN", READ),
        ("PAGEPULSE__http__public_reads", "false"),
        ("PAGEPULSE__pipelines__pages__enabled", "false"),
        ("PAGEPULSE__pipelines__fans__enabled", "false"),
    ];
    vars.extend_from_slice(extra);
    let mut pp = env.start_with(&vars);
    pp.wait_ready(Duration::from_secs(60));
    pp
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn post_json(pp: &Pagepulse, path: &str, token: Option<&str>, body: &str) -> Answer {
    let auth = token.map(bearer);
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(a) = auth.as_deref() {
        headers.push(("Authorization", a));
    }
    http(&pp.addr, "POST", path, &headers, body.as_bytes()).expect("an HTTP answer")
}

fn get(pp: &Pagepulse, path: &str, token: Option<&str>) -> Answer {
    let auth = token.map(bearer);
    let headers: Vec<(&str, &str)> = auth.as_deref().map(|a| vec![("Authorization", a)]).unwrap_or_default();
    http(&pp.addr, "GET", path, &headers, b"").expect("an HTTP answer")
}

/// The answer is a problem document with `status`.
fn assert_problem(a: &Answer, status: u16, what: &str) {
    assert_eq!(a.status, status, "{what}: {:?}", String::from_utf8_lossy(&a.body));
    assert_eq!(a.header("content-type"), Some("application/problem+json"), "{what}");
    let v = a.json();
    assert_eq!(v["status"], status, "{what}: {v}");
    assert!(v["type"].as_str().is_some_and(|t| t.starts_with("https://pagepulse.dev/problems/")), "{what}: {v}");
    assert!(v["detail"].as_str().is_some_and(|d| !d.is_empty()), "{what}: {v}");
}

#[test]
fn writes_are_checked_authorised_acknowledged_and_their_results_readable() {
    let env = TestEnv::new();
    let pp = start(&env, &[]);

    // The auth matrix on a write: nothing is produced for any refusal.
    let post = r#"{"id":"p-1","content":"hello #rust and #kafka"}"#;
    assert_problem(&post_json(&pp, "/api/v1/posts", None, post), 401, "no token");
    assert_problem(&post_json(&pp, "/api/v1/posts", Some("wrong-token-0123456789abcdef"), post), 401, "wrong token");
    assert_problem(&post_json(&pp, "/api/v1/posts", Some(READ), post), 403, "read token on a write");
    // Reads need the read scope.
    assert_problem(&get(&pp, "/api/v1/posts/trending", None), 401, "read without token");

    // Content the pipeline would dead-letter is refused with the decoder's own reason.
    let refused = post_json(&pp, "/api/v1/posts", Some(WRITE), r#"{"id":"p-2"}"#);
    assert_problem(&refused, 422, "missing content");
    assert_eq!(refused.json()["detail"], "field `content` is missing");
    assert_eq!(refused.json()["reason"], "missing_field");
    assert_problem(&post_json(&pp, "/api/v1/posts", Some(WRITE), r#"{"id":"p-2","content":7}"#), 422, "wrong type");
    assert_problem(&post_json(&pp, "/api/v1/posts", Some(WRITE), "{not json"), 422, "not JSON");
    let text = http(
        &pp.addr,
        "POST",
        "/api/v1/posts",
        &[("Content-Type", "text/plain"), ("Authorization", &bearer(WRITE))],
        post.as_bytes(),
    )
    .expect("answer");
    assert_problem(&text, 415, "text/plain");
    let big = format!(r#"{{"id":"p-3","content":"{}"}}"#, "x".repeat(70_000));
    assert_problem(&post_json(&pp, "/api/v1/posts", Some(WRITE), &big), 413, "over http.max_body_bytes");
    let deep = format!(r#"{{"id":"p-4","content":"x","author":{}{}}}"#, "[".repeat(40), "]".repeat(40));
    assert_problem(&post_json(&pp, "/api/v1/posts", Some(WRITE), &deep), 400, "nested too deep");

    // Accepted writes: 202 after the broker's acknowledgement, with where the result will be.
    let mut expected_tags: HashMap<String, u64> = HashMap::new();
    for i in 0..20 {
        let tags = ["rust", "kafka", "streams"];
        let tag = tags[i % 3];
        *expected_tags.entry(tag.to_string()).or_default() += 1;
        let body =
            serde_json::json!({"id": format!("api-{i}"), "content": format!("post {i} about #{tag}")}).to_string();
        let a = post_json(&pp, "/api/v1/posts", Some(WRITE), &body);
        assert_eq!(a.status, 202, "{:?}", String::from_utf8_lossy(&a.body));
        assert_eq!(a.header("location"), Some(format!("/api/v1/posts/api-{i}/analysis").as_str()));
        assert!(a.header("ratelimit").is_some() && a.header("ratelimit-policy").is_some(), "{:?}", a.headers);
        assert_eq!(a.json()["key"], format!("api-{i}"));
    }
    // What was written is exactly the accepted posts: an independent reader of the topic.
    let recs = env.read_until("posts", Duration::from_secs(30), |r| r.len() >= 20);
    let mut keys: Vec<String> =
        recs.iter().map(|r| String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned()).collect();
    keys.sort();
    let mut want: Vec<String> = (0..20).map(|i| format!("api-{i}")).collect();
    want.sort();
    assert_eq!(keys, want, "only the accepted posts were produced, each once");

    // The trending read, equal to the independent count, with an ETag that revalidates.
    let deadline = Instant::now() + Duration::from_secs(60);
    let trending = loop {
        let a = get(&pp, "/api/v1/posts/trending", Some(READ));
        if a.status == 200 {
            let counts: HashMap<String, u64> = a.json()["tags"]
                .as_array()
                .expect("tags")
                .iter()
                .map(|t| (t["tag"].as_str().unwrap_or_default().to_string(), t["count"].as_u64().unwrap_or(0)))
                .collect();
            if counts == expected_tags {
                break a;
            }
        }
        assert!(Instant::now() < deadline, "trending never matched {expected_tags:?}: last {:?}", a.json());
        std::thread::sleep(support::POLL_INTERVAL);
    };
    let etag = trending.header("etag").expect("an ETag").to_string();
    let again = http(
        &pp.addr,
        "GET",
        "/api/v1/posts/trending",
        &[("Authorization", &bearer(READ)), ("If-None-Match", &etag)],
        b"",
    )
    .expect("answer");
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());

    // The blacklist: a POST and a DELETE become a record and a tombstone of the compacted topic.
    let a = post_json(&pp, "/api/v1/pageviews/blacklist", Some(WRITE), r#"{"domain":"en","title":"Main_Page"}"#);
    assert_eq!(a.status, 202, "{:?}", a.json());
    let del =
        http(&pp.addr, "DELETE", "/api/v1/pageviews/blacklist/en/Main_Page", &[("Authorization", &bearer(WRITE))], b"")
            .expect("answer");
    assert_eq!(del.status, 202, "{:?}", del.json());
    let bl = env.read_until("pageviews.blacklist", Duration::from_secs(30), |r| r.len() >= 2);
    assert_eq!(bl[0].key.as_deref(), Some(&b"en Main_Page"[..]));
    assert!(bl[0].value.is_some() && bl[1].value.is_none(), "a record, then a tombstone");

    // Odd paths and queries: 4xx problems, the process unharmed.
    let long = format!("/api/v1/pages/facebook:{}", "x".repeat(6000));
    for path in [
        "/api/v1/pages/%FF%FE",
        "/api/v1/pages/..%2F..%2Fetc",
        "/api/v1/pages/no-colon",
        "/api/v1/posts/trending?bogus=1",
        long.as_str(),
    ] {
        let a = get(&pp, path, Some(READ));
        assert!((400..500).contains(&a.status), "{path}: {}", a.status);
        if a.status != 431 {
            assert_eq!(a.header("content-type"), Some("application/problem+json"), "{path}");
        }
    }
    assert_eq!(get(&pp, "/healthz", None).status, 200, "the process is unharmed");

    // The OpenAPI document and the page that renders it.
    let doc = get(&pp, "/api/v1/openapi.json", None);
    assert_eq!(doc.status, 200);
    assert!(doc.json()["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")));
    let page = get(&pp, "/docs", None);
    assert!(page.status == 200 && String::from_utf8_lossy(&page.body).contains("/api/v1/openapi.json"));
    assert!(!String::from_utf8_lossy(&page.body).contains("https://cdn"), "/docs loads nothing from the internet");

    // Counted by route template, with no ids as labels.
    let m = pp.metrics();
    assert!(
        support::metric_value(
            &m,
            "pagepulse_http_requests_total",
            r#"method="POST",route="/api/v1/posts",status="202""#
        ) >= 20.0
    );
    assert!(support::metric_value(&m, "pagepulse_http_refused_total", r#"reason="forbidden""#) >= 1.0);
    assert!(!m.contains("api-1"), "no post id in the metrics");
    assert!(!m.contains(WRITE) && !pp.log_text().contains(WRITE), "the token never reaches metrics or logs");
}

#[test]
fn a_client_over_its_rate_limit_gets_429_with_the_headers_then_is_allowed_again() {
    let env = TestEnv::new();
    let pp = start(&env, &[("PAGEPULSE__http__write_rate", "2.0"), ("PAGEPULSE__http__write_burst", "3")]);
    let body = |i: usize| format!(r#"{{"id":"rl-{i}","content":"x"}}"#);
    for i in 0..3 {
        assert_eq!(post_json(&pp, "/api/v1/posts", Some(WRITE), &body(i)).status, 202);
    }
    let limited = post_json(&pp, "/api/v1/posts", Some(WRITE), &body(3));
    assert_problem(&limited, 429, "over the burst");
    assert_eq!(limited.header("retry-after"), Some("1"));
    assert_eq!(limited.header("ratelimit-policy"), Some("\"write\";q=3;w=2"));
    assert!(limited.header("ratelimit").is_some_and(|v| v.starts_with("\"write\";r=0;t=")), "{:?}", limited.headers);
    // Another client (here the read token, on reads) is not affected.
    assert_ne!(get(&pp, "/api/v1/pages/top", Some(READ)).status, 429);
    // Allowed again once the bucket refilled (2 per second).
    support::wait_for("writes allowed again", Duration::from_secs(5), || {
        let a = post_json(&pp, "/api/v1/posts", Some(WRITE), &body(4));
        assert!(a.status == 202 || a.status == 429, "{}", a.status);
        (a.status == 202).then_some(())
    });
    // Refused requests produced nothing: 4 posts in the topic.
    let recs = env.read_until("posts", Duration::from_secs(30), |r| r.len() >= 4);
    assert_eq!(recs.len(), 4);
}

#[test]
fn pagepulse_refuses_to_start_open_on_a_public_address_without_tokens() {
    let env = TestEnv::new();
    let out = env.cli(&["run"]).env("PAGEPULSE_HTTP_LISTEN", "0.0.0.0:0").output().expect("run pagepulse");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("http.tokens") && err.contains("non-loopback"), "{err}");
}
