//! The dispatcher of one platform: takes due pages from every partition's schedule, batches them
//! into requests within the platform's limits, retries what failed transiently, pauses when the
//! platform throttles, and writes each count it reads to `fans.observations`.
//!
//! [`DispatchCore`] is the plain logic, with time passed in; [`Dispatcher`] is the thin actor
//! around it that spawns the requests and arms the timers. There is exactly one per platform per
//! instance, so one [`Limiter`] holds the platform's whole budget.
//!
//! # What "one slow or failing page never stalls the others" rests on
//! - Requests run concurrently up to `max_in_flight`; a slow one holds one slot, and every
//!   request ends by its timeout.
//! - A per-page error fails that page only (it is counted and marked failing); the rest of the
//!   batch is written.
//! - A transiently failed batch waits out its backoff off the queue, then goes back to the front,
//!   one page at a time, so its pages may be re-batched with others.
//! - A page already queued, in flight or waiting to retry is not queued twice: a platform paused
//!   for hours holds each page once, not once per missed slot.
//!
//! Pages whose partition moved to another instance (their [`Owner`] was released) are dropped
//! before their request is sent; a request already in flight completes and its count is written
//! (an observation is true whoever made it).

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, ActorFutureExt, AsyncContext, Context, Handler, Message, WrapFuture};
use prometheus::{Histogram, IntCounter, IntGauge};
use rand::Rng;

use super::limiter::{Backoff, Limiter, Limits, Permit, Wait};
use super::observation::{self, Observation};
use super::platform::{BatchOutcome, Fetched, PageResult, Platform};
use super::scheduler::PageKey;
use crate::clock::Clock;
use crate::engine::{BatchAck, OutRecord, Sink};
use crate::metrics::Metrics;

/// Whether the partition that scheduled some pages still owns them: released when its task stops
/// (revocation or shutdown), after which its queued pages are dropped unsent.
#[derive(Debug)]
pub struct Owner(AtomicBool);

impl Owner {
    /// A live owner.
    pub fn new() -> Arc<Self> {
        Arc::new(Self(AtomicBool::new(true)))
    }

    /// The partition is gone: its pages are no longer to be polled here.
    pub fn release(&self) {
        self.0.store(false, Ordering::Release);
    }

    /// Still owned.
    pub fn is_alive(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// One page to poll, handed over by a partition's schedule.
#[derive(Debug, Clone)]
pub struct Job {
    /// The page key, `<platform>:<page_id>`.
    pub key: PageKey,
    /// The slot this poll is for (epoch ms): the schedule delay is measured from it.
    pub due_ms: i64,
    /// The partition that scheduled it.
    pub owner: Arc<Owner>,
    /// Failed attempts so far.
    attempt: u32,
    /// Whether its schedule delay was recorded (at the first send).
    delay_observed: bool,
}

impl Job {
    /// A first attempt at polling `key` for the slot `due_ms`.
    pub fn new(key: PageKey, due_ms: i64, owner: Arc<Owner>) -> Self {
        Self { key, due_ms, owner, attempt: 0, delay_observed: false }
    }

    /// The page id: the key without its platform prefix.
    pub fn page_id(&self) -> &str {
        self.key.split_once(':').map_or(&*self.key, |(_, id)| id)
    }
}

/// Where a partition's schedule hands its due pages: the dispatcher of their platform.
pub trait JobQueue: Send + Sync + 'static {
    /// Queues `jobs` (all of this queue's platform).
    fn submit(&self, jobs: Vec<Job>);
}

/// A platform's limits and retry policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Rate, burst, concurrency and saturation pause.
    pub limits: Limits,
    /// Retries of transient failures.
    pub backoff: Backoff,
    /// Answers arriving at most this many milliseconds after their slot are stamped with the
    /// slot ([`stamp_ms`]).
    pub stamp_tolerance_ms: i64,
}

/// The `observed_at` of an answer for the slot `due_ms` that arrived at `now_ms`: the slot when
/// the answer came at most `tolerance_ms` after it (the page's observations then lie on its
/// grid, which its series stores compactly), else the arrival time.
pub fn stamp_ms(due_ms: i64, now_ms: i64, tolerance_ms: i64) -> i64 {
    if (0..=tolerance_ms).contains(&(now_ms - due_ms)) {
        due_ms
    } else {
        now_ms
    }
}

