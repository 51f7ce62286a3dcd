//! Rolling fan counts of one page: the current count, deltas over 1 h, 24 h and 7 d, a downsampled
//! chart and the latest raw samples, in memory that is bounded per page ([`MAX_HEAP_BYTES`]), so
//! one instance can hold a million pages.
//!
//! # What is stored
//!
//! Times are relative to the newest sample's `at_ms` (N); nothing depends on the wall clock.
//!
//! - **Raw samples** (32 bytes each): the newest [`TABLE_ROWS`], plus every sample after N − 1 h,
//!   plus the latest one at or before N − 1 h; at most [`RAW_CAP`] (at one sample per 10 minutes,
//!   [`TABLE_ROWS`]).
//! - **Fine ring** ([`FINE_SLOTS`] slots): the last sample (time, fans) of every 10-minute bucket
//!   from `hour_start(N) − 48 h` on: the chart's 10-minute points and the baselines of delta_1h
//!   and delta_24h.
//! - **Coarse ring** ([`COARSE_SLOTS`] slots): the last sample of every older hour whose last
//!   sample is within the 30-day retention: the chart's hourly points and the baseline of
//!   delta_7d. Fine buckets move here as N advances.
//! - **The first sample ever seen** (time, fans), inline: the baseline of partial deltas of a
//!   young page. It is ignored once it is older than the retention.
//!
//! A ring slot is 7 bytes and holds no timestamp: the ring is indexed by bucket number modulo its
//! length, so the bucket is implicit, and the slot keeps the sample's offset in its bucket (3
//! bytes, milliseconds, so times stay exact) and its fan count (4 bytes). A count of 2^32 − 1 or
//! more (beyond any real page) is stored as that escape value and kept in full in a side list
//! keyed by time, 16 bytes each; for every other page the list is empty and allocates nothing. A
//! ring is allocated when it receives its first point and freed when its last point leaves it.
//! Why not 10-minute buckets for 7 days, which would keep delta_7d exact at every cadence: they
//! would take 1,008 buckets, more than the whole chart, and pages must fit in 8 KB each.
//!
//! Anything older than N − 30 d is dropped. Followers are kept for raw samples only.
//!
//! # Order independence
//!
//! Samples with the same `at_ms` are duplicates: the one with more fans wins, then the one with
//! more followers (`None` < `Some`), so the outcome is the same whatever order they came in. Every
//! part of the state is a function of the set of samples seen, not of their order: a bucket keeps
//! the maximum of (time, fans), the raw samples are a suffix chosen by rules whose exclusions are
//! final as N grows, a sample too old to be stored would have been evicted anyway, the side list
//! holds exactly the escaped counts of the rings, and a ring is allocated exactly when it holds a
//! point.
//!
//! # Exactness of the deltas
//!
//! A delta over horizon H compares the newest sample with the baseline, the latest sample at or
//! before T = N − H. The baseline is always a real sample, and it is exactly that one unless T
//! falls inside a bucket of the ring that covers T (a 10-minute bucket for delta_1h and
//! delta_24h, an hour for delta_7d) that also holds a sample later than T, and the raw samples do
//! not reach back to T. Then the baseline is the latest sample before that bucket starts (or the
//! first sample, if it lies in the bucket). So:
//!
//! - delta_1h and delta_24h are exact for pages sampled at most once per 10-minute bucket,
//!   whatever the phase; delta_1h also for any cadence down to about one sample a minute;
//!   otherwise the baseline is at most one 10-minute bucket too early.
//! - delta_7d is exact for pages sampled at most once per hour. Otherwise (a page sampled every
//!   10 minutes, say) the baseline may be the last sample before T's hour starts instead: at most
//!   one hour bucket too early, and never later than the exact one.
//!
//! A delta is `partial` when no sample at or before T exists; its baseline is then the oldest
//! sample held (the first sample, unless that has left the retention).
//!
//! # Durable state
//!
//! [`RollingFans::encode`] writes all of the above, losslessly and compactly (times as deltas
//! from the newest sample, counts as zig-zag deltas: about 2 bytes per ring point at a regular
//! cadence), and [`RollingFans::decode`] reads it back into an equal state, so a restored page
//! continues exactly as the original would have. The format is described in `encoding.rs`.

mod encoding;

use std::mem::size_of;

use serde::{Deserialize, Serialize};

