//! Page views: the top articles per domain and hour, minus a blacklist, and "trending now".
//!
//! - Input `pageviews` (key = domain): `{"domain", "title", "views" (default 1), "ts"}` with `ts`
//!   RFC 3339 or epoch milliseconds. The key must be the domain: a domain's windows live in one
//!   partition, which is what makes "exactly one final record per window" hold.
//! - Input `pageviews.blacklist` (compacted, key `<domain> <title>`): pairs never ranked. Read
//!   whole by every instance (a global table, [`crate::kafka::global`]) into a [`Blacklist`] every
//!   pageviews task consults when it ranks, so a change applies to every window not yet final.
//! - Output `pageviews.top` (compacted, key `<domain>|YYYY-MM-DDTHH`): per (domain, hour) window,
//!   exactly one record with `final: true` when the partition's watermark passes the hour's end
//!   or the partition has been idle for `idle_timeout`, or, for an hour ingested from a file, when
//!   the file's `end` control record is in (see [`crate::ops::hourly`]); optionally provisional
//!   `final: false` records while it is open.
//! - Output `pageviews.jobs` (compacted): each partition's acknowledgement that it made an hour
//!   from a file final ([`CloseAck`]), next to the [`backfill`] jobs' documents. Top `top_n` by views, ties by title in ascending byte order.
//! - Output `pageviews.trending` (key = domain): the top over the last 60 minutes of event time
//!   (sliding by the minute), every `trending_interval` while the domain receives views.
//!
//! Late events (for windows already final) are counted in
//! `pagepulse_window_ignored_events_total{pipeline="pageviews",reason="late"}` and reported in the
//! `late_events` field of the domain's next `pageviews.top` record.
//!
//! With durable state, open windows, final hours, the watermark, late counts and trending survive
//! restarts and rebalances through the changelog: see [`store`] for the layout and its costs.
//!
//! Parts: [`config`] (`[pipelines.pageviews]`), [`processor`] (decode, windows, rankings, file
//! ingestions' control records),
//! [`trend`] (a domain's trending view), [`store`] (the durable state), [`blacklist`] (the global
//! table), and [`backfill`]: the reports of past hours computed from a dump mirror, a pipeline of
//! its own (tasks of `pageviews.reports`) configured in this section.

pub mod backfill;
pub mod blacklist;
pub mod config;
pub mod export;
pub mod names;
pub mod processor;
pub mod store;
pub mod trend;

use std::sync::atomic::AtomicI64;
use std::sync::Arc;

pub use self::blacklist::{decode_blacklist, Blacklist, BlacklistChange, BlacklistProcessor};
pub use self::config::PageviewsConfig;
pub use self::names::{
    BACKFILL_PIPELINE, BLACKLIST, BLACKLIST_PIPELINE, INPUT, JOBS, PIPELINE, REPORTS, TOP, TRENDING,
};
pub use self::processor::{
    close_key, decode_input, decode_view, hour_name, rank, top_key, Article, CloseAck, Control, DomainTrending,
    HourTop, PageviewInput, PageviewsProcessor, View,
};
pub use self::store::PageviewsStore;
use super::{Built, Error, GlobalTable, Pipeline, Wiring};
use crate::engine::PipelineSpec;

/// The pageviews pipeline's line in the [registry](super::REGISTRY).
pub const ENTRY: Pipeline = Pipeline {
    name: PIPELINE,
    enabled: |cfg| cfg.pageviews.enabled,
    inputs: &[INPUT, BLACKLIST],
    outputs: &[TOP, TRENDING, JOBS],
    store_input: Some(INPUT),
    served: &[TOP, TRENDING],
    exports: export::FAMILIES,
    export: Some(export::export),
    build,
};

/// The pageviews tasks, and the blacklist: a global table read whole by every instance, not
/// split by the group.
fn build(w: Wiring<'_>) -> Result<Built, Error> {
    let blacklist = Blacklist::new();
    let globals = vec![GlobalTable::new(BLACKLIST_PIPELINE, BLACKLIST, BlacklistProcessor::new(blacklist.clone()))];
    let (vc, m, clock) = (w.cfg.pageviews.clone(), w.metrics.clone(), w.clock);
    let activity = Arc::new(AtomicI64::new(0));
    let tasks = PipelineSpec::new(
        PIPELINE,
        vec![INPUT],
        move |p| PageviewsProcessor::new(&vc, blacklist.clone(), activity.clone(), &m, clock.clone()).for_partition(p),
        w.sink,
        None,
        w.metrics.clone(),
    )
    .with_store(w.store);
    Ok(Built { tasks: Arc::new(tasks), aggregators: Vec::new(), globals, helpers: None })
}
