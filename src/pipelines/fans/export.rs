//! The fans pipeline's result gauges: the figures of watched pages (`pipelines.fans.watch` and
//! pages marked `"watch": true` in their `pages` record, at most `watch_max`) and both current
//! rankings of `fans.top` (at most `top_n` each).

use super::live::Detail;
use crate::config::Config;
use crate::metrics::results::{Export, Family};
use crate::pipelines::LiveViews;

/// A watched page's fans at its latest observation.
pub static PAGE_FANS: Family = Family {
    name: "pagepulse_page_fans",
    help: "Fans of a watched page (pipelines.fans.watch) at its latest observation.",
    labels: &["platform", "page_id"],
};

/// A watched page's followers at its latest observation.
pub static PAGE_FOLLOWERS: Family = Family {
    name: "pagepulse_page_followers",
    help:
        "Followers of a watched page (pipelines.fans.watch) at its latest observation, where the platform reports them.",
    labels: &["platform", "page_id"],
};

/// A watched page's fan delta over each window.
pub static PAGE_DELTA: Family = Family {
    name: "pagepulse_page_delta",
    help: "Change in fans of a watched page over the window (1h, 24h, 7d) ending at its latest observation.",
    labels: &["platform", "page_id", "window"],
};

/// The ranking by 24 h growth.
pub static TOP_GROWTH: Family = Family {
    name: "pagepulse_top_pages_growth_24h_percent",
    help: "The pages of fans.top's ranking by 24 h growth, by rank: their growth in percent.",
    labels: &["rank", "platform", "page_id"],
};

/// The ranking by 24 h delta.
pub static TOP_DELTA: Family = Family {
    name: "pagepulse_top_pages_delta_24h",
    help: "The pages of fans.top's ranking by 24 h delta, by rank: their delta in fans.",
    labels: &["rank", "platform", "page_id"],
};

/// Every family of this file.
pub const FAMILIES: &[&Family] = &[&PAGE_FANS, &PAGE_FOLLOWERS, &PAGE_DELTA, &TOP_GROWTH, &TOP_DELTA];

/// Fills the families from the fans live view: the pages of `pipelines.fans.watch`, then those
/// marked in their `pages` record, each once.
pub fn export(cfg: &Config, live: &LiveViews, e: &mut Export) {
    let max = cfg.fans.watch_max;
    let marked = live.fans.watched();
    let mut keys: Vec<String> = cfg.fans.watch.clone();
    keys.extend(marked.keys().into_iter().filter(|k| !cfg.fans.watch.contains(k)));
    for key in &keys {
        let Some(view) = live.fans.page(key, Detail::Stats) else { continue };
        let (platform, page_id, s) = (view.platform.as_str(), view.page_id.as_str(), &view.stats);
        e.set(&PAGE_FANS, max, &[platform, page_id], s.fans as f64);
        if let Some(f) = s.followers {
            e.set(&PAGE_FOLLOWERS, max, &[platform, page_id], f as f64);
        }
        for (window, d) in [("1h", &s.delta_1h), ("24h", &s.delta_24h), ("7d", &s.delta_7d)] {
            e.set(&PAGE_DELTA, 3 * max, &[platform, page_id, window], d.value as f64);
        }
    }
    let Some(top) = live.fans.top() else { return };
    for t in &top.by_growth_24h_pct {
        if let Some(g) = t.growth_24h_pct {
            e.set(&TOP_GROWTH, cfg.fans.top_n, &[&t.rank.to_string(), &t.platform, &t.page_id], g);
        }
    }
    for t in &top.by_delta_24h {
        e.set(&TOP_DELTA, cfg.fans.top_n, &[&t.rank.to_string(), &t.platform, &t.page_id], t.delta_24h as f64);
    }
}
