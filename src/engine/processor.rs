//! The trait every pipeline implements: plain synchronous logic for one partition.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::record::{OutRecord, RawRecord};
use super::state::{Change, Entries};

/// Where a record came from, handed to [`Processor::process`] next to the decoded input.
#[derive(Debug, Clone, Copy)]
pub struct RecordMeta {
    /// Logical input topic.
    pub topic: &'static str,
    /// Input partition.
    pub partition: i32,
    /// Input offset.
    pub offset: i64,
    /// Record timestamp in epoch milliseconds, if any.
    pub timestamp_ms: Option<i64>,
}

/// Why an input record was refused. Every refusal sends the record to the dead-letter topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectClass {
    /// No value (a tombstone) where a value is required.
    EmptyValue,
    /// The value is not valid UTF-8.
    InvalidUtf8,
    /// The value is not valid JSON, or not a JSON object.
    InvalidJson,
    /// A required field is missing.
    MissingField,
    /// A field has the wrong JSON type.
    WrongType,
    /// A field is larger than allowed.
    TooLarge,
    /// A field has the right type but a value that is not allowed.
    InvalidValue,
}

impl RejectClass {
    /// The label used in metrics and the `pagepulse.reason` header.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectClass::EmptyValue => "empty_value",
            RejectClass::InvalidUtf8 => "invalid_utf8",
            RejectClass::InvalidJson => "invalid_json",
            RejectClass::MissingField => "missing_field",
            RejectClass::WrongType => "wrong_type",
            RejectClass::TooLarge => "too_large",
            RejectClass::InvalidValue => "invalid_value",
        }
    }

    /// Every class, for pre-registering metrics and for tests.
    pub const ALL: [RejectClass; 7] = [
        RejectClass::EmptyValue,
        RejectClass::InvalidUtf8,
        RejectClass::InvalidJson,
        RejectClass::MissingField,
        RejectClass::WrongType,
        RejectClass::TooLarge,
        RejectClass::InvalidValue,
    ];
}

/// A refused record: its class and a readable reason that names the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Rejection {
    /// The class, for metrics.
    pub class: RejectClass,
    /// The reason, for people: e.g. "field `content`: expected a string, found number".
    pub message: String,
}

impl Rejection {
    /// A rejection of `class` with `message`.
    pub fn new(class: RejectClass, message: impl Into<String>) -> Self {
        Self { class, message: message.into() }
    }
}

/// Collects what processing produces: output records, and parts for the pipeline's
/// cross-partition aggregate (see [`super::aggregate`]).
#[derive(Debug)]
pub struct Emit<P> {
    /// Output records, in the order they were emitted.
    pub records: Vec<OutRecord>,
    /// Parts for the pipeline's aggregate.
    pub parts: Vec<P>,
}

impl<P> Default for Emit<P> {
    fn default() -> Self {
        Self { records: Vec::new(), parts: Vec::new() }
    }
}

impl<P> Emit<P> {
    /// Emits an output record.
    pub fn record(&mut self, rec: OutRecord) {
        self.records.push(rec);
    }

    /// Hands a part to the pipeline's aggregate.
    pub fn part(&mut self, part: P) {
        self.parts.push(part);
    }
}

/// A pipeline's logic for one partition: no I/O, no actors, time passed in.
///
/// The engine calls [`decode`](Processor::decode) exactly once per record; a refusal sends the
/// record to the dead-letter topic and processing continues with the next record. Accepted
/// records go to [`process`](Processor::process) in offset order. Outputs pushed into `out` are
/// produced by the engine, which commits the input offset only after all of them are
/// acknowledged.
pub trait Processor: 'static {
    /// The decoded input, which may borrow from the raw record.
    type Input<'a>;
    /// What this processor contributes to the pipeline's cross-partition aggregate; `()` if none.
    type Part: Send + Unpin + 'static;

    /// Decodes and validates one raw record of logical topic `topic`.
    fn decode<'a>(&self, topic: &'static str, rec: &'a RawRecord) -> Result<Self::Input<'a>, Rejection>;

    /// Processes one decoded record.
    fn process(&mut self, input: Self::Input<'_>, meta: &RecordMeta, out: &mut Emit<Self::Part>);

    /// How often [`on_tick`](Processor::on_tick) runs; `None` (the default) for never.
    fn tick_interval(&self) -> Option<Duration> {
        None
    }

    /// Periodic work: windows closing, periodic views. `now` is wall-clock time.
    fn on_tick(&mut self, _now: DateTime<Utc>, _out: &mut Emit<Self::Part>) {}

    /// Moves every change of the processor's durable state since the last call into `out`
    /// (see [`super::state`]); a stateless processor has none. Called at every flush: the changes
    /// must be exactly what [`restore`](Processor::restore) needs to rebuild the state.
    fn take_changes(&mut self, _out: &mut Vec<Change>) {}

    /// Rebuilds the state from the live entries of its changelog. Called once, before any input,
    /// on a fresh processor; outputs (e.g. parts for an aggregate) may be pushed into `out`.
    fn restore(&mut self, _entries: Entries, _out: &mut Emit<Self::Part>) {}
}
