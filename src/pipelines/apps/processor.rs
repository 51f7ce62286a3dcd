//! The apps pipeline's per-partition logic: for every post of its `posts` partition, find the
//! catalogue's apps it mentions ([`super::matcher`]), count them in the partition's durable
//! [`MentionCounts`], and hand each mention to the instance's aggregate.
//!
//! The posts pipeline reads the same records (the engine's fan-out, [`crate::engine::router`]).
//! Posts are validated exactly as it does ([`decode_post`]); a post it refuses is dead-lettered
//! once, by the posts pipeline, and only counted here
//! (`pagepulse_shared_input_refused_total{pipeline="apps"}`); with the posts pipeline disabled,
//! this pipeline dead-letters them itself.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::aggregate::MentionPart;
use super::catalogue::{AppId, Catalogue};
use super::matcher::{Scratch, Slot};
use super::names::PIPELINE;
use super::store::MentionCounts;
use crate::clock::Clock;
use crate::engine::state::{Change, Entries};
use crate::engine::{Emit, Processor, RawRecord, RecordMeta, RejectClass, Rejection};
use crate::metrics::Metrics;
use crate::pipelines::posts::names::MAX_FUTURE_SKEW_MS;
use crate::pipelines::posts::{decode_post, Post};

/// How often a task forgets the counts of apps that left the catalogue.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(10);

/// A `posts` record as this pipeline takes it.
#[derive(Debug)]
pub enum PostInput<'a> {
    /// A valid post.
    Post(Post<'a>),
    /// A post the posts pipeline refuses (and dead-letters): counted, nothing else.
    Refused(RejectClass),
}

/// How the processor is set up.
#[derive(Clone)]
pub struct MentionsSetup {
    /// The shared catalogue.
    pub catalogue: Arc<Catalogue>,
    /// `pipelines.posts.max_content_bytes`: posts are validated as the posts pipeline does.
    pub max_content_bytes: usize,
    /// Whether this pipeline dead-letters the posts it refuses (only when the posts pipeline,
    /// which would, is disabled).
    pub dead_letters: bool,
    /// `pipelines.apps.mentions_bucket`, in milliseconds.
    pub bucket_ms: i64,
    /// Wall-clock time (event times are clamped to it).
    pub clock: Arc<dyn Clock>,
    /// Mention and refusal counters.
    pub metrics: Metrics,
}

/// The per-partition mention counter.
pub struct MentionsProcessor {
    partition: i32,
    setup: MentionsSetup,
    counts: MentionCounts,
    scratch: Scratch,
    slots: Vec<Slot>,
    found: Vec<AppId>,
    refused: [prometheus::IntCounter; RejectClass::ALL.len()],
}

impl MentionsProcessor {
    /// The processor of `partition`.
    pub fn new(partition: i32, setup: MentionsSetup) -> Self {
        let refused = RejectClass::ALL
            .map(|c| setup.metrics.shared_refused.with_label_values(&[PIPELINE, super::names::POSTS, c.as_str()]));
        Self {
            partition,
            counts: MentionCounts::new(setup.bucket_ms),
            setup,
            scratch: Scratch::default(),
            slots: Vec::new(),
            found: Vec::new(),
            refused,
        }
    }

    /// The partition's counts.
    pub fn counts(&self) -> &MentionCounts {
        &self.counts
    }

    fn prune(&mut self) {
        let catalogue = &self.setup.catalogue;
        self.counts.retain(|id| catalogue.contains(id));
    }
}

impl Processor for MentionsProcessor {
    type Input<'a> = PostInput<'a>;
    type Part = MentionPart;

    fn decode<'a>(&self, _topic: &'static str, rec: &'a RawRecord) -> Result<PostInput<'a>, Rejection> {
        match decode_post(rec, self.setup.max_content_bytes) {
            Ok(post) => Ok(PostInput::Post(post)),
            Err(why) if self.setup.dead_letters => Err(why),
            Err(why) => Ok(PostInput::Refused(why.class)),
        }
    }

    fn process(&mut self, input: PostInput<'_>, meta: &RecordMeta, out: &mut Emit<MentionPart>) {
        let post = match input {
            PostInput::Post(post) => post,
            PostInput::Refused(class) => {
                let i = RejectClass::ALL.iter().position(|c| *c == class).expect("ALL holds every class");
                self.refused[i].inc();
                return;
            }
        };
        self.found.clear();
        self.setup.catalogue.mentioned(&post.content, &mut self.scratch, &mut self.slots, &mut self.found);
        if self.found.is_empty() {
            return;
        }
        let now_ms = self.setup.clock.now().timestamp_millis();
        // As in the posts pipeline: `created_at`, else the record timestamp, never far ahead.
        let event_ms = post.created_at_ms.or(meta.timestamp_ms).unwrap_or(now_ms).min(now_ms + MAX_FUTURE_SKEW_MS);
        self.setup.metrics.app_mentions.inc_by(self.found.len() as u64);
        for app in self.found.drain(..) {
            let (total, bucket) = self.counts.add(&app, event_ms);
            if let Some((bucket, count)) = bucket {
                out.part(MentionPart::Bucket { partition: self.partition, bucket, app: app.clone(), count });
            }
            out.part(MentionPart::Total { partition: self.partition, app, count: total });
        }
        for (bucket, app) in self.counts.take_released() {
            out.part(MentionPart::Bucket { partition: self.partition, bucket, app, count: 0 });
        }
    }

