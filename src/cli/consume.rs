//! `pagepulse consume TOPIC`: print a topic's records, or measure how fast it can be read.

use std::io::Write;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use crate::config::Config;
use crate::kafka::client;

/// How records are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// The value only, one per line.
    Value,
    /// A JSON object per record: partition, offset, key, value, headers.
    Json,
    /// Nothing per record; a rate summary at the end (for measuring raw read speed).
    Quiet,
}

/// Arguments of `consume`.
#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// Logical topic name (the configured prefix is added), e.g. posts.analysis.
    pub topic: String,
    /// Start at the beginning of every partition instead of the end.
    #[arg(long, short = 'b')]
    pub from_beginning: bool,
    /// Stop after this many records.
    #[arg(long, short = 'n')]
    pub max: Option<u64>,
    /// Stop after no record arrived for this long (e.g. "5s"); default: follow forever.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub idle_timeout: Option<Duration>,
    /// Output format.
    #[arg(long, short = 'f', value_enum, default_value = "value")]
    pub format: Format,
}

fn text(b: Option<&[u8]>) -> serde_json::Value {
    match b {
        None => serde_json::Value::Null,
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => serde_json::Value::String(s.to_string()),
            Err(_) => serde_json::Value::String(String::from_utf8_lossy(b).into_owned()),
        },
    }
}

/// Reads the topic with a plain `BaseConsumer` assigned to every partition (no group, nothing
/// committed): the simplest and fastest way librdkafka reads.
pub fn run(args: &ConsumeArgs, cfg: &Config) -> anyhow::Result<()> {
    let full = cfg.topic(&args.topic);
    // The same consumer settings as `pagepulse run` (including `kafka.consumer` overrides), so
    // `-f quiet` measures the raw read rate like for like; but no group, nothing committed.
    let mut cc = client::consumer(&cfg.kafka);
    cc.set("group.id", format!("{}-consume", cfg.kafka.group_id))
        .set("enable.auto.commit", "false")
        .set("statistics.interval.ms", "0");
    let consumer: BaseConsumer = cc.create()?;
    let md = consumer.fetch_metadata(Some(&full), cfg.kafka.connect_timeout).map_err(|e| {
        anyhow::anyhow!("cannot reach Kafka at {} (kafka.brokers / PAGEPULSE_BROKERS): {e}", cfg.kafka.brokers)
    })?;
    let parts = md.topics().first().map(|t| t.partitions().len()).unwrap_or(0);
    if parts == 0 {
        anyhow::bail!("topic {full} does not exist (create it with `pagepulse topics create`)");
    }
    let mut tpl = TopicPartitionList::new();
    let start = if args.from_beginning { Offset::Beginning } else { Offset::End };
    for p in 0..parts as i32 {
        tpl.add_partition_offset(&full, p, start)?;
    }
    consumer.assign(&tpl)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let (mut n, mut bytes) = (0u64, 0u64);
    let mut first: Option<Instant> = None;
    let mut last_seen = Instant::now();
    while args.max.is_none_or(|m| n < m) {
        let Some(res) = consumer.poll(Duration::from_millis(100)) else {
            if args.idle_timeout.is_some_and(|t| last_seen.elapsed() >= t) {
                break;
            }
            continue;
        };
        let msg = res?;
        last_seen = Instant::now();
        first.get_or_insert(last_seen);
        n += 1;
        bytes += msg.payload_len() as u64;
        match args.format {
            Format::Quiet => {}
            Format::Value => {
                out.write_all(msg.payload().unwrap_or(b"null"))?;
                out.write_all(b"\n")?;
            }
            Format::Json => {
                let headers: serde_json::Map<String, serde_json::Value> = msg
                    .headers()
                    .map(|h| h.iter().map(|h| (h.key.to_string(), text(h.value))).collect())
                    .unwrap_or_default();
                let line = serde_json::json!({
                    "partition": msg.partition(), "offset": msg.offset(),
                    "timestamp": msg.timestamp().to_millis(),
                    "key": text(msg.key()), "value": text(msg.payload()), "headers": headers,
                });
                writeln!(out, "{line}")?;
            }
        }
    }
    out.flush()?;
    if args.format == Format::Quiet {
        let secs = first.map(|f| last_seen.duration_since(f).as_secs_f64()).unwrap_or(0.0).max(1e-9);
        eprintln!(
            "read {n} records ({:.1} MB) in {secs:.3} s: {:.0} records/s, {:.1} MB/s",
            bytes as f64 / 1e6,
            n as f64 / secs,
            bytes as f64 / 1e6 / secs
        );
    }
    Ok(())
}
