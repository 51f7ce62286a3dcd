//! Any instance answers any key (issue 16, item 2), through the real broker: three pagepulse
//! instances in one group, each on its own loopback port, split the partitions of
//! `fans.observations`. Every page is asked of every instance; the instance that does not hold
//! its partition forwards the read to the one that does (with the cluster secret, so the client's
//! token is checked once), and the answer must equal the page's last observation, computed here.
//!
//! Then one instance is SIGKILLed and, later, one joins: throughout, every answer is either the
//! right one or a `503` with `Retry-After` (never a `404`, never another page's or a stale
//! count), and once partitions settle every page is answered by every live instance again.
//!
//! The partitioner is checked independently too: records written by Python's confluent-kafka
//! (librdkafka's C `murmur2_random`) land exactly where `pagepulse::kafka::partitioner` says.

mod support;

use std::time::Duration;

use pagepulse::kafka::partitioner::partition_for;
use support::{http, wait_for, Pagepulse, TestEnv};

const PAGES: u64 = 90;
const READ_TOKEN: &str = "cluster-e2e-read-token-0001";
const CLUSTER_TOKEN: &str = "cluster-e2e-cluster-secret-01";

fn key(p: u64) -> String {
    format!("facebook:page-{p:03}")
}

/// The fans of page `p` at its `k`-th sample.
fn fans(p: u64, k: u64) -> u64 {
    10_000 + p * 37 + k * (p % 7 + 1)
}

fn start(env: &TestEnv) -> Pagepulse {
    env.start_with(&[
        ("PAGEPULSE__http__public_reads", "false"),
        ("PAGEPULSE_READ_TOKEN", READ_TOKEN),
        ("PAGEPULSE_CLUSTER_TOKEN", CLUSTER_TOKEN),
        // Only the fans pipeline: the other pipelines have nothing to do here.
        ("PAGEPULSE__pipelines__pages__enabled", "false"),
        ("PAGEPULSE__pipelines__posts__enabled", "false"),
        ("PAGEPULSE__pipelines__pageviews__enabled", "false"),
        ("PAGEPULSE__pipelines__messages__enabled", "false"),
        ("PAGEPULSE__pipelines__apps__enabled", "false"),
    ])
}

fn get(addr: &str, path: &str) -> Option<support::Answer> {
    http(addr, "GET", path, &[("Authorization", &format!("Bearer {READ_TOKEN}"))], b"")
}

/// What one instance says about page `p` whose newest sample is `k`: `Ok(Some(served_by))` when
/// it answered with that sample (`served_by`: the owner's id when forwarded, else `local`),
/// `Ok(None)` for a 503 with `Retry-After` or an earlier sample of the page (not processed yet),
/// `Err` for anything else: a 404, another page, a count the page never had.
fn ask(addr: &str, p: u64, k: u64) -> Result<Option<String>, String> {
    let a = get(addr, &format!("/api/v1/pages/{}?series=false", key(p))).ok_or("no answer")?;
    match a.status {
        200 => {
            let v = a.json();
            let got = v["stats"]["fans"].as_u64();
            if v["page_id"] != format!("page-{p:03}") || !(0..=k).any(|j| got == Some(fans(p, j))) {
                return Err(format!("{addr}: page {p}: wrong answer {v} (want fans {})", fans(p, k)));
            }
            if got != Some(fans(p, k)) {
                return Ok(None);
            }
            Ok(Some(a.header("x-pagepulse-served-by").unwrap_or("local").to_string()))
        }
        503 if a.header("retry-after").is_some() => Ok(None),
        s => Err(format!("{addr}: page {p}: {s} {}", String::from_utf8_lossy(&a.body))),
    }
}

/// Asks every instance for every page until two rounds in a row are all right, failing on any
/// wrong answer (a 503 with Retry-After or a page not updated yet is allowed meanwhile).
/// Returns how many answers of the last round were forwarded.
fn settle(addrs: &[String], k: u64, timeout: Duration) -> usize {
    let mut clean_rounds = 0;
    wait_for("every page answered right by every instance, twice in a row", timeout, || {
        let mut all_ok = true;
        let mut forwarded = 0;
        for addr in addrs {
            for p in 0..PAGES {
                match ask(addr, p, k) {
                    Ok(Some(by)) => forwarded += usize::from(by != "local"),
                    Ok(None) => all_ok = false,
                    Err(e) => panic!("{e}"),
                }
            }
        }
        clean_rounds = if all_ok { clean_rounds + 1 } else { 0 };
        (clean_rounds == 2).then_some(forwarded)
    })
}

