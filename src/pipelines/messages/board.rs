//! The minute board: the cross-partition aggregate of the messages pipeline (see
//! [`crate::engine::aggregate`]). Messages are keyed by username, so every minute spans every
//! partition; the board reads each partition's [`PartitionCounts`], decides when a minute is
//! final, and writes its one `messages.stats` record with every partition's counts in it, and
//! `messages.totals`.
//!
//! **Why the tasks' counts are shared, not merged.** Each task registers its partition's counts
//! (an `Arc<Mutex<_>>` it writes under a short lock per message) instead of sending deltas: a
//! restored partition then *replaces* its share (deltas would count it twice when a partition
//! comes back to the same instance after a rebalance), and the board reads a partition's counts,
//! watermark and frontier under one lock, so a minute never closes while a partition could still
//! add to it.
//!
//! **When a minute is final.** A partition's watermark is its newest event time minus
//! `allowed_lateness`; a message behind its own partition's watermark is late there (so which
//! messages a minute holds does not depend on how partitions interleave). Minute `m` closes when
//! the watermark of every *active* partition (one with input in the last `idle_timeout`) has
//! passed its end; when no partition is active, every open minute closes. Nothing closes while a
//! partition assigned to this instance is still restoring (or not yet started), nor while the
//! instance holds no partition (a rebalance). Closing sets the frontier in every partition's
//! counts under its lock: from then on that minute's messages are late (counted in the totals
//! and in `pagepulse_window_ignored_events_total{reason="late"}`, never in the minute).
//!
//! **Exactly one final record per minute, across crashes.** Partitions keep a closed minute's
//! counts (and its changelog chunks) until the board has seen its final record acknowledged;
//! only then does it move the *durable* frontier, which each task writes to its changelog with
//! the minute's chunks deleted. After a crash the board starts from the newest durable frontier
//! of its partitions: a minute whose record was acknowledged is never written again, one whose
//! record may have been lost is closed again from counts that are all still there, so it is
//! written again with the same content.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};

use super::names::{MINUTE_MS, STATS, TOTALS, TOTALS_KEY};
use super::records::{MinuteStats, PlaceTally, Totals};
use super::store::PartitionCounts;
use crate::clock::format_ms;
use crate::engine::{Aggregate, BatchAck, OutRecord};

/// The `messages.stats` key of the minute starting at `minute_ms`: `YYYY-MM-DDTHH:MM`.
pub fn minute_key(minute_ms: i64) -> String {
    DateTime::from_timestamp_millis(minute_ms).unwrap_or_default().format("%Y-%m-%dT%H:%M").to_string()
}

/// The board's settings (from [`super::MessagesConfig`]).
#[derive(Debug, Clone, Copy)]
pub struct BoardSettings {
    /// `allowed_lateness`, ms.
    pub lateness_ms: i64,
    /// `idle_timeout`, ms.
    pub idle_ms: i64,
    /// `top_cities`.
    pub top_cities: usize,
    /// `totals_interval`, ms.
    pub totals_every_ms: i64,
}

/// A partition the board reads.
struct Slot {
    /// Which registration this is (a partition may leave and come back).
    generation: u64,
    counts: Arc<Mutex<PartitionCounts>>,
    /// `None` while its task runs; when it left (revoked, or the engine stopping) otherwise.
    left_ms: Option<i64>,
    /// Its `inputs` at the previous tick, and when they last moved.
    seen_inputs: Option<u64>,
    last_input_ms: Option<i64>,
}

fn lock(counts: &Mutex<PartitionCounts>) -> MutexGuard<'_, PartitionCounts> {
    // A panic while holding this lock leaves counts, not broken invariants.
    counts.lock().unwrap_or_else(|p| p.into_inner())
}

/// The messages pipeline's cross-partition aggregate (see the module docs).
pub struct MinuteBoard {
    settings: BoardSettings,
    slots: BTreeMap<i32, Slot>,
    /// Partitions assigned whose task has not joined yet (spawned, restoring), with how many
    /// assignments are pending: nothing closes while any is.
    assigning: BTreeMap<i32, u32>,
    next_generation: u64,
    /// Minutes starting before this are final.
    closed_before: i64,
    /// Minutes starting before this have their final record acknowledged.
    durable_before: i64,
    /// Frontiers whose final records await acknowledgement, oldest first (`None`: no record).
    unacked: VecDeque<(i64, Option<Arc<BatchAck>>)>,
    /// The frontier of the finals this tick emitted, until [`Aggregate::sent`] hands their ack.
    emitted: Option<i64>,
    /// The figures of the last `messages.totals` record, when it was written, and what the
    /// partitions' inputs were then.
    totals: Option<(Totals, i64, Signature)>,
    /// Whether this board writes `messages.totals` (within one instance); the pipeline's
    /// cluster-wide [`super::totals::TotalsBoard`] does instead.
    write_totals: bool,
}

