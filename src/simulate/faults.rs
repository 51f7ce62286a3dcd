//! The simulator's configuration and its fault plan: what it serves, which faults it injects
//! for which request, how a request was answered. Shared by the Graph API answers
//! ([`super::graph_api`]) and the Mastodon ones ([`super::mastodon`]), so neither needs the other.

use std::net::SocketAddr;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::Duration;

use super::trajectory::mix;
use crate::clock::{Clock, SystemClock};

/// Largest population: one 4-byte serve counter per page is allocated up front (80 MB here),
/// enough for the benchmarks of ten million pages polled by one instance.
pub const MAX_PAGES: u64 = 20_000_000;
/// Longest configurable delay: long enough for any client timeout, short enough that a
/// mistyped value does not hang a test for hours.
pub const MAX_SLOW_MS: u64 = 60_000;
/// Errors of configuring or starting the simulator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration breaks rules; every problem is listed.
    #[error("invalid simulator configuration: {}", .0.join("; "))]
    Invalid(Vec<String>),
    /// The address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What the simulator serves and which faults it injects. Rates are probabilities per request
/// in `[0, 1]`.
#[derive(Clone)]
pub struct SimConfig {
    /// Population size: `page-000001` ..= `page_id(pages)` exist, 1 ..= [`MAX_PAGES`].
    pub pages: u64,
    /// The API version in the path, e.g. `v19.0` (the version the poll client is written against).
    pub version: String,
    /// Share of requests answered with a 500 (code 2).
    pub error_rate: f64,
    /// Throttle every Nth request (the Nth, 2Nth, ...; requests are numbered from 1).
    pub throttle_every: Option<NonZeroU64>,
    /// Share of requests throttled at random, in addition to `throttle_every`.
    pub throttle_rate: f64,
    /// Delay of a slow reply, in ms (at most [`MAX_SLOW_MS`]).
    pub slow_ms: u64,
    /// Share of replies delayed by `slow_ms`.
    pub slow_rate: f64,
    /// Share of successful replies whose body is replaced by invalid JSON.
    pub malformed_rate: f64,
    /// Seed of the fault sequence.
    pub seed: u64,
    /// The time the counts are computed at.
    pub clock: Arc<dyn Clock>,
}

impl Default for SimConfig {
    /// 1000 healthy pages on the system clock, no faults.
    fn default() -> Self {
        Self {
            pages: 1000,
            version: "v19.0".into(),
            error_rate: 0.0,
            throttle_every: None,
            throttle_rate: 0.0,
            slow_ms: 0,
            slow_rate: 0.0,
            malformed_rate: 0.0,
            seed: 1,
            clock: Arc::new(SystemClock),
        }
    }
}

/// The faults planned for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Plan {
    /// Answer with a throttling error.
    pub throttled: bool,
    /// Answer with a 500.
    pub server_error: bool,
    /// Replace a successful body with invalid JSON.
    pub malformed: bool,
    /// Wait this long before answering.
    pub delay: Duration,
}

impl SimConfig {
    /// Checks every rule and reports all broken ones together, each naming its field.
    pub fn validate(&self) -> Result<()> {
        let mut problems = Vec::new();
        if !(1..=MAX_PAGES).contains(&self.pages) {
            problems.push(format!("pages: {} is outside 1..={MAX_PAGES}", self.pages));
        }
        if self.version.is_empty() || self.version.contains(['/', '?', '{', '}']) {
            problems.push(format!("version: {:?} is not a path segment such as v19.0", self.version));
        }
        for (name, rate) in [
            ("error_rate", self.error_rate),
            ("throttle_rate", self.throttle_rate),
            ("slow_rate", self.slow_rate),
            ("malformed_rate", self.malformed_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                problems.push(format!("{name}: {rate} is outside [0, 1]"));
            }
        }
        if self.slow_ms > MAX_SLOW_MS {
            problems.push(format!("slow_ms: {} is above {MAX_SLOW_MS}", self.slow_ms));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Invalid(problems))
        }
    }

    /// The faults of request number `seq` (from 1): each a separate hash of (seed, seq) against
    /// its rate, so changing one rate leaves the other faults where they were.
    pub fn plan(&self, seq: u64) -> Plan {
        let roll = |salt: u64| {
            let z = mix(self.seed ^ mix(seq.wrapping_mul(4).wrapping_add(salt)));
            (z >> 11) as f64 / (1u64 << 53) as f64
        };
        let every = self.throttle_every.is_some_and(|n| seq.is_multiple_of(n.get()));
        Plan {
            throttled: every || roll(0) < self.throttle_rate,
            server_error: roll(1) < self.error_rate,
            malformed: roll(2) < self.malformed_rate,
            delay: if roll(3) < self.slow_rate { Duration::from_millis(self.slow_ms) } else { Duration::ZERO },
        }
    }

    /// The `call_count` percentage reported in `X-App-Usage` for a request that is not
    /// throttled: the position in the every-Nth cycle, else the random throttle rate.
    pub fn usage_percent(&self, seq: u64) -> u64 {
        match self.throttle_every {
            Some(n) => (seq % n.get()) * 100 / n.get(),
            None => ((self.throttle_rate * 100.0) as u64).min(99),
        }
    }
}

/// How a request was answered (Mastodon lookups map onto the same kinds: 429 is `Throttled`,
/// 503 `ServerError`, 401 `InvalidToken`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 200 with a JSON body.
    Ok,
    /// 200 with an invalid body.
    Malformed,
    /// 400 with code 4.
    Throttled,
    /// 500 with code 2.
    ServerError,
    /// 400 with code 190.
    InvalidToken,
    /// 400 with code 100 (ids or fields).
    BadRequest,
    /// Mastodon only: 404, no such account.
    NotFound,
}

/// `body` (a JSON object) broken for request `seq`, in one of three ways, none of them valid
/// JSON: truncated (a proper prefix of an object never closes it), an HTML error page, nothing.
pub fn broken_body(body: &str, seq: u64) -> String {
    let cut = (0..=body.len() / 2).rev().find(|i| body.is_char_boundary(*i)).unwrap_or(0).max(1);
    match seq % 3 {
        0 => body[..cut.min(body.len())].to_string(),
        1 => "<html><body>502 Bad Gateway</body></html>".to_string(),
        _ => String::new(),
    }
}
