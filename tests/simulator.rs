//! The Graph API simulator over real HTTP: exact counts at a fixed clock, the Graph API's error
//! shapes, every fault type at rate 1, and the `simulate graph-api` command line.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::num::NonZeroU64;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pagepulse::clock::ManualClock;
use pagepulse::simulate::faults::SimConfig;
use pagepulse::simulate::graph_api::{self, SimServer};
use pagepulse::simulate::trajectory::{fans_at, page_id, EPOCH_MS};
use serde_json::Value;

/// A fixed time, 100 days and a bit into the trajectories.
const NOW: i64 = EPOCH_MS + 100 * 86_400_000 + 4_321_000;

fn sim(cfg: SimConfig) -> SimServer {
    sim_at(cfg, Arc::new(ManualClock::at_ms(NOW)))
}

fn sim_at(cfg: SimConfig, clock: Arc<ManualClock>) -> SimServer {
    let cfg = SimConfig { clock, ..cfg };
    graph_api::start(cfg, "127.0.0.1:0".parse().expect("literal address")).expect("start the simulator")
}

/// A raw HTTP/1.0 GET: status, headers (lower-case names) and body.
fn http_get(addr: SocketAddr, path: &str) -> (u16, HashMap<String, String>, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("write request");
    let mut buf = String::new();
    s.read_to_string(&mut buf).expect("read response");
    let (head, body) = buf.split_once("\r\n\r\n").expect("a header block");
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("a status");
    let headers = head.lines().skip(1).filter_map(|l| l.split_once(": ")).map(|(k, v)| (k.to_lowercase(), v.into()));
    (status, headers.collect(), body.to_string())
}

/// [`http_get`] off the test's thread: the server is started by a task on that thread, so a
/// blocking call there would keep it from ever accepting.
async fn get(addr: SocketAddr, path: String) -> (u16, HashMap<String, String>, String) {
    actix_web::rt::task::spawn_blocking(move || http_get(addr, &path)).await.expect("the GET thread")
}

