//! The pages pipeline's per-partition logic: decode a `pages` record, keep the partition's poll
//! [`Schedule`], and hand due pages to their platform's dispatcher every tick.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus::{IntCounter, IntGauge};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::config::PagesConfig;
use crate::clock::Clock;
use crate::engine::{Emit, Processor, RawRecord, RecordMeta, RejectClass, Rejection};
use crate::metrics::Metrics;
use crate::pipelines::decode::{object, optional_str, optional_u64, split_key, utf8_value};
use crate::poll::dispatch::{Job, JobQueue, Owner};
use crate::poll::scheduler::{self, Schedule, Upserted};

/// Platform of a record that names none.
pub const DEFAULT_PLATFORM: &str = "facebook";
/// Interval of a record that names none, in seconds.
pub const DEFAULT_INTERVAL_S: u64 = 600;

/// What a `pages` record asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageCommand<'a> {
    /// Poll the page every `interval_ms`.
    Track {
        /// Page key, `<platform>:<page_id>`.
        key: Cow<'a, str>,
        /// Poll interval in milliseconds.
        interval_ms: i64,
    },
    /// Stop polling the page.
    Untrack {
        /// Page key.
        key: Cow<'a, str>,
    },
}

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow, default)]
    platform: Option<&'a RawValue>,
    #[serde(borrow, default)]
    page_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    interval_s: Option<&'a RawValue>,
    #[serde(borrow, default)]
    tracked: Option<&'a RawValue>,
    #[serde(borrow, default)]
    watch: Option<&'a RawValue>,
}

fn invalid(message: String) -> Rejection {
    Rejection::new(RejectClass::InvalidValue, message)
}

/// Decodes and validates a `pages` record; `platforms` are the platforms this instance polls.
pub fn decode_page<'a>(rec: &'a RawRecord, platforms: &[&str]) -> Result<PageCommand<'a>, Rejection> {
    let (full_key, key_platform, key_id) = split_key(rec, ':', "`pages` records are keyed `<platform>:<page_id>`")?;
    let key = || Cow::Borrowed(full_key);
    if rec.value.is_none() {
        return Ok(PageCommand::Untrack { key: key() });
    }
    let wire: Wire<'_> = object(utf8_value(rec)?)?;
    let tracked = match wire.tracked.map(RawValue::get) {
        None | Some("null" | "true") => true,
        Some("false") => false,
        Some(_) => return Err(Rejection::new(RejectClass::WrongType, "field `tracked` must be a boolean")),
    };
    if !matches!(wire.watch.map(RawValue::get), None | Some("null" | "true" | "false")) {
        return Err(Rejection::new(RejectClass::WrongType, "field `watch` must be a boolean"));
    }
    let platform = optional_str("platform", wire.platform)?;
    let page_id = optional_str("page_id", wire.page_id)?;
    if let Some(p) = &platform {
        if p != key_platform {
            return Err(invalid(format!(
                "field `platform` (\"{p}\") does not match the key's platform (\"{key_platform}\")"
            )));
        }
    }
    if let Some(id) = &page_id {
        if id != key_id {
            return Err(invalid(format!("field `page_id` (\"{id}\") does not match the key's page id (\"{key_id}\")")));
        }
    }
    if !tracked {
        return Ok(PageCommand::Untrack { key: key() });
    }
    if page_id.is_none() {
        return Err(Rejection::new(RejectClass::MissingField, "field `page_id` is missing"));
    }
    if platform.is_none() && key_platform != DEFAULT_PLATFORM {
        return Err(invalid(format!(
            "field `platform` is missing, so it is \"{DEFAULT_PLATFORM}\", but the key names \"{key_platform}\""
        )));
    }
    if key_id.len() > 256 {
        return Err(Rejection::new(RejectClass::TooLarge, "field `page_id` must be at most 256 bytes"));
    }
    if !platforms.contains(&key_platform) {
        return Err(invalid(format!(
            "field `platform`: \"{key_platform}\" is not an enabled platform (enabled: {})",
            platforms.join(", ")
        )));
    }
    let interval_s = optional_u64("interval_s", wire.interval_s)?.unwrap_or(DEFAULT_INTERVAL_S);
    let (min, max) = (scheduler::MIN_INTERVAL_MS / 1000, scheduler::MAX_INTERVAL_MS / 1000);
    if !(min as u64..=max as u64).contains(&interval_s) {
        return Err(invalid(format!("field `interval_s` must be between {min} and {max}, got {interval_s}")));
    }
    Ok(PageCommand::Track { key: key(), interval_ms: interval_s as i64 * 1000 })
}

