//! The backfill runner: one thread per instance that runs the jobs its `pageviews.reports` tasks
//! own. For each hour of a job it checks whether the hour is already final, downloads the hour's
//! dump from the mirror and produces its lines to `pageviews` **while it downloads** (a bounded
//! channel between the download and a blocking decoder: memory stays bounded whatever the file's
//! size), then ends the hour in every partition and waits until every partition says the hour is
//! final. A failed try (HTTP error, no data for `backfill_read_timeout`, a truncated or corrupt
//! gzip stream, records the broker refused, partitions not closing in time) is given up in every
//! partition (its partial counts dropped) and retried with a doubling backoff, up to
//! `backfill_max_tries` tries. At most `backfill_concurrency` hours download at once on the
//! instance (an hour whose lines are all in waits for its finals without holding a slot).
//!
//! Every state change is written to `pageviews.jobs` (the hour's document at once, the job's at
//! most every second and when it ends) and applied to this instance's table of that topic, so
//! `GET` answers it at once here and as soon as the other instances read it.
//!
//! A job is run by whichever instance owns its `pageviews.reports` partition: when the partition
//! moves (a crash, a rebalance), its task stops the job here ([`Run::cancel`]) and the next owner
//! restores it from its changelog and runs it again from the job's document: hours that ended
//! stay ended, an hour in progress starts again under a new batch id, which replaces the counts
//! of the interrupted one, so no hour is counted twice.

use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Message};
use tokio::sync::{mpsc, Semaphore};

use super::job::{close_prefix, closing, job_key, Closing, HourStatus, JobDoc, Request};
use crate::clock::{format_ms, Clock};
use crate::config::Config;
use crate::ingest::dump::{self, parse_line};
use crate::ingest::record::{encode_control, encode_pageview_of, ControlKind, CONTROL_KEY};
use crate::kafka::client;
use crate::metrics::Metrics;
use crate::ops::latest::{LatestTable, Value};
use crate::pipelines::pageviews::names::{INPUT, JOBS};
use crate::pipelines::pageviews::processor::CloseAck;

/// The producer queue of the runner (KiB): 64 MiB, a few seconds of lines.
const QUEUE_KBYTES: u64 = 64 * 1024;
/// Downloaded chunks in flight between the download and the decoder.
const CHUNKS_IN_FLIGHT: usize = 16;
/// How often waits re-check their condition.
const POLL: Duration = Duration::from_millis(20);
/// The longest backoff between tries.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How long a job waits for this instance's table of `pageviews.jobs` to catch up before it
/// decides what is already done.
const TABLE_WAIT: Duration = Duration::from_secs(60);
/// How often a running job's document is written.
const JOB_DOC_EVERY: Duration = Duration::from_secs(1);

/// Delivery outcomes of one group of records (a try's lines, or documents).
#[derive(Debug, Default)]
pub struct Deliveries {
    sent: AtomicU64,
    acked: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Deliveries {
    fn settled(&self) -> bool {
        self.acked.load(Ordering::Acquire) + self.failed.load(Ordering::Acquire) >= self.sent.load(Ordering::Acquire)
    }
}

/// Counts each record's delivery into the [`Deliveries`] it was sent with.
struct Context;

impl ClientContext for Context {}

impl ProducerContext for Context {
    type DeliveryOpaque = Arc<Deliveries>;

    fn delivery(&self, result: &DeliveryResult<'_>, d: Arc<Deliveries>) {
        match result {
            Ok(_) => {
                d.acked.fetch_add(1, Ordering::Release);
            }
            Err((e, m)) => {
                let mut first = d.first_error.lock().unwrap_or_else(|p| p.into_inner());
                first.get_or_insert_with(|| format!("{e} (partition {})", m.partition()));
                drop(first);
                d.failed.fetch_add(1, Ordering::Release);
            }
        }
    }
}

/// A job to run, handed over by the task that owns it.
pub struct Run {
    /// The request.
    pub request: Request,
    /// Its hours (starts, epoch ms).
    pub hours: Vec<i64>,
    /// Set when the owning task stops (its partition moved): the job stops here.
    pub cancel: Arc<AtomicBool>,
    /// Where the job's id goes when it ended (the task then forgets it).
    pub finished: Arc<Mutex<Vec<String>>>,
}

/// Why the runner could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The producer or the HTTP client could not be made.
    #[error("backfill runner: {0}")]
    Setup(String),
}

/// The handle tasks hand jobs to. Cheap to clone.
#[derive(Clone)]
pub struct Runner {
    tx: mpsc::UnboundedSender<Run>,
}

