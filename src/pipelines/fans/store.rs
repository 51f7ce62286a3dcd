//! The fans pipeline's durable state: one changelog entry per page, key = the page key, value =
//! its whole rolling series ([`RollingFans::encode`]: version byte, then the packed samples and
//! blocks as held in memory; ~20 bytes for a new page, ~200 for a day of 10-minute samples,
//! ~1.5 KB for a full 30 days with exact regular times, ~2.9 KB with millisecond jitter). A page is written
//! at the first flush after an observation changed it, once however often it changed (each page
//! carries a dirty flag, and the store a list of the dirty keys). Everything else (the rankings,
//! the scores, the page count, what `/pages` reads) is derived from the series and rebuilt at
//! restore, so a restored partition emits exactly what an uninterrupted one would have.
//!
//! The store's map is also what queries read ([`super::live`]): the processor registers it
//! there, so the pages are not held twice.

use std::cmp::Reverse;
use std::sync::Arc;

use dashmap::mapref::one::Ref;

use super::names::PIPELINE;
use super::page::{scores, Page, Score};
use crate::engine::state::{Change, Entries};
use crate::ops::series::{FanStats, RollingFans, Sample};

/// One partition's pages by key `<platform>:<page_id>`. Hashed with foldhash (hashbrown's
/// default, randomly seeded per map) rather than SipHash: a restore inserts a million keys.
///
/// Pages are boxed: a map slot is then 24 bytes instead of 136, which matters because the table
/// keeps up to 2.3 slots a page (a power-of-two capacity at most 7/8 full). Measured at a million
/// pages of 30 days (`cargo bench --bench fans_memory -- --pages 1000000`), see the README.
pub type PageMap = dashmap::DashMap<Arc<str>, Box<Page>, hashbrown::DefaultHashBuilder>;

/// An empty page map with room for `capacity` pages.
pub fn page_map(capacity: usize) -> PageMap {
    PageMap::with_capacity_and_hasher(capacity, hashbrown::DefaultHashBuilder::default())
}

/// A ranking index entry: score, then key (descending keys, so that reverse iteration ranks
/// ties by key ascending).
pub type Ranked = (Score, Reverse<Arc<str>>);

/// Corrupt changelog values logged one by one at restore; the rest are only counted.
const CORRUPT_LOGGED: u64 = 10;

/// What an observation changed: see [`FansStore::observe`].
pub struct Observed {
    /// The page's key, shared with the map.
    pub key: Arc<str>,
    /// Its figures now.
    pub stats: FanStats,
    /// Its scores before the observation (growth, delta).
    pub old: (Option<Score>, Option<Score>),
    /// Its scores now (growth, delta).
    pub new: (Option<Score>, Option<Score>),
}

/// One partition's pages: the durable state of the fans pipeline. Only its processor writes it;
/// queries read its map concurrently ([`super::live`]), each holding one shard's read lock for
/// as long as it takes to copy one page's figures out.
pub struct FansStore {
    partition: i32,
    pages: Arc<PageMap>,
    /// Entries in `pages`, kept here because `DashMap::len` locks every shard in turn and the
    /// processor checks the bound on every record.
    len: usize,
    /// Keys of the pages changed since the last [`take_changes`](FansStore::take_changes), each
    /// once (the page's `dirty` flag says whether it is here). At most one per page, so bounded
    /// by the number of pages (`pipelines.fans.max_pages_per_partition`).
    dirty: Vec<Arc<str>>,
    /// Changelog entries [`restore`](FansStore::restore) skipped because they did not decode.
    corrupt: u64,
}

impl FansStore {
    /// An empty store for `partition`.
    pub fn new(partition: i32) -> Self {
        Self { partition, pages: Arc::new(page_map(0)), len: 0, dirty: Vec::new(), corrupt: 0 }
    }

    /// The map of pages, to register for queries. A restore replaces it.
    pub fn map(&self) -> &Arc<PageMap> {
        &self.pages
    }

    /// Pages held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True without pages.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True if `key` is held.
    pub fn contains(&self, key: &str) -> bool {
        self.pages.contains_key(key)
    }

