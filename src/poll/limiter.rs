//! Per-platform request limits: a token bucket for the rate, a bound on requests in flight, pauses
//! the platform asks for, a slowdown driven by the usage it reports, and retry backoff.
//!
//! Like the schedule, this is plain logic with time passed in as epoch milliseconds: the actor
//! that sends requests asks [`Limiter::try_acquire`] and, when told to [`Wait`], sleeps until
//! the time it is given (or until a request completes, for [`Wait::Concurrency`]).
//!
//! Limits hold per `Limiter`, so there must be exactly one per platform per instance, owned by
//! the one actor that issues that platform's requests; a platform's global budget (per app
//! token) is split between instances by configuration.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

/// Token amounts are kept in millionths so refill is exact integer arithmetic: the bound
/// "at most `burst + rate * t` calls in any `t`" then holds without float rounding.
const MICRO: i64 = 1_000_000;

/// Lowest slowdown factor, in thousandths: near the limit the rate drops to 5 %, never to zero,
/// so the usage reported by the next response can lift it again.
const MIN_FACTOR_PERMILLE: i64 = 50;

/// Reported usage (percent) above which the rate is scaled down; Facebook starts throttling at
/// 100 % of its rolling window, so the last fifth is used to brake.
pub const SLOWDOWN_FROM_PCT: u32 = 80;

/// The limits of one platform.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Sustained calls per second (at least 0.001).
    pub rate_per_sec: f64,
    /// Calls that may be made at once after a quiet spell (at least 1).
    pub burst: u32,
    /// Requests in flight at once (at least 1).
    pub max_in_flight: u32,
    /// How long to stop when the platform reports 100 % usage without saying for how long.
    pub saturated_pause_ms: i64,
}

/// Why a request may not be sent yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// The platform asked us to stop until this time.
    Paused {
        /// When to try again.
        until_ms: i64,
    },
    /// The rate budget is spent until this time.
    Rate {
        /// When to try again: enough tokens will have been refilled by then.
        until_ms: i64,
    },
    /// `max_in_flight` requests are out: try again when a [`Permit`] is dropped.
    Concurrency,
}

impl Wait {
    /// When to try again, if it depends on time rather than on a request completing.
    pub fn until_ms(&self) -> Option<i64> {
        match self {
            Wait::Paused { until_ms } | Wait::Rate { until_ms } => Some(*until_ms),
            Wait::Concurrency => None,
        }
    }
}

/// Held while one request is in flight; dropping it (when the request completes, fails or is
/// cancelled) frees the slot, so a cancelled future cannot leak concurrency.
#[derive(Debug)]
#[must_use = "the request slot is released as soon as the permit is dropped"]
pub struct Permit {
    in_flight: Arc<AtomicU32>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Rate, concurrency, pause and slowdown state of one platform. See the module docs.
#[derive(Debug)]
pub struct Limiter {
    limits: Limits,
    /// Refill per millisecond at full speed, in millionths of a call.
    base_refill: i64,
    factor_permille: i64,
    /// Negative after a call costlier than `burst`: the debt is refilled before the next grant.
    tokens: i64,
    refilled_at: i64,
    paused_until: i64,
    in_flight: Arc<AtomicU32>,
}

impl Limiter {
    /// A limiter with a full bucket at `now_ms`.
    ///
    /// # Panics
    /// If a limit is below its documented minimum: config validation rejects such values
    /// before they get here.
    pub fn new(limits: Limits, now_ms: i64) -> Self {
        assert!(limits.rate_per_sec >= 0.001 && limits.rate_per_sec.is_finite(), "rate_per_sec out of range");
        assert!(limits.burst >= 1 && limits.max_in_flight >= 1, "burst and max_in_flight must be positive");
        // Calls a second equal millionths of a call per millisecond divided by 1,000.
        let base_refill = (limits.rate_per_sec * 1000.0).round() as i64;
        let tokens = i64::from(limits.burst) * MICRO;
        Self {
            limits,
            base_refill,
            factor_permille: 1000,
            tokens,
            refilled_at: now_ms,
            paused_until: i64::MIN,
            in_flight: Arc::new(AtomicU32::new(0)),
        }
    }

