//! A page's raw samples, packed: newest first, each older one as varint deltas from the one
//! after it (about 3 bytes a sample at a regular cadence, against 32 unpacked). The bytes are
//! also the samples' durable form.
//!
//! ```text
//! n   samples (1 to RAW_CAP; an empty vector holds none)
//! newest: n   zz(at_ms) << 1 | has followers     n  fans      [zz  followers - fans]
//! older, newest first:
//!     n   zz(gap - previous gap) << 1 | has followers   (gap = newer time - this time > 0; the
//!                                                        first previous gap is 10 minutes)
//!     zz  fans - newer fans
//!     [zz followers - base]   (base: the newer sample's followers if it has them, else this
//!                              sample's fans)
//! ```
//!
//! Fan and follower deltas are wrapping `u64` differences read as `i64`, so any counts
//! round-trip; times are within ±100,000 years and gaps within the retention, so the shifts
//! lose nothing.

use super::{Sample, FINE_MS, RAW_CAP, RETENTION_MS};

fn zz(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzz(z: u64) -> i64 {
    ((z >> 1) as i64) ^ -((z & 1) as i64)
}

/// A byte buffer on the stack, large enough for any packed samples.
struct Buf<'a> {
    b: &'a mut [u8],
    len: usize,
}

impl Buf<'_> {
    fn put(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.b[self.len] = (v as u8) | 0x80;
            self.len += 1;
            v >>= 7;
        }
        self.b[self.len] = v as u8;
        self.len += 1;
    }
}

#[inline]
fn get(b: &[u8], pos: &mut usize) -> Option<u64> {
    let first = *b.get(*pos)?;
    *pos += 1;
    if first < 0x80 {
        return Some(u64::from(first));
    }
    let mut v = u64::from(first & 0x7f);
    for shift in (7..70).step_by(7) {
        let byte = *b.get(*pos)?;
        *pos += 1;
        v |= u64::from(byte & 0x7f).checked_shl(shift)?;
        if byte < 0x80 {
            return Some(v);
        }
    }
    None
}

/// The raw samples of a page, packed (module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct RawSamples {
    /// Empty (unallocated) exactly when there is no sample. A boxed slice, not a vector: 8 bytes
    /// less in every page, and a page's samples are rewritten whole anyway.
    bytes: Box<[u8]>,
}

/// Reads packed samples newest first. Malformed bytes end the iteration early; [`check`]
/// guards what comes from outside.
pub(super) struct Iter<'a> {
    b: &'a [u8],
    pos: usize,
    left: usize,
    prev: Option<Sample>,
    prev_gap: i64,
}

impl Iterator for Iter<'_> {
    type Item = Sample;

    #[inline]
    fn next(&mut self) -> Option<Sample> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let head = get(self.b, &mut self.pos)?;
        let s = match self.prev {
            None => {
                let at_ms = unzz(head >> 1);
                let fans = get(self.b, &mut self.pos)?;
                let followers = if head & 1 == 1 {
                    Some(fans.wrapping_add(unzz(get(self.b, &mut self.pos)?) as u64))
                } else {
                    None
                };
                Sample { at_ms, fans, followers }
            }
            Some(newer) => {
                let gap = self.prev_gap.wrapping_add(unzz(head >> 1));
                self.prev_gap = gap;
                let fans = newer.fans.wrapping_add(unzz(get(self.b, &mut self.pos)?) as u64);
                let followers = if head & 1 == 1 {
                    let base = newer.followers.unwrap_or(fans);
                    Some(base.wrapping_add(unzz(get(self.b, &mut self.pos)?) as u64))
                } else {
                    None
                };
                Sample { at_ms: newer.at_ms.wrapping_sub(gap), fans, followers }
            }
        };
        self.prev = Some(s);
        Some(s)
    }
}

