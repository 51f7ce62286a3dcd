//! The durable state of a pageviews task: what goes to its changelog, and how it comes back.
//!
//! # What the state is
//!
//! Everything that decides a later output, except the blacklist (its own table) and the
//! idleness clock (wall-clock, re-armed by a restart): the exact count of every title in every
//! open `(hour, domain)` window and the windows' total views; which hours are final; the newest
//! event time (the watermark); late events not yet reported; each domain's trending minutes,
//! its trending head and whether its trending view changed since it was last emitted; and when
//! trending and provisional records were last emitted (restored no later than a fresh processor
//! would have them, so a skewed clock cannot hold emissions back).
//!
//! # Layout: delta chunks, not one record per title
//!
//! A real-size hour has about 6 million distinct `(domain, title)` lines, each seen once. One
//! changelog record per title would double the records pagepulse produces and make restores read
//! millions of records. So a flush writes, per domain and per minute that received views since the
//! last flush, the views *added* since then as `(title, views)` pairs, packed into **chunks** of
//! at most [`CHUNK_BYTES`] each under a key of their own. A chunk is never rewritten: the state of a
//! window is the sum of its chunks. Flush cost is proportional to what changed since the last
//! flush (a list push per event in between, then one encoding pass), not to the state's size.
//!
//! - `m/<minute>/<domain>/<seq>`: views counted in the hourly window of the minute's hour **and**
//!   in the domain's trending minute. One chunk feeds both views on restore, so the common case
//!   writes and decodes each title once, not once per view. A minute lies in one hour, so a
//!   minute's entries sum into the hour's window.
//! - `h/<hour>/<domain>/<seq>`: views counted in the hourly window only (trending had already
//!   moved past their minute, or was full). Rare.
//! - `meta`: the rest (watermark, final hours, late counts, trending heads and flags, emission
//!   times, the next sequence number), rewritten at every flush where any of it changed (in
//!   practice every flush with input): 10-20 bytes per domain, so ~20 KB a flush for a partition
//!   holding a thousand domains.
//!
//! - `files`: the hours being ingested from files (hour, batch, records seen, and the ingestion's
//!   **base**: the first sequence number written after its `begin`) and the hours final from
//!   files (at most [`MAX_FILE_HOURS`], as gaps), rewritten when they change, deleted when empty.
//!   A restore counts in a file hour's window only its chunks from its base on: chunks written
//!   before (live views of that hour, or a replaced ingestion's) still feed trending, never the
//!   window. Views pending when an ingestion begins are written before its base is taken, and a
//!   begin deletes the hour's hourly-only chunks at once. Chunks of a file hour being ingested are
//!   kept whatever `final_before` says; those of an hour final from a file are deleted like any
//!   final hour's.
//!
//! `<seq>` is a per-partition counter (kept in `meta`; after a restore it continues after the
//! largest restored one), so chunk keys are unique and a compacted topic keeps every live chunk.
//! Values are [`crate::ops::codec`]: a version byte, kind, domain, minute or hour, seq, count, then
//! the pairs; the key repeats what the value says, and a restore checks that they agree.
//!
//! **Chunks are deleted** (tombstoned) in the flush where they stop mattering: an `h` chunk when
//! its hour is final, an `m` chunk when its hour is final *and* its minute has left the domain's
//! 60-minute trending window. Each domain remembers the sequence numbers of its live chunks per
//! minute or hour (restored too), so the deletions cost nothing to find. Deltas for a minute that
//! is already dead when the flush runs are not written at all.
//!
//! # Trade-offs
//!
//! - A title that gets views in many flush intervals of an hour has one pair per interval in the
//!   log until the hour closes, not one: the live log is (titles × flush intervals they changed
//!   in), and restore time grows with it. For dumps (each title once per hour) that is exactly one
//!   pair per title. Within one flush, repeated titles are merged (sorted by their shared
//!   allocation; skipped when every pair was its title's first view in the window, as in dumps),
//!   so a live stream costs one pair per title per flush, not per event. A stream with a hot set
//!   seen every second would call for rewriting a window as one snapshot once its chunks outgrow
//!   it (not done: no such input exists yet).
//! - An `m` chunk lives until *both* its uses are over: a minute at the end of an hour is kept
//!   about an hour after its window closed, for trending. Separate hourly and trending chunks would
//!   delete the hourly part earlier but write and decode every title twice.
//! - Pending deltas hold one `(Arc<str>, u64)` per event between flushes (the title allocation is
//!   shared, not copied); the engine flushes every `kafka.commit_interval` and after at most 256
//!   batches, which bounds them. A store only keeps them once the task restored its state (a
//!   task without durable state never calls [`PageviewsStore::restore`]).
//! - Restore sums every live chunk into fresh maps, sized up front from the chunk headers; the
//!   hourly window's title allocation is shared with the trending minute, as in processing.
//! - A value that does not decode (or whose key disagrees with it) is logged (the first
//!   `MAX_LOGGED`), counted in a summary warning and skipped: its views are lost, the rest of
//!   the state is kept (a chunk whose header decodes is still deleted when its time is over). There
//!   is no checksum: Kafka's record batches carry one. A corrupt `meta` restores the chunks with
//!   no final hours and no watermark: hours already emitted could then be emitted again (with the
//!   same counts unless late events or the blacklist changed).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use hashbrown::hash_map::EntryRef;
use hashbrown::{HashMap, HashSet};

use super::names::PIPELINE;
use super::trend::{LogSlot, Trend, TRENDING_BUCKET_MS, TRENDING_WINDOW_MS};
use crate::engine::state::{Change, Entries};
use crate::ops::codec::{put_bytes, put_i64, put_u64, Corrupt, Reader};
use crate::ops::hourly::{hour_of, FileHour, HourlyWindows, Window, HOUR_MS, MAX_FILE_HOURS};
use crate::ops::window::SlidingCounts;

