//! A bounded table of the latest value per key, read by many threads and written by one: what
//! the HTTP API serves a result topic from (a post's analysis, an hour's top articles, a minute's
//! statistics). Like a Kafka Streams `KTable` materialized from a topic, with two bounds a
//! long-running process needs:
//!
//! - **age**: an entry whose record is older than the retention is dropped (checked on insert
//!   and on [`LatestTable::expire`]);
//! - **bytes**: keys and values together stay under a budget; past it the entries written least
//!   recently go first.
//!
//! A newer value of a key replaces the older one and counts as just written. A tombstone removes
//! the key. Values are kept as the bytes of the record (no decoding on the write path).

use std::collections::{HashMap, VecDeque};
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

/// What one entry costs besides its key and value bytes: the map slot, the `Arc` and the facts
/// derived once ([`Stored`]), the queue slot.
pub const ENTRY_OVERHEAD: usize = 128;

/// One value as the table holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    /// The record's value bytes, with what readers derived from them once.
    pub bytes: Arc<Stored>,
    /// The record's timestamp, epoch milliseconds.
    pub ts_ms: i64,
}

impl Value {
    /// A value of `bytes` written at `ts_ms`.
    pub fn new(bytes: &[u8], ts_ms: i64) -> Self {
        Self { bytes: Arc::new(Stored::new(bytes)), ts_ms }
    }
}

/// A record's value bytes, and facts a reader derives from them at most once (computed on the
/// first read that asks, not on the write path): many reads of a hot key pay for them once.
#[derive(Debug)]
pub struct Stored {
    bytes: Box<[u8]>,
    digest: OnceLock<u64>,
    flag: OnceLock<Option<bool>>,
}

impl Stored {
    /// `bytes`, nothing derived yet.
    pub fn new(bytes: &[u8]) -> Self {
        Self { bytes: bytes.into(), digest: OnceLock::new(), flag: OnceLock::new() }
    }

    /// A 64-bit digest of the bytes (XXH3, stable across versions and restarts), computed once.
    pub fn digest(&self) -> u64 {
        *self.digest.get_or_init(|| xxhash_rust::xxh3::xxh3_64(&self.bytes))
    }

    /// A yes/no fact about the bytes (`None`: they do not say), computed by `derive` on the first
    /// call and remembered (e.g. whether a window record is final). Every caller of one table
    /// must ask the same question.
    pub fn flag(&self, derive: impl FnOnce(&[u8]) -> Option<bool>) -> Option<bool> {
        *self.flag.get_or_init(|| derive(&self.bytes))
    }
}

impl Deref for Stored {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

impl AsRef<[u8]> for Stored {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl PartialEq for Stored {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for Stored {}

/// Bounds of one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Entries older than this (by record timestamp) are dropped, milliseconds.
    pub retention_ms: i64,
    /// Keys and values together stay under this many bytes.
    pub max_bytes: usize,
}

#[derive(Default)]
struct Inner {
    map: HashMap<Box<str>, (Value, u64)>,
    /// Keys in the order written, with the write's sequence number; an element whose number is
    /// not the key's current one is stale and skipped.
    order: VecDeque<(Box<str>, u64, i64)>,
    seq: u64,
    bytes: usize,
    evicted: u64,
}

/// The table. Cheap to clone (shared).
#[derive(Clone)]
pub struct LatestTable {
    inner: Arc<RwLock<Inner>>,
    bounds: Bounds,
    caught_up: Arc<AtomicBool>,
}

fn cost(key: &str, v: &Value) -> usize {
    key.len() + v.bytes.len() + ENTRY_OVERHEAD
}

impl LatestTable {
    /// An empty table with `bounds`, not yet caught up.
    pub fn new(bounds: Bounds) -> Self {
        Self { inner: Arc::default(), bounds, caught_up: Arc::default() }
    }

    /// Its bounds.
    pub fn bounds(&self) -> Bounds {
        self.bounds
    }

    /// The value of `key`, if held.
    pub fn get(&self, key: &str) -> Option<Value> {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).map.get(key).map(|(v, _)| v.clone())
    }

