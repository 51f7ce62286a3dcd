//! Mastodon, the second platform: `GET {instance}/api/v1/accounts/lookup?acct=user` returns one
//! account with its `followers_count` (an account has followers, not fans: both figures carry
//! `followers_count`). One account per request; rate limits come as `X-RateLimit-Limit`,
//! `X-RateLimit-Remaining` and `X-RateLimit-Reset` (an RFC 3339 time) headers, and HTTP 429 when
//! exceeded. Plain functions, like [`super::facebook`], and [`MastodonPlatform`], the thin
//! [`Platform`] over them that sends the requests.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::http;
pub use super::http::Token;
use super::platform::{BatchOutcome, FetchFuture, Fetched, PageResult, Platform};
use crate::clock::{Clock, SystemClock};

/// The lookup URL for account `acct` (`user` on that instance, or `user@other.instance`) on
/// `instance` (e.g. `https://mastodon.social`).
pub fn lookup_url(instance: &str, acct: &str) -> String {
    let mut url = format!("{}/api/v1/accounts/lookup?acct=", instance.trim_end_matches('/'));
    for b in acct.trim_start_matches('@').bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'@') {
            url.push(b as char);
        } else {
            url.push_str(&format!("%{b:02X}"));
        }
    }
    url
}

/// Rate-limit figures from the response headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RateLimit {
    /// Share of the window's budget used, in percent (the limiter slows down near 100).
    pub used_pct: u32,
    /// Time until the window resets, when the budget is used up.
    pub reset_after: Option<Duration>,
}

/// Reads the `X-RateLimit-*` headers at `now_ms`. Missing or unreadable headers mean no limit
/// information.
pub fn rate_limit(limit: Option<&str>, remaining: Option<&str>, reset: Option<&str>, now_ms: i64) -> RateLimit {
    let (Some(limit), Some(remaining)) =
        (limit.and_then(|l| l.trim().parse::<u64>().ok()), remaining.and_then(|r| r.trim().parse::<u64>().ok()))
    else {
        return RateLimit::default();
    };
    if limit == 0 {
        return RateLimit::default();
    }
    let used_pct = (limit.saturating_sub(remaining) * 100 / limit) as u32;
    let reset_after = (remaining == 0)
        .then(|| reset.and_then(|r| chrono::DateTime::parse_from_rfc3339(r.trim()).ok()))
        .flatten()
        .map(|t| Duration::from_millis((t.timestamp_millis() - now_ms).max(0) as u64));
    RateLimit { used_pct, reset_after }
}

/// Interprets one lookup answer for `acct`.
pub fn interpret(status: u16, body: &[u8], acct: &str, limit: RateLimit) -> BatchOutcome {
    let parsed: Result<Value, _> = serde_json::from_slice(body);
    let message = || {
        parsed
            .as_ref()
            .ok()
            .and_then(|v| v.get("error")?.as_str().map(str::to_string))
            .unwrap_or_else(|| format!("HTTP {status}"))
    };
    match status {
        429 => return BatchOutcome::Throttled { code: 429, retry_after: limit.reset_after },
        404 | 410 => {
            return BatchOutcome::Pages(vec![(
                acct.to_string(),
                PageResult::Failed { code: status.into(), message: message() },
            )])
        }
        s if s >= 500 => return BatchOutcome::Transient { status, message: message() },
        s if s != 200 => return BatchOutcome::Rejected { code: s.into(), message: message() },
        _ => {}
    }
    let v = match parsed {
        Ok(v) => v,
        Err(e) => return BatchOutcome::Malformed { reason: format!("HTTP 200 with a body that is not JSON: {e}") },
    };
    match v.get("followers_count").and_then(Value::as_u64) {
        Some(n) => BatchOutcome::Pages(vec![(acct.to_string(), PageResult::Counts { fans: n, followers: Some(n) })]),
        None => BatchOutcome::Malformed { reason: "the account has no followers_count".into() },
    }
}

/// The rate-limit headers, in the order [`rate_limit`] takes them.
pub const RATE_LIMIT_HEADERS: [&str; 3] = ["X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"];

/// Where and how [`MastodonPlatform`] reaches an instance.
#[derive(Debug, Clone)]
pub struct MastodonSettings {
    /// The instance's origin, e.g. `https://mastodon.social` (or a simulator's
    /// `http://127.0.0.1:8787`). Accounts elsewhere are looked up as `user@other.instance`.
    pub base_url: String,
    /// An access token, sent as `Authorization: Bearer`. Account lookups are public, so none is
    /// needed; an authenticated client gets the per-account rate limit instead of the per-IP
    /// one. Never printed.
    pub token: Option<Token>,
    /// Longest one request may take, from connecting to the last byte of the body; a slower
    /// request ends as [`BatchOutcome::Transient`] with status 0.
    pub timeout: Duration,
}

