//! Rolling fan counts of one page: the current count, deltas over 1 h, 24 h and 7 d, a downsampled
//! chart and the latest raw samples, in compressed memory that grows with what a page holds and
//! is bounded ([`MAX_HEAP_BYTES`]), so one instance can hold ten million pages.
//!
//! # What is stored
//!
//! Times are relative to the newest sample's `at_ms` (N); nothing depends on the wall clock.
//!
//! - **Raw samples** (`raw.rs`: varint deltas, about 3 bytes each): the newest [`TABLE_ROWS`],
//!   plus every sample after N − 1 h,
//!   plus the latest one at or before N − 1 h; at most [`RAW_CAP`] (at one sample per 10 minutes,
//!   [`TABLE_ROWS`]). They are a suffix of all samples seen, and stand for their own buckets: the
//!   tiers below hold only buckets older than the oldest raw sample's.
//! - **Fine tier**: the last sample (time, fans) of every 10-minute bucket from the start of the
//!   day (UTC) holding `hour_start(N) − 7 d` on: the chart's 10-minute points from
//!   `hour_start(N) − 7 d` (at least the last 7 days and 1 hour), and the baselines of every
//!   delta. Its buckets before `hour_start(N) − 7 d` (under a day's worth) are charted hourly.
//! - **Coarse tier**: the last sample of every older hour, back to N − 30 d: the chart's hourly
//!   points. A day of fine buckets moves here (as the last sample of each hour) once the whole day
//!   is before `hour_start(N) − 7 d`.
//! - **The first sample ever seen** (time, fans), inline: the baseline of partial deltas of a
//!   young page. It is ignored once it is older than the retention.
//!
//! A tier is a byte vector of sealed, bit-packed blocks (`block.rs`: a day of 10-minute buckets
//! or a week of hours per block, frame-of-reference packed columns of bucket gaps, offsets in the
//! bucket in milliseconds, and fan deltas; about 5 bits a point at a 10-minute cadence with
//! exact, regular times). The newest block grows in place while a point fits its columns; a late
//! point decodes, changes and re-encodes its block. Nothing is preallocated: a tier allocates with
//! its first point, grows with its points and is freed with its last. The bytes are also the
//! durable form: a restore copies and checks them.
//!
//! Anything older than N − 30 d is dropped. Followers are kept for raw samples only.
//!
//! # Order independence
//!
//! Samples with the same `at_ms` are duplicates: the one with more fans wins, then the one with
//! more followers (`None` < `Some`), so the outcome is the same whatever order they came in. Every
//! part of the state is a function of the set of samples seen, not of their order: the raw
//! samples are a suffix chosen by rules whose exclusions are final as N grows (a sample once left
//! out never comes back, and the oldest raw sample only moves back when no older sample within
//! the retention was ever left out); a sample left out goes to the tier of its bucket as of that
//! N (the fine tier's start only moves forward), where a bucket keeps the maximum of (time,
//! fans), unless a raw sample shares its bucket (then that later one stands for it); a sample
//! too old to be stored would have been evicted anyway; and a block's encoding is a function of
//! its points.
//!
//! # Exactness of the deltas
//!
//! A delta over horizon H compares the newest sample with the baseline, the latest sample at or
//! before T = N − H. The baseline is always a real sample, and it is exactly that one unless T
//! falls inside a 10-minute bucket that also holds a later sample, and the raw samples do not
//! reach back to T. Then the baseline is the latest sample before that bucket starts (or the first
//! sample, if it lies in the bucket). T is always in the fine tier's 10-minute buckets, for all
//! three horizons, so:
//!
//! - delta_1h, delta_24h and delta_7d are exact for pages sampled at most once per 10-minute
//!   bucket, whatever the phase; delta_1h also for any cadence down to about one sample a minute
//!   (the raw samples reach back to N − 1 h).
//! - Otherwise the baseline is at most one 10-minute bucket too early, never later than the
//!   exact one.
//!
//! A delta is `partial` when no sample at or before T exists; its baseline is then the oldest
//! sample held (the first sample, unless that has left the retention).
//!
//! # Durable state
//!
//! [`RollingFans::encode`] writes all of the above, losslessly (raw samples as varint deltas, the
//! tiers' bytes as they are in memory), and [`RollingFans::decode`] reads it back into an equal
//! state, so a restored page continues exactly as the original would have. The format is
//! described in `encoding.rs`; it also reads the previous format (version 1).