/// Key of the meta record.
pub(super) const META_KEY: &[u8] = b"meta";
/// Key of the record of file hours (being ingested, and final).
pub(super) const FILES_KEY: &[u8] = b"files";
/// Format version, the first byte of every value.
const VERSION: u8 = 1;
/// Largest chunk value: well under Kafka's default 1 MB message limit, big enough that a
/// 6-million-line hour is a few hundred records.
pub const CHUNK_BYTES: usize = 256 * 1024;
/// Kind byte (and key prefix) of chunks counted in the hourly window and in trending.
const KIND_BOTH: u8 = b'm';
/// Kind byte (and key prefix) of chunks counted in the hourly window only.
const KIND_HOURLY: u8 = b'h';
/// Corrupt entries logged one by one per restore; the rest are only counted.
const MAX_LOGGED: u64 = 10;
/// Largest magnitude of a restored time (about 36 million years): hour and window arithmetic on
/// anything the store wrote stays far from overflowing, and a corrupt value cannot make it.
const MAX_TIME: i64 = 1 << 60;

/// Views counted since the last flush, one pair per event.
#[derive(Debug, Default)]
struct Pending {
    entries: Vec<(Arc<str>, u64)>,
    /// False while every entry was its title's first view in its window: then no title can
    /// repeat and merging is skipped (the common case of hourly dumps).
    repeats: bool,
}

impl Pending {
    #[inline]
    fn push(&mut self, title: Arc<str>, first: bool, views: u64) {
        self.repeats |= !first;
        self.entries.push((title, views));
    }
}

/// One domain's pending deltas and live chunks.
#[derive(Debug, Default)]
struct DomainLog {
    /// Views counted in the hourly window and trending since the last flush, by minute.
    both: BTreeMap<i64, Pending>,
    /// Views counted in the hourly window only since the last flush, by hour.
    hourly_only: BTreeMap<i64, Pending>,
    /// Sequence numbers of the live `m` chunks, by minute.
    both_chunks: BTreeMap<i64, Vec<u64>>,
    /// Sequence numbers of the live `h` chunks, by hour.
    hourly_chunks: BTreeMap<i64, Vec<u64>>,
    /// Views counted in both before a file ingestion of their hour began, by minute: written
    /// before the ingestion's base sequence number, so a restore counts them in trending only.
    pre: Vec<(i64, Pending)>,
}

impl DomainLog {
    /// Notes `views` of `title` at `ts_ms`, counted in its hourly window (`first`: as the title's
    /// first view there) and, if `in_trending`, in trending too.
    #[inline]
    fn record(&mut self, title: Arc<str>, first: bool, ts_ms: i64, views: u64, in_trending: bool) {
        if in_trending {
            let minute = ts_ms.div_euclid(TRENDING_BUCKET_MS) * TRENDING_BUCKET_MS;
            self.both.entry(minute).or_default().push(title, first, views);
        } else {
            self.hourly_only.entry(hour_of(ts_ms)).or_default().push(title, first, views);
        }
    }

    /// Writes the pending deltas as chunks and deletes the chunks that stopped mattering:
    /// every hour before `final_before` is final (for live minutes), `hour_open` tells whether an
    /// hour's counts still matter (file hours are open or final whatever `final_before` says),
    /// `file_open` whether it is being ingested from a file, trending starts at minute
    /// `trend_start`.
    #[allow(clippy::too_many_arguments)]
    fn flush(
        &mut self,
        domain: &str,
        final_before: i64,
        hour_open: &dyn Fn(i64) -> bool,
        file_open: &dyn Fn(i64) -> bool,
        trend_start: i64,
        next_seq: &mut u64,
        out: &mut Vec<Change>,
    ) {
        for (minute, pending) in std::mem::take(&mut self.both) {
            if minute < final_before && minute < trend_start {
                continue; // dead before it was ever written
            }
            let seqs = self.both_chunks.entry(minute).or_default();
            write_chunks(KIND_BOTH, domain, minute, pending, next_seq, seqs, out);
        }
        for (hour, pending) in std::mem::take(&mut self.hourly_only) {
            if !hour_open(hour) {
                continue;
            }
            let seqs = self.hourly_chunks.entry(hour).or_default();
            write_chunks(KIND_HOURLY, domain, hour, pending, next_seq, seqs, out);
        }
        // `final_before` is an hour boundary, so "the minute's hour is final" is `minute <
        // final_before`: both conditions cut a prefix off the minutes, except the minutes of an
        // hour being ingested from a file (open whatever `final_before` says).
        let dead_before = final_before.min(trend_start);
        let mut kept = Vec::new();
        while let Some(e) = self.both_chunks.first_entry() {
            if *e.key() >= dead_before {
                break;
            }
            let minute = *e.key();
            if file_open(hour_of(minute)) {
                kept.push(e.remove_entry());
                continue;
            }
            out.extend(e.remove().into_iter().map(|seq| (chunk_key(KIND_BOTH, minute, domain, seq), None)));
        }
        self.both_chunks.extend(kept);
        // Few hours have hourly-only chunks (a live stream's stragglers, files being ingested),
        // and file hours are not a prefix: a scan.
        self.hourly_chunks.retain(|hour, seqs| {
            let open = hour_open(*hour);
            if !open {
                out.extend(seqs.drain(..).map(|seq| (chunk_key(KIND_HOURLY, *hour, domain, seq), None)));
            }
            open
        });
    }

