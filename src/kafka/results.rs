//! Result readers: the output topics the HTTP API answers from by key (a post's analysis, an
//! hour's top articles, a minute's statistics), read whole by every instance into bounded
//! [`LatestTable`]s, from the beginning, outside the consumer group (like a global table, but
//! without a processor: these are pagepulse's own outputs, already validated).
//!
//! Because every instance reads every partition, any instance answers any of these keys, and a
//! restart or a rebalance loses nothing: the topic is the durable state. Until a table has read
//! up to where its topic ended at start-up it is not [caught up](LatestTable::caught_up), and the
//! API answers a key it does not hold yet with `503` and `Retry-After` rather than `404`.
//! Readiness does not wait for these tables (they are caches of results, not processing state).
//!
//! One thread reads every table's topic with one consumer; entries past their table's retention
//! are dropped once a minute.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::client;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::ops::latest::{LatestTable, Value};

/// Errors of starting the reader.
#[derive(Debug, thiserror::Error)]
#[error("result reader ({topic}): {reason}")]
pub struct Error {
    /// Full topic name.
    pub topic: String,
    /// What went wrong.
    pub reason: String,
}

/// A topic being read: its logical name, its table, and the (partition, end offset) pairs still
/// to reach before the table is caught up.
type Reading = (&'static str, LatestTable, Vec<(i32, i64)>);

/// Starts reading every `(logical topic, table)` of `tables` into its table until `stop` is
/// set. `None` when there is nothing to read.
pub fn spawn(
    cfg: &Config,
    tables: &[(&'static str, LatestTable)],
    metrics: Metrics,
    stop: Arc<AtomicBool>,
) -> Result<Option<JoinHandle<()>>, Error> {
    if tables.is_empty() {
        return Ok(None);
    }
    let err = |topic: &str, reason: String| Error { topic: topic.to_string(), reason };
    let mut cc = client::base(&cfg.kafka);
    cc.set("group.id", format!("{}-results", cfg.kafka.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "50");
    let consumer: BaseConsumer = cc.create().map_err(|e| err("-", e.to_string()))?;
    let mut tpl = TopicPartitionList::new();
    // Per full topic: its logical name, its table, and the end offsets still to reach.
    let mut by_topic: HashMap<String, Reading> = HashMap::new();
    for (logical, table) in tables {
        let full = cfg.topic(logical);
        let md =
            consumer.fetch_metadata(Some(&full), cfg.kafka.connect_timeout).map_err(|e| err(&full, e.to_string()))?;
        let mut ends = Vec::new();
        for p in md.topics().iter().flat_map(|t| t.partitions().iter().map(|p| p.id())) {
            tpl.add_partition_offset(&full, p, Offset::Beginning).map_err(|e| err(&full, e.to_string()))?;
            let (low, high) = consumer
                .fetch_watermarks(&full, p, cfg.kafka.connect_timeout)
                .map_err(|e| err(&full, e.to_string()))?;
            if high > low {
                ends.push((p, high));
            }
        }
        table.set_caught_up(ends.is_empty());
        by_topic.insert(full, (logical, table.clone(), ends));
    }
    consumer.assign(&tpl).map_err(|e| err("-", e.to_string()))?;
    std::thread::Builder::new()
        .name("pp-results".into())
        .spawn(move || {
            let mut last_expiry = Instant::now();
            while !stop.load(Ordering::Acquire) {
                if last_expiry.elapsed() >= Duration::from_secs(60) {
                    let now = chrono::Utc::now().timestamp_millis();
                    by_topic.values().for_each(|(_, t, _)| t.expire(now));
                    last_expiry = Instant::now();
                }
                let Some(msg) = consumer.poll(Duration::from_millis(100)) else { continue };
                let msg = match msg {
                    Ok(m) => m,
                    Err(e) => {
                        metrics.kafka_errors.with_label_values(&["consume"]).inc();
                        tracing::warn!(error = %e, "result reader: read error");
                        continue;
                    }
                };
                let Some((logical, table, ends)) = by_topic.get_mut(msg.topic()) else { continue };
                let now = chrono::Utc::now().timestamp_millis();
                if let Some(key) = msg.key().and_then(|k| std::str::from_utf8(k).ok()) {
                    let value = msg.payload().map(|b| Value::new(b, msg.timestamp().to_millis().unwrap_or(now)));
                    table.apply(key, value, now);
                }
                if !ends.is_empty() {
                    let (p, o) = (msg.partition(), msg.offset());
                    ends.retain(|&(ep, end)| !(ep == p && o + 1 >= end));
                    if ends.is_empty() {
                        table.set_caught_up(true);
                        tracing::info!(topic = *logical, entries = table.len(), "result table caught up");
                    }
                }
            }
        })
        .map(Some)
        .map_err(|e| err("-", e.to_string()))
}
