//! Social post analysis.
//!
//! - Input `posts` (key = post id): `{"id", "content", "author"?, "created_at"?}`.
//! - Output `posts.analysis` (key = post id): word count, average word length, hashtags and
//!   mentions of each post (see [`crate::ops::text`]).
//! - Output `posts.trending` (key `hashtags`): the top hashtags over the last hour of event time,
//!   from a cross-partition [`HashtagTrending`] aggregate, exact across instances (written by the
//!   instance holding partition 0).
//! - Internal `posts.shares`: each partition's count of every (minute, hashtag), read whole by
//!   every instance into its aggregate (see [`trending`]).
//!
//! Durable state: each partition's task keeps its own share of the trending counts (per minute
//! bucket, per tag) and writes each changed bucket whole to the `posts` store's changelog (key
//! `b/<bucket start ms>`, tombstoned when the bucket leaves the window). A restored partition
//! publishes its buckets again, so trending survives restarts and follows a partition to its new
//! instance.
//!
//! Parts: [`config`] (`[pipelines.posts]`), [`processor`] (decode, analyse, count),
//! [`store`] (the durable trending counts), [`trending`] (the cross-partition ranking).

pub mod config;
pub mod export;
pub mod live;
pub mod names;
pub mod processor;
pub mod records;
pub mod store;
pub mod trending;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use actix::Actor;

pub use self::config::PostsConfig;
pub use self::live::PostsLive;
pub use self::names::{ANALYSIS, INPUT, MAX_FUTURE_SKEW_MS, PIPELINE, SHARES, TRENDING, TRENDING_KEY};
pub use self::processor::{decode_post, Analysis, Post, PostsProcessor};
pub use self::records::{Trending, TrendingTag};
pub use self::store::TagBuckets;
pub use self::trending::{HashtagTrending, TagHit};
use super::{Built, Error, GlobalTable, Pipeline, Wiring};
use crate::engine::aggregate::SharesReader;
use crate::engine::{AggregatorActor, Leadership, PipelineSpec};

/// The posts pipeline's line in the [registry](super::REGISTRY).
pub const ENTRY: Pipeline = Pipeline {
    name: PIPELINE,
    enabled: |cfg| cfg.posts.enabled,
    inputs: &[INPUT],
    outputs: &[ANALYSIS, TRENDING, SHARES],
    store_input: Some(INPUT),
    served: &[ANALYSIS],
    exports: export::FAMILIES,
    export: Some(export::export),
    build,
};

/// The posts tasks, feeding one trending aggregate ticked every `trending_emit_interval`.
fn build(w: Wiring<'_>) -> Result<Built, Error> {
    let cfg = &w.cfg.posts;
    let live = w.live.posts.clone();
    let publish = Box::new(move |t: &Trending| live.set_hashtags(t.clone()));
    let trending = Arc::new(Mutex::new(HashtagTrending::new(cfg, w.metrics.clone()).with_publisher(publish)));
    // Cluster-wide: every partition's counts go through `posts.shares`, read whole here.
    let leadership = Leadership::new().with_gauge(w.metrics.aggregate_writer.with_label_values(&[PIPELINE]));
    let caught_up = Arc::new(AtomicBool::new(false));
    let actor = AggregatorActor::new(trending.clone(), cfg.trending_emit_interval, w.sink.clone())
        .with_shares(leadership.clone(), caught_up.clone())
        .start();
    let (pc, clock, metrics) = (cfg.clone(), w.clock, w.metrics.clone());
    let tasks = PipelineSpec::new(
        PIPELINE,
        vec![INPUT],
        move |p| PostsProcessor::new(&pc, clock.clone()).for_partition(p).with_metrics(&metrics),
        w.sink,
        None,
        w.metrics.clone(),
    )
    .with_shares(trending::publisher(cfg.trending_bucket.as_millis() as i64), leadership)
    .with_store(w.store);
    let shares = GlobalTable::new(PIPELINE, SHARES, SharesReader::new(trending, trending::decode_share));
    let globals = vec![shares.with_caught_up(caught_up)];
    Ok(Built { tasks: Arc::new(tasks), aggregators: vec![actor.recipient()], globals, helpers: None })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::config::Config;
    use crate::engine::{Aggregate, Emit, Processor, RawRecord, RecordMeta};
    use crate::metrics::Metrics;

    fn post_at(p: &mut PostsProcessor, i: u64, ts_ms: i64, out: &mut Emit<TagHit>) {
        let content = format!("post {i} #t{} #t{} #common", i % 7, i % 3);
        let v = format!(r#"{{"id":"{i}","content":"{content}"}}"#);
        let r = RawRecord { key: None, value: Some(v.into_bytes()), offset: i as i64, timestamp_ms: Some(ts_ms) };
        let post = p.decode(INPUT, &r).expect("valid");
        p.process(post, &RecordMeta { topic: INPUT, partition: 0, offset: i as i64, timestamp_ms: Some(ts_ms) }, out);
    }

    #[test]
    fn trending_counts_survive_a_restore_and_expired_buckets_are_tombstoned() {
        use crate::engine::state::{flush_records, MemoryBackend, StateBackend};
        let cfg = Config::default().posts;
        let base = 1_795_428_000_000;
        let clock = Arc::new(ManualClock::at_ms(base + 10 * 3_600_000));
        let (mut a, mut b) = (PostsProcessor::new(&cfg, clock.clone()), PostsProcessor::new(&cfg, clock.clone()));
        let (mut agg_a, mut agg_c) =
            (HashtagTrending::new(&cfg, Metrics::new()), HashtagTrending::new(&cfg, Metrics::new()));
        let backend = MemoryBackend::new();
        let topic = "posts-changelog";
        // 3 hours of posts, one every 20 s: buckets expire along the way.
        let ts = |i: u64| base + i as i64 * 20_000;
        let cut = 400;
        for i in 0..540 {
            let mut out = Emit::default();
            post_at(&mut a, i, ts(i), &mut out);
            agg_a.merge(&mut out.parts);
            if i < cut {
                let mut out_b = Emit::default();
                post_at(&mut b, i, ts(i), &mut out_b);
                if i % 37 == 0 || i == cut - 1 {
                    let mut changes = Vec::new();
                    b.take_changes(&mut changes);
                    backend.append(flush_records(topic, 0, 1, changes, Some(i as i64 + 1)));
                }
            }
        }
        let restored = backend.restore(topic, 0, 2).expect("memory backend");
        assert_eq!(restored.position, Some(cut as i64));
        // Only the buckets of the last hour are live: expired ones were tombstoned.
        assert!(restored.entries.len() <= 61, "{} live buckets", restored.entries.len());
        let mut c = PostsProcessor::new(&cfg, clock);
        let mut out = Emit::default();
        c.restore(restored.entries, &mut out);
        agg_c.merge(&mut out.parts);
        for i in cut..540 {
            let mut out = Emit::default();
            post_at(&mut c, i, ts(i), &mut out);
            agg_c.merge(&mut out.parts);
        }
        let (ta, tc) = (agg_a.current().expect("tags"), agg_c.current().expect("tags"));
        assert_eq!(ta, tc);
        assert_eq!(ta.tags[0].tag, "common");
        assert_eq!(ta.tags[0].count, 180, "one per post in the last hour");
    }
}
