//! Rolling fan counts of one page: the current count, deltas over 1 h, 24 h and 7 d, a downsampled
//! chart and the latest raw samples, in memory that is bounded per page ([`MAX_HEAP_BYTES`]), so
//! one instance can hold a million pages.
//!
//! # What is stored
//!
//! Times are relative to the newest sample's `at_ms` (N); nothing depends on the wall clock.
//!
//! - **Raw samples** (32 bytes each): the newest [`TABLE_ROWS`], plus every sample after N − 1 h,
//!   plus the latest one at or before N − 1 h; at most [`RAW_CAP`].
//! - **Fine tier** (16 bytes a bucket): the last sample (time, fans) of every 10-minute bucket in
//!   the hours from `hour_start(N) − 7 d` on; at most [`FINE_CAP`] buckets.
//! - **Coarse tier** (16 bytes a bucket): the last sample of every older hour whose last sample is
//!   within the 30-day retention; at most [`COARSE_CAP`] buckets. Fine buckets move here as N
//!   advances.
//! - **The first sample ever seen** (time, fans), inline: the baseline of partial deltas of a
//!   young page. It is ignored once it is older than the retention.
//!
//! Anything older than N − 30 d is dropped. Followers are kept for raw samples only.
//!
//! # Order independence
//!
//! Samples with the same `at_ms` are duplicates: the one with more fans wins, then the one with
//! more followers (`None` < `Some`), so the outcome is the same whatever order they came in. Every
//! part of the state is a function of the set of samples seen, not of their order: a bucket keeps
//! the maximum of (time, fans), the raw samples are a suffix chosen by rules whose exclusions are
//! final as N grows, and a sample too old to be stored would have been evicted anyway.
//!
//! # Exactness of the deltas
//!
//! A delta over horizon H compares the newest sample with the baseline, the latest sample at or
//! before T = N − H. The baseline is always a real sample, and it is exactly that one unless T
//! falls inside a 10-minute bucket that also holds a sample later than T and the raw samples do
//! not reach back to T. Then the baseline is the latest sample before that bucket starts (or the
//! first sample, if it lies in the bucket). So deltas are exact for pages sampled at most once per
//! 10-minute bucket, whatever the phase; delta_1h also for any cadence down to about one sample a
//! minute; otherwise the baseline is at most one bucket too early. A delta is `partial` when no
//! sample at or before T exists; its baseline is then the oldest sample held (the first sample,
//! unless that has left the retention).

use std::collections::VecDeque;
use std::mem::size_of;

use serde::{Deserialize, Serialize};

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 60 * MINUTE_MS;
const DAY_MS: i64 = 24 * HOUR_MS;
/// Data older than this, relative to the newest sample, is dropped: the chart's 30 days.
pub const RETENTION_MS: i64 = 30 * DAY_MS;
/// Width of a fine bucket: the chart's resolution for the last 48 h and the deltas' precision.
pub const FINE_MS: i64 = 10 * MINUTE_MS;
/// Width of a coarse bucket: the chart's resolution beyond 48 h.
pub const COARSE_MS: i64 = HOUR_MS;
/// Fine buckets cover this much before the newest hour: the longest delta horizon (7 d), so that
/// every delta keeps 10-minute precision.
const FINE_SPAN_MS: i64 = 7 * DAY_MS;
/// The chart shows 10-minute points for the hours from `hour_start(N) − 48 h` on, hourly before.
const CHART_FINE_MS: i64 = 48 * HOUR_MS;
/// Rows of [`RollingFans::table`].
pub const TABLE_ROWS: usize = 24;
/// Most raw samples kept: enough to keep delta_1h exact at one sample a minute (64 cover 63 min).
pub const RAW_CAP: usize = 64;
/// Most fine buckets: 168 full hours before the newest hour, plus the newest hour, 6 each.
pub const FINE_CAP: usize = ((FINE_SPAN_MS + HOUR_MS) / FINE_MS) as usize;
/// Most coarse buckets: hours from `hour_start(N − 30 d)` to `hour_start(N) − 169 h`.
pub const COARSE_CAP: usize = ((RETENTION_MS - FINE_SPAN_MS) / HOUR_MS) as usize;
/// Upper bound of [`RollingFans::heap_bytes`] (27,104 bytes on 64-bit targets); a page costs that
/// plus `size_of::<RollingFans>()`.
pub const MAX_HEAP_BYTES: usize = RAW_CAP * size_of::<Sample>() + (FINE_CAP + COARSE_CAP) * size_of::<Point>();