pub use self::encoding::{DecodeError, FORMAT_VERSION};

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 60 * MINUTE_MS;
const DAY_MS: i64 = 24 * HOUR_MS;
/// Data older than this, relative to the newest sample, is dropped: the chart's 30 days.
pub const RETENTION_MS: i64 = 30 * DAY_MS;
/// Width of a fine bucket: the chart's resolution for the last 48 h and the precision of
/// delta_1h and delta_24h.
pub const FINE_MS: i64 = 10 * MINUTE_MS;
/// Width of a coarse bucket: the chart's resolution beyond 48 h and the precision of delta_7d.
pub const COARSE_MS: i64 = HOUR_MS;
/// The chart shows, and the fine ring holds, 10-minute buckets for the hours from
/// `hour_start(N) − 48 h` on; this covers the baseline of delta_24h.
const FINE_SPAN_MS: i64 = 48 * HOUR_MS;
/// Rows of [`RollingFans::table`].
pub const TABLE_ROWS: usize = 24;
/// Most raw samples kept: enough to keep delta_1h exact at one sample a minute (64 cover 63 min).
pub const RAW_CAP: usize = 64;
/// Slots of the fine ring: 48 full hours before the newest hour, plus the newest hour, 6 each.
pub const FINE_SLOTS: usize = ((FINE_SPAN_MS + HOUR_MS) / FINE_MS) as usize;
/// Slots of the coarse ring: the hours from `hour_start(N − 30 d)` to `hour_start(N) − 49 h`.
pub const COARSE_SLOTS: usize = ((RETENTION_MS - FINE_SPAN_MS) / HOUR_MS) as usize;
/// Upper bound of [`RollingFans::heap_bytes`] (8,810 bytes on 64-bit targets) for pages whose fan
/// counts stay below 2^32 − 1, which is every real page; a page costs that plus
/// `size_of::<RollingFans>()`. Each point of a ring with a larger count adds 16 bytes, up to
/// [`MAX_HEAP_BYTES_WIDE`].
pub const MAX_HEAP_BYTES: usize = RAW_CAP * size_of::<Sample>() + (FINE_SLOTS + COARSE_SLOTS) * size_of::<Slot>();
/// Upper bound of [`RollingFans::heap_bytes`] whatever the fan counts (24,282 bytes on 64-bit
/// targets).
pub const MAX_HEAP_BYTES_WIDE: usize = MAX_HEAP_BYTES + (FINE_SLOTS + COARSE_SLOTS + 1) * size_of::<(i64, u64)>();

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
    /// Growth over the last 7 days; its baseline may be up to one hour early (module docs).
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

/// Fan counts from this one on are escaped in a ring slot and kept in [`RollingFans::wide`].
const ESCAPE: u32 = u32::MAX;

/// One ring slot, 7 bytes with alignment 1 (no padding): a point without its bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Slot {
    /// Offset of the sample in its bucket plus one, little-endian; 0 for an empty slot. An hour
    /// (3,600,000 ms) fits in 24 bits.
    offset: [u8; 3],
    /// The fan count, or [`ESCAPE`].
    fans: [u8; 4],
}

const _: () = assert!(size_of::<Slot>() == 7 && COARSE_MS < 1 << 24);

impl Slot {
    fn new(offset: i64, fans: u64) -> Self {
        let o = u32::try_from(offset + 1).expect("an offset within a bucket fits in 24 bits").to_le_bytes();
        // u32::MAX itself is the escape, so it goes to the side list too.
        let f = u32::try_from(fans).unwrap_or(ESCAPE);
        Self { offset: [o[0], o[1], o[2]], fans: f.to_le_bytes() }
    }

    fn offset(&self) -> Option<i64> {
        let [a, b, c] = self.offset;
        let v = u32::from_le_bytes([a, b, c, 0]);
        (v != 0).then(|| i64::from(v) - 1)
    }
}

/// A ring of `N` buckets of `W` milliseconds, indexed by bucket number modulo `N`. The caller
/// keeps the live buckets within a window of at most `N` consecutive ones and clears a slot when
/// its bucket leaves the window, so slots never collide.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Ring<const W: i64, const N: usize> {
    /// Empty (unallocated) exactly when `len` is 0, so that equal contents are equal states.
    slots: Box<[Slot]>,
    /// Occupied slots.
    len: u16,
}

/// The escaped fan count of the point at `at_ms` in `wide`.
fn wide_fans(wide: &[(i64, u64)], at_ms: i64) -> u64 {
    let i = wide.binary_search_by_key(&at_ms, |e| e.0).expect("every escaped count is in the side list");
    wide[i].1
}

