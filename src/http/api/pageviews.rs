//! `/api/v1/pageviews`: the blacklist of (domain, title) pairs never ranked (writes to the
//! compacted `pageviews.blacklist` topic, a table every instance reads whole).
//!
//! | request | answer |
//! |---|---|
//! | `POST /api/v1/pageviews/blacklist` `{"domain", "title"}` | 202: the pair is excluded from rankings |
//! | `DELETE /api/v1/pageviews/blacklist/{domain}/{title}` | 202: ranked again (a tombstone) |

use actix_web::{web, HttpRequest, HttpResponse};

use super::{query, Api};
use crate::http::limit::Class;
use crate::http::problem::Problem;
use crate::pipelines::pageviews::blacklist::decode_blacklist;
use crate::pipelines::pageviews::BLACKLIST;

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

/// Mounts the routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/api/v1/pageviews/blacklist")
            .route(web::post().to(add))
            .default_service(super::not_allowed("POST")),
    )
    .service(
        web::resource("/api/v1/pageviews/blacklist/{domain}/{title}")
            .route(web::delete().to(remove))
            .default_service(super::not_allowed("DELETE")),
    );
}

/// The OpenAPI operations of this file.
#[derive(utoipa::OpenApi)]
#[openapi(paths(add, remove), components(schemas(Entry)))]
pub struct Doc;
