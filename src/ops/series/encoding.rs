//! The changelog encoding of a [`RollingFans`]: everything it holds, losslessly, so that a restored
//! page answers every later observation exactly as the original would have.
//!
//! # Format (version 2)
//!
//! All integers are [`crate::ops::codec`] varints; "zz" marks a zig-zag signed one. Fan and
//! follower deltas are wrapping `u64` differences read as `i64`, so any counts round-trip. Times
//! are stored relative to the newest sample N; a regular cadence costs one byte per timestamp.
//!
//! ```text
//! u8  version (2)
//! raw samples as held in memory (`raw.rs`), starting with their count (0: an empty series,
//!     nothing follows)
//! fine tier, coarse tier: n  length, then the tier's bytes as held in memory (`block.rs`)
//! first sample: n  0 none, 1 the oldest raw sample, 2 explicit: then n N - at_ms, zz fans - N.fans
//! ```
//!
//! The raw samples and tiers are copied, not re-encoded, both ways: a restore copies them after
//! checking every sample and block. Version 1 (the raw samples as varint deltas with their
//! followers after them, a 48-hour ring of 10-minute points, a 30-day ring of hourly points, the
//! first sample as above) is still read: its
//! samples and points are observed into a new series, which gives the state those samples make.
//!
//! Decoding checks what the state's code relies on (times within bounds and windows, raw samples
//! strictly increasing and at most [`RAW_CAP`], blocks well-formed and in order, nothing left
//! over), so a corrupt value is an error, never a panic later. A value that passes these checks
//! but was not written by [`RollingFans::encode`] may still describe a state no sequence of
//! observations produces; Kafka's record checksums make that a matter of bugs, not of bit rot.

use super::raw::RawSamples;
use super::{
    floor, CoarseTier, FineTier, Point, RollingFans, Sample, Window, DAY_MS, FINE_MS, HOUR_MS, RAW_CAP, RETENTION_MS,
};
use crate::ops::codec::{put_i64, put_u64, Corrupt, Reader};

/// The format [`RollingFans::encode`] writes, its first byte.
pub const FORMAT_VERSION: u8 = 2;

/// Times beyond ±100,000 years (no RFC 3339 time is) are refused, so that the window arithmetic
/// on decoded times cannot overflow.
const MAX_ABS_AT_MS: i64 = 100_000 * 366 * DAY_MS;

/// Why a value does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Truncated, or a malformed varint.
    #[error(transparent)]
    Corrupt(#[from] Corrupt),
    /// Written in a format this version does not know.
    #[error("unknown state format version {0} (this version reads 1 and {FORMAT_VERSION})")]
    Version(u8),
    /// Well-formed varints that describe no valid state.
    #[error("invalid state value: {0}")]
    Invalid(&'static str),
}

type Result<T, E = DecodeError> = std::result::Result<T, E>;

fn unzz(z: u64) -> i64 {
    ((z >> 1) as i64) ^ -((z & 1) as i64)
}

/// `a - b` as the wrapping `u64` difference, read as `i64`: exact for any counts.
fn diff(a: u64, b: u64) -> i64 {
    a.wrapping_sub(b) as i64
}

fn undiff(base: u64, d: i64) -> u64 {
    base.wrapping_add(d as u64)
}

fn ensure(ok: bool, what: &'static str) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(DecodeError::Invalid(what))
    }
}

impl RollingFans {
    /// Appends the whole state to `buf` in the changelog format (module docs of
    /// `series::encoding`), version byte first.
    pub fn encode(&self, buf: &mut Vec<u8>) {
        buf.push(FORMAT_VERSION);
        let raw = self.raw.as_bytes();
        if raw.is_empty() {
            buf.push(0);
            return;
        }
        buf.extend_from_slice(raw);
        for tier in [self.fine.as_bytes(), self.coarse.as_bytes()] {
            put_u64(buf, tier.len() as u64);
            buf.extend_from_slice(tier);
        }
        let (newest, raw0) = (self.raw.newest().expect("not empty"), self.raw.iter().last().expect("not empty"));
        match self.first.get() {
            None => put_u64(buf, 0),
            Some(f) if f == raw0.point() => put_u64(buf, 1),
            Some(f) => {
                put_u64(buf, 2);
                put_u64(buf, newest.at_ms.abs_diff(f.at_ms));
                put_i64(buf, diff(f.fans, newest.fans));
            }
        }
    }

