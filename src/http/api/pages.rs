//! `/api/v1/pages`: track pages (writes to the compacted `pages` topic) and read their live fan
//! figures (the fans pipeline's live view, [`crate::pipelines::fans::live`]).
//!
//! | request | answer |
//! |---|---|
//! | `POST /api/v1/pages` `{"platform", "page_id", "interval_s"}` | 202: tracked (re-sending changes the interval) |
//! | `DELETE /api/v1/pages/{platform}:{page_id}` | 202: no longer tracked (a tombstone) |
//! | `GET /api/v1/pages/{platform}:{page_id}` | 200: `{"platform", "page_id", "stats", "series", "table"}`; 404 when this instance holds no state for it |
//! | `GET /api/v1/pages/{platform}:{page_id}/chart?from&to&resolution` | 200: its line chart over `[from, to)` (RFC 3339; default the last 7 days) at `10m` (default; hourly beyond the last 7 days, where only hours are kept) or `1h`; CSV `at,fans,bucket_start,bucket_s` |
//! | `GET /api/v1/pages/{platform}:{page_id}/table?limit&cursor` | 200: every sample kept, newest first, `limit` (1..1000, default 100) at a time, `next_cursor` (and a `Link: rel="next"` header) for the next page; CSV `observed_at,fans,followers,kind` |
//! | `GET /api/v1/pages?keys=k1,k2,...` | 200: `{"pages": [...], "missing": [...]}`, several pages side by side |
//! | `GET /api/v1/pages/top` | 200: the current top pages by 24 h growth and by delta |
//!
//! These are the `/pages` routes of earlier versions, moved under `/api/v1`. Keys are
//! `<platform>:<page_id>`, percent-encoded where a URL cannot carry them (a `,` inside a page id
//! in `keys` is `%2C`). `series=false` leaves the chart and table out.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;

use super::{param, query, wants_csv, Api};
use crate::health::Health;
use crate::http::auth::Caller;
use crate::http::cache::{self, Freshness};
use crate::http::csv::{self, Csv};
use crate::http::forward::Route;
use crate::http::limit::Class;
use crate::http::problem::Problem;
use crate::pipelines::fans::history::{self, Resolution};
use crate::pipelines::fans::live::{Detail, FansLive, PageView};
use crate::pipelines::pages::processor::decode_page;

/// Most keys of one multi-page request: each page with its chart is up to ~60 KB of JSON.
pub const MAX_KEYS: usize = 100;

/// The body of `POST /api/v1/pages`.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[allow(dead_code)] // documents the body; the pipeline's own decoder reads it
struct TrackPage {
    /// `facebook` (default) or `mastodon` (a platform that is enabled: `platforms.<p>.enabled`).
    #[schema(pattern = "^(facebook|mastodon)$")]
    platform: Option<String>,
    /// The page's id on the platform, 1 to 256 bytes.
    #[schema(min_length = 1, max_length = 64)]
    page_id: String,
    /// Seconds between two polls, 10..86400 (default 600).
    #[schema(minimum = 10, maximum = 86400)]
    interval_s: Option<u64>,
    /// `false` stops tracking the page (like `DELETE`).
    tracked: Option<bool>,
    /// `true` exports the page's figures to Prometheus (`pagepulse_page_fans`, ...), within
    /// `pipelines.fans.watch_max`; re-sending the page without it stops that.
    watch: Option<bool>,
}

/// The answer to a multi-page request.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
struct Comparison {
    /// The pages held, in the order asked.
    #[schema(value_type = Vec<Object>)]
    pages: Vec<PageView>,
    /// Keys asked for that this instance holds no state for.
    missing: Vec<String>,
}

fn live(api: &Api) -> Result<&FansLive, Problem> {
    match api.cfg.fans.enabled {
        true => Ok(&api.live.fans),
        false => {
            Err(Problem::not_found("the fans pipeline is disabled on this instance (pipelines.fans.enabled = false)"))
        }
    }
}

/// Checks that `key` is `<platform>:<page_id>`.
fn check_key(key: &str) -> Result<(), Problem> {
    match key.split_once(':') {
        Some((p, id)) if !p.is_empty() && !id.is_empty() => Ok(()),
        _ => Err(Problem::bad_request(format!(
            "`{key}` is not a page key: expected `<platform>:<page_id>`, e.g. `facebook:cocacola`"
        ))
        .with_field("key")),
    }
}

