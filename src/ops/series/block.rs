//! A tier of a page's history: the last point (time, fans) of each bucket of `W` milliseconds, in
//! sealed blocks of bit-packed points, all in one byte vector that is also their durable form.
//!
//! # Block format
//!
//! A block holds the points of the buckets `[k·B, (k+1)·B)` (its number `k`), oldest first, at
//! least one. Blocks follow each other with increasing numbers; a block number without points
//! has no block. Every block is encoded the same way whoever wrote it (the encoding is a function
//! of its points), so equal contents are equal bytes:
//!
//! ```text
//! u16 LE   length of the block in bytes, this field included (blocks are skipped without parsing)
//! zz       k, the block number
//! u8       n, points (1 to B)
//! u8       index in the block of the first point's bucket
//! u8       index of the last point's bucket
//! u16 LE   widths: wg (bits 0-3) | wo << 4 (bits 4-8) | wd << 9 (bits 9-15)
//! varint   gmin:  least bucket gap (buckets skipped between two points)
//! varint   omin:  least offset of a point in its bucket (ms)
//! zz       dmin:  least fan delta between two points (wrapping u64 difference read as i64)
//! varint   fans of the last point
//! bits     row 0: offset - omin (wo bits); rows 1..n: gap - gmin (wg), offset - omin (wo),
//!          delta - dmin (wd); least significant bit first, zero padded to a byte
//! ```
//!
//! This is frame-of-reference bit packing: each column takes the bits its spread needs. At a
//! regular cadence the gaps and offsets take 0 bits and a point costs its fan delta's spread
//! (5 bits for growth of 0 to 20 fans per point). Rows have a fixed width, so a row's fields are
//! at known positions: the first and last points are read in constant time (the header holds the
//! last point's bucket and fans; the first one's fans is found by summing the deltas), lookups
//! walk back from the last point, and a point that fits the block's widths is appended in place.
//! Anything else (a point that widens a column, a late point into an older bucket) decodes the
//! block, changes it and encodes it again.

use super::Point;

/// Widths are packed into 4, 5 and 7 bits.
const MAX_WG: u32 = 8;
const MAX_WO: u32 = 22;

/// A point of a block: its bucket's index in the block, its offset in the bucket, its fans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pt {
    idx: u8,
    off: u32,
    fans: u64,
}

fn bits(v: u64) -> u32 {
    64 - v.leading_zeros()
}

fn mask(w: u32) -> u64 {
    if w == 0 {
        0
    } else {
        u64::MAX >> (64 - w)
    }
}

