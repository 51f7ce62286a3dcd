//! The fans pipeline's per-partition logic: decode an observation, add it to the page's rolling
//! series (in the [`FansStore`]), emit the page's `fans.stats`, and keep this partition's two
//! rankings for the cross-partition [`super::FansTopView`].

use std::cmp::Reverse;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::config::FansConfig;
use super::live::{FansLive, Registration};
use super::names::{PIPELINE, STATS};
use super::page::Score;
use super::records::{PageStats, TopEntry};
use super::store::{FansStore, Ranked};
use super::top::{PartitionTop, TOP_INTERVAL};
use crate::engine::state::{Change, Entries};
use crate::engine::{Emit, OutRecord, Processor, RawRecord, RecordMeta, RejectClass, Rejection};
use crate::ops::series::{FanStats, Sample};
use crate::pipelines::decode::{object, optional_u64, required_str, required_u64, rfc3339_ms, utf8_value};
pub use crate::poll::observation::Observation;

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow, default)]
    platform: Option<&'a RawValue>,
    #[serde(borrow, default)]
    page_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    fans: Option<&'a RawValue>,
    #[serde(borrow, default)]
    followers: Option<&'a RawValue>,
    #[serde(borrow, default)]
    observed_at: Option<&'a RawValue>,
}

/// Decodes and validates a `fans.observations` record value.
pub fn decode_observation(rec: &RawRecord) -> Result<Observation<'_>, Rejection> {
    let wire: Wire<'_> = object(utf8_value(rec)?)?;
    let platform = required_str("platform", wire.platform)?;
    if platform.is_empty()
        || !platform.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return Err(Rejection::new(
            RejectClass::InvalidValue,
            format!("field `platform` must be lower-case letters, digits, '_' or '-', got \"{platform}\""),
        ));
    }
    let page_id = required_str("page_id", wire.page_id)?;
    if page_id.is_empty() || page_id.len() > 256 {
        return Err(Rejection::new(RejectClass::InvalidValue, "field `page_id` must be 1 to 256 bytes"));
    }
    let fans = required_u64("fans", wire.fans)?;
    let followers = optional_u64("followers", wire.followers)?;
    let observed_at = required_str("observed_at", wire.observed_at)?;
    let observed_at_ms = rfc3339_ms("observed_at", &observed_at)?;
    Ok(Observation { platform, page_id, fans, followers, observed_at_ms })
}

/// The per-partition fans processor: rolling figures per page, and this partition's rankings.
pub struct FansProcessor {
    partition: i32,
    top_n: usize,
    max_pages: usize,
    /// This partition's pages: the durable state, and what queries read while the processor is
    /// registered in a [`FansLive`].
    store: FansStore,
    by_growth: BTreeSet<Ranked>,
    by_delta: BTreeSet<Ranked>,
    /// Keeps the store's map queryable until the processor is dropped (its task stopped: the
    /// partition was revoked, or the engine shut down).
    registration: Option<Registration>,
}

impl FansProcessor {
    /// A processor for `partition` with the pipeline's config, whose pages nothing else reads.
    pub fn new(partition: i32, cfg: &FansConfig) -> Self {
        Self {
            partition,
            top_n: cfg.top_n,
            max_pages: cfg.max_pages_per_partition,
            store: FansStore::new(partition),
            by_growth: BTreeSet::new(),
            by_delta: BTreeSet::new(),
            registration: None,
        }
    }

    /// Makes this partition's pages queryable through `live` for as long as the processor lives,
    /// replacing whatever was registered for the partition before.
    pub fn with_live(mut self, live: &FansLive) -> Self {
        self.registration = Some(live.register(self.partition, self.store.map().clone()));
        self
    }

    /// Pages tracked in this partition.
    pub fn pages(&self) -> usize {
        self.store.len()
    }

    /// Changelog entries the restore skipped because they did not decode: their pages start
    /// afresh.
    pub fn corrupt_entries(&self) -> u64 {
        self.store.corrupt_entries()
    }

