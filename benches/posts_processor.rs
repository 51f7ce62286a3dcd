//! In-process cost of the posts pipeline's logic on one core, without Kafka or actors: decode +
//! analyse + encode, and the trending merge. Prints records per second.
//!
//!   cargo bench --bench posts_processor [-- N]

use std::sync::Arc;
use std::time::Instant;

use pagepulse::cli::demo::post;
use pagepulse::clock::SystemClock;
use pagepulse::config::Config;
use pagepulse::engine::{Aggregate, Emit, Processor, RawRecord, RecordMeta};
use pagepulse::metrics::Metrics;
use pagepulse::pipelines::posts::{self, HashtagTrending, PostsProcessor};
use rand::SeedableRng;

fn main() {
    let n: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(1_000_000);
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let created = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let records: Vec<RawRecord> = (0..n as u64)
        .map(|i| RawRecord {
            key: Some(format!("b-{i}").into_bytes()),
            value: Some(post(&mut rng, i, "b", 100, &created, 8).into_bytes()),
            offset: i as i64,
            timestamp_ms: Some(0),
        })
        .collect();
    let bytes: usize = records.iter().map(|r| r.value.as_ref().map_or(0, Vec::len)).sum();
    let cfg = Config::default();
    let mut p = PostsProcessor::new(&cfg.posts, Arc::new(SystemClock));
    let mut trending = HashtagTrending::new(&cfg.posts, Metrics::new());
    let mut out = Emit::default();
    let mut out_bytes = 0usize;
    let t = Instant::now();
    for chunk in records.chunks(2000) {
        for rec in chunk {
            let post = p.decode(posts::INPUT, rec).expect("demo posts are valid");
            let meta =
                RecordMeta { topic: posts::INPUT, partition: 0, offset: rec.offset, timestamp_ms: rec.timestamp_ms };
            p.process(post, &meta, &mut out);
        }
        out_bytes += out.records.iter().map(|r| r.value.as_ref().map_or(0, Vec::len)).sum::<usize>();
        out.records.clear();
        trending.merge(&mut out.parts);
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "posts processor: {n} posts ({:.1} MB in, {:.1} MB out) in {secs:.3} s: {:.0} posts/s per core ({:.2} µs/post)",
        bytes as f64 / 1e6,
        out_bytes as f64 / 1e6,
        n as f64 / secs,
        secs * 1e6 / n as f64
    );
}
