//! Social post analysis.
//!
//! - Input `posts` (key = post id): `{"id", "content", "author"?, "created_at"?}`.
//! - Output `posts.analysis` (key = post id): word count, average word length, hashtags and
//!   mentions of each post (see [`crate::ops::text`]).
//! - Output `posts.trending` (key `hashtags`): the top hashtags over the last hour of event time,
//!   from a cross-partition [`HashtagTrending`] aggregate.
//!
//! Durable state: each partition's task keeps its own share of the trending counts (per minute
//! bucket, per tag) and writes each changed bucket whole to the `posts` store's changelog (key
//! `b/<bucket start ms>`, tombstoned when the bucket leaves the window). A restored partition
//! hands its buckets to the instance's aggregate, so trending survives restarts and follows a
//! partition to its new instance.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::decode::{object, optional_str, required_str, rfc3339_ms, utf8_value};
use crate::clock::format_ms;
use crate::clock::Clock;
use crate::config::PostsConfig;
use crate::engine::state::{Change, Entries};
use crate::engine::{Aggregate, Emit, OutRecord, Processor, RawRecord, RecordMeta, RejectClass, Rejection};
use crate::metrics::Metrics;
use crate::ops::codec::{self, Reader};
use crate::ops::text;
use crate::ops::topn::top_n;
use crate::ops::window::{AddOutcome, SlidingCounts};

/// Pipeline name.
pub const PIPELINE: &str = "posts";
/// Input topic.
pub const INPUT: &str = "posts";
/// Per-post analysis output.
pub const ANALYSIS: &str = "posts.analysis";
/// Trending hashtags output.
pub const TRENDING: &str = "posts.trending";
/// Key of every `posts.trending` record.
pub const TRENDING_KEY: &str = "hashtags";
/// Event times further than this ahead of the wall clock are clamped to it, so one post dated
/// in the far future cannot push the trending window past every real post.
pub const MAX_FUTURE_SKEW_MS: i64 = 5 * 60 * 1000;

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
    #[serde(borrow, default)]
    author: Option<&'a RawValue>,
    #[serde(borrow, default)]
    created_at: Option<&'a RawValue>,
}

/// A decoded, valid post.
#[derive(Debug, Clone, PartialEq)]
pub struct Post<'a> {
    /// Post id.
    pub id: Cow<'a, str>,
    /// Text.
    pub content: Cow<'a, str>,
    /// `created_at` in epoch milliseconds, if given.
    pub created_at_ms: Option<i64>,
}

/// Decodes and validates a `posts` record value.
pub fn decode_post(rec: &RawRecord, max_content_bytes: usize) -> Result<Post<'_>, Rejection> {
    let wire: Wire<'_> = object(utf8_value(rec)?)?;
    let id = required_str("id", wire.id)?;
    if id.is_empty() {
        return Err(Rejection::new(RejectClass::InvalidValue, "field `id` must not be empty"));
    }
    let content = required_str("content", wire.content)?;
    if content.len() > max_content_bytes {
        return Err(Rejection::new(
            RejectClass::TooLarge,
            format!("field `content` is {} bytes, more than the {} allowed", content.len(), max_content_bytes),
        ));
    }
    optional_str("author", wire.author)?;
    let created_at_ms = match optional_str("created_at", wire.created_at)? {
        Some(t) => Some(rfc3339_ms("created_at", &t)?),
        None => None,
    };
    Ok(Post { id, content, created_at_ms })
}

/// A `posts.analysis` value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Analysis<'a> {
    /// Post id (borrowed from the input when writing, owned when reading).
    pub id: Cow<'a, str>,
    /// UAX #29 words in `content`.
    pub word_count: usize,
    /// Mean word length in Unicode scalar values; 0 with no words.
    pub avg_word_length: f64,
    /// Lower-cased hashtags without `#`, de-duplicated, in order of first appearance.
    pub hashtags: Vec<String>,
    /// Lower-cased mentions without `@`, de-duplicated, in order of first appearance.
    pub mentions: Vec<String>,
    /// When pagepulse analysed the post (RFC 3339, UTC).
    pub analyzed_at: Cow<'a, str>,
}

/// Hashtag occurrences, handed to the trending aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagHit {
    /// The hashtag (lower-cased, no `#`).
    pub tag: String,
    /// Event time in epoch milliseconds.
    pub ts_ms: i64,
    /// Occurrences (1 for a post; a bucket's count when a restored partition hands its share).
    pub count: u64,
}

/// Version byte of a bucket value in the changelog.
const BUCKET_FORMAT: u8 = 1;

