//! Sliding event-time counts: how often each key occurred in the last `window` of event time.
//!
//! Time is cut into fixed buckets (one minute by default); the window is the newest
//! `window / bucket` buckets, ending at the bucket that holds the highest event time seen. Buckets
//! live in a `BTreeMap` keyed by bucket start and are drained from the front as event time
//! advances, subtracting their counts from the running totals, so reading the totals is free and
//! advancing costs only the expired buckets.
//!
//! While the window holds a single bucket, that bucket *is* the totals and no separate totals map
//! is kept: data whose events share a timestamp per batch (hourly page-view dumps put every view
//! at its hour's start) then costs one map update per event instead of two, and an expired
//! bucket is dropped whole instead of being subtracted key by key.

use std::collections::BTreeMap;

use hashbrown::HashMap;
use std::hash::Hash;

/// Counts per key over a sliding event-time window.
#[derive(Debug)]
pub struct SlidingCounts<K: Eq + Hash + Clone> {
    window_ms: i64,
    bucket_ms: i64,
    max_keys: usize,
    buckets: BTreeMap<i64, HashMap<K, u64>>,
    /// Running totals, kept only while more than one bucket is live (see the module docs).
    totals: HashMap<K, u64>,
    /// True while `totals` is not kept because at most one bucket is live.
    single: bool,
    /// Start of the newest bucket (the one holding the highest event time seen).
    head: Option<i64>,
    late: u64,
    dropped: u64,
    version: u64,
}

/// What happened to one `add`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddOutcome {
    /// Counted in the window.
    Counted,
    /// Older than the window: ignored.
    Late,
    /// A new key while the window already tracks `max_keys` keys: ignored.
    OverCapacity,
}

impl<K: Eq + Hash + Clone> SlidingCounts<K> {
    /// A window of `window_ms` cut into buckets of `bucket_ms` (which must divide it), tracking at
    /// most `max_keys` distinct keys at once.
    ///
    /// # Panics
    /// If `bucket_ms` is not positive or does not divide `window_ms`: config validation rejects
    /// such values before they get here.
    pub fn new(window_ms: i64, bucket_ms: i64, max_keys: usize) -> Self {
        assert!(bucket_ms > 0 && window_ms >= bucket_ms && window_ms % bucket_ms == 0, "bucket must divide window");
        Self {
            window_ms,
            bucket_ms,
            max_keys,
            buckets: BTreeMap::new(),
            totals: HashMap::new(),
            single: true,
            head: None,
            late: 0,
            dropped: 0,
            version: 0,
        }
    }

    fn bucket_of(&self, ts_ms: i64) -> i64 {
        ts_ms.div_euclid(self.bucket_ms) * self.bucket_ms
    }

    /// Counts `n` occurrences of `key` at event time `ts_ms`.
    pub fn add(&mut self, key: &K, ts_ms: i64, n: u64) -> AddOutcome {
        let bucket = self.bucket_of(ts_ms);
        match self.head {
            Some(head) if bucket > head => self.advance_to(bucket),
            Some(_) => {}
            None => self.head = Some(bucket),
        }
        let (start, _) = self.bounds().expect("head was just set");
        if bucket < start {
            self.late += 1;
            return AddOutcome::Late;
        }
        if self.single && self.buckets.keys().any(|b| *b != bucket) {
            // A second live bucket: from now on the totals are kept separately.
            self.totals = self.buckets.values().next().cloned().unwrap_or_default();
            self.single = false;
        }
        let known = if self.single {
            self.buckets.get(&bucket).is_some_and(|c| c.contains_key(key))
        } else {
            self.totals.contains_key(key)
        };
        if !known && self.len() >= self.max_keys {
            self.dropped += 1;
            return AddOutcome::OverCapacity;
        }
        // One hash per map; a key already present costs no clone.
        let counts = self.buckets.entry(bucket).or_default();
        match counts.entry_ref(key) {
            hashbrown::hash_map::EntryRef::Occupied(mut e) => *e.get_mut() += n,
            hashbrown::hash_map::EntryRef::Vacant(e) => {
                e.insert_with_key(key.clone(), n);
            }
        }
        if !self.single {
            match self.totals.entry_ref(key) {
                hashbrown::hash_map::EntryRef::Occupied(mut e) => *e.get_mut() += n,
                hashbrown::hash_map::EntryRef::Vacant(e) => {
                    e.insert_with_key(key.clone(), n);
                }
            }
        }
        self.version += 1;
        AddOutcome::Counted
    }

