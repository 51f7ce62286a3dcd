//! The fans pipeline's live view: the pages of this instance's partitions, readable while the
//! processors write them, and the latest ranking. What `/pages` serves ([`crate::http::pages`]).
//!
//! # Design
//!
//! Each partition's [`FansProcessor`](super::FansProcessor) keeps its pages in a `DashMap` (its
//! [`FansStore`](super::FansStore)'s map) that it alone writes. While the processor lives, that
//! map is registered in [`FansLive`] under its
//! partition; dropping the processor (its task stopped: the partition was revoked, or the engine
//! shut down) unregisters it, so its pages leave the view at once, and their memory goes when the
//! last reader lets go of the map.
//!
//! A query looks the key up in every registered map, one hash lookup per partition: a producer
//! with another partitioner than pagepulse's (see [`crate::kafka::partitioner`]) may have put it
//! in any partition. A key found in none is asked of the instance that holds its partition
//! ([`crate::http::forward`]). It holds one
//! shard's read lock only while it copies one page's figures out (the stats, and the chart and
//! table when asked for: microseconds); formatting and serialization happen after. The processor
//! holds one shard's write lock per observation. Nobody holds two of these locks at once (the
//! registry's own locks included: a query copies the list of maps out first), so there is no lock
//! order to get wrong and no deadlock.
//!
//! Why not a query-side copy of the pages: a page's series takes about 1.5 KB (30 days of
//! 10-minute samples) and an instance holds millions of pages; a copy would double that. Why not one map for the whole
//! instance: a revoked partition's pages would have to be found by scanning every page, and two
//! partitions holding the same key (written by producers whose partitioners differ) would share,
//! and mix up, one series. With a map per partition the processors' pages are exactly what they were
//! before they became queryable; if two partitions do hold a key, a query answers with the one
//! observed last.

use std::sync::{Arc, Mutex};

use dashmap::DashMap;
use serde::{Deserialize, Serialize};

use super::page::Page;
use super::records::{FansTop, PageStats};
use super::store::PageMap;
use super::top::FansTopView;
use crate::clock::format_ms;
use crate::ops::series::{FanStats, Sample, SeriesPoint};

/// The registered partitions' maps.
type Registry = DashMap<i32, Arc<PageMap>>;

/// The live view of this instance's fans partitions, and its latest ranking. Clones share it.
#[derive(Clone)]
pub struct FansLive {
    partitions: Arc<Registry>,
    top: Arc<Mutex<FansTopView>>,
    watched: super::watch::Watched,
}

/// How much of a page a query copies out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// The figures only.
    Stats,
    /// The figures, the chart and the latest samples.
    Full,
}

/// One point of a page's chart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChartPoint {
    /// When the sample was observed (RFC 3339): the last sample of its 10-minute bucket (the
    /// last 7 days) or of its hour (older, up to 30 days).
    pub at: String,
    /// Its fan count.
    pub fans: u64,
    /// Its follower count while the sample is among the latest rows ([`PageView::table`]);
    /// `null` for older points, as the chart keeps fan counts only.
    pub followers: Option<u64>,
}

/// One raw sample.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableRow {
    /// When it was observed (RFC 3339).
    pub observed_at: String,
    /// Fan count.
    pub fans: u64,
    /// Follower count, when the platform reports one.
    pub followers: Option<u64>,
}

/// A page as a query sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageView {
    /// Platform.
    pub platform: String,
    /// Page id.
    pub page_id: String,
    /// The page's figures: the same value as its latest `fans.stats` record.
    pub stats: PageStats,
    /// The chart, oldest first: hourly points up to 30 days back, then 10-minute points for the
    /// last 7 days (at most 1,567). Absent with [`Detail::Stats`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series: Option<Vec<ChartPoint>>,
    /// The latest samples, newest first (at most [`crate::ops::series::TABLE_ROWS`]). Absent with
    /// [`Detail::Stats`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<Vec<TableRow>>,
}

/// What a query copies out of a page under its shard's read lock.
struct Snapshot {
    stats: FanStats,
    chart: Option<(Vec<SeriesPoint>, Vec<Sample>)>,
}

impl Snapshot {
    fn of(page: &Page, detail: Detail) -> Option<Self> {
        let stats = page.series.stats()?;
        let chart = (detail == Detail::Full).then(|| (page.series.series(), page.series.table()));
        Some(Self { stats, chart })
    }
}

