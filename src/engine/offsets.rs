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
    /// Acks completed when this one completes: the batches a state flush covers.
    chain: Vec<Arc<BatchAck>>,
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
