//! Messages through a real broker: an independent client (Python confluent-kafka) produces 3,000
//! messages of 120 users over six minutes of event time (a day ago), with event times given as
//! RFC 3339, as epoch milliseconds or only as the record's timestamp, cities and states in varied
//! case and spacing, and 120 malformed records of twelve kinds. Every `messages.stats` record
//! must equal the count made here for its minute, exactly one per minute; every malformed
//! record must be dead-lettered with its reason; `messages.totals` must hold the all-time
//! figures. Then messages for a minute already final arrive: they count in the totals and the
//! late metric, never in the minute.

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use support::{metric_value, wait_for, TestEnv};

const MIN: i64 = 60_000;
const USERS: usize = 120;
const MESSAGES: usize = 3000;
const MINUTES: i64 = 6;
const TOP: usize = 10;
const CITIES: &[(&str, &str)] = &[
    ("New York", "NY"),
    ("Los Angeles", "CA"),
    ("Chicago", "IL"),
    ("Houston", "TX"),
    ("Buffalo", "NY"),
    ("San José", "CA"),
    ("Portland", "OR"),
    ("Portland", "ME"),
    ("Springfield", "IL"),
    ("Springfield", "MA"),
    ("São Paulo", "SP"),
    ("Zürich", "ZH"),
];

#[derive(Debug, Clone)]
struct Msg {
    user: String,
    state: String,
    city: String,
    ts: i64,
}

/// Random case and spacing of `name`.
fn respell(rng: &mut StdRng, name: &str) -> String {
    let words: Vec<String> = name
        .split(' ')
        .map(|w| match rng.gen_range(0..5) {
            0 => w.to_lowercase(),
            1 => w.to_uppercase(),
            _ => w.to_string(),
        })
        .collect();
    match rng.gen_range(0..6) {
        0 => format!("  {} ", words.join("   ")),
        1 => words.join("\t"),
        _ => words.join(" "),
    }
}

/// The valid messages, in the order written: event time rises over [`MINUTES`] minutes with up
/// to 5 s of disorder (the allowed lateness is 30 s: none is late), kept inside those minutes.
fn messages(rng: &mut StdRng, base: i64) -> Vec<Msg> {
    (0..MESSAGES)
        .map(|i| {
            let u = ((USERS as f64) * rng.gen::<f64>().powi(2)) as usize;
            // Users mostly write from their home city, skewed towards the first ones.
            let h = ((u as u64 * 2_654_435_761) % 1000) as f64 / 1000.0;
            let home = ((CITIES.len() as f64) * h.powi(2)) as usize;
            let (city, state) =
                if rng.gen_ratio(1, 10) { CITIES[rng.gen_range(0..CITIES.len())] } else { CITIES[home] };
            let slot = base + i as i64 * MINUTES * MIN / MESSAGES as i64;
            Msg {
                user: if u.is_multiple_of(9) { format!("zoë.{u}") } else { format!("user{u}") },
                state: if rng.gen_ratio(1, 4) { format!(" {} ", state.to_lowercase()) } else { state.to_string() },
                city: respell(rng, city),
                ts: (slot + rng.gen_range(-5_000..=5_000)).clamp(base, base + MINUTES * MIN - 1),
            }
        })
        .collect()
}

