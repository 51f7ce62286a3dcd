//! The pageviews pipeline's per-partition logic: decode a page view, count it in its hourly
//! window and its domain's trending view, close windows as the watermark passes, and emit
//! `pageviews.top` and `pageviews.trending`. Every counted view is also told to the
//! [`PageviewsStore`].

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hashbrown::HashMap;
use prometheus::{IntCounter, IntCounterVec};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::blacklist::Blacklist;
use super::config::PageviewsConfig;
use super::names::{JOBS, PIPELINE, TOP, TRENDING};
use super::store::{PageviewsStore, Snapshot};
use super::trend::Trend;
use crate::clock::{format_ms, Clock};
use crate::engine::state::{Change, Entries};
use crate::engine::{Emit, OutRecord, Processor, RawRecord, RecordMeta, RejectClass, Rejection};
use crate::ingest::record::{ControlKind, CONTROL_KEY, MAX_BATCH};
use crate::metrics::Metrics;
use crate::ops::hourly::{hour_of, Begun, HOUR_MS};
use crate::ops::hourly::{Added, Closed, HourlyWindows, Window};
use crate::ops::topn::top_n;
use crate::ops::window::AddOutcome;
use crate::pipelines::decode::{object, optional_str, optional_u64, required_str, rfc3339_ms, utf8_value};

/// Longest domain code accepted.
const MAX_DOMAIN: usize = 64;
/// Longest title accepted.
const MAX_TITLE: usize = 2048;
/// Earliest accepted event time: 0000-01-01T00:00:00Z.
const MIN_TS_MS: i64 = -62_167_219_200_000;
/// Latest accepted event time: 9999-12-31T23:59:59.999Z.
const MAX_TS_MS: i64 = 253_402_300_799_999;

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow, default)]
    domain: Option<&'a RawValue>,
    #[serde(borrow, default)]
    title: Option<&'a RawValue>,
    #[serde(borrow, default)]
    views: Option<&'a RawValue>,
    #[serde(borrow, default)]
    ts: Option<&'a RawValue>,
    #[serde(borrow, default)]
    batch: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ControlWire<'a> {
    control: ControlKind,
    hour: i64,
    #[serde(borrow)]
    batch: Cow<'a, str>,
    #[serde(default)]
    replace: bool,
}

/// A decoded page view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View<'a> {
    /// Domain code.
    pub domain: Cow<'a, str>,
    /// Title.
    pub title: Cow<'a, str>,
    /// Views.
    pub views: u64,
    /// Event time, epoch ms.
    pub ts_ms: i64,
    /// The file ingestion it belongs to (`None`: a live event).
    pub batch: Option<Cow<'a, str>>,
}

/// A control record of a file ingestion (see [`crate::ingest::record`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control<'a> {
    /// What it says.
    pub kind: ControlKind,
    /// Start of the hour, epoch ms.
    pub hour: i64,
    /// The ingestion's batch id.
    pub batch: Cow<'a, str>,
    /// On `begin`: count the hour again even if it is final from a file.
    pub replace: bool,
}

/// A decoded `pageviews` record: a page view, or a file ingestion's control record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageviewInput<'a> {
    /// A page view.
    View(View<'a>),
    /// A control record.
    Control(Control<'a>),
}

/// What a partition did with an hour from a file: the value of `close/<hour>/<partition>` on
/// `pageviews.jobs`, written when the file's end is processed. A backfill job reads these to know
/// when an hour is final everywhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloseAck {
    /// The hour, `YYYY-MM-DDTHH`.
    pub hour: String,
    /// The partition of `pageviews`.
    pub partition: i32,
    /// The ingestion's batch id.
    pub batch: String,
    /// `final` (this batch made the hour final), `skipped` (it was final already) or `stale`
    /// (another batch owns the hour).
    pub outcome: String,
    /// Domains given a final record.
    pub domains: u64,
    /// Records of the batch counted in this partition.
    pub records: u64,
}

/// The `pageviews.jobs` key of a partition's [`CloseAck`] for an hour.
pub fn close_key(hour_start_ms: i64, partition: i32) -> String {
    format!("close/{}/{partition}", hour_name(hour_start_ms))
}

/// An hour as `YYYY-MM-DDTHH`.
pub fn hour_name(hour_start_ms: i64) -> String {
    let t = DateTime::from_timestamp_millis(hour_start_ms).unwrap_or_default();
    t.format("%Y-%m-%dT%H").to_string()
}

/// Decodes a `pageviews` record: a control record if its key is [`CONTROL_KEY`], else a view.
pub fn decode_input(rec: &RawRecord) -> Result<PageviewInput<'_>, Rejection> {
    if rec.key.as_deref() != Some(CONTROL_KEY.as_bytes()) {
        return decode_view(rec).map(PageviewInput::View);
    }
    let w: ControlWire<'_> = serde_json::from_str(utf8_value(rec)?).map_err(|e| {
        invalid(format!(
            "a control record (key `{CONTROL_KEY}`) must be {{\"control\", \"hour\", \"batch\", \"replace\"}}: {e}"
        ))
    })?;
    if w.hour.rem_euclid(HOUR_MS) != 0 || !(MIN_TS_MS..=MAX_TS_MS).contains(&w.hour) {
        return Err(invalid(format!("field `hour` must be the start of an hour in epoch ms, got {}", w.hour)));
    }
    let batch = checked("batch", w.batch, MAX_BATCH)?;
    Ok(PageviewInput::Control(Control { kind: w.control, hour: w.hour, batch, replace: w.replace }))
}

fn invalid(message: impl Into<String>) -> Rejection {
    Rejection::new(RejectClass::InvalidValue, message)
}

fn checked<'a>(name: &str, v: Cow<'a, str>, max: usize) -> Result<Cow<'a, str>, Rejection> {
    if v.is_empty() {
        return Err(invalid(format!("field `{name}` must not be empty")));
    }
    if v.len() > max {
        return Err(Rejection::new(RejectClass::TooLarge, format!("field `{name}` must be at most {max} bytes")));
    }
    Ok(v)
}

/// Decodes and validates a `pageviews` record.
pub fn decode_view(rec: &RawRecord) -> Result<View<'_>, Rejection> {
    let wire: Wire<'_> = object(utf8_value(rec)?)?;
    let domain = checked("domain", required_str("domain", wire.domain)?, MAX_DOMAIN)?;
    let title = checked("title", required_str("title", wire.title)?, MAX_TITLE)?;
    let batch = match optional_str("batch", wire.batch)? {
        Some(b) => Some(checked("batch", b, MAX_BATCH)?),
        None => None,
    };
    let views = optional_u64("views", wire.views)?.unwrap_or(1);
    if views == 0 {
        return Err(invalid("field `views` must be a positive integer, got 0"));
    }
    let ts_ms = match wire.ts {
        None => return Err(Rejection::new(RejectClass::MissingField, "field `ts` is missing")),
        Some(r) if r.get() == "null" => return Err(Rejection::new(RejectClass::MissingField, "field `ts` is null")),
        Some(r) if r.get().starts_with('"') => rfc3339_ms("ts", &required_str("ts", Some(r))?)?,
        Some(r) => r.get().parse::<i64>().map_err(|_| {
            invalid(format!("field `ts` must be an RFC 3339 string or epoch milliseconds, got {}", r.get()))
        })?,
    };
    // Years 0..=9999: window arithmetic near the ends of i64 would overflow.
    if !(MIN_TS_MS..=MAX_TS_MS).contains(&ts_ms) {
        return Err(invalid(format!("field `ts` must be between years 0 and 9999, got {ts_ms}")));
    }
    if let Some(key) = rec.key.as_deref() {
        if key != domain.as_bytes() {
            return Err(invalid(format!(
                "key \"{}\" must be the domain (\"{domain}\"): a domain's views must share a partition",
                String::from_utf8_lossy(key)
            )));
        }
    } else {
        return Err(Rejection::new(
            RejectClass::MissingField,
            "key is missing: `pageviews` records are keyed by domain",
        ));
    }
    Ok(View { domain, title, views, ts_ms, batch })
}

