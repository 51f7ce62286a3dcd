//! Posts pipeline through a real broker: an independent client (Python confluent-kafka)
//! produces 1,000 posts, 50 of them malformed in ten different ways; pagepulse must write exactly
//! 950 correct analyses, 50 dead letters carrying their reasons, and the right trending hashtags.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::process::Command;
use std::time::Duration;

use support::{metric_sum, TestEnv};

/// Words whose UAX #29 segmentation is one word each, with their length in scalar values.
const WORDS: &[&str] = &["the", "stream", "is", "fast", "café", "naïve", "Über", "data", "pipeline", "weekend"];
const TAGS: &[&str] =
    &["Rust", "kafka", "Streaming", "AI", "music", "coffee", "news", "travel", "tech", "food", "gaming", "data"];
const MENTIONS: &[&str] = &["ana", "Bob", "ferris", "zoe"];

struct Expected {
    word_count: usize,
    avg_word_length: f64,
    hashtags: Vec<String>,
    mentions: Vec<String>,
}

/// A deterministic valid post and what its analysis must be, computed by counting tokens: every
/// token is one word, and hashtag/mention bodies are words too.
fn valid_post(i: usize) -> (String, Expected) {
    let mut tokens: Vec<String> = Vec::new();
    let n_words = 3 + i % 7;
    for k in 0..n_words {
        tokens.push(WORDS[(i * 7 + k * 3) % WORDS.len()].to_string());
    }
    // Skewed tag choice so the trending ranking is well defined; sometimes a repeated tag in
    // different case, which must count once.
    let mut tags_used = Vec::new();
    for k in 0..(i % 4) {
        let t = TAGS[((i % 13) * (k + 1) * (k + 1)) % TAGS.len()];
        tags_used.push(t);
        tokens.push(format!("#{t}"));
    }
    if i.is_multiple_of(5) && !tags_used.is_empty() {
        tokens.push(format!("#{}", tags_used[0].to_uppercase()));
    }
    if i.is_multiple_of(3) {
        tokens.push(format!("@{}", MENTIONS[i % MENTIONS.len()]));
    }
    let mut hashtags: Vec<String> = Vec::new();
    let mut mentions: Vec<String> = Vec::new();
    let mut chars = 0;
    for t in &tokens {
        let body = t.trim_start_matches(['#', '@']);
        chars += body.chars().count();
        let list = if t.starts_with('#') {
            Some(&mut hashtags)
        } else if t.starts_with('@') {
            Some(&mut mentions)
        } else {
            None
        };
        if let Some(list) = list {
            let lower = body.to_lowercase();
            if !list.contains(&lower) {
                list.push(lower);
            }
        }
    }
    // Punctuation and emoji are not words.
    let content = format!("{}{}", tokens.join(" "), ["!", ".", " 🎉", " ...", ""][i % 5]);
    let exp =
        Expected { word_count: tokens.len(), avg_word_length: chars as f64 / tokens.len() as f64, hashtags, mentions };
    (content, exp)
}

/// The ten kinds of malformed record: (value, reason class, text the error must contain).
fn malformed(kind: usize, j: usize) -> (Option<Vec<u8>>, &'static str, &'static str) {
    let v = |s: String| Some(s.into_bytes());
    match kind {
        0 => (v(format!("{{\"id\": \"bad-{j}\", \"content\": ")), "invalid_json", "not valid JSON"),
        1 => (v(format!("{{\"content\": \"no id {j}\"}}")), "missing_field", "`id`"),
        2 => (v(format!("{{\"id\": {j}, \"content\": \"numeric id\"}}")), "wrong_type", "`id`"),
        3 => (v(format!("{{\"id\": \"bad-{j}\"}}")), "missing_field", "`content`"),
        4 => (v(format!("{{\"id\": \"bad-{j}\", \"content\": 42}}")), "wrong_type", "`content`"),
        5 => (v(format!("{{\"id\": \"bad-{j}\", \"content\": \"{}\"}}", "a".repeat(70_000))), "too_large", "`content`"),
        6 => {
            let mut b = format!("{{\"id\": \"bad-{j}\", \"content\": \"caf").into_bytes();
            b.extend_from_slice(b"\xe9\"}");
            (Some(b), "invalid_utf8", "UTF-8")
        }
        7 => (None, "empty_value", "tombstone"),
        8 => (v("[\"an\", \"array\"]".to_string()), "invalid_json", "JSON object"),
        _ => (
            v(format!("{{\"id\": \"bad-{j}\", \"content\": \"x\", \"created_at\": \"last tuesday\"}}")),
            "invalid_value",
            "`created_at`",
        ),
    }
}

