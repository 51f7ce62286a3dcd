//! The Facebook Graph API: building batch requests and interpreting their answers (per-page
//! results, throttling, usage headers, retryable and final errors) as plain functions, so every
//! case is tested without a network, and [`FacebookPlatform`], the thin [`Platform`] over them
//! that sends the requests.
//!
//! A batch is `GET {base}/{version}/?ids=a,b,...&fields=fan_count,followers_count&access_token=...`
//! with at most [`MAX_IDS`] ids. The answer is an object keyed by id; an id the API cannot read
//! comes back as `{"error": {...}}` in its place (code 100: unknown page), and the rest of the
//! batch stands. Throttling is `error.code` 4, 17, 32, 613 or 80001 with type `OAuthException`;
//! `X-App-Usage` and `X-Business-Use-Case-Usage` carry usage percentages, and the latter an
//! `estimated_time_to_regain_access` in minutes.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::http;
pub use super::http::Token;
pub use super::platform::{BatchOutcome, PageResult};
use super::platform::{FetchFuture, Fetched, Platform};

/// Most ids the Graph API accepts in one request.
pub const MAX_IDS: usize = 50;

/// Error codes that mean "throttled": back off, do not count the pages as failing.
pub const THROTTLE_CODES: [i64; 5] = [4, 17, 32, 613, 80001];

/// Percent-encodes everything outside RFC 3986's unreserved set.
fn encode(s: &str, out: &mut String) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// The URL of one batch request (path and query after `base`, which has no trailing slash).
///
/// # Panics
/// With more than [`MAX_IDS`] ids: callers cut batches to that size.
pub fn batch_url(base: &str, version: &str, ids: &[&str], token: &Token) -> String {
    assert!(ids.len() <= MAX_IDS, "at most {MAX_IDS} ids per request");
    let mut url = format!("{}/{}/?ids=", base.trim_end_matches('/'), version);
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            url.push_str("%2C");
        }
        encode(id, &mut url);
    }
    url.push_str("&fields=fan_count%2Cfollowers_count&access_token=");
    encode(token.secret(), &mut url);
    url
}

/// Usage figures from the response headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// The highest percentage in either header (call count, CPU time, total time): the limiter
    /// slows down as it approaches 100.
    pub max_pct: u32,
    /// `estimated_time_to_regain_access` (minutes in the header), when non-zero.
    pub regain_after: Option<Duration>,
}

fn pct(v: &Value) -> u32 {
    v.as_f64().map(|p| p.clamp(0.0, 1000.0) as u32).unwrap_or(0)
}

fn max_pct_of(obj: &serde_json::Map<String, Value>) -> u32 {
    ["call_count", "total_cputime", "total_time"].iter().map(|k| obj.get(*k).map(pct).unwrap_or(0)).max().unwrap_or(0)
}

/// Reads `X-App-Usage` (`{"call_count":..,"total_cputime":..,"total_time":..}`) and
/// `X-Business-Use-Case-Usage` (`{"<business id>":[{"type":..,"call_count":..,...,
/// "estimated_time_to_regain_access":minutes}]}`). Unreadable headers count as no usage.
pub fn usage(app_usage: Option<&str>, business_usage: Option<&str>) -> Usage {
    let mut u = Usage::default();
    if let Some(Value::Object(o)) = app_usage.and_then(|h| serde_json::from_str(h).ok()) {
        u.max_pct = u.max_pct.max(max_pct_of(&o));
    }
    if let Some(Value::Object(o)) = business_usage.and_then(|h| serde_json::from_str(h).ok()) {
        for entries in o.values().filter_map(Value::as_array) {
            for e in entries.iter().filter_map(Value::as_object) {
                u.max_pct = u.max_pct.max(max_pct_of(e));
                let minutes = e.get("estimated_time_to_regain_access").and_then(Value::as_u64).unwrap_or(0);
                if minutes > 0 {
                    let d = Duration::from_secs(minutes * 60);
                    u.regain_after = Some(u.regain_after.map_or(d, |cur| cur.max(d)));
                }
            }
        }
    }
    u
}

fn error_of(v: &Value) -> Option<(i64, String, bool)> {
    let e = v.get("error")?.as_object()?;
    let code = e.get("code").and_then(Value::as_i64).unwrap_or(-1);
    let message = e.get("message").and_then(Value::as_str).unwrap_or("").to_string();
    let transient = e.get("is_transient").and_then(Value::as_bool).unwrap_or(false);
    Some((code, message, transient))
}

fn count(v: &Value, field: &str) -> Option<u64> {
    v.get(field).and_then(Value::as_u64)
}