    /// The encoded size of the state: what [`encode`](Self::encode) appends.
    pub fn encoded_len(&self) -> usize {
        let mut buf = Vec::with_capacity(
            self.raw.as_bytes().len() + self.fine.as_bytes().len() + self.coarse.as_bytes().len() + 32,
        );
        self.encode(&mut buf);
        buf.len()
    }

    /// Reads a state [`encode`](Self::encode) wrote (this version or version 1). A corrupt value
    /// is an error, never a panic.
    pub fn decode(value: &[u8]) -> Result<Self> {
        let version = *value.first().ok_or(Corrupt { at: 0, what: "a byte" })?;
        match version {
            FORMAT_VERSION => {}
            1 => return v1::decode(&value[1..]),
            v => return Err(DecodeError::Version(v)),
        }
        let mut page = RollingFans::new();
        let (raw, used) = RawSamples::check(&value[1..], MAX_ABS_AT_MS).map_err(DecodeError::Invalid)?;
        let mut r = Reader::new(&value[1 + used..]);
        let (Some(newest), Some(raw0)) = (raw.newest(), raw.iter().last()) else {
            ensure(r.is_empty(), "bytes after an empty series")?;
            return Ok(page);
        };
        let w = Window::of(newest.at_ms);
        let fine = r.bytes()?;
        page.fine =
            FineTier::from_bytes(fine, w.fine_lo, floor(raw0.at_ms, FINE_MS) - 1).map_err(DecodeError::Invalid)?;
        let coarse = r.bytes()?;
        let coarse_hi = w.fine_lo.min(floor(raw0.at_ms, HOUR_MS)) - 1;
        page.coarse = CoarseTier::from_bytes(coarse, w.cutoff, coarse_hi).map_err(DecodeError::Invalid)?;
        page.first = read_first(&mut r, raw0, newest)?.map_or_else(Default::default, super::First);
        page.raw = raw;
        ensure(r.is_empty(), "bytes after the state")?;
        Ok(page)
    }
}

/// Reads the raw samples and their followers in version 1, oldest first; `None` for an empty
/// series.
fn read_raw(r: &mut Reader<'_>) -> Result<Option<Vec<Sample>>> {
    let n = r.u64()?;
    ensure(n <= RAW_CAP as u64, "more raw samples than kept")?;
    if n == 0 {
        return Ok(None);
    }
    let n = n as usize;
    let at_ms = r.i64()?;
    ensure(at_ms.abs() <= MAX_ABS_AT_MS, "time out of range")?;
    let newest = Sample { at_ms, fans: r.u64()?, followers: None };
    let cutoff = newest.at_ms - RETENTION_MS;
    // Newest first while reading; reversed at the end.
    let mut raw = Vec::with_capacity(n);
    raw.push(newest);
    let mut prev_gap = FINE_MS;
    for _ in 1..n {
        let next = raw[raw.len() - 1];
        let gap = prev_gap.checked_add(r.i64()?).ok_or(DecodeError::Invalid("raw sample gap"))?;
        ensure(gap > 0 && gap <= RETENTION_MS, "raw sample times not increasing within the retention")?;
        let at_ms = next.at_ms - gap;
        ensure(at_ms >= cutoff, "raw sample older than the retention")?;
        raw.push(Sample { at_ms, fans: undiff(next.fans, r.i64()?), followers: None });
        prev_gap = gap;
    }
    let mask = match r.u64()? {
        0 => 0,
        1 => u64::MAX,
        2 => {
            let m = r.u64()?;
            ensure(n == 64 || m >> n == 0, "followers mask beyond the samples")?;
            m
        }
        _ => return Err(DecodeError::Invalid("followers mode")),
    };
    let mut prev = None;
    for (i, s) in raw.iter_mut().enumerate() {
        if mask >> i & 1 == 1 {
            let f = undiff(prev.unwrap_or(s.fans), r.i64()?);
            s.followers = Some(f);
            prev = Some(f);
        }
    }
    raw.reverse();
    Ok(Some(raw))
}

