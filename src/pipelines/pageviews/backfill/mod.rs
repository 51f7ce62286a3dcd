//! Backfill jobs: page-view reports for any past range of hours, computed from the hourly dumps
//! of a mirror (the original page-view service's use: ask for a range, follow each hour's state,
//! read the results).
//!
//! - A request on `pageviews.reports` (key = job id; from `POST /api/v1/pageviews/reports` or
//!   `pagepulse backfill pageviews`) is owned by the task of its partition
//!   ([`processor::ReportsProcessor`]), durable in its changelog until the job ends.
//! - The [`runner::Runner`] downloads each hour and streams it into `pageviews` as a file
//!   ingestion (a batch with begin and end control records; see [`crate::ingest::record`]); the
//!   pageviews tasks make the hour final when its end is in and acknowledge it on
//!   `pageviews.jobs`.
//! - The jobs' and hours' states are documents on the compacted `pageviews.jobs`
//!   ([`job::JobDoc`], [`job::HourDoc`]), which every instance reads whole: any instance answers
//!   `GET /api/v1/pageviews/reports/{job}` and `GET /api/v1/pageviews/hours/{hour}`.

pub mod job;
pub mod processor;
pub mod runner;

use std::sync::Arc;

use self::processor::ReportsProcessor;
use self::runner::Runner;
use super::names::{BACKFILL_PIPELINE, JOBS, REPORTS};
use crate::engine::PipelineSpec;
use crate::pipelines::{Built, Error, Pipeline, Wiring};

/// The backfill pipeline's line in the [registry](crate::pipelines::REGISTRY): it runs wherever
/// page views run, with their section's settings.
pub const ENTRY: Pipeline = Pipeline {
    name: BACKFILL_PIPELINE,
    enabled: |cfg| cfg.pageviews.enabled,
    inputs: &[REPORTS],
    outputs: &[JOBS],
    store_input: Some(REPORTS),
    served: &[JOBS],
    exports: &[],
    export: None,
    build,
};

/// The runner (one thread), and a task per `pageviews.reports` partition handing it the jobs.
fn build(w: Wiring<'_>) -> Result<Built, Error> {
    let table = w
        .live
        .results
        .table(JOBS)
        .cloned()
        .ok_or_else(|| Error::Platform(format!("`{JOBS}` is not served: the backfill needs its table")))?;
    let runner = Runner::start(w.cfg, w.metrics.clone(), table, w.clock).map_err(|e| Error::Platform(e.to_string()))?;
    let max_hours = w.cfg.pageviews.backfill_max_hours;
    let tasks = PipelineSpec::new(
        BACKFILL_PIPELINE,
        vec![REPORTS],
        move |_| ReportsProcessor::new(runner.clone(), max_hours),
        w.sink,
        None,
        w.metrics.clone(),
    )
    .with_store(w.store);
    Ok(Built { tasks: Arc::new(tasks), aggregators: Vec::new(), globals: Vec::new(), helpers: None })
}
