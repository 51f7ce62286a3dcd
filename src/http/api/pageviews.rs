//! `/api/v1/pageviews`: an hour's top articles of a domain, final or not yet, and a domain's
//! trending view (read from `pageviews.top` and `pageviews.trending`, which every instance reads
//! whole: [`crate::kafka::results`]), and the blacklist of (domain, title) pairs never ranked
//! (writes to the compacted `pageviews.blacklist` topic, a table every instance reads whole).
//!
//! | request | answer |
//! |---|---|
//! | `GET /api/v1/pageviews/top/{domain}/{hour}` (`hour` = `YYYY-MM-DDTHH`, its start in UTC) | 200: `{"domain", "hour_start", "final", "total_views", "late_events", "articles": [{"rank", "title", "views"}]}`, CSV `domain,hour_start,final,rank,title,views`; a final hour is `immutable` |
//! | `GET /api/v1/pageviews/trending/{domain}` | 200: `{"domain", "window_start", "window_end", "articles"}`, CSV `domain,window_start,window_end,rank,title,views` |
//! | `POST /api/v1/pageviews/blacklist` `{"domain", "title"}` | 202: the pair is excluded from rankings |
//! | `DELETE /api/v1/pageviews/blacklist/{domain}/{title}` | 202: ranked again (a tombstone) |
//! | `POST /api/v1/pageviews/reports` `{"start", "end"}` | 202: a backfill job computing every hour of the range from the dump mirror; `Location` is its state |
//! | `GET /api/v1/pageviews/reports/{job}` | 200: the job, its counts and every hour's state (`pageviews.jobs`) |
//! | `GET /api/v1/pageviews/hours/{hour}` | 200: the hour's latest state, whichever job (or ingestion) computed it |
//! | `GET /api/v1/pageviews/hours/{hour}/top` | 200: every domain's top articles of the hour, JSON or CSV (the hour's report) |

use actix_web::{web, HttpRequest, HttpResponse};

use super::{param, query, wants_csv, Api};
use crate::clock::format_ms;
use crate::http::cache::{self, Freshness};
use crate::http::csv::{self, Csv};
use crate::http::limit::Class;
use crate::http::problem::Problem;
use crate::ops::latest::Value;
use crate::pipelines::pageviews::backfill::job::{self, closing, Closing, HourDoc, HourStatus, JobDoc};
use crate::pipelines::pageviews::backfill::processor::decode_request;
use crate::pipelines::pageviews::blacklist::decode_blacklist;
use crate::pipelines::pageviews::{CloseAck, DomainTrending, HourTop, BLACKLIST, JOBS, REPORTS, TOP, TRENDING};

/// Checks an hour written `YYYY-MM-DDTHH` (UTC, the hour's start).
fn check_hour(hour: &str) -> Result<(), Problem> {
    match chrono::NaiveDateTime::parse_from_str(&format!("{hour}:00"), "%Y-%m-%dT%H:%M") {
        Ok(_) if hour.len() == 13 => Ok(()),
        _ => Err(Problem::bad_request(format!(
            "`{hour}` is not an hour: expected `YYYY-MM-DDTHH` (UTC, the hour's start), e.g. `2026-12-05T14`"
        ))
        .with_field("hour")),
    }
}

/// An hour's top articles of a domain: final (`"final": true`, never changes again) or, while
/// the hour is open and `pipelines.pageviews.provisional_interval` is set, provisional.
#[utoipa::path(get, path = "/api/v1/pageviews/top/{domain}/{hour}", tag = "pageviews",
    params(("domain" = String, Path, description = "e.g. `en` or `de.m`", pattern = "^[^ |]+$"),
        ("hour" = String, Path, description = "`YYYY-MM-DDTHH`, the hour's start in UTC", pattern = "^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])T([01][0-9]|2[0-3])$"),
        ("format" = Option<String>, Query, description = "`json` (default) or `csv`; or `Accept: text/csv`", pattern = "^(json|csv)$")),
    responses((status = 200, content((Object = "application/json"), (String = "text/csv"))), (status = 304), (status = 400), (status = 401), (status = 403), (status = 404), (status = 429),
        (status = 503, description = "this instance is still reading `pageviews.top` after its start")),
    security(("bearer" = [])))]
