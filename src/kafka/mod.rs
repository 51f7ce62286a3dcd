//! Everything that talks to Kafka: topic definitions and admin, the consumer source, the producer
//! sink (and its exactly-once variant, [`txn`]), and the librdkafka client settings they share.

pub mod admin;
pub mod changelog;
pub mod client;
pub mod coordinator;
pub mod global;
pub mod guard;
pub mod instances;
pub mod partitioner;
pub mod results;
pub mod sink;
pub mod source;
pub mod topics;
pub mod txn;
pub mod watchdog;

pub use sink::KafkaSink;
