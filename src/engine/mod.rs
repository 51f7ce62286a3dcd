//! The engine every pipeline runs on: records are routed by partition to one actor per
//! (pipeline, partition), processed by plain [`Processor`] code, and their outputs go to a
//! [`Sink`]; an input offset is stored for commit only once every output it caused is
//! acknowledged ([`offsets`]).

pub mod aggregate;
pub mod deadletter;
pub mod flow;
pub mod offsets;
pub mod processor;
pub mod record;
pub mod router;
pub mod shutdown;
pub mod sink;
pub mod state;
pub mod task;

pub use aggregate::{Aggregate, AggregatorActor};
pub use offsets::{BatchAck, OffsetStore, OffsetTracker};
pub use processor::{Emit, Processor, RecordMeta, RejectClass, Rejection};
pub use record::{Batch, OutRecord, RawRecord};
pub use router::{PipelineSpec, Router, TaskFactory};
pub use shutdown::Shutdown;
pub use sink::{CommitError, InputPosition, MemorySink, Sink};
pub use state::{MemoryBackend, StateBackend};
pub use task::{Durable, Task};
