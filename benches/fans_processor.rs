//! Cost of one `fans.observations` record through the fans processor on one core, without Kafka
//! or actors: decode, rolling series, rankings and the `fans.stats` value. Pages are observed
//! every 10 minutes for `DAYS` days, all pages at each step (the order a poller produces them),
//! so the later observations run against full 30-day series. Also prints the resident memory per
//! page the processor holds. Then one more day runs while another thread reads random pages the
//! way `/pages/{key}` does (figures, chart and rows, serialized to JSON), to show what queries cost
//! and what they cost the writer.
//!
//!   cargo bench --bench fans_processor [-- PAGES [DAYS]]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pagepulse::config::Config;
use pagepulse::engine::{Emit, Processor, RawRecord, RecordMeta};
use pagepulse::ops::series::{RollingFans, Sample};
use pagepulse::pipelines::fans::state::{Detail, FansState};
use pagepulse::pipelines::fans::{self, FansProcessor};
use rand::Rng;

const MIN: i64 = 60_000;
const T0: i64 = 1_790_000_000_000;

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// The observations of every page at step `k`.
fn step(pages: usize, k: i64) -> Vec<RawRecord> {
    let at = chrono::DateTime::from_timestamp_millis(T0 + k * 10 * MIN)
        .expect("valid time")
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    (0..pages)
        .map(|p| {
            let fans = 10_000 + p as i64 * 3 + k * (p as i64 % 7);
            let value = format!(
                r#"{{"platform":"facebook","page_id":"page-{p:07}","fans":{fans},"followers":{},"observed_at":"{at}"}}"#,
                fans + 10
            );
            RawRecord { key: None, value: Some(value.into_bytes()), offset: k, timestamp_ms: None }
        })
        .collect()
}

fn main() {
    let mut args = std::env::args().skip(1).filter_map(|a| a.parse::<usize>().ok());
    let pages = args.next().unwrap_or(1_000);
    let days = args.next().unwrap_or(30) as i64;
    let steps = days * 24 * 6;
    let cfg = Config::default();
    let before = rss_kb();
    let state = FansState::new(cfg.fans.top_n);
    let mut p = FansProcessor::new(0, &cfg.fans).with_state(&state);
    let mut out = Emit::default();
    let meta = RecordMeta { topic: fans::INPUT, partition: 0, offset: 0, timestamp_ms: None };
    let (mut busy, mut last_day) = (Duration::ZERO, Duration::ZERO);
    for k in 0..steps {
        let recs = step(pages, k);
        let t = Instant::now();
        for rec in &recs {
            let obs = p.decode(fans::INPUT, rec).expect("valid observations");
            p.process(obs, &meta, &mut out);
        }
        let spent = t.elapsed();
        busy += spent;
        if k >= steps - 144 {
            last_day += spent;
        }
        out.records.clear();
    }
    let after = rss_kb();
    let n = pages as f64 * steps as f64;
    println!(
        "fans processor: {pages} pages x {steps} observations: {:.0} ns/observation overall, {:.0} ns/observation \
         over the last day (full series); {} bytes/page by RSS growth",
        busy.as_nanos() as f64 / n,
        last_day.as_nanos() as f64 / (pages as f64 * 144.0),
        (after.saturating_sub(before) * 1024) as usize / pages,
    );

    // One more day with a reader.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (state, stop) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut rng = rand::thread_rng();
            let (mut queries, mut bytes, t) = (0u64, 0usize, Instant::now());
            while !stop.load(Ordering::Relaxed) {
                let key = format!("facebook:page-{:07}", rng.gen_range(0..pages));
                let view = state.page(&key, Detail::Full).expect("every page is held");
                bytes += serde_json::to_vec(&view).expect("plain structs serialize").len();
                queries += 1;
            }
            (queries, bytes, t.elapsed())
        })
    };
    let mut busy = Duration::ZERO;
    for k in steps..steps + 144 {
        let recs = step(pages, k);
        let t = Instant::now();
        for rec in &recs {
            let obs = p.decode(fans::INPUT, rec).expect("valid observations");
            p.process(obs, &meta, &mut out);
        }
        busy += t.elapsed();
        out.records.clear();
    }
    stop.store(true, Ordering::Relaxed);
    let (queries, bytes, spent) = reader.join().expect("reader finished");
    println!(
        "with a reader thread: {:.0} ns/observation; the reader: {queries} page queries (figures, chart, rows, JSON \
         of {} bytes on average) at {:.1} µs each",
        busy.as_nanos() as f64 / (pages as f64 * 144.0),
        bytes / queries.max(1) as usize,
        spent.as_secs_f64() * 1e6 / queries.max(1) as f64,
    );

    // One thread, one step at a time: what a query holds a shard's read lock for (copying a full
    // page's figures, chart and rows out), the whole view, and its JSON.
    let mut page = RollingFans::new();
    for k in 0..steps {
        page.observe(Sample { at_ms: T0 + k * 10 * MIN, fans: 10_000 + k as u64, followers: Some(7) });
    }
    let n = 2_000;
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box((page.stats(), page.series(), page.table()));
    }
    let locked = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    let keys: Vec<String> = (0..n).map(|i| format!("facebook:page-{:07}", i % pages)).collect();
    let time = |f: &dyn Fn(&str)| {
        let t = Instant::now();
        keys.iter().for_each(|k| f(k));
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    };
    let stats_only = time(&|k| {
        std::hint::black_box(state.page(k, Detail::Stats));
    });
    let full = time(&|k| {
        std::hint::black_box(state.page(k, Detail::Full));
    });
    let json = time(&|k| {
        std::hint::black_box(serde_json::to_vec(&state.page(k, Detail::Full)).expect("plain structs serialize"));
    });
    println!(
        "one query: {locked:.1} µs under a shard's read lock (a full page's figures, chart and rows copied out); \
         view {stats_only:.1} µs with figures only, {full:.1} µs with chart and rows, {json:.1} µs with JSON"
    );
    drop(p);
}
