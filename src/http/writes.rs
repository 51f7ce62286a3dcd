//! Writes of the HTTP API: one producer that sends a record to an input topic and answers only
//! once the broker acknowledged it, so a `202 Accepted` means the record is in Kafka (there is no
//! database in the request path). The record was checked by its pipeline's own decoder before
//! (see `api`), so what is accepted here is exactly what the pipeline processes.

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::config::Config;
use crate::kafka::client;

use super::problem::Problem;

/// Records to write: (key, value; `None` is a tombstone).
pub type Records = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// The producer of API writes.
#[derive(Clone)]
pub struct Writer {
    producer: FutureProducer,
    prefix: String,
    timeout: Duration,
}

impl Writer {
    /// A writer to `cfg`'s cluster; a write not acknowledged within `http.write_timeout` is
    /// answered 503.
    pub fn new(cfg: &Config) -> Result<Self, client::Error> {
        let mut pc = client::producer(&cfg.kafka, &cfg.engine);
        // A write waits for its acknowledgement: no lingering, and give up when the caller does.
        pc.set("linger.ms", "1").set("message.timeout.ms", cfg.http.write_timeout.as_millis().to_string());
        let producer: FutureProducer = pc.create().map_err(client::Error::Client)?;
        Ok(Self { producer, prefix: cfg.kafka.topic_prefix.clone(), timeout: cfg.http.write_timeout })
    }

    /// Sends `value` (`None`: a tombstone) under `key` to logical topic `topic`, and waits for
    /// the broker's acknowledgement. Returns (partition, offset).
    pub async fn send(&self, topic: &str, key: &[u8], value: Option<&[u8]>) -> Result<(i32, i64), Problem> {
        let full = format!("{}{topic}", self.prefix);
        let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&full).key(key);
        if let Some(v) = value {
            rec = rec.payload(v);
        }
        match self.producer.send(rec, self.timeout).await {
            Ok(delivery) => Ok((delivery.partition, delivery.offset)),
            Err((e, _)) => {
                tracing::warn!(topic, error = %e, "an API write was not acknowledged");
                Err(Problem::unavailable(
                    format!("the broker did not acknowledge the write to `{topic}` in time; nothing is certain to be written, retry"),
                    1,
                ))
            }
        }
    }

    /// Sends every `(key, value)` of `records` to logical topic `topic` with all of them in
    /// flight at once (bounded by the producer's queue), and waits for every acknowledgement.
    /// Returns how many were acknowledged; any refusal is a 503 (some records may be written:
    /// writing them again is harmless for a compacted table keyed by id).
    pub async fn send_all(&self, topic: &str, records: &Records) -> Result<usize, Problem> {
        let full = format!("{}{topic}", self.prefix);
        let refused = |why: String| {
            tracing::warn!(topic, error = %why, "an API write was not acknowledged");
            Problem::unavailable(
                format!("the broker did not acknowledge every record written to `{topic}`; retry (writing again is harmless)"),
                1,
            )
        };
        let mut pending = std::collections::VecDeque::new();
        let mut acked = 0;
        for (k, v) in records {
            loop {
                let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&full).key(k.as_slice());
                if let Some(v) = v {
                    rec = rec.payload(v.as_slice());
                }
                match self.producer.send_result(rec) {
                    Ok(f) => {
                        pending.push_back(f);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => match pending.pop_front() {
                        // The queue is full: wait for the oldest record in flight.
                        Some(f) => match f.await {
                            Ok(Ok(_)) => acked += 1,
                            Ok(Err((e, _))) => return Err(refused(e.to_string())),
                            Err(_) => return Err(refused("the producer was dropped".into())),
                        },
                        None => tokio::time::sleep(Duration::from_millis(5)).await,
                    },
                    Err((e, _)) => return Err(refused(e.to_string())),
                }
            }
        }
        for f in pending {
            match f.await {
                Ok(Ok(_)) => acked += 1,
                Ok(Err((e, _))) => return Err(refused(e.to_string())),
                Err(_) => return Err(refused("the producer was dropped".into())),
            }
        }
        Ok(acked)
    }
}
