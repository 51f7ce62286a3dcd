//! The membership watchdog's thread: keeps this instance's [`Claim`] current on the instances
//! topic, reads everyone else's into an [`InstanceMap`], and runs the [`Watchdog`] over them,
//! asking the polling thread to rejoin the group when input partitions are left without a live
//! owner (see [`super::instances`] for why and when).
//!
//! It has its own small producer and consumer: a claim must not wait behind a queue of outputs,
//! or a busy instance would look dead to the others.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

use super::client;
use super::coordinator;
use super::instances::{by_topic, Claim, InstanceMap, TopicPartition, Verdict, Watchdog};
use super::source::Source;
use crate::config::Config;
use crate::metrics::Metrics;

/// Logical name of the instances topic of consumer group `group_id`.
pub fn instances_topic(group_id: &str) -> String {
    format!("{group_id}-instances")
}

/// Creates the instances topic of `cfg`'s group unless it exists.
pub async fn ensure_topic(cfg: &Config) -> Result<Option<String>, super::admin::Error> {
    let name = instances_topic(&cfg.kafka.group_id);
    let full = cfg.topic(&name);
    if super::admin::list(cfg)?.iter().any(|t| t.name == full) {
        return Ok(None);
    }
    for c in super::admin::create(cfg, &[super::topics::TopicDef::instances(&name)]).await? {
        tracing::info!(created = ?c, "instances topic");
    }
    Ok(Some(full))
}

/// Claims read from the backlog at start-up: enough for the last few heartbeats of hundreds of
/// instances (only claims younger than a session timeout matter).
const BACKLOG: i64 = 2_000;

/// Timing of the watchdog, derived from the group's session timeout.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// A claim older than this is dead: the session timeout, as for the group's own members.
    pub timeout: Duration,
    /// How often the claim is re-sent: a quarter of the timeout, like librdkafka's heartbeats.
    pub heartbeat: Duration,
    /// How long orphans must persist before a rejoin: half the timeout, longer than a broker
    /// that reassigns by itself takes to do so.
    pub grace: Duration,
    /// Least time between two rejoins: one timeout (a rejoin settles within it).
    pub backoff: Duration,
    /// How often the group is checked.
    pub check: Duration,
}

impl Timing {
    /// The timing for session timeout `session`.
    pub fn for_session(session: Duration) -> Self {
        Self {
            timeout: session,
            heartbeat: (session / 4).max(Duration::from_millis(250)),
            grace: (session / 2).max(Duration::from_secs(1)),
            backoff: session,
            check: (session / 8).clamp(Duration::from_millis(250), Duration::from_secs(2)),
        }
    }
}

