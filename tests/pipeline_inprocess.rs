//! The posts pipeline through the real actor graph (router, task actors on worker arbiters,
//! aggregate), in-process, with an in-memory sink instead of Kafka: offsets are stored only after
//! every output is acknowledged, bad records become dead letters, and a stalled sink stops the
//! dispatcher (backpressure) instead of growing memory. The fans pipeline's pages are queryable
//! while their partition's task runs, and leave the view when the partition is revoked.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use actix::Arbiter;
use pagepulse::clock::SystemClock;
use pagepulse::config::Config;
use pagepulse::engine::aggregate::merge_fn;
use pagepulse::engine::flow::{record_bytes, FlowChange};
use pagepulse::engine::offsets::RecordingStore;
use pagepulse::engine::state::MARKER_KEY;
use pagepulse::engine::Store;
use pagepulse::engine::{
    BatchAck, MemoryBackend, MemorySink, OutRecord, PipelineSpec, RawRecord, Router, Sink, TaskFactory,
};
use pagepulse::health::Health;
use pagepulse::metrics::Metrics;
use pagepulse::pipelines::fans::live::{Detail, FansLive};
use pagepulse::pipelines::fans::{self, FansProcessor};
use pagepulse::pipelines::posts::{self, HashtagTrending, PostsProcessor};
use tokio::sync::mpsc;

fn rec(offset: i64, value: &str) -> RawRecord {
    RawRecord {
        key: Some(format!("k{offset}").into_bytes()),
        value: Some(value.as_bytes().to_vec()),
        offset,
        timestamp_ms: Some(1_000),
    }
}

