//! The instance's mention counts, merged from every partition it owns (a cross-partition
//! aggregate, [`crate::engine::aggregate`]), and what it writes: `apps.mentions` per app and
//! `apps.top` per ranking.
//!
//! Each partition's share is kept apart ([`Share`]), so a partition restored again (a rebalance
//! that gives it back) replaces its share instead of counting it twice; the instance's totals are
//! their sums, kept up to date as hits arrive. The 24-hour window ends at the bucket of the newest
//! post event time any partition has seen: buckets before it leave every share's window at once.
//! The final window counts do not depend on the order partitions are processed in: a bucket
//! once out of the window never comes back, and a post older than the window counts in the total
//! only, whenever it is processed.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use hashbrown::{HashMap, HashSet};

use super::catalogue::{AppId, Catalogue};
use super::config::AppsConfig;
use super::names::{MENTIONS, SHARES, TOP};
use super::rankings::{rank, MentionsValue, RankedApp, TopValue};
use super::store::{window_start, Share};
use crate::clock::format_ms;
use crate::engine::aggregate::share_key;
use crate::engine::{Aggregate, OutRecord, RejectClass, Rejection};

/// What a mention-counting task hands the aggregate.
#[derive(Debug, Clone, PartialEq)]
pub enum MentionPart {
    /// `partition`'s count of mentions of `app` since it was loaded, now (not an increment).
    Total {
        /// The partition.
        partition: i32,
        /// The app.
        app: AppId,
        /// Its count.
        count: u64,
    },
    /// `partition`'s count of mentions of `app` in the bucket starting at `bucket`, now.
    Bucket {
        /// The partition.
        partition: i32,
        /// The bucket's start (ms).
        bucket: i64,
        /// The app.
        app: AppId,
        /// Its count.
        count: u64,
    },
    /// One more mention: a post of event time `ts_ms` in `partition` mentioned `app`. For
    /// callers that count within one instance (unit tests, benchmarks); the pipeline's tasks
    /// send [`MentionPart::Total`] and [`MentionPart::Bucket`], which survive redelivery.
    Hit {
        /// The post's partition.
        partition: i32,
        /// The app.
        app: AppId,
        /// The post's event time.
        ts_ms: i64,
    },
    /// `partition`'s whole share, restored from its changelog: replaces what the aggregate had of
    /// it.
    Restored {
        /// The partition.
        partition: i32,
        /// Its counts.
        share: Share,
    },
}

/// Every partition's counts merged, the rankings, and when each output was last written.
pub struct AppsAggregate {
    catalogue: Arc<Catalogue>,
    cfg: AppsConfig,
    bucket_ms: i64,
    shares: HashMap<i32, Share>,
    /// App -> mentions since loaded, summed over the shares.
    total: HashMap<AppId, u64>,
    /// App -> mentions in the window, summed over the shares' buckets in it.
    window: HashMap<AppId, u64>,
    /// Start of the newest bucket seen.
    head: Option<i64>,
    /// Apps whose counts changed since their last `apps.mentions` record.
    dirty: HashSet<AppId>,
    /// App -> (total, 24h, wall-clock ms) of its last `apps.mentions` record.
    emitted: HashMap<AppId, (u64, u64, i64)>,
    /// Counts changed since the rankings were last computed.
    counts_moved: bool,
    /// The catalogue version the rankings were last computed at.
    ranked_version: Option<u64>,
    /// Ranking name -> the apps of its last `apps.top` record.
    last_top: HashMap<String, Vec<RankedApp>>,
}

impl AppsAggregate {
    /// An empty aggregate over `catalogue` with the pipeline's config.
    pub fn new(catalogue: Arc<Catalogue>, cfg: &AppsConfig) -> Self {
        Self {
            catalogue,
            bucket_ms: cfg.mentions_bucket.as_millis() as i64,
            cfg: cfg.clone(),
            shares: HashMap::new(),
            total: HashMap::new(),
            window: HashMap::new(),
            head: None,
            dirty: HashSet::new(),
            emitted: HashMap::new(),
            counts_moved: false,
            ranked_version: None,
            last_top: HashMap::new(),
        }
    }