/// One ranked article.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Article {
    /// 1-based rank.
    pub rank: usize,
    /// Title.
    pub title: String,
    /// Views.
    pub views: u64,
}

/// A `pageviews.top` value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HourTop {
    /// Domain.
    pub domain: String,
    /// Start of the hour, RFC 3339 UTC.
    pub hour_start: String,
    /// Whether the window is closed.
    #[serde(rename = "final")]
    pub is_final: bool,
    /// Every view of the domain in the hour (blacklisted pairs included).
    pub total_views: u64,
    /// Late events of the domain since its previous record.
    pub late_events: u64,
    /// The top articles.
    pub articles: Vec<Article>,
}

/// A `pageviews.trending` value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainTrending {
    /// Domain.
    pub domain: String,
    /// Inclusive start of the window.
    pub window_start: String,
    /// Exclusive end of the window.
    pub window_end: String,
    /// The top articles.
    pub articles: Vec<Article>,
}

/// The `pageviews.top` key of a window.
pub fn top_key(domain: &str, hour_start_ms: i64) -> String {
    let t = DateTime::from_timestamp_millis(hour_start_ms).unwrap_or_default();
    format!("{domain}|{}", t.format("%Y-%m-%dT%H"))
}

/// The best `n` of `counts`, blacklisted titles excluded, ties by title ascending.
pub fn rank(counts: &HashMap<Arc<str>, u64>, n: usize, excluded: &HashSet<Box<str>>) -> Vec<Article> {
    rank_items(counts.iter().map(|(t, c)| (t, *c)), n, excluded)
}

/// The best `n` of `(title, views)` pairs, blacklisted titles excluded, ranked from 1.
fn rank_items<'a>(
    items: impl Iterator<Item = (&'a Arc<str>, u64)>,
    n: usize,
    excluded: &HashSet<Box<str>>,
) -> Vec<Article> {
    let items = items.filter(|(t, _)| excluded.is_empty() || !excluded.contains(&***t));
    top_n(items, n)
        .into_iter()
        .enumerate()
        .map(|(i, r)| Article { rank: i + 1, title: r.key.to_string(), views: r.count })
        .collect()
}

/// The per-partition pageviews processor.
pub struct PageviewsProcessor {
    windows: HourlyWindows,
    trends: HashMap<Arc<str>, Trend>,
    blacklist: Arc<Blacklist>,
    top_n: usize,
    trending_top_n: usize,
    trending_max_titles: usize,
    idle_timeout: Duration,
    provisional_interval: Option<Duration>,
    trending_interval: Duration,
    last_input_ms: i64,
    /// Records since the last tick: the idleness clock advances per tick, not per record.
    inputs_since_tick: u64,
    /// The last tick at which any pageviews partition of this instance had input.
    instance_input_ms: Arc<AtomicI64>,
    last_provisional_ms: i64,
    last_trending_ms: i64,
    late: IntCounter,
    over_capacity: IntCounter,
    stale: IntCounter,
    file_hours: IntCounterVec,
    /// This task's partition of `pageviews` (named in its close acknowledgements).
    partition: i32,
    /// The durable state: views since the last flush, live chunks (see [`PageviewsStore`]).
    store: PageviewsStore,
}

impl PageviewsProcessor {
    /// A processor with the pipeline's config, ranking against `blacklist`; `clock` starts the
    /// idleness and emission clocks (ticks carry the time after that).
    ///
    /// `activity` is shared by every pageviews task of the instance: a partition counts as idle
    /// only when no pageviews partition of this instance had input for `idle_timeout`. A consumer
    /// serves partitions in turns, so while a backlog is read one partition can go without
    /// records for seconds; on its own clock it would close its windows early and turn the rest
    /// of the hour into late events.
    pub fn new(
        cfg: &PageviewsConfig,
        blacklist: Arc<Blacklist>,
        activity: Arc<AtomicI64>,
        metrics: &Metrics,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let now = clock.now().timestamp_millis();
        activity.fetch_max(now, Ordering::Relaxed);
        Self {
            windows: HourlyWindows::new(i64::try_from(cfg.allowed_lateness.as_millis()).unwrap_or(i64::MAX)),
            trends: HashMap::new(),
            blacklist,
            top_n: cfg.top_n,
            trending_top_n: cfg.trending_top_n,
            trending_max_titles: cfg.trending_max_titles,
            idle_timeout: cfg.idle_timeout,
            provisional_interval: cfg.provisional_interval,
            trending_interval: cfg.trending_interval,
            last_input_ms: now,
            inputs_since_tick: 0,
            instance_input_ms: activity,
            last_provisional_ms: now,
            last_trending_ms: now,
            late: metrics.window_ignored.with_label_values(&[PIPELINE, "late"]),
            over_capacity: metrics.window_ignored.with_label_values(&[PIPELINE, "over_capacity"]),
            stale: metrics.window_ignored.with_label_values(&[PIPELINE, "stale_file_record"]),
            file_hours: metrics.pageviews_file_hours.clone(),
            partition: 0,
            store: PageviewsStore::default(),
        }
    }

    /// The processor of partition `p` of `pageviews` (named in its close acknowledgements).
    pub fn for_partition(mut self, p: i32) -> Self {
        self.partition = p;
        self
    }

    /// Handles a file ingestion's control record (see [`HourlyWindows::begin_file`]).
    pub fn control(&mut self, c: &Control<'_>, out: &mut Emit<()>) {
        match c.kind {
            ControlKind::Begin => match self.windows.begin_file(c.hour, &c.batch, c.replace) {
                Begun::Started { replaced } => {
                    if replaced {
                        self.file_hours.with_label_values(&["replaced"]).inc();
                    }
                    // Live views of the hour and a replaced batch's views are no longer its counts.
                    self.store.begin_hour(c.hour);
                }
                Begun::AlreadyFinal => self.file_hours.with_label_values(&["skipped"]).inc(),
            },
            ControlKind::End => {
                let (outcome, domains, records) = match self.windows.end_file(c.hour, &c.batch) {
                    Some((closed, seen)) => {
                        self.store.end_hour(c.hour);
                        let n = closed.len() as u64;
                        self.emit_closed(closed, out);
                        self.file_hours.with_label_values(&["final"]).inc();
                        ("final", n, seen)
                    }
                    None if self.windows.file_final_hours().contains(&c.hour) => ("skipped", 0, 0),
                    None => ("stale", 0, 0),
                };
                let ack = CloseAck {
                    hour: hour_name(c.hour),
                    partition: self.partition,
                    batch: c.batch.to_string(),
                    outcome: outcome.into(),
                    domains,
                    records,
                };
                let value = serde_json::to_vec(&ack).expect("plain struct");
                out.record(OutRecord::new(JOBS, close_key(c.hour, self.partition), value));
            }
            ControlKind::Abort => {
                if self.windows.abort_file(c.hour, &c.batch) {
                    self.store.begin_hour(c.hour);
                    self.file_hours.with_label_values(&["aborted"]).inc();
                }
            }
        }
    }

