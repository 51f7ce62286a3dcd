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

// The allocator of the `pagepulse` binary, so the figures are those of production.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// CPU time of this thread: unlike wall time, not inflated by other work on a busy machine.
fn thread_cpu() -> std::time::Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec for the call to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

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
    let (t, cpu) = (Instant::now(), thread_cpu());
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
    let (secs, cpu_secs) = (t.elapsed().as_secs_f64(), (thread_cpu() - cpu).as_secs_f64());
    println!(
        "posts processor: {n} posts ({:.1} MB in, {:.1} MB out) in {secs:.3} s: {:.0} posts/s per core ({:.2} µs/post; \
         thread CPU {:.2} µs/post)",
        bytes as f64 / 1e6,
        out_bytes as f64 / 1e6,
        n as f64 / secs,
        secs * 1e6 / n as f64,
        cpu_secs * 1e6 / n as f64
    );
}