/// What the partitions' inputs were when the totals were taken: (partition, registration,
/// messages counted) of each. Unchanged means the totals cannot have changed.
type Signature = Vec<(i32, u64, u64)>;

impl MinuteBoard {
    /// An empty board.
    pub fn new(settings: BoardSettings) -> Self {
        Self {
            settings,
            slots: BTreeMap::new(),
            assigning: BTreeMap::new(),
            next_generation: 0,
            closed_before: i64::MIN,
            durable_before: i64::MIN,
            unacked: VecDeque::new(),
            emitted: None,
            totals: None,
            write_totals: true,
        }
    }

    /// A board that leaves `messages.totals` to the cluster-wide totals board.
    pub fn without_totals(mut self) -> Self {
        self.write_totals = false;
        self
    }

    /// Minutes starting before this are final.
    pub fn closed_before(&self) -> i64 {
        self.closed_before
    }

    /// Minutes starting before this have their final record acknowledged.
    pub fn durable_before(&self) -> i64 {
        self.durable_before
    }

    /// Partition `partition` was assigned to this instance: its task will [`join`](Self::join)
    /// once it has restored. Until then nothing closes.
    pub fn assigned(&mut self, partition: i32) {
        *self.assigning.entry(partition).or_default() += 1;
    }

    /// Registers `partition`'s counts, replacing whatever was registered for it, and hands its
    /// frontiers over both ways: a restored partition may know of finals acknowledged before a
    /// crash, and it must not count into minutes already final here. The returned membership
    /// takes the partition out again when dropped (its task stopped).
    pub fn join(board: &Arc<Mutex<Self>>, partition: i32, counts: Arc<Mutex<PartitionCounts>>) -> Membership {
        let mut b = board.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = b.assigning.get_mut(&partition) {
            *n -= 1;
            if *n == 0 {
                b.assigning.remove(&partition);
            }
        }
        {
            let mut c = lock(&counts);
            b.durable_before = b.durable_before.max(c.durable_before());
            b.closed_before = b.closed_before.max(b.durable_before);
            c.advance(b.closed_before, b.durable_before);
        }
        let durable = b.durable_before;
        b.unacked.retain(|(frontier, _)| *frontier > durable);
        b.next_generation += 1;
        let generation = b.next_generation;
        let slot = Slot { generation, counts, left_ms: None, seen_inputs: None, last_input_ms: None };
        b.slots.insert(partition, slot);
        Membership { board: board.clone(), partition, generation }
    }

    /// The task of registration `generation` of `partition` stopped. Its counts stay in the
    /// figures for `idle_timeout` (a rebalance that gives the partition back replaces them
    /// without a dip), then go.
    fn leave(&mut self, partition: i32, generation: u64) {
        if let Some(s) = self.slots.get_mut(&partition) {
            if s.generation == generation && s.left_ms.is_none() {
                // Stamped at the next tick, which has the time.
                s.left_ms = Some(i64::MIN);
            }
        }
    }

    /// Moves the durable frontier over every acknowledged batch of finals, in order, and tells
    /// every partition.
    fn settle(&mut self) {
        let before = self.durable_before;
        while let Some((frontier, ack)) = self.unacked.front() {
            match ack {
                Some(a) if !a.is_done() => break,
                Some(a) if a.failed() => {
                    // The engine restarts on a refused output; the finals are written again then.
                    tracing::error!(pipeline = super::PIPELINE, "a messages.stats record was refused");
                    break;
                }
                _ => {}
            }
            self.durable_before = self.durable_before.max(*frontier);
            self.unacked.pop_front();
        }
        if self.durable_before != before {
            for s in self.slots.values() {
                lock(&s.counts).advance(self.closed_before, self.durable_before);
            }
        }
    }

    /// Closes every open minute before `until` (`None`: every open minute), writing their
    /// final records into `out`.
    fn close(&mut self, until: Option<i64>, out: &mut Vec<OutRecord>) {
        let old = self.closed_before;
        let new = match until {
            Some(t) => t.div_euclid(MINUTE_MS).saturating_mul(MINUTE_MS),
            None => {
                let mut last = None;
                for s in self.slots.values() {
                    let c = lock(&s.counts);
                    if let Some((&m, _)) = c.minutes().range(old..).next_back() {
                        last = last.max(Some(m + MINUTE_MS));
                    }
                }
                match last {
                    Some(l) => l,
                    None => return,
                }
            }
        };
        if new <= old {
            return;
        }
        // Per minute: messages, users, places.
        let mut minutes: BTreeMap<i64, (u64, u64, PlaceTally)> = BTreeMap::new();
        for s in self.slots.values() {
            let mut c = lock(&s.counts);
            c.advance(new, self.durable_before);
            for (&m, mc) in c.minutes().range(old..new) {
                let (total, users, tally) = minutes.entry(m).or_default();
                *total += mc.total;
                // Partitions are keyed by username: their users are disjoint, so they add up.
                *users += mc.users.len() as u64;
                for (id, mp) in &mc.places {
                    let place = &c.places()[*id as usize];
                    tally.add(&place.key, &place.state, mp.count, &mp.city);
                }
            }
        }
        self.closed_before = new;
        let emitted = !minutes.is_empty();
        for (m, (total, users, tally)) in minutes {
            let (by_state, top_cities) = tally.rank(self.settings.top_cities);
            let value = MinuteStats { minute_start: format_ms(m), is_final: true, total, users, by_state, top_cities };
            out.push(OutRecord::new(STATS, minute_key(m), serde_json::to_vec(&value).expect("plain struct")));
        }
        if emitted {
            self.emitted = Some(new);
        } else {
            self.unacked.push_back((new, None));
        }
    }

