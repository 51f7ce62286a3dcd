//! Exact hourly event-time windows per domain, closed by a watermark or by idleness.
//!
//! Every `(hour, domain)` window keeps the exact view count of each title seen in it. The
//! watermark is the highest event time seen minus the allowed lateness; a window becomes final
//! once the watermark reaches its end ([`HourlyWindows::close_due`]) or when its partition has
//! been idle and the caller closes everything ([`HourlyWindows::close_all`]). An event for a
//! window that is already final is late: it is counted per domain ([`HourlyWindows::take_late`])
//! and never changes a result.
//!
//! Hours ingested from a file (a Wikimedia hourly dump) follow other rules: see
//! [`HourlyWindows::begin_file`]. Such an hour is counted in windows of its own, whatever hours
//! are already final, and becomes final when its file's end is seen
//! ([`HourlyWindows::end_file`]), not by watermark or idleness; ingesting it again is skipped,
//! and a restarted ingestion replaces the partial counts of the one before.
//!
//! Titles are `Arc<str>` so the same allocation can be shared with other views of the same
//! titles (the trending window); a title costs one allocation however many maps hold it. The maps
//! are hashbrown's with foldhash: a real-size hour means millions of title lookups, and SipHash
//! (std's default, built against hash flooding) cost about a third of the time per event;
//! titles come from the operator's own dumps and topics.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use hashbrown::hash_map::EntryRef;
pub use hashbrown::HashMap;

/// One hour in milliseconds.
pub const HOUR_MS: i64 = 3_600_000;

/// The exact counts of one `(hour, domain)` window.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Window {
    /// Sum of every view counted in the window.
    pub total_views: u64,
    /// Views per title.
    pub counts: HashMap<Arc<str>, u64>,
}

/// A window handed out by a close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    /// Start of the hour, epoch milliseconds.
    pub hour_start: i64,
    /// The domain.
    pub domain: Arc<str>,
    /// Its counts.
    pub window: Window,
}

/// What [`HourlyWindows::add`] did with an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Added {
    /// Counted.
    Counted {
        /// The title as stored (shared with the caller's other views).
        title: Arc<str>,
        /// True if this is the title's first view in its window (a caller tracking changes
        /// knows the title cannot be among them yet).
        first: bool,
    },
    /// Its window is already final: not counted.
    Late,
    /// A file's record that is not of the ingestion its hour is counting (an earlier, replaced
    /// one, or one skipped because the hour was final): not counted.
    Stale,
}

/// Most hours remembered as final from files; the oldest are forgotten beyond it (an hour
/// forgotten is computed again if its file comes again, with the same result). 100,000 hours is
/// more than eleven years.
pub const MAX_FILE_HOURS: usize = 100_000;

/// The ingestion of one hour's file in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHour {
    /// The ingestion's batch id (every record of the ingestion carries it).
    pub batch: Arc<str>,
    /// Records of the batch counted so far in this partition.
    pub seen: u64,
}

/// What [`HourlyWindows::begin_file`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Begun {
    /// The hour is counted from this batch from now on; `replaced`: partial counts (of an earlier
    /// batch, or live events) were dropped.
    Started {
        /// Whether earlier counts of the hour were dropped.
        replaced: bool,
    },
    /// The hour is already final from a file: the batch is skipped.
    AlreadyFinal,
}

/// The open windows of one partition. See the module docs.
#[derive(Debug)]
pub struct HourlyWindows {
    lateness_ms: i64,
    max_ts: Option<i64>,
    /// Open windows by hour start, then by domain.
    open: BTreeMap<i64, HashMap<Arc<str>, Window>>,
    /// Every hour starting before this is final.
    final_before: i64,
    /// Late events per domain since they were last taken.
    late: HashMap<Arc<str>, u64>,
    /// Hours being ingested from files, with their batch.
    file_open: BTreeMap<i64, FileHour>,
    /// The windows of those hours, by hour start, then by domain.
    file_windows: BTreeMap<i64, HashMap<Arc<str>, Window>>,
    /// Hours final from a file (at most [`MAX_FILE_HOURS`], the newest).
    file_final: BTreeSet<i64>,
}

