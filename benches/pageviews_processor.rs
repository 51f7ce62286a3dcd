//! The pageviews pipeline on one core without Kafka: decode + hourly window + trending + top-N for
//! a real-size hour (about 6 million distinct (domain, title) lines, Zipf-distributed over 20
//! domains), then closing the hour (ranking every domain). Prints the rates and the resident
//! memory the open hour holds.
//!
//! Then the same hour again with durable state, as a durable task runs it: `take_changes` after
//! every `FLUSH_EVERY` records (about one `kafka.commit_interval` of one task's input),
//! printing the changelog records and bytes the hour writes, what `take_changes` costs next to
//! processing, and how long a fresh processor takes to `restore` the live entries of the
//! changelog at the end of the hour (then checks that both close the hour identically).
//!
//!   cargo bench --bench pageviews_processor [-- LINES]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pagepulse::clock::ManualClock;
use pagepulse::config::Config;
use pagepulse::engine::{Emit, Processor, RawRecord, RecordMeta};
use pagepulse::metrics::Metrics;
use pagepulse::pipelines::pageviews::{Blacklist, PageviewInput, PageviewsProcessor, INPUT};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const H0: i64 = 1_795_424_400_000;
/// Records between two flushes: one `kafka.commit_interval` (1 s) of input at an assumed 340k
/// records/s per task (about half the end-to-end rate in the README, spread over partitions).
const FLUSH_EVERY: usize = 340_000;

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
    let new_processor = || {
        PageviewsProcessor::new(
            &cfg.pageviews,
            Blacklist::new(),
            Arc::new(std::sync::atomic::AtomicI64::new(0)),
            &metrics,
            Arc::new(ManualClock::at_ms(H0)),
        )
    };
    let mut p = new_processor();
    let mut out = Emit::default();
    let t = Instant::now();
    let mut n = 0u64;
    for r in &recs {
        n += match p.decode(INPUT, r).expect("valid") {
            PageviewInput::View(v) => v.views,
            PageviewInput::Control(_) => 0,
        };
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
    drop((p, out));
    durable(&recs, &new_processor);
}

/// The hour again with durable state (see the module docs).
fn durable(recs: &[RawRecord], new_processor: &dyn Fn() -> PageviewsProcessor) {
    let lines = recs.len();
    let mut p = new_processor();
    p.restore(HashMap::new(), &mut Emit::default()); // as the engine does: this starts tracking
    let mut out = Emit::default();
    let (mut processing, mut taking, mut slowest) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let (mut written, mut bytes, mut tombstones, mut flushes) = (0u64, 0u64, 0u64, 0u64);
    let mut live: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    let mut changes = Vec::new();
    for (n, batch) in recs.chunks(FLUSH_EVERY).enumerate() {
        let t = Instant::now();
        for (i, r) in batch.iter().enumerate() {
            let v = p.decode(INPUT, r).expect("valid");
            let meta =
                RecordMeta { topic: INPUT, partition: 0, offset: (n * FLUSH_EVERY + i) as i64, timestamp_ms: None };
            p.process(v, &meta, &mut out);
        }
        processing += t.elapsed();
        let t = Instant::now();
        p.take_changes(&mut changes);
        let took = t.elapsed();
        taking += took;
        slowest = slowest.max(took);
        flushes += 1;
        for (k, v) in changes.drain(..) {
            written += 1;
            bytes += (k.len() + v.as_ref().map_or(0, Vec::len)) as u64;
            match v {
                Some(v) => live.insert(k, v),
                None => {
                    tombstones += 1;
                    live.remove(&k)
                }
            };
        }
    }
    println!(
        "durable: {lines} lines, take_changes every {FLUSH_EVERY} records ({flushes} flushes): {written} changelog records \
         ({tombstones} tombstones) + {flushes} position markers, {:.1} MB ({:.1} bytes/line, {:.4} records/line)",
        bytes as f64 / 1e6,
        bytes as f64 / lines as f64,
        (written + flushes) as f64 / lines as f64
    );
    println!(
        "durable: processing {:.2} s ({:.0} ns/line), take_changes {:.0} ms in all = {:.1}% of processing (slowest flush {:.0} ms)",
        processing.as_secs_f64(),
        processing.as_nanos() as f64 / lines as f64,
        taking.as_secs_f64() * 1000.0,
        100.0 * taking.as_secs_f64() / processing.as_secs_f64(),
        slowest.as_secs_f64() * 1000.0
    );
    let (entries, entry_bytes) = (live.len(), live.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>());
    let mut q = new_processor();
    let t = Instant::now();
    q.restore(live, &mut Emit::default());
    let restore = t.elapsed();
    println!(
        "durable: restore of the open hour ({entries} live entries, {:.1} MB) into a fresh processor: {:.2} s ({:.0} ns/line)",
        entry_bytes as f64 / 1e6,
        restore.as_secs_f64(),
        restore.as_nanos() as f64 / lines as f64
    );
    let (mut a, mut b) = (Emit::default(), Emit::default());
    p.close_idle(&mut a);
    p.emit_trending(&mut a);
    q.close_idle(&mut b);
    q.emit_trending(&mut b);
    assert!(!a.records.is_empty() && a.records == b.records, "the restored processor closes the hour identically");
    println!("durable: the restored processor closes the hour identically ({} records)", b.records.len());
}