    /// The current figures of `key`, if tracked.
    pub fn stats(&self, key: &str) -> Option<FanStats> {
        self.store.get(key)?.series.stats()
    }

    /// The best `top_n` of `index`: highest score first, ties by page key ascending (the same order
    /// the global merge uses, so a tie at the boundary cannot drop the page that ranks globally).
    fn entries(&self, index: &BTreeSet<Ranked>) -> Vec<TopEntry> {
        index
            .iter()
            .rev()
            .take(self.top_n)
            .filter_map(|(_, Reverse(key))| {
                let stats = self.store.get(key)?.series.stats()?;
                let (platform, page_id) = key.split_once(':')?;
                Some(TopEntry {
                    rank: 0,
                    platform: platform.to_string(),
                    page_id: page_id.to_string(),
                    fans: stats.fans,
                    delta_24h: stats.delta_24h.value,
                    growth_24h_pct: stats.growth_24h_pct,
                    partial: stats.delta_24h.partial,
                })
            })
            .collect()
    }

    /// This partition's current top lists.
    pub fn top(&self, now_ms: i64) -> PartitionTop {
        PartitionTop {
            partition: self.partition,
            at_ms: now_ms,
            by_growth: self.entries(&self.by_growth),
            by_delta: self.entries(&self.by_delta),
        }
    }
}

impl Processor for FansProcessor {
    type Input<'a> = Observation<'a>;
    type Part = PartitionTop;

    fn decode<'a>(&self, _topic: &'static str, rec: &'a RawRecord) -> Result<Observation<'a>, Rejection> {
        let obs = decode_observation(rec)?;
        if self.store.len() >= self.max_pages && !self.store.contains(obs.key().as_str()) {
            return Err(Rejection::new(
                RejectClass::InvalidValue,
                format!(
                    "page {} refused: this partition already tracks {} pages (pipelines.fans.max_pages_per_partition)",
                    obs.key(),
                    self.max_pages
                ),
            ));
        }
        Ok(obs)
    }

    fn process(&mut self, obs: Observation<'_>, _meta: &RecordMeta, out: &mut Emit<PartitionTop>) {
        let key = obs.key();
        let sample = Sample { at_ms: obs.observed_at_ms, fans: obs.fans, followers: obs.followers };
        let Some(changed) = self.store.observe(&key, sample) else { return };
        reindex(&mut self.by_growth, changed.old.0, changed.new.0, &changed.key);
        reindex(&mut self.by_delta, changed.old.1, changed.new.1, &changed.key);
        let value = PageStats::new(obs.platform.into_owned(), obs.page_id.into_owned(), &changed.stats);
        let bytes = serde_json::to_vec(&value).expect("serializing plain structs cannot fail");
        out.record(OutRecord::new(STATS, key.into_bytes(), bytes));
    }

    fn tick_interval(&self) -> Option<Duration> {
        Some(TOP_INTERVAL)
    }

    /// Hands this partition's top lists to the aggregate (also when unchanged, so the aggregate
    /// can tell live partitions from revoked ones).
    fn on_tick(&mut self, now: DateTime<Utc>, out: &mut Emit<PartitionTop>) {
        out.part(self.top(now.timestamp_millis()));
    }

    /// The store's changes: see [`FansStore::take_changes`].
    fn take_changes(&mut self, out: &mut Vec<Change>) {
        self.store.take_changes(out);
    }

    /// Rebuilds the pages ([`FansStore::restore`]), then the rankings. The pages are queryable
    /// (`/pages`) as soon as this returns, since the restored map replaces the registered one;
    /// the rankings go to the aggregate at once.
    fn restore(&mut self, entries: Entries, out: &mut Emit<PartitionTop>) {
        let (mut by_growth, mut by_delta) = self.store.restore(entries);
        if let Some(r) = &mut self.registration {
            r.replace(self.store.map().clone());
        }
        // Sorted, then built in bulk: much faster than a million single inserts. (The bulk build
        // sorts stably, which is linear on input sorted already.)
        by_growth.sort_unstable();
        by_delta.sort_unstable();
        self.by_growth = BTreeSet::from_iter(by_growth);
        self.by_delta = BTreeSet::from_iter(by_delta);
        if self.store.len() > self.max_pages {
            tracing::warn!(
                pipeline = PIPELINE,
                partition = self.partition,
                pages = self.store.len(),
                max_pages = self.max_pages,
                "restored more pages than pipelines.fans.max_pages_per_partition; new pages are refused until it is raised"
            );
        }
        // The trait gives restore no clock; the wall clock is what `on_tick` gets too, and only
        // ages the list out of the aggregate once the partition stops reporting.
        out.part(self.top(Utc::now().timestamp_millis()));
    }
}

