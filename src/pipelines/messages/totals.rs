//! `messages.totals` across instances: every partition's all-time figures (messages, users, and
//! each (state, city) with its count and first spelling) go through `messages.shares`, read whole
//! by every instance into a [`TotalsBoard`], which sums them; the instance holding partition 0
//! of `messages` writes the record (see [`crate::engine::aggregate`]).
//!
//! Users are keyed by username, so a user lives in one partition and the distinct users of the
//! whole input are the sum of every partition's. A city's spelling is that of its earliest
//! message wherever it came from, as within one instance ([`Spelling`]).

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::names::{SHARES, TOTALS, TOTALS_KEY};
use super::records::{PlaceTally, Totals};
use super::store::Spelling;
use crate::clock::format_ms;
use crate::engine::aggregate::share_key;
use crate::engine::{Aggregate, OutRecord, RejectClass, Rejection};

/// What a messages task hands on: its partition's figures, as they are now (not increments).
#[derive(Debug, Clone, PartialEq)]
pub enum TotalsPart {
    /// The partition's messages and distinct users, all time.
    Counts {
        /// The partition.
        partition: i32,
        /// Messages (late ones included).
        total: u64,
        /// Distinct users.
        users: u64,
    },
    /// One (state, city) of the partition.
    Place {
        /// The partition.
        partition: i32,
        /// `<state>` NUL `<city, lower-cased>`.
        key: Arc<str>,
        /// What the share record carries.
        place: PlaceShare,
    },
}

/// A place's figures in one partition: the value of its `messages.shares` record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaceShare {
    /// The state.
    pub state: String,
    /// Messages from it (late ones included).
    pub count: u64,
    /// The city as first seen in this partition.
    pub city: String,
    /// Event time of that first message, epoch ms.
    pub city_ts_ms: i64,
}

/// The value of a partition's `n` share record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CountsShare {
    total: u64,
    users: u64,
}

/// Every partition's figures, summed into `messages.totals`.
pub struct TotalsBoard {
    top_cities: usize,
    every_ms: i64,
    counts: HashMap<i32, (u64, u64)>,
    places: HashMap<(i32, Arc<str>), PlaceShare>,
    changed: bool,
    /// The last record written (or computed, on an instance that does not write) and when.
    last: Option<(Totals, i64)>,
    force: bool,
}

impl TotalsBoard {
    /// An empty board ranking `top_cities` cities, writing at most every `every_ms`.
    pub fn new(top_cities: usize, every_ms: i64) -> Self {
        Self {
            top_cities,
            every_ms,
            counts: HashMap::new(),
            places: HashMap::new(),
            changed: false,
            last: None,
            force: false,
        }
    }

    /// The figures of every partition, summed, at `now_ms`.
    pub fn totals(&self, now_ms: i64) -> Totals {
        let (total, users) = self.counts.values().fold((0, 0), |(t, u), (pt, pu)| (t + pt, u + pu));
        let mut tally = PlaceTally::default();
        for ((_, key), p) in &self.places {
            let spelling = Spelling { ts_ms: p.city_ts_ms, text: p.city.as_str().into() };
            tally.add(key, &Arc::from(p.state.as_str()), p.count, &spelling);
        }
        let (by_state, top_cities) = tally.rank(self.top_cities);
        Totals { total, users, by_state, top_cities, as_of: format_ms(now_ms) }
    }
}

impl Aggregate for TotalsBoard {
    type Part = TotalsPart;

    fn merge(&mut self, parts: &mut Vec<TotalsPart>) {
        for part in parts.drain(..) {
            match part {
                TotalsPart::Counts { partition, total, users } => {
                    self.changed |= self.counts.insert(partition, (total, users)) != Some((total, users));
                }
                TotalsPart::Place { partition, key, place } => {
                    let key = (partition, key);
                    if place.count == 0 {
                        self.changed |= self.places.remove(&key).is_some();
                    } else {
                        self.changed |= self.places.get(&key) != Some(&place);
                        self.places.insert(key, place);
                    }
                }
            }
        }
    }

    /// Writes the totals when they changed, at most every `totals_interval`.
    fn on_tick(&mut self, now: DateTime<Utc>, out: &mut Vec<OutRecord>) {
        let now_ms = now.timestamp_millis();
        let force = self.force;
        if !force && (!self.changed || self.last.as_ref().is_some_and(|(_, at)| now_ms - at < self.every_ms)) {
            return;
        }
        self.changed = false;
        self.force = false;
        let t = self.totals(now_ms);
        let same = self.last.as_ref().is_some_and(|(l, _)| {
            (l.total, l.users, &l.by_state, &l.top_cities) == (t.total, t.users, &t.by_state, &t.top_cities)
        });
        if (same && !force) || t.total == 0 {
            return;
        }
        out.push(OutRecord::new(TOTALS, TOTALS_KEY, serde_json::to_vec(&t).expect("plain struct")));
        self.last = Some((t, now_ms));
    }

    fn forget_emitted(&mut self) {
        self.force = true;
    }
}

