//! The posts pipeline's output records that more than one part reads: the `posts.trending` value,
//! written by the trending aggregate ([`super::trending`]) and served by the live view
//! ([`super::live`]).

use serde::{Deserialize, Serialize};

/// A `posts.trending` value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trending {
    /// Start of the window (inclusive), RFC 3339.
    pub window_start: String,
    /// End of the window (exclusive), RFC 3339.
    pub window_end: String,
    /// The top hashtags, best first.
    pub tags: Vec<TrendingTag>,
}

/// One ranked hashtag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrendingTag {
    /// 1-based rank.
    pub rank: usize,
    /// The hashtag.
    pub tag: String,
    /// Posts carrying it in the window.
    pub count: u64,
}