impl Runner {
    /// Starts the runner's thread. `table` is this instance's table of `pageviews.jobs`.
    pub fn start(cfg: &Config, metrics: Metrics, table: LatestTable, clock: Arc<dyn Clock>) -> Result<Self, Error> {
        let pc = client::bulk_producer(&cfg.kafka, QUEUE_KBYTES);
        let producer: ThreadedProducer<Context> =
            pc.create_with_context(Context).map_err(|e| Error::Setup(format!("producer: {e}")))?;
        let p = &cfg.pageviews;
        let http = reqwest::Client::builder()
            .connect_timeout(p.backfill_read_timeout)
            .user_agent(concat!("pagepulse/", env!("CARGO_PKG_VERSION"), " (backfill)"))
            .build()
            .map_err(|e| Error::Setup(format!("HTTP client: {e}")))?;
        let shared = Arc::new(Shared {
            mirror: p.dump_mirror.clone(),
            max_tries: p.backfill_max_tries,
            backoff: p.backfill_retry_backoff,
            read_timeout: p.backfill_read_timeout,
            close_timeout: p.backfill_close_timeout,
            input: cfg.topic(INPUT),
            jobs: cfg.topic(JOBS),
            kafka: cfg.kafka.clone(),
            partitions: Mutex::new(None),
            producer,
            http,
            table,
            slots: Arc::new(Semaphore::new(p.backfill_concurrency)),
            docs: Arc::new(Deliveries::default()),
            metrics,
            clock,
        });
        let (tx, mut rx) = mpsc::unbounded_channel::<Run>();
        std::thread::Builder::new()
            .name("backfill".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => return tracing::error!(error = %e, "backfill runner: no runtime"),
                };
                rt.block_on(async move {
                    while let Some(run) = rx.recv().await {
                        tokio::spawn(run_job(shared.clone(), run));
                    }
                });
            })
            .map_err(|e| Error::Setup(format!("thread: {e}")))?;
        Ok(Self { tx })
    }

    /// Runs `run` (in the background).
    pub fn run(&self, run: Run) {
        if self.tx.send(run).is_err() {
            tracing::error!("backfill runner stopped: a job cannot run");
        }
    }
}

/// What every job of the runner shares.
struct Shared {
    mirror: String,
    max_tries: u32,
    backoff: Duration,
    read_timeout: Duration,
    close_timeout: Duration,
    /// Full name of `pageviews`.
    input: String,
    /// Full name of `pageviews.jobs`.
    jobs: String,
    kafka: crate::config::KafkaConfig,
    /// Partitions of `pageviews` (read once).
    partitions: Mutex<Option<i32>>,
    producer: ThreadedProducer<Context>,
    http: reqwest::Client,
    table: LatestTable,
    slots: Arc<Semaphore>,
    docs: Arc<Deliveries>,
    metrics: Metrics,
    clock: Arc<dyn Clock>,
}

/// A failed try, or a stop.
enum TryError {
    /// The try failed for this reason.
    Failed(String),
    /// The job was stopped here.
    Cancelled,
}

impl Shared {
    fn now_ms(&self) -> i64 {
        self.clock.now().timestamp_millis()
    }

    /// Writes `value` under `key` to `pageviews.jobs`, and into this instance's table at once.
    fn publish(&self, key: &str, value: &[u8]) {
        let now = self.now_ms();
        self.table.apply(key, Some(Value::new(value, now)), now);
        self.docs.sent.fetch_add(1, Ordering::AcqRel);
        let rec = BaseRecord::with_opaque_to(&self.jobs, self.docs.clone()).key(key).payload(value);
        if let Err(e) = client::send_waiting(&self.producer, rec, || {}) {
            self.docs.failed.fetch_add(1, Ordering::AcqRel);
            tracing::warn!(error = %e, key, "a backfill document could not be written");
        }
    }

    /// The number of partitions of `pageviews`.
    async fn partitions(self: &Arc<Self>) -> Result<i32, String> {
        if let Some(n) = *self.partitions.lock().unwrap_or_else(|p| p.into_inner()) {
            return Ok(n);
        }
        let me = self.clone();
        let n = tokio::task::spawn_blocking(move || {
            let md = me.producer.client().fetch_metadata(Some(&me.input), me.kafka.connect_timeout);
            let md = md.map_err(|e| format!("cannot read the partitions of {}: {e}", me.input))?;
            let n = md.topics().first().map_or(0, |t| t.partitions().len() as i32);
            if n == 0 {
                return Err(format!("topic {} has no partitions", me.input));
            }
            Ok(n)
        })
        .await
        .map_err(|e| e.to_string())??;
        *self.partitions.lock().unwrap_or_else(|p| p.into_inner()) = Some(n);
        Ok(n)
    }