/// One observation of a page's audience.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// When it was observed, epoch milliseconds; within ±100,000 years of 1970 (every RFC 3339
    /// time is), so the window arithmetic cannot overflow.
    pub at_ms: i64,
    /// Fan count.
    pub fans: u64,
    /// Follower count, when the platform reports one.
    pub followers: Option<u64>,
}

/// The growth over one horizon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    /// Current fans minus baseline fans (saturated to the `i64` range).
    pub value: i64,
    /// True when the history is shorter than the horizon: the baseline is the oldest sample held.
    pub partial: bool,
    /// When the baseline sample was observed, epoch milliseconds.
    pub baseline_at_ms: i64,
    /// The baseline's fan count.
    pub baseline_fans: u64,
}

/// The rolling figures of one page, as of its newest sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FanStats {
    /// Fans in the newest sample.
    pub fans: u64,
    /// Followers in the newest sample.
    pub followers: Option<u64>,
    /// When the newest sample was observed, epoch milliseconds.
    pub observed_at_ms: i64,
    /// Growth over the last hour.
    pub delta_1h: Delta,
    /// Growth over the last 24 hours.
    pub delta_24h: Delta,
    /// Growth over the last 7 days.
    pub delta_7d: Delta,
    /// `delta_24h` in percent of its baseline; `None` when the baseline has 0 fans.
    pub growth_24h_pct: Option<f64>,
}

/// One point of the chart: the last sample observed in a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeriesPoint {
    /// Bucket start, epoch milliseconds.
    pub start_ms: i64,
    /// Bucket width: [`FINE_MS`] or [`COARSE_MS`].
    pub width_ms: i64,
    /// When the bucket's last sample was observed, epoch milliseconds.
    pub at_ms: i64,
    /// That sample's fan count.
    pub fans: u64,
}

/// A bucket's last sample. Field order makes the derived `Ord` the duplicate rule: later wins,
/// then more fans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Point {
    at_ms: i64,
    fans: u64,
}

/// The rolling state of one page. See the module documentation for what is kept and how exact it
/// is; equal for equal sets of observed samples, whatever their order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RollingFans {
    /// Oldest first, distinct `at_ms`, a suffix of all samples seen.
    raw: VecDeque<Sample>,
    /// Oldest first, one point per 10-minute bucket.
    fine: VecDeque<Point>,
    /// Oldest first, one point per hour, all older than `fine`.
    coarse: VecDeque<Point>,
    first: Option<Point>,
}

fn floor(at_ms: i64, width: i64) -> i64 {
    at_ms - at_ms.rem_euclid(width)
}

/// Makes room for one more element, never letting the capacity pass `cap` (`VecDeque` alone
/// would double past it, and `heap_bytes` would lose its bound).
fn reserve_one<T>(d: &mut VecDeque<T>, cap: usize) {
    debug_assert!(d.len() < cap, "tier bound exceeded");
    if d.len() == d.capacity() {
        let target = (d.capacity() * 2).clamp(4, cap);
        d.reserve_exact(target - d.len());
    }
}

/// Gives memory back after evictions left a deque mostly empty (halving, so no thrashing).
fn shrink<T>(d: &mut VecDeque<T>) {
    if d.capacity() > 16 && d.len() * 4 < d.capacity() {
        d.shrink_to(d.len() * 2);
    }
}