/// Reads the first sample, given the oldest and newest raw samples.
fn read_first(r: &mut Reader<'_>, raw0: Sample, newest: Sample) -> Result<Option<Point>> {
    let first = match r.u64()? {
        0 => None,
        1 => Some(raw0.point()),
        2 => {
            let back = r.u64()?;
            ensure(back <= 2 * MAX_ABS_AT_MS as u64, "first sample time out of range")?;
            let at_ms = newest.at_ms - back as i64;
            ensure(at_ms.abs() <= MAX_ABS_AT_MS, "first sample time out of range")?;
            Some(Point { at_ms, fans: undiff(newest.fans, r.i64()?) })
        }
        _ => return Err(DecodeError::Invalid("first sample tag")),
    };
    ensure(first.is_none_or(|f| f.at_ms <= raw0.at_ms), "first sample after a held one")?;
    Ok(first)
}

/// Version 1: the rings of the previous series, read as the points they hold.
mod v1 {
    use super::*;

    /// 10-minute buckets of the fine ring: 48 hours before the newest hour, and that hour.
    const FINE_SLOTS: i64 = (48 * HOUR_MS + HOUR_MS) / FINE_MS;
    /// Hours of the coarse ring.
    const COARSE_SLOTS: i64 = (RETENTION_MS - 48 * HOUR_MS) / HOUR_MS;

    /// Reads one ring's points (newest first in the value) into `out`.
    #[allow(clippy::too_many_arguments)]
    fn ring(
        r: &mut Reader<'_>,
        width: i64,
        slots: i64,
        (lo, hi): (i64, i64),
        (newest, cutoff): (i64, i64),
        offset: i64,
        prev_fans: &mut u64,
        out: &mut Vec<Point>,
    ) -> Result<()> {
        let count = r.u64()?;
        ensure(count <= slots as u64, "more ring points than slots")?;
        let (mut prev_bucket, mut prev_offset) = (hi + 1, offset);
        for _ in 0..count {
            let head = r.u64()?;
            let gap =
                if head & 1 == 1 { r.u64()?.checked_add(1).ok_or(DecodeError::Invalid("bucket gap"))? } else { 0 };
            ensure(prev_bucket > lo && gap <= (prev_bucket - 1 - lo) as u64, "ring point outside its window")?;
            let b = prev_bucket - 1 - gap as i64;
            let off = prev_offset.checked_add(unzz(head >> 1)).ok_or(DecodeError::Invalid("offset"))?;
            ensure((0..width).contains(&off), "offset outside its bucket")?;
            let p = Point { at_ms: b * width + off, fans: undiff(*prev_fans, r.i64()?) };
            ensure(p.at_ms <= newest && p.at_ms >= cutoff, "ring point outside the retention")?;
            out.push(p);
            (prev_bucket, prev_offset, *prev_fans) = (b, off, p.fans);
        }
        Ok(())
    }