    /// Takes back `n` occurrences of `key` at event time `ts_ms` (a correction: the counts of a
    /// bucket that is still in the window). Does nothing for a bucket outside the window or
    /// counts it does not hold; never goes below zero.
    pub fn sub(&mut self, key: &K, ts_ms: i64, n: u64) {
        let bucket = self.bucket_of(ts_ms);
        let Some(counts) = self.buckets.get_mut(&bucket) else { return };
        let Some(c) = counts.get_mut(key) else { return };
        let taken = n.min(*c);
        *c -= taken;
        if *c == 0 {
            counts.remove(key);
        }
        if counts.is_empty() {
            self.buckets.remove(&bucket);
        }
        if !self.single {
            if let Some(total) = self.totals.get_mut(key) {
                *total -= taken.min(*total);
                if *total == 0 {
                    self.totals.remove(key);
                }
            }
            if self.buckets.len() <= 1 {
                self.totals = HashMap::new();
                self.single = true;
            }
        }
        self.version += 1;
    }

    /// Moves the head to `bucket` and expires the buckets that fall out of the window.
    fn advance_to(&mut self, bucket: i64) {
        self.head = Some(bucket);
        let start = bucket - self.window_ms + self.bucket_ms;
        while let Some(entry) = self.buckets.first_entry() {
            if *entry.key() >= start {
                break;
            }
            let expired = entry.remove();
            if self.single {
                continue; // the bucket was the totals: dropped whole
            }
            for (key, n) in expired {
                if let Some(total) = self.totals.get_mut(&key) {
                    *total -= n;
                    if *total == 0 {
                        self.totals.remove(&key);
                    }
                }
            }
        }
        if !self.single && self.buckets.len() <= 1 {
            self.totals = HashMap::new();
            self.single = true;
        }
        self.version += 1;
    }

    /// A window as [`new`](Self::new) makes it, holding the restored `buckets` (bucket start ->
    /// counts) with its newest bucket at `head`, as saved by a durable store. Buckets outside the
    /// window ending at `head` and zero counts are dropped; the totals are rebuilt. The version
    /// starts at 1: a caller that tracks "changed since emitted" restores that as a flag.
    ///
    /// # Panics
    /// As [`new`](Self::new).
    pub fn restored(
        window_ms: i64,
        bucket_ms: i64,
        max_keys: usize,
        head: Option<i64>,
        mut buckets: BTreeMap<i64, HashMap<K, u64>>,
    ) -> Self {
        let mut w = Self::new(window_ms, bucket_ms, max_keys);
        let Some(head) = head.map(|h| w.bucket_of(h)) else {
            return w; // nothing was ever counted: no bucket can be live
        };
        w.head = Some(head);
        let start = head - window_ms + bucket_ms;
        buckets.retain(|b, counts| {
            counts.retain(|_, n| *n > 0);
            *b >= start && *b <= head && !counts.is_empty()
        });
        if buckets.len() > 1 {
            let mut totals: HashMap<K, u64> =
                HashMap::with_capacity(buckets.values().map(HashMap::len).max().unwrap_or(0));
            for counts in buckets.values() {
                for (k, n) in counts {
                    match totals.entry_ref(k) {
                        hashbrown::hash_map::EntryRef::Occupied(mut e) => *e.get_mut() += n,
                        hashbrown::hash_map::EntryRef::Vacant(e) => {
                            e.insert_with_key(k.clone(), *n);
                        }
                    }
                }
            }
            w.totals = totals;
            w.single = false;
        }
        w.buckets = buckets;
        w.version = 1;
        w
    }

    /// Start of the newest bucket (the one holding the highest event time seen), if any.
    pub fn head(&self) -> Option<i64> {
        self.head
    }

    /// `[start, end)` of the current window in epoch milliseconds, if anything was seen.
    pub fn bounds(&self) -> Option<(i64, i64)> {
        self.head.map(|h| (h - self.window_ms + self.bucket_ms, h + self.bucket_ms))
    }

