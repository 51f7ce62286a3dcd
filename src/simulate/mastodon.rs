//! The simulator's Mastodon account lookup, served by the same server as the Graph API
//! ([`super::graph_api::start`]): `GET /api/v1/accounts/lookup?acct=page-000001` answers the
//! account of a simulated page, with the same faults from the same [`SimConfig`] and the same
//! request numbering as Graph requests (the two APIs share one fault sequence).
//!
//! A Mastodon account has followers, not fans: `followers_count` is the trajectory's
//! *followers* figure ([`trajectory::fans_at`]'s second value) at the injected clock's time, and
//! [`crate::poll::mastodon::interpret`] reports it as both fans and followers.
//!
//! The request handling is the plain function [`respond`]; the server's handler numbers the
//! request, records the outcome, waits the planned delay and writes the reply.
//!
//! # Behaviour, in the order it is checked
//!
//! 1. An `Authorization` header that is not `Bearer <token>` with a non-empty token: 401
//!    `{"error":"The access token is invalid"}`. No header is fine: lookups are public.
//! 2. Throttling (every Nth request and/or a rate): 429 `{"error":"Too many requests"}`.
//! 3. A server error (rate): 503 `{"error":"Service Unavailable"}`, as a proxy in front of an
//!    overloaded instance answers.
//! 4. An `acct` (a leading `@` is ignored) that is not one of `page-000001` ..= `page_id(pages)`,
//!    or none: 404 `{"error":"Record not found"}`.
//! 5. Success: 200 with the account. A malformed reply (rate) replaces the body with invalid
//!    JSON and still answers 200, as for the Graph API.
//!
//! Every reply carries `X-RateLimit-Limit` ([`RATE_LIMIT`]), `X-RateLimit-Remaining` (falling as
//! [`SimConfig::usage_percent`] rises; 0 when throttled) and `X-RateLimit-Reset`: the clock's
//! time plus [`RESET_AFTER_MS`] in RFC 3339, the window always said to reset a minute later, like
//! the Graph API's one-minute `estimated_time_to_regain_access`.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat};
use serde::Deserialize;
use serde_json::json;

use super::faults::{broken_body, Outcome, SimConfig};
use super::trajectory::{self, page_index, EPOCH_MS};

/// The path of the account lookup.
pub const LOOKUP_PATH: &str = "/api/v1/accounts/lookup";
/// `X-RateLimit-Limit`: calls per window, Mastodon's default for most endpoints.
pub const RATE_LIMIT: u64 = 300;
/// `X-RateLimit-Reset` is this long after the clock's time.
pub const RESET_AFTER_MS: i64 = 60_000;

/// The query string of an account lookup (other parameters are ignored).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct LookupQuery {
    /// The account: `page-000001`, optionally with a leading `@`.
    pub acct: Option<String>,
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
    /// `X-RateLimit-Limit`.
    pub limit: u64,
    /// `X-RateLimit-Remaining`.
    pub remaining: u64,
    /// `X-RateLimit-Reset` (RFC 3339).
    pub reset: String,
    /// Wait this long before writing the reply.
    pub delay: Duration,
    /// The index of the page whose account the body holds.
    pub served: Option<u64>,
}

fn error_body(message: &str) -> String {
    json!({ "error": message }).to_string()
}

/// Whether an `Authorization` header (if any) is acceptable: absent, or a bearer token.
fn authorized(authorization: Option<&str>) -> bool {
    authorization.is_none_or(|h| {
        h.split_once(' ')
            .is_some_and(|(scheme, token)| scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty())
    })
}

/// Answers lookup number `seq` (numbered with the Graph requests) at `now_ms`, given the
/// request's `Authorization` header (see the module documentation for the rules).
pub fn respond(cfg: &SimConfig, q: &LookupQuery, authorization: Option<&str>, seq: u64, now_ms: i64) -> Reply {
    let plan = cfg.plan(seq);
    let usage = if plan.throttled { 100 } else { cfg.usage_percent(seq) };
    let reset = DateTime::from_timestamp_millis(now_ms.saturating_add(RESET_AFTER_MS))
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true);
    let mut reply = Reply {
        status: 404,
        body: String::new(),
        outcome: Outcome::NotFound,
        limit: RATE_LIMIT,
        remaining: RATE_LIMIT - RATE_LIMIT * usage.min(100) / 100,
        reset,
        delay: plan.delay,
        served: None,
    };
    let mut set = |status, outcome, body| (reply.status, reply.outcome, reply.body) = (status, outcome, body);
    let acct = q.acct.as_deref().map(|a| a.trim().trim_start_matches('@')).unwrap_or("");
    let index = page_index(acct).filter(|i| (1..=cfg.pages).contains(i));
    if !authorized(authorization) {
        set(401, Outcome::InvalidToken, error_body("The access token is invalid"));
    } else if plan.throttled {
        set(429, Outcome::Throttled, error_body("Too many requests"));
    } else if plan.server_error {
        set(503, Outcome::ServerError, error_body("Service Unavailable"));
    } else if let Some(i) = index {
        let body = account(i, acct, now_ms);
        if plan.malformed {
            set(200, Outcome::Malformed, broken_body(&body, seq));
        } else {
            set(200, Outcome::Ok, body);
        }
        reply.served = Some(i);
    } else {
        set(404, Outcome::NotFound, error_body("Record not found"));
    }
    reply
}