async fn top(api: web::Data<Api>, req: HttpRequest) -> Result<HttpResponse, Problem> {
    let gated = api.gate(&req, Class::Read)?;
    let params = query(&req, &["format"])?;
    let csv = wants_csv(&req, param(&params, "format"))?;
    let domain = super::decode(req.match_info().get("domain").unwrap_or_default(), false, "the domain")?;
    let hour = super::decode(req.match_info().get("hour").unwrap_or_default(), false, "the hour")?;
    check_hour(&hour)?;
    let what = format!("top articles of domain `{domain}` for the hour {hour}");
    let v = api.result(TOP, &format!("{domain}|{hour}"), &what).map_err(|mut p| {
        if p.status == 404 && api.cfg.pageviews.provisional_interval.is_none() {
            p.detail.push_str(
                "; an hour still open has no record until it is final (pipelines.pageviews.provisional_interval \
                 is off)",
            );
        }
        p
    })?;
    if !csv {
        // Only `final` is needed to answer JSON: the body is the record as stored.
        let fin = super::is_final(&v.bytes).ok_or_else(|| Problem::unavailable(format!("unreadable {what}"), 1))?;
        let freshness = if fin { Freshness::Immutable } else { Freshness::Live };
        return Ok(gated.answer(cache::stored(&req, "application/json", &v.bytes, freshness)));
    }
    let t: HourTop =
        serde_json::from_slice(&v.bytes).map_err(|e| Problem::unavailable(format!("unreadable {what}: {e}"), 1))?;
    let freshness = if t.is_final { Freshness::Immutable } else { Freshness::Live };
    Ok(gated.answer(cache::answer(&req, csv::CONTENT_TYPE, hour_csv(std::slice::from_ref(&t)), freshness)))
}

/// A domain's trending articles: the top over the last 60 minutes of event time.
#[utoipa::path(get, path = "/api/v1/pageviews/trending/{domain}", tag = "pageviews",
    params(("domain" = String, Path, description = "e.g. `en` or `de.m`", pattern = "^[^ |]+$"),
        ("format" = Option<String>, Query, description = "`json` (default) or `csv`; or `Accept: text/csv`", pattern = "^(json|csv)$")),
    responses((status = 200, content((Object = "application/json"), (String = "text/csv"))), (status = 304), (status = 400), (status = 401), (status = 403), (status = 404), (status = 429),
        (status = 503, description = "this instance is still reading `pageviews.trending` after its start")),
    security(("bearer" = [])))]
async fn trending(api: web::Data<Api>, req: HttpRequest) -> Result<HttpResponse, Problem> {
    let gated = api.gate(&req, Class::Read)?;
    let params = query(&req, &["format"])?;
    let csv = wants_csv(&req, param(&params, "format"))?;
    let domain = super::decode(req.match_info().get("domain").unwrap_or_default(), false, "the domain")?;
    let what = format!("trending view of domain `{domain}`");
    let v = api.result(TRENDING, &domain, &what)?;
    if !csv {
        return Ok(gated.answer(cache::stored(&req, "application/json", &v.bytes, Freshness::Live)));
    }
    let t: DomainTrending =
        serde_json::from_slice(&v.bytes).map_err(|e| Problem::unavailable(format!("unreadable {what}: {e}"), 1))?;
    let mut out = Csv::new(&["domain", "window_start", "window_end", "rank", "title", "views"]);
    for a in &t.articles {
        out.row([&t.domain, &t.window_start, &t.window_end, &a.rank.to_string(), &a.title, &a.views.to_string()]);
    }
    Ok(gated.answer(cache::answer(&req, csv::CONTENT_TYPE, out.into_bytes(), Freshness::Live)))
}

