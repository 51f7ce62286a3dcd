//! `pagepulse ingest pageviews FILE...`, `ingest blacklist FILE` and `ingest apps FILE.csv`: load
//! hourly pageview dumps, blacklist files and app catalogues into Kafka at full speed.
//!
//! Parsing, hours and records live in [`crate::ingest`]; this layer reads files, sends records
//! through a throughput-tuned producer (large lz4 batches, a bounded queue that makes reading
//! wait), shows progress and prints a summary. Malformed lines (catalogue rows) are counted and
//! the first [`MAX_REPORTED`] are printed with file name, line number and reason; they never stop
//! a run.
//! The exit status is non-zero only if a file cannot be read or nothing could be produced.
//!
//! # Measuring ingestion speed
//!
//! A realistic hour (6 million lines, 20 domains) against a local broker:
//!
//! ```text
//! cargo build --release
//! scripts/broker.sh 19392                  # prints the broker's PID
//! export PAGEPULSE_BROKERS=127.0.0.1:19392
//! pagepulse topics create                  # once topics/ defines pageviews and pageviews.blacklist
//! target/release/pagepulse demo pageviews-dump --out /tmp/pv --hours 1 --start 2026-11-23T10 \
//!     --lines 6000000 --domains 20 --gzip
//! /usr/bin/time -v target/release/pagepulse ingest pageviews /tmp/pv/*.gz
//! ```
//!
//! The summary line gives lines/s and MB/s (of the compressed file); `time -v` gives the peak RSS
//! ("Maximum resident set size"), bounded by the producer queue (see [`QUEUE_KBYTES`]).
//!
//! Measured on the 2-core development machine against tansu 0.6 (in-memory storage, topics
//! created with 4 and 1 partitions): the 6M-line hour (25.9 MB gzip, 166 MB text) generated in
//! 4.4 s; ingested in 4.7 s into empty topics (1.28M lines/s, 5.5 MB/s of gzip, peak RSS 42 MB)
//! and in 6.2 s on a second run into the now-full topic (0.97M lines/s, peak RSS 283 MB,
//! consistent with the producer queue filling to its bound); the same hour as plain text: 5.9 s
//! (1.02M lines/s, 28 MB/s). The ingest process used 95-98% of one core (user + system,
//! librdkafka's threads included) with the broker on the same 2 cores; where the bound lies
//! (this thread, compression, the broker) was not profiled.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rdkafka::client::ClientContext;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};

use crate::config::Config;
use crate::ingest::apps::{self, Layout, Rows};
use crate::ingest::dump::{self, LineError};
use crate::ingest::record::{ControlKind, CONTROL_KEY};
use crate::ingest::{record, APPS_TOPIC, BLACKLIST_TOPIC, PAGEVIEWS_TOPIC};
use crate::kafka::client;
use crate::pipelines::pageviews::hour_name;

/// How many malformed lines are printed (all are counted).
pub const MAX_REPORTED: u64 = 10;

/// Producer queue bound in KiB: reading waits when this much is queued unacknowledged, which
/// bounds memory (256 MiB is ~2 s of a fast broker's intake; more buys no speed).
pub const QUEUE_KBYTES: u64 = 256 * 1024;

/// How often the plain-text progress line is printed when stderr is not a terminal.
const TEXT_PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Lines between two progress updates (keeps the clock and atomics off the per-line path).
const TICK_LINES: u64 = 16 * 1024;

/// How long the final flush waits for acknowledgements (librdkafka's own per-message delivery
/// timeout, `message.timeout.ms`, is 5 minutes by default and fails stuck records before this).
const FLUSH_TIMEOUT: Duration = Duration::from_secs(600);

/// Ingestion commands.
#[derive(Debug, Subcommand)]
pub enum IngestCommand {
    /// Produce hourly pageview dumps (`pageviews-YYYYMMDD-HH0000[.gz]`) to the `pageviews` topic.
    Pageviews(PageviewsArgs),
    /// Produce a blacklist file (`domain title` lines) to the `pageviews.blacklist` topic.
    Blacklist(BlacklistArgs),
    /// Produce an App Store catalogue (Kaggle's `AppleStore.csv`, 17 or 16 columns) to the `apps`
    /// topic, one typed JSON record per app keyed by its id.
    Apps(AppsArgs),
}

