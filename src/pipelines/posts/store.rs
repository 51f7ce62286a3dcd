//! The posts pipeline's durable state: each partition's share of the trending counts, per minute
//! bucket and tag, written to the `posts` store's changelog one changed bucket at a time (key
//! `b/<bucket start ms>`, tombstoned when the bucket leaves the window).

use std::collections::{BTreeMap, BTreeSet};

// hashbrown with foldhash: a tag is looked up per hashtag of every post; SipHash cost more than
// the rest of the count.
use hashbrown::HashMap;

use super::config::PostsConfig;
use super::trending::TagHit;
use crate::engine::state::{Change, Entries};
use crate::ops::codec::{self, Reader};
use crate::ops::window::AddOutcome;

/// Version byte of a bucket value in the changelog.
const BUCKET_FORMAT: u8 = 1;

/// One partition's share of the trending counts: the durable state of the posts pipeline. Its
/// counts follow the cross-partition [`super::HashtagTrending`] (same window, same bounds), so a
/// restored partition can hand its share back to the aggregate.
#[derive(Debug, Default)]
pub struct TagBuckets {
    window_ms: i64,
    bucket_ms: i64,
    max_tags: usize,
    /// Bucket start -> tag -> count.
    buckets: BTreeMap<i64, HashMap<String, u64>>,
    entries: usize,
    dirty: BTreeSet<i64>,
    expired: Vec<i64>,
}

impl TagBuckets {
    /// An empty store for the pipeline's config.
    pub fn new(cfg: &PostsConfig) -> Self {
        Self {
            window_ms: cfg.trending_window.as_millis() as i64,
            bucket_ms: cfg.trending_bucket.as_millis() as i64,
            max_tags: cfg.trending_max_tags,
            ..Self::default()
        }
    }

    /// Counts one occurrence of `tag` at event time `ts_ms`; returns the tag's count in that
    /// bucket now, or why the occurrence was ignored.
    #[inline] // per hashtag of every post, called from the processor's module
    pub fn add(&mut self, tag: &str, ts_ms: i64) -> Result<u64, AddOutcome> {
        let start = ts_ms.div_euclid(self.bucket_ms) * self.bucket_ms;
        let newest = self.buckets.last_key_value().map_or(start, |(k, _)| (*k).max(start));
        if start <= newest - self.window_ms {
            return Err(AddOutcome::Late); // too late for the window: the aggregate ignores it too
        }
        let bucket = self.buckets.entry(start).or_default();
        let count = match bucket.get_mut(tag) {
            Some(n) => {
                *n += 1;
                *n
            }
            None if self.entries >= self.max_tags => return Err(AddOutcome::OverCapacity), // the aggregate's bound
            None => {
                bucket.insert(tag.to_string(), 1);
                self.entries += 1;
                1
            }
        };
        self.dirty.insert(start);
        while let Some((&oldest, _)) = self.buckets.first_key_value() {
            if oldest > newest - self.window_ms {
                break;
            }
            let gone = self.buckets.remove(&oldest).map_or(0, |b| b.len());
            self.entries -= gone;
            self.dirty.remove(&oldest);
            self.expired.push(oldest);
        }
        Ok(count)
    }

    fn key(start: i64) -> Vec<u8> {
        format!("b/{start}").into_bytes()
    }

    /// Moves every change since the last call into `out`: each changed bucket whole (key
    /// `b/<bucket start ms>`), a tombstone for each bucket that left the window.
    pub fn take_changes(&mut self, out: &mut Vec<Change>) {
        for start in self.expired.drain(..) {
            out.push((Self::key(start), None));
        }
        for start in std::mem::take(&mut self.dirty) {
            let Some(bucket) = self.buckets.get(&start) else { continue };
            let mut v = Vec::with_capacity(2 + bucket.len() * 12);
            v.push(BUCKET_FORMAT);
            codec::put_u64(&mut v, bucket.len() as u64);
            for (tag, n) in bucket {
                codec::put_bytes(&mut v, tag.as_bytes());
                codec::put_u64(&mut v, *n);
            }
            out.push((Self::key(start), Some(v)));
        }
    }

    fn decode(value: &[u8]) -> Result<HashMap<String, u64>, codec::Corrupt> {
        let mut r = Reader::new(value);
        if r.u8()? != BUCKET_FORMAT {
            return Err(codec::Corrupt { at: 0, what: "bucket format 1" });
        }
        let n = r.u64()? as usize;
        let mut tags = HashMap::with_capacity(n.min(1 << 20));
        for _ in 0..n {
            let tag = r.str()?.to_string();
            tags.insert(tag, r.u64()?);
        }
        Ok(tags)
    }

    /// Rebuilds from changelog entries; returns the restored counts as aggregate parts of
    /// `partition`.
    pub fn restore(&mut self, partition: i32, entries: Entries, out: &mut Vec<TagHit>) {
        for (key, value) in entries {
            let start = std::str::from_utf8(&key).ok().and_then(|k| k.strip_prefix("b/")?.parse::<i64>().ok());
            let (Some(start), Ok(tags)) = (start, Self::decode(&value)) else {
                tracing::warn!(key = %String::from_utf8_lossy(&key), "skipping a corrupt posts state entry");
                continue;
            };
            self.entries += tags.len();
            self.buckets.insert(start, tags);
        }
        for (&start, tags) in &self.buckets {
            for (tag, &count) in tags {
                out.push(TagHit { partition, tag: tag.clone(), ts_ms: start, count });
            }
        }
    }
}