#[test]
fn thousand_posts_fifty_malformed() {
    let env = TestEnv::new();
    // A whole hour a day ago: in the past, so no event time is clamped to "now".
    let now = chrono::Utc::now().timestamp();
    let base = chrono::DateTime::from_timestamp(now - now % 3600 - 86_400, 0).expect("base time");
    let mut records = Vec::new();
    let mut expected: HashMap<String, Expected> = HashMap::new();
    let mut bad: HashMap<String, (Option<Vec<u8>>, &str, &str)> = HashMap::new();
    let mut tag_posts: BTreeMap<String, u64> = BTreeMap::new();
    let (mut valid_i, mut bad_j) = (0usize, 0usize);
    for n in 0..1000 {
        if n % 20 == 19 {
            let (value, reason, text) = malformed(bad_j % 10, bad_j);
            let key = format!("bad-{bad_j}");
            records.push((Some(key.clone()), value.clone()));
            bad.insert(key, (value, reason, text));
            bad_j += 1;
        } else {
            let (content, exp) = valid_post(valid_i);
            let id = format!("p{valid_i}");
            // All within 30 minutes, so the whole set is inside the 60-minute trending window.
            let created = (base + chrono::Duration::seconds((valid_i % 1800) as i64)).to_rfc3339();
            for t in &exp.hashtags {
                *tag_posts.entry(t.clone()).or_default() += 1;
            }
            let value = serde_json::json!({"id": id, "content": content, "author": "tester", "created_at": created});
            records.push((Some(id.clone()), Some(value.to_string().into_bytes())));
            expected.insert(id, exp);
            valid_i += 1;
        }
    }
    assert_eq!((expected.len(), bad.len()), (950, 50));
    env.produce_python("posts", &records);

    let mut pp = env.start();
    pp.wait_ready(Duration::from_secs(60));
    support::wait_for("1000 records processed and acknowledged", Duration::from_secs(90), || {
        let m = pp.metrics();
        let done = support::metric_value(&m, "pagepulse_records_produced_total", "topic=\"posts.analysis\"") >= 950.0
            && support::metric_value(&m, "pagepulse_records_produced_total", "topic=\"deadletter\"") >= 50.0;
        done.then_some(())
    });

    // Exact counts from the engine's own metrics.
    let m = pp.metrics();
    assert_eq!(support::metric_value(&m, "pagepulse_records_consumed_total", "topic=\"posts\""), 1000.0);
    assert_eq!(support::metric_value(&m, "pagepulse_records_produced_total", "topic=\"posts.analysis\""), 950.0);
    assert_eq!(support::metric_value(&m, "pagepulse_records_produced_total", "topic=\"deadletter\""), 50.0);
    assert_eq!(metric_sum(&m, "pagepulse_records_deadlettered_total", "topic=\"posts\""), 50.0);
    for (reason, n) in [
        ("invalid_json", 10.0),
        ("missing_field", 10.0),
        ("wrong_type", 10.0),
        ("too_large", 5.0),
        ("invalid_utf8", 5.0),
        ("empty_value", 5.0),
        ("invalid_value", 5.0),
    ] {
        assert_eq!(
            support::metric_value(
                &m,
                "pagepulse_records_deadlettered_total",
                &format!("reason=\"{reason}\",topic=\"posts\"")
            ),
            n,
            "dead letters with reason {reason}"
        );
    }
    // A batch completes once its outputs and the state flush covering it (every second) are
    // acknowledged.
    support::wait_for("end-to-end latency of every post observed", Duration::from_secs(30), || {
        (support::metric_value(&pp.metrics(), "pagepulse_end_to_end_latency_seconds_count", "pipeline=\"posts\"")
            >= 1000.0)
            .then_some(())
    });
    promtool_accepts(&m);
    // librdkafka's statistics reach the lag gauge: every partition caught up.
    support::wait_for("consumer lag 0 on every partition", Duration::from_secs(30), || {
        let m = pp.metrics();
        (0..4)
            .all(|p| m.lines().any(|l| l == format!("pagepulse_consumer_lag{{partition=\"{p}\",topic=\"posts\"}} 0")))
            .then_some(())
    });

    // Every analysis is there once and correct.
    let analyses = env.read_until("posts.analysis", Duration::from_secs(30), |r| r.len() >= 950);
    assert_eq!(analyses.len(), 950);
    let mut seen = std::collections::HashSet::new();
    for rec in &analyses {
        let v: serde_json::Value =
            serde_json::from_slice(rec.value.as_deref().expect("value")).expect("analysis is JSON");
        let id = v["id"].as_str().expect("id").to_string();
        assert_eq!(rec.key.as_deref(), Some(id.as_bytes()), "keyed by post id");
        let exp = expected.get(&id).unwrap_or_else(|| panic!("unexpected analysis for {id}"));
        assert!(seen.insert(id.clone()), "duplicate analysis for {id}");
        assert_eq!(v["word_count"].as_u64(), Some(exp.word_count as u64), "word_count of {id}: {v}");
        let avg = v["avg_word_length"].as_f64().expect("avg");
        assert!((avg - exp.avg_word_length).abs() < 1e-9, "avg_word_length of {id}: {avg} vs {}", exp.avg_word_length);
        let strings = |k: &str| {
            v[k].as_array().expect("array").iter().map(|x| x.as_str().expect("str").to_string()).collect::<Vec<_>>()
        };
        assert_eq!(strings("hashtags"), exp.hashtags, "hashtags of {id}");
        assert_eq!(strings("mentions"), exp.mentions, "mentions of {id}");
        chrono::DateTime::parse_from_rfc3339(v["analyzed_at"].as_str().expect("analyzed_at")).expect("RFC 3339");
    }

    // Every dead letter is the original record, explained.
    let letters = env.read_until("deadletter", Duration::from_secs(30), |r| r.len() >= 50);
    assert_eq!(letters.len(), 50);
    for rec in &letters {
        let key = String::from_utf8(rec.key.clone().expect("original key kept")).expect("utf8 key");
        let (value, reason, text) = bad.get(&key).unwrap_or_else(|| panic!("unexpected dead letter {key}"));
        assert_eq!(&rec.value, value, "{key}: value bytes unchanged");
        assert_eq!(rec.headers.get("pagepulse.reason").map(String::as_str), Some(*reason), "{key}");
        let err = rec.headers.get("pagepulse.error").expect("error header");
        assert!(err.contains(text), "{key}: error {err:?} should mention {text:?}");
        assert_eq!(rec.headers.get("pagepulse.topic"), Some(&env.topic("posts")));
        let p: i32 = rec.headers["pagepulse.partition"].parse().expect("partition");
        assert!((0..4).contains(&p));
        rec.headers["pagepulse.offset"].parse::<i64>().expect("offset");
    }

    // Trending: the top 10 tags by number of posts, ties by tag.
    let mut ranking: Vec<(String, u64)> = tag_posts.into_iter().collect();
    ranking.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    ranking.truncate(10);
    let trending = env.read_until("posts.trending", Duration::from_secs(30), |recs| {
        recs.last().is_some_and(|r| tags_of(r.value.as_deref()) == ranking)
    });
    let last = trending.last().expect("a trending record");
    assert_eq!(last.key.as_deref(), Some(&b"hashtags"[..]));
    let v: serde_json::Value = serde_json::from_slice(last.value.as_deref().expect("value")).expect("JSON");
    let fmt = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    // The newest post is valid post 949, at base + 949 s: its minute ends the window.
    let newest = base + chrono::Duration::seconds(949);
    let end = newest - chrono::Duration::seconds(newest.timestamp() % 60) + chrono::Duration::minutes(1);
    assert_eq!(v["window_end"], fmt(end), "window ends after the minute of the newest post");
    assert_eq!(v["window_start"], fmt(end - chrono::Duration::minutes(60)));

    pp.signal(libc::SIGTERM);
    assert!(pp.wait_exit(Duration::from_secs(10)).success(), "graceful exit code 0");
}

fn tags_of(value: Option<&[u8]>) -> Vec<(String, u64)> {
    let Some(v) = value.and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok()) else { return vec![] };
    v["tags"]
        .as_array()
        .map(|a| {
            a.iter().map(|t| (t["tag"].as_str().unwrap_or("").to_string(), t["count"].as_u64().unwrap_or(0))).collect()
        })
        .unwrap_or_default()
}

/// `promtool check metrics` (Prometheus's own linter) must accept the exposition.
fn promtool_accepts(text: &str) {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is installed (Debian package prometheus; scripts/test.sh installs it)");
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write metrics");
    let out = child.wait_with_output().expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool rejected /metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