/// One partition's share of the trending counts: the durable state of the posts pipeline.
#[derive(Debug, Default)]
struct TagBuckets {
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
    fn add(&mut self, tag: &str, ts_ms: i64) {
        let start = ts_ms.div_euclid(self.bucket_ms) * self.bucket_ms;
        let newest = self.buckets.last_key_value().map_or(start, |(k, _)| (*k).max(start));
        if start <= newest - self.window_ms {
            return; // too late for the window: the aggregate ignores it too
        }
        let bucket = self.buckets.entry(start).or_default();
        match bucket.get_mut(tag) {
            Some(n) => *n += 1,
            None if self.entries >= self.max_tags => return, // the aggregate's bound applies
            None => {
                bucket.insert(tag.to_string(), 1);
                self.entries += 1;
            }
        }
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
    }

    fn key(start: i64) -> Vec<u8> {
        format!("b/{start}").into_bytes()
    }

    fn take_changes(&mut self, out: &mut Vec<Change>) {
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

    /// Rebuilds from changelog entries; returns the restored counts as aggregate parts.
    fn restore(&mut self, entries: Entries, out: &mut Vec<TagHit>) {
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
                out.push(TagHit { tag: tag.clone(), ts_ms: start, count });
            }
        }
    }
}

/// The per-partition posts processor.
pub struct PostsProcessor {
    max_content_bytes: usize,
    clock: Arc<dyn Clock>,
    /// `analyzed_at` of the last record, formatted: thousands of records share a millisecond.
    stamp: (i64, String),
    tags: TagBuckets,
}

impl PostsProcessor {
    /// A processor with the pipeline's config.
    pub fn new(cfg: &PostsConfig, clock: Arc<dyn Clock>) -> Self {
        let tags = TagBuckets {
            window_ms: cfg.trending_window.as_millis() as i64,
            bucket_ms: cfg.trending_bucket.as_millis() as i64,
            max_tags: cfg.trending_max_tags,
            ..TagBuckets::default()
        };
        Self { max_content_bytes: cfg.max_content_bytes, clock, stamp: (i64::MIN, String::new()), tags }
    }
}

impl Processor for PostsProcessor {
    type Input<'a> = Post<'a>;
    type Part = TagHit;

    fn decode<'a>(&self, _topic: &'static str, rec: &'a RawRecord) -> Result<Post<'a>, Rejection> {
        decode_post(rec, self.max_content_bytes)
    }

    fn process(&mut self, post: Post<'_>, meta: &RecordMeta, out: &mut Emit<TagHit>) {
        let now = self.clock.now();
        let now_ms = now.timestamp_millis();
        let stats = text::analyze(&post.content);
        let event_ms = post.created_at_ms.or(meta.timestamp_ms).unwrap_or(now_ms).min(now_ms + MAX_FUTURE_SKEW_MS);
        for tag in &stats.hashtags {
            self.tags.add(tag, event_ms);
            out.part(TagHit { tag: tag.clone(), ts_ms: event_ms, count: 1 });
        }
        if self.stamp.0 != now_ms {
            self.stamp = (now_ms, format_ms(now_ms));
        }
        let analysis = Analysis {
            id: Cow::Borrowed(&post.id),
            word_count: stats.word_count,
            avg_word_length: stats.avg_word_length,
            hashtags: stats.hashtags,
            mentions: stats.mentions,
            analyzed_at: Cow::Borrowed(&self.stamp.1),
        };
        // Room for the fixed fields and the usual tags, so the buffer is allocated once.
        let mut value = Vec::with_capacity(128 + post.id.len() + post.content.len() / 2);
        serde_json::to_writer(&mut value, &analysis).expect("serializing plain structs into a Vec cannot fail");
        out.record(OutRecord::new(ANALYSIS, post.id.as_bytes(), value));
    }

    fn take_changes(&mut self, out: &mut Vec<Change>) {
        self.tags.take_changes(out);
    }

    fn restore(&mut self, entries: Entries, out: &mut Emit<TagHit>) {
        self.tags.restore(entries, &mut out.parts);
    }
}

/// A `posts.trending` value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trending {
    /// Start of the window (inclusive), RFC 3339.
    pub window_start: String,
    /// End of the window (exclusive), RFC 3339.
    pub window_end: String,
    /// The top hashtags, best first.
    pub tags: Vec<TrendingTag>,
}

/// One ranked hashtag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrendingTag {
    /// 1-based rank.
    pub rank: usize,
    /// The hashtag.
    pub tag: String,
    /// Posts carrying it in the window.
    pub count: u64,
}

