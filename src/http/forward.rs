//! Any instance answers any key: a read for a key whose partition another instance holds is
//! forwarded to that instance (`http.forward = "proxy"`, the default), redirected to it
//! (`"redirect"`: a `307`), or answered as if this were the only instance (`"off"`).
//!
//! **Where a key is.** Keys are placed by Kafka's default partitioner
//! ([`crate::kafka::partitioner`]); the [`Directory`] says which live instance holds that
//! partition and at which address (from the claims every instance keeps on the instances topic).
//! A partition claimed by no live instance or by two (a rebalance in progress), or an owner that
//! does not answer (it just died), gives a `503` with `Retry-After`: never a stale or wrong
//! answer.
//!
//! **Credentials are checked once.** The instance the client called checks its token and rate
//! limit. With `http.cluster_token` set, it forwards the request with that shared secret
//! (`X-Pagepulse-Cluster`) and the caller's name instead of the client's credentials, and the
//! owner trusts it ([`trusted`]); without it, the client's `Authorization` header is forwarded
//! and the owner checks it again. A forwarded request is never forwarded again
//! ([`FORWARDED`]): if the owner moved meanwhile, it answers `503`.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};

use super::auth::Caller;
use super::problem::Problem;
use crate::config::{Forward, HttpConfig};
use crate::kafka::instances::{Directory, Holder, Owner};
use crate::secret::Secret;

/// Set on a forwarded request, to the forwarding instance's id: such a request is answered
/// where it lands.
pub const FORWARDED: &str = "x-pagepulse-forwarded";
/// The cluster secret of a forwarded request.
pub const CLUSTER: &str = "x-pagepulse-cluster";
/// The caller (its token's name) a forwarded request is made for.
pub const CALLER: &str = "x-pagepulse-caller";
/// On every answer that came from another instance: that instance's id.
pub const SERVED_BY: &str = "x-pagepulse-served-by";

/// Largest answer passed on from another instance (a page with its chart and table is ~60 KB;
/// a 100-page comparison ~6 MB).
const MAX_FORWARDED_BYTES: usize = 16 << 20;

/// Headers of the owner's answer passed on to the client.
const PASSED_ON: [HeaderName; 5] =
    [header::CONTENT_TYPE, header::ETAG, header::CACHE_CONTROL, header::RETRY_AFTER, header::LINK];

/// What a read for a key should do.
pub enum Route {
    /// Answer it here.
    Local,
    /// Ask `owner` (or redirect there).
    Remote(Owner),
}

/// Forwards reads to the instance holding their key.
pub struct Forwarder {
    mode: Forward,
    scheme: &'static str,
    cluster: Option<Secret>,
    directory: Arc<Directory>,
    client: reqwest::Client,
}

impl Forwarder {
    /// A forwarder for `cfg`, reading `directory`.
    pub fn new(cfg: &HttpConfig, directory: Arc<Directory>) -> Self {
        let mut builder = reqwest::Client::builder()
            .timeout(cfg.forward_timeout)
            .connect_timeout(cfg.forward_timeout.min(Duration::from_secs(1)))
            .pool_max_idle_per_host(16)
            .redirect(reqwest::redirect::Policy::none());
        // Instances of one group serve the same certificate (or one from the same authority):
        // trust it for the calls between them.
        if let Some(cert) = cfg.tls_cert.as_ref().and_then(|p| std::fs::read(p).ok()) {
            if let Ok(certs) = reqwest::Certificate::from_pem_bundle(&cert) {
                for c in certs {
                    builder = builder.add_root_certificate(c);
                }
            }
        }
        let client = builder.build().unwrap_or_default();
        let scheme = if cfg.tls_cert.is_some() { "https" } else { "http" };
        Self { mode: cfg.forward, scheme, cluster: cfg.cluster_token.clone(), directory, client }
    }

