//! A Facebook-Graph-API-compatible server for the quickstart, tests and benchmarks: answers
//! `GET /{version}/?ids=a,b&fields=fan_count,followers_count&access_token=...` with the counts of
//! [`trajectory::fans_at`] at the injected clock's time, and injects faults deterministically.
//!
//! The request handling is the plain function [`respond`]; the actix-web handler only numbers the
//! request, records the outcome, waits the planned delay and writes the reply.
//!
//! # Behaviour, in the order it is checked
//!
//! 1. A missing or empty `access_token`: 400, code 190.
//! 2. Throttling (every Nth request and/or a rate): 400, code 4, `is_transient`, with
//!    `X-App-Usage` at 100 % and `X-Business-Use-Case-Usage` giving
//!    `estimated_time_to_regain_access` (minutes).
//! 3. A server error (rate): 500, code 2, `is_transient`.
//! 4. Validation: no ids, more than [`MAX_IDS`] ids, or `fields` not naming `fan_count` and/or
//!    `followers_count` (or naming a field a page does not have): 400, code 100.
//! 5. Success: 200, an object keyed by id with the requested fields and `id`. An id outside the
//!    population gets a per-id error object (code 100, subcode 33) next to the others. The real
//!    API may fail the whole batch instead; per-id errors are what the product asked for, so a
//!    client must handle both shapes. A malformed reply (rate) replaces the body with invalid JSON
//!    and still answers 200, as a broken proxy would.
//!
//! Any reply may be delayed (`slow_ms` with `slow_rate`). Every reply carries `X-App-Usage`,
//! rising towards 100 % as the next every-Nth throttle approaches, so a client can slow down.
//! Faults are a hash of (seed, request number): the same seed and request sequence give the same
//! faults.
//!
//! The same server answers Mastodon's account lookup at [`mastodon::LOOKUP_PATH`] (see
//! [`super::mastodon`]), from the same configuration: Graph and Mastodon requests share one
//! numbering, so one fault sequence covers both, and `/stats` counts both.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::faults::{broken_body, Error, Outcome, Result, SimConfig};
use super::mastodon::{self, LookupQuery};
use super::trajectory::{self, page_index};

/// Most ids one request may name, as on the real Graph API.
pub const MAX_IDS: usize = 50;
/// The business id keying `X-Business-Use-Case-Usage`.
pub const BUSINESS_ID: &str = "1000000000000001";

/// The query string of a Graph API batch request (other parameters are ignored).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ApiQuery {
    /// Comma-separated page ids.
    pub ids: Option<String>,
    /// Comma-separated fields: `fan_count`, `followers_count`, `id`.
    pub fields: Option<String>,
    /// Any non-empty token is accepted.
    pub access_token: Option<String>,
}

/// A reply, before it is written.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// The body.
    pub body: String,
    /// How the request was answered.
    pub outcome: Outcome,
    /// The `X-App-Usage` header.
    pub app_usage: String,
    /// The `X-Business-Use-Case-Usage` header.
    pub business_usage: String,
    /// Wait this long before writing the reply.
    pub delay: Duration,
    /// Indexes of the pages whose counts the body holds.
    pub served: Vec<u64>,
    /// Ids answered with a per-id error.
    pub unknown_ids: u64,
}

fn error_body(message: &str, code: u32, transient: bool, seq: u64) -> String {
    let mut e =
        json!({ "message": message, "type": "OAuthException", "code": code, "fbtrace_id": format!("Sim{seq:08x}") });
    if transient {
        e["is_transient"] = Value::Bool(true);
    }
    json!({ "error": e }).to_string()
}

