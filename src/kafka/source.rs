//! The consumer source: reads every input topic through one rdkafka `StreamConsumer`, cuts the
//! stream into chunks with tokio-stream, and hands per-partition batches to the [`Router`].

use std::sync::{Arc, Mutex};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::ClientContext;
use tokio_stream::StreamExt;

use super::client;
use crate::config::Config;
use crate::engine::router::TaskGone;
use crate::engine::{RawRecord, Router, Shutdown};
use crate::health::Health;
use crate::metrics::Metrics;

/// A partition assignment change, queued by the rebalance callback for the consumer loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RebalanceEvent {
    /// These (full topic, partition) pairs were assigned.
    Assigned(Vec<(String, i32)>),
    /// These were revoked.
    Revoked(Vec<(String, i32)>),
}

/// Receives rebalances, statistics and errors from librdkafka.
pub struct SourceContext {
    metrics: Metrics,
    prefix: String,
    health: Arc<Health>,
    events: Mutex<Vec<RebalanceEvent>>,
}

impl SourceContext {
    /// A context reporting into `metrics` and `health`.
    pub fn new(cfg: &Config, metrics: Metrics, health: Arc<Health>) -> Self {
        Self { metrics, prefix: cfg.kafka.topic_prefix.clone(), health, events: Mutex::new(Vec::new()) }
    }

    fn take_events(&self) -> Vec<RebalanceEvent> {
        std::mem::take(&mut *self.events.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn logical<'a>(&self, full: &'a str) -> &'a str {
        full.strip_prefix(self.prefix.as_str()).unwrap_or(full)
    }
}

impl ClientContext for SourceContext {
    fn stats(&self, stats: Statistics) {
        self.health.set_broker_up(stats.brokers.values().any(|b| b.state == "UP"));
        for (name, topic) in &stats.topics {
            for (p, part) in &topic.partitions {
                // Partition -1 is librdkafka's internal "unassigned" bucket; a negative lag
                // means "unknown" (nothing fetched yet).
                if *p >= 0 && part.consumer_lag >= 0 && part.desired {
                    self.metrics
                        .consumer_lag
                        .with_label_values(&[self.logical(name), &p.to_string()])
                        .set(part.consumer_lag);
                }
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let kind = match error.rdkafka_error_code() {
            Some(rdkafka::types::RDKafkaErrorCode::AllBrokersDown) => {
                self.health.set_broker_up(false);
                "all_brokers_down"
            }
            Some(rdkafka::types::RDKafkaErrorCode::BrokerTransportFailure) => "transport",
            _ => "consumer",
        };
        self.metrics.kafka_errors.with_label_values(&[kind]).inc();
        tracing::warn!(%error, reason, "consumer error");
    }
}

impl ConsumerContext for SourceContext {
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let pairs = |tpl: &rdkafka::TopicPartitionList| {
            tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect::<Vec<_>>()
        };
        let event = match rebalance {
            Rebalance::Assign(tpl) => RebalanceEvent::Assigned(pairs(tpl)),
            Rebalance::Revoke(tpl) => RebalanceEvent::Revoked(pairs(tpl)),
            Rebalance::Error(e) => {
                self.metrics.kafka_errors.with_label_values(&["rebalance"]).inc();
                tracing::warn!(error = %e, "rebalance error");
                return;
            }
        };
        tracing::info!(?event, "rebalance");
        let owned = consumer.assignment().map(|a| a.count()).unwrap_or(0);
        self.health.set_assigned(owned);
        self.metrics.assigned_partitions.set(owned as i64);
        self.events.lock().unwrap_or_else(|p| p.into_inner()).push(event);
    }
}

/// The consumer type pagepulse runs.
pub type Source = StreamConsumer<SourceContext>;

/// Errors of the source.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The consumer could not be created or subscribed.
    #[error("cannot start the Kafka consumer: {0}")]
    Kafka(#[from] KafkaError),
    /// A task died.
    #[error(transparent)]
    TaskGone(#[from] TaskGone),
}

/// Creates the consumer and subscribes it to `topics` (full names).
pub fn subscribe(cfg: &Config, ctx: SourceContext, topics: &[String]) -> Result<Arc<Source>, Error> {
    let consumer: Source = client::consumer(&cfg.kafka).create_with_context(ctx)?;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&names)?;
    Ok(Arc::new(consumer))
}

/// The consumer loop: runs until `shutdown` triggers (then stops polling at once) or a task
/// dies. Records of a chunk are grouped per partition in offset order and dispatched; the
/// dispatch waits while a task's inbox is full, which is how backpressure stops polling.
pub async fn run(consumer: &Source, router: &mut Router, cfg: &Config, shutdown: &Shutdown) -> Result<(), Error> {
    let chunks = consumer.stream().chunks_timeout(cfg.engine.batch_max_records.get(), cfg.engine.batch_max_wait);
    tokio::pin!(chunks);
    let stop = shutdown.wait();
    tokio::pin!(stop);
    // Per-partition groups of the current chunk, in order of first appearance.
    let mut groups: Vec<((usize, i32), Vec<RawRecord>)> = Vec::new();
    let mut last_topic: Option<(String, Option<usize>)> = None;
    loop {
        let chunk = tokio::select! {
            biased;
            _ = &mut stop => return Ok(()),
            chunk = chunks.next() => match chunk {
                Some(c) => c,
                None => return Ok(()),
            },
        };
        for event in consumer.context().take_events() {
            if let RebalanceEvent::Revoked(pairs) = event {
                for (topic, partition) in pairs {
                    router.revoke(&topic, partition);
                    let logical = consumer.context().logical(&topic).to_string();
                    // Err only when lag was never reported for it: nothing to remove.
                    let _ = consumer.context().metrics.consumer_lag.remove_label_values(&[&logical, &partition.to_string()]);
                }
            }
        }
        for item in chunk {
            let msg = match item {
                Ok(m) => m,
                Err(e) => {
                    consumer.context().metrics.kafka_errors.with_label_values(&["consume"]).inc();
                    tracing::warn!(error = %e, "consume error");
                    continue;
                }
            };
            let topic = msg.topic();
            let input = match &last_topic {
                Some((name, idx)) if name == topic => *idx,
                _ => {
                    let idx = router.input_index(topic);
                    last_topic = Some((topic.to_string(), idx));
                    idx
                }
            };
            let Some(input) = input else { continue };
            let key = (input, msg.partition());
            let rec = RawRecord {
                key: msg.key().map(<[u8]>::to_vec),
                value: msg.payload().map(<[u8]>::to_vec),
                offset: msg.offset(),
                timestamp_ms: msg.timestamp().to_millis(),
            };
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, recs)) => recs.push(rec),
                None => groups.push((key, vec![rec])),
            }
        }
        for ((input, partition), records) in groups.drain(..) {
            router.dispatch(input, partition, records).await?;
        }
    }
}