/// One request on its way: the pages it asks for and its concurrency slot.
#[derive(Debug)]
pub struct Request {
    /// The pages, in request order.
    pub jobs: Vec<Job>,
    /// Their ids, as the platform is asked for them.
    pub ids: Vec<String>,
    /// When it was sent (epoch ms).
    pub sent_ms: i64,
    /// Freed when the request is done.
    _permit: Permit,
}

/// What a completed request leaves to do.
#[derive(Debug, Default)]
pub struct Completed {
    /// Observations to write.
    pub observations: Vec<OutRecord>,
    /// Pages to queue again after a delay (a transient failure's backoff).
    pub retry: Option<(Duration, Vec<Job>)>,
}

/// Metric handles of one platform, labelled once.
#[derive(Clone)]
struct PlatformMetrics {
    ok: IntCounter,
    page_error: IntCounter,
    gave_up: IntCounter,
    rejected: IntCounter,
    req_ok: IntCounter,
    req_throttled: IntCounter,
    req_transient: IntCounter,
    req_malformed: IntCounter,
    req_rejected: IntCounter,
    latency: Histogram,
    delay: Histogram,
    pauses: IntCounter,
    failing: IntGauge,
    queue: IntGauge,
}

impl PlatformMetrics {
    fn new(m: &Metrics, platform: &str) -> Self {
        let poll = |o: &str| m.polls.with_label_values(&[platform, o]);
        let req = |o: &str| m.poll_requests.with_label_values(&[platform, o]);
        Self {
            ok: poll("ok"),
            page_error: poll("page_error"),
            gave_up: poll("gave_up"),
            rejected: poll("rejected"),
            req_ok: req("ok"),
            req_throttled: req("throttled"),
            req_transient: req("transient"),
            req_malformed: req("malformed"),
            req_rejected: req("rejected"),
            latency: m.poll_latency.with_label_values(&[platform]),
            delay: m.schedule_delay.with_label_values(&[platform]),
            pauses: m.throttle_pauses.with_label_values(&[platform]),
            failing: m.pages_failing.with_label_values(&[platform]),
            queue: m.poll_queue.with_label_values(&[platform]),
        }
    }
}

/// The `fans.observations` record of one count of the page `key` read at `at_ms`.
pub fn observation(key: &str, fans: u64, followers: Option<u64>, at_ms: i64) -> OutRecord {
    let (platform, page_id) = key.split_once(':').unwrap_or(("", key));
    let value =
        Observation { platform: platform.into(), page_id: page_id.into(), fans, followers, observed_at_ms: at_ms };
    OutRecord::new(observation::TOPIC, key, value.to_json())
}

/// The plain logic of one platform's dispatcher. See the module docs.
pub struct DispatchCore {
    platform: Arc<dyn Platform>,
    /// `platform.name()`, for log lines.
    name: &'static str,
    max_batch: usize,
    queue: VecDeque<Job>,
    /// Pages queued, in flight or waiting to retry.
    pending: HashSet<PageKey>,
    /// Pages whose latest poll failed with a per-page error.
    failing: HashSet<PageKey>,
    limiter: Limiter,
    backoff: Backoff,
    saturated_pause_ms: i64,
    stamp_tolerance_ms: i64,
    m: PlatformMetrics,
}

impl DispatchCore {
    /// A dispatcher core for `platform` with `policy`, at `now_ms`.
    pub fn new(platform: Arc<dyn Platform>, policy: &Policy, metrics: &Metrics, now_ms: i64) -> Self {
        let name = platform.name();
        Self {
            max_batch: platform.max_batch().max(1),
            platform,
            name,
            queue: VecDeque::new(),
            pending: HashSet::new(),
            failing: HashSet::new(),
            limiter: Limiter::new(policy.limits.clone(), now_ms),
            backoff: policy.backoff.clone(),
            saturated_pause_ms: policy.limits.saturated_pause_ms,
            stamp_tolerance_ms: policy.stamp_tolerance_ms,
            m: PlatformMetrics::new(metrics, name),
        }
    }

    /// Queues `jobs`, skipping pages already pending.
    pub fn submit(&mut self, jobs: Vec<Job>) {
        for job in jobs {
            if self.pending.insert(job.key.clone()) {
                self.queue.push_back(job);
            }
        }
        self.m.queue.set(self.pending.len() as i64);
    }