/// Writes sample `k` of every page.
fn observe(env: &TestEnv, k: u64, t_ms: i64) {
    let mut records = Vec::new();
    for p in 0..PAGES {
        let v = serde_json::json!({"platform": "facebook", "page_id": format!("page-{p:03}"),
            "fans": fans(p, k), "observed_at": pagepulse::clock::format_ms(t_ms)});
        records.push((Some(key(p)), Some(v.to_string().into_bytes())));
    }
    env.produce_python("fans.observations", &records);
}

#[test]
fn any_instance_answers_any_page_across_a_kill_and_a_join() {
    let env = TestEnv::new();
    let t0 = chrono::Utc::now().timestamp_millis() - 3 * 3_600_000;
    observe(&env, 0, t0);

    // The partitioner, checked against librdkafka's own murmur2_random (the Python client).
    let topic = env.topic("fans.observations");
    let n = env.partitions_of(&topic).expect("fans.observations exists") as i32;
    assert!(n >= 3, "the test needs at least 3 partitions, has {n}");
    let recs = env.read_until("fans.observations", Duration::from_secs(60), |r| r.len() as u64 >= PAGES);
    assert_eq!(recs.len() as u64, PAGES);
    for r in &recs {
        let k = r.key.as_deref().expect("keyed");
        assert_eq!(r.partition, partition_for(k, n), "{}", String::from_utf8_lossy(k));
    }

    let mut pps: Vec<Pagepulse> = (0..3).map(|_| start(&env)).collect();
    for pp in &mut pps {
        pp.wait_ready(Duration::from_secs(90));
    }
    let addrs: Vec<String> = pps.iter().map(|pp| pp.addr.clone()).collect();
    // Every instance holds some partitions before the first round (else nothing is forwarded).
    wait_for("every instance holds a partition", Duration::from_secs(60), || {
        pps.iter().all(|pp| pp.metric("pagepulse_assigned_partitions", "") >= 1.0).then_some(())
    });
    let forwarded = settle(&addrs, 0, Duration::from_secs(90));
    // With 3 instances, about two thirds of the answers come from another instance.
    assert!(forwarded as u64 >= PAGES, "only {forwarded} of {} answers were forwarded", 3 * PAGES);

    // Credentials are checked once, where the client called: no token is a 401 there; a wrong
    // cluster secret is a 401 at the owner.
    let a = http(&addrs[0], "GET", &format!("/api/v1/pages/{}", key(1)), &[], b"").expect("answer");
    assert_eq!(a.status, 401);
    let a = http(
        &addrs[0],
        "GET",
        &format!("/api/v1/pages/{}", key(1)),
        &[("X-Pagepulse-Cluster", "not-the-cluster-secret-at-all"), ("X-Pagepulse-Forwarded", "x")],
        b"",
    )
    .expect("answer");
    assert_eq!(a.status, 401, "{}", String::from_utf8_lossy(&a.body));
    assert!(!String::from_utf8_lossy(&a.body).contains(CLUSTER_TOKEN));

    // A comparison of pages held by three instances: one request, every page.
    let keys: Vec<String> = (0..PAGES).map(key).collect();
    for addr in &addrs {
        let a = get(addr, &format!("/api/v1/pages?series=false&keys={}", keys.join(","))).expect("answer");
        assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
        let v = a.json();
        assert_eq!(v["missing"], serde_json::json!([]), "{v}");
        let pages = v["pages"].as_array().expect("pages");
        assert_eq!(pages.len() as u64, PAGES);
        for (p, page) in pages.iter().enumerate() {
            assert_eq!(page["page_id"], format!("page-{p:03}"), "in the order asked");
            assert_eq!(page["stats"]["fans"].as_u64(), Some(fans(p as u64, 0)));
        }
    }

    // One instance dies: the survivors answer for its pages once its partitions move.
    pps[2].signal(libc::SIGKILL);
    pps[2].wait_exit(Duration::from_secs(10));
    let survivors: Vec<String> = addrs[..2].to_vec();
    observe(&env, 1, t0 + 3_600_000);
    settle(&survivors, 1, Duration::from_secs(120));

    // One joins: it takes partitions over, and every instance answers every page again.
    let mut joined = start(&env);
    joined.wait_ready(Duration::from_secs(90));
    let mut all = survivors.clone();
    all.push(joined.addr.clone());
    wait_for("the new instance holds a partition", Duration::from_secs(60), || {
        (joined.metric("pagepulse_assigned_partitions", "") >= 1.0).then_some(())
    });
    observe(&env, 2, t0 + 2 * 3_600_000);
    let forwarded = settle(&all, 2, Duration::from_secs(120));
    assert!(forwarded > 0);
}
