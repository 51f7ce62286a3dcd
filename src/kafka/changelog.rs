//! Changelog topics on Kafka: creating them, and fencing and reading one partition for a restore
//! (the [`StateBackend`] of production; the protocol is in [`crate::engine::state`]).

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

use super::client;
use crate::config::Config;
use crate::engine::state::{self, Error, Replay, Restored, StateBackend};

/// Longest a restore waits for its fence to be acknowledged.
const FENCE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a restore reads without receiving a record before it gives up (and is retried).
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads and fences changelog partitions on the cluster of `cfg`.
pub struct KafkaBackend {
    cfg: Config,
    producer: ThreadedProducer<rdkafka::producer::DefaultProducerContext>,
    cancel: Option<crate::engine::Shutdown>,
}

impl KafkaBackend {
    /// A backend for `cfg`'s cluster.
    pub fn new(cfg: &Config) -> Result<Self, client::Error> {
        let mut pc = client::producer_base(&cfg.kafka);
        pc.set("enable.idempotence", "true").set("acks", "all").set("linger.ms", "0");
        let producer = pc.create().map_err(client::Error::Client)?;
        Ok(Self { cfg: cfg.clone(), producer, cancel: None })
    }

    /// Restores stop retrying once `cancel` triggers (the engine is stopping).
    pub fn with_cancel(mut self, cancel: crate::engine::Shutdown) -> Self {
        self.cancel = Some(cancel);
        self
    }

    fn err(&self, topic: &str, partition: i32, reason: impl ToString) -> Error {
        Error { topic: topic.to_string(), partition, reason: reason.to_string() }
    }

    /// Appends the fence of `owner` and waits for its acknowledgement.
    fn fence(&self, full: &str, partition: i32, owner: u64) -> Result<(), Error> {
        let rec = state::fence_record("", partition, owner);
        let key = rec.key.unwrap_or_default();
        let value = rec.value.unwrap_or_default();
        let headers = rdkafka::message::OwnedHeaders::new()
            .insert(rdkafka::message::Header { key: state::OWNER_HEADER, value: Some(&owner.to_le_bytes()[..]) });
        self.producer
            .send(
                BaseRecord::<[u8], [u8]>::to(full)
                    .partition(partition)
                    .key(&key[..])
                    .payload(&value[..])
                    .headers(headers),
            )
            .map_err(|(e, _)| self.err(full, partition, format!("cannot send the fence: {e}")))?;
        self.producer
            .flush(FENCE_TIMEOUT)
            .map_err(|e| self.err(full, partition, format!("fence not acknowledged: {e}")))
    }

    fn consumer(&self) -> Result<BaseConsumer, Error> {
        let mut c = client::base(&self.cfg.kafka);
        c.set("group.id", format!("{}-restore", self.cfg.kafka.group_id))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set("isolation.level", "read_committed")
            .set("fetch.wait.max.ms", "10")
            .set("fetch.queue.backoff.ms", "10")
            .set("queued.min.messages", "200000")
            // Changelog values are few and large (chunks of state): fetch big.
            .set("max.partition.fetch.bytes", "33554432")
            .set("fetch.max.bytes", "67108864")
            .set("receive.message.max.bytes", "100000000");
        c.create().map_err(|e| Error { topic: String::new(), partition: -1, reason: e.to_string() })
    }
}

impl StateBackend for KafkaBackend {
    fn cancelled(&self) -> bool {
        self.cancel.as_ref().is_some_and(|c| c.reason().is_some())
    }

    fn restore(&self, topic: &'static str, partition: i32, owner: u64) -> Result<Restored, Error> {
        let full = self.cfg.topic(topic);
        self.fence(&full, partition, owner)?;
        let consumer = self.consumer()?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&full, partition, Offset::Beginning).map_err(|e| self.err(&full, partition, e))?;
        consumer.assign(&tpl).map_err(|e| self.err(&full, partition, e))?;
        let mut replay = Replay::new();
        let mut last_record = Instant::now();
        let mut seen_fence = false;
        while !seen_fence {
            let Some(msg) = consumer.poll(Duration::from_millis(100)) else {
                if last_record.elapsed() > IDLE_TIMEOUT {
                    return Err(self.err(&full, partition, format!("no record for {IDLE_TIMEOUT:?} before the fence")));
                }
                continue;
            };
            let msg = msg.map_err(|e| self.err(&full, partition, e))?;
            last_record = Instant::now();
            let owner_of = msg.headers().and_then(|h| {
                h.iter()
                    .find(|h| h.key == state::OWNER_HEADER)
                    .and_then(|h| h.value)
                    .and_then(|v| v.try_into().ok())
                    .map(u64::from_le_bytes)
            });
            let key = msg.key().unwrap_or_default();
            replay.apply(key, msg.payload(), owner_of);
            // Our own fence ends the read: no end offset needed (tansu 0.6's high watermark lags).
            seen_fence = key == state::FENCE_KEY && owner_of == Some(owner);
        }
        Ok(replay.finish())
    }
}

/// Creates the changelog topics that do not exist yet: compacted, each with as many partitions
/// as its store's input topic. `changelogs` are (logical changelog, logical input) pairs.
pub async fn ensure(cfg: &Config, changelogs: &[(&str, &str)]) -> Result<Vec<String>, super::admin::Error> {
    let listed = super::admin::list(cfg)?;
    let mut defs = Vec::new();
    for (changelog, input) in changelogs {
        let full = cfg.topic(changelog);
        let input_full = cfg.topic(input);
        let Some(inp) = listed.iter().find(|t| t.name == input_full) else {
            return Err(super::admin::Error::Missing(vec![input_full]));
        };
        match listed.iter().find(|t| t.name == full) {
            Some(t) if t.partitions != inp.partitions => {
                return Err(super::admin::Error::Create {
                    topic: full,
                    reason: format!(
                        "it has {} partitions but its input {} has {}: delete it (the state is rebuilt from the input only if the input is kept)",
                        t.partitions, input_full, inp.partitions
                    ),
                })
            }
            Some(_) => {}
            None => defs.push(super::topics::TopicDef::changelog(changelog, inp.partitions as i32)),
        }
    }
    let missing: Vec<String> = defs.iter().map(|d| cfg.topic(&d.name)).collect();
    if !defs.is_empty() {
        for c in super::admin::create(cfg, &defs).await? {
            tracing::info!(created = ?c, "changelog topic");
        }
    }
    Ok(missing)
}
