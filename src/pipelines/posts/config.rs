//! `[pipelines.posts]`: the posts pipeline's section of the configuration file.

use std::time::Duration;

use crate::section::Fields;

/// `[pipelines.posts]`
#[derive(Debug, Clone)]
pub struct PostsConfig {
    /// Run the posts pipeline (default true).
    pub enabled: bool,
    /// Largest accepted `content`, in bytes of UTF-8; larger posts are dead-lettered (default
    /// 65536; 1 to 16777216).
    pub max_content_bytes: usize,
    /// Event-time span of the trending hashtags window (default `60m`).
    pub trending_window: Duration,
    /// Granularity the trending window slides by (default `1m`; at least `1s`, and must divide
    /// the window).
    pub trending_bucket: Duration,
    /// Shortest time between two `posts.trending` records (default `5s`; at least `100ms`); one is
    /// emitted only when the ranking changed.
    pub trending_emit_interval: Duration,
    /// Hashtags in each `posts.trending` record (default 10; 1 to 1000).
    pub trending_top_n: usize,
    /// Most distinct hashtags the trending window tracks; new tags beyond it are counted in
    /// `pagepulse_window_ignored_events_total{reason="over_capacity"}` and ignored until old
    /// buckets expire (default 1000000).
    pub trending_max_tags: usize,
}

impl PostsConfig {
    /// Reads and checks the section, recording every problem in `p`.
    pub fn from_section(mut p: Fields<'_>) -> Self {
        let posts = PostsConfig {
            enabled: p.take("enabled", true),
            max_content_bytes: p.take("max_content_bytes", 65536),
            trending_window: p.duration("trending_window", Duration::from_secs(3600)),
            trending_bucket: p.duration("trending_bucket", Duration::from_secs(60)),
            trending_emit_interval: p.duration("trending_emit_interval", Duration::from_secs(5)),
            trending_top_n: p.take("trending_top_n", 10),
            trending_max_tags: p.take("trending_max_tags", 1_000_000),
        };
        p.check(
            !(1..=16 << 20).contains(&posts.max_content_bytes),
            "max_content_bytes",
            "must be between 1 and 16777216",
        );
        p.check(posts.trending_bucket < Duration::from_secs(1), "trending_bucket", "must be at least 1s");
        p.check(
            posts.trending_bucket.as_millis() == 0
                || posts.trending_window < posts.trending_bucket
                || !posts.trending_window.as_millis().is_multiple_of(posts.trending_bucket.as_millis().max(1)),
            "trending_window",
            "must be a whole multiple of trending_bucket",
        );
        p.check(
            posts.trending_emit_interval < Duration::from_millis(100),
            "trending_emit_interval",
            "must be at least 100ms",
        );
        p.check(!(1..=1000).contains(&posts.trending_top_n), "trending_top_n", "must be between 1 and 1000");
        p.check(posts.trending_max_tags == 0, "trending_max_tags", "must be positive");
        p.finish();
        posts
    }
}
