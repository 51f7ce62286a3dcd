//! `pagepulse backfill pageviews --start YYYY-MM-DDTHH [--end YYYY-MM-DDTHH] [--wait]`: ask the
//! running instances for the page-view reports of a range of past hours (a backfill job, see
//! [`crate::pipelines::pageviews::backfill`]), and optionally follow it to its end.
//!
//! The job's document goes to `pageviews.jobs` first (so every instance knows it at once), then
//! the request to `pageviews.reports`; the first line printed is `job <id>`. With `--wait`, every
//! hour's state change is printed as the job's document changes on `pageviews.jobs`, and the exit
//! status is 0 when every hour is done or skipped, 1 when an hour failed or the wait timed out.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::clock::format_ms;
use crate::config::Config;
use crate::kafka::client;
use crate::pipelines::pageviews::backfill::job::{self, HourStatus, JobDoc, JobStatus, Request};
use crate::pipelines::pageviews::{JOBS, REPORTS};

/// Backfill commands.
#[derive(Debug, Subcommand)]
pub enum BackfillCommand {
    /// Compute `pageviews.top` for a range of past hours from the dump mirror
    /// (`pipelines.pageviews.dump_mirror`); hours already final are skipped.
    Pageviews(PageviewsArgs),
}

/// Arguments of `backfill pageviews`.
#[derive(Debug, Args)]
pub struct PageviewsArgs {
    /// First hour, `YYYY-MM-DDTHH` (its start, UTC).
    #[arg(long)]
    pub start: String,
    /// Last hour, inclusive (default: the start hour only).
    #[arg(long)]
    pub end: Option<String>,
    /// Follow the job until it ends; exit 1 if an hour failed.
    #[arg(long)]
    pub wait: bool,
    /// With `--wait`: give up waiting after this long (the job goes on), e.g. `30m`.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// Runs a backfill command.
pub fn run(cmd: &BackfillCommand, cfg: &Config) -> anyhow::Result<()> {
    let BackfillCommand::Pageviews(args) = cmd;
    let now = chrono::Utc::now().timestamp_millis();
    let request = Request {
        job: job::new_job_id(now),
        start: args.start.clone(),
        end: args.end.clone().unwrap_or_else(|| args.start.clone()),
        requested_at: format_ms(now),
    };
    let p = &cfg.pageviews;
    let hours = request.hours(p.backfill_max_hours).map_err(|e| anyhow::anyhow!("--{}: {}", e.field, e.message))?;
    let doc = JobDoc::new(&request, &hours, &p.dump_mirror, p.backfill_max_tries, now);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let producer: FutureProducer = client::producer(&cfg.kafka, &cfg.engine).set("linger.ms", "1").create()?;
        let timeout = cfg.kafka.connect_timeout.max(Duration::from_secs(10));
        let doc_bytes = serde_json::to_vec(&doc)?;
        let key = job::job_key(&request.job);
        let jobs = cfg.topic(JOBS);
        producer
            .send(FutureRecord::to(&jobs).key(&key).payload(&doc_bytes), timeout)
            .await
            .map_err(|(e, _)| anyhow::anyhow!("cannot write to {jobs}: {e}"))?;
        let reports = cfg.topic(REPORTS);
        let value = serde_json::to_vec(&request)?;
        producer
            .send(FutureRecord::to(&reports).key(&request.job).payload(&value), timeout)
            .await
            .map_err(|(e, _)| anyhow::anyhow!("cannot write to {reports}: {e}"))?;
        anyhow::Ok(())
    })?;
    println!("job {}", request.job);
    println!("hours {} ({} to {})", hours.len(), request.start, request.end);
    if args.wait {
        follow(cfg, &request.job, args.timeout)?;
    }
    Ok(())
}

/// Prints the job's hours as they change until it ends.
fn follow(cfg: &Config, job: &str, timeout: Duration) -> anyhow::Result<()> {
    let consumer: BaseConsumer = client::base(&cfg.kafka)
        .set("group.id", format!("pagepulse-backfill-{job}"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()?;
    let topic = cfg.topic(JOBS);
    let md = consumer.fetch_metadata(Some(&topic), cfg.kafka.connect_timeout)?;
    let mut tpl = TopicPartitionList::new();
    for p in md.topics().first().map(|t| t.partitions()).unwrap_or_default() {
        tpl.add_partition_offset(&topic, p.id(), Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let key = job::job_key(job);
    let deadline = Instant::now() + timeout;
    let mut shown: HashMap<String, (HourStatus, u32)> = HashMap::new();
    while Instant::now() < deadline {
        let Some(msg) = consumer.poll(Duration::from_millis(200)) else { continue };
        let msg = msg?;
        if msg.key() != Some(key.as_bytes()) {
            continue;
        }
        let Some(doc) = msg.payload().and_then(|v| serde_json::from_slice::<JobDoc>(v).ok()) else { continue };
        for h in &doc.hours {
            if shown.get(&h.hour) != Some(&(h.status, h.try_count)) {
                shown.insert(h.hour.clone(), (h.status, h.try_count));
                let status = serde_json::to_value(h.status)?;
                let error = h.error.as_deref().map(|e| format!(" error: {e}")).unwrap_or_default();
                println!(
                    "{} {} try {}/{} lines {}{error}",
                    h.hour,
                    status.as_str().unwrap_or_default(),
                    h.try_count,
                    h.max_tries,
                    h.lines
                );
            }
        }
        match doc.status {
            JobStatus::Done => {
                println!("job {job} done: {} done, {} skipped", doc.counts.done, doc.counts.skipped);
                return Ok(());
            }
            JobStatus::Failed => {
                anyhow::bail!("job {job} failed: {} of {} hours failed", doc.counts.failed, doc.hours.len())
            }
            _ => {}
        }
    }
    anyhow::bail!("job {job} did not end within {} (it goes on)", humantime::format_duration(timeout))
}