    /// A file ingestion of `hour` begins: the minutes of the hour pending in `both` are set
    /// apart (see `pre`), its hourly-only counts dropped (see [`DomainLog::drop_hour`]).
    fn begin_hour(&mut self, domain: &str, hour: i64, out: &mut Vec<Change>) {
        let later = self.both.split_off(&(hour + HOUR_MS));
        let within = self.both.split_off(&hour);
        self.both.extend(later);
        self.pre.extend(within);
        self.drop_hour(domain, hour, out);
    }

    /// Writes the entries set apart by [`DomainLog::begin_hour`].
    fn flush_pre(&mut self, domain: &str, next_seq: &mut u64, out: &mut Vec<Change>) {
        for (minute, pending) in std::mem::take(&mut self.pre) {
            let seqs = self.both_chunks.entry(minute).or_default();
            write_chunks(KIND_BOTH, domain, minute, pending, next_seq, seqs, out);
        }
    }

    /// Drops the hourly-only counts of `hour`: pending ones, and live chunks (their tombstones go
    /// to `out`).
    fn drop_hour(&mut self, domain: &str, hour: i64, out: &mut Vec<Change>) {
        self.hourly_only.remove(&hour);
        if let Some(seqs) = self.hourly_chunks.remove(&hour) {
            out.extend(seqs.into_iter().map(|seq| (chunk_key(KIND_HOURLY, hour, domain, seq), None)));
        }
    }

    /// Live chunks (for tests and figures).
    #[cfg(test)]
    fn live_chunks(&self) -> usize {
        self.both_chunks.values().chain(self.hourly_chunks.values()).map(Vec::len).sum()
    }
}

/// The pageviews processor's working state as a flush writes it: what [`PageviewsStore`] reads
/// of it (see the module docs).
pub struct Snapshot<'a> {
    /// The hourly windows: watermark, final hours, late counts.
    pub windows: &'a HourlyWindows,
    /// Each domain's trending view.
    pub trends: &'a HashMap<Arc<str>, Trend>,
    /// When trending records were last emitted (wall clock, ms).
    pub last_trending_ms: i64,
    /// When provisional records were last emitted (wall clock, ms).
    pub last_provisional_ms: i64,
}

/// What [`PageviewsStore::restore`] rebuilt, for the processor to take over.
pub struct Rebuilt {
    /// The newest event time.
    pub max_ts: Option<i64>,
    /// Every hour starting before this is final.
    pub final_before: i64,
    /// Late events not yet reported, by domain.
    pub late: HashMap<Arc<str>, u64>,
    /// The open windows, by hour start then domain (file hours' too).
    pub open: BTreeMap<i64, HashMap<Arc<str>, Window>>,
    /// Hours being ingested from files, and hours final from files.
    pub files: (BTreeMap<i64, FileHour>, BTreeSet<i64>),
    /// Each domain's trending view.
    pub trends: HashMap<Arc<str>, Trend>,
    /// When trending records were last emitted (`i64::MAX` if the changelog does not say).
    pub last_trending_ms: i64,
    /// When provisional records were last emitted (`i64::MAX` if the changelog does not say).
    pub last_provisional_ms: i64,
}

/// The durable state of a pageviews task: each domain's views since the last flush and its live
/// chunks, and the bookkeeping of the changelog (see the module docs). The processor owns one,
/// tells it every counted view ([`record`](PageviewsStore::record)), and hands it a
/// [`Snapshot`] of its windows and trends at each flush.
#[derive(Debug, Default)]
pub struct PageviewsStore {
    /// True once the task restored its state: only then are deltas kept.
    on: bool,
    /// Sequence number of the next chunk.
    next_seq: u64,
    /// The meta value last written (or restored): rewritten only when it changes.
    last_meta: Vec<u8>,
    /// Entries the last restore could not decode.
    corrupt: u64,
    /// Each domain's pending deltas and live chunks, by [`LogSlot`]. One per domain the processor
    /// has a trending view for (it keeps those too), so bounded by the domains seen: a domain's
    /// log is empty once its hours are final and its minutes left trending.
    logs: Vec<(Arc<str>, DomainLog)>,
    /// The slot of each domain in `logs`.
    slots: HashMap<Arc<str>, LogSlot>,
    /// Tombstones of dropped hours' chunks, written at the next flush.
    doomed: Vec<Change>,
    /// Hours whose file ingestion began since the last flush: their base is set at the flush.
    begun: Vec<i64>,
    /// The base sequence number of each hour being ingested from a file: only chunks from it on
    /// hold the ingestion's counts (earlier ones hold live views or a replaced ingestion's).
    bases: BTreeMap<i64, u64>,
    /// The `files` value last written (or restored).
    last_files: Vec<u8>,
}

impl PageviewsStore {
    /// The slot of `domain`'s log, made on first use.
    pub fn slot(&mut self, domain: &Arc<str>) -> LogSlot {
        if let Some(slot) = self.slots.get(domain) {
            return *slot;
        }
        let slot = LogSlot(self.logs.len());
        self.logs.push((domain.clone(), DomainLog::default()));
        self.slots.insert(domain.clone(), slot);
        slot
    }

    /// Notes `views` of `title` at `ts_ms` in the domain of `slot`, counted in its hourly window
    /// (`first`: as the title's first view there) and, if `in_trending`, in trending too.
    /// Nothing is kept before the task restored its state.
    #[inline]
    pub fn record(&mut self, slot: LogSlot, title: Arc<str>, first: bool, ts_ms: i64, views: u64, in_trending: bool) {
        if self.on {
            self.logs[slot.0].1.record(title, first, ts_ms, views, in_trending);
        }
    }