/// The start of the hour holding `ts_ms`.
pub fn hour_of(ts_ms: i64) -> i64 {
    ts_ms.div_euclid(HOUR_MS) * HOUR_MS
}

/// Counts `views` of `title` in `domain`'s window of `domains`.
#[inline]
fn count(
    domains: &mut HashMap<Arc<str>, Window>,
    domain: &str,
    title: &str,
    views: u64,
    known_title: Option<&Arc<str>>,
) -> Added {
    let window = match domains.get_mut(domain) {
        Some(w) => w,
        None => domains.entry(domain.into()).or_default(),
    };
    window.total_views += views;
    // One hash of the title (foldhash), whether it is new or not.
    match window.counts.entry_ref(title) {
        EntryRef::Occupied(mut e) => {
            *e.get_mut() += views;
            Added::Counted { title: e.key().clone(), first: false }
        }
        EntryRef::Vacant(e) => {
            let key = known_title.filter(|k| &***k == title).cloned().unwrap_or_else(|| Arc::from(title));
            e.insert_with_key(key.clone(), views);
            Added::Counted { title: key, first: true }
        }
    }
}

impl HourlyWindows {
    /// Windows that accept events up to `lateness_ms` behind the newest one.
    pub fn new(lateness_ms: i64) -> Self {
        Self {
            lateness_ms,
            max_ts: None,
            open: BTreeMap::new(),
            final_before: i64::MIN,
            late: HashMap::new(),
            file_open: BTreeMap::new(),
            file_windows: BTreeMap::new(),
            file_final: BTreeSet::new(),
        }
    }

    /// The watermark: the newest event time minus the allowed lateness (`None` before any event).
    pub fn watermark(&self) -> Option<i64> {
        self.max_ts.map(|t| t.saturating_sub(self.lateness_ms))
    }

    /// The newest event time counted so far (`None` before any event).
    pub fn max_ts(&self) -> Option<i64> {
        self.max_ts
    }

    /// Every hour starting before this is final (`i64::MIN` while none is).
    pub fn final_before(&self) -> i64 {
        self.final_before
    }

    /// True if live events of the hour starting at `hour_start` are late: its windows are
    /// final, or the hour is counted from a file.
    pub fn is_final(&self, hour_start: i64) -> bool {
        hour_start < self.final_before || self.file_owned(hour_start)
    }

    /// True if the hour is being ingested from a file or is final from one.
    pub fn file_owned(&self, hour_start: i64) -> bool {
        self.file_open.contains_key(&hour_start) || self.file_final.contains(&hour_start)
    }

    /// True if counts of the hour still matter: it is being ingested from a file, or it is a live
    /// hour not yet final. (A durable store keeps the counts of these hours.)
    pub fn hour_open(&self, hour_start: i64) -> bool {
        self.file_open.contains_key(&hour_start)
            || (hour_start >= self.final_before && !self.file_final.contains(&hour_start))
    }

    /// Hours being ingested from files, with their batch and records seen.
    pub fn file_hours(&self) -> &BTreeMap<i64, FileHour> {
        &self.file_open
    }

    /// Hours final from files.
    pub fn file_final_hours(&self) -> &BTreeSet<i64> {
        &self.file_final
    }

    /// Starts counting the hour `hour_start` from the file ingestion `batch` (see the module
    /// docs). If the hour is already final from a file, the batch is skipped unless `replace`.
    /// Otherwise whatever the hour had (a replaced batch's partial counts, live windows) is
    /// dropped and the hour counts only this batch's records from now on.
    pub fn begin_file(&mut self, hour_start: i64, batch: &str, replace: bool) -> Begun {
        if self.file_final.contains(&hour_start) && !replace {
            return Begun::AlreadyFinal;
        }
        let mut replaced = self.file_final.remove(&hour_start);
        replaced |= self.open.remove(&hour_start).is_some();
        replaced |= self.file_windows.remove(&hour_start).is_some_and(|w| !w.is_empty());
        replaced |=
            self.file_open.insert(hour_start, FileHour { batch: batch.into(), seen: 0 }).is_some_and(|f| f.seen > 0);
        Begun::Started { replaced }
    }

