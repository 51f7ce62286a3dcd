//! `/api/v1/posts`: post a text for analysis (a write to `posts`), and read the trending
//! hashtags (the posts pipeline's live view).
//!
//! | request | answer |
//! |---|---|
//! | `POST /api/v1/posts` `{"id", "content", "author"?, "created_at"?}` | 202, `Location: /api/v1/posts/{id}/analysis` |
//! | `GET /api/v1/posts/{id}/analysis` | 200: the post's `posts.analysis` record; 404 naming the id when none is held (never analysed, or past `http.results_retention`); 503 while this instance still reads `posts.analysis` after its start |
//! | `GET /api/v1/posts/trending` | 200: `{"window_start", "window_end", "tags": [{"rank", "tag", "count"}]}`; 404 before the first hashtag |

use actix_web::{web, HttpRequest, HttpResponse};

use super::{query, Api};
use crate::http::cache::{self, Freshness};
use crate::http::limit::Class;
use crate::http::problem::Problem;
use crate::pipelines::posts::{decode_post, ANALYSIS, INPUT};

/// The body of `POST /api/v1/posts`.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[allow(dead_code)] // documents the body; the pipeline's own decoder reads it
struct NewPost {
    /// The post's id (its key).
    #[schema(min_length = 1)]
    id: String,
    /// Its text, at most `pipelines.posts.max_content_bytes` bytes.
    #[schema(max_length = 4096)]
    content: String,
    /// Who wrote it.
    author: Option<String>,
    /// When, RFC 3339 (default: when it is processed).
    #[schema(format = DateTime, pattern = r"^[1-9][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])[Tt]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$")]
    created_at: Option<String>,
}

/// Analyse a post.
#[utoipa::path(post, path = "/api/v1/posts", tag = "posts", request_body = NewPost,
    responses((status = 202, body = super::Accepted, headers(("Location" = String, description = "where its analysis will be"))),
        (status = 400), (status = 401), (status = 403), (status = 413), (status = 415), (status = 422), (status = 429), (status = 503)),
    security(("bearer" = [])))]
async fn create(api: web::Data<Api>, req: HttpRequest, payload: web::Payload) -> Result<HttpResponse, Problem> {
    let gated = api.gate(&req, Class::Write)?;
    query(&req, &[])?;
    let body = api.json_body(&req, payload).await?;
    let max = api.cfg.posts.max_content_bytes;
    // The key is the id; the pipeline's decoder checks the whole value.
    let probe = crate::engine::RawRecord { key: None, value: Some(body.to_vec()), offset: 0, timestamp_ms: None };
    let id = decode_post(&probe, max)
        .map_err(|why| Problem::invalid(why.message).with_reason(why.class.as_str()))?
        .id
        .to_string();
    let accepted = api.produce(INPUT, id.as_bytes(), Some(&body), |r| decode_post(r, max).map(|_| ())).await?;
    let location = format!("/api/v1/posts/{}/analysis", super::segment(&id));
    Ok(gated.answer(accepted.answer(Some(&location))))
}

/// One post's analysis (word count, average word length, hashtags, mentions), as the posts
/// pipeline wrote it to `posts.analysis`. Any instance answers for any post analysed within
/// `http.results_retention` (default 7 days).
#[utoipa::path(get, path = "/api/v1/posts/{id}/analysis", tag = "posts",
    params(("id" = String, Path, description = "the post's id")),
    responses((status = 200, body = Object), (status = 304), (status = 400), (status = 401), (status = 403), (status = 404), (status = 429),
        (status = 503, description = "this instance is still reading `posts.analysis` after its start")),
    security(("bearer" = [])))]
async fn analysis(api: web::Data<Api>, req: HttpRequest) -> Result<HttpResponse, Problem> {
    let gated = api.gate(&req, Class::Read)?;
    query(&req, &[])?;
    let id = super::decode(req.match_info().get("id").unwrap_or_default(), false, "the post id")?;
    let v = api.result(ANALYSIS, &id, &format!("analysis of post `{id}`")).map_err(|p| p.with_field("id"))?;
    Ok(gated.answer(cache::stored(&req, "application/json", &v.bytes, Freshness::Live)))
}

/// The trending hashtags over the last hour of event time.
#[utoipa::path(get, path = "/api/v1/posts/trending", tag = "posts",
    responses((status = 200, body = Object), (status = 304), (status = 400), (status = 401), (status = 403), (status = 404), (status = 429)),
    security(("bearer" = [])))]
async fn trending(api: web::Data<Api>, req: HttpRequest) -> Result<HttpResponse, Problem> {
    let gated = api.gate(&req, Class::Read)?;
    query(&req, &[])?;
    if !api.cfg.posts.enabled {
        return Err(Problem::not_found(
            "the posts pipeline is disabled on this instance (pipelines.posts.enabled = false)",
        ));
    }
    let t = api
        .live
        .posts
        .hashtags()
        .ok_or_else(|| Problem::not_found("no trending hashtags yet: no post with a hashtag was counted"))?;
    Ok(gated.answer(cache::json(&req, &t, Freshness::Live)))
}

/// Mounts the routes, under the scope `/api/v1/posts`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("").route(web::post().to(create)).default_service(super::not_allowed("POST")))
        .service(
            web::resource("/{id}/analysis").route(web::get().to(analysis)).default_service(super::not_allowed("GET")),
        )
        .service(web::resource("/trending").route(web::get().to(trending)).default_service(super::not_allowed("GET")));
}

/// The OpenAPI operations of this file.
#[derive(utoipa::OpenApi)]
#[openapi(paths(create, analysis, trending), components(schemas(NewPost)))]
pub struct Doc;
