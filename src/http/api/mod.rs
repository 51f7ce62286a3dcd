//! `/api/v1`: the versioned HTTP API over the pipelines.
//!
//! Writes produce to the pipelines' input topics and answer `202 Accepted` once the broker
//! acknowledged the record ([`super::writes`]); they are checked by the pipeline's own decoder
//! first, so the API refuses exactly what the pipeline would dead-letter, with the same reason
//! (`422`), and then produces nothing. Reads come from the pipelines' live views, JSON by default
//! and CSV where a table fits (`Accept: text/csv` or `?format=csv`), with `ETag`s
//! ([`super::cache`]).
//!
//! Every route goes through [`Api::gate`]: its token and scope ([`super::auth`]), then its
//! client's rate limit ([`super::limit`]). Every refusal is `application/problem+json`
//! ([`super::problem`]).
//!
//! One file per resource: [`pages`], [`posts`], [`pageviews`], [`messages`], [`apps`].

pub mod apps;
pub mod messages;
pub mod pages;
pub mod pageviews;
pub mod posts;

use std::sync::Arc;
use std::time::Instant;

use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};

use super::auth::{Auth, Caller};
use super::forward::Forwarder;
use super::limit::{Class, Limiter};
use super::problem::Problem;
use super::writes::Writer;
use crate::config::{Config, Scope};
use crate::engine::RawRecord;
use crate::health::Health;
use crate::kafka::instances::Directory;
use crate::metrics::Metrics;
use crate::ops::latest::{Stored, Value};
use crate::pipelines::LiveViews;

/// What every API handler shares.
pub struct Api {
    /// The configuration (limits, validation settings).
    pub cfg: Arc<Config>,
    auth: Auth,
    limiter: Limiter,
    /// Produces the writes.
    pub writer: Writer,
    /// The pipelines' live views.
    pub live: LiveViews,
    /// Whether this instance's partitions are assigned and restored (a key of a partition still
    /// restoring answers 503, not 404).
    pub health: Arc<Health>,
    /// Reads of keys held by other instances go there.
    pub forwarder: Forwarder,
    metrics: Metrics,
}

/// A request that passed the gate: who it is, and the rate-limit headers for its answer.
pub struct Gated {
    /// The caller.
    pub caller: Caller,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Gated {
    /// `resp` with the rate-limit headers.
    pub fn answer(self, mut resp: HttpResponse) -> HttpResponse {
        for (k, v) in self.headers {
            resp.headers_mut().insert(k, v);
        }
        resp
    }
}

impl Api {
    /// The API of `cfg`, reading `live` and writing through `writer`.
    pub fn new(
        cfg: Arc<Config>,
        writer: Writer,
        live: LiveViews,
        health: Arc<Health>,
        metrics: Metrics,
        directory: Arc<Directory>,
    ) -> Self {
        Self {
            auth: Auth::new(&cfg.http),
            limiter: Limiter::new(&cfg.http),
            forwarder: Forwarder::new(&cfg.http, directory),
            writer,
            live,
            health,
            metrics,
            cfg,
        }
    }

    /// Checks `req`'s credentials for `class` (reads need `read` unless public, writes need
    /// `write`), then its client's budget.
    pub fn gate(&self, req: &HttpRequest, class: Class) -> Result<Gated, Problem> {
        // A read another instance forwarded, vouched for by the cluster secret: the caller's
        // credentials and budget were checked there.
        if class == Class::Read {
            if let Some(caller) = super::forward::trusted(req, self.cfg.http.cluster_token.as_ref())? {
                return Ok(Gated { caller, headers: Vec::new() });
            }
        }
        let scope = match class {
            Class::Read => Scope::Read,
            Class::Write => Scope::Write,
        };
        let header = req.headers().get(header::AUTHORIZATION).map(HeaderValue::as_bytes);
        let caller = self.auth.check(header, scope).inspect_err(|p| {
            let kind = if p.status == 403 { "forbidden" } else { "unauthorized" };
            self.metrics.http_refused.with_label_values(&[kind]).inc();
        })?;
        let client = match &caller {
            Caller::Token(name) => format!("token:{name}"),
            Caller::Anonymous => req.peer_addr().map(|a| format!("addr:{}", a.ip())).unwrap_or_else(|| "addr:?".into()),
        };
        let decision = self.limiter.take(class, &client, Instant::now());
        let headers = self.limiter.headers(class, &decision);
        if !decision.allowed {
            self.metrics.http_refused.with_label_values(&["rate_limited"]).inc();
            return Err(Problem::rate_limited(decision.reset_s, headers));
        }
        Ok(Gated { caller, headers })
    }

