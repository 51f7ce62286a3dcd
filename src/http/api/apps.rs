//! `/api/v1/apps`: load an app catalogue (a CSV upload read by the same reader as
//! `pagepulse ingest apps`, written to the compacted `apps` topic), and read the rankings of
//! `apps.top` and one app (its catalogue record with its mentions from `apps.mentions`). The three
//! topics are read whole by every instance ([`crate::kafka::results`]).
//!
//! | request | answer |
//! |---|---|
//! | `POST /api/v1/apps` (`text/csv`: Kaggle's `AppleStore.csv`, 16 or 17 columns; `?remove=true` writes tombstones) | 202 once every accepted row is acknowledged: `{"topic", "accepted", "refused", "refused_rows": [{"line", "reason"}]}` (the first 10 refused rows); 422 when the header is not the data set's |
//! | `GET /api/v1/apps/top/{ranking}` | 200: the ranking's latest `apps.top` value; CSV with the original download's columns `id,track_name,mentions_total,size_bytes,price,prime_genre` |
//! | `GET /api/v1/apps/{id}` | 200: `{"app": <catalogue record>, "mentions_total", "mentions_24h", "as_of"}` |

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;

use super::{param, query, require_content_type, wants_csv, Api};
use crate::http::cache::{self, Freshness};
use crate::http::csv::{self, Csv};
use crate::http::limit::Class;
use crate::http::problem::Problem;
use crate::http::writes::Records;
use crate::ingest::apps::{self as reader, Layout, Rows};
use crate::pipelines::apps::{MentionsValue, TopValue, CATALOGUE, MENTIONS, TOP};

/// Refused rows listed in an answer (all are counted).
pub const SHOWN_REFUSALS: usize = 10;

/// The body of `POST /api/v1/apps`: a catalogue in the form of Kaggle's `AppleStore.csv` (its
/// 16-column form as documented here; the 17-column form with a leading unnamed index column, and
/// quoted header fields, are read too). Rows the reader refuses are reported, not written.
struct CatalogueCsv;

/// The header [`CatalogueCsv`]'s schema requires, then any lines.
const CATALOGUE_PATTERN: &str = r"^id,track_name,size_bytes,currency,price,rating_count_tot,rating_count_ver,user_rating,user_rating_ver,ver,cont_rating,prime_genre,sup_devices\.num,ipadSc_urls\.num,lang\.num,vpp_lic(\r?\n[^\r\n]*)*$";

impl utoipa::PartialSchema for CatalogueCsv {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some(CATALOGUE_PATTERN))
            .into()
    }
}

impl utoipa::ToSchema for CatalogueCsv {}

/// One refused row of an upload.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct RefusedRow {
    /// The line the row starts on (the header is line 1).
    line: u64,
    /// Why it was refused.
    reason: String,
}

/// The answer to an upload.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Loaded {
    /// The topic written.
    topic: &'static str,
    /// Rows written (records, or tombstones with `remove=true`), each acknowledged.
    accepted: usize,
    /// Rows refused (not written).
    refused: usize,
    /// The first refused rows.
    refused_rows: Vec<RefusedRow>,
}

/// The catalogue in `body`, read as `ingest apps` reads a file: (key, value) records and the
/// refused rows. An unreadable header refuses the whole upload.
fn read_catalogue(body: &[u8], remove: bool) -> Result<(Records, usize, Vec<RefusedRow>), Problem> {
    let mut rows = Rows::new();
    let mut layout: Option<Layout> = None;
    let (mut records, mut refused, mut shown) = (Vec::new(), 0usize, Vec::new());
    let mut take =
        |start: u64, row: Result<Vec<String>, reader::RowError>, layout: &mut Option<Layout>| -> Result<(), Problem> {
            let Some(l) = layout.as_ref() else {
                let l = row
                    .map_err(|e| reader::HeaderError::Malformed(e.to_string()))
                    .and_then(|fields| Layout::from_header(&fields))
                    .map_err(|e| {
                        Problem::invalid(format!("line {start}: {e}: not an App Store catalogue, nothing loaded"))
                    })?;
                *layout = Some(l);
                return Ok(());
            };
            match row.and_then(|fields| l.app(&fields)) {
                Ok(app) => {
                    let mut value = Vec::new();
                    reader::encode(&app, &mut value);
                    records.push((app.id.into_bytes(), (!remove).then_some(value)));
                }
                Err(e) => {
                    refused += 1;
                    if shown.len() < SHOWN_REFUSALS {
                        shown.push(RefusedRow { line: start, reason: e.to_string() });
                    }
                }
            }
            Ok(())
        };
    for (i, line) in body.split_inclusive(|&b| b == b'\n').enumerate() {
        if let Some((start, row)) = rows.push(i as u64 + 1, line) {
            take(start, row, &mut layout)?;
        }
    }
    if let Some((start, e)) = rows.finish() {
        take(start, Err(e), &mut layout)?;
    }
    if layout.is_none() {
        return Err(Problem::invalid("the body holds no CSV header: not an App Store catalogue, nothing loaded"));
    }
    Ok((records, refused, shown))
}

/// Load (or, with `remove=true`, remove) the apps of a catalogue.
#[utoipa::path(post, path = "/api/v1/apps", tag = "apps",
    params(("remove" = Option<bool>, Query, description = "write tombstones for the rows' apps instead (default false)")),
    request_body(content = CatalogueCsv, content_type = "text/csv", description = "Kaggle's AppleStore.csv, 16 or 17 columns"),
    responses((status = 202, body = Loaded), (status = 400), (status = 401), (status = 403), (status = 413), (status = 415),
        (status = 422, description = "the header is not the data set's"), (status = 429), (status = 503)),
    security(("bearer" = [])))]
