//! Global tables: a small compacted topic that **every** instance reads whole (all partitions,
//! from the beginning, outside the consumer group), like a Kafka Streams `GlobalKTable`. The
//! page-view blacklist is one: each instance ranks the domains of its own partitions, so each
//! needs every blacklist entry, whichever instance owns which partition.
//!
//! The table's reader runs on its own thread and applies each record through a [`Processor`]
//! (decode, then process), so validation and dead letters are the same as for any pipeline. The
//! instance reports "restoring" on `/readyz` until the reader has caught up with the end offsets
//! it saw at start-up and a fetch came back empty. Trade-off: a bad record is dead-lettered by
//! every instance, at every start.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::client;
use crate::config::Config;
use crate::engine::deadletter::dead_letter;
use crate::engine::{BatchAck, Emit, Processor, RecordMeta, Sink};
use crate::health::Health;
use crate::metrics::Metrics;

/// Errors of starting a global table reader.
#[derive(Debug, thiserror::Error)]
#[error("global table {topic}: {reason}")]
pub struct Error {
    /// Full topic name.
    pub topic: String,
    /// What went wrong.
    pub reason: String,
}

/// What a global table reader reports to and writes through.
pub struct Wiring {
    /// Dead letters go here.
    pub sink: Arc<dyn Sink>,
    /// Consumed and dead-lettered counts.
    pub metrics: Metrics,
    /// "Restoring" until caught up.
    pub health: Arc<Health>,
    /// The reader stops when this is set.
    pub stop: Arc<AtomicBool>,
}

/// Starts reading logical topic `topic` whole into `processor`, until `wiring.stop` is set.
/// Records it refuses go to the dead-letter topic, attributed to `pipeline`. `caught_up` is set
/// once the reader has applied every record the topic held when it started: past the end offsets
/// it saw then, and a fetch came back empty (on brokers whose high watermark lags the last
/// records, such as tansu 0.6.0, the end offsets alone come too early). What pipelines that must
/// not work on a partial table wait for.
pub fn spawn<P>(
    cfg: &Config,
    pipeline: &'static str,
    topic: &'static str,
    mut processor: P,
    wiring: Wiring,
    caught_up: Arc<AtomicBool>,
) -> Result<JoinHandle<()>, Error>
where
    P: Processor<Part = ()> + Send,
{
    let Wiring { sink, metrics, health, stop } = wiring;
    let full = cfg.topic(topic);
    let err = |reason: String| Error { topic: full.clone(), reason };
    let mut cc = client::base(&cfg.kafka);
    cc.set("group.id", format!("{}-global", cfg.kafka.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "10");
    let consumer: BaseConsumer = cc.create().map_err(|e| err(e.to_string()))?;
    let md = consumer.fetch_metadata(Some(&full), cfg.kafka.connect_timeout).map_err(|e| err(e.to_string()))?;
    let partitions: Vec<i32> =
        md.topics().iter().flat_map(|t| t.partitions().iter().map(|p| p.id())).collect::<Vec<_>>();
    let mut tpl = TopicPartitionList::new();
    // Where "caught up" is: the end of each partition now (a lower bound on brokers whose high
    // watermark lags, which only makes readiness come a little early).
    let mut ends = Vec::new();
    for &p in &partitions {
        tpl.add_partition_offset(&full, p, Offset::Beginning).map_err(|e| err(e.to_string()))?;
        let (low, high) =
            consumer.fetch_watermarks(&full, p, cfg.kafka.connect_timeout).map_err(|e| err(e.to_string()))?;
        if high > low {
            ends.push((p, high));
        }
    }
    consumer.assign(&tpl).map_err(|e| err(e.to_string()))?;
    let restoring = !ends.is_empty();
    if restoring {
        health.set_restoring(true);
    }
    let full_topic: Arc<str> = full.clone().into();
    std::thread::Builder::new()
        .name(format!("pp-global-{topic}"))
        .spawn(move || {
            let mut restoring = restoring;
            let mut loaded = false;
            let mut emit = Emit::default();
            while !stop.load(Ordering::Acquire) {
                let Some(msg) = consumer.poll(Duration::from_millis(100)) else {
                    // Past the end offsets seen at start, and nothing more to fetch: loaded.
                    if !loaded && ends.is_empty() {
                        loaded = true;
                        caught_up.store(true, Ordering::Release);
                        if restoring {
                            restoring = false;
                            health.set_restoring(false);
                        }
                        tracing::info!(topic, "global table caught up");
                    }
                    continue;
                };
                let msg = match msg {
                    Ok(m) => m,
                    Err(e) => {
                        metrics.kafka_errors.with_label_values(&["consume"]).inc();
                        tracing::warn!(topic, error = %e, "global table read error");
                        continue;
                    }
                };
                let rec = super::source::raw_record(&msg);
                let partition = msg.partition();
                metrics.consumed.with_label_values(&[topic]).inc();
                match processor.decode(topic, &rec) {
                    Ok(input) => {
                        let meta = RecordMeta { topic, partition, offset: rec.offset, timestamp_ms: rec.timestamp_ms };
                        processor.process(input, &meta, &mut emit);
                    }
                    Err(why) => {
                        metrics.deadlettered.with_label_values(&[topic, why.class.as_str()]).inc();
                        emit.record(dead_letter(&rec, pipeline, &full_topic, partition, &why));
                    }
                }
                if !emit.records.is_empty() {
                    let ack = BatchAck::untracked();
                    for r in emit.records.drain(..) {
                        sink.send(r, &ack);
                    }
                    ack.processed();
                }
                if !ends.is_empty() {
                    ends.retain(|&(p, end)| !(p == partition && rec.offset + 1 >= end));
                }
            }
            if restoring {
                health.set_restoring(false);
            }
        })
        .map_err(|e| Error { topic: full, reason: e.to_string() })
}