impl<const W: i64, const N: usize> Ring<W, N> {
    fn bucket(at_ms: i64) -> i64 {
        at_ms.div_euclid(W)
    }

    fn index(bucket: i64) -> usize {
        bucket.rem_euclid(N as i64) as usize
    }

    /// The point of `bucket`, which must be in the window.
    fn get(&self, bucket: i64, wide: &[(i64, u64)]) -> Option<Point> {
        Self::point(self.slots.get(Self::index(bucket))?, bucket, wide)
    }

    /// The point `slot` holds for `bucket`, if any.
    fn point(slot: &Slot, bucket: i64, wide: &[(i64, u64)]) -> Option<Point> {
        let at_ms = bucket * W + slot.offset()?;
        let fans = match u32::from_le_bytes(slot.fans) {
            ESCAPE => wide_fans(wide, at_ms),
            f => u64::from(f),
        };
        Some(Point { at_ms, fans })
    }

    /// The points of the buckets `[lo, hi]` (at most `N` of them) with their bucket numbers,
    /// oldest first, or newest first if `rev`. Steps through the slot indices, so the modulo is
    /// taken once rather than per bucket: queries and restores walk whole windows of young pages.
    fn walk<'a>(
        &'a self,
        lo: i64,
        hi: i64,
        rev: bool,
        wide: &'a [(i64, u64)],
    ) -> impl Iterator<Item = (i64, Point)> + 'a {
        let n = if self.len == 0 || hi < lo { 0 } else { (hi - lo + 1) as usize };
        debug_assert!(n <= N, "a window of at most N buckets");
        let (from, start) = match (n, rev) {
            (0, _) => (0, 0),
            (_, false) => (lo, Self::index(lo)),
            (_, true) => (hi, Self::index(hi)),
        };
        (0..n).filter_map(move |k| {
            let (i, bucket) = if rev {
                (if k <= start { start - k } else { start + N - k }, from - k as i64)
            } else {
                (if start + k < N { start + k } else { start + k - N }, from + k as i64)
            };
            Self::point(&self.slots[i], bucket, wide).map(|p| (bucket, p))
        })
    }

    /// True when the ring holds a point observed at `at_ms`, given its window `[lo, hi]`.
    fn holds(&self, at_ms: i64, lo: i64, hi: i64) -> bool {
        let b = Self::bucket(at_ms);
        (lo..=hi).contains(&b)
            && self.slots.get(Self::index(b)).and_then(Slot::offset).is_some_and(|o| b * W + o == at_ms)
    }

    /// Merges `p` into its bucket (in the window). Returns true when the ring changed; the caller
    /// then records an escaped count in the side list.
    fn merge(&mut self, p: Point, wide: &[(i64, u64)]) -> bool {
        let b = Self::bucket(p.at_ms);
        match self.get(b, wide) {
            Some(q) if p <= q => return false,
            Some(_) => {}
            None => {
                if self.slots.is_empty() {
                    self.slots = vec![Slot::default(); N].into_boxed_slice();
                }
                self.len += 1;
            }
        }
        self.slots[Self::index(b)] = Slot::new(p.at_ms - b * W, p.fans);
        true
    }

    /// Empties the slot of `bucket` and returns its point.
    fn take(&mut self, bucket: i64, wide: &[(i64, u64)]) -> Option<Point> {
        let p = self.get(bucket, wide)?;
        self.slots[Self::index(bucket)] = Slot::default();
        self.len -= 1;
        if self.len == 0 {
            self.slots = Box::default();
        }
        Some(p)
    }

    /// The latest point at or before `t` in the window `[lo, hi]`.
    fn latest(&self, t: i64, lo: i64, hi: i64, wide: &[(i64, u64)]) -> Option<Point> {
        if self.len == 0 {
            return None;
        }
        let top = Self::bucket(t).min(hi);
        // Only the bucket of `t` can hold a point after `t`; every earlier one is before it.
        self.walk(lo, top, true, wide).map(|(_, p)| p).find(|p| p.at_ms <= t)
    }

    /// The points of the window `[lo, hi]`, oldest first.
    fn points<'a>(&'a self, lo: i64, hi: i64, wide: &'a [(i64, u64)]) -> impl Iterator<Item = Point> + 'a {
        self.walk(lo, hi, false, wide).map(|(_, p)| p)
    }

    fn heap_bytes(&self) -> usize {
        self.slots.len() * size_of::<Slot>()
    }
}