fn detail(params: &[(String, String)]) -> Result<Detail, Problem> {
    match params.iter().find(|(n, _)| n == "series").map(|(_, v)| v.as_str()) {
        None | Some("true") => Ok(Detail::Full),
        Some("false") => Ok(Detail::Stats),
        Some(other) => {
            Err(Problem::bad_request(format!("`series` must be `true` or `false`, got `{other}`")).with_field("series"))
        }
    }
}

/// The enabled platforms, as the pages pipeline accepts them.
fn platforms(api: &Api) -> Vec<&'static str> {
    let mut v = Vec::new();
    if api.cfg.facebook.enabled {
        v.push("facebook");
    }
    if api.cfg.mastodon.enabled {
        v.push("mastodon");
    }
    v
}

/// Track a page, or change how often it is polled.
#[utoipa::path(post, path = "/api/v1/pages", tag = "pages", request_body = TrackPage,
    responses((status = 202, body = super::Accepted), (status = 422, description = "refused by the pipeline's decoder"),
        (status = 400), (status = 401), (status = 403), (status = 413), (status = 415), (status = 429), (status = 503)),
    security(("bearer" = [])))]
async fn track(api: web::Data<Api>, req: HttpRequest, payload: web::Payload) -> Result<HttpResponse, Problem> {
    let gated = api.gate(&req, Class::Write)?;
    query(&req, &[])?;
    let body = api.json_body(&req, payload).await?;
    let parsed: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| Problem::invalid(format!("the body is not valid JSON: {e}")))?;
    let platform = parsed.get("platform").and_then(|p| p.as_str()).unwrap_or("facebook");
    let page_id = parsed
        .get("page_id")
        .and_then(|p| p.as_str())
        .ok_or_else(|| Problem::invalid("field `page_id` is missing or not a string").with_field("page_id"))?;
    let key = format!("{platform}:{page_id}");
    let names = platforms(&api);
    let accepted = api
        .produce(crate::pipelines::pages::INPUT, key.as_bytes(), Some(&body), |r| decode_page(r, &names).map(|_| ()))
        .await?;
    let location = format!("/api/v1/pages/{}", super::segment(&key));
    Ok(gated.answer(accepted.answer(Some(&location))))
}

/// Stop tracking a page.
#[utoipa::path(delete, path = "/api/v1/pages/{key}", tag = "pages",
    params(("key" = String, Path, description = "`<platform>:<page_id>`", pattern = "^[^:]+:.+$")),
    responses((status = 202, body = super::Accepted), (status = 400), (status = 401), (status = 403), (status = 422), (status = 429), (status = 503)),
    security(("bearer" = [])))]
async fn untrack(api: web::Data<Api>, req: HttpRequest) -> Result<HttpResponse, Problem> {
    let gated = api.gate(&req, Class::Write)?;
    query(&req, &[])?;
    let key = path_key(&req)?;
    let names = platforms(&api);
    let accepted = api
        .produce(crate::pipelines::pages::INPUT, key.as_bytes(), None, |r| decode_page(r, &names).map(|_| ()))
        .await?;
    Ok(gated.answer(accepted.answer(None)))
}

/// One page's figures, chart and table.
#[utoipa::path(get, path = "/api/v1/pages/{key}", tag = "pages",
    params(("key" = String, Path, description = "`<platform>:<page_id>`", pattern = "^[^:]+:.+$"),
        ("series" = Option<bool>, Query, description = "include the chart and table (default true)")),
    responses((status = 200, body = Object), (status = 304), (status = 400), (status = 401), (status = 403), (status = 404), (status = 429),
        (status = 503, description = "this instance is not ready yet (partitions being assigned or restored) and does not hold the page")),
    security(("bearer" = [])))]
async fn one(api: web::Data<Api>, req: HttpRequest) -> Result<HttpResponse, Problem> {
    let gated = api.gate(&req, Class::Read)?;
    let params = query(&req, &["series"])?;
    let detail = detail(&params)?;
    let key = path_key(&req)?;
    let Some(view) = live(&api)?.page(&key, detail) else {
        let theirs = elsewhere(&api, &req, &gated.caller, &key).await?;
        return Ok(gated.answer(theirs));
    };
    Ok(gated.answer(cache::json(&req, &view, Freshness::Live)))
}

