//! Both platform clients against the simulator over real HTTP, time frozen with a manual clock:
//! exact counts, per-page failures, throttling with its pause, rising usage, server errors,
//! timeouts, malformed bodies, rejected tokens and unreachable servers, each through the
//! [`Platform`] trait the dispatcher uses.

use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pagepulse::clock::ManualClock;
use pagepulse::poll::facebook::{FacebookPlatform, FacebookSettings};
use pagepulse::poll::http::Token;
use pagepulse::poll::mastodon::{MastodonPlatform, MastodonSettings};
use pagepulse::poll::platform::{BatchOutcome, Fetched, PageResult, Platform};
use pagepulse::simulate::faults::SimConfig;
use pagepulse::simulate::graph_api::{self, SimServer};
use pagepulse::simulate::trajectory::{fans_at, page_id, EPOCH_MS};

/// A fixed time, 100 days and a bit into the trajectories.
const NOW: i64 = EPOCH_MS + 100 * 86_400_000 + 4_321_000;
/// A token that must never show up in a message.
const SECRET: &str = "EAAB-poll-clients-secret";
/// The timeout of every client, unless a test needs a shorter one.
const TIMEOUT: Duration = Duration::from_secs(10);
const MINUTE: Option<Duration> = Some(Duration::from_secs(60));

/// A simulator on a free port with its time frozen at [`NOW`], and that clock.
fn sim(cfg: SimConfig) -> (SimServer, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::at_ms(NOW));
    let cfg = SimConfig { clock: clock.clone(), ..cfg };
    let server = graph_api::start(cfg, "127.0.0.1:0".parse().expect("literal address")).expect("start the simulator");
    (server, clock)
}

fn facebook_at(addr: SocketAddr, token: &str, timeout: Duration) -> FacebookPlatform {
    let settings = FacebookSettings {
        base_url: format!("http://{addr}"),
        version: "v19.0".into(),
        token: Token::new(token),
        timeout,
    };
    FacebookPlatform::new(settings).expect("a valid Facebook configuration")
}

fn facebook(server: &SimServer) -> FacebookPlatform {
    facebook_at(server.addr(), SECRET, TIMEOUT)
}

/// A Mastodon client reading the rate-limit reset against the simulator's own clock.
fn mastodon_at(addr: SocketAddr, token: Option<&str>, timeout: Duration, clock: Arc<ManualClock>) -> MastodonPlatform {
    let settings = MastodonSettings { base_url: format!("http://{addr}"), token: token.map(Token::new), timeout };
    MastodonPlatform::with_clock(settings, clock).expect("a valid Mastodon configuration")
}

fn mastodon(server: &SimServer, clock: &Arc<ManualClock>) -> MastodonPlatform {
    mastodon_at(server.addr(), Some(SECRET), TIMEOUT, clock.clone())
}

/// The expected result of a known page at [`NOW`] on each platform.
fn counts(platform: &str, id: &str) -> PageResult {
    let (fans, followers) = fans_at(id, NOW);
    match platform {
        // A Mastodon account has followers only; the client reports them as both figures.
        "mastodon" => PageResult::Counts { fans: followers, followers: Some(followers) },
        _ => PageResult::Counts { fans, followers: Some(followers) },
    }
}

fn pages(f: &Fetched) -> &[(String, PageResult)] {
    match &f.outcome {
        BatchOutcome::Pages(p) => p,
        other => panic!("expected pages, got {other:?}"),
    }
}

/// Asserts a transport failure whose message names no credential; returns the message.
fn assert_transport_failure(f: &Fetched) -> &str {
    let BatchOutcome::Transient { status: 0, message } = &f.outcome else { panic!("expected status 0, got {f:?}") };
    assert!(!message.contains(SECRET) && !message.contains("access_token"), "{message}");
    assert_eq!((f.usage_pct, f.pause), (0, None));
    message
}

#[actix_web::test]
async fn facebook_batch_of_50_has_the_exact_counts_of_the_trajectories() {
    let (server, _clock) = sim(SimConfig::default());
    let ids: Vec<String> = (1..=50).map(page_id).collect();
    let f = facebook(&server).fetch(ids.clone()).await;
    let got = pages(&f);
    assert_eq!(got.len(), 50);
    for ((id, result), want) in got.iter().zip(&ids) {
        assert_eq!(id, want, "results come in request order");
        assert_eq!(result, &counts("facebook", id), "{id}");
    }
    assert_eq!((f.usage_pct, f.pause), (0, None));
    let stats = server.stats().snapshot();
    assert_eq!((stats.requests, stats.ok, stats.pages_served), (1, 1, 50));
    server.stop().await;
}