fn zz(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzz(z: u64) -> i64 {
    ((z >> 1) as i64) ^ -((z & 1) as i64)
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn varint_len(v: u64) -> usize {
    (bits(v).max(1) as usize).div_ceil(7)
}

/// Reads a varint at `*pos`; `None` when truncated or longer than 10 bytes.
fn get_varint(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..70).step_by(7) {
        let byte = *b.get(*pos)?;
        *pos += 1;
        v |= u64::from(byte & 0x7f).checked_shl(shift)?;
        if byte < 0x80 {
            return Some(v);
        }
    }
    None
}

/// `w` bits at bit `pos` of `b` (bits past the end read as 0).
#[inline]
fn get_bits(b: &[u8], pos: usize, w: u32) -> u64 {
    if w == 0 {
        return 0;
    }
    let (byte, shift) = (pos / 8, (pos % 8) as u32);
    if let Some(chunk) = b.get(byte..byte + 8) {
        if shift + w <= 64 {
            let v = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
            return (v >> shift) & mask(w);
        }
    }
    let mut word = [0u8; 16];
    let end = (byte + 16).min(b.len());
    if byte < end {
        word[..end - byte].copy_from_slice(&b[byte..end]);
    }
    ((u128::from_le_bytes(word) >> shift) as u64) & mask(w)
}

/// ORs the `w` low bits of `v` in at bit `pos` of `b`, which must hold them and be zero there.
fn or_bits(b: &mut [u8], pos: usize, w: u32, v: u64) {
    let mut v = u128::from(v & mask(w)) << (pos % 8);
    let mut i = pos / 8;
    while v != 0 {
        b[i] |= v as u8;
        v >>= 8;
        i += 1;
    }
}

/// The parsed header of a block at some position of a tier's bytes.
#[derive(Debug, Clone, Copy)]
struct Head {
    /// Byte position of the block in the tier.
    at: usize,
    len: usize,
    k: i64,
    n: usize,
    idx_first: u8,
    idx_last: u8,
    wg: u32,
    wo: u32,
    wd: u32,
    gmin: u64,
    omin: u64,
    dmin: i64,
    f_last: u64,
    /// Byte position of the bits (in the tier).
    bits_at: usize,
    /// Byte position of `f_last` (in the tier) and its varint length.
    f_last_at: usize,
}

impl Head {
    fn row_bits(&self) -> usize {
        (self.wg + self.wo + self.wd) as usize
    }

    /// Bit position (within the block's bits) of row `i`'s first field.
    fn row(&self, i: usize) -> usize {
        if i == 0 {
            0
        } else {
            self.wo as usize + (i - 1) * self.row_bits()
        }
    }

    fn bit_len(&self) -> usize {
        self.row(self.n)
    }

    fn offset(&self, bits: &[u8], i: usize) -> u64 {
        let pos = if i == 0 { 0 } else { self.row(i) + self.wg as usize };
        self.omin.wrapping_add(get_bits(bits, pos, self.wo))
    }

    /// (gap in buckets minus one, fan delta) of row `i >= 1` to row `i - 1`.
    fn step(&self, bits: &[u8], i: usize) -> (u64, u64) {
        let pos = self.row(i);
        let g = self.gmin.wrapping_add(get_bits(bits, pos, self.wg));
        let d = (self.dmin as u64).wrapping_add(get_bits(bits, pos + (self.wg + self.wo) as usize, self.wd));
        (g, d)
    }
}

/// The points of one tier: buckets of `W` ms in blocks of `B` buckets (`B` at most 255).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Tier<const W: i64, const B: i64> {
    /// The blocks, oldest first; empty (unallocated) exactly when there is no point.
    bytes: Vec<u8>,
}

/// Why tier bytes do not decode.
pub(super) type Invalid = &'static str;

impl<const W: i64, const B: i64> Tier<W, B> {
    const _OK: () = assert!(B >= 2 && B <= 255 && W > 0 && W <= 1 << MAX_WO);

    fn bucket(at_ms: i64) -> i64 {
        at_ms.div_euclid(W)
    }

    /// The block number of the bucket of `at_ms`.
    pub(super) fn block_of(at_ms: i64) -> i64 {
        Self::bucket(at_ms).div_euclid(B)
    }

    /// The first time of block `k`.
    pub(super) fn block_start(k: i64) -> i64 {
        k * B * W
    }

    fn pt(p: Point) -> (i64, Pt) {
        let b = Self::bucket(p.at_ms);
        let k = b.div_euclid(B);
        (k, Pt { idx: (b - k * B) as u8, off: (p.at_ms - b * W) as u32, fans: p.fans })
    }

    fn point(k: i64, idx: u64, off: u64, fans: u64) -> Point {
        Point { at_ms: (k * B + idx as i64) * W + off as i64, fans }
    }

    /// True without points.
    pub(super) fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The tier's bytes: its durable form.
    pub(super) fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Heap bytes held.
    pub(super) fn heap_bytes(&self) -> usize {
        self.bytes.capacity()
    }

    /// Parses the header of the block at `at`. The bytes are the tier's own (or were checked by
    /// [`Tier::from_bytes`]), so this cannot fail.
    fn head(&self, at: usize) -> Head {
        Self::parse(&self.bytes, at).expect("a tier's blocks are well-formed")
    }

