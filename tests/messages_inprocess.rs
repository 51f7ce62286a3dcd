//! The messages pipeline through the real actor graph, in-process: the registry's `build`
//! (tasks, the minute board's actor), the router, task actors restoring from and flushing to an
//! in-memory changelog, and an in-memory sink instead of Kafka. Messages of four partitions over
//! several minutes, with malformed ones, must give one final record per minute equal to a count
//! made here; a rebalance (partitions revoked and assigned again, restoring their state) must not
//! change any figure; offsets are stored only once the state that covers them is flushed.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use actix::Arbiter;
use pagepulse::clock::SystemClock;
use pagepulse::config::Config;
use pagepulse::engine::aggregate::read_shares;
use pagepulse::engine::aggregate::Flush;
use pagepulse::engine::offsets::RecordingStore;
use pagepulse::engine::{BatchAck, MemoryBackend, MemorySink, OutRecord, RawRecord, Router, Sink, Store};
use pagepulse::health::Health;
use pagepulse::metrics::Metrics;
use pagepulse::pipelines::messages::{self, MinuteStats, TotalsBoard};
use pagepulse::pipelines::{LiveViews, Wiring};
use tokio::sync::mpsc;

const T0: i64 = 1_796_464_800_000; // 2026-12-05T10:00:00Z
const CHANGELOG: &str = "app-messages-changelog";
const PARTITIONS: i32 = 4;

/// Sends to a [`MemorySink`] and keeps changelog records in a [`MemoryBackend`].
struct ChangelogSink {
    sink: Arc<MemorySink>,
    backend: MemoryBackend,
}

impl Sink for ChangelogSink {
    fn send(&self, rec: OutRecord, ack: &Arc<BatchAck>) {
        if rec.topic == CHANGELOG {
            self.backend.append([rec.clone()]);
        }
        self.sink.send(rec, ack);
    }
}