    fn top_record(&mut self, hour_start: i64, domain: &str, window: &Window, is_final: bool) -> OutRecord {
        let excluded = self.blacklist.titles(domain);
        let value = HourTop {
            domain: domain.to_string(),
            hour_start: format_ms(hour_start),
            is_final,
            total_views: window.total_views,
            late_events: self.windows.take_late(domain),
            articles: rank(&window.counts, self.top_n, &excluded),
        };
        OutRecord::new(TOP, top_key(domain, hour_start), serde_json::to_vec(&value).expect("plain struct"))
    }

    fn emit_closed(&mut self, closed: Vec<Closed>, out: &mut Emit<()>) {
        for c in closed {
            let rec = self.top_record(c.hour_start, &c.domain, &c.window, true);
            out.record(rec);
        }
    }

    /// Emits the trending view of every domain whose counts changed since its last one.
    pub fn emit_trending(&mut self, out: &mut Emit<()>) {
        let mut domains: Vec<&Arc<str>> = self.trends.keys().collect();
        domains.sort();
        let mut recs = Vec::new();
        for d in domains {
            let t = &self.trends[d];
            if t.counts.version() == t.emitted_version {
                continue;
            }
            let Some((start, end)) = t.counts.bounds() else { continue };
            let articles = rank_items(t.counts.totals(), self.trending_top_n, &self.blacklist.titles(d));
            let value = DomainTrending {
                domain: d.to_string(),
                window_start: format_ms(start),
                window_end: format_ms(end),
                articles,
            };
            recs.push((d.clone(), OutRecord::new(TRENDING, d.as_bytes(), serde_json::to_vec(&value).expect("plain"))));
        }
        for (d, rec) in recs {
            if let Some(t) = self.trends.get_mut(&d) {
                t.emitted_version = t.counts.version();
            }
            out.record(rec);
        }
    }

    /// Closes every open window now (the partition went idle).
    pub fn close_idle(&mut self, out: &mut Emit<()>) {
        let closed = self.windows.close_all();
        self.emit_closed(closed, out);
    }

    /// Emits a provisional record of every open window, oldest hour first, then by domain.
    pub fn emit_provisional(&mut self, out: &mut Emit<()>) {
        let mut open: Vec<(i64, Arc<str>, Window)> =
            self.windows.open().map(|(h, d, w)| (h, d.clone(), w.clone())).collect();
        // Sorted, as final records are: a map's order would differ between two processors of the
        // same state (e.g. before and after a restore).
        open.sort_unstable_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        for (h, d, w) in open {
            let rec = self.top_record(h, &d, &w, false);
            out.record(rec);
        }
    }
}

impl Processor for PageviewsProcessor {
    type Input<'a> = PageviewInput<'a>;
    type Part = ();

    fn decode<'a>(&self, _topic: &'static str, rec: &'a RawRecord) -> Result<PageviewInput<'a>, Rejection> {
        decode_input(rec)
    }

    fn process(&mut self, input: PageviewInput<'_>, _meta: &RecordMeta, out: &mut Emit<()>) {
        self.inputs_since_tick += 1;
        let v = match input {
            PageviewInput::View(v) => v,
            PageviewInput::Control(c) => return self.control(&c, out),
        };
        let trend = match self.trends.get_mut(v.domain.as_ref()) {
            Some(t) => t,
            None => {
                let domain: Arc<str> = v.domain.as_ref().into();
                let log = self.store.slot(&domain);
                self.trends.entry(domain).or_insert_with(|| Trend::new(self.trending_max_titles, log))
            }
        };
        let added = match v.batch.as_deref() {
            None => self.windows.add(&v.domain, &v.title, v.views, v.ts_ms, None),
            Some(batch) => self.windows.add_file(&v.domain, &v.title, v.views, hour_of(v.ts_ms), batch),
        };
        match added {
            Added::Counted { title, first } => {
                let in_trending = match trend.counts.add(&title, v.ts_ms, v.views) {
                    AddOutcome::Counted => true,
                    AddOutcome::Late => false,
                    AddOutcome::OverCapacity => {
                        self.over_capacity.inc();
                        false
                    }
                };
                self.store.record(trend.log, title, first, v.ts_ms, v.views, in_trending);
            }
            Added::Late => self.late.inc(),
            Added::Stale => self.stale.inc(),
        }
        if v.batch.is_some() {
            return; // file views never move the watermark
        }
        let closed = self.windows.close_due();
        if !closed.is_empty() {
            self.emit_closed(closed, out);
        }
    }

    fn tick_interval(&self) -> Option<Duration> {
        Some(Duration::from_secs(1))
    }

    fn on_tick(&mut self, now: DateTime<Utc>, out: &mut Emit<()>) {
        let now = now.timestamp_millis();
        if self.inputs_since_tick > 0 {
            self.inputs_since_tick = 0;
            self.last_input_ms = now;
            self.instance_input_ms.fetch_max(now, Ordering::Relaxed);
        }
        let last_input = self.last_input_ms.max(self.instance_input_ms.load(Ordering::Relaxed));
        if self.windows.open_windows() > 0 && now - last_input >= self.idle_timeout.as_millis() as i64 {
            self.close_idle(out);
        }
        if let Some(every) = self.provisional_interval {
            if now - self.last_provisional_ms >= every.as_millis() as i64 {
                self.last_provisional_ms = now;
                self.emit_provisional(out);
            }
        }
        if now - self.last_trending_ms >= self.trending_interval.as_millis() as i64 {
            self.last_trending_ms = now;
            self.emit_trending(out);
        }
    }

    /// The store's changes: see [`PageviewsStore::take_changes`].
    fn take_changes(&mut self, out: &mut Vec<Change>) {
        let now = Snapshot {
            windows: &self.windows,
            trends: &self.trends,
            last_trending_ms: self.last_trending_ms,
            last_provisional_ms: self.last_provisional_ms,
        };
        self.store.take_changes(&now, out);
    }

