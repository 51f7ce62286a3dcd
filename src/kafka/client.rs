//! librdkafka client settings shared by the consumer, the producer and the admin client.

use std::time::Duration;

use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::ToBytes;
use rdkafka::metadata::Metadata;
use rdkafka::producer::{BaseRecord, ProducerContext, ThreadedProducer};

use crate::config::{EngineConfig, KafkaConfig};

/// Errors of reaching the broker.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The broker did not answer in time or refused the connection.
    #[error("cannot reach Kafka at {brokers} within {timeout:?} (set kafka.brokers or PAGEPULSE_BROKERS): {source}")]
    Unreachable {
        /// The bootstrap servers tried.
        brokers: String,
        /// How long we waited.
        timeout: Duration,
        /// librdkafka's error.
        source: KafkaError,
    },
    /// A client could not be created (a bad property in `kafka.consumer` / `kafka.producer`).
    #[error("invalid Kafka client settings: {0}")]
    Client(#[source] KafkaError),
}

/// Result of client operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn ms(d: Duration) -> String {
    d.as_millis().to_string()
}

/// Settings every client shares.
pub fn base(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers).set("client.id", &cfg.client_id);
    c
}

/// Settings every producer shares: [`base`]'s, and Kafka's default partitioner for keyed
/// records (`murmur2_random`, see [`super::partitioner`]), so that lookups find a key where
/// pagepulse wrote it. An operator's `kafka.producer` properties may still override it.
pub fn producer_base(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = base(cfg);
    c.set("partitioner", super::partitioner::LIBRDKAFKA_PARTITIONER);
    c
}

/// Consumer settings: at-least-once (offsets stored by pagepulse only after outputs are
/// acknowledged, then auto-committed), reading from the earliest offset when the group has none.
pub fn consumer(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = base(cfg);
    c.set("group.id", &cfg.group_id)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", ms(cfg.commit_interval))
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("session.timeout.ms", ms(cfg.session_timeout))
        .set("heartbeat.interval.ms", ms(cfg.session_timeout / 4))
        .set("statistics.interval.ms", ms(cfg.statistics_interval))
        // Measured here (shared/BROKER.md): a short fetch-queue backoff and a deep prefetch queue
        // keep the consumer from idling between fetches.
        .set("fetch.queue.backoff.ms", "10")
        .set("queued.min.messages", "200000")
        // Kafka answers a fetch as soon as it has data; tansu 0.6 holds every fetch for the full
        // wait, which capped every reader at ~150k records/s with the 500 ms default. On Kafka a
        // short wait only means more frequent fetches while idle.
        .set("fetch.wait.max.ms", "10");
    for (k, v) in &cfg.consumer {
        c.set(k, v);
    }
    c
}

/// Producer settings: idempotent, acknowledged by all in-sync replicas, batching briefly, with
/// the local queue bounded so a slow broker makes tasks wait instead of memory grow.
pub fn producer(cfg: &KafkaConfig, engine: &EngineConfig) -> ClientConfig {
    let mut c = producer_base(cfg);
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", (engine.producer_queue_bytes.get() / 1024).max(1).to_string())
        .set("statistics.interval.ms", ms(cfg.statistics_interval));
    for (k, v) in &cfg.producer {
        c.set(k, v);
    }
    c
}

/// Consumer settings of exactly-once mode, applied over [`consumer`] (and over the user's
/// `kafka.consumer` properties, which must not undo them): offsets are committed only inside the
/// tasks' transactions, never by the consumer, and only committed records are read (which also
/// makes the committed-offset lookup at assignment wait for transactions still committing).
pub fn exactly_once_consumer(c: &mut ClientConfig) {
    c.set("enable.auto.commit", "false").set("isolation.level", "read_committed");
}

/// Settings of one task's transactional producer (exactly-once mode): [`producer`]'s, plus the
/// task's `transactional_id`. Statistics are off: a process has one such producer per task, and
/// the shared producer's statistics already keep the broker state current.
pub fn transactional_producer(cfg: &KafkaConfig, engine: &EngineConfig, transactional_id: &str) -> ClientConfig {
    let mut c = producer(cfg, engine);
    c.set("transactional.id", transactional_id).set("statistics.interval.ms", "0");
    c
}

/// An admin client.
pub fn admin(cfg: &KafkaConfig) -> Result<AdminClient<DefaultClientContext>> {
    base(cfg).create().map_err(Error::Client)
}

/// Fetches cluster metadata, failing with a clear error when the broker does not answer within
/// `kafka.connect_timeout`.
pub fn metadata(admin: &AdminClient<DefaultClientContext>, cfg: &KafkaConfig) -> Result<Metadata> {
    admin.inner().fetch_metadata(None, cfg.connect_timeout).map_err(|source| Error::Unreachable {
        brokers: cfg.brokers.clone(),
        timeout: cfg.connect_timeout,
        source,
    })
}

/// Settings of a producer that loads files (`ingest`, backfill jobs): idempotent, so a retried
/// batch is never written twice and every line arrives exactly once; big lz4-compressed batches
/// (batch.size rather than the message count ends a batch of ~100-byte records; librdkafka's and
/// Kafka's default message limit is 1 MB); a queue of at most `queue_kbytes`. The operator's
/// `kafka.producer` properties win, as for every other producer.
pub fn bulk_producer(cfg: &KafkaConfig, queue_kbytes: u64) -> ClientConfig {
    let mut pc = producer_base(cfg);
    pc.set("enable.idempotence", "true")
        .set("compression.type", "lz4")
        .set("linger.ms", "50")
        .set("batch.num.messages", "100000")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", queue_kbytes.to_string());
    for (k, v) in &cfg.producer {
        pc.set(k, v);
    }
    pc
}

/// Sends `record`, waiting 1 ms at a time while the producer's queue is full: the queue's bound
/// is the backpressure, and the broker frees room as it acknowledges. `on_full` runs before each
/// wait (to count it). Any other error is returned with the record dropped.
pub fn send_waiting<'a, C, K, P>(
    producer: &ThreadedProducer<C>,
    mut record: BaseRecord<'a, K, P, C::DeliveryOpaque>,
    mut on_full: impl FnMut(),
) -> Result<(), KafkaError>
where
    C: ProducerContext + 'static,
    K: ToBytes + ?Sized,
    P: ToBytes + ?Sized,
{
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                on_full();
                record = back;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// The high watermark of `topic`/`partition` as librdkafka last learnt it from a fetch answer
/// (`rd_kafka_get_watermark_offsets`: no network call, unlike `fetch_watermarks`). `None` while
/// unknown. rust-rdkafka 0.39 does not wrap this call.
pub fn cached_high_watermark<C: rdkafka::consumer::ConsumerContext>(
    consumer: &rdkafka::consumer::BaseConsumer<C>,
    topic: &str,
    partition: i32,
) -> Option<i64> {
    use rdkafka::consumer::Consumer;
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1_i64, -1_i64);
    // SAFETY: the client handle lives as long as `consumer` is borrowed, `topic` is a valid
    // NUL-terminated string for the call, and librdkafka only writes the two integers.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0).then_some(high)
}