/// A blacklist entry.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
struct Entry {
    /// The domain, e.g. `en` or `de.m` (no spaces).
    #[schema(pattern = "^[^ ]+$")]
    domain: String,
    /// The article title, as in the dumps.
    #[schema(min_length = 1)]
    title: String,
}

/// Exclude a (domain, title) pair from the rankings.
#[utoipa::path(post, path = "/api/v1/pageviews/blacklist", tag = "pageviews", request_body = Entry,
    responses((status = 202, body = super::Accepted), (status = 400), (status = 401), (status = 403), (status = 413), (status = 415),
        (status = 422), (status = 429), (status = 503)),
    security(("bearer" = [])))]
async fn add(api: web::Data<Api>, req: HttpRequest, payload: web::Payload) -> Result<HttpResponse, Problem> {
    let gated = api.gate(&req, Class::Write)?;
    query(&req, &[])?;
    let body = api.json_body(&req, payload).await?;
    let entry: Entry = serde_json::from_slice(&body)
        .map_err(|e| Problem::invalid(format!("the body is not a blacklist entry: {e}")))?;
    let key = format!("{} {}", entry.domain, entry.title);
    let accepted = api.produce(BLACKLIST, key.as_bytes(), Some(&body), |r| decode_blacklist(r).map(|_| ())).await?;
    Ok(gated.answer(accepted.answer(None)))
}

/// Rank a (domain, title) pair again.
#[utoipa::path(delete, path = "/api/v1/pageviews/blacklist/{domain}/{title}", tag = "pageviews",
    params(("domain" = String, Path, pattern = "^[^ ]+$"), ("title" = String, Path, min_length = 1)),
    responses((status = 202, body = super::Accepted), (status = 400), (status = 401), (status = 403), (status = 422), (status = 429), (status = 503)),
    security(("bearer" = [])))]
async fn remove(api: web::Data<Api>, req: HttpRequest) -> Result<HttpResponse, Problem> {
    let gated = api.gate(&req, Class::Write)?;
    query(&req, &[])?;
    let domain = super::decode(req.match_info().get("domain").unwrap_or_default(), false, "the domain")?;
    let title = super::decode(req.match_info().get("title").unwrap_or_default(), false, "the title")?;
    let key = format!("{domain} {title}");
    let accepted = api.produce(BLACKLIST, key.as_bytes(), None, |r| decode_blacklist(r).map(|_| ())).await?;
    Ok(gated.answer(accepted.answer(None)))
}

/// A request for the reports of a range of hours.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ReportRequest {
    /// First hour, `YYYY-MM-DDTHH` (its start, UTC).
    #[schema(pattern = "^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])T([01][0-9]|2[0-3])$")]
    start: String,
    /// Last hour, inclusive, not before `start`, at most `pipelines.pageviews.backfill_max_hours`
    /// hours from it (default: `start`, one hour).
    #[schema(pattern = "^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])T([01][0-9]|2[0-3])$")]
    end: Option<String>,
}

/// The answer to a new report request.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
struct ReportAccepted {
    /// The job's id.
    job: String,
    /// `pending`.
    status: &'static str,
    /// First hour.
    start: String,
    /// Last hour.
    end: String,
    /// Hours in the range.
    hours: usize,
    /// Where its state is read.
    links: ReportLinks,
}

/// Links of a job.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
struct ReportLinks {
    /// The job's state.
    #[serde(rename = "self")]
    this: String,
}

/// Ask for the page-view reports of a range of past hours: a backfill job downloads each hour's
/// dump from `pipelines.pageviews.dump_mirror` and computes its top articles per domain; hours
/// already final are skipped.
#[utoipa::path(post, path = "/api/v1/pageviews/reports", tag = "pageviews", request_body = ReportRequest,
    responses((status = 202, body = ReportAccepted, headers(("Location" = String, description = "the job's state"))),
        (status = 400), (status = 401), (status = 403), (status = 413), (status = 415), (status = 422), (status = 429), (status = 503)),
    security(("bearer" = [])))]