    /// Reads a version 1 value after its version byte, and observes everything it holds into a
    /// new series.
    pub(super) fn decode(value: &[u8]) -> Result<RollingFans> {
        let mut r = Reader::new(value);
        let r = &mut r;
        let Some(raw) = read_raw(r)? else {
            ensure(r.is_empty(), "bytes after an empty series")?;
            return Ok(RollingFans::new());
        };
        let newest = raw[raw.len() - 1].at_ms;
        let hour = floor(newest, HOUR_MS);
        let fine_lo = (hour - 48 * HOUR_MS) / FINE_MS;
        let coarse_lo = (hour - RETENTION_MS) / HOUR_MS;
        let phase = newest.rem_euclid(FINE_MS);
        let bounds = (newest, newest - RETENTION_MS);
        let (mut fans, mut points) = (raw[raw.len() - 1].fans, Vec::new());
        ring(r, FINE_MS, FINE_SLOTS, (fine_lo, newest.div_euclid(FINE_MS)), bounds, phase, &mut fans, &mut points)?;
        let coarse = (coarse_lo, coarse_lo + COARSE_SLOTS - 1);
        ring(r, HOUR_MS, COARSE_SLOTS, coarse, bounds, HOUR_MS - FINE_MS + phase, &mut fans, &mut points)?;
        let first = read_first(r, raw[0], raw[raw.len() - 1])?;
        ensure(r.is_empty(), "bytes after the state")?;
        let mut page = RollingFans::new();
        for s in raw {
            page.observe(s);
        }
        for p in points.into_iter().rev() {
            page.observe(Sample { at_ms: p.at_ms, fans: p.fans, followers: None });
        }
        if let Some(f) = first {
            page.observe(Sample { at_ms: f.at_ms, fans: f.fans, followers: None });
        }
        Ok(page)
    }
}