    /// A file ingestion of `hour` begins (or gives up, which starts the hour over empty): the
    /// hour's counts so far stop counting in its window. Pending views of the hour are written
    /// before the ingestion's base sequence number, set at the next flush, so a restore counts
    /// them in trending only; its hourly-only chunks are deleted.
    pub fn begin_hour(&mut self, hour: i64) {
        if !self.on {
            return;
        }
        for (d, log) in &mut self.logs {
            log.begin_hour(d, hour, &mut self.doomed);
        }
        self.bases.remove(&hour);
        self.begun.push(hour);
    }

    /// The file ingestion of `hour` ended: the hour is final.
    pub fn end_hour(&mut self, hour: i64) {
        self.bases.remove(&hour);
        self.begun.retain(|h| *h != hour);
    }

    /// Changelog entries the last restore skipped because they did not decode.
    pub fn corrupt_entries(&self) -> u64 {
        self.corrupt
    }

    /// Live chunks of every domain (for tests and figures).
    #[cfg(test)]
    pub fn live_chunks(&self) -> usize {
        self.logs.iter().map(|(_, log)| log.live_chunks()).sum()
    }
}

/// Merges the pairs of the same title (the same allocation: a window interns its titles).
fn merge_same_titles(entries: &mut Vec<(Arc<str>, u64)>) {
    if entries.len() < 2 {
        return;
    }
    entries.sort_unstable_by_key(|(t, _)| Arc::as_ptr(t).cast::<u8>() as usize);
    entries.dedup_by(|later, kept| {
        let same = Arc::ptr_eq(&later.0, &kept.0);
        if same {
            kept.1 = kept.1.saturating_add(later.1);
        }
        same
    });
}

/// The key of chunk `seq` of `kind` for `domain` at `start` (minute or hour).
fn chunk_key(kind: u8, start: i64, domain: &str, seq: u64) -> Vec<u8> {
    format!("{}/{start}/{domain}/{seq}", kind as char).into_bytes()
}

/// Bytes of `v` as a varint.
fn varint_len(v: u64) -> usize {
    (64 - v.leading_zeros() as usize).div_ceil(7).max(1)
}

/// Packs the pending pairs (repeated titles merged) into chunks of at most [`CHUNK_BYTES`] (one
/// pair more if a single one is larger), numbering them from `next_seq` and noting their numbers
/// in `seqs`.
fn write_chunks(
    kind: u8,
    domain: &str,
    start: i64,
    mut pending: Pending,
    next_seq: &mut u64,
    seqs: &mut Vec<u64>,
    out: &mut Vec<Change>,
) {
    if pending.repeats {
        merge_same_titles(&mut pending.entries);
    }
    // Sizes first (a title's length is in its pointer: no title is read), then one pass that
    // copies each title and releases it while it is still in cache.
    let mut sizes: Vec<(usize, usize)> = Vec::new();
    let (mut n, mut size) = (0, 0);
    for (t, v) in &pending.entries {
        let s = varint_len(t.len() as u64) + t.len() + varint_len(*v);
        if n > 0 && size + s > CHUNK_BYTES {
            sizes.push((n, size));
            (n, size) = (0, 0);
        }
        size += s;
        n += 1;
    }
    if n > 0 {
        sizes.push((n, size));
    }
    let mut pairs = pending.entries.into_iter();
    for (n, size) in sizes {
        let seq = *next_seq;
        *next_seq += 1;
        let mut v = Vec::with_capacity(size + domain.len() + 40);
        v.push(VERSION);
        v.push(kind);
        put_bytes(&mut v, domain.as_bytes());
        put_i64(&mut v, start);
        put_u64(&mut v, seq);
        put_u64(&mut v, n as u64);
        for (t, views) in pairs.by_ref().take(n) {
            put_bytes(&mut v, t.as_bytes());
            put_u64(&mut v, views);
        }
        out.push((chunk_key(kind, start, domain, seq), Some(v)));
        seqs.push(seq);
    }
}

fn put_opt(buf: &mut Vec<u8>, v: Option<i64>) {
    match v {
        None => buf.push(0),
        Some(v) => {
            buf.push(1);
            put_i64(buf, v);
        }
    }
}

/// A time in epoch milliseconds, within [`MAX_TIME`].
fn time(r: &mut Reader<'_>) -> Result<i64, Corrupt> {
    let t = r.i64()?;
    if t.abs() > MAX_TIME {
        return Err(Corrupt { at: 0, what: "a time within 2^60 ms of 1970" });
    }
    Ok(t)
}

fn opt(r: &mut Reader<'_>) -> Result<Option<i64>, Corrupt> {
    match r.u8()? {
        0 => Ok(None),
        1 => Ok(Some(time(r)?)),
        _ => Err(Corrupt { at: 0, what: "an option flag (0 or 1)" }),
    }
}

fn version(r: &mut Reader<'_>) -> Result<(), Corrupt> {
    match r.u8()? {
        VERSION => Ok(()),
        _ => Err(Corrupt { at: 0, what: "format version 1" }),
    }
}

fn end(r: &Reader<'_>) -> Result<(), Corrupt> {
    if r.is_empty() {
        Ok(())
    } else {
        Err(Corrupt { at: 0, what: "the end of the value" })
    }
}

/// The meta record, decoded.
#[derive(Debug)]
struct Meta<'a> {
    max_ts: Option<i64>,
    final_before: i64,
    next_seq: u64,
    last_trending_ms: i64,
    last_provisional_ms: i64,
    late: Vec<(&'a str, u64)>,
    /// (domain, trending head, trending changed since emitted).
    trends: Vec<(&'a str, Option<i64>, bool)>,
}

impl Meta<'_> {
    /// No meta: nothing final, nothing seen.
    fn empty() -> Self {
        Self {
            max_ts: None,
            final_before: i64::MIN,
            next_seq: 0,
            last_trending_ms: i64::MAX,
            last_provisional_ms: i64::MAX,
            late: Vec::new(),
            trends: Vec::new(),
        }
    }
}

