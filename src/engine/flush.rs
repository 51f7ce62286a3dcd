//! The flush protocol of one task, as plain code: when a task's outputs, its state's changes and
//! its input offsets become durable, in which order, and what each waits for. The task actor
//! ([`super::task`]) only calls it; the tests below drive it against in-memory sinks.
//!
//! One [`Mode`] per processing guarantee:
//!
//! - [`Mode::None`]: no store and no transaction. A batch's offset is stored once every output it
//!   caused is acknowledged ([`super::offsets`]); nothing is ever flushed.
//! - [`Mode::Markers`]: at-least-once with a store ([`super::state`]). Every `flush_every` the
//!   state's changes go to the changelog; the **position marker** that commits them follows only
//!   once every output of the input it covers is acknowledged (a restore skips that input, so an
//!   unacknowledged output could otherwise be lost); the batches it covers complete, and their
//!   offsets are stored, only once changes and marker are acknowledged.
//! - [`Mode::Transactional`]: exactly-once ([`crate::kafka::txn`]), with or without a store.
//!   Changes, marker, outputs and the input position commit in one transaction per flush, so
//!   nothing waits: the marker goes out with the changes, then [`Sink::commit`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::offsets::BatchAck;
use super::record::FanOut;
use super::sink::{CommitError, InputPosition, Sink};
use super::state::{change_records, flush_records, marker_record, Change, Restored};

/// Longest a stopping task waits for its outputs before it writes its last marker; past it the
/// flush stays uncommitted and the partition's next owner redoes its input.
pub const CLOSING_WAIT: Duration = Duration::from_secs(5);

/// Most batches a task holds between flushes; one more makes it flush early.
pub const MAX_UNFLUSHED: usize = 256;

/// The guarantee a task's flushes give (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Nothing to flush: outputs are visible once acknowledged, offsets follow them.
    None,
    /// At-least-once with a store: changes, then a marker once the outputs it covers are
    /// acknowledged.
    Markers,
    /// Exactly-once: everything since the last flush commits in one transaction.
    Transactional,
}

/// A flush whose changes are written and whose position marker waits: a marker commits the
/// input position, and the restored task skips the input before it, so the marker may only be
/// written once every output of that input is acknowledged, or those outputs could be lost.
/// (Exactly-once needs no wait: outputs and marker commit in one transaction.)
struct PendingMarker {
    /// Completes when the covered outputs are acknowledged.
    outputs: Arc<BatchAck>,
    /// The flush's own ack (holding the covered batches); released once the marker is sent.
    flush: Arc<BatchAck>,
    /// The position the marker commits.
    position: Option<i64>,
}

/// One task's side of the flush protocol: which batches a flush covers, the changes waiting to
/// be written, the marker waiting for its outputs. See the module docs.
///
/// The task calls, in this order for each batch: [`skip_below`](Flusher::skip_below) (input the
/// restored state covers), [`output_ack`](Flusher::output_ack) (the ack to send the batch's
/// outputs with), [`batch_processed`](Flusher::batch_processed) (hands over the batch's ack);
/// and [`flush`](Flusher::flush) every [`flush_every`](Flusher::flush_every), when
/// `batch_processed` asks for it, and once more (`closing`) when it stops.
pub struct Flusher {
    mode: Mode,
    partition: i32,
    /// Logical name of the changelog topic; `None` without a store (nothing but commits).
    changelog: Option<&'static str>,
    /// Full name of the input topic, once a batch came from it: the position a commit records.
    input: Option<Arc<str>>,
    /// This incarnation's owner id (the one its restore fenced with).
    owner: u64,
    /// Input records before this offset are already in the restored state.
    skip_below: Option<i64>,
    /// The next input offset: what the next flush covers.
    next_offset: Option<i64>,
    /// The position the last flush recorded.
    flushed_position: Option<i64>,
    /// Batches processed since the last flush, each holding one pending output for it. At most
    /// [`MAX_UNFLUSHED`]: `batch_processed` asks for a flush at that bound.
    unflushed: Vec<Arc<BatchAck>>,
    /// Changes to write at the next flush; first, after a restore, the repairs of a torn flush.
    changes: Vec<Change>,
    /// How often the task flushes; `None` in [`Mode::None`].
    flush_every: Option<Duration>,
    /// Completes once every output sent since the last flush is acknowledged (markers only).
    barrier: Option<Arc<BatchAck>>,
    /// The last flush's marker, waiting for the outputs it covers (markers only).
    pending: Option<PendingMarker>,
    /// How long a closing flush waits for outputs: [`CLOSING_WAIT`] (tests shorten it).
    closing_wait: Duration,
    /// Set when other pipelines read the same input: a transaction then commits the readers'
    /// common floor, not this task's own position (see [`crate::engine::offsets::SharedPositions`]).
    fanout: Option<FanOut>,
}

