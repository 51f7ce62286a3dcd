//! What a backfill job is, as plain data and rules: the request on `pageviews.reports`, the job
//! and hour documents on `pageviews.jobs`, the dump URL of an hour, and when an hour is final
//! everywhere (from the partitions' close acknowledgements). No I/O here.

use serde::{Deserialize, Serialize};

use crate::clock::format_ms;
use crate::ingest::dump::{self, file_name_for_hour};
use crate::ops::hourly::HOUR_MS;
use crate::pipelines::pageviews::processor::{hour_name, CloseAck};

/// Longest job id accepted.
pub const MAX_JOB_ID: usize = 64;

/// A backfill request: the value of a `pageviews.reports` record (key = `job`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// The job id: `[A-Za-z0-9_-]`, at most [`MAX_JOB_ID`] bytes.
    pub job: String,
    /// First hour, `YYYY-MM-DDTHH` (its start, UTC).
    pub start: String,
    /// Last hour, inclusive, `YYYY-MM-DDTHH`.
    pub end: String,
    /// When it was asked for, RFC 3339.
    pub requested_at: String,
}

/// Why a request is refused, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {message}")]
pub struct Invalid {
    /// The field at fault.
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

fn invalid(field: &'static str, message: impl Into<String>) -> Invalid {
    Invalid { field, message: message.into() }
}

/// Parses an hour `YYYY-MM-DDTHH` into its start in epoch ms, naming `field` when it is not one.
pub fn parse_hour(field: &'static str, s: &str) -> Result<i64, Invalid> {
    dump::parse_hour(s).map_err(|_| {
        invalid(
            field,
            format!("`{s}` is not an hour: expected `YYYY-MM-DDTHH` (UTC, the hour's start), e.g. `2020-01-01T15`"),
        )
    })
}

/// Checks a job id.
pub fn check_job_id(job: &str) -> Result<(), Invalid> {
    if job.is_empty()
        || job.len() > MAX_JOB_ID
        || !job.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(invalid("job", format!("must be 1 to {MAX_JOB_ID} characters of A-Z, a-z, 0-9, `-` or `_`")));
    }
    Ok(())
}

impl Request {
    /// The hours of the request (starts, epoch ms, ascending), checked: `end` not before
    /// `start`, at most `max_hours` of them.
    pub fn hours(&self, max_hours: usize) -> Result<Vec<i64>, Invalid> {
        check_job_id(&self.job)?;
        let start = parse_hour("start", &self.start)?;
        let end = parse_hour("end", &self.end)?;
        if end < start {
            return Err(invalid("end", format!("`{}` is before start `{}`", self.end, self.start)));
        }
        let n = ((end - start) / HOUR_MS + 1) as usize;
        if n > max_hours {
            return Err(invalid(
                "end",
                format!("the range has {n} hours, more than {max_hours} (pipelines.pageviews.backfill_max_hours)"),
            ));
        }
        Ok((0..n as i64).map(|i| start + i * HOUR_MS).collect())
    }
}

/// A new job id: the time and 48 random bits, sortable by creation.
pub fn new_job_id(now_ms: i64) -> String {
    let t = chrono::DateTime::from_timestamp_millis(now_ms).unwrap_or_default();
    format!("{}-{:012x}", t.format("%Y%m%dT%H%M%S"), rand::random::<u64>() & 0xffff_ffff_ffff)
}

/// Where the dump of the hour starting at `hour_ms` is, under `mirror` (the Wikimedia layout; the
/// time in the file name is the END of the hour).
pub fn dump_url(mirror: &str, hour_ms: i64) -> String {
    let end = chrono::DateTime::from_timestamp_millis(hour_ms + HOUR_MS).unwrap_or_default();
    format!(
        "{}/{}/{}/{}",
        mirror.trim_end_matches('/'),
        end.format("%Y"),
        end.format("%Y-%m"),
        file_name_for_hour(hour_ms, true)
    )
}

