//! The pageviews pipeline on one core without Kafka: decode + hourly window + trending + top-N for
//! a real-size hour (about 6 million distinct (domain, title) lines, Zipf-distributed over 20
//! domains), then closing the hour (ranking every domain). Prints the rates and the resident
//! memory the open hour holds.
//!
//!   cargo bench --bench pageviews_processor [-- LINES]

use std::sync::Arc;
use std::time::Instant;

use pagepulse::clock::ManualClock;
use pagepulse::config::Config;
use pagepulse::engine::{Emit, Processor, RawRecord, RecordMeta};
use pagepulse::metrics::Metrics;
use pagepulse::pipelines::pageviews::{Blacklist, PageviewsProcessor, INPUT};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const H0: i64 = 1_795_424_400_000;

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// `n` records as `pagepulse ingest` writes them: key = domain, JSON value; domains Zipf(1) over
/// 20, titles distinct per domain with lengths like Wikipedia's, counts Zipf-like.
fn records(n: usize, hour: i64) -> Vec<RawRecord> {
    let mut rng = StdRng::seed_from_u64(6);
    let domains: Vec<String> = (0..20).map(|i| format!("d{i}{}", if i % 3 == 0 { ".m" } else { "" })).collect();
    let weights: Vec<f64> = (1..=20).map(|k| 1.0 / k as f64).collect();
    let total: f64 = weights.iter().sum();
    let mut per_domain = [0usize; 20];
    (0..n)
        .map(|_| {
            let mut x = rng.gen::<f64>() * total;
            let mut d = 0;
            while x > weights[d] && d < 19 {
                x -= weights[d];
                d += 1;
            }
            per_domain[d] += 1;
            let title = format!("Article_{}_{}", per_domain[d], "x".repeat(rng.gen_range(0..16)));
            let views: u64 = (1.0 / rng.gen::<f64>().max(1e-6)).min(1e6) as u64;
            let value = serde_json::json!({"domain": domains[d], "title": title, "views": views.max(1), "ts": hour});
            RawRecord {
                key: Some(domains[d].clone().into_bytes()),
                value: Some(value.to_string().into_bytes()),
                offset: 0,
                timestamp_ms: None,
            }
        })
        .collect()
}

fn main() {
    let lines: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(6_000_000);
    let recs = records(lines, H0);
    let bytes: usize = recs.iter().map(|r| r.value.as_ref().map_or(0, Vec::len)).sum();
    let cfg = Config::default();
    let metrics = Metrics::new();
    let mut p = PageviewsProcessor::new(
        &cfg.pageviews,
        Blacklist::new(),
        Arc::new(std::sync::atomic::AtomicI64::new(0)),
        &metrics,
        Arc::new(ManualClock::at_ms(H0)),
    );
    let mut out = Emit::default();
    let t = Instant::now();
    let mut n = 0u64;
    for r in &recs {
        n += p.decode(INPUT, r).expect("valid").views;
    }
    let decode = t.elapsed();
    println!("decode alone: {:.0} ns/line (checksum {n})", decode.as_nanos() as f64 / lines as f64);
    let before = rss_kb();
    let t = Instant::now();
    for (i, r) in recs.iter().enumerate() {
        let v = p.decode(INPUT, r).expect("valid");
        p.process(v, &RecordMeta { topic: INPUT, partition: 0, offset: i as i64, timestamp_ms: None }, &mut out);
    }
    let ingest = t.elapsed();
    let held = rss_kb().saturating_sub(before);
    let t = Instant::now();
    p.close_idle(&mut out);
    p.emit_trending(&mut out);
    let close = t.elapsed();
    println!(
        "{lines} lines ({:.0} MB of JSON values): decode + window + trending {:.2} s = {:.0} lines/s ({:.0} ns/line) on one core",
        bytes as f64 / 1e6,
        ingest.as_secs_f64(),
        lines as f64 / ingest.as_secs_f64(),
        ingest.as_nanos() as f64 / lines as f64
    );
    println!(
        "closing the hour (top 25 of 20 domains + trending views): {:.0} ms; {} records; open hour held {:.0} MB RSS ({:.0} bytes/line)",
        close.as_secs_f64() * 1000.0,
        out.records.len(),
        held as f64 / 1024.0,
        held as f64 * 1024.0 / lines as f64
    );
}