/// Top hashtags over a sliding event-time window, across every partition of this instance.
pub struct HashtagTrending {
    counts: SlidingCounts<String>,
    top_n: usize,
    emitted_version: Option<u64>,
    last: Option<Trending>,
    metrics: Metrics,
}

impl HashtagTrending {
    /// An empty trending view with the pipeline's config.
    pub fn new(cfg: &PostsConfig, metrics: Metrics) -> Self {
        Self {
            counts: SlidingCounts::new(
                cfg.trending_window.as_millis() as i64,
                cfg.trending_bucket.as_millis() as i64,
                cfg.trending_max_tags,
            ),
            top_n: cfg.trending_top_n,
            emitted_version: None,
            last: None,
            metrics,
        }
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
            match self.counts.add(&hit.tag, hit.ts_ms, hit.count) {
                AddOutcome::Counted => {}
                AddOutcome::Late => self.metrics.window_ignored.with_label_values(&[PIPELINE, "late"]).inc(),
                AddOutcome::OverCapacity => {
                    self.metrics.window_ignored.with_label_values(&[PIPELINE, "over_capacity"]).inc()
                }
            }
        }
    }

    /// Emits the ranking when it changed since the last emission.
    fn on_tick(&mut self, _now: chrono::DateTime<chrono::Utc>, out: &mut Vec<OutRecord>) {
        if self.emitted_version == Some(self.counts.version()) {
            return;
        }
        self.emitted_version = Some(self.counts.version());
        let Some(current) = self.current() else { return };
        if self.last.as_ref() == Some(&current) {
            return;
        }
        let value = serde_json::to_vec(&current).expect("serializing plain structs cannot fail");
        out.push(OutRecord::new(TRENDING, TRENDING_KEY, value));
        self.last = Some(current);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::config::Config;

    fn rec(v: &str) -> RawRecord {
        RawRecord { key: Some(b"k".to_vec()), value: Some(v.as_bytes().to_vec()), offset: 7, timestamp_ms: Some(1_000) }
    }

    fn reject(v: &str) -> Rejection {
        decode_post(&rec(v), 65536).expect_err("should be rejected")
    }

    #[test]
    fn decodes_valid_posts() {
        let r = rec(r#"{"id":"1","content":"hi","author":"ana","created_at":"2026-11-23T10:00:00Z"}"#);
        let p = decode_post(&r, 65536).expect("valid");
        assert_eq!(p.id, "1");
        assert_eq!(p.created_at_ms, Some(1_795_428_000_000));
        let r = rec(r#"{"id":"2","content":"","extra":[1,2]}"#);
        let p = decode_post(&r, 65536).expect("valid, extra ignored");
        assert_eq!(p.created_at_ms, None);
    }

    #[test]
    fn rejections_name_the_field() {
        assert_eq!(reject(r#"{"content":"x"}"#).message, "field `id` is missing");
        assert_eq!(reject(r#"{"id":5,"content":"x"}"#).message, "field `id` must be a string, found number");
        assert_eq!(reject(r#"{"id":"1"}"#).message, "field `content` is missing");
        assert_eq!(reject(r#"{"id":"1","content":["x"]}"#).class, RejectClass::WrongType);
        assert_eq!(reject(r#"{"id":"","content":"x"}"#).class, RejectClass::InvalidValue);
        assert_eq!(
            reject(r#"{"id":"1","content":"x","author":1}"#).message,
            "field `author` must be a string, found number"
        );
        assert!(reject(r#"{"id":"1","content":"x","created_at":"noon"}"#).message.starts_with("field `created_at`"));
        let big = format!(r#"{{"id":"1","content":"{}"}}"#, "a".repeat(65537));
        assert_eq!(reject(&big).class, RejectClass::TooLarge);
        assert_eq!(reject("not json").class, RejectClass::InvalidJson);
    }

    #[test]
    fn process_emits_analysis_and_tag_hits() {
        let cfg = Config::default().posts;
        let clock = Arc::new(ManualClock::at_ms(1_795_428_000_000));
        let mut p = PostsProcessor::new(&cfg, clock);
        let mut out = Emit::default();
        let r = rec(r#"{"id":"9","content":"This is a sample post. #Rust #rust @Ana"}"#);
        let post = p.decode(INPUT, &r).expect("valid");
        p.process(post, &RecordMeta { topic: INPUT, partition: 0, offset: 7, timestamp_ms: Some(1_000) }, &mut out);
        assert_eq!(out.records.len(), 1);
        let a: Analysis =
            serde_json::from_slice(out.records[0].value.as_deref().expect("value")).expect("analysis JSON");
        assert_eq!(a.id, "9");
        assert_eq!(a.word_count, 8);
        assert_eq!(a.hashtags, vec!["rust"]);
        assert_eq!(a.mentions, vec!["ana"]);
        assert_eq!(a.analyzed_at, "2026-11-23T10:00:00.000Z");
        assert_eq!(out.records[0].key.as_deref(), Some(&b"9"[..]));
        // No created_at: the record timestamp is the event time.
        assert_eq!(out.parts, vec![TagHit { tag: "rust".into(), ts_ms: 1_000, count: 1 }]);
    }

    #[test]
    fn trending_ranks_and_emits_only_on_change() {
        let cfg = Config::default().posts;
        let mut t = HashtagTrending::new(&cfg, Metrics::new());
        let base = 1_795_428_000_000;
        let mut parts = vec![
            TagHit { tag: "b".into(), ts_ms: base, count: 1 },
            TagHit { tag: "a".into(), ts_ms: base, count: 1 },
            TagHit { tag: "c".into(), ts_ms: base + 1, count: 1 },
            TagHit { tag: "c".into(), ts_ms: base + 2, count: 1 },
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
        t.merge(&mut vec![TagHit { tag: "z".into(), ts_ms: base + 2 * 3_600_000, count: 1 }]);
        t.on_tick(chrono::Utc::now(), &mut out);
        let tr: Trending = serde_json::from_slice(out[0].value.as_deref().expect("value")).expect("JSON");
        assert_eq!(tr.tags.iter().map(|x| x.tag.as_str()).collect::<Vec<_>>(), vec!["z"]);
    }

    fn post_at(p: &mut PostsProcessor, i: u64, ts_ms: i64, out: &mut Emit<TagHit>) {
        let content = format!("post {i} #t{} #t{} #common", i % 7, i % 3);
        let v = format!(r#"{{"id":"{i}","content":"{content}"}}"#);
        let r = RawRecord { key: None, value: Some(v.into_bytes()), offset: i as i64, timestamp_ms: Some(ts_ms) };
        let post = p.decode(INPUT, &r).expect("valid");
        p.process(post, &RecordMeta { topic: INPUT, partition: 0, offset: i as i64, timestamp_ms: Some(ts_ms) }, out);
    }

    #[test]
    fn trending_counts_survive_a_restore_and_expired_buckets_are_tombstoned() {
        use crate::engine::state::{flush_records, MemoryBackend, StateBackend};
        let cfg = Config::default().posts;
        let base = 1_795_428_000_000;
        let clock = Arc::new(ManualClock::at_ms(base + 10 * 3_600_000));
        let (mut a, mut b) = (PostsProcessor::new(&cfg, clock.clone()), PostsProcessor::new(&cfg, clock.clone()));
        let (mut agg_a, mut agg_c) =
            (HashtagTrending::new(&cfg, Metrics::new()), HashtagTrending::new(&cfg, Metrics::new()));
        let backend = MemoryBackend::new();
        let topic = "posts-changelog";
        // 3 hours of posts, one every 20 s: buckets expire along the way.
        let ts = |i: u64| base + i as i64 * 20_000;
        let cut = 400;
        for i in 0..540 {
            let mut out = Emit::default();
            post_at(&mut a, i, ts(i), &mut out);
            agg_a.merge(&mut out.parts);
            if i < cut {
                let mut out_b = Emit::default();
                post_at(&mut b, i, ts(i), &mut out_b);
                if i % 37 == 0 || i == cut - 1 {
                    let mut changes = Vec::new();
                    b.take_changes(&mut changes);
                    backend.append(flush_records(topic, 0, 1, changes, Some(i as i64 + 1)));
                }
            }
        }
        let restored = backend.restore(topic, 0, 2).expect("memory backend");
        assert_eq!(restored.position, Some(cut as i64));
        // Only the buckets of the last hour are live: expired ones were tombstoned.
        assert!(restored.entries.len() <= 61, "{} live buckets", restored.entries.len());
        let mut c = PostsProcessor::new(&cfg, clock);
        let mut out = Emit::default();
        c.restore(restored.entries, &mut out);
        agg_c.merge(&mut out.parts);
        for i in cut..540 {
            let mut out = Emit::default();
            post_at(&mut c, i, ts(i), &mut out);
            agg_c.merge(&mut out.parts);
        }
        let (ta, tc) = (agg_a.current().expect("tags"), agg_c.current().expect("tags"));
        assert_eq!(ta, tc);
        assert_eq!(ta.tags[0].tag, "common");
        assert_eq!(ta.tags[0].count, 180, "one per post in the last hour");
    }
}