/// Answers request number `seq` at `now_ms` (see the module documentation for the rules).
pub fn respond(cfg: &SimConfig, q: &ApiQuery, seq: u64, now_ms: i64) -> Reply {
    let plan = cfg.plan(seq);
    let usage = if plan.throttled { 100 } else { cfg.usage_percent(seq) };
    let regain_minutes = u64::from(plan.throttled);
    let mut reply = Reply {
        status: 400,
        body: String::new(),
        outcome: Outcome::BadRequest,
        app_usage: json!({ "call_count": usage, "total_cputime": usage / 4, "total_time": usage * 3 / 10 }).to_string(),
        business_usage: json!({ BUSINESS_ID: [{ "type": "pages", "call_count": usage, "total_cputime": usage / 10,
            "total_time": usage / 10, "estimated_time_to_regain_access": regain_minutes }] })
        .to_string(),
        delay: plan.delay,
        served: Vec::new(),
        unknown_ids: 0,
    };
    let set = |reply: &mut Reply, status, outcome, body| {
        (reply.status, reply.outcome, reply.body) = (status, outcome, body);
    };
    if q.access_token.as_deref().is_none_or(str::is_empty) {
        let msg = "Invalid OAuth access token - Cannot parse access token";
        set(&mut reply, 400, Outcome::InvalidToken, error_body(msg, 190, false, seq));
    } else if plan.throttled {
        let msg = "(#4) Application request limit reached";
        set(&mut reply, 400, Outcome::Throttled, error_body(msg, 4, true, seq));
    } else if plan.server_error {
        let msg = "An unexpected error has occurred. Please retry your request later.";
        set(&mut reply, 500, Outcome::ServerError, error_body(msg, 2, true, seq));
    } else {
        match success_body(cfg, q, now_ms, &mut reply) {
            Err(msg) => set(&mut reply, 400, Outcome::BadRequest, error_body(&msg, 100, false, seq)),
            Ok(body) if plan.malformed => set(&mut reply, 200, Outcome::Malformed, broken_body(&body, seq)),
            Ok(body) => set(&mut reply, 200, Outcome::Ok, body),
        }
    }
    reply
}

/// The body of a valid request, or the message of a code-100 error. Fills `served` and
/// `unknown_ids` of `reply`.
fn success_body(cfg: &SimConfig, q: &ApiQuery, now_ms: i64, reply: &mut Reply) -> Result<String, String> {
    let ids: Vec<&str> = q.ids.as_deref().unwrap_or("").split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    if ids.is_empty() {
        return Err("(#100) The parameter ids is required".into());
    }
    if ids.len() > MAX_IDS {
        return Err(format!("(#100) Too many IDs. Maximum: {MAX_IDS}."));
    }
    let (mut fans, mut followers) = (false, false);
    for f in q.fields.as_deref().unwrap_or("").split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match f {
            "fan_count" => fans = true,
            "followers_count" => followers = true,
            "id" => {}
            other => return Err(format!("(#100) Tried accessing nonexisting field ({other}) on node type (Page)")),
        }
    }
    if !fans && !followers {
        return Err("(#100) The parameter fields must name fan_count and/or followers_count".into());
    }
    let mut out = Map::new();
    for id in ids {
        if out.contains_key(id) {
            continue; // a repeated id is answered once, as on the real API
        }
        let entry = match page_index(id).filter(|i| (1..=cfg.pages).contains(i)) {
            Some(i) => {
                reply.served.push(i);
                let (fan_count, followers_count) = trajectory::fans_at(id, now_ms);
                let mut page = Map::new();
                if fans {
                    page.insert("fan_count".into(), fan_count.into());
                }
                if followers {
                    page.insert("followers_count".into(), followers_count.into());
                }
                page.insert("id".into(), id.into());
                Value::Object(page)
            }
            None => {
                reply.unknown_ids += 1;
                let msg = format!(
                    "(#100) Unsupported get request. Object with ID '{id}' does not exist, cannot be loaded due to \
                     missing permissions, or does not support this operation."
                );
                json!({ "error": { "message": msg, "type": "OAuthException", "code": 100, "error_subcode": 33 } })
            }
        };
        out.insert(id.to_string(), entry);
    }
    Ok(Value::Object(out).to_string())
}

/// Counters of a running simulator, shared with the handler.
#[derive(Debug)]
pub struct Stats {
    requests: AtomicU64,
    mastodon_requests: AtomicU64,
    outcomes: [AtomicU64; 7],
    slow: AtomicU64,
    unknown_ids: AtomicU64,
    /// Times each page (index - 1) was served; saturates rather than wraps.
    serves: Vec<AtomicU32>,
}