    /// Pages pending (queued, in flight or waiting to retry).
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Pages marked failing.
    pub fn failing(&self) -> usize {
        self.failing.len()
    }

    /// The next request to send at `now_ms`: `Ok(None)` when nothing is queued, `Err` when the
    /// limits say to wait.
    pub fn next_request(&mut self, now_ms: i64) -> Result<Option<Request>, Wait> {
        // Take the next batch of pages still owned, then ask the limiter for its cost: a batch
        // the limiter refuses goes back to the front as it was.
        let mut jobs = Vec::with_capacity(self.max_batch.min(self.queue.len()));
        while jobs.len() < self.max_batch {
            let Some(job) = self.queue.pop_front() else { break };
            if job.owner.is_alive() {
                jobs.push(job);
            } else {
                self.pending.remove(&job.key);
            }
        }
        if jobs.is_empty() {
            self.m.queue.set(self.pending.len() as i64);
            return Ok(None);
        }
        let permit = match self.limiter.try_acquire_cost(now_ms, self.platform.cost(jobs.len())) {
            Ok(p) => p,
            Err(wait) => {
                self.requeue(jobs);
                return Err(wait);
            }
        };
        for job in &mut jobs {
            // A page's delay counts once, at its first send: retries and throttled re-sends
            // are not new polls.
            if !job.delay_observed {
                job.delay_observed = true;
                self.m.delay.observe((now_ms - job.due_ms).max(0) as f64 / 1000.0);
            }
        }
        let ids = jobs.iter().map(|j| j.page_id().to_string()).collect();
        self.m.queue.set(self.pending.len() as i64);
        Ok(Some(Request { jobs, ids, sent_ms: now_ms, _permit: permit }))
    }

    /// Jobs back from their backoff: to the front of the queue.
    pub fn requeue(&mut self, jobs: Vec<Job>) {
        for job in jobs.into_iter().rev() {
            self.queue.push_front(job);
        }
    }

    fn done(&mut self, jobs: &[Job]) {
        for job in jobs {
            self.pending.remove(&job.key);
        }
        self.m.queue.set(self.pending.len() as i64);
    }