async fn upload(api: web::Data<Api>, req: HttpRequest, payload: web::Payload) -> Result<HttpResponse, Problem> {
    let gated = api.gate(&req, Class::Write)?;
    let params = query(&req, &["remove"])?;
    let remove = match params.iter().find(|(n, _)| n == "remove").map(|(_, v)| v.as_str()) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(
                Problem::bad_request(format!("`remove` must be `true` or `false`, got `{other}`")).with_field("remove")
            )
        }
    };
    require_content_type(&req, &["text/csv"])?;
    let body = api.body(payload, api.cfg.http.max_upload_bytes, "the CSV upload").await?;
    let (records, refused, refused_rows) = read_catalogue(&body, remove)?;
    let accepted = api.writer.send_all(CATALOGUE, &records).await?;
    let loaded = Loaded { topic: CATALOGUE, accepted, refused, refused_rows };
    Ok(gated.answer(HttpResponse::Accepted().json(loaded)))
}

/// A catalogue field of `id`'s `apps` record, as text (empty when unknown).
fn catalogue_field(api: &Api, id: &str, field: &str) -> String {
    let Some(v) = api.live.results.table(CATALOGUE).and_then(|t| t.get(id)) else { return String::new() };
    match serde_json::from_slice::<serde_json::Value>(&v.bytes).ok().and_then(|j| j.get(field).cloned()) {
        Some(serde_json::Value::String(s)) => s,
        Some(serde_json::Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// A ranking of the catalogue (default `Book+Music`).
#[utoipa::path(get, path = "/api/v1/apps/top/{ranking}", tag = "apps",
    params(("ranking" = String, Path, description = "a ranking's name, e.g. `Book+Music` (`+` percent-encoded as `%2B`)"),
        ("format" = Option<String>, Query, description = "`json` (default) or `csv`", pattern = "^(json|csv)$")),
    responses((status = 200, content((Object = "application/json"), (String = "text/csv"))), (status = 304), (status = 400), (status = 401), (status = 403), (status = 404), (status = 429), (status = 503)),
    security(("bearer" = [])))]
async fn top(api: web::Data<Api>, req: HttpRequest) -> Result<HttpResponse, Problem> {
    let gated = api.gate(&req, Class::Read)?;
    let params = query(&req, &["format"])?;
    let csv = wants_csv(&req, param(&params, "format"))?;
    let ranking = super::decode(req.match_info().get("ranking").unwrap_or_default(), false, "the ranking")?;
    let v = api.result(TOP, &ranking, &format!("ranking `{ranking}`")).map_err(|p| p.with_field("ranking"))?;
    if !csv {
        return Ok(gated.answer(cache::stored(&req, "application/json", &v.bytes, Freshness::Live)));
    }
    let t: TopValue =
        serde_json::from_slice(&v.bytes).map_err(|e| Problem::unavailable(format!("unreadable ranking: {e}"), 1))?;
    let mut out = Csv::new(&["id", "track_name", "mentions_total", "size_bytes", "price", "prime_genre"]);
    for a in &t.apps {
        let size = catalogue_field(&api, &a.id, "size_bytes");
        out.row([&a.id, &a.track_name, &a.mentions_total.to_string(), &size, &a.price.to_string(), &a.prime_genre]);
    }
    Ok(gated.answer(cache::answer(&req, csv::CONTENT_TYPE, out.into_bytes(), Freshness::Live)))
}

/// One app: its catalogue record and its mentions.
#[utoipa::path(get, path = "/api/v1/apps/{id}", tag = "apps",
    params(("id" = String, Path, description = "the App Store id")),
    responses((status = 200, body = Object), (status = 304), (status = 400), (status = 401), (status = 403), (status = 404), (status = 429), (status = 503)),
    security(("bearer" = [])))]
async fn one(api: web::Data<Api>, req: HttpRequest) -> Result<HttpResponse, Problem> {
    let gated = api.gate(&req, Class::Read)?;
    query(&req, &[])?;
    let id = super::decode(req.match_info().get("id").unwrap_or_default(), false, "the app id")?;
    let app = api.result(CATALOGUE, &id, &format!("app `{id}`")).map_err(|p| p.with_field("id"))?;
    let app: serde_json::Value =
        serde_json::from_slice(&app.bytes).map_err(|e| Problem::unavailable(format!("unreadable app: {e}"), 1))?;
    let mentions = api
        .live
        .results
        .table(MENTIONS)
        .and_then(|t| t.get(&id))
        .and_then(|v| serde_json::from_slice::<MentionsValue>(&v.bytes).ok());
    let body = serde_json::json!({
        "app": app,
        "mentions_total": mentions.as_ref().map_or(0, |m| m.mentions_total),
        "mentions_24h": mentions.as_ref().map_or(0, |m| m.mentions_24h),
        "as_of": mentions.map(|m| m.as_of),
    });
    Ok(gated.answer(cache::json(&req, &body, Freshness::Live)))
}

/// Mounts the routes, under the scope `/api/v1/apps`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("").route(web::post().to(upload)).default_service(super::not_allowed("POST")))
        .service(web::resource("/top/{ranking}").route(web::get().to(top)).default_service(super::not_allowed("GET")))
        .service(web::resource("/{id}").route(web::get().to(one)).default_service(super::not_allowed("GET")));
}

/// The OpenAPI operations of this file.
#[derive(utoipa::OpenApi)]
#[openapi(paths(upload, top, one), components(schemas(Loaded, RefusedRow, CatalogueCsv)))]
pub struct Doc;