impl Flusher {
    /// The flusher of a task without a store on `sink`: [`Mode::Transactional`] (commits only) if
    /// the sink commits in transactions, [`Mode::None`] otherwise.
    pub fn without_store(sink: &dyn Sink, partition: i32) -> Self {
        let every = sink.commit_every();
        let mode = if every.is_some() { Mode::Transactional } else { Mode::None };
        Self::empty(mode, partition, None, 0, None, every)
    }

    /// The flusher of a task that restored `restored` from `changelog` under `owner`, flushing
    /// every `flush_every` to `sink`: [`Mode::Transactional`] if the sink commits in
    /// transactions, [`Mode::Markers`] otherwise. The restore's repairs are its first changes.
    pub fn with_store(
        sink: &dyn Sink,
        partition: i32,
        changelog: &'static str,
        owner: u64,
        restored: &Restored,
        flush_every: Duration,
    ) -> Self {
        let mode = if sink.commit_every().is_some() { Mode::Transactional } else { Mode::Markers };
        let mut f = Self::empty(mode, partition, Some(changelog), owner, restored.position, Some(flush_every));
        f.changes = restored.repairs();
        f
    }

    fn empty(
        mode: Mode,
        partition: i32,
        changelog: Option<&'static str>,
        owner: u64,
        position: Option<i64>,
        flush_every: Option<Duration>,
    ) -> Self {
        Self {
            mode,
            partition,
            changelog,
            input: None,
            owner,
            skip_below: position,
            next_offset: position,
            flushed_position: position,
            unflushed: Vec::new(),
            changes: Vec::new(),
            flush_every,
            barrier: None,
            pending: None,
            closing_wait: CLOSING_WAIT,
            fanout: None,
        }
    }

    /// The guarantee these flushes give.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// How often the task must call [`flush`](Flusher::flush); `None` when it never needs to.
    pub fn flush_every(&self) -> Option<Duration> {
        self.flush_every
    }

    /// True when changes wait to be written before anything else (the repairs of a torn flush):
    /// the task flushes as soon as it starts.
    pub fn has_repairs(&self) -> bool {
        !self.changes.is_empty()
    }

    /// Input records before this offset are in the restored state already: the task skips them.
    pub fn skip_below(&self) -> i64 {
        self.skip_below.unwrap_or(i64::MIN)
    }

    /// The ack to send outputs with: `batch`'s (or none, for outputs of timers or of a restore),
    /// and, with markers, also the barrier the next flush's marker waits for. The caller sends
    /// the outputs with it, then calls `processed()` on it.
    pub fn output_ack(&mut self, batch: Option<&Arc<BatchAck>>) -> Arc<BatchAck> {
        if self.mode != Mode::Markers {
            return match batch {
                // The caller's `processed()` releases this count, not the batch's processing
                // guard: that one is released by `batch_processed`.
                Some(b) => {
                    b.add_output();
                    b.clone()
                }
                None => BatchAck::untracked(),
            };
        }
        let barrier = self.barrier.get_or_insert_with(BatchAck::untracked).clone();
        barrier.add_output();
        let mut covered = vec![barrier];
        if let Some(b) = batch {
            b.add_output();
            covered.push(b.clone());
        }
        BatchAck::chained(covered)
    }