    /// Applies one record at wall-clock `now_ms`: `Some` value writes, `None` (a tombstone)
    /// removes. A record already older than the retention only removes the key's older value.
    pub fn apply(&self, key: &str, value: Option<Value>, now_ms: i64) {
        let mut g = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let inner = &mut *g;
        if let Some((old, _)) = inner.map.remove(key) {
            inner.bytes -= cost(key, &old);
        }
        let Some(value) = value else { return };
        if value.ts_ms < now_ms.saturating_sub(self.bounds.retention_ms) {
            return;
        }
        let c = cost(key, &value);
        if c > self.bounds.max_bytes {
            inner.evicted += 1;
            return;
        }
        inner.seq += 1;
        let seq = inner.seq;
        inner.order.push_back((key.into(), seq, value.ts_ms));
        inner.map.insert(key.into(), (value, seq));
        inner.bytes += c;
        while inner.bytes > self.bounds.max_bytes {
            if !Self::pop_oldest(inner) {
                break;
            }
            inner.evicted += 1;
        }
        // Stale queue elements (keys rewritten since) are dropped as they reach the front; keep
        // the queue from growing without bound when the same keys are rewritten again and again.
        if inner.order.len() > 2 * inner.map.len() + 1024 {
            let map = &inner.map;
            inner.order.retain(|(k, s, _)| map.get(k).is_some_and(|(_, cur)| cur == s));
        }
    }

    /// Removes the entry written least recently; false when empty.
    fn pop_oldest(inner: &mut Inner) -> bool {
        while let Some((k, s, _)) = inner.order.pop_front() {
            if inner.map.get(&k).is_some_and(|(_, cur)| *cur == s) {
                let (v, _) = inner.map.remove(&k).expect("present");
                inner.bytes -= cost(&k, &v);
                return true;
            }
        }
        false
    }

    /// Drops the entries whose record is older than the retention at `now_ms`. Entries are
    /// checked in the order written, so one written late with an old timestamp waits its turn.
    pub fn expire(&self, now_ms: i64) {
        let horizon = now_ms.saturating_sub(self.bounds.retention_ms);
        let mut g = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let inner = &mut *g;
        while let Some((k, s, ts)) = inner.order.front() {
            let current = inner.map.get(k).is_some_and(|(_, cur)| cur == s);
            if current && *ts >= horizon {
                break;
            }
            let (k, _, _) = inner.order.pop_front().expect("front");
            if current {
                let (v, _) = inner.map.remove(&k).expect("present");
                inner.bytes -= cost(&k, &v);
            }
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).map.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Of the keys starting with `prefix`, the greatest and its value (keys whose suffix is a
    /// time written in order, such as `en|2026-12-05T10`, give the latest). Scans every key: for
    /// occasional readers such as a metrics scrape, not for every request.
    pub fn greatest_with_prefix(&self, prefix: &str) -> Option<(String, Value)> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        inner
            .map
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .max_by(|a, b| a.0.cmp(b.0))
            .map(|(k, (v, _))| (k.to_string(), v.clone()))
    }

    /// Every key ending with `suffix` and its value, in key order (e.g. `|2026-12-05T10`: every
    /// domain's record of an hour). Scans every key: for occasional readers such as a report
    /// download, not for hot paths.
    pub fn with_suffix(&self, suffix: &str) -> Vec<(String, Value)> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let mut found: Vec<(String, Value)> = inner
            .map
            .iter()
            .filter(|(k, _)| k.ends_with(suffix))
            .map(|(k, (v, _))| (k.to_string(), v.clone()))
            .collect();
        drop(inner);
        found.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        found
    }

    /// Bytes held, as counted against [`Bounds::max_bytes`].
    pub fn bytes(&self) -> usize {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).bytes
    }