/// A Mastodon instance as a [`Platform`]: one account lookup per [`fetch`](Platform::fetch),
/// its rate-limit headers reported alongside the outcome. Cheap to clone.
#[derive(Clone)]
pub struct MastodonPlatform {
    settings: Arc<MastodonSettings>,
    client: reqwest::Client,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for MastodonPlatform {
    /// The settings (a token prints as `***`), not the client's internals.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MastodonPlatform").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl MastodonPlatform {
    /// A client for `settings` reading `X-RateLimit-Reset` against the system clock.
    pub fn new(settings: MastodonSettings) -> http::Result<Self> {
        Self::with_clock(settings, Arc::new(SystemClock))
    }

    /// A client that reads `X-RateLimit-Reset` against `clock`: a test shares its clock with
    /// the simulator so the reset falls an exact time away. Fails on a base URL that is not an
    /// absolute http(s) URL, or when the TLS backend cannot start.
    pub fn with_clock(settings: MastodonSettings, clock: Arc<dyn Clock>) -> http::Result<Self> {
        http::check_base_url(&settings.base_url)?;
        let client = http::client(settings.timeout)?;
        Ok(Self { settings: Arc::new(settings), client, clock })
    }

    /// The settings it was built from.
    pub fn settings(&self) -> &MastodonSettings {
        &self.settings
    }
}

/// What one lookup answer for `acct` comes to: `status`, the three `X-RateLimit-*` headers (in
/// the order of [`RATE_LIMIT_HEADERS`]) and `body` as received, read at `now_ms`.
pub fn fetched(status: u16, headers: [Option<&str>; 3], body: &[u8], acct: &str, now_ms: i64) -> Fetched {
    let [limit, remaining, reset] = headers;
    let rl = rate_limit(limit, remaining, reset, now_ms);
    Fetched { outcome: interpret(status, body, acct, rl), usage_pct: rl.used_pct, pause: rl.reset_after }
}

impl Platform for MastodonPlatform {
    fn name(&self) -> &'static str {
        "mastodon"
    }

    fn max_batch(&self) -> usize {
        1
    }

    fn cost(&self, _ids: usize) -> u32 {
        1
    }