    /// The latest record of `key` in the served output topic `topic` (see
    /// [`crate::kafka::results`]). `what` names the key in answers: a 404 names it; while this
    /// instance has not yet read the topic up to where it ended at start-up, a key not yet seen
    /// is a 503 with `Retry-After` instead (it may be further on).
    pub fn result(&self, topic: &'static str, key: &str, what: &str) -> Result<Value, Problem> {
        let table = self.live.results.table(topic).ok_or_else(|| {
            Problem::not_found(format!("`{topic}` is not served here: its pipeline is disabled on this instance"))
        })?;
        if let Some(v) = table.get(key) {
            return Ok(v);
        }
        if !table.caught_up() {
            return Err(Problem::unavailable(
                format!("{what} is not known yet: this instance is still reading `{topic}` after its start"),
                2,
            ));
        }
        let retention = humantime::format_duration(self.cfg.http.results_retention);
        Err(Problem::not_found(format!(
            "no {what} in `{topic}`: none was written, or it is older than the retention ({retention}, \
             http.results_retention) or was dropped to keep within http.results_max_bytes"
        )))
    }

    /// Reads a request body of at most `limit` bytes; a larger one is a 413 naming the bound.
    pub async fn body(&self, payload: web::Payload, limit: usize, what: &str) -> Result<web::Bytes, Problem> {
        match payload.to_bytes_limited(limit).await {
            Ok(Ok(bytes)) => Ok(bytes),
            Ok(Err(e)) => Err(Problem::bad_request(format!("cannot read the request body: {e}"))),
            Err(_) => Err(Problem::too_large(format!("{what} is over {limit} bytes (http.{})", bound_key(what)))),
        }
    }

    /// A JSON request body: the content type must be JSON, the body at most
    /// `http.max_body_bytes`, nested at most `http.max_json_depth` deep.
    pub async fn json_body(&self, req: &HttpRequest, payload: web::Payload) -> Result<web::Bytes, Problem> {
        require_content_type(req, &["application/json"])?;
        let body = self.body(payload, self.cfg.http.max_body_bytes, "the JSON body").await?;
        if depth(&body) > self.cfg.http.max_json_depth {
            return Err(Problem::bad_request(format!(
                "the JSON body is nested deeper than {} levels (http.max_json_depth)",
                self.cfg.http.max_json_depth
            )));
        }
        Ok(body)
    }

    /// Checks a record the way the pipeline's decoder would, produces it, and answers 202 with
    /// where it went.
    pub async fn produce(
        &self,
        topic: &'static str,
        key: &[u8],
        value: Option<&[u8]>,
        check: impl FnOnce(&RawRecord) -> Result<(), crate::engine::Rejection>,
    ) -> Result<Accepted, Problem> {
        let rec = RawRecord {
            key: Some(key.to_vec()),
            value: value.map(<[u8]>::to_vec),
            offset: 0,
            // The producer stamps the record with its create time: now.
            timestamp_ms: Some(chrono::Utc::now().timestamp_millis()),
        };
        check(&rec).map_err(|why| Problem::invalid(why.message).with_reason(why.class.as_str()))?;
        let (partition, offset) = self.writer.send(topic, key, value).await?;
        Ok(Accepted { topic, key: String::from_utf8_lossy(key).into_owned(), partition, offset })
    }
}

/// A write the broker acknowledged: the body of a 202.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Accepted {
    /// The topic written (logical name).
    pub topic: &'static str,
    /// The record's key.
    pub key: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
}

impl Accepted {
    /// The 202 answer, with `location` when the result can be read somewhere.
    pub fn answer(&self, location: Option<&str>) -> HttpResponse {
        let mut resp = HttpResponse::Accepted();
        if let Some(l) = location {
            resp.insert_header((header::LOCATION, l));
        }
        resp.json(self)
    }
}

/// The config key bounding `what`.
fn bound_key(what: &str) -> &'static str {
    if what.contains("CSV") {
        "max_upload_bytes"
    } else {
        "max_body_bytes"
    }
}

/// Refuses a request whose `Content-Type` is none of `allowed` (parameters such as `charset`
/// are ignored).
pub fn require_content_type(req: &HttpRequest, allowed: &[&str]) -> Result<(), Problem> {
    let ct = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if allowed.iter().any(|a| *a == essence) {
        return Ok(());
    }
    Err(Problem::unsupported_media(format!(
        "Content-Type must be {}, got `{}`",
        allowed.join(" or "),
        if ct.is_empty() { "none" } else { ct }
    )))
}