/// `url` as shown in documents, errors and logs: without credentials (`user:password@`), which a
/// mirror's address may carry for basic authentication.
pub fn shown_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let host_end = rest.find('/').unwrap_or(rest.len());
    match rest[..host_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

/// The state of one hour of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HourStatus {
    /// Not started.
    Pending,
    /// Its dump is being downloaded, and its lines produced as they come.
    Downloading,
    /// Downloaded: the last records are acknowledged and the partitions close the hour.
    Ingesting,
    /// Final in every partition, from this job.
    Done,
    /// Already final before this job reached it: not downloaded.
    Skipped,
    /// Failed after every try.
    Failed,
}

impl HourStatus {
    /// True once nothing more happens to the hour in this job.
    pub fn ended(self) -> bool {
        matches!(self, HourStatus::Done | HourStatus::Skipped | HourStatus::Failed)
    }
}

/// An hour's document: under `hour/<hour>` on `pageviews.jobs` (the hour's latest state, whichever
/// job) and in its job's document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HourDoc {
    /// The hour, `YYYY-MM-DDTHH` (its start, UTC).
    pub hour: String,
    /// The job that handled it last.
    pub job: Option<String>,
    /// Its state.
    pub status: HourStatus,
    /// Tries so far.
    pub try_count: u32,
    /// Tries allowed.
    pub max_tries: u32,
    /// Why the last try failed.
    pub error: Option<String>,
    /// Lines produced by the try that succeeded (or the current one).
    pub lines: u64,
    /// Malformed lines skipped by that try.
    pub malformed: u64,
    /// The dump's URL.
    pub url: String,
    /// When its first try started.
    pub started_at: Option<String>,
    /// When its last line was produced and acknowledged.
    pub ingested_at: Option<String>,
    /// When it ended.
    pub finished_at: Option<String>,
    /// Where its results are read: every domain's top articles of the hour
    /// (`/api/v1/pageviews/hours/{hour}/top`, JSON or CSV).
    pub results: String,
}

impl HourDoc {
    /// A pending hour of `job`.
    pub fn pending(job: &str, hour_ms: i64, url: String, max_tries: u32) -> Self {
        let hour = hour_name(hour_ms);
        Self {
            results: format!("/api/v1/pageviews/hours/{hour}/top"),
            hour,
            job: Some(job.to_string()),
            status: HourStatus::Pending,
            try_count: 0,
            max_tries,
            error: None,
            lines: 0,
            malformed: 0,
            url,
            started_at: None,
            ingested_at: None,
            finished_at: None,
        }
    }
}

/// A job's state as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// No hour started yet.
    Pending,
    /// Hours are being worked on.
    Running,
    /// Every hour is done or skipped.
    Done,
    /// Every hour ended and at least one failed.
    Failed,
}

/// Hours by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Counts {
    /// Not started.
    pub pending: u32,
    /// Downloading.
    pub downloading: u32,
    /// Ingesting.
    pub ingesting: u32,
    /// Done.
    pub done: u32,
    /// Skipped (already final).
    pub skipped: u32,
    /// Failed.
    pub failed: u32,
}

/// A job's document: under `job/<id>` on `pageviews.jobs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobDoc {
    /// The job id.
    pub job: String,
    /// First hour.
    pub start: String,
    /// Last hour, inclusive.
    pub end: String,
    /// Its state.
    pub status: JobStatus,
    /// When it was asked for.
    pub created_at: String,
    /// When this document was written.
    pub updated_at: String,
    /// Hours by state.
    pub counts: Counts,
    /// Every hour, in order.
    pub hours: Vec<HourDoc>,
}

impl JobDoc {
    /// A new job: every hour pending.
    pub fn new(req: &Request, hours: &[i64], mirror: &str, max_tries: u32, now_ms: i64) -> Self {
        let hours =
            hours.iter().map(|h| HourDoc::pending(&req.job, *h, shown_url(&dump_url(mirror, *h)), max_tries)).collect();
        let mut doc = Self {
            job: req.job.clone(),
            start: req.start.clone(),
            end: req.end.clone(),
            status: JobStatus::Pending,
            created_at: req.requested_at.clone(),
            updated_at: format_ms(now_ms),
            counts: Counts::default(),
            hours,
        };
        doc.summarize();
        doc
    }

