//! In-process cost of the apps pipeline's logic on one core, without Kafka or actors: decode +
//! match every post against the catalogue + count, and the aggregate's merge, next to the posts
//! processor on the same posts (the ratio the benchmark is about). The catalogue is
//! `../shared/data/AppleStore.csv` if present (or the file given as `--csv PATH`), else a
//! generated one of 7,197 apps. Prints records per second.
//!
//!   cargo bench --bench apps_processor [-- N] [--csv PATH] [--apps-only]
//!
//! `--apps-only` skips the posts processor (to profile the apps processor alone).

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use pagepulse::cli::demo::post;
use pagepulse::clock::SystemClock;
use pagepulse::config::Config;
use pagepulse::engine::{Aggregate, Emit, Processor, RawRecord, RecordMeta};
use pagepulse::ingest::apps::{encode, Layout, Rows};
use pagepulse::metrics::Metrics;
use pagepulse::pipelines::apps::matcher::Scratch;
use pagepulse::pipelines::apps::{
    decode_app, AppsAggregate, Catalogue, CatalogueChange, MentionsProcessor, MentionsSetup,
};
use pagepulse::pipelines::posts::{self, HashtagTrending, PostsProcessor};
use rand::SeedableRng;

/// As the binary runs (src/main.rs).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The catalogue CSV's bytes: the given file, the real data set next to the repository, or a
/// generated catalogue of the real one's size.
fn catalogue_csv(arg: Option<PathBuf>) -> (String, Vec<u8>) {
    let real = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/AppleStore.csv");
    match arg.or_else(|| real.exists().then_some(real)) {
        Some(p) => (p.display().to_string(), std::fs::read(&p).expect("readable catalogue")),
        None => {
            let mut out = Vec::new();
            pagepulse::ingest::apps_generate::write_catalogue(&mut out, 7197, 1).expect("in memory");
            ("generated (7197 apps)".into(), out)
        }
    }
}

fn load(csv: &[u8]) -> Arc<Catalogue> {
    let catalogue = Catalogue::new(1_000_000, Arc::new(AtomicBool::new(true)));
    let (mut rows, mut layout, mut value) = (Rows::new(), None::<Layout>, Vec::new());
    for (i, line) in csv.split_inclusive(|b| *b == b'\n').enumerate() {
        let Some((_, row)) = rows.push(i as u64 + 1, line) else { continue };
        let fields = row.expect("a valid row");
        let Some(l) = &layout else {
            layout = Some(Layout::from_header(&fields).expect("a catalogue header"));
            continue;
        };
        let app = l.app(&fields).expect("a valid app");
        encode(&app, &mut value);
        let rec = RawRecord {
            key: Some(app.id.clone().into_bytes()),
            value: Some(value.clone()),
            offset: 0,
            timestamp_ms: None,
        };
        if let CatalogueChange::Upsert(app) = decode_app(&rec).expect("a valid record") {
            catalogue.upsert(app).expect("room");
        }
    }
    catalogue
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(1_000_000);
    let csv_arg = args.iter().position(|a| a == "--csv").and_then(|i| args.get(i + 1)).map(PathBuf::from);
    let (source, csv) = catalogue_csv(csv_arg);
    let catalogue = load(&csv);
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
    let cfg = Config::default();
    let meta = |rec: &RawRecord| RecordMeta {
        topic: posts::INPUT,
        partition: 0,
        offset: rec.offset,
        timestamp_ms: rec.timestamp_ms,
    };

    let apps_only = args.iter().any(|a| a == "--apps-only");
    // The posts processor, as benches/posts_processor.rs runs it.
    let mut p = PostsProcessor::new(&cfg.posts, Arc::new(SystemClock));
    let mut trending = HashtagTrending::new(&cfg.posts, Metrics::new());
    let mut out = Emit::default();
    let t = Instant::now();
    for chunk in records.chunks(2000).filter(|_| !apps_only) {
        for rec in chunk {
            let post = p.decode(posts::INPUT, rec).expect("demo posts are valid");
            p.process(post, &meta(rec), &mut out);
        }
        out.records.clear();
        trending.merge(&mut out.parts);
    }
    let posts_secs = t.elapsed().as_secs_f64();

    // The apps processor and its aggregate.
    let setup = MentionsSetup {
        catalogue: catalogue.clone(),
        max_content_bytes: cfg.posts.max_content_bytes,
        dead_letters: false,
        bucket_ms: cfg.apps.mentions_bucket.as_millis() as i64,
        clock: Arc::new(SystemClock),
        metrics: Metrics::new(),
    };
    let mut a = MentionsProcessor::new(0, setup);
    let mut agg = AppsAggregate::new(catalogue.clone(), &cfg.apps);
    let mut out = Emit::default();
    let mut hits = 0usize;
    let t = Instant::now();
    for chunk in records.chunks(2000) {
        for rec in chunk {
            let input = a.decode(posts::INPUT, rec).expect("demo posts are valid");
            a.process(input, &meta(rec), &mut out);
        }
        hits += out.parts.len();
        agg.merge(&mut out.parts);
    }
    let apps_secs = t.elapsed().as_secs_f64();

    // Its parts: decoding alone, then decoding and matching (no counting).
    let t = Instant::now();
    let mut chars = 0usize;
    for rec in &records {
        chars += posts::decode_post(rec, cfg.posts.max_content_bytes).expect("valid").content.len();
    }
    let decode_secs = t.elapsed().as_secs_f64();
    let (mut scratch, mut slots, mut found) = (Scratch::default(), Vec::new(), Vec::new());
    let t = Instant::now();
    for rec in &records {
        let post = posts::decode_post(rec, cfg.posts.max_content_bytes).expect("valid");
        found.clear();
        catalogue.mentioned(&post.content, &mut scratch, &mut slots, &mut found);
        chars += found.len();
    }
    let match_secs = t.elapsed().as_secs_f64() - decode_secs;
    std::hint::black_box(chars);
    println!("catalogue: {source}: {} apps", catalogue.len());
    for (name, secs) in [("posts processor", posts_secs), ("apps processor", apps_secs)] {
        println!(
            "{name}: {n} posts in {secs:.3} s: {:.0} posts/s per core ({:.3} µs/post)",
            n as f64 / secs,
            secs * 1e6 / n as f64
        );
    }
    println!(
        "apps processor parts: decode {:.3} µs/post, match {:.3} µs/post, count and merge {:.3} µs/post",
        decode_secs * 1e6 / n as f64,
        match_secs * 1e6 / n as f64,
        (apps_secs - decode_secs - match_secs) * 1e6 / n as f64
    );
    println!(
        "apps: {hits} mentions; apps / posts cost {:.2}; both on one core: {:.0} posts/s",
        apps_secs / posts_secs,
        n as f64 / (apps_secs + posts_secs)
    );
}