/// Interprets one batch response: `status` and `body` as received, `requested` the ids asked
/// for, `usage` what [`usage`] read from the headers (for the throttling pause).
pub fn interpret(status: u16, body: &[u8], requested: &[&str], usage: Usage) -> BatchOutcome {
    let parsed: Result<Value, _> = serde_json::from_slice(body);
    if status >= 500 {
        let message = parsed.ok().and_then(|v| error_of(&v)).map(|e| e.1).unwrap_or_else(|| format!("HTTP {status}"));
        return BatchOutcome::Transient { status, message };
    }
    let v = match parsed {
        Ok(v) => v,
        Err(e) => {
            return BatchOutcome::Malformed { reason: format!("HTTP {status} with a body that is not JSON: {e}") }
        }
    };
    if let Some((code, message, transient)) = error_of(&v) {
        return if THROTTLE_CODES.contains(&code) {
            BatchOutcome::Throttled { code, retry_after: usage.regain_after }
        } else if transient {
            BatchOutcome::Transient { status, message }
        } else {
            BatchOutcome::Rejected { code, message }
        };
    }
    if status != 200 {
        return BatchOutcome::Malformed { reason: format!("HTTP {status} without an error object") };
    }
    let Some(obj) = v.as_object() else {
        return BatchOutcome::Malformed { reason: "the body is not a JSON object keyed by id".into() };
    };
    let pages = requested
        .iter()
        .map(|id| {
            let result = match obj.get(*id) {
                None => PageResult::Failed { code: -1, message: "absent from the response".into() },
                Some(entry) => match (error_of(entry), count(entry, "fan_count")) {
                    (Some((code, message, _)), _) => PageResult::Failed { code, message },
                    (None, Some(fans)) => PageResult::Counts { fans, followers: count(entry, "followers_count") },
                    (None, None) => PageResult::Failed { code: -1, message: "no fan_count in the response".into() },
                },
            };
            (id.to_string(), result)
        })
        .collect();
    BatchOutcome::Pages(pages)
}

/// The header with the app's usage percentages.
pub const APP_USAGE_HEADER: &str = "X-App-Usage";
/// The header with the business use case's usage percentages and the time to regain access.
pub const BUSINESS_USAGE_HEADER: &str = "X-Business-Use-Case-Usage";

/// Where and how [`FacebookPlatform`] reaches the Graph API.
#[derive(Debug, Clone)]
pub struct FacebookSettings {
    /// The API's origin, without the version and without a trailing path:
    /// `https://graph.facebook.com`, or a simulator's `http://127.0.0.1:8787`.
    pub base_url: String,
    /// The API version in the path, e.g. `v19.0`.
    pub version: String,
    /// An access token that can read the pages' `fan_count` (an app token for public pages),
    /// sent as the `access_token` query parameter. Never printed.
    pub token: Token,
    /// Longest one request may take, from connecting to the last byte of the body; a slower
    /// request ends as [`BatchOutcome::Transient`] with status 0.
    pub timeout: Duration,
}

/// The Graph API as a [`Platform`]: one batch GET per [`fetch`](Platform::fetch), its usage
/// headers reported alongside the outcome. Cheap to clone (the settings and connection pool
/// are shared).
#[derive(Clone)]
pub struct FacebookPlatform {
    settings: Arc<FacebookSettings>,
    client: reqwest::Client,
}

impl fmt::Debug for FacebookPlatform {
    /// The settings (the token prints as `***`), not the client's internals.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FacebookPlatform").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl FacebookPlatform {
    /// A client for `settings`, with its own connection pool. Fails on a base URL that is not
    /// an absolute http(s) URL, or when the TLS backend cannot start.
    pub fn new(settings: FacebookSettings) -> http::Result<Self> {
        http::check_base_url(&settings.base_url)?;
        let client = http::client(settings.timeout)?;
        Ok(Self { settings: Arc::new(settings), client })
    }

    /// The settings it was built from.
    pub fn settings(&self) -> &FacebookSettings {
        &self.settings
    }
}

/// What one batch answer comes to: `status`, the two usage headers and `body` as received, for
/// the ids `requested`. The usage is reported whatever the outcome, and the time to regain
/// access becomes the pause even on a successful answer.
pub fn fetched(
    status: u16,
    app_usage: Option<&str>,
    business_usage: Option<&str>,
    body: &[u8],
    requested: &[&str],
) -> Fetched {
    let u = usage(app_usage, business_usage);
    Fetched { outcome: interpret(status, body, requested, u), usage_pct: u.max_pct, pause: u.regain_after }
}