/// The share records of a task's parts (see [`crate::engine::aggregate::PublishFn`]): the
/// partition's newest counts, `<partition>/n`, and the newest figures of each place it changed,
/// `<partition>/c/<state>\0<city>`.
pub fn publish(partition: i32, parts: &mut Vec<TotalsPart>, out: &mut Vec<OutRecord>) {
    let mut counts = None;
    let mut places: HashMap<Arc<str>, PlaceShare> = HashMap::new();
    for part in parts.drain(..) {
        match part {
            TotalsPart::Counts { total, users, .. } => counts = Some(CountsShare { total, users }),
            TotalsPart::Place { key, place, .. } => {
                places.insert(key, place);
            }
        }
    }
    if let Some(c) = counts {
        out.push(OutRecord::new(SHARES, share_key(partition, "n"), serde_json::to_vec(&c).expect("plain struct")));
    }
    for (key, place) in places {
        let value = serde_json::to_vec(&place).expect("plain struct");
        out.push(OutRecord::new(SHARES, share_key(partition, &format!("c/{key}")), value));
    }
}

/// A `messages.shares` record back into the figures it carries (see
/// [`crate::engine::aggregate::DecodeShare`]); a tombstone of a place is a count of zero.
pub fn decode_share(partition: i32, what: &str, value: Option<&[u8]>) -> Result<TotalsPart, Rejection> {
    if what == "n" {
        let value = value.ok_or_else(|| {
            Rejection::new(RejectClass::MissingField, format!("messages share `{what}` has no value"))
        })?;
        let c: CountsShare = serde_json::from_slice(value)
            .map_err(|e| Rejection::new(RejectClass::InvalidJson, format!("not a partition's counts: {e}")))?;
        return Ok(TotalsPart::Counts { partition, total: c.total, users: c.users });
    }
    let key = what.strip_prefix("c/").filter(|k| k.contains('\0')).ok_or_else(|| {
        Rejection::new(RejectClass::InvalidValue, format!("messages share `{what}` is not `n` or `c/<state>\\0<city>`"))
    })?;
    let place = match value {
        None => PlaceShare { state: String::new(), count: 0, city: String::new(), city_ts_ms: 0 },
        Some(v) => serde_json::from_slice(v)
            .map_err(|e| Rejection::new(RejectClass::InvalidJson, format!("not a place's figures: {e}")))?,
    };
    Ok(TotalsPart::Place { partition, key: key.into(), place })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(p: i32, state: &str, city: &str, count: u64, ts: i64) -> TotalsPart {
        let key: Arc<str> = format!("{state}\0{}", city.to_lowercase()).into();
        TotalsPart::Place {
            partition: p,
            key,
            place: PlaceShare { state: state.into(), count, city: city.into(), city_ts_ms: ts },
        }
    }

    #[test]
    fn partitions_figures_add_up_replace_themselves_and_round_trip() {
        let mut b = TotalsBoard::new(5, 0);
        let through = |b: &mut TotalsBoard, partition: i32, mut parts: Vec<TotalsPart>| {
            let mut recs = Vec::new();
            publish(partition, &mut parts, &mut recs);
            assert!(crate::engine::aggregate::read_shares(b, &recs, decode_share).is_empty());
        };
        through(
            &mut b,
            0,
            vec![TotalsPart::Counts { partition: 0, total: 3, users: 2 }, place(0, "NY", "New York", 3, 50)],
        );
        through(
            &mut b,
            1,
            vec![
                TotalsPart::Counts { partition: 1, total: 4, users: 3 },
                place(1, "NY", "new york", 1, 10),
                place(1, "CA", "Fresno", 3, 20),
            ],
        );
        let t = b.totals(0);
        assert_eq!((t.total, t.users), (7, 5));
        assert_eq!(t.top_cities[0].city, "new york", "the earliest spelling, from either partition");
        assert_eq!(t.top_cities[0].count, 4);
        // Read again: the same; a partition's next owner from an older state: replaced.
        through(&mut b, 1, vec![TotalsPart::Counts { partition: 1, total: 4, users: 3 }]);
        through(
            &mut b,
            0,
            vec![TotalsPart::Counts { partition: 0, total: 2, users: 2 }, place(0, "NY", "New York", 2, 50)],
        );
        let t = b.totals(0);
        assert_eq!((t.total, t.users), (6, 5));
        assert_eq!(
            t.by_state.iter().map(|s| (s.state.as_str(), s.count)).collect::<Vec<_>>(),
            vec![("CA", 3), ("NY", 3)]
        );
        let mut out = Vec::new();
        b.on_tick(Utc::now(), &mut out);
        assert_eq!(out.len(), 1);
        out.clear();
        b.on_tick(Utc::now(), &mut out);
        assert!(out.is_empty(), "nothing changed");
        b.forget_emitted();
        b.on_tick(Utc::now(), &mut out);
        assert_eq!(out.len(), 1, "a new writer writes the current figures");
        assert!(decode_share(0, "x", Some(b"{}")).is_err());
        assert!(decode_share(0, "n", Some(b"[]")).is_err());
    }
}