fn encode_meta(p: &Snapshot<'_>, next_seq: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(64 + 16 * p.trends.len());
    b.push(VERSION);
    put_opt(&mut b, p.windows.max_ts());
    put_i64(&mut b, p.windows.final_before());
    put_u64(&mut b, next_seq);
    put_i64(&mut b, p.last_trending_ms);
    put_i64(&mut b, p.last_provisional_ms);
    let mut late: Vec<(&Arc<str>, u64)> = p.windows.late_counts().collect();
    late.sort_unstable();
    put_u64(&mut b, late.len() as u64);
    for (d, n) in late {
        put_bytes(&mut b, d.as_bytes());
        put_u64(&mut b, n);
    }
    let mut trends: Vec<(&Arc<str>, &Trend)> = p.trends.iter().collect();
    trends.sort_unstable_by(|a, b| a.0.cmp(b.0));
    put_u64(&mut b, trends.len() as u64);
    for (d, t) in trends {
        put_bytes(&mut b, d.as_bytes());
        put_opt(&mut b, t.counts.head());
        b.push(u8::from(t.changed()));
    }
    b
}

fn decode_meta(v: &[u8]) -> Result<Meta<'_>, Corrupt> {
    let mut r = Reader::new(v);
    version(&mut r)?;
    let mut m = Meta {
        max_ts: opt(&mut r)?,
        final_before: match r.i64()? {
            i64::MIN => i64::MIN, // no hour is final yet
            t if t.abs() <= MAX_TIME => t,
            _ => return Err(Corrupt { at: 0, what: "a time within 2^60 ms of 1970" }),
        },
        next_seq: r.u64()?,
        last_trending_ms: time(&mut r)?,
        last_provisional_ms: time(&mut r)?,
        late: Vec::new(),
        trends: Vec::new(),
    };
    for _ in 0..r.u64()? {
        m.late.push((r.str()?, r.u64()?));
    }
    for _ in 0..r.u64()? {
        let d = r.str()?;
        let head = opt(&mut r)?;
        let changed = match r.u8()? {
            0 => false,
            1 => true,
            _ => return Err(Corrupt { at: 0, what: "a flag (0 or 1)" }),
        };
        m.trends.push((d, head, changed));
    }
    end(&r)?;
    Ok(m)
}

/// The `files` value: the hours being ingested from files (hour, batch, records seen) and the
/// hours final from files (ascending, as varint gaps after the first). Empty state: the version
/// byte and two zero counts.
fn encode_files(w: &HourlyWindows, bases: &BTreeMap<i64, u64>) -> Vec<u8> {
    let (open, done) = (w.file_hours(), w.file_final_hours());
    if open.is_empty() && done.is_empty() {
        return vec![VERSION];
    }
    let mut b = Vec::with_capacity(16 + 32 * open.len() + 3 * done.len());
    b.push(VERSION);
    put_u64(&mut b, open.len() as u64);
    for (hour, f) in open {
        put_i64(&mut b, *hour);
        put_bytes(&mut b, f.batch.as_bytes());
        put_u64(&mut b, f.seen);
        put_u64(&mut b, bases.get(hour).copied().unwrap_or(0));
    }
    put_u64(&mut b, done.len() as u64);
    let mut prev = None;
    for hour in done {
        match prev {
            None => put_i64(&mut b, *hour),
            Some(p) => put_u64(&mut b, ((*hour - p) / HOUR_MS) as u64),
        }
        prev = Some(*hour);
    }
    b
}

/// File hours as [`encode_files`] wrote them, and the base of each hour being ingested.
type Files = (BTreeMap<i64, FileHour>, BTreeSet<i64>, BTreeMap<i64, u64>);

/// File hours as [`encode_files`] wrote them.
fn decode_files(v: &[u8]) -> Result<Files, Corrupt> {
    let mut r = Reader::new(v);
    version(&mut r)?;
    let (mut open, mut done, mut bases) = (BTreeMap::new(), BTreeSet::new(), BTreeMap::new());
    if r.is_empty() {
        return Ok((open, done, bases));
    }
    for _ in 0..r.u64()?.min(v.len() as u64) {
        let hour = time(&mut r)?;
        let batch: Arc<str> = r.str()?.into();
        open.insert(hour, FileHour { batch, seen: r.u64()? });
        bases.insert(hour, r.u64()?);
    }
    let mut prev: Option<i64> = None;
    for _ in 0..r.u64()?.min(MAX_FILE_HOURS as u64 * 2) {
        let hour = match prev {
            None => time(&mut r)?,
            Some(p) => {
                let gap = i64::try_from(r.u64()?).ok().filter(|g| *g > 0 && *g < MAX_TIME / HOUR_MS);
                let gap = gap.ok_or(Corrupt { at: 0, what: "a gap between final hours" })?;
                p.checked_add(gap * HOUR_MS)
                    .filter(|h| *h <= MAX_TIME)
                    .ok_or(Corrupt { at: 0, what: "a final hour" })?
            }
        };
        done.insert(hour);
        prev = Some(hour);
    }
    end(&r)?;
    Ok((open, done, bases))
}

/// One domain's trending minutes as restored: minute -> title -> views.
type Buckets = BTreeMap<i64, HashMap<Arc<str>, u64>>;

/// A chunk's header; `body` reads its `n` pairs.
struct Chunk<'a> {
    kind: u8,
    domain: &'a str,
    start: i64,
    seq: u64,
    n: usize,
    body: Reader<'a>,
}

