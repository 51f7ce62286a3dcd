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
//! Rankings (issue 16, item 1): `posts.trending` and `fans.top` equal a ranking computed here
//! over every post and page, on every instance and in the topics, with exactly one instance
//! writing each, before and after a kill and a join; the hashtag counts are split across every
//! partition, so no instance can get them right from its own partitions alone.
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

/// Where the instances run: each on a host (network namespace) of its own where the machine
/// allows it, with its broker on the test's own address; else on loopback ports.
struct Cluster {
    hosts: Option<support::netns::Hosts>,
    _broker: Option<support::netns::HostBroker>,
    env: TestEnv,
    started: usize,
}

impl Cluster {
    fn new(instances: usize) -> Self {
        match support::netns::Hosts::create(instances) {
            Some(hosts) => {
                let broker = support::netns::HostBroker::start(&hosts.host_ip);
                let env = TestEnv::on(broker.addr.clone());
                eprintln!("{instances} hosts of their own: {:?}, broker at {}", hosts.ips, broker.addr);
                Self { hosts: Some(hosts), _broker: Some(broker), env, started: 0 }
            }
            None => {
                eprintln!("network namespaces are not allowed here: the instances share loopback, on ports");
                Self { hosts: None, _broker: None, env: TestEnv::new(), started: 0 }
            }
        }
    }

    /// Starts the next instance with `vars`.
    fn start(&mut self, vars: &[(&str, &str)]) -> Pagepulse {
        self.started += 1;
        match &self.hosts {
            Some(h) => self.env.start_in(h, self.started - 1, vars),
            None => self.env.start_with(vars),
        }
    }
}

const PAGE_VARS: &[(&str, &str)] = &[
    ("PAGEPULSE__http__public_reads", "false"),
    ("PAGEPULSE_READ_TOKEN", READ_TOKEN),
    ("PAGEPULSE_CLUSTER_TOKEN", CLUSTER_TOKEN),
    // Only the fans pipeline: the other pipelines have nothing to do here.
    ("PAGEPULSE__pipelines__pages__enabled", "false"),
    ("PAGEPULSE__pipelines__posts__enabled", "false"),
    ("PAGEPULSE__pipelines__pageviews__enabled", "false"),
    ("PAGEPULSE__pipelines__messages__enabled", "false"),
    ("PAGEPULSE__pipelines__apps__enabled", "false"),
];

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
    let mut cluster = Cluster::new(4);
    let t0 = chrono::Utc::now().timestamp_millis() - 3 * 3_600_000;
    observe(&cluster.env, 0, t0);

    // The partitioner, checked against librdkafka's own murmur2_random (the Python client).
    let topic = cluster.env.topic("fans.observations");
    let n = cluster.env.partitions_of(&topic).expect("fans.observations exists") as i32;
    assert!(n >= 3, "the test needs at least 3 partitions, has {n}");
    let recs = cluster.env.read_until("fans.observations", Duration::from_secs(60), |r| r.len() as u64 >= PAGES);
    assert_eq!(recs.len() as u64, PAGES);
    for r in &recs {
        let k = r.key.as_deref().expect("keyed");
        assert_eq!(r.partition, partition_for(k, n), "{}", String::from_utf8_lossy(k));
    }

    let mut pps: Vec<Pagepulse> = (0..3).map(|_| cluster.start(PAGE_VARS)).collect();
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
    observe(&cluster.env, 1, t0 + 3_600_000);
    settle(&survivors, 1, Duration::from_secs(120));

    // One joins: it takes partitions over, and every instance answers every page again.
    let mut joined = cluster.start(PAGE_VARS);
    joined.wait_ready(Duration::from_secs(90));
    let mut all = survivors.clone();
    all.push(joined.addr.clone());
    wait_for("the new instance holds a partition", Duration::from_secs(60), || {
        (joined.metric("pagepulse_assigned_partitions", "") >= 1.0).then_some(())
    });
    observe(&cluster.env, 2, t0 + 2 * 3_600_000);
    let forwarded = settle(&all, 2, Duration::from_secs(120));
    assert!(forwarded > 0);
}

const TAGS: [&str; 16] = [
    "rust",
    "kafka",
    "flink",
    "actix",
    "tokio",
    "serde",
    "streams",
    "wasm",
    "grafana",
    "prometheus",
    "tansu",
    "dashmap",
    "pagepulse",
    "analytics",
    "social",
    "web",
];
const TRENDING_TOP_N: usize = 10;
const FANS_TOP_N: usize = 25;
const RANKED_PAGES: u64 = 60;