/// A time given as RFC 3339 (or epoch milliseconds) in parameter `name`.
fn time_param(params: &[(String, String)], name: &str) -> Result<Option<i64>, Problem> {
    let Some(v) = param(params, name) else { return Ok(None) };
    if let Ok(ms) = v.parse::<i64>() {
        return Ok(Some(ms));
    }
    chrono::DateTime::parse_from_rfc3339(v).map(|t| Some(t.timestamp_millis())).map_err(|_| {
        Problem::bad_request(format!(
            "`{name}` must be an RFC 3339 time (e.g. 2026-12-05T10:00:00Z) or epoch ms, got `{v}`"
        ))
        .with_field(name)
    })
}

/// The key of a page route, decoded and checked.
fn path_key(req: &HttpRequest) -> Result<String, Problem> {
    let key = super::decode(req.match_info().get("key").unwrap_or_default(), false, "the page key")?;
    check_key(&key)?;
    Ok(key)
}

/// Fills in the pages of `keys` not found here (`None` in `found`) from the instances holding
/// them: one request per instance. A key whose partition is moving, or whose owner does not
/// answer, makes the whole answer a 503: a comparison is never missing a page that exists.
async fn gather(
    api: &Api,
    req: &HttpRequest,
    caller: &Caller,
    keys: &[String],
    found: &mut [Option<PageView>],
    detail: Detail,
) -> Result<(), Problem> {
    let topic = api.cfg.topic(crate::pipelines::fans::names::INPUT);
    let live = live(api)?;
    let mut by_owner: std::collections::BTreeMap<String, (crate::kafka::instances::Owner, Vec<usize>)> =
        Default::default();
    for (i, key) in keys.iter().enumerate() {
        if found[i].is_some() {
            continue;
        }
        if let Route::Remote(owner) =
            api.forwarder.route(req, &topic, key, |p| live.holds(p)).map_err(|p| p.with_field("keys"))?
        {
            by_owner.entry(owner.instance.clone()).or_insert_with(|| (owner, Vec::new())).1.push(i);
        }
    }
    for (owner, idx) in by_owner.into_values() {
        let list: Vec<String> = idx.iter().map(|&i| super::segment(&keys[i]).replace(',', "%2C")).collect();
        let series = if detail == Detail::Full { "true" } else { "false" };
        let path = format!("/api/v1/pages?keys={}&series={series}", list.join(","));
        let url = format!("{}://{}{}", api.forwarder.scheme(), owner.http, path);
        let unavailable = |why: String| {
            Problem::unavailable(
                format!(
                    "the instance holding some of these pages ({} at {}) did not answer: {why}",
                    owner.instance, owner.http
                ),
                1,
            )
        };
        let (status, _, body) = api.forwarder.fetch_json(req, caller, &url).await.map_err(unavailable)?;
        if status != 200 {
            return Err(unavailable(format!("it answered {status}")));
        }
        let theirs: Comparison =
            serde_json::from_slice(&body).map_err(|e| unavailable(format!("its answer is not a comparison: {e}")))?;
        for page in theirs.pages {
            let key = format!("{}:{}", page.platform, page.page_id);
            if let Some(&i) = idx.iter().find(|&&i| keys[i] == key) {
                found[i] = Some(page);
            }
        }
    }
    Ok(())
}

/// The answer for a page this instance holds no state for: the answer of the instance that
/// holds its `fans.observations` partition (see [`crate::http::forward`]); a 503 while that
/// partition moves; else [`no_page`].
async fn elsewhere(api: &Api, req: &HttpRequest, caller: &Caller, key: &str) -> Result<HttpResponse, Problem> {
    let topic = api.cfg.topic(crate::pipelines::fans::names::INPUT);
    let live = live(api)?;
    match api.forwarder.route(req, &topic, key, |p| live.holds(p)).map_err(|p| p.with_field("key"))? {
        Route::Remote(owner) => api.forwarder.forward(req, caller, &owner, None).await,
        Route::Local => Err(no_page(&api.health, key)),
    }
}

