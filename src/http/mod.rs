//! The HTTP endpoint (actix-web): `/metrics` (Prometheus text format), `/healthz` (the process is
//! alive), `/readyz` (partitions assigned and a broker answers), and `/pages` (the live fan
//! figures of the pages this instance holds, see [`pages`]).

pub mod pages;

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpResponse, HttpServer};

use crate::health::Health;
use crate::metrics::Metrics;
use crate::pipelines::fans::FansLive;

/// Shared state of the handlers.
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
#[error("cannot listen on {addr} (http.listen / PAGEPULSE_HTTP_LISTEN): {source}")]
pub struct Error {
    /// The address.
    pub addr: SocketAddr,
    /// Why.
    pub source: std::io::Error,
}

/// Starts the server on the current actix system. Signals are left to the engine, which stops
/// the server as part of its own shutdown. `fans` is the fans pipeline's live view, `None` when
/// the pipeline is disabled.
pub fn start(addr: SocketAddr, metrics: Metrics, health: Arc<Health>, fans: Option<FansLive>) -> Result<Server, Error> {
    let state = State { metrics, health };
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(state.clone()))
            .route("/metrics", web::get().to(metrics_handler))
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .configure(|c| pages::configure(c, fans.clone()))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .bind(addr)
    .map_err(|source| Error { addr, source })?;
    let bound = server.addrs().first().copied().unwrap_or(addr);
    let server = server.run();
    let handle = server.handle();
    actix_rt::spawn(server);
    Ok(Server { handle, addr: bound })
}