/// Polls `f` on the actix runtime until it holds, for at most 20 s.
async fn until(what: &str, f: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// (username, state, city, event time) of message `i`: 40 users, six cities in varied spellings,
/// event time rising over four minutes with a few seconds of disorder.
fn message(i: i64) -> (String, String, String, i64) {
    let user = format!("user{}", (i * 7919) % 40);
    let (city, state) = [
        ("New York", "NY"),
        ("new  york", "ny "),
        ("Austin", "TX"),
        ("AUSTIN", "tx"),
        ("Boise", "ID"),
        ("Portland", "OR"),
    ][(i % 6) as usize];
    let ts = T0 + i * 600 + (i % 5) * 700;
    (user, state.to_string(), city.to_string(), ts)
}

fn record(i: i64, offset: i64) -> RawRecord {
    let (user, state, city, ts) = message(i);
    let v =
        serde_json::json!({"username": user, "city": city, "state": state, "message": format!("hello {i}"), "ts": ts});
    RawRecord { key: Some(user.into_bytes()), value: Some(v.to_string().into_bytes()), offset, timestamp_ms: Some(ts) }
}

fn partition_of(i: i64) -> i32 {
    let user = message(i).0;
    (user.bytes().map(i64::from).sum::<i64>() % i64::from(PARTITIONS)) as i32
}

/// A malformed record of kind `k`.
fn malformed(k: i64, offset: i64) -> RawRecord {
    let (key, value) = match k % 4 {
        0 => ("bad", r#"{"username": "bad", "city": "Boise", "message": "no state"}"#.to_string()),
        1 => ("bad", r#"{"username": "bad", "city": "  ", "state": "ID", "message": "blank city"}"#.to_string()),
        2 => ("other", r#"{"username": "bad", "city": "Boise", "state": "ID", "message": "wrong key"}"#.to_string()),
        _ => ("bad", "{not json".to_string()),
    };
    RawRecord { key: Some(key.into()), value: Some(value.into_bytes()), offset, timestamp_ms: Some(T0) }
}

/// A minute as counted here: (total, users, by_state as (state, count), top cities as (state,
/// city, count)).
type Minute = (u64, u64, Vec<(String, u64)>, Vec<(String, String, u64)>);

/// Every minute's record, counted here from messages `0..n`.
fn expected(n: i64) -> BTreeMap<String, Minute> {
    let mut minutes: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for i in 0..n {
        minutes.entry(message(i).3.div_euclid(60_000) * 60_000).or_default().push(i);
    }
    minutes
        .into_iter()
        .map(|(start, ids)| {
            let users: HashSet<String> = ids.iter().map(|i| message(*i).0).collect();
            let mut states: BTreeMap<String, u64> = BTreeMap::new();
            let mut cities: BTreeMap<(String, String), (u64, i64, String)> = BTreeMap::new();
            for i in &ids {
                let (_, state, city, ts) = message(*i);
                let state = state.trim().to_uppercase();
                let shown = city.split_whitespace().collect::<Vec<_>>().join(" ");
                *states.entry(state.clone()).or_default() += 1;
                let e = cities.entry((state, shown.to_lowercase())).or_insert((0, ts, shown.clone()));
                e.0 += 1;
                if (ts, &shown) < (e.1, &e.2) {
                    (e.1, e.2) = (ts, shown);
                }
            }
            let mut by_state: Vec<(String, u64)> = states.into_iter().collect();
            by_state.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            let mut top: Vec<(String, String, u64)> = cities.into_iter().map(|((s, _), (n, _, c))| (s, c, n)).collect();
            top.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)).then(a.1.cmp(&b.1)));
            top.truncate(10);
            let key = chrono::DateTime::from_timestamp_millis(start).expect("t").format("%Y-%m-%dT%H:%M").to_string();
            (key, (ids.len() as u64, users.len() as u64, by_state, top))
        })
        .collect()
}

fn stats(sink: &MemorySink) -> BTreeMap<String, Vec<MinuteStats>> {
    let mut out: BTreeMap<String, Vec<MinuteStats>> = BTreeMap::new();
    for r in sink.records_for(messages::STATS) {
        let key = String::from_utf8(r.key.expect("key")).expect("utf8");
        out.entry(key).or_default().push(serde_json::from_slice(r.value.as_deref().expect("v")).expect("json"));
    }
    out
}

fn check(got: &BTreeMap<String, Vec<MinuteStats>>, n: i64) {
    let want = expected(n);
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>());
    for (k, (total, users, by_state, top)) in &want {
        assert_eq!(got[k].len(), 1, "{k}: exactly one final record");
        let v = &got[k][0];
        assert!(v.is_final);
        assert_eq!((v.total, v.users), (*total, *users), "{k}");
        let have: Vec<(String, u64)> = v.by_state.iter().map(|s| (s.state.clone(), s.count)).collect();
        assert_eq!(&have, by_state, "{k}");
        let have: Vec<(String, String, u64)> =
            v.top_cities.iter().map(|c| (c.state.clone(), c.city.clone(), c.count)).collect();
        assert_eq!(&have, top, "{k}");
    }
}