    /// Counts `views` of `title` in `domain` for the hour `hour_start`, a record of file batch
    /// `batch`: counted only if that batch is the one the hour counts ([`Added::Stale`]
    /// otherwise). Never moves the watermark.
    pub fn add_file(&mut self, domain: &str, title: &str, views: u64, hour_start: i64, batch: &str) -> Added {
        match self.file_open.get_mut(&hour_start) {
            Some(f) if &*f.batch == batch => f.seen += 1,
            _ => return Added::Stale,
        }
        let domains = self.file_windows.entry(hour_start).or_default();
        count(domains, domain, title, views, None)
    }

    /// Ends file batch `batch` of the hour `hour_start`: if it is the batch the hour counts,
    /// the hour is final from now on and its windows are returned (by domain), with the records
    /// the batch had in this partition. `None` if the batch is not the hour's (skipped or
    /// replaced).
    pub fn end_file(&mut self, hour_start: i64, batch: &str) -> Option<(Vec<Closed>, u64)> {
        if self.file_open.get(&hour_start).is_none_or(|f| &*f.batch != batch) {
            return None;
        }
        let seen = self.file_open.remove(&hour_start).map_or(0, |f| f.seen);
        let domains = self.file_windows.remove(&hour_start).unwrap_or_default();
        self.file_final.insert(hour_start);
        while self.file_final.len() > MAX_FILE_HOURS {
            self.file_final.pop_first();
        }
        Some((Self::closed(hour_start, domains).collect(), seen))
    }

    /// Gives up file batch `batch` of the hour `hour_start` (its ingestion failed): its partial
    /// counts are dropped. The hour stays owned by files, counting nothing, until a file of it
    /// begins again (live events of it stay late). False if the batch is not the hour's.
    pub fn abort_file(&mut self, hour_start: i64, batch: &str) -> bool {
        match self.file_open.get_mut(&hour_start) {
            Some(f) if &*f.batch == batch => *f = FileHour { batch: "".into(), seen: 0 },
            _ => return false,
        }
        self.file_windows.remove(&hour_start);
        true
    }

    /// Open windows of hours being ingested from files.
    pub fn file_windows(&self) -> usize {
        self.file_windows.values().map(HashMap::len).sum()
    }

    /// Late events per domain not yet taken by [`take_late`](Self::take_late).
    pub fn late_counts(&self) -> impl Iterator<Item = (&Arc<str>, u64)> {
        self.late.iter().map(|(d, n)| (d, *n))
    }

    /// Replaces the whole state with one a durable store saved: the newest event time, the
    /// boundary before which every hour is final, untaken late counts, and the open windows by
    /// hour start then domain. Windows of final hours and empty windows are dropped (a final
    /// window is never reopened); nothing is closed here, the next event or close does that.
    ///
    /// `files` are the hours being ingested from files (their windows are among `open`) and the
    /// hours final from files.
    pub fn restore(
        &mut self,
        max_ts: Option<i64>,
        final_before: i64,
        late: HashMap<Arc<str>, u64>,
        mut open: BTreeMap<i64, HashMap<Arc<str>, Window>>,
        files: (BTreeMap<i64, FileHour>, BTreeSet<i64>),
    ) {
        self.max_ts = max_ts;
        self.final_before = final_before;
        self.late = late.into_iter().filter(|(_, n)| *n > 0).collect();
        (self.file_open, self.file_final) = files;
        open.retain(|hour, domains| {
            domains.retain(|_, w| !w.counts.is_empty());
            self.hour_open(*hour) && !domains.is_empty()
        });
        self.file_windows = BTreeMap::new();
        for hour in self.file_open.keys() {
            if let Some(w) = open.remove(hour) {
                self.file_windows.insert(*hour, w);
            }
        }
        self.open = open;
    }

