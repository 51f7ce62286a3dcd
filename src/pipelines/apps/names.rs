//! The names the apps pipeline is known by: its own (a metric label, the dead-letter header, its
//! store's name) and its topics' (logical names, before the deployment's prefix).

/// Pipeline name.
pub const PIPELINE: &str = "apps";
/// The catalogue's pipeline name (the `pagepulse.pipeline` header of its dead letters).
pub const CATALOGUE_PIPELINE: &str = "apps.catalogue";
/// The catalogue topic (compacted, key = app id): a global table.
pub const CATALOGUE: &str = crate::ingest::APPS_TOPIC;
/// The posts whose mentions are counted: the posts pipeline's input, read by both pipelines.
pub const POSTS: &str = crate::pipelines::posts::names::INPUT;
/// Rankings, one record per configured ranking.
pub const TOP: &str = "apps.top";
/// Mention counts, one record per app.
pub const MENTIONS: &str = "apps.mentions";
/// Every partition's mention counts, read whole by every instance (internal; see
/// [`super::aggregate`]).
pub const SHARES: &str = "apps.shares";