    /// The close acknowledgements of an hour, one slot per partition.
    fn acks(&self, hour_ms: i64, partitions: i32) -> Vec<Option<CloseAck>> {
        let prefix = close_prefix(hour_ms);
        (0..partitions)
            .map(|p| {
                let v = self.table.get(&format!("{prefix}{p}"))?;
                serde_json::from_slice(&v.bytes).ok()
            })
            .collect()
    }

    /// Sends a control record to every partition of `pageviews`, counted in `d`.
    fn control(
        &self,
        kind: ControlKind,
        hour_ms: i64,
        batch: &str,
        partitions: i32,
        d: &Arc<Deliveries>,
    ) -> Result<(), String> {
        let mut value = Vec::with_capacity(128);
        encode_control(kind, hour_ms, batch, false, &mut value);
        for p in 0..partitions {
            d.sent.fetch_add(1, Ordering::AcqRel);
            let rec = BaseRecord::with_opaque_to(&self.input, d.clone()).partition(p).key(CONTROL_KEY).payload(&value);
            client::send_waiting(&self.producer, rec, || {}).map_err(|e| {
                d.failed.fetch_add(1, Ordering::AcqRel);
                format!("cannot produce to {}: {e}", self.input)
            })?;
        }
        Ok(())
    }

    /// Waits until every record counted in `d` is acknowledged or refused; fails if any was
    /// refused.
    async fn settle(&self, d: &Deliveries, what: &str) -> Result<(), String> {
        let deadline = Instant::now() + self.kafka.connect_timeout.max(Duration::from_secs(300));
        while !d.settled() {
            if Instant::now() > deadline {
                return Err(format!("{what}: the broker did not acknowledge every record in time"));
            }
            tokio::time::sleep(POLL).await;
        }
        let failed = d.failed.load(Ordering::Acquire);
        if failed > 0 {
            let first = d.first_error.lock().unwrap_or_else(|p| p.into_inner()).clone().unwrap_or_default();
            return Err(format!("{what}: {failed} records were refused by the broker: {first}"));
        }
        Ok(())
    }
}

/// A job's document, shared by its hours, written at most every [`JOB_DOC_EVERY`].
struct JobState {
    doc: Mutex<JobDoc>,
    dirty: AtomicBool,
}

impl JobState {
    /// Applies `change` to hour `i`, writes the hour's document, and marks the job's dirty.
    fn update(&self, s: &Shared, i: usize, change: impl FnOnce(&mut super::job::HourDoc)) -> super::job::HourDoc {
        let mut doc = self.doc.lock().unwrap_or_else(|p| p.into_inner());
        change(&mut doc.hours[i]);
        let hour = doc.hours[i].clone();
        drop(doc);
        let key = format!("hour/{}", hour.hour);
        s.publish(&key, &serde_json::to_vec(&hour).expect("plain struct"));
        self.dirty.store(true, Ordering::Release);
        hour
    }

    /// Writes the job's document if it changed since it was last written.
    fn write(&self, s: &Shared) -> JobDoc {
        let mut doc = self.doc.lock().unwrap_or_else(|p| p.into_inner());
        doc.summarize();
        doc.updated_at = format_ms(s.now_ms());
        let snapshot = doc.clone();
        drop(doc);
        if self.dirty.swap(false, Ordering::AcqRel) {
            s.publish(&job_key(&snapshot.job), &serde_json::to_vec(&snapshot).expect("plain struct"));
        }
        snapshot
    }
}

