//! The posts pipeline's live view: what HTTP reads (the latest top hashtags).

use std::sync::{Arc, RwLock};

use super::records::Trending;

/// The live view of the posts pipeline. Clones share it; it outlives engine restarts (the
/// hashtag aggregate of each incarnation writes into it).
#[derive(Debug, Clone, Default)]
pub struct PostsLive {
    hashtags: Arc<RwLock<Option<Trending>>>,
}

impl PostsLive {
    /// An empty view.
    pub fn new() -> Self {
        Self::default()
    }

    /// The latest top hashtags, once any were counted.
    pub fn hashtags(&self) -> Option<Trending> {
        self.hashtags.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Publishes a new ranking.
    pub fn set_hashtags(&self, t: Trending) {
        *self.hashtags.write().unwrap_or_else(|p| p.into_inner()) = Some(t);
    }
}
