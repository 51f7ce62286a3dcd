//! `[pipelines.fans]`: the fans pipeline's section of the configuration file.

use crate::section::Fields;

/// `[pipelines.fans]`
#[derive(Debug, Clone)]
pub struct FansConfig {
    /// Run the rolling fan-count pipeline (default true).
    pub enabled: bool,
    /// Pages in each `fans.top` ranking (default 25; 1 to 1000).
    pub top_n: usize,
    /// Most pages one partition tracks; observations of further pages are dead-lettered and
    /// counted (default 1000000: with the default 4 partitions, 4 million pages per instance).
    pub max_pages_per_partition: usize,
    /// Pages whose figures are exported to Prometheus (`pagepulse_page_fans`,
    /// `pagepulse_page_followers`, `pagepulse_page_delta`), as `<platform>:<page_id>` keys
    /// (default none). Only pages this instance holds are exported by it.
    pub watch: Vec<String>,
    /// Most watched pages exported (default 100; 0 to 10000); further ones are counted in
    /// `pagepulse_results_over_bound`, not exported.
    pub watch_max: usize,
}

impl FansConfig {
    /// Reads and checks the section, recording every problem in `f`.
    pub fn from_section(mut f: Fields<'_>) -> Self {
        let fans = FansConfig {
            enabled: f.take("enabled", true),
            top_n: f.take("top_n", 25),
            max_pages_per_partition: f.take("max_pages_per_partition", 1_000_000),
            watch: f.take("watch", Vec::new()),
            watch_max: f.take("watch_max", 100),
        };
        f.check(fans.watch_max > 10_000, "watch_max", "must be at most 10000");
        f.check(
            fans.watch.iter().any(|k| k.split_once(':').is_none_or(|(p, id)| p.is_empty() || id.is_empty())),
            "watch",
            "every entry must be a `<platform>:<page_id>` key",
        );
        f.check(!(1..=1000).contains(&fans.top_n), "top_n", "must be between 1 and 1000");
        f.check(fans.max_pages_per_partition == 0, "max_pages_per_partition", "must be positive");
        f.finish();
        fans
    }
}