    /// Recomputes `counts` and `status` from the hours.
    pub fn summarize(&mut self) {
        let mut c = Counts::default();
        for h in &self.hours {
            *match h.status {
                HourStatus::Pending => &mut c.pending,
                HourStatus::Downloading => &mut c.downloading,
                HourStatus::Ingesting => &mut c.ingesting,
                HourStatus::Done => &mut c.done,
                HourStatus::Skipped => &mut c.skipped,
                HourStatus::Failed => &mut c.failed,
            } += 1;
        }
        let total = self.hours.len() as u32;
        self.status = if c.done + c.skipped == total {
            JobStatus::Done
        } else if c.done + c.skipped + c.failed == total {
            JobStatus::Failed
        } else if c.pending == total {
            JobStatus::Pending
        } else {
            JobStatus::Running
        };
        self.counts = c;
    }

    /// True once every hour ended.
    pub fn ended(&self) -> bool {
        matches!(self.status, JobStatus::Done | JobStatus::Failed)
    }
}

/// Key of a job's document.
pub fn job_key(job: &str) -> String {
    format!("job/{job}")
}

/// Key of an hour's document.
pub fn hour_key(hour_ms: i64) -> String {
    format!("hour/{}", hour_name(hour_ms))
}

/// Key prefix of the close acknowledgements of an hour (`close/<hour>/<partition>`).
pub fn close_prefix(hour_ms: i64) -> String {
    format!("close/{}/", hour_name(hour_ms))
}

/// What the partitions' acknowledgements say about an hour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closing {
    /// Not every partition has said it is final.
    Open,
    /// Every partition holds it final; `records` counted by those that made it final with
    /// `batch` (the batch asked about).
    Final {
        /// Records of `batch` counted where `batch` made the hour final.
        records: u64,
        /// Partitions where `batch` made the hour final (the others had it final already).
        by_batch: usize,
    },
    /// Every partition answered `batch`, and some had another batch in progress (a concurrent
    /// ingestion of the same hour owns it there).
    Contended,
}

