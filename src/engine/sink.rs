//! Where output records go. Production uses [`crate::kafka::KafkaSink`] (at-least-once) or
//! [`crate::kafka::txn::EosSink`] (exactly-once); tests use [`MemorySink`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::offsets::BatchAck;
use super::record::OutRecord;

/// A destination for output records.
///
/// Contract: `send` calls `ack.add_output()` before the record leaves, and exactly one
/// `ack.output_done(ok)` once its fate is known (acknowledged, or failed for good). `send` may
/// block while the destination's queue is full: that is how backpressure reaches the tasks and,
/// through their bounded inboxes, the consumer.
///
/// A *transactional* sink (exactly-once mode) also keeps everything it took invisible until the
/// task calls [`commit`](Sink::commit), which makes those records and the task's input position
/// visible as one unit. The defaults of the last three methods describe a plain at-least-once
/// sink, shared by every task, whose records are visible as soon as they are acknowledged.
pub trait Sink: Send + Sync + 'static {
    /// Sends one record on behalf of the batch behind `ack`.
    fn send(&self, rec: OutRecord, ack: &Arc<BatchAck>);

    /// The sink the task for `pipeline`/`partition` sends through instead of this one, when each
    /// task needs its own (an exactly-once sink gives each its own transactional producer).
    /// `None` (the default): tasks share this sink. Called once per task incarnation, before its
    /// state is restored; it may block while it fences the task's previous incarnation.
    fn for_task(&self, _pipeline: &'static str, _partition: i32) -> Option<Arc<dyn Sink>> {
        None
    }

    /// How often a task must call [`commit`](Sink::commit) for its outputs to become visible:
    /// `Some` for a transactional sink, `None` (the default) when records are visible once
    /// acknowledged and `commit` does nothing.
    fn commit_every(&self) -> Option<Duration> {
        None
    }

    /// Makes every record sent since the last commit visible together with `position` (the
    /// task's input position, which then counts as consumed), or none of them. `closing` is true
    /// for a task's last commit (its partition was revoked, or the engine stops): a failure then
    /// only loses work that the partition's next owner redoes. The default does nothing: an
    /// at-least-once sink's records are visible once acknowledged, and offsets are committed by
    /// the consumer ([`super::offsets`]).
    fn commit(&self, _position: Option<InputPosition<'_>>, _closing: bool) -> Result<(), CommitError> {
        Ok(())
    }
}

/// Where a task's input stands when it commits: every record of `topic`/`partition` before
/// `next_offset` is processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputPosition<'a> {
    /// Full input topic name (with the deployment's prefix).
    pub topic: &'a str,
    /// Input partition.
    pub partition: i32,
    /// The next offset to read.
    pub next_offset: i64,
}

/// Why [`Sink::commit`] did not commit. In every case nothing since the previous commit becomes
/// visible, and the sink refuses every later record: the task's work since its last commit is
/// redone by the partition's next owner (after a restart, or after the rebalance that moved it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    /// The transaction failed and was aborted.
    #[error("transaction aborted: {0}")]
    Aborted(String),
    /// A newer incarnation of the task (same transactional id) took over; this one is a zombie.
    #[error("fenced by a newer incarnation of the task: {0}")]
    Fenced(String),
    /// An earlier failure closed the sink.
    #[error("the task's sink is closed after an earlier failure")]
    Closed,
}

/// An in-memory sink: keeps every record, and acknowledges at once or only when told to.
#[derive(Debug, Default)]
pub struct MemorySink {
    inner: Mutex<MemoryState>,
}

#[derive(Debug, Default)]
struct MemoryState {
    records: Vec<OutRecord>,
    hold: bool,
    held: Vec<Arc<BatchAck>>,
}

impl MemorySink {
    /// A sink that acknowledges every record at once.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A sink that holds acknowledgements until [`release`](MemorySink::release).
    pub fn holding() -> Arc<Self> {
        let s = Self::default();
        s.lock().hold = true;
        Arc::new(s)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Acknowledges every held record.
    pub fn release(&self) {
        let held = std::mem::take(&mut self.lock().held);
        for ack in held {
            ack.output_done(true);
        }
    }

    /// Every record sent so far.
    pub fn records(&self) -> Vec<OutRecord> {
        self.lock().records.clone()
    }

    /// Records sent to logical topic `topic`.
    pub fn records_for(&self, topic: &str) -> Vec<OutRecord> {
        self.lock().records.iter().filter(|r| r.topic == topic).cloned().collect()
    }
}

impl Sink for MemorySink {
    fn send(&self, rec: OutRecord, ack: &Arc<BatchAck>) {
        ack.add_output();
        let mut st = self.lock();
        st.records.push(rec);
        if st.hold {
            st.held.push(ack.clone());
        } else {
            drop(st);
            ack.output_done(true);
        }
    }
}
