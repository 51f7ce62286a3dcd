//! Records as they move through the engine.

use std::sync::Arc;

use super::offsets::{BatchAck, SharedPositions};

/// One consumed Kafka record, copied out of librdkafka's buffers so it can cross threads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord {
    /// Key bytes, if any.
    pub key: Option<Vec<u8>>,
    /// Value bytes; `None` for a tombstone.
    pub value: Option<Vec<u8>>,
    /// Offset in its partition.
    pub offset: i64,
    /// Record timestamp (create or log-append time) in epoch milliseconds, if the broker has one.
    pub timestamp_ms: Option<i64>,
}

/// Consecutive records of one input partition, handed to its task in one message.
#[derive(Debug)]
pub struct Batch {
    /// Logical input topic (the name in `topics/`, without prefix).
    pub topic: &'static str,
    /// Full topic name on the broker (with prefix), for dead-letter headers.
    pub full_topic: Arc<str>,
    /// Input partition.
    pub partition: i32,
    /// The records, in offset order; shared by the copies of a batch several pipelines read.
    pub records: Arc<Vec<RawRecord>>,
    /// Completes when every output of this batch is acknowledged; then the batch's offsets may be
    /// committed.
    pub ack: Arc<BatchAck>,
    /// Set when several pipelines read the input: which reader this copy is for.
    pub fanout: Option<FanOut>,
}

/// A copy of a batch for one of the pipelines that read the same input (see
/// [`super::router`]): the reader's number, and the positions the readers of this partition have
/// committed (exactly-once mode, [`SharedPositions`]).
#[derive(Debug, Clone)]
pub struct FanOut {
    /// This reader's number among the input's readers.
    pub reader: usize,
    /// The committed positions of every reader of the partition.
    pub positions: Arc<SharedPositions>,
}

/// One output record, addressed by logical topic name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutRecord {
    /// Logical topic name (the sink adds the deployment's prefix).
    pub topic: &'static str,
    /// Key bytes.
    pub key: Option<Vec<u8>>,
    /// Value bytes; `None` writes a tombstone.
    pub value: Option<Vec<u8>>,
    /// Headers, if any.
    pub headers: Vec<(&'static str, Vec<u8>)>,
    /// The partition to write to; `None` (the usual) lets the producer partition by key.
    pub partition: Option<i32>,
}

impl OutRecord {
    /// A record with a key and a value and no headers.
    pub fn new(topic: &'static str, key: impl Into<Vec<u8>>, value: Vec<u8>) -> Self {
        Self { topic, key: Some(key.into()), value: Some(value), headers: Vec::new(), partition: None }
    }

    /// The header named `name`, if present.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_slice())
    }
}
