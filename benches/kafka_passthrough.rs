//! The ceiling of any Kafka-to-Kafka pipeline on this machine: read every record of a topic and
//! write it unchanged to another, with pagepulse's own consumer and producer settings, counting a
//! record done when the broker acknowledges its copy. No decoding, no processing, no actors.
//!
//!   cargo bench --bench kafka_passthrough -- BROKERS IN_TOPIC OUT_TOPIC N
//!
//! `scripts/bench-posts.sh` runs it in the same run as the pipeline, next to the raw read rate.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pagepulse::config::Config;
use pagepulse::kafka::client;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

struct Acks(Arc<AtomicU64>);

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        assert!(r.is_ok(), "delivery failed: {:?}", r.as_ref().err().map(|e| e.0.to_string()));
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let [brokers, input, output, n] = &args[..] else {
        eprintln!("usage: kafka_passthrough BROKERS IN_TOPIC OUT_TOPIC N");
        std::process::exit(2);
    };
    let n: u64 = n.parse().expect("N is a number");
    let mut cfg = Config::default();
    cfg.kafka.brokers = brokers.clone();
    let mut cc = client::consumer(&cfg.kafka);
    cc.set("group.id", "passthrough").set("enable.auto.commit", "false").set("statistics.interval.ms", "0");
    let consumer: BaseConsumer = cc.create().expect("consumer");
    let md = consumer.fetch_metadata(Some(input), Duration::from_secs(10)).expect("metadata");
    let mut tpl = TopicPartitionList::new();
    for p in 0..md.topics()[0].partitions().len() as i32 {
        tpl.add_partition_offset(input, p, Offset::Beginning).expect("partition");
    }
    consumer.assign(&tpl).expect("assign");
    let acked = Arc::new(AtomicU64::new(0));
    let mut pc = client::producer(&cfg.kafka, &cfg.engine);
    pc.set("statistics.interval.ms", "0");
    let producer: ThreadedProducer<Acks> = pc.create_with_context(Acks(acked.clone())).expect("producer");
    let mut read = 0u64;
    let mut first: Option<Instant> = None;
    while read < n {
        let Some(msg) = consumer.poll(Duration::from_millis(100)) else { continue };
        let msg = msg.expect("consume");
        first.get_or_insert_with(Instant::now);
        let rec = BaseRecord::to(output).payload(msg.payload().unwrap_or_default()).key(msg.key().unwrap_or_default());
        client::send_waiting(&producer, rec, || {}).expect("produce");
        read += 1;
    }
    producer.flush(Duration::from_secs(60)).expect("flush");
    let secs = first.map(|f| f.elapsed().as_secs_f64()).unwrap_or(0.0);
    assert_eq!(acked.load(Ordering::Relaxed), n, "every copy acknowledged");
    println!("passthrough {n} records in {secs:.3} s: {:.0} records/s", n as f64 / secs);
}