const RANK_VARS: &[(&str, &str)] = &[
    ("PAGEPULSE__pipelines__pages__enabled", "false"),
    ("PAGEPULSE__pipelines__pageviews__enabled", "false"),
    ("PAGEPULSE__pipelines__messages__enabled", "false"),
    ("PAGEPULSE__pipelines__apps__enabled", "false"),
    ("PAGEPULSE__pipelines__posts__trending_emit_interval", "\"1s\""),
    // Instances on hosts of their own listen on a non-loopback address: that needs a token.
    ("PAGEPULSE_READ_TOKEN", READ_TOKEN),
];

/// Posts `from..to`, each with one to three hashtags (some repeated, some upper-cased: a post
/// counts a tag once), spread over every partition, written in the last 30 minutes of event time.
fn posts(from: u64, to: u64, now_ms: i64) -> Vec<(Option<String>, Option<Vec<u8>>)> {
    (from..to)
        .map(|i| {
            let a = TAGS[(i * i % 97 % 16) as usize];
            let b = TAGS[(i * 7 % 11) as usize];
            let c = TAGS[(i % 5) as usize];
            let content = match i % 3 {
                0 => format!("post {i} #{a}"),
                1 => format!("post {i} #{a} #{b} #{}", a.to_uppercase()),
                _ => format!("post {i} #{a} #{b} #{c}"),
            };
            let at = pagepulse::clock::format_ms(now_ms - 30 * 60_000 + (i as i64 * 1_000) % (29 * 60_000));
            let v = serde_json::json!({"id": format!("post-{i}"), "content": content, "created_at": at});
            (Some(format!("post-{i}")), Some(v.to_string().into_bytes()))
        })
        .collect()
}

/// The top hashtags of `posts`, counted here: each post counts each of its (lower-cased) tags
/// once; count descending, then tag ascending.
fn expected_trending(posts: &[(Option<String>, Option<Vec<u8>>)]) -> Vec<(String, u64)> {
    let mut counts: std::collections::BTreeMap<String, u64> = Default::default();
    for (_, v) in posts {
        let v: serde_json::Value = serde_json::from_slice(v.as_deref().expect("value")).expect("JSON");
        let mut seen = std::collections::BTreeSet::new();
        for word in v["content"].as_str().expect("content").split_whitespace() {
            if let Some(tag) = word.strip_prefix('#') {
                seen.insert(tag.to_lowercase());
            }
        }
        for tag in seen {
            *counts.entry(tag).or_default() += 1;
        }
    }
    let mut ranked: Vec<(String, u64)> = counts.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    ranked.truncate(TRENDING_TOP_N);
    ranked
}

/// Fans of ranked page `p`: `base` 24 h ago and `base + delta` now, every delta distinct.
fn ranked_fans(p: u64, round: u64) -> (u64, u64) {
    let base = 1_000 + p * 13;
    let delta = (p * 37 + round * 11) % 97 * 10 + p % 10;
    (base, base + delta)
}

/// The top pages by 24 h delta and by 24 h growth, computed here: (page id, delta) and page ids.
fn expected_fans(round: u64) -> (Vec<(String, i64)>, Vec<String>) {
    let rows: Vec<(String, i64, f64)> = (0..RANKED_PAGES)
        .map(|p| {
            let (old, new) = ranked_fans(p, round);
            let delta = new as i64 - old as i64;
            (format!("ranked-{p:03}"), delta, delta as f64 / old as f64 * 100.0)
        })
        .collect();
    let mut by_delta = rows.clone();
    by_delta.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| format!("facebook:{}", a.0).cmp(&format!("facebook:{}", b.0))));
    let mut by_growth = rows;
    by_growth.sort_by(|a, b| {
        b.2.total_cmp(&a.2).then_with(|| format!("facebook:{}", a.0).cmp(&format!("facebook:{}", b.0)))
    });
    (
        by_delta.into_iter().take(FANS_TOP_N).map(|(id, d, _)| (id, d)).collect(),
        by_growth.into_iter().take(FANS_TOP_N).map(|(id, _, _)| id).collect(),
    )
}

/// Two samples of every ranked page, 24 h apart, the newer one minute ago.
fn observe_ranked(env: &TestEnv, round: u64, now_ms: i64) {
    let mut records = Vec::new();
    for p in 0..RANKED_PAGES {
        let (old, new) = ranked_fans(p, round);
        for (fans, at) in [(old, now_ms - 60_000 - 86_400_000), (new, now_ms - 60_000)] {
            let v = serde_json::json!({"platform": "facebook", "page_id": format!("ranked-{p:03}"), "fans": fans,
                "observed_at": pagepulse::clock::format_ms(at)});
            records.push((Some(format!("facebook:ranked-{p:03}")), Some(v.to_string().into_bytes())));
        }
    }
    env.produce_python("fans.observations", &records);
}

fn trending_of(v: &serde_json::Value) -> Vec<(String, u64)> {
    v["tags"]
        .as_array()
        .map(|a| {
            a.iter().map(|t| (t["tag"].as_str().unwrap_or("").to_string(), t["count"].as_u64().unwrap_or(0))).collect()
        })
        .unwrap_or_default()
}

