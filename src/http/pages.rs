//! `/pages`: the live fan figures of the pages this instance holds, read from the fans pipeline's
//! partitions while they run ([`crate::pipelines::fans::live`]).
//!
//! | request | answer |
//! |---|---|
//! | `GET /pages/{platform}:{page_id}` | 200: the page, `{"platform", "page_id", "stats", "series", "table"}`; 404 when this instance holds no state for it |
//! | `GET /pages?keys=k1,k2,...` | 200: `{"pages": [page, ...], "missing": [key, ...]}`, pages in the order asked; 1 to [`MAX_KEYS`] distinct keys |
//! | `GET /pages/top` | 200: the latest `fans.top` value; 404 before the first (it is computed every 10 s once observations arrive) |
//!
//! - `stats` is the same object as the page's latest `fans.stats` value. `series` is the chart,
//!   oldest first: the last sample of every hour up to 30 days back, then of every 10 minutes
//!   for the last 48 hours, each `{"at", "fans", "followers"}` (`followers` is `null` once the
//!   sample is older than the table's rows: the chart keeps fan counts only). `table` is the
//!   latest 24 samples, newest first, each `{"observed_at", "fans", "followers"}`.
//! - `series=false` (on both page requests) leaves `series` and `table` out.
//! - Keys are `<platform>:<page_id>`, as in the topics. Percent-encode what a URL cannot carry
//!   (`/pages/mastodon:%40ana%40example.social`; a bare `@` works too); in `keys`, `+` is a space
//!   and a comma inside a page id is `%2C`.
//! - Each instance holds only the pages of the `fans.observations` partitions assigned to it, so
//!   a 404 (or a key under `missing`) may mean that another instance holds the page: ask it.
//! - Errors are JSON, `{"error": "..."}` (with `"page"` on a 404 of a page): 400 for a malformed
//!   request, 404 for state that is not here, also when the fans pipeline is disabled.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use percent_encoding::percent_decode_str;
use serde::{Deserialize, Serialize};

use crate::pipelines::fans::live::{Detail, FansLive, PageView};

/// Most keys of one `/pages?keys=` request: each page with its chart is up to ~60 KB of JSON.
pub const MAX_KEYS: usize = 100;

/// Why a `/pages` request was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The fans pipeline does not run here.
    #[error("the fans pipeline is disabled on this instance (pipelines.fans.enabled = false)")]
    Disabled,
    /// A key is not `<platform>:<page_id>`.
    #[error("`{0}` is not a page key: expected `<platform>:<page_id>`, e.g. `facebook:cocacola`")]
    BadKey(String),
    /// No partition of this instance holds the page.
    #[error(
        "no fan state for page `{0}` on this instance: no observation of it has been processed here; \
         another instance may own its fans.observations partition"
    )]
    NotHeld(String),
    /// `keys` is missing or lists no key.
    #[error("query parameter `keys` is required: /pages?keys=<platform>:<page_id>,... (1 to {MAX_KEYS} keys)")]
    NoKeys,
    /// `keys` lists too many keys.
    #[error("more than {MAX_KEYS} distinct keys requested; at most {MAX_KEYS} per request")]
    TooManyKeys,
    /// `series` is not a boolean.
    #[error("query parameter `series` must be `true` or `false`, got `{0}`")]
    BadFlag(String),
    /// A parameter this endpoint does not take.
    #[error("unknown query parameter `{0}` (this endpoint takes {takes})", takes = list(.1))]
    UnknownParam(String, &'static [&'static str]),
    /// Percent-encoding that does not decode to UTF-8.
    #[error("`{0}` is not percent-encoded UTF-8")]
    BadEncoding(String),
    /// No ranking was emitted yet.
    #[error("no ranking yet: fans.top is computed every 10 s once observations arrive")]
    NoTop,
}

impl ResponseError for Error {
    fn status_code(&self) -> StatusCode {
        match self {
            Error::Disabled | Error::NotHeld(_) | Error::NoTop => StatusCode::NOT_FOUND,
            Error::BadKey(_)
            | Error::NoKeys
            | Error::TooManyKeys
            | Error::BadFlag(_)
            | Error::UnknownParam(..)
            | Error::BadEncoding(_) => StatusCode::BAD_REQUEST,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut body = serde_json::json!({ "error": self.to_string() });
        if let Error::NotHeld(key) = self {
            body["page"] = key.as_str().into();
        }
        HttpResponse::build(self.status_code()).json(body)
    }
}

/// The answer to `/pages?keys=`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Comparison {
    /// The pages held, in the order asked.
    pub pages: Vec<PageView>,
    /// The keys asked for that this instance holds no state for, in the order asked.
    pub missing: Vec<String>,
}