impl PageView {
    /// The view of `key`, a stored key (so `<platform>:<page_id>`).
    fn of(key: &str, snap: Snapshot) -> Self {
        let (platform, page_id) = key.split_once(':').expect("stored keys are observations' `<platform>:<page_id>`");
        let (platform, page_id) = (platform.to_string(), page_id.to_string());
        let stats = PageStats::new(platform.clone(), page_id.clone(), &snap.stats);
        let (series, table) = match snap.chart {
            None => (None, None),
            Some((points, samples)) => {
                // `samples` is newest first with distinct times: binary search in reverse order.
                let followers = |at_ms: i64| {
                    samples.binary_search_by(|s| at_ms.cmp(&s.at_ms)).ok().and_then(|i| samples[i].followers)
                };
                let series = points
                    .iter()
                    .map(|p| ChartPoint { at: format_ms(p.at_ms), fans: p.fans, followers: followers(p.at_ms) })
                    .collect();
                let table = samples
                    .iter()
                    .map(|s| TableRow { observed_at: format_ms(s.at_ms), fans: s.fans, followers: s.followers })
                    .collect();
                (Some(series), Some(table))
            }
        };
        Self { platform, page_id, stats, series, table }
    }
}

impl FansLive {
    /// An empty view whose ranking keeps `top_n` pages (`pipelines.fans.top_n`).
    pub fn new(top_n: usize) -> Self {
        Self {
            partitions: Arc::new(Registry::new()),
            top: Arc::new(Mutex::new(FansTopView::new(top_n))),
            watched: super::watch::Watched::new(1000),
        }
    }

    /// The same view, holding the marks of at most ten times `watch_max` pages
    /// (`pipelines.fans.watch_max`; see [`super::watch`]).
    pub fn with_watch_max(mut self, watch_max: usize) -> Self {
        self.watched = super::watch::Watched::new(watch_max.saturating_mul(10).max(10));
        self
    }

    /// The pages marked for watching in their `pages` records.
    pub fn watched(&self) -> super::watch::Watched {
        self.watched.clone()
    }

    /// The cross-partition ranking, for the pipeline's aggregate to merge into and tick.
    pub fn top_view(&self) -> Arc<Mutex<FansTopView>> {
        self.top.clone()
    }

    /// Registers `pages` as `partition`'s, replacing the map registered before (a revoked task
    /// may still be draining when its partition's next task starts), until the registration is
    /// dropped.
    pub(super) fn register(&self, partition: i32, pages: Arc<PageMap>) -> Registration {
        self.partitions.insert(partition, pages.clone());
        Registration { partitions: self.partitions.clone(), partition, pages }
    }

    /// The partitions whose pages are queryable, ascending.
    pub fn partitions(&self) -> Vec<i32> {
        let mut v: Vec<i32> = self.partitions.iter().map(|e| *e.key()).collect();
        v.sort_unstable();
        v
    }

    /// Whether `partition`'s pages are registered here (its task runs on this instance).
    pub fn holds(&self, partition: i32) -> bool {
        self.partitions.contains_key(&partition)
    }

    /// The view of page `key` (`<platform>:<page_id>`); `None` when no registered partition
    /// holds it.
    pub fn page(&self, key: &str, detail: Detail) -> Option<PageView> {
        self.pages(&[key], detail).pop().flatten()
    }

    /// The views of `keys`, in their order: `None` for a key no registered partition holds.
    pub fn pages(&self, keys: &[&str], detail: Detail) -> Vec<Option<PageView>> {
        // Copied out so that no registry lock is held while a page's lock is taken.
        let maps: Vec<Arc<PageMap>> = self.partitions.iter().map(|e| e.value().clone()).collect();
        keys.iter()
            .map(|&key| {
                let mut best: Option<Snapshot> = None;
                for map in &maps {
                    // The shard's read lock is held for this statement only.
                    let Some(found) = map.get(key).and_then(|page| Snapshot::of(&page, detail)) else { continue };
                    if best.as_ref().is_none_or(|b| found.stats.observed_at_ms > b.stats.observed_at_ms) {
                        best = Some(found);
                    }
                }
                best.map(|snap| PageView::of(key, snap))
            })
            .collect()
    }

