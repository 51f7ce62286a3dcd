//! `[pipelines.pageviews]`: the pageviews pipeline's section of the configuration file.

use std::time::Duration;

use crate::section::Fields;

/// `[pipelines.pageviews]`
#[derive(Debug, Clone)]
pub struct PageviewsConfig {
    /// Run the pageviews pipeline and its blacklist (default true).
    pub enabled: bool,
    /// Articles in each `pageviews.top` record (default 25; 1 to 1000).
    pub top_n: usize,
    /// How far behind the newest event time an event may be and still count: the watermark is
    /// the newest event time minus this (default `5m`; at most `1d`).
    pub allowed_lateness: Duration,
    /// A partition without input for this long closes every open window (default `60s`; `1s` to
    /// `1d`), so the last hour of an ingested file is emitted too.
    pub idle_timeout: Duration,
    /// Emit provisional (`"final": false`) records of open windows this often (default `0s`:
    /// never; otherwise at least `1s`).
    pub provisional_interval: Option<Duration>,
    /// Articles in each `pageviews.trending` record (default 25; 1 to 1000).
    pub trending_top_n: usize,
    /// How often `pageviews.trending` is emitted for domains that received views (default `10s`;
    /// at least `1s`).
    pub trending_interval: Duration,
    /// Most distinct titles one domain's trending window tracks; further titles are counted in
    /// `pagepulse_window_ignored_events_total{reason="over_capacity"}` and left out until old
    /// minutes expire (default 5000000). The hourly windows are always exact.
    pub trending_max_titles: usize,
    /// Base URL of the hourly dumps backfill jobs download (`POST /api/v1/pageviews/reports`,
    /// `pagepulse backfill pageviews`), in Wikimedia's layout: the hour starting at H is
    /// `{dump_mirror}/{YYYY}/{YYYY-MM}/pageviews-{YYYYMMDD}-{HH}0000.gz` with the time of H's END
    /// (default `https://dumps.wikimedia.org/other/pageviews`; `http` or `https`).
    pub dump_mirror: String,
    /// Hours a backfill downloads at once on this instance (default 2; 1 to 16).
    pub backfill_concurrency: usize,
    /// Tries per hour before it fails: an HTTP error, a broken or truncated download, a stalled
    /// one, records refused (default 3; 1 to 20).
    pub backfill_max_tries: u32,
    /// Wait before the second try of an hour, doubled for each further one, at most 60 s
    /// (default `1s`; `10ms` to `10m`).
    pub backfill_retry_backoff: Duration,
    /// A download that sends nothing for this long fails its try; also the connect timeout
    /// (default `30s`; `1s` to `10m`).
    pub backfill_read_timeout: Duration,
    /// How long a backfill waits, after an hour's last line, for every partition to make the
    /// hour final before the try fails (default `10m`; `1s` to `1d`).
    pub backfill_close_timeout: Duration,
    /// Most hours one backfill job may cover (default 744, 31 days; 1 to 87600).
    pub backfill_max_hours: usize,
    /// Domains whose views and top articles are exported to Prometheus
    /// (`pagepulse_pageviews_hour_views`, `pagepulse_pageviews_hour_top_views`,
    /// `pagepulse_pageviews_trending_views`; default `["en"]`; at most 100).
    pub export_domains: Vec<String>,
}

impl PageviewsConfig {
    /// Reads and checks the section, recording every problem in `v`.
    pub fn from_section(mut v: Fields<'_>) -> Self {
        let provisional = v.duration("provisional_interval", Duration::ZERO);
        let pageviews = PageviewsConfig {
            enabled: v.take("enabled", true),
            top_n: v.take("top_n", 25),
            allowed_lateness: v.duration("allowed_lateness", Duration::from_secs(300)),
            idle_timeout: v.duration("idle_timeout", Duration::from_secs(60)),
            provisional_interval: (!provisional.is_zero()).then_some(provisional),
            trending_top_n: v.take("trending_top_n", 25),
            export_domains: v.take("export_domains", vec!["en".to_string()]),
            trending_interval: v.duration("trending_interval", Duration::from_secs(10)),
            trending_max_titles: v.take("trending_max_titles", 5_000_000),
            dump_mirror: v.take("dump_mirror", "https://dumps.wikimedia.org/other/pageviews".to_string()),
            backfill_concurrency: v.take("backfill_concurrency", 2),
            backfill_max_tries: v.take("backfill_max_tries", 3),
            backfill_retry_backoff: v.duration("backfill_retry_backoff", Duration::from_secs(1)),
            backfill_read_timeout: v.duration("backfill_read_timeout", Duration::from_secs(30)),
            backfill_close_timeout: v.duration("backfill_close_timeout", Duration::from_secs(600)),
            backfill_max_hours: v.take("backfill_max_hours", 744),
        };
        let mirror = &pageviews.dump_mirror;
        v.check(
            !(mirror.starts_with("http://") || mirror.starts_with("https://"))
                || mirror.len() < 8
                || mirror.contains(char::is_whitespace),
            "dump_mirror",
            "must be an http:// or https:// URL without spaces",
        );
        v.check(
            !(1..=16).contains(&pageviews.backfill_concurrency),
            "backfill_concurrency",
            "must be between 1 and 16",
        );
        v.check(!(1..=20).contains(&pageviews.backfill_max_tries), "backfill_max_tries", "must be between 1 and 20");
        v.check(
            !(Duration::from_millis(10)..=Duration::from_secs(600)).contains(&pageviews.backfill_retry_backoff),
            "backfill_retry_backoff",
            "must be between 10ms and 10m",
        );
        v.check(
            !(Duration::from_secs(1)..=Duration::from_secs(600)).contains(&pageviews.backfill_read_timeout),
            "backfill_read_timeout",
            "must be between 1s and 10m",
        );
        v.check(
            !(Duration::from_secs(1)..=Duration::from_secs(86_400)).contains(&pageviews.backfill_close_timeout),
            "backfill_close_timeout",
            "must be between 1s and 1d",
        );
        v.check(
            !(1..=87_600).contains(&pageviews.backfill_max_hours),
            "backfill_max_hours",
            "must be between 1 and 87600",
        );
        v.check(!(1..=1000).contains(&pageviews.top_n), "top_n", "must be between 1 and 1000");
        v.check(pageviews.export_domains.len() > 100, "export_domains", "must list at most 100 domains");
        v.check(!(1..=1000).contains(&pageviews.trending_top_n), "trending_top_n", "must be between 1 and 1000");
        v.check(pageviews.allowed_lateness > Duration::from_secs(86_400), "allowed_lateness", "must be at most 1d");
        v.check(
            !(Duration::from_secs(1)..=Duration::from_secs(86_400)).contains(&pageviews.idle_timeout),
            "idle_timeout",
            "must be between 1s and 1d",
        );
        v.check(
            pageviews.provisional_interval.is_some_and(|d| d < Duration::from_secs(1)),
            "provisional_interval",
            "must be at least 1s (or 0s for never)",
        );
        v.check(pageviews.trending_interval < Duration::from_secs(1), "trending_interval", "must be at least 1s");
        v.check(pageviews.trending_max_titles == 0, "trending_max_titles", "must be positive");
        v.finish();
        pageviews
    }
}