/// A copy of the counters, also served as JSON at `/stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsSnapshot {
    /// Requests to either API (Graph and Mastodon requests share this numbering, which plans
    /// the faults).
    pub requests: u64,
    /// Of `requests`, Mastodon account lookups.
    pub mastodon_requests: u64,
    /// 200 with counts.
    pub ok: u64,
    /// 200 with an invalid body.
    pub malformed: u64,
    /// Throttled (code 4).
    pub throttled: u64,
    /// 500 (code 2).
    pub server_errors: u64,
    /// Missing token (code 190).
    pub invalid_token: u64,
    /// Bad ids or fields (code 100).
    pub bad_request: u64,
    /// Mastodon lookups of accounts outside the population (404); each also counts in
    /// `unknown_ids`.
    pub not_found: u64,
    /// Delayed replies.
    pub slow: u64,
    /// Per-id errors for ids outside the population (Mastodon 404s included).
    pub unknown_ids: u64,
    /// Page counts served in 200 replies (malformed ones included: the server cannot know the
    /// client failed to read them).
    pub pages_served: u64,
    /// Distinct pages served at least once.
    pub distinct_pages_served: u64,
    /// The most times any one page was served.
    pub max_serves_per_page: u64,
}

impl Stats {
    fn new(pages: u64) -> Self {
        Self {
            requests: AtomicU64::new(0),
            mastodon_requests: AtomicU64::new(0),
            outcomes: Default::default(),
            slow: AtomicU64::new(0),
            unknown_ids: AtomicU64::new(0),
            serves: (0..pages).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    /// The next request number (from 1), for either API.
    fn number(&self) -> u64 {
        self.requests.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn record(&self, reply: &Reply) {
        self.record_parts(reply.outcome, reply.delay, &reply.served, reply.unknown_ids);
    }

    fn record_mastodon(&self, reply: &mastodon::Reply) {
        self.mastodon_requests.fetch_add(1, Ordering::Relaxed);
        let unknown = u64::from(reply.outcome == Outcome::NotFound);
        self.record_parts(reply.outcome, reply.delay, reply.served.as_slice(), unknown);
    }

    fn record_parts(&self, outcome: Outcome, delay: Duration, served: &[u64], unknown_ids: u64) {
        self.outcomes[outcome as usize].fetch_add(1, Ordering::Relaxed);
        self.slow.fetch_add(u64::from(!delay.is_zero()), Ordering::Relaxed);
        self.unknown_ids.fetch_add(unknown_ids, Ordering::Relaxed);
        for i in served {
            if let Some(c) = self.serves.get((*i - 1) as usize) {
                // Err only when already saturated at u32::MAX, which is then the right value.
                let _ = c.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_add(1));
            }
        }
    }

    /// Times page `index` (1-based) was served; 0 outside the population.
    pub fn serves(&self, index: u64) -> u32 {
        index.checked_sub(1).and_then(|i| self.serves.get(i as usize)).map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// A copy of every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        let o = |x: Outcome| self.outcomes[x as usize].load(Ordering::Relaxed);
        let serves = self.serves.iter().map(|c| u64::from(c.load(Ordering::Relaxed)));
        let (mut total, mut distinct, mut max) = (0, 0, 0);
        for s in serves {
            (total, distinct, max) = (total + s, distinct + u64::from(s > 0), max.max(s));
        }
        StatsSnapshot {
            requests: self.requests.load(Ordering::Relaxed),
            mastodon_requests: self.mastodon_requests.load(Ordering::Relaxed),
            ok: o(Outcome::Ok),
            malformed: o(Outcome::Malformed),
            throttled: o(Outcome::Throttled),
            server_errors: o(Outcome::ServerError),
            invalid_token: o(Outcome::InvalidToken),
            bad_request: o(Outcome::BadRequest),
            not_found: o(Outcome::NotFound),
            slow: self.slow.load(Ordering::Relaxed),
            unknown_ids: self.unknown_ids.load(Ordering::Relaxed),
            pages_served: total,
            distinct_pages_served: distinct,
            max_serves_per_page: max,
        }
    }
}

struct State {
    cfg: SimConfig,
    stats: Arc<Stats>,
}

async fn graph(state: web::Data<State>, q: web::Query<ApiQuery>) -> HttpResponse {
    let seq = state.stats.number();
    // Counts are taken at arrival, before any delay, so a test's expected time is the one it set.
    let reply = respond(&state.cfg, &q, seq, state.cfg.clock.now().timestamp_millis());
    state.stats.record(&reply);
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    HttpResponse::build(StatusCode::from_u16(reply.status).expect("respond only uses 200, 400 and 500"))
        .content_type("application/json; charset=UTF-8")
        .insert_header(("X-App-Usage", reply.app_usage))
        .insert_header(("X-Business-Use-Case-Usage", reply.business_usage))
        .body(reply.body)
}

async fn mastodon_lookup(state: web::Data<State>, q: web::Query<LookupQuery>, req: HttpRequest) -> HttpResponse {
    let seq = state.stats.number();
    // A header that is not visible ASCII is no bearer token: answered like an invalid one.
    let authorization = req.headers().get(header::AUTHORIZATION).map(|h| h.to_str().unwrap_or(""));
    let reply = mastodon::respond(&state.cfg, &q, authorization, seq, state.cfg.clock.now().timestamp_millis());
    state.stats.record_mastodon(&reply);
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    HttpResponse::build(StatusCode::from_u16(reply.status).expect("respond only uses 200, 401, 404, 429 and 503"))
        .content_type("application/json; charset=utf-8")
        .insert_header(("X-RateLimit-Limit", reply.limit.to_string()))
        .insert_header(("X-RateLimit-Remaining", reply.remaining.to_string()))
        .insert_header(("X-RateLimit-Reset", reply.reset))
        .body(reply.body)
}

async fn stats_handler(state: web::Data<State>) -> HttpResponse {
    HttpResponse::Ok().json(state.stats.snapshot())
}

async fn unknown_path() -> HttpResponse {
    HttpResponse::BadRequest().content_type("application/json; charset=UTF-8").body(error_body(
        "Unknown path components",
        2500,
        false,
        0,
    ))
}

/// A running simulator.
pub struct SimServer {
    handle: ServerHandle,
    addr: SocketAddr,
    stats: Arc<Stats>,
}

impl SimServer {
    /// The bound address (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The live counters.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Stops accepting and finishes in-flight requests.
    pub async fn stop(self) {
        self.handle.stop(true).await;
    }
}

/// Validates `cfg` and starts the simulator on the current actix system, serving the Graph API
/// at `/{version}/`, Mastodon's account lookup at [`mastodon::LOOKUP_PATH`] and the counters at
/// `/stats`. Signals are left to the caller. The server starts
/// accepting only once the calling task yields: a test must not make blocking requests from the
/// system's own thread (use `spawn_blocking` or another thread).
pub fn start(cfg: SimConfig, addr: SocketAddr) -> Result<SimServer> {
    cfg.validate()?;
    let stats = Arc::new(Stats::new(cfg.pages));
    let paths = vec![format!("/{}/", cfg.version), format!("/{}", cfg.version)];
    let state = web::Data::new(State { cfg, stats: stats.clone() });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .service(web::resource(paths.clone()).route(web::get().to(graph)))
            .route(mastodon::LOOKUP_PATH, web::get().to(mastodon_lookup))
            .route("/stats", web::get().to(stats_handler))
            .default_service(web::to(unknown_path))
    })
    // One worker: slow replies wait asynchronously, so they do not hold it.
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .bind(addr)
    .map_err(|source| Error::Bind { addr, source })?;
    let bound = server.addrs().first().copied().unwrap_or(addr);
    let server = server.run();
    let handle = server.handle();
    actix_rt::spawn(server);
    Ok(SimServer { handle, addr: bound, stats })
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU64;

