//! `posts.trending`: the top hashtags over a sliding event-time window, across every partition
//! (a cross-partition aggregate, [`crate::engine::aggregate`]).
//!
//! A hashtag appears in posts of every partition, so its count is split across them. Each
//! partition's task keeps its own per-minute counts (its share, [`super::store`]) and hands on the
//! new count of every (minute, tag) it changes, as a [`TagHit`] of its partition. Across
//! instances these go through `posts.shares` (key `<partition>/<minute start>/<tag>`, see
//! [`publish`]), read whole by every instance. The aggregate keeps each partition's latest count
//! per (minute, tag) and sums them: a count read twice (at-least-once delivery, a restore) or
//! sent again by a partition's next owner replaces the previous one instead of adding to it, so
//! the totals equal what one instance holding every partition would count.

use super::config::PostsConfig;
use std::collections::BTreeMap;

use hashbrown::HashMap;

use super::names::{SHARES, TRENDING, TRENDING_KEY};
use super::records::{Trending, TrendingTag};
use crate::clock::format_ms;
use crate::engine::aggregate::share_key;
use crate::engine::{Aggregate, OutRecord, RejectClass, Rejection};
use crate::metrics::Metrics;
use crate::ops::topn::top_n;
use crate::ops::window::{AddOutcome, SlidingCounts};

/// A partition's count of one hashtag in one bucket, handed to the trending aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagHit {
    /// The input partition whose share this is.
    pub partition: i32,
    /// The hashtag (lower-cased, no `#`).
    pub tag: String,
    /// An event time in the bucket, epoch milliseconds.
    pub ts_ms: i64,
    /// The partition's count of the tag in that bucket, now (not an increment).
    pub count: u64,
}

/// Top hashtags over a sliding event-time window, across every partition of this instance.
pub struct HashtagTrending {
    counts: SlidingCounts<String>,
    /// Bucket start -> (partition, tag) -> that partition's count in `counts`.
    shares: BTreeMap<i64, HashMap<(i32, String), u64>>,
    bucket_ms: i64,
    top_n: usize,
    emitted_version: Option<u64>,
    last: Option<Trending>,
    /// Emit at the next tick even if unchanged (this instance just became the writer).
    force: bool,
    publish: Option<Publisher>,
}

/// Where every new ranking is published besides `posts.trending` (the view HTTP reads from).
pub type Publisher = Box<dyn Fn(&Trending) + Send>;

impl HashtagTrending {
    /// An empty trending view with the pipeline's config.
    /// (Ignored hashtags are counted by the partitions' processors, once each.)
    pub fn new(cfg: &PostsConfig, _metrics: Metrics) -> Self {
        let bucket_ms = cfg.trending_bucket.as_millis() as i64;
        Self {
            counts: SlidingCounts::new(cfg.trending_window.as_millis() as i64, bucket_ms, cfg.trending_max_tags),
            shares: BTreeMap::new(),
            bucket_ms,
            top_n: cfg.trending_top_n,
            emitted_version: None,
            last: None,
            force: false,
            publish: None,
        }
    }

    /// Applies one partition's new count of a tag in a bucket: the difference to the count it
    /// had goes into the window.
    fn apply(&mut self, hit: TagHit) {
        let bucket = hit.ts_ms.div_euclid(self.bucket_ms) * self.bucket_ms;
        if self.counts.bounds().is_some_and(|(start, _)| bucket < start) {
            return; // out of the window already
        }
        let key = (hit.partition, hit.tag);
        let old = self.shares.get(&bucket).and_then(|m| m.get(&key)).copied().unwrap_or(0);
        if hit.count > old {
            if self.counts.add(&key.1, hit.ts_ms, hit.count - old) != AddOutcome::Counted {
                return; // late for the window, or past its tag bound: not counted, not kept
            }
        } else if hit.count < old {
            self.counts.sub(&key.1, hit.ts_ms, old - hit.count);
        } else {
            return;
        }
        let bucket_shares = self.shares.entry(bucket).or_default();
        if hit.count == 0 {
            bucket_shares.remove(&key);
        } else {
            bucket_shares.insert(key, hit.count);
        }
        if let Some((start, _)) = self.counts.bounds() {
            while self.shares.first_key_value().is_some_and(|(b, _)| *b < start) {
                self.shares.pop_first();
            }
        }
    }