    /// An app's `(mentions_total, mentions_24h)`.
    pub fn counts(&self, id: &str) -> (u64, u64) {
        (self.total.get(id).copied().unwrap_or(0), self.window.get(id).copied().unwrap_or(0))
    }

    fn start(&self) -> Option<i64> {
        self.head.map(|h| window_start(h, self.bucket_ms))
    }

    /// Moves the window's end to `bucket` if it is newer, taking the buckets that fall out of it
    /// out of the window counts.
    fn advance(&mut self, bucket: i64) {
        if self.head.is_some_and(|h| bucket <= h) {
            return;
        }
        self.head = Some(bucket);
        let start = window_start(bucket, self.bucket_ms);
        for share in self.shares.values_mut() {
            while let Some(entry) = share.buckets.first_entry() {
                if *entry.key() >= start {
                    break;
                }
                for (app, n) in entry.remove() {
                    subtract(&mut self.window, &app, n);
                    self.dirty.insert(app);
                }
            }
        }
        self.counts_moved = true;
    }

    fn hit(&mut self, partition: i32, app: AppId, ts_ms: i64) {
        let bucket = ts_ms.div_euclid(self.bucket_ms) * self.bucket_ms;
        self.advance(bucket);
        let in_window = self.start().is_some_and(|s| bucket >= s);
        let share = self.shares.entry(partition).or_default();
        *share.totals.entry_ref(&app).or_insert(0) += 1;
        *self.total.entry_ref(&app).or_insert(0) += 1;
        if in_window {
            *share.buckets.entry(bucket).or_default().entry_ref(&app).or_insert(0) += 1;
            *self.window.entry_ref(&app).or_insert(0) += 1;
        }
        self.dirty.insert(app);
        self.counts_moved = true;
    }

    /// Sets `partition`'s total of `app` to `count`.
    fn set_total(&mut self, partition: i32, app: AppId, count: u64) {
        let share = self.shares.entry(partition).or_default();
        let old = share.totals.get(&app).copied().unwrap_or(0);
        if old == count {
            return;
        }
        share.totals.insert(app.clone(), count);
        if count > old {
            *self.total.entry_ref(&app).or_insert(0) += count - old;
        } else {
            subtract(&mut self.total, &app, old - count);
        }
        self.dirty.insert(app);
        self.counts_moved = true;
    }

    /// Sets `partition`'s count of `app` in the bucket starting at `bucket` to `count`.
    fn set_bucket(&mut self, partition: i32, bucket: i64, app: AppId, count: u64) {
        self.advance(bucket);
        if self.start().is_some_and(|s| bucket < s) {
            return; // out of the window
        }
        let share = self.shares.entry(partition).or_default();
        let counts = share.buckets.entry(bucket).or_default();
        let old = counts.get(&app).copied().unwrap_or(0);
        if old == count {
            return;
        }
        counts.insert(app.clone(), count);
        if count > old {
            *self.window.entry_ref(&app).or_insert(0) += count - old;
        } else {
            subtract(&mut self.window, &app, old - count);
        }
        self.dirty.insert(app);
        self.counts_moved = true;
    }

    fn replace(&mut self, partition: i32, mut share: Share) {
        if let Some(old) = self.shares.remove(&partition) {
            for (app, n) in old.totals {
                subtract(&mut self.total, &app, n);
                self.dirty.insert(app);
            }
            // Its buckets before the window were dropped as the window moved.
            for (_, bucket) in old.buckets {
                for (app, n) in bucket {
                    subtract(&mut self.window, &app, n);
                    self.dirty.insert(app);
                }
            }
        }
        if let Some((&newest, _)) = share.buckets.last_key_value() {
            self.advance(newest);
        }
        let start = self.start().unwrap_or(i64::MIN);
        share.buckets.retain(|b, _| *b >= start);
        for (app, n) in &share.totals {
            *self.total.entry_ref(app).or_insert(0) += n;
            self.dirty.insert(app.clone());
        }
        for bucket in share.buckets.values() {
            for (app, n) in bucket {
                *self.window.entry_ref(app).or_insert(0) += n;
            }
        }
        self.shares.insert(partition, share);
        self.counts_moved = true;
    }