/// Runs one job to its end, or until it is cancelled.
async fn run_job(s: Arc<Shared>, run: Run) {
    let job = run.request.job.clone();
    let waited = Instant::now();
    while !s.table.caught_up() && waited.elapsed() < TABLE_WAIT && !run.cancel.load(Ordering::Acquire) {
        tokio::time::sleep(POLL).await;
    }
    let now = s.now_ms();
    let known = s.table.get(&job_key(&job)).and_then(|v| serde_json::from_slice::<JobDoc>(&v.bytes).ok());
    let mut doc = match known {
        Some(d) if d.hours.len() == run.hours.len() => d,
        _ => JobDoc::new(&run.request, &run.hours, &s.mirror, s.max_tries, now),
    };
    if doc.ended() {
        run.finished.lock().unwrap_or_else(|p| p.into_inner()).push(job);
        return;
    }
    // Hours interrupted by a stop start again: the try in progress did not end.
    for h in &mut doc.hours {
        if matches!(h.status, HourStatus::Downloading | HourStatus::Ingesting) {
            h.status = HourStatus::Pending;
        }
    }
    tracing::info!(job, hours = run.hours.len(), "backfill job running");
    s.metrics.backfill_jobs_running.inc();
    let state = Arc::new(JobState { doc: Mutex::new(doc), dirty: AtomicBool::new(true) });
    state.write(&s);
    let mut hours = tokio::task::JoinSet::new();
    for (i, hour_ms) in run.hours.iter().copied().enumerate() {
        let ended = state.doc.lock().unwrap_or_else(|p| p.into_inner()).hours[i].status.ended();
        if ended {
            continue;
        }
        let (s, state, cancel) = (s.clone(), state.clone(), run.cancel.clone());
        hours.spawn(async move {
            if !cancel.load(Ordering::Acquire) {
                run_hour(&s, &state, i, hour_ms, &cancel).await;
            }
        });
    }
    let mut tick = tokio::time::interval(JOB_DOC_EVERY);
    loop {
        tokio::select! {
            next = hours.join_next() => if next.is_none() { break },
            _ = tick.tick() => { state.write(&s); }
        }
    }
    s.metrics.backfill_jobs_running.dec();
    if run.cancel.load(Ordering::Acquire) {
        tracing::info!(job, "backfill job stopped here: its partition moved");
        return;
    }
    let doc = state.write(&s);
    tracing::info!(job, status = ?doc.status, done = doc.counts.done, skipped = doc.counts.skipped, failed = doc.counts.failed, "backfill job ended");
    run.finished.lock().unwrap_or_else(|p| p.into_inner()).push(job);
}

/// Runs hour `i` of a job through its tries.
async fn run_hour(s: &Arc<Shared>, state: &JobState, i: usize, hour_ms: i64, cancel: &AtomicBool) {
    let partitions = match s.partitions().await {
        Ok(n) => n,
        Err(e) => {
            state.update(s, i, |h| {
                h.status = HourStatus::Failed;
                h.error = Some(e);
            });
            s.metrics.backfill_hours.with_label_values(&["failed"]).inc();
            return;
        }
    };
    if let Closing::Final { .. } = closing(&s.acks(hour_ms, partitions), None) {
        let now = format_ms(s.now_ms());
        state.update(s, i, |h| {
            h.status = HourStatus::Skipped;
            h.finished_at = Some(now);
        });
        s.metrics.backfill_hours.with_label_values(&["skipped"]).inc();
        return;
    }
    // This instance's mirror, whatever the job's creator had configured.
    let url = super::job::dump_url(&s.mirror, hour_ms);
    let (job, first_try) = {
        let doc = state.doc.lock().unwrap_or_else(|p| p.into_inner());
        (doc.job.clone(), doc.hours[i].try_count + 1)
    };
    let max_tries = s.max_tries.max(first_try);
    for t in first_try..=max_tries {
        // A download slot, held while the hour downloads and produces, not while the partitions
        // close it: the next hour's download overlaps with that.
        let Ok(slot) = s.slots.clone().acquire_owned().await else { return };
        if cancel.load(Ordering::Acquire) {
            return;
        }
        let now = format_ms(s.now_ms());
        let hour_doc = state.update(s, i, |h| {
            h.status = HourStatus::Downloading;
            h.url = super::job::shown_url(&url);
            h.try_count = t;
            h.max_tries = max_tries;
            h.lines = 0;
            h.malformed = 0;
            h.ingested_at = None;
            h.started_at.get_or_insert(now);
        });
        // 64 random bits: unique among the ingestions of an hour, and short (every record of the
        // hour carries it).
        let batch = format!("{:016x}", rand::random::<u64>());
        let outcome = one_try(s, state, i, hour_ms, &url, &batch, partitions, cancel, slot).await;
        let error = match outcome {
            Ok(skipped) => {
                let now = format_ms(s.now_ms());
                let status = if skipped { HourStatus::Skipped } else { HourStatus::Done };
                state.update(s, i, |h| {
                    h.status = status;
                    h.error = None;
                    h.finished_at = Some(now);
                });
                s.metrics.backfill_tries.with_label_values(&["ok"]).inc();
                s.metrics.backfill_hours.with_label_values(&[if skipped { "skipped" } else { "done" }]).inc();
                return;
            }
            Err(TryError::Cancelled) => return,
            Err(TryError::Failed(e)) => e,
        };
        s.metrics.backfill_tries.with_label_values(&["failed"]).inc();
        tracing::warn!(job, hour = hour_doc.hour, try_count = t, max_tries, error, "backfill try failed");
        // Its partial counts are dropped everywhere; a later try replaces them anyway.
        let d = Arc::new(Deliveries::default());
        let _ = s.control(ControlKind::Abort, hour_ms, &batch, partitions, &d);
        let last = t == max_tries;
        let now = format_ms(s.now_ms());
        state.update(s, i, |h| {
            h.status = if last { HourStatus::Failed } else { HourStatus::Pending };
            h.error = Some(error);
            if last {
                h.finished_at = Some(now);
            }
        });
        if last {
            s.metrics.backfill_hours.with_label_values(&["failed"]).inc();
            return;
        }
        let backoff = s.backoff.saturating_mul(1 << (t - 1).min(16)).min(MAX_BACKOFF);
        let until = Instant::now() + backoff;
        while Instant::now() < until {
            if cancel.load(Ordering::Acquire) {
                return;
            }
            tokio::time::sleep(POLL.min(backoff)).await;
        }
    }
}