/// The `k`th kind of malformed record: (key, value, reason class, text the error names).
fn malformed(k: usize, j: usize, base: i64) -> (Option<String>, Option<Vec<u8>>, &'static str, &'static str) {
    let user = format!("bad{j}");
    let v = |v: Value| Some(v.to_string().into_bytes());
    let ok = |extra: (&str, Value)| {
        let mut m = json!({"username": user, "city": "Boise", "state": "ID", "message": "hi", "ts": base});
        m[extra.0] = extra.1;
        m
    };
    match k % 12 {
        0 => (
            Some(user.clone()),
            v(json!({"username": user, "city": "Boise", "message": "no state"})),
            "missing_field",
            "`state`",
        ),
        1 => (Some(user.clone()), v(ok(("city", json!(42)))), "wrong_type", "`city`"),
        2 => (Some(user.clone()), v(ok(("city", json!("   ")))), "invalid_value", "`city`"),
        3 => (Some(format!("other{j}")), v(ok(("message", json!("wrong key")))), "invalid_value", "key"),
        4 => (None, v(ok(("message", json!("no key")))), "missing_field", "key"),
        5 => (Some(user.clone()), v(ok(("city", json!("c".repeat(300))))), "too_large", "`city`"),
        6 => (Some(user.clone()), v(ok(("ts", json!("last tuesday")))), "invalid_value", "`ts`"),
        7 => (Some(user.clone()), Some(format!("{{\"username\": \"{user}\", ").into_bytes()), "invalid_json", "JSON"),
        8 => (Some(user.clone()), None, "empty_value", "tombstone"),
        9 => (Some(user.clone()), v(ok(("ts", json!(base + 3_600_000)))), "invalid_value", "`ts`"),
        10 => {
            let mut b = format!("{{\"username\": \"{user}\", \"city\": \"S").into_bytes();
            b.extend_from_slice(b"\xe3o Paulo\", \"state\": \"SP\", \"message\": \"x\"}");
            (Some(user.clone()), Some(b), "invalid_utf8", "UTF-8")
        }
        _ => (
            Some(user.clone()),
            v(json!({"username": user, "city": "Boise", "state": "ID", "ts": base})),
            "missing_field",
            "`message`",
        ),
    }
}

/// One minute as counted here: (total, users, by_state, top cities (state, city, count)).
type Minute = (u64, u64, Vec<(String, u64)>, Vec<(String, String, u64)>);

/// Counts `msgs`: states trimmed and upper-cased, cities grouped by lower-cased words within
/// their state and shown as their earliest spelling (whitespace collapsed).
fn count(msgs: &[&Msg]) -> Minute {
    let users: HashSet<&str> = msgs.iter().map(|m| m.user.as_str()).collect();
    let mut states: HashMap<String, u64> = HashMap::new();
    let mut cities: HashMap<(String, String), (u64, (i64, String))> = HashMap::new();
    for m in msgs {
        let state = m.state.trim().to_uppercase();
        let shown = m.city.split_whitespace().collect::<Vec<_>>().join(" ");
        *states.entry(state.clone()).or_default() += 1;
        let e = cities.entry((state, shown.to_lowercase())).or_insert((0, (m.ts, shown.clone())));
        e.0 += 1;
        e.1 = e.1.clone().min((m.ts, shown));
    }
    let mut by_state: Vec<(String, u64)> = states.into_iter().collect();
    by_state.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut top: Vec<(String, String, u64)> = cities.into_iter().map(|((s, _), (n, (_, c)))| (s, c, n)).collect();
    top.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)).then(a.1.cmp(&b.1)));
    top.truncate(TOP);
    (msgs.len() as u64, users.len() as u64, by_state, top)
}

fn minute_key(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).expect("time").format("%Y-%m-%dT%H:%M").to_string()
}

fn figures(v: &Value) -> Minute {
    let by_state = v["by_state"]
        .as_array()
        .expect("by_state")
        .iter()
        .map(|s| (s["state"].as_str().expect("state").to_string(), s["count"].as_u64().expect("count")))
        .collect();
    let cities = v["top_cities"].as_array().expect("top_cities");
    let ranks: Vec<u64> = cities.iter().map(|c| c["rank"].as_u64().expect("rank")).collect();
    assert_eq!(ranks, (1..=cities.len() as u64).collect::<Vec<_>>());
    let top = cities
        .iter()
        .map(|c| {
            (
                c["state"].as_str().expect("s").to_string(),
                c["city"].as_str().expect("c").to_string(),
                c["count"].as_u64().expect("n"),
            )
        })
        .collect();
    (v["total"].as_u64().expect("total"), v["users"].as_u64().expect("users"), by_state, top)
}

fn totals(env: &TestEnv, want_total: u64) -> Value {
    let mut last = Value::Null;
    env.read_until("messages.totals", Duration::from_secs(60), |recs| {
        if let Some(r) = recs.last() {
            last = serde_json::from_slice(r.value.as_deref().expect("value")).expect("JSON");
        }
        last["total"].as_u64() == Some(want_total)
    });
    last
}