#[test]
fn minutes_span_partitions_and_survive_a_rebalance() {
    actix_rt::System::new().block_on(async {
        let mut cfg = Config::default();
        cfg.messages.idle_timeout = Duration::from_secs(1);
        cfg.messages.allowed_lateness = Duration::from_secs(5);
        cfg.messages.totals_interval = Duration::from_secs(1);
        let metrics = Metrics::new();
        let backend = MemoryBackend::new();
        let sink = MemorySink::new();
        let out: Arc<dyn Sink> = Arc::new(ChangelogSink { sink: sink.clone(), backend: backend.clone() });
        let store = Store {
            name: messages::PIPELINE,
            changelog: CHANGELOG,
            backend: Arc::new(backend.clone()),
            flush_every: Duration::from_millis(50),
            health: Arc::new(Health::default()),
        };
        let live = LiveViews::new(&cfg);
        let wiring = Wiring {
            cfg: &cfg,
            sink: out,
            metrics: &metrics,
            clock: Arc::new(SystemClock),
            store: Some(store),
            live: &live,
        };
        let built = (messages::ENTRY.build)(wiring).expect("built");
        let arbiters = [Arbiter::new(), Arbiter::new()];
        let (done_tx, mut done) = mpsc::channel(1);
        let offsets = Arc::new(RecordingStore::default());
        let mut router = Router::new(
            vec![built.tasks],
            |l| format!("x.{l}"),
            arbiters.iter().map(Arbiter::handle).collect(),
            offsets.clone(),
            metrics.clone(),
            8,
            done_tx,
            1 << 20,
        );
        let input = router.input_index("x.messages").expect("input");
        for p in 0..PARTITIONS {
            router.assign("x.messages", p);
        }
        // First half: messages 0..200 (minutes 10:00 to 10:02), 12 malformed ones among them.
        let mut next_offset = [0i64; PARTITIONS as usize];
        let send = |router: &mut Router,
                    next_offset: &mut [i64; PARTITIONS as usize],
                    range: std::ops::Range<i64>,
                    bad: bool| {
            let mut batches: Vec<Vec<RawRecord>> = vec![Vec::new(); PARTITIONS as usize];
            for i in range {
                let p = partition_of(i) as usize;
                batches[p].push(record(i, next_offset[p]));
                next_offset[p] += 1;
                if bad && i % 17 == 0 {
                    batches[p].push(malformed(i, next_offset[p]));
                    next_offset[p] += 1;
                }
            }
            for (p, b) in batches.into_iter().enumerate() {
                for chunk in b.chunks(25) {
                    router.dispatch(input, p as i32, chunk.to_vec()).expect("dispatch");
                }
            }
        };
        send(&mut router, &mut next_offset, 0..200, true);
        let letters = || sink.records_for("deadletter").len();
        until("the malformed records dead-lettered", || letters() == 12).await;
        for l in sink.records_for("deadletter") {
            let why = String::from_utf8(l.header("pagepulse.error").expect("reason").to_vec()).expect("utf8");
            assert!(
                why.contains("`state`") || why.contains("`city`") || why.contains("key") || why.contains("JSON"),
                "{why}"
            );
        }
        // Minutes 10:00 and 10:01 close by watermark while input flows; then the input idles and
        // the rest closes.
        until("the first half's minutes", || stats(&sink).len() == expected(200).len()).await;
        check(&stats(&sink), 200);
        // Offsets stored only after the flushes that cover them.
        until("every offset stored", || {
            (0..PARTITIONS).all(|p| offsets.stored().contains(&("x.messages".into(), p, next_offset[p as usize])))
        })
        .await;

        // A rebalance: partitions 0 and 1 are revoked and assigned again; their tasks restore
        // from the changelog.
        router.revoke("x.messages", 0);
        router.revoke("x.messages", 1);
        router.assign("x.messages", 0);
        router.assign("x.messages", 1);
        // Second half: messages 200..400, minutes 10:02 to 10:04. Minute 10:02 got messages in
        // both halves, but closed by idleness in between: its later messages are late.
        let late_before = metrics.window_ignored.with_label_values(&[messages::PIPELINE, "late"]).get();
        send(&mut router, &mut next_offset, 200..400, false);
        let want_keys = expected(400).len();
        until("the second half's minutes", || stats(&sink).len() == want_keys).await;
        let late = metrics.window_ignored.with_label_values(&[messages::PIPELINE, "late"]).get() - late_before;
        let got = stats(&sink);
        // Every minute written once; the minutes after 10:02 hold only second-half messages and
        // equal the count made here.
        let all = expected(400);
        for (k, v) in &got {
            assert_eq!(v.len(), 1, "{k}: one record");
            if k.as_str() > "2026-12-05T10:02" {
                assert_eq!(v[0].total, all[k].0, "{k}");
                assert_eq!(v[0].users, all[k].1, "{k}");
            }
        }
        let in_1002_late = (200..400).filter(|i| message(*i).3 < T0 + 3 * 60_000).count() as u64;
        assert_eq!(late, in_1002_late, "10:02 was final: its second-half messages are late");
        // The totals count all 400 messages once, late ones included, across the rebalance: the
        // shares the tasks wrote (what every instance reads from `messages.shares`), through the
        // totals board, as an instance reading the topic would.
        let totals_of_shares = || {
            let mut board = TotalsBoard::new(5, 0);
            let refused = read_shares(&mut board, &sink.records_for(messages::SHARES), messages::totals::decode_share);
            assert!(refused.is_empty(), "{refused:?}");
            board.totals(0)
        };
        until("totals of 400 messages", || totals_of_shares().total == 400).await;
        let t = totals_of_shares();
        assert_eq!(t.users, (0..400).map(|i| message(i).0).collect::<HashSet<_>>().len() as u64);
        assert_eq!(t.top_cities[0].city, "New York");

        drop(router);
        tokio::time::timeout(Duration::from_secs(10), done.recv()).await.expect("tasks stop");
        for agg in built.aggregators {
            agg.send(Flush).await.expect("the board flushes");
        }
    });
}