    /// `http` or `https`: how instances call each other.
    pub fn scheme(&self) -> &'static str {
        self.scheme
    }

    /// Like [`fetch`](Forwarder::fetch), asking for JSON whatever the client asked for, and
    /// never a `304`.
    pub async fn fetch_json(
        &self,
        req: &HttpRequest,
        caller: &Caller,
        url: &str,
    ) -> Result<(u16, Vec<(HeaderName, HeaderValue)>, Vec<u8>), String> {
        self.call(req, caller, url, false).await
    }

    /// The directory it reads.
    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    /// Where to answer a read of `key`, a key of full topic `topic`, when this instance does not
    /// hold it (`held_here(p)`: whether partition `p` runs here). `Local` also when forwarding is
    /// off, the request was already forwarded, or the topic's partitions are not known yet (the
    /// local answer then says why).
    pub fn route(
        &self,
        req: &HttpRequest,
        topic: &str,
        key: &str,
        held_here: impl Fn(i32) -> bool,
    ) -> Result<Route, Problem> {
        if self.mode == Forward::Off {
            return Ok(Route::Local);
        }
        let Some((p, holder)) = self.directory.holder(topic, key.as_bytes()) else { return Ok(Route::Local) };
        // A forwarded request is never forwarded again: the sender took this instance for the
        // owner, so a partition not held here has moved on (or not arrived yet) since.
        let forwarded = req.headers().contains_key(FORWARDED);
        match holder {
            _ if forwarded && held_here(p) => Ok(Route::Local),
            Holder::Me if held_here(p) => Ok(Route::Local),
            Holder::Other(owner) if !forwarded => Ok(Route::Remote(owner)),
            Holder::Me | Holder::Other(_) | Holder::Moving => Err(Problem::unavailable(
                format!(
                    "partition {p} of `{topic}`, which holds `{key}`, is moving between instances (a rebalance): \
                     ask again shortly"
                ),
                1,
            )),
        }
    }

    /// Answers `req` from `owner`: a `307` to it in `redirect` mode; otherwise the owner's answer
    /// to the same request (`path_and_query`, default the request's), passed on with the
    /// [`SERVED_BY`] header. An owner that does not answer in `http.forward_timeout` is a `503`.
    pub async fn forward(
        &self,
        req: &HttpRequest,
        caller: &Caller,
        owner: &Owner,
        path_and_query: Option<&str>,
    ) -> Result<HttpResponse, Problem> {
        let target = path_and_query.map(str::to_string).unwrap_or_else(|| match req.query_string() {
            "" => req.path().to_string(),
            q => format!("{}?{q}", req.path()),
        });
        let url = format!("{}://{}{}", self.scheme, owner.http, target);
        if self.mode == Forward::Redirect {
            return Ok(HttpResponse::TemporaryRedirect()
                .insert_header((header::LOCATION, url))
                .insert_header((SERVED_BY, owner.instance.clone()))
                .finish());
        }
        let answer = self.fetch(req, caller, &url).await.map_err(|why| {
            Problem::unavailable(
                format!("the instance holding this key ({} at {}) did not answer: {why}", owner.instance, owner.http),
                1,
            )
        })?;
        let (status, headers, body) = answer;
        let mut resp = HttpResponse::build(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY));
        for (k, v) in headers {
            resp.insert_header((k, v));
        }
        resp.insert_header((SERVED_BY, owner.instance.clone()));
        Ok(resp.body(body))
    }

    /// The owner's answer to `url`: status, the headers passed on, and the body (at most
    /// [`MAX_FORWARDED_BYTES`]); an error says why there is none.
    pub async fn fetch(
        &self,
        req: &HttpRequest,
        caller: &Caller,
        url: &str,
    ) -> Result<(u16, Vec<(HeaderName, HeaderValue)>, Vec<u8>), String> {
        self.call(req, caller, url, true).await
    }

    async fn call(
        &self,
        req: &HttpRequest,
        caller: &Caller,
        url: &str,
        pass_negotiation: bool,
    ) -> Result<(u16, Vec<(HeaderName, HeaderValue)>, Vec<u8>), String> {
        let mut out = self.client.get(url).header(FORWARDED, self.directory.me());
        if pass_negotiation {
            for h in [header::ACCEPT, header::IF_NONE_MATCH] {
                if let Some(v) = req.headers().get(&h) {
                    out = out.header(h.as_str(), v.as_bytes());
                }
            }
        } else {
            out = out.header(header::ACCEPT.as_str(), "application/json");
        }
        match (&self.cluster, caller) {
            (Some(secret), caller) => {
                out = out.header(CLUSTER, secret.expose());
                if let Caller::Token(name) = caller {
                    out = out.header(CALLER, name.as_str());
                }
            }
            (None, _) => {
                if let Some(v) = req.headers().get(header::AUTHORIZATION) {
                    out = out.header(header::AUTHORIZATION.as_str(), v.as_bytes());
                }
            }
        }
        let mut resp = out.send().await.map_err(|e| describe(&e))?;
        let status = resp.status().as_u16();
        let mut headers = Vec::new();
        for h in PASSED_ON {
            if let Some(v) = resp.headers().get(h.as_str()).and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok()) {
                headers.push((h, v));
            }
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| describe(&e))? {
            if body.len() + chunk.len() > MAX_FORWARDED_BYTES {
                return Err(format!("its answer is larger than {MAX_FORWARDED_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, headers, body))
    }
}

/// A short reason for a failed call (never the URL's query or any header).
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection refused or unreachable".into()
    } else if e.is_body() || e.is_decode() {
        "its answer broke off".into()
    } else {
        "the request failed".into()
    }
}

