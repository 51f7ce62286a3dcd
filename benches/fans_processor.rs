//! Cost of one `fans.observations` record through the fans processor on one core, without Kafka
//! or actors: decode, rolling series, rankings and the `fans.stats` value. Pages are observed
//! every 10 minutes for `DAYS` days, all pages at each step (the order a poller produces them),
//! so the later observations run against full 30-day series. Also prints the resident memory per
//! page the processor holds.
//!
//!   cargo bench --bench fans_processor [-- PAGES [DAYS]]

use std::time::{Duration, Instant};

use pagepulse::config::Config;
use pagepulse::engine::{Emit, Processor, RawRecord, RecordMeta};
use pagepulse::pipelines::fans::{self, FansProcessor};

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
    let mut p = FansProcessor::new(0, &cfg.fans);
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
    drop(p);
}
