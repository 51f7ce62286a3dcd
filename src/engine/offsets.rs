//! At-least-once offset tracking.
//!
//! Every batch handed to a task gets a [`BatchAck`] from its partition's [`OffsetTracker`]. The ack
//! counts the batch's outstanding outputs plus one guard for "still being processed". When the
//! count reaches zero the batch is done; the tracker then stores, in order, the offset after the
//! newest batch whose predecessors are all done too. librdkafka's auto-commit (with
//! `enable.auto.offset.store=false`) commits only stored offsets, so no offset is ever committed
//! before every output it caused has been acknowledged by the broker; this is the pattern of
//! rust-rdkafka's `at_least_once` example, moved from per-message to per-batch bookkeeping.
//!
//! A failed output poisons the tracker: nothing at or after that batch is stored again, so a
//! restart reprocesses it.
//!
//! **Several pipelines reading one topic** (fan-out, see [`super::router`]) share the partition's
//! one tracker: the router registers each batch once and hands every reading pipeline a copy with
//! a [`BatchAck::reader`] ack of its own, chained to the shared one. The offset is stored only
//! when every reader's ack is done. In exactly-once mode, where each task commits its input
//! position in its own transaction, [`SharedPositions`] keeps one reader's commit from moving the
//! group's offset past another reader's durable position.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::Histogram;

/// Where completed offsets go: the Kafka consumer in production, a recorder in tests.
pub trait OffsetStore: Send + Sync + 'static {
    /// Records that every record of `topic`/`partition` before `next_offset` is fully processed.
    fn store(&self, topic: &str, partition: i32, next_offset: i64);
}

#[derive(Debug)]
struct Slot {
    next_offset: i64,
    done: bool,
}

#[derive(Debug, Default)]
struct State {
    /// Sequence number of `slots[0]`.
    base_seq: u64,
    slots: VecDeque<Slot>,
    poisoned: bool,
    revoked: bool,
    stored: Option<i64>,
}

/// Orders batch completions of one input partition and stores offsets as prefixes complete.
pub struct OffsetTracker {
    topic: Arc<str>,
    partition: i32,
    store: Arc<dyn OffsetStore>,
    latency: Option<Histogram>,
    state: Mutex<State>,
}

impl std::fmt::Debug for OffsetTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OffsetTracker").field("topic", &self.topic).field("partition", &self.partition).finish()
    }
}

