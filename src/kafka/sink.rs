//! The producer sink: sends output records with librdkafka and reports each acknowledgement to
//! the batch it belongs to.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use prometheus::IntCounter;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::statistics::Statistics;
use rdkafka::ClientContext;

use super::client;
use super::topics;
use crate::config::Config;
use crate::engine::shutdown::Reason;
use crate::engine::{BatchAck, OutRecord, Shutdown, Sink};
use crate::metrics::Metrics;

/// Receives delivery reports on the producer's polling thread.
pub struct SinkContext {
    metrics: Metrics,
    prefix: String,
    shutdown: Shutdown,
    /// Resolved `produced` counters by full topic name: one hash lookup per delivery instead of
    /// the label machinery.
    produced: DashMap<String, IntCounter>,
}

impl SinkContext {
    fn logical<'a>(&self, full: &'a str) -> &'a str {
        full.strip_prefix(self.prefix.as_str()).unwrap_or(full)
    }
}

impl ClientContext for SinkContext {
    fn stats(&self, stats: Statistics) {
        // The bytes waiting in the producer's queue; the consumer's statistics feed the rest.
        self.metrics.memory.set_queue("kafka_produce_queue", i64::try_from(stats.msg_size).unwrap_or(i64::MAX));
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.metrics.kafka_errors.with_label_values(&["producer"]).inc();
        tracing::warn!(%error, reason, "producer error");
    }
}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = Arc<BatchAck>;

    fn delivery(&self, result: &DeliveryResult<'_>, ack: Arc<BatchAck>) {
        match result {
            Ok(msg) => {
                let topic = msg.topic();
                if let Some(c) = self.produced.get(topic) {
                    c.inc();
                } else {
                    let c = self.metrics.produced.with_label_values(&[self.logical(topic)]);
                    c.inc();
                    self.produced.insert(topic.to_string(), c);
                }
                ack.output_done(true);
            }
            Err((err, msg)) => {
                let topic = msg.topic();
                self.metrics.produce_errors.with_label_values(&[self.logical(topic)]).inc();
                tracing::error!(topic, error = %err, "the broker refused an output record; restarting the engine without committing past it");
                self.shutdown.trigger(Reason::Restart {
                    kind: "delivery_failed",
                    why: format!("delivery to {topic} failed: {err}"),
                });
                ack.output_done(false);
            }
        }
    }
}

/// Errors of creating the sink.
#[derive(Debug, thiserror::Error)]
#[error("cannot create the Kafka producer: {0}")]
pub struct Error(#[from] KafkaError);

/// Sends output records to Kafka.
pub struct KafkaSink {
    producer: ThreadedProducer<SinkContext>,
    /// (logical, full) topic names: a handful, so a scan beats hashing on every record.
    names: Vec<(&'static str, String)>,
    metrics: Metrics,
    shutdown: Shutdown,
}

impl KafkaSink {
    /// A sink for `cfg`'s cluster; a refused delivery triggers an engine restart. It writes the
    /// topics of `topics/` and the `changelogs` (logical names).
    pub fn new(cfg: &Config, metrics: Metrics, shutdown: Shutdown, changelogs: &[&'static str]) -> Result<Self, Error> {
        let ctx = SinkContext {
            metrics: metrics.clone(),
            prefix: cfg.kafka.topic_prefix.clone(),
            shutdown: shutdown.clone(),
            produced: DashMap::new(),
        };
        let producer: ThreadedProducer<SinkContext> =
            client::producer(&cfg.kafka, &cfg.engine).create_with_context(ctx)?;
        let names = topic_names(cfg, changelogs);
        // Warm up: librdkafka learns a topic's leaders (and gets its idempotent producer id) only
        // when the first record for it is queued, which held the first acknowledgements back for
        // ~0.7 s in benches. Asking now moves that wait to start-up.
        for (logical, full) in names.iter().filter(|(l, _)| topics::get(l).is_none_or(|d| d.role != "input")) {
            if let Err(e) = producer.client().fetch_metadata(Some(full), cfg.kafka.connect_timeout) {
                tracing::warn!(topic = logical, error = %e, "could not pre-load producer metadata");
            }
        }
        Ok(Self { producer, names, metrics, shutdown })
    }

    /// Waits up to `timeout` for every queued record to be acknowledged.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(timeout)
    }

    /// Records queued or in flight.
    pub fn in_flight(&self) -> i32 {
        self.producer.in_flight_count()
    }
}

/// The (logical, full) name of every topic a sink may write: those of `topics/`, and `extra`
/// (changelogs: their names depend on the application id).
pub(crate) fn topic_names(cfg: &Config, extra: &[&'static str]) -> Vec<(&'static str, String)> {
    let mut names: Vec<(&'static str, String)> =
        topics::all().iter().map(|d| (d.name.as_str(), cfg.topic(&d.name))).collect();
    names.extend(extra.iter().map(|c| (*c, cfg.topic(c))));
    names
}

/// The full name of logical topic `logical` among `names`.
pub(crate) fn full_name<'a>(names: &'a [(&'static str, String)], logical: &str) -> &'a str {
    match names.iter().find(|(l, _)| *l == logical) {
        Some((_, n)) => n.as_str(),
        // Every topic a pipeline writes is defined in topics/; a test covers this.
        None => panic!("output to undefined topic {logical}"),
    }
}

/// `rec` as a librdkafka record for topic `full`, carrying `ack` to its delivery report.
pub(crate) fn base_record<'a>(
    full: &'a str,
    rec: &'a OutRecord,
    ack: Arc<BatchAck>,
) -> BaseRecord<'a, [u8], [u8], Arc<BatchAck>> {
    let mut record: BaseRecord<'_, [u8], [u8], Arc<BatchAck>> = BaseRecord::with_opaque_to(full, ack);
    if let Some(k) = rec.key.as_deref() {
        record = record.key(k);
    }
    if let Some(v) = rec.value.as_deref() {
        record = record.payload(v);
    }
    if !rec.headers.is_empty() {
        let mut h = OwnedHeaders::new_with_capacity(rec.headers.len());
        for (k, v) in &rec.headers {
            h = h.insert(Header { key: k, value: Some(v.as_slice()) });
        }
        record = record.headers(h);
    }
    if let Some(p) = rec.partition {
        record = record.partition(p);
    }
    record
}

impl Sink for KafkaSink {
    fn send(&self, rec: OutRecord, ack: &Arc<BatchAck>) {
        let full = full_name(&self.names, rec.topic);
        ack.add_output();
        let record = base_record(full, &rec, ack.clone());
        // Blocking this task's thread while the queue is full is the point: its inbox fills and
        // the consumer stops polling.
        let full_waits = &self.metrics.producer_queue_full;
        if let Err(err) = client::send_waiting(&self.producer, record, || full_waits.inc()) {
            self.metrics.produce_errors.with_label_values(&[rec.topic]).inc();
            tracing::error!(topic = full, error = %err, "cannot enqueue an output record");
            self.shutdown
                .trigger(Reason::Restart { kind: "delivery_failed", why: format!("cannot send to {full}: {err}") });
            ack.output_done(false);
        }
    }
}