/// Arguments of `ingest apps`.
#[derive(Debug, Args)]
pub struct AppsArgs {
    /// The catalogue, CSV with a header row: `AppleStore.csv` as Kaggle publishes it (a leading
    /// unnamed index column) or without the index column; gzip-compressed or plain.
    #[arg(value_name = "FILE.csv")]
    pub file: PathBuf,
    /// Remove the file's apps from the catalogue instead (tombstones).
    #[arg(long)]
    pub remove: bool,
    /// No progress display (the summary is still printed).
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// Arguments of `ingest pageviews`.
#[derive(Debug, Args)]
pub struct PageviewsArgs {
    /// Dump files, gzip-compressed or plain (told apart by content); lines
    /// `domain_code page_title count_views total_response_size`.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// The hour (UTC) every file covers, by its start, `YYYY-MM-DDTHH`; default: from each file
    /// name (`pageviews-YYYYMMDD-HH0000`, which names the hour's end, as Wikimedia's do).
    #[arg(long, value_parser = parse_hour_arg)]
    pub hour: Option<i64>,
    /// Count an hour again even if it is already final from a file (by default the same hour
    /// ingested twice is skipped and counted once).
    #[arg(long)]
    pub replace: bool,
    /// No progress display (the summary is still printed).
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// Arguments of `ingest blacklist`.
#[derive(Debug, Args)]
pub struct BlacklistArgs {
    /// Blacklist file, gzip-compressed or plain: `domain title` per line; blank lines and lines
    /// starting with `#` are skipped.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Lift the entries instead (tombstones).
    #[arg(long)]
    pub remove: bool,
    /// No progress display (the summary is still printed).
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

fn parse_hour_arg(s: &str) -> Result<i64, String> {
    dump::parse_hour(s).map_err(|e| e.to_string())
}

/// Runs an ingestion command.
pub fn run(cmd: &IngestCommand, cfg: &Config) -> anyhow::Result<()> {
    match cmd {
        IngestCommand::Pageviews(args) => pageviews(args, cfg),
        IngestCommand::Blacklist(args) => blacklist(args, cfg),
        IngestCommand::Apps(args) => apps(args, cfg),
    }
}

/// Delivery outcomes, counted by librdkafka's delivery callback on its own thread.
#[derive(Debug, Default)]
struct Deliveries {
    acked: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

struct Context(Arc<Deliveries>);

impl ClientContext for Context {}

impl ProducerContext for Context {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.0.acked.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.0.failed.fetch_add(1, Ordering::Relaxed);
                let mut first = self.0.first_error.lock().unwrap_or_else(|p| p.into_inner());
                first.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

/// A producer tuned for throughput, once the broker answered and `topic` exists.
fn producer(cfg: &Config, topic: &str, deliveries: Arc<Deliveries>) -> anyhow::Result<ThreadedProducer<Context>> {
    let admin = client::admin(&cfg.kafka)?;
    let md = client::metadata(&admin, &cfg.kafka)?;
    if !md.topics().iter().any(|t| t.name() == topic && !t.partitions().is_empty()) {
        anyhow::bail!("topic {topic} does not exist (create it with `pagepulse topics create`)");
    }
    let pc = client::bulk_producer(&cfg.kafka, QUEUE_KBYTES);
    Ok(pc.create_with_context(Context(deliveries))?)
}

/// Counters of a run.
#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    files: u64,
    lines: u64,
    sent: u64,
    malformed: u64,
    skipped: u64,
    bytes: u64,
}

/// What every ingestion shares: the producer, the counters, the progress display and the
/// reporting of malformed lines.
struct Session {
    producer: ThreadedProducer<Context>,
    deliveries: Arc<Deliveries>,
    topic: String,
    stats: Stats,
    started: Instant,
    bar: ProgressBar,
    text_progress: bool,
    last_text: Instant,
    unreadable: Vec<String>,
    /// Control records sent (acknowledged with the rest, not counted as produced lines).
    controls: u64,
}

impl Session {
    fn new(cfg: &Config, logical: &str, total_bytes: u64, quiet: bool) -> anyhow::Result<Self> {
        let topic = cfg.topic(logical);
        let deliveries = Arc::new(Deliveries::default());
        let producer = producer(cfg, &topic, deliveries.clone())?;
        let tty = std::io::stderr().is_terminal();
        let bar = if quiet || !tty {
            ProgressBar::hidden()
        } else {
            let bar = ProgressBar::with_draw_target(Some(total_bytes), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{wide_bar} {decimal_bytes}/{decimal_total_bytes} {decimal_bytes_per_sec} ETA {eta} {msg}",
                )
                .expect("the template is valid"),
            );
            bar
        };
        let now = Instant::now();
        Ok(Self {
            producer,
            deliveries,
            topic,
            stats: Stats::default(),
            started: now,
            bar,
            text_progress: !quiet && !tty,
            last_text: now,
            unreadable: Vec::new(),
            controls: 0,
        })
    }