    /// Number of open `(hour, domain)` windows.
    pub fn open_windows(&self) -> usize {
        self.open.values().map(HashMap::len).sum()
    }

    /// Counts `views` of `title` in `domain` at event time `ts_ms`. `known_title` may offer an
    /// allocation of the same title already held elsewhere, to share instead of allocating.
    pub fn add(&mut self, domain: &str, title: &str, views: u64, ts_ms: i64, known_title: Option<&Arc<str>>) -> Added {
        let hour = hour_of(ts_ms);
        if hour < self.final_before
            || (!self.file_open.is_empty() || !self.file_final.is_empty()) && self.file_owned(hour)
        {
            match self.late.get_mut(domain) {
                Some(n) => *n += 1,
                None => {
                    self.late.insert(domain.into(), 1);
                }
            }
            return Added::Late;
        }
        self.max_ts = Some(self.max_ts.map_or(ts_ms, |m| m.max(ts_ms)));
        let domains = self.open.entry(hour).or_default();
        count(domains, domain, title, views, known_title)
    }

    /// Closes every window whose hour ended at or before the watermark, oldest first.
    pub fn close_due(&mut self) -> Vec<Closed> {
        let Some(wm) = self.watermark() else { return Vec::new() };
        let mut out = Vec::new();
        while let Some(entry) = self.open.first_entry() {
            let hour = *entry.key();
            if hour.saturating_add(HOUR_MS) > wm {
                break;
            }
            out.extend(Self::closed(hour, entry.remove()));
            self.final_before = self.final_before.max(hour + HOUR_MS);
        }
        out
    }

    /// Closes every open window (the partition has been idle), oldest first.
    pub fn close_all(&mut self) -> Vec<Closed> {
        let mut out = Vec::new();
        while let Some((hour, domains)) = self.open.pop_first() {
            out.extend(Self::closed(hour, domains));
            self.final_before = self.final_before.max(hour + HOUR_MS);
        }
        out
    }

    fn closed(hour: i64, domains: HashMap<Arc<str>, Window>) -> impl Iterator<Item = Closed> {
        let mut v: Vec<Closed> =
            domains.into_iter().map(|(domain, window)| Closed { hour_start: hour, domain, window }).collect();
        v.sort_by(|a, b| a.domain.cmp(&b.domain));
        v.into_iter()
    }

    /// The open windows, oldest hour first, for provisional views.
    pub fn open(&self) -> impl Iterator<Item = (i64, &Arc<str>, &Window)> {
        self.open.iter().flat_map(|(h, ds)| ds.iter().map(move |(d, w)| (*h, d, w)))
    }