/// One platform as a partition's schedule sees it: its name and where its due pages go.
#[derive(Clone)]
pub struct PlatformQueue {
    /// Platform name, e.g. `facebook`.
    pub name: &'static str,
    /// Its dispatcher.
    pub queue: Arc<dyn JobQueue>,
}

struct PlatformEntry {
    name: &'static str,
    queue: Arc<dyn JobQueue>,
    tracked: IntGauge,
    skipped: IntCounter,
    /// Pages of this platform in this partition's schedule.
    count: i64,
}

/// The per-partition pages processor: the partition's poll schedule.
pub struct PagesProcessor {
    schedule: Schedule,
    platforms: Vec<PlatformEntry>,
    names: Vec<&'static str>,
    owner: Arc<Owner>,
    tick: Duration,
    max_due_per_tick: usize,
    clock: Arc<dyn Clock>,
}

impl PagesProcessor {
    /// A processor with the pipeline's config, handing due pages to `platforms`; `clock` times
    /// the schedule changes.
    pub fn new(cfg: &PagesConfig, platforms: &[PlatformQueue], metrics: &Metrics, clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            schedule: Schedule::new(cfg.max_pages_per_partition),
            platforms: platforms
                .iter()
                .map(|p| PlatformEntry {
                    name: p.name,
                    queue: p.queue.clone(),
                    tracked: metrics.pages_tracked.with_label_values(&[p.name]),
                    skipped: metrics.poll_skipped_slots.with_label_values(&[p.name]),
                    count: 0,
                })
                .collect(),
            names: platforms.iter().map(|p| p.name).collect(),
            owner: Owner::new(),
            tick: cfg.tick,
            max_due_per_tick: cfg.max_due_per_tick,
        }
    }

    /// The schedule, for inspection.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    fn platform_of(&mut self, key: &str) -> Option<&mut PlatformEntry> {
        let name = key.split_once(':')?.0;
        self.platforms.iter_mut().find(|p| p.name == name)
    }

    /// Hands every page due at `now_ms` (at most `max_due_per_tick`) to its platform.
    pub fn hand_over_due(&mut self, now_ms: i64) {
        let due = self.schedule.pop_due(now_ms, self.max_due_per_tick);
        if due.is_empty() {
            return;
        }
        let mut jobs: Vec<Vec<Job>> = vec![Vec::new(); self.platforms.len()];
        for d in due {
            let Some(i) = d.page.split_once(':').and_then(|(p, _)| self.names.iter().position(|n| *n == p)) else {
                continue; // decode admits only enabled platforms
            };
            if d.skipped > 0 {
                self.platforms[i].skipped.inc_by(d.skipped as u64);
            }
            jobs[i].push(Job::new(d.page, d.due_ms, self.owner.clone()));
        }
        for (p, jobs) in self.platforms.iter().zip(jobs) {
            if !jobs.is_empty() {
                p.queue.submit(jobs);
            }
        }
    }
}

impl Drop for PagesProcessor {
    /// The partition is gone (revoked or shutting down): its queued pages are dropped unsent and
    /// its pages leave this instance's count.
    fn drop(&mut self) {
        self.owner.release();
        for p in &self.platforms {
            p.tracked.sub(p.count);
        }
    }
}

impl Processor for PagesProcessor {
    type Input<'a> = PageCommand<'a>;
    type Part = ();

    fn decode<'a>(&self, _topic: &'static str, rec: &'a RawRecord) -> Result<PageCommand<'a>, Rejection> {
        let cmd = decode_page(rec, &self.names)?;
        if let PageCommand::Track { key, .. } = &cmd {
            if self.schedule.len() >= self.schedule.max_pages() && self.schedule.due_of(key).is_none() {
                return Err(invalid(format!(
                    "page {key} refused: this partition already tracks {} pages \
                     (pipelines.pages.max_pages_per_partition)",
                    self.schedule.len()
                )));
            }
        }
        Ok(cmd)
    }