    /// Partitions of the session's topic.
    fn partitions(&self, cfg: &Config) -> anyhow::Result<i32> {
        let md = self.producer.client().fetch_metadata(Some(&self.topic), cfg.kafka.connect_timeout)?;
        let n = md.topics().first().map_or(0, |t| t.partitions().len() as i32);
        anyhow::ensure!(n > 0, "topic {} has no partitions", self.topic);
        Ok(n)
    }

    /// Sends a file ingestion's control record to every one of `partitions`.
    fn control(
        &mut self,
        kind: ControlKind,
        hour: i64,
        batch: &str,
        replace: bool,
        partitions: i32,
    ) -> anyhow::Result<()> {
        let mut value = Vec::with_capacity(128);
        record::encode_control(kind, hour, batch, replace, &mut value);
        for p in 0..partitions {
            let rec =
                BaseRecord::<[u8], [u8]>::to(&self.topic).partition(p).key(CONTROL_KEY.as_bytes()).payload(&value);
            client::send_waiting(&self.producer, rec, || {})?;
            self.controls += 1;
        }
        Ok(())
    }

    /// Waits for every record sent so far; true if none was refused since `failed_before`.
    fn all_acknowledged(&self, failed_before: u64) -> bool {
        let flushed = self.producer.flush(FLUSH_TIMEOUT).is_ok();
        flushed && self.deliveries.failed.load(Ordering::Relaxed) == failed_before
    }

    /// Sends one record, waiting while the producer's queue is full.
    fn send(&mut self, key: &[u8], value: Option<&[u8]>) -> anyhow::Result<()> {
        let mut rec = BaseRecord::<[u8], [u8]>::to(&self.topic).key(key);
        if let Some(v) = value {
            rec = rec.payload(v);
        }
        client::send_waiting(&self.producer, rec, || {})?;
        self.stats.sent += 1;
        Ok(())
    }

    /// Counts a malformed line, printing the first [`MAX_REPORTED`].
    fn malformed(&mut self, path: &Path, line_no: u64, err: &LineError) {
        self.malformed_what(path, line_no, "line", err);
    }

    /// Counts a malformed `what` (a line, a row) starting at `line_no`, printing the first
    /// [`MAX_REPORTED`].
    fn malformed_what(&mut self, path: &Path, line_no: u64, what: &str, err: &dyn std::fmt::Display) {
        self.stats.malformed += 1;
        if self.stats.malformed <= MAX_REPORTED {
            self.bar.suspend(|| eprintln!("{}:{line_no}: malformed {what}: {err}", path.display()));
            if self.stats.malformed == MAX_REPORTED {
                self.bar.suspend(|| eprintln!("(further malformed {what}s are counted, not shown)"));
            }
        }
    }

    /// Updates the progress display; fails once it is clear that nothing can be produced.
    fn tick(&mut self, bytes: u64) -> anyhow::Result<()> {
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        self.bar.set_position(bytes);
        self.bar.set_message(format!("{:.0} lines/s", self.stats.lines as f64 / secs));
        if self.text_progress && self.last_text.elapsed() >= TEXT_PROGRESS_EVERY {
            self.last_text = Instant::now();
            eprintln!(
                "progress: {} lines, {} acknowledged, {:.1} MB read, {:.0} lines/s, {:.1} MB/s",
                self.stats.lines,
                self.deliveries.acked.load(Ordering::Relaxed),
                bytes as f64 / 1e6,
                self.stats.lines as f64 / secs,
                bytes as f64 / 1e6 / secs,
            );
        }
        self.check_deliveries()
    }

    /// Failing deliveries with none succeeding means the broker refuses us (a lost connection,
    /// an authorization problem): stop instead of reading on.
    fn check_deliveries(&self) -> anyhow::Result<()> {
        if self.deliveries.acked.load(Ordering::Relaxed) == 0 && self.deliveries.failed.load(Ordering::Relaxed) > 0 {
            let err = self.deliveries.first_error.lock().unwrap_or_else(|p| p.into_inner()).clone();
            anyhow::bail!("nothing could be produced to {}: {}", self.topic, err.unwrap_or_default());
        }
        Ok(())
    }