async fn create_report(api: web::Data<Api>, req: HttpRequest, payload: web::Payload) -> Result<HttpResponse, Problem> {
    let gated = api.gate(&req, Class::Write)?;
    query(&req, &[])?;
    let body = api.json_body(&req, payload).await?;
    let r: ReportRequest = serde_json::from_slice(&body).map_err(|e| report_field_problem(&e.to_string()))?;
    let now = chrono::Utc::now().timestamp_millis();
    let end = r.end.unwrap_or_else(|| r.start.clone());
    let request = job::Request { job: job::new_job_id(now), start: r.start, end, requested_at: format_ms(now) };
    let p = &api.cfg.pageviews;
    let hours =
        request.hours(p.backfill_max_hours).map_err(|e| Problem::bad_request(e.to_string()).with_field(e.field))?;
    // The job's document first: whichever instance answers next knows the job before it runs.
    let doc = JobDoc::new(&request, &hours, &p.dump_mirror, p.backfill_max_tries, now);
    let doc_bytes = serde_json::to_vec(&doc).expect("plain struct");
    let key = job::job_key(&request.job);
    api.writer.send(JOBS, key.as_bytes(), Some(&doc_bytes)).await?;
    if let Some(t) = api.live.results.table(JOBS) {
        if t.get(&key).is_none() {
            t.apply(&key, Some(Value::new(&doc_bytes, now)), now);
        }
    }
    let value = serde_json::to_vec(&request).expect("plain struct");
    let max = p.backfill_max_hours;
    api.produce(REPORTS, request.job.as_bytes(), Some(&value), |rec| decode_request(rec, max).map(|_| ())).await?;
    let location = format!("/api/v1/pageviews/reports/{}", request.job);
    let answer = ReportAccepted {
        job: request.job,
        status: "pending",
        start: request.start,
        end: request.end,
        hours: hours.len(),
        links: ReportLinks { this: location.clone() },
    };
    Ok(gated.answer(HttpResponse::Accepted().insert_header((actix_web::http::header::LOCATION, location)).json(answer)))
}

/// A 400 for a body that is not a report request, naming the field serde names.
fn report_field_problem(error: &str) -> Problem {
    let p = Problem::bad_request(format!("the body is not a report request {{\"start\", \"end\"}}: {error}"));
    let field = ["start", "end"].into_iter().find(|f| error.contains(&format!("`{f}`")));
    let unknown = error.strip_prefix("unknown field `").and_then(|r| r.split('`').next());
    match unknown.or(field) {
        Some(f) => p.with_field(f.to_string()),
        None => p,
    }
}

/// A backfill job: its state, counts by state, and every hour's state (status, tries, error,
/// lines, times, where its results are).
#[utoipa::path(get, path = "/api/v1/pageviews/reports/{job}", tag = "pageviews",
    params(("job" = String, Path, description = "the id `POST /api/v1/pageviews/reports` answered", pattern = "^[A-Za-z0-9_-]{1,64}$")),
    responses((status = 200, content((Object = "application/json"))), (status = 304), (status = 400), (status = 401), (status = 403), (status = 404), (status = 429),
        (status = 503, description = "this instance is still reading `pageviews.jobs` after its start")),
    security(("bearer" = [])))]
async fn report(api: web::Data<Api>, req: HttpRequest) -> Result<HttpResponse, Problem> {
    let gated = api.gate(&req, Class::Read)?;
    query(&req, &[])?;
    let id = super::decode(req.match_info().get("job").unwrap_or_default(), false, "the job")?;
    job::check_job_id(&id)
        .map_err(|e| Problem::bad_request(format!("`{id}` is not a job id: {}", e.message)).with_field("job"))?;
    let v = api.result(JOBS, &job::job_key(&id), &format!("backfill job `{id}`"))?;
    Ok(gated.answer(cache::stored(&req, "application/json", &v.bytes, Freshness::Live)))
}

