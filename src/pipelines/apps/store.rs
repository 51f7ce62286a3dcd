//! The apps pipeline's durable state: one `posts` partition's share of the mention counts, per app
//! since it was loaded (`mentions_total`) and per bucket of event time over the last 24 hours
//! (`mentions_24h`), written to the `apps` store's changelog as it changes:
//!
//! - `t/<app id>` -> the app's total (8 bytes, little endian), tombstoned when the app leaves the
//!   catalogue;
//! - `b/<bucket start ms>` -> the bucket's counts per app (format byte, count, then `(id, n)`
//!   pairs, [`crate::ops::codec`]), rewritten whole when it changes, tombstoned when it leaves the
//!   window.
//!
//! A flush costs the apps mentioned since the last one plus the buckets that changed (with 5-minute
//! buckets, usually one). The window is bounded (24 h / bucket buckets) and so are the totals (one
//! per app of the catalogue ever mentioned; removed apps are forgotten).

use std::collections::{BTreeMap, BTreeSet};

use hashbrown::{HashMap, HashSet};

use super::catalogue::AppId;
use crate::engine::state::{Change, Entries};
use crate::ops::codec::{self, Reader};

/// Version byte of a bucket value in the changelog.
const BUCKET_FORMAT: u8 = 1;

/// The 24-hour span of `mentions_24h`.
pub const WINDOW_MS: i64 = 86_400_000;

/// Mention counts of one partition (or, merged, of an instance): per app since it was loaded,
/// and per app per bucket of event time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Share {
    /// App -> mentions since it was loaded.
    pub totals: HashMap<AppId, u64>,
    /// Bucket start (ms) -> app -> mentions in the bucket.
    pub buckets: BTreeMap<i64, HashMap<AppId, u64>>,
}

/// One partition's mention counts and what changed since the last flush: the durable state of
/// the apps pipeline.
#[derive(Debug)]
pub struct MentionCounts {
    bucket_ms: i64,
    share: Share,
    /// Start of the newest bucket seen.
    head: Option<i64>,
    dirty_totals: HashSet<AppId>,
    dirty_buckets: BTreeSet<i64>,
    gone_totals: Vec<AppId>,
    expired: Vec<i64>,
    /// (bucket, app) counts that left the window since [`MentionCounts::take_released`].
    released: Vec<(i64, AppId)>,
}

/// The first bucket of the window whose newest bucket starts at `head`.
pub fn window_start(head: i64, bucket_ms: i64) -> i64 {
    head - WINDOW_MS + bucket_ms
}

impl MentionCounts {
    /// Empty counts with buckets of `bucket_ms` (which divides 24 h: checked by the config).
    pub fn new(bucket_ms: i64) -> Self {
        Self {
            bucket_ms,
            share: Share::default(),
            head: None,
            dirty_totals: HashSet::new(),
            dirty_buckets: BTreeSet::new(),
            gone_totals: Vec::new(),
            expired: Vec::new(),
            released: Vec::new(),
        }
    }

    /// The counts.
    pub fn share(&self) -> &Share {
        &self.share
    }

    /// Counts one mention of `app` by a post of event time `ts_ms`; a post older than the window
    /// counts in the total only. Returns the app's total now, and its bucket's start and count
    /// when the mention counted in the window.
    pub fn add(&mut self, app: &AppId, ts_ms: i64) -> (u64, Option<(i64, u64)>) {
        let total = {
            let t = self.share.totals.entry_ref(app).or_insert(0);
            *t += 1;
            *t
        };
        self.dirty_totals.get_or_insert_with(app, AppId::clone);
        let bucket = ts_ms.div_euclid(self.bucket_ms) * self.bucket_ms;
        if self.head.is_none_or(|h| bucket > h) {
            self.head = Some(bucket);
            let start = window_start(bucket, self.bucket_ms);
            while let Some(entry) = self.share.buckets.first_entry() {
                if *entry.key() >= start {
                    break;
                }
                let (gone, apps) = entry.remove_entry();
                self.released.extend(apps.into_keys().map(|app| (gone, app)));
                self.dirty_buckets.remove(&gone);
                self.expired.push(gone);
            }
        }
        let start = window_start(self.head.expect("set above"), self.bucket_ms);
        if bucket < start {
            return (total, None);
        }
        let n = self.share.buckets.entry(bucket).or_default().entry_ref(app).or_insert(0);
        *n += 1;
        let n = *n;
        self.dirty_buckets.insert(bucket);
        (total, Some((bucket, n)))
    }

    /// The (bucket, app) counts that left the window since the last call: their share records
    /// are removed (tombstones).
    pub fn take_released(&mut self) -> Vec<(i64, AppId)> {
        std::mem::take(&mut self.released)
    }