    /// Page `key`'s kept history: its chart points (oldest first) and raw samples (newest
    /// first), copied out under its shard's read lock (see [`super::history`]); `None` when no
    /// registered partition holds it.
    pub fn history(&self, key: &str) -> Option<(Vec<SeriesPoint>, Vec<Sample>)> {
        let maps: Vec<Arc<PageMap>> = self.partitions.iter().map(|e| e.value().clone()).collect();
        let mut best: Option<(i64, Vec<SeriesPoint>, Vec<Sample>)> = None;
        for map in &maps {
            let Some(found) = map.get(key).and_then(|page| {
                let newest = page.series.stats()?.observed_at_ms;
                Some((newest, page.series.series(), page.series.table()))
            }) else {
                continue;
            };
            if best.as_ref().is_none_or(|b| found.0 > b.0) {
                best = Some(found);
            }
        }
        best.map(|(_, points, samples)| (points, samples))
    }

    /// The latest `fans.top` value; `None` before the first.
    pub fn top(&self) -> Option<FansTop> {
        // A panic inside the aggregate leaves a usable ranking (see `merge_fn`): keep serving.
        self.top.lock().unwrap_or_else(|p| p.into_inner()).latest().cloned()
    }
}

/// `partition`'s map registered in a [`FansLive`]; unregisters it when dropped.
pub(super) struct Registration {
    partitions: Arc<Registry>,
    partition: i32,
    pages: Arc<PageMap>,
}