    /// The task processed a batch of `input` (full topic name) up to `next_offset` and sent its
    /// outputs: takes over the batch's `ack`. Without flushes it is released at once; otherwise
    /// it is held until a flush covers it. Returns true when the caller must flush now (the
    /// bound of held batches is reached). With markers, sends the last flush's marker if its
    /// outputs are acknowledged by now. `fanout` is the batch's (other pipelines read the input).
    pub fn batch_processed(
        &mut self,
        sink: &dyn Sink,
        input: Arc<str>,
        next_offset: Option<i64>,
        ack: Arc<BatchAck>,
        fanout: Option<FanOut>,
    ) -> bool {
        if self.mode == Mode::None {
            ack.processed();
            return false;
        }
        if self.input.is_none() {
            self.input = Some(input);
        }
        if self.fanout.is_none() {
            self.fanout = fanout;
        }
        if let Some(next) = next_offset {
            self.next_offset = Some(self.next_offset.unwrap_or(i64::MIN).max(next));
        }
        // Held until a flush covers the batch.
        ack.add_output();
        ack.processed();
        self.unflushed.push(ack);
        if self.unflushed.len() >= MAX_UNFLUSHED {
            return true;
        }
        if self.pending.is_some() {
            // The last flush's outputs may be acknowledged by now: commit it early.
            self.send_marker_when_ready(sink, false);
        }
        false
    }

    /// Flushes: takes the state's changes (`take_changes` appends them) and writes them with the
    /// protocol of the mode (see the module docs). `closing` for the task's last flush: with
    /// markers it then waits up to [`CLOSING_WAIT`] for the outputs. Does nothing in
    /// [`Mode::None`]. The error is a failed [`Sink::commit`] (transactional only), which the
    /// sink has already counted and logged.
    pub fn flush(
        &mut self,
        sink: &dyn Sink,
        take_changes: impl FnOnce(&mut Vec<Change>),
        closing: bool,
    ) -> Result<(), CommitError> {
        match self.mode {
            Mode::None => Ok(()),
            Mode::Markers => {
                self.flush_markers(sink, take_changes, closing);
                Ok(())
            }
            Mode::Transactional => self.flush_transaction(sink, take_changes, closing),
        }
    }

    /// True when the last flush left nothing new: no changes, no batches, the same position.
    fn nothing_new(&self) -> bool {
        self.changes.is_empty() && self.unflushed.is_empty() && self.next_offset == self.flushed_position
    }

    /// At-least-once: the changes go out now; the marker that commits them follows once every
    /// output they cover is acknowledged (see [`PendingMarker`]), at a later call, or at once if
    /// they already are. The next flush's changes wait for that marker, so a marker never
    /// commits changes of a later flush.
    fn flush_markers(&mut self, sink: &dyn Sink, take_changes: impl FnOnce(&mut Vec<Change>), closing: bool) {
        let Some(changelog) = self.changelog else { return };
        if !self.send_marker_when_ready(sink, closing) {
            return;
        }
        take_changes(&mut self.changes);
        if self.nothing_new() {
            return;
        }
        let flush = BatchAck::chained(std::mem::take(&mut self.unflushed));
        for rec in change_records(changelog, self.partition, self.owner, self.changes.drain(..)) {
            sink.send(rec, &flush);
        }
        let outputs = self.barrier.take().unwrap_or_else(BatchAck::untracked);
        outputs.processed();
        self.flushed_position = self.next_offset;
        self.pending = Some(PendingMarker { outputs, flush, position: self.next_offset });
        self.send_marker_when_ready(sink, closing);
    }

