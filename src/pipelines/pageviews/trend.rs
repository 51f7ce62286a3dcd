//! One domain's "trending now": its sliding 60-minute counts, and whether they changed since
//! the domain's last `pageviews.trending` record. The processor keeps one per domain; the
//! pipeline's durable state writes their heads and flags, rebuilds them after a crash, and
//! keeps the domain's log in the slot the trend names.

use std::sync::Arc;

use crate::ops::hourly::HOUR_MS;
use crate::ops::window::SlidingCounts;

/// A domain's log in the pipeline's durable state, handed out once per domain by its `slot`
/// method: recording a view through it costs no lookup on the hot path. Defined here, below the
/// durable state, because a domain's [`Trend`] carries its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogSlot(pub(super) usize);

/// Span of "trending now".
pub const TRENDING_WINDOW_MS: i64 = HOUR_MS;
/// Granularity "trending now" slides by.
pub const TRENDING_BUCKET_MS: i64 = 60_000;

/// One domain's trending view.
pub struct Trend {
    /// Views per title over the last 60 minutes of the domain's event time, by minute.
    pub counts: SlidingCounts<Arc<str>>,
    /// `counts.version()` when the domain's last trending record was emitted.
    pub emitted_version: u64,
    /// The domain's log in the durable state.
    pub log: LogSlot,
}

impl Trend {
    /// An empty view tracking at most `max_titles` titles, whose views the durable state logs in `log`.
    pub fn new(max_titles: usize, log: LogSlot) -> Self {
        Self { counts: SlidingCounts::new(TRENDING_WINDOW_MS, TRENDING_BUCKET_MS, max_titles), emitted_version: 0, log }
    }

    /// True when the counts changed since the last emission.
    pub fn changed(&self) -> bool {
        self.counts.version() != self.emitted_version
    }
}
