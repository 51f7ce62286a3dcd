//! Cost of one `fans.observations` record through the fans processor on one core, without Kafka
//! or actors: decode, rolling series, rankings and the `fans.stats` value. Pages are observed
//! every 10 minutes for `DAYS` days, all pages at each step (the order a poller produces them),
//! so the later observations run against full 30-day series. Also prints the resident memory per
//! page the processor holds. Then one more day runs while another thread reads random pages the
//! way `/pages/{key}` does (figures, chart and rows, serialized to JSON), to show what queries cost
//! and what they cost the writer.
//!
//! Then the durable state (`--state-only` runs just this part): for `STATE_PAGES` pages (default
//! 1,000,000) with (a) 3 samples and (b) 24 h of 10-minute samples each, the changelog of a full
//! flush (bytes, per page), the time of `take_changes` for all pages, and the time to `restore`
//! them into a fresh processor (decode, insert, rankings; the pages are queryable when it
//! returns), decode alone timed separately; and (c) pages with 30 days of history, for
//! `STATE_PAGES / 10` pages (a million would need ~10 GB twice over).
//!
//!   cargo bench --bench fans_processor [-- PAGES [DAYS [STATE_PAGES]]] [--state-only]

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pagepulse::config::Config;
use pagepulse::engine::state::Entries;
use pagepulse::engine::{Emit, Processor, RawRecord, RecordMeta};
use pagepulse::ops::series::{RollingFans, Sample};
use pagepulse::pipelines::fans::live::{Detail, FansLive};
use pagepulse::pipelines::fans::FansConfig;
use pagepulse::pipelines::fans::{self, FansProcessor, Observation};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The allocator the binary uses (`src/main.rs`), so that restore times are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    let state_pages = args.next().unwrap_or(1_000_000);
    if !std::env::args().any(|a| a == "--state-only") {
        processing_and_queries(pages, days);
    }
    durable_state(state_pages);
}

fn processing_and_queries(pages: usize, days: i64) {
    let steps = days * 24 * 6;
    let cfg = Config::default();
    let before = rss_kb();
    let state = FansLive::new(cfg.fans.top_n);
    let mut p = FansProcessor::new(0, &cfg.fans).with_live(&state);
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

/// This thread's CPU time so far: (user, system) seconds. On this shared 2-core VM wall times
/// vary with the other load, and first touches of fresh memory (the kernel zeroing pages) cost
/// far more system time than on bare metal, so both are printed next to the wall time.
fn cpu() -> (f64, f64) {
    // SAFETY: getrusage only writes the struct it is given.
    let mut r: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut r) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (secs(r.ru_utime), secs(r.ru_stime))
}

/// Runs `f`, returning its result and "W s (U user, S sys)".
fn timed<T>(f: impl FnOnce() -> T) -> (T, f64, String) {
    let (u0, s0) = cpu();
    let t = Instant::now();
    let out = f();
    let wall = t.elapsed().as_secs_f64();
    let (u1, s1) = cpu();
    (out, wall, format!("{wall:.2} s ({:.2} user, {:.2} sys)", u1 - u0, s1 - s0))
}

/// Page `p`'s key.
fn page_key(p: usize) -> String {
    format!("facebook:page-{p:07}")
}

/// A plausible page: a random walk of fans (+0..40 per 10 minutes from a page-dependent base),
/// followers a little above, times at a page-dependent phase plus up to ±`jitter_ms`.
fn history(rng: &mut StdRng, samples: i64, jitter_ms: i64) -> Vec<Sample> {
    let phase = rng.gen_range(0..10 * MIN);
    let mut fans = rng.gen_range(100..5_000_000u64);
    (0..samples)
        .map(|k| {
            fans += rng.gen_range(0..40);
            let jitter = if jitter_ms > 0 { rng.gen_range(-jitter_ms..=jitter_ms) } else { 0 };
            Sample { at_ms: T0 + phase + k * 10 * MIN + jitter, fans, followers: Some(fans + fans / 20) }
        })
        .collect()
}

fn observe(p: &mut FansProcessor, key: &str, s: Sample, out: &mut Emit<fans::PartitionTop>) {
    let (platform, page_id) = key.split_once(':').expect("a page key");
    let obs = Observation {
        platform: Cow::Borrowed(platform),
        page_id: Cow::Borrowed(page_id),
        fans: s.fans,
        followers: s.followers,
        observed_at_ms: s.at_ms,
    };
    let meta = RecordMeta { topic: fans::INPUT, partition: 0, offset: 0, timestamp_ms: None };
    p.process(obs, &meta, out);
    out.records.clear();
}