    fn fetch(&self, ids: Vec<String>) -> FetchFuture {
        let Ok([acct]) = <[String; 1]>::try_from(ids) else {
            // A broken caller, not a platform answer: Mastodon looks up one account at a time.
            let message = "a Mastodon lookup names exactly one account".to_string();
            let outcome = BatchOutcome::Rejected { code: -1, message };
            return Box::pin(std::future::ready(Fetched { outcome, usage_pct: 0, pause: None }));
        };
        let url = lookup_url(&self.settings.base_url, &acct);
        let (client, clock, settings) = (self.client.clone(), self.clock.clone(), self.settings.clone());
        Box::pin(async move {
            match http::get(&client, &url, settings.token.as_ref(), RATE_LIMIT_HEADERS).await {
                Err(outcome) => Fetched { outcome, usage_pct: 0, pause: None },
                Ok(answer) => {
                    let headers = answer.headers.each_ref().map(Option::as_deref);
                    fetched(answer.status, headers, &answer.body, &acct, clock.now().timestamp_millis())
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_428_000_000; // 2026-11-23T10:00:00Z

    #[test]
    fn url_keeps_the_acct_and_encodes_the_rest() {
        assert_eq!(
            lookup_url("https://mastodon.social/", "@Gargron"),
            "https://mastodon.social/api/v1/accounts/lookup?acct=Gargron"
        );
        assert_eq!(
            lookup_url("https://x.y", "ana@example.social"),
            "https://x.y/api/v1/accounts/lookup?acct=ana@example.social"
        );
        assert_eq!(lookup_url("https://x.y", "a b&c"), "https://x.y/api/v1/accounts/lookup?acct=a%20b%26c");
    }

    #[test]
    fn an_account_yields_its_followers() {
        let body = br#"{"id":"1","username":"Gargron","acct":"Gargron","followers_count":312345,"following_count":10}"#;
        assert_eq!(
            interpret(200, body, "Gargron", RateLimit::default()),
            BatchOutcome::Pages(vec![("Gargron".into(), PageResult::Counts { fans: 312345, followers: Some(312345) })])
        );
    }

    #[test]
    fn unknown_accounts_fail_alone_and_errors_are_classified() {
        let r = interpret(404, br#"{"error":"Record not found"}"#, "nobody", RateLimit::default());
        assert_eq!(
            r,
            BatchOutcome::Pages(vec![(
                "nobody".into(),
                PageResult::Failed { code: 404, message: "Record not found".into() }
            )])
        );
        assert!(matches!(
            interpret(503, b"<html>", "a", RateLimit::default()),
            BatchOutcome::Transient { status: 503, .. }
        ));
        assert!(matches!(
            interpret(401, br#"{"error":"The access token is invalid"}"#, "a", RateLimit::default()),
            BatchOutcome::Rejected { code: 401, .. }
        ));
        assert!(matches!(interpret(200, br#"{"id":"#, "a", RateLimit::default()), BatchOutcome::Malformed { .. }));
        assert!(matches!(interpret(200, br#"{"id":"1"}"#, "a", RateLimit::default()), BatchOutcome::Malformed { .. }));
    }

    #[test]
    fn rate_limit_headers_drive_slowdown_and_pause() {
        let rl = rate_limit(Some("300"), Some("0"), Some("2026-11-23T10:05:00.000Z"), NOW);
        assert_eq!(rl, RateLimit { used_pct: 100, reset_after: Some(Duration::from_secs(300)) });
        assert_eq!(
            interpret(429, b"{}", "a", rl),
            BatchOutcome::Throttled { code: 429, retry_after: Some(Duration::from_secs(300)) }
        );
        assert_eq!(
            rate_limit(Some("300"), Some("75"), Some("2026-11-23T10:05:00Z"), NOW),
            RateLimit { used_pct: 75, reset_after: None }
        );
        assert_eq!(rate_limit(None, Some("1"), None, NOW), RateLimit::default());
        assert_eq!(rate_limit(Some("x"), Some("1"), None, NOW), RateLimit::default());
    }

    fn settings() -> MastodonSettings {
        MastodonSettings {
            base_url: "https://mastodon.social".into(),
            token: Some(Token::new("very-secret-bearer")),
            timeout: Duration::from_secs(10),
        }
    }

    #[test]
    fn usage_and_pause_come_with_every_outcome() {
        let reset = Some("2026-11-23T10:01:00.000Z");
        let ok = br#"{"id":"1","acct":"a","followers_count":7}"#;
        let f = fetched(200, [Some("300"), Some("60"), reset], ok, "a", NOW);
        assert_eq!(
            f.outcome,
            BatchOutcome::Pages(vec![("a".into(), PageResult::Counts { fans: 7, followers: Some(7) })])
        );
        assert_eq!((f.usage_pct, f.pause), (80, None));
        let f = fetched(429, [Some("300"), Some("0"), reset], br#"{"error":"Too many requests"}"#, "a", NOW);
        let minute = Some(Duration::from_secs(60));
        assert_eq!(
            f,
            Fetched {
                outcome: BatchOutcome::Throttled { code: 429, retry_after: minute },
                usage_pct: 100,
                pause: minute
            }
        );
        let f = fetched(200, [None, None, None], ok, "a", NOW);
        assert_eq!((f.usage_pct, f.pause), (0, None), "no headers, no usage");
    }

    #[test]
    fn the_platform_describes_itself_without_its_token() {
        let p = MastodonPlatform::new(settings()).expect("a valid configuration");
        assert_eq!((p.name(), p.max_batch(), p.cost(1)), ("mastodon", 1, 1));
        let debug = format!("{p:?}");
        assert!(debug.contains("mastodon.social") && !debug.contains("very-secret"), "{debug}");
        let bad = MastodonSettings { base_url: "mastodon.social".into(), ..settings() };
        assert!(matches!(MastodonPlatform::new(bad), Err(http::Error::BaseUrl { .. })));
    }

    #[tokio::test]
    async fn anything_but_one_account_is_refused_without_a_request() {
        let p = MastodonPlatform::new(settings()).expect("a valid configuration");
        for ids in [vec![], vec!["a".to_string(), "b".to_string()]] {
            let f = p.fetch(ids).await;
            assert!(matches!(f.outcome, BatchOutcome::Rejected { code: -1, .. }), "{f:?}");
            assert_eq!((f.usage_pct, f.pause), (0, None));
        }
    }
}