/// Merges `p` into its bucket of `width` in the sorted tier `d`. Returns true when `d` changed.
fn upsert(d: &mut VecDeque<Point>, p: Point, width: i64, cap: usize) -> bool {
    let bucket = floor(p.at_ms, width);
    let i = d.partition_point(|q| q.at_ms < bucket);
    if let Some(q) = d.get_mut(i).filter(|q| floor(q.at_ms, width) == bucket) {
        let wins = p > *q;
        if wins {
            *q = p;
        }
        return wins;
    }
    reserve_one(d, cap);
    d.insert(i, p);
    true
}

/// The latest element of the sorted `d` at or before `t`.
fn latest<T: Copy>(d: &VecDeque<T>, t: i64, at: impl Fn(&T) -> i64) -> Option<T> {
    let i = d.partition_point(|x| at(x) <= t);
    d.get(i.checked_sub(1)?).copied()
}

impl Sample {
    fn point(&self) -> Point {
        Point { at_ms: self.at_ms, fans: self.fans }
    }
}

impl SeriesPoint {
    fn of(p: Point, width_ms: i64) -> Self {
        Self { start_ms: floor(p.at_ms, width_ms), width_ms, at_ms: p.at_ms, fans: p.fans }
    }
}

impl RollingFans {
    /// An empty page.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one observation. Returns false when it changed nothing: a duplicate that lost the
    /// tie-break, a sample hidden by a later one in all its buckets, or one older than the
    /// retention (unless it is the earliest ever seen, which is remembered).
    pub fn observe(&mut self, s: Sample) -> bool {
        let p = s.point();
        // Smallest time, then most fans: the duplicate rule again, so the choice is order-free.
        let mut changed = match self.first {
            Some(f) if (f.at_ms, std::cmp::Reverse(f.fans)) <= (p.at_ms, std::cmp::Reverse(p.fans)) => false,
            _ => {
                self.first = Some(p);
                true
            }
        };
        let newest = self.raw.back().map_or(s.at_ms, |b| b.at_ms.max(s.at_ms));
        if s.at_ms < newest - RETENTION_MS {
            return changed;
        }
        if self.raw.back().is_none_or(|b| s.at_ms > b.at_ms) {
            self.advance(newest);
        }
        changed |= self.insert_raw(s, newest);
        changed |= if floor(s.at_ms, HOUR_MS) >= floor(newest, HOUR_MS) - FINE_SPAN_MS {
            upsert(&mut self.fine, p, FINE_MS, FINE_CAP)
        } else {
            upsert(&mut self.coarse, p, COARSE_MS, COARSE_CAP)
        };
        changed
    }

    /// Moves the tiers to a new newest time: evicts what left the retention, then moves fine
    /// buckets that left the fine span into their hours (in that order, so that `coarse` never
    /// holds more than its bound).
    fn advance(&mut self, newest: i64) {
        let cutoff = newest - RETENTION_MS;
        while self.coarse.front().is_some_and(|p| p.at_ms < cutoff) {
            self.coarse.pop_front();
        }
        let fine_start = floor(newest, HOUR_MS) - FINE_SPAN_MS;
        while let Some(p) = self.fine.front().copied().filter(|p| p.at_ms < fine_start) {
            self.fine.pop_front();
            if p.at_ms >= cutoff {
                upsert(&mut self.coarse, p, COARSE_MS, COARSE_CAP);
            }
        }
        shrink(&mut self.fine);
        shrink(&mut self.coarse);
    }

    /// Inserts `s` into the raw samples and trims them to the rules of the module documentation.
    /// Returns true when they changed.
    fn insert_raw(&mut self, s: Sample, newest: i64) -> bool {
        let mut i = self.raw.partition_point(|r| r.at_ms < s.at_ms);
        if let Some(r) = self.raw.get_mut(i).filter(|r| r.at_ms == s.at_ms) {
            let wins = (s.fans, s.followers) > (r.fans, r.followers);
            if wins {
                *r = s;
            }
            return wins;
        }
        if self.raw.len() == RAW_CAP {
            if i == 0 {
                // It would be the oldest of RAW_CAP + 1: the cap drops it.
                return false;
            }
            self.raw.pop_front();
            i -= 1;
        }
        reserve_one(&mut self.raw, RAW_CAP);
        self.raw.insert(i, s);
        let (cutoff, hour_ago) = (newest - RETENTION_MS, newest - HOUR_MS);
        while let Some(front) = self.raw.front() {
            // Past the table rows, the front is only needed while it is the latest sample at or
            // before N − 1 h (the baseline of delta_1h).
            let redundant = self.raw.len() > TABLE_ROWS && self.raw.get(1).is_some_and(|r| r.at_ms <= hour_ago);
            if front.at_ms >= cutoff && !redundant {
                break;
            }
            self.raw.pop_front();
        }
        self.raw.binary_search_by_key(&s.at_ms, |r| r.at_ms).is_ok()
    }

