//! The names the pageviews pipeline is known by: its own (a metric label, the dead-letter header,
//! its store's name) and its topics' (logical names, before the deployment's prefix).

/// Pipeline name.
pub const PIPELINE: &str = "pageviews";
/// Input topic.
pub const INPUT: &str = "pageviews";
/// The blacklist pipeline's name.
pub const BLACKLIST_PIPELINE: &str = "pageviews.blacklist";
/// Blacklist topic.
pub const BLACKLIST: &str = "pageviews.blacklist";
/// Per-window top articles.
pub const TOP: &str = "pageviews.top";
/// Trending now.
pub const TRENDING: &str = "pageviews.trending";
/// Backfill jobs' task state, and the pageviews tasks' acknowledgements of hours from files
/// (compacted).
pub const JOBS: &str = "pageviews.jobs";
/// Backfill requests (key = job id).
pub const REPORTS: &str = "pageviews.reports";
/// The backfill pipeline's name (tasks of `pageviews.reports`, its store).
pub const BACKFILL_PIPELINE: &str = "backfill";
