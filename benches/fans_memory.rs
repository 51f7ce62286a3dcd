//! Memory per tracked page: the rolling fan series after 30 days of 10-minute samples, and the
//! poll schedule entry. Prints bytes per page from the structures' own accounting and from the
//! process's resident set growth, and the size of the page's changelog value (its durable state).
//!
//!   cargo bench --bench fans_memory [-- PAGES]

use pagepulse::ops::series::{RollingFans, Sample};
use pagepulse::poll::scheduler::Schedule;

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let pages: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(2_000);
    const MIN: i64 = 60_000;
    let samples = 30 * 24 * 6; // 30 days every 10 minutes
    let before = rss_kb();
    let mut all = Vec::with_capacity(pages);
    let (mut heap, mut encoded) = (0usize, 0usize);
    for p in 0..pages {
        let mut r = RollingFans::new();
        for k in 0..samples {
            r.observe(Sample {
                at_ms: 1_790_000_000_000 + k as i64 * 10 * MIN,
                fans: 10_000 + (p as u64) + k as u64,
                followers: None,
            });
        }
        heap += r.heap_bytes();
        encoded += r.encoded_len();
        all.push(r);
    }
    let after = rss_kb();
    let per = heap / pages + std::mem::size_of::<RollingFans>();
    println!(
        "rolling series: {pages} pages x {samples} samples: {per} bytes/page by accounting, {} bytes/page by RSS growth; 1,000,000 pages = {:.1} GB",
        (after.saturating_sub(before) * 1024) as usize / pages,
        per as f64 * 1e6 / 1e9
    );
    println!("changelog value of such a page: {} bytes", encoded / pages);
    drop(all);

    let n = 1_000_000usize;
    let before = rss_kb();
    let mut s = Schedule::new(n);
    for i in 0..n {
        s.upsert(&format!("facebook:page-{i:07}"), 600_000, 1_790_000_000_000)
            .expect("valid interval, under the bound");
    }
    let after = rss_kb();
    println!(
        "poll schedule: {n} pages: {} bytes/page by accounting, {} bytes/page by RSS growth",
        s.heap_bytes_estimate() / n,
        (after.saturating_sub(before) * 1024) as usize / n
    );
}