#[actix_web::test]
async fn mastodon_accounts_have_the_exact_followers_of_the_trajectories() {
    let (server, clock) = sim(SimConfig::default());
    let client = mastodon(&server, &clock);
    for i in 1..=50 {
        let f = client.fetch(vec![page_id(i)]).await;
        assert_eq!(pages(&f), [(page_id(i), counts("mastodon", &page_id(i)))]);
        assert_eq!((f.usage_pct, f.pause), (0, None));
    }
    let stats = server.stats().snapshot();
    assert_eq!((stats.requests, stats.mastodon_requests, stats.ok, stats.pages_served), (50, 50, 50, 50));
    server.stop().await;
}

#[actix_web::test]
async fn an_unknown_page_fails_alone() {
    let (server, clock) = sim(SimConfig { pages: 10, ..SimConfig::default() });
    let ids = vec![page_id(1), page_id(11), page_id(2)];
    let f = facebook(&server).fetch(ids.clone()).await;
    let got = pages(&f);
    assert_eq!(
        (got[0].clone(), got[2].clone()),
        ((ids[0].clone(), counts("facebook", &ids[0])), (ids[2].clone(), counts("facebook", &ids[2])))
    );
    assert!(matches!(&got[1], (id, PageResult::Failed { code: 100, .. }) if id == &ids[1]), "{got:?}");

    let client = mastodon(&server, &clock);
    let f = client.fetch(vec![page_id(11)]).await;
    assert!(
        matches!(pages(&f), [(id, PageResult::Failed { code: 404, message })] if id == &page_id(11) && message == "Record not found"),
        "{f:?}"
    );
    let f = client.fetch(vec![page_id(2)]).await;
    assert_eq!(pages(&f), [(page_id(2), counts("mastodon", &page_id(2)))]);
    let stats = server.stats().snapshot();
    assert_eq!((stats.unknown_ids, stats.not_found), (2, 1));
    server.stop().await;
}

#[actix_web::test]
async fn throttling_pauses_for_a_minute() {
    let (server, clock) = sim(SimConfig { throttle_rate: 1.0, ..SimConfig::default() });
    let f = facebook(&server).fetch(vec![page_id(1), page_id(2)]).await;
    assert_eq!(f.outcome, BatchOutcome::Throttled { code: 4, retry_after: MINUTE });
    assert!(f.usage_pct >= 100, "{f:?}");
    assert_eq!(f.pause, MINUTE);

    let f = mastodon(&server, &clock).fetch(vec![page_id(1)]).await;
    assert_eq!(f.outcome, BatchOutcome::Throttled { code: 429, retry_after: MINUTE });
    assert!(f.usage_pct >= 100, "{f:?}");
    assert_eq!(f.pause, MINUTE, "X-RateLimit-Reset is a minute after the shared clock");
    assert_eq!(server.stats().snapshot().throttled, 2);
    server.stop().await;
}

#[actix_web::test]
async fn usage_rises_on_healthy_replies_before_the_every_nth_throttle() {
    let (server, clock) = sim(SimConfig { throttle_every: NonZeroU64::new(4), ..SimConfig::default() });
    let fb = facebook(&server);
    let mut seen = Vec::new();
    for _ in 0..4 {
        let f = fb.fetch(vec![page_id(1)]).await;
        seen.push((f.usage_pct, matches!(f.outcome, BatchOutcome::Pages(_))));
    }
    assert_eq!(seen, [(25, true), (50, true), (75, true), (100, false)]);

    let md = mastodon(&server, &clock);
    let mut seen = Vec::new();
    for _ in 0..4 {
        let f = md.fetch(vec![page_id(1)]).await;
        seen.push((f.usage_pct, f.pause, matches!(f.outcome, BatchOutcome::Pages(_))));
    }
    assert_eq!(seen, [(25, None, true), (50, None, true), (75, None, true), (100, MINUTE, false)]);
    server.stop().await;
}

#[actix_web::test]
async fn both_apis_share_one_fault_sequence() {
    let (server, clock) = sim(SimConfig { throttle_every: NonZeroU64::new(2), ..SimConfig::default() });
    let (fb, md) = (facebook(&server), mastodon(&server, &clock));
    for _ in 0..2 {
        let f = fb.fetch(vec![page_id(1)]).await;
        assert_eq!((f.usage_pct, pages(&f).len()), (50, 1));
        let f = md.fetch(vec![page_id(1)]).await;
        assert!(matches!(f.outcome, BatchOutcome::Throttled { code: 429, .. }), "{f:?}");
    }
    let stats = server.stats().snapshot();
    assert_eq!((stats.requests, stats.mastodon_requests, stats.ok, stats.throttled), (4, 2, 2, 2));
    server.stop().await;
}