    /// Reads `path` line by line, handing each line (with its 1-based number) to `each`. A file
    /// that cannot be opened or read is reported and remembered; the run goes on with the next.
    fn read_file(
        &mut self,
        path: &Path,
        mut each: impl FnMut(&mut Self, u64, &[u8]) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let mut input = match dump::open(path) {
            Ok(input) => input,
            Err(e) => {
                self.unreadable(e.to_string());
                return Ok(());
            }
        };
        let done_before = self.stats.bytes;
        let mut buf = Vec::with_capacity(4096);
        let mut line_no = 0u64;
        loop {
            buf.clear();
            match input.reader.read_until(b'\n', &mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    self.unreadable(format!("{}: after line {line_no}: {e}", path.display()));
                    break;
                }
            }
            line_no += 1;
            self.stats.lines += 1;
            each(self, line_no, &buf)?;
            if line_no.is_multiple_of(TICK_LINES) {
                self.tick(done_before + input.read.load(Ordering::Relaxed))?;
            }
        }
        self.stats.files += 1;
        self.stats.bytes = done_before + input.read.load(Ordering::Relaxed);
        self.tick(self.stats.bytes)
    }

    fn unreadable(&mut self, msg: String) {
        self.bar.suspend(|| eprintln!("error: cannot read {msg}"));
        self.unreadable.push(msg);
    }

    /// Waits for every record's acknowledgement, prints the summary, and fails if a file could
    /// not be read or nothing could be produced.
    fn finish(self) -> anyhow::Result<()> {
        self.bar.finish_and_clear();
        // A flush timeout leaves records unacknowledged; the summary shows how many.
        let flushed = self.producer.flush(FLUSH_TIMEOUT);
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        let s = self.stats;
        let acked = self.deliveries.acked.load(Ordering::Relaxed).saturating_sub(self.controls);
        let failed = self.deliveries.failed.load(Ordering::Relaxed);
        let mut skipped =
            if s.skipped > 0 { format!(", {} skipped (blank or comment)", s.skipped) } else { String::new() };
        if self.controls > 0 {
            skipped.push_str(&format!(", {} control records (each hour's begin and end)", self.controls));
        }
        eprintln!(
            "{} files, {} lines read, {acked} records produced to {}, {} malformed{skipped}, {} bytes in {secs:.2} s: \
             {:.0} lines/s, {:.2} MB/s",
            s.files,
            s.lines,
            self.topic,
            s.malformed,
            s.bytes,
            s.lines as f64 / secs,
            s.bytes as f64 / 1e6 / secs,
        );
        let lost = s.sent.saturating_sub(acked);
        if lost > 0 {
            let err = self.deliveries.first_error.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let why = err.or_else(|| flushed.err().map(|e| e.to_string())).unwrap_or_default();
            eprintln!("warning: {lost} records were not acknowledged ({failed} failed): {why}");
        }
        if !self.unreadable.is_empty() {
            anyhow::bail!("{} of the files could not be read: {}", self.unreadable.len(), self.unreadable.join("; "));
        }
        if s.sent > 0 && acked == 0 {
            anyhow::bail!("nothing could be produced to {}", self.topic);
        }
        Ok(())
    }
}

/// Each file with the hour it covers, checked before anything is produced.
fn files_with_hours(files: &[PathBuf], hour: Option<i64>) -> anyhow::Result<Vec<(PathBuf, i64, u64)>> {
    files
        .iter()
        .map(|f| {
            let ts = hour
                .or_else(|| dump::hour_from_file_name(f))
                .ok_or_else(|| crate::ingest::Error::NoHour { path: f.display().to_string() })?;
            let size = std::fs::metadata(f)
                .map_err(|source| crate::ingest::Error::Io { path: f.display().to_string(), source })?
                .len();
            Ok((f.clone(), ts, size))
        })
        .collect()
}

/// Loads dump files. The files of each hour are one file ingestion (a batch): a `begin` control
/// record to every partition, the lines tagged with the batch, then, once every line is
/// acknowledged, an `end` (the hour is then final in every partition, whatever hours already
/// are), or an `abort` if a file could not be read to its end or records were refused.
fn pageviews(args: &PageviewsArgs, cfg: &Config) -> anyhow::Result<()> {
    let files = files_with_hours(&args.files, args.hour)?;
    let total = files.iter().map(|(_, _, size)| size).sum();
    let mut by_hour: BTreeMap<i64, Vec<PathBuf>> = BTreeMap::new();
    for (path, ts, _) in files {
        by_hour.entry(ts).or_default().push(path);
    }
    let mut session = Session::new(cfg, PAGEVIEWS_TOPIC, total, args.quiet)?;
    let partitions = session.partitions(cfg)?;
    let mut value = Vec::with_capacity(256);
    for (ts, paths) in &by_hour {
        // 64 random bits: unique among the ingestions of an hour, and short (every line carries it).
        let batch = format!("{:016x}", rand::random::<u64>());
        let (failed_before, unreadable_before) =
            (session.deliveries.failed.load(Ordering::Relaxed), session.unreadable.len());
        session.control(ControlKind::Begin, *ts, &batch, args.replace, partitions)?;
        for path in paths {
            session.read_file(path, |s, line_no, line| {
                match dump::parse_line(line) {
                    Ok(pv) => {
                        record::encode_pageview_of(&pv, *ts, &batch, &mut value);
                        s.send(pv.domain.as_bytes(), Some(&value))?;
                    }
                    Err(e) => s.malformed(path, line_no, &e),
                }
                Ok(())
            })?;
        }
        let complete = session.unreadable.len() == unreadable_before && session.all_acknowledged(failed_before);
        let kind = if complete { ControlKind::End } else { ControlKind::Abort };
        session.control(kind, *ts, &batch, false, partitions)?;
        if !complete {
            session.bar.suspend(|| {
                eprintln!("the hour {} was not ingested whole: given up (ingest it again)", hour_name(*ts))
            });
        }
    }
    session.finish()
}

fn blacklist(args: &BlacklistArgs, cfg: &Config) -> anyhow::Result<()> {
    let size = std::fs::metadata(&args.file)
        .map_err(|source| crate::ingest::Error::Io { path: args.file.display().to_string(), source })?
        .len();
    let mut session = Session::new(cfg, BLACKLIST_TOPIC, size, args.quiet)?;
    let (mut key, mut value) = (Vec::with_capacity(256), Vec::with_capacity(256));
    session.read_file(&args.file, |s, line_no, line| {
        match dump::parse_blacklist_line(line) {
            Ok(Some(entry)) => {
                record::encode_blacklist(&entry, args.remove, &mut key, &mut value);
                s.send(&key, (!args.remove).then_some(value.as_slice()))?;
            }
            Ok(None) => s.stats.skipped += 1,
            Err(e) => s.malformed(&args.file, line_no, &e),
        }
        Ok(())
    })?;
    session.finish()
}

/// The state of one catalogue load: rows being joined, the header's layout once read.
struct CatalogueLoad<'a> {
    path: &'a Path,
    remove: bool,
    rows: Rows,
    layout: Option<Layout>,
    value: Vec<u8>,
}

impl CatalogueLoad<'_> {
    /// Takes one line of the file.
    fn line(&mut self, s: &mut Session, line_no: u64, line: &[u8]) -> anyhow::Result<()> {
        match self.rows.push(line_no, line) {
            Some((start, row)) => self.row(s, start, row),
            None => Ok(()),
        }
    }

