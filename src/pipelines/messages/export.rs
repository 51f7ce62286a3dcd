//! The messages pipeline's result gauges, from the latest `messages.totals`: all-time messages and
//! users, messages by state (at most `pipelines.messages.export_states_max`, the most counted
//! first) and the top cities (at most `top_cities`).

use super::names::{TOTALS, TOTALS_KEY};
use super::records::Totals;
use crate::config::Config;
use crate::metrics::results::{Export, Family};
use crate::pipelines::LiveViews;

/// All-time messages and distinct users.
pub static TOTAL: Family = Family {
    name: "pagepulse_messages_all_time",
    help: "All-time messages and distinct users (what) at the latest messages.totals record.",
    labels: &["what"],
};

/// All-time messages by state.
pub static BY_STATE: Family = Family {
    name: "pagepulse_messages_by_state",
    help: "All-time messages by state at the latest messages.totals record (pipelines.messages.export_states_max).",
    labels: &["state"],
};

/// The top cities.
pub static TOP_CITIES: Family = Family {
    name: "pagepulse_messages_top_city",
    help: "All-time messages of the top cities, by rank, at the latest messages.totals record.",
    labels: &["rank", "state", "city"],
};

/// Every family of this file.
pub const FAMILIES: &[&Family] = &[&TOTAL, &BY_STATE, &TOP_CITIES];

/// Fills the families from the served `messages.totals`.
pub fn export(cfg: &Config, live: &LiveViews, e: &mut Export) {
    let Some(v) = live.results.table(TOTALS).and_then(|t| t.get(TOTALS_KEY)) else { return };
    let Ok(t) = serde_json::from_slice::<Totals>(&v.bytes) else { return };
    e.set(&TOTAL, 2, &["messages"], t.total as f64);
    e.set(&TOTAL, 2, &["users"], t.users as f64);
    // `by_state` is sorted by count, most first: the bound keeps the largest.
    for s in &t.by_state {
        e.set(&BY_STATE, cfg.messages.export_states_max, &[&s.state], s.count as f64);
    }
    for c in &t.top_cities {
        e.set(&TOP_CITIES, cfg.messages.top_cities, &[&c.rank.to_string(), &c.state, &c.city], c.count as f64);
    }
}
