//! Messages: statistics by state and city, per event-time minute and over all time.
//!
//! - Input `messages` (key = username): `{"username", "city", "state", "message", "ts"?}`, `ts`
//!   RFC 3339 or epoch milliseconds, else the record's timestamp. States are compared trimmed and
//!   upper-cased; cities are grouped within their state case-insensitively with whitespace
//!   collapsed, and shown as first seen (see [`store::Spelling`]).
//! - Output `messages.stats` (compacted, key = the minute, `YYYY-MM-DDTHH:MM`): exactly one
//!   final record per event-time minute that had messages, with every partition's counts.
//! - Output `messages.totals` (compacted, key `totals`): the all-time figures of every partition,
//!   at most every `totals_interval` and only when they changed, exact across instances (see
//!   [`totals`]: every partition's figures go through the internal `messages.shares`).
//!
//! Minutes span partitions (the key is the username), so each task counts its partition's share
//! into a [`PartitionCounts`] (its durable state) and the instance's [`MinuteBoard`] decides when
//! a minute is final and writes it: see [`board`] for the design (watermarks, idleness, the
//! frontier handshake that keeps a final record unique across crashes). Distinct users are
//! counted exactly: partitions hold disjoint users (a record whose key is not its username is
//! refused), so per-partition counts add up.
//!
//! Parts: [`config`] (`[pipelines.messages]`), [`processor`] (decode, normalize, count),
//! [`store`] (each partition's counts: the durable state), [`board`] (the cross-partition
//! minutes), [`totals`] (the all-time figures across instances), [`records`] (the values
//! written, the ranking).

pub mod board;
pub mod config;
pub mod export;
pub mod names;
pub mod processor;
pub mod records;
pub mod store;
pub mod totals;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::{Actor, ArbiterHandle};
use tokio::sync::mpsc;

pub use self::board::{minute_key, BoardSettings, Membership, MinuteBoard};
pub use self::config::MessagesConfig;
pub use self::names::{INPUT, MINUTE_MS, PIPELINE, SHARES, STATS, TOTALS, TOTALS_KEY};
pub use self::processor::{decode_message, Message, MessagesProcessor};
pub use self::records::{CityRank, MinuteStats, StateCount, Totals};
pub use self::store::{MessagesStore, PartitionCounts};
pub use self::totals::{TotalsBoard, TotalsPart};
use super::{Built, Error, GlobalTable, Pipeline, Wiring};
use crate::engine::aggregate::SharesReader;
use crate::engine::{AggregatorActor, Batch, Leadership, PipelineSpec, TaskFactory};

/// The messages pipeline's line in the [registry](super::REGISTRY).
pub const ENTRY: Pipeline = Pipeline {
    name: PIPELINE,
    enabled: |cfg| cfg.messages.enabled,
    inputs: &[INPUT],
    outputs: &[STATS, TOTALS, SHARES],
    store_input: Some(INPUT),
    served: &[STATS, TOTALS],
    exports: export::FAMILIES,
    export: Some(export::export),
    build,
};

/// How often the board looks for minutes to close: the delay between a minute becoming final
/// and its record.
pub const BOARD_TICK: Duration = Duration::from_secs(1);

/// The board's settings from the pipeline's config.
pub fn board_settings(cfg: &MessagesConfig) -> BoardSettings {
    let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    BoardSettings {
        lateness_ms: ms(cfg.allowed_lateness),
        idle_ms: ms(cfg.idle_timeout),
        top_cities: cfg.top_cities,
        totals_every_ms: ms(cfg.totals_interval),
    }
}