fn fans_of(v: &serde_json::Value) -> (Vec<(String, i64)>, Vec<String>) {
    let list = |k: &str| v[k].as_array().cloned().unwrap_or_default();
    (
        list("by_delta_24h")
            .iter()
            .map(|e| (e["page_id"].as_str().unwrap_or("").to_string(), e["delta_24h"].as_i64().unwrap_or(0)))
            .collect(),
        list("by_growth_24h_pct").iter().map(|e| e["page_id"].as_str().unwrap_or("").to_string()).collect(),
    )
}

/// Waits until every instance in `pps` serves exactly the expected rankings, the topics' latest
/// records are them, and exactly one instance writes each.
fn rankings_settle(
    env: &TestEnv,
    pps: &[&Pagepulse],
    trending: &[(String, u64)],
    fans: &(Vec<(String, i64)>, Vec<String>),
) {
    wait_for("every instance ranks every partition's hashtags and pages", Duration::from_secs(120), || {
        pps.iter()
            .all(|pp| {
                let t = support::http_get(&pp.addr, "/api/v1/posts/trending");
                let f = support::http_get(&pp.addr, "/api/v1/pages/top");
                let ok_t = t.is_some_and(|(s, b)| {
                    s == 200 && trending_of(&serde_json::from_str(&b).unwrap_or_default()) == trending
                });
                let ok_f =
                    f.is_some_and(|(s, b)| s == 200 && &fans_of(&serde_json::from_str(&b).unwrap_or_default()) == fans);
                ok_t && ok_f
            })
            .then_some(())
    });
    let last = |topic: &str, want: &dyn Fn(&serde_json::Value) -> bool| {
        env.read_until(topic, Duration::from_secs(60), |recs| {
            recs.last().and_then(|r| serde_json::from_slice(r.value.as_deref()?).ok()).is_some_and(|v| want(&v))
        });
    };
    last("posts.trending", &|v| trending_of(v) == trending);
    last("fans.top", &|v| &fans_of(v) == fans);
    for pipeline in ["posts", "fans"] {
        wait_for(&format!("exactly one instance writes the {pipeline} results"), Duration::from_secs(60), || {
            let writers: f64 =
                pps.iter().map(|pp| pp.metric("pagepulse_aggregate_writer", &format!("pipeline=\"{pipeline}\""))).sum();
            (writers == 1.0).then_some(())
        });
    }
}

#[test]
fn rankings_equal_one_instance_over_every_partition_across_a_kill_and_a_join() {
    let mut cluster = Cluster::new(4);
    let mut pps: Vec<Pagepulse> = (0..3).map(|_| cluster.start(RANK_VARS)).collect();
    for pp in &mut pps {
        pp.wait_ready(Duration::from_secs(90));
    }
    wait_for("every instance holds a partition", Duration::from_secs(60), || {
        pps.iter().all(|pp| pp.metric("pagepulse_assigned_partitions", "") >= 1.0).then_some(())
    });
    let now = chrono::Utc::now().timestamp_millis();
    let mut all_posts = posts(0, 600, now);
    cluster.env.produce_python("posts", &all_posts);
    observe_ranked(&cluster.env, 0, now);
    let trending = expected_trending(&all_posts);
    // The test means something only if the top tags' counts come from several partitions.
    assert!(trending[0].1 > 100);
    rankings_settle(&cluster.env, &pps.iter().collect::<Vec<_>>(), &trending, &expected_fans(0));

    // One instance dies; more posts and new samples arrive: the survivors' rankings take in the
    // dead instance's partitions (restored) and the new input, exactly.
    pps[2].signal(libc::SIGKILL);
    pps[2].wait_exit(Duration::from_secs(10));
    let more = posts(600, 900, now);
    cluster.env.produce_python("posts", &more);
    all_posts.extend(more);
    observe_ranked(&cluster.env, 1, now + 60_000);
    rankings_settle(
        &cluster.env,
        &pps[..2].iter().collect::<Vec<_>>(),
        &expected_trending(&all_posts),
        &expected_fans(1),
    );

    // One joins and takes partitions over: the same, on all three.
    let mut joined = cluster.start(RANK_VARS);
    joined.wait_ready(Duration::from_secs(90));
    wait_for("the new instance holds a partition", Duration::from_secs(60), || {
        (joined.metric("pagepulse_assigned_partitions", "") >= 1.0).then_some(())
    });
    let more = posts(900, 1100, now);
    cluster.env.produce_python("posts", &more);
    all_posts.extend(more);
    observe_ranked(&cluster.env, 2, now + 120_000);
    let all = [&pps[0], &pps[1], &joined];
    rankings_settle(&cluster.env, &all, &expected_trending(&all_posts), &expected_fans(2));
}