    /// The first sample, while it is within the retention.
    fn first_held(&self, newest: i64) -> Option<Point> {
        self.first.filter(|f| f.at_ms >= newest - RETENTION_MS)
    }

    /// The delta of `cur` (the newest sample) over `horizon_ms`.
    fn delta(&self, cur: Point, horizon_ms: i64) -> Delta {
        let t = cur.at_ms - horizon_ms;
        let first = self.first_held(cur.at_ms);
        let found = [
            latest(&self.raw, t, |r| r.at_ms).map(|r| r.point()),
            latest(&self.fine, t, |p| p.at_ms),
            latest(&self.coarse, t, |p| p.at_ms),
            first.filter(|f| f.at_ms <= t),
        ]
        .into_iter()
        .flatten()
        .max();
        let (base, partial) = match found {
            Some(b) => (b, false),
            None => {
                let raw = self.raw.front().map(Sample::point);
                let held = [first, raw, self.fine.front().copied(), self.coarse.front().copied()];
                let oldest = held.into_iter().flatten().min_by_key(|p| p.at_ms);
                (oldest.expect("a page with a newest sample holds at least that sample"), true)
            }
        };
        let value = (i128::from(cur.fans) - i128::from(base.fans)).clamp(i64::MIN.into(), i64::MAX.into()) as i64;
        Delta { value, partial, baseline_at_ms: base.at_ms, baseline_fans: base.fans }
    }

    /// The current figures; `None` before the first sample.
    pub fn stats(&self) -> Option<FanStats> {
        let cur = *self.raw.back()?;
        let delta_24h = self.delta(cur.point(), DAY_MS);
        let growth_24h_pct =
            (delta_24h.baseline_fans > 0).then(|| delta_24h.value as f64 / delta_24h.baseline_fans as f64 * 100.0);
        Some(FanStats {
            fans: cur.fans,
            followers: cur.followers,
            observed_at_ms: cur.at_ms,
            delta_1h: self.delta(cur.point(), HOUR_MS),
            delta_24h,
            delta_7d: self.delta(cur.point(), 7 * DAY_MS),
            growth_24h_pct,
        })
    }

    /// The chart, oldest first: hourly points for the last 30 days up to `hour_start(N) − 48 h`,
    /// then 10-minute points. At most 672 + 294 points.
    pub fn series(&self) -> Vec<SeriesPoint> {
        let Some(newest) = self.raw.back().map(|r| r.at_ms) else { return Vec::new() };
        let split = floor(newest, HOUR_MS) - CHART_FINE_MS;
        let mut out = Vec::with_capacity(self.coarse.len() + self.fine.len());
        out.extend(self.coarse.iter().map(|p| SeriesPoint::of(*p, COARSE_MS)));
        for p in &self.fine {
            if p.at_ms >= split {
                out.push(SeriesPoint::of(*p, FINE_MS));
                continue;
            }
            // An hour's last sample is the last of its 10-minute buckets, which come in order.
            let point = SeriesPoint::of(*p, COARSE_MS);
            match out.last_mut() {
                Some(last) if last.start_ms == point.start_ms => *last = point,
                _ => out.push(point),
            }
        }
        out
    }

    /// The newest [`TABLE_ROWS`] samples, newest first.
    pub fn table(&self) -> Vec<Sample> {
        self.raw.iter().rev().take(TABLE_ROWS).copied().collect()
    }