    /// Page `key`, under its shard's read lock.
    pub fn get(&self, key: &str) -> Option<Ref<'_, Arc<str>, Box<Page>>> {
        self.pages.get(key)
    }

    /// Changelog entries the restore skipped because they did not decode (each logged, up to
    /// `CORRUPT_LOGGED`): their pages start afresh.
    pub fn corrupt_entries(&self) -> u64 {
        self.corrupt
    }

    /// Adds `sample` to page `key` (a new page if need be) and updates its scores. `None` when
    /// it changed nothing (a duplicate, or older than the series keeps): nothing to write
    /// either.
    pub fn observe(&mut self, key: &str, sample: Sample) -> Option<Observed> {
        // The entry holds its shard's write lock: queries of pages in that shard wait until it is
        // dropped below, after one observation and one `stats()`.
        let mut page = match self.pages.get_mut(key) {
            Some(p) => p,
            None => {
                self.len += 1;
                self.pages.entry(key.into()).or_default()
            }
        };
        if !page.series.observe(sample) {
            return None;
        }
        if !page.dirty {
            page.dirty = true;
            self.dirty.push(page.key().clone());
        }
        let stats = page.series.stats()?;
        let new = scores(Some(&stats));
        let old = (page.growth, page.delta);
        (page.growth, page.delta) = new;
        Some(Observed { key: page.key().clone(), stats, old, new })
    }

    /// Writes every page changed since the last call: key = page key, value = its encoded series.
    pub fn take_changes(&mut self, out: &mut Vec<Change>) {
        out.reserve(self.dirty.len());
        // One buffer that grows to the largest page, then an exact-size copy per value.
        let mut buf = Vec::new();
        for key in self.dirty.drain(..) {
            let value = self.pages.get_mut(&*key).map(|mut page| {
                page.dirty = false;
                buf.clear();
                page.series.encode(&mut buf);
                buf.as_slice().to_vec()
            });
            // Pages are never removed today; if one were, its tombstone keeps the changelog right.
            out.push((key.as_bytes().to_vec(), value));
        }
    }

    /// Rebuilds the pages from the changelog into a new map (see [`map`](FansStore::map)) and
    /// returns the ranking index entries of the restored pages (growth, delta), unsorted. A
    /// value that does not decode is logged, counted ([`FansStore::corrupt_entries`]) and
    /// skipped: that page starts afresh. Runs once, on a fresh store.
    pub fn restore(&mut self, entries: Entries) -> (Vec<Ranked>, Vec<Ranked>) {
        // The trait's contract: once, on a fresh processor (so the indexes can be built anew).
        debug_assert!(self.len == 0, "restore runs on a fresh store");
        let (mut by_growth, mut by_delta) = (Vec::with_capacity(entries.len()), Vec::with_capacity(entries.len()));
        // Filled with its final capacity, then registered in place of the empty map: growing a
        // map of a million pages rehashes and moves them several times over.
        let pages = Arc::new(page_map(entries.len()));
        for (key, value) in entries {
            let key = match String::from_utf8(key) {
                // Queries split stored keys at the first ':' (`live::PageView::of`).
                Ok(k) if k.contains(':') => k,
                Ok(k) => {
                    self.skip_corrupt(k.as_bytes(), "a page key is `<platform>:<page_id>`");
                    continue;
                }
                Err(e) => {
                    self.skip_corrupt(e.as_bytes(), "a page key is UTF-8 text");
                    continue;
                }
            };
            let series = match RollingFans::decode(&value) {
                Ok(s) => s,
                Err(e) => {
                    self.skip_corrupt(key.as_bytes(), &e.to_string());
                    continue;
                }
            };
            let Some(stats) = series.stats() else {
                self.skip_corrupt(key.as_bytes(), "a page without samples");
                continue;
            };
            let page = Page::of(series, Some(&stats));
            let key: Arc<str> = key.into();
            if let Some(g) = page.growth {
                by_growth.push((g, Reverse(key.clone())));
            }
            if let Some(d) = page.delta {
                by_delta.push((d, Reverse(key.clone())));
            }
            if pages.insert(key, Box::new(page)).is_none() {
                self.len += 1;
            }
        }
        self.pages = pages;
        if self.corrupt > 0 {
            tracing::warn!(
                pipeline = PIPELINE,
                partition = self.partition,
                skipped = self.corrupt,
                "state restore skipped changelog entries that do not decode; those pages start afresh"
            );
        }
        (by_growth, by_delta)
    }

    /// Counts and (for the first few) logs a changelog entry the restore cannot use.
    fn skip_corrupt(&mut self, key: &[u8], why: &str) {
        self.corrupt += 1;
        if self.corrupt <= CORRUPT_LOGGED {
            tracing::warn!(
                pipeline = PIPELINE,
                partition = self.partition,
                key = %String::from_utf8_lossy(key),
                reason = why,
                "skipping a corrupt fans state entry"
            );
        }
    }
}