/// The messages tasks, each counting into the board, and the board's actor, ticked every
/// [`BOARD_TICK`].
fn build(w: Wiring<'_>) -> Result<Built, Error> {
    let cfg = w.cfg.messages.clone();
    let settings = board_settings(&cfg);
    let board = Arc::new(Mutex::new(MinuteBoard::new(settings).without_totals()));
    let actor = AggregatorActor::new(board.clone(), BOARD_TICK, w.sink.clone()).start();
    // `messages.totals` is cluster-wide: every partition's figures go through `messages.shares`.
    let totals = Arc::new(Mutex::new(TotalsBoard::new(settings.top_cities, settings.totals_every_ms)));
    let leadership = Leadership::new().with_gauge(w.metrics.aggregate_writer.with_label_values(&[PIPELINE]));
    let shares_read = Arc::new(AtomicBool::new(false));
    let totals_actor = AggregatorActor::new(totals.clone(), BOARD_TICK, w.sink.clone())
        .with_shares(leadership.clone(), shares_read.clone())
        .start();
    let (b, m, durable) = (board.clone(), w.metrics.clone(), w.store.is_some());
    let spec = PipelineSpec::new(
        PIPELINE,
        vec![INPUT],
        move |partition| MessagesProcessor::new(partition, &cfg, b.clone(), &m, durable),
        w.sink,
        None,
        w.metrics.clone(),
    )
    .with_shares(Arc::new(totals::publish), leadership)
    .with_store(w.store);
    let tasks = Arc::new(Tasks { spec, board });
    let shares =
        GlobalTable::new(PIPELINE, SHARES, SharesReader::new(totals, totals::decode_share)).with_caught_up(shares_read);
    Ok(Built {
        tasks,
        aggregators: vec![actor.recipient(), totals_actor.recipient()],
        globals: vec![shares],
        helpers: None,
    })
}

/// The pipeline's tasks: a [`PipelineSpec`] that also tells the board of every assignment before
/// the task restores, so no minute closes while a partition's counts are still being read.
struct Tasks {
    spec: PipelineSpec<MessagesProcessor>,
    board: Arc<Mutex<MinuteBoard>>,
}