    /// Heap bytes held (allocated capacity), at most [`MAX_HEAP_BYTES`].
    pub fn heap_bytes(&self) -> usize {
        self.raw.capacity() * size_of::<Sample>() + (self.fine.capacity() + self.coarse.capacity()) * size_of::<Point>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};
    use std::collections::BTreeMap;

    const MIN: i64 = MINUTE_MS;
    /// 2026-01-01T00:00:00Z plus an odd phase, so that no test relies on samples on bucket edges.
    const T0: i64 = 1_767_225_600_000 + 3 * MIN + 7_000;

    fn s(at_ms: i64, fans: u64) -> Sample {
        Sample { at_ms, fans, followers: None }
    }

    fn vp(d: &Delta) -> (i64, bool) {
        (d.value, d.partial)
    }

    #[test]
    fn steady_growth_every_10_minutes_over_8_days() {
        // +5 fans per sample from 1000: a delta over k samples is 5k.
        let mut page = RollingFans::new();
        assert_eq!(page.stats(), None);
        for k in 0..=1152 {
            assert!(page.observe(s(T0 + k * FINE_MS, 1000 + 5 * k as u64)));
            let st = page.stats().expect("a sample was observed");
            let deltas = (vp(&st.delta_1h), vp(&st.delta_24h), vp(&st.delta_7d));
            match k {
                0 => assert_eq!(deltas, ((0, true), (0, true), (0, true))),
                3 => {
                    assert_eq!(deltas, ((15, true), (15, true), (15, true)));
                    assert_eq!(st.growth_24h_pct, Some(1.5));
                }
                12 => assert_eq!(deltas, ((30, false), (60, true), (60, true))),
                143 => assert_eq!(deltas, ((30, false), (715, true), (715, true))),
                // Exactly 24 h of history: the first sample is at N − 24 h, "at or before".
                144 => {
                    assert_eq!(deltas, ((30, false), (720, false), (720, true)));
                    assert_eq!(st.delta_24h.baseline_at_ms, T0);
                }
                1152 => {
                    assert_eq!(deltas, ((30, false), (720, false), (5040, false)));
                    assert_eq!(st.delta_7d.baseline_at_ms, T0 + 144 * FINE_MS);
                    assert_eq!(st.growth_24h_pct, Some(720.0 / 6040.0 * 100.0));
                }
                _ => {}
            }
        }
        let series = page.series();
        // 8 d − 48 h = 144 hourly points, then 48 h of 10-minute points plus the newest bucket.
        assert_eq!(series.len(), 144 + 289);
        assert!(series.windows(2).all(|w| w[0].start_ms + w[0].width_ms <= w[1].start_ms));
        let point = |start_ms, width_ms, at_ms, fans| SeriesPoint { start_ms, width_ms, at_ms, fans };
        assert_eq!(series[0], point(T0 - 3 * MIN - 7_000, HOUR_MS, T0 + 5 * FINE_MS, 1025));
        let newest = T0 + 1152 * FINE_MS;
        assert_eq!(series[432], point(newest - 3 * MIN - 7_000, FINE_MS, newest, 6760));
        let table = page.table();
        assert_eq!(table.len(), TABLE_ROWS);
        assert_eq!((table[0].at_ms, table[23].at_ms), (newest, newest - 23 * FINE_MS));
    }

    #[test]
    fn decline_then_viral_jump() {
        let fans = |k: i64| (if k < 300 { 100_000 } else { 150_000 }) - 3 * k as u64;
        let mut page = RollingFans::new();
        for k in 0..300 {
            page.observe(s(T0 + k * FINE_MS, fans(k)));
        }
        let st = page.stats().expect("samples were observed");
        let deltas = (vp(&st.delta_1h), vp(&st.delta_24h), vp(&st.delta_7d));
        assert_eq!(deltas, ((-18, false), (-432, false), (-897, true)));
        assert_eq!(st.growth_24h_pct, Some(-432.0 / 99_535.0 * 100.0));
        page.observe(s(T0 + 300 * FINE_MS, fans(300)));
        let st = page.stats().expect("samples were observed");
        assert_eq!(st.fans, 149_100);
        assert_eq!((vp(&st.delta_1h), vp(&st.delta_24h)), ((149_100 - 99_118, false), (149_100 - 99_532, false)));
        assert_eq!(vp(&st.delta_7d), (49_100, true));
    }