    /// Forgets every app `keep` refuses (they left the catalogue). Returns true if any was
    /// forgotten.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) -> bool {
        let gone: Vec<AppId> = self.share.totals.keys().filter(|id| !keep(id)).cloned().collect();
        if gone.is_empty() {
            return false;
        }
        for id in &gone {
            self.share.totals.remove(id);
            self.dirty_totals.remove(id);
        }
        for (start, bucket) in self.share.buckets.iter_mut() {
            let before = bucket.len();
            bucket.retain(|id, _| keep(id));
            if bucket.len() != before {
                self.dirty_buckets.insert(*start);
            }
        }
        self.gone_totals.extend(gone);
        true
    }

    fn total_key(id: &str) -> Vec<u8> {
        format!("t/{id}").into_bytes()
    }

    fn bucket_key(start: i64) -> Vec<u8> {
        format!("b/{start}").into_bytes()
    }

    /// Moves every change since the last call into `out` (see the module docs).
    pub fn take_changes(&mut self, out: &mut Vec<Change>) {
        for id in self.gone_totals.drain(..) {
            out.push((Self::total_key(&id), None));
        }
        for id in self.dirty_totals.drain() {
            if let Some(n) = self.share.totals.get(&id) {
                out.push((Self::total_key(&id), Some(n.to_le_bytes().to_vec())));
            }
        }
        for start in self.expired.drain(..) {
            out.push((Self::bucket_key(start), None));
        }
        for start in std::mem::take(&mut self.dirty_buckets) {
            let value = self.share.buckets.get(&start).filter(|b| !b.is_empty()).map(|bucket| {
                let mut v = Vec::with_capacity(10 + bucket.len() * 16);
                v.push(BUCKET_FORMAT);
                codec::put_u64(&mut v, bucket.len() as u64);
                for (id, n) in bucket {
                    codec::put_bytes(&mut v, id.as_bytes());
                    codec::put_u64(&mut v, *n);
                }
                v
            });
            out.push((Self::bucket_key(start), value));
        }
    }

    fn decode_bucket(value: &[u8]) -> Result<HashMap<AppId, u64>, codec::Corrupt> {
        let mut r = Reader::new(value);
        if r.u8()? != BUCKET_FORMAT {
            return Err(codec::Corrupt { at: 0, what: "bucket format 1" });
        }
        let n = r.u64()? as usize;
        let mut counts = HashMap::with_capacity(n.min(1 << 20));
        for _ in 0..n {
            let id: AppId = r.str()?.into();
            counts.insert(id, r.u64()?);
        }
        Ok(counts)
    }

    /// Rebuilds from the changelog's live entries (on a fresh store).
    pub fn restore(&mut self, entries: Entries) {
        for (key, value) in entries {
            let parsed = std::str::from_utf8(&key).ok().and_then(|k| {
                if let Some(id) = k.strip_prefix("t/") {
                    let n = u64::from_le_bytes(value.as_slice().try_into().ok()?);
                    self.share.totals.insert(id.into(), n);
                    return Some(());
                }
                let start = k.strip_prefix("b/")?.parse::<i64>().ok()?;
                self.share.buckets.insert(start, Self::decode_bucket(&value).ok()?);
                Some(())
            });
            if parsed.is_none() {
                tracing::warn!(key = %String::from_utf8_lossy(&key), "skipping a corrupt apps state entry");
            }
        }
        self.head = self.share.buckets.last_key_value().map(|(k, _)| *k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::state::{flush_records, MemoryBackend, StateBackend};

    const MIN: i64 = 60_000;
    const BUCKET: i64 = 5 * MIN;

    fn id(s: &str) -> AppId {
        s.into()
    }

    #[test]
    fn totals_count_everything_and_the_window_the_last_24_hours() {
        let mut c = MentionCounts::new(BUCKET);
        let t0 = 1_795_428_000_000;
        c.add(&id("a"), t0);
        c.add(&id("a"), t0 + MIN);
        c.add(&id("b"), t0 + 25 * 60 * MIN); // a day later: a's bucket leaves the window
        assert_eq!(c.share().totals.get("a"), Some(&2));
        assert_eq!(c.share().buckets.len(), 1);
        c.add(&id("a"), t0 - 1); // late: the total only
        assert_eq!(c.share().totals.get("a"), Some(&3));
        assert_eq!(c.share().buckets.len(), 1);
    }

    #[test]
    fn changes_restore_the_same_counts_and_forgotten_apps_stay_gone() {
        let backend = MemoryBackend::new();
        let topic = "apps-changelog";
        let mut a = MentionCounts::new(BUCKET);
        let t0 = 1_795_428_000_000;
        for i in 0..600 {
            a.add(&id(["x", "y", "z"][i % 3]), t0 + i as i64 * 7 * MIN);
            if i % 50 == 49 {
                let mut changes = Vec::new();
                a.take_changes(&mut changes);
                backend.append(flush_records(topic, 0, 1, changes, Some(i as i64 + 1)));
            }
            if i == 300 {
                a.retain(|id| id != "z");
            }
        }
        let restored = backend.restore(topic, 0, 2).expect("memory backend");
        assert_eq!(restored.position, Some(600));
        assert!(restored.entries.len() <= 2 + (WINDOW_MS / BUCKET) as usize, "{} entries", restored.entries.len());
        let mut b = MentionCounts::new(BUCKET);
        b.restore(restored.entries);
        assert_eq!(b.share(), a.share());
        assert!(!b.share().totals.contains_key("z") || a.share().totals.contains_key("z"));
        // Both go on identically.
        a.add(&id("x"), t0 + 601 * 7 * MIN);
        b.add(&id("x"), t0 + 601 * 7 * MIN);
        assert_eq!(b.share(), a.share());
    }
}
