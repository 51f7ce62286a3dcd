//! `posts.trending`: the top hashtags over a sliding event-time window, across every partition
//! of this instance (a cross-partition aggregate, [`crate::engine::aggregate`]).

use super::config::PostsConfig;
use super::names::{PIPELINE, TRENDING, TRENDING_KEY};
use super::records::{Trending, TrendingTag};
use crate::clock::format_ms;
use crate::engine::{Aggregate, OutRecord};
use crate::metrics::Metrics;
use crate::ops::topn::top_n;
use crate::ops::window::{AddOutcome, SlidingCounts};

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

/// Top hashtags over a sliding event-time window, across every partition of this instance.
pub struct HashtagTrending {
    counts: SlidingCounts<String>,
    top_n: usize,
    emitted_version: Option<u64>,
    last: Option<Trending>,
    metrics: Metrics,
    publish: Option<Publisher>,
}

/// Where every new ranking is published besides `posts.trending` (the view HTTP reads from).
pub type Publisher = Box<dyn Fn(&Trending) + Send>;

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
            publish: None,
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
        if let Some(publish) = &self.publish {
            publish(&current);
        }
        self.last = Some(current);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

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
}