/// The answer for a page this instance holds no state for: 503 with `Retry-After` while its
/// partitions are being assigned or restored (the page may be among them), 404 otherwise.
fn no_page(health: &Health, key: &str) -> Problem {
    if let Err(why) = health.ready() {
        return Problem::unavailable(
            format!("no fan state for page `{key}` yet: this instance is not ready ({why}); it may hold the page once it is"),
            1,
        )
        .with_field("key");
    }
    Problem::not_found(format!(
        "no fan state for page `{key}` on this instance: no observation of it has been processed here; \
         another instance may own its fans.observations partition"
    ))
    .with_field("key")
}

/// A page's line chart over a time range.
#[utoipa::path(get, path = "/api/v1/pages/{key}/chart", tag = "pages",
    params(("key" = String, Path, description = "`<platform>:<page_id>`", pattern = "^[^:]+:.+$"),
        ("from" = Option<String>, Query, description = "start, inclusive: RFC 3339 or epoch ms (default `to` minus 7 days)", pattern = r"^(-?[0-9]{1,15}|[1-9][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])[Tt]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9]))$"),
        ("to" = Option<String>, Query, description = "end, exclusive: RFC 3339 or epoch ms (default now); a range with `from` not before `to` has no points", pattern = r"^(-?[0-9]{1,15}|[1-9][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])[Tt]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9]))$"),
        ("resolution" = Option<String>, Query, description = "`10m` (default) or `1h`", pattern = "^(10m|1h)$"),
        ("format" = Option<String>, Query, description = "`json` (default) or `csv`", pattern = "^(json|csv)$")),
    responses((status = 200, content((Object = "application/json"), (String = "text/csv"))), (status = 304), (status = 400), (status = 401), (status = 403), (status = 404), (status = 429),
        (status = 503, description = "this instance is not ready yet (partitions being assigned or restored) and does not hold the page")),
    security(("bearer" = [])))]
async fn chart(api: web::Data<Api>, req: HttpRequest) -> Result<HttpResponse, Problem> {
    let gated = api.gate(&req, Class::Read)?;
    let params = query(&req, &["from", "to", "resolution", "format"])?;
    let csv = wants_csv(&req, param(&params, "format"))?;
    let key = path_key(&req)?;
    let to = time_param(&params, "to")?.unwrap_or_else(|| chrono::Utc::now().timestamp_millis() + 1);
    let from = time_param(&params, "from")?.unwrap_or(to.saturating_sub(7 * 86_400_000));
    let resolution = match param(&params, "resolution") {
        None => Resolution::TenMinutes,
        Some(r) => Resolution::parse(r).ok_or_else(|| {
            Problem::bad_request(format!("`resolution` must be `10m` or `1h`, got `{r}`")).with_field("resolution")
        })?,
    };
    let Some((points, _)) = live(&api)?.history(&key) else {
        let theirs = elsewhere(&api, &req, &gated.caller, &key).await?;
        return Ok(gated.answer(theirs));
    };
    let points = history::chart(&points, from, to, resolution);
    if csv {
        let mut out = Csv::new(&["at", "fans", "bucket_start", "bucket_s"]);
        for p in &points {
            out.row([&p.at, &p.fans.to_string(), &p.bucket_start, &p.bucket_s.to_string()]);
        }
        return Ok(gated.answer(cache::answer(&req, csv::CONTENT_TYPE, out.into_bytes(), Freshness::Live)));
    }
    let body = serde_json::json!({
        "key": key,
        "from": crate::clock::format_ms(from),
        "to": crate::clock::format_ms(to),
        "resolution": param(&params, "resolution").unwrap_or("10m"),
        "points": points,
    });
    Ok(gated.answer(cache::json(&req, &body, Freshness::Live)))
}

/// Most rows of one table page.
pub const MAX_ROWS: usize = 1000;

/// A page's table: every sample kept, newest first, a page at a time.
#[utoipa::path(get, path = "/api/v1/pages/{key}/table", tag = "pages",
    params(("key" = String, Path, description = "`<platform>:<page_id>`", pattern = "^[^:]+:.+$"),
        ("limit" = Option<u32>, Query, description = "rows per page, 1..1000 (default 100)", minimum = 1, maximum = 1000),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page", pattern = "^t-?[0-9]{1,19}$"),
        ("format" = Option<String>, Query, description = "`json` (default) or `csv`", pattern = "^(json|csv)$")),
    responses((status = 200, content((Object = "application/json"), (String = "text/csv"))), (status = 304), (status = 400), (status = 401), (status = 403), (status = 404), (status = 429),
        (status = 503, description = "this instance is not ready yet (partitions being assigned or restored) and does not hold the page")),
    security(("bearer" = [])))]
