//! The HTTP transport the platform clients share: building a client (timeouts, user agent,
//! connection pool, no redirects), one GET that comes back as the status, the headers a platform
//! reads and the body, and transport failures turned into [`BatchOutcome::Transient`] with
//! status 0.
//!
//! Credentials stay out of every message: a platform's token may sit in the URL's query
//! (Facebook's `access_token`), so errors are stripped of their URL and the query is scrubbed
//! from whatever text remains.

use std::error::Error as _;
use std::fmt;
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{Client, Url};

use super::platform::BatchOutcome;

/// The `User-Agent` of every request: `pagepulse/<version>`.
pub const USER_AGENT: &str = concat!("pagepulse/", env!("CARGO_PKG_VERSION"));

/// Longest wait for a TCP (and TLS) connection, when the request timeout is longer: an
/// unreachable host then fails fast and the dispatcher's backoff decides when to try again.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an idle pooled connection is kept: below the 60 s keep-alive common at API edges,
/// so the client closes a connection before the server does and rarely sends on a dead one.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Most idle connections kept per host. Requests in flight are bounded by the platform's
/// `max_in_flight`, so this is only a ceiling; connections beyond it are closed after use.
pub const POOL_MAX_IDLE_PER_HOST: usize = 32;

/// Largest response body read. A batch of 50 Graph pages is a few kilobytes; a larger body is
/// not an answer the platform modules can use, and reading it would only hold memory.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// Errors of building a platform client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The base URL is not an absolute `http` or `https` URL.
    #[error("base_url: {url:?} is not an absolute http(s) URL: {reason}")]
    BaseUrl {
        /// The URL as configured (a base URL carries no credentials).
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// The HTTP client could not be built (e.g. the TLS backend failed to initialise).
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An access token: printed as `***` by `Debug` and `Display`, so it never reaches logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Wraps a token.
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The token itself, for the request that carries it and nothing else.
    pub(crate) fn secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(***)")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Checks that `base` is an absolute `http` or `https` URL (a mistyped base URL is a
/// configuration error, reported once at startup rather than as a failure of every request).
pub fn check_base_url(base: &str) -> Result<()> {
    let refuse = |reason: String| Err(Error::BaseUrl { url: base.to_string(), reason });
    match Url::parse(base) {
        Err(e) => refuse(e.to_string()),
        Ok(u) if !matches!(u.scheme(), "http" | "https") => refuse(format!("scheme {:?}", u.scheme())),
        Ok(u) if u.host_str().is_none() => refuse("no host".into()),
        Ok(_) => Ok(()),
    }
}

/// A client for one platform: `timeout` bounds each request from connecting to the last byte
/// of the body. The client holds the connection pool; clone it (cheaply) rather than build
/// another.
///
/// Redirects are not followed: the APIs answer in place, and a redirect would carry the token
/// in the query to wherever it points. Proxies named by the usual environment variables are
/// used.
pub fn client(timeout: Duration) -> Result<Client> {
    Client::builder()
        .user_agent(USER_AGENT)
        .timeout(timeout)
        .connect_timeout(timeout.min(CONNECT_TIMEOUT))
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(Error::Client)
}

/// An answer as received: what the platform modules interpret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer<const N: usize> {
    /// The HTTP status.
    pub status: u16,
    /// The values of the headers asked for, in the order asked (`None` when absent or not
    /// visible ASCII).
    pub headers: [Option<String>; N],
    /// The body, at most [`MAX_BODY_BYTES`].
    pub body: Vec<u8>,
}

/// Sends `GET url` (with `Authorization: Bearer` when `bearer` is given) and reads the status,
/// the headers named in `wanted` and the body. A transport failure or timeout comes back as
/// [`BatchOutcome::Transient`] with status 0, and a body over [`MAX_BODY_BYTES`] as
/// [`BatchOutcome::Malformed`]; neither message contains the URL's query.
pub async fn get<const N: usize>(
    client: &Client,
    url: &str,
    bearer: Option<&Token>,
    wanted: [&str; N],
) -> Result<Answer<N>, BatchOutcome> {
    let mut request = client.get(url);
    if let Some(token) = bearer {
        request = request.bearer_auth(token.secret());
    }
    let mut response = request.send().await.map_err(|e| transport_error(e, url))?;
    let status = response.status().as_u16();
    let headers = pick(response.headers(), wanted);
    if response.content_length().is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| transport_error(e, url))? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Answer { status, headers, body })
}

fn too_large() -> BatchOutcome {
    BatchOutcome::Malformed { reason: format!("the body is larger than {MAX_BODY_BYTES} bytes") }
}