fn reindex(index: &mut BTreeSet<Ranked>, old: Option<Score>, new: Option<Score>, key: &Arc<str>) {
    if old == new {
        return;
    }
    if let Some(o) = old {
        index.remove(&(o, Reverse(key.clone())));
    }
    if let Some(n) = new {
        index.insert((n, Reverse(key.clone())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::format_ms;
    use crate::engine::Aggregate;
    use crate::ops::series::RollingFans;
    use crate::pipelines::fans::{FansTop, FansTopView, INPUT};

    fn rec(v: &str) -> RawRecord {
        RawRecord { key: None, value: Some(v.as_bytes().to_vec()), offset: 0, timestamp_ms: None }
    }

    const H: i64 = 3_600_000;

    fn obs(page: &str, at_ms: i64, fans: u64) -> RawRecord {
        let at = chrono::DateTime::from_timestamp_millis(at_ms).expect("valid time").to_rfc3339();
        rec(&format!(r#"{{"platform":"facebook","page_id":"{page}","fans":{fans},"observed_at":"{at}"}}"#))
    }

    fn feed(p: &mut FansProcessor, recs: &[RawRecord]) -> Emit<PartitionTop> {
        let mut out = Emit::default();
        for r in recs {
            let o = p.decode(INPUT, r).expect("valid");
            p.process(o, &RecordMeta { topic: INPUT, partition: 0, offset: 0, timestamp_ms: None }, &mut out);
        }
        out
    }

    fn cfg(top_n: usize, max_pages: usize) -> FansConfig {
        FansConfig { enabled: true, top_n, max_pages_per_partition: max_pages, watch: Vec::new(), watch_max: 100 }
    }

    #[test]
    fn stats_per_observation_and_duplicates_emit_nothing() {
        let t0 = 1_795_000_000_000;
        let mut p = FansProcessor::new(0, &cfg(25, 10));
        let out = feed(&mut p, &[obs("a", t0, 100), obs("a", t0 + 25 * H, 150), obs("a", t0 + 25 * H, 150)]);
        assert_eq!(out.records.len(), 2, "the duplicate changes nothing and emits nothing");
        let last: PageStats = serde_json::from_slice(out.records[1].value.as_deref().expect("value")).expect("JSON");
        assert_eq!(out.records[1].key.as_deref(), Some(&b"facebook:a"[..]));
        assert_eq!((last.fans, last.delta_24h.value, last.delta_24h.partial), (150, 50, false));
        assert_eq!(last.growth_24h_pct, Some(50.0));
        assert!(last.delta_7d.partial);
        assert_eq!(last.observed_at, format_ms(t0 + 25 * H));
    }

    #[test]
    fn partition_rankings_follow_updates() {
        let t0 = 1_795_000_000_000;
        let mut p = FansProcessor::new(3, &cfg(2, 10));
        feed(&mut p, &[obs("a", t0, 100), obs("b", t0, 1000), obs("c", t0, 10)]);
        feed(&mut p, &[obs("a", t0 + H, 200), obs("b", t0 + H, 1300), obs("c", t0 + H, 11)]);
        let top = p.top(0);
        let names = |v: &[TopEntry]| v.iter().map(|e| e.page_id.clone()).collect::<Vec<_>>();
        assert_eq!(names(&top.by_growth), ["a", "b"], "100% and 30% beat 10%");
        assert_eq!(names(&top.by_delta), ["b", "a"], "+300 and +100 beat +1");
        // c goes viral: the rankings move.
        feed(&mut p, &[obs("c", t0 + 2 * H, 5000)]);
        let top = p.top(0);
        assert_eq!(names(&top.by_growth)[0], "c");
        assert_eq!(names(&top.by_delta)[0], "c");
        assert_eq!(p.pages(), 3);
    }

    #[test]
    fn ties_at_the_boundary_keep_the_globally_first_page() {
        let t0 = 1_795_000_000_000;
        let mut p = FansProcessor::new(0, &cfg(1, 10));
        feed(
            &mut p,
            &[obs("zeta", t0, 100), obs("alpha", t0, 100), obs("zeta", t0 + H, 110), obs("alpha", t0 + H, 110)],
        );
        let top = p.top(t0);
        assert_eq!(top.by_delta[0].page_id, "alpha", "equal delta: the smaller key ranks first");
        let mut view = FansTopView::new(1);
        view.merge(&mut vec![top]);
        assert_eq!(view.current().1[0].page_id, "alpha");
    }

    #[test]
    fn page_bound_is_enforced_with_a_reason() {
        let mut p = FansProcessor::new(0, &cfg(25, 2));
        feed(&mut p, &[obs("a", 0, 1), obs("b", 0, 1)]);
        let e = p.decode(INPUT, &obs("c", 0, 1)).expect_err("third page refused");
        assert!(e.message.contains("max_pages_per_partition"), "{}", e.message);
        p.decode(INPUT, &obs("a", H, 2)).expect("known pages still accepted");
    }

    #[test]
    fn global_top_is_the_exact_merge_of_partition_tops() {
        let t0 = 1_795_000_000_000;
        let mut parts = Vec::new();
        let mut all: Vec<(String, i64)> = Vec::new();
        for partition in 0..3 {
            let mut p = FansProcessor::new(partition, &cfg(3, 100));
            for i in 0..10 {
                let page = format!("p{partition}-{i}");
                let gain = ((i * 37 + partition as usize * 11) % 23) as u64;
                feed(&mut p, &[obs(&page, t0, 1000), obs(&page, t0 + H, 1000 + gain)]);
                all.push((page, gain as i64));
            }
            parts.push(p.top(t0));
        }
        let mut view = FansTopView::new(3);
        view.merge(&mut parts);
        let (_, by_delta) = view.current();
        all.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let want: Vec<&str> = all.iter().take(3).map(|(p, _)| p.as_str()).collect();
        let got: Vec<&str> = by_delta.iter().map(|e| e.page_id.as_str()).collect();
        assert_eq!(got, want);
        assert_eq!(by_delta.iter().map(|e| e.rank).collect::<Vec<_>>(), [1, 2, 3]);
        // Emits once, then only on change; lists of silent (revoked) partitions age out.
        let mut out = Vec::new();
        let now = chrono::DateTime::from_timestamp_millis(t0).expect("time");
        view.on_tick(now, &mut out);
        view.on_tick(now, &mut out);
        assert_eq!(out.len(), 1);
        view.on_tick(now + chrono::Duration::seconds(60), &mut out);
        assert_eq!(out.len(), 2);
        let top: FansTop = serde_json::from_slice(out[1].value.as_deref().expect("value")).expect("JSON");
        assert!(top.by_delta_24h.is_empty(), "every partition went silent");
    }

    #[test]
    fn decodes_valid_observations() {
        let r = rec(
            r#"{"platform":"facebook","page_id":"cocacolacanada","fans":1234,"followers":1300,"observed_at":"2026-11-23T10:00:00Z"}"#,
        );
        let o = decode_observation(&r).expect("valid");
        assert_eq!((o.fans, o.followers, o.key()), (1234, Some(1300), "facebook:cocacolacanada".to_string()));
        let r = rec(
            r#"{"platform":"mastodon","page_id":"@ana@example.social","fans":0,"followers":null,"observed_at":"2026-11-23T10:00:00+01:00"}"#,
        );
        let o = decode_observation(&r).expect("valid, followers optional");
        assert_eq!(o.followers, None);
        assert_eq!(o.observed_at_ms, 1_795_424_400_000);
    }

    #[test]
    fn refusals_name_the_field() {
        let cases = [
            (r#"{"page_id":"p","fans":1,"observed_at":"2026-11-23T10:00:00Z"}"#, "field `platform` is missing"),
            (
                r#"{"platform":"Face Book","page_id":"p","fans":1,"observed_at":"2026-11-23T10:00:00Z"}"#,
                "field `platform` must be",
            ),
            (r#"{"platform":"facebook","fans":1,"observed_at":"2026-11-23T10:00:00Z"}"#, "field `page_id` is missing"),
            (
                r#"{"platform":"facebook","page_id":"p","observed_at":"2026-11-23T10:00:00Z"}"#,
                "field `fans` is missing",
            ),
            (
                r#"{"platform":"facebook","page_id":"p","fans":-5,"observed_at":"2026-11-23T10:00:00Z"}"#,
                "field `fans` must be a non-negative integer",
            ),
            (
                r#"{"platform":"facebook","page_id":"p","fans":1.5,"observed_at":"2026-11-23T10:00:00Z"}"#,
                "field `fans` must be a non-negative integer",
            ),
            (
                r#"{"platform":"facebook","page_id":"p","fans":"12","observed_at":"2026-11-23T10:00:00Z"}"#,
                "field `fans` must be a number, found string",
            ),
            (
                r#"{"platform":"facebook","page_id":"p","fans":1,"followers":true,"observed_at":"2026-11-23T10:00:00Z"}"#,
                "field `followers` must be a number",
            ),
            (r#"{"platform":"facebook","page_id":"p","fans":1}"#, "field `observed_at` is missing"),
            (
                r#"{"platform":"facebook","page_id":"p","fans":1,"observed_at":"noon"}"#,
                "field `observed_at` must be an RFC 3339",
            ),
        ];
        for (value, want) in cases {
            let e = decode_observation(&rec(value)).expect_err(value);
            assert!(e.message.starts_with(want), "{value}: {}", e.message);
        }
    }

    /// Durable state: the changelog written by `take_changes` and read by `restore`.
    mod durable {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};

        use super::*;
        use crate::engine::state::{flush_records, new_owner, MemoryBackend, StateBackend};
        use crate::pipelines::fans::live::{Detail, FansLive, PageView};

        const LOG: &str = "fans-changelog";
        const MIN: i64 = 60_000;
        const DAY: i64 = 24 * H;
        const TOP_N: usize = 5;

        fn cfg() -> FansConfig {
            super::cfg(TOP_N, 100_000)
        }

        /// `n` observations of `pages` pages over about five weeks: most pages seldom, a few very
        /// often; some late by up to two days, some replayed (exact duplicates), a few days-long
        /// gaps (data leaves the retention), and some counts beyond the ring slots' 2^32 − 1.
        fn stream(rng: &mut StdRng, pages: usize, n: usize) -> Vec<RawRecord> {
            let mut clock = 1_795_000_000_000;
            let mut fans: Vec<u64> = (0..pages)
                .map(|i| if i % 50 == 7 { u64::from(u32::MAX) - 3000 } else { rng.gen_range(0..100_000) })
                .collect();
            let mut out: Vec<RawRecord> = Vec::with_capacity(n);
            for i in 0..n {
                if i > 0 && rng.gen_ratio(1, 40) {
                    let mut again = out[rng.gen_range(0..i)].clone();
                    again.offset = i as i64;
                    out.push(again);
                    continue;
                }
                clock += rng.gen_range(0..10 * MIN);
                if rng.gen_ratio(1, 1500) {
                    clock += rng.gen_range(1..8) * DAY;
                }
                let u: f64 = rng.gen();
                let page = ((u * u * u) * pages as f64) as usize;
                let late = if rng.gen_ratio(1, 10) { rng.gen_range(0..2 * DAY) } else { 0 };
                fans[page] = fans[page].saturating_add_signed(rng.gen_range(-20..200));
                let followers = (!page.is_multiple_of(3)).then(|| fans[page] / 2 + rng.gen_range(0..10));
                let platform = if page.is_multiple_of(4) { "mastodon" } else { "facebook" };
                let v = serde_json::json!({"platform": platform, "page_id": format!("p{page}"), "fans": fans[page],
                    "followers": followers, "observed_at": format_ms(clock - late)});
                out.push(RawRecord {
                    key: None,
                    value: Some(v.to_string().into_bytes()),
                    offset: i as i64,
                    timestamp_ms: None,
                });
            }
            out
        }

        fn keys(pages: usize) -> Vec<String> {
            (0..pages).flat_map(|i| [format!("facebook:p{i}"), format!("mastodon:p{i}")]).collect()
        }

        /// The `fans.stats` records one input record makes.
        fn run(p: &mut FansProcessor, rec: &RawRecord) -> Vec<OutRecord> {
            let mut out = Emit::default();
            let o = p.decode(INPUT, rec).expect("valid observations");
            p.process(o, &RecordMeta { topic: INPUT, partition: 0, offset: rec.offset, timestamp_ms: None }, &mut out);
            out.records
        }

        /// What `/pages?keys=` would answer for every key, with charts and tables.
        fn views(live: &FansLive, keys: &[String]) -> Vec<Option<PageView>> {
            live.pages(&keys.iter().map(String::as_str).collect::<Vec<_>>(), Detail::Full)
        }

        /// What `/pages/top` answers once the aggregate merged `parts` and ticked at `at_ms`.
        fn global_top(live: &FansLive, parts: Vec<PartitionTop>, at_ms: i64) -> Option<FansTop> {
            let view = live.top_view();
            let mut v = view.lock().expect("not poisoned");
            v.merge(&mut parts.clone());
            v.on_tick(chrono::DateTime::from_timestamp_millis(at_ms).expect("valid time"), &mut Vec::new());
            drop(v);
            live.top()
        }

        /// Writes one flush of `p`'s changes (after `pending`, e.g. repairs) covering input up to
        /// `position`; `torn` cuts it short of its marker, as a crash mid-flush would.
        fn flush(
            backend: &MemoryBackend,
            owner: u64,
            p: &mut FansProcessor,
            pending: &mut Vec<Change>,
            position: i64,
            torn: Option<&mut StdRng>,
        ) {
            p.take_changes(pending);
            let mut records = flush_records(LOG, 0, owner, pending.drain(..), Some(position));
            if let Some(rng) = torn {
                records.pop();
                records.truncate(rng.gen_range(0..=records.len()));
            }
            backend.append(records);
        }

        /// A fresh processor restored from `backend` as the engine does it: fence, replay, restore,
        /// then write the repairs of a torn flush first. Returns it with its live view, owner and the
        /// input position to resume at.
        fn restore(backend: &MemoryBackend) -> (FansProcessor, FansLive, u64, usize, Vec<PartitionTop>) {
            let live = FansLive::new(TOP_N);
            let mut p = FansProcessor::new(0, &cfg()).with_live(&live);
            let owner = new_owner();
            let restored = backend.restore(LOG, 0, owner).expect("the memory backend reads");
            let mut repairs = restored.repairs();
            if !repairs.is_empty() {
                backend.append(flush_records(LOG, 0, owner, repairs.drain(..), restored.position));
            }
            let start = restored.position.unwrap_or(0) as usize;
            let mut out = Emit::default();
            p.restore(restored.entries, &mut out);
            assert!(out.records.is_empty(), "a restore emits no fans.stats");
            (p, live, owner, start, out.parts)
        }

        /// Processor A runs the whole stream. Another runs it in several lives: random flushes,
        /// then a crash (unflushed work lost), a crash in the middle of a flush, or a clean stop;
        /// each life restores from the changelog and resumes at the restored position, so what
        /// came after the last flush is processed again. Every record's output must equal A's,
        /// and so must the queries at the end.
        fn restore_equivalence(seed: u64) {
            let mut rng = StdRng::seed_from_u64(seed);
            let (pages, n) = (300, 6000);
            let recs = stream(&mut rng, pages, n);
            let keys = keys(pages);
            let live_a = FansLive::new(TOP_N);
            let mut a = FansProcessor::new(0, &cfg()).with_live(&live_a);
            let expected: Vec<Vec<OutRecord>> = recs.iter().map(|r| run(&mut a, r)).collect();

            let backend = MemoryBackend::new();
            let mut cuts: Vec<usize> = (0..5).map(|_| rng.gen_range(0..n)).collect();
            cuts.sort_unstable();
            cuts.push(n);
            let (mut previous, mut redone, mut compared) = (None::<(FansProcessor, FansLive)>, 0, 0);
            let mut last_end = 0;
            for (life, &cut) in cuts.iter().enumerate() {
                let (mut p, live, owner, start, parts) = restore(&backend);
                assert!(start <= last_end && start <= cut, "the restored position is one that was flushed");
                redone += last_end - start;
                assert_eq!(parts, [p.top(parts[0].at_ms)], "the rankings go to the aggregate at once");
                if let Some((prev, prev_live)) = previous.take() {
                    // A clean stop flushed everything: the restored partition answers at once
                    // exactly as the stopped one did.
                    assert_eq!(start, last_end);
                    assert_eq!(views(&live, &keys), views(&prev_live, &keys), "seed {seed} life {life}");
                    assert_eq!((p.top(0), p.pages()), (prev.top(0), prev.pages()));
                    // The restore stamped its rankings with the wall clock: tick at that time.
                    let at = parts[0].at_ms;
                    assert_eq!(global_top(&live, parts, at), global_top(&prev_live, vec![prev.top(at)], at));
                }
                let mut pending = Vec::new();
                for i in start..cut {
                    assert_eq!(run(&mut p, &recs[i]), expected[i], "seed {seed} life {life} record {i}");
                    compared += 1;
                    if rng.gen_ratio(1, 150) {
                        flush(&backend, owner, &mut p, &mut pending, i as i64 + 1, None);
                    }
                }
                last_end = cut;
                if cut == n {
                    assert_eq!(views(&live, &keys), views(&live_a, &keys), "seed {seed}: queries at the end");
                    assert_eq!((p.top(0), p.pages(), p.corrupt_entries()), (a.top(0), a.pages(), 0));
                    assert!(views(&live, &keys).iter().flatten().count() > 100, "most pages were observed");
                    break;
                }
                // Each ending in turn, so every seed sees all three.
                match (life + seed as usize) % 3 {
                    0 => {} // a crash: whatever was not flushed is lost
                    1 => flush(&backend, owner, &mut p, &mut pending, cut as i64, Some(&mut rng)),
                    _ => {
                        flush(&backend, owner, &mut p, &mut pending, cut as i64, None);
                        previous = Some((p, live));
                    }
                }
            }
            assert!(redone > 0 && compared > n, "seed {seed}: records were processed again ({redone})");
        }

        #[test]
        fn a_restored_partition_continues_exactly_like_an_uninterrupted_one() {
            for seed in [1, 2, 3] {
                restore_equivalence(seed);
            }
        }

        #[test]
        fn a_torn_flush_restores_the_last_committed_state() {
            let mut rng = StdRng::seed_from_u64(7);
            let recs = stream(&mut rng, 40, 600);
            let keys = keys(40);
            let backend = MemoryBackend::new();
            let (mut b, _state_b, owner, start, _) = restore(&backend);
            assert_eq!(start, 0, "an empty changelog");
            let mut pending = Vec::new();
            for r in &recs[..300] {
                run(&mut b, r);
            }
            flush(&backend, owner, &mut b, &mut pending, 300, None);
            for r in &recs[300..] {
                run(&mut b, r);
            }
            // The crash takes the marker (and maybe more) of the second flush.
            p_torn(&backend, owner, &mut b, &mut pending);

            let live_r = FansLive::new(TOP_N);
            let mut reference = FansProcessor::new(0, &cfg()).with_live(&live_r);
            recs[..300].iter().for_each(|r| {
                run(&mut reference, r);
            });
            for _ in 0..2 {
                // Twice: the second restore reads the repairs the first one wrote.
                let (c, live_c, _, start, _) = restore(&backend);
                assert_eq!(start, 300);
                assert_eq!(views(&live_c, &keys), views(&live_r, &keys));
                assert_eq!((c.top(0), c.pages()), (reference.top(0), reference.pages()));
            }
        }

        fn p_torn(backend: &MemoryBackend, owner: u64, p: &mut FansProcessor, pending: &mut Vec<Change>) {
            p.take_changes(pending);
            assert!(pending.len() > 2, "the second flush changes pages");
            let mut records = flush_records(LOG, 0, owner, pending.drain(..), Some(600));
            records.pop();
            records.truncate(records.len() / 2);
            backend.append(records);
        }

        #[test]
        fn take_changes_writes_each_changed_page_once() {
            let t0 = 1_795_000_000_000;
            let mut p = FansProcessor::new(0, &cfg());
            let mut changes = Vec::new();
            p.take_changes(&mut changes);
            assert!(changes.is_empty());
            feed(&mut p, &[obs("a", t0, 1), obs("b", t0, 5), obs("a", t0 + H, 2), obs("a", t0 + 2 * H, 3)]);
            p.take_changes(&mut changes);
            changes.sort();
            let got: Vec<&[u8]> = changes.iter().map(|(k, _)| k.as_slice()).collect();
            assert_eq!(got, [&b"facebook:a"[..], b"facebook:b"]);
            let a = RollingFans::decode(changes[0].1.as_deref().expect("a value")).expect("decodes");
            assert_eq!(a.stats(), p.stats("facebook:a"));
            assert_eq!(a.table().len(), 3);
            changes.clear();
            // Nothing new, then only a duplicate (which changes nothing): nothing to write.
            p.take_changes(&mut changes);
            feed(&mut p, &[obs("b", t0, 5)]);
            p.take_changes(&mut changes);
            assert!(changes.is_empty());
            feed(&mut p, &[obs("b", t0 + H, 9)]);
            p.take_changes(&mut changes);
            assert_eq!(changes.len(), 1);
            assert_eq!(changes[0].0, b"facebook:b");
        }

        #[test]
        fn corrupt_entries_are_counted_and_skipped() {
            let t0 = 1_795_000_000_000;
            let mut src = FansProcessor::new(0, &cfg());
            feed(&mut src, &[obs("a", t0, 10), obs("a", t0 + H, 20), obs("ok", t0, 1)]);
            let mut changes = Vec::new();
            src.take_changes(&mut changes);
            let good: Entries = changes.into_iter().map(|(k, v)| (k, v.expect("a value"))).collect();
            let valid = good[b"facebook:a".as_slice()].clone();
            let mut entries = good.clone();
            let mut truncated = valid.clone();
            truncated.pop();
            let mut v9 = valid.clone();
            v9[0] = 9;
            for (k, v) in [
                (b"facebook:garbage".to_vec(), vec![0xff; 12]),
                (b"facebook:truncated".to_vec(), truncated),
                (b"facebook:future".to_vec(), v9),
                (b"facebook:empty".to_vec(), vec![1, 0]),
                (b"nocolon".to_vec(), valid.clone()),
                (vec![b'x', b':', 0xc3], valid),
            ] {
                entries.insert(k, v);
            }
            let live = FansLive::new(TOP_N);
            let mut p = FansProcessor::new(0, &cfg()).with_live(&live);
            p.restore(entries, &mut Emit::default());
            assert_eq!((p.pages(), p.corrupt_entries()), (2, 6));
            assert_eq!(p.stats("facebook:a"), src.stats("facebook:a"));
            assert_eq!(live.page("facebook:a", Detail::Full).map(|v| v.stats.fans), Some(20));
            assert_eq!(live.page("facebook:garbage", Detail::Stats), None);
            assert_eq!(p.top(0), src.top(0));
            // The skipped page starts afresh.
            let last = feed(&mut p, &[obs("garbage", t0, 3)]);
            assert_eq!(last.records.len(), 1);
            assert_eq!(p.pages(), 3);
        }
    }
}