mod block;
mod encoding;
mod raw;

use serde::{Deserialize, Serialize};

use self::block::Tier;
pub use self::encoding::{DecodeError, FORMAT_VERSION};
use self::raw::RawSamples;

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 60 * MINUTE_MS;
const DAY_MS: i64 = 24 * HOUR_MS;
/// Data older than this, relative to the newest sample, is dropped: the chart's 30 days.
pub const RETENTION_MS: i64 = 30 * DAY_MS;
/// Width of a fine bucket: the chart's resolution for the last 7 days and the precision of
/// every delta.
pub const FINE_MS: i64 = 10 * MINUTE_MS;
/// Width of a coarse bucket: the chart's resolution beyond 7 days.
pub const COARSE_MS: i64 = HOUR_MS;
/// The chart shows 10-minute buckets for the hours from `hour_start(N) − 7 d` on; this covers
/// the baseline of delta_7d.
pub const FINE_SPAN_MS: i64 = 7 * DAY_MS;
/// Rows of [`RollingFans::table`].
pub const TABLE_ROWS: usize = 24;
/// Most raw samples kept: enough to keep delta_1h exact at one sample a minute (64 cover 63 min).
pub const RAW_CAP: usize = 64;
/// 10-minute buckets per fine block: a day (so fine blocks leave the fine tier as whole hours).
const FINE_BLOCK: i64 = 144;
/// Hours per coarse block: a week.
const COARSE_BLOCK: i64 = 168;
/// Most points the fine tier holds: 7 days and the newest hour, plus up to a day before them.
pub const MAX_FINE_POINTS: usize = ((FINE_SPAN_MS + HOUR_MS) / FINE_MS + FINE_BLOCK) as usize;
/// Most points the coarse tier holds: the hours of the retention before the fine tier, plus the
/// one the cutoff cuts.
pub const MAX_COARSE_POINTS: usize = ((RETENTION_MS - FINE_SPAN_MS) / HOUR_MS + 1) as usize;

/// Bytes of a tier of `points` points in at most `blocks` blocks, at worst: a 44-byte header
/// per block, 94 bits per point (8 of bucket gap, 22 of offset, 64 of fan delta), and the slack
/// a tier's vector may keep after removals (a quarter, plus 16 bytes).
const fn tier_bound(points: usize, blocks: usize) -> usize {
    let bytes = blocks * 45 + (points * 94).div_ceil(8);
    bytes + bytes / 4 + 16
}

/// Upper bound of [`RollingFans::heap_bytes`] whatever the samples (a page costs that plus
/// `size_of::<RollingFans>()`). A real page holds far less: about 1.1 KB for 30 days of
/// 10-minute samples with exact regular times (see `tests::memory_stays_bounded`).
pub const MAX_HEAP_BYTES: usize = 9
    + RAW_CAP * 30
    + tier_bound(MAX_FINE_POINTS, MAX_FINE_POINTS.div_ceil(FINE_BLOCK as usize) + 1)
    + tier_bound(MAX_COARSE_POINTS, MAX_COARSE_POINTS.div_ceil(COARSE_BLOCK as usize) + 1);

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
    /// Growth over the last 7 days (exactness: module docs).
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

type FineTier = Tier<FINE_MS, FINE_BLOCK>;
type CoarseTier = Tier<COARSE_MS, COARSE_BLOCK>;

/// The rolling state of one page. See the module documentation for what is kept and how exact it
/// is; equal for equal sets of observed samples, whatever their order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RollingFans {
    /// A suffix of all samples seen, distinct `at_ms`, packed newest first; the newest is N.
    raw: RawSamples,
    /// One point per 10-minute bucket from [`Window::fine_lo`], before the oldest raw sample's
    /// bucket.
    fine: FineTier,
    /// One point per hour before [`Window::fine_lo`] and the oldest raw sample's hour, at or
    /// after [`Window::cutoff`].
    coarse: CoarseTier,
    first: First,
}

/// The first sample ever seen, if any: a point whose time `i64::MIN` (never a sample's) means
/// none, 8 bytes less than an `Option` in every page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct First(Point);

impl Default for First {
    fn default() -> Self {
        Self(Point { at_ms: i64::MIN, fans: 0 })
    }
}

