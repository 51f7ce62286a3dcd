//! The posts pipeline's result gauges: the trending hashtags by rank (at most
//! `pipelines.posts.trending_top_n`).

use crate::config::Config;
use crate::metrics::results::{Export, Family};
use crate::pipelines::LiveViews;

/// The trending hashtags.
pub static TRENDING_HASHTAGS: Family = Family {
    name: "pagepulse_trending_hashtag_posts",
    help: "The trending hashtags by rank: posts using each in the trending window.",
    labels: &["rank", "hashtag"],
};

/// Every family of this file.
pub const FAMILIES: &[&Family] = &[&TRENDING_HASHTAGS];

/// Fills the family from the posts live view.
pub fn export(cfg: &Config, live: &LiveViews, e: &mut Export) {
    let Some(t) = live.posts.hashtags() else { return };
    for tag in &t.tags {
        e.set(&TRENDING_HASHTAGS, cfg.posts.trending_top_n, &[&tag.rank.to_string(), &tag.tag], tag.count as f64);
    }
}