    #[test]
    fn single_sample_and_zero_baseline() {
        let mut page = RollingFans::new();
        page.observe(Sample { at_ms: T0, fans: 0, followers: Some(3) });
        let st = page.stats().expect("a sample was observed");
        assert_eq!((st.followers, vp(&st.delta_1h), vp(&st.delta_7d)), (Some(3), (0, true), (0, true)));
        assert_eq!(st.growth_24h_pct, None);
        page.observe(s(T0 + DAY_MS, 10));
        let st = page.stats().expect("samples were observed");
        assert_eq!((vp(&st.delta_24h), st.growth_24h_pct), ((10, false), None));
    }

    #[test]
    fn duplicates_resolve_by_most_fans_then_followers() {
        let (a, b, c) = (s(T0, 5), s(T0, 7), Sample { at_ms: T0, fans: 7, followers: Some(1) });
        for order in [[a, b, c], [c, b, a], [b, c, a]] {
            let mut page = RollingFans::new();
            for x in order {
                page.observe(x);
            }
            assert_eq!(page.table(), [c]);
            assert!(!page.observe(c), "an exact duplicate changes nothing");
            assert!(!page.observe(a), "a losing duplicate changes nothing");
        }
    }

    #[test]
    fn data_older_than_30_days_vanishes() {
        let mut page = RollingFans::new();
        for k in 0..144 {
            page.observe(s(T0 + k * FINE_MS, 100 + k as u64));
        }
        let newest = T0 + 31 * DAY_MS;
        page.observe(s(newest, 500));
        let only = SeriesPoint { start_ms: floor(newest, FINE_MS), width_ms: FINE_MS, at_ms: newest, fans: 500 };
        assert_eq!(page.series(), [only]);
        assert_eq!(page.table(), [s(newest, 500)]);
        let st = page.stats().expect("samples were observed");
        // The first sample left the retention: nothing older than the newest one is left.
        assert_eq!((vp(&st.delta_24h), vp(&st.delta_7d)), ((0, true), (0, true)));
        assert!(!page.observe(s(T0 + 100 * FINE_MS + 1, 1)), "older than the retention");
    }

    /// Stores a page's history at a cadence and reports its heap bytes.
    fn page_at_cadence(days: i64, every_ms: i64) -> RollingFans {
        let mut page = RollingFans::new();
        for k in 0..days * DAY_MS / every_ms {
            page.observe(s(T0 + k * every_ms, 1_000_000 + k as u64));
        }
        page
    }

    #[test]
    fn memory_stays_bounded() {
        assert_eq!((FINE_CAP, COARSE_CAP, MAX_HEAP_BYTES), (1014, 552, 27_104));
        let month = page_at_cadence(30, FINE_MS);
        let year = page_at_cadence(365, MIN);
        // Printed for the README (cargo test ... -- --nocapture).
        eprintln!("heap bytes: 30 d at 10 min {}, 365 d at 1 min {}", month.heap_bytes(), year.heap_bytes());
        for page in [&month, &year] {
            assert!(page.heap_bytes() <= MAX_HEAP_BYTES, "{} bytes", page.heap_bytes());
            let newest = page.stats().expect("samples were observed").observed_at_ms;
            let series = page.series();
            assert!(series.len() <= 672 + 294 && series[0].at_ms >= newest - RETENTION_MS);
        }
        assert_eq!(year.series().len(), 672 + 289);
        // 1-minute samples: the raw samples reach back to N − 1 h, so delta_1h is exact.
        let st = year.stats().expect("samples were observed");
        assert_eq!((vp(&st.delta_1h), st.delta_1h.baseline_at_ms), ((60, false), st.observed_at_ms - HOUR_MS));
    }