impl Registration {
    /// Registers `pages` in place of the map registered so far (a map a restore built with its
    /// final capacity), unless a newer task of the partition has registered its own since.
    pub(super) fn replace(&mut self, pages: Arc<PageMap>) {
        if let Some(mut current) = self.partitions.get_mut(&self.partition) {
            if Arc::ptr_eq(&current, &self.pages) {
                *current = pages.clone();
            }
        }
        self.pages = pages;
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // A newer task of the same partition may have registered its own map since: keep that.
        self.partitions.remove_if(&self.partition, |_, m| Arc::ptr_eq(m, &self.pages));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;
    use crate::engine::{Aggregate, Emit, Processor, RawRecord, RecordMeta};
    use crate::pipelines::fans::{FansConfig, FansProcessor, INPUT};

    const T0: i64 = 1_795_000_000_000;
    const MIN: i64 = 60_000;

    fn cfg() -> FansConfig {
        FansConfig { enabled: true, top_n: 3, max_pages_per_partition: 1000, watch: Vec::new(), watch_max: 100 }
    }

    fn obs(platform: &str, page: &str, at_ms: i64, fans: u64, followers: Option<u64>) -> RawRecord {
        let v = serde_json::json!({"platform": platform, "page_id": page, "fans": fans, "followers": followers,
            "observed_at": format_ms(at_ms)});
        RawRecord { key: None, value: Some(v.to_string().into_bytes()), offset: 0, timestamp_ms: None }
    }

    /// Feeds `recs` and returns the last `fans.stats` value emitted.
    fn feed(p: &mut FansProcessor, recs: &[RawRecord]) -> Option<PageStats> {
        let mut out: Emit<_> = Emit::default();
        for r in recs {
            let o = p.decode(INPUT, r).expect("valid");
            p.process(o, &RecordMeta { topic: INPUT, partition: 0, offset: 0, timestamp_ms: None }, &mut out);
        }
        let last = out.records.last()?;
        Some(serde_json::from_slice(last.value.as_deref().expect("value")).expect("JSON"))
    }

    #[test]
    fn registered_pages_are_queryable_until_their_processor_is_dropped() {
        let live = FansLive::new(3);
        let mut p0 = FansProcessor::new(0, &cfg()).with_live(&live);
        let mut p1 = FansProcessor::new(1, &cfg()).with_live(&live);
        let unregistered = FansProcessor::new(2, &cfg());
        assert_eq!(live.partitions(), [0, 1], "a processor without a live registers nothing");
        let a: Vec<RawRecord> =
            (0..30).map(|k| obs("facebook", "a", T0 + k * 10 * MIN, 100 + k as u64, Some(k as u64))).collect();
        let last = feed(&mut p0, &a).expect("stats emitted");
        feed(&mut p1, &[obs("mastodon", "@ana@example.social", T0, 7, None)]);

        let v = live.page("facebook:a", Detail::Full).expect("held by partition 0");
        assert_eq!((v.platform.as_str(), v.page_id.as_str()), ("facebook", "a"));
        assert_eq!(v.stats, last, "the same value as the latest fans.stats record");
        let series = v.series.expect("full detail");
        assert_eq!(series.len(), 30);
        assert_eq!(series[29], ChartPoint { at: format_ms(T0 + 290 * MIN), fans: 129, followers: Some(29) });
        // Older than the table's 24 rows: the chart has no followers for them.
        assert_eq!(series[5], ChartPoint { at: format_ms(T0 + 50 * MIN), fans: 105, followers: None });
        assert_eq!(series[6].followers, Some(6));
        let table = v.table.expect("full detail");
        assert_eq!(table.len(), 24);
        assert_eq!(table[0], TableRow { observed_at: format_ms(T0 + 290 * MIN), fans: 129, followers: Some(29) });

        let brief = live.page("facebook:a", Detail::Stats).expect("held");
        assert_eq!((brief.series, brief.table, brief.stats), (None, None, last));
        let json = serde_json::to_value(live.page("mastodon:@ana@example.social", Detail::Stats).expect("held"))
            .expect("JSON");
        assert_eq!(json.as_object().map(|o| o.len()), Some(3), "no series or table keys: {json}");
        assert_eq!(json["page_id"], "@ana@example.social");

        let views = live.pages(&["facebook:nope", "mastodon:@ana@example.social", "nocolon"], Detail::Stats);
        assert_eq!(views.iter().map(Option::is_some).collect::<Vec<_>>(), [false, true, false]);

        drop(p0);
        assert_eq!(live.partitions(), [1]);
        assert_eq!(live.page("facebook:a", Detail::Full), None, "revoked with its task");
        assert!(live.page("mastodon:@ana@example.social", Detail::Full).is_some());
        drop((p1, unregistered));
        assert!(live.partitions().is_empty());
    }

    #[test]
    fn a_partitions_newer_task_survives_the_older_ones_drop() {
        let live = FansLive::new(3);
        let mut old = FansProcessor::new(0, &cfg()).with_live(&live);
        feed(&mut old, &[obs("facebook", "old", T0, 1, None)]);
        let mut new = FansProcessor::new(0, &cfg()).with_live(&live);
        feed(&mut new, &[obs("facebook", "new", T0, 2, None)]);
        assert_eq!(live.page("facebook:old", Detail::Stats), None, "replaced by the newer task's map");
        drop(old);
        assert_eq!(live.partitions(), [0]);
        assert_eq!(live.page("facebook:new", Detail::Stats).map(|v| v.stats.fans), Some(2));
        drop(new);
        assert!(live.partitions().is_empty());
    }

    #[test]
    fn a_restore_registers_its_map_unless_a_newer_task_took_the_partition() {
        let mut changes = Vec::new();
        let mut src = FansProcessor::new(0, &cfg());
        feed(&mut src, &[obs("facebook", "a", T0, 5, None)]);
        src.take_changes(&mut changes);
        let entries: crate::engine::state::Entries =
            changes.into_iter().map(|(k, v)| (k, v.expect("a value"))).collect();

        let live = FansLive::new(3);
        let mut restored = FansProcessor::new(0, &cfg()).with_live(&live);
        restored.restore(entries.clone(), &mut Emit::default());
        assert_eq!(live.page("facebook:a", Detail::Stats).map(|v| v.stats.fans), Some(5), "queryable at once");
        drop(restored);
        assert!(live.partitions().is_empty(), "the restored map unregisters with its processor");

        let mut late = FansProcessor::new(0, &cfg()).with_live(&live);
        let newer = FansProcessor::new(0, &cfg()).with_live(&live);
        late.restore(entries, &mut Emit::default());
        assert_eq!(live.page("facebook:a", Detail::Stats), None, "the newer task's map stays registered");
        drop(late);
        assert_eq!(live.partitions(), [0]);
        drop(newer);
    }

    #[test]
    fn a_key_in_two_partitions_answers_with_the_newest() {
        let live = FansLive::new(3);
        let mut p0 = FansProcessor::new(0, &cfg()).with_live(&live);
        let mut p1 = FansProcessor::new(1, &cfg()).with_live(&live);
        feed(&mut p0, &[obs("facebook", "x", T0 + MIN, 10, None)]);
        feed(&mut p1, &[obs("facebook", "x", T0, 20, None)]);
        assert_eq!(live.page("facebook:x", Detail::Stats).map(|v| v.stats.fans), Some(10));
    }

    #[test]
    fn top_is_the_last_emitted_ranking() {
        let live = FansLive::new(3);
        assert_eq!(live.top(), None);
        let mut p = FansProcessor::new(0, &cfg()).with_live(&live);
        feed(&mut p, &[obs("facebook", "a", T0, 100, None), obs("facebook", "a", T0 + 60 * MIN, 150, None)]);
        let view = live.top_view();
        let mut out = Vec::new();
        {
            let mut v = view.lock().expect("lock");
            v.merge(&mut vec![p.top(T0)]);
            v.on_tick(chrono::DateTime::from_timestamp_millis(T0).expect("time"), &mut out);
        }
        let emitted: FansTop = serde_json::from_slice(out[0].value.as_deref().expect("value")).expect("JSON");
        assert_eq!(live.top(), Some(emitted));
        assert_eq!(live.top().map(|t| t.by_delta_24h[0].delta_24h), Some(50));
    }

    /// Runs `f` on its own thread and fails if it has not finished within `timeout` (a deadlock
    /// would otherwise hang the test run).
    fn within(timeout: Duration, f: impl FnOnce() + Send + 'static) {
        let (tx, rx) = mpsc::channel();
        let worker = std::thread::spawn(move || {
            f();
            // The receiver is gone only if the deadline passed, which already failed the test.
            let _ = tx.send(());
        });
        match rx.recv_timeout(timeout) {
            Ok(()) => worker.join().expect("the scenario passed"),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                std::panic::resume_unwind(worker.join().expect_err("the scenario panicked"))
            }
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("deadlock: not finished within {timeout:?}"),
        }
    }

