//! `[pipelines.pages]`: the pages pipeline's section of the configuration file. The platforms it
//! polls have sections of their own (`[platforms.<p>]`, [`crate::config::PlatformConfig`]).

use std::time::Duration;

use crate::section::Fields;

/// `[pipelines.pages]`
#[derive(Debug, Clone)]
pub struct PagesConfig {
    /// Poll the pages tracked in the `pages` topic (default true). Needs at least one enabled
    /// platform.
    pub enabled: bool,
    /// Most pages one `pages` partition schedules; further pages are dead-lettered (default
    /// 2000000).
    pub max_pages_per_partition: usize,
    /// How often each partition's schedule hands due pages to the platforms (default `50ms`;
    /// `10ms` to `1s`): the schedule delay's floor.
    pub tick: Duration,
    /// Most due pages one partition hands over per tick (default 20000); the rest follow on the
    /// next tick, earliest first.
    pub max_due_per_tick: usize,
}

impl PagesConfig {
    /// Reads and checks the section, recording every problem in `g`.
    pub fn from_section(mut g: Fields<'_>) -> Self {
        let pages = PagesConfig {
            enabled: g.take("enabled", true),
            max_pages_per_partition: g.take("max_pages_per_partition", 2_000_000),
            tick: g.duration("tick", Duration::from_millis(50)),
            max_due_per_tick: g.take("max_due_per_tick", 20_000),
        };
        g.check(pages.max_pages_per_partition == 0, "max_pages_per_partition", "must be positive");
        g.check(
            !(Duration::from_millis(10)..=Duration::from_secs(1)).contains(&pages.tick),
            "tick",
            "must be between 10ms and 1s",
        );
        g.check(pages.max_due_per_tick == 0, "max_due_per_tick", "must be positive");
        g.finish();
        pages
    }
}
