//! The names the pages pipeline is known by: its own (a metric label, the dead-letter header,
//! its store's name) and its topics' (logical names, before the deployment's prefix).

/// Pipeline name.
pub const PIPELINE: &str = "pages";
/// Input topic.
pub const INPUT: &str = "pages";