    /// Late events of `domain` counted since the last call, resetting the count.
    pub fn take_late(&mut self, domain: &str) -> u64 {
        self.late.remove(domain).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H0: i64 = 1_795_424_400_000; // 2026-11-23T09:00:00Z
    const MIN: i64 = 60_000;
    const LATENESS: i64 = 5 * MIN;

    fn count(c: &Closed, title: &str) -> u64 {
        c.window.counts.get(title).copied().unwrap_or(0)
    }

    #[test]
    fn a_window_closes_when_the_watermark_passes_its_end() {
        let mut w = HourlyWindows::new(LATENESS);
        w.add("en", "A", 2, H0 + 10 * MIN, None);
        w.add("en", "B", 1, H0 + 59 * MIN, None);
        w.add("de", "A", 5, H0 + 30 * MIN, None);
        // 09:00 + 1 h + 4 min: the watermark (10:04 - 5 min) is 09:59, before 10:00.
        w.add("en", "A", 1, H0 + HOUR_MS + 4 * MIN, None);
        assert!(w.close_due().is_empty());
        // An out-of-order event within the lateness still counts in the open 09:00 window.
        assert!(matches!(w.add("en", "B", 1, H0 + 58 * MIN, None), Added::Counted { .. }));
        w.add("en", "C", 1, H0 + HOUR_MS + 5 * MIN, None);
        let closed = w.close_due();
        assert_eq!(closed.len(), 2, "both domains' 09:00 windows");
        assert_eq!((closed[0].domain.as_ref(), closed[0].hour_start, count(&closed[0], "A")), ("de", H0, 5));
        let en = &closed[1];
        assert_eq!((count(en, "A"), count(en, "B"), en.window.total_views), (2, 2, 4));
        assert_eq!(w.open_windows(), 1, "10:00 en stays open");
    }

    #[test]
    fn events_for_final_windows_are_late_and_counted_per_domain() {
        let mut w = HourlyWindows::new(LATENESS);
        w.add("en", "A", 1, H0, None);
        w.add("en", "A", 1, H0 + HOUR_MS + 6 * MIN, None);
        assert_eq!(w.close_due().len(), 1);
        assert_eq!(w.add("en", "A", 9, H0 + 30 * MIN, None), Added::Late);
        assert_eq!(w.add("en", "B", 9, H0 + 59 * MIN, None), Added::Late);
        assert_eq!(w.add("de", "B", 9, H0, None), Added::Late);
        assert_eq!((w.take_late("en"), w.take_late("en"), w.take_late("de")), (2, 0, 1));
    }

    #[test]
    fn idleness_closes_everything_and_later_events_for_those_hours_are_late() {
        let mut w = HourlyWindows::new(LATENESS);
        w.add("en", "A", 1, H0 + 5 * MIN, None);
        w.add("en", "A", 1, H0 + HOUR_MS + 5 * MIN, None);
        let all = w.close_all();
        assert_eq!(all.iter().map(|c| c.hour_start).collect::<Vec<_>>(), [H0, H0 + HOUR_MS]);
        assert_eq!(w.add("en", "A", 1, H0 + HOUR_MS + 50 * MIN, None), Added::Late);
        assert!(matches!(w.add("en", "A", 1, H0 + 2 * HOUR_MS, None), Added::Counted { .. }));
    }

    #[test]
    fn titles_share_one_allocation() {
        let mut w = HourlyWindows::new(LATENESS);
        let known: Arc<str> = Arc::from("Köln");
        let Added::Counted { title: a, first: true } = w.add("de", "Köln", 1, H0, Some(&known)) else {
            panic!("first")
        };
        assert!(Arc::ptr_eq(&a, &known));
        let Added::Counted { title: b, first: false } = w.add("de", "Köln", 1, H0 + MIN, None) else {
            panic!("again")
        };
        assert!(Arc::ptr_eq(&a, &b));
    }

    #[test]
    fn a_restored_state_keeps_final_hours_final_and_its_open_windows_open() {
        let mut w = HourlyWindows::new(LATENESS);
        let mut open = BTreeMap::new();
        let window = |n| Window { total_views: n, counts: HashMap::from([(Arc::from("A"), n)]) };
        open.insert(H0, HashMap::from([(Arc::from("en"), window(3))]));
        open.insert(H0 + HOUR_MS, HashMap::from([(Arc::from("en"), window(4))]));
        w.restore(
            Some(H0 + HOUR_MS + MIN),
            H0 + HOUR_MS,
            HashMap::from([(Arc::from("de"), 2)]),
            open,
            Default::default(),
        );
        assert_eq!(w.open_windows(), 1, "the final hour's window is dropped");
        assert_eq!(w.watermark(), Some(H0 + HOUR_MS + MIN - LATENESS));
        assert_eq!(w.add("en", "A", 1, H0 + 59 * MIN, None), Added::Late);
        assert_eq!(w.take_late("de"), 2);
        w.add("en", "A", 1, H0 + 2 * HOUR_MS + 5 * MIN, None);
        let closed = w.close_due();
        assert_eq!(closed.len(), 1);
        assert_eq!((closed[0].hour_start, count(&closed[0], "A"), closed[0].window.total_views), (H0 + HOUR_MS, 4, 4));
    }

    #[test]
    fn an_hour_from_a_file_is_final_at_its_end_whatever_hours_are_final() {
        let mut w = HourlyWindows::new(LATENESS);
        // Live events make 11:00 final: every earlier hour is final for live events.
        w.add("en", "A", 1, H0 + 2 * HOUR_MS, None);
        w.add("en", "A", 1, H0 + 3 * HOUR_MS + 10 * MIN, None);
        assert_eq!(w.close_due().len(), 1);
        assert_eq!(w.add("de", "X", 1, H0, None), Added::Late, "no live window for 09:00 any more");
        // A file of 09:00 is counted anyway, and final at its end only.
        assert_eq!(w.begin_file(H0, "b1", false), Begun::Started { replaced: false });
        assert!(matches!(w.add_file("de", "X", 5, H0, "b1"), Added::Counted { first: true, .. }));
        assert!(matches!(w.add_file("de", "X", 2, H0, "b1"), Added::Counted { first: false, .. }));
        assert_eq!(w.add_file("de", "Y", 9, H0, "b0"), Added::Stale, "another batch's record");
        assert_eq!(w.add("de", "Z", 1, H0 + MIN, None), Added::Late, "live events of a file's hour are late");
        assert!(w.close_all().iter().all(|c| c.hour_start != H0), "idleness does not close a file's hour");
        let (closed, seen) = w.end_file(H0, "b1").expect("its batch");
        assert_eq!((closed.len(), count(&closed[0], "X"), closed[0].window.total_views, seen), (1, 7, 7, 2));
        // The same hour again is skipped: its records are stale, its end changes nothing.
        assert_eq!(w.begin_file(H0, "b2", false), Begun::AlreadyFinal);
        assert_eq!(w.add_file("de", "X", 5, H0, "b2"), Added::Stale);
        assert!(w.end_file(H0, "b2").is_none());
        // ... unless asked to replace it.
        assert_eq!(w.begin_file(H0, "b3", true), Begun::Started { replaced: true });
        assert!(w.end_file(H0, "b3").is_some_and(|(c, n)| c.is_empty() && n == 0));
    }

    #[test]
    fn a_restarted_file_ingestion_replaces_the_partial_counts_and_an_abort_drops_them() {
        let mut w = HourlyWindows::new(LATENESS);
        let h = H0 + HOUR_MS;
        w.add("en", "live", 3, h + MIN, None);
        assert_eq!(w.begin_file(h, "c1", false), Begun::Started { replaced: true }, "the live window is dropped");
        w.add_file("en", "A", 4, h, "c1");
        w.add_file("en", "B", 1, h, "c1");
        assert_eq!(w.file_windows(), 1);
        assert_eq!(w.begin_file(h, "c2", false), Begun::Started { replaced: true });
        assert_eq!(w.add_file("en", "A", 4, h, "c1"), Added::Stale, "the replaced batch's later records");
        w.add_file("en", "A", 2, h, "c2");
        let (closed, seen) = w.end_file(h, "c2").expect("its batch");
        assert_eq!((count(&closed[0], "A"), count(&closed[0], "B"), count(&closed[0], "live"), seen), (2, 0, 0, 1));
        // An ingestion that gives up leaves the hour owned by files, empty, until its file again.
        let h2 = h + HOUR_MS;
        w.begin_file(h2, "d1", false);
        w.add_file("en", "A", 4, h2, "d1");
        assert!(!w.abort_file(h2, "d0"), "not its batch");
        assert!(w.abort_file(h2, "d1"));
        assert_eq!((w.file_windows(), w.add_file("en", "A", 4, h2, "d1")), (0, Added::Stale));
        assert_eq!(w.add("en", "A", 1, h2 + MIN, None), Added::Late);
        assert!(w.end_file(h2, "d1").is_none());
        assert_eq!(w.begin_file(h2, "d2", false), Begun::Started { replaced: false });
        w.add_file("en", "A", 1, h2, "d2");
        assert_eq!(w.end_file(h2, "d2").map(|(c, _)| count(&c[0], "A")), Some(1));
    }
}