impl RawSamples {
    /// The samples, newest first.
    pub(super) fn iter(&self) -> Iter<'_> {
        let mut pos = 0;
        let left = if self.bytes.is_empty() { 0 } else { get(&self.bytes, &mut pos).unwrap_or(0) as usize };
        Iter { b: &self.bytes, pos, left, prev: None, prev_gap: FINE_MS }
    }

    /// The newest sample.
    pub(super) fn newest(&self) -> Option<Sample> {
        self.iter().next()
    }

    /// The samples, oldest first, into `out` (cleared first).
    pub(super) fn to_vec(&self, out: &mut Vec<Sample>) {
        out.clear();
        out.extend(self.iter());
        out.reverse();
    }

    /// Packs `samples` (oldest first, times strictly increasing, at most [`RAW_CAP`]).
    pub(super) fn set(&mut self, samples: &[Sample]) {
        debug_assert!(samples.len() <= RAW_CAP && samples.windows(2).all(|w| w[0].at_ms < w[1].at_ms));
        // Packed on the stack (at most 1 + RAW_CAP · 30 bytes), then copied into the allocation
        // in place when the length is unchanged (a page settles at a fixed count).
        let mut stack = [0u8; 1 + RAW_CAP * 30];
        let mut buf = Buf { b: &mut stack, len: 0 };
        let Some(&newest) = samples.last() else {
            self.bytes = Box::default();
            return;
        };
        buf.put(samples.len() as u64);
        buf.put(zz(newest.at_ms) << 1 | u64::from(newest.followers.is_some()));
        buf.put(newest.fans);
        if let Some(f) = newest.followers {
            buf.put(zz(f.wrapping_sub(newest.fans) as i64));
        }
        let (mut newer, mut prev_gap) = (newest, FINE_MS);
        for s in samples.iter().rev().skip(1) {
            let gap = newer.at_ms - s.at_ms;
            buf.put(zz(gap - prev_gap) << 1 | u64::from(s.followers.is_some()));
            buf.put(zz(s.fans.wrapping_sub(newer.fans) as i64));
            if let Some(f) = s.followers {
                buf.put(zz(f.wrapping_sub(newer.followers.unwrap_or(s.fans)) as i64));
            }
            (newer, prev_gap) = (*s, gap);
        }
        let packed = &buf.b[..buf.len];
        if self.bytes.len() == packed.len() {
            self.bytes.copy_from_slice(packed);
        } else {
            self.bytes = packed.into();
        }
    }

    /// The packed bytes: their durable form.
    pub(super) fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Heap bytes held.
    pub(super) fn heap_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// Reads packed samples at the start of `b`, checked (times strictly decreasing, at most
    /// [`RAW_CAP`], within the retention of the newest and within `max_abs_ms` of 1970);
    /// returns them and the bytes they took. The bytes are kept as they are: a value not
    /// written by [`RawSamples::set`] (a varint with needless continuation bytes) reads the same
    /// samples.
    pub(super) fn check(b: &[u8], max_abs_ms: i64) -> Result<(Self, usize), &'static str> {
        let mut pos = 0;
        let n = get(b, &mut pos).ok_or("raw sample count")?;
        if n == 0 {
            return Ok((Self::default(), pos));
        }
        if n > RAW_CAP as u64 {
            return Err("more raw samples than kept");
        }
        let mut it = Iter { b, pos, left: n as usize, prev: None, prev_gap: FINE_MS };
        let newest = it.next().ok_or("truncated raw samples")?;
        if newest.at_ms.abs() > max_abs_ms {
            return Err("time out of range");
        }
        for _ in 1..n {
            let s = it.next().ok_or("truncated raw samples")?;
            if it.prev_gap <= 0 || it.prev_gap > RETENTION_MS || s.at_ms < newest.at_ms - RETENTION_MS {
                return Err("raw sample times not increasing within the retention");
            }
        }
        let end = it.pos;
        let out = Self { bytes: b[..end].into() };
        Ok((out, end))
    }
}