/// The parameters of a `/pages` request.
#[derive(Debug, PartialEq, Eq)]
struct Params {
    /// Distinct keys, in the order given; empty when there was no `keys`.
    keys: Vec<String>,
    detail: Detail,
}

/// The names `takes`, for a message.
fn list(takes: &[&str]) -> String {
    match takes {
        [] => "none".to_string(),
        _ => takes.iter().map(|t| format!("`{t}`")).collect::<Vec<_>>().join(", "),
    }
}

/// Percent-decodes `s`; in a query string (`form`), `+` is a space first.
fn decode(s: &str, form: bool) -> Result<String, Error> {
    let spaced;
    let s = if form && s.contains('+') {
        spaced = s.replace('+', " ");
        &spaced
    } else {
        s
    };
    percent_decode_str(s).decode_utf8().map(|c| c.into_owned()).map_err(|_| Error::BadEncoding(s.to_string()))
}

/// Checks that `key` is `<platform>:<page_id>` with both parts non-empty.
fn check_key(key: &str) -> Result<(), Error> {
    match key.split_once(':') {
        Some((platform, page_id)) if !platform.is_empty() && !page_id.is_empty() => Ok(()),
        _ => Err(Error::BadKey(key.to_string())),
    }
}

/// Parses raw query string `query`, which may carry the parameters named in `takes` (`keys`,
/// `series`). Keys are split on literal commas before decoding, so `%2C` stays in a page id.
fn params(query: &str, takes: &'static [&'static str]) -> Result<Params, Error> {
    let mut p = Params { keys: Vec::new(), detail: Detail::Full };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = decode(name, true)?;
        match name.as_str() {
            "keys" if takes.contains(&"keys") => {
                for raw in value.split(',').filter(|k| !k.is_empty()) {
                    let key = decode(raw, true)?;
                    check_key(&key)?;
                    if !p.keys.contains(&key) {
                        p.keys.push(key);
                    }
                    // Checked while parsing, so a huge list is not decoded in full first.
                    if p.keys.len() > MAX_KEYS {
                        return Err(Error::TooManyKeys);
                    }
                }
            }
            "series" if takes.contains(&"series") => {
                p.detail = match decode(value, true)?.as_str() {
                    "true" => Detail::Full,
                    "false" => Detail::Stats,
                    other => return Err(Error::BadFlag(other.to_string())),
                }
            }
            _ => return Err(Error::UnknownParam(name, takes)),
        }
    }
    Ok(p)
}

/// The live view the handlers read; `None` when the fans pipeline is disabled.
struct Pages(Option<FansLive>);

impl Pages {
    fn live(&self) -> Result<&FansLive, Error> {
        self.0.as_ref().ok_or(Error::Disabled)
    }
}

async fn one(pages: web::Data<Pages>, req: HttpRequest) -> Result<HttpResponse, Error> {
    let live = pages.live()?;
    let p = params(req.query_string(), &["series"])?;
    // The router leaves `%`, `/` and `+` encoded in a path segment; a path's `+` is a plus.
    let key = decode(req.match_info().get("key").unwrap_or_default(), false)?;
    check_key(&key)?;
    let view = live.page(&key, p.detail).ok_or(Error::NotHeld(key))?;
    Ok(HttpResponse::Ok().json(view))
}

async fn many(pages: web::Data<Pages>, req: HttpRequest) -> Result<HttpResponse, Error> {
    let live = pages.live()?;
    let p = params(req.query_string(), &["keys", "series"])?;
    if p.keys.is_empty() {
        return Err(Error::NoKeys);
    }
    let keys: Vec<&str> = p.keys.iter().map(String::as_str).collect();
    let mut out = Comparison { pages: Vec::with_capacity(keys.len()), missing: Vec::new() };
    for (key, view) in keys.iter().zip(live.pages(&keys, p.detail)) {
        match view {
            Some(v) => out.pages.push(v),
            None => out.missing.push(key.to_string()),
        }
    }
    Ok(HttpResponse::Ok().json(out))
}

async fn top(pages: web::Data<Pages>, req: HttpRequest) -> Result<HttpResponse, Error> {
    let live = pages.live()?;
    params(req.query_string(), &[])?;
    let top = live.top().ok_or(Error::NoTop)?;
    Ok(HttpResponse::Ok().json(top))
}

/// Mounts `/pages`, `/pages/top` and `/pages/{key}`, reading `fans` (`None` when the fans
/// pipeline is disabled: every request then answers 404 saying so).
pub fn configure(cfg: &mut web::ServiceConfig, fans: Option<FansLive>) {
    cfg.app_data(web::Data::new(Pages(fans)))
        .route("/pages", web::get().to(many))
        // Before `{key}`, which would match it too; a key always has a `:`, so none is `top`.
        .route("/pages/top", web::get().to(top))
        .route("/pages/{key}", web::get().to(one));
}

