//! The apps pipeline's result gauges, from the latest `apps.top` record of each configured
//! ranking: each ranked app's mentions and ratings (at most the ranking's `top_n`).

use super::names::TOP;
use super::rankings::TopValue;
use crate::config::Config;
use crate::metrics::results::{Export, Family};
use crate::pipelines::LiveViews;

/// Mentions of each ranked app.
pub static RANKED_MENTIONS: Family = Family {
    name: "pagepulse_app_ranking_mentions",
    help: "Mentions in posts of each app of an apps.top ranking, by ranking and rank (window: total or 24h).",
    labels: &["ranking", "rank", "app_id", "track_name", "window"],
};

/// Ratings of each ranked app.
pub static RANKED_RATINGS: Family = Family {
    name: "pagepulse_app_ranking_ratings",
    help: "User ratings (all versions) of each app of an apps.top ranking, by ranking and rank.",
    labels: &["ranking", "rank", "app_id", "track_name"],
};

/// Every family of this file.
pub const FAMILIES: &[&Family] = &[&RANKED_MENTIONS, &RANKED_RATINGS];

/// Fills the families from the served `apps.top`.
pub fn export(cfg: &Config, live: &LiveViews, e: &mut Export) {
    let Some(table) = live.results.table(TOP) else { return };
    let max: usize = cfg.apps.rankings.iter().map(|r| r.top_n).sum();
    for ranking in &cfg.apps.rankings {
        let Some(v) = table.get(&ranking.name) else { continue };
        let Ok(top) = serde_json::from_slice::<TopValue>(&v.bytes) else { continue };
        for a in &top.apps {
            let rank = a.rank.to_string();
            let labels = [top.ranking.as_str(), &rank, &a.id, &a.track_name];
            e.set(&RANKED_RATINGS, max, &labels, a.rating_count_tot as f64);
            for (window, n) in [("total", a.mentions_total), ("24h", a.mentions_24h)] {
                let labels = [labels[0], labels[1], labels[2], labels[3], window];
                e.set(&RANKED_MENTIONS, 2 * max, &labels, n as f64);
            }
        }
    }
}
