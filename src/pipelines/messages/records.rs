//! The values the messages pipeline writes, and the one ranking both use.

use std::sync::Arc;

use hashbrown::HashMap;
use serde::{Deserialize, Serialize};

use super::store::Spelling;
use crate::ops::topn::top_n;

/// A `messages.stats` value: one event-time minute, final.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MinuteStats {
    /// Start of the minute, RFC 3339 UTC.
    pub minute_start: String,
    /// Always true: a minute is written once, when it is final.
    #[serde(rename = "final")]
    pub is_final: bool,
    /// Messages in the minute.
    pub total: u64,
    /// Distinct usernames in the minute.
    pub users: u64,
    /// Messages per state, most first, ties by state.
    pub by_state: Vec<StateCount>,
    /// The top cities, most messages first, ties by state then city.
    pub top_cities: Vec<CityRank>,
}

/// A `messages.totals` value: all-time figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Totals {
    /// Messages, late ones included.
    pub total: u64,
    /// Distinct usernames.
    pub users: u64,
    /// Messages per state, most first, ties by state.
    pub by_state: Vec<StateCount>,
    /// The top cities, most messages first, ties by state then city.
    pub top_cities: Vec<CityRank>,
    /// When these figures were taken (wall clock, RFC 3339 UTC).
    pub as_of: String,
}

/// Messages of one state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateCount {
    /// The state, upper-cased.
    pub state: String,
    /// Messages.
    pub count: u64,
}

/// One ranked city.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CityRank {
    /// 1-based rank.
    pub rank: usize,
    /// Its state.
    pub state: String,
    /// The city as first seen.
    pub city: String,
    /// Messages.
    pub count: u64,
}

/// Counts per (state, city) summed over partitions, keyed by the place key
/// (`<state>` NUL `<city, lower-cased>`): what a minute or the totals rank.
#[derive(Debug, Default)]
pub struct PlaceTally {
    places: HashMap<Arc<str>, (Arc<str>, u64, Spelling)>,
}

impl PlaceTally {
    /// Adds `count` messages of place `key` in `state`, seen first as `city`.
    pub fn add(&mut self, key: &Arc<str>, state: &Arc<str>, count: u64, city: &Spelling) {
        match self.places.get_mut(key) {
            Some((_, n, shown)) => {
                *n += count;
                shown.merge(city);
            }
            None => {
                self.places.insert(key.clone(), (state.clone(), count, city.clone()));
            }
        }
    }

    /// Every state's count (most first, ties by state) and the best `top` cities (most first, ties
    /// by state then city, in byte order).
    pub fn rank(&self, top: usize) -> (Vec<StateCount>, Vec<CityRank>) {
        let mut states: HashMap<&Arc<str>, u64> = HashMap::new();
        for (state, n, _) in self.places.values() {
            *states.entry(state).or_default() += n;
        }
        let mut by_state: Vec<StateCount> =
            states.into_iter().map(|(s, count)| StateCount { state: s.to_string(), count }).collect();
        by_state.sort_unstable_by(|a, b| b.count.cmp(&a.count).then_with(|| a.state.cmp(&b.state)));
        // ((state, city as shown), count): the ranking key breaks ties by state, then city.
        type Ranked = ((Arc<str>, Arc<str>), u64);
        let cities: Vec<Ranked> =
            self.places.values().map(|(s, n, shown)| ((s.clone(), shown.text.clone()), *n)).collect();
        let top_cities = top_n(cities.iter().map(|(k, n)| (k, *n)), top)
            .into_iter()
            .enumerate()
            .map(|(i, r)| CityRank {
                rank: i + 1,
                state: r.key.0.to_string(),
                city: r.key.1.to_string(),
                count: r.count,
            })
            .collect();
        (by_state, top_cities)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spelling(ts_ms: i64, text: &str) -> Spelling {
        Spelling { ts_ms, text: text.into() }
    }

    #[test]
    fn ranks_by_count_then_state_then_city_and_shows_the_earliest_spelling() {
        let mut t = PlaceTally::default();
        let k = |s: &str| -> Arc<str> { s.into() };
        t.add(&k("NY\0new york"), &k("NY"), 3, &spelling(5, "new york"));
        t.add(&k("NY\0new york"), &k("NY"), 2, &spelling(2, "New York"));
        t.add(&k("CA\0la"), &k("CA"), 5, &spelling(1, "LA"));
        t.add(&k("TX\0austin"), &k("TX"), 2, &spelling(1, "Austin"));
        t.add(&k("CA\0fresno"), &k("CA"), 2, &spelling(1, "Fresno"));
        t.add(&k("CA\0aptos"), &k("CA"), 2, &spelling(1, "Aptos"));
        let (states, cities) = t.rank(4);
        let s: Vec<(&str, u64)> = states.iter().map(|s| (s.state.as_str(), s.count)).collect();
        assert_eq!(s, [("CA", 9), ("NY", 5), ("TX", 2)]);
        let c: Vec<(usize, &str, &str, u64)> =
            cities.iter().map(|c| (c.rank, c.state.as_str(), c.city.as_str(), c.count)).collect();
        assert_eq!(c, [(1, "CA", "LA", 5), (2, "NY", "New York", 5), (3, "CA", "Aptos", 2), (4, "CA", "Fresno", 2)]);
    }
}