fn decode_header<'a>(key: &[u8], v: &'a [u8]) -> Result<Chunk<'a>, Corrupt> {
    let mut r = Reader::new(v);
    version(&mut r)?;
    let kind = r.u8()?;
    if kind != KIND_BOTH && kind != KIND_HOURLY {
        return Err(Corrupt { at: 1, what: "a chunk kind (m or h)" });
    }
    let domain = r.str()?;
    let start = time(&mut r)?;
    let seq = r.u64()?;
    let n = r.u64()?;
    // Every pair takes at least two bytes: a count this large is not what the store wrote (and
    // must not size an allocation).
    if n > v.len() as u64 / 2 || domain.is_empty() {
        return Err(Corrupt { at: 0, what: "a plausible chunk header" });
    }
    if key != chunk_key(kind, start, domain, seq) {
        return Err(Corrupt { at: 0, what: "a value that matches its key" });
    }
    Ok(Chunk { kind, domain, start, seq, n: n as usize, body: r })
}

/// Decodes every pair of `chunk` into `into` (cleared first), or fails without a partial result.
fn decode_pairs<'a>(chunk: &mut Chunk<'a>, into: &mut Vec<(&'a str, u64)>) -> Result<(), Corrupt> {
    into.clear();
    into.reserve(chunk.n);
    for _ in 0..chunk.n {
        into.push((chunk.body.str()?, chunk.body.u64()?));
    }
    end(&chunk.body)
}

/// Adds `views` of `title` to `counts`; returns the stored title when `want_key`.
#[inline]
fn add_count(counts: &mut HashMap<Arc<str>, u64>, title: &str, views: u64, want_key: bool) -> Option<Arc<str>> {
    match counts.entry_ref(title) {
        EntryRef::Occupied(mut e) => {
            *e.get_mut() = e.get().saturating_add(views);
            want_key.then(|| e.key().clone())
        }
        EntryRef::Vacant(e) => {
            let key: Arc<str> = Arc::from(title);
            let out = want_key.then(|| key.clone());
            e.insert_with_key(key, views);
            out
        }
    }
}

impl PageviewsStore {
    /// Moves the changes since the last call into `out`, given the processor's state `now` (see
    /// the module docs): each domain's new chunks and dead chunks' tombstones, then the meta
    /// record if it changed.
    pub fn take_changes(&mut self, now: &Snapshot<'_>, out: &mut Vec<Change>) {
        if !self.on {
            // Only a restored processor tracks its deltas (the engine restores every durable
            // task before its first input); whatever was processed before is not in the log.
            self.on = true;
            if now.windows.open_windows() > 0 || !now.trends.is_empty() {
                tracing::warn!(
                    pipeline = PIPELINE,
                    "state taken before it was restored: earlier views are missing from the changelog"
                );
            }
        }
        out.append(&mut self.doomed);
        let final_before = now.windows.final_before();
        let hour_open = |h: i64| now.windows.hour_open(h);
        let files = now.windows.file_hours();
        let file_open = |h: i64| files.contains_key(&h);
        let mut order: Vec<usize> = (0..self.logs.len()).collect();
        order.sort_unstable_by(|a, b| self.logs[*a].0.cmp(&self.logs[*b].0));
        if !self.begun.is_empty() {
            // Views from before the ingestions began get sequence numbers below their bases.
            for i in &order {
                let (d, log) = &mut self.logs[*i];
                log.flush_pre(d, &mut self.next_seq, out);
            }
            for hour in std::mem::take(&mut self.begun) {
                self.bases.insert(hour, self.next_seq);
            }
        }
        for i in order {
            let (d, log) = &mut self.logs[i];
            // Without a head nothing was counted in trending: no minute is needed for it.
            let trend_start = now.trends.get(d).and_then(|t| t.counts.bounds()).map_or(i64::MAX, |(s, _)| s);
            log.flush(d, final_before, &hour_open, &file_open, trend_start, &mut self.next_seq, out);
        }
        let meta = encode_meta(now, self.next_seq);
        if meta != self.last_meta {
            out.push((META_KEY.to_vec(), Some(meta.clone())));
            self.last_meta = meta;
        }
        self.bases.retain(|h, _| files.contains_key(h));
        let files = encode_files(now.windows, &self.bases);
        let (empty, was_empty) = (files.len() <= 1, self.last_files.len() <= 1);
        if files != self.last_files && !(empty && was_empty) {
            out.push((FILES_KEY.to_vec(), (!empty).then(|| files.clone())));
        }
        self.last_files = files;
    }

    /// Logs and counts an entry that does not decode.
    fn corrupt_entry(&mut self, key: &[u8], why: &Corrupt) {
        self.corrupt += 1;
        if self.corrupt <= MAX_LOGGED {
            let key = String::from_utf8_lossy(&key[..key.len().min(200)]);
            tracing::warn!(pipeline = PIPELINE, %key, error = %why, "corrupt state entry skipped");
        }
    }

