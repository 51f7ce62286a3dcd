//! The engine every pipeline runs on: records are routed by partition to one actor per
//! (pipeline, partition), processed by plain [`Processor`] code, and their outputs go to a
//! [`Sink`]; an input offset is stored for commit only once every output it caused is
//! acknowledged ([`offsets`]).
//!
//! Each file can be read alone, and uses only those before it: [`offsets`] (batch acks, stored
//! offsets), [`record`], [`state`] (the changelog protocol), [`processor`] (the trait every
//! pipeline implements), [`deadletter`], [`sink`], [`flush`] (when a batch's outputs, state
//! changes and offset become durable), [`aggregate`], [`task`] (the actor: a shell around a
//! processor and a flusher), [`spec`] (what starts tasks, restoring their state first), [`router`]
//! (which task gets which partition's records). [`shutdown`] (why the engine stops) and [`stop`] (how:
//! one ordered list of parts) stand apart.

pub mod aggregate;
pub mod deadletter;
pub mod flow;
pub mod flush;
pub mod offsets;
pub mod processor;
pub mod record;
pub mod router;
pub mod shutdown;
pub mod sink;
pub mod spec;
pub mod state;
pub mod stop;
pub mod task;

pub use aggregate::{Aggregate, AggregatorActor, Leadership, PublishFn};
pub use flush::Flusher;
pub use offsets::{BatchAck, OffsetStore, OffsetTracker};
pub use processor::{Emit, Processor, RecordMeta, RejectClass, Rejection};
pub use record::{Batch, OutRecord, RawRecord};
pub use router::Router;
pub use shutdown::Shutdown;
pub use sink::{CommitError, InputPosition, MemorySink, Sink};
pub use spec::{PipelineSpec, Store, TaskFactory};
pub use state::{MemoryBackend, StateBackend};
pub use task::Task;
