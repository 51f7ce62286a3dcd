//! Rate limits per client: a token bucket per (route class, client), where a client is its token's
//! name when it has one, else its address. Over the limit a request is answered `429` with
//! `Retry-After`; every answer of a limited route carries the IETF rate-limit fields
//! (draft-ietf-httpapi-ratelimit-headers: `RateLimit-Policy: "read";q=10000;w=2` and
//! `RateLimit: "read";r=9999;t=1`: quota, window in seconds, remaining, seconds until full).
//!
//! The buckets are kept in an LRU map of at most `http.max_clients` entries: a client not seen
//! for the longest is forgotten first (it starts with a full bucket again).

use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::Instant;

use actix_web::http::header::{HeaderName, HeaderValue};
use lru::LruCache;

use crate::config::HttpConfig;

/// Which budget a route spends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// GET requests of the API.
    Read,
    /// POST and DELETE requests of the API.
    Write,
}

impl Class {
    /// The policy name in the headers and the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Read => "read",
            Class::Write => "write",
        }
    }
}

/// One class's budget.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    /// Tokens added per second.
    pub per_sec: f64,
    /// Most tokens held.
    pub burst: u32,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The outcome of asking for one request's token.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Whether the request may go on.
    pub allowed: bool,
    /// Tokens left after it.
    pub remaining: u32,
    /// Seconds until the bucket is full again (or, refused, until one token is there).
    pub reset_s: u64,
}

/// One class's buckets by client, least recently seen first out.
type Buckets = LruCache<String, Bucket, hashbrown::DefaultHashBuilder>;

/// The rate limiter of the HTTP API.
pub struct Limiter {
    read: Rate,
    write: Rate,
    /// Read buckets, then write buckets; together at most `http.max_clients` entries.
    buckets: Mutex<[Buckets; 2]>,
    max_clients: usize,
}

impl Limiter {
    /// The limits of `cfg`.
    pub fn new(cfg: &HttpConfig) -> Self {
        Self::with(
            Rate { per_sec: cfg.read_rate, burst: cfg.read_burst },
            Rate { per_sec: cfg.write_rate, burst: cfg.write_burst },
            cfg.max_clients,
        )
    }

    /// Limits with the given rates, tracking at most `max_clients` clients.
    pub fn with(read: Rate, write: Rate, max_clients: usize) -> Self {
        let cap = NonZeroUsize::new(max_clients).unwrap_or(NonZeroUsize::MIN);
        let buckets = || LruCache::with_hasher(cap, hashbrown::DefaultHashBuilder::default());
        Self { read, write, buckets: Mutex::new([buckets(), buckets()]), max_clients: cap.get() }
    }

    fn rate(&self, class: Class) -> Rate {
        match class {
            Class::Read => self.read,
            Class::Write => self.write,
        }
    }

    /// Takes one token of `class` for `client` at `now`.
    pub fn take(&self, class: Class, client: &str, now: Instant) -> Decision {
        let rate = self.rate(class);
        let burst = f64::from(rate.burst);
        let mut all = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if !all[class as usize].contains(client) && all[0].len() + all[1].len() >= self.max_clients {
            // Full: forget the least recent client of the larger class.
            let larger = usize::from(all[1].len() > all[0].len());
            all[larger].pop_lru();
        }
        let buckets = &mut all[class as usize];
        if !buckets.contains(client) {
            buckets.put(client.to_string(), Bucket { tokens: burst, at: now });
        }
        let b = buckets.get_mut(client).expect("present: just checked or inserted");
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate.per_sec).min(burst);
        b.at = now;
        let allowed = b.tokens >= 1.0;
        if allowed {
            b.tokens -= 1.0;
        }
        let missing = if allowed { burst - b.tokens } else { 1.0 - b.tokens };
        Decision {
            allowed,
            remaining: b.tokens.floor().max(0.0) as u32,
            reset_s: (missing / rate.per_sec).ceil().max(if allowed { 0.0 } else { 1.0 }) as u64,
        }
    }

    /// Clients tracked now.
    pub fn clients(&self) -> usize {
        let all = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        all[0].len() + all[1].len()
    }

    /// The `RateLimit-Policy` and `RateLimit` header fields for `decision` of `class`.
    pub fn headers(&self, class: Class, decision: &Decision) -> Vec<(HeaderName, HeaderValue)> {
        let rate = self.rate(class);
        let window = (f64::from(rate.burst) / rate.per_sec).ceil().max(1.0) as u64;
        let name = class.as_str();
        let policy = format!("\"{name}\";q={};w={window}", rate.burst);
        let state = format!("\"{name}\";r={};t={}", decision.remaining, decision.reset_s);
        let value = |s: String| HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static(""));
        vec![
            (HeaderName::from_static("ratelimit-policy"), value(policy)),
            (HeaderName::from_static("ratelimit"), value(state)),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limiter(max_clients: usize) -> Limiter {
        Limiter::with(Rate { per_sec: 10.0, burst: 3 }, Rate { per_sec: 1.0, burst: 2 }, max_clients)
    }

    #[test]
    fn a_client_gets_its_burst_then_waits_for_the_refill() {
        let l = limiter(10);
        let t0 = Instant::now();
        for left in [2, 1, 0] {
            let d = l.take(Class::Read, "a", t0);
            assert!(d.allowed);
            assert_eq!(d.remaining, left);
        }
        let refused = l.take(Class::Read, "a", t0);
        assert_eq!((refused.allowed, refused.reset_s), (false, 1));
        // Another client and another class have their own budgets.
        assert!(l.take(Class::Read, "b", t0).allowed);
        assert!(l.take(Class::Write, "a", t0).allowed);
        // 100 ms later one token is back (10 per second).
        assert!(l.take(Class::Read, "a", t0 + Duration::from_millis(100)).allowed);
        assert!(!l.take(Class::Read, "a", t0 + Duration::from_millis(100)).allowed);
        // The bucket never holds more than its burst.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(l.take(Class::Read, "a", later).allowed);
        }
        assert!(!l.take(Class::Read, "a", later).allowed);
    }

    #[test]
    fn the_client_map_is_bounded_and_forgets_the_least_recent() {
        let l = limiter(2);
        let t0 = Instant::now();
        for _ in 0..3 {
            l.take(Class::Read, "a", t0);
        }
        l.take(Class::Read, "b", t0);
        l.take(Class::Read, "c", t0);
        assert_eq!(l.clients(), 2);
        // `a` was forgotten: its bucket starts full again.
        assert!(l.take(Class::Read, "a", t0).allowed);
        // Both classes share the bound.
        l.take(Class::Write, "a", t0);
        assert_eq!(l.clients(), 2);
    }

    #[test]
    fn headers_follow_the_ietf_draft() {
        let l = limiter(10);
        let d = l.take(Class::Read, "a", Instant::now());
        let h = l.headers(Class::Read, &d);
        assert_eq!(h[0].1.to_str().ok(), Some("\"read\";q=3;w=1"));
        assert_eq!(h[1].1.to_str().ok(), Some("\"read\";r=2;t=1"));
    }
}