/// One try of an hour: begin, download and produce, end, wait for every partition to close the
/// hour. `Ok(true)` if the hour turned out final already (another ingestion made it so).
#[allow(clippy::too_many_arguments)]
async fn one_try(
    s: &Arc<Shared>,
    state: &JobState,
    i: usize,
    hour_ms: i64,
    url: &str,
    batch: &str,
    partitions: i32,
    cancel: &AtomicBool,
    slot: tokio::sync::OwnedSemaphorePermit,
) -> Result<bool, TryError> {
    let failed = TryError::Failed;
    // Errors name the address without its credentials, if it has any.
    let shown = super::job::shown_url(url);
    let lines_d = Arc::new(Deliveries::default());
    s.control(ControlKind::Begin, hour_ms, batch, partitions, &lines_d).map_err(failed)?;
    let resp = tokio::time::timeout(s.read_timeout, s.http.get(url).send())
        .await
        .map_err(|_| failed(format!("no answer from {shown} within {}", humantime::format_duration(s.read_timeout))))?
        .map_err(|e| failed(format!("cannot download {shown}: {}", e.without_url())))?;
    if !resp.status().is_success() {
        return Err(failed(format!("HTTP {} from {shown}", resp.status())));
    }
    let (tx, rx) = mpsc::channel::<Result<bytes::Bytes, String>>(CHUNKS_IN_FLIGHT);
    let stop = Arc::new(AtomicBool::new(false));
    let decoder = {
        let (s, batch, d, stop) = (s.clone(), batch.to_string(), lines_d.clone(), stop.clone());
        tokio::task::spawn_blocking(move || produce_lines(&s, ChannelReader::new(rx), hour_ms, &batch, &d, &stop))
    };
    let mut resp = resp;
    let mut download_error = None;
    loop {
        if cancel.load(Ordering::Acquire) {
            stop.store(true, Ordering::Release);
            break;
        }
        match tokio::time::timeout(s.read_timeout, resp.chunk()).await {
            Ok(Ok(Some(chunk))) => {
                if tx.send(Ok(chunk)).await.is_err() {
                    break; // the decoder stopped (its error says why)
                }
            }
            Ok(Ok(None)) => break,
            Ok(Err(e)) => {
                download_error = Some(format!("the download of {shown} broke off: {}", e.without_url()));
                break;
            }
            Err(_) => {
                download_error =
                    Some(format!("no data from {shown} for {}", humantime::format_duration(s.read_timeout)));
                break;
            }
        }
    }
    if let Some(e) = &download_error {
        let _ = tx.send(Err(e.clone())).await;
    }
    drop(tx);
    let produced = decoder.await.map_err(|e| failed(format!("the decoder stopped: {e}")))?;
    if cancel.load(Ordering::Acquire) {
        return Err(TryError::Cancelled);
    }
    let (lines, malformed) = produced.map_err(|e| failed(download_error.unwrap_or(e)))?;
    s.settle(&lines_d, "the hour's lines").await.map_err(failed)?;
    s.control(ControlKind::End, hour_ms, batch, partitions, &lines_d).map_err(failed)?;
    s.settle(&lines_d, "the hour's end").await.map_err(failed)?;
    drop(slot);
    s.metrics.backfill_lines.inc_by(lines);
    let now = format_ms(s.now_ms());
    state.update(s, i, |h| {
        h.status = HourStatus::Ingesting;
        h.lines = lines;
        h.malformed = malformed;
        h.ingested_at = Some(now);
    });
    let deadline = Instant::now() + s.close_timeout;
    let mut contended = false;
    loop {
        if cancel.load(Ordering::Acquire) {
            return Err(TryError::Cancelled);
        }
        let acks = s.acks(hour_ms, partitions);
        match closing(&acks, (!contended).then_some(batch)) {
            Closing::Final { records, by_batch } => {
                if by_batch == partitions as usize && records != lines {
                    tracing::warn!(
                        batch,
                        lines,
                        records,
                        "the partitions counted another number of records than were produced"
                    );
                }
                return Ok(by_batch == 0);
            }
            // Another ingestion of the hour owns it somewhere: wait for it to end the hour.
            Closing::Contended => contended = true,
            Closing::Open => {}
        }
        if Instant::now() > deadline {
            return Err(failed(format!(
                "the partitions did not close the hour within {} (pipelines.pageviews.backfill_close_timeout)",
                humantime::format_duration(s.close_timeout)
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Decodes the dump coming through `reader` (gzip or text) and produces each valid line to
/// `pageviews` as a record of `batch`. Returns (lines produced, malformed lines), or why the
/// stream could not be read to its end.
fn produce_lines(
    s: &Shared,
    reader: ChannelReader,
    hour_ms: i64,
    batch: &str,
    d: &Arc<Deliveries>,
    stop: &AtomicBool,
) -> Result<(u64, u64), String> {
    let (mut input, _gzip) = dump::decode(reader).map_err(|e| format!("cannot read the dump: {e}"))?;
    let (mut buf, mut value) = (Vec::with_capacity(4096), Vec::with_capacity(256));
    let (mut line_no, mut lines, mut malformed) = (0u64, 0u64, 0u64);
    loop {
        buf.clear();
        match std::io::BufRead::read_until(&mut input, b'\n', &mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => return Err(format!("the dump is truncated or corrupt after line {line_no}: {e}")),
        }
        line_no += 1;
        if line_no.is_multiple_of(65_536) && stop.load(Ordering::Acquire) {
            return Err("stopped".into());
        }
        match parse_line(&buf) {
            Ok(pv) => {
                encode_pageview_of(&pv, hour_ms, batch, &mut value);
                d.sent.fetch_add(1, Ordering::AcqRel);
                let rec = BaseRecord::with_opaque_to(&s.input, d.clone()).key(pv.domain).payload(&value);
                client::send_waiting(&s.producer, rec, || {}).map_err(|e| {
                    d.failed.fetch_add(1, Ordering::AcqRel);
                    format!("cannot produce to {}: {e}", s.input)
                })?;
                lines += 1;
            }
            Err(_) => malformed += 1,
        }
    }
    if lines == 0 && line_no > 0 {
        return Err(format!("none of the {line_no} lines is a pageview dump line"));
    }
    Ok((lines, malformed))
}

/// A blocking reader of the chunks the download sends; an `Err` chunk is a read error, the end
/// of the channel the end of the stream.
struct ChannelReader {
    rx: mpsc::Receiver<Result<bytes::Bytes, String>>,
    current: bytes::Bytes,
}

impl ChannelReader {
    fn new(rx: mpsc::Receiver<Result<bytes::Bytes, String>>) -> Self {
        Self { rx, current: bytes::Bytes::new() }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        bytes::Buf::advance(&mut self.current, n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_channel_reader_reads_chunks_in_order_and_reports_errors() {
        let (tx, rx) = mpsc::channel(4);
        tx.try_send(Ok(bytes::Bytes::from_static(b"en A 1 0\nen "))).expect("room");
        tx.try_send(Ok(bytes::Bytes::from_static(b"B 2 0\n"))).expect("room");
        drop(tx);
        let mut text = String::new();
        ChannelReader::new(rx).read_to_string(&mut text).expect("read");
        assert_eq!(text, "en A 1 0\nen B 2 0\n");
        let (tx, rx) = mpsc::channel(4);
        tx.try_send(Ok(bytes::Bytes::from_static(b"en A"))).expect("room");
        tx.try_send(Err("broke off".into())).expect("room");
        let mut text = String::new();
        let e = ChannelReader::new(rx).read_to_string(&mut text).expect_err("error");
        assert!(e.to_string().contains("broke off"));
    }
}