/// The rolling state of one page. See the module documentation for what is kept and how exact it
/// is; equal for equal sets of observed samples, whatever their order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RollingFans {
    /// Oldest first, distinct `at_ms`, a suffix of all samples seen; its last is the newest (N).
    raw: Vec<Sample>,
    /// One point per 10-minute bucket of [`Window::fine`].
    fine: Ring<FINE_MS, FINE_SLOTS>,
    /// One point per hour of [`Window::coarse`].
    coarse: Ring<COARSE_MS, COARSE_SLOTS>,
    /// (time, fans) of every ring point whose count is escaped, sorted by time.
    wide: Vec<(i64, u64)>,
    first: Option<Point>,
}

/// The buckets each ring may hold, as of a newest time N (inclusive bucket numbers).
#[derive(Debug, Clone, Copy)]
struct Window {
    fine: (i64, i64),
    coarse: (i64, i64),
    /// N − 30 d: older points are dropped.
    cutoff: i64,
}

impl Window {
    fn of(newest: i64) -> Self {
        let hour = floor(newest, HOUR_MS);
        let fine_lo = (hour - FINE_SPAN_MS) / FINE_MS;
        let coarse_lo = (hour - RETENTION_MS) / HOUR_MS;
        Self {
            fine: (fine_lo, newest.div_euclid(FINE_MS)),
            coarse: (coarse_lo, coarse_lo + COARSE_SLOTS as i64 - 1),
            cutoff: newest - RETENTION_MS,
        }
    }
}

/// Makes room for one more element with exact growth: a page's raw samples settle at
/// [`TABLE_ROWS`] (+1 while inserting), and doubling would leave a third of that unused.
fn reserve_one<T>(v: &mut Vec<T>, cap: usize) {
    debug_assert!(v.len() < cap, "bound exceeded");
    if v.len() == v.capacity() {
        v.reserve_exact(1);
    }
}