/// An hour's state: the latest job that computed it (or an ingestion of its file, `job: null`).
#[utoipa::path(get, path = "/api/v1/pageviews/hours/{hour}", tag = "pageviews",
    params(("hour" = String, Path, description = "`YYYY-MM-DDTHH`, the hour's start in UTC", pattern = "^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])T([01][0-9]|2[0-3])$")),
    responses((status = 200, content((Object = "application/json"))), (status = 304), (status = 400), (status = 401), (status = 403), (status = 404), (status = 429),
        (status = 503, description = "this instance is still reading `pageviews.jobs` after its start")),
    security(("bearer" = [])))]
async fn hour(api: web::Data<Api>, req: HttpRequest) -> Result<HttpResponse, Problem> {
    let gated = api.gate(&req, Class::Read)?;
    query(&req, &[])?;
    let hour = super::decode(req.match_info().get("hour").unwrap_or_default(), false, "the hour")?;
    check_hour(&hour)?;
    let what = format!("hour {hour}");
    let key = format!("hour/{hour}");
    match api.result(JOBS, &key, &what) {
        Ok(v) => Ok(gated.answer(cache::stored(&req, "application/json", &v.bytes, Freshness::Live))),
        Err(p) if p.status == 404 => {
            // Ingested with `pagepulse ingest pageviews`: no job, but every partition says so.
            let doc = ingested_hour(&api, &hour).ok_or(p)?;
            let body = serde_json::to_vec(&doc).expect("plain struct");
            Ok(gated.answer(cache::answer(&req, "application/json", body, Freshness::Live)))
        }
        Err(p) => Err(p),
    }
}

/// The report of an hour: every domain's top articles, by domain (JSON: `{"hour", "domains":
/// [...pageviews.top records]}`; CSV: `domain,hour_start,final,rank,title,views`). Final once
/// every domain's record is.
#[utoipa::path(get, path = "/api/v1/pageviews/hours/{hour}/top", tag = "pageviews",
    params(("hour" = String, Path, description = "`YYYY-MM-DDTHH`, the hour's start in UTC", pattern = "^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])T([01][0-9]|2[0-3])$"),
        ("format" = Option<String>, Query, description = "`json` (default) or `csv`; or `Accept: text/csv`", pattern = "^(json|csv)$")),
    responses((status = 200, content((Object = "application/json"), (String = "text/csv"))), (status = 304), (status = 400), (status = 401), (status = 403), (status = 404), (status = 429),
        (status = 503, description = "this instance is still reading `pageviews.top` after its start")),
    security(("bearer" = [])))]
async fn hour_top(api: web::Data<Api>, req: HttpRequest) -> Result<HttpResponse, Problem> {
    let gated = api.gate(&req, Class::Read)?;
    let params = query(&req, &["format"])?;
    let csv = wants_csv(&req, param(&params, "format"))?;
    let hour = super::decode(req.match_info().get("hour").unwrap_or_default(), false, "the hour")?;
    check_hour(&hour)?;
    let table = api.live.results.table(TOP).ok_or_else(|| {
        Problem::not_found(format!("`{TOP}` is not served here: its pipeline is disabled on this instance"))
    })?;
    let found = table.with_suffix(&format!("|{hour}"));
    if found.is_empty() {
        if !table.caught_up() {
            return Err(Problem::unavailable(
                format!("the hour {hour} is not known yet: this instance is still reading `{TOP}` after its start"),
                2,
            ));
        }
        return Err(Problem::not_found(format!(
            "no top articles of any domain for the hour {hour} in `{TOP}`: none was computed, or it is older than \
             the retention (http.results_retention)"
        )));
    }
    let tops: Vec<HourTop> = found
        .iter()
        .map(|(_, v)| serde_json::from_slice(&v.bytes))
        .collect::<Result<_, _>>()
        .map_err(|e| Problem::unavailable(format!("unreadable top articles of the hour {hour}: {e}"), 1))?;
    let freshness = if tops.iter().all(|t| t.is_final) { Freshness::Immutable } else { Freshness::Live };
    if !csv {
        #[derive(serde::Serialize)]
        struct Report<'a> {
            hour: &'a str,
            domains: &'a [HourTop],
        }
        let body = serde_json::to_vec(&Report { hour: &hour, domains: &tops }).expect("plain struct");
        return Ok(gated.answer(cache::answer(&req, "application/json", body, freshness)));
    }
    Ok(gated.answer(cache::answer(&req, csv::CONTENT_TYPE, hour_csv(&tops), freshness)))
}

