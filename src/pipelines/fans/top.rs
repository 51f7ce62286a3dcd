//! `fans.top`: the global ranking, merged from every partition's top lists (a cross-partition
//! aggregate, [`crate::engine::aggregate`]). Exact: the global top N is always inside the union
//! of the partitions' top N.
//!
//! Across instances: each partition's task publishes its lists to `fans.shares` (key
//! `<partition>/top`) every [`TOP_INTERVAL`]; every instance reads that topic whole into its
//! [`FansTopView`], so each holds every partition's lists and ranks the same pages one instance
//! holding every partition would; the instance holding partition 0 writes `fans.top`.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::names::{SHARES, TOP};
use super::records::{FansTop, TopEntry};
use crate::clock::format_ms;
use crate::engine::aggregate::share_key;
use crate::engine::{Aggregate, OutRecord, RejectClass, Rejection};

/// A partition's best pages, handed to the cross-partition [`FansTopView`] (through
/// `fans.shares`, as JSON).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
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
    /// Emit at the next tick even if unchanged (this instance just became the writer).
    force: bool,
}

impl FansTopView {
    /// An empty view ranking `top_n` pages.
    pub fn new(top_n: usize) -> Self {
        Self { top_n, partitions: HashMap::new(), last: None, force: false }
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
        if !std::mem::take(&mut self.force)
            && self
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

    fn forget_emitted(&mut self) {
        self.force = true;
    }
}

/// The share records of a task's parts: its newest lists, as `<partition>/top` (see
/// [`crate::engine::aggregate::PublishFn`]).
pub fn publish(partition: i32, parts: &mut Vec<PartitionTop>, out: &mut Vec<OutRecord>) {
    if let Some(top) = parts.drain(..).next_back() {
        let value = serde_json::to_vec(&top).expect("serializing plain structs cannot fail");
        out.push(OutRecord::new(SHARES, share_key(partition, "top"), value));
    }
}

/// A `fans.shares` record back into the lists it carries (see
/// [`crate::engine::aggregate::DecodeShare`]); a tombstone is an empty list.
pub fn decode_share(partition: i32, what: &str, value: Option<&[u8]>) -> Result<PartitionTop, Rejection> {
    if what != "top" {
        return Err(Rejection::new(RejectClass::InvalidValue, format!("unknown fans share `{what}` (expected `top`)")));
    }
    let Some(value) = value else {
        return Ok(PartitionTop { partition, at_ms: 0, by_growth: Vec::new(), by_delta: Vec::new() });
    };
    let top: PartitionTop = serde_json::from_slice(value)
        .map_err(|e| Rejection::new(RejectClass::InvalidJson, format!("not a partition's top lists: {e}")))?;
    if top.partition != partition {
        return Err(Rejection::new(
            RejectClass::InvalidValue,
            format!("the key says partition {partition}, the value {}", top.partition),
        ));
    }
    Ok(top)
}

/// Key of every `fans.top` record.
pub const TOP_KEY: &str = "top";
