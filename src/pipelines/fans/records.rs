//! The values the fans pipeline writes: `fans.stats` ([`PageStats`]) and `fans.top`
//! ([`FansTop`]). Queries answer with the same values ([`super::live`]).

use serde::{Deserialize, Serialize};

use crate::clock::format_ms;
use crate::ops::series::{Delta, FanStats};

/// One page's entry in a ranking.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopEntry {
    /// 1-based rank.
    pub rank: usize,
    /// Platform.
    pub platform: String,
    /// Page id.
    pub page_id: String,
    /// Current fans.
    pub fans: u64,
    /// Fans now minus 24 h ago.
    pub delta_24h: i64,
    /// Growth over 24 h in percent; `null` when the baseline was 0.
    pub growth_24h_pct: Option<f64>,
    /// True while the page has less than 24 h of history (the delta is since its first sample).
    pub partial: bool,
}

/// A `fans.top` value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FansTop {
    /// When this ranking was computed (RFC 3339).
    pub generated_at: String,
    /// Pages with the highest 24 h growth in percent.
    pub by_growth_24h_pct: Vec<TopEntry>,
    /// Pages with the highest absolute 24 h delta.
    pub by_delta_24h: Vec<TopEntry>,
}

/// A `fans.stats` value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageStats {
    /// Platform.
    pub platform: String,
    /// Page id.
    pub page_id: String,
    /// Fans in the newest sample.
    pub fans: u64,
    /// Followers in the newest sample.
    pub followers: Option<u64>,
    /// When the newest sample was observed (RFC 3339).
    pub observed_at: String,
    /// Growth over the last hour.
    pub delta_1h: DeltaOut,
    /// Growth over the last 24 hours.
    pub delta_24h: DeltaOut,
    /// Growth over the last 7 days.
    pub delta_7d: DeltaOut,
    /// `delta_24h` in percent of its baseline; `null` when the baseline had 0 fans.
    pub growth_24h_pct: Option<f64>,
}

/// One horizon's growth, as written to `fans.stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeltaOut {
    /// Current fans minus the baseline's.
    pub value: i64,
    /// True while the history is shorter than the horizon (the baseline is the oldest sample).
    pub partial: bool,
    /// When the baseline sample was observed (RFC 3339).
    pub since: String,
    /// The baseline's fans.
    pub baseline_fans: u64,
}

impl From<Delta> for DeltaOut {
    fn from(d: Delta) -> Self {
        Self { value: d.value, partial: d.partial, since: format_ms(d.baseline_at_ms), baseline_fans: d.baseline_fans }
    }
}

impl PageStats {
    /// The record for `platform`/`page_id` with `stats`.
    pub fn new(platform: String, page_id: String, stats: &FanStats) -> Self {
        Self {
            platform,
            page_id,
            fans: stats.fans,
            followers: stats.followers,
            observed_at: format_ms(stats.observed_at_ms),
            delta_1h: stats.delta_1h.into(),
            delta_24h: stats.delta_24h.into(),
            delta_7d: stats.delta_7d.into(),
            growth_24h_pct: stats.growth_24h_pct,
        }
    }
}
