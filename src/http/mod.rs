//! The HTTP endpoint (actix-web): the versioned API [`api`] under `/api/v1` (with its OpenAPI
//! document at `/api/v1/openapi.json` and a page rendering it at `/docs`), and `/metrics`
//! (Prometheus text format), `/healthz` (the process is alive), `/readyz` (partitions assigned
//! and a broker answers).
//!
//! Parts: [`auth`] (tokens and scopes), [`limit`] (rate limits per client), [`problem`] (every
//! error as `application/problem+json`), [`cache`] (ETags), [`writes`] (the producer of API
//! writes), [`forward`] (reads of keys another instance holds), [`openapi`]. Every request is counted by route template and status, and timed
//! ([`Metrics::http_requests`]); a slow client cannot hold a worker (`http.request_timeout`).

// A `Problem` is ~150 bytes and only ever built to be answered at once: returning it by value
// costs nothing that matters next to the request, and keeps every handler a plain `?` chain.
#![allow(clippy::result_large_err)]

pub mod api;
pub mod auth;
pub mod cache;
pub mod csv;
pub mod forward;
pub mod limit;
pub mod openapi;
pub mod problem;
pub mod writes;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServerHandle, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::{ErrorHandlerResponse, ErrorHandlers};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};

use crate::config::Config;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::pipelines::LiveViews;

use self::problem::Problem;

/// Shared state of the service routes.
#[derive(Clone)]
struct State {
    metrics: Metrics,
    health: Arc<Health>,
}

async fn metrics_handler(state: web::Data<State>) -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(state.metrics.render())
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

async fn readyz(state: web::Data<State>) -> HttpResponse {
    match state.health.ready() {
        Ok(()) => HttpResponse::Ok().content_type("text/plain").body("ready\n"),
        Err(why) => HttpResponse::ServiceUnavailable().content_type("text/plain").body(format!("not ready: {why}\n")),
    }
}

async fn openapi_json(req: HttpRequest) -> HttpResponse {
    cache::answer(&req, "application/json", openapi::json().into_bytes(), cache::Freshness::Live)
}

async fn docs() -> HttpResponse {
    HttpResponse::Ok().content_type("text/html; charset=utf-8").body(include_str!("docs.html"))
}

/// The live page: a page's fan chart, top pages, an hour's top articles, trending hashtags,
/// message statistics and top apps, refreshed every 5 s from `/api/v1` with the reader's token.
/// One embedded file, nothing loaded from elsewhere (the policy forbids it).
async fn live_page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self'",
        ))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(include_str!("live.html"))
}

async fn no_route(req: HttpRequest) -> Result<HttpResponse, Problem> {
    Err(Problem::not_found(format!("no route {} {}: see /docs for the API", req.method(), req.path())))
}

/// Turns an error answer that is not yet a problem document (one actix-web made itself, e.g. a
/// request it could not parse) into one, with its status.
fn to_problem<B: MessageBody + 'static>(res: ServiceResponse<B>) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_problem = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with(problem::CONTENT_TYPE));
    if is_problem {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let reason = status.canonical_reason().unwrap_or("error");
    let p = Problem::new(status, "http", "HTTP error", format!("{reason} ({status})"));
    let (req, _) = res.into_parts();
    let res = ServiceResponse::new(req, actix_web::ResponseError::error_response(&p)).map_into_right_body();
    Ok(ErrorHandlerResponse::Response(res))
}

/// A running HTTP server.
pub struct Server {
    handle: ServerHandle,
    addr: SocketAddr,
}

impl Server {
    /// The address it listens on (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and finishes in-flight requests.
    pub async fn stop(self) {
        self.handle.stop(true).await;
    }
}

/// Errors of starting the server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The address cannot be bound.
    #[error("cannot listen on {addr} (http.listen / PAGEPULSE_HTTP_LISTEN): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS certificate or key cannot be used.
    #[error("http.tls_cert / http.tls_key: {0}")]
    Tls(String),
    /// The producer of API writes cannot be created.
    #[error("the HTTP API's producer: {0}")]
    Writer(String),
}