/// The deepest nesting of arrays and objects in `json` (strings skipped; an invalid document
/// gets a depth too, and the decoder names what is wrong with it).
pub fn depth(json: &[u8]) -> usize {
    let (mut depth, mut max, mut in_str, mut escaped) = (0usize, 0usize, false, false);
    for &b in json {
        if in_str {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Whether the client asked for CSV (`?format=csv`, or `Accept` preferring `text/csv`); a
/// `format` other than `json` or `csv` is a 400.
pub fn wants_csv(req: &HttpRequest, format: Option<&str>) -> Result<bool, Problem> {
    match format {
        Some("csv") => return Ok(true),
        Some("json") => return Ok(false),
        Some(other) => {
            return Err(
                Problem::bad_request(format!("`format` must be `json` or `csv`, got `{other}`")).with_field("format")
            )
        }
        None => {}
    }
    let accept = req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    Ok(accept.split(',').next().is_some_and(|first| first.trim().starts_with("text/csv")))
}

/// What a path segment may carry unencoded: RFC 3986's unreserved characters.
const SEGMENT: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// `s` percent-encoded as one path segment.
pub fn segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}

/// Percent-decodes a path segment or query value (`+` is a space only in a query).
pub fn decode(s: &str, query: bool, what: &str) -> Result<String, Problem> {
    let spaced;
    let s = if query && s.contains('+') {
        spaced = s.replace('+', " ");
        &spaced
    } else {
        s
    };
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| Problem::bad_request(format!("{what} is not percent-encoded UTF-8")).with_field(what.to_string()))
}

/// The `final` flag of a stored window record (`pageviews.top`, `messages.stats`): what a JSON
/// answer needs to say whether it can change. Read once per record, without building the rest of
/// it, and remembered with it; `None` when the record is not readable JSON.
pub fn is_final(v: &Stored) -> Option<bool> {
    #[derive(serde::Deserialize)]
    struct FinalFlag {
        #[serde(rename = "final", default)]
        is_final: bool,
    }
    v.flag(|bytes| serde_json::from_slice::<FinalFlag>(bytes).ok().map(|f| f.is_final))
}

/// The value of query parameter `name` in `params` (as [`query`] returned them), if given.
pub fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

/// The query parameters of `req`, decoded, refusing any not in `takes` and any given twice.
pub fn query(req: &HttpRequest, takes: &[&str]) -> Result<Vec<(String, String)>, Problem> {
    let mut out: Vec<(String, String)> = Vec::new();
    for pair in req.query_string().split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = decode(name, true, "a query parameter name")?;
        if !takes.contains(&name.as_str()) {
            let takes = if takes.is_empty() { "none".to_string() } else { takes.join(", ") };
            return Err(Problem::bad_request(format!("unknown query parameter `{name}` (this route takes {takes})"))
                .with_field(name));
        }
        if out.iter().any(|(n, _)| *n == name) {
            return Err(Problem::bad_request(format!("query parameter `{name}` is given twice")).with_field(name));
        }
        let value = decode(value, true, &format!("query parameter `{name}`"))?;
        out.push((name, value));
    }
    Ok(out)
}

/// The answer to a method a resource does not take: 405 with `Allow`.
pub fn not_allowed(allow: &'static str) -> actix_web::Route {
    web::to(move |req: HttpRequest| async move {
        let mut p =
            Problem::method_not_allowed(format!("{} {} is not supported: use {allow}", req.method(), req.path()));
        p.headers.push((header::ALLOW, HeaderValue::from_static(allow)));
        Err::<HttpResponse, Problem>(p)
    })
}

/// Mounts every resource of `/api/v1`, one scope per resource: a request is matched against the
/// routes of its own scope only (a static prefix check per scope, then a few patterns), not
/// against every pattern of the API.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::scope("/api/v1/pages").configure(pages::configure))
        .service(web::scope("/api/v1/messages").configure(messages::configure))
        .service(web::scope("/api/v1/apps").configure(apps::configure))
        .service(web::scope("/api/v1/posts").configure(posts::configure))
        .service(web::scope("/api/v1/pageviews").configure(pageviews::configure));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_depth_skips_strings() {
        assert_eq!(depth(br#"{"a":[1,{"b":"[[[["}]}"#), 3);
        assert_eq!(depth(br#""{\"[""#), 0);
        assert_eq!(depth(b"[[[[[[]]]]]]"), 6);
    }
}