    fn tick_interval(&self) -> Option<Duration> {
        Some(PRUNE_INTERVAL)
    }

    fn on_tick(&mut self, _now: DateTime<Utc>, _out: &mut Emit<MentionPart>) {
        self.prune();
    }

    fn take_changes(&mut self, out: &mut Vec<Change>) {
        self.counts.take_changes(out);
    }

    /// Rebuilds the partition's counts and hands them to the aggregate (replacing whatever it
    /// had of this partition). Runs once the catalogue has loaded (the pipeline's tasks wait for
    /// it), so counts of apps removed meanwhile are forgotten at once.
    fn restore(&mut self, entries: Entries, out: &mut Emit<MentionPart>) {
        self.counts.restore(entries);
        self.prune();
        out.part(MentionPart::Restored { partition: self.partition, share: self.counts.share().clone() });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;
    use crate::clock::ManualClock;
    use crate::pipelines::apps::catalogue::App;
    use crate::pipelines::apps::matcher::app_name;

    const NOW: i64 = 1_795_428_000_000;

    fn setup(dead_letters: bool) -> MentionsSetup {
        let catalogue = Catalogue::new(10, Arc::new(AtomicBool::new(true)));
        for (id, name) in [("1", "Spotify Music"), ("2", "Pandora - Music & Radio")] {
            catalogue
                .upsert(App {
                    id: id.into(),
                    track_name: name.into(),
                    name: app_name(name).into(),
                    prime_genre: "Music".into(),
                    rating_count_tot: 1,
                    rating_count_ver: 0,
                    user_rating: 4.0,
                    price: 0.0,
                })
                .expect("room");
        }
        MentionsSetup {
            catalogue,
            max_content_bytes: 65536,
            dead_letters,
            bucket_ms: 300_000,
            clock: Arc::new(ManualClock::at_ms(NOW)),
            metrics: Metrics::new(),
        }
    }

    fn run(p: &mut MentionsProcessor, value: &str, ts: i64) -> Result<Vec<MentionPart>, Rejection> {
        let rec = RawRecord { key: None, value: Some(value.as_bytes().to_vec()), offset: 0, timestamp_ms: Some(ts) };
        let input = p.decode("posts", &rec)?;
        let mut out = Emit::default();
        p.process(input, &RecordMeta { topic: "posts", partition: 3, offset: 0, timestamp_ms: Some(ts) }, &mut out);
        Ok(out.parts)
    }

    #[test]
    fn a_post_counts_once_per_app_it_mentions() {
        let mut p = MentionsProcessor::new(3, setup(false));
        let parts =
            run(&mut p, r##"{"id":"a","content":"#Spotify music and PANDORA, pandora"}"##, NOW - 10).expect("valid");
        // Each app once: its bucket's count and its total, both 1, for partition 3.
        let bucket = (NOW - 10).div_euclid(300_000) * 300_000;
        let mut apps: Vec<&str> = Vec::new();
        for x in &parts {
            match x {
                MentionPart::Total { app, partition: 3, count: 1 } => apps.push(app),
                MentionPart::Bucket { partition: 3, bucket: b, count: 1, .. } if *b == bucket => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(parts.len(), 4);
        assert_eq!(apps.len(), 2);
        assert!(apps.contains(&"1") && apps.contains(&"2"));
        assert_eq!(p.counts().share().totals.get("2"), Some(&1));
        let far_future = r#"{"id":"b","content":"pandora","created_at":"2099-01-01T00:00:00Z"}"#;
        let parts = run(&mut p, far_future, NOW).expect("valid");
        let capped = (NOW + MAX_FUTURE_SKEW_MS).div_euclid(300_000) * 300_000;
        assert_eq!(
            parts,
            vec![
                MentionPart::Bucket { partition: 3, bucket: capped, app: "2".into(), count: 1 },
                MentionPart::Total { partition: 3, app: "2".into(), count: 2 },
            ],
            "event time capped at now + the allowed skew"
        );
    }

    #[test]
    fn refused_posts_are_left_to_the_posts_pipeline_unless_it_is_disabled() {
        let mut p = MentionsProcessor::new(0, setup(false));
        assert!(run(&mut p, r#"{"content":"pandora"}"#, NOW).expect("not dead-lettered here").is_empty());
        let m = p.setup.metrics.render();
        assert!(
            m.contains(
                r#"pagepulse_shared_input_refused_total{pipeline="apps",reason="missing_field",topic="posts"} 1"#
            ),
            "{m}"
        );
        let mut p = MentionsProcessor::new(0, setup(true));
        let why = run(&mut p, r#"{"content":"pandora"}"#, NOW).expect_err("dead-lettered");
        assert_eq!(why.message, "field `id` is missing");
    }
}