    /// Every sample's time mapped to its winning fans, as the duplicate rule picks them.
    fn dedup(samples: &[Sample]) -> BTreeMap<i64, u64> {
        let mut m = BTreeMap::new();
        for x in samples {
            let f = m.entry(x.at_ms).or_insert(x.fans);
            *f = (*f).max(x.fans);
        }
        m
    }

    /// Checks the exactness the module documentation promises against the full history, which
    /// must lie within the retention.
    fn check_deltas(samples: &[Sample], st: &FanStats) {
        let all = dedup(samples);
        let (&first, _) = all.first_key_value().expect("samples are not empty");
        for (horizon, d) in [(HOUR_MS, st.delta_1h), (DAY_MS, st.delta_24h), (7 * DAY_MS, st.delta_7d)] {
            let t = st.observed_at_ms - horizon;
            let expected_at = match all.range(..=t).next_back() {
                None => {
                    assert!(d.partial);
                    first
                }
                Some((&exact, _)) if exact == d.baseline_at_ms => exact,
                Some((&exact, _)) => {
                    // Allowed only when T's bucket hides the exact baseline behind a later sample.
                    let bucket = floor(t, FINE_MS);
                    assert!(exact >= bucket && all.range(t + 1..bucket + FINE_MS).next().is_some(), "{d:?} at {t}");
                    all.range(..bucket).next_back().map_or(first, |(&at, _)| at)
                }
            };
            assert_eq!(d.baseline_at_ms, expected_at, "{d:?} at {t}");
            assert_eq!(d.partial, all.range(..=t).next().is_none());
            assert_eq!((d.baseline_fans, d.value), (all[&expected_at], st.fans as i64 - all[&expected_at] as i64));
        }
    }

    #[test]
    fn sub_bucket_cadence_keeps_one_bucket_precision() {
        let samples: Vec<Sample> = (0..3 * 24 * 60).map(|k| s(T0 + k * MIN, k as u64)).collect();
        let mut page = RollingFans::new();
        for x in &samples {
            page.observe(*x);
            if x.at_ms >= T0 + DAY_MS {
                check_deltas(&samples[..=x.fans as usize], &page.stats().expect("samples were observed"));
            }
        }
    }

    #[test]
    fn order_and_duplicates_do_not_change_the_state() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for case in 0..400 {
            let span = [90 * MIN, 3 * DAY_MS, 9 * DAY_MS, 45 * DAY_MS][case % 4];
            // A coarse grid makes equal timestamps (duplicates with other counts) common.
            let grid = [1, MIN, FINE_MS][rng.gen_range(0..3)];
            let mut samples: Vec<Sample> = (0..rng.gen_range(1..250))
                .map(|_| Sample {
                    at_ms: T0 + rng.gen_range(0..span) / grid * grid,
                    fans: rng.gen_range(0..1000),
                    followers: rng.gen_bool(0.5).then(|| rng.gen_range(0..1000)),
                })
                .collect();
            samples.sort_by_key(|x| (x.at_ms, x.fans, x.followers));
            let mut sorted = RollingFans::new();
            for x in &samples {
                sorted.observe(*x);
            }
            let mut shuffled_input = samples.clone();
            for _ in 0..rng.gen_range(0..50) {
                shuffled_input.push(samples[rng.gen_range(0..samples.len())]);
            }
            shuffled_input.shuffle(&mut rng);
            for input in [shuffled_input.clone(), shuffled_input.into_iter().rev().collect()] {
                let mut page = RollingFans::new();
                for x in input {
                    page.observe(x);
                }
                assert_eq!(page.stats(), sorted.stats(), "case {case}");
                assert_eq!(page.series(), sorted.series(), "case {case}");
                assert_eq!(page.table(), sorted.table(), "case {case}");
                assert_eq!(page, sorted, "case {case}: the whole state");
            }
            let st = sorted.stats().expect("samples are not empty");
            if st.observed_at_ms - samples[0].at_ms <= RETENTION_MS {
                check_deltas(&samples, &st);
            }
        }
    }
}
