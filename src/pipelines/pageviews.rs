//! Page views: the top articles per domain and hour, minus a blacklist, and "trending now".
//!
//! - Input `pageviews` (key = domain): `{"domain", "title", "views" (default 1), "ts"}` with `ts`
//!   RFC 3339 or epoch milliseconds. The key must be the domain: a domain's windows live in one
//!   partition, which is what makes "exactly one final record per window" hold.
//! - Input `pageviews.blacklist` (compacted, key `<domain> <title>`): pairs never ranked. Read
//!   by its own small pipeline into a [`Blacklist`] every pageviews task consults when it ranks,
//!   so a change applies to every window not yet final. Its offsets are never committed: every
//!   assignment re-reads the whole table.
//! - Output `pageviews.top` (compacted, key `<domain>|YYYY-MM-DDTHH`): per (domain, hour) window,
//!   exactly one record with `final: true` when the partition's watermark passes the hour's end
//!   or the partition has been idle for `idle_timeout`; optionally provisional `final: false`
//!   records while it is open. Top `top_n` by views, ties by title in ascending byte order.
//! - Output `pageviews.trending` (key = domain): the top over the last 60 minutes of event time
//!   (sliding by the minute), every `trending_interval` while the domain receives views.
//!
//! Late events (for windows already final) are counted in
//! `pagepulse_window_ignored_events_total{pipeline="pageviews",reason="late"}` and reported in the
//! `late_events` field of the domain's next `pageviews.top` record.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use dashmap::DashMap;
use prometheus::IntCounter;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::decode::{format_ms, object, optional_u64, required_str, rfc3339_ms, utf8_value};
use crate::clock::Clock;
use crate::config::PageviewsConfig;
use crate::engine::{Emit, OutRecord, Processor, RawRecord, RecordMeta, RejectClass, Rejection};
use crate::metrics::Metrics;
use crate::ops::hourly::{Added, Closed, HourlyWindows, Window, HOUR_MS};
use crate::ops::topn::top_n;
use crate::ops::window::{AddOutcome, SlidingCounts};

/// Pipeline name.
pub const PIPELINE: &str = "pageviews";
/// Input topic.
pub const INPUT: &str = "pageviews";
/// The blacklist pipeline's name.
pub const BLACKLIST_PIPELINE: &str = "pageviews.blacklist";
/// Blacklist topic.
pub const BLACKLIST: &str = "pageviews.blacklist";
/// Per-window top articles.
pub const TOP: &str = "pageviews.top";
/// Trending now.
pub const TRENDING: &str = "pageviews.trending";

/// Longest domain code accepted.
const MAX_DOMAIN: usize = 64;
/// Longest title accepted.
const MAX_TITLE: usize = 2048;
/// Span and granularity of "trending now".
const TRENDING_WINDOW_MS: i64 = HOUR_MS;
const TRENDING_BUCKET_MS: i64 = 60_000;

/// The (domain, title) pairs excluded from every ranking; shared by every pageviews task and
/// written by the blacklist pipeline.
#[derive(Debug, Default)]
pub struct Blacklist {
    by_domain: DashMap<Box<str>, HashSet<Box<str>>>,
}

impl Blacklist {
    /// An empty blacklist.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Excludes `title` of `domain` from rankings.
    pub fn insert(&self, domain: &str, title: &str) {
        self.by_domain.entry(domain.into()).or_default().insert(title.into());
    }

    /// Ranks `title` of `domain` again.
    pub fn remove(&self, domain: &str, title: &str) {
        if let Some(mut set) = self.by_domain.get_mut(domain) {
            set.remove(title);
        }
    }

    /// True if the pair is excluded.
    pub fn contains(&self, domain: &str, title: &str) -> bool {
        self.by_domain.get(domain).is_some_and(|s| s.contains(title))
    }

    /// The excluded titles of `domain` (a snapshot, for one ranking).
    pub fn titles(&self, domain: &str) -> HashSet<Box<str>> {
        self.by_domain.get(domain).map(|s| s.clone()).unwrap_or_default()
    }
}

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
    if let Some(key) = rec.key.as_deref() {
        if key != domain.as_bytes() {
            return Err(invalid(format!(
                "key \"{}\" must be the domain (\"{domain}\"): a domain's views must share a partition",
                String::from_utf8_lossy(key)
            )));
        }
    } else {
        return Err(Rejection::new(RejectClass::MissingField, "key is missing: `pageviews` records are keyed by domain"));
    }
    Ok(View { domain, title, views, ts_ms })
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
    let items = counts.iter().filter(|(t, _)| excluded.is_empty() || !excluded.contains(&***t)).map(|(t, c)| (t, *c));
    top_n(items, n)
        .into_iter()
        .enumerate()
        .map(|(i, r)| Article { rank: i + 1, title: r.key.to_string(), views: r.count })
        .collect()
}

struct Trend {
    counts: SlidingCounts<Arc<str>>,
    emitted_version: u64,
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
    clock: Arc<dyn Clock>,
    last_input_ms: i64,
    last_provisional_ms: i64,
    last_trending_ms: i64,
    late: IntCounter,
    over_capacity: IntCounter,
}