#[cfg(test)]
mod tests {
    use actix_web::{test, App};

    use super::*;
    use crate::clock::format_ms;
    use crate::engine::{Aggregate, Emit, Processor, RawRecord, RecordMeta};
    use crate::pipelines::fans::FansConfig;
    use crate::pipelines::fans::{FansProcessor, PageStats, INPUT};

    const T0: i64 = 1_795_000_000_000;
    const MIN: i64 = 60_000;

    fn obs(platform: &str, page: &str, at_ms: i64, fans: u64) -> RawRecord {
        let v = serde_json::json!({"platform": platform, "page_id": page, "fans": fans, "followers": fans + 1,
            "observed_at": format_ms(at_ms)});
        RawRecord { key: None, value: Some(v.to_string().into_bytes()), offset: 0, timestamp_ms: None }
    }

    /// A live view with pages `facebook:a` (3 samples), `facebook:a,b/c` and `mastodon:@ana@example.social`
    /// in partition 0, and the processor that keeps them registered.
    fn live() -> (FansLive, FansProcessor, PageStats) {
        let live = FansLive::new(5);
        let mut p = FansProcessor::new(0, &FansConfig { enabled: true, top_n: 5, max_pages_per_partition: 100 })
            .with_live(&live);
        let mut out: Emit<_> = Emit::default();
        let recs = [
            obs("mastodon", "@ana@example.social", T0, 5),
            obs("facebook", "a,b/c", T0, 9),
            obs("facebook", "a", T0, 100),
            obs("facebook", "a", T0 + 10 * MIN, 110),
            obs("facebook", "a", T0 + 60 * MIN, 130),
        ];
        for r in &recs {
            let o = p.decode(INPUT, r).expect("valid");
            p.process(o, &RecordMeta { topic: INPUT, partition: 0, offset: 0, timestamp_ms: None }, &mut out);
        }
        let last = out.records.last().and_then(|r| r.value.as_deref()).expect("a fans.stats record");
        let stats = serde_json::from_slice(last).expect("JSON");
        (live, p, stats)
    }