    /// Entries dropped to stay under the byte budget so far.
    pub fn evicted(&self) -> u64 {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).evicted
    }

    /// Whether the reader has read up to where the topic ended when it started: before that, a
    /// missing key may only not have been read yet.
    pub fn caught_up(&self) -> bool {
        self.caught_up.load(Ordering::Acquire)
    }

    /// The reader caught up (or started over: `false`).
    pub fn set_caught_up(&self, yes: bool) {
        self.caught_up.store(yes, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str, ts: i64) -> Option<Value> {
        Some(Value::new(s.as_bytes(), ts))
    }

    #[test]
    fn the_greatest_key_of_a_prefix_is_the_latest_hour() {
        let t = LatestTable::new(Bounds { retention_ms: DAY, max_bytes: 1 << 20 });
        for (k, val) in
            [("en|2026-12-05T09", "a"), ("en|2026-12-05T11", "b"), ("en|2026-12-05T10", "c"), ("de|2026-12-06T00", "d")]
        {
            t.apply(k, v(val, 10), 10);
        }
        let (k, got) = t.greatest_with_prefix("en|").expect("en has hours");
        assert_eq!((k.as_str(), &**got.bytes), ("en|2026-12-05T11", &b"b"[..]));
        assert!(t.greatest_with_prefix("fr|").is_none());
    }

    #[test]
    fn what_readers_derive_is_computed_once_per_record() {
        let s = Stored::new(b"{\"final\": true}");
        assert_eq!(&*s, b"{\"final\": true}");
        assert_eq!(s.digest(), xxhash_rust::xxh3::xxh3_64(b"{\"final\": true}"));
        let mut calls = 0;
        for _ in 0..3 {
            let f = s.flag(|b| {
                calls += 1;
                Some(b.windows(4).any(|w| w == b"true"))
            });
            assert_eq!(f, Some(true));
        }
        assert_eq!(calls, 1);
        // A new record of the key is a new `Stored`: nothing carried over.
        assert_eq!(Stored::new(b"{}").flag(|_| None), None);
    }

    const DAY: i64 = 86_400_000;

    #[test]
    fn latest_value_wins_and_a_tombstone_removes() {
        let t = LatestTable::new(Bounds { retention_ms: DAY, max_bytes: 1 << 20 });
        t.apply("a", v("1", 10), 10);
        t.apply("a", v("22", 11), 11);
        assert_eq!(&**t.get("a").unwrap().bytes, b"22");
        assert_eq!(t.bytes(), 1 + 2 + ENTRY_OVERHEAD);
        t.apply("a", None, 12);
        assert!(t.get("a").is_none());
        assert_eq!((t.len(), t.bytes()), (0, 0));
    }

    #[test]
    fn old_records_are_not_kept_and_expire() {
        let t = LatestTable::new(Bounds { retention_ms: DAY, max_bytes: 1 << 20 });
        let now = 10 * DAY;
        t.apply("old", v("x", now - DAY - 1), now);
        assert!(t.get("old").is_none(), "older than the retention when read");
        t.apply("a", v("x", now - DAY + 5), now);
        t.apply("b", v("x", now), now);
        t.expire(now + 4);
        assert!(t.get("a").is_some());
        t.expire(now + 6);
        assert!(t.get("a").is_none() && t.get("b").is_some());
    }

    #[test]
    fn the_byte_budget_drops_the_least_recently_written() {
        let per = 1 + 1 + ENTRY_OVERHEAD;
        let t = LatestTable::new(Bounds { retention_ms: DAY, max_bytes: 3 * per });
        for k in ["a", "b", "c"] {
            t.apply(k, v("x", 1), 1);
        }
        t.apply("a", v("y", 2), 2); // rewritten: now the newest
        t.apply("d", v("x", 3), 3);
        assert!(t.get("b").is_none(), "b was written least recently");
        assert!(t.get("a").is_some() && t.get("c").is_some() && t.get("d").is_some());
        assert_eq!(t.evicted(), 1);
        assert!(t.bytes() <= 3 * per);
    }

    /// Against a model on random operations: a map of the latest values, in write order,
    /// trimmed from the oldest write to the budget.
    #[test]
    fn equals_a_model() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _case in 0..200 {
            let budget = 400;
            let t = LatestTable::new(Bounds { retention_ms: i64::MAX / 4, max_bytes: budget });
            let mut model: Vec<(String, usize)> = Vec::new(); // write order, oldest first
            for i in 0..rng.gen_range(1..300) {
                let key = format!("k{}", rng.gen_range(0..8));
                let len: Option<usize> = rng.gen_bool(0.8).then(|| rng.gen_range(0..40));
                model.retain(|(mk, _)| *mk != key);
                let value = len.map(|n| Value::new(&vec![b'v'; n], i as i64));
                if let Some(n) = len {
                    model.push((key.clone(), n));
                }
                t.apply(&key, value, i as i64);
                let mut total: usize = model.iter().map(|(k, n)| k.len() + n + ENTRY_OVERHEAD).sum();
                while total > budget {
                    let (k, n) = model.remove(0);
                    total -= k.len() + n + ENTRY_OVERHEAD;
                }
                assert_eq!(t.len(), model.len());
                assert_eq!(t.bytes(), total);
                for (k, n) in &model {
                    assert_eq!(t.get(k).map(|v| v.bytes.len()), Some(*n));
                }
            }
        }
    }
}