#[cfg(test)]
mod tests {
    use super::super::TABLE_ROWS;
    use super::*;
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};

    const MIN: i64 = 60_000;
    const T0: i64 = 1_767_225_600_000 + 3 * MIN + 7_000;

    fn s(at_ms: i64, fans: u64, followers: Option<u64>) -> Sample {
        Sample { at_ms, fans, followers }
    }

    fn round_trip(page: &RollingFans) -> RollingFans {
        let mut buf = Vec::new();
        page.encode(&mut buf);
        assert_eq!(buf[0], FORMAT_VERSION);
        assert_eq!(buf.len(), page.encoded_len());
        RollingFans::decode(&buf).unwrap_or_else(|e| panic!("{e}: {page:?}"))
    }

    /// What the series exposes, and the whole state, are equal.
    fn assert_same(a: &RollingFans, b: &RollingFans, ctx: &str) {
        assert_eq!(a.stats(), b.stats(), "{ctx}");
        assert_eq!(a.series(), b.series(), "{ctx}");
        assert_eq!(a.table(), b.table(), "{ctx}");
        assert_eq!(a, b, "{ctx}: the whole state");
    }

    /// Random samples: out of order, duplicates (same time, other counts), gaps beyond the
    /// retention, counts around the ring slots' escape, followers on some.
    fn random_samples(rng: &mut impl Rng, case: usize) -> Vec<Sample> {
        let span = [90 * MIN, 3 * DAY_MS, 9 * DAY_MS, 45 * DAY_MS][case % 4];
        let grid = [1, MIN, FINE_MS][rng.gen_range(0..3)];
        let wide = case % 5 == 4;
        let mut v: Vec<Sample> = (0..rng.gen_range(1..300))
            .map(|_| {
                let base = if wide { u64::from(u32::MAX) - 500 } else { rng.gen_range(0..3) * 1_000_000 };
                s(
                    T0 + rng.gen_range(0..span) / grid * grid,
                    base + rng.gen_range(0..1000),
                    match rng.gen_range(0..3) {
                        0 => None,
                        1 => Some(rng.gen_range(0..2000)),
                        _ => Some(u64::MAX - rng.gen_range(0..3)),
                    },
                )
            })
            .collect();
        if case.is_multiple_of(2) {
            v.sort_by_key(|x| x.at_ms);
        }
        for _ in 0..rng.gen_range(0..30) {
            let dup = v[rng.gen_range(0..v.len())];
            v.insert(rng.gen_range(0..v.len()), dup);
        }
        v
    }

    #[test]
    fn random_histories_round_trip_and_continue_identically() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for case in 0..300 {
            let samples = random_samples(&mut rng, case);
            let mut page = RollingFans::new();
            assert_same(&round_trip(&page), &page, "empty");
            // Restored at random points, the copy must then follow the original exactly.
            let mut copy: Option<RollingFans> = None;
            for (i, x) in samples.iter().enumerate() {
                let before = page.clone();
                let changed = page.observe(*x);
                if !changed {
                    assert_eq!(page, before, "case {case}: observe said nothing changed");
                }
                if let Some(c) = &mut copy {
                    assert_eq!(c.observe(*x), changed, "case {case} sample {i}");
                    // The whole state: what it exposes follows (checked at each round trip).
                    assert_eq!(*c, page, "case {case} sample {i}: after restore");
                }
                if rng.gen_ratio(1, 20) || i + 1 == samples.len() {
                    let restored = round_trip(&page);
                    assert_same(&restored, &page, &format!("case {case} sample {i}"));
                    copy = Some(restored);
                }
            }
        }
    }

    #[test]
    fn extreme_values_round_trip() {
        let pages = [
            vec![s(MAX_ABS_AT_MS - 1, u64::MAX, Some(0))],
            vec![
                s(-MAX_ABS_AT_MS + RETENTION_MS, 0, Some(u64::MAX)),
                s(-MAX_ABS_AT_MS + RETENTION_MS + 1, u64::MAX, None),
            ],
            vec![s(0, 5, None), s(RETENTION_MS, u64::MAX, None), s(-1, 1, None)],
            // One sample a second for two hours: raw samples at the cap, every fine bucket full.
            (0..7200).map(|k| s(T0 + k * 1000, k as u64 * 1_000_000_007, Some(k as u64))).collect(),
        ];
        for samples in pages {
            let mut page = RollingFans::new();
            for x in &samples {
                page.observe(*x);
            }
            assert_same(&round_trip(&page), &page, &format!("{:?}", &samples[..1]));
        }
    }

    fn cadence(samples: i64, every_ms: i64, jitter_ms: i64, rng: &mut impl Rng) -> RollingFans {
        let mut page = RollingFans::new();
        let mut fans = 25_000u64;
        for k in 0..samples {
            fans += rng.gen_range(0..40);
            let jitter = if jitter_ms > 0 { rng.gen_range(-jitter_ms..=jitter_ms) } else { 0 };
            page.observe(s(T0 + k * every_ms + jitter, fans, Some(fans + 1_000)));
        }
        page
    }

    /// Sizes for the README (`cargo test --lib encoded_sizes -- --nocapture`), with bounds that
    /// catch a regression of the format.
    #[test]
    fn encoded_sizes() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut report = Vec::new();
        for (what, samples, bound) in
            [("1 sample", 1, 20), ("3 samples", 3, 30), ("24 h", 144, 650), ("30 d", 30 * 144, 3_000)]
        {
            for jitter in [0, 2_000] {
                let page = cadence(samples, FINE_MS, jitter, &mut rng);
                let len = page.encoded_len();
                assert!(jitter > 0 || len <= bound, "{what}: {len} bytes");
                assert_same(&round_trip(&page), &page, what);
                report.push(format!("{what} every 10 min ±{jitter} ms: {len} B"));
            }
        }
        eprintln!("encoded page sizes: {}", report.join("; "));
    }

    #[test]
    fn corrupt_values_are_errors_never_panics() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let mut buf = Vec::new();
        let full = cadence(3 * 144, FINE_MS, 1_000, &mut rng);
        full.encode(&mut buf);
        // Every truncation fails.
        for len in 0..buf.len() {
            assert!(RollingFans::decode(&buf[..len]).is_err(), "truncated to {len}");
        }
        let mut longer = buf.clone();
        longer.push(0);
        assert_eq!(RollingFans::decode(&longer), Err(DecodeError::Invalid("bytes after the state")));
        let mut v3 = buf.clone();
        v3[0] = 3;
        assert_eq!(RollingFans::decode(&v3), Err(DecodeError::Version(3)));
        // Random damage: whatever decodes must be usable without panicking.
        let mut decoded = 0;
        for case in 0..3000 {
            let mut page = RollingFans::new();
            for x in random_samples(&mut rng, case).into_iter().take(150) {
                page.observe(x);
            }
            let mut v = Vec::new();
            page.encode(&mut v);
            for _ in 0..rng.gen_range(1..4) {
                let i = rng.gen_range(1..v.len().max(2)).min(v.len() - 1);
                match rng.gen_range(0..3) {
                    0 => v[i] = rng.gen(),
                    1 => v[i] ^= 1 << rng.gen_range(0..8),
                    _ => v.insert(i, rng.gen()),
                }
            }
            if let Ok(mut p) = RollingFans::decode(&v) {
                decoded += 1;
                let _ = (p.stats(), p.series(), p.table(), p.heap_bytes());
                let newest = p.raw.newest().map_or(T0, |r| r.at_ms);
                for d in [-DAY_MS, 1, FINE_MS, 2 * DAY_MS, 40 * DAY_MS] {
                    p.observe(s(newest + d, rng.gen_range(0..u64::from(u32::MAX) + 9), None));
                    let _ = (p.stats(), p.series(), p.table());
                }
                assert_eq!(
                    &RollingFans::decode(&{
                        let mut b = Vec::new();
                        p.encode(&mut b);
                        b
                    })
                    .expect("a usable state re-encodes"),
                    &p
                );
            }
        }
        assert!(decoded > 100, "the damage test should exercise decodable values too: {decoded}");
    }

    #[test]
    fn shuffled_input_encodes_to_the_same_bytes() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut samples: Vec<Sample> = (0..500).map(|k| s(T0 + k * 7 * MIN, 1000 + k as u64, Some(9))).collect();
        let mut a = RollingFans::new();
        samples.iter().for_each(|x| {
            a.observe(*x);
        });
        samples.shuffle(&mut rng);
        let mut b = RollingFans::new();
        samples.iter().for_each(|x| {
            b.observe(*x);
        });
        let (mut ea, mut eb) = (Vec::new(), Vec::new());
        a.encode(&mut ea);
        b.encode(&mut eb);
        assert_eq!(ea, eb);
        assert!(a.table().len() == TABLE_ROWS && !a.fine.is_empty());
    }

    #[test]
    fn version_1_values_are_read_as_their_samples() {
        use crate::ops::codec::{put_i64, put_u64};
        // A value the previous format wrote: one raw sample N (no followers), its bucket and the
        // one two buckets earlier in the fine ring, no coarse point, the first sample explicit.
        let n = T0 + DAY_MS;
        let mut v = vec![1u8];
        put_u64(&mut v, 1);
        put_i64(&mut v, n);
        put_u64(&mut v, 5_000);
        put_u64(&mut v, 0); // followers: none
                            // Fine ring, newest first: N's bucket (offset as predicted, same fans), then a point two
                            // buckets back (a gap of one empty bucket) with 10 fans less.
        for x in [2, 0, 0, 1, 0] {
            put_u64(&mut v, x);
        }
        put_i64(&mut v, -10);
        put_u64(&mut v, 0); // coarse ring: empty
        put_u64(&mut v, 2); // first sample: explicit, 20 minutes before N, 10 fans less
        put_u64(&mut v, 2 * FINE_MS as u64);
        put_i64(&mut v, -10);
        let page = RollingFans::decode(&v).expect("a version 1 value decodes");
        let mut want = RollingFans::new();
        want.observe(s(n - 2 * FINE_MS, 4_990, None));
        want.observe(s(n, 5_000, None));
        assert_eq!(page, want);
        assert_eq!(page.stats().map(|st| (st.delta_1h.value, st.delta_1h.partial)), Some((10, true)));
        // Re-encoded in the current format.
        let mut buf = Vec::new();
        page.encode(&mut buf);
        assert_eq!(buf[0], FORMAT_VERSION);
        assert_eq!(RollingFans::decode(&buf), Ok(page));
    }
}
