//! Memory per tracked page, all in: the rolling fan series after 30 days of 10-minute samples,
//! its entry in the partition's page map (key and `Page`), its two ranking entries, and
//! separately the poll schedule entry. Prints bytes per page from the structures' own
//! accounting and from the process's resident set growth, for (a) exact, regular poll times and
//! (b) times jittered by 0-100 ms (a poller stamps an observation with its completion time), fans
//! growing by 0-20 a sample; and the size of the page's changelog value (its durable state).
//!
//!   cargo bench --bench fans_memory [-- PAGES]
//!
//! `--pages N` builds N pages with full 30-day histories the way a restore does (decoding one of
//! 1,000 encoded histories per page, with its own key, into one page map with the rankings), and
//! prints the resident memory per page; it stops before the process would pass `--max-rss-gb`
//! (default 20). `--jitter` uses jittered histories there.
//!
//!   cargo bench --bench fans_memory -- --pages 10000000 [--jitter] [--max-rss-gb 20]

use std::cmp::Reverse;
use std::collections::BTreeSet;
use std::mem::size_of;
use std::sync::Arc;
use std::time::Instant;

use pagepulse::ops::series::{RollingFans, Sample};
use pagepulse::pipelines::fans::page::Page;
use pagepulse::pipelines::fans::store::{page_map, PageMap, Ranked};
use pagepulse::poll::scheduler::Schedule;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The allocator the binary uses (`src/main.rs`), so that sizes are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const MIN: i64 = 60_000;
const T0: i64 = 1_790_000_000_000;
const SAMPLES: i64 = 30 * 24 * 6;

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// 30 days every 10 minutes at a random phase; times exact, or plus 0-100 ms; fans +0..20.
fn history(rng: &mut StdRng, jitter: bool) -> RollingFans {
    let phase = rng.gen_range(0..10 * MIN);
    let mut fans = rng.gen_range(1_000..5_000_000u64);
    let mut r = RollingFans::new();
    for k in 0..SAMPLES {
        fans += rng.gen_range(0..=20);
        let at_ms = T0 + phase + k * 10 * MIN + if jitter { rng.gen_range(0..100) } else { 0 };
        r.observe(Sample { at_ms, fans, followers: Some(fans / 3) });
    }
    r
}

fn key(i: usize) -> String {
    format!("facebook:page-{i:08}")
}

/// What a partition holds for `pages`: the map and the two ranking indexes, built the way
/// `FansStore::restore` and `FansProcessor::restore` build them.
struct Partition {
    map: PageMap,
    by_growth: BTreeSet<Ranked>,
    by_delta: BTreeSet<Ranked>,
}

fn partition(n: usize, mut series: impl FnMut(usize) -> RollingFans) -> Partition {
    let map = page_map(n);
    let (mut g, mut d) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        let s = series(i);
        let stats = s.stats().expect("a full history");
        let page = Page::of(s, Some(&stats));
        let k: Arc<str> = key(i).into();
        if let Some(x) = page.growth {
            g.push((x, Reverse(k.clone())));
        }
        if let Some(x) = page.delta {
            d.push((x, Reverse(k.clone())));
        }
        map.insert(k, Box::new(page));
    }
    g.sort_unstable();
    d.sort_unstable();
    Partition { map, by_growth: BTreeSet::from_iter(g), by_delta: BTreeSet::from_iter(d) }
}