    /// Forgets the counts of apps no longer in the catalogue; returns them.
    fn prune(&mut self) -> Vec<AppId> {
        let gone: Vec<AppId> = self.total.keys().filter(|id| !self.catalogue.contains(id)).cloned().collect();
        for id in &gone {
            self.total.remove(id);
            self.window.remove(id);
            self.dirty.remove(id);
            for share in self.shares.values_mut() {
                share.totals.remove(id);
                for bucket in share.buckets.values_mut() {
                    bucket.remove(id);
                }
            }
        }
        gone
    }

    /// The `apps.mentions` records due at `now_ms`: apps whose counts changed and whose last
    /// record is at least `mentions_interval` old.
    fn mentions(&mut self, now_ms: i64, out: &mut Vec<OutRecord>) {
        let interval = self.cfg.mentions_interval.as_millis() as i64;
        let mut due = Vec::new();
        for app in &self.dirty {
            let last = self.emitted.get(app);
            if last.is_none_or(|&(_, _, at)| now_ms - at >= interval) {
                due.push(app.clone());
            }
        }
        let as_of = format_ms(now_ms);
        for app in due {
            self.dirty.remove(&app);
            let (total, day) = self.counts(&app);
            let Some(entry) = self.catalogue.get(&app) else { continue };
            if self.emitted.get(&app).is_some_and(|&(t, d, _)| (t, d) == (total, day)) {
                continue; // changed and changed back
            }
            let value = MentionsValue {
                id: app.to_string(),
                name: entry.name.clone(),
                mentions_total: total,
                mentions_24h: day,
                as_of: as_of.clone(),
            };
            let bytes = serde_json::to_vec(&value).expect("serializing plain structs cannot fail");
            out.push(OutRecord::new(MENTIONS, app.as_bytes(), bytes));
            self.emitted.insert(app, (total, day, now_ms));
        }
    }

    /// The `apps.top` records of rankings that changed.
    fn rankings(&mut self, now_ms: i64, out: &mut Vec<OutRecord>) {
        let version = self.catalogue.version();
        if self.ranked_version == Some(version) && !self.counts_moved {
            return;
        }
        self.ranked_version = Some(version);
        self.counts_moved = false;
        for ranking in &self.cfg.rankings {
            let apps = rank(ranking, self.catalogue.in_genres(&ranking.genres), |id| {
                (self.total.get(id).copied().unwrap_or(0), self.window.get(id).copied().unwrap_or(0))
            });
            if self.last_top.get(&ranking.name) == Some(&apps) {
                continue;
            }
            let value = TopValue {
                ranking: ranking.name.clone(),
                genres: ranking.genres.clone(),
                by: ranking.by.as_str().to_string(),
                generated_at: format_ms(now_ms),
                apps,
            };
            let bytes = serde_json::to_vec(&value).expect("serializing plain structs cannot fail");
            out.push(OutRecord::new(TOP, ranking.name.as_bytes(), bytes));
            self.last_top.insert(ranking.name.clone(), value.apps);
        }
    }
}

fn subtract(counts: &mut HashMap<AppId, u64>, app: &AppId, n: u64) {
    if let Some(c) = counts.get_mut(app) {
        *c = c.saturating_sub(n);
        if *c == 0 {
            counts.remove(app);
        }
    }
}

impl Aggregate for AppsAggregate {
    type Part = MentionPart;

    fn merge(&mut self, parts: &mut Vec<MentionPart>) {
        for part in parts.drain(..) {
            match part {
                MentionPart::Total { partition, app, count } => self.set_total(partition, app, count),
                MentionPart::Bucket { partition, bucket, app, count } => self.set_bucket(partition, bucket, app, count),
                MentionPart::Hit { partition, app, ts_ms } => self.hit(partition, app, ts_ms),
                MentionPart::Restored { partition, share } => self.replace(partition, share),
            }
        }
    }