/// The state of an hour no job computed, from its close acknowledgements: final if every
/// partition of `pageviews` this instance has heard from says so (up to the highest partition
/// that acknowledged the hour).
fn ingested_hour(api: &Api, hour: &str) -> Option<HourDoc> {
    let table = api.live.results.table(JOBS)?;
    let hour_ms = crate::ingest::dump::parse_hour(hour).ok()?;
    let prefix = job::close_prefix(hour_ms);
    let mut acks: Vec<Option<CloseAck>> = (0..256)
        .map(|p| table.get(&format!("{prefix}{p}")).and_then(|v| serde_json::from_slice(&v.bytes).ok()))
        .collect();
    let partitions = acks.iter().rposition(Option::is_some)? + 1;
    acks.truncate(partitions);
    let mut doc = HourDoc::pending("", hour_ms, String::new(), 1);
    doc.job = None;
    doc.max_tries = 1;
    doc.status = match closing(&acks, None) {
        Closing::Final { .. } => HourStatus::Done,
        _ => HourStatus::Ingesting,
    };
    doc.lines = acks.iter().flatten().filter(|a| a.outcome == "final").map(|a| a.records).sum();
    Some(doc)
}

/// The CSV of hour tops: one row per ranked article, `domain,hour_start,final,rank,title,views`.
fn hour_csv(tops: &[HourTop]) -> Vec<u8> {
    let mut out = Csv::new(&["domain", "hour_start", "final", "rank", "title", "views"]);
    for t in tops {
        for a in &t.articles {
            out.row([
                &t.domain,
                &t.hour_start,
                &t.is_final.to_string(),
                &a.rank.to_string(),
                &a.title,
                &a.views.to_string(),
            ]);
        }
    }
    out.into_bytes()
}

/// Mounts the routes, under the scope `/api/v1/pageviews`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/blacklist").route(web::post().to(add)).default_service(super::not_allowed("POST")))
        .service(
            web::resource("/blacklist/{domain}/{title}")
                .route(web::delete().to(remove))
                .default_service(super::not_allowed("DELETE")),
        )
        .service(
            web::resource("/top/{domain}/{hour}").route(web::get().to(top)).default_service(super::not_allowed("GET")),
        )
        .service(
            web::resource("/trending/{domain}")
                .route(web::get().to(trending))
                .default_service(super::not_allowed("GET")),
        )
        .service(
            web::resource("/reports").route(web::post().to(create_report)).default_service(super::not_allowed("POST")),
        )
        .service(
            web::resource("/reports/{job}").route(web::get().to(report)).default_service(super::not_allowed("GET")),
        )
        .service(web::resource("/hours/{hour}").route(web::get().to(hour)).default_service(super::not_allowed("GET")))
        .service(
            web::resource("/hours/{hour}/top")
                .route(web::get().to(hour_top))
                .default_service(super::not_allowed("GET")),
        );
}

/// The OpenAPI operations of this file.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(add, remove, top, trending, create_report, report, hour, hour_top),
    components(schemas(Entry, ReportRequest, ReportAccepted, ReportLinks))
)]
pub struct Doc;