fn all_in(pages: usize, jitter: bool) {
    let label = if jitter { "(b) times +0-100 ms" } else { "(a) exact regular times" };
    let mut rng = StdRng::seed_from_u64(u64::from(jitter));
    let rss0 = rss_kb();
    let series: Vec<RollingFans> = (0..pages).map(|_| history(&mut rng, jitter)).collect();
    let rss1 = rss_kb();
    let heap: usize = series.iter().map(RollingFans::heap_bytes).sum::<usize>() / pages;
    let encoded: usize = series.iter().map(RollingFans::encoded_len).sum::<usize>() / pages;
    // The same series moved into a partition's structures (keys, pages, rankings).
    let mut it = series.into_iter();
    let rss2a = rss_kb();
    let p = partition(pages, |_| it.next().expect("one per page"));
    let rss2 = rss_kb();
    let per = |kb: u64| (kb * 1024) as f64 / pages as f64;
    let slot = size_of::<(Arc<str>, Page)>();
    let buckets = p.map.capacity() * 8 / 7;
    let key_heap = (16 + key(0).len()).next_multiple_of(8);
    println!("{label}, {pages} pages x {SAMPLES} samples:");
    println!(
        "  series: {heap} heap bytes/page + {} inline (size_of RollingFans); {:.0} bytes/page by RSS growth; changelog value {encoded} B",
        size_of::<RollingFans>(),
        per(rss1.saturating_sub(rss0))
    );
    // The series' inline parts moved from the vector into the map's slots.
    let all = per(rss1.saturating_sub(rss0)) - size_of::<RollingFans>() as f64 + per(rss2.saturating_sub(rss2a));
    println!(
        "  all in (series, key, Page in the map, two ranking entries): {all:.0} bytes/page by RSS growth \
         (the map, keys and rankings: {:.0})",
        per(rss2.saturating_sub(rss2a)),
    );
    println!(
        "  by accounting: Page {} B inline, map slot (Arc<str>, Page) {slot} B x {:.2} slots/page (table capacity {}) \
         + 1 control byte, key {key_heap} B on the heap, ranking entry {} B x 2 (+ B-tree nodes)",
        size_of::<Page>(),
        buckets as f64 / pages as f64,
        p.map.capacity(),
        size_of::<Ranked>(),
    );
    drop(p);
}

fn many(pages: usize, jitter: bool, max_rss_kb: u64) {
    let mut rng = StdRng::seed_from_u64(7);
    let templates: Vec<Vec<u8>> = (0..1000.min(pages))
        .map(|_| {
            let mut buf = Vec::new();
            history(&mut rng, jitter).encode(&mut buf);
            buf
        })
        .collect();
    let rss0 = rss_kb();
    let t = Instant::now();
    let mut built = 0;
    let p = partition(pages, |i| {
        if i % 100_000 == 0 && rss_kb() > max_rss_kb {
            panic!("stopped at {i} pages: RSS {} MB would pass the limit", rss_kb() / 1024);
        }
        built = i + 1;
        RollingFans::decode(&templates[i % templates.len()]).expect("decodes")
    });
    let spent = t.elapsed();
    let rss1 = rss_kb();
    println!(
        "{pages} pages with 30 days of 10-minute history ({}): built in {:.1} s ({:.2} µs/page: decode, map, \
         rankings); RSS {} MB, {:.0} bytes/page by RSS growth; {} pages in the map",
        if jitter { "times +0-100 ms" } else { "exact times" },
        spent.as_secs_f64(),
        spent.as_secs_f64() * 1e6 / built as f64,
        rss1 / 1024,
        (rss1.saturating_sub(rss0) * 1024) as f64 / pages as f64,
        p.map.len(),
    );
    assert_eq!((p.by_delta.len(), p.by_growth.len()), (pages, pages));
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)?.parse::<u64>().ok());
    let jitter = args.iter().any(|a| a == "--jitter");
    if let Some(n) = flag("--pages") {
        let max = flag("--max-rss-gb").unwrap_or(20);
        many(n as usize, jitter, max * 1024 * 1024);
        return;
    }
    let pages: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(2_000);
    all_in(pages, false);
    all_in(pages, true);

    let n = 1_000_000usize;
    let before = rss_kb();
    let mut s = Schedule::new(n);
    for i in 0..n {
        s.upsert(&format!("facebook:page-{i:07}"), 600_000, 1_790_000_000_000)
            .expect("valid interval, under the bound");
    }
    let after = rss_kb();
    println!(
        "poll schedule (counted separately): {n} pages: {} bytes/page by accounting, {} bytes/page by RSS growth",
        s.heap_bytes_estimate() / n,
        (after.saturating_sub(before) * 1024) as usize / n
    );
}