impl TaskFactory for Tasks {
    fn pipeline(&self) -> &'static str {
        self.spec.pipeline()
    }

    fn inputs(&self) -> &[&'static str] {
        self.spec.inputs()
    }

    fn spawn(&self, partition: i32, arbiter: &ArbiterHandle, inbox: mpsc::Receiver<Batch>, done: mpsc::Sender<()>) {
        self.board.lock().unwrap_or_else(|p| p.into_inner()).assigned(partition);
        self.spec.spawn(partition, arbiter, inbox, done);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap, HashSet};

    use chrono::DateTime;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::config::Config;
    use crate::engine::state::{flush_records, Change, MemoryBackend, StateBackend};
    use crate::engine::{Aggregate, BatchAck, Emit, OutRecord, Processor, RawRecord, RecordMeta};
    use crate::metrics::Metrics;

    const T0: i64 = 1_796_464_800_000; // 2026-12-05T10:00:00Z
    const MIN: i64 = 60_000;
    const CHANGELOG: &str = "messages-changelog";
    /// The idle timeout of most tests: longer than any of their inputs takes.
    const IDLE_MS: i64 = 3_600_000;
    const CITIES: [(&str, &str); 6] = [
        ("New York", "NY"),
        ("Buffalo", "NY"),
        ("Los Angeles", "CA"),
        ("San José", "CA"),
        ("Austin", "TX"),
        ("Portland", "OR"),
    ];

    /// One message of the test input.
    #[derive(Debug, Clone)]
    struct Msg {
        user: String,
        state: String,
        city: String,
        ts: i64,
    }

    fn record(m: &Msg, offset: i64) -> RawRecord {
        let v = serde_json::json!({"username": m.user, "city": m.city, "state": m.state, "message": "hi", "ts": m.ts});
        RawRecord {
            key: Some(m.user.as_bytes().to_vec()),
            value: Some(v.to_string().into_bytes()),
            offset,
            timestamp_ms: Some(m.ts),
        }
    }

    /// A random spelling of a city or state: case and spacing vary, the name does not.
    fn respell(rng: &mut StdRng, name: &str) -> String {
        let words: Vec<String> = name
            .split(' ')
            .map(|w| match rng.gen_range(0..4) {
                0 => w.to_lowercase(),
                1 => w.to_uppercase(),
                _ => w.to_string(),
            })
            .collect();
        let sep = if rng.gen_bool(0.2) { "  " } else { " " };
        let pad = if rng.gen_bool(0.2) { " " } else { "" };
        format!("{pad}{}{pad}", words.join(sep))
    }

    /// Random input: `n` messages of `users` users, event time rising by up to `step` ms per
    /// message with jitter below half the allowed lateness (so no message is late).
    fn input(rng: &mut StdRng, n: usize, users: usize, step: i64, lateness: i64) -> Vec<Msg> {
        let mut base = T0 + rng.gen_range(0..MIN);
        (0..n)
            .map(|_| {
                base += rng.gen_range(0..=step);
                let (city, state) = CITIES[((CITIES.len() as f64) * rng.gen::<f64>().powi(2)) as usize];
                let jitter = if lateness > 2 { rng.gen_range(-lateness / 2 + 1..lateness / 2) } else { 0 };
                Msg {
                    user: format!("u{}", ((users as f64) * rng.gen::<f64>().powi(2)) as usize),
                    state: respell(rng, state),
                    city: respell(rng, city),
                    ts: base + jitter,
                }
            })
            .collect()
    }

    fn partition_of(user: &str, partitions: usize) -> usize {
        user.bytes().fold(7usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize)) % partitions
    }

    /// The independent computation: every minute's record, from the messages alone.
    fn expected(msgs: &[Msg], top: usize) -> BTreeMap<String, MinuteStats> {
        let mut minutes: BTreeMap<i64, Vec<&Msg>> = BTreeMap::new();
        for m in msgs {
            minutes.entry(m.ts.div_euclid(MIN) * MIN).or_default().push(m);
        }
        minutes
            .into_iter()
            .map(|(start, ms)| {
                let users: HashSet<&str> = ms.iter().map(|m| m.user.as_str()).collect();
                let mut states: BTreeMap<String, u64> = BTreeMap::new();
                let mut cities: HashMap<(String, String), (u64, (i64, String))> = HashMap::new();
                for m in &ms {
                    let state = m.state.trim().to_uppercase();
                    let shown = m.city.split_whitespace().collect::<Vec<_>>().join(" ");
                    *states.entry(state.clone()).or_default() += 1;
                    let e = cities.entry((state, shown.to_lowercase())).or_insert((0, (m.ts, shown.clone())));
                    e.0 += 1;
                    e.1 = e.1.clone().min((m.ts, shown));
                }
                let mut by_state: Vec<StateCount> =
                    states.into_iter().map(|(state, count)| StateCount { state, count }).collect();
                by_state.sort_by(|a, b| b.count.cmp(&a.count).then(a.state.cmp(&b.state)));
                let mut all: Vec<(String, String, u64)> =
                    cities.into_iter().map(|((state, _), (n, (_, shown)))| (state, shown, n)).collect();
                all.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)).then(a.1.cmp(&b.1)));
                let top_cities = all
                    .into_iter()
                    .take(top)
                    .enumerate()
                    .map(|(i, (state, city, count))| CityRank { rank: i + 1, state, city, count })
                    .collect();
                let stats = MinuteStats {
                    minute_start: crate::clock::format_ms(start),
                    is_final: true,
                    total: ms.len() as u64,
                    users: users.len() as u64,
                    by_state,
                    top_cities,
                };
                (minute_key(start), stats)
            })
            .collect()
    }

    fn cfg(lateness_ms: u64, top: usize) -> MessagesConfig {
        MessagesConfig {
            allowed_lateness: Duration::from_millis(lateness_ms),
            idle_timeout: Duration::from_millis(IDLE_MS as u64),
            top_cities: top,
            ..Config::default().messages
        }
    }

    fn board(cfg: &MessagesConfig) -> Arc<Mutex<MinuteBoard>> {
        Arc::new(Mutex::new(MinuteBoard::new(board_settings(cfg))))
    }

    fn at(ms: i64) -> DateTime<chrono::Utc> {
        DateTime::from_timestamp_millis(ms).expect("time")
    }

    /// One board tick at `now_ms`, as the aggregate's actor runs it; its records are
    /// acknowledged at once unless `hold` keeps their ack for later.
    fn tick(
        board: &Mutex<MinuteBoard>,
        now_ms: i64,
        out: &mut Vec<OutRecord>,
        hold: Option<&mut Vec<(Arc<BatchAck>, usize)>>,
    ) {
        let mut recs = Vec::new();
        let ack = BatchAck::untracked();
        {
            let mut b = board.lock().expect("board");
            b.on_tick(at(now_ms), &mut recs);
            if !recs.is_empty() {
                b.sent(&ack);
            }
        }
        for _ in &recs {
            ack.add_output();
        }
        ack.processed();
        match hold {
            Some(h) => h.push((ack, recs.len())),
            None => release(&ack, recs.len()),
        }
        out.extend(recs);
    }

    /// The input stops: a tick sees the last input, and one more `idle_timeout` later finds the
    /// instance idle.
    fn idle(board: &Mutex<MinuteBoard>, now_ms: i64, out: &mut Vec<OutRecord>) {
        tick(board, now_ms + 1, out, None);
        tick(board, now_ms + 1 + IDLE_MS, out, None);
    }

    fn release(ack: &BatchAck, outputs: usize) {
        for _ in 0..outputs {
            ack.output_done(true);
        }
    }

    fn feed(p: &mut MessagesProcessor, m: &Msg, offset: i64) {
        let r = record(m, offset);
        let input = p.decode(INPUT, &r).unwrap_or_else(|e| panic!("{m:?} refused: {e}"));
        p.process(
            input,
            &RecordMeta { topic: INPUT, partition: 0, offset, timestamp_ms: r.timestamp_ms },
            &mut Emit::default(),
        );
    }

    /// `messages.stats` records by key, every value in the order written.
    fn stats(out: &[OutRecord]) -> BTreeMap<String, Vec<MinuteStats>> {
        let mut by_key: BTreeMap<String, Vec<MinuteStats>> = BTreeMap::new();
        for r in out.iter().filter(|r| r.topic == STATS) {
            let key = String::from_utf8(r.key.clone().expect("key")).expect("utf8");
            by_key.entry(key).or_default().push(serde_json::from_slice(r.value.as_deref().expect("v")).expect("json"));
        }
        by_key
    }

    fn last_totals(out: &[OutRecord]) -> Option<Totals> {
        out.iter()
            .rev()
            .find(|r| r.topic == TOTALS)
            .map(|r| serde_json::from_slice(r.value.as_deref().expect("v")).expect("json"))
    }

    /// Property: over random input spread over 1 to 4 partitions, processed in random
    /// interleavings with board ticks in between, every minute gets exactly one final record,
    /// equal to the independent computation, and the totals equal the all-time figures.
    #[test]
    fn every_minute_equals_an_independent_computation_whatever_the_interleaving() {
        let (mut closed_by_watermark, mut minutes) = (0, 0);
        for seed in 0..60u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let (lateness, top) = (rng.gen_range(0..20_000), rng.gen_range(1..8));
            let cfg = cfg(lateness, top);
            let (n, users, step) = (rng.gen_range(1..600), rng.gen_range(1..40), rng.gen_range(0..3_000));
            let msgs = input(&mut rng, n, users, step, lateness as i64);
            let parts = rng.gen_range(1..=4);
            let b = board(&cfg);
            let m = Metrics::new();
            let mut procs: Vec<MessagesProcessor> =
                (0..parts).map(|p| MessagesProcessor::new(p as i32, &cfg, b.clone(), &m, false)).collect();
            let mut queues: Vec<Vec<&Msg>> = vec![Vec::new(); parts];
            for msg in &msgs {
                queues[partition_of(&msg.user, parts)].push(msg);
            }
            let mut next = vec![0; parts];
            let (mut out, mut now) = (Vec::new(), T0);
            while (0..parts).any(|p| next[p] < queues[p].len()) {
                let p = rng.gen_range(0..parts);
                for _ in 0..rng.gen_range(1..20) {
                    if let Some(msg) = queues[p].get(next[p]) {
                        feed(&mut procs[p], msg, next[p] as i64);
                        next[p] += 1;
                    }
                }
                if rng.gen_bool(0.3) {
                    now += 100;
                    tick(&b, now, &mut out, None);
                }
            }
            closed_by_watermark += stats(&out).len();
            // The input ends: the instance goes idle and the last minutes close.
            idle(&b, now, &mut out);
            let want = expected(&msgs, top);
            minutes += want.len();
            let got = stats(&out);
            assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "seed {seed}");
            for (k, v) in &got {
                assert_eq!(v.len(), 1, "seed {seed} {k}: one final record");
                assert_eq!(v[0], want[k], "seed {seed} {k}");
            }
            let totals = last_totals(&out).expect("totals");
            let users: HashSet<&str> = msgs.iter().map(|m| m.user.as_str()).collect();
            assert_eq!((totals.total, totals.users), (msgs.len() as u64, users.len() as u64), "seed {seed}");
            let state_sum: u64 = totals.by_state.iter().map(|s| s.count).sum();
            assert_eq!(state_sum, msgs.len() as u64);
            // Nothing closes twice, however long it keeps ticking.
            let before = out.len();
            tick(&b, now + 10 * IDLE_MS, &mut out, None);
            assert_eq!(stats(&out[before..]).len(), 0);
        }
        assert!(
            closed_by_watermark * 2 > minutes,
            "most minutes close by watermark: {closed_by_watermark} of {minutes}"
        );
    }

    #[test]
    fn a_minute_waits_for_every_partition_and_late_messages_count_only_in_the_totals() {
        let cfg = cfg(10_000, 3);
        let b = board(&cfg);
        let m = Metrics::new();
        let (mut p0, mut p1) = (
            MessagesProcessor::new(0, &cfg, b.clone(), &m, false),
            MessagesProcessor::new(1, &cfg, b.clone(), &m, false),
        );
        let msg = |user: &str, city: &str, state: &str, ts: i64| Msg {
            user: user.into(),
            city: city.into(),
            state: state.into(),
            ts,
        };
        let mut out = Vec::new();
        feed(&mut p0, &msg("ana", "Austin", "TX", T0 + 1_000), 0);
        feed(&mut p1, &msg("bo", "austin", "tx", T0 + 2_000), 0);
        feed(&mut p0, &msg("ana", "Austin", "TX", T0 + 80_000), 1); // p0's watermark: T0 + 70 s
        tick(&b, T0, &mut out, None);
        assert!(stats(&out).is_empty(), "partition 1 is still in the first minute");
        feed(&mut p1, &msg("bo", "Austin", "TX", T0 + 75_000), 1); // p1's watermark: T0 + 65 s
        tick(&b, T0 + 1_000, &mut out, None);
        let got = stats(&out);
        assert_eq!(got.len(), 1);
        let first = &got["2026-12-05T10:00"][0];
        assert_eq!((first.total, first.users), (2, 2));
        assert_eq!(first.top_cities[0].city, "Austin", "the earliest spelling");
        // A late message: never in the final minute, in the totals and the metric.
        feed(&mut p1, &msg("cy", "Boise", "ID", T0 + 30_000), 2);
        assert_eq!(m.window_ignored.with_label_values(&[PIPELINE, "late"]).get(), 1);
        idle(&b, T0 + 2_000, &mut out);
        let got = stats(&out);
        assert_eq!(got["2026-12-05T10:00"].len(), 1, "final minutes never change");
        assert_eq!(got["2026-12-05T10:01"][0].total, 2);
        let totals = last_totals(&out).expect("totals");
        assert_eq!((totals.total, totals.users), (5, 3));
        assert!(totals.by_state.contains(&StateCount { state: "ID".into(), count: 1 }));
    }

    #[test]
    fn nothing_closes_while_a_partition_restores_or_the_instance_holds_none() {
        let cfg = MessagesConfig { idle_timeout: Duration::from_secs(5), ..cfg(0, 3) };
        let b = board(&cfg);
        let m = Metrics::new();
        let msg = Msg { user: "ana".into(), city: "Austin".into(), state: "TX".into(), ts: T0 };
        b.lock().expect("board").assigned(0);
        b.lock().expect("board").assigned(1);
        let mut p0 = MessagesProcessor::new(0, &cfg, b.clone(), &m, true);
        p0.restore(Default::default(), &mut Emit::default());
        feed(&mut p0, &msg, 0);
        let mut out = Vec::new();
        tick(&b, T0, &mut out, None);
        tick(&b, T0 + 60_000, &mut out, None);
        assert!(out.is_empty(), "partition 1 is restoring: {out:?}");
        let mut p1 = MessagesProcessor::new(1, &cfg, b.clone(), &m, true);
        p1.restore(Default::default(), &mut Emit::default());
        tick(&b, T0 + 61_000, &mut out, None);
        tick(&b, T0 + 62_000, &mut out, None);
        assert!(stats(&out).is_empty(), "partition 1 just joined, with no watermark yet");
        // Both revoked (a rebalance): idle or not, nothing closes without partitions.
        let backend = MemoryBackend::new();
        let mut changes = Vec::new();
        p0.take_changes(&mut changes);
        backend.append(flush_records(CHANGELOG, 0, 1, changes, Some(1)));
        drop((p0, p1));
        tick(&b, T0 + 200_000, &mut out, None);
        tick(&b, T0 + 202_000, &mut out, None);
        assert!(stats(&out).is_empty());
        // Both come back; partition 1 stays without input: once the instance is idle the
        // minute closes, with partition 0's restored counts.
        b.lock().expect("board").assigned(0);
        b.lock().expect("board").assigned(1);
        let mut p0 = MessagesProcessor::new(0, &cfg, b.clone(), &m, true);
        p0.restore(backend.restore(CHANGELOG, 0, 2).expect("memory").entries, &mut Emit::default());
        tick(&b, T0 + 202_500, &mut out, None);
        let mut p1 = MessagesProcessor::new(1, &cfg, b.clone(), &m, true);
        p1.restore(Default::default(), &mut Emit::default());
        tick(&b, T0 + 203_000, &mut out, None);
        tick(&b, T0 + 207_000, &mut out, None);
        assert!(stats(&out).is_empty(), "not idle yet");
        tick(&b, T0 + 208_500, &mut out, None);
        assert_eq!(stats(&out)["2026-12-05T10:00"][0].total, 1);
        feed(&mut p1, &Msg { user: "bo".into(), ..msg.clone() }, 0);
        assert_eq!(m.window_ignored.with_label_values(&[PIPELINE, "late"]).get(), 1);
        drop(p0);
    }

    #[test]
    fn a_partition_that_comes_back_replaces_its_counts() {
        let cfg = cfg(0, 3);
        let b = board(&cfg);
        let m = Metrics::new();
        let backend = MemoryBackend::new();
        let msg = |user: &str, ts| Msg { user: user.into(), city: "Austin".into(), state: "TX".into(), ts };
        let mut p = MessagesProcessor::new(0, &cfg, b.clone(), &m, false);
        let mut q = MessagesProcessor::new(1, &cfg, b.clone(), &m, true);
        q.restore(Default::default(), &mut Emit::default());
        feed(&mut q, &msg("bo", T0), 0);
        feed(&mut q, &msg("cy", T0 + 1), 1);
        let mut changes = Vec::new();
        q.take_changes(&mut changes);
        backend.append(flush_records(CHANGELOG, 1, 1, changes, Some(2)));
        drop(q); // revoked, and assigned to this instance again
        b.lock().expect("board").assigned(1);
        let mut q = MessagesProcessor::new(1, &cfg, b.clone(), &m, true);
        q.restore(backend.restore(CHANGELOG, 1, 2).expect("memory").entries, &mut Emit::default());
        feed(&mut p, &msg("ana", T0 + 60_000), 0);
        feed(&mut q, &msg("cy", T0 + 60_000), 2);
        let mut out = Vec::new();
        tick(&b, T0, &mut out, None);
        let first = &stats(&out)["2026-12-05T10:00"][0];
        assert_eq!((first.total, first.users), (2, 2), "counted once");
        assert_eq!(b.lock().expect("board").totals(T0).total, 4);
    }

    /// A final record whose acknowledgement has not come (or failed) keeps its minute's counts:
    /// the durable frontier moves only over acknowledged finals, and only then do partitions
    /// drop the minute.
    #[test]
    fn a_minute_is_dropped_only_once_its_record_is_acknowledged() {
        let cfg = cfg(0, 3);
        let b = board(&cfg);
        let m = Metrics::new();
        let mut p = MessagesProcessor::new(0, &cfg, b.clone(), &m, true);
        p.restore(Default::default(), &mut Emit::default());
        let msg = |ts| Msg { user: "ana".into(), city: "Austin".into(), state: "TX".into(), ts };
        feed(&mut p, &msg(T0), 0);
        feed(&mut p, &msg(T0 + MIN), 1);
        let (mut out, mut held) = (Vec::new(), Vec::new());
        tick(&b, T0, &mut out, Some(&mut held));
        assert_eq!(stats(&out).len(), 1);
        let mut changes: Vec<Change> = Vec::new();
        tick(&b, T0 + 1_000, &mut out, None);
        p.on_tick(at(T0), &mut Emit::default());
        p.take_changes(&mut changes);
        assert!(changes.iter().all(|c| c.1.is_some()), "nothing deleted before the ack: {changes:?}");
        assert_eq!(p.store().lock().minutes().len(), 2);
        // Refused: still nothing.
        held[0].0.output_done(false);
        release(&held[0].0, held[0].1 - 1);
        tick(&b, T0 + 2_000, &mut out, None);
        assert_eq!(b.lock().expect("board").durable_before(), i64::MIN);
        // A fresh board whose record went through.
        let b = board(&cfg);
        let mut p = MessagesProcessor::new(0, &cfg, b.clone(), &m, true);
        p.restore(Default::default(), &mut Emit::default());
        feed(&mut p, &msg(T0), 0);
        feed(&mut p, &msg(T0 + MIN), 1);
        p.take_changes(&mut Vec::new()); // the minutes' first chunks
        let mut held = Vec::new();
        tick(&b, T0, &mut out, Some(&mut held));
        release(&held[0].0, held[0].1);
        tick(&b, T0 + 1_000, &mut out, None);
        assert_eq!(b.lock().expect("board").durable_before(), T0 + MIN);
        let mut changes = Vec::new();
        p.take_changes(&mut changes);
        let deleted: Vec<String> =
            changes.iter().filter(|c| c.1.is_none()).map(|c| String::from_utf8_lossy(&c.0).into_owned()).collect();
        assert_eq!(deleted, [format!("m/{T0}/0")]);
        assert_eq!(p.store().lock().minutes().keys().copied().collect::<Vec<_>>(), [T0 + MIN]);
    }

    /// Property: crash and restore equivalence. The input is processed by processors that flush
    /// their changes at random moments and are all lost at random moments (the board too, and any
    /// acknowledgement in flight); each new incarnation restores every partition from its
    /// changelog and goes on from the restored positions, in another interleaving. Every record it
    /// writes equals the uninterrupted run's record for that minute, every minute is written, and
    /// the final totals are the same.
    #[test]
    fn crashes_and_restores_write_what_an_uninterrupted_run_writes() {
        let (mut crashes, mut repeats, mut restored_minutes) = (0, 0, 0);
        for seed in 0..40u64 {
            let mut rng = StdRng::seed_from_u64(1000 + seed);
            let lateness = rng.gen_range(1_000..20_000);
            let cfg = cfg(lateness, rng.gen_range(1..6));
            let (n, users, step) = (rng.gen_range(50..500), rng.gen_range(2..30), rng.gen_range(100..3_000));
            let msgs = input(&mut rng, n, users, step, lateness as i64);
            let parts = rng.gen_range(1..=4);
            let mut queues: Vec<Vec<&Msg>> = vec![Vec::new(); parts];
            for msg in &msgs {
                queues[partition_of(&msg.user, parts)].push(msg);
            }
            let want = expected(&msgs, cfg.top_cities);
            let backend = MemoryBackend::new();
            let m = Metrics::new();
            let mut out = Vec::new();
            let mut now = T0;
            for incarnation in 1u64.. {
                let b = board(&cfg);
                for p in 0..parts {
                    b.lock().expect("board").assigned(p as i32);
                }
                let mut procs = Vec::new();
                let mut next = Vec::new();
                for p in 0..parts {
                    // Partitions restore one by one, the board ticking meanwhile.
                    tick(&b, now, &mut out, None);
                    let r = backend.restore(CHANGELOG, p as i32, incarnation).expect("memory");
                    let mut proc = MessagesProcessor::new(p as i32, &cfg, b.clone(), &m, true);
                    restored_minutes += usize::from(!r.entries.is_empty());
                    next.push(r.position.unwrap_or(0) as usize);
                    proc.restore(r.entries, &mut Emit::default());
                    procs.push(proc);
                }
                let last = incarnation == 6;
                let mut held: Vec<(Arc<BatchAck>, usize)> = Vec::new();
                let mut steps = 0;
                while (0..parts).any(|p| next[p] < queues[p].len()) {
                    steps += 1;
                    if !last && rng.gen_bool(0.01) {
                        break; // a crash: everything in memory is lost
                    }
                    let p = rng.gen_range(0..parts);
                    for _ in 0..rng.gen_range(1..10) {
                        if let Some(msg) = queues[p].get(next[p]) {
                            feed(&mut procs[p], msg, next[p] as i64);
                            next[p] += 1;
                        }
                    }
                    match rng.gen_range(0..10) {
                        0..=2 => {
                            let mut changes = Vec::new();
                            procs[p].on_tick(at(now), &mut Emit::default());
                            procs[p].take_changes(&mut changes);
                            backend.append(flush_records(
                                CHANGELOG,
                                p as i32,
                                incarnation,
                                changes,
                                Some(next[p] as i64),
                            ));
                        }
                        3..=5 => {
                            now += 100;
                            tick(&b, now, &mut out, Some(&mut held));
                        }
                        6 => {
                            for (a, n) in held.drain(..) {
                                release(&a, n);
                            }
                        }
                        _ => {}
                    }
                }
                let _ = steps;
                if last || (0..parts).all(|p| next[p] >= queues[p].len()) {
                    for (a, n) in held.drain(..) {
                        release(&a, n);
                    }
                    idle(&b, now, &mut out);
                    break;
                }
                crashes += 1;
            }
            let got = stats(&out);
            assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "seed {seed}");
            for (k, values) in &got {
                for v in values {
                    assert_eq!(v, &want[k], "seed {seed} {k}");
                }
                repeats += values.len() - 1;
            }
            let totals = last_totals(&out).expect("totals");
            assert_eq!(totals.total, msgs.len() as u64, "seed {seed}: every message counted once");
            let users: HashSet<&str> = msgs.iter().map(|m| m.user.as_str()).collect();
            assert_eq!(totals.users, users.len() as u64, "seed {seed}");
        }
        assert!(
            crashes > 25 && restored_minutes > 40,
            "coverage: {crashes} crashes, {restored_minutes} restores with state"
        );
        eprintln!("{crashes} crashes; {repeats} identical final records written again after a crash");
    }

    /// The topic definitions against the real decoder and the real outputs.
    #[test]
    fn topic_examples_match_the_decoder_and_outputs_match_their_schemas() {
        use crate::kafka::topics;
        let validator = |name: &str| {
            let def = topics::get(name).expect("defined");
            jsonschema::options().should_validate_formats(true).build(&def.value_schema).expect("schema compiles")
        };
        let input = topics::get(INPUT).expect("defined");
        let cfg = cfg(30_000, 10);
        let b = board(&cfg);
        let m = Metrics::new();
        let mut p = MessagesProcessor::new(0, &cfg, b.clone(), &m, false);
        for (i, ex) in input.examples.iter().enumerate() {
            let r = RawRecord {
                key: ex.key.clone().map(String::into_bytes),
                value: Some(ex.value.to_string().into_bytes()),
                offset: i as i64,
                timestamp_ms: Some(T0 + 30_000),
            };
            let msg = p.decode(INPUT, &r).unwrap_or_else(|e| panic!("example {} refused: {e}", ex.value));
            p.process(
                msg,
                &RecordMeta { topic: INPUT, partition: 0, offset: 0, timestamp_ms: r.timestamp_ms },
                &mut Emit::default(),
            );
        }
        let v = validator(INPUT);
        assert!(input.invalid_examples.len() >= 5);
        for bad in &input.invalid_examples {
            let key = bad.key.clone().unwrap_or_else(|| "fred".into());
            let r = RawRecord {
                key: Some(key.into_bytes()),
                value: Some(bad.value.clone().into_bytes()),
                offset: 0,
                timestamp_ms: Some(T0),
            };
            let why = p.decode(INPUT, &r).err().unwrap_or_else(|| panic!("accepted {}", bad.value));
            assert_eq!(why.class.as_str(), bad.reason, "{}: {}", bad.value, why.message);
            // The schema refuses the same (it cannot see keys or parse times).
            let schema_blind = bad.key.is_some() || bad.value.contains("noon");
            if let (false, Ok(json)) = (schema_blind, serde_json::from_str::<serde_json::Value>(&bad.value)) {
                assert!(!v.is_valid(&json), "schema accepts {}", bad.value);
            }
        }
        let mut out = Vec::new();
        idle(&b, T0, &mut out);
        let (vs, vt) = (validator(STATS), validator(TOTALS));
        assert_eq!(stats(&out).len(), 1, "the three examples share a minute");
        for r in &out {
            let json: serde_json::Value = serde_json::from_slice(r.value.as_deref().expect("v")).expect("json");
            let errors: Vec<String> = if r.topic == STATS { vs.iter_errors(&json) } else { vt.iter_errors(&json) }
                .map(|e| e.to_string())
                .collect();
            assert!(errors.is_empty(), "real {} {json} violates its schema: {errors:?}", r.topic);
        }
        let minute = &stats(&out)["2026-12-05T10:00"][0];
        assert_eq!(minute.top_cities[0], CityRank { rank: 1, state: "NY".into(), city: "New York".into(), count: 2 });
        for ex in &topics::get(STATS).expect("defined").examples {
            let _: MinuteStats = serde_json::from_value(ex.value.clone()).expect("example decodes as MinuteStats");
        }
        for ex in &topics::get(TOTALS).expect("defined").examples {
            let _: Totals = serde_json::from_value(ex.value.clone()).expect("example decodes as Totals");
        }
    }
}