    /// Settles `req` with what the platform answered, at `now_ms`.
    pub fn complete<R: Rng + ?Sized>(&mut self, req: Request, fetched: Fetched, now_ms: i64, rng: &mut R) -> Completed {
        let Request { mut jobs, sent_ms, .. } = req;
        self.m.latency.observe((now_ms - sent_ms).max(0) as f64 / 1000.0);
        self.limiter.observe_usage(fetched.usage_pct, now_ms);
        let throttled = matches!(fetched.outcome, BatchOutcome::Throttled { .. });
        if fetched.usage_pct >= 100 || fetched.pause.is_some() || throttled {
            self.m.pauses.inc();
        }
        if let Some(p) = fetched.pause {
            self.limiter.pause_until(now_ms.saturating_add(millis(p)));
        }
        let mut out = Completed::default();
        match fetched.outcome {
            BatchOutcome::Pages(results) => {
                self.m.req_ok.inc();
                for (i, job) in jobs.iter().enumerate() {
                    // Results come in request order; a platform answering fewer fails the rest.
                    let result = results.get(i).filter(|(id, _)| id == job.page_id()).map(|(_, r)| r);
                    match result {
                        Some(PageResult::Counts { fans, followers }) => {
                            self.m.ok.inc();
                            if self.failing.remove(&job.key) {
                                tracing::info!(page = %job.key, "page readable again");
                            }
                            let at_ms = stamp_ms(job.due_ms, now_ms, self.stamp_tolerance_ms);
                            out.observations.push(observation(&job.key, *fans, *followers, at_ms));
                        }
                        other => {
                            self.m.page_error.inc();
                            let why = match other {
                                Some(PageResult::Failed { code, message }) => format!("code {code}: {message}"),
                                _ => "missing from the answer".to_string(),
                            };
                            if self.failing.insert(job.key.clone()) {
                                tracing::warn!(page = %job.key, reason = %why, "page failing");
                            }
                        }
                    }
                }
                self.failing.shrink_to_fit_if_sparse();
                self.m.failing.set(self.failing.len() as i64);
                self.done(&jobs);
            }
            BatchOutcome::Throttled { code, retry_after } => {
                self.m.req_throttled.inc();
                let pause = retry_after.map_or(self.saturated_pause_ms, millis);
                tracing::warn!(platform = self.name, code, pause_ms = pause, "throttled: pausing the platform");
                self.limiter.pause_until(now_ms.saturating_add(pause));
                self.requeue(jobs);
            }
            BatchOutcome::Transient { .. } | BatchOutcome::Malformed { .. } => {
                let (what, kind) = match &fetched.outcome {
                    BatchOutcome::Transient { status, message } => (format!("HTTP {status}: {message}"), "transient"),
                    BatchOutcome::Malformed { reason } => (reason.clone(), "malformed"),
                    _ => unreachable!("matched above"),
                };
                if kind == "transient" {
                    self.m.req_transient.inc();
                } else {
                    self.m.req_malformed.inc();
                }
                let attempt = jobs.iter().map(|j| j.attempt).max().unwrap_or(0);
                match self.backoff.next_delay(attempt, rng) {
                    Some(delay) => {
                        tracing::debug!(platform = self.name, attempt, ?delay, reason = %what, "retrying a request");
                        for job in &mut jobs {
                            job.attempt += 1;
                        }
                        out.retry = Some((delay, jobs));
                    }
                    None => {
                        tracing::warn!(platform = self.name, pages = jobs.len(), reason = %what,
                            "request failed after every retry; its pages wait for their next slot");
                        self.m.gave_up.inc_by(jobs.len() as u64);
                        self.done(&jobs);
                    }
                }
            }
            BatchOutcome::Rejected { code, message } => {
                self.m.req_rejected.inc();
                self.m.rejected.inc_by(jobs.len() as u64);
                tracing::error!(platform = self.name, code, %message, pages = jobs.len(), "the platform refused a request");
                self.done(&jobs);
            }
        }
        out
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Shrinks a set that grew large and emptied, so a burst of failures does not pin its memory.
trait ShrinkIfSparse {
    fn shrink_to_fit_if_sparse(&mut self);
}

impl<T: std::hash::Hash + Eq> ShrinkIfSparse for HashSet<T> {
    fn shrink_to_fit_if_sparse(&mut self) {
        if self.capacity() > 1024 && self.len() < self.capacity() / 8 {
            self.shrink_to_fit();
        }
    }
}

/// Queues pages with a dispatcher.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Submit(pub Vec<Job>);

/// The dispatcher actor of one platform. See the module docs.
pub struct Dispatcher {
    core: DispatchCore,
    sink: Arc<dyn Sink>,
    clock: Arc<dyn Clock>,
    /// The earliest wake-up already armed, so a wait does not arm a timer per message.
    wake_at: Option<i64>,
}

impl Dispatcher {
    /// A dispatcher for `platform`, writing observations to `sink`.
    pub fn new(
        platform: Arc<dyn Platform>,
        policy: &Policy,
        sink: Arc<dyn Sink>,
        metrics: &Metrics,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let core = DispatchCore::new(platform, policy, metrics, clock.now().timestamp_millis());
        Self { core, sink, clock, wake_at: None }
    }

    fn now_ms(&self) -> i64 {
        self.clock.now().timestamp_millis()
    }

    /// Sends every request the limits allow now, and arms a wake-up for when they allow more.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        loop {
            let now = self.now_ms();
            match self.core.next_request(now) {
                Ok(None) | Err(Wait::Concurrency) => break,
                Ok(Some(req)) => {
                    let fut = self.core.platform.fetch(req.ids.clone());
                    ctx.spawn(fut.into_actor(self).map(move |fetched, act, ctx| act.finish(req, fetched, ctx)));
                }
                Err(wait) => {
                    let until = wait.until_ms().unwrap_or(now + 1);
                    if self.wake_at.is_none_or(|t| until < t || t < now) {
                        self.wake_at = Some(until);
                        let after = Duration::from_millis(u64::try_from(until - now).unwrap_or(0).max(1));
                        ctx.run_later(after, |act, ctx| {
                            act.wake_at = None;
                            act.pump(ctx);
                        });
                    }
                    break;
                }
            }
        }
    }

