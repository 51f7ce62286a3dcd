//! The task of a `pageviews.reports` partition: it owns the backfill jobs whose requests are in
//! its partition. A new request (and, after a restart or a rebalance, every restored one) is
//! handed to the [`Runner`]; the task keeps the requests of jobs that have not ended in its
//! durable state (one changelog entry per job), forgets a job once the runner says it ended, and
//! stops its jobs on this instance when it is dropped (its partition moved or the engine stops).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::job::Request;
use super::runner::{Run, Runner};
use crate::engine::state::{Change, Entries};
use crate::engine::{Emit, Processor, RawRecord, RecordMeta, RejectClass, Rejection};
use crate::pipelines::decode::utf8_value;

/// Most jobs one partition holds at once; a request beyond is refused (dead letter).
pub const MAX_JOBS: usize = 1000;

/// The task of one `pageviews.reports` partition. See the module docs.
pub struct ReportsProcessor {
    runner: Runner,
    max_hours: usize,
    /// Requests of the jobs not ended, by id.
    jobs: BTreeMap<String, Vec<u8>>,
    /// Changes for the changelog since the last flush.
    changes: Vec<Change>,
    /// Set on drop: the runner stops this task's jobs.
    cancel: Arc<AtomicBool>,
    /// Jobs the runner ended.
    finished: Arc<Mutex<Vec<String>>>,
}

impl ReportsProcessor {
    /// A task handing its jobs to `runner`; requests over `max_hours` hours are refused.
    pub fn new(runner: Runner, max_hours: usize) -> Self {
        Self {
            runner,
            max_hours,
            jobs: BTreeMap::new(),
            changes: Vec::new(),
            cancel: Arc::new(AtomicBool::new(false)),
            finished: Arc::default(),
        }
    }

    fn start(&self, request: Request) {
        let Ok(hours) = request.hours(usize::MAX) else { return };
        self.runner.run(Run { request, hours, cancel: self.cancel.clone(), finished: self.finished.clone() });
    }
}

impl Drop for ReportsProcessor {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Release);
    }
}

/// Decodes and checks a request.
pub fn decode_request(rec: &RawRecord, max_hours: usize) -> Result<Request, Rejection> {
    let text = utf8_value(rec)?;
    let req: Request = serde_json::from_str(text).map_err(|e| {
        Rejection::new(
            RejectClass::InvalidJson,
            format!("not a backfill request {{\"job\", \"start\", \"end\", \"requested_at\"}}: {e}"),
        )
    })?;
    req.hours(max_hours).map_err(|e| Rejection::new(RejectClass::InvalidValue, e.to_string()))?;
    if rec.key.as_deref() != Some(req.job.as_bytes()) {
        return Err(Rejection::new(RejectClass::InvalidValue, "the key must be the job id (field `job`)"));
    }
    Ok(req)
}

impl Processor for ReportsProcessor {
    type Input<'a> = Request;
    type Part = ();

    fn decode(&self, _topic: &'static str, rec: &RawRecord) -> Result<Request, Rejection> {
        let req = decode_request(rec, self.max_hours)?;
        if self.jobs.len() >= MAX_JOBS && !self.jobs.contains_key(&req.job) {
            return Err(Rejection::new(
                RejectClass::TooLarge,
                format!("{MAX_JOBS} backfill jobs are already in progress in this partition"),
            ));
        }
        Ok(req)
    }

    fn process(&mut self, req: Request, _meta: &RecordMeta, _out: &mut Emit<()>) {
        if self.jobs.contains_key(&req.job) {
            return; // the same request again (a retried write): the job runs once
        }
        let value = serde_json::to_vec(&req).expect("plain struct");
        self.changes.push((req.job.clone().into_bytes(), Some(value.clone())));
        self.jobs.insert(req.job.clone(), value);
        self.start(req);
    }

    fn tick_interval(&self) -> Option<Duration> {
        Some(Duration::from_secs(1))
    }

    fn on_tick(&mut self, _now: DateTime<Utc>, _out: &mut Emit<()>) {
        let ended = std::mem::take(&mut *self.finished.lock().unwrap_or_else(|p| p.into_inner()));
        for job in ended {
            if self.jobs.remove(&job).is_some() {
                self.changes.push((job.into_bytes(), None));
            }
        }
    }

    fn take_changes(&mut self, out: &mut Vec<Change>) {
        out.append(&mut self.changes);
    }

    fn restore(&mut self, entries: Entries, _out: &mut Emit<()>) {
        for (key, value) in entries {
            let rec = RawRecord { key: Some(key), value: Some(value.clone()), offset: 0, timestamp_ms: None };
            match decode_request(&rec, usize::MAX) {
                Ok(req) => {
                    self.jobs.insert(req.job.clone(), value);
                    self.start(req);
                }
                Err(e) => tracing::warn!(error = %e.message, "a stored backfill request does not decode: skipped"),
            }
        }
        if !self.jobs.is_empty() {
            tracing::info!(jobs = self.jobs.len(), "backfill jobs restored: resuming");
        }
    }
}
