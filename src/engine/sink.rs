//! Where output records go. Production uses [`crate::kafka::KafkaSink`]; tests use
//! [`MemorySink`].

use std::sync::{Arc, Mutex};

use super::offsets::BatchAck;
use super::record::OutRecord;

/// A destination for output records.
///
/// Contract: `send` calls `ack.add_output()` before the record leaves, and exactly one
/// `ack.output_done(ok)` once its fate is known (acknowledged, or failed for good). `send` may
/// block while the destination's queue is full: that is how backpressure reaches the tasks and,
/// through their bounded inboxes, the consumer.
pub trait Sink: Send + Sync + 'static {
    /// Sends one record on behalf of the batch behind `ack`.
    fn send(&self, rec: OutRecord, ack: &Arc<BatchAck>);
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