/// One state scenario: `pages` processed pages, flushed in full, restored into a fresh processor.
/// `build` fills the first processor (every page dirty when it returns).
fn flush_and_restore(label: &str, pages: usize, cfg: &FansConfig, build: impl FnOnce(&mut FansProcessor)) {
    let rss0 = rss_kb();
    let state_b = FansLive::new(cfg.top_n);
    let mut b = FansProcessor::new(0, cfg).with_live(&state_b);
    let t = Instant::now();
    build(&mut b);
    let built = t.elapsed();
    let rss_b = rss_kb();
    let probe: Vec<String> = (0..pages).step_by((pages / 1000).max(1)).map(page_key).collect();
    let probe_refs: Vec<&str> = probe.iter().map(String::as_str).collect();
    let want = state_b.pages(&probe_refs, Detail::Full);
    let want_top = b.top(0);

    let mut changes = Vec::new();
    let ((), take, take_cpu) = timed(|| b.take_changes(&mut changes));
    assert_eq!(changes.len(), pages, "every page was dirty");
    let bytes: usize = changes.iter().map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len)).sum();
    let values: usize = changes.iter().map(|(_, v)| v.as_ref().map_or(0, Vec::len)).sum();
    drop((b, state_b));

    // What the replay hands to restore: the live entries in a map.
    let t = Instant::now();
    let entries: Entries =
        changes.into_iter().map(|(k, v)| (k, v.expect("no tombstones in a full flush"))).collect::<HashMap<_, _>>();
    let mapped = t.elapsed();
    let t = Instant::now();
    let decoded = entries.values().filter(|v| RollingFans::decode(v).is_ok()).count();
    let decode = t.elapsed();
    assert_eq!(decoded, pages);

    let state_c = FansLive::new(cfg.top_n);
    let mut c = FansProcessor::new(0, cfg).with_live(&state_c);
    let ((), restore, restore_cpu) = timed(|| c.restore(entries, &mut Emit::default()));
    assert_eq!((c.pages(), c.corrupt_entries()), (pages, 0));
    assert!(state_c.pages(&probe_refs, Detail::Full) == want, "the restored pages answer queries as before");
    assert!(c.top(0) == want_top, "the restored rankings are the same");
    println!(
        "{label}: {pages} pages (built in {:.1} s, {} MB RSS)\n  full flush: {:.1} MB = {:.1} bytes/page ({:.1} of them \
         the value)\n  take_changes: {take_cpu} = {:.2} µs/page\n  restore: {restore_cpu} = {:.2} µs/page (decode \
         alone, into reused memory: {:.2} s; the rest is allocating, inserting, ranking)\n  (building the entries map \
         for restore: {:.2} s; RSS after: {} MB)",
        built.as_secs_f64(),
        rss_b.saturating_sub(rss0) / 1024,
        bytes as f64 / 1e6,
        bytes as f64 / pages as f64,
        values as f64 / pages as f64,
        take * 1e6 / pages as f64,
        restore * 1e6 / pages as f64,
        decode.as_secs_f64(),
        mapped.as_secs_f64(),
        rss_kb() / 1024,
    );
}

/// Fills `p` with `pages` pages of `samples` samples each. The first `samples - 1` are restored
/// from encoded histories (replaying 144 million observations through `process` would take
/// about six minutes of the bench; the restore makes the same state, as the unit tests check); the
/// last one is processed, so every page
/// is dirty and its changelog value is what processing wrote. The histories are 1,000 random
/// walks, page `p` taking walk `p % 1000` with its two newest counts raised by `p`, so that every
/// value differs.
fn fill(p: &mut FansProcessor, pages: usize, samples: i64) {
    let mut rng = StdRng::seed_from_u64(samples as u64);
    let walks: Vec<Vec<Sample>> = (0..1000.min(pages)).map(|_| history(&mut rng, samples, 0)).collect();
    let shifted = |page: usize, s: &Sample| Sample { fans: s.fans + page as u64, ..*s };
    let series: Vec<RollingFans> = walks
        .iter()
        .map(|walk| {
            let mut r = RollingFans::new();
            walk[..walk.len() - 1].iter().for_each(|s| {
                r.observe(*s);
            });
            r
        })
        .collect();
    let mut entries = Entries::with_capacity(pages);
    let mut buf = Vec::new();
    for page in 0..pages {
        let w = page % walks.len();
        let mut r = series[w].clone();
        // The same time with more fans: the duplicate rule makes it the newest sample.
        r.observe(shifted(page, &walks[w][walks[w].len() - 2]));
        buf.clear();
        r.encode(&mut buf);
        entries.insert(page_key(page).into_bytes(), buf.clone());
    }
    p.restore(entries, &mut Emit::default());
    let mut out = Emit::default();
    for page in 0..pages {
        let w = page % walks.len();
        observe(p, &page_key(page), shifted(page, &walks[w][walks[w].len() - 1]), &mut out);
    }
}

fn durable_state(pages: usize) {
    let mut cfg = Config::default().fans;
    cfg.max_pages_per_partition = pages.max(1);
    println!("durable state (changelog of the fans store), one core, no Kafka:");
    flush_and_restore("(a) 3 samples each, every 10 min", pages, &cfg, |p| {
        let mut rng = StdRng::seed_from_u64(1);
        let walks: Vec<Vec<Sample>> = (0..pages).map(|_| history(&mut rng, 3, 0)).collect();
        let mut out = Emit::default();
        for k in 0..3 {
            for (page, walk) in walks.iter().enumerate() {
                observe(p, &page_key(page), walk[k], &mut out);
            }
        }
    });
    flush_and_restore("(b) 24 h every 10 min (144 samples each)", pages, &cfg, |p| fill(p, pages, 144));
    let month = pages / 10;
    cfg.max_pages_per_partition = month.max(1);
    flush_and_restore("(c) 30 d every 10 min (4,320 samples each)", month, &cfg, |p| fill(p, month, 30 * 144));
    // Per page, also with timing jitter as a real poller's observations have.
    let mut rng = StdRng::seed_from_u64(9);
    let mut sizes = Vec::new();
    for (what, n) in [("1 sample", 1), ("3 samples", 3), ("24 h", 144), ("30 d", 30 * 144)] {
        for jitter in [0, 2_000] {
            let mut r = RollingFans::new();
            history(&mut rng, n, jitter).into_iter().for_each(|s| {
                r.observe(s);
            });
            sizes.push(format!("{what} ±{} s: {} B", jitter / 1000, r.encoded_len()));
        }
    }
    println!("encoded value per page (10-minute cadence, times exact or jittered): {}", sizes.join(", "));
}