/// The caller a forwarded request is made for, when it carries the right cluster secret;
/// `None` when it carries none; a `401` when it carries a wrong one (or this instance has none).
pub fn trusted(req: &HttpRequest, cluster: Option<&Secret>) -> Result<Option<Caller>, Problem> {
    let Some(given) = req.headers().get(CLUSTER) else { return Ok(None) };
    match cluster {
        Some(secret) if secret.matches(given.as_bytes()) => {
            let caller = req.headers().get(CALLER).and_then(|v| v.to_str().ok()).map(str::to_string);
            Ok(Some(caller.map_or(Caller::Anonymous, Caller::Token)))
        }
        _ => Err(Problem::unauthorized(
            "the request carries cluster credentials (`X-Pagepulse-Cluster`) that this instance does not accept \
             (http.cluster_token differs or is not set)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use actix_web::test::TestRequest;

    use super::*;
    use crate::kafka::instances::{Claim, InstanceMap};

    fn claim(id: &str, parts: &[i32]) -> Claim {
        Claim {
            instance: id.into(),
            http: format!("{id}:9898"),
            member: None,
            partitions: BTreeMap::from([("obs".to_string(), parts.to_vec())]),
            sent_at_ms: 0,
        }
    }

    /// A key of `obs` (2 partitions) in partition `p`.
    fn key_in(p: i32) -> String {
        (0..)
            .map(|i| format!("k{i}"))
            .find(|k| crate::kafka::partitioner::partition_for(k.as_bytes(), 2) == p)
            .expect("a key")
    }

    #[test]
    fn a_forwarded_request_for_a_partition_not_held_here_is_a_503_never_a_local_answer() {
        let dir = Arc::new(Directory::new());
        let (me, other) = (claim("me", &[0]), claim("other", &[1]));
        let mut map = InstanceMap::new();
        map.apply(other.clone(), 0);
        let all: BTreeSet<_> = [("obs".to_string(), 0), ("obs".to_string(), 1)].into_iter().collect();
        dir.update(&me, &map, &all, 0, 10_000);
        let f = Forwarder::new(&crate::config::Config::default().http, dir);
        let plain = TestRequest::default().to_http_request();
        let forwarded = TestRequest::default().insert_header((FORWARDED, "other")).to_http_request();
        let (k0, k1) = (key_in(0), key_in(1));
        let route = |req: &HttpRequest, key: &str, held: bool| f.route(req, "obs", key, |_| held);
        // Not forwarded: partition 0 is answered here, partition 1 asked of its owner.
        assert!(matches!(route(&plain, &k0, true), Ok(Route::Local)));
        assert!(matches!(route(&plain, &k1, false), Ok(Route::Remote(o)) if o.instance == "other"));
        // The directory names this instance but the task has not registered yet: moving.
        assert_eq!(route(&plain, &k0, false).err().map(|p| p.status), Some(503));
        // Forwarded: answered here when the partition is here (whatever this directory says yet),
        // else a 503: the sender's directory was stale, the partition is moving.
        assert!(matches!(route(&forwarded, &k0, true), Ok(Route::Local)));
        assert!(matches!(route(&forwarded, &k1, true), Ok(Route::Local)));
        assert_eq!(route(&forwarded, &k1, false).err().map(|p| p.status), Some(503));
        assert_eq!(route(&forwarded, &k0, false).err().map(|p| p.status), Some(503));
    }
}
