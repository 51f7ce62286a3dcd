//! `fans.top`: the global ranking, merged from every partition's top lists (a cross-partition
//! aggregate, [`crate::engine::aggregate`]). Exact: the global top N is always inside the union
//! of the partitions' top N.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::names::TOP;
use super::records::{FansTop, TopEntry};
use crate::clock::format_ms;
use crate::engine::{Aggregate, OutRecord};

/// A partition's best pages, handed to the cross-partition [`FansTopView`].
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionTop {
    /// The partition.
    pub partition: i32,
    /// When the list was cut (wall clock, ms): lists of revoked partitions age out.
    pub at_ms: i64,
    /// Best by growth, best first.
    pub by_growth: Vec<TopEntry>,
    /// Best by delta, best first.
    pub by_delta: Vec<TopEntry>,
}

/// How often partitions report their rankings and `fans.top` may be emitted.
pub const TOP_INTERVAL: Duration = Duration::from_secs(10);

/// The global ranking: merges every partition's top lists (the global top N is always inside the
/// union of the partitions' top N, so the merge is exact).
pub struct FansTopView {
    top_n: usize,
    partitions: HashMap<i32, PartitionTop>,
    /// The last `fans.top` value emitted.
    last: Option<FansTop>,
}

impl FansTopView {
    /// An empty view ranking `top_n` pages.
    pub fn new(top_n: usize) -> Self {
        Self { top_n, partitions: HashMap::new(), last: None }
    }

    /// The last `fans.top` value emitted, `None` before the first: what the topic's latest record
    /// holds (a value is emitted only when the ranking changed, so it is also the current one as
    /// of the last tick).
    pub fn latest(&self) -> Option<&FansTop> {
        self.last.as_ref()
    }

    /// The current global ranking.
    pub fn current(&self) -> (Vec<TopEntry>, Vec<TopEntry>) {
        let merge = |pick: fn(&PartitionTop) -> &Vec<TopEntry>, score: fn(&TopEntry) -> f64| {
            let mut all: Vec<TopEntry> = self.partitions.values().flat_map(|p| pick(p).iter().cloned()).collect();
            // Ties by page key `<platform>:<page_id>` ascending, as in every partition's index.
            let key = |e: &TopEntry| format!("{}:{}", e.platform, e.page_id);
            all.sort_by(|a, b| score(b).total_cmp(&score(a)).then_with(|| key(a).cmp(&key(b))));
            all.truncate(self.top_n);
            for (i, e) in all.iter_mut().enumerate() {
                e.rank = i + 1;
            }
            all
        };
        (
            merge(|p| &p.by_growth, |e| e.growth_24h_pct.unwrap_or(f64::NEG_INFINITY)),
            merge(|p| &p.by_delta, |e| e.delta_24h as f64),
        )
    }
}

impl Aggregate for FansTopView {
    type Part = PartitionTop;

    fn merge(&mut self, parts: &mut Vec<PartitionTop>) {
        for p in parts.drain(..) {
            self.partitions.insert(p.partition, p);
        }
    }

    fn on_tick(&mut self, now: DateTime<Utc>, out: &mut Vec<OutRecord>) {
        let now_ms = now.timestamp_millis();
        // A partition that stopped reporting was revoked: its pages now rank elsewhere.
        let stale = 3 * TOP_INTERVAL.as_millis() as i64;
        self.partitions.retain(|_, p| now_ms - p.at_ms <= stale);
        let (by_growth_24h_pct, by_delta_24h) = self.current();
        if self
            .last
            .as_ref()
            .is_some_and(|l| l.by_growth_24h_pct == by_growth_24h_pct && l.by_delta_24h == by_delta_24h)
        {
            return;
        }
        let value = FansTop { generated_at: format_ms(now_ms), by_growth_24h_pct, by_delta_24h };
        out.push(OutRecord::new(
            TOP,
            TOP_KEY,
            serde_json::to_vec(&value).expect("serializing plain structs cannot fail"),
        ));
        self.last = Some(value);
    }
}

/// Key of every `fans.top` record.
pub const TOP_KEY: &str = "top";