    #[test]
    fn reads_while_writing_see_whole_pages_and_never_deadlock() {
        within(Duration::from_secs(60), || {
            let live = FansLive::new(3);
            let stop = Arc::new(AtomicBool::new(false));
            let reads = Arc::new(AtomicUsize::new(0));
            let readers: Vec<_> = (0..2)
                .map(|r| {
                    let (live, stop, reads) = (live.clone(), stop.clone(), reads.clone());
                    std::thread::spawn(move || {
                        let mut i = r;
                        while !stop.load(Ordering::Acquire) {
                            i += 1;
                            let keys = [format!("facebook:p{}", i % 200), format!("facebook:p{}", (i * 7) % 200)];
                            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
                            for v in live.pages(&keys, Detail::Full).into_iter().flatten() {
                                // Copied under one lock: the figures, chart and rows agree.
                                let table = v.table.expect("full detail");
                                assert_eq!(
                                    (table[0].fans, &table[0].observed_at),
                                    (v.stats.fans, &v.stats.observed_at)
                                );
                                let series = v.series.expect("full detail");
                                assert_eq!(series.last().map(|p| p.fans), Some(v.stats.fans));
                                reads.fetch_add(1, Ordering::Relaxed);
                            }
                            // The registry's locks, taken while partitions register and unregister.
                            std::hint::black_box(live.partitions());
                        }
                    })
                })
                .collect();
            // Two partitions written at once, new pages appearing (shards grow) and a partition
            // replaced midway; each step waits for more reads, so reads and writes interleave.
            let writers: Vec<_> = (0..2)
                .map(|w| {
                    let (live, reads) = (live.clone(), reads.clone());
                    std::thread::spawn(move || {
                        let mut p = FansProcessor::new(w, &cfg()).with_live(&live);
                        for k in 0..40 {
                            if k == 20 && w == 1 {
                                p = FansProcessor::new(w, &cfg()).with_live(&live);
                            }
                            let before = reads.load(Ordering::Relaxed);
                            let recs: Vec<RawRecord> = (0..100)
                                .map(|i| {
                                    let (page, fans) = (format!("p{}", i * 2 + w), 1000 + k as u64 * (i as u64 + 1));
                                    obs("facebook", &page, T0 + k * 10 * MIN, fans, Some(k as u64))
                                })
                                .collect();
                            feed(&mut p, &recs);
                            let deadline = std::time::Instant::now() + Duration::from_secs(20);
                            while reads.load(Ordering::Relaxed) == before {
                                assert!(std::time::Instant::now() < deadline, "readers made no progress");
                                std::thread::yield_now();
                            }
                        }
                        p
                    })
                })
                .collect();
            let processors: Vec<FansProcessor> =
                writers.into_iter().map(|w| w.join().expect("writer finished")).collect();
            stop.store(true, Ordering::Release);
            for r in readers {
                r.join().expect("reader finished");
            }
            assert_eq!(live.page("facebook:p1", Detail::Stats).map(|v| v.stats.fans), Some(1000 + 39));
            drop(processors);
            assert_eq!(live.page("facebook:p1", Detail::Stats), None);
        });
    }
}
