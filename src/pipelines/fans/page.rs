//! One page's entry in a partition's map: its rolling series (what the store writes and
//! restores, and queries read) and its current scores in the processor's ranking indexes.

use crate::ops::series::{FanStats, RollingFans};

/// An f64 ordered totally, for ranking indexes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score(pub f64);

impl Eq for Score {}

impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Score {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// A page's state in one partition.
pub struct Page {
    /// Its samples and figures: the durable part.
    pub series: RollingFans,
    /// Its current score in the growth ranking (none for a 0 baseline).
    pub growth: Option<Score>,
    /// Its current score in the delta ranking.
    pub delta: Option<Score>,
    /// Changed since the store last took its changes: its key is in the store's dirty list.
    pub dirty: bool,
}

impl Page {
    /// A page without samples.
    pub fn new() -> Self {
        Self::of(RollingFans::new(), None)
    }

    /// A page holding `series`, whose figures are `stats`.
    pub fn of(series: RollingFans, stats: Option<&FanStats>) -> Self {
        let (growth, delta) = scores(stats);
        Self { series, growth, delta, dirty: false }
    }
}

impl Default for Page {
    fn default() -> Self {
        Self::new()
    }
}

/// A page's scores in the two ranking indexes: growth in percent (none for a 0 baseline) and
/// the absolute 24 h delta.
pub fn scores(stats: Option<&FanStats>) -> (Option<Score>, Option<Score>) {
    match stats {
        None => (None, None),
        Some(s) => (s.growth_24h_pct.map(Score), Some(Score(s.delta_24h.value as f64))),
    }
}