async fn table(api: web::Data<Api>, req: HttpRequest) -> Result<HttpResponse, Problem> {
    let gated = api.gate(&req, Class::Read)?;
    let params = query(&req, &["limit", "cursor", "format"])?;
    let csv = wants_csv(&req, param(&params, "format"))?;
    let key = path_key(&req)?;
    let limit = match param(&params, "limit") {
        None => 100,
        Some(l) => l.parse::<usize>().ok().filter(|n| (1..=MAX_ROWS).contains(n)).ok_or_else(|| {
            Problem::bad_request(format!("`limit` must be an integer from 1 to {MAX_ROWS}, got `{l}`"))
                .with_field("limit")
        })?,
    };
    let before = match param(&params, "cursor") {
        None => i64::MAX,
        Some(c) => history::parse_cursor(c).ok_or_else(|| {
            Problem::bad_request(format!("`cursor` `{c}` is not a cursor this API gave (use `next_cursor`)"))
                .with_field("cursor")
        })?,
    };
    let Some((points, samples)) = live(&api)?.history(&key) else {
        let theirs = elsewhere(&api, &req, &gated.caller, &key).await?;
        return Ok(gated.answer(theirs));
    };
    let page = history::table(&samples, &points, before, limit);
    let resp = if csv {
        let mut out = Csv::new(&["observed_at", "fans", "followers", "kind"]);
        for r in &page.rows {
            out.row([
                &r.observed_at,
                &r.fans.to_string(),
                &r.followers.map(|f| f.to_string()).unwrap_or_default(),
                r.kind,
            ]);
        }
        cache::answer(&req, csv::CONTENT_TYPE, out.into_bytes(), Freshness::Live)
    } else {
        cache::json(&req, &page, Freshness::Live)
    };
    let mut resp = gated.answer(resp);
    if let Some(next) = &page.next_cursor {
        let mut link = format!("<{}?cursor={next}&limit={limit}", req.path());
        if csv {
            link.push_str("&format=csv");
        }
        link.push_str(">; rel=\"next\"");
        if let Ok(v) = actix_web::http::header::HeaderValue::from_str(&link) {
            resp.headers_mut().insert(actix_web::http::header::LINK, v);
        }
    }
    Ok(resp)
}

/// Several pages side by side.
#[utoipa::path(get, path = "/api/v1/pages", tag = "pages",
    params(("keys" = String, Query, description = "comma-separated `<platform>:<page_id>` keys, 1 to 100", pattern = "^[^:,]+:[^,]+(,[^:,]+:[^,]+){0,99}$"),
        ("series" = Option<bool>, Query, description = "include the charts and tables (default true)"),
        ("format" = Option<String>, Query, description = "`json` (default) or `csv` (one row of figures per page)", pattern = "^(json|csv)$")),
    responses((status = 200, content((Comparison = "application/json"), (String = "text/csv"))), (status = 304), (status = 400), (status = 401), (status = 403), (status = 404), (status = 429)),
    security(("bearer" = [])))]
