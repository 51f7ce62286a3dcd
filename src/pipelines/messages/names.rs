//! The names the messages pipeline is known by: its own (a metric label, the dead-letter header,
//! its store's name) and its topics' (logical names, before the deployment's prefix).

/// Pipeline name.
pub const PIPELINE: &str = "messages";
/// Input topic.
pub const INPUT: &str = "messages";
/// One final record per event-time minute.
pub const STATS: &str = "messages.stats";
/// The all-time figures.
pub const TOTALS: &str = "messages.totals";
/// Key of every `messages.totals` record.
pub const TOTALS_KEY: &str = "totals";
/// Length of a window: one minute of event time.
pub const MINUTE_MS: i64 = 60_000;
/// Every partition's all-time figures, read whole by every instance (internal; see
/// [`super::totals`]).
pub const SHARES: &str = "messages.shares";