/// Gives memory back after evictions left a vector mostly empty (halving, so no thrashing).
fn shrink<T>(v: &mut Vec<T>) {
    if v.capacity() > 16 && v.len() * 4 < v.capacity() {
        v.shrink_to(v.len() * 2);
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
        let old = self.raw.last().map(|b| b.at_ms);
        let newest = old.map_or(s.at_ms, |b| b.max(s.at_ms));
        if s.at_ms < newest - RETENTION_MS {
            return changed;
        }
        if let Some(old) = old.filter(|&o| o < newest) {
            self.advance(Window::of(old), Window::of(newest));
        }
        changed |= self.insert_raw(s, newest);
        let w = Window::of(newest);
        let merged = if s.at_ms.div_euclid(FINE_MS) >= w.fine.0 {
            self.fine.merge(p, &self.wide)
        } else {
            self.coarse.merge(p, &self.wide)
        };
        if merged && p.fans >= u64::from(ESCAPE) {
            match self.wide.binary_search_by_key(&p.at_ms, |e| e.0) {
                // The same time in another bucket state: the duplicate rule keeps the most fans.
                Ok(i) => self.wide[i].1 = self.wide[i].1.max(p.fans),
                Err(i) => {
                    reserve_one(&mut self.wide, FINE_SLOTS + COARSE_SLOTS + 1);
                    self.wide.insert(i, (p.at_ms, p.fans));
                }
            }
        }
        changed |= merged;
        self.collect_wide(w);
        changed
    }

    /// Moves the rings from window `old` to `new`: evicts what left the retention, then moves
    /// fine buckets that left the fine window into their hours (in that order, so that a moved
    /// point always lands in the coarse window).
    fn advance(&mut self, old: Window, new: Window) {
        let (c0, c1) = (old.coarse.0, new.coarse.0);
        for h in c0..c1.min(c0 + COARSE_SLOTS as i64) {
            self.coarse.take(h, &self.wide);
        }
        // The oldest hour straddles the cutoff: its last sample decides.
        if self.coarse.get(c1, &self.wide).is_some_and(|p| p.at_ms < new.cutoff) {
            self.coarse.take(c1, &self.wide);
        }
        let (f0, f1) = (old.fine.0, new.fine.0);
        for b in f0..f1.min(f0 + FINE_SLOTS as i64) {
            if let Some(p) = self.fine.take(b, &self.wide).filter(|p| p.at_ms >= new.cutoff) {
                self.coarse.merge(p, &self.wide);
            }
        }
        self.collect_wide(new);
    }

    /// Drops the side-list entries of points that left the rings.
    fn collect_wide(&mut self, w: Window) {
        if self.wide.is_empty() {
            return;
        }
        let (fine, coarse) = (&self.fine, &self.coarse);
        self.wide.retain(|&(at, _)| fine.holds(at, w.fine.0, w.fine.1) || coarse.holds(at, w.coarse.0, w.coarse.1));
        shrink(&mut self.wide);
        if self.wide.is_empty() {
            self.wide = Vec::new();
        }
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
            self.raw.remove(0);
            i -= 1;
        }
        reserve_one(&mut self.raw, RAW_CAP);
        self.raw.insert(i, s);
        let (cutoff, hour_ago) = (newest - RETENTION_MS, newest - HOUR_MS);
        // Past the table rows, the front is only needed while it is the latest sample at or
        // before N − 1 h (the baseline of delta_1h).
        let keep_from = (0..self.raw.len())
            .find(|&k| {
                let redundant =
                    self.raw.len() - k > TABLE_ROWS && self.raw.get(k + 1).is_some_and(|r| r.at_ms <= hour_ago);
                self.raw[k].at_ms >= cutoff && !redundant
            })
            .unwrap_or(self.raw.len());
        self.raw.drain(..keep_from);
        shrink(&mut self.raw);
        self.raw.binary_search_by_key(&s.at_ms, |r| r.at_ms).is_ok()
    }

    /// The first sample, while it is within the retention.
    fn first_held(&self, newest: i64) -> Option<Point> {
        self.first.filter(|f| f.at_ms >= newest - RETENTION_MS)
    }

    /// The delta of `cur` (the newest sample) over `horizon_ms`.
    fn delta(&self, cur: Point, horizon_ms: i64) -> Delta {
        let t = cur.at_ms - horizon_ms;
        let w = Window::of(cur.at_ms);
        let first = self.first_held(cur.at_ms);
        let raw = self.raw[..self.raw.partition_point(|r| r.at_ms <= t)].last().map(Sample::point);
        // Two shortcuts spare young and regular pages the walks over the rings' windows; the
        // result is the same (`tests::shortcuts_change_no_delta`). The raw samples are a suffix
        // of all samples seen, so when one is at or before T, the latest of them is the latest
        // of all; and no sample is older than the first.
        let found = if raw.is_some() || first.is_some_and(|f| f.at_ms > t) {
            raw
        } else {
            [
                self.fine.latest(t, w.fine.0, w.fine.1, &self.wide),
                self.coarse.latest(t, w.coarse.0, w.coarse.1, &self.wide),
                first.filter(|f| f.at_ms <= t),
            ]
            .into_iter()
            .flatten()
            .max()
        };
        let (base, partial) = match found {
            Some(b) => (b, false),
            // The first sample, while held, is the oldest.
            None => (first.unwrap_or_else(|| self.oldest_held(w)), true),
        };
        let value = (i128::from(cur.fans) - i128::from(base.fans)).clamp(i64::MIN.into(), i64::MAX.into()) as i64;
        Delta { value, partial, baseline_at_ms: base.at_ms, baseline_fans: base.fans }
    }

    /// The oldest point held (the first sample aside); the page must hold one.
    fn oldest_held(&self, w: Window) -> Point {
        let held = [
            self.raw.first().map(Sample::point),
            self.fine.points(w.fine.0, w.fine.1, &self.wide).next(),
            self.coarse.points(w.coarse.0, w.coarse.1, &self.wide).next(),
        ];
        held.into_iter()
            .flatten()
            .min_by_key(|p| p.at_ms)
            .expect("a page with a newest sample holds at least that sample")
    }

    /// The current figures; `None` before the first sample.
    pub fn stats(&self) -> Option<FanStats> {
        let cur = *self.raw.last()?;
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
        let Some(newest) = self.raw.last().map(|r| r.at_ms) else { return Vec::new() };
        let w = Window::of(newest);
        let mut out = Vec::with_capacity(usize::from(self.coarse.len) + usize::from(self.fine.len));
        out.extend(self.coarse.points(w.coarse.0, w.coarse.1, &self.wide).map(|p| SeriesPoint::of(p, COARSE_MS)));
        out.extend(self.fine.points(w.fine.0, w.fine.1, &self.wide).map(|p| SeriesPoint::of(p, FINE_MS)));
        out
    }

    /// The newest [`TABLE_ROWS`] samples, newest first.
    pub fn table(&self) -> Vec<Sample> {
        self.raw.iter().rev().take(TABLE_ROWS).copied().collect()
    }

    /// Heap bytes held (allocated capacity), at most [`MAX_HEAP_BYTES`] unless a fan count
    /// reaches 2^32 − 1, and at most [`MAX_HEAP_BYTES_WIDE`] always.
    pub fn heap_bytes(&self) -> usize {
        self.raw.capacity() * size_of::<Sample>()
            + self.fine.heap_bytes()
            + self.coarse.heap_bytes()
            + self.wide.capacity() * size_of::<(i64, u64)>()
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
                    // N − 7 d is the hour's first sample and the hour holds later ones: delta_7d
                    // falls back to the last sample of the hour before, one sample early.
                    assert_eq!(deltas, ((30, false), (720, false), (5045, false)));
                    assert_eq!(st.delta_7d.baseline_at_ms, T0 + 143 * FINE_MS);
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
        assert_eq!((FINE_SLOTS, COARSE_SLOTS, MAX_HEAP_BYTES, MAX_HEAP_BYTES_WIDE), (294, 672, 8_810, 24_282));
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
        // Each horizon with the bucket width of the ring that covers its T.
        let horizons =
            [(HOUR_MS, FINE_MS, st.delta_1h), (DAY_MS, FINE_MS, st.delta_24h), (7 * DAY_MS, COARSE_MS, st.delta_7d)];
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
    fn counts_beyond_u32_are_escaped_exactly() {
        let big = u64::from(ESCAPE);
        let samples: Vec<Sample> = (0..4 * 24 * 6).map(|k| s(T0 + k * FINE_MS, big - 300 + k as u64)).collect();
        let mut page = RollingFans::new();
        for x in &samples {
            page.observe(*x);
        }
        let st = page.stats().expect("samples were observed");
        check_deltas(&samples, &st);
        assert_eq!((st.fans, vp(&st.delta_24h)), (big - 300 + 575, (144, false)));
        // Counts from 2^32 − 1 on: the newest 276 samples, in 46 hours of fine buckets.
        assert_eq!(page.wide.len(), 276);
        assert!(page.series().iter().all(|p| p.fans == big - 300 + ((p.at_ms - T0) / FINE_MS) as u64));
        // Once they leave the retention, the side list is freed.
        page.observe(s(T0 + 40 * DAY_MS, 1));
        assert_eq!((page.wide.len(), page.wide.capacity()), (0, 0));
    }

    /// `delta` before its shortcuts: every candidate baseline, then the oldest point held.
    fn delta_by_full_walk(page: &RollingFans, cur: Point, horizon_ms: i64) -> Delta {
        let t = cur.at_ms - horizon_ms;
        let w = Window::of(cur.at_ms);
        let first = page.first_held(cur.at_ms);
        let found = [
            page.raw[..page.raw.partition_point(|r| r.at_ms <= t)].last().map(Sample::point),
            page.fine.latest(t, w.fine.0, w.fine.1, &page.wide),
            page.coarse.latest(t, w.coarse.0, w.coarse.1, &page.wide),
            first.filter(|f| f.at_ms <= t),
        ]
        .into_iter()
        .flatten()
        .max();
        let (base, partial) = match found {
            Some(b) => (b, false),
            None => {
                let held = [first, Some(page.oldest_held(w))];
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
                let fans = if case % 5 == 4 { u64::from(ESCAPE) - 50 } else { 0 } + rng.gen_range(0..100);
                let at = if regular { T0 + k * grid.max(FINE_MS) } else { T0 + rng.gen_range(0..span) / grid * grid };
                page.observe(s(at, fans));
                let cur = page.raw.last().expect("observed").point();
                for horizon in [HOUR_MS, DAY_MS, 7 * DAY_MS] {
                    assert_eq!(page.delta(cur, horizon), delta_by_full_walk(&page, cur, horizon), "case {case}");
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
                    // Some pages straddle the 2^32 − 1 escape of the ring slots.
                    fans: if case % 3 == 2 {
                        u64::from(ESCAPE) - 500 + rng.gen_range(0..1000)
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
            assert!(sorted.heap_bytes() <= MAX_HEAP_BYTES_WIDE);
            if case % 3 != 2 {
                assert!(sorted.heap_bytes() <= MAX_HEAP_BYTES && sorted.wide.is_empty());
            }
        }
    }
}