    use super::*;
    use crate::simulate::faults::Plan;
    use crate::simulate::trajectory::page_id;

    fn query(ids: &[String]) -> ApiQuery {
        ApiQuery {
            ids: Some(ids.join(",")),
            fields: Some("fan_count,followers_count".into()),
            access_token: Some("t".into()),
        }
    }

    #[test]
    fn validate_reports_every_problem() {
        let cfg = SimConfig {
            pages: 0,
            version: "a/b".into(),
            error_rate: 2.0,
            slow_rate: -1.0,
            slow_ms: 61_000,
            ..Default::default()
        };
        let Err(Error::Invalid(problems)) = cfg.validate() else { panic!("accepted") };
        let all = problems.join("\n");
        for key in ["pages", "version", "error_rate", "slow_rate", "slow_ms"] {
            assert!(all.contains(&format!("{key}:")), "{key} missing from {all}");
        }
        assert!(SimConfig::default().validate().is_ok());
    }

    #[test]
    fn faults_are_deterministic_and_follow_their_rates() {
        let cfg = SimConfig { error_rate: 0.1, malformed_rate: 0.3, seed: 7, ..Default::default() };
        let plans: Vec<Plan> = (1..=10_000).map(|s| cfg.plan(s)).collect();
        assert_eq!(plans, (1..=10_000).map(|s| cfg.plan(s)).collect::<Vec<_>>());
        let errors = plans.iter().filter(|p| p.server_error).count();
        let malformed = plans.iter().filter(|p| p.malformed).count();
        assert!((800..1200).contains(&errors), "{errors}");
        assert!((2700..3300).contains(&malformed), "{malformed}");
        assert!(plans.iter().all(|p| !p.throttled && p.delay.is_zero()));
        let other_seed = SimConfig { seed: 8, ..cfg.clone() };
        assert_ne!(plans[..100], (1..=100).map(|s| other_seed.plan(s)).collect::<Vec<_>>()[..]);
    }

