//! Tracked pages and their poll schedules.
//!
//! - Input `pages` (compacted, key `<platform>:<page_id>`): which pages to poll and how often.
//!   `{"platform": "facebook", "page_id": "cocacolacanada", "interval_s": 600}`; `platform`
//!   defaults to `facebook`, `interval_s` to 600 (10 to 86400). A tombstone or
//!   `{"tracked": false}` stops tracking; re-sending a page with another interval reschedules it.
//! - Each partition's task keeps a [`Schedule`](crate::poll::scheduler::Schedule) of its pages and, every `tick`, hands the pages
//!   that are due to their platform's dispatcher ([`crate::poll::dispatch`]), which polls them and
//!   writes `fans.observations`.
//!
//! # The `pages` topic is the schedule's changelog
//! The task never commits `pages` offsets, so every assignment (start-up, rebalance, restart)
//! reads its partitions from the beginning and rebuilds their schedules; compaction keeps that
//! read proportional to the pages tracked. Because each page polls on a grid fixed by its id (see
//! [`crate::poll::scheduler`]), a rebuilt schedule polls at the same slots as the old one: no
//! page is polled twice for one slot across a restart or a handover. The price: an invalid
//! `pages` record is dead-lettered again at every assignment.
//!
//! Parts: [`config`] (`[pipelines.pages]`; the platforms' own sections are
//! [`crate::config::PlatformConfig`]), [`processor`] (decode and schedule). No store of its own:
//! the compacted `pages` topic is its changelog. `build` starts one poll dispatcher per enabled
//! platform ([`crate::poll::dispatch`]).

pub mod config;
pub mod names;
pub mod processor;

use std::sync::Arc;

use actix::{Actor, Arbiter};

pub use self::config::PagesConfig;
pub use self::names::{INPUT, PIPELINE};
pub use self::processor::{
    decode_page, PageCommand, PagesProcessor, PlatformQueue, DEFAULT_INTERVAL_S, DEFAULT_PLATFORM,
};
use super::{Built, Error, Pipeline, Wiring};
use crate::config::{Config, PlatformConfig};
use crate::engine::PipelineSpec;
use crate::poll::dispatch::{Dispatcher, Policy};
use crate::poll::facebook::{FacebookPlatform, FacebookSettings, Token};
use crate::poll::limiter::{Backoff, Limits};
use crate::poll::mastodon::{MastodonPlatform, MastodonSettings};
use crate::poll::observation;
use crate::poll::platform::Platform;

/// The pages pipeline's line in the [registry](super::REGISTRY). Its dispatchers write
/// `fans.observations`, whether or not this instance runs the fans pipeline.
pub const ENTRY: Pipeline = Pipeline {
    name: PIPELINE,
    enabled: |cfg| cfg.pages.enabled,
    inputs: &[INPUT],
    outputs: &[observation::TOPIC],
    store_input: None,
    served: &[],
    exports: &[],
    export: None,
    build,
};

/// A dispatcher per enabled platform, on a thread of their own, and the schedule tasks handing
/// them due pages. The tasks re-read `pages` from the beginning at every assignment.
fn build(w: Wiring<'_>) -> Result<Built, Error> {
    let arbiter = Arbiter::new();
    let mut queues = Vec::new();
    for (platform, pc) in platforms(w.cfg)? {
        let (policy, sink, m, clock) = (policy(pc), w.sink.clone(), w.metrics.clone(), w.clock.clone());
        let name = platform.name();
        let addr = Dispatcher::start_in_arbiter(&arbiter.handle(), move |_| {
            Dispatcher::new(platform, &policy, sink, &m, clock)
        });
        queues.push(PlatformQueue { name, queue: Arc::new(addr) });
    }
    let (pc, m, clock) = (w.cfg.pages.clone(), w.metrics.clone(), w.clock);
    let tasks = PipelineSpec::new(
        PIPELINE,
        vec![INPUT],
        move |_| PagesProcessor::new(&pc, &queues, &m, clock.clone()),
        w.sink,
        None,
        w.metrics.clone(),
    )
    .reread_on_assignment();
    Ok(Built { tasks: Arc::new(tasks), aggregators: Vec::new(), globals: Vec::new(), helpers: Some(arbiter) })
}

/// The limits and retry policy of a platform's config.
fn policy(p: &PlatformConfig) -> Policy {
    Policy {
        limits: Limits {
            rate_per_sec: p.rate_per_sec,
            burst: p.burst,
            max_in_flight: p.max_in_flight,
            saturated_pause_ms: i64::try_from(p.saturated_pause.as_millis()).unwrap_or(i64::MAX),
        },
        backoff: Backoff { base: p.retry_base, max: p.retry_max, attempts: p.retries },
        stamp_tolerance_ms: i64::try_from(p.stamp_tolerance.as_millis()).unwrap_or(i64::MAX),
    }
}

/// A platform client and the config section it was built from.
type PlatformSetup<'a> = (Arc<dyn Platform>, &'a PlatformConfig);

/// The enabled platforms' clients, each with its config section.
fn platforms(cfg: &Config) -> Result<Vec<PlatformSetup<'_>>, Error> {
    let mut out: Vec<PlatformSetup<'_>> = Vec::new();
    let bad = |section: &str, e: crate::poll::http::Error| Error::Platform(format!("platforms.{section}: {e}"));
    if cfg.facebook.enabled {
        let f = &cfg.facebook;
        let token = f.access_token.clone().unwrap_or_else(|| {
            tracing::warn!(
                "platforms.facebook.access_token is not set (env PAGEPULSE_FACEBOOK_TOKEN): \
                 the Graph API will refuse every request"
            );
            Token::new("")
        });
        let settings =
            FacebookSettings { base_url: f.base_url.clone(), version: f.version.clone(), token, timeout: f.timeout };
        out.push((Arc::new(FacebookPlatform::new(settings).map_err(|e| bad("facebook", e))?), f));
    }
    if cfg.mastodon.enabled {
        let m = &cfg.mastodon;
        let settings =
            MastodonSettings { base_url: m.base_url.clone(), token: m.access_token.clone(), timeout: m.timeout };
        out.push((Arc::new(MastodonPlatform::new(settings).map_err(|e| bad("mastodon", e))?), m));
    }
    Ok(out)
}