    /// Rebuilds the processor's windows and trends from the live changelog entries (see the
    /// module docs), keeping each domain's live chunks; from now on it keeps deltas. Trending
    /// views track at most `trending_max_titles` titles each. The processor takes the result
    /// over, then calls [`restored`](PageviewsStore::restored).
    pub fn restore(&mut self, entries: Entries, trending_max_titles: usize) -> Rebuilt {
        self.on = true;
        self.corrupt = 0;
        let meta = match entries.get(META_KEY).map(|v| decode_meta(v)) {
            None => Meta::empty(),
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                self.corrupt_entry(META_KEY, &e);
                Meta::empty()
            }
        };
        let (file_open, file_final, bases) = match entries.get(FILES_KEY).map(|v| decode_files(v)) {
            None => Default::default(),
            Some(Ok(f)) => f,
            Some(Err(e)) => {
                self.corrupt_entry(FILES_KEY, &e);
                Default::default()
            }
        };
        self.last_files = entries.get(FILES_KEY).cloned().unwrap_or_default();
        // Domains are few: one allocation each, shared by every map that names them.
        let mut domains: HashSet<Arc<str>> = HashSet::new();
        let mut intern = |d: &str| -> Arc<str> { domains.get_or_insert_with(d, |s: &str| Arc::from(s)).clone() };
        let heads: HashMap<&str, i64> = meta.trends.iter().filter_map(|(d, h, _)| Some((*d, (*h)?))).collect();
        let trending_live = |domain: &str, minute: i64| {
            heads.get(domain).is_some_and(|h| minute <= *h && minute > *h - TRENDING_WINDOW_MS)
        };
        // Whether a chunk's views count in its hour's window: an hour being ingested from a file
        // counts the chunks from its ingestion's base on, an hour final from a file none, a live
        // hour all until it is final.
        let hourly_live = |start: i64, seq: u64| {
            let hour = hour_of(start);
            match bases.get(&hour) {
                Some(base) => seq >= *base,
                None => hour >= meta.final_before && !file_final.contains(&hour) && !file_open.contains_key(&hour),
            }
        };

        // Headers first: they size every map before the first insert.
        let mut chunks = Vec::with_capacity(entries.len());
        let mut corrupt = Vec::new();
        for (k, v) in &entries {
            if k.as_slice() == META_KEY {
                continue;
            }
            match decode_header(k, v) {
                Ok(c) => chunks.push(c),
                Err(e) => corrupt.push((k.as_slice(), e)),
            }
        }
        let mut window_sizes: HashMap<(i64, &str), usize> = HashMap::new();
        let mut bucket_sizes: HashMap<(&str, i64), usize> = HashMap::new();
        for c in &chunks {
            if hourly_live(c.start, c.seq) {
                *window_sizes.entry((hour_of(c.start), c.domain)).or_default() += c.n;
            }
            if c.kind == KIND_BOTH && trending_live(c.domain, c.start) {
                *bucket_sizes.entry((c.domain, c.start)).or_default() += c.n;
            }
        }

        let mut open: BTreeMap<i64, HashMap<Arc<str>, Window>> = BTreeMap::new();
        let mut buckets: HashMap<Arc<str>, Buckets> = HashMap::new();
        let mut logs: HashMap<Arc<str>, DomainLog> = HashMap::new();
        // Titles of trending minutes whose hour is final (no window to share them with).
        let mut trend_titles: HashMap<Arc<str>, HashSet<Arc<str>>> = HashMap::new();
        let mut pairs: Vec<(&str, u64)> = Vec::new();
        let mut max_seq = None;
        for mut c in chunks {
            // Tracked even if its pairs are corrupt: it is deleted when its time is over.
            let domain = intern(c.domain);
            max_seq = max_seq.max(Some(c.seq));
            let log = logs.entry_ref(&domain).or_default();
            let chunks = if c.kind == KIND_BOTH { &mut log.both_chunks } else { &mut log.hourly_chunks };
            chunks.entry(c.start).or_default().push(c.seq);
            if let Err(e) = decode_pairs(&mut c, &mut pairs) {
                let key = chunk_key(c.kind, c.start, c.domain, c.seq);
                self.corrupt_entry(&key, &e);
                continue;
            }
            let mut window = hourly_live(c.start, c.seq).then(|| {
                let hour = hour_of(c.start);
                let size = window_sizes.get(&(hour, c.domain)).copied().unwrap_or(0);
                open.entry(hour)
                    .or_default()
                    .entry_ref(&domain)
                    .or_insert_with(|| Window { total_views: 0, counts: HashMap::with_capacity(size) })
            });
            let mut bucket = (c.kind == KIND_BOTH && trending_live(c.domain, c.start)).then(|| {
                let size = bucket_sizes.get(&(c.domain, c.start)).copied().unwrap_or(0);
                buckets.entry_ref(&domain).or_default().entry(c.start).or_insert_with(|| HashMap::with_capacity(size))
            });
            let titles = trend_titles.entry_ref(&domain).or_default();
            for &(title, views) in &pairs {
                let shared = window.as_deref_mut().and_then(|w| {
                    w.total_views = w.total_views.saturating_add(views);
                    add_count(&mut w.counts, title, views, bucket.is_some())
                });
                if let Some(b) = bucket.as_deref_mut() {
                    match b.entry_ref(title) {
                        EntryRef::Occupied(mut e) => *e.get_mut() = e.get().saturating_add(views),
                        EntryRef::Vacant(e) => {
                            let key = shared
                                .unwrap_or_else(|| titles.get_or_insert_with(title, |s: &str| Arc::from(s)).clone());
                            e.insert_with_key(key, views);
                        }
                    }
                }
            }
        }
        drop(trend_titles);
        for (k, e) in corrupt {
            self.corrupt_entry(k, &e);
        }