    /// The all-time figures of every partition the board reads, at `now_ms`.
    pub fn totals(&self, now_ms: i64) -> Totals {
        let (mut total, mut users, mut tally) = (0, 0, PlaceTally::default());
        for s in self.slots.values() {
            let c = lock(&s.counts);
            total += c.total();
            users += c.users() as u64;
            for p in c.places() {
                tally.add(&p.key, &p.state, p.count, &p.city);
            }
        }
        let (by_state, top_cities) = tally.rank(self.settings.top_cities);
        Totals { total, users, by_state, top_cities, as_of: format_ms(now_ms) }
    }

    fn emit_totals(&mut self, now_ms: i64, out: &mut Vec<OutRecord>) {
        let signature: Signature =
            self.slots.iter().map(|(p, s)| (*p, s.generation, lock(&s.counts).inputs())).collect();
        if let Some((_, at, sig)) = &self.totals {
            if now_ms - at < self.settings.totals_every_ms || *sig == signature {
                return;
            }
        }
        let t = self.totals(now_ms);
        let changed = match &self.totals {
            Some((last, ..)) => {
                (last.total, last.users, &last.by_state, &last.top_cities)
                    != (t.total, t.users, &t.by_state, &t.top_cities)
            }
            None => t.total > 0,
        };
        if changed {
            out.push(OutRecord::new(TOTALS, TOTALS_KEY, serde_json::to_vec(&t).expect("plain struct")));
            self.totals = Some((t, now_ms, signature));
        } else if let Some((_, _, sig)) = &mut self.totals {
            *sig = signature;
        }
    }
}

impl Aggregate for MinuteBoard {
    /// Tasks share their counts instead (see the module docs).
    type Part = ();

    fn merge(&mut self, parts: &mut Vec<()>) {
        parts.clear();
    }

    fn on_tick(&mut self, now: DateTime<Utc>, out: &mut Vec<OutRecord>) {
        let now_ms = now.timestamp_millis();
        let idle = self.settings.idle_ms;
        for s in self.slots.values_mut() {
            if s.left_ms == Some(i64::MIN) {
                s.left_ms = Some(now_ms);
            }
        }
        self.slots.retain(|_, s| s.left_ms.is_none_or(|t| now_ms - t < idle));
        // Watermarks of the partitions with recent input.
        let mut running = false;
        let mut watermark: Option<i64> = None;
        for s in self.slots.values_mut().filter(|s| s.left_ms.is_none()) {
            running = true;
            let c = lock(&s.counts);
            if s.seen_inputs != Some(c.inputs()) {
                s.seen_inputs = Some(c.inputs());
                s.last_input_ms = Some(now_ms);
            }
            if s.last_input_ms.is_some_and(|t| now_ms - t < idle) {
                let w = c.max_ts().map_or(i64::MIN, |t| t.saturating_sub(self.settings.lateness_ms));
                watermark = Some(watermark.map_or(w, |m| m.min(w)));
            }
        }
        self.settle();
        if !self.assigning.is_empty() {
            return; // a partition is restoring: its counts are not in yet
        }
        if running {
            // No partition with recent input: the instance is idle, every open minute closes.
            self.close(watermark, out);
        }
        if self.write_totals {
            self.emit_totals(now_ms, out);
        }
    }

    fn sent(&mut self, ack: &Arc<BatchAck>) {
        if let Some(frontier) = self.emitted.take() {
            self.unacked.push_back((frontier, Some(ack.clone())));
        }
    }
}

/// A partition's place on the board while its task runs; dropping it takes the partition out.
pub struct Membership {
    board: Arc<Mutex<MinuteBoard>>,
    partition: i32,
    generation: u64,
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.board.lock().unwrap_or_else(|p| p.into_inner()).leave(self.partition, self.generation);
    }
}

/// The open minutes of every partition on `board`, for tests and diagnostics.
pub fn open_minutes(board: &MinuteBoard) -> BTreeSet<i64> {
    let mut open = BTreeSet::new();
    for s in board.slots.values() {
        open.extend(lock(&s.counts).minutes().range(board.closed_before..).map(|(m, _)| *m));
    }
    open
}