    fn refill_per_ms(&self) -> i64 {
        (self.base_refill * self.factor_permille / 1000).max(1)
    }

    fn refill(&mut self, now_ms: i64) {
        if now_ms > self.refilled_at {
            let cap = i64::from(self.limits.burst) * MICRO;
            let added = (now_ms - self.refilled_at).saturating_mul(self.refill_per_ms());
            self.tokens = self.tokens.saturating_add(added).min(cap);
            self.refilled_at = now_ms;
        }
    }

    /// A permit for one call, or when and why to wait.
    pub fn try_acquire(&mut self, now_ms: i64) -> Result<Permit, Wait> {
        self.try_acquire_cost(now_ms, 1)
    }

    /// A permit for one request that the platform counts as `cost` calls (Facebook counts every
    /// id of a multi-id request). A cost above `burst` is granted on a full bucket and leaves it
    /// in debt, so the sustained rate still holds.
    pub fn try_acquire_cost(&mut self, now_ms: i64, cost: u32) -> Result<Permit, Wait> {
        if now_ms < self.paused_until {
            return Err(Wait::Paused { until_ms: self.paused_until });
        }
        if self.in_flight.load(Ordering::Acquire) >= self.limits.max_in_flight {
            return Err(Wait::Concurrency);
        }
        self.refill(now_ms);
        let need = i64::from(cost.clamp(1, self.limits.burst)) * MICRO;
        if self.tokens < need {
            // Round up: waking a millisecond early would only earn another wait.
            let ms = (need - self.tokens + self.refill_per_ms() - 1) / self.refill_per_ms();
            return Err(Wait::Rate { until_ms: self.refilled_at.max(now_ms) + ms });
        }
        self.tokens -= i64::from(cost.max(1)) * MICRO;
        // Only this owner increments, so the check above still holds; drops only make room.
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Ok(Permit { in_flight: Arc::clone(&self.in_flight) })
    }

    /// Sends nothing before `until_ms` (a platform's throttling response, such as Facebook's
    /// `estimated_time_to_regain_access`). A shorter pause never cuts a longer one short. The
    /// bucket restarts empty at the end, so the resumed traffic ramps up instead of bursting
    /// into a platform that just throttled us.
    pub fn pause_until(&mut self, until_ms: i64) {
        if until_ms > self.paused_until {
            self.paused_until = until_ms;
            self.tokens = self.tokens.min(0);
            self.refilled_at = self.refilled_at.max(until_ms);
        }
    }

    /// Scales the refill rate by `factor`, clamped to 5 %..=100 %, and drops saved-up tokens
    /// above the scaled burst so a platform near its limit does not get a full burst.
    pub fn slow_down(&mut self, factor: f64, now_ms: i64) {
        // NaN casts to 0, which clamps to the minimum: an unreadable factor errs towards slow.
        let permille = ((factor * 1000.0).round() as i64).clamp(MIN_FACTOR_PERMILLE, 1000);
        self.refill(now_ms);
        self.factor_permille = permille;
        let cap = i64::from(self.limits.burst) * MICRO * permille / 1000;
        self.tokens = self.tokens.min(cap);
    }

    /// Applies a usage percentage reported by the platform (the highest of Facebook's
    /// `call_count`, `total_time` and `total_cputime`): full speed up to 80 %, then linearly
    /// slower down to 5 % just under 100 %, and at 100 % or more a pause of
    /// `saturated_pause_ms`. Every response reports usage, so a falling value lifts it again.
    pub fn observe_usage(&mut self, usage_pct: u32, now_ms: i64) {
        let span = 100 - SLOWDOWN_FROM_PCT;
        let headroom = 100u32.saturating_sub(usage_pct).min(span);
        self.slow_down(f64::from(headroom) / f64::from(span), now_ms);
        if usage_pct >= 100 {
            self.pause_until(now_ms.saturating_add(self.limits.saturated_pause_ms));
        }
    }

