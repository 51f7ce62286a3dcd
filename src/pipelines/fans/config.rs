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
}

impl FansConfig {
    /// Reads and checks the section, recording every problem in `f`.
    pub fn from_section(mut f: Fields<'_>) -> Self {
        let fans = FansConfig {
            enabled: f.take("enabled", true),
            top_n: f.take("top_n", 25),
            max_pages_per_partition: f.take("max_pages_per_partition", 1_000_000),
        };
        f.check(!(1..=1000).contains(&fans.top_n), "top_n", "must be between 1 and 1000");
        f.check(fans.max_pages_per_partition == 0, "max_pages_per_partition", "must be positive");
        f.finish();
        fans
    }
}