async fn many(api: web::Data<Api>, req: HttpRequest) -> Result<HttpResponse, Problem> {
    let gated = api.gate(&req, Class::Read)?;
    let params = query(&req, &["keys", "series", "format"])?;
    let csv = wants_csv(&req, param(&params, "format"))?;
    let detail = if csv { Detail::Stats } else { detail(&params)? };
    // Keys are split on literal commas before decoding, so `%2C` stays inside a page id.
    let raw =
        req.query_string().split('&').find_map(|p| p.strip_prefix("keys=")).ok_or_else(|| {
            Problem::bad_request("query parameter `keys` is required (1 to 100 keys)").with_field("keys")
        })?;
    let mut keys: Vec<String> = Vec::new();
    for k in raw.split(',').filter(|k| !k.is_empty()) {
        let k = super::decode(k, true, "a key in `keys`")?;
        check_key(&k)?;
        if !keys.contains(&k) {
            keys.push(k);
        }
        if keys.len() > MAX_KEYS {
            return Err(Problem::bad_request(format!(
                "more than {MAX_KEYS} distinct keys; at most {MAX_KEYS} per request"
            ))
            .with_field("keys"));
        }
    }
    if keys.is_empty() {
        return Err(Problem::bad_request("query parameter `keys` lists no key").with_field("keys"));
    }
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let mut found: Vec<Option<PageView>> = live(&api)?.pages(&refs, detail);
    gather(&api, &req, &gated.caller, &keys, &mut found, detail).await?;
    let mut out = Comparison { pages: Vec::new(), missing: Vec::new() };
    for (key, view) in refs.iter().zip(found) {
        match view {
            Some(v) => out.pages.push(v),
            None => out.missing.push(key.to_string()),
        }
    }
    if csv {
        let mut t = Csv::new(&[
            "platform",
            "page_id",
            "fans",
            "followers",
            "observed_at",
            "delta_1h",
            "delta_24h",
            "delta_7d",
            "growth_24h_pct",
        ]);
        for p in &out.pages {
            let s = &p.stats;
            t.row([
                s.platform.clone(),
                s.page_id.clone(),
                s.fans.to_string(),
                s.followers.map(|f| f.to_string()).unwrap_or_default(),
                s.observed_at.clone(),
                s.delta_1h.value.to_string(),
                s.delta_24h.value.to_string(),
                s.delta_7d.value.to_string(),
                s.growth_24h_pct.map(|g| g.to_string()).unwrap_or_default(),
            ]);
        }
        return Ok(gated.answer(cache::answer(&req, csv::CONTENT_TYPE, t.into_bytes(), Freshness::Live)));
    }
    Ok(gated.answer(cache::json(&req, &out, Freshness::Live)))
}

/// The current top pages by 24 h growth and by 24 h delta.
#[utoipa::path(get, path = "/api/v1/pages/top", tag = "pages",
    responses((status = 200, body = Object), (status = 304), (status = 400), (status = 401), (status = 403), (status = 404), (status = 429)),
    security(("bearer" = [])))]
async fn top(api: web::Data<Api>, req: HttpRequest) -> Result<HttpResponse, Problem> {
    let gated = api.gate(&req, Class::Read)?;
    query(&req, &[])?;
    let top = live(&api)?.top().ok_or_else(|| {
        Problem::not_found("no ranking yet: fans.top is computed every 10 s once observations arrive")
    })?;
    Ok(gated.answer(cache::json(&req, &top, Freshness::Live)))
}

/// Mounts the routes, under the scope `/api/v1/pages`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("")
            .route(web::get().to(many))
            .route(web::post().to(track))
            .default_service(super::not_allowed("GET, POST")),
    )
    // Before `{key}`, which would match it too; a key always has a `:`, so none is `top`.
    .service(web::resource("/top").route(web::get().to(top)).default_service(super::not_allowed("GET")))
    .service(web::resource("/{key}/chart").route(web::get().to(chart)).default_service(super::not_allowed("GET")))
    .service(web::resource("/{key}/table").route(web::get().to(table)).default_service(super::not_allowed("GET")))
    .service(
        web::resource("/{key}")
            .route(web::get().to(one))
            .route(web::delete().to(untrack))
            .default_service(super::not_allowed("GET, DELETE")),
    );
}

/// The OpenAPI operations of this file.
#[derive(utoipa::OpenApi)]
#[openapi(paths(track, untrack, one, chart, table, many, top), components(schemas(TrackPage, Comparison)))]
pub struct Doc;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_page_is_404_only_once_the_instance_holds_its_restored_partitions() {
        let health = Health::default();
        let answer = |h: &Health| {
            let p = no_page(h, "facebook:1");
            (p.status, p.retry_after, p.detail)
        };
        let (status, retry, detail) = answer(&health);
        assert_eq!((status, retry), (503, Some(1)), "no broker yet: {detail}");
        health.set_broker_up(true);
        assert_eq!(answer(&health).0, 503, "no partitions assigned yet");
        health.set_assigned(2);
        health.set_restoring(true);
        let (status, retry, detail) = answer(&health);
        assert_eq!((status, retry), (503, Some(1)));
        assert!(detail.contains("restoring state") && detail.contains("facebook:1"), "{detail}");
        health.set_restoring(false);
        let (status, retry, detail) = answer(&health);
        assert_eq!((status, retry), (404, None));
        assert!(detail.contains("another instance may own"), "{detail}");
    }
}