    /// The current rate factor, 0.05..=1.0.
    pub fn factor(&self) -> f64 {
        self.factor_permille as f64 / 1000.0
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Acquire)
    }
}

/// Exponential backoff with full jitter for retrying a failed request: retry `n` (from 0) waits
/// a uniform random time in `[0, min(max, base * 2^n)]`, which spreads retries of many pages
/// that failed together, and there are at most `attempts` retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    /// Upper bound of the first retry's delay.
    pub base: Duration,
    /// Upper bound of every delay.
    pub max: Duration,
    /// Retries allowed; after that the request is given up (and counted) by the caller.
    pub attempts: u32,
}

impl Backoff {
    /// The delay before retry `attempt` (0 for the first retry), or `None` when the retries are
    /// used up.
    pub fn next_delay<R: Rng + ?Sized>(&self, attempt: u32, rng: &mut R) -> Option<Duration> {
        if attempt >= self.attempts {
            return None;
        }
        let base = u64::try_from(self.base.as_millis()).unwrap_or(u64::MAX);
        let max = u64::try_from(self.max.as_millis()).unwrap_or(u64::MAX);
        let ceiling = base.saturating_mul(1u64.checked_shl(attempt).unwrap_or(u64::MAX)).min(max);
        Some(Duration::from_millis(rng.gen_range(0..=ceiling)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, SeedableRng};

    const T0: i64 = 1_700_000_000_000;

    fn limits(rate_per_sec: f64, burst: u32, max_in_flight: u32) -> Limits {
        Limits { rate_per_sec, burst, max_in_flight, saturated_pause_ms: 60_000 }
    }

    /// Tries every millisecond for `ms`, dropping each permit at once; the grant times.
    fn grants(l: &mut Limiter, from: i64, ms: i64) -> Vec<i64> {
        (from..from + ms).filter(|&t| l.try_acquire(t).is_ok()).collect()
    }

    /// Most grants in any window of `window_ms`.
    fn busiest(times: &[i64], window_ms: i64) -> usize {
        let mut start = 0;
        let mut most = 0;
        for (end, t) in times.iter().enumerate() {
            while times[start] <= t - window_ms {
                start += 1;
            }
            most = most.max(end + 1 - start);
        }
        most
    }

    #[test]
    fn rate_is_never_exceeded_over_any_window() {
        for (rate, burst) in [(10.0, 5), (0.5, 1), (333.0, 20)] {
            let mut l = Limiter::new(limits(rate, burst, 1000), T0);
            let times = grants(&mut l, T0, 60_000);
            for window_ms in [1_000, 10_000, 60_000] {
                let bound = f64::from(burst) + rate * window_ms as f64 / 1000.0;
                assert!(busiest(&times, window_ms) as f64 <= bound, "rate {rate} window {window_ms}");
            }
            // And the budget is used: the full minute's rate plus the initial burst, to one call.
            let expected = f64::from(burst) + rate * 60.0;
            assert!((times.len() as f64 - expected).abs() <= 1.0, "rate {rate}: {}", times.len());
        }
    }

    #[test]
    fn rate_wait_says_exactly_when_to_retry() {
        let mut l = Limiter::new(limits(4.0, 1, 10), T0);
        assert!(l.try_acquire(T0).is_ok());
        assert_eq!(l.try_acquire(T0).err(), Some(Wait::Rate { until_ms: T0 + 250 }));
        assert!(l.try_acquire(T0 + 249).is_err());
        assert!(l.try_acquire(T0 + 250).is_ok());
    }

    #[test]
    fn concurrency_is_bounded_and_freed_by_dropping_permits() {
        let mut l = Limiter::new(limits(1000.0, 100, 3), T0);
        let held: Vec<Permit> = (0..3).map(|_| l.try_acquire(T0).expect("under both limits")).collect();
        assert_eq!(l.try_acquire(T0).err(), Some(Wait::Concurrency));
        assert_eq!(Wait::Concurrency.until_ms(), None);
        assert_eq!(l.in_flight(), 3);
        drop(held);
        assert_eq!(l.in_flight(), 0);
        assert!(l.try_acquire(T0).is_ok());
    }

    #[test]
    fn pause_is_honoured_and_resumes_without_a_burst() {
        let mut l = Limiter::new(limits(10.0, 10, 100), T0);
        l.pause_until(T0 + 60_000);
        l.pause_until(T0 + 1_000); // shorter: ignored
        assert_eq!(l.try_acquire(T0 + 59_999).err(), Some(Wait::Paused { until_ms: T0 + 60_000 }));
        // Empty at the end of the pause: the first call waits one refill (100 ms), no burst.
        assert_eq!(l.try_acquire(T0 + 60_000).err(), Some(Wait::Rate { until_ms: T0 + 60_100 }));
        assert_eq!(grants(&mut l, T0 + 60_000, 1_001).len(), 10);
    }

    #[test]
    fn usage_above_80_percent_slows_down_linearly_and_100_pauses() {
        let mut l = Limiter::new(limits(100.0, 10, 1000), T0);
        l.observe_usage(80, T0);
        assert_eq!(l.factor(), 1.0);
        l.observe_usage(90, T0);
        assert_eq!(l.factor(), 0.5);
        // The saved-up burst was cut to the scaled burst (5) and the rate halved (50 a second).
        assert_eq!(grants(&mut l, T0, 1_001).len(), 5 + 50);
        l.observe_usage(99, T0 + 1_000);
        assert_eq!(l.factor(), 0.05);
        l.observe_usage(100, T0 + 1_000);
        assert_eq!(l.try_acquire(T0 + 1_000).err(), Some(Wait::Paused { until_ms: T0 + 61_000 }));
        l.observe_usage(20, T0 + 61_000);
        assert_eq!(l.factor(), 1.0);
        assert_eq!(grants(&mut l, T0 + 61_000, 1_001).len(), 100);
    }

    #[test]
    fn batch_cost_is_charged_per_call() {
        let mut l = Limiter::new(limits(50.0, 50, 10), T0);
        assert!(l.try_acquire_cost(T0, 50).is_ok());
        assert_eq!(l.try_acquire(T0).err(), Some(Wait::Rate { until_ms: T0 + 20 }));
        // Costlier than the burst: granted on a full bucket, then the debt is repaid first.
        let mut l = Limiter::new(limits(10.0, 5, 10), T0);
        assert!(l.try_acquire_cost(T0, 20).is_ok());
        assert_eq!(l.try_acquire(T0).err(), Some(Wait::Rate { until_ms: T0 + 1_600 }));
    }

    #[test]
    fn backoff_is_bounded_grows_exponentially_and_stops() {
        let b = Backoff { base: Duration::from_millis(100), max: Duration::from_secs(5), attempts: 8 };
        let mut rng = StdRng::seed_from_u64(1);
        let mut means = Vec::new();
        for attempt in 0..8 {
            let ceiling = (100u64 << attempt).min(5_000);
            let delays: Vec<u64> = (0..4_000)
                .map(|_| b.next_delay(attempt, &mut rng).expect("within attempts").as_millis() as u64)
                .collect();
            assert!(delays.iter().all(|d| *d <= ceiling));
            let mean = delays.iter().sum::<u64>() as f64 / delays.len() as f64;
            // Full jitter: uniform on [0, ceiling], mean ceiling / 2 (within 5 %).
            assert!((mean / (ceiling as f64 / 2.0) - 1.0).abs() < 0.05, "attempt {attempt}: {mean}");
            means.push(mean);
        }
        assert!(means[..6].windows(2).all(|w| w[1] / w[0] > 1.8), "doubles until capped: {means:?}");
        assert_eq!(b.next_delay(8, &mut rng), None);
        assert_eq!(b.next_delay(u32::MAX, &mut rng), None);
        let huge = Backoff { attempts: u32::MAX, ..b };
        assert!(huge.next_delay(200, &mut rng).expect("allowed") <= Duration::from_secs(5));
    }
}
