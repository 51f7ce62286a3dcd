//! Nothing accepted is lost when pagepulse is stopped mid-stream: gracefully with SIGTERM (exit 0
//! within 10 s, offsets committed) and abruptly with SIGKILL. After restarts every post id has an
//! analysis (duplicates are allowed, loss is not).

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use support::TestEnv;

const N: usize = 40_000;

#[test]
fn sigterm_and_sigkill_mid_stream_lose_nothing() {
    let env = TestEnv::new();
    // A steady stream for about 8 s, so both stops land while records are still arriving.
    let mut producer = env
        .cli(&["demo", "posts", "--rate", "5000", "--count", &N.to_string(), "--id-prefix", "c", "--size", "120"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start demo producer");

    let produced = |pp: &support::Pagepulse| pp.metric("pagepulse_records_produced_total", "topic=\"posts.analysis\"");

    // 1. Graceful stop mid-stream.
    let mut pp = env.start();
    pp.wait_ready(Duration::from_secs(60));
    support::wait_for("first analyses", Duration::from_secs(60), || (produced(&pp) >= 3000.0).then_some(()));
    let done_before_term = produced(&pp) as i64;
    let asked = Instant::now();
    pp.signal(libc::SIGTERM);
    let status = pp.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "SIGTERM must exit 0, got {status}; log:\n{}", pp.log_text());
    assert!(asked.elapsed() < Duration::from_secs(10));
    let committed: i64 = env.committed("posts", 4).iter().sum();
    assert!(
        committed >= done_before_term,
        "graceful stop commits what it finished: committed {committed} < {done_before_term} already analysed"
    );

    // 2. Crash mid-stream.
    let mut pp = env.start();
    pp.wait_ready(Duration::from_secs(60));
    support::wait_for("analyses after restart", Duration::from_secs(60), || (produced(&pp) >= 2000.0).then_some(()));
    pp.signal(libc::SIGKILL);
    pp.wait_exit(Duration::from_secs(5));

    // 3. Restart and let it catch up.
    let mut pp = env.start();
    pp.wait_ready(Duration::from_secs(90));
    let st = producer.wait().expect("demo producer exits");
    assert!(st.success(), "demo producer failed");

    let mut ids: HashSet<String> = HashSet::new();
    let mut seen = 0;
    let all = env.read_until("posts.analysis", Duration::from_secs(120), |recs| {
        for r in &recs[seen..] {
            ids.insert(String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned());
        }
        seen = recs.len();
        ids.len() >= N
    });
    for n in 0..N {
        assert!(ids.contains(&format!("c-{n}")), "post c-{n} has no analysis");
    }
    assert!(all.len() >= N);
    eprintln!("{} analyses for {N} posts ({} duplicates after the crash)", all.len(), all.len() - N);
    pp.signal(libc::SIGTERM);
    assert!(pp.wait_exit(Duration::from_secs(10)).success());
}

/// The library's handle: `app::start` runs pagepulse in this process, and
/// `Running::shutdown(deadline)` stops it through the same ordered path as a signal: every
/// post produced before the stop is analysed, acknowledged and committed, within the deadline.
#[test]
fn the_running_handle_shuts_down_in_order_within_its_deadline() {
    let env = TestEnv::new();
    let mut cfg = env.config();
    cfg.kafka.session_timeout = Duration::from_secs(6);
    cfg.http.listen = "127.0.0.1:0".parse().expect("address");
    cfg.pages.enabled = false;
    let out = env
        .cli(&["demo", "posts", "--rate", "0", "--count", "3000", "--id-prefix", "h"])
        .output()
        .expect("demo producer");
    assert!(out.status.success());
    actix_rt::System::new().block_on(async {
        let running = pagepulse::app::start(cfg).await.expect("pagepulse starts");
        let addr = running.addr().to_string();
        let analysed = || {
            support::http_get(&addr, "/metrics")
                .map(|(_, body)| {
                    support::metric_value(&body, "pagepulse_records_produced_total", "topic=\"posts.analysis\"")
                })
                .unwrap_or(0.0)
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        while analysed() < 3000.0 {
            assert!(tokio::time::Instant::now() < deadline, "3000 analyses within 90 s");
            tokio::time::sleep(support::POLL_INTERVAL).await;
        }
        let asked = Instant::now();
        let stopped = running.shutdown(tokio::time::Instant::now() + Duration::from_secs(15)).await;
        assert!(stopped.is_ok(), "a clean stop: {stopped:?}");
        assert!(asked.elapsed() < Duration::from_secs(15));
        assert!(support::http_get(&addr, "/metrics").is_none(), "the HTTP endpoint is stopped too");
    });
    let committed: i64 = env.committed("posts", 4).iter().sum();
    assert_eq!(committed, 3000, "every analysed post's offset is committed");
}
