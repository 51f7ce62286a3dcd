//! Pages marked for watching in their `pages` record (`"watch": true`): a global table, read
//! whole by every instance, so whichever instance holds a page's fans exports its figures to
//! Prometheus (see [`super::export`]). It never dead-letters: the pages pipeline, which reads the
//! same records, refuses what is malformed; here such a record changes nothing.
//!
//! The set holds at most ten times `pipelines.fans.watch_max` pages (the export keeps
//! `watch_max` of them and counts the rest in `pagepulse_results_over_bound`); marks past that
//! are ignored, with a warning, until pages are unmarked.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use serde::Deserialize;

use crate::engine::{Emit, Processor, RawRecord, RecordMeta, Rejection};

/// The watched pages marked in `pages` records. Clones share it.
#[derive(Debug, Clone)]
pub struct Watched {
    keys: Arc<RwLock<BTreeSet<String>>>,
    max: usize,
    refused: Arc<AtomicU64>,
}

impl Watched {
    /// An empty set of at most `max` pages.
    pub fn new(max: usize) -> Self {
        Self { keys: Arc::default(), max, refused: Arc::default() }
    }

    /// The marked pages, in key order.
    pub fn keys(&self) -> Vec<String> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect()
    }

    /// Marks not kept because the set was full, since the start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    fn set(&self, key: &str, watch: bool) {
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        if !watch {
            keys.remove(key);
        } else if !keys.contains(key) {
            if keys.len() >= self.max {
                self.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(page = key, max = self.max, "page not marked for watching: the set is full");
            } else {
                keys.insert(key.to_string());
            }
        }
    }
}

/// What a `pages` record says about watching its page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchChange<'a> {
    key: &'a str,
    watch: Option<bool>,
}

/// Applies `pages` records to a [`Watched`] set.
pub struct WatchProcessor {
    watched: Watched,
}

impl WatchProcessor {
    /// The processor of `watched`.
    pub fn new(watched: Watched) -> Self {
        Self { watched }
    }
}

#[derive(Deserialize)]
struct Wire {
    #[serde(default)]
    watch: Option<bool>,
    #[serde(default)]
    tracked: Option<bool>,
}

/// Whether `rec` marks (`Some(true)`) or unmarks (`Some(false)`) its page; `None` when it says
/// nothing readable (left to the pages pipeline to refuse).
pub fn decode_watch(rec: &RawRecord) -> WatchChange<'_> {
    let key = rec.key.as_deref().and_then(|k| std::str::from_utf8(k).ok()).filter(|k| k.contains(':'));
    let Some(key) = key else { return WatchChange { key: "", watch: None } };
    let watch = match &rec.value {
        None => Some(false), // a tombstone: the page is no longer tracked
        Some(v) => serde_json::from_slice::<Wire>(v).ok().map(|w| w.tracked != Some(false) && w.watch == Some(true)),
    };
    WatchChange { key, watch }
}

impl Processor for WatchProcessor {
    type Input<'a> = WatchChange<'a>;
    type Part = ();

    fn decode<'a>(&self, _topic: &'static str, rec: &'a RawRecord) -> Result<WatchChange<'a>, Rejection> {
        Ok(decode_watch(rec))
    }

    fn process(&mut self, change: WatchChange<'_>, _meta: &RecordMeta, _out: &mut Emit<()>) {
        if let Some(watch) = change.watch {
            self.watched.set(change.key, watch);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(key: &str, value: Option<&str>) -> RawRecord {
        RawRecord { key: Some(key.into()), value: value.map(|v| v.as_bytes().to_vec()), offset: 0, timestamp_ms: None }
    }

    #[test]
    fn marks_unmarks_and_keeps_its_bound() {
        let w = Watched::new(2);
        let apply = |key: &str, value: Option<&str>| {
            let r = rec(key, value);
            let c = decode_watch(&r);
            if let Some(watch) = c.watch {
                w.set(c.key, watch);
            }
        };
        apply("facebook:a", Some(r#"{"page_id": "a", "watch": true}"#));
        apply("facebook:b", Some(r#"{"page_id": "b", "watch": true, "interval_s": 60}"#));
        apply("facebook:c", Some(r#"{"page_id": "c", "watch": true}"#)); // full: refused
        assert_eq!(w.keys(), ["facebook:a", "facebook:b"]);
        assert_eq!(w.refused(), 1);
        apply("facebook:a", Some(r#"{"page_id": "a"}"#)); // re-sent without the mark
        apply("facebook:b", Some(r#"{"page_id": "b", "watch": true, "tracked": false}"#));
        assert!(w.keys().is_empty());
        apply("facebook:c", Some(r#"{"page_id": "c", "watch": true}"#));
        apply("facebook:c", None); // tombstone
        apply("facebook:d", Some(r#"{"page_id": "d", "watch": "yes"}"#)); // malformed: nothing
        apply("no-colon", Some(r#"{"watch": true}"#));
        assert!(w.keys().is_empty());
    }
}