    /// Takes one row (starting on line `start`): the header first, which must be the data set's
    /// (nothing could be read right otherwise), then apps, each sent or reported.
    fn row(&mut self, s: &mut Session, start: u64, row: Result<Vec<String>, apps::RowError>) -> anyhow::Result<()> {
        let Some(layout) = &self.layout else {
            let layout = row
                .map_err(|e| apps::HeaderError::Malformed(e.to_string()))
                .and_then(|fields| Layout::from_header(&fields))
                .map_err(|e| {
                    anyhow::anyhow!("{}:{start}: {e}: not an App Store catalogue, nothing loaded", self.path.display())
                })?;
            self.layout = Some(layout);
            return Ok(());
        };
        match row.and_then(|fields| layout.app(&fields)) {
            Ok(app) => {
                apps::encode(&app, &mut self.value);
                s.send(app.id.as_bytes(), (!self.remove).then_some(self.value.as_slice()))?;
            }
            Err(e) => s.malformed_what(self.path, start, "row", &e),
        }
        Ok(())
    }
}

fn apps(args: &AppsArgs, cfg: &Config) -> anyhow::Result<()> {
    let size = std::fs::metadata(&args.file)
        .map_err(|source| crate::ingest::Error::Io { path: args.file.display().to_string(), source })?
        .len();
    let mut session = Session::new(cfg, APPS_TOPIC, size, args.quiet)?;
    let mut load =
        CatalogueLoad { path: &args.file, remove: args.remove, rows: Rows::new(), layout: None, value: Vec::new() };
    session.read_file(&args.file, |s, line_no, line| load.line(s, line_no, line))?;
    if let Some((start, e)) = load.rows.finish() {
        load.row(&mut session, start, Err(e))?;
    }
    if load.layout.is_none() && session.unreadable.is_empty() {
        anyhow::bail!("{}: {}", args.file.display(), apps::HeaderError::Empty);
    }
    session.finish()
}