    fn parse(b: &[u8], at: usize) -> Result<Head, Invalid> {
        let fixed = |i: usize, n: usize| b.get(at + i..at + i + n).ok_or("truncated block header");
        let len = usize::from(u16::from_le_bytes(fixed(0, 2)?.try_into().expect("2 bytes")));
        let mut pos = at + 2;
        let k = unzz(get_varint(b, &mut pos).ok_or("block number")?);
        let small = fixed(pos - at, 5)?;
        let (n, idx_first, idx_last) = (usize::from(small[0]), small[1], small[2]);
        let widths = u16::from_le_bytes([small[3], small[4]]);
        pos += 5;
        let (wg, wo, wd) = (u32::from(widths & 15), u32::from(widths >> 4 & 31), u32::from(widths >> 9));
        let gmin = get_varint(b, &mut pos).ok_or("gap base")?;
        let omin = get_varint(b, &mut pos).ok_or("offset base")?;
        let dmin = unzz(get_varint(b, &mut pos).ok_or("delta base")?);
        let f_last_at = pos;
        let f_last = get_varint(b, &mut pos).ok_or("last fans")?;
        let h =
            Head { at, len, k, n, idx_first, idx_last, wg, wo, wd, gmin, omin, dmin, f_last, bits_at: pos, f_last_at };
        if n == 0 || n > B as usize || wg > MAX_WG || wo > MAX_WO || wd > 64 {
            return Err("block counts or widths out of range");
        }
        if idx_first > idx_last || i64::from(idx_last) >= B || (n == 1) != (idx_first == idx_last) {
            return Err("block bucket indices out of range");
        }
        if len != pos - at + h.bit_len().div_ceil(8) || at + len > b.len() {
            return Err("block length");
        }
        Ok(h)
    }

    fn bits(&self, h: &Head) -> &[u8] {
        &self.bytes[h.bits_at..h.at + h.len]
    }