    /// Hands every new ranking to `publish` too.
    pub fn with_publisher(mut self, publish: Publisher) -> Self {
        self.publish = Some(publish);
        self
    }

    /// The current ranking, if any hashtag was seen.
    pub fn current(&self) -> Option<Trending> {
        let (start, end) = self.counts.bounds()?;
        let tags = top_n(self.counts.totals(), self.top_n)
            .into_iter()
            .enumerate()
            .map(|(i, r)| TrendingTag { rank: i + 1, tag: r.key, count: r.count })
            .collect();
        Some(Trending { window_start: format_ms(start), window_end: format_ms(end), tags })
    }
}

impl Aggregate for HashtagTrending {
    type Part = TagHit;

    fn merge(&mut self, parts: &mut Vec<TagHit>) {
        for hit in parts.drain(..) {
            self.apply(hit);
        }
    }

    /// Emits the ranking when it changed since the last emission.
    fn on_tick(&mut self, _now: chrono::DateTime<chrono::Utc>, out: &mut Vec<OutRecord>) {
        let force = std::mem::take(&mut self.force);
        if !force && self.emitted_version == Some(self.counts.version()) {
            return;
        }
        self.emitted_version = Some(self.counts.version());
        let Some(current) = self.current() else { return };
        if !force && self.last.as_ref() == Some(&current) {
            return;
        }
        let value = serde_json::to_vec(&current).expect("serializing plain structs cannot fail");
        out.push(OutRecord::new(TRENDING, TRENDING_KEY, value));
        if let Some(publish) = &self.publish {
            publish(&current);
        }
        self.last = Some(current);
    }

    fn forget_emitted(&mut self) {
        self.force = true;
    }
}

/// Publishes a task's parts as share records: the newest count of each (bucket, tag) it
/// changed, as `<partition>/<bucket start ms>/<tag>` with the count as its value, for buckets of
/// `bucket_ms` (see [`crate::engine::aggregate::PublishFn`]).
pub fn publisher(bucket_ms: i64) -> crate::engine::PublishFn<TagHit> {
    std::sync::Arc::new(move |partition, parts, out| publish(bucket_ms, partition, parts, out))
}

fn publish(bucket_ms: i64, partition: i32, parts: &mut Vec<TagHit>, out: &mut Vec<OutRecord>) {
    let mut newest: HashMap<(i64, &str), u64> = HashMap::with_capacity(parts.len());
    let bucket_of = |ts: i64| ts.div_euclid(bucket_ms) * bucket_ms;
    for hit in parts.iter() {
        // A partition's counts only grow within one batch: the last is the newest.
        newest.insert((bucket_of(hit.ts_ms), hit.tag.as_str()), hit.count);
    }
    for ((bucket, tag), count) in newest {
        out.push(OutRecord::new(
            SHARES,
            share_key(partition, &format!("{bucket}/{tag}")),
            count.to_string().into_bytes(),
        ));
    }
    parts.clear();
}

