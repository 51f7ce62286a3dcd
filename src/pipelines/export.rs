//! The enabled pipelines' result gauges as one Prometheus collector: at each scrape every enabled
//! pipeline fills an [`Export`] from the live views (its `export.rs`), within the bounds of the
//! configuration (see [`crate::metrics::results`]).

use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;

use super::{LiveViews, REGISTRY};
use crate::config::Config;
use crate::metrics::results::{Export, Family, OVER_BOUND};

/// The collector of the enabled pipelines' results.
pub struct ResultsCollector {
    cfg: Arc<Config>,
    live: LiveViews,
    families: Vec<&'static Family>,
    descs: Vec<Desc>,
}

impl ResultsCollector {
    /// The results of the pipelines `cfg` enables, read from `live`.
    pub fn new(cfg: Arc<Config>, live: LiveViews) -> Self {
        let families: Vec<&'static Family> =
            REGISTRY.iter().filter(|p| (p.enabled)(&cfg)).flat_map(|p| p.exports.iter().copied()).collect();
        let descs = std::iter::once(&OVER_BOUND).chain(families.iter().copied()).map(Family::desc).collect();
        Self { cfg, live, families, descs }
    }

    /// This scrape's series, before encoding.
    pub fn export(&self) -> Export {
        let mut e = Export::new();
        for export in REGISTRY.iter().filter(|p| (p.enabled)(&self.cfg)).filter_map(|p| p.export) {
            export(&self.cfg, &self.live, &mut e);
        }
        e
    }
}

impl Collector for ResultsCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.export().into_families(&self.families)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::latest::Value;
    use crate::pipelines::posts::{Trending, TrendingTag};

    fn cfg(toml: &str) -> Arc<Config> {
        Arc::new(Config::from_parts(toml.parse().expect("test TOML"), std::iter::empty()).expect("valid"))
    }

    fn put(live: &LiveViews, topic: &str, key: &str, json: serde_json::Value) {
        let now = chrono::Utc::now().timestamp_millis();
        let bytes = serde_json::to_vec(&json).expect("json");
        live.results.table(topic).expect("served").apply(key, Some(Value::new(&bytes, now)), now);
    }

    fn find(e: &Export, family: &Family, labels: &[&str]) -> Option<f64> {
        e.series(family.name)
            .into_iter()
            .find(|(l, _)| l.iter().map(String::as_str).eq(labels.iter().copied()))
            .map(|(_, v)| v)
    }

    #[test]
    fn each_pipelines_results_become_bounded_gauges() {
        let cfg = cfg(
            "[pipelines.messages]\nexport_states_max = 2\n[pipelines.pageviews]\nexport_domains = [\"en\", \"de\"]\n",
        );
        let live = LiveViews::new(&cfg);
        put(
            &live,
            "messages.totals",
            "totals",
            serde_json::json!({
            "total": 6, "users": 3, "as_of": "2026-12-06T10:00:00Z",
            "by_state": [{"state": "NY", "count": 3}, {"state": "CA", "count": 2}, {"state": "TX", "count": 1}],
            "top_cities": [{"rank": 1, "state": "NY", "city": "New York", "count": 3}]}),
        );
        for (hour, total) in [("2026-12-05T09", 10), ("2026-12-05T11", 30), ("2026-12-05T10", 20)] {
            put(
                &live,
                "pageviews.top",
                &format!("en|{hour}"),
                serde_json::json!({
                "domain": "en", "hour_start": format!("{hour}:00:00Z"), "final": hour != "2026-12-05T11",
                "total_views": total, "late_events": 0, "articles": [{"rank": 1, "title": format!("A{hour}"), "views": total - 1}]}),
            );
        }
        put(
            &live,
            "pageviews.trending",
            "fr",
            serde_json::json!({
            "domain": "fr", "window_start": "x", "window_end": "y", "articles": [{"rank": 1, "title": "Not exported", "views": 5}]}),
        );
        put(
            &live,
            "apps.top",
            "Book+Music",
            serde_json::json!({
            "ranking": "Book+Music", "genres": ["Book", "Music"], "by": "rating_count_tot", "generated_at": "t",
            "apps": [{"rank": 1, "id": "284035177", "track_name": "Pandora", "prime_genre": "Music", "rating_count_tot": 1126879,
                      "user_rating": 4.0, "price": 0.0, "mentions_total": 7, "mentions_24h": 2}]}),
        );
        live.posts.set_hashtags(Trending {
            window_start: "a".into(),
            window_end: "b".into(),
            tags: (1..=3)
                .map(|rank| TrendingTag { rank, tag: format!("tag{rank}"), count: 10 - rank as u64 })
                .collect(),
        });

        let e = ResultsCollector::new(cfg.clone(), live.clone()).export();
        use crate::pipelines::{apps, messages, pageviews, posts};
        // Messages: the two most counted states; the third counted, not exported.
        assert_eq!(find(&e, &messages::export::TOTAL, &["messages"]), Some(6.0));
        assert_eq!(find(&e, &messages::export::TOTAL, &["users"]), Some(3.0));
        assert_eq!(e.series(messages::export::BY_STATE.name).len(), 2);
        assert_eq!(find(&e, &messages::export::BY_STATE, &["CA"]), Some(2.0));
        assert_eq!(e.over(messages::export::BY_STATE.name), 1);
        assert_eq!(find(&e, &messages::export::TOP_CITIES, &["1", "NY", "New York"]), Some(3.0));
        // Page views: en's latest hour (11, not yet final), nothing for de, nothing for fr.
        assert_eq!(
            e.series(pageviews::export::HOUR_VIEWS.name),
            vec![(vec!["en".to_string(), "false".to_string()], 30.0)]
        );
        assert_eq!(find(&e, &pageviews::export::HOUR_TOP, &["en", "1", "A2026-12-05T11"]), Some(29.0));
        assert!(e.series(pageviews::export::TRENDING_VIEWS.name).is_empty());
        // Apps and posts.
        assert_eq!(
            find(&e, &apps::export::RANKED_MENTIONS, &["Book+Music", "1", "284035177", "Pandora", "total"]),
            Some(7.0)
        );
        assert_eq!(
            find(&e, &apps::export::RANKED_RATINGS, &["Book+Music", "1", "284035177", "Pandora"]),
            Some(1126879.0)
        );
        assert_eq!(find(&e, &posts::export::TRENDING_HASHTAGS, &["2", "tag2"]), Some(8.0));

        // Encoded, with the over-bound count of every declared family.
        let text = {
            let mut buf = Vec::new();
            let families = ResultsCollector::new(cfg, live).collect();
            prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &families, &mut buf).expect("encode");
            String::from_utf8(buf).expect("utf-8")
        };
        assert!(text.contains("pagepulse_results_over_bound{metric=\"pagepulse_messages_by_state\"} 1"), "{text}");
        assert!(text.contains("pagepulse_results_over_bound{metric=\"pagepulse_page_fans\"} 0"), "{text}");
        assert!(text.contains("pagepulse_trending_hashtag_posts{hashtag=\"tag1\",rank=\"1\"} 9"), "{text}");
    }

    #[test]
    fn a_disabled_pipeline_exports_nothing() {
        let cfg = cfg("[pipelines.messages]\nenabled = false\n");
        let c = ResultsCollector::new(cfg, LiveViews::new(&Config::default()));
        assert!(c.families.iter().all(|f| !f.name.starts_with("pagepulse_messages_")));
        assert!(c.desc().iter().any(|d| d.fq_name == "pagepulse_results_over_bound"));
    }
}