    #[test]
    fn usage_rises_towards_the_every_nth_throttle() {
        let cfg = SimConfig { throttle_every: NonZeroU64::new(4), ..Default::default() };
        let usage: Vec<u64> = (1..=4).map(|s| cfg.usage_percent(s)).collect();
        assert_eq!(usage, [25, 50, 75, 0]);
        assert!(!cfg.plan(3).throttled && cfg.plan(4).throttled && cfg.plan(8).throttled);
        let reply = respond(&cfg, &query(&[page_id(1)]), 4, 0);
        assert_eq!((reply.status, reply.outcome), (400, Outcome::Throttled));
        assert!(reply.app_usage.contains("\"call_count\":100"), "{}", reply.app_usage);
    }

    #[test]
    fn every_kind_of_malformed_body_is_invalid_json() {
        let cfg = SimConfig { malformed_rate: 1.0, ..Default::default() };
        for seq in 1..=3 {
            let reply = respond(&cfg, &query(&[page_id(1), page_id(2)]), seq, 0);
            assert_eq!((reply.status, reply.outcome), (200, Outcome::Malformed));
            assert!(serde_json::from_str::<Value>(&reply.body).is_err(), "{:?}", reply.body);
        }
    }

    #[test]
    fn fields_are_validated_and_only_requested_ones_returned() {
        let cfg = SimConfig::default();
        let mut q = query(&[page_id(3), page_id(3)]);
        q.fields = Some("followers_count".into());
        let reply = respond(&cfg, &q, 1, 0);
        let body: Value = serde_json::from_str(&reply.body).expect("json");
        assert_eq!(
            body,
            json!({ "page-000003": { "followers_count": trajectory::fans_at("page-000003", 0).1, "id": "page-000003" } })
        );
        assert_eq!(reply.served, [3], "a repeated id is served once");
        for bad in ["id", "", "fan_count,name"] {
            q.fields = Some(bad.into());
            let reply = respond(&cfg, &q, 1, 0);
            assert_eq!((reply.status, reply.outcome), (400, Outcome::BadRequest), "fields={bad}");
            assert!(reply.body.contains("\"code\":100"));
        }
    }
}