    /// Takes over what [`PageviewsStore::restore`] rebuilds.
    fn restore(&mut self, entries: Entries, _out: &mut Emit<()>) {
        let r = self.store.restore(entries, self.trending_max_titles);
        self.windows.restore(r.max_ts, r.final_before, r.late, r.open, r.files);
        self.trends.extend(r.trends);
        // Wall-clock emission times: never later than a fresh processor's (a skewed clock must
        // not hold emissions back).
        self.last_trending_ms = self.last_trending_ms.min(r.last_trending_ms);
        self.last_provisional_ms = self.last_provisional_ms.min(r.last_provisional_ms);
        let now = Snapshot {
            windows: &self.windows,
            trends: &self.trends,
            last_trending_ms: self.last_trending_ms,
            last_provisional_ms: self.last_provisional_ms,
        };
        self.store.restored(&now);
        tracing::debug!(
            pipeline = PIPELINE,
            open_windows = self.windows.open_windows(),
            domains = self.trends.len(),
            "pageviews state restored"
        );
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::clock::ManualClock;
    use crate::config::Config;
    use crate::ops::hourly::HOUR_MS;
    use crate::pipelines::pageviews::{store, BlacklistProcessor, BLACKLIST, INPUT};

    const H0: i64 = 1_795_424_400_000; // 2026-11-23T09:00:00Z
    const MIN: i64 = 60_000;

    fn rec(domain: &str, value: serde_json::Value) -> RawRecord {
        RawRecord {
            key: Some(domain.as_bytes().to_vec()),
            value: Some(value.to_string().into_bytes()),
            offset: 0,
            timestamp_ms: None,
        }
    }

    fn processor(cfg: &PageviewsConfig) -> (PageviewsProcessor, Arc<Blacklist>, Arc<ManualClock>, Metrics) {
        let (bl, clock, m) = (Blacklist::new(), Arc::new(ManualClock::at_ms(H0)), Metrics::new());
        (PageviewsProcessor::new(cfg, bl.clone(), Arc::new(AtomicI64::new(0)), &m, clock.clone()), bl, clock, m)
    }

    fn feed(p: &mut PageviewsProcessor, domain: &str, title: &str, views: u64, ts: i64, out: &mut Emit<()>) {
        let r = rec(domain, serde_json::json!({"domain": domain, "title": title, "views": views, "ts": ts}));
        let v = p.decode(INPUT, &r).expect("valid");
        p.process(v, &RecordMeta { topic: INPUT, partition: 0, offset: 0, timestamp_ms: None }, out);
    }

    fn tops(out: &Emit<()>) -> Vec<(String, HourTop)> {
        out.records
            .iter()
            .filter(|r| r.topic == TOP)
            .map(|r| {
                (
                    String::from_utf8(r.key.clone().expect("key")).expect("utf8"),
                    serde_json::from_slice(r.value.as_deref().expect("v")).expect("json"),
                )
            })
            .collect()
    }

    #[test]
    fn decoding_follows_the_topic_rules() {
        let ok = |v: serde_json::Value| decode_view(&rec("en", v)).map(|v| (v.views, v.ts_ms));
        assert_eq!(ok(serde_json::json!({"domain": "en", "title": "A", "ts": "2026-11-23T09:00:00Z"})), Ok((1, H0)));
        assert_eq!(ok(serde_json::json!({"domain": "en", "title": "A", "views": 7, "ts": H0})), Ok((7, H0)));
        let class = |v: serde_json::Value| decode_view(&rec("en", v)).expect_err("refused").class;
        assert_eq!(
            class(serde_json::json!({"domain": "en", "title": "A", "views": 0, "ts": H0})),
            RejectClass::InvalidValue
        );
        assert_eq!(class(serde_json::json!({"domain": "en", "title": "A", "ts": 1.5})), RejectClass::InvalidValue);
        for ts in [i64::MAX, i64::MIN, MAX_TS_MS + 1] {
            assert_eq!(class(serde_json::json!({"domain": "en", "title": "A", "ts": ts})), RejectClass::InvalidValue);
        }
        assert_eq!(ok(serde_json::json!({"domain": "en", "title": "A", "ts": MAX_TS_MS})), Ok((1, MAX_TS_MS)));
        assert_eq!(
            class(serde_json::json!({"domain": "de", "title": "A", "ts": H0})),
            RejectClass::InvalidValue,
            "key is not the domain"
        );
        assert_eq!(class(serde_json::json!({"domain": "en", "title": "A"})), RejectClass::MissingField);
        let no_key = RawRecord { key: None, ..rec("en", serde_json::json!({"domain": "en", "title": "A", "ts": H0})) };
        assert_eq!(decode_view(&no_key).expect_err("no key").class, RejectClass::MissingField);
    }

    #[test]
    fn a_final_window_ranks_by_views_then_title_without_blacklisted_pairs() {
        let cfg = PageviewsConfig { top_n: 3, ..Config::default().pageviews };
        let (mut p, bl, _, _) = processor(&cfg);
        let mut out = Emit::default();
        bl.insert("en", "Main_Page");
        for (t, n) in [("Main_Page", 100), ("b", 5), ("a", 5), ("c", 5), ("d", 9), ("Ä", 5)] {
            feed(&mut p, "en", t, n, H0 + 10 * MIN, &mut out);
        }
        assert!(tops(&out).is_empty(), "open");
        feed(&mut p, "en", "x", 1, H0 + 65 * MIN, &mut out);
        let t = tops(&out);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].0, "en|2026-11-23T09");
        let top = &t[0].1;
        assert!(top.is_final);
        assert_eq!((top.total_views, top.late_events), (129, 0), "blacklisted views still count in the total");
        let ranked: Vec<(&str, u64)> = top.articles.iter().map(|a| (a.title.as_str(), a.views)).collect();
        assert_eq!(ranked, [("d", 9), ("a", 5), ("b", 5)], "ties by title, in byte order ('Ä' sorts after 'c')");
        // A late event is counted and reported in the domain's next record, never in the final one.
        let before = out.records.len();
        feed(&mut p, "en", "a", 1000, H0 + 30 * MIN, &mut out);
        assert_eq!(out.records.len(), before, "a final window never changes");
        p.close_idle(&mut out);
        let t = tops(&out);
        assert_eq!((t[1].0.as_str(), t[1].1.late_events), ("en|2026-11-23T10", 1));
    }

    #[test]
    fn idleness_closes_the_last_hour_and_provisional_records_are_opt_in() {
        let cfg =
            PageviewsConfig { provisional_interval: Some(Duration::from_secs(30)), ..Config::default().pageviews };
        let (mut p, _, _, _) = processor(&cfg);
        let mut out = Emit::default();
        feed(&mut p, "en", "a", 2, H0, &mut out); // at processor time H0
        let now = |ms| DateTime::from_timestamp_millis(H0 + ms).expect("time");
        p.on_tick(now(10_000), &mut out);
        assert!(tops(&out).is_empty());
        p.on_tick(now(31_000), &mut out);
        assert_eq!(tops(&out).iter().map(|(_, t)| t.is_final).collect::<Vec<_>>(), [false], "one provisional record");
        // The tick at 10 s saw the input: idleness counts from there.
        p.on_tick(now(69_000), &mut out);
        assert!(tops(&out).iter().all(|(_, t)| !t.is_final), "59 s without input: still open");
        p.on_tick(now(71_000), &mut out);
        let finals: Vec<_> = tops(&out).into_iter().filter(|(_, t)| t.is_final).collect();
        assert_eq!(finals.len(), 1, "closed by idleness");
        assert_eq!(finals[0].1.total_views, 2);
        p.on_tick(now(400_000), &mut out);
        assert_eq!(tops(&out).iter().filter(|(_, t)| t.is_final).count(), 1, "never twice");
    }

    #[test]
    fn a_partition_starved_while_others_deliver_is_not_idle() {
        let cfg = Config::default().pageviews;
        let (activity, bl, m) = (Arc::new(AtomicI64::new(0)), Blacklist::new(), Metrics::new());
        let clock = Arc::new(ManualClock::at_ms(H0));
        let mut quiet = PageviewsProcessor::new(&cfg, bl.clone(), activity.clone(), &m, clock.clone());
        let mut busy = PageviewsProcessor::new(&cfg, bl, activity, &m, clock);
        let (mut out_q, mut out_b) = (Emit::default(), Emit::default());
        feed(&mut quiet, "de", "a", 1, H0, &mut out_q);
        let at = |s: i64| DateTime::from_timestamp_millis(H0 + s * 1000).expect("time");
        for s in 1..=180 {
            feed(&mut busy, "en", "b", 1, H0 + s * 1000, &mut out_b);
            busy.on_tick(at(s), &mut out_b);
            quiet.on_tick(at(s), &mut out_q);
        }
        assert!(tops(&out_q).is_empty(), "three minutes without records, but the instance is busy");
        for s in 181..=260 {
            busy.on_tick(at(s), &mut out_b);
            quiet.on_tick(at(s), &mut out_q);
        }
        assert_eq!(tops(&out_q).len(), 1, "closed once the whole instance is idle");
        assert_eq!(tops(&out_b).len(), 1);
    }

    #[test]
    fn trending_covers_the_last_hour_and_is_emitted_only_on_change() {
        let (mut p, bl, _, _) = processor(&Config::default().pageviews);
        let mut out = Emit::default();
        feed(&mut p, "en", "old", 50, H0, &mut out);
        feed(&mut p, "en", "new", 5, H0 + 70 * MIN, &mut out);
        feed(&mut p, "en", "hidden", 99, H0 + 70 * MIN, &mut out);
        bl.insert("en", "hidden");
        p.emit_trending(&mut out);
        let tr: Vec<DomainTrending> = out
            .records
            .iter()
            .filter(|r| r.topic == TRENDING)
            .map(|r| serde_json::from_slice(r.value.as_deref().expect("v")).expect("json"))
            .collect();
        assert_eq!(tr.len(), 1);
        assert_eq!(tr[0].window_end, format_ms(H0 + 71 * MIN));
        assert_eq!(
            tr[0].articles.iter().map(|a| a.title.as_str()).collect::<Vec<_>>(),
            ["new"],
            "'old' left the hour, 'hidden' is blacklisted"
        );
        p.emit_trending(&mut out);
        assert_eq!(out.records.iter().filter(|r| r.topic == TRENDING).count(), 1, "unchanged: not emitted again");
    }

    /// Property: over random multi-hour, multi-domain input in order, with a random blacklist,
    /// every final record equals a brute-force count and full sort.
    #[test]
    fn final_records_equal_a_brute_force_sort_over_random_input() {
        for seed in 0..40u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let cfg = PageviewsConfig { top_n: rng.gen_range(1..8), ..Config::default().pageviews };
            let (mut p, bl, _, _) = processor(&cfg);
            let domains = ["en", "de", "fr"];
            let titles: Vec<String> = (0..rng.gen_range(3..40)).map(|i| format!("t{}", i % 17)).collect();
            let mut expected: HashMap<(String, i64), HashMap<String, u64>> = HashMap::new();
            for t in titles.iter().take(3) {
                bl.insert("en", t);
            }
            let mut out = Emit::default();
            let mut ts = H0;
            for _ in 0..rng.gen_range(50..400) {
                ts += rng.gen_range(0..3 * MIN);
                let (d, t, n) =
                    (domains[rng.gen_range(0..3)], &titles[rng.gen_range(0..titles.len())], rng.gen_range(1..20));
                feed(&mut p, d, t, n, ts, &mut out);
                *expected
                    .entry((d.to_string(), ts.div_euclid(HOUR_MS) * HOUR_MS))
                    .or_default()
                    .entry(t.clone())
                    .or_default() += n;
            }
            p.close_idle(&mut out);
            let got = tops(&out);
            assert_eq!(got.len(), expected.len(), "seed {seed}: one final record per window");
            for (key, top) in got {
                let hour = chrono::DateTime::parse_from_rfc3339(&top.hour_start).expect("time").timestamp_millis();
                let counts = &expected[&(top.domain.clone(), hour)];
                assert_eq!(key, top_key(&top.domain, hour));
                let mut all: Vec<(&String, &u64)> =
                    counts.iter().filter(|(t, _)| !bl.contains(&top.domain, t)).collect();
                all.sort_by(|a, b| b.1.cmp(a.1).then(a.0.as_bytes().cmp(b.0.as_bytes())));
                let want: Vec<(String, u64)> = all.into_iter().take(cfg.top_n).map(|(t, n)| (t.clone(), *n)).collect();
                let have: Vec<(String, u64)> = top.articles.iter().map(|a| (a.title.clone(), a.views)).collect();
                assert_eq!(have, want, "seed {seed} {key}");
                assert_eq!(top.total_views, counts.values().sum::<u64>());
            }
        }
    }

    #[test]
    fn blacklist_records_add_and_tombstones_remove() {
        let bl = Blacklist::new();
        let mut p = BlacklistProcessor::new(bl.clone());
        let meta = RecordMeta { topic: BLACKLIST, partition: 0, offset: 0, timestamp_ms: None };
        let add = RawRecord {
            key: Some(b"en Main_Page".to_vec()),
            value: Some(br#"{"domain":"en","title":"Main_Page"}"#.to_vec()),
            offset: 0,
            timestamp_ms: None,
        };
        let c = p.decode(BLACKLIST, &add).expect("valid");
        p.process(c, &meta, &mut Emit::default());
        assert!(bl.contains("en", "Main_Page") && !bl.contains("de", "Main_Page"));
        let tomb = RawRecord { value: None, ..add.clone() };
        let c = p.decode(BLACKLIST, &tomb).expect("valid");
        p.process(c, &meta, &mut Emit::default());
        assert!(!bl.contains("en", "Main_Page"));
        let bad = RawRecord { key: Some(b"en Other".to_vec()), ..add };
        assert_eq!(p.decode(BLACKLIST, &bad).expect_err("mismatch").class, RejectClass::InvalidValue);
    }

    /// Durable state: changelog flushes, restores, crashes.
    mod durable {
        use super::*;
        use crate::engine::state::{flush_records, Restored, StateBackend};
        use crate::engine::MemoryBackend;

        const T: &str = "pageviews-changelog";

        /// One thing that happens to a processor: an input record, a tick at a wall-clock time,
        /// or the idleness close.
        #[derive(Debug, Clone)]
        enum Step {
            View(&'static str, String, u64, i64),
            Tick(i64),
            Idle,
            /// A file ingestion's control record: (control, hour, batch number).
            Control(&'static str, i64, u32),
            /// A file ingestion's view: (domain, title, views, hour, batch number).
            FileView(&'static str, String, u64, i64, u32),
        }

        fn apply(p: &mut PageviewsProcessor, step: &Step, out: &mut Emit<()>) {
            match step {
                Step::View(d, t, n, ts) => feed(p, d, t, *n, *ts, out),
                Step::Tick(now) => p.on_tick(DateTime::from_timestamp_millis(*now).expect("time"), out),
                Step::Idle => p.close_idle(out),
                Step::Control(c, hour, b) => {
                    let v = serde_json::json!({"control": c, "hour": hour, "batch": format!("b{b}")});
                    let r = RawRecord { key: Some(b"!file".to_vec()), ..rec("en", v) };
                    let input = p.decode(INPUT, &r).expect("valid control");
                    p.process(input, &RecordMeta { topic: INPUT, partition: 0, offset: 0, timestamp_ms: None }, out);
                }
                Step::FileView(d, t, n, hour, b) => {
                    let v =
                        serde_json::json!({"domain": d, "title": t, "views": n, "ts": hour, "batch": format!("b{b}")});
                    let r = rec(d, v);
                    let input = p.decode(INPUT, &r).expect("valid view");
                    p.process(input, &RecordMeta { topic: INPUT, partition: 0, offset: 0, timestamp_ms: None }, out);
                }
            }
        }

        fn fresh(cfg: &PageviewsConfig, bl: &Arc<Blacklist>, now_ms: i64) -> PageviewsProcessor {
            let clock = Arc::new(ManualClock::at_ms(now_ms));
            PageviewsProcessor::new(cfg, bl.clone(), Arc::new(AtomicI64::new(0)), &Metrics::new(), clock)
        }

        /// A processor as the engine makes a durable one: built, then restored from `entries`.
        fn restored(cfg: &PageviewsConfig, bl: &Arc<Blacklist>, now_ms: i64, entries: Entries) -> PageviewsProcessor {
            let mut p = fresh(cfg, bl, now_ms);
            let mut out = Emit::default();
            p.restore(entries, &mut out);
            assert!(out.records.is_empty(), "a restore emits nothing");
            p
        }

        fn flush(
            p: &mut PageviewsProcessor,
            backend: &MemoryBackend,
            owner: u64,
            pending: &mut Vec<Change>,
            pos: usize,
        ) {
            p.take_changes(pending);
            backend.append(flush_records(T, 0, owner, pending.drain(..), Some(pos as i64)));
        }

        /// A flush cut short by a crash: its changes are written, its marker is not.
        fn torn_flush(p: &mut PageviewsProcessor, backend: &MemoryBackend, owner: u64, pending: &mut Vec<Change>) {
            p.take_changes(pending);
            let mut recs = flush_records(T, 0, owner, pending.drain(..), Some(i64::MAX));
            recs.pop();
            backend.append(recs);
        }

        fn finals(records: &[OutRecord]) -> Vec<(String, HourTop)> {
            tops(&Emit { records: records.to_vec(), parts: Vec::new() }).into_iter().filter(|t| t.1.is_final).collect()
        }

        fn random_steps(rng: &mut StdRng) -> Vec<Step> {
            let domains = ["en", "de", "fr"];
            let titles: Vec<String> = (0..rng.gen_range(3..40))
                .map(|i| format!("t{}{}", i % 17, if i % 5 == 0 { "_Ä" } else { "" }))
                .collect();
            let (mut ts, mut wall) = (H0, H0);
            let mut steps = Vec::new();
            // File ingestions: the one in progress (hour, batch), and the last batch number.
            let (mut file, mut batch, mut done_hours): (Option<(i64, u32)>, u32, Vec<i64>) = (None, 0, Vec::new());
            for _ in 0..rng.gen_range(50..400) {
                let f = rng.gen_range(0..60);
                if f < 20 {
                    let (d, t) = (domains[rng.gen_range(0..3)], titles[rng.gen_range(0..titles.len())].clone());
                    match (file, f) {
                        // A new ingestion: an hour up to 5 hours back (final or not), sometimes
                        // one already final from a file (skipped).
                        (None, 0..=1) => {
                            let hour = match done_hours.last() {
                                Some(h) if rng.gen_bool(0.2) => *h,
                                _ => crate::ops::hourly::hour_of(ts) - rng.gen_range(0..5) * HOUR_MS,
                            };
                            batch += 1;
                            file = Some((hour, batch));
                            steps.push(Step::Control("begin", hour, batch));
                        }
                        (Some((hour, b)), 2..=13) => steps.push(Step::FileView(d, t, rng.gen_range(1..50), hour, b)),
                        // A view of a replaced batch (stale) or of the live stream.
                        (Some((hour, b)), 14) => steps.push(Step::FileView(d, t, 7, hour, b.saturating_sub(1))),
                        (Some((hour, b)), 15..=16) => {
                            steps.push(Step::Control("end", hour, b));
                            done_hours.push(hour);
                            file = None;
                        }
                        // The ingestion restarts under a new batch, or gives up.
                        (Some((hour, _)), 17) => {
                            batch += 1;
                            file = Some((hour, batch));
                            steps.push(Step::Control("begin", hour, batch));
                        }
                        (Some((hour, b)), 18) => {
                            steps.push(Step::Control("abort", hour, b));
                            file = None;
                        }
                        _ => {}
                    }
                    continue;
                }
                match rng.gen_range(0..40) {
                    0..=7 => {
                        wall += 1000;
                        steps.push(Step::Tick(wall));
                    }
                    8 => steps.push(Step::Idle),
                    _ => {
                        ts += rng.gen_range(0..3 * MIN);
                        // Some events arrive out of order, by up to 90 minutes: within the
                        // lateness, late for trending only, or late for final windows.
                        let at = if rng.gen_bool(0.1) { ts - rng.gen_range(0..90 * MIN) } else { ts };
                        let (d, t) = (domains[rng.gen_range(0..3)], titles[rng.gen_range(0..titles.len())].clone());
                        steps.push(Step::View(d, t, rng.gen_range(1..20), at));
                    }
                }
            }
            steps
        }

        /// The wall-clock time a processor restored before step `i` is built at: the last tick
        /// before it (the idleness clock re-arms at a restart; the test's idle timeout is long).
        fn wall_before(steps: &[Step], i: usize) -> i64 {
            steps[..i].iter().rev().find_map(|s| if let Step::Tick(t) = s { Some(*t) } else { None }).unwrap_or(H0)
        }

        /// Property: a run cut by crashes (random flush points, random cuts, torn flushes,
        /// several generations of owners) produces exactly the outputs of an uninterrupted run.
        /// Each generation restores what the changelog holds, reprocesses the input after the
        /// last flush position (as the engine does after a crash), and must emit byte for byte
        /// what the uninterrupted processor emitted for the same steps, and never a final record
        /// of a window whose final record is covered by the state it restored.
        #[test]
        fn restored_runs_emit_exactly_what_an_uninterrupted_run_emits() {
            let (mut restores, mut torn, mut checked_finals, mut live_state) = (0, 0, 0, 0);
            let mut file_outcomes: std::collections::HashMap<String, usize> = Default::default();
            for seed in 0..60u64 {
                let mut rng = StdRng::seed_from_u64(seed);
                let base = Config::default().pageviews;
                let cfg = PageviewsConfig {
                    top_n: rng.gen_range(1..8),
                    trending_top_n: rng.gen_range(1..6),
                    allowed_lateness: Duration::from_millis(rng.gen_range(0..10 * MIN) as u64),
                    idle_timeout: Duration::from_secs(86_400),
                    provisional_interval: rng.gen_bool(0.5).then(|| Duration::from_secs(rng.gen_range(1..5))),
                    trending_interval: Duration::from_secs(rng.gen_range(1..5)),
                    trending_max_titles: rng.gen_range(3..30),
                    ..base
                };
                let steps = random_steps(&mut rng);
                let bl = Blacklist::new();
                bl.insert("en", "t1");
                bl.insert("de", "t2_Ä");

                // The uninterrupted run, with the output position before every step.
                let mut a = fresh(&cfg, &bl, H0);
                let (mut a_out, mut marks) = (Emit::default(), Vec::new());
                for s in &steps {
                    marks.push(a_out.records.len());
                    apply(&mut a, s, &mut a_out);
                }
                marks.push(a_out.records.len());
                for r in a_out.records.iter().filter(|r| r.topic == JOBS) {
                    let ack: CloseAck = serde_json::from_slice(r.value.as_deref().expect("ack")).expect("an ack");
                    *file_outcomes.entry(ack.outcome).or_default() += 1;
                }

                let backend = MemoryBackend::new();
                let mut owner = 0;
                loop {
                    owner += 1;
                    let r: Restored = backend.restore(T, 0, owner).expect("memory");
                    let start = r.position.unwrap_or(0) as usize;
                    live_state += usize::from(r.entries.len() > 1);
                    let mut p = restored(&cfg, &bl, wall_before(&steps, start), r.entries.clone());
                    // The previous owner deleted every chunk its last committed flush made
                    // useless, and a restore has nothing to write back.
                    let mut probe = Vec::new();
                    p.take_changes(&mut probe);
                    assert!(probe.is_empty(), "seed {seed} owner {owner}: {probe:?}");
                    // The repairs of a torn flush go out first, as the task sends them.
                    let mut pending = r.repairs();
                    let last = owner == 6;
                    let cut = if last { steps.len() } else { rng.gen_range(start..=steps.len()) };
                    let mut out = Emit::default();
                    for (i, s) in steps.iter().enumerate().take(cut).skip(start) {
                        if i > start && rng.gen_bool(0.15) {
                            flush(&mut p, &backend, owner, &mut pending, i);
                        }
                        apply(&mut p, s, &mut out);
                    }
                    assert_eq!(
                        out.records,
                        a_out.records[marks[start]..marks[cut]],
                        "seed {seed} owner {owner}: steps {start}..{cut} emit what the uninterrupted run did"
                    );
                    // A file ingestion may compute a live hour final already (the one case
                    // where the uninterrupted run itself emits a key final twice).
                    let mut seen = HashSet::new();
                    let again: HashSet<String> = finals(&a_out.records)
                        .into_iter()
                        .map(|(k, _)| k)
                        .filter(|k| !seen.insert(k.clone()))
                        .collect();
                    let before: HashSet<String> = finals(&a_out.records[..marks[start]])
                        .into_iter()
                        .map(|(k, _)| k)
                        .filter(|k| !again.contains(k))
                        .collect();
                    for (k, _) in finals(&out.records) {
                        assert!(!before.contains(&k), "seed {seed}: {k} was final in the restored state");
                        checked_finals += 1;
                    }
                    restores += usize::from(owner > 1);
                    if cut == steps.len() {
                        break;
                    }
                    if rng.gen_bool(0.3) {
                        torn_flush(&mut p, &backend, owner, &mut pending);
                        torn += 1;
                    }
                }
            }
            assert!(restores > 100 && torn > 30 && checked_finals > 200 && live_state > 100, "coverage: {restores} restores, {torn} torn flushes, {checked_finals} final records, {live_state} non-empty states");
            let outcome = |o: &str| file_outcomes.get(o).copied().unwrap_or(0);
            assert!(outcome("final") > 50 && outcome("skipped") > 5, "file hours covered: {file_outcomes:?}");
        }

        fn cfg() -> PageviewsConfig {
            PageviewsConfig { idle_timeout: Duration::from_secs(86_400), ..Config::default().pageviews }
        }

        fn entries(backend: &MemoryBackend, owner: u64) -> Restored {
            backend.restore(T, 0, owner).expect("memory")
        }

        #[test]
        fn a_torn_flush_is_not_counted_twice() {
            let (cfg, bl, backend) = (cfg(), Blacklist::new(), MemoryBackend::new());
            let mut b = restored(&cfg, &bl, H0, Entries::new());
            let mut pending = Vec::new();
            let mut out = Emit::default();
            feed(&mut b, "en", "a", 5, H0, &mut out);
            flush(&mut b, &backend, 1, &mut pending, 1);
            feed(&mut b, "en", "a", 7, H0 + MIN, &mut out);
            feed(&mut b, "en", "b", 1, H0 + MIN, &mut out);
            torn_flush(&mut b, &backend, 1, &mut pending);
            // The new owner restores position 1 and reprocesses the two views after it.
            let r = entries(&backend, 2);
            assert_eq!(r.position, Some(1));
            assert!(!r.torn.is_empty(), "the torn chunk is reported for repair");
            let mut c = restored(&cfg, &bl, H0, r.entries);
            feed(&mut c, "en", "a", 7, H0 + MIN, &mut out);
            feed(&mut c, "en", "b", 1, H0 + MIN, &mut out);
            let mut out = Emit::default();
            c.close_idle(&mut out);
            let t = tops(&out);
            assert_eq!(t.len(), 1);
            assert_eq!(t[0].1.total_views, 13);
            assert_eq!(
                t[0].1.articles.iter().map(|a| (a.title.as_str(), a.views)).collect::<Vec<_>>(),
                [("a", 12), ("b", 1)]
            );
        }

        #[test]
        fn a_window_final_before_the_flush_is_never_emitted_again_and_late_counts_survive() {
            let (cfg, bl, backend) = (cfg(), Blacklist::new(), MemoryBackend::new());
            let mut b = restored(&cfg, &bl, H0, Entries::new());
            let mut pending = Vec::new();
            let mut out = Emit::default();
            feed(&mut b, "en", "a", 5, H0 + 10 * MIN, &mut out);
            feed(&mut b, "de", "a", 5, H0 + 10 * MIN, &mut out);
            feed(&mut b, "en", "b", 1, H0 + 70 * MIN, &mut out); // 09:00 is final
            assert_eq!(tops(&out).len(), 2);
            feed(&mut b, "en", "a", 100, H0 + 20 * MIN, &mut out); // late
            feed(&mut b, "en", "a", 100, H0 + 30 * MIN, &mut out); // late
            flush(&mut b, &backend, 1, &mut pending, 5);
            let mut c = restored(&cfg, &bl, H0, entries(&backend, 2).entries);
            let mut out = Emit::default();
            feed(&mut c, "en", "a", 100, H0 + 40 * MIN, &mut out);
            feed(&mut c, "de", "z", 100, H0 + 59 * MIN, &mut out);
            assert!(out.records.is_empty(), "09:00 stays final: its events are late");
            c.close_idle(&mut out);
            let t = tops(&out);
            assert_eq!(t.len(), 1, "only the open 10:00 window closes: {t:?}");
            assert_eq!(t[0].0, "en|2026-11-23T10");
            assert_eq!((t[0].1.total_views, t[0].1.late_events), (1, 3), "two late events before the flush, one after");
            // Closed by idleness, flushed, restored: still final.
            flush(&mut c, &backend, 2, &mut pending, 9);
            let mut d = restored(&cfg, &bl, H0, entries(&backend, 3).entries);
            let mut out = Emit::default();
            feed(&mut d, "en", "c", 1, H0 + 61 * MIN, &mut out); // late: 10:00 was closed
            feed(&mut d, "de", "c", 1, H0 + 121 * MIN, &mut out);
            d.close_idle(&mut out);
            let t = tops(&out);
            assert_eq!(t.len(), 1, "only the new 11:00 window: {t:?}");
            assert_eq!((t[0].0.as_str(), t[0].1.total_views), ("de|2026-11-23T11", 1));
        }

        /// Hours closed and trending minutes expired leave nothing in the changelog; nothing
        /// changed writes nothing; a change writes a chunk of its own size.
        #[test]
        fn flushes_write_what_changed_and_delete_what_stopped_mattering() {
            let (cfg, bl) = (cfg(), Blacklist::new());
            let mut b = restored(&cfg, &bl, H0, Entries::new());
            let (mut pending, mut out, mut log) = (Vec::new(), Emit::default(), Vec::new());
            let live = |log: &[OutRecord]| {
                let mut r = crate::engine::state::Replay::new();
                for rec in log {
                    r.apply(rec.key.as_deref().expect("key"), rec.value.as_deref(), Some(1));
                }
                r.finish().entries
            };
            for i in 0..5000 {
                feed(&mut b, "en", &format!("title {i}"), 1, H0 + 5 * MIN, &mut out);
            }
            b.take_changes(&mut pending);
            let chunks = pending.iter().filter(|c| c.0 != store::META_KEY).count();
            assert_eq!(chunks, 1, "5000 titles fit one chunk");
            log.extend(flush_records(T, 0, 1, pending.drain(..), Some(5000)));
            b.take_changes(&mut pending);
            assert!(pending.is_empty(), "nothing changed: {pending:?}");
            feed(&mut b, "en", "title 7", 1, H0 + 5 * MIN, &mut out);
            b.take_changes(&mut pending);
            let sizes: Vec<usize> = pending.iter().map(|c| c.1.as_ref().map_or(0, Vec::len)).collect();
            assert_eq!(pending.len(), 2, "one chunk and the meta record");
            assert!(sizes.iter().all(|s| *s < 100), "{sizes:?}");
            log.extend(flush_records(T, 0, 1, pending.drain(..), Some(5001)));
            assert_eq!(live(&log).len(), 3);
            // Three hours later the hour is final and its minute has left trending.
            feed(&mut b, "en", "x", 1, H0 + 3 * HOUR_MS, &mut out);
            b.take_changes(&mut pending);
            assert_eq!(pending.iter().filter(|c| c.1.is_none()).count(), 2, "both chunks deleted");
            log.extend(flush_records(T, 0, 1, pending.drain(..), Some(5002)));
            let live = live(&log);
            assert_eq!(live.len(), 2, "the meta and the new view's chunk: {:?}", live.keys().collect::<Vec<_>>());
        }

        #[test]
        fn trending_is_restored_with_its_changed_flag() {
            let (cfg, bl, backend) = (cfg(), Blacklist::new(), MemoryBackend::new());
            let mut b = restored(&cfg, &bl, H0, Entries::new());
            let (mut pending, mut out) = (Vec::new(), Emit::default());
            feed(&mut b, "en", "a", 3, H0, &mut out);
            feed(&mut b, "en", "b", 2, H0 + 30 * MIN, &mut out);
            feed(&mut b, "de", "c", 2, H0 + 30 * MIN, &mut out);
            b.emit_trending(&mut out);
            feed(&mut b, "de", "d", 9, H0 + 31 * MIN, &mut out);
            flush(&mut b, &backend, 1, &mut pending, 4);
            let mut c = restored(&cfg, &bl, H0, entries(&backend, 2).entries);
            let (mut want, mut got) = (Emit::default(), Emit::default());
            b.emit_trending(&mut want);
            c.emit_trending(&mut got);
            assert_eq!(got.records, want.records, "only `de` changed since its last emission");
            assert_eq!(got.records.len(), 1);
            // Both moved on by an hour: the same expiries.
            feed(&mut b, "en", "a", 1, H0 + 61 * MIN, &mut want);
            feed(&mut c, "en", "a", 1, H0 + 61 * MIN, &mut got);
            b.emit_trending(&mut want);
            c.emit_trending(&mut got);
            assert_eq!(got.records, want.records);
        }

        #[test]
        fn corrupt_entries_are_skipped_and_counted() {
            let (cfg, bl, backend) = (cfg(), Blacklist::new(), MemoryBackend::new());
            let mut b = restored(&cfg, &bl, H0, Entries::new());
            let (mut pending, mut out) = (Vec::new(), Emit::default());
            feed(&mut b, "en", "a", 3, H0, &mut out);
            feed(&mut b, "de", "a", 4, H0, &mut out);
            flush(&mut b, &backend, 1, &mut pending, 2);
            let mut live = entries(&backend, 2).entries;
            let de = live.keys().find(|k| String::from_utf8_lossy(k).contains("/de/")).expect("de's chunk").clone();
            let v = live.get_mut(&de).expect("present");
            v.truncate(v.len() - 1); // cut short
            live.insert(b"m/0/en/99".to_vec(), vec![1, b'm', 0xff]);
            live.insert(b"zzz".to_vec(), b"not ours".to_vec());
            let mut c = restored(&cfg, &bl, H0, live.clone());
            assert_eq!(c.store.corrupt_entries(), 3);
            c.close_idle(&mut out);
            let t = finals(&out.records);
            assert_eq!(
                t.iter().map(|(k, t)| (k.as_str(), t.total_views)).collect::<Vec<_>>(),
                [("en|2026-11-23T09", 3)]
            );
            // A corrupt meta: the chunks are still restored.
            live.insert(store::META_KEY.to_vec(), vec![1, 2, 3]);
            let mut d = restored(&cfg, &bl, H0, live);
            assert_eq!(d.store.corrupt_entries(), 4);
            let mut out = Emit::default();
            d.close_idle(&mut out);
            assert_eq!(finals(&out.records).len(), 1);
        }

        /// Property: whatever bytes a changelog holds, a restore finishes (and the processor
        /// keeps working).
        #[test]
        fn random_corruption_never_panics() {
            let (cfg, bl, backend) = (cfg(), Blacklist::new(), MemoryBackend::new());
            let mut rng = StdRng::seed_from_u64(5);
            let mut b = restored(&cfg, &bl, H0, Entries::new());
            let (mut pending, mut out) = (Vec::new(), Emit::default());
            for (i, s) in random_steps(&mut rng).iter().enumerate() {
                apply(&mut b, s, &mut out);
                if i % 10 == 0 {
                    flush(&mut b, &backend, 1, &mut pending, i);
                }
            }
            let live = entries(&backend, 2).entries;
            assert!(live.len() > 3);
            for _ in 0..300 {
                let mut bad = live.clone();
                for v in bad.values_mut() {
                    match rng.gen_range(0..4) {
                        0 if !v.is_empty() => {
                            let at = rng.gen_range(0..v.len());
                            v[at] = rng.gen();
                        }
                        1 => v.truncate(rng.gen_range(0..=v.len())),
                        2 => v.push(rng.gen()),
                        _ => {}
                    }
                }
                let mut c = restored(&cfg, &bl, H0, bad);
                feed(&mut c, "en", "a", 1, H0 + 9 * HOUR_MS, &mut out);
                c.close_idle(&mut out);
                c.take_changes(&mut pending);
                pending.clear();
            }
        }
    }
}