impl OffsetTracker {
    /// A tracker for `topic`/`partition` that stores into `store` and, when given, observes the
    /// end-to-end latency of every record of a completed batch.
    pub fn new(topic: Arc<str>, partition: i32, store: Arc<dyn OffsetStore>, latency: Option<Histogram>) -> Arc<Self> {
        Arc::new(Self { topic, partition, store, latency, state: Mutex::new(State::default()) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves only plain counters behind: keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers the next batch, whose last record has offset `next_offset - 1`. Batches must be
    /// registered in offset order. `timestamps_ms` are the records' timestamps, for the latency
    /// histogram.
    pub fn begin(self: &Arc<Self>, next_offset: i64, timestamps_ms: Vec<i64>) -> Arc<BatchAck> {
        let mut st = self.lock();
        let seq = st.base_seq + st.slots.len() as u64;
        st.slots.push_back(Slot { next_offset, done: false });
        drop(st);
        Arc::new(BatchAck {
            tracker: Some(self.clone()),
            seq,
            pending: AtomicUsize::new(1),
            failed: AtomicBool::new(false),
            timestamps_ms,
            chain: Vec::new(),
            latency: None,
        })
    }

    fn complete(&self, seq: u64, failed: bool, timestamps_ms: &[i64]) {
        let mut st = self.lock();
        if failed {
            st.poisoned = true;
        }
        let Some(idx) = seq.checked_sub(st.base_seq) else { return };
        if let Some(slot) = st.slots.get_mut(idx as usize) {
            slot.done = true;
        }
        let mut newest = None;
        while st.slots.front().is_some_and(|s| s.done) {
            let slot = st.slots.pop_front().expect("front exists");
            st.base_seq += 1;
            newest = Some(slot.next_offset);
        }
        let store = match newest {
            Some(off) if !st.poisoned && !st.revoked => {
                st.stored = Some(off);
                Some(off)
            }
            _ => None,
        };
        drop(st);
        if let Some(off) = store {
            self.store.store(&self.topic, self.partition, off);
        }
        if !failed {
            if let Some(h) = &self.latency {
                let now = now_ms();
                for ts in timestamps_ms {
                    h.observe((now - ts).max(0) as f64 / 1000.0);
                }
            }
        }
    }

    /// Stops storing offsets: the partition was revoked, its new owner reprocesses whatever is
    /// still in flight here.
    pub fn revoke(&self) {
        self.lock().revoked = true;
    }

    /// Batches registered but not yet complete.
    pub fn in_flight(&self) -> usize {
        self.lock().slots.len()
    }

    /// True once an output failed.
    pub fn is_poisoned(&self) -> bool {
        self.lock().poisoned
    }

    /// The last offset stored, if any.
    pub fn stored(&self) -> Option<i64> {
        self.lock().stored
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Completion counter of one batch: outstanding outputs plus a processing guard.
///
/// Call [`add_output`](BatchAck::add_output) before handing an output to the producer,
/// [`output_done`](BatchAck::output_done) when the broker answers, and
/// [`processed`](BatchAck::processed) once the task finished the batch.
#[derive(Debug)]
pub struct BatchAck {
    tracker: Option<Arc<OffsetTracker>>,
    seq: u64,
    pending: AtomicUsize,
    failed: AtomicBool,
    timestamps_ms: Vec<i64>,
    /// Acks completed when this one completes: the batches a state flush covers, or the shared
    /// ack of a batch several pipelines read.
    chain: Vec<Arc<BatchAck>>,
    /// Observes the latency of every record of `timestamps_ms` when this ack completes (a
    /// reader's ack: each pipeline's own latency).
    latency: Option<Histogram>,
}

impl BatchAck {
    /// An ack that, once its own outputs are done, completes `covered`: a state flush holds the
    /// batches whose effect it makes durable, so their offsets are stored only after it. A failed
    /// flush fails them too.
    pub fn chained(covered: Vec<Arc<BatchAck>>) -> Arc<Self> {
        Arc::new(Self {
            tracker: None,
            seq: 0,
            pending: AtomicUsize::new(1),
            failed: AtomicBool::new(false),
            timestamps_ms: Vec::new(),
            chain: covered,
            latency: None,
        })
    }

    /// One reading pipeline's ack of a batch whose offsets `shared` tracks (see the module docs):
    /// `shared` waits for it (one more pending output), and completes only when every reader's
    /// ack and its own processing guard are done. A failed reader fails `shared`. `latency`, when
    /// given, observes the reader's end-to-end latency of every record of `timestamps_ms` when
    /// this ack completes.
    pub fn reader(shared: &Arc<BatchAck>, latency: Option<Histogram>, timestamps_ms: Vec<i64>) -> Arc<Self> {
        shared.add_output();
        Arc::new(Self {
            tracker: None,
            seq: 0,
            pending: AtomicUsize::new(1),
            failed: AtomicBool::new(false),
            timestamps_ms,
            chain: vec![shared.clone()],
            latency,
        })
    }

    /// An ack that tracks no offsets: for outputs not caused by input records (timers,
    /// aggregates).
    pub fn untracked() -> Arc<Self> {
        Arc::new(Self {
            tracker: None,
            seq: 0,
            pending: AtomicUsize::new(1),
            failed: AtomicBool::new(false),
            timestamps_ms: Vec::new(),
            chain: Vec::new(),
            latency: None,
        })
    }

    /// One more output is on its way.
    pub fn add_output(&self) {
        self.pending.fetch_add(1, Ordering::AcqRel);
    }

    /// An output was acknowledged (`ok`) or refused for good (`!ok`).
    pub fn output_done(&self, ok: bool) {
        if !ok {
            self.failed.store(true, Ordering::Release);
        }
        self.release();
    }

    /// The task finished processing the batch: releases the processing guard.
    pub fn processed(&self) {
        self.release();
    }

    fn release(&self) {
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            let failed = self.failed.load(Ordering::Acquire);
            if let Some(t) = &self.tracker {
                t.complete(self.seq, failed, &self.timestamps_ms);
            }
            if let (Some(h), false) = (&self.latency, failed) {
                let now = now_ms();
                for ts in &self.timestamps_ms {
                    h.observe((now - ts).max(0) as f64 / 1000.0);
                }
            }
            for covered in &self.chain {
                covered.output_done(!failed);
            }
        }
    }

    /// True once every output is acknowledged and processing is finished.
    pub fn is_done(&self) -> bool {
        self.pending.load(Ordering::Acquire) == 0
    }

    /// True once an output was refused for good.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }
}

/// Exactly-once fan-out: where each reader of one shared input partition has committed its
/// position, so that no reader's transaction moves the group's committed offset past another
/// reader's durable position (the offset a restart consumes from must not skip input a reader has
/// not made durable).
///
/// Each reader commits, in its transaction, the **floor**: its own position capped at every other
/// reader's committed position, or no offset at all while another reader has committed none yet.
/// Readers commit one at a time ([`commit`](SharedPositions::commit) holds a lock across the
/// commit), so the group's offset never moves backwards. A reader ahead of the floor keeps its own
/// position in its state store's position marker (committed in the same transaction), and on
/// restart skips the input below it; a reader without a store records the floor as its position
/// (a restart may then repeat its outputs between the floor and where it was).
#[derive(Debug)]
pub struct SharedPositions {
    committed: Mutex<Vec<Option<i64>>>,
}

impl SharedPositions {
    /// Positions of `readers` readers, none committed yet.
    pub fn new(readers: usize) -> Arc<Self> {
        Arc::new(Self { committed: Mutex::new(vec![None; readers]) })
    }

    /// Commits reader `me`'s position: calls `commit` with the floor (see the type's docs) for
    /// reader `me` at `own` (`None`: it has no position yet), holding the lock so no other reader
    /// commits meanwhile. When `commit` succeeds, records `me`'s committed position: `own` if
    /// `durable_own` (its store's marker holds it), else the floor. Returns what `commit` returned.
    pub fn commit<E>(
        &self,
        me: usize,
        own: Option<i64>,
        durable_own: bool,
        commit: impl FnOnce(Option<i64>) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut committed = self.committed.lock().unwrap_or_else(|p| p.into_inner());
        let floor = own.and_then(|own| {
            committed.iter().enumerate().filter(|(i, _)| *i != me).try_fold(own, |floor, (_, c)| Some(floor.min((*c)?)))
        });
        commit(floor)?;
        let mine = if durable_own { own } else { floor };
        if let Some(slot) = committed.get_mut(me) {
            *slot = (*slot).max(mine);
        }
        Ok(())
    }

    /// The position reader `me` last committed (as recorded by [`commit`](Self::commit)).
    pub fn committed(&self, me: usize) -> Option<i64> {
        self.committed.lock().unwrap_or_else(|p| p.into_inner()).get(me).copied().flatten()
    }
}

/// An [`OffsetStore`] that remembers what was stored: for tests and for the in-process engine.
#[derive(Debug, Default)]
pub struct RecordingStore {
    stored: Mutex<Vec<(String, i32, i64)>>,
}

impl RecordingStore {
    /// Everything stored so far, in order.
    pub fn stored(&self) -> Vec<(String, i32, i64)> {
        self.stored.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl OffsetStore for RecordingStore {
    fn store(&self, topic: &str, partition: i32, next_offset: i64) {
        self.stored.lock().unwrap_or_else(|p| p.into_inner()).push((topic.to_string(), partition, next_offset));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker() -> (Arc<OffsetTracker>, Arc<RecordingStore>) {
        let store = Arc::new(RecordingStore::default());
        (OffsetTracker::new("t".into(), 0, store.clone(), None), store)
    }

    #[test]
    fn stores_only_after_every_output_is_acknowledged() {
        let (t, store) = tracker();
        let a = t.begin(10, vec![]);
        a.add_output();
        a.add_output();
        a.processed();
        a.output_done(true);
        assert!(store.stored().is_empty(), "one output still pending");
        a.output_done(true);
        assert_eq!(store.stored(), vec![("t".into(), 0, 10)]);
    }

    #[test]
    fn out_of_order_completion_stores_the_contiguous_prefix() {
        let (t, store) = tracker();
        let a = t.begin(10, vec![]);
        let b = t.begin(20, vec![]);
        let c = t.begin(30, vec![]);
        a.add_output();
        b.processed();
        c.processed();
        assert!(store.stored().is_empty(), "batch a is not done");
        a.processed();
        assert!(store.stored().is_empty());
        a.output_done(true);
        assert_eq!(store.stored(), vec![("t".into(), 0, 30)], "a, b and c complete at once: store the newest");
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn a_failed_output_stops_storing() {
        let (t, store) = tracker();
        let a = t.begin(10, vec![]);
        let b = t.begin(20, vec![]);
        a.add_output();
        a.processed();
        a.output_done(false);
        b.processed();
        assert!(store.stored().is_empty());
        assert!(t.is_poisoned());
    }

    #[test]
    fn revoked_tracker_stores_nothing() {
        let (t, store) = tracker();
        let a = t.begin(10, vec![]);
        t.revoke();
        a.processed();
        assert!(store.stored().is_empty());
    }

    #[test]
    fn a_chained_ack_holds_its_batches_until_it_completes() {
        let (t, store) = tracker();
        let a = t.begin(10, vec![]);
        let b = t.begin(20, vec![]);
        // Both batches processed, their outputs acknowledged; a flush covers them.
        a.add_output();
        b.add_output();
        let flush = BatchAck::chained(vec![a.clone(), b.clone()]);
        a.processed();
        b.processed();
        assert!(store.stored().is_empty(), "the flush still holds both batches");
        flush.add_output();
        flush.processed();
        assert!(store.stored().is_empty(), "the flush's record is not acknowledged yet");
        flush.output_done(true);
        assert_eq!(store.stored().last(), Some(&("t".into(), 0, 20)));
    }

    #[test]
    fn a_failed_chained_ack_poisons_its_batches() {
        let (t, store) = tracker();
        let a = t.begin(10, vec![]);
        a.add_output();
        let flush = BatchAck::chained(vec![a.clone()]);
        a.processed();
        flush.add_output();
        flush.processed();
        flush.output_done(false);
        assert!(store.stored().is_empty());
        assert!(t.is_poisoned());
    }

    #[test]
    fn a_shared_batch_is_stored_only_when_every_reader_is_done() {
        let (t, store) = tracker();
        let shared = t.begin(10, vec![]);
        let a = BatchAck::reader(&shared, None, vec![]);
        let b = BatchAck::reader(&shared, None, vec![]);
        shared.processed();
        a.add_output();
        a.processed();
        b.processed();
        assert!(store.stored().is_empty(), "reader a's output is not acknowledged");
        a.output_done(true);
        assert_eq!(store.stored(), vec![("t".into(), 0, 10)]);
        // A failed reader poisons the partition for both.
        let shared = t.begin(20, vec![]);
        let (a, b) = (BatchAck::reader(&shared, None, vec![]), BatchAck::reader(&shared, None, vec![]));
        shared.processed();
        a.processed();
        b.add_output();
        b.processed();
        b.output_done(false);
        assert!(t.is_poisoned());
        assert_eq!(store.stored().len(), 1);
    }

    #[test]
    fn a_reader_ack_observes_its_own_latency() {
        let h = Histogram::with_opts(prometheus::HistogramOpts::new("l", "l")).expect("histogram");
        let (t, _) = tracker();
        let shared = t.begin(3, vec![]);
        let a = BatchAck::reader(&shared, Some(h.clone()), vec![now_ms() - 50, now_ms() - 10]);
        a.processed();
        assert_eq!(h.get_sample_count(), 2);
        shared.processed();
    }

    #[test]
    fn shared_positions_commit_the_floor_and_never_move_back() {
        let p = SharedPositions::new(2);
        let mut commits = Vec::new();
        let mut commit = |me, own, durable| {
            p.commit::<()>(me, own, durable, |floor| {
                commits.push(floor);
                Ok(())
            })
        };
        // Reader 1 has committed nothing: reader 0 commits no offset, but its own position (in its
        // store) counts for reader 1's floor.
        commit(0, Some(100), true).expect("ok");
        commit(1, Some(40), true).expect("ok");
        commit(0, Some(150), true).expect("ok");
        commit(1, Some(120), true).expect("ok");
        assert_eq!(commits, vec![None, Some(40), Some(40), Some(120)]);
        // A reader without a store records the floor it committed, not its own position.
        let q = SharedPositions::new(2);
        q.commit::<()>(0, Some(100), true, |_| Ok(())).expect("ok");
        q.commit::<()>(1, Some(300), false, |f| {
            assert_eq!(f, Some(100));
            Ok(())
        })
        .expect("ok");
        assert_eq!(q.committed(1), Some(100));
        // A failed commit records nothing.
        assert!(q.commit(0, Some(500), true, |_| Err("aborted")).is_err());
        assert_eq!(q.committed(0), Some(100));
    }

    #[test]
    fn untracked_ack_completes_without_a_tracker() {
        let a = BatchAck::untracked();
        a.add_output();
        a.processed();
        assert!(!a.is_done());
        a.output_done(true);
        assert!(a.is_done() && !a.failed());
        let b = BatchAck::untracked();
        b.add_output();
        b.processed();
        b.output_done(false);
        assert!(b.is_done() && b.failed(), "done, but refused");
    }
}