/// The values of the `wanted` headers, in order.
pub fn pick<const N: usize>(headers: &HeaderMap, wanted: [&str; N]) -> [Option<String>; N] {
    wanted.map(|name| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string))
}

/// A transport failure as [`BatchOutcome::Transient`] with status 0: the error and its causes,
/// without the URL, and with the URL's query scrubbed should a cause repeat it.
fn transport_error(e: reqwest::Error, url: &str) -> BatchOutcome {
    let timed_out = e.is_timeout();
    let e = e.without_url();
    let mut message = if timed_out { format!("timed out: {e}") } else { e.to_string() };
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        // Wrappers often repeat their cause's text; say it once.
        if !message.ends_with(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        cause = c.source();
    }
    BatchOutcome::Transient { status: 0, message: scrub(message, url) }
}

/// `message` with every occurrence of `url`'s query (which may hold a token) replaced by `***`.
pub fn scrub(message: String, url: &str) -> String {
    match url.split_once('?') {
        Some((_, query)) if !query.is_empty() && message.contains(query) => message.replace(query, "***"),
        _ => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::time::Instant;

    const SECRET: &str = "EAAB-very-secret";

    fn url_at(addr: std::net::SocketAddr) -> String {
        format!("http://{addr}/v19.0/?ids=page-000001&fields=fan_count&access_token={SECRET}")
    }

    fn assert_clean(outcome: &BatchOutcome) -> &str {
        let BatchOutcome::Transient { status: 0, message } = outcome else { panic!("expected status 0: {outcome:?}") };
        assert!(!message.contains(SECRET) && !message.contains("access_token"), "{message}");
        message
    }

    #[test]
    fn token_never_prints() {
        let t = Token::new(SECRET);
        assert_eq!(format!("{t} {t:?}"), "*** Token(***)");
    }

    #[test]
    fn base_urls_are_checked() {
        assert!(check_base_url("https://graph.facebook.com").is_ok());
        assert!(check_base_url("http://127.0.0.1:8787/").is_ok());
        for bad in ["graph.facebook.com", "ftp://x.y", "", "http://"] {
            let Err(e) = check_base_url(bad) else { panic!("accepted {bad:?}") };
            assert!(e.to_string().starts_with("base_url:"), "{e}");
        }
    }

    #[test]
    fn the_query_is_scrubbed_from_messages() {
        let url = "http://h/v1/?ids=a&access_token=s3cret";
        assert_eq!(
            scrub("failed for http://h/v1/?ids=a&access_token=s3cret".into(), url),
            "failed for http://h/v1/?***"
        );
        assert_eq!(scrub("connection refused".into(), url), "connection refused");
        assert_eq!(scrub("x?".into(), "http://h/?"), "x?");
    }

    #[test]
    fn wanted_headers_are_picked_in_order() {
        let mut h = HeaderMap::new();
        h.insert("x-app-usage", "{\"call_count\":5}".parse().expect("a valid header value"));
        h.insert("x-other", "1".parse().expect("a valid header value"));
        assert_eq!(
            pick(&h, ["X-Business-Use-Case-Usage", "X-App-Usage"]),
            [None, Some("{\"call_count\":5}".to_string())]
        );
    }

    #[tokio::test]
    async fn a_refused_connection_is_transient_and_names_no_token() {
        // Bound without `listen`: connections are refused, and no other test takes the port.
        let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
        socket.bind("127.0.0.1:0".parse().expect("literal address")).expect("a free port");
        let addr = socket.local_addr().expect("its address");
        let c = client(Duration::from_secs(5)).expect("client");
        let outcome = get(&c, &url_at(addr), Some(&Token::new(SECRET)), []).await.expect_err("refused");
        let message = assert_clean(&outcome);
        assert!(message.to_lowercase().contains("refused"), "{message}");
    }

    #[tokio::test]
    async fn a_silent_server_times_out_within_the_timeout() {
        // Bound but never accepted: the kernel completes the handshake and nothing answers.
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
        let addr = listener.local_addr().expect("its address");
        let c = client(Duration::from_millis(300)).expect("client");
        let started = Instant::now();
        let outcome = get(&c, &url_at(addr), None, ["x-app-usage"]).await.expect_err("timed out");
        assert!(started.elapsed() < Duration::from_millis(1300), "{:?}", started.elapsed());
        let message = assert_clean(&outcome);
        assert!(message.starts_with("timed out"), "{message}");
        drop(listener);
    }
}