#[test]
fn minutes_of_messages_equal_an_independent_count() {
    let env = TestEnv::new();
    let now = chrono::Utc::now().timestamp_millis();
    let base = (now - 86_400_000).div_euclid(MIN) * MIN;
    let mut rng = StdRng::seed_from_u64(12);
    let msgs = messages(&mut rng, base);
    let mut records = Vec::new();
    let mut bad = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        if i % 25 == 24 {
            let j = bad.len();
            let (key, value, reason, text) = malformed(j, j, base);
            records.push((key.clone(), value, Some(base)));
            bad.push((format!("bad{j}"), key, reason, text));
        }
        // Event time given three ways; without `ts`, the record's timestamp is the event time.
        let mut value =
            json!({"username": m.user, "city": m.city, "state": m.state, "message": format!("message {i} ☕")});
        let record_ts = match i % 3 {
            0 => {
                value["ts"] = chrono::DateTime::from_timestamp_millis(m.ts).expect("t").to_rfc3339().into();
                m.ts + 2_000
            }
            1 => {
                value["ts"] = m.ts.into();
                m.ts + 2_000
            }
            _ => m.ts,
        };
        records.push((Some(m.user.clone()), Some(value.to_string().into_bytes()), Some(record_ts)));
    }

    let mut pp = env.start_with(&[
        ("PAGEPULSE__pipelines__messages__idle_timeout", "\"3s\""),
        ("PAGEPULSE__pipelines__messages__totals_interval", "\"1s\""),
        ("PAGEPULSE__pipelines__posts__enabled", "false"),
        ("PAGEPULSE__pipelines__pages__enabled", "false"),
    ]);
    pp.wait_ready(Duration::from_secs(60));
    env.produce_python_at("messages", &records);

    // The independent count.
    let mut by_minute: BTreeMap<i64, Vec<&Msg>> = BTreeMap::new();
    for m in &msgs {
        by_minute.entry(m.ts.div_euclid(MIN) * MIN).or_default().push(m);
    }
    assert_eq!(by_minute.len(), MINUTES as usize);
    let want: BTreeMap<String, Minute> = by_minute.iter().map(|(m, ms)| (minute_key(*m), count(ms))).collect();

    let mut seen = HashSet::new();
    let mut n = 0;
    let recs = env.read_until("messages.stats", Duration::from_secs(120), |recs| {
        for r in &recs[n..] {
            seen.insert(r.key.clone().unwrap_or_default());
        }
        n = recs.len();
        seen.len() >= want.len()
    });
    let mut got: HashMap<String, Value> = HashMap::new();
    for r in &recs {
        let key = String::from_utf8(r.key.clone().expect("key")).expect("utf8");
        let v: Value = serde_json::from_slice(r.value.as_deref().expect("value")).expect("JSON");
        assert_eq!(v["final"], true, "{key}: {v}");
        assert!(got.insert(key.clone(), v).is_none(), "two records for {key}");
    }
    for (key, minute) in &want {
        let v = got.get(key).unwrap_or_else(|| panic!("no record for {key}"));
        assert_eq!(&figures(v), minute, "{key}");
        let start = chrono::DateTime::parse_from_rfc3339(v["minute_start"].as_str().expect("start")).expect("t");
        assert_eq!(minute_key(start.timestamp_millis()), *key);
    }

    // Dead letters: every malformed record, with its reason, naming the field.
    let letters = env.read_until("deadletter", Duration::from_secs(30), |recs| recs.len() >= bad.len());
    assert_eq!(letters.len(), bad.len());
    for (user, key, reason, text) in &bad {
        let letter = letters
            .iter()
            .find(|l| {
                l.key.as_deref().map(String::from_utf8_lossy).as_deref() == key.as_deref()
                    && (key.is_some()
                        || l.value.as_deref().is_some_and(|v| String::from_utf8_lossy(v).contains(user.as_str())))
            })
            .unwrap_or_else(|| panic!("no dead letter for {user} ({reason})"));
        assert_eq!(letter.headers["pagepulse.reason"], *reason, "{user}");
        assert!(letter.headers["pagepulse.error"].contains(text), "{user}: {}", letter.headers["pagepulse.error"]);
        assert_eq!(letter.headers["pagepulse.pipeline"], "messages");
    }

    // The totals: every valid message, all time.
    let valid = msgs.len() as u64;
    let t = totals(&env, valid);
    let all: Vec<&Msg> = msgs.iter().collect();
    let (total, users, by_state, top) = count(&all);
    assert_eq!((t["total"].as_u64(), t["users"].as_u64()), (Some(total), Some(users)));
    let (_, _, t_states, t_top) = figures(&t);
    assert_eq!((t_states, t_top), (by_state, top));

    // Late messages: two users write into the first minute, long final.
    let late: Vec<support::StampedRecord> = ["user1", "latecomer"]
        .iter()
        .map(|u| {
            let v = json!({"username": u, "city": "Boise", "state": "ID", "message": "late", "ts": base + 1_000});
            (Some(u.to_string()), Some(v.to_string().into_bytes()), Some(base + 600_000))
        })
        .collect();
    env.produce_python_at("messages", &late);
    wait_for("the late messages counted", Duration::from_secs(30), || {
        (pp.metric("pagepulse_window_ignored_events_total", r#"pipeline="messages",reason="late""#) >= 2.0)
            .then_some(())
    });
    let t = totals(&env, valid + 2);
    assert_eq!(t["users"].as_u64(), Some(users + 1), "the latecomer is a new user");
    let metrics = pp.metrics();
    assert_eq!(
        metric_value(&metrics, "pagepulse_records_produced_total", r#"topic="messages.stats""#),
        want.len() as f64,
        "exactly one messages.stats record per minute, late messages included"
    );
    assert_eq!(
        metric_value(&metrics, "pagepulse_window_ignored_events_total", r#"pipeline="messages",reason="late""#),
        2.0
    );
    pp.signal(libc::SIGTERM);
    assert!(pp.wait_exit(Duration::from_secs(15)).success());
}

/// Three instances split the users: `messages.totals`, written by the one holding partition 0
/// from every partition's figures (`messages.shares`), equals the independent count over every
/// message, and every instance answers `GET /api/v1/messages/totals` with it.
#[test]
fn three_instances_write_the_totals_of_every_partition() {
    let env = TestEnv::new();
    let now = chrono::Utc::now().timestamp_millis();
    let base = (now - 86_400_000).div_euclid(MIN) * MIN;
    let mut rng = StdRng::seed_from_u64(31);
    let msgs = messages(&mut rng, base);
    let vars = [
        ("PAGEPULSE__pipelines__messages__totals_interval", "\"1s\""),
        ("PAGEPULSE__pipelines__posts__enabled", "false"),
        ("PAGEPULSE__pipelines__pages__enabled", "false"),
        ("PAGEPULSE__pipelines__fans__enabled", "false"),
        ("PAGEPULSE__pipelines__apps__enabled", "false"),
        ("PAGEPULSE__pipelines__pageviews__enabled", "false"),
    ];
    let mut pps: Vec<support::Pagepulse> = (0..3).map(|_| env.start_with(&vars)).collect();
    for pp in &mut pps {
        pp.wait_ready(Duration::from_secs(90));
    }
    wait_for("every instance holds a messages partition", Duration::from_secs(60), || {
        pps.iter().all(|pp| pp.metric("pagepulse_assigned_partitions", "") >= 1.0).then_some(())
    });
    let records: Vec<support::StampedRecord> = msgs
        .iter()
        .map(|m| {
            let v = json!({"username": m.user, "city": m.city, "state": m.state, "message": "hi", "ts": m.ts});
            (Some(m.user.clone()), Some(v.to_string().into_bytes()), Some(m.ts))
        })
        .collect();
    env.produce_python_at("messages", &records);
    let all: Vec<&Msg> = msgs.iter().collect();
    let want = count(&all);
    let t = totals(&env, msgs.len() as u64);
    assert_eq!(figures(&t), want);
    for pp in &pps {
        wait_for("every instance answers the cluster-wide totals", Duration::from_secs(60), || {
            let (status, body) = support::http_get(&pp.addr, "/api/v1/messages/totals")?;
            let v: Value = serde_json::from_str(&body).ok().filter(|_| status == 200)?;
            (figures(&v) == want).then_some(())
        });
    }
    let writers: f64 = pps.iter().map(|pp| pp.metric("pagepulse_aggregate_writer", "pipeline=\"messages\"")).sum();
    assert_eq!(writers, 1.0, "exactly one instance writes messages.totals");
}