/// An outcome without usage figures: a request refused before sending, or one whose answer
/// never arrived.
fn no_usage(outcome: BatchOutcome) -> Fetched {
    Fetched { outcome, usage_pct: 0, pause: None }
}

impl Platform for FacebookPlatform {
    fn name(&self) -> &'static str {
        "facebook"
    }

    fn max_batch(&self) -> usize {
        MAX_IDS
    }

    /// Facebook counts every id of a multi-id request as one call.
    fn cost(&self, ids: usize) -> u32 {
        u32::try_from(ids).unwrap_or(u32::MAX)
    }

    fn fetch(&self, ids: Vec<String>) -> FetchFuture {
        if ids.is_empty() || ids.len() > MAX_IDS {
            // A broken caller, not a platform answer: refuse rather than let batch_url panic
            // inside a spawned task.
            let message = format!("a Graph API batch names 1..={MAX_IDS} ids, not {}", ids.len());
            return Box::pin(std::future::ready(no_usage(BatchOutcome::Rejected { code: -1, message })));
        }
        let s = &self.settings;
        let url = {
            let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
            batch_url(&s.base_url, &s.version, &refs, &s.token)
        };
        let client = self.client.clone();
        Box::pin(async move {
            match http::get(&client, &url, None, [APP_USAGE_HEADER, BUSINESS_USAGE_HEADER]).await {
                Err(outcome) => no_usage(outcome),
                Ok(answer) => {
                    let [app, business] = &answer.headers;
                    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
                    fetched(answer.status, app.as_deref(), business.as_deref(), &answer.body, &refs)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::faults::SimConfig;
    use crate::simulate::graph_api::{respond, ApiQuery};
    use crate::simulate::trajectory::{fans_at, page_id};

    const NOW: i64 = 1_795_428_000_000;

    /// Asks the simulator's request handler (the same code the HTTP server runs).
    fn ask(cfg: &SimConfig, ids: &[&str], seq: u64) -> BatchOutcome {
        let q = ApiQuery {
            ids: Some(ids.join(",")),
            fields: Some("fan_count,followers_count".into()),
            access_token: Some("secret".into()),
        };
        let r = respond(cfg, &q, seq, NOW);
        fetched(r.status, Some(&r.app_usage), Some(&r.business_usage), r.body.as_bytes(), ids).outcome
    }

    fn settings() -> FacebookSettings {
        FacebookSettings {
            base_url: "https://graph.facebook.com".into(),
            version: "v19.0".into(),
            token: Token::new("EAAB-very-secret"),
            timeout: Duration::from_secs(10),
        }
    }

    #[test]
    fn url_encodes_ids_and_token() {
        let url = batch_url("https://graph.facebook.com/", "v19.0", &["cocacola", "a b", "x,y"], &Token::new("t&k=1"));
        assert_eq!(
            url,
            "https://graph.facebook.com/v19.0/?ids=cocacola%2Ca%20b%2Cx%2Cy&fields=fan_count%2Cfollowers_count&access_token=t%26k%3D1"
        );
    }

    #[test]
    fn a_batch_yields_exact_counts_and_per_page_failures() {
        let cfg = SimConfig { pages: 100, ..SimConfig::default() };
        let ids = [page_id(1), page_id(2), "page-999999".to_string(), page_id(3)];
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let BatchOutcome::Pages(pages) = ask(&cfg, &refs, 1) else { panic!("expected pages") };
        assert_eq!(pages.len(), 4);
        for (id, result) in &pages {
            if id == "page-999999" {
                assert!(matches!(result, PageResult::Failed { code: 100, .. }), "{result:?}");
            } else {
                let (fans, followers) = fans_at(id, NOW);
                assert_eq!(result, &PageResult::Counts { fans, followers: Some(followers) }, "{id}");
            }
        }
    }

    #[test]
    fn throttling_pauses_for_the_time_the_api_names() {
        let cfg = SimConfig { throttle_rate: 1.0, ..SimConfig::default() };
        match ask(&cfg, &["page-000001"], 1) {
            BatchOutcome::Throttled { code, retry_after } => {
                assert!(THROTTLE_CODES.contains(&code));
                assert_eq!(retry_after, Some(Duration::from_secs(60)), "estimated_time_to_regain_access is in minutes");
            }
            other => panic!("expected throttling, got {other:?}"),
        }
    }

    #[test]
    fn server_errors_are_transient_and_bad_bodies_malformed() {
        let cfg = SimConfig { error_rate: 1.0, ..SimConfig::default() };
        assert!(matches!(ask(&cfg, &["page-000001"], 1), BatchOutcome::Transient { status: 500, .. }));
        let cfg = SimConfig { malformed_rate: 1.0, ..SimConfig::default() };
        for seq in 1..=3 {
            assert!(matches!(ask(&cfg, &["page-000001"], seq), BatchOutcome::Malformed { .. }), "seq {seq}");
        }
    }

    #[test]
    fn request_errors_are_final() {
        let cfg = SimConfig::default();
        let ids: Vec<String> = (1..=51).map(page_id).collect();
        let q = ApiQuery { ids: Some(ids.join(",")), fields: Some("fan_count".into()), access_token: Some("t".into()) };
        let r = respond(&cfg, &q, 1, NOW);
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        assert!(matches!(
            interpret(r.status, r.body.as_bytes(), &refs, Usage::default()),
            BatchOutcome::Rejected { code: 100, .. }
        ));
        let q = ApiQuery { ids: Some("page-000001".into()), fields: Some("fan_count".into()), access_token: None };
        let r = respond(&cfg, &q, 1, NOW);
        assert!(matches!(
            interpret(r.status, r.body.as_bytes(), &["page-000001"], Usage::default()),
            BatchOutcome::Rejected { code: 190, .. }
        ));
    }

    #[test]
    fn usage_headers_are_read_and_bad_ones_ignored() {
        let u = usage(
            Some(r#"{"call_count":28,"total_cputime":91,"total_time":40}"#),
            Some(
                r#"{"123":[{"type":"pages","call_count":10,"total_cputime":5,"total_time":7,"estimated_time_to_regain_access":3}]}"#,
            ),
        );
        assert_eq!(u, Usage { max_pct: 91, regain_after: Some(Duration::from_secs(180)) });
        assert_eq!(usage(Some("not json"), Some("[]")), Usage::default());
        assert_eq!(usage(None, None), Usage::default());
    }

    #[test]
    fn missing_ids_and_missing_counts_fail_only_those_pages() {
        let body = br#"{"a": {"fan_count": 5}, "b": {"id": "b"}}"#;
        let BatchOutcome::Pages(p) = interpret(200, body, &["a", "b", "c"], Usage::default()) else { panic!("pages") };
        assert_eq!(p[0].1, PageResult::Counts { fans: 5, followers: None });
        assert!(matches!(p[1].1, PageResult::Failed { code: -1, .. }));
        assert!(matches!(p[2].1, PageResult::Failed { code: -1, .. }));
    }

    #[test]
    fn usage_and_pause_come_with_every_outcome() {
        let cfg = SimConfig { throttle_every: std::num::NonZeroU64::new(4), ..SimConfig::default() };
        let q = ApiQuery {
            ids: Some(page_id(1)),
            fields: Some("fan_count,followers_count".into()),
            access_token: Some("secret".into()),
        };
        let mut seen = Vec::new();
        for seq in 1..=4 {
            let r = respond(&cfg, &q, seq, NOW);
            let f = fetched(r.status, Some(&r.app_usage), Some(&r.business_usage), r.body.as_bytes(), &["page-000001"]);
            seen.push((f.usage_pct, f.pause, matches!(f.outcome, BatchOutcome::Throttled { .. })));
        }
        let minute = Some(Duration::from_secs(60));
        assert_eq!(seen, [(25, None, false), (50, None, false), (75, None, false), (100, minute, true)]);
    }

    #[test]
    fn the_platform_describes_itself_without_its_token() {
        let p = FacebookPlatform::new(settings()).expect("a valid configuration");
        assert_eq!((p.name(), p.max_batch(), p.cost(1), p.cost(50)), ("facebook", 50, 1, 50));
        let debug = format!("{p:?}");
        assert!(debug.contains("graph.facebook.com") && !debug.contains("very-secret"), "{debug}");
        let bad = FacebookSettings { base_url: "graph.facebook.com".into(), ..settings() };
        assert!(matches!(FacebookPlatform::new(bad), Err(http::Error::BaseUrl { .. })));
    }

    #[tokio::test]
    async fn a_batch_of_the_wrong_size_is_refused_without_a_request() {
        let p = FacebookPlatform::new(settings()).expect("a valid configuration");
        for n in [0, MAX_IDS + 1] {
            let f = p.fetch((1..=n as u64).map(page_id).collect()).await;
            assert!(matches!(f.outcome, BatchOutcome::Rejected { code: -1, .. }), "{n}: {f:?}");
            assert_eq!((f.usage_pct, f.pause), (0, None));
        }
    }
}
