//! Rolling fan counts.
//!
//! - Input `fans.observations` (key `<platform>:<page_id>`): one audience count of one page at
//!   one time, from pagepulse's poller or any external scraper ([`crate::poll::observation`]).
//! - Output `fans.stats` (compacted, key = page key): the page's rolling figures after every new
//!   observation (see [`crate::ops::series`]).
//! - Output `fans.top` (key `top`): the top pages by 24 h growth and by absolute 24 h delta,
//!   across every partition of this instance, at most every 10 s when changed.
//!
//! Parts: [`config`] (`[pipelines.fans]`), [`processor`] (decode, observe, rank), [`store`]
//! (each partition's pages: the durable state, one changelog entry per page), [`live`] (the
//! pages queries read while the tasks write them: the store's own maps, so `/pages` serves them
//! without a second copy), [`top`] (the cross-partition ranking), [`records`] (the values
//! written), [`page`] (one page's entry).

pub mod config;
pub mod export;
pub mod history;
pub mod live;
pub mod names;
pub mod page;
pub mod processor;
pub mod records;
pub mod store;
pub mod top;
pub mod watch;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use actix::Actor;

pub use self::config::FansConfig;
pub use self::live::FansLive;
pub use self::names::{INPUT, PIPELINE, SHARES, STATS, TOP};
pub use self::processor::{decode_observation, FansProcessor, Observation};
pub use self::records::{DeltaOut, FansTop, PageStats, TopEntry};
pub use self::store::FansStore;
pub use self::top::{FansTopView, PartitionTop, TOP_INTERVAL, TOP_KEY};
pub use self::watch::{WatchProcessor, Watched};
use super::{Built, Error, GlobalTable, Pipeline, Wiring};
use crate::engine::aggregate::SharesReader;
use crate::engine::{AggregatorActor, Leadership, PipelineSpec};

/// The fans pipeline's line in the [registry](super::REGISTRY).
pub const ENTRY: Pipeline = Pipeline {
    name: PIPELINE,
    enabled: |cfg| cfg.fans.enabled,
    inputs: &[INPUT],
    outputs: &[STATS, TOP, SHARES],
    store_input: Some(INPUT),
    served: &[],
    exports: export::FAMILIES,
    export: Some(export::export),
    build,
};

/// The fans tasks, each registering its partition's pages in the live view, and the ranking
/// aggregate the live view holds, ticked every [`TOP_INTERVAL`].
fn build(w: Wiring<'_>) -> Result<Built, Error> {
    let top = w.live.fans.top_view();
    // Cluster-wide: every partition's lists go through `fans.shares`, read whole here.
    let leadership = Leadership::new().with_gauge(w.metrics.aggregate_writer.with_label_values(&[PIPELINE]));
    let caught_up = Arc::new(AtomicBool::new(false));
    let actor = AggregatorActor::new(top.clone(), TOP_INTERVAL, w.sink.clone())
        .with_shares(leadership.clone(), caught_up.clone())
        .start();
    let (fc, live) = (w.cfg.fans.clone(), w.live.fans.clone());
    let tasks = PipelineSpec::new(
        PIPELINE,
        vec![INPUT],
        move |partition| FansProcessor::new(partition, &fc).with_live(&live),
        w.sink,
        None,
        w.metrics.clone(),
    )
    .with_shares(Arc::new(top::publish), leadership)
    .with_store(w.store);
    // Pages marked `"watch": true` in `pages`, read whole on every instance (see `watch`).
    let watch = WatchProcessor::new(w.live.fans.watched());
    let globals = vec![
        GlobalTable::new(PIPELINE, crate::pipelines::pages::INPUT, watch),
        GlobalTable::new(PIPELINE, SHARES, SharesReader::new(top, top::decode_share)).with_caught_up(caught_up),
    ];
    Ok(Built { tasks: Arc::new(tasks), aggregators: vec![actor.recipient()], globals, helpers: None })
}