/// The TLS settings of `cfg`, if any.
fn tls(cfg: &Config) -> Result<Option<rustls::ServerConfig>, Error> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (Some(cert), Some(key)) = (&cfg.http.tls_cert, &cfg.http.tls_key) else { return Ok(None) };
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| Error::Tls(format!("cannot read the certificate chain {}: {e}", cert.display())))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| Error::Tls(format!("cannot read the private key {}: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map(Some)
        .map_err(|e| Error::Tls(e.to_string()))
}

/// Starts the server on the current actix system. Signals are left to the engine, which stops
/// the server as part of its own shutdown. `live` are the pipelines' live views.
pub fn start(
    cfg: &Config,
    metrics: Metrics,
    health: Arc<Health>,
    live: LiveViews,
    directory: Arc<crate::kafka::instances::Directory>,
) -> Result<Server, Error> {
    let addr = cfg.http.listen;
    let state = State { metrics: metrics.clone(), health: health.clone() };
    let writer = writes::Writer::new(cfg).map_err(|e| Error::Writer(e.to_string()))?;
    let api = web::Data::new(api::Api::new(Arc::new(cfg.clone()), writer, live, health, metrics.clone(), directory));
    let origins = cfg.http.cors_origins.clone();
    let server = HttpServer::new(move || {
        // Per worker thread: a request clones this `Rc`, not every metric of the process.
        let recorded = std::rc::Rc::new((metrics.http_requests.clone(), metrics.http_latency.clone()));
        let cors = match origins.is_empty() {
            true => actix_cors::Cors::default(),
            false => {
                let c = actix_cors::Cors::default()
                    .allowed_methods(["GET", "POST", "DELETE"])
                    .allowed_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::IF_NONE_MATCH])
                    .expose_headers([header::ETAG, header::LOCATION, header::RETRY_AFTER])
                    .max_age(3600);
                if origins.iter().any(|o| o == "*") {
                    c.allow_any_origin()
                } else {
                    origins.iter().fold(c, |c, o| c.allowed_origin(o))
                }
            }
        };
        App::new()
            .app_data(web::Data::new(state.clone()))
            .app_data(api.clone())
            .wrap(ErrorHandlers::new().default_handler(to_problem))
            .wrap(cors)
            .wrap_fn(move |req, srv| {
                let started = Instant::now();
                let recorded = recorded.clone();
                let fut = actix_web::dev::Service::call(srv, req);
                async move {
                    let res = fut.await?;
                    let (requests, latency) = &*recorded;
                    let route = res.request().match_pattern();
                    let route = route.as_deref().unwrap_or("unmatched");
                    let method = res.request().method().as_str();
                    let status = res.status();
                    requests.with_label_values(&[route, method, status.as_str()]).inc();
                    latency.with_label_values(&[route]).observe(started.elapsed().as_secs_f64());
                    Ok(res)
                }
            })
            .route("/metrics", web::get().to(metrics_handler))
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .route("/", web::get().to(live_page))
            .route("/docs", web::get().to(docs))
            .route("/api/v1/openapi.json", web::get().to(openapi_json))
            .configure(api::configure)
            .default_service(web::to(no_route))
    })
    .workers(cfg.http.workers.get())
    .client_request_timeout(cfg.http.request_timeout)
    .client_disconnect_timeout(std::time::Duration::from_secs(1))
    .disable_signals()
    .shutdown_timeout(1);
    let server = match tls(cfg)? {
        Some(tls) => server.bind_rustls_0_23(addr, tls),
        None => server.bind(addr),
    }
    .map_err(|source| Error::Bind { addr, source })?;
    let bound = server.addrs().first().copied().unwrap_or(addr);
    let server = server.run();
    let handle = server.handle();
    actix_rt::spawn(server);
    Ok(Server { handle, addr: bound })
}

/// The header value of `s`, for headers built from plain text.
pub fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}