        let late = meta.late.iter().map(|(d, n)| (intern(d), *n)).collect();
        let mut trends = HashMap::new();
        let mut flags: HashMap<Arc<str>, (Option<i64>, bool)> =
            meta.trends.iter().map(|(d, h, changed)| (intern(d), (*h, *changed))).collect();
        for d in logs.keys().chain(buckets.keys()) {
            flags.entry_ref(d).or_insert((None, false));
        }
        for (domain, (head, changed)) in flags {
            let counts = SlidingCounts::restored(
                TRENDING_WINDOW_MS,
                TRENDING_BUCKET_MS,
                trending_max_titles,
                head,
                buckets.remove(&domain).unwrap_or_default(),
            );
            // Only "changed since emitted" matters, not how often.
            let emitted_version = if changed { counts.version().wrapping_sub(1) } else { counts.version() };
            let log = self.slot(&domain);
            if let Some(restored) = logs.remove(&domain) {
                self.logs[log.0].1 = restored;
            }
            trends.insert(domain, Trend { counts, emitted_version, log });
        }
        self.next_seq = meta.next_seq.max(max_seq.map_or(0, |s| s + 1));
        self.bases = bases;
        self.begun.clear();
        if self.corrupt > 0 {
            tracing::warn!(pipeline = PIPELINE, corrupt = self.corrupt, "state restored without its corrupt entries");
        }
        Rebuilt {
            max_ts: meta.max_ts,
            final_before: meta.final_before,
            late,
            open,
            files: (file_open, file_final),
            trends,
            last_trending_ms: meta.last_trending_ms,
            last_provisional_ms: meta.last_provisional_ms,
        }
    }

    /// The processor took over what [`restore`](PageviewsStore::restore) rebuilt and is now in
    /// state `now`: that is what the changelog holds, so the next flush rewrites the meta record
    /// only when something changes.
    pub fn restored(&mut self, now: &Snapshot<'_>) {
        self.last_meta = encode_meta(now, self.next_seq);
        self.last_files = encode_files(now.windows, &self.bases);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_len_matches_the_codec() {
        for v in [0, 1, 127, 128, 16_383, 16_384, u32::MAX as u64, u64::MAX] {
            let mut b = Vec::new();
            put_u64(&mut b, v);
            assert_eq!(varint_len(v), b.len(), "{v}");
        }
    }

    #[test]
    fn chunks_stay_under_the_limit_and_merge_repeated_titles() {
        let titles: Vec<Arc<str>> = (0..40_000).map(|i| Arc::from(format!("Title_{i:08}"))).collect();
        let mut entries: Vec<(Arc<str>, u64)> = titles.iter().map(|t| (t.clone(), 1)).collect();
        entries.extend(titles.iter().take(10).map(|t| (t.clone(), 2)));
        let (mut seq, mut seqs, mut out) = (7, Vec::new(), Vec::new());
        write_chunks(KIND_BOTH, "en", 60_000, Pending { entries, repeats: true }, &mut seq, &mut seqs, &mut out);
        assert!(out.len() > 1, "{} chunks", out.len());
        assert_eq!(seqs, (7..seq).collect::<Vec<_>>());
        let (mut total, mut pairs_seen) = (0, 0);
        for (k, v) in &out {
            let v = v.as_deref().expect("a value");
            assert!(v.len() <= CHUNK_BYTES + 64);
            assert!(k[0] != 0, "keys never start with a zero byte");
            let mut c = decode_header(k, v).expect("decodes");
            let mut pairs = Vec::new();
            decode_pairs(&mut c, &mut pairs).expect("decodes");
            total += pairs.iter().map(|p| p.1).sum::<u64>();
            pairs_seen += pairs.len();
        }
        assert_eq!((pairs_seen, total), (40_000, 40_020), "one pair per title");
    }

    #[test]
    fn a_flush_deletes_chunks_once_both_uses_are_over() {
        const H: i64 = 1_795_424_400_000;
        const M: i64 = TRENDING_BUCKET_MS;
        let mut log = DomainLog::default();
        let t: Arc<str> = Arc::from("a");
        log.record(t.clone(), true, H + 59 * M, 1, true);
        log.record(t.clone(), false, H + 5 * M, 1, false);
        let (mut seq, mut out) = (0, Vec::new());
        log.flush("en", i64::MIN, &|_| true, &|_| false, H, &mut seq, &mut out);
        assert_eq!(out.iter().filter(|c| c.1.is_some()).count(), 2);
        assert_eq!(log.live_chunks(), 2);
        // The hour is final: the hourly-only chunk goes, the trending minute stays.
        out.clear();
        log.flush("en", H + HOUR, &|h| h >= H + HOUR, &|_| false, H + 30 * M, &mut seq, &mut out);
        assert_eq!(out, vec![(chunk_key(KIND_HOURLY, H, "en", 1), None)]);
        // Trending moved past minute 59 as well.
        out.clear();
        log.flush("en", H + HOUR, &|h| h >= H + HOUR, &|_| false, H + 60 * M, &mut seq, &mut out);
        assert_eq!(out, vec![(chunk_key(KIND_BOTH, H + 59 * M, "en", 0), None)]);
        assert_eq!(log.live_chunks(), 0);
        // Deltas of a minute that is already dead are not written.
        out.clear();
        log.record(t, false, H + 59 * M, 1, true);
        log.flush("en", H + HOUR, &|h| h >= H + HOUR, &|_| false, H + 60 * M, &mut seq, &mut out);
        assert!(out.is_empty());
    }

    const HOUR: i64 = crate::ops::hourly::HOUR_MS;

    #[test]
    fn corrupt_values_are_errors_not_panics() {
        let mut v = vec![VERSION, KIND_BOTH];
        put_bytes(&mut v, b"en");
        put_i64(&mut v, 0);
        put_u64(&mut v, 3);
        put_u64(&mut v, u64::MAX); // an absurd count
        assert!(decode_header(&chunk_key(KIND_BOTH, 0, "en", 3), &v).is_err());
        assert!(decode_header(b"m/0/en/3", &[]).is_err());
        assert!(decode_header(b"m/0/en/3", &[2, b'm']).is_err());
        assert!(decode_meta(&[VERSION, 7]).is_err());
        let mut far = vec![VERSION, KIND_BOTH];
        put_bytes(&mut far, b"en");
        put_i64(&mut far, i64::MIN + 1); // hour arithmetic on this would overflow
        put_u64(&mut far, 0);
        put_u64(&mut far, 0);
        assert!(decode_header(&chunk_key(KIND_BOTH, i64::MIN + 1, "en", 0), &far).is_err());
        assert!(decode_meta(&[]).is_err());
    }
}
