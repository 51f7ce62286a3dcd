//! The names the fans pipeline is known by: its own (a metric label, the dead-letter header,
//! its store's name) and its topics' (logical names, before the deployment's prefix).

/// Pipeline name.
pub const PIPELINE: &str = "fans";
/// Input topic.
pub const INPUT: &str = crate::poll::observation::TOPIC;
/// Per-page rolling figures.
pub const STATS: &str = "fans.stats";
/// Top pages.
pub const TOP: &str = "fans.top";
/// Every partition's top lists, read whole by every instance (internal; see
/// [`crate::engine::aggregate`]).
pub const SHARES: &str = "fans.shares";
