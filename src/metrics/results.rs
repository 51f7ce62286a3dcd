//! The pipelines' results as Prometheus gauges, with bounded cardinality: what dashboards chart
//! (a watched page's fans, the top pages, an hour's top articles, trending hashtags, messages by
//! state, the app rankings).
//!
//! Each pipeline declares the [`Family`]s it exports and fills an [`Export`] from its live views
//! when Prometheus scrapes (nothing is kept between scrapes, so a page that leaves a ranking
//! leaves its series too). Every family has a bound on its series, from the configuration; a
//! series past it is not exported but counted in `pagepulse_results_over_bound{metric}`.

use std::collections::HashMap;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{GaugeVec, Opts};

/// One exported gauge family.
#[derive(Debug)]
pub struct Family {
    /// The metric name.
    pub name: &'static str,
    /// Its help text.
    pub help: &'static str,
    /// Its label names.
    pub labels: &'static [&'static str],
}

impl Family {
    /// The Prometheus description of the family.
    pub fn desc(&self) -> Desc {
        let labels = self.labels.iter().map(|l| (*l).to_string()).collect();
        Desc::new(self.name.to_string(), self.help.to_string(), labels, HashMap::new())
            .expect("exported families have valid names")
    }
}

/// Series of one family that were not exported because the family was at its bound.
pub const OVER_BOUND: Family = Family {
    name: "pagepulse_results_over_bound",
    help: "Result series not exported at the last scrape because their metric was at its configured bound.",
    labels: &["metric"],
};

#[derive(Debug, Default)]
struct Series {
    max: usize,
    values: Vec<(Vec<String>, f64)>,
    over: u64,
}

/// The result series of one scrape.
#[derive(Debug, Default)]
pub struct Export {
    families: HashMap<&'static str, (&'static Family, Series)>,
}

impl Export {
    /// An empty scrape.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the series of `family` with `labels` (in the family's label order) to `value`. A
    /// family keeps at most `max` series a scrape; further ones are counted, not kept.
    pub fn set(&mut self, family: &'static Family, max: usize, labels: &[&str], value: f64) {
        debug_assert_eq!(labels.len(), family.labels.len(), "{}: label count", family.name);
        let (_, s) = self.families.entry(family.name).or_insert_with(|| (family, Series { max, ..Series::default() }));
        if s.values.len() >= s.max {
            s.over += 1;
            return;
        }
        s.values.push((labels.iter().map(|l| (*l).to_string()).collect(), value));
    }

    /// The series of the family named `name`, in the order set (for tests).
    pub fn series(&self, name: &str) -> Vec<(Vec<String>, f64)> {
        self.families.get(name).map(|(_, s)| s.values.clone()).unwrap_or_default()
    }

    /// Series of the family named `name` left out by its bound.
    pub fn over(&self, name: &str) -> u64 {
        self.families.get(name).map_or(0, |(_, s)| s.over)
    }

    /// The Prometheus metric families of this scrape, with `pagepulse_results_over_bound` for
    /// every family in `declared` (0 where nothing was left out).
    pub fn into_families(self, declared: &[&'static Family]) -> Vec<MetricFamily> {
        let over = GaugeVec::new(Opts::new(OVER_BOUND.name, OVER_BOUND.help), OVER_BOUND.labels)
            .expect("valid metric definition");
        for f in declared {
            over.with_label_values(&[f.name]).set(self.over(f.name) as f64);
        }
        let mut out = over.collect();
        for (family, s) in self.families.into_values() {
            if s.values.is_empty() {
                continue;
            }
            let vec =
                GaugeVec::new(Opts::new(family.name, family.help), family.labels).expect("valid metric definition");
            for (labels, value) in &s.values {
                let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
                vec.with_label_values(&labels).set(*value);
            }
            out.extend(vec.collect());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static RANKED: Family = Family { name: "pagepulse_test_ranked", help: "Test.", labels: &["rank", "item"] };

    #[test]
    fn a_family_keeps_its_bound_and_counts_the_rest() {
        let mut e = Export::new();
        for i in 0..5 {
            e.set(&RANKED, 3, &[&(i + 1).to_string(), &format!("item{i}")], f64::from(10 - i));
        }
        assert_eq!(e.series(RANKED.name).len(), 3);
        assert_eq!(e.over(RANKED.name), 2);
        let families = e.into_families(&[&RANKED]);
        let text = {
            let mut buf = Vec::new();
            prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &families, &mut buf).expect("encode");
            String::from_utf8(buf).expect("utf-8")
        };
        assert!(text.contains("pagepulse_test_ranked{item=\"item0\",rank=\"1\"} 10"), "{text}");
        assert!(text.contains("pagepulse_test_ranked{item=\"item2\",rank=\"3\"} 8"), "{text}");
        assert!(!text.contains("item3"), "{text}");
        assert!(text.contains("pagepulse_results_over_bound{metric=\"pagepulse_test_ranked\"} 2"), "{text}");
    }
}