impl First {
    fn get(self) -> Option<Point> {
        (self.0.at_ms != i64::MIN).then_some(self.0)
    }
}

/// Where the tiers begin, as of a newest time N.
#[derive(Debug, Clone, Copy)]
struct Window {
    /// `hour_start(N) − 7 d`: 10-minute points are charted from here on.
    chart_fine_lo: i64,
    /// The fine tier's first block: the one holding `chart_fine_lo`.
    fine_block: i64,
    /// That block's start: samples from here on belong to the fine tier.
    fine_lo: i64,
    /// N − 30 d: older points are dropped.
    cutoff: i64,
}

impl Window {
    fn of(newest: i64) -> Self {
        let chart_fine_lo = floor(newest, HOUR_MS) - FINE_SPAN_MS;
        let fine_block = FineTier::block_of(chart_fine_lo);
        Self { chart_fine_lo, fine_block, fine_lo: FineTier::block_start(fine_block), cutoff: newest - RETENTION_MS }
    }

    /// The chart bucket width of a point at `at_ms`.
    fn width(&self, at_ms: i64) -> i64 {
        if at_ms >= self.chart_fine_lo {
            FINE_MS
        } else {
            COARSE_MS
        }
    }
}

fn floor(at_ms: i64, width: i64) -> i64 {
    at_ms - at_ms.rem_euclid(width)
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

/// Puts a sample the raw samples left out (or dropped) into the tier of its bucket as of window
/// `w`, unless it is older than the retention, or the oldest raw sample `raw0` (which is later)
/// shares its bucket. Returns true when a tier changed.
fn settle(fine: &mut FineTier, coarse: &mut CoarseTier, p: Point, w: Window, raw0: i64) -> bool {
    if p.at_ms < w.cutoff {
        false
    } else if p.at_ms >= w.fine_lo {
        p.at_ms.div_euclid(FINE_MS) < raw0.div_euclid(FINE_MS) && fine.merge(p)
    } else {
        p.at_ms.div_euclid(HOUR_MS) < raw0.div_euclid(HOUR_MS) && coarse.merge(p)
    }
}

impl RollingFans {
    /// An empty page.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one observation. Returns false when it changed nothing: a duplicate that lost the
    /// tie-break, a sample hidden by a later one in its bucket, or one older than the retention
    /// (unless it is the earliest ever seen, which is remembered).
    pub fn observe(&mut self, s: Sample) -> bool {
        let p = s.point();
        // Smallest time, then most fans: the duplicate rule again, so the choice is order-free.
        let changed = match self.first.get() {
            Some(f) if (f.at_ms, std::cmp::Reverse(f.fans)) <= (p.at_ms, std::cmp::Reverse(p.fans)) => false,
            _ => {
                self.first = First(p);
                true
            }
        };
        let old = self.raw.newest().map(|b| b.at_ms);
        let newest = old.map_or(s.at_ms, |b| b.max(s.at_ms));
        if s.at_ms < newest - RETENTION_MS {
            return changed;
        }
        // Unpacked for the change (at most RAW_CAP + 1 samples), packed again if it changed.
        let mut raw = Vec::with_capacity(RAW_CAP + 1);
        self.raw.to_vec(&mut raw);
        let w = Window::of(newest);
        if let Some(old) = old.filter(|&o| o < newest) {
            self.advance(Window::of(old), w, raw[0].at_ms);
        }
        let (raw_changed, tiers_changed) = self.insert_raw(&mut raw, s, w, newest);
        if raw_changed {
            self.raw.set(&raw);
        }
        changed | raw_changed | tiers_changed
    }

    /// Moves the tiers from window `old` to `new`: evicts what left the retention, then moves
    /// the fine blocks that left the fine tier into their hours.
    fn advance(&mut self, old: Window, new: Window, raw0: i64) {
        self.coarse.evict_before(new.cutoff);
        if new.fine_block > old.fine_block && !self.fine.is_empty() {
            let mut moved: Vec<Point> = Vec::new();
            self.fine.drain_blocks_before(new.fine_block, |p| {
                // Oldest first: the last point of each hour is its hour's point.
                match moved.last_mut() {
                    Some(last) if last.at_ms.div_euclid(HOUR_MS) == p.at_ms.div_euclid(HOUR_MS) => *last = p,
                    _ => moved.push(p),
                }
            });
            for p in moved {
                settle(&mut self.fine, &mut self.coarse, p, new, raw0);
            }
        }
    }

    /// Inserts `s` into the raw samples `raw` (unpacked, oldest first), trims them to the rules
    /// of the module documentation, and settles what they left out in the tiers. Returns
    /// whether `raw` changed, and whether a tier did.
    fn insert_raw(&mut self, raw: &mut Vec<Sample>, s: Sample, w: Window, newest: i64) -> (bool, bool) {
        let Self { fine, coarse, .. } = self;
        let mut i = raw.partition_point(|r| r.at_ms < s.at_ms);
        if let Some(r) = raw.get_mut(i).filter(|r| r.at_ms == s.at_ms) {
            let wins = (s.fans, s.followers) > (r.fans, r.followers);
            if wins {
                *r = s;
            }
            return (wins, false);
        }
        let (mut changed, mut tiers) = (false, false);
        if raw.len() == RAW_CAP {
            if i == 0 {
                // It would be the oldest of RAW_CAP + 1: the cap leaves it out.
                let raw0 = raw[0].at_ms;
                return (false, settle(fine, coarse, s.point(), w, raw0));
            }
            let dropped = raw.remove(0);
            i -= 1;
            let raw0 = raw.first().map_or(s.at_ms, |r| r.at_ms.min(s.at_ms));
            tiers |= settle(fine, coarse, dropped.point(), w, raw0);
            changed = true;
        }
        raw.insert(i, s);
        let (cutoff, hour_ago) = (newest - RETENTION_MS, newest - HOUR_MS);
        // Past the table rows, the front is only needed while it is the latest sample at or
        // before N − 1 h (the baseline of delta_1h).
        let keep_from = (0..raw.len())
            .find(|&k| {
                let redundant = raw.len() - k > TABLE_ROWS && raw.get(k + 1).is_some_and(|r| r.at_ms <= hour_ago);
                raw[k].at_ms >= cutoff && !redundant
            })
            .expect("the newest sample is kept");
        let raw0 = raw[keep_from].at_ms;
        for r in raw.drain(..keep_from) {
            tiers |= settle(fine, coarse, r.point(), w, raw0);
        }
        // Left out at once, `s` leaves the raw samples as they were (unless the cap dropped one).
        (changed || keep_from <= i, tiers)
    }

    /// The first sample, while it is within the retention.
    fn first_held(&self, newest: i64) -> Option<Point> {
        self.first.get().filter(|f| f.at_ms >= newest - RETENTION_MS)
    }

    /// The delta of `cur` (the newest sample) over `horizon_ms`; `raw` are the raw samples,
    /// newest first.
    fn delta(&self, cur: Point, raw: &[Sample], horizon_ms: i64) -> Delta {
        let t = cur.at_ms - horizon_ms;
        let first = self.first_held(cur.at_ms);
        let raw0 = raw[raw.len() - 1].point();
        let raw = raw.get(raw.partition_point(|r| r.at_ms > t)).map(Sample::point);
        // Two shortcuts spare young and regular pages the walks over the tiers; the result is
        // the same (`tests::shortcuts_change_no_delta`). The raw samples are a suffix of all
        // samples seen, so when one is at or before T, the latest of them is the latest of all;
        // the fine tier is newer than the coarse one; and no sample is older than the first.
        let found = if raw.is_some() || first.is_some_and(|f| f.at_ms > t) {
            raw
        } else {
            let tiers = self.fine.latest(t).or_else(|| self.coarse.latest(t));
            [tiers, first.filter(|f| f.at_ms <= t)].into_iter().flatten().max()
        };
        let (base, partial) = match found {
            Some(b) => (b, false),
            // The first sample, while held, is the oldest.
            None => (first.unwrap_or_else(|| self.oldest_held(raw0)), true),
        };
        let value = (i128::from(cur.fans) - i128::from(base.fans)).clamp(i64::MIN.into(), i64::MAX.into()) as i64;
        Delta { value, partial, baseline_at_ms: base.at_ms, baseline_fans: base.fans }
    }

    /// The oldest point held (the first sample aside), given the oldest raw sample.
    fn oldest_held(&self, raw0: Point) -> Point {
        self.coarse.first().or_else(|| self.fine.first()).unwrap_or(raw0)
    }

    /// The current figures; `None` before the first sample.
    pub fn stats(&self) -> Option<FanStats> {
        // Unpacked once, newest first, on the stack.
        let mut buf = [Sample { at_ms: 0, fans: 0, followers: None }; RAW_CAP];
        let mut n = 0;
        for (slot, s) in buf.iter_mut().zip(self.raw.iter()) {
            *slot = s;
            n += 1;
        }
        let raw = &buf[..n];
        let cur = *raw.first()?;
        let delta_24h = self.delta(cur.point(), raw, DAY_MS);
        let growth_24h_pct =
            (delta_24h.baseline_fans > 0).then(|| delta_24h.value as f64 / delta_24h.baseline_fans as f64 * 100.0);
        Some(FanStats {
            fans: cur.fans,
            followers: cur.followers,
            observed_at_ms: cur.at_ms,
            delta_1h: self.delta(cur.point(), raw, HOUR_MS),
            delta_24h,
            delta_7d: self.delta(cur.point(), raw, 7 * DAY_MS),
            growth_24h_pct,
        })
    }

    /// The chart, oldest first: the last sample of every hour for the last 30 days up to
    /// `hour_start(N) − 7 d`, then of every 10-minute bucket. At most
    /// [`MAX_COARSE_POINTS`] + 1,014 points.
    pub fn series(&self) -> Vec<SeriesPoint> {
        let Some(newest) = self.raw.newest().map(|r| r.at_ms) else { return Vec::new() };
        let w = Window::of(newest);
        let mut points = Vec::new();
        self.coarse.points(&mut points);
        self.fine.points(&mut points);
        let from = points.len();
        points.extend(self.raw.iter().map(|r| r.point()));
        points[from..].reverse();
        // In time order, so the points of one chart bucket are adjacent: the last one stands.
        let mut out: Vec<SeriesPoint> = Vec::with_capacity(points.len());
        for p in points {
            let sp = SeriesPoint::of(p, w.width(p.at_ms));
            match out.last_mut() {
                Some(last) if (last.start_ms, last.width_ms) == (sp.start_ms, sp.width_ms) => *last = sp,
                _ => out.push(sp),
            }
        }
        out
    }

    /// The newest [`TABLE_ROWS`] samples, newest first.
    pub fn table(&self) -> Vec<Sample> {
        self.raw.iter().take(TABLE_ROWS).collect()
    }

    /// Heap bytes held (allocated capacity), at most [`MAX_HEAP_BYTES`].
    pub fn heap_bytes(&self) -> usize {
        self.raw.heap_bytes() + self.fine.heap_bytes() + self.coarse.heap_bytes()
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
                    // N − 7 d is a sample, in a 10-minute bucket of its own: exact.
                    assert_eq!(deltas, ((30, false), (720, false), (5040, false)));
                    assert_eq!(st.delta_7d.baseline_at_ms, T0 + 144 * FINE_MS);
                    assert_eq!(st.growth_24h_pct, Some(720.0 / 6040.0 * 100.0));
                }
                _ => {}
            }
        }
        let series = page.series();
        // The first day's 24 hourly points, then 7 days of 10-minute points plus the newest bucket.
        assert_eq!(series.len(), 24 + 1009);
        assert!(series.windows(2).all(|w| w[0].start_ms + w[0].width_ms <= w[1].start_ms));
        let point = |start_ms, width_ms, at_ms, fans| SeriesPoint { start_ms, width_ms, at_ms, fans };
        assert_eq!(series[0], point(T0 - 3 * MIN - 7_000, HOUR_MS, T0 + 5 * FINE_MS, 1025));
        let newest = T0 + 1152 * FINE_MS;
        assert_eq!(series[1032], point(newest - 3 * MIN - 7_000, FINE_MS, newest, 6760));
        assert_eq!(series[23], point(T0 - 3 * MIN - 7_000 + 23 * HOUR_MS, HOUR_MS, T0 + 143 * FINE_MS, 1715));
        assert_eq!(series[24], point(T0 - 3 * MIN - 7_000 + DAY_MS, FINE_MS, T0 + 144 * FINE_MS, 1720));
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
        for k in 0..(days * DAY_MS + every_ms - 1) / every_ms {
            page.observe(s(T0 + k * every_ms, 1_000_000 + k as u64));
        }
        page
    }

    #[test]
    fn memory_stays_bounded() {
        assert_eq!((MAX_FINE_POINTS, MAX_COARSE_POINTS), (1158, 553));
        let month = page_at_cadence(30, FINE_MS);
        let year = page_at_cadence(365, MIN);
        // Printed for the README (cargo test ... -- --nocapture).
        eprintln!(
            "heap bytes: 30 d at 10 min {}, 365 d at 1 min {}; bound {MAX_HEAP_BYTES}",
            month.heap_bytes(),
            year.heap_bytes()
        );
        // Regular times and +1 fan a sample: a few bits a point.
        assert!(month.heap_bytes() < 1_800, "{} bytes", month.heap_bytes());
        for page in [&month, &year] {
            assert!(page.heap_bytes() <= MAX_HEAP_BYTES, "{} bytes", page.heap_bytes());
            let newest = page.stats().expect("samples were observed").observed_at_ms;
            let series = page.series();
            assert!(series.len() <= MAX_COARSE_POINTS + 1014 && series[0].at_ms >= newest - RETENTION_MS);
            // 10-minute points from hour_start(N) − 7 d on, hourly points before, back to N − 30 d.
            let fine = series.iter().filter(|p| p.width_ms == FINE_MS).count();
            assert_eq!(fine as i64, (newest - floor(newest, HOUR_MS) + FINE_SPAN_MS) / FINE_MS + 1);
            assert!(series.len() - fine >= 551, "{} hourly points", series.len() - fine);
        }
        // 1-minute samples: the raw samples reach back to N − 1 h, so delta_1h is exact.
        let st = year.stats().expect("samples were observed");
        assert_eq!((vp(&st.delta_1h), st.delta_1h.baseline_at_ms), ((60, false), st.observed_at_ms - HOUR_MS));
        // A young page holds what it has, no ring: a few raw samples and nothing else.
        let young = page_at_cadence(1, 8 * HOUR_MS);
        assert!(young.heap_bytes() <= 24, "{} bytes", young.heap_bytes());
        assert_eq!(young.table().len(), 3);
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
        // Every T lies in the fine tier's 10-minute buckets.
        let horizons =
            [(HOUR_MS, FINE_MS, st.delta_1h), (DAY_MS, FINE_MS, st.delta_24h), (7 * DAY_MS, FINE_MS, st.delta_7d)];
        for (horizon, width, d) in horizons {
            let t = st.observed_at_ms - horizon;
            let expected_at = match all.range(..=t).next_back() {
                None => {
                    assert!(d.partial);
                    first
                }
                Some((&exact, _)) if exact == d.baseline_at_ms => exact,
                Some((&exact, _)) => {
                    // Allowed only when T's bucket hides the exact baseline behind a later sample.
                    let bucket = floor(t, width);
                    assert!(exact >= bucket && all.range(t + 1..bucket + width).next().is_some(), "{d:?} at {t}");
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
    fn hourly_cadence_keeps_delta_7d_exact() {
        let samples: Vec<Sample> = (0..10 * 24).map(|k| s(T0 + k * HOUR_MS, 7 * k as u64)).collect();
        let mut page = RollingFans::new();
        for x in &samples {
            page.observe(*x);
        }
        let st = page.stats().expect("samples were observed");
        assert_eq!(st.delta_7d.baseline_at_ms, st.observed_at_ms - 7 * DAY_MS);
        assert_eq!(vp(&st.delta_7d), (7 * 168, false));
        check_deltas(&samples, &st);
    }

    #[test]
    fn counts_near_u64_max_are_exact() {
        let big = u64::MAX - 10_000;
        let samples: Vec<Sample> = (0..9 * 24 * 6).map(|k| s(T0 + k * FINE_MS, big + k as u64)).collect();
        let mut page = RollingFans::new();
        for x in &samples {
            page.observe(*x);
        }
        let st = page.stats().expect("samples were observed");
        check_deltas(&samples, &st);
        assert_eq!((st.fans, vp(&st.delta_24h), vp(&st.delta_7d)), (big + 1295, (144, false), (1008, false)));
        assert!(page.series().iter().all(|p| p.fans == big + ((p.at_ms - T0) / FINE_MS) as u64));
        page.observe(s(T0 + 40 * DAY_MS, 1));
        assert_eq!(page.series().len(), 1);
    }

    /// `delta` before its shortcuts: every candidate baseline, then the oldest point held.
    fn delta_by_full_walk(page: &RollingFans, cur: Point, horizon_ms: i64) -> Delta {
        let t = cur.at_ms - horizon_ms;
        let first = page.first_held(cur.at_ms);
        let found = [
            page.raw.iter().find(|r| r.at_ms <= t).map(|r| r.point()),
            page.fine.latest(t),
            page.coarse.latest(t),
            first.filter(|f| f.at_ms <= t),
        ]
        .into_iter()
        .flatten()
        .max();
        let (base, partial) = match found {
            Some(b) => (b, false),
            None => {
                let raw0 = page.raw.iter().last().expect("held").point();
                let held = [first, Some(page.oldest_held(raw0))];
                (held.into_iter().flatten().min_by_key(|p| p.at_ms).expect("held"), true)
            }
        };
        let value = (i128::from(cur.fans) - i128::from(base.fans)).clamp(i64::MIN.into(), i64::MAX.into()) as i64;
        Delta { value, partial, baseline_at_ms: base.at_ms, baseline_fans: base.fans }
    }

    #[test]
    fn shortcuts_change_no_delta() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(21);
        for case in 0..300 {
            let span = [90 * MIN, 3 * DAY_MS, 9 * DAY_MS, 45 * DAY_MS][case % 4];
            let grid = [1, MIN, FINE_MS, HOUR_MS][rng.gen_range(0..4)];
            // Half the cases at a regular cadence, so that T often falls exactly on a sample.
            let regular = case % 2 == 1;
            let mut page = RollingFans::new();
            for k in 0..rng.gen_range(1..400) {
                let fans = if case % 5 == 4 { u64::from(u32::MAX) - 50 } else { 0 } + rng.gen_range(0..100);
                let at = if regular { T0 + k * grid.max(FINE_MS) } else { T0 + rng.gen_range(0..span) / grid * grid };
                page.observe(s(at, fans));
                let raw: Vec<Sample> = page.raw.iter().collect();
                let cur = raw[0].point();
                for horizon in [HOUR_MS, DAY_MS, 7 * DAY_MS] {
                    assert_eq!(page.delta(cur, &raw, horizon), delta_by_full_walk(&page, cur, horizon), "case {case}");
                }
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
                    // Some pages straddle 2^32 and jump around (wide fan deltas).
                    fans: if case % 3 == 2 {
                        u64::from(u32::MAX) - 500 + rng.gen_range(0..1000) * rng.gen_range(1..1_000_000)
                    } else {
                        rng.gen_range(0..1000)
                    },
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
            // Every chart point is a real sample with its winning count, the last of its bucket.
            let all = dedup(&samples);
            for p in sorted.series() {
                assert_eq!(all.get(&p.at_ms), Some(&p.fans), "case {case}");
                assert_eq!(all.range(p.at_ms + 1..p.start_ms + p.width_ms).next(), None, "case {case}");
            }
            assert!(sorted.heap_bytes() <= MAX_HEAP_BYTES);
        }
    }

    /// The baseline time and partial flag the module documentation promises for horizon `h`,
    /// computed by brute force over every sample (`all`: time to winning fans), for cadences of
    /// one sample a minute or slower: exact, unless T's 10-minute bucket holds a later sample and
    /// the raw samples do not reach back to T (never for delta_1h at such cadences); then the
    /// latest sample before that bucket, or the first sample if it lies in the bucket.
    fn oracle_baseline(all: &BTreeMap<i64, u64>, n: i64, h: i64) -> (i64, bool) {
        let t = n - h;
        let held = all.range(n - RETENTION_MS..);
        let Some((&exact, _)) = all.range(..=t).next_back() else {
            let (&oldest, _) = held.into_iter().next().expect("the newest sample is held");
            return (oldest, true);
        };
        let bucket = floor(t, FINE_MS);
        let hidden = h > HOUR_MS && exact >= bucket && all.range(t + 1..bucket + FINE_MS).next().is_some();
        if !hidden {
            return (exact, false);
        }
        let (&first, _) = all.first_key_value().expect("not empty");
        if first >= bucket {
            (first, false)
        } else {
            (*all.range(..bucket).next_back().expect("the first sample is before the bucket").0, false)
        }
    }

    /// The chart by brute force: the last sample of every 10-minute bucket from
    /// `hour_start(N) − 7 d` on and of every hour before, back to N − 30 d.
    fn oracle_chart(all: &BTreeMap<i64, u64>, n: i64) -> Vec<SeriesPoint> {
        let fine_from = floor(n, HOUR_MS) - 7 * DAY_MS;
        let mut last: BTreeMap<(i64, i64), (i64, u64)> = BTreeMap::new();
        for (&at, &fans) in all.range(n - RETENTION_MS..) {
            let width = if at >= fine_from { FINE_MS } else { HOUR_MS };
            let e = last.entry((floor(at, width), width)).or_insert((at, fans));
            *e = (*e).max((at, fans));
        }
        last.into_iter()
            .map(|((start_ms, width_ms), (at_ms, fans))| SeriesPoint { start_ms, width_ms, at_ms, fans })
            .collect()
    }

    #[test]
    fn deltas_and_chart_match_a_brute_force_oracle() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(17);
        for case in 0..48 {
            // Cadences from one sample a minute to one every 10 minutes, any phase, ms jitter.
            let every = [MIN, 2 * MIN, 5 * MIN, 7 * MIN + 13_000, FINE_MS, FINE_MS][case % 6];
            let span = [2 * HOUR_MS, 2 * DAY_MS, 8 * DAY_MS, 33 * DAY_MS][(case / 6) % 4];
            let span = if every < 5 * MIN { span.min(8 * DAY_MS + 3 * HOUR_MS) } else { span };
            let (phase, jitter) = (rng.gen_range(0..FINE_MS), [0, 100, 2_000][case % 3]);
            let mut fans = rng.gen_range(0..5_000_000u64);
            let samples: Vec<Sample> = (0..span / every)
                .map(|k| {
                    // Mostly growth, sometimes a loss.
                    fans = if rng.gen_ratio(1, 50) {
                        fans.saturating_sub(rng.gen_range(0..500))
                    } else {
                        fans + rng.gen_range(0..21)
                    };
                    let at_ms = T0 + phase + k * every + if jitter > 0 { rng.gen_range(0..jitter) } else { 0 };
                    Sample { at_ms, fans, followers: rng.gen_bool(0.9).then_some(fans / 3) }
                })
                .collect();
            let all = dedup(&samples);
            let mut page = RollingFans::new();
            for (i, x) in samples.iter().enumerate() {
                page.observe(*x);
                // Checked along the way too (not at every sample: the oracle is quadratic).
                if i % 997 == 0 || i + 1 == samples.len() {
                    let upto = dedup(&samples[..=i]);
                    let st = page.stats().expect("observed");
                    for (h, d) in [(HOUR_MS, st.delta_1h), (DAY_MS, st.delta_24h), (7 * DAY_MS, st.delta_7d)] {
                        let (at, partial) = oracle_baseline(&upto, x.at_ms, h);
                        assert_eq!((d.baseline_at_ms, d.partial), (at, partial), "case {case} sample {i} horizon {h}");
                        assert_eq!(d.baseline_fans, upto[&at], "case {case}");
                        assert_eq!(d.value, st.fans as i64 - upto[&at] as i64, "case {case}");
                        // At one sample per 10-minute bucket, every delta is exact.
                        if every >= FINE_MS && jitter == 0 && !partial {
                            assert_eq!(Some(at), upto.range(..=x.at_ms - h).next_back().map(|e| *e.0), "case {case}");
                        }
                    }
                }
            }
            let n = samples.last().expect("samples").at_ms;
            assert_eq!(page.series(), oracle_chart(&all, n), "case {case}: the chart");
            let table: Vec<i64> = page.table().iter().map(|r| r.at_ms).collect();
            assert_eq!(table, all.keys().rev().take(TABLE_ROWS).copied().collect::<Vec<_>>(), "case {case}");
            let mut buf = Vec::new();
            page.encode(&mut buf);
            assert_eq!(RollingFans::decode(&buf).as_ref(), Ok(&page), "case {case}: round trip");
            let mut shuffled = samples.clone();
            shuffled.shuffle(&mut rng);
            let mut other = RollingFans::new();
            for x in shuffled {
                other.observe(x);
            }
            assert_eq!(other, page, "case {case}: order");
        }
    }
}
