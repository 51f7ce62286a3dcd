//! The names the posts pipeline is known by: its own (a metric label, the dead-letter header,
//! its store's name) and its topics' (logical names, before the deployment's prefix).

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
/// Every partition's hashtag counts per minute, read whole by every instance (internal; see
/// [`super::trending`]).
pub const SHARES: &str = "posts.shares";