    fn forget_emitted(&mut self) {
        // The new writer writes every app's counts and every ranking again.
        self.dirty.extend(self.total.keys().cloned());
        self.emitted.clear();
        self.last_top.clear();
        self.ranked_version = None;
        self.counts_moved = true;
    }

    /// Writes what is due: nothing until the catalogue has loaded (a ranking of half a catalogue
    /// would be wrong); then tombstones of removed apps' counts, `apps.mentions` of changed apps
    /// (at most every `mentions_interval` per app) and `apps.top` of changed rankings.
    fn on_tick(&mut self, now: DateTime<Utc>, out: &mut Vec<OutRecord>) {
        if !self.catalogue.is_caught_up() {
            return;
        }
        let now_ms = now.timestamp_millis();
        for gone in self.prune() {
            self.emitted.remove(&gone);
            out.push(OutRecord {
                topic: MENTIONS,
                key: Some(gone.as_bytes().to_vec()),
                value: None,
                headers: Vec::new(),
                partition: None,
            });
            self.counts_moved = true;
        }
        self.mentions(now_ms, out);
        self.rankings(now_ms, out);
    }
}

/// The share records of a task's parts (see [`crate::engine::aggregate::PublishFn`]): the newest
/// total of each app it counted, `<partition>/t/<app>`, and the newest count of each (bucket,
/// app), `<partition>/b/<bucket start ms>/<app>`, each with the count as its value. A restored
/// partition's whole share goes out the same way. (Increments, [`MentionPart::Hit`], are for
/// counting within one instance and are not published.)
pub fn publish(partition: i32, parts: &mut Vec<MentionPart>, out: &mut Vec<OutRecord>) {
    let mut totals: hashbrown::HashMap<AppId, u64> = hashbrown::HashMap::new();
    let mut buckets: hashbrown::HashMap<(i64, AppId), u64> = hashbrown::HashMap::new();
    for part in parts.drain(..) {
        match part {
            MentionPart::Total { app, count, .. } => {
                totals.insert(app, count);
            }
            MentionPart::Bucket { bucket, app, count, .. } => {
                buckets.insert((bucket, app), count);
            }
            MentionPart::Restored { share, .. } => {
                totals.extend(share.totals);
                for (bucket, counts) in share.buckets {
                    buckets.extend(counts.into_iter().map(|(app, n)| ((bucket, app), n)));
                }
            }
            MentionPart::Hit { .. } => {}
        }
    }
    let rec = |what: String, n: u64| OutRecord {
        topic: SHARES,
        key: Some(share_key(partition, &what)),
        // A count of zero (a bucket that left the window) is a tombstone: compaction drops it.
        value: (n > 0).then(|| n.to_string().into_bytes()),
        headers: Vec::new(),
        partition: None,
    };
    out.extend(totals.into_iter().map(|(app, n)| rec(format!("t/{app}"), n)));
    out.extend(buckets.into_iter().map(|((b, app), n)| rec(format!("b/{b}/{app}"), n)));
}