fn batch(ids: impl IntoIterator<Item = String>) -> String {
    let ids: Vec<String> = ids.into_iter().collect();
    format!("/v19.0/?ids={}&fields=fan_count,followers_count&access_token=sim", ids.join(","))
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn assert_error(status: u16, body: &str, want_status: u16, code: i64) -> Value {
    let v = json(body);
    assert_eq!((status, v["error"]["code"].as_i64()), (want_status, Some(code)), "{body}");
    assert_eq!(v["error"]["type"], "OAuthException", "{body}");
    v
}

#[actix_web::test]
async fn batch_of_50_has_the_exact_counts_of_the_trajectories() {
    let clock = Arc::new(ManualClock::at_ms(NOW));
    let server = sim_at(SimConfig::default(), clock.clone());
    let (status, headers, body) = get(server.addr(), batch((1..=50).map(page_id))).await;
    assert_eq!(status, 200, "{body}");
    let v = json(&body);
    assert_eq!(v.as_object().map(|o| o.len()), Some(50));
    for i in 1..=50 {
        let (fans, followers) = fans_at(&page_id(i), NOW);
        assert_eq!(
            v[page_id(i)],
            serde_json::json!({ "fan_count": fans, "followers_count": followers, "id": page_id(i) })
        );
    }
    json(&headers["x-app-usage"]);
    let stats = server.stats().snapshot();
    assert_eq!((stats.requests, stats.ok, stats.pages_served, stats.max_serves_per_page), (1, 1, 50, 1));
    assert_eq!(server.stats().serves(50), 1);

    // A day later the same request answers the trajectories a day later.
    clock.set_ms(NOW + 86_400_000);
    let (_, _, body) = get(server.addr(), batch((1..=50).map(page_id))).await;
    let later = json(&body);
    for i in 1..=50 {
        assert_eq!(later[page_id(i)]["fan_count"], fans_at(&page_id(i), NOW + 86_400_000).0);
    }
    assert_ne!(later, v, "a day moves some page");
    assert_eq!(server.stats().snapshot().max_serves_per_page, 2);
    server.stop().await;
}

#[actix_web::test]
async fn more_than_50_ids_is_400_code_100() {
    let server = sim(SimConfig::default());
    let (status, _, body) = get(server.addr(), batch((1..=51).map(page_id))).await;
    let v = assert_error(status, &body, 400, 100);
    assert_eq!(v["error"]["message"], "(#100) Too many IDs. Maximum: 50.");
    server.stop().await;
}

#[actix_web::test]
async fn unknown_ids_get_per_id_errors_and_the_rest_stand() {
    let server = sim(SimConfig { pages: 10, ..Default::default() });
    let ids = ["page-000003", "page-000011", "page-000000", "cocacola", "page-3"].map(String::from);
    let (status, _, body) = get(server.addr(), batch(ids)).await;
    assert_eq!(status, 200, "{body}");
    let v = json(&body);
    assert_eq!(v["page-000003"]["fan_count"], fans_at("page-000003", NOW).0);
    for unknown in ["page-000011", "page-000000", "cocacola", "page-3"] {
        let e = &v[unknown]["error"];
        assert_eq!((e["code"].as_i64(), e["type"].as_str()), (Some(100), Some("OAuthException")), "{unknown}: {body}");
        assert!(e["message"].as_str().is_some_and(|m| m.starts_with("(#100)")), "{body}");
    }
    assert_eq!(server.stats().snapshot().unknown_ids, 4);
    server.stop().await;
}

#[actix_web::test]
async fn missing_or_empty_token_is_400_code_190() {
    let server = sim(SimConfig::default());
    for path in ["/v19.0/?ids=page-000001&fields=fan_count", "/v19.0/?ids=page-000001&fields=fan_count&access_token="] {
        let (status, _, body) = get(server.addr(), path.to_string()).await;
        assert_error(status, &body, 400, 190);
    }
    server.stop().await;
}

#[actix_web::test]
async fn throttling_is_code_4_with_both_usage_headers() {
    let server = sim(SimConfig { throttle_rate: 1.0, ..Default::default() });
    let (status, headers, body) = get(server.addr(), batch([page_id(1)])).await;
    let v = assert_error(status, &body, 400, 4);
    assert_eq!(v["error"]["is_transient"], true);
    assert_eq!(json(&headers["x-app-usage"])["call_count"], 100);
    let buc = json(&headers["x-business-use-case-usage"]);
    let usage = &buc[graph_api::BUSINESS_ID][0];
    assert_eq!((usage["type"].as_str(), usage["call_count"].as_i64()), (Some("pages"), Some(100)), "{buc}");
    assert!(usage["estimated_time_to_regain_access"].as_i64().is_some_and(|m| m >= 1), "{buc}");
    server.stop().await;

    // Every third request: usage rises on the two before it, so a client can slow down.
    let server = sim(SimConfig { throttle_every: NonZeroU64::new(3), ..Default::default() });
    let mut calls = Vec::new();
    for _ in 0..3 {
        let (status, headers, _) = get(server.addr(), batch([page_id(1)])).await;
        calls.push((status, json(&headers["x-app-usage"])["call_count"].as_i64().expect("call_count")));
    }
    assert_eq!(calls, [(200, 33), (200, 66), (400, 100)]);
    server.stop().await;
}

#[actix_web::test]
async fn server_errors_are_500_code_2() {
    let server = sim(SimConfig { error_rate: 1.0, ..Default::default() });
    let (status, _, body) = get(server.addr(), batch([page_id(1)])).await;
    assert_eq!(assert_error(status, &body, 500, 2)["error"]["is_transient"], true);
    server.stop().await;
}

#[actix_web::test]
async fn malformed_bodies_are_200_and_not_json() {
    let server = sim(SimConfig { malformed_rate: 1.0, ..Default::default() });
    for _ in 0..3 {
        let (status, _, body) = get(server.addr(), batch((1..=5).map(page_id))).await;
        assert_eq!(status, 200);
        assert!(serde_json::from_str::<Value>(&body).is_err(), "parsed: {body}");
    }
    assert_eq!(server.stats().snapshot().malformed, 3);
    server.stop().await;
}

#[actix_web::test]
async fn slow_replies_take_at_least_slow_ms() {
    let server = sim(SimConfig { slow_ms: 300, slow_rate: 1.0, ..Default::default() });
    let started = Instant::now();
    let (status, _, _) = get(server.addr(), batch([page_id(1)])).await;
    assert_eq!(status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());
    server.stop().await;
}

#[test]
fn cli_serves_until_sigterm_and_names_bad_flags() {
    let bin = env!("CARGO_BIN_EXE_pagepulse");
    let out = Command::new(bin).args(["simulate", "graph-api", "--error-rate", "1.5"]).output().expect("run pagepulse");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--error-rate"), "{}", String::from_utf8_lossy(&out.stderr));

    let mut child = Command::new(bin)
        .args(["simulate", "graph-api", "--listen", "127.0.0.1:0", "--pages", "3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn pagepulse");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped stdout")).read_line(&mut line).expect("the address line");
    let addr: SocketAddr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    let (status, _, body) = http_get(addr, &batch([page_id(3), page_id(4)]));
    assert_eq!(status, 200);
    assert!(json(&body)["page-000003"]["fan_count"].is_u64() && json(&body)["page-000004"]["error"].is_object());
    // SAFETY: kill(2) on the id of a child this test spawned and has not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20)); // poll again until the deadline
    };
    assert!(status.success(), "{status:?}");
}