    async fn get(fans: Option<FansLive>, uri: &str) -> (StatusCode, serde_json::Value) {
        let app = test::init_service(App::new().configure(|c| configure(c, fans))).await;
        let resp = test::call_service(&app, test::TestRequest::get().uri(uri).to_request()).await;
        let status = resp.status();
        let body = test::read_body(resp).await;
        (status, serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{uri}: body is not JSON ({e}): {body:?}")))
    }

    #[actix_web::test]
    async fn a_page_with_its_stats_chart_and_rows() {
        let (live, _p, stats) = live();
        let (status, v) = get(Some(live.clone()), "/pages/facebook:a").await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!((&v["platform"], &v["page_id"]), (&"facebook".into(), &"a".into()));
        assert_eq!(v["stats"], serde_json::to_value(&stats).expect("JSON"), "the latest fans.stats value");
        assert_eq!(v["stats"]["delta_1h"]["value"], 30);
        let at = |m: i64| serde_json::Value::from(format_ms(T0 + m * MIN));
        assert_eq!(
            v["series"],
            serde_json::json!([
                {"at": at(0), "fans": 100, "followers": 101},
                {"at": at(10), "fans": 110, "followers": 111},
                {"at": at(60), "fans": 130, "followers": 131},
            ])
        );
        assert_eq!(v["table"][0], serde_json::json!({"observed_at": at(60), "fans": 130, "followers": 131}));
        assert_eq!(v["table"].as_array().map(Vec::len), Some(3));
        let view: PageView = serde_json::from_value(v).expect("the documented shape");
        assert_eq!(view.stats, stats);

        let (status, v) = get(Some(live), "/pages/facebook:a?series=false").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()),
            Some(vec!["page_id".to_string(), "platform".to_string(), "stats".to_string()])
        );
    }

    #[actix_web::test]
    async fn keys_are_percent_decoded() {
        let (live, _p, _) = live();
        for uri in [
            "/pages/mastodon:%40ana%40example.social",
            "/pages/mastodon:@ana@example.social",
            "/pages/mastodon%3A%40ana%40example.social",
        ] {
            let (status, v) = get(Some(live.clone()), uri).await;
            assert_eq!((status, &v["page_id"]), (StatusCode::OK, &"@ana@example.social".into()), "{uri}: {v}");
        }
        let (status, v) = get(Some(live.clone()), "/pages/facebook:a%2Cb%2Fc").await;
        assert_eq!((status, &v["page_id"]), (StatusCode::OK, &"a,b/c".into()), "{v}");
        let (_, v) = get(Some(live), "/pages?keys=facebook:a%2Cb%2Fc,mastodon:%40ana%40example.social").await;
        assert_eq!(v["pages"][0]["page_id"], "a,b/c");
        assert_eq!(v["pages"][1]["page_id"], "@ana@example.social");
    }

    #[actix_web::test]
    async fn pages_not_held_are_404_naming_the_page() {
        let (live, p, _) = live();
        let (status, v) = get(Some(live.clone()), "/pages/facebook:nope").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(v["page"], "facebook:nope");
        let msg = v["error"].as_str().expect("error message");
        assert!(msg.contains("`facebook:nope`") && msg.contains("another instance"), "{msg}");
        // The partition's task stopped (revoked): its pages are gone.
        drop(p);
        let (status, v) = get(Some(live), "/pages/facebook:a").await;
        assert_eq!((status, &v["page"]), (StatusCode::NOT_FOUND, &"facebook:a".into()));
        let (status, v) = get(None, "/pages/facebook:a").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(v["error"].as_str().is_some_and(|e| e.contains("pipelines.fans.enabled")), "{v}");
    }

    #[actix_web::test]
    async fn several_pages_with_the_missing_ones_named() {
        let (live, _p, stats) = live();
        let (status, v) =
            get(Some(live.clone()), "/pages?keys=facebook:nope,facebook:a,mastodon:@ana@example.social,facebook:a")
                .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        let cmp: Comparison = serde_json::from_value(v).expect("the documented shape");
        let ids: Vec<&str> = cmp.pages.iter().map(|p| p.page_id.as_str()).collect();
        assert_eq!(ids, ["a", "@ana@example.social"], "in the order asked, duplicates once");
        assert_eq!(cmp.missing, ["facebook:nope"]);
        assert_eq!(cmp.pages[0].stats, stats);
        assert_eq!(cmp.pages[0].series.as_ref().map(Vec::len), Some(3));

        let (_, v) = get(Some(live), "/pages?series=false&keys=facebook:a").await;
        assert_eq!(v["pages"][0]["stats"]["fans"], 130);
        assert!(v["pages"][0].get("series").is_none() && v["pages"][0].get("table").is_none(), "{v}");
        assert_eq!(v["missing"], serde_json::json!([]));
    }

    #[actix_web::test]
    async fn malformed_requests_are_400_with_the_reason() {
        let (live, _p, _) = live();
        let many: Vec<String> = (0..=MAX_KEYS).map(|i| format!("facebook:p{i}")).collect();
        let too_many = format!("/pages?keys={}", many.join(","));
        let cases = [
            ("/pages", "`keys` is required"),
            ("/pages?keys=", "`keys` is required"),
            ("/pages?keys=,,", "`keys` is required"),
            (too_many.as_str(), "more than 100 distinct keys requested"),
            ("/pages?keys=facebook", "`facebook` is not a page key"),
            ("/pages?keys=facebook:a,:b", "`:b` is not a page key"),
            ("/pages?keys=facebook:a&series=no", "`series` must be `true` or `false`, got `no`"),
            ("/pages?key=facebook:a", "unknown query parameter `key`"),
            ("/pages?keys=facebook:%FF", "not percent-encoded UTF-8"),
            ("/pages/facebook", "`facebook` is not a page key"),
            ("/pages/facebook:", "`facebook:` is not a page key"),
            ("/pages/facebook:a?keys=facebook:b", "unknown query parameter `keys` (this endpoint takes `series`)"),
            ("/pages/top?series=false", "unknown query parameter `series` (this endpoint takes none)"),
        ];
        for (uri, want) in cases {
            let (status, v) = get(Some(live.clone()), uri).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {v}");
            let msg = v["error"].as_str().unwrap_or_default();
            assert!(msg.contains(want), "{uri}: {msg}");
        }
        // Exactly the bound is fine, and repeats count once.
        let (status, _) = get(Some(live), &format!("/pages?keys={},facebook:p0", many[..MAX_KEYS].join(","))).await;
        assert_eq!(status, StatusCode::OK);
    }

    #[actix_web::test]
    async fn top_is_the_latest_fans_top_value() {
        let (live, p, _) = live();
        let (status, v) = get(Some(live.clone()), "/pages/top").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(v["error"].as_str().is_some_and(|e| e.contains("no ranking yet")), "{v}");
        let mut out = Vec::new();
        {
            let view = live.top_view();
            let mut view = view.lock().expect("lock");
            view.merge(&mut vec![p.top(T0)]);
            view.on_tick(chrono::DateTime::from_timestamp_millis(T0).expect("time"), &mut out);
        }
        let emitted: serde_json::Value = serde_json::from_slice(out[0].value.as_deref().expect("value")).expect("JSON");
        let (status, v) = get(Some(live), "/pages/top").await;
        assert_eq!((status, &v), (StatusCode::OK, &emitted));
        assert_eq!(v["by_delta_24h"][0]["page_id"], "a");
    }
}
