//! `/api/v1/messages`: write a message (to `messages`), read one minute's statistics (from
//! `messages.stats`) and the all-time totals (from `messages.totals`); both topics are read whole
//! by every instance ([`crate::kafka::results`]).
//!
//! | request | answer |
//! |---|---|
//! | `POST /api/v1/messages` `{"username", "city", "state", "message", "ts"?}` | 202 after the broker's ack; 422 with the decoder's reason for what the pipeline would dead-letter |
//! | `GET /api/v1/messages/stats/{minute}` (`YYYY-MM-DDTHH:MM`, UTC) | 200: `{"minute_start", "final", "total", "users", "by_state", "top_cities"}`, `immutable` once final |
//! | `GET /api/v1/messages/totals` | 200: `{"total", "users", "by_state", "top_cities", "as_of"}` |
//!
//! Both read as CSV too (`?format=csv` or `Accept: text/csv`), one table in long form: a row
//! `total` and a row `users` (their figure in `count`), one row `state` per state (`rank`,
//! `state`, `count`) and one row `city` per top city (`rank`, `state`, `city`, `count`), each row
//! led by the minute's `minute_start` and `final`, or by the totals' `as_of`.

use actix_web::{web, HttpRequest, HttpResponse};

use super::{param, query, wants_csv, Api};
use crate::http::cache::{self, Freshness};
use crate::http::csv::{self, Csv};
use crate::http::limit::Class;
use crate::http::problem::Problem;
use crate::pipelines::messages::{
    decode_message, CityRank, MinuteStats, StateCount, Totals, INPUT, STATS, TOTALS, TOTALS_KEY,
};

/// The columns of the statistics after the leading ones (see the module documentation).
const FIGURE_COLUMNS: [&str; 5] = ["scope", "rank", "state", "city", "count"];

/// Writes the figures of a minute or of the totals as rows of `out`, each led by `lead`.
fn figure_rows(out: &mut Csv, lead: &[String], total: u64, users: u64, by_state: &[StateCount], cities: &[CityRank]) {
    let row = |out: &mut Csv, rest: [String; 5]| out.row(lead.iter().cloned().chain(rest));
    row(out, ["total".into(), String::new(), String::new(), String::new(), total.to_string()]);
    row(out, ["users".into(), String::new(), String::new(), String::new(), users.to_string()]);
    for (i, s) in by_state.iter().enumerate() {
        row(out, ["state".into(), (i + 1).to_string(), s.state.clone(), String::new(), s.count.to_string()]);
    }
    for c in cities {
        row(out, ["city".into(), c.rank.to_string(), c.state.clone(), c.city.clone(), c.count.to_string()]);
    }
}

/// The header of a CSV answer: `lead` columns, then the figures'.
fn header(lead: &[&'static str]) -> Vec<&'static str> {
    lead.iter().copied().chain(FIGURE_COLUMNS).collect()
}

/// The body of `POST /api/v1/messages`.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[allow(dead_code)] // documents the body; the pipeline's own decoder reads it
struct NewMessage {
    /// Who wrote it (the record's key), 1 to 64 bytes.
    #[schema(min_length = 1, max_length = 64, pattern = r"^\S(.*\S)?$")]
    username: String,
    /// City, grouped case-insensitively with whitespace collapsed, 1 to 64 bytes.
    #[schema(min_length = 1, max_length = 64, pattern = r"^[A-Za-z][A-Za-z .'-]{0,40}[A-Za-z]$")]
    city: String,
    /// State, compared upper-cased and trimmed, 1 to 32 bytes.
    #[schema(min_length = 2, max_length = 16, pattern = r"^[A-Za-z]{2,16}$")]
    state: String,
    /// The text, at most 4096 bytes.
    #[schema(max_length = 1000)]
    message: String,
    /// Event time, RFC 3339 or epoch ms (default: when it is written); at most 5 minutes ahead
    /// of the time it is written.
    #[schema(format = DateTime, pattern = r"^(19[7-9][0-9]|20[01][0-9]|202[0-5])-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])[Tt]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$")]
    ts: Option<String>,
}

/// Write a message.
#[utoipa::path(post, path = "/api/v1/messages", tag = "messages", request_body = NewMessage,
    responses((status = 202, body = super::Accepted), (status = 400), (status = 401), (status = 403), (status = 413), (status = 415),
        (status = 422, description = "refused by the pipeline's decoder"), (status = 429), (status = 503)),
    security(("bearer" = [])))]
async fn create(api: web::Data<Api>, req: HttpRequest, payload: web::Payload) -> Result<HttpResponse, Problem> {
    let gated = api.gate(&req, Class::Write)?;
    query(&req, &[])?;
    let body = api.json_body(&req, payload).await?;
    let parsed: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| Problem::invalid(format!("the body is not valid JSON: {e}")))?;
    let username = parsed
        .get("username")
        .and_then(|u| u.as_str())
        .ok_or_else(|| Problem::invalid("field `username` is missing or not a string").with_field("username"))?
        .to_string();
    let accepted = api.produce(INPUT, username.as_bytes(), Some(&body), |r| decode_message(r).map(|_| ())).await?;
    Ok(gated.answer(accepted.answer(None)))
}