#[actix_web::test]
async fn server_errors_are_transient_with_their_status() {
    let (server, clock) = sim(SimConfig { error_rate: 1.0, ..SimConfig::default() });
    let f = facebook(&server).fetch(vec![page_id(1)]).await;
    assert!(matches!(f.outcome, BatchOutcome::Transient { status: 500, .. }), "{f:?}");
    let f = mastodon(&server, &clock).fetch(vec![page_id(1)]).await;
    assert!(matches!(f.outcome, BatchOutcome::Transient { status: 503, .. }), "{f:?}");
    server.stop().await;
}

#[actix_web::test]
async fn a_reply_slower_than_the_timeout_is_a_transport_failure() {
    let (server, clock) = sim(SimConfig { slow_ms: 3_000, slow_rate: 1.0, ..SimConfig::default() });
    let timeout = Duration::from_millis(300);
    let fb = facebook_at(server.addr(), SECRET, timeout);
    let md = mastodon_at(server.addr(), Some(SECRET), timeout, clock.clone());
    for (name, fetch) in [("facebook", fb.fetch(vec![page_id(1)])), ("mastodon", md.fetch(vec![page_id(1)]))] {
        let started = Instant::now();
        let f = fetch.await;
        let took = started.elapsed();
        assert!(took < timeout + Duration::from_secs(1), "{name} took {took:?}");
        let message = assert_transport_failure(&f);
        assert!(message.contains("timed out"), "{name}: {message}");
    }
    assert_eq!(server.stats().snapshot().slow, 2);
    server.stop().await;
}

#[actix_web::test]
async fn malformed_bodies_are_malformed() {
    let (server, clock) = sim(SimConfig { malformed_rate: 1.0, ..SimConfig::default() });
    let (fb, md) = (facebook(&server), mastodon(&server, &clock));
    // Three requests of each, so each of the simulator's three kinds of broken body is met.
    for _ in 0..3 {
        let f = fb.fetch(vec![page_id(1), page_id(2)]).await;
        assert!(matches!(f.outcome, BatchOutcome::Malformed { .. }), "{f:?}");
        let f = md.fetch(vec![page_id(1)]).await;
        assert!(matches!(f.outcome, BatchOutcome::Malformed { .. }), "{f:?}");
    }
    assert_eq!(server.stats().snapshot().malformed, 6);
    server.stop().await;
}

#[actix_web::test]
async fn a_missing_or_invalid_token_is_rejected() {
    let (server, clock) = sim(SimConfig::default());
    let f = facebook_at(server.addr(), "", TIMEOUT).fetch(vec![page_id(1)]).await;
    assert!(matches!(f.outcome, BatchOutcome::Rejected { code: 190, .. }), "{f:?}");
    let f = mastodon_at(server.addr(), Some(""), TIMEOUT, clock.clone()).fetch(vec![page_id(1)]).await;
    assert!(
        matches!(&f.outcome, BatchOutcome::Rejected { code: 401, message } if message == "The access token is invalid"),
        "{f:?}"
    );
    // Lookups are public: without a token the account is still read.
    let f = mastodon_at(server.addr(), None, TIMEOUT, clock).fetch(vec![page_id(1)]).await;
    assert_eq!(pages(&f), [(page_id(1), counts("mastodon", &page_id(1)))]);
    assert_eq!(server.stats().snapshot().invalid_token, 2);
    server.stop().await;
}

/// A local address where nothing listens, reserved while the socket lives: bound without
/// `listen`, so a connection is refused and no other test can take the port meanwhile.
fn refusing_address() -> (tokio::net::TcpSocket, SocketAddr) {
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket.bind("127.0.0.1:0".parse().expect("literal address")).expect("a free port");
    let addr = socket.local_addr().expect("its address");
    (socket, addr)
}

#[actix_web::test]
async fn an_unreachable_server_is_transient_without_the_token() {
    let (_reserved, addr) = refusing_address();
    let f = facebook_at(addr, SECRET, TIMEOUT).fetch(vec![page_id(1)]).await;
    assert!(assert_transport_failure(&f).contains("refused"), "{f:?}");
    let clock = Arc::new(ManualClock::at_ms(NOW));
    let f = mastodon_at(addr, Some(SECRET), TIMEOUT, clock).fetch(vec![page_id(1)]).await;
    assert!(assert_transport_failure(&f).contains("refused"), "{f:?}");
}