    /// Sends the pending marker if the outputs it covers are acknowledged; when `closing`, waits
    /// for them up to [`CLOSING_WAIT`] first. Returns true when no marker is pending anymore.
    fn send_marker_when_ready(&mut self, sink: &dyn Sink, closing: bool) -> bool {
        let (Some(p), Some(changelog)) = (&self.pending, self.changelog) else { return true };
        if closing {
            // The producer acknowledges on its own thread; this only waits for it.
            let deadline = Instant::now() + self.closing_wait;
            while !p.outputs.is_done() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        if !p.outputs.is_done() {
            return false;
        }
        let p = self.pending.take().expect("checked above");
        sink.send(marker_record(changelog, self.partition, self.owner, p.position), &p.flush);
        p.flush.processed();
        true
    }

    /// Exactly-once: changes, marker, outputs and the input position commit together.
    fn flush_transaction(
        &mut self,
        sink: &dyn Sink,
        take_changes: impl FnOnce(&mut Vec<Change>),
        closing: bool,
    ) -> Result<(), CommitError> {
        take_changes(&mut self.changes);
        if !self.nothing_new() {
            let flush = BatchAck::chained(std::mem::take(&mut self.unflushed));
            match self.changelog {
                Some(changelog) => {
                    let changes = self.changes.drain(..);
                    for rec in flush_records(changelog, self.partition, self.owner, changes, self.next_offset) {
                        sink.send(rec, &flush);
                    }
                }
                // No store (engine.durable_state = false): the changes have nowhere to go.
                None => self.changes.clear(),
            }
            self.flushed_position = self.next_offset;
            flush.processed();
        }
        // Even with nothing new to flush: timer outputs may be waiting in the transaction.
        let (input, partition) = (self.input.as_deref(), self.partition);
        let at = |next: Option<i64>| {
            input.zip(next).map(|(topic, next_offset)| InputPosition { topic, partition, next_offset })
        };
        match &self.fanout {
            None => sink.commit(at(self.next_offset), closing),
            // Other pipelines read this input: commit no further than every reader's durable
            // position. This task's own position is durable in its changelog's marker, if it has
            // a store.
            Some(f) => f
                .positions
                .commit(f.reader, self.next_offset, self.changelog.is_some(), |floor| sink.commit(at(floor), closing)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::engine::offsets::{OffsetTracker, RecordingStore};
    use crate::engine::record::FanOut;
    use crate::engine::state::{MemoryBackend, Replay, StateBackend, MARKER_KEY};
    use crate::engine::{MemorySink, OutRecord};

    const LOG: &str = "s-changelog";
    const INPUT: &str = "x.in";

    fn tracker() -> (Arc<OffsetTracker>, Arc<RecordingStore>) {
        let store = Arc::new(RecordingStore::default());
        (OffsetTracker::new(INPUT.into(), 0, store.clone(), None), store)
    }

    fn change(k: &str, v: &str) -> Change {
        (k.as_bytes().to_vec(), Some(v.as_bytes().to_vec()))
    }

    fn output(n: i64) -> OutRecord {
        OutRecord::new("out", format!("k{n}"), format!("v{n}").into_bytes())
    }

    /// What a task does with one batch ending before `next_offset`: one output, then the batch
    /// handed over. Returns whether a flush is due.
    fn batch(f: &mut Flusher, sink: &dyn Sink, tracker: &Arc<OffsetTracker>, next_offset: i64) -> bool {
        let ack = tracker.begin(next_offset, vec![]);
        let out = f.output_ack(Some(&ack));
        sink.send(output(next_offset), &out);
        out.processed();
        f.batch_processed(sink, INPUT.into(), Some(next_offset), ack, None)
    }

    fn is_marker(r: &OutRecord) -> bool {
        r.topic == LOG && r.key.as_deref() == Some(MARKER_KEY)
    }

    fn markers(sink: &MemorySink) -> usize {
        sink.records().iter().filter(|r| is_marker(r)).count()
    }

    fn with_store(sink: &dyn Sink, restored: &Restored) -> Flusher {
        Flusher::with_store(sink, 0, LOG, 7, restored, Duration::from_secs(1))
    }

    #[test]
    fn without_a_store_or_transactions_batches_complete_with_their_outputs() {
        let (sink, (t, stored)) = (MemorySink::holding(), tracker());
        let mut f = Flusher::without_store(&*sink, 0);
        assert_eq!((f.mode(), f.flush_every()), (Mode::None, None));
        assert!(!batch(&mut f, &*sink, &t, 10));
        f.flush(&*sink, |_| panic!("nothing to take"), true).expect("nothing to commit");
        assert!(stored.stored().is_empty(), "the output is not acknowledged yet");
        sink.release();
        assert_eq!(stored.stored(), vec![(INPUT.into(), 0, 10)]);
        assert_eq!(sink.records().len(), 1, "no changelog records");
    }

    #[test]
    fn the_marker_waits_for_every_covered_output_and_the_offset_for_the_marker() {
        let (sink, (t, stored)) = (MemorySink::holding(), tracker());
        let mut f = with_store(&*sink, &Restored::default());
        assert_eq!(f.mode(), Mode::Markers);
        batch(&mut f, &*sink, &t, 10);
        // A timer's output counts too: the marker also covers outputs not tied to a batch.
        let timer = f.output_ack(None);
        sink.send(output(99), &timer);
        timer.processed();
        f.flush(&*sink, |c| c.push(change("a", "1")), false).expect("no transaction");
        let recs = sink.records();
        assert_eq!(recs.len(), 3, "two outputs and the change, no marker: {recs:?}");
        assert_eq!(recs[2].topic, LOG);
        f.flush(&*sink, |_| {}, false).expect("no transaction");
        assert_eq!(markers(&sink), 0, "the outputs are still not acknowledged");
        assert!(stored.stored().is_empty());
        sink.release();
        assert!(stored.stored().is_empty(), "outputs and changes acknowledged, but no marker yet");
        // The next batch finds the outputs acknowledged and sends the marker early.
        batch(&mut f, &*sink, &t, 20);
        assert_eq!(markers(&sink), 1);
        let marker = sink.records().into_iter().find(is_marker).expect("a marker");
        assert_eq!(marker.value, Some(10i64.to_le_bytes().to_vec()), "it commits the flushed position");
        assert!(stored.stored().is_empty(), "the marker is not acknowledged yet");
        sink.release();
        assert_eq!(stored.stored(), vec![(INPUT.into(), 0, 10)], "only the flushed batch completes");
    }

    #[test]
    fn a_failed_output_never_lets_its_offset_be_stored() {
        struct Refusing;
        impl Sink for Refusing {
            fn send(&self, rec: OutRecord, ack: &Arc<BatchAck>) {
                ack.add_output();
                // Changelog records are accepted, outputs refused for good.
                ack.output_done(rec.topic == LOG);
            }
        }
        let (t, stored) = tracker();
        let mut f = with_store(&Refusing, &Restored::default());
        batch(&mut f, &Refusing, &t, 10);
        f.flush(&Refusing, |c| c.push(change("a", "1")), true).expect("no transaction");
        assert!(stored.stored().is_empty());
        assert!(t.is_poisoned());
    }

    #[test]
    fn a_closing_flush_gives_up_on_outputs_that_never_come() {
        let (sink, (t, stored)) = (MemorySink::holding(), tracker());
        let mut f = with_store(&*sink, &Restored::default());
        f.closing_wait = Duration::from_millis(50);
        batch(&mut f, &*sink, &t, 10);
        f.flush(&*sink, |c| c.push(change("a", "1")), false).expect("no transaction");
        let started = Instant::now();
        f.flush(&*sink, |_| {}, true).expect("no transaction");
        assert!(started.elapsed() >= f.closing_wait, "it waited for the outputs");
        assert_eq!(markers(&sink), 0, "a flush without its marker stays uncommitted");
        sink.release();
        assert!(stored.stored().is_empty(), "nothing committed: the next owner redoes the input");
    }

    #[test]
    fn too_many_held_batches_ask_for_a_flush() {
        let (sink, (t, _)) = (MemorySink::new(), tracker());
        let mut f = with_store(&*sink, &Restored::default());
        let due: Vec<bool> = (1..=MAX_UNFLUSHED as i64).map(|i| batch(&mut f, &*sink, &t, i)).collect();
        assert_eq!(due.iter().filter(|d| **d).count(), 1);
        assert!(due[MAX_UNFLUSHED - 1]);
    }

    /// A crash mid-flush leaves changes without a marker: the restore drops them, and the next
    /// owner's first flush rewrites those keys before anything else.
    #[test]
    fn a_torn_flush_is_dropped_and_repaired_first() {
        let backend = MemoryBackend::new();
        let (sink, (t, _)) = (MemorySink::new(), tracker());
        let restored = backend.restore(LOG, 0, 1).expect("memory");
        let mut f = Flusher::with_store(&*sink, 0, LOG, 1, &restored, Duration::from_secs(1));
        batch(&mut f, &*sink, &t, 10);
        f.flush(&*sink, |c| c.push(change("a", "1")), false).expect("no transaction");
        batch(&mut f, &*sink, &t, 20);
        f.flush(&*sink, |c| c.extend([change("a", "2"), change("b", "2")]), false).expect("no transaction");
        let mut log: Vec<OutRecord> = sink.records().into_iter().filter(|r| r.topic == LOG).collect();
        assert_eq!(log.pop().as_ref().map(is_marker), Some(true));
        backend.append(log); // the crash took the second marker

        let restored = backend.restore(LOG, 0, 2).expect("memory");
        assert_eq!(restored.position, Some(10));
        assert_eq!(restored.entries.get(b"a".as_slice()), Some(&b"1".to_vec()));
        assert_eq!(restored.torn, vec![b"a".to_vec(), b"b".to_vec()]);
        let sink = MemorySink::new();
        let mut f = Flusher::with_store(&*sink, 0, LOG, 2, &restored, Duration::from_secs(1));
        assert!(f.has_repairs());
        assert_eq!(f.skip_below(), 10, "the input the restored state covers is skipped");
        f.flush(&*sink, |_| {}, false).expect("no transaction");
        let written: Vec<(Vec<u8>, Option<Vec<u8>>)> =
            sink.records().into_iter().map(|r| (r.key.expect("keyed"), r.value)).collect();
        assert_eq!(
            written,
            vec![
                (b"a".to_vec(), Some(b"1".to_vec())),
                (b"b".to_vec(), None),
                (MARKER_KEY.to_vec(), Some(10i64.to_le_bytes().to_vec()))
            ]
        );
        backend.append(sink.records());
        let again = backend.restore(LOG, 0, 3).expect("memory");
        assert!(again.torn.is_empty(), "repaired");
        assert_eq!(again.entries.len(), 1);
    }

    /// A transactional sink in memory: records become visible at a commit, or never.
    #[derive(Default)]
    struct TxnMemory {
        inner: Mutex<TxnInner>,
    }

    #[derive(Default)]
    struct TxnInner {
        open: Vec<OutRecord>,
        visible: Vec<OutRecord>,
        positions: Vec<i64>,
        fail_next: bool,
        closed: bool,
    }

    impl TxnMemory {
        fn lock(&self) -> std::sync::MutexGuard<'_, TxnInner> {
            self.inner.lock().expect("not poisoned")
        }
    }

    impl Sink for TxnMemory {
        fn send(&self, rec: OutRecord, ack: &Arc<BatchAck>) {
            ack.add_output();
            let mut st = self.lock();
            let ok = !st.closed;
            if ok {
                st.open.push(rec);
            }
            drop(st);
            ack.output_done(ok);
        }

        fn commit_every(&self) -> Option<Duration> {
            Some(Duration::from_secs(1))
        }

        fn commit(&self, position: Option<InputPosition<'_>>, _closing: bool) -> Result<(), CommitError> {
            let mut st = self.lock();
            if st.closed {
                return Err(CommitError::Closed);
            }
            if std::mem::take(&mut st.fail_next) {
                st.open.clear();
                st.closed = true;
                return Err(CommitError::Aborted("injected".into()));
            }
            let open = std::mem::take(&mut st.open);
            st.visible.extend(open);
            if let Some(p) = position {
                assert_eq!((p.topic, p.partition), (INPUT, 0));
                st.positions.push(p.next_offset);
            }
            Ok(())
        }
    }

    #[test]
    fn a_transaction_commits_outputs_changes_marker_and_position_together() {
        let (sink, (t, _)) = (TxnMemory::default(), tracker());
        let mut f = with_store(&sink, &Restored::default());
        assert_eq!(f.mode(), Mode::Transactional);
        batch(&mut f, &sink, &t, 10);
        assert!(sink.lock().visible.is_empty(), "nothing visible before the commit");
        assert_eq!(t.in_flight(), 1, "its output is acknowledged, but the batch ends with its transaction");
        f.flush(&sink, |c| c.push(change("a", "1")), false).expect("commits");
        assert_eq!(t.in_flight(), 0);
        let st = sink.lock();
        let topics: Vec<&str> = st.visible.iter().map(|r| r.topic).collect();
        assert_eq!(topics, ["out", LOG, LOG], "output, change, marker");
        assert!(is_marker(&st.visible[2]), "the marker needs no wait");
        assert_eq!(st.positions, [10]);
        drop(st);
        // Nothing new: still a commit (timer outputs may wait in the transaction), same position.
        f.flush(&sink, |_| {}, false).expect("commits");
        assert_eq!(sink.lock().positions, [10, 10]);
        assert_eq!(sink.lock().visible.len(), 3, "no second marker");
    }

    #[test]
    fn a_failed_transaction_shows_nothing_and_is_reported() {
        let (sink, (t, stored)) = (TxnMemory::default(), tracker());
        let mut f = with_store(&sink, &Restored::default());
        batch(&mut f, &sink, &t, 10);
        sink.lock().fail_next = true;
        let err = f.flush(&sink, |c| c.push(change("a", "1")), false).expect_err("injected failure");
        assert!(matches!(err, CommitError::Aborted(_)), "{err}");
        assert!(sink.lock().visible.is_empty() && sink.lock().positions.is_empty());
        // The sink refuses what follows: the batch after the failure never completes.
        batch(&mut f, &sink, &t, 20);
        assert_eq!(f.flush(&sink, |_| {}, true), Err(CommitError::Closed));
        assert!(sink.lock().visible.is_empty());
        assert!(t.is_poisoned(), "a refused output poisons its partition");
        // The first batch's records were all taken before the commit failed, so its ack
        // completed; that stores nothing in production, where the router's offset store does
        // nothing in exactly-once mode (offsets move only with committed transactions).
        assert_eq!(stored.stored(), vec![(INPUT.into(), 0, 10)]);
    }

    #[test]
    fn commits_without_a_store_carry_the_input_position() {
        let (sink, (t, _)) = (TxnMemory::default(), tracker());
        let mut f = Flusher::without_store(&sink, 0);
        assert_eq!((f.mode(), f.flush_every()), (Mode::Transactional, Some(Duration::from_secs(1))));
        batch(&mut f, &sink, &t, 10);
        f.flush(&sink, |c| c.push(change("ignored", "x")), true).expect("commits");
        let st = sink.lock();
        assert_eq!(st.positions, [10]);
        assert_eq!(st.visible.iter().map(|r| r.topic).collect::<Vec<_>>(), ["out"], "no changelog without a store");
    }

    /// Two pipelines read one input in exactly-once mode, each committing in its own
    /// transaction: the group's offset never passes the position either has made durable, and a
    /// reader ahead of it keeps its own position in its marker (its restore skips up to there).
    #[test]
    fn exactly_once_readers_of_one_input_commit_no_further_than_either() {
        use crate::engine::offsets::SharedPositions;
        let positions = SharedPositions::new(2);
        let (t, _) = tracker();
        let (sa, sb) = (TxnMemory::default(), TxnMemory::default());
        let mut a = with_store(&sa, &Restored::default());
        let mut b = with_store(&sb, &Restored::default());
        let hand = |f: &mut Flusher, sink: &dyn Sink, reader: usize, next: i64| {
            let shared = t.begin(next, vec![]);
            let ack = BatchAck::reader(&shared, None, vec![]);
            shared.processed();
            let fanout = FanOut { reader, positions: positions.clone() };
            f.batch_processed(sink, INPUT.into(), Some(next), ack, Some(fanout));
        };
        hand(&mut a, &sa, 0, 100);
        a.flush(&sa, |c| c.push(change("a", "1")), false).expect("commits");
        assert!(sa.lock().positions.is_empty(), "reader b has made nothing durable: no offset moves");
        hand(&mut b, &sb, 1, 40);
        b.flush(&sb, |c| c.push(change("b", "1")), false).expect("commits");
        assert_eq!(sb.lock().positions, [40]);
        hand(&mut a, &sa, 0, 150);
        a.flush(&sa, |_| {}, false).expect("commits");
        assert_eq!(sa.lock().positions, [40], "capped at reader b's durable position");
        // Reader a's own position is in its marker: a restore of a skips up to 150.
        let marker = sa.lock().visible.iter().rev().find(|r| is_marker(r)).cloned().expect("a marker");
        assert_eq!(marker.value, Some(150i64.to_le_bytes().to_vec()));
        hand(&mut b, &sb, 1, 200);
        b.flush(&sb, |_| {}, false).expect("commits");
        assert_eq!(sb.lock().positions, [40, 150], "capped at reader a's durable position");
    }

    #[test]
    fn replay_of_markers_flushes_matches_the_flushed_positions() {
        // The records one flusher writes replay to the state and position it flushed.
        let (sink, (t, _)) = (MemorySink::new(), tracker());
        let mut f = with_store(&*sink, &Restored::default());
        for (i, v) in ["1", "2", "3"].iter().enumerate() {
            batch(&mut f, &*sink, &t, 10 * (i as i64 + 1));
            f.flush(&*sink, |c| c.push(change("a", v)), false).expect("no transaction");
        }
        let mut replay = Replay::new();
        for r in sink.records().iter().filter(|r| r.topic == LOG) {
            replay.apply(r.key.as_deref().expect("keyed"), r.value.as_deref(), Some(7));
        }
        let r = replay.finish();
        assert_eq!(r.position, Some(30));
        assert_eq!(r.entries.get(b"a".as_slice()), Some(&b"3".to_vec()));
    }
}