    /// The block headers, oldest first.
    fn heads(&self) -> impl Iterator<Item = Head> + '_ {
        let mut at = 0;
        std::iter::from_fn(move || {
            (at < self.bytes.len()).then(|| {
                let h = self.head(at);
                at += h.len;
                h
            })
        })
    }

    fn last_point(&self, h: &Head) -> Point {
        Self::point(h.k, u64::from(h.idx_last), h.offset(self.bits(h), h.n - 1), h.f_last)
    }

    /// The points of block `h`, newest first, as (bucket index, point).
    fn rev_points<'a>(&'a self, h: &'a Head) -> impl Iterator<Item = (u8, Point)> + 'a {
        let bits = self.bits(h);
        let (mut idx, mut fans, mut i) = (u64::from(h.idx_last), h.f_last, h.n);
        std::iter::from_fn(move || {
            if i == 0 {
                return None;
            }
            i -= 1;
            let p = (idx as u8, Self::point(h.k, idx, h.offset(bits, i), fans));
            if i > 0 {
                let (g, d) = h.step(bits, i);
                idx = idx.wrapping_sub(g.wrapping_add(1));
                fans = fans.wrapping_sub(d);
            }
            Some(p)
        })
    }

    fn decode_block(&self, h: &Head, out: &mut Vec<Pt>) {
        let start = out.len();
        out.extend(self.rev_points(h).map(|(idx, p)| Pt {
            idx,
            off: (p.at_ms - Self::bucket(p.at_ms) * W) as u32,
            fans: p.fans,
        }));
        out[start..].reverse();
    }

    /// Encodes block `k` of `pts` (bucket indices strictly increasing, at least one) onto `out`.
    fn encode_block(k: i64, pts: &[Pt], out: &mut Vec<u8>) {
        debug_assert!(!pts.is_empty() && pts.windows(2).all(|w| w[0].idx < w[1].idx));
        let start = out.len();
        out.extend_from_slice(&[0, 0]);
        put_varint(out, zz(k));
        let (first, last) = (pts[0], pts[pts.len() - 1]);
        let steps =
            || pts.windows(2).map(|w| (u64::from(w[1].idx - w[0].idx - 1), w[1].fans.wrapping_sub(w[0].fans) as i64));
        let gmin = steps().map(|s| s.0).min().unwrap_or(0);
        let dmin = steps().map(|s| s.1).min().unwrap_or(0);
        let omin = pts.iter().map(|p| p.off).min().unwrap_or(0);
        let wg = bits(steps().map(|s| s.0 - gmin).max().unwrap_or(0));
        let wd = bits(steps().map(|s| (s.1 as u64).wrapping_sub(dmin as u64)).max().unwrap_or(0));
        let wo = bits(u64::from(pts.iter().map(|p| p.off).max().unwrap_or(0) - omin));
        out.push(pts.len() as u8);
        out.push(first.idx);
        out.push(last.idx);
        out.extend_from_slice(&((wg | wo << 4 | wd << 9) as u16).to_le_bytes());
        put_varint(out, gmin);
        put_varint(out, u64::from(omin));
        put_varint(out, zz(dmin));
        put_varint(out, last.fans);
        // Rows, least significant bit first.
        let (mut acc, mut nacc) = (0u128, 0u32);
        let mut push = |v: u64, w: u32, out: &mut Vec<u8>| {
            if w == 0 {
                return;
            }
            acc |= u128::from(v & mask(w)) << nacc;
            nacc += w;
            while nacc >= 8 {
                out.push(acc as u8);
                acc >>= 8;
                nacc -= 8;
            }
        };
        push(u64::from(first.off - omin), wo, out);
        for w in pts.windows(2) {
            push(u64::from(w[1].idx - w[0].idx - 1) - gmin, wg, out);
            push(u64::from(w[1].off - omin), wo, out);
            push(w[1].fans.wrapping_sub(w[0].fans).wrapping_sub(dmin as u64), wd, out);
        }
        if nacc > 0 {
            out.push(acc as u8);
        }
        let len = u16::try_from(out.len() - start).expect("a block of at most 255 rows of 94 bits");
        out[start..start + 2].copy_from_slice(&len.to_le_bytes());
    }

    /// Replaces the bytes `range` with block `k` of `pts` (none: removes them).
    fn splice(&mut self, range: std::ops::Range<usize>, k: i64, pts: &[Pt]) {
        let mut enc = Vec::new();
        if !pts.is_empty() {
            Self::encode_block(k, pts, &mut enc);
        }
        self.bytes.splice(range, enc);
        self.fit();
    }

    /// Exact capacity: a page's tiers grow one point at a time and settle; doubling would leave
    /// up to half unused. (Reallocating within the allocator's size class is in place.)
    fn fit(&mut self) {
        if self.bytes.is_empty() {
            self.bytes = Vec::new();
        } else if self.bytes.capacity() > self.bytes.len() + self.bytes.len() / 4 + 16 {
            self.bytes.shrink_to_fit();
        }
    }

    /// Room for `extra` more bytes, exactly: the allocator rounds up to its size class, and
    /// growing within it is in place.
    fn grow(&mut self, extra: usize) {
        self.bytes.reserve_exact(extra);
    }

    /// Merges `p` into its bucket: kept if the bucket is empty or `p` is later (or as late with
    /// more fans) than its point. Returns true when the tier changed.
    pub(super) fn merge(&mut self, p: Point) -> bool {
        let (k, pt) = Self::pt(p);
        // Blocks located by their length and number alone; only the one found is parsed.
        let (mut found, mut insert_at, mut at) = (None, self.bytes.len(), 0);
        while at < self.bytes.len() {
            let len = usize::from(u16::from_le_bytes([self.bytes[at], self.bytes[at + 1]]));
            let mut pos = at + 2;
            let bk = unzz(get_varint(&self.bytes, &mut pos).expect("a tier's blocks are well-formed"));
            if bk >= k {
                (found, insert_at) = ((bk == k).then(|| self.head(at)), at);
                break;
            }
            at += len;
        }
        let Some(h) = found else {
            let mut enc = Vec::new();
            Self::encode_block(k, &[pt], &mut enc);
            self.grow(enc.len());
            self.bytes.splice(insert_at..insert_at, enc);
            return true;
        };
        if pt.idx > h.idx_last && self.try_append(&h, pt) {
            return true;
        }
        let mut pts = Vec::with_capacity(h.n + 1);
        self.decode_block(&h, &mut pts);
        match pts.binary_search_by_key(&pt.idx, |q| q.idx) {
            Ok(i) => {
                let q = pts[i];
                if (pt.off, pt.fans) <= (q.off, q.fans) {
                    return false;
                }
                pts[i] = pt;
            }
            Err(i) => pts.insert(i, pt),
        }
        self.splice(h.at..h.at + h.len, k, &pts);
        true
    }

    /// Appends `pt` after the last point of block `h`, in place, if it fits the block's columns
    /// as they are (then the block's encoding is what encoding it anew would give).
    fn try_append(&mut self, h: &Head, pt: Pt) -> bool {
        // A block of one point has no gap or delta column yet: its widths are still to be chosen.
        if h.n < 2 || h.at + h.len != self.bytes.len() {
            return false;
        }
        let g = u64::from(pt.idx - h.idx_last - 1);
        let d = pt.fans.wrapping_sub(h.f_last) as i64;
        let fits = |v: i128, min: i128, w: u32| v >= min && v - min <= i128::from(mask(w));
        if !fits(g.into(), h.gmin.into(), h.wg)
            || !fits(pt.off.into(), h.omin.into(), h.wo)
            || !fits(d.into(), h.dmin.into(), h.wd)
            || varint_len(pt.fans) != h.bits_at - h.f_last_at
        {
            return false;
        }
        let old_bits = h.bit_len();
        let new_len = h.bits_at - h.at + (old_bits + h.row_bits()).div_ceil(8);
        let grow = new_len - h.len;
        self.grow(grow);
        self.bytes.resize(self.bytes.len() + grow, 0);
        let bits = &mut self.bytes[h.bits_at..];
        let pos = old_bits;
        or_bits(bits, pos, h.wg, g - h.gmin);
        or_bits(bits, pos + h.wg as usize, h.wo, u64::from(pt.off) - h.omin);
        or_bits(bits, pos + (h.wg + h.wo) as usize, h.wd, (d as u64).wrapping_sub(h.dmin as u64));
        let at = h.at;
        self.bytes[at..at + 2].copy_from_slice(&(new_len as u16).to_le_bytes());
        // n, idx_last sit right after the block number.
        let mut pos = at + 2;
        get_varint(&self.bytes, &mut pos).expect("parsed before");
        self.bytes[pos] = (h.n + 1) as u8;
        self.bytes[pos + 2] = pt.idx;
        let mut f = Vec::with_capacity(10);
        put_varint(&mut f, pt.fans);
        self.bytes[h.f_last_at..h.f_last_at + f.len()].copy_from_slice(&f);
        true
    }

    /// The oldest point.
    pub(super) fn first(&self) -> Option<Point> {
        let h = self.heads().next()?;
        let bits = self.bits(&h);
        let f_first = (1..h.n).fold(h.f_last, |f, i| f.wrapping_sub(h.step(bits, i).1));
        Some(Self::point(h.k, u64::from(h.idx_first), h.offset(bits, 0), f_first))
    }

    /// The latest point at or before `t`.
    pub(super) fn latest(&self, t: i64) -> Option<Point> {
        // Blocks located by their length, number and first index alone: no full header parse.
        let (mut at, mut cand, mut prev) = (0, None, None);
        while at < self.bytes.len() {
            let len = usize::from(u16::from_le_bytes([self.bytes[at], self.bytes[at + 1]]));
            let mut pos = at + 2;
            let k = unzz(get_varint(&self.bytes, &mut pos).expect("a tier's blocks are well-formed"));
            // The first point of a block is at or after its first bucket's start.
            if (k * B + i64::from(self.bytes[pos + 1])) * W > t {
                break;
            }
            (prev, cand) = (cand, Some(at));
            at += len;
        }
        let h = self.head(cand?);
        let last = self.last_point(&h);
        if last.at_ms <= t {
            return Some(last);
        }
        let bits = self.bits(&h);
        let found = if h.wg == 0 {
            // Evenly spaced buckets (a regular cadence): the row of t's bucket is computed, and
            // only the fan deltas after it are summed.
            let step = h.gmin.wrapping_add(1);
            let tb = (Self::bucket(t) - h.k * B) as u64;
            let mut i = (((tb - u64::from(h.idx_first)) / step) as usize).min(h.n - 1);
            let dpos = (h.wg + h.wo) as usize;
            let delta = |j: usize| (h.dmin as u64).wrapping_add(get_bits(bits, h.row(j) + dpos, h.wd));
            let mut fans = ((i + 1)..h.n).fold(h.f_last, |f, j| f.wrapping_sub(delta(j)));
            loop {
                let idx = u64::from(h.idx_first) + i as u64 * step;
                let p = Self::point(h.k, idx, h.offset(bits, i), fans);
                if p.at_ms <= t {
                    break Some(p);
                }
                if i == 0 {
                    break None;
                }
                fans = fans.wrapping_sub(delta(i));
                i -= 1;
            }
        } else {
            self.rev_points(&h).map(|(_, p)| p).find(|p| p.at_ms <= t)
        };
        // Every point of the block is after t: the previous block's last.
        found.or_else(|| prev.map(|at| self.last_point(&self.head(at))))
    }

    /// Every point, oldest first.
    pub(super) fn points(&self, out: &mut Vec<Point>) {
        for h in self.heads() {
            let start = out.len();
            out.extend(self.rev_points(&h).map(|(_, p)| p));
            out[start..].reverse();
        }
    }

    /// Removes the blocks before block `k_lo`, handing their points to `f`, oldest first.
    pub(super) fn drain_blocks_before(&mut self, k_lo: i64, mut f: impl FnMut(Point)) {
        let mut end = 0;
        let mut pts = Vec::new();
        for h in self.heads() {
            if h.k >= k_lo {
                break;
            }
            let start = pts.len();
            pts.extend(self.rev_points(&h).map(|(_, p)| p));
            pts[start..].reverse();
            end = h.at + h.len;
        }
        if end > 0 {
            self.bytes.drain(..end);
            self.fit();
            pts.into_iter().for_each(&mut f);
        }
    }

    /// Removes the points before `cutoff` (ms).
    pub(super) fn evict_before(&mut self, cutoff: i64) {
        while !self.bytes.is_empty() {
            let h = self.head(0);
            if self.last_point(&h).at_ms < cutoff {
                self.bytes.drain(..h.len);
                continue;
            }
            let first_bucket_start = (h.k * B + i64::from(h.idx_first)) * W;
            if first_bucket_start + W > cutoff {
                // Its first point may still be before the cutoff only if in the cutoff's bucket.
                let bits = self.bits(&h);
                if first_bucket_start + h.offset(bits, 0) as i64 >= cutoff {
                    break;
                }
            }
            let mut pts = Vec::with_capacity(h.n);
            self.decode_block(&h, &mut pts);
            pts.retain(|p| (h.k * B + i64::from(p.idx)) * W + i64::from(p.off) >= cutoff);
            self.splice(h.at..h.at + h.len, h.k, &pts);
            break;
        }
        self.fit();
    }

    /// A tier from its durable bytes, checked: well-formed blocks in increasing order, every
    /// point within `[lo, hi]` (ms).
    pub(super) fn from_bytes(bytes: &[u8], lo: i64, hi: i64) -> Result<Self, Invalid> {
        let mut at = 0;
        let mut prev_k = None;
        while at < bytes.len() {
            let h = Self::parse(bytes, at)?;
            if prev_k.is_some_and(|p| p >= h.k) {
                return Err("blocks out of order");
            }
            if h.k.checked_mul(B * W).is_none_or(|s| s < lo - B * W || s > hi) {
                return Err("block outside its window");
            }
            prev_k = Some(h.k);
            let bits = &bytes[h.bits_at..h.at + h.len];
            let mut idx = u64::from(h.idx_last);
            for i in (0..h.n).rev() {
                let off = h.offset(bits, i);
                if off >= W as u64 {
                    return Err("offset outside its bucket");
                }
                let at_ms = (h.k * B + idx as i64) * W + off as i64;
                if at_ms < lo || at_ms > hi {
                    return Err("point outside its window");
                }
                if i > 0 {
                    let g = h.step(bits, i).0;
                    idx = g.checked_add(1).and_then(|g| idx.checked_sub(g)).ok_or("bucket gaps")?;
                }
            }
            if idx != u64::from(h.idx_first) {
                return Err("bucket gaps");
            }
            // Padding bits are zero: appends write into them.
            let used = h.bit_len() % 8;
            if used != 0 && bits.last().is_some_and(|&b| b >> used != 0) {
                return Err("block padding");
            }
            at += h.len;
        }
        Ok(Self { bytes: bytes.to_vec() })
    }
}
