//! The posts pipeline's live view: what HTTP reads (the latest trending hashtags).

use std::sync::{Arc, RwLock};

use super::records::Trending;

/// The live view of the posts pipeline. Clones share it; it outlives engine restarts (the
/// trending aggregate of each incarnation writes into it).
#[derive(Debug, Clone, Default)]
pub struct PostsLive {
    trending: Arc<RwLock<Option<Trending>>>,
}

impl PostsLive {
    /// An empty view.
    pub fn new() -> Self {
        Self::default()
    }

    /// The latest trending hashtags, once any were counted.
    pub fn trending(&self) -> Option<Trending> {
        self.trending.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Publishes a new ranking.
    pub fn set_trending(&self, t: Trending) {
        *self.trending.write().unwrap_or_else(|p| p.into_inner()) = Some(t);
    }
}