/// A `posts.shares` record back into the count it carries (see
/// [`crate::engine::aggregate::DecodeShare`]); a tombstone is a count of zero.
pub fn decode_share(partition: i32, what: &str, value: Option<&[u8]>) -> Result<TagHit, Rejection> {
    let (bucket, tag) = what
        .split_once('/')
        .and_then(|(b, t)| Some((b.parse::<i64>().ok()?, t)))
        .filter(|(_, t)| !t.is_empty())
        .ok_or_else(|| {
            Rejection::new(RejectClass::InvalidValue, format!("posts share `{what}` is not `<bucket start ms>/<tag>`"))
        })?;
    let count = match value {
        None => 0,
        Some(v) => std::str::from_utf8(v).ok().and_then(|v| v.trim().parse::<u64>().ok()).ok_or_else(|| {
            Rejection::new(RejectClass::InvalidValue, "a posts share's value is a count (a decimal integer)")
        })?,
    };
    Ok(TagHit { partition, tag: tag.to_string(), ts_ms: bucket, count })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// Shares read twice, out of date, or from a partition's next owner never count twice, and
    /// a tag's counts from every partition add up; the records round-trip through their codec.
    #[test]
    fn shares_replace_each_other_per_partition_and_add_up_across_partitions() {
        let cfg = Config::default().posts;
        let base = 1_795_428_000_000;
        let publish = publisher(60_000);
        let mut t = HashtagTrending::new(&cfg, Metrics::new());
        let through_topic = |partition: i32, hits: Vec<(&str, i64, u64)>, t: &mut HashtagTrending| {
            let mut parts: Vec<TagHit> = hits
                .into_iter()
                .map(|(tag, ts_ms, count)| TagHit { partition, tag: tag.into(), ts_ms, count })
                .collect();
            let mut recs = Vec::new();
            publish(partition, &mut parts, &mut recs);
            assert!(crate::engine::aggregate::read_shares(t, &recs, decode_share).is_empty());
        };
        // Partition 0 counts #a three times in one batch: one record, the newest count.
        through_topic(0, vec![("a", base, 1), ("a", base + 5, 2), ("a", base + 9, 3)], &mut t);
        through_topic(1, vec![("a", base + 60_000, 4), ("b", base, 1)], &mut t);
        let counts = |t: &HashtagTrending| -> Vec<(String, u64)> {
            t.current().expect("tags").tags.into_iter().map(|x| (x.tag, x.count)).collect()
        };
        assert_eq!(counts(&t), vec![("a".into(), 7), ("b".into(), 1)]);
        // The same shares again (a re-read, a redelivery): nothing changes.
        through_topic(0, vec![("a", base, 3)], &mut t);
        through_topic(1, vec![("a", base + 60_000, 4)], &mut t);
        assert_eq!(counts(&t), vec![("a".into(), 7), ("b".into(), 1)]);
        // Partition 1's next owner restored an older state: its lower count replaces the higher.
        through_topic(1, vec![("a", base + 60_000, 2)], &mut t);
        assert_eq!(counts(&t), vec![("a".into(), 5), ("b".into(), 1)]);
        // A tombstone is zero.
        t.merge(&mut vec![decode_share(1, &format!("{base}/b"), None).expect("decodes")]);
        assert_eq!(counts(&t), vec![("a".into(), 5)]);
        // Malformed records are refused with a reason.
        assert!(decode_share(0, "notabucket/a", Some(b"1")).is_err());
        assert!(decode_share(0, &format!("{base}/a"), Some(b"-1")).is_err());
        assert!(decode_share(0, &format!("{base}/"), Some(b"1")).is_err());
    }

    #[test]
    fn trending_ranks_and_emits_only_on_change() {
        let cfg = Config::default().posts;
        let mut t = HashtagTrending::new(&cfg, Metrics::new());
        let base = 1_795_428_000_000;
        // Partition 0's counts as they grow, and partition 1's.
        let mut parts = vec![
            TagHit { partition: 0, tag: "b".into(), ts_ms: base, count: 1 },
            TagHit { partition: 0, tag: "a".into(), ts_ms: base, count: 1 },
            TagHit { partition: 1, tag: "c".into(), ts_ms: base + 1, count: 1 },
            TagHit { partition: 1, tag: "c".into(), ts_ms: base + 2, count: 2 },
        ];
        t.merge(&mut parts);
        assert!(parts.is_empty());
        let mut out = Vec::new();
        t.on_tick(chrono::Utc::now(), &mut out);
        assert_eq!(out.len(), 1);
        let tr: Trending = serde_json::from_slice(out[0].value.as_deref().expect("value")).expect("JSON");
        let ranked: Vec<(usize, &str, u64)> = tr.tags.iter().map(|x| (x.rank, x.tag.as_str(), x.count)).collect();
        assert_eq!(ranked, vec![(1, "c", 2), (2, "a", 1), (3, "b", 1)]);
        assert_eq!(tr.window_start, "2026-11-23T09:01:00.000Z");
        assert_eq!(tr.window_end, "2026-11-23T10:01:00.000Z");
        out.clear();
        t.on_tick(chrono::Utc::now(), &mut out);
        assert!(out.is_empty(), "nothing changed");
        // Two hours later, the old tags expire and only the new one remains.
        t.merge(&mut vec![TagHit { partition: 0, tag: "z".into(), ts_ms: base + 2 * 3_600_000, count: 1 }]);
        t.on_tick(chrono::Utc::now(), &mut out);
        let tr: Trending = serde_json::from_slice(out[0].value.as_deref().expect("value")).expect("JSON");
        assert_eq!(tr.tags.iter().map(|x| x.tag.as_str()).collect::<Vec<_>>(), vec!["z"]);
    }
}