impl PageviewsProcessor {
    /// A processor with the pipeline's config, ranking against `blacklist`.
    pub fn new(cfg: &PageviewsConfig, blacklist: Arc<Blacklist>, metrics: &Metrics, clock: Arc<dyn Clock>) -> Self {
        let now = clock.now().timestamp_millis();
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
            clock,
            last_input_ms: now,
            last_provisional_ms: now,
            last_trending_ms: now,
            late: metrics.window_ignored.with_label_values(&[PIPELINE, "late"]),
            over_capacity: metrics.window_ignored.with_label_values(&[PIPELINE, "over_capacity"]),
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
            let excluded = self.blacklist.titles(d);
            let items = t.counts.totals().filter(|(k, _)| excluded.is_empty() || !excluded.contains(&***k));
            let articles = top_n(items, self.trending_top_n)
                .into_iter()
                .enumerate()
                .map(|(i, r)| Article { rank: i + 1, title: r.key.to_string(), views: r.count })
                .collect();
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

    /// Emits a provisional record of every open window.
    pub fn emit_provisional(&mut self, out: &mut Emit<()>) {
        let open: Vec<(i64, Arc<str>, Window)> =
            self.windows.open().map(|(h, d, w)| (h, d.clone(), w.clone())).collect();
        for (h, d, w) in open {
            let rec = self.top_record(h, &d, &w, false);
            out.record(rec);
        }
    }
}

impl Processor for PageviewsProcessor {
    type Input<'a> = View<'a>;
    type Part = ();

    fn decode<'a>(&self, _topic: &'static str, rec: &'a RawRecord) -> Result<View<'a>, Rejection> {
        decode_view(rec)
    }

    fn process(&mut self, v: View<'_>, _meta: &RecordMeta, out: &mut Emit<()>) {
        self.last_input_ms = self.clock.now().timestamp_millis();
        let trend = match self.trends.get_mut(v.domain.as_ref()) {
            Some(t) => t,
            None => self.trends.entry(v.domain.as_ref().into()).or_insert_with(|| Trend {
                counts: SlidingCounts::new(TRENDING_WINDOW_MS, TRENDING_BUCKET_MS, self.trending_max_titles),
                emitted_version: 0,
            }),
        };
        match self.windows.add(&v.domain, &v.title, v.views, v.ts_ms, None) {
            Added::Counted(title) => match trend.counts.add(&title, v.ts_ms, v.views) {
                AddOutcome::Counted | AddOutcome::Late => {}
                AddOutcome::OverCapacity => self.over_capacity.inc(),
            },
            Added::Late => self.late.inc(),
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
        if self.windows.open_windows() > 0 && now - self.last_input_ms >= self.idle_timeout.as_millis() as i64 {
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
}

/// What a `pageviews.blacklist` record asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlacklistChange<'a> {
    /// Exclude the pair.
    Add {
        /// Domain.
        domain: &'a str,
        /// Title.
        title: &'a str,
    },
    /// Rank the pair again (a tombstone).
    Remove {
        /// Domain.
        domain: &'a str,
        /// Title.
        title: &'a str,
    },
}

/// Decodes a `pageviews.blacklist` record: the key names the pair, the value must agree.
pub fn decode_blacklist(rec: &RawRecord) -> Result<BlacklistChange<'_>, Rejection> {
    let key = rec.key.as_deref().ok_or_else(|| {
        Rejection::new(RejectClass::MissingField, "key is missing: blacklist records are keyed `<domain> <title>`")
    })?;
    let key = std::str::from_utf8(key).map_err(|_| Rejection::new(RejectClass::InvalidUtf8, "key is not valid UTF-8"))?;
    let Some((domain, title)) = key.split_once(' ').filter(|(d, t)| !d.is_empty() && !t.is_empty()) else {
        return Err(invalid(format!("key \"{key}\" must be `<domain> <title>`")));
    };
    if rec.value.is_none() {
        return Ok(BlacklistChange::Remove { domain, title });
    }
    let wire: Wire<'_> = object(utf8_value(rec)?)?;
    let d = required_str("domain", wire.domain)?;
    let t = required_str("title", wire.title)?;
    if d != domain || t != title {
        return Err(invalid(format!("value ({d} {t}) does not match the key ({key})")));
    }
    Ok(BlacklistChange::Add { domain, title })
}

/// Applies `pageviews.blacklist` to the shared [`Blacklist`].
pub struct BlacklistProcessor {
    blacklist: Arc<Blacklist>,
}

impl BlacklistProcessor {
    /// A processor writing into `blacklist`.
    pub fn new(blacklist: Arc<Blacklist>) -> Self {
        Self { blacklist }
    }
}

impl Processor for BlacklistProcessor {
    type Input<'a> = BlacklistChange<'a>;
    type Part = ();

    fn decode<'a>(&self, _topic: &'static str, rec: &'a RawRecord) -> Result<BlacklistChange<'a>, Rejection> {
        decode_blacklist(rec)
    }

    fn process(&mut self, change: BlacklistChange<'_>, _meta: &RecordMeta, _out: &mut Emit<()>) {
        match change {
            BlacklistChange::Add { domain, title } => self.blacklist.insert(domain, title),
            BlacklistChange::Remove { domain, title } => self.blacklist.remove(domain, title),
        }
    }
}
