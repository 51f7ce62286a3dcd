//! The page-views pipeline's result gauges for the domains of
//! `pipelines.pageviews.export_domains`: the views of each domain's latest hour and its top
//! articles (at most `top_n` per domain), and its trending articles (at most `trending_top_n`).

use super::names::{TOP, TRENDING};
use super::processor::{DomainTrending, HourTop};
use crate::config::Config;
use crate::metrics::results::{Export, Family};
use crate::pipelines::LiveViews;

/// Views of a domain's latest hour.
pub static HOUR_VIEWS: Family = Family {
    name: "pagepulse_pageviews_hour_views",
    help: "Views of an exported domain (pipelines.pageviews.export_domains) in its latest hour in pageviews.top, final or not (final).",
    labels: &["domain", "final"],
};

/// The top articles of a domain's latest hour.
pub static HOUR_TOP: Family = Family {
    name: "pagepulse_pageviews_hour_top_views",
    help: "Views of the top articles of an exported domain's latest hour in pageviews.top, by rank.",
    labels: &["domain", "rank", "title"],
};

/// A domain's trending articles.
pub static TRENDING_VIEWS: Family = Family {
    name: "pagepulse_pageviews_trending_views",
    help: "Views of an exported domain's trending articles (the last hour, pageviews.trending), by rank.",
    labels: &["domain", "rank", "title"],
};

/// Every family of this file.
pub const FAMILIES: &[&Family] = &[&HOUR_VIEWS, &HOUR_TOP, &TRENDING_VIEWS];

/// Fills the families from the served `pageviews.top` and `pageviews.trending`.
pub fn export(cfg: &Config, live: &LiveViews, e: &mut Export) {
    let v = &cfg.pageviews;
    let domains = v.export_domains.len();
    for domain in &v.export_domains {
        let latest = live.results.table(TOP).and_then(|t| t.greatest_with_prefix(&format!("{domain}|")));
        if let Some(hour) = latest.and_then(|(_, val)| serde_json::from_slice::<HourTop>(&val.bytes).ok()) {
            e.set(&HOUR_VIEWS, domains, &[domain, &hour.is_final.to_string()], hour.total_views as f64);
            for a in &hour.articles {
                e.set(&HOUR_TOP, domains * v.top_n, &[domain, &a.rank.to_string(), &a.title], a.views as f64);
            }
        }
        let trending = live.results.table(TRENDING).and_then(|t| t.get(domain));
        if let Some(t) = trending.and_then(|val| serde_json::from_slice::<DomainTrending>(&val.bytes).ok()) {
            for a in &t.articles {
                let labels = [domain.as_str(), &a.rank.to_string(), &a.title];
                e.set(&TRENDING_VIEWS, domains * v.trending_top_n, &labels, a.views as f64);
            }
        }
    }
}