    fn finish(&mut self, req: Request, fetched: Fetched, ctx: &mut Context<Self>) {
        let now = self.now_ms();
        let done = self.core.complete(req, fetched, now, &mut rand::thread_rng());
        if !done.observations.is_empty() {
            let ack = BatchAck::untracked();
            for rec in done.observations {
                self.sink.send(rec, &ack);
            }
            ack.processed();
        }
        if let Some((delay, jobs)) = done.retry {
            ctx.run_later(delay, move |act, ctx| {
                act.core.requeue(jobs);
                act.pump(ctx);
            });
        }
        self.pump(ctx);
    }
}

impl Actor for Dispatcher {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Self::Context) {
        tracing::debug!(platform = self.core.name, "dispatcher started");
    }
}

impl Handler<Submit> for Dispatcher {
    type Result = ();

    fn handle(&mut self, msg: Submit, ctx: &mut Self::Context) {
        self.core.submit(msg.0);
        self.pump(ctx);
    }
}

impl JobQueue for actix::Addr<Dispatcher> {
    fn submit(&self, jobs: Vec<Job>) {
        self.do_send(Submit(jobs));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::MemorySink;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    const T0: i64 = 1_795_428_000_000;

    /// A platform whose answers the test decides; `fetch` answers every id with its index, after
    /// `slow_for` when the batch holds the id `slow`.
    struct Fake {
        max: usize,
        slow: Option<(&'static str, Duration)>,
    }

    impl Platform for Fake {
        fn name(&self) -> &'static str {
            "fake"
        }
        fn max_batch(&self) -> usize {
            self.max
        }
        fn cost(&self, ids: usize) -> u32 {
            ids as u32
        }
        fn fetch(&self, ids: Vec<String>) -> crate::poll::platform::FetchFuture {
            let slow = self.slow.filter(|(id, _)| ids.iter().any(|i| i == id)).map(|(_, d)| d);
            Box::pin(async move {
                if let Some(d) = slow {
                    tokio::time::sleep(d).await;
                }
                let pages = ids
                    .into_iter()
                    .map(|id| {
                        let n: u64 = id.trim_start_matches('p').parse().unwrap_or(0);
                        (id, PageResult::Counts { fans: n, followers: Some(n + 1) })
                    })
                    .collect();
                Fetched { outcome: BatchOutcome::Pages(pages), usage_pct: 10, pause: None }
            })
        }
    }

    fn policy(rate: f64, burst: u32, in_flight: u32, attempts: u32) -> Policy {
        Policy {
            limits: Limits { rate_per_sec: rate, burst, max_in_flight: in_flight, saturated_pause_ms: 60_000 },
            backoff: Backoff { base: Duration::from_millis(100), max: Duration::from_secs(10), attempts },
            stamp_tolerance_ms: 0,
        }
    }

    fn core(max: usize, p: &Policy) -> (DispatchCore, Metrics) {
        let m = Metrics::new();
        (DispatchCore::new(Arc::new(Fake { max, slow: None }), p, &m, T0), m)
    }

    fn jobs(range: std::ops::Range<u32>, owner: &Arc<Owner>) -> Vec<Job> {
        range.map(|i| Job::new(format!("fake:p{i}").into(), T0, owner.clone())).collect()
    }

    fn fetched(outcome: BatchOutcome) -> Fetched {
        Fetched { outcome, usage_pct: 0, pause: None }
    }

    fn counts(req: &Request) -> BatchOutcome {
        BatchOutcome::Pages(
            req.ids.iter().map(|id| (id.clone(), PageResult::Counts { fans: 7, followers: None })).collect(),
        )
    }

    fn polls(m: &Metrics, outcome: &str) -> u64 {
        m.polls.with_label_values(&["fake", outcome]).get()
    }

    #[test]
    fn batches_hold_at_most_max_batch_ids_and_pages_queue_once() {
        let (mut c, _) = core(50, &policy(1e6, 1000, 100, 3));
        let owner = Owner::new();
        c.submit(jobs(0..120, &owner));
        c.submit(jobs(100..110, &owner)); // already pending: ignored
        assert_eq!(c.pending(), 120);
        let sizes: Vec<usize> =
            std::iter::from_fn(|| c.next_request(T0).expect("within limits")).map(|r| r.jobs.len()).collect();
        assert_eq!(sizes, [50, 50, 20]);
        assert_eq!(c.pending(), 120, "in flight still counts as pending");
    }

    #[test]
    fn counts_become_observations_and_a_failing_page_fails_alone() {
        let (mut c, m) = core(50, &policy(1e6, 1000, 100, 3));
        let owner = Owner::new();
        c.submit(jobs(1..4, &owner));
        let req = c.next_request(T0 + 250).expect("limits").expect("a request");
        assert_eq!(req.ids, ["p1", "p2", "p3"]);
        let answer = BatchOutcome::Pages(vec![
            ("p1".into(), PageResult::Counts { fans: 10, followers: Some(11) }),
            ("p2".into(), PageResult::Failed { code: 100, message: "no such page".into() }),
            ("p3".into(), PageResult::Counts { fans: 30, followers: None }),
        ]);
        let done = c.complete(req, fetched(answer), T0 + 400, &mut StdRng::seed_from_u64(1));
        assert!(done.retry.is_none());
        let values: Vec<(String, serde_json::Value)> = done
            .observations
            .iter()
            .map(|r| {
                assert_eq!(r.topic, observation::TOPIC);
                (
                    String::from_utf8(r.key.clone().expect("key")).expect("utf8"),
                    serde_json::from_slice(r.value.as_deref().expect("value")).expect("json"),
                )
            })
            .collect();
        assert_eq!(values.len(), 2);
        assert_eq!(values[0].0, "fake:p1");
        assert_eq!(
            values[0].1,
            serde_json::json!({"platform": "fake", "page_id": "p1", "fans": 10, "followers": 11, "observed_at": "2026-11-23T10:00:00.400Z"})
        );
        assert_eq!(values[1].1["followers"], serde_json::Value::Null);
        assert_eq!((c.failing(), c.pending()), (1, 0));
        assert_eq!((polls(&m, "ok"), polls(&m, "page_error")), (2, 1));
        assert_eq!(m.schedule_delay.with_label_values(&["fake"]).get_sample_sum(), 0.75, "3 pages 250 ms late");
        // The failing page recovers on its next good poll.
        c.submit(jobs(2..3, &owner));
        let req = c.next_request(T0 + 600_000).expect("limits").expect("a request");
        let ok = counts(&req);
        c.complete(req, fetched(ok), T0 + 600_010, &mut StdRng::seed_from_u64(1));
        assert_eq!(c.failing(), 0);
        assert_eq!(m.pages_failing.with_label_values(&["fake"]).get(), 0);
    }

    #[test]
    fn answers_within_the_tolerance_are_stamped_with_their_slot() {
        assert_eq!(stamp_ms(1000, 1000, 0), 1000);
        assert_eq!(stamp_ms(1000, 1001, 0), 1001);
        assert_eq!(stamp_ms(1000, 1500, 500), 1000);
        assert_eq!(stamp_ms(1000, 1501, 500), 1501);
        assert_eq!(stamp_ms(1000, 999, 500), 999, "an answer before its slot keeps its time");
        let observed_at = |tolerance_ms: i64, answered: i64| {
            let (mut c, _) = core(50, &Policy { stamp_tolerance_ms: tolerance_ms, ..policy(1e6, 1000, 100, 3) });
            c.submit(jobs(1..2, &Owner::new()));
            let req = c.next_request(T0 + 100).expect("limits").expect("a request");
            let ok = counts(&req);
            let done = c.complete(req, fetched(ok), answered, &mut StdRng::seed_from_u64(1));
            let v: serde_json::Value =
                serde_json::from_slice(done.observations[0].value.as_deref().expect("value")).expect("json");
            v["observed_at"].as_str().expect("observed_at").to_string()
        };
        // The slot of these jobs is T0 (2026-11-23T10:00:00Z).
        assert_eq!(observed_at(1000, T0 + 400), "2026-11-23T10:00:00.000Z");
        assert_eq!(observed_at(1000, T0 + 1000), "2026-11-23T10:00:00.000Z");
        assert_eq!(observed_at(1000, T0 + 1001), "2026-11-23T10:00:01.001Z");
        assert_eq!(observed_at(0, T0 + 400), "2026-11-23T10:00:00.400Z");
    }

    #[test]
    fn throttling_pauses_the_platform_and_keeps_the_pages_first_in_line() {
        let (mut c, m) = core(2, &policy(1e6, 1000, 100, 3));
        let owner = Owner::new();
        c.submit(jobs(1..5, &owner));
        let req = c.next_request(T0).expect("limits").expect("request");
        let throttled = BatchOutcome::Throttled { code: 4, retry_after: Some(Duration::from_secs(60)) };
        let done = c.complete(
            req,
            Fetched { outcome: throttled, usage_pct: 100, pause: None },
            T0 + 10,
            &mut StdRng::seed_from_u64(1),
        );
        assert!(done.observations.is_empty() && done.retry.is_none());
        assert_eq!(c.next_request(T0 + 59_000).err(), Some(Wait::Paused { until_ms: T0 + 60_010 }));
        assert_eq!(c.pending(), 4, "throttled pages stay pending");
        // The bucket restarts empty after a pause (a ramp, not a burst): a moment later it serves.
        let req = c.next_request(T0 + 60_100).expect("pause over").expect("request");
        assert_eq!(req.ids, ["p1", "p2"], "the throttled batch goes first");
        assert_eq!(m.schedule_delay.with_label_values(&["fake"]).get_sample_count(), 2, "a re-send is not a new poll");
        assert_eq!(m.throttle_pauses.with_label_values(&["fake"]).get(), 1);
        assert_eq!(m.poll_requests.with_label_values(&["fake", "throttled"]).get(), 1);
    }

    #[test]
    fn a_pause_the_platform_asks_for_holds_even_on_success() {
        let (mut c, _) = core(50, &policy(1e6, 1000, 100, 3));
        let owner = Owner::new();
        c.submit(jobs(1..3, &owner));
        let req = c.next_request(T0).expect("limits").expect("request");
        c.submit(jobs(3..4, &owner));
        let ok = counts(&req);
        let f = Fetched { outcome: ok, usage_pct: 50, pause: Some(Duration::from_secs(120)) };
        c.complete(req, f, T0, &mut StdRng::seed_from_u64(1));
        assert_eq!(c.next_request(T0 + 1).err(), Some(Wait::Paused { until_ms: T0 + 120_000 }));
    }

    #[test]
    fn transient_failures_retry_with_growing_backoff_then_give_up() {
        let (mut c, m) = core(50, &policy(1e6, 1000, 100, 2));
        let owner = Owner::new();
        c.submit(jobs(1..4, &owner));
        let mut rng = StdRng::seed_from_u64(7);
        let mut now = T0;
        let mut delays = Vec::new();
        for round in 0..3 {
            let req = c.next_request(now).expect("limits").expect("request");
            assert_eq!(req.jobs.len(), 3, "round {round}");
            let outcome = if round == 1 {
                BatchOutcome::Malformed { reason: "truncated".into() }
            } else {
                BatchOutcome::Transient { status: 503, message: "busy".into() }
            };
            let done = c.complete(req, fetched(outcome), now, &mut rng);
            match done.retry {
                Some((delay, jobs)) => {
                    delays.push(delay);
                    now += delay.as_millis() as i64;
                    c.requeue(jobs);
                }
                None => assert_eq!(round, 2, "two retries, then give up"),
            }
        }
        assert!(delays[0] <= Duration::from_millis(100) && delays[1] <= Duration::from_millis(200), "{delays:?}");
        assert_eq!((polls(&m, "gave_up"), c.pending()), (3, 0));
        assert_eq!(m.poll_requests.with_label_values(&["fake", "transient"]).get(), 2);
        assert_eq!(m.poll_requests.with_label_values(&["fake", "malformed"]).get(), 1);
    }

    #[test]
    fn rejected_requests_count_their_pages_and_free_them() {
        let (mut c, m) = core(50, &policy(1e6, 1000, 100, 2));
        c.submit(jobs(1..3, &Owner::new()));
        let req = c.next_request(T0).expect("limits").expect("request");
        let rejected = BatchOutcome::Rejected { code: 190, message: "invalid token".into() };
        c.complete(req, fetched(rejected), T0, &mut StdRng::seed_from_u64(1));
        assert_eq!((polls(&m, "rejected"), c.pending()), (2, 0));
    }

    #[test]
    fn pages_of_a_released_partition_are_dropped_unsent() {
        let (mut c, _) = core(50, &policy(1e6, 1000, 100, 2));
        let (gone, kept) = (Owner::new(), Owner::new());
        c.submit(jobs(1..3, &gone));
        c.submit(jobs(3..5, &kept));
        gone.release();
        let req = c.next_request(T0).expect("limits").expect("request");
        assert_eq!(req.ids, ["p3", "p4"]);
        assert_eq!(c.pending(), 2);
        // A queue holding only released pages sends nothing at all.
        let released = Owner::new();
        c.submit(jobs(5..8, &released));
        released.release();
        assert!(c.next_request(T0).expect("nothing to limit").is_none());
        assert_eq!(c.pending(), 2);
    }

    #[test]
    fn concurrency_and_rate_bound_the_requests() {
        let (mut c, _) = core(10, &policy(1e6, 1000, 1, 2));
        c.submit(jobs(0..20, &Owner::new()));
        let first = c.next_request(T0).expect("limits").expect("request");
        assert_eq!(c.next_request(T0).err(), Some(Wait::Concurrency));
        drop(first);
        assert!(c.next_request(T0).expect("slot freed").is_some());

        // Every id costs a call: 25 calls per second with a burst of 25 allow two batches of 10,
        // then the third waits until 5 more calls have been refilled (200 ms).
        let (mut c, _) = core(10, &policy(25.0, 25, 100, 2));
        c.submit(jobs(0..30, &Owner::new()));
        let _a = c.next_request(T0).expect("limits").expect("request");
        let _b = c.next_request(T0).expect("limits").expect("request");
        assert_eq!(c.next_request(T0).err(), Some(Wait::Rate { until_ms: T0 + 200 }));
        assert!(c.next_request(T0 + 200).expect("refilled").is_some());
    }

    #[actix_rt::test]
    async fn the_actor_polls_submitted_pages_and_writes_their_counts() {
        let sink = MemorySink::new();
        let m = Metrics::new();
        let platform: Arc<dyn Platform> = Arc::new(Fake { max: 50, slow: None });
        let addr =
            Dispatcher::new(platform, &policy(1e6, 1000, 4, 2), sink.clone(), &m, Arc::new(crate::clock::SystemClock))
                .start();
        let owner = Owner::new();
        JobQueue::submit(&addr, jobs(1..121, &owner));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while sink.records_for(observation::TOPIC).len() < 120 {
            assert!(std::time::Instant::now() < deadline, "observations not written in time");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut seen: Vec<u64> = sink
            .records_for(observation::TOPIC)
            .iter()
            .map(|r| {
                serde_json::from_slice::<serde_json::Value>(r.value.as_deref().expect("value")).expect("json")["fans"]
                    .as_u64()
                    .expect("fans")
            })
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, (1..121).collect::<Vec<u64>>());
        assert_eq!(m.poll_requests.with_label_values(&["fake", "ok"]).get(), 3);
    }

    #[actix_rt::test]
    async fn a_slow_page_holds_one_request_slot_and_nothing_else() {
        let sink = MemorySink::new();
        let m = Metrics::new();
        let platform: Arc<dyn Platform> = Arc::new(Fake { max: 1, slow: Some(("p0", Duration::from_secs(3))) });
        let clock = Arc::new(crate::clock::SystemClock);
        let addr = Dispatcher::new(platform, &policy(1e6, 1000, 4, 2), sink.clone(), &m, clock).start();
        JobQueue::submit(&addr, jobs(0..21, &Owner::new()));
        let fans = |sink: &MemorySink| -> Vec<u64> {
            sink.records_for(observation::TOPIC)
                .iter()
                .map(|r| {
                    let v: serde_json::Value =
                        serde_json::from_slice(r.value.as_deref().expect("value")).expect("json");
                    v["fans"].as_u64().expect("fans")
                })
                .collect()
        };
        let started = std::time::Instant::now();
        while fans(&sink).len() < 20 {
            assert!(started.elapsed() < Duration::from_secs(2), "the other pages waited for the slow one");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(!fans(&sink).contains(&0), "the slow page answered early");
        while !fans(&sink).contains(&0) {
            assert!(started.elapsed() < Duration::from_secs(10), "the slow page never completed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