/// The account of page `index` (`acct`) at `now_ms`, with the fields a client of the real API
/// may read.
fn account(index: u64, acct: &str, now_ms: i64) -> String {
    let (_, followers) = trajectory::fans_at(acct, now_ms);
    let created =
        DateTime::from_timestamp_millis(EPOCH_MS).unwrap_or_default().to_rfc3339_opts(SecondsFormat::Millis, true);
    json!({
        "id": index.to_string(),
        "username": acct,
        "acct": acct,
        "display_name": acct,
        "locked": false,
        "bot": false,
        "created_at": created,
        "note": "",
        "followers_count": followers,
        "following_count": 0,
        "statuses_count": 0,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU64;

    use serde_json::Value;

    use super::*;
    use crate::poll::mastodon::rate_limit;
    use crate::simulate::trajectory::{fans_at, page_id};

    const NOW: i64 = EPOCH_MS + 100 * 86_400_000 + 4_321_000;

    fn lookup(acct: &str) -> LookupQuery {
        LookupQuery { acct: Some(acct.into()) }
    }

    fn json(body: &str) -> Value {
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
    }

    #[test]
    fn an_account_has_the_followers_of_its_trajectory() {
        let cfg = SimConfig::default();
        for acct in ["page-000007", "@page-000007"] {
            let r = respond(&cfg, &lookup(acct), None, 1, NOW);
            assert_eq!((r.status, r.outcome, r.served), (200, Outcome::Ok, Some(7)), "{acct}");
            let v = json(&r.body);
            assert_eq!(v["followers_count"], fans_at("page-000007", NOW).1);
            assert_eq!((v["id"].as_str(), v["acct"].as_str()), (Some("7"), Some("page-000007")));
        }
        let later = respond(&cfg, &lookup("page-000007"), None, 2, NOW + 86_400_000);
        assert_eq!(json(&later.body)["followers_count"], fans_at("page-000007", NOW + 86_400_000).1);
    }

    #[test]
    fn unknown_or_missing_accounts_are_404() {
        let cfg = SimConfig { pages: 10, ..SimConfig::default() };
        for q in [lookup("page-000011"), lookup("page-000000"), lookup("Gargron"), lookup(""), LookupQuery::default()] {
            let r = respond(&cfg, &q, None, 1, NOW);
            assert_eq!((r.status, r.outcome, r.served), (404, Outcome::NotFound, None), "{q:?}");
            assert_eq!(json(&r.body), serde_json::json!({ "error": "Record not found" }));
        }
    }

    #[test]
    fn a_bad_authorization_header_is_401_and_none_is_fine() {
        let cfg = SimConfig::default();
        for ok in [None, Some("Bearer abc"), Some("bearer abc")] {
            assert_eq!(respond(&cfg, &lookup(&page_id(1)), ok, 1, NOW).status, 200, "{ok:?}");
        }
        for bad in ["Bearer ", "Bearer", "Basic dXNlcjpwYXNz", ""] {
            let r = respond(&cfg, &lookup(&page_id(1)), Some(bad), 1, NOW);
            assert_eq!((r.status, r.outcome), (401, Outcome::InvalidToken), "{bad:?}");
        }
    }

    #[test]
    fn throttling_is_429_with_the_budget_spent_and_a_reset_a_minute_on() {
        let cfg = SimConfig { throttle_rate: 1.0, ..SimConfig::default() };
        let r = respond(&cfg, &lookup(&page_id(1)), None, 1, NOW);
        assert_eq!((r.status, r.outcome, r.limit, r.remaining), (429, Outcome::Throttled, 300, 0));
        assert_eq!(json(&r.body), serde_json::json!({ "error": "Too many requests" }));
        let rl = rate_limit(Some("300"), Some("0"), Some(&r.reset), NOW);
        assert_eq!(rl.reset_after, Some(Duration::from_secs(60)), "{}", r.reset);
    }

    #[test]
    fn remaining_falls_as_usage_rises_towards_the_every_nth_throttle() {
        let cfg = SimConfig { throttle_every: NonZeroU64::new(4), ..SimConfig::default() };
        let seen: Vec<(u16, u64)> = (1..=4)
            .map(|seq| respond(&cfg, &lookup(&page_id(1)), None, seq, NOW))
            .map(|r| (r.status, r.remaining))
            .collect();
        assert_eq!(seen, [(200, 225), (200, 150), (200, 75), (429, 0)]);
        // The client reads back the simulator's usage percentage exactly.
        for seq in 1..=3 {
            let r = respond(&cfg, &lookup(&page_id(1)), None, seq, NOW);
            let rl = rate_limit(Some(&r.limit.to_string()), Some(&r.remaining.to_string()), Some(&r.reset), NOW);
            assert_eq!(u64::from(rl.used_pct), cfg.usage_percent(seq));
            assert_eq!(rl.reset_after, None, "the budget is not spent");
        }
    }

    #[test]
    fn server_errors_are_503_and_malformed_bodies_invalid_json() {
        let cfg = SimConfig { error_rate: 1.0, ..SimConfig::default() };
        let r = respond(&cfg, &lookup(&page_id(1)), None, 1, NOW);
        assert_eq!((r.status, r.outcome), (503, Outcome::ServerError));
        let cfg = SimConfig { malformed_rate: 1.0, ..SimConfig::default() };
        for seq in 1..=3 {
            let r = respond(&cfg, &lookup(&page_id(1)), None, seq, NOW);
            assert_eq!((r.status, r.outcome, r.served), (200, Outcome::Malformed, Some(1)));
            assert!(serde_json::from_str::<Value>(&r.body).is_err(), "{:?}", r.body);
        }
        // An unknown account is answered 404 even when the reply would have been malformed.
        assert_eq!(respond(&cfg, &lookup("nobody"), None, 1, NOW).status, 404);
    }

    #[test]
    fn slow_replies_are_planned_from_the_shared_config() {
        let cfg = SimConfig { slow_ms: 250, slow_rate: 1.0, ..SimConfig::default() };
        assert_eq!(respond(&cfg, &lookup(&page_id(1)), None, 1, NOW).delay, Duration::from_millis(250));
    }
}