/// One minute's statistics.
#[utoipa::path(get, path = "/api/v1/messages/stats/{minute}", tag = "messages",
    params(("minute" = String, Path, description = "`YYYY-MM-DDTHH:MM`, UTC", pattern = "^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])T([01][0-9]|2[0-3]):[0-5][0-9]$"),
        ("format" = Option<String>, Query, description = "`json` (default) or `csv`; or `Accept: text/csv`", pattern = "^(json|csv)$")),
    responses((status = 200, content((Object = "application/json"), (String = "text/csv"))), (status = 304), (status = 400), (status = 401), (status = 403), (status = 404), (status = 429),
        (status = 503, description = "this instance is still reading `messages.stats` after its start")),
    security(("bearer" = [])))]
async fn stats(api: web::Data<Api>, req: HttpRequest) -> Result<HttpResponse, Problem> {
    let gated = api.gate(&req, Class::Read)?;
    let params = query(&req, &["format"])?;
    let csv = wants_csv(&req, param(&params, "format"))?;
    let minute = super::decode(req.match_info().get("minute").unwrap_or_default(), false, "the minute")?;
    if minute.len() != 16 || chrono::NaiveDateTime::parse_from_str(&minute, "%Y-%m-%dT%H:%M").is_err() {
        return Err(Problem::bad_request(format!(
            "`{minute}` is not a minute: expected `YYYY-MM-DDTHH:MM` (UTC), e.g. `2026-12-05T10:00`"
        ))
        .with_field("minute"));
    }
    let v = api.result(STATS, &minute, &format!("statistics of the minute {minute}")).map_err(|mut p| {
        if p.status == 404 {
            p.detail.push_str("; a minute has a record once it is final (watermark or idleness)");
        }
        p.with_field("minute")
    })?;
    let freshness = if super::is_final(&v.bytes) == Some(true) { Freshness::Immutable } else { Freshness::Live };
    if !csv {
        return Ok(gated.answer(cache::stored(&req, "application/json", &v.bytes, freshness)));
    }
    let m = serde_json::from_slice::<MinuteStats>(&v.bytes)
        .map_err(|e| Problem::unavailable(format!("unreadable statistics of the minute {minute}: {e}"), 1))?;
    let mut out = Csv::new(&header(&["minute_start", "final"]));
    figure_rows(&mut out, &[m.minute_start, m.is_final.to_string()], m.total, m.users, &m.by_state, &m.top_cities);
    Ok(gated.answer(cache::answer(&req, csv::CONTENT_TYPE, out.into_bytes(), freshness)))
}

/// The all-time totals.
#[utoipa::path(get, path = "/api/v1/messages/totals", tag = "messages",
    params(("format" = Option<String>, Query, description = "`json` (default) or `csv`; or `Accept: text/csv`", pattern = "^(json|csv)$")),
    responses((status = 200, content((Object = "application/json"), (String = "text/csv"))), (status = 304), (status = 400), (status = 401), (status = 403), (status = 404), (status = 429), (status = 503)),
    security(("bearer" = [])))]
async fn totals(api: web::Data<Api>, req: HttpRequest) -> Result<HttpResponse, Problem> {
    let gated = api.gate(&req, Class::Read)?;
    let params = query(&req, &["format"])?;
    let csv = wants_csv(&req, param(&params, "format"))?;
    let v = api.result(TOTALS, TOTALS_KEY, "message totals")?;
    if !csv {
        return Ok(gated.answer(cache::stored(&req, "application/json", &v.bytes, Freshness::Live)));
    }
    let t: Totals = serde_json::from_slice(&v.bytes)
        .map_err(|e| Problem::unavailable(format!("unreadable message totals: {e}"), 1))?;
    let mut out = Csv::new(&header(&["as_of"]));
    figure_rows(&mut out, &[t.as_of], t.total, t.users, &t.by_state, &t.top_cities);
    Ok(gated.answer(cache::answer(&req, csv::CONTENT_TYPE, out.into_bytes(), Freshness::Live)))
}

/// Mounts the routes, under the scope `/api/v1/messages`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("").route(web::post().to(create)).default_service(super::not_allowed("POST")))
        .service(
            web::resource("/stats/{minute}").route(web::get().to(stats)).default_service(super::not_allowed("GET")),
        )
        .service(web::resource("/totals").route(web::get().to(totals)).default_service(super::not_allowed("GET")));
}

/// The OpenAPI operations of this file.
#[derive(utoipa::OpenApi)]
#[openapi(paths(create, stats, totals), components(schemas(NewMessage)))]
pub struct Doc;