/// What the watchdog thread needs.
pub struct Setup {
    /// The group's consumer: read for its assignment and the input topics' partitions.
    pub consumer: Arc<Source>,
    /// Full names of the input topics.
    pub inputs: Vec<String>,
    /// Full names of pagepulse's own topics for this group (changelogs): if the broker stops
    /// knowing one, it lost its data, and the engine must start again from what it has.
    pub internal: Vec<String>,
    /// The address the HTTP endpoint listens on (part of the claim).
    pub http: String,
    /// Where to count.
    pub metrics: Metrics,
    /// The thread stops (sending a tombstone) when this is set.
    pub stop: Arc<AtomicBool>,
    /// Triggered with a restart when the broker lost its data.
    pub shutdown: crate::engine::Shutdown,
    /// This process's member ids, across engine incarnations.
    pub members: MemberHistory,
    /// Kept current at every check: who holds which input partition, for the HTTP API.
    pub directory: Arc<super::instances::Directory>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Starts the watchdog thread. Fails only when its Kafka clients cannot be created.
pub fn spawn(cfg: &Config, setup: Setup) -> Result<JoinHandle<()>, client::Error> {
    let topic = cfg.topic(&instances_topic(&cfg.kafka.group_id));
    let timing = Timing::for_session(cfg.kafka.session_timeout);
    let instance = format!("{}-{:016x}", cfg.kafka.client_id, rand::random::<u64>());
    let mut pc = client::base(&cfg.kafka);
    pc.set("linger.ms", "0")
        .set("acks", "all")
        // A claim older than the timeout is useless: never retry it past that.
        .set("message.timeout.ms", timing.timeout.as_millis().to_string())
        .set("queue.buffering.max.messages", "1000");
    let producer: ThreadedProducer<DefaultProducerContext> = pc.create().map_err(client::Error::Client)?;
    let mut cc = client::base(&cfg.kafka);
    cc.set("group.id", format!("{}-instances", cfg.kafka.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "100");
    let reader: BaseConsumer = cc.create().map_err(client::Error::Client)?;
    let connect = cfg.kafka.connect_timeout;
    let plaintext = cfg.kafka.consumer.get("security.protocol").is_none_or(|p| p.eq_ignore_ascii_case("plaintext"));
    let target = plaintext.then(|| coordinator::Target {
        brokers: cfg.kafka.brokers.clone(),
        group: cfg.kafka.group_id.clone(),
        client_id: cfg.kafka.client_id.clone(),
        session_timeout: cfg.kafka.session_timeout,
        timeout: connect.min(Duration::from_secs(5)),
    });
    let handle = std::thread::Builder::new()
        .name("pp-watchdog".into())
        .spawn(move || {
            let mut runner = Runner::new(instance, topic, timing, connect, producer, reader, setup);
            runner.coordinator = target;
            runner.run()
        })
        .map_err(|e| client::Error::Client(rdkafka::error::KafkaError::ClientCreation(e.to_string())))?;
    Ok(handle)
}

struct Runner {
    instance: String,
    topic: String,
    timing: Timing,
    connect: Duration,
    producer: ThreadedProducer<DefaultProducerContext>,
    reader: BaseConsumer,
    setup: Setup,
    map: InstanceMap,
    watchdog: Watchdog,
    /// Offsets of the instances topic's partitions up to which claims are the start-up backlog.
    backlog_end: Vec<(i32, i64)>,
    assigned_reader: bool,
    /// Consecutive checks that found one of our own topics missing.
    lost_checks: u32,
    /// Input topics reported missing (logged once each until they come back).
    missing_inputs: BTreeSet<String>,
    /// This process's member ids in the group, newest last (at most [`MEMBER_HISTORY`]); kept
    /// by the process, so that an engine restart can release its predecessor's ids.
    members: MemberHistory,
    /// Where dead members are released (see `kafka::coordinator`); `None` when the cluster
    /// needs TLS or SASL, which that minimal client does not speak.
    coordinator: Option<coordinator::Target>,
}

/// Member ids of this process remembered for release.
const MEMBER_HISTORY: usize = 8;

/// The member ids this process had in its group, newest last, shared by the watchdogs of
/// successive engine incarnations.
#[derive(Debug, Clone, Default)]
pub struct MemberHistory(Arc<std::sync::Mutex<Vec<String>>>);

impl MemberHistory {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        // Plain data: a panic while holding the lock leaves nothing half-done.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes `id` as the current member id.
    pub fn note(&self, id: String) {
        let mut m = self.lock();
        if m.last() != Some(&id) {
            m.retain(|x| *x != id);
            m.push(id);
            if m.len() > MEMBER_HISTORY {
                m.remove(0);
            }
        }
    }

    /// The newest id.
    pub fn current(&self) -> Option<String> {
        self.lock().last().cloned()
    }

    /// Every id, newest first.
    pub fn all(&self) -> Vec<String> {
        self.lock().iter().rev().cloned().collect()
    }

    /// Forgets `id` (released).
    pub fn forget(&self, id: &str) {
        self.lock().retain(|x| x != id);
    }
}
/// Most member ids released before one rejoin.
const MAX_RELEASES: usize = 16;

impl Runner {
    fn new(
        instance: String,
        topic: String,
        timing: Timing,
        connect: Duration,
        producer: ThreadedProducer<DefaultProducerContext>,
        reader: BaseConsumer,
        setup: Setup,
    ) -> Self {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let members = setup.members.clone();
        Self {
            instance,
            topic,
            timing,
            connect,
            producer,
            reader,
            setup,
            map: InstanceMap::new(),
            watchdog: Watchdog::new(ms(timing.grace), ms(timing.backoff)),
            backlog_end: Vec::new(),
            assigned_reader: false,
            lost_checks: 0,
            missing_inputs: BTreeSet::new(),
            members,
            coordinator: None,
        }
    }

    fn ms(d: Duration) -> i64 {
        i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
    }

    /// Assigns the reader to the tail of the instances topic; retried at every check until the
    /// broker answers.
    fn assign_reader(&mut self) {
        let Ok(md) = self.reader.fetch_metadata(Some(&self.topic), self.connect) else { return };
        let partitions: Vec<i32> = md
            .topics()
            .iter()
            .filter(|t| t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if partitions.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        let mut ends = Vec::new();
        for p in partitions {
            let Ok((low, high)) = self.reader.fetch_watermarks(&self.topic, p, self.connect) else { return };
            if tpl.add_partition_offset(&self.topic, p, Offset::Offset(low.max(high - BACKLOG))).is_err() {
                return;
            }
            ends.push((p, high));
        }
        if let Err(e) = self.reader.assign(&tpl) {
            tracing::warn!(topic = self.topic, error = %e, "cannot read the instances topic");
            return;
        }
        self.backlog_end = ends;
        self.assigned_reader = true;
    }

    fn own_claim(&self) -> Claim {
        let pairs: Vec<TopicPartition> = match self.setup.consumer.assignment() {
            Ok(tpl) => tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect(),
            Err(_) => Vec::new(),
        };
        Claim {
            instance: self.instance.clone(),
            http: self.setup.http.clone(),
            member: self.members.current(),
            partitions: by_topic(&pairs),
            sent_at_ms: now_ms(),
        }
    }

    /// Notes this process's current member id, remembering earlier ones.
    fn note_member(&mut self) {
        if let Some(id) = coordinator::member_id(&self.setup.consumer) {
            self.members.note(id);
        }
    }

    /// Releases member ids that may hold the group up: this process's earlier ones, and those of
    /// instances whose claims went stale (see `kafka::coordinator`).
    fn release_dead_members(&mut self, now: i64, timeout: i64) {
        let Some(target) = &self.coordinator else { return };
        let current = coordinator::member_id(&self.setup.consumer);
        let mut ids: Vec<String> = self.members.all();
        ids.extend(self.map.dead(now, timeout).filter_map(|c| c.member.clone()));
        ids.retain(|id| Some(id) != current.as_ref());
        ids.dedup();
        for id in ids.into_iter().take(MAX_RELEASES) {
            match coordinator::release(target, &id, &self.setup.inputs) {
                Ok(coordinator::Released::Unknown) => {
                    tracing::debug!(member = id, "a dead member id the coordinator does not know")
                }
                Ok(outcome) => tracing::warn!(member = id, ?outcome, "released a dead member of the group"),
                Err(e) => tracing::debug!(member = id, error = %e, "could not release a dead member id"),
            }
            self.members.forget(&id);
        }
    }

    fn publish(&self, claim: Option<&Claim>) {
        let value = claim.map(|c| serde_json::to_vec(c).expect("a claim serializes"));
        let mut rec = BaseRecord::<str, [u8]>::to(&self.topic).key(self.instance.as_str());
        if let Some(v) = value.as_deref() {
            rec = rec.payload(v);
        }
        if let Err((e, _)) = self.producer.send(rec) {
            self.setup.metrics.kafka_errors.with_label_values(&["instances"]).inc();
            tracing::debug!(error = %e, "instance claim not sent");
        }
    }

    /// The partitions of `topic`: `Ok(None)` when the broker says it does not exist, `Err` when
    /// the broker does not answer.
    fn partitions_of(&self, topic: &str) -> Result<Option<Vec<i32>>, ()> {
        let md = self.setup.consumer.fetch_metadata(Some(topic), self.connect).map_err(|_| ())?;
        let Some(mt) = md.topics().iter().find(|t| t.name() == topic) else { return Ok(None) };
        if mt.error().is_some() || mt.partitions().is_empty() {
            return Ok(None);
        }
        Ok(Some(mt.partitions().iter().map(|p| p.id()).collect()))
    }

    /// Every partition of the input topics, or `None` when the broker does not answer.
    fn all_partitions(&mut self) -> Option<BTreeSet<TopicPartition>> {
        let mut all = BTreeSet::new();
        for t in self.setup.inputs.clone() {
            match self.partitions_of(&t).ok()? {
                Some(ps) => {
                    if self.missing_inputs.remove(&t) {
                        tracing::info!(topic = t, "input topic is back");
                    }
                    all.extend(ps.into_iter().map(|p| (t.clone(), p)));
                }
                None => {
                    if self.missing_inputs.insert(t.clone()) {
                        tracing::warn!(
                            topic = t,
                            "input topic does not exist (any more): waiting for it to be created"
                        );
                    }
                }
            }
        }
        Some(all)
    }

    /// Restarts the engine when the broker no longer knows one of pagepulse's own topics two
    /// checks in a row: it lost its data (e.g. a broker without persistent storage restarted).
    fn check_internal(&mut self) {
        let missing: Vec<String> = self
            .setup
            .internal
            .iter()
            .chain(std::iter::once(&self.topic))
            .filter(|t| matches!(self.partitions_of(t), Ok(None)))
            .cloned()
            .collect();
        if missing.is_empty() {
            self.lost_checks = 0;
            return;
        }
        self.lost_checks += 1;
        if self.lost_checks < 2 {
            return;
        }
        let why = format!(
            "the broker lost its data: pagepulse's own topics {} no longer exist (a broker restarted without persistent \
             storage?). The engine starts again from what the broker holds now: it recreates them, state kept in them \
             before is gone, and input is read from the committed offsets the broker still has (else from the earliest)",
            missing.join(", ")
        );
        tracing::error!(missing = ?missing, "the broker lost its data");
        self.setup.shutdown.trigger(crate::engine::shutdown::Reason::Restart { kind: "broker_data_lost", why });
    }

    fn read(&mut self) {
        let Some(msg) = self.reader.poll(Duration::from_millis(50)) else { return };
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(error = %e, "instances topic read error");
                return;
            }
        };
        let now = now_ms();
        let in_backlog = self.backlog_end.iter().any(|&(p, end)| p == msg.partition() && msg.offset() + 1 < end);
        let Some(key) = msg.key().and_then(|k| std::str::from_utf8(k).ok()) else { return };
        match msg.payload() {
            None => self.map.remove(key),
            Some(v) => match serde_json::from_slice::<Claim>(v) {
                Ok(claim) if claim.instance == key => {
                    let seen = if in_backlog { claim.sent_at_ms.min(now) } else { now };
                    self.map.apply(claim, seen);
                }
                // Not ours to judge: another version's record, or garbage. Ignored, never fatal.
                Ok(_) | Err(_) => tracing::debug!(key, "ignored a record on the instances topic"),
            },
        }
    }

    fn check(&mut self) {
        self.check_internal();
        let Some(all) = self.all_partitions() else { return };
        let own = self.own_claim();
        let now = now_ms();
        let timeout = Self::ms(self.timing.timeout);
        self.map.expire(now, 10 * timeout);
        self.setup.directory.update(&own, &self.map, &all, now, timeout);
        let (check, verdict) = self.watchdog.check(&own, &self.map, &all, now, timeout);
        let m = &self.setup.metrics;
        m.group_live_instances.set(check.live_instances as i64);
        m.group_orphaned_partitions.set(check.orphaned.len() as i64);
        if let Verdict::Rejoin(reason) = verdict {
            m.group_rejoins.with_label_values(&[reason.as_str()]).inc();
            tracing::warn!(
                orphaned = ?check.orphaned,
                owned = check.owned,
                total = check.total,
                live_instances = check.live_instances,
                grace = ?self.timing.grace,
                "input partitions have had no live owner while this instance holds fewer than its share: \
                 rejoining the consumer group so that the coordinator assigns them again"
            );
            self.release_dead_members(now, timeout);
            self.setup.consumer.context().request_rejoin();
        }
    }

    fn run(mut self) {
        let mut last_claim: Option<(Instant, Claim)> = None;
        let mut last_check = Instant::now();
        while !self.setup.stop.load(Ordering::Acquire) {
            if !self.assigned_reader {
                self.assign_reader();
                if !self.assigned_reader {
                    std::thread::sleep(Duration::from_millis(200));
                }
            } else {
                self.read();
            }
            self.note_member();
            let own = self.own_claim();
            let due = match &last_claim {
                None => true,
                Some((at, prev)) => at.elapsed() >= self.timing.heartbeat || prev.partitions != own.partitions,
            };
            if due {
                self.publish(Some(&own));
                last_claim = Some((Instant::now(), own));
            }
            if self.assigned_reader && last_check.elapsed() >= self.timing.check {
                last_check = Instant::now();
                self.check();
            }
        }
        // Stopping cleanly: the others need not wait for the claim to go stale.
        self.publish(None);
        if let Err(e) = self.producer.flush(Duration::from_secs(1)) {
            tracing::debug!(error = %e, "instance tombstone not acknowledged");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_follows_the_session_timeout() {
        let t = Timing::for_session(Duration::from_secs(6));
        assert_eq!(t.heartbeat, Duration::from_millis(1_500));
        assert_eq!(t.grace, Duration::from_secs(3));
        assert!(t.check < t.grace && t.heartbeat < t.timeout);
        let short = Timing::for_session(Duration::from_secs(1));
        assert_eq!((short.heartbeat, short.grace), (Duration::from_millis(250), Duration::from_secs(1)));
    }
}