/// Reads the acknowledgements of an hour, one per partition (`acks[p]`, `None`: none yet), as
/// they stand after `batch` ended (`batch`: `None` to ask only whether the hour is final).
pub fn closing(acks: &[Option<CloseAck>], batch: Option<&str>) -> Closing {
    let mut all_final = true;
    let (mut records, mut by_batch, mut answered) = (0, 0, 0);
    let mut contended = false;
    for ack in acks {
        let Some(a) = ack else {
            all_final = false;
            continue;
        };
        let ours = batch.is_some_and(|b| a.batch == b);
        answered += usize::from(ours);
        match a.outcome.as_str() {
            "final" if ours => {
                records += a.records;
                by_batch += 1;
            }
            "final" | "skipped" => {}
            _ => {
                all_final = false;
                contended |= ours;
            }
        }
    }
    if all_final && !acks.is_empty() {
        Closing::Final { records, by_batch }
    } else if contended && answered == acks.len() {
        Closing::Contended
    } else {
        Closing::Open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(start: &str, end: &str) -> Request {
        Request { job: "j1".into(), start: start.into(), end: end.into(), requested_at: format_ms(0) }
    }

    #[test]
    fn a_range_is_its_hours_inclusive_and_bounded() {
        let h = req("2020-01-01T15", "2020-01-01T19").hours(744).expect("valid");
        assert_eq!(h.len(), 5);
        assert_eq!(hour_name(h[0]), "2020-01-01T15");
        assert_eq!(hour_name(h[4]), "2020-01-01T19");
        let across = req("2020-12-31T23", "2021-01-01T00").hours(744).expect("valid");
        assert_eq!(across.iter().map(|h| hour_name(*h)).collect::<Vec<_>>(), ["2020-12-31T23", "2021-01-01T00"]);
        assert_eq!(req("2020-01-01T15", "2020-01-01T14").hours(744).expect_err("reversed").field, "end");
        assert_eq!(req("2020-01-01T15", "2020-01-02T15").hours(24).expect_err("long").field, "end");
        assert_eq!(req("2020-01-01 15", "2020-01-01T15").hours(24).expect_err("format").field, "start");
        assert_eq!(req("2020-01-01T15", "2020-13-01T15").hours(24).expect_err("month").field, "end");
        let bad_id = Request { job: "a/b".into(), ..req("2020-01-01T15", "2020-01-01T15") };
        assert_eq!(bad_id.hours(24).expect_err("id").field, "job");
    }

    #[test]
    fn the_url_names_the_end_of_the_hour_as_wikimedia_does() {
        let h = parse_hour("start", "2020-01-01T14").expect("hour");
        assert_eq!(
            dump_url("https://dumps.wikimedia.org/other/pageviews/", h),
            "https://dumps.wikimedia.org/other/pageviews/2020/2020-01/pageviews-20200101-150000.gz"
        );
        // The last hour of a year is in the next year's folder: its file ends at midnight.
        let h = parse_hour("start", "2020-12-31T23").expect("hour");
        assert_eq!(dump_url("http://m", h), "http://m/2021/2021-01/pageviews-20210101-000000.gz");
    }

    #[test]
    fn credentials_in_the_mirror_address_are_never_shown() {
        let h = parse_hour("start", "2020-01-01T14").expect("hour");
        let url = dump_url("https://bot:s3cret@mirror.example/pv", h);
        assert_eq!(shown_url(&url), "https://***@mirror.example/pv/2020/2020-01/pageviews-20200101-150000.gz");
        assert_eq!(shown_url("http://m/a@b"), "http://m/a@b", "an @ after the host is not a credential");
        let doc = JobDoc::new(&req("2020-01-01T14", "2020-01-01T14"), &[h], "https://bot:s3cret@mirror.example", 3, 0);
        assert!(!serde_json::to_string(&doc).expect("json").contains("s3cret"));
    }

    #[test]
    fn a_job_summarizes_its_hours() {
        let r = req("2020-01-01T15", "2020-01-01T17");
        let hours = r.hours(10).expect("valid");
        let mut doc = JobDoc::new(&r, &hours, "http://m", 3, 0);
        assert_eq!((doc.status, doc.counts.pending), (JobStatus::Pending, 3));
        doc.hours[0].status = HourStatus::Downloading;
        doc.summarize();
        assert_eq!(doc.status, JobStatus::Running);
        doc.hours[0].status = HourStatus::Done;
        doc.hours[1].status = HourStatus::Skipped;
        doc.hours[2].status = HourStatus::Failed;
        doc.summarize();
        assert_eq!((doc.status, doc.counts.done, doc.counts.skipped, doc.counts.failed), (JobStatus::Failed, 1, 1, 1));
        doc.hours[2].status = HourStatus::Done;
        doc.summarize();
        assert!(doc.ended() && doc.status == JobStatus::Done);
    }

    fn ack(batch: &str, outcome: &str, records: u64) -> Option<CloseAck> {
        Some(CloseAck {
            hour: "2020-01-01T14".into(),
            partition: 0,
            batch: batch.into(),
            outcome: outcome.into(),
            domains: 1,
            records,
        })
    }

    #[test]
    fn an_hour_is_final_when_every_partition_says_so() {
        assert_eq!(closing(&[ack("b", "final", 3), None], Some("b")), Closing::Open);
        assert_eq!(
            closing(&[ack("b", "final", 3), ack("b", "final", 4)], Some("b")),
            Closing::Final { records: 7, by_batch: 2 }
        );
        // One partition had it final already (an earlier batch ended there before a crash).
        assert_eq!(
            closing(&[ack("b", "final", 3), ack("a", "final", 4)], Some("b")),
            Closing::Final { records: 3, by_batch: 1 }
        );
        assert_eq!(
            closing(&[ack("b", "final", 3), ack("b", "skipped", 0)], Some("b")),
            Closing::Final { records: 3, by_batch: 1 }
        );
        // Another batch owns the hour in partition 1.
        assert_eq!(closing(&[ack("b", "final", 3), ack("b", "stale", 0)], Some("b")), Closing::Contended);
        assert_eq!(
            closing(&[ack("a", "final", 3), ack("a", "final", 1)], None),
            Closing::Final { records: 0, by_batch: 0 }
        );
        assert_eq!(closing(&[], None), Closing::Open);
    }
}