/// An `apps.shares` record back into the count it carries (see
/// [`crate::engine::aggregate::DecodeShare`]); a tombstone is a count of zero.
pub fn decode_share(partition: i32, what: &str, value: Option<&[u8]>) -> Result<MentionPart, Rejection> {
    let bad = || {
        Rejection::new(
            RejectClass::InvalidValue,
            format!("apps share `{what}` is not `t/<app>` or `b/<bucket start ms>/<app>`"),
        )
    };
    let count = match value {
        None => 0,
        Some(v) => std::str::from_utf8(v).ok().and_then(|v| v.trim().parse::<u64>().ok()).ok_or_else(|| {
            Rejection::new(RejectClass::InvalidValue, "an apps share's value is a count (a decimal integer)")
        })?,
    };
    if let Some(app) = what.strip_prefix("t/").filter(|a| !a.is_empty()) {
        return Ok(MentionPart::Total { partition, app: app.into(), count });
    }
    let (bucket, app) = what.strip_prefix("b/").and_then(|r| r.split_once('/')).ok_or_else(bad)?;
    let bucket = bucket.parse::<i64>().map_err(|_| bad())?;
    if app.is_empty() {
        return Err(bad());
    }
    Ok(MentionPart::Bucket { partition, bucket, app: app.into(), count })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    use super::*;
    use crate::config::Config;
    use crate::pipelines::apps::catalogue::App;
    use crate::pipelines::apps::matcher::app_name;

    const T0: i64 = 1_795_428_000_000;
    const HOUR: i64 = 3_600_000;

    fn catalogue() -> Arc<Catalogue> {
        let c = Catalogue::new(100, Arc::new(AtomicBool::new(true)));
        for (id, name, genre, ratings) in [
            ("1", "Pandora - Music & Radio", "Music", 10),
            ("2", "Kindle – Books", "Book", 20),
            ("3", "Chess", "Games", 99),
        ] {
            c.upsert(App {
                id: id.into(),
                track_name: name.into(),
                name: app_name(name).into(),
                prime_genre: genre.into(),
                rating_count_tot: ratings,
                rating_count_ver: 0,
                user_rating: 4.0,
                price: 0.0,
            })
            .expect("room");
        }
        c
    }

    fn hit(p: i32, app: &str, ts_ms: i64) -> MentionPart {
        MentionPart::Hit { partition: p, app: app.into(), ts_ms }
    }

    fn tick(a: &mut AppsAggregate, now_ms: i64) -> Vec<OutRecord> {
        let mut out = Vec::new();
        a.on_tick(DateTime::from_timestamp_millis(now_ms).expect("valid time"), &mut out);
        out
    }

    /// What the tasks really send (absolute counts), through the shares topic's codec: counts
    /// of several partitions add up, a count read again changes nothing, a lower one corrects,
    /// and a bucket that left a partition's window is a tombstone.
    #[test]
    fn shares_through_the_topic_replace_per_partition_and_add_up_across_partitions() {
        let cfg = Config::default().apps;
        let mut a = AppsAggregate::new(catalogue(), &cfg);
        let through = |a: &mut AppsAggregate, partition: i32, mut parts: Vec<MentionPart>| {
            let mut recs = Vec::new();
            publish(partition, &mut parts, &mut recs);
            assert!(crate::engine::aggregate::read_shares(a, &recs, decode_share).is_empty());
        };
        let b = T0 - T0 % 300_000;
        let total = |p, app: &str, count| MentionPart::Total { partition: p, app: app.into(), count };
        let bucket = |p, bucket, app: &str, count| MentionPart::Bucket { partition: p, bucket, app: app.into(), count };
        // Partition 0 counted #1 twice in one batch: the newest counts win.
        through(&mut a, 0, vec![bucket(0, b, "1", 1), total(0, "1", 1), bucket(0, b, "1", 2), total(0, "1", 2)]);
        through(&mut a, 1, vec![bucket(1, b, "1", 3), total(1, "1", 5)]);
        assert_eq!(a.counts("1"), (7, 5));
        through(&mut a, 1, vec![bucket(1, b, "1", 3), total(1, "1", 5)]);
        assert_eq!(a.counts("1"), (7, 5), "read again: no change");
        through(&mut a, 1, vec![bucket(1, b, "1", 1), total(1, "1", 4)]);
        assert_eq!(a.counts("1"), (6, 3), "a partition's next owner from an older state: replaced");
        through(&mut a, 0, vec![bucket(0, b, "1", 0)]);
        assert_eq!(a.counts("1"), (6, 1), "a released bucket is a tombstone");
        // A restored share goes out as counts too.
        let mut share = Share::default();
        share.totals.insert("2".into(), 9);
        share.buckets.entry(b).or_default().insert("2".into(), 4);
        through(&mut a, 2, vec![MentionPart::Restored { partition: 2, share }]);
        assert_eq!(a.counts("2"), (9, 4));
        assert!(decode_share(0, "x/1", Some(b"1")).is_err());
        assert!(decode_share(0, "b/notabucket/1", Some(b"1")).is_err());
        assert!(decode_share(0, "t/1", Some(b"many")).is_err());
    }

    #[test]
    fn rankings_and_mentions_are_written_when_they_change_and_mentions_at_most_every_interval() {
        let mut cfg = Config::default().apps;
        cfg.mentions_interval = Duration::from_secs(10);
        let mut a = AppsAggregate::new(catalogue(), &cfg);
        let out = tick(&mut a, T0);
        assert_eq!(out.len(), 1, "the ranking, before any mention");
        let top: TopValue = serde_json::from_slice(out[0].value.as_deref().expect("value")).expect("JSON");
        assert_eq!(top.apps.iter().map(|x| x.id.as_str()).collect::<Vec<_>>(), vec!["2", "1"]);
        assert!(tick(&mut a, T0 + 1000).is_empty(), "nothing changed");
        a.merge(&mut vec![hit(0, "1", T0), hit(1, "1", T0 + 5)]);
        let out = tick(&mut a, T0 + 2000);
        assert_eq!(out.iter().map(|r| r.topic).collect::<Vec<_>>(), vec![MENTIONS, TOP]);
        let m: MentionsValue = serde_json::from_slice(out[0].value.as_deref().expect("value")).expect("JSON");
        assert_eq!((m.name.as_str(), m.mentions_total, m.mentions_24h), ("Pandora", 2, 2));
        a.merge(&mut vec![hit(0, "1", T0 + 10)]);
        assert_eq!(tick(&mut a, T0 + 5000).iter().filter(|r| r.topic == MENTIONS).count(), 0, "within 10 s");
        let out = tick(&mut a, T0 + 12_000);
        let m: MentionsValue = serde_json::from_slice(out[0].value.as_deref().expect("value")).expect("JSON");
        assert_eq!(m.mentions_total, 3);
    }

    #[test]
    fn the_window_keeps_the_last_day_and_restored_shares_replace_not_add() {
        let cfg = Config::default().apps;
        let mut a = AppsAggregate::new(catalogue(), &cfg);
        a.merge(&mut vec![hit(0, "1", T0), hit(1, "1", T0 + HOUR), hit(1, "2", T0 + HOUR)]);
        assert_eq!(a.counts("1"), (2, 2));
        a.merge(&mut vec![hit(0, "2", T0 + 24 * HOUR + 1)]);
        assert_eq!(a.counts("1"), (2, 1), "the first mention left the window");
        a.merge(&mut vec![hit(1, "1", T0 - 1)]);
        assert_eq!(a.counts("1"), (3, 1), "too old for the window: the total only");
        // Partition 1 restored again (say its share was flushed after its first two hits).
        let mut share = Share::default();
        share.totals.insert("1".into(), 1);
        share.totals.insert("2".into(), 1);
        share.buckets.entry(T0 + HOUR).or_default().insert("1".into(), 1);
        share.buckets.entry(T0 + HOUR).or_default().insert("2".into(), 1);
        a.merge(&mut vec![MentionPart::Restored { partition: 1, share }]);
        assert_eq!(a.counts("1"), (2, 1));
        assert_eq!(a.counts("2"), (2, 2));
    }

    #[test]
    fn removed_apps_are_forgotten_and_tombstoned() {
        let cat = catalogue();
        let mut a = AppsAggregate::new(cat.clone(), &Config::default().apps);
        a.merge(&mut vec![hit(0, "1", T0)]);
        tick(&mut a, T0);
        cat.remove("1");
        let out = tick(&mut a, T0 + 60_000);
        assert!(out.iter().any(|r| r.topic == MENTIONS && r.value.is_none() && r.key.as_deref() == Some(&b"1"[..])));
        assert_eq!(a.counts("1"), (0, 0));
    }

    #[test]
    fn nothing_is_written_before_the_catalogue_has_loaded() {
        let cat = Catalogue::new(10, Arc::new(AtomicBool::new(false)));
        let mut a = AppsAggregate::new(cat, &Config::default().apps);
        assert!(tick(&mut a, T0).is_empty());
    }
}
