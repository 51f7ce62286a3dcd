//! Fan observations for the tests that stream them and check every `fans.stats` value against
//! an independent computation (crash loops, broker restarts), and a paced writer.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

const HOUR: i64 = 3_600_000;

/// RFC 3339 with milliseconds, as pagepulse writes times.
pub fn rfc(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).expect("valid").to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// One observation of a page.
#[derive(Clone)]
pub struct Obs {
    /// `facebook` or `mastodon`.
    pub platform: &'static str,
    /// The page id.
    pub page_id: String,
    /// Fans.
    pub fans: u64,
    /// Followers, if the platform has them.
    pub followers: Option<u64>,
    /// When observed, epoch ms.
    pub at: i64,
}

impl Obs {
    /// The page key, `<platform>:<page_id>`.
    pub fn key(&self) -> String {
        format!("{}:{}", self.platform, self.page_id)
    }
}

/// Checks a `fans.stats` value against the page's samples: the baseline of horizon `h` is the
/// latest sample at or before `now - h`, else the first sample (partial).
pub fn check_stats(v: &Value, samples: &[Obs], i: usize) -> Result<(), String> {
    let now = &samples[i];
    let delta = |h: i64| {
        let (base, partial) = match samples[..=i].iter().rev().find(|s| s.at <= now.at - h) {
            Some(s) => (s, false),
            None => (&samples[0], true),
        };
        serde_json::json!({"value": now.fans as i64 - base.fans as i64, "partial": partial,
            "since": rfc(base.at), "baseline_fans": base.fans})
    };
    let want = [
        ("fans", serde_json::json!(now.fans)),
        ("followers", serde_json::json!(now.followers)),
        ("observed_at", serde_json::json!(rfc(now.at))),
        ("delta_1h", delta(HOUR)),
        ("delta_24h", delta(24 * HOUR)),
        ("delta_7d", delta(7 * 24 * HOUR)),
    ];
    for (field, w) in want {
        if v[field] != w {
            return Err(format!("{field}: got {} want {w}", v[field]));
        }
    }
    let d24 = delta(24 * HOUR);
    let pct = d24["value"].as_f64().unwrap_or(0.0) / d24["baseline_fans"].as_f64().unwrap_or(1.0) * 100.0;
    match v["growth_24h_pct"].as_f64() {
        Some(got) if (got - pct).abs() < 1e-9 => Ok(()),
        got => Err(format!("growth_24h_pct: got {got:?} want {pct}")),
    }
}

/// Calls `send(i)` for `i` in `0..total` evenly over `over` (pacing the input, not waiting for
/// results), or for the rest at once after `hurry` is set; `sent` counts the calls made.
pub fn pace(total: usize, over: Duration, sent: &AtomicUsize, hurry: &AtomicBool, mut send: impl FnMut(usize)) {
    let started = Instant::now();
    let mut i = 0;
    while i < total {
        let due = match hurry.load(Ordering::Acquire) {
            true => total,
            false => ((started.elapsed().as_secs_f64() / over.as_secs_f64()) * total as f64).ceil() as usize,
        };
        while i < due.min(total) {
            send(i);
            i += 1;
        }
        sent.store(i, Ordering::Release);
        // Pacing the producer to its steady rate, not a wait for a result.
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `pages` pages (every tenth a Mastodon account), each observed once an hour for `hours` hours
/// from `t0` (at most one sample per 10-minute bucket, so every delta is exact), growing or
/// shrinking at its own pace: every page's samples (oldest first, by page key), and every
/// observation by time.
pub fn observations(
    rng: &mut rand::rngs::StdRng,
    pages: usize,
    hours: i64,
    t0: i64,
) -> (std::collections::BTreeMap<String, Vec<Obs>>, Vec<Obs>) {
    use rand::Rng;
    const MIN: i64 = 60_000;
    let mut all = Vec::new();
    let mut samples: std::collections::BTreeMap<String, Vec<Obs>> = Default::default();
    for p in 0..pages {
        let (platform, page_id) = if p % 10 == 9 {
            ("mastodon", format!("@user{p}@example.social"))
        } else {
            ("facebook", format!("page-{p:04}"))
        };
        let phase = rng.gen_range(0..50 * MIN);
        let trend: i64 = rng.gen_range(-5..=25);
        let mut fans: i64 = 1000 + p as i64 * 37;
        for k in 0..hours {
            fans = (fans + trend + rng.gen_range(-10..=10)).max(1);
            let followers = (platform == "facebook").then(|| fans as u64 + p as u64);
            let at = t0 + k * HOUR + phase + rng.gen_range(0..5 * MIN);
            let o = Obs { platform, page_id: page_id.clone(), fans: fans as u64, followers, at };
            samples.entry(o.key()).or_default().push(o.clone());
            all.push(o);
        }
    }
    all.sort_by_key(|o| o.at);
    (samples, all)
}