fn post(offset: i64) -> RawRecord {
    rec(offset, &format!(r#"{{"id":"p{offset}","content":"hello world #Tag{} #common"}}"#, offset % 3))
}

/// Pause between two checks in [`until`].
const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// Polls `f` on the actix runtime until it holds, for at most 10 s.
async fn until(what: &str, f: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

fn router(
    sink: Arc<dyn Sink>,
    store: Arc<RecordingStore>,
    inbox: usize,
    trending: Option<Arc<Mutex<HashtagTrending>>>,
) -> (Router, mpsc::Receiver<()>, Arbiter) {
    let cfg = Config::default();
    let metrics = Metrics::new();
    let pc = cfg.posts.clone();
    let spec: Arc<dyn TaskFactory> = Arc::new(PipelineSpec::new(
        posts::PIPELINE,
        vec![posts::INPUT],
        move |p| PostsProcessor::new(&pc, Arc::new(SystemClock)).for_partition(p),
        sink,
        trending.map(merge_fn),
        metrics.clone(),
    ));
    let arbiter = Arbiter::new();
    let (done_tx, done_rx) = mpsc::channel(1);
    let router =
        Router::new(vec![spec], |l| format!("x.{l}"), vec![arbiter.handle()], store, metrics, inbox, done_tx, budget());
    (router, done_rx, arbiter)
}

#[test]
fn offsets_wait_for_acknowledgements_and_bad_records_are_dead_lettered() {
    actix_rt::System::new().block_on(async {
        let sink = MemorySink::holding();
        let store = Arc::new(RecordingStore::default());
        let cfg = Config::default();
        let trending = Arc::new(Mutex::new(HashtagTrending::new(&cfg.posts, Metrics::new())));
        let (mut router, mut done, _arb) = router(sink.clone(), store.clone(), 4, Some(trending.clone()));
        let input = router.input_index("x.posts").expect("subscribed to the prefixed input");

        router.dispatch(input, 0, vec![post(0), rec(1, "{oops"), post(2)]).expect("dispatch");
        router.dispatch(input, 1, vec![post(10), post(11)]).expect("dispatch");
        router.dispatch(input, 0, vec![post(3)]).expect("dispatch");
        until("6 outputs", || sink.records().len() == 6).await;
        assert!(store.stored().is_empty(), "no offset may be stored before the outputs are acknowledged");

        let letters = sink.records_for("deadletter");
        assert_eq!(letters.len(), 1);
        assert_eq!(letters[0].value.as_deref(), Some(&b"{oops"[..]));
        assert_eq!(letters[0].header("pagepulse.topic"), Some(&b"x.posts"[..]));
        assert_eq!(letters[0].header("pagepulse.offset"), Some(&b"1"[..]));
        assert_eq!(sink.records_for(posts::ANALYSIS).len(), 5);

        sink.release();
        until("offsets stored", || {
            let s = store.stored();
            s.contains(&("x.posts".into(), 0, 4)) && s.contains(&("x.posts".into(), 1, 12))
        })
        .await;

        // The aggregate saw every hashtag of every partition.
        let top = trending.lock().expect("lock").current().expect("tags seen");
        assert_eq!(top.tags[0].tag, "common");
        assert_eq!(top.tags[0].count, 5);

        // Closing the router stops every task (drop-to-join).
        drop(router);
        tokio::time::timeout(Duration::from_secs(10), done.recv()).await.expect("tasks stop when their inbox closes");
    });
}

/// A sink that blocks every send until the gate opens: a broker that stopped acknowledging.
#[derive(Default)]
struct GateSink {
    open: Mutex<bool>,
    cv: Condvar,
    sent: Mutex<usize>,
    /// Sends blocked at the gate right now.
    waiting: std::sync::atomic::AtomicUsize,
}

impl GateSink {
    fn open(&self) {
        *self.open.lock().expect("lock") = true;
        self.cv.notify_all();
    }
}

impl Sink for GateSink {
    fn send(&self, _rec: OutRecord, ack: &Arc<BatchAck>) {
        ack.add_output();
        let mut open = self.open.lock().expect("lock");
        self.waiting.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        while !*open {
            open = self.cv.wait(open).expect("wait");
        }
        self.waiting.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        *self.sent.lock().expect("lock") += 1;
        ack.output_done(true);
    }
}

#[test]
fn a_stalled_sink_parks_and_pauses_its_partition_without_blocking_dispatch() {
    actix_rt::System::new().block_on(async {
        let sink = Arc::new(GateSink::default());
        let store = Arc::new(RecordingStore::default());
        let (mut router, mut done, _arb) = router(sink.clone(), store.clone(), 1, None);
        let input = router.input_index("x.posts").expect("input");
        // Batch 0 is taken by the task, which blocks in the sink; batch 1 fills the one-slot inbox.
        assert_eq!(router.dispatch(input, 0, vec![post(0)]).expect("dispatch"), None);
        until("the task to take batch 0", || sink.waiting.load(std::sync::atomic::Ordering::SeqCst) == 1).await;
        assert_eq!(router.dispatch(input, 0, vec![post(1)]).expect("dispatch"), None);
        // Batches 2 and 3 do not fit: they are parked, and returning at once is the point (the
        // consumer must keep polling). Past the budget the partition is paused.
        let started = std::time::Instant::now();
        let mut pauses = Vec::new();
        for o in 2..2 + PARK_TO_PAUSE {
            pauses.extend(router.dispatch(input, 0, vec![post(o)]).expect("dispatch"));
        }
        assert!(started.elapsed() < Duration::from_millis(200), "dispatch must not wait for a full inbox");
        assert_eq!(pauses, vec![FlowChange::Pause("x.posts".into(), 0)]);
        assert_eq!(router.paused(), 1);
        // Another partition is not held up by it.
        assert_eq!(router.dispatch(input, 1, vec![post(100)]).expect("dispatch"), None);
        assert!(store.stored().is_empty());
        assert!(router.unpark().expect("task alive").is_empty(), "still no room while the sink is stalled");

        sink.open();
        // Parked batches go to the inbox as room appears, in order; then the partition resumes.
        let mut resumed = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while router.has_parked() {
            assert!(tokio::time::Instant::now() < deadline, "parked batches never drained");
            resumed.extend(router.unpark().expect("task alive"));
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        assert_eq!(resumed, vec![FlowChange::Resume("x.posts".into(), 0)]);
        let last = 2 + PARK_TO_PAUSE;
        until("every offset stored", || store.stored().iter().any(|(_, p, o)| *p == 0 && *o == last)).await;
        drop(router);
        tokio::time::timeout(Duration::from_secs(10), done.recv()).await.expect("tasks stop");
        assert_eq!(*sink.sent.lock().expect("lock"), last as usize + 1, "every batch was produced, none twice");
    });
}

/// Parking budget of the routers in these tests: two and a half one-post batches, so the third
/// parked batch goes over it.
fn budget() -> usize {
    record_bytes(&post(2)) * 5 / 2
}
/// Batches parked before the partition goes over [`budget`].
const PARK_TO_PAUSE: i64 = 3;

fn observation(offset: i64, page: &str, fans: u64) -> RawRecord {
    rec(
        offset,
        &format!(
            r#"{{"platform":"facebook","page_id":"{page}","fans":{fans},"observed_at":"2026-11-23T10:{:02}:00Z"}}"#,
            offset % 60
        ),
    )
}

#[test]
fn fans_pages_are_queryable_while_their_partition_task_runs() {
    actix_rt::System::new().block_on(async {
        let cfg = Config::default();
        let metrics = Metrics::new();
        let state = FansLive::new(cfg.fans.top_n);
        let (fc, st) = (cfg.fans.clone(), state.clone());
        let spec: Arc<dyn TaskFactory> = Arc::new(PipelineSpec::new(
            fans::PIPELINE,
            vec![fans::INPUT],
            move |partition| FansProcessor::new(partition, &fc).with_live(&st),
            MemorySink::new(),
            None,
            metrics.clone(),
        ));
        let arbiter = Arbiter::new();
        let (done_tx, mut done) = mpsc::channel(1);
        let store = Arc::new(RecordingStore::default());
        let mut router =
            Router::new(vec![spec], |l| format!("x.{l}"), vec![arbiter.handle()], store, metrics, 4, done_tx, budget());
        let input = router.input_index("x.fans.observations").expect("subscribed");

        router.dispatch(input, 0, vec![observation(0, "a", 10), observation(1, "a", 12)]).expect("dispatch");
        router.dispatch(input, 1, vec![observation(0, "b", 20)]).expect("dispatch");
        let fans_of = |key: &str| state.page(key, Detail::Stats).map(|v| v.stats.fans);
        until("both partitions' pages queryable", || {
            fans_of("facebook:a") == Some(12) && fans_of("facebook:b") == Some(20)
        })
        .await;
        assert_eq!(state.partitions(), [0, 1]);

        // Revoked: the task drains its inbox, stops and drops its processor, and the pages go.
        router.revoke("x.fans.observations", 0);
        until("partition 0 unregistered", || state.partitions() == [1]).await;
        assert_eq!(fans_of("facebook:a"), None);
        assert_eq!(fans_of("facebook:b"), Some(20));

        // Assigned again: a new task starts from nothing and registers again.
        router.dispatch(input, 0, vec![observation(2, "a", 15)]).expect("dispatch");
        until("partition 0 back", || fans_of("facebook:a") == Some(15)).await;

        drop(router);
        tokio::time::timeout(Duration::from_secs(10), done.recv()).await.expect("tasks stop");
        until("every partition unregistered at shutdown", || state.partitions().is_empty()).await;
    });
}

/// Sends to a [`MemorySink`] and keeps changelog records in a [`MemoryBackend`], like a broker
/// that holds both the outputs and the changelogs.
struct ChangelogSink {
    sink: Arc<MemorySink>,
    backend: MemoryBackend,
    changelog: &'static str,
}

impl Sink for ChangelogSink {
    fn send(&self, rec: OutRecord, ack: &Arc<BatchAck>) {
        if rec.topic == self.changelog {
            self.backend.append([rec.clone()]);
        }
        self.sink.send(rec, ack);
    }
}

fn durable_router(
    sink: Arc<dyn Sink>,
    store: Arc<RecordingStore>,
    backend: MemoryBackend,
    health: Arc<Health>,
    trending: Arc<Mutex<HashtagTrending>>,
    metrics: Metrics,
) -> (Router, mpsc::Receiver<()>, Arbiter) {
    let cfg = Config::default();
    let pc = cfg.posts.clone();
    let spec: Arc<dyn TaskFactory> = Arc::new(
        PipelineSpec::new(
            posts::PIPELINE,
            vec![posts::INPUT],
            move |p| PostsProcessor::new(&pc, Arc::new(SystemClock)).for_partition(p),
            sink,
            Some(merge_fn(trending)),
            metrics.clone(),
        )
        .with_store(Some(Store {
            name: "posts",
            changelog: CHANGELOG,
            backend: Arc::new(backend),
            flush_every: Duration::from_millis(50),
            health,
        })),
    );
    let arbiter = Arbiter::new();
    let (done_tx, done_rx) = mpsc::channel(1);
    let router =
        Router::new(vec![spec], |l| format!("x.{l}"), vec![arbiter.handle()], store, metrics, 4, done_tx, budget());
    (router, done_rx, arbiter)
}

const CHANGELOG: &str = "app-posts-changelog";

#[test]
fn durable_state_is_flushed_before_offsets_and_restored_before_input() {
    actix_rt::System::new().block_on(async {
        let cfg = Config::default();
        let backend = MemoryBackend::new();
        let sink = MemorySink::holding();
        let out: Arc<dyn Sink> =
            Arc::new(ChangelogSink { sink: sink.clone(), backend: backend.clone(), changelog: CHANGELOG });
        let store = Arc::new(RecordingStore::default());
        let health = Arc::new(Health::default());
        let trending = Arc::new(Mutex::new(HashtagTrending::new(&cfg.posts, Metrics::new())));
        let (mut router, mut done, _arb) =
            durable_router(out.clone(), store.clone(), backend.clone(), health.clone(), trending, Metrics::new());
        let input = router.input_index("x.posts").expect("input");
        router.dispatch(input, 0, (0..5).map(post).collect()).expect("dispatch");
        until("the analyses and the state's changes", || {
            sink.records_for(posts::ANALYSIS).len() == 5 && !sink.records_for(CHANGELOG).is_empty()
        })
        .await;
        // The marker commits offsets 0..5: it must wait until their outputs are acknowledged
        // (a restore skips the input it covers, so their outputs could never come back).
        let marker_sent = || sink.records_for(CHANGELOG).iter().any(|r| r.key.as_deref() == Some(MARKER_KEY));
        assert!(!marker_sent(), "no marker while the analyses are unacknowledged");
        assert!(store.stored().is_empty(), "nothing acknowledged yet: no offset may be stored");
        // Acknowledge everything held so far, again until the marker itself was acknowledged.
        until("offsets stored once the marker is acknowledged", || {
            sink.release();
            store.stored().contains(&("x.posts".into(), 0, 5))
        })
        .await;
        assert!(marker_sent());
        let marker = sink
            .records_for(CHANGELOG)
            .into_iter()
            .rfind(|r| r.key.as_deref() == Some(MARKER_KEY))
            .expect("a position marker");
        assert_eq!(marker.value, Some(5i64.to_le_bytes().to_vec()), "the flush covers offsets 0..5");
        drop(router);
        tokio::time::timeout(Duration::from_secs(10), done.recv()).await.expect("tasks stop");

        // A new incarnation (another instance, or a restart) gets the partition. The committed
        // offset lags (say it is 3): offsets 3 and 4 come again and must not count twice.
        let metrics = Metrics::new();
        let trending = Arc::new(Mutex::new(HashtagTrending::new(&cfg.posts, Metrics::new())));
        let sink2 = MemorySink::new();
        let out2: Arc<dyn Sink> =
            Arc::new(ChangelogSink { sink: sink2.clone(), backend: backend.clone(), changelog: CHANGELOG });
        let (mut router, mut done, _arb) = durable_router(
            out2,
            Arc::new(RecordingStore::default()),
            backend,
            health.clone(),
            trending.clone(),
            metrics.clone(),
        );
        router.assign("x.posts", 0);
        router.dispatch(input, 0, (3..8).map(post).collect()).expect("dispatch");
        until("restored and processed", || sink2.records_for(posts::ANALYSIS).len() == 3).await;
        assert_eq!(health.restoring(), 0, "restore finished");
        let top = trending.lock().expect("lock").current().expect("tags");
        assert_eq!(top.tags[0].tag, "common");
        assert_eq!(top.tags[0].count, 8, "posts 0..8 once each: 5 restored, 3 new, 2 skipped");
        let m = metrics.render();
        assert!(m.contains("pagepulse_state_skipped_records_total{pipeline=\"posts\"} 2"), "{m}");
        assert!(m.contains("pagepulse_state_restore_seconds_count{store=\"posts\"} 1"), "{m}");
        drop(router);
        tokio::time::timeout(Duration::from_secs(10), done.recv()).await.expect("tasks stop");
    });
}

// --- Fan-out: several pipelines reading one topic. ---

/// A second reader of `posts` for the fan-out tests: one output per record, keyed by its offset.
struct Echo;

impl pagepulse::engine::Processor for Echo {
    type Input<'a> = i64;
    type Part = ();

    fn decode(&self, _topic: &'static str, rec: &RawRecord) -> Result<i64, pagepulse::engine::Rejection> {
        Ok(rec.offset)
    }

    fn process(&mut self, offset: i64, _meta: &pagepulse::engine::RecordMeta, out: &mut pagepulse::engine::Emit<()>) {
        out.record(OutRecord::new("echo", offset.to_string(), Vec::new()));
    }
}

/// Offsets of the `echo` outputs of partition-independent keys, sorted.
fn echoed(sink: &MemorySink) -> Vec<i64> {
    let mut v: Vec<i64> = sink
        .records_for("echo")
        .iter()
        .map(|r| String::from_utf8_lossy(r.key.as_deref().expect("keyed")).parse().expect("an offset"))
        .collect();
    v.sort_unstable();
    v
}

#[test]
fn two_pipelines_reading_one_topic_each_see_every_record_once_and_the_offset_waits_for_both() {
    actix_rt::System::new().block_on(async {
        let cfg = Config::default();
        let metrics = Metrics::new();
        let (posts_sink, echo_sink) = (MemorySink::holding(), MemorySink::holding());
        let pc = cfg.posts.clone();
        let posts_spec: Arc<dyn TaskFactory> = Arc::new(PipelineSpec::new(
            posts::PIPELINE,
            vec![posts::INPUT],
            move |p| PostsProcessor::new(&pc, Arc::new(SystemClock)).for_partition(p),
            posts_sink.clone(),
            None,
            metrics.clone(),
        ));
        let echo_spec: Arc<dyn TaskFactory> =
            Arc::new(PipelineSpec::new("echo", vec![posts::INPUT], |_| Echo, echo_sink.clone(), None, metrics.clone()));
        let arbiters = [Arbiter::new(), Arbiter::new()];
        let (done_tx, mut done) = mpsc::channel(1);
        let store = Arc::new(RecordingStore::default());
        let mut router = Router::new(
            vec![posts_spec, echo_spec],
            |l| format!("x.{l}"),
            arbiters.iter().map(|a| a.handle()).collect(),
            store.clone(),
            metrics.clone(),
            4,
            done_tx,
            budget(),
        );
        assert_eq!(router.topics(), vec!["x.posts".to_string()], "the topic is read once");
        assert_eq!(router.readers("x.posts"), vec![posts::PIPELINE, "echo"]);
        let input = router.input_index("x.posts").expect("input");
        router.dispatch(input, 0, (0..3).map(post).collect()).expect("dispatch");
        router.dispatch(input, 1, (10..12).map(post).collect()).expect("dispatch");
        router.dispatch(input, 0, (3..5).map(post).collect()).expect("dispatch");
        until("both pipelines' outputs", || {
            posts_sink.records_for(posts::ANALYSIS).len() == 7 && echo_sink.records_for("echo").len() == 7
        })
        .await;
        assert_eq!(echoed(&echo_sink), vec![0, 1, 2, 3, 4, 10, 11], "every record once");
        let mut analysed: Vec<String> = posts_sink
            .records_for(posts::ANALYSIS)
            .iter()
            .map(|r| String::from_utf8_lossy(r.key.as_deref().expect("keyed")).into_owned())
            .collect();
        analysed.sort();
        assert_eq!(analysed, ["p0", "p1", "p10", "p11", "p2", "p3", "p4"]);
        assert!(store.stored().is_empty(), "nothing acknowledged: no offset");
        posts_sink.release();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(store.stored().is_empty(), "the posts pipeline is done, the echo pipeline is not: no offset");
        echo_sink.release();
        until("offsets stored once both are done", || {
            let s = store.stored();
            s.contains(&("x.posts".into(), 0, 5)) && s.contains(&("x.posts".into(), 1, 12))
        })
        .await;
        // One tracker per partition: each batch's offset is stored once, not once per reader.
        assert_eq!(store.stored().len(), 3, "{:?}", store.stored());
        let m = metrics.render();
        assert!(m.contains("pagepulse_records_consumed_total{topic=\"posts\"} 7"), "consumed once: {m}");
        assert!(m.contains("pagepulse_end_to_end_latency_seconds_count{pipeline=\"echo\"} 7"), "{m}");
        assert!(m.contains("pagepulse_end_to_end_latency_seconds_count{pipeline=\"posts\"} 7"), "{m}");
        drop(router);
        tokio::time::timeout(Duration::from_secs(10), done.recv()).await.expect("tasks stop");
    });
}

/// Outputs go to a [`MemorySink`]; records of the listed changelogs are kept in a
/// [`MemoryBackend`] too, like a broker holding outputs and changelogs.
struct Changelogs {
    sink: Arc<MemorySink>,
    backend: MemoryBackend,
    changelogs: Vec<&'static str>,
}

impl Sink for Changelogs {
    fn send(&self, rec: OutRecord, ack: &Arc<BatchAck>) {
        if self.changelogs.contains(&rec.topic) {
            self.backend.append([rec.clone()]);
        }
        self.sink.send(rec, ack);
    }
}

/// A post that mentions Pandora.
fn pandora_post(offset: i64) -> RawRecord {
    rec(offset, &format!(r#"{{"id":"p{offset}","content":"listening to Pandora #radio"}}"#))
}

#[test]
fn a_restored_reader_skips_only_the_input_its_own_state_covers() {
    use pagepulse::engine::state::flush_records;
    use pagepulse::engine::{Emit, Processor, RecordMeta};
    use pagepulse::pipelines::apps::{self, App, AppsAggregate, Catalogue, MentionsProcessor, MentionsSetup};

    const POSTS_LOG: &str = "app-posts-changelog";
    const APPS_LOG: &str = "app-apps-changelog";
    actix_rt::System::new().block_on(async {
        let cfg = Config::default();
        let metrics = Metrics::new();
        let backend = MemoryBackend::new();
        let catalogue = Catalogue::new(10, Arc::new(std::sync::atomic::AtomicBool::new(true)));
        catalogue
            .upsert(App {
                id: "1".into(),
                track_name: "Pandora - Music & Radio".into(),
                name: "Pandora".into(),
                prime_genre: "Music".into(),
                rating_count_tot: 5,
                rating_count_ver: 0,
                user_rating: 4.0,
                price: 0.0,
            })
            .expect("room");
        let setup = MentionsSetup {
            catalogue: catalogue.clone(),
            max_content_bytes: cfg.posts.max_content_bytes,
            dead_letters: false,
            bucket_ms: 300_000,
            clock: Arc::new(SystemClock),
            metrics: metrics.clone(),
        };
        // What an earlier incarnation left: the posts store flushed up to offset 3, the apps
        // store up to offset 6 (each task flushes on its own schedule).
        let mut earlier_posts = PostsProcessor::new(&cfg.posts, Arc::new(SystemClock));
        let mut earlier_apps = MentionsProcessor::new(0, setup.clone());
        for o in 0..6 {
            let r = pandora_post(o);
            let meta = RecordMeta { topic: posts::INPUT, partition: 0, offset: o, timestamp_ms: r.timestamp_ms };
            if o < 3 {
                let p = earlier_posts.decode(posts::INPUT, &r).expect("valid");
                earlier_posts.process(p, &meta, &mut Emit::default());
            }
            let p = earlier_apps.decode(posts::INPUT, &r).expect("valid");
            earlier_apps.process(p, &meta, &mut Emit::default());
        }
        let mut changes = Vec::new();
        earlier_posts.take_changes(&mut changes);
        backend.append(flush_records(POSTS_LOG, 0, 1, changes, Some(3)));
        let mut changes = Vec::new();
        earlier_apps.take_changes(&mut changes);
        backend.append(flush_records(APPS_LOG, 0, 2, changes, Some(6)));

        // The new incarnation: the committed offset is 2 (behind both flushes).
        let sink = MemorySink::new();
        let out: Arc<dyn Sink> = Arc::new(Changelogs {
            sink: sink.clone(),
            backend: backend.clone(),
            changelogs: vec![POSTS_LOG, APPS_LOG],
        });
        let health = Arc::new(Health::default());
        let store = |name, changelog| Store {
            name,
            changelog,
            backend: Arc::new(backend.clone()),
            flush_every: Duration::from_millis(50),
            health: health.clone(),
        };
        let trending = Arc::new(Mutex::new(HashtagTrending::new(&cfg.posts, Metrics::new())));
        let pc = cfg.posts.clone();
        let posts_spec: Arc<dyn TaskFactory> = Arc::new(
            PipelineSpec::new(
                posts::PIPELINE,
                vec![posts::INPUT],
                move |p| PostsProcessor::new(&pc, Arc::new(SystemClock)).for_partition(p),
                out.clone(),
                Some(merge_fn(trending.clone())),
                metrics.clone(),
            )
            .with_store(Some(store("posts", POSTS_LOG))),
        );
        let aggregate = Arc::new(Mutex::new(AppsAggregate::new(catalogue.clone(), &cfg.apps)));
        let apps_spec: Arc<dyn TaskFactory> = Arc::new(
            PipelineSpec::new(
                apps::PIPELINE,
                vec![apps::POSTS],
                move |p| MentionsProcessor::new(p, setup.clone()),
                out,
                Some(merge_fn(aggregate.clone())),
                metrics.clone(),
            )
            .with_store(Some(store("apps", APPS_LOG))),
        );
        let arbiter = Arbiter::new();
        let (done_tx, mut done) = mpsc::channel(1);
        let offsets = Arc::new(RecordingStore::default());
        let mut router = Router::new(
            vec![posts_spec, apps_spec],
            |l| format!("x.{l}"),
            vec![arbiter.handle()],
            offsets.clone(),
            metrics.clone(),
            4,
            done_tx,
            budget(),
        );
        router.assign("x.posts", 0);
        let input = router.input_index("x.posts").expect("input");
        router.dispatch(input, 0, (2..8).map(pandora_post).collect()).expect("dispatch");
        until("offsets stored up to 8", || offsets.stored().contains(&("x.posts".into(), 0, 8))).await;
        // Posts: 0..3 restored, 3..8 processed (2 skipped): one analysis per post it had not done.
        let mut analysed: Vec<String> = sink
            .records_for(posts::ANALYSIS)
            .iter()
            .map(|r| String::from_utf8_lossy(r.key.as_deref().expect("keyed")).into_owned())
            .collect();
        analysed.sort();
        assert_eq!(analysed, ["p3", "p4", "p5", "p6", "p7"]);
        assert_eq!(trending.lock().expect("lock").current().expect("tags").tags[0].count, 8, "posts 0..8 once");
        // Apps: 0..6 restored, 6..8 processed (2..6 skipped): every post's mention once.
        assert_eq!(aggregate.lock().expect("lock").counts("1"), (8, 8));
        let m = metrics.render();
        assert!(m.contains("pagepulse_state_skipped_records_total{pipeline=\"posts\"} 1"), "{m}");
        assert!(m.contains("pagepulse_state_skipped_records_total{pipeline=\"apps\"} 4"), "{m}");
        drop(router);
        tokio::time::timeout(Duration::from_secs(10), done.recv()).await.expect("tasks stop");
    });
}

#[test]
fn a_stalled_reader_parks_its_own_copies_while_the_other_reader_keeps_going() {
    actix_rt::System::new().block_on(async {
        let cfg = Config::default();
        let metrics = Metrics::new();
        let posts_sink = MemorySink::new();
        let gate = Arc::new(GateSink::default());
        let pc = cfg.posts.clone();
        let posts_spec: Arc<dyn TaskFactory> = Arc::new(PipelineSpec::new(
            posts::PIPELINE,
            vec![posts::INPUT],
            move |p| PostsProcessor::new(&pc, Arc::new(SystemClock)).for_partition(p),
            posts_sink.clone(),
            None,
            metrics.clone(),
        ));
        let echo_spec: Arc<dyn TaskFactory> =
            Arc::new(PipelineSpec::new("echo", vec![posts::INPUT], |_| Echo, gate.clone(), None, metrics.clone()));
        let arbiters = [Arbiter::new(), Arbiter::new()];
        let (done_tx, mut done) = mpsc::channel(1);
        let store = Arc::new(RecordingStore::default());
        let mut router = Router::new(
            vec![posts_spec, echo_spec],
            |l| format!("x.{l}"),
            arbiters.iter().map(|a| a.handle()).collect(),
            store.clone(),
            metrics,
            1,
            done_tx,
            budget(),
        );
        let input = router.input_index("x.posts").expect("input");
        // The echo task takes batch 0 and blocks in its sink; batch 1 fills its one-slot inbox.
        router.dispatch(input, 0, vec![post(0)]).expect("dispatch");
        until("the echo task to block", || gate.waiting.load(std::sync::atomic::Ordering::SeqCst) == 1).await;
        router.dispatch(input, 0, vec![post(1)]).expect("dispatch");
        let mut pauses = Vec::new();
        for o in 2..2 + PARK_TO_PAUSE {
            pauses.extend(router.dispatch(input, 0, vec![post(o)]).expect("dispatch"));
            // The posts task keeps taking its copies (retried as the routing loop does, should
            // its one-slot inbox be full for a moment): the stalled reader does not hold it up.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while posts_sink.records_for(posts::ANALYSIS).len() as i64 != o + 1 {
                assert!(tokio::time::Instant::now() < deadline, "the posts pipeline is held up by the echo reader");
                pauses.extend(router.unpark().expect("tasks alive"));
                tokio::time::sleep(POLL_INTERVAL).await;
            }
        }
        assert_eq!(pauses, vec![FlowChange::Pause("x.posts".into(), 0)], "the stalled reader pauses the partition");
        assert!(store.stored().is_empty(), "no offset while the echo reader is stuck");
        gate.open();
        let mut resumed = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while router.has_parked() {
            assert!(tokio::time::Instant::now() < deadline, "parked copies never drained");
            resumed.extend(router.unpark().expect("tasks alive"));
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        assert_eq!(resumed, vec![FlowChange::Resume("x.posts".into(), 0)]);
        let last = 2 + PARK_TO_PAUSE;
        until("every offset stored", || store.stored().iter().any(|(_, p, o)| *p == 0 && *o == last)).await;
        assert_eq!(*gate.sent.lock().expect("lock"), last as usize, "every record echoed once, in order");
        assert_eq!(posts_sink.records_for(posts::ANALYSIS).len(), last as usize);
        drop(router);
        tokio::time::timeout(Duration::from_secs(10), done.recv()).await.expect("tasks stop");
    });
}

/// A changelog backend whose first restore of a partition fences and reads at once but returns
/// only when the test opens the gate: a restore still reading when its partition is revoked and
/// assigned again.
struct SlowFirstRestore {
    inner: MemoryBackend,
    calls: Arc<std::sync::atomic::AtomicUsize>,
    gate: Arc<(Mutex<bool>, Condvar)>,
}

impl pagepulse::engine::state::StateBackend for SlowFirstRestore {
    fn restore(
        &self,
        topic: &'static str,
        partition: i32,
        owner: u64,
    ) -> Result<pagepulse::engine::state::Restored, pagepulse::engine::state::Error> {
        let restored = self.inner.restore(topic, partition, owner)?;
        if self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            let (open, cv) = &*self.gate;
            let mut open = open.lock().expect("lock");
            while !*open {
                open = cv.wait(open).expect("lock");
            }
        }
        Ok(restored)
    }
}

#[test]
fn a_task_revoked_while_restoring_never_overwrites_its_successors_counts() {
    use pagepulse::engine::state::flush_records;
    use pagepulse::engine::{Emit, Processor, RecordMeta};
    use pagepulse::pipelines::apps::{self, App, AppsAggregate, Catalogue, MentionsProcessor, MentionsSetup};

    const APPS_LOG: &str = "app-apps-changelog";
    actix_rt::System::new().block_on(async {
        let cfg = Config::default();
        let metrics = Metrics::new();
        let backend = MemoryBackend::new();
        let catalogue = Catalogue::new(10, Arc::new(std::sync::atomic::AtomicBool::new(true)));
        catalogue
            .upsert(App {
                id: "1".into(),
                track_name: "Pandora - Music & Radio".into(),
                name: "Pandora".into(),
                prime_genre: "Music".into(),
                rating_count_tot: 5,
                rating_count_ver: 0,
                user_rating: 4.0,
                price: 0.0,
            })
            .expect("room");
        let setup = MentionsSetup {
            catalogue: catalogue.clone(),
            max_content_bytes: cfg.posts.max_content_bytes,
            dead_letters: false,
            bucket_ms: 300_000,
            clock: Arc::new(SystemClock),
            metrics: metrics.clone(),
        };
        // An earlier incarnation counted posts 0..4 and flushed them.
        let mut earlier = MentionsProcessor::new(0, setup.clone());
        for o in 0..4 {
            let r = pandora_post(o);
            let meta = RecordMeta { topic: posts::INPUT, partition: 0, offset: o, timestamp_ms: r.timestamp_ms };
            let p = earlier.decode(posts::INPUT, &r).expect("valid");
            earlier.process(p, &meta, &mut Emit::default());
        }
        let mut changes = Vec::new();
        earlier.take_changes(&mut changes);
        backend.append(flush_records(APPS_LOG, 0, 1, changes, Some(4)));

        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let slow = SlowFirstRestore { inner: backend.clone(), calls: calls.clone(), gate: gate.clone() };
        let sink = MemorySink::new();
        let out: Arc<dyn Sink> =
            Arc::new(Changelogs { sink: sink.clone(), backend: backend.clone(), changelogs: vec![APPS_LOG] });
        let health = Arc::new(Health::default());
        let aggregate = Arc::new(Mutex::new(AppsAggregate::new(catalogue.clone(), &cfg.apps)));
        let apps_spec: Arc<dyn TaskFactory> = Arc::new(
            PipelineSpec::new(
                apps::PIPELINE,
                vec![apps::POSTS],
                move |p| MentionsProcessor::new(p, setup.clone()),
                out,
                Some(merge_fn(aggregate.clone())),
                metrics.clone(),
            )
            .with_store(Some(Store {
                name: "apps",
                changelog: APPS_LOG,
                backend: Arc::new(slow),
                flush_every: Duration::from_millis(50),
                health: health.clone(),
            })),
        );
        let arbiter = Arbiter::new();
        let (done_tx, mut done) = mpsc::channel(1);
        let offsets = Arc::new(RecordingStore::default());
        let mut router = Router::new(
            vec![apps_spec],
            |l| format!("x.{l}"),
            vec![arbiter.handle()],
            offsets.clone(),
            metrics.clone(),
            4,
            done_tx,
            budget(),
        );
        let input = router.input_index("x.posts").expect("input");
        // The first task's restore hangs; the partition is revoked and assigned again (a
        // rebalance that gives it back), and the second task counts posts 4..10 on top of the
        // restored 0..4.
        router.assign("x.posts", 0);
        // Each task restores on a thread of its own: the revoke waits for the first task's
        // restore to be under way, so it is that one (the first call) the gate holds, not the
        // second task's.
        until("the first task's restore under way", || calls.load(std::sync::atomic::Ordering::SeqCst) >= 1).await;
        router.revoke("x.posts", 0);
        router.assign("x.posts", 0);
        router.dispatch(input, 0, (4..10).map(pandora_post).collect()).expect("dispatch");
        until("posts 0..10 counted", || aggregate.lock().expect("lock").counts("1") == (10, 10)).await;
        // The first task's restore completes late: its share of posts 0..4 must not replace the
        // second task's, nor may it start counting.
        {
            let (open, cv) = &*gate;
            *open.lock().expect("lock") = true;
            cv.notify_all();
        }
        until("the late restore done", || health.restoring() == 0).await;
        // One more post through the same arbiter: anything the late task had queued ran first.
        router.dispatch(input, 0, vec![pandora_post(10)]).expect("dispatch");
        until("offsets stored up to 11", || offsets.stored().contains(&("x.posts".into(), 0, 11))).await;
        assert_eq!(aggregate.lock().expect("lock").counts("1"), (11, 11), "every post once, nothing replaced");
        drop(router);
        tokio::time::timeout(Duration::from_secs(10), done.recv()).await.expect("tasks stop");
    });
}