    fn process(&mut self, cmd: PageCommand<'_>, _meta: &RecordMeta, _out: &mut Emit<()>) {
        let now_ms = self.clock.now().timestamp_millis();
        match cmd {
            PageCommand::Track { key, interval_ms } => match self.schedule.upsert(&key, interval_ms, now_ms) {
                Ok(Upserted::Added) => {
                    if let Some(p) = self.platform_of(&key) {
                        p.count += 1;
                        p.tracked.inc();
                    }
                }
                Ok(_) => {}
                // decode checked both the interval and the bound.
                Err(e) => tracing::warn!(page = %key, error = %e, "page not scheduled"),
            },
            PageCommand::Untrack { key } => {
                if self.schedule.remove(&key) {
                    if let Some(p) = self.platform_of(&key) {
                        p.count -= 1;
                        p.tracked.dec();
                    }
                }
            }
        }
    }

    fn tick_interval(&self) -> Option<Duration> {
        Some(self.tick)
    }

    fn on_tick(&mut self, now: DateTime<Utc>, _out: &mut Emit<()>) {
        self.hand_over_due(now.timestamp_millis());
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::*;
    use crate::clock::ManualClock;
    use crate::config::Config;
    use crate::pipelines::pages::INPUT;

    const T0: i64 = 1_795_428_000_000;

    #[derive(Default)]
    struct Collect(Mutex<Vec<Job>>);

    impl JobQueue for Collect {
        fn submit(&self, jobs: Vec<Job>) {
            self.0.lock().expect("lock").extend(jobs);
        }
    }

    impl Collect {
        fn take(&self) -> Vec<Job> {
            std::mem::take(&mut *self.0.lock().expect("lock"))
        }
    }

    fn rec(key: Option<&str>, value: Option<&str>) -> RawRecord {
        RawRecord {
            key: key.map(|k| k.as_bytes().to_vec()),
            value: value.map(|v| v.as_bytes().to_vec()),
            offset: 0,
            timestamp_ms: None,
        }
    }

    fn setup() -> (PagesProcessor, Arc<Collect>, Arc<Collect>, Arc<ManualClock>, Metrics) {
        let (fb, md) = (Arc::new(Collect::default()), Arc::new(Collect::default()));
        let clock = Arc::new(ManualClock::at_ms(T0));
        let m = Metrics::new();
        let platforms = [
            PlatformQueue { name: "facebook", queue: fb.clone() },
            PlatformQueue { name: "mastodon", queue: md.clone() },
        ];
        let p = PagesProcessor::new(&Config::default().pages, &platforms, &m, clock.clone());
        (p, fb, md, clock, m)
    }

    fn apply(p: &mut PagesProcessor, key: &str, value: Option<&str>) {
        let r = rec(Some(key), value);
        let cmd = p.decode(INPUT, &r).unwrap_or_else(|e| panic!("{key} {value:?} refused: {e}"));
        p.process(cmd, &RecordMeta { topic: INPUT, partition: 0, offset: 0, timestamp_ms: None }, &mut Emit::default());
    }

    /// Runs the partition's ticks every 50 ms from `from` to `to`, returning each page's polled
    /// slots.
    fn run(p: &mut PagesProcessor, q: &Collect, from: i64, to: i64, polls: &mut HashMap<String, Vec<i64>>) {
        let mut t = from;
        while t <= to {
            p.hand_over_due(t);
            for job in q.take() {
                assert!(job.due_ms <= t && t - job.due_ms < 50, "handed over on the first tick at or after its slot");
                polls.entry(job.key.to_string()).or_default().push(job.due_ms);
            }
            t += 50;
        }
    }

    #[test]
    fn decoding_follows_the_topic_rules() {
        let ok = |k: &str, v: Option<&str>| {
            decode_page(&rec(Some(k), v), &["facebook", "mastodon"]).map(|c| match c {
                PageCommand::Track { key, interval_ms } => {
                    PageCommand::Track { key: key.into_owned().into(), interval_ms }
                }
                PageCommand::Untrack { key } => PageCommand::Untrack { key: key.into_owned().into() },
            })
        };
        assert_eq!(
            ok("facebook:nasa", Some(r#"{"page_id": "nasa"}"#)),
            Ok(PageCommand::Track { key: "facebook:nasa".into(), interval_ms: 600_000 })
        );
        assert_eq!(
            ok("mastodon:a@b.c", Some(r#"{"platform": "mastodon", "page_id": "a@b.c", "interval_s": 10}"#)),
            Ok(PageCommand::Track { key: "mastodon:a@b.c".into(), interval_ms: 10_000 })
        );
        assert_eq!(ok("facebook:nasa", None), Ok(PageCommand::Untrack { key: "facebook:nasa".into() }));
        assert_eq!(
            ok("facebook:nasa", Some(r#"{"tracked": false}"#)),
            Ok(PageCommand::Untrack { key: "facebook:nasa".into() })
        );
        let refused =
            |k: Option<&str>, v: Option<&str>| decode_page(&rec(k, v), &["facebook", "mastodon"]).expect_err("refused");
        assert_eq!(refused(None, None).class, RejectClass::MissingField);
        assert_eq!(refused(Some("nasa"), Some(r#"{"page_id": "nasa"}"#)).class, RejectClass::InvalidValue);
        let e = refused(Some("mastodon:nasa"), Some(r#"{"page_id": "nasa"}"#));
        assert!(e.message.contains("field `platform`"), "{}", e.message);
        let e = refused(Some("facebook:nasa"), Some(r#"{"page_id": "nasa", "watch": "yes"}"#));
        assert_eq!(e.message, "field `watch` must be a boolean");
        let e = refused(Some("facebook:nasa"), Some(r#"{"page_id": "nasa", "interval_s": 9}"#));
        assert_eq!(e.message, "field `interval_s` must be between 10 and 86400, got 9");
        let e = refused(Some("facebook:nasa"), Some(r#"{"page_id": "nasa", "interval_s": 1.5}"#));
        assert_eq!(e.class, RejectClass::InvalidValue);
        let long = format!("facebook:{}", "x".repeat(257));
        let e = refused(Some(&long), Some(&format!(r#"{{"page_id": "{}"}}"#, "x".repeat(257))));
        assert_eq!(e.class, RejectClass::TooLarge);
    }

    #[test]
    fn every_page_is_polled_once_per_interval_with_jitter_within_one_interval() {
        let (mut p, fb, md, clock, m) = setup();
        for i in 0..1000 {
            apply(
                &mut p,
                &format!("facebook:page-{i:06}"),
                Some(&format!(r#"{{"page_id": "page-{i:06}", "interval_s": 60}}"#)),
            );
        }
        apply(&mut p, "mastodon:ana@x.y", Some(r#"{"platform": "mastodon", "page_id": "ana@x.y", "interval_s": 30}"#));
        assert_eq!(m.pages_tracked.with_label_values(&["facebook"]).get(), 1000);
        let mut polls = HashMap::new();
        run(&mut p, &fb, T0, T0 + 10 * 60_000, &mut polls);
        assert_eq!(polls.len(), 1000);
        let mut first_slots = Vec::new();
        for (key, slots) in &polls {
            // First slot within (T0, T0 + 60 s]; then exactly every 60 s: 10 polls in 10 minutes.
            assert!(slots[0] > T0 && slots[0] <= T0 + 60_000, "{key}: first slot {}", slots[0] - T0);
            assert_eq!(slots.len(), 10, "{key}: {slots:?}");
            assert!(slots.windows(2).all(|w| w[1] - w[0] == 60_000), "{key}: {slots:?}");
            first_slots.push(slots[0] - T0);
        }
        // Spread: every 6-second tenth of the interval holds 100 ± 40 of the 1000 first polls.
        let mut tenths = [0; 10];
        for s in first_slots {
            tenths[((s - 1) / 6000) as usize] += 1;
        }
        assert!(tenths.iter().all(|n| (60..=140).contains(n)), "{tenths:?}");
        let mastodon: Vec<i64> = std::iter::once(()).flat_map(|_| md.take()).map(|j| j.due_ms).collect();
        assert_eq!(mastodon.len(), 20, "the Mastodon page went to its own platform, every 30 s");
        let _ = clock;
    }

    #[test]
    fn rescheduling_and_untracking_never_double_poll() {
        let (mut p, fb, _, clock, m) = setup();
        let key = "facebook:page-000042";
        apply(&mut p, key, Some(r#"{"page_id": "page-000042", "interval_s": 60}"#));
        let mut polls = HashMap::new();
        run(&mut p, &fb, T0, T0 + 300_000, &mut polls);
        // Re-sending the same record changes nothing; a new interval moves the next slot.
        clock.set_ms(T0 + 300_000);
        apply(&mut p, key, Some(r#"{"page_id": "page-000042", "interval_s": 60}"#));
        apply(&mut p, key, Some(r#"{"page_id": "page-000042", "interval_s": 20}"#));
        run(&mut p, &fb, T0 + 300_050, T0 + 600_000, &mut polls);
        clock.set_ms(T0 + 600_000);
        apply(&mut p, key, Some(r#"{"page_id": "page-000042", "interval_s": 120}"#));
        run(&mut p, &fb, T0 + 600_050, T0 + 900_000, &mut polls);
        let slots = &polls[key];
        for w in slots.windows(2) {
            assert!(w[1] - w[0] >= 20_000, "two polls closer than the shortest interval: {slots:?}");
        }
        let before = slots.iter().filter(|s| **s <= T0 + 300_000).count();
        let fast = slots.iter().filter(|s| **s > T0 + 300_000 && **s <= T0 + 600_000).count();
        let slow = slots.iter().filter(|s| **s > T0 + 600_000).count();
        assert_eq!((before, fast), (5, 15), "{slots:?}");
        assert!((2..=3).contains(&slow), "{slots:?}");
        // A tombstone stops it at once.
        clock.set_ms(T0 + 900_000);
        apply(&mut p, key, None);
        let n = polls[key].len();
        run(&mut p, &fb, T0 + 900_050, T0 + 1_500_000, &mut polls);
        assert_eq!(polls[key].len(), n);
        assert_eq!(m.pages_tracked.with_label_values(&["facebook"]).get(), 0);
    }

    #[test]
    fn a_rebuilt_schedule_keeps_the_slots_of_the_old_one() {
        // Partition handover: the old owner polls until revoked at T0 + 250 s; the new owner
        // reads the same `pages` records then and polls on. No slot is polled twice, none is
        // skipped beyond the one in flight at the handover.
        let records: Vec<(String, String)> = (0..200)
            .map(|i| (format!("facebook:page-{i:06}"), format!(r#"{{"page_id": "page-{i:06}", "interval_s": 60}}"#)))
            .collect();
        let (mut old, fb_old, _, _, m) = setup();
        for (k, v) in &records {
            apply(&mut old, k, Some(v));
        }
        let mut polls = HashMap::new();
        run(&mut old, &fb_old, T0, T0 + 250_000, &mut polls);
        let owner = old.owner.clone();
        drop(old);
        assert!(!owner.is_alive(), "revocation releases the queued pages");
        assert_eq!(m.pages_tracked.with_label_values(&["facebook"]).get(), 0);
        let (mut new, fb_new, _, clock, _) = setup();
        clock.set_ms(T0 + 250_000);
        for (k, v) in &records {
            apply(&mut new, k, Some(v));
        }
        run(&mut new, &fb_new, T0 + 250_050, T0 + 600_000, &mut polls);
        for (key, slots) in &polls {
            assert_eq!(slots.len(), 10, "{key}: {slots:?}");
            assert!(slots.windows(2).all(|w| w[1] - w[0] == 60_000), "{key}: {slots:?}");
        }
    }

    #[test]
    fn the_partition_bound_refuses_new_pages_only() {
        let (fb, clock, m) = (Arc::new(Collect::default()), Arc::new(ManualClock::at_ms(T0)), Metrics::new());
        let cfg = PagesConfig { max_pages_per_partition: 2, ..Config::default().pages };
        let mut p = PagesProcessor::new(&cfg, &[PlatformQueue { name: "facebook", queue: fb }], &m, clock);
        apply(&mut p, "facebook:a", Some(r#"{"page_id": "a"}"#));
        apply(&mut p, "facebook:b", Some(r#"{"page_id": "b"}"#));
        let e = p.decode(INPUT, &rec(Some("facebook:c"), Some(r#"{"page_id": "c"}"#))).expect_err("bound");
        assert!(e.message.contains("max_pages_per_partition"), "{}", e.message);
        apply(&mut p, "facebook:a", Some(r#"{"page_id": "a", "interval_s": 60}"#));
        apply(&mut p, "mastodon:x", None); // an unknown page's tombstone is harmless
        assert_eq!(p.schedule().len(), 2);
    }
}