    /// Current totals per key over the window.
    pub fn totals(&self) -> impl Iterator<Item = (&K, u64)> {
        let map = if self.single { self.buckets.values().next() } else { Some(&self.totals) };
        map.into_iter().flat_map(|m| m.iter().map(|(k, n)| (k, *n)))
    }

    /// Number of distinct keys in the window.
    pub fn len(&self) -> usize {
        if self.single {
            self.buckets.values().next().map_or(0, HashMap::len)
        } else {
            self.totals.len()
        }
    }

    /// True when the window holds no keys.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Events ignored because they were older than the window.
    pub fn late(&self) -> u64 {
        self.late
    }

    /// Events ignored because the key bound was reached.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Changes whenever counts or bounds change: lets a caller skip work when nothing happened.
    pub fn version(&self) -> u64 {
        self.version
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn total(w: &SlidingCounts<String>, k: &str) -> u64 {
        w.totals().find(|(key, _)| key.as_str() == k).map(|(_, n)| n).unwrap_or(0)
    }

    #[test]
    fn sub_takes_back_counts_in_buckets_and_totals() {
        let mut w = SlidingCounts::new(3_600_000, 60_000, 100);
        w.add(&"a", 0, 5);
        w.add(&"a", 60_000, 3);
        w.add(&"b", 60_000, 1);
        w.sub(&"a", 10, 2);
        let totals: std::collections::BTreeMap<_, _> = w.totals().map(|(k, n)| (*k, n)).collect();
        assert_eq!(totals, [("a", 6), ("b", 1)].into_iter().collect());
        w.sub(&"b", 60_000, 5); // never below zero; the key goes
        w.sub(&"a", 0, 3); // its first bucket empties: one bucket left, which is the totals again
        let totals: std::collections::BTreeMap<_, _> = w.totals().map(|(k, n)| (*k, n)).collect();
        assert_eq!(totals, [("a", 3)].into_iter().collect());
        w.sub(&"zz", 0, 1); // unknown: nothing
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn counts_within_window_and_expires_old_buckets() {
        let mut w = SlidingCounts::new(60 * MIN, MIN, 100);
        let k = "rust".to_string();
        assert_eq!(w.add(&k, 0, 1), AddOutcome::Counted);
        assert_eq!(w.add(&k, 30 * MIN, 2), AddOutcome::Counted);
        assert_eq!(total(&w, "rust"), 3);
        assert_eq!(w.bounds(), Some((-29 * MIN, 31 * MIN)));
        // 60 minutes after the first bucket: bucket 0 falls out.
        w.add(&"other".to_string(), 60 * MIN, 1);
        assert_eq!(total(&w, "rust"), 2);
        assert_eq!(w.bounds(), Some((MIN, 61 * MIN)));
        w.add(&"other".to_string(), 200 * MIN, 1);
        assert_eq!(total(&w, "rust"), 0);
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn out_of_order_inside_window_counts_late_outside_does_not() {
        let mut w = SlidingCounts::new(60 * MIN, MIN, 100);
        let k = "a".to_string();
        w.add(&k, 100 * MIN, 1);
        assert_eq!(w.add(&k, 50 * MIN, 1), AddOutcome::Counted);
        assert_eq!(w.add(&k, 40 * MIN, 1), AddOutcome::Late);
        assert_eq!(total(&w, "a"), 2);
        assert_eq!(w.late(), 1);
    }

    #[test]
    fn key_bound_is_enforced_and_counted() {
        let mut w = SlidingCounts::new(MIN, MIN, 2);
        w.add(&"a".to_string(), 0, 1);
        w.add(&"b".to_string(), 0, 1);
        assert_eq!(w.add(&"c".to_string(), 0, 1), AddOutcome::OverCapacity);
        assert_eq!(w.add(&"a".to_string(), 0, 1), AddOutcome::Counted);
        assert_eq!(w.dropped(), 1);
        // Once a bucket expires, room frees up again.
        w.add(&"a".to_string(), 5 * MIN, 1);
        assert_eq!(w.add(&"c".to_string(), 5 * MIN, 1), AddOutcome::Counted);
    }

    #[test]
    fn negative_timestamps_bucket_correctly() {
        let mut w = SlidingCounts::new(2 * MIN, MIN, 10);
        w.add(&"a".to_string(), -1, 1);
        assert_eq!(w.bounds(), Some((-2 * MIN, 0)));
    }

    /// Property: totals equal a brute-force sum over the accepted events still in the window,
    /// through single-bucket and many-bucket phases, out of order, with expiries.
    #[test]
    fn totals_equal_brute_force_through_single_and_many_bucket_phases() {
        use rand::{Rng, SeedableRng};
        for seed in 0..300u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let (window, bucket) = (rng.gen_range(1..6) * MIN, MIN);
            let mut w = SlidingCounts::new(window, bucket, usize::MAX);
            let mut accepted: Vec<(i64, String, u64)> = Vec::new();
            let mut head: Option<i64> = None;
            let mut t = 0i64;
            for _ in 0..rng.gen_range(1..120) {
                // Mostly same-minute bursts, sometimes jumps forward or back.
                match rng.gen_range(0..10) {
                    0 => t += rng.gen_range(1..4) * MIN,
                    1 => t -= rng.gen_range(0..3) * MIN,
                    2 => t += rng.gen_range(10..20) * MIN,
                    _ => t += rng.gen_range(0..1000),
                }
                let (k, n) = (format!("k{}", rng.gen_range(0..6)), rng.gen_range(1..5));
                let b = t.div_euclid(bucket) * bucket;
                let h = head.map_or(b, |h: i64| h.max(b));
                let late = b < h - window + bucket;
                head = Some(h);
                let got = w.add(&k, t, n);
                assert_eq!(got == AddOutcome::Late, late, "seed {seed}");
                if !late {
                    accepted.push((b, k, n));
                }
                let start = h - window + bucket;
                let mut want: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
                for (b, k, n) in &accepted {
                    if *b >= start {
                        *want.entry(k.clone()).or_default() += n;
                    }
                }
                let have: std::collections::BTreeMap<String, u64> = w.totals().map(|(k, n)| (k.clone(), n)).collect();
                assert_eq!(have, want, "seed {seed}");
                assert_eq!(w.len(), want.len());
            }
        }
    }

    /// Property: a window restored from its live buckets and head behaves like the original from
    /// then on: same totals, bounds and outcomes, key bound included.
    #[test]
    fn a_restored_window_continues_like_the_original() {
        use rand::{Rng, SeedableRng};
        for seed in 0..200u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let (window, max_keys) = (rng.gen_range(1..6) * MIN, rng.gen_range(1..8));
            let mut w = SlidingCounts::new(window, MIN, max_keys);
            // What a store would have saved: every counted event, by bucket.
            let mut saved: BTreeMap<i64, HashMap<String, u64>> = BTreeMap::new();
            let mut r: Option<SlidingCounts<String>> = None;
            let mut t = 0i64;
            for step in 0..rng.gen_range(1..150) {
                t += match rng.gen_range(0..10) {
                    0 => rng.gen_range(1..4) * MIN,
                    1 => -rng.gen_range(0..3) * MIN,
                    _ => rng.gen_range(0..1000),
                };
                let (k, n) = (format!("k{}", rng.gen_range(0..10)), rng.gen_range(1..5));
                let got = w.add(&k, t, n);
                if let Some(r) = &mut r {
                    assert_eq!(r.add(&k, t, n), got, "seed {seed} step {step}");
                }
                if got == AddOutcome::Counted {
                    *saved.entry(t.div_euclid(MIN) * MIN).or_default().entry(k).or_default() += n;
                }
                if r.is_none() && rng.gen_bool(0.1) {
                    r = Some(SlidingCounts::restored(window, MIN, max_keys, w.head(), saved.clone()));
                }
                if let Some(r) = &r {
                    let want: BTreeMap<&String, u64> = w.totals().collect();
                    let have: BTreeMap<&String, u64> = r.totals().collect();
                    assert_eq!(have, want, "seed {seed} step {step}");
                    assert_eq!((r.bounds(), r.len()), (w.bounds(), w.len()), "seed {seed} step {step}");
                }
            }
        }
    }
}
