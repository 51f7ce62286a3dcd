//! The instance map: which running instance of a consumer group holds which input partitions,
//! and the membership watchdog that decides from it when this instance must rejoin the group.
//!
//! Every instance keeps one record current on the compacted internal topic
//! `<kafka.group_id>-instances` (key: its instance id; value: a [`Claim`] in JSON), sent at every
//! rebalance and every heartbeat interval, and a tombstone when it stops cleanly. Every instance
//! reads the topic, so each knows who is alive (a claim refreshed within the session timeout)
//! and which partitions nobody alive holds.
//!
//! Why pagepulse needs this on top of the broker's group coordinator: a coordinator may fail to
//! hand a dead member's partitions to the survivors. tansu 0.6.0 does exactly that
//! (`shared/BROKER.md`): the survivors keep their old assignment and a member that joins
//! meanwhile is handed nothing, for good, while the input waits. The [`Watchdog`] notices
//! partitions without a live owner while this instance holds fewer than its share, and asks for
//! a rejoin, which makes any coordinator compute a fresh assignment. On Kafka, which reassigns by
//! itself on the session timeout, it never fires: orphans there last one rebalance, shorter than
//! the watchdog's grace period.
//!
//! This file is plain logic with injected time; `kafka::watchdog` runs it against the broker.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

/// One input partition: (full topic name, partition).
pub type TopicPartition = (String, i32);

/// What one instance says about itself: the value of its record on the instances topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// The instance's id (also the record key): random per process start.
    pub instance: String,
    /// The address of its HTTP endpoint, as it listens.
    pub http: String,
    /// Its member id in the consumer group, when it has one: what the watchdog releases when
    /// the instance died (see `kafka::coordinator`).
    #[serde(default)]
    pub member: Option<String>,
    /// The input partitions it holds, by full topic name.
    pub partitions: BTreeMap<String, Vec<i32>>,
    /// Its clock when it sent the claim, in ms since the epoch (used only for claims read while
    /// catching up at start-up; afterwards liveness is measured by the reader's own clock).
    pub sent_at_ms: i64,
}

impl Claim {
    /// Number of partitions claimed.
    pub fn count(&self) -> usize {
        self.partitions.values().map(Vec::len).sum()
    }

    /// Every claimed partition.
    pub fn iter(&self) -> impl Iterator<Item = TopicPartition> + '_ {
        self.partitions.iter().flat_map(|(t, ps)| ps.iter().map(move |p| (t.clone(), *p)))
    }
}

/// Builds the partition map of a claim from (topic, partition) pairs.
pub fn by_topic<'a>(pairs: impl IntoIterator<Item = &'a TopicPartition>) -> BTreeMap<String, Vec<i32>> {
    let mut map: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for (t, p) in pairs {
        map.entry(t.clone()).or_default().push(*p);
    }
    for ps in map.values_mut() {
        ps.sort_unstable();
        ps.dedup();
    }
    map
}

/// The latest claim of every instance, with when it was seen.
#[derive(Debug, Default)]
pub struct InstanceMap {
    claims: HashMap<String, (Claim, i64)>,
}

impl InstanceMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `claim`, seen at `seen_ms` (the reader's clock; for a claim read from the backlog
    /// at start-up, the claim's own `sent_at_ms` if that is earlier, so that the last claim of an
    /// instance that died before we started does not count as fresh).
    pub fn apply(&mut self, claim: Claim, seen_ms: i64) {
        match self.claims.get(&claim.instance) {
            // An older record of the same instance, read after a newer one: keep the newer.
            Some((old, _)) if old.sent_at_ms > claim.sent_at_ms => {}
            _ => {
                self.claims.insert(claim.instance.clone(), (claim, seen_ms));
            }
        }
    }

    /// The instance stopped cleanly (a tombstone).
    pub fn remove(&mut self, instance: &str) {
        self.claims.remove(instance);
    }

    /// Instances whose claim was seen within `timeout_ms` of `now_ms`.
    pub fn live(&self, now_ms: i64, timeout_ms: i64) -> impl Iterator<Item = &Claim> {
        self.claims.values().filter(move |(_, seen)| now_ms - seen <= timeout_ms).map(|(c, _)| c)
    }

    /// Instances whose claim is older than `timeout_ms`: presumed dead.
    pub fn dead(&self, now_ms: i64, timeout_ms: i64) -> impl Iterator<Item = &Claim> {
        self.claims.values().filter(move |(_, seen)| now_ms - seen > timeout_ms).map(|(c, _)| c)
    }

    /// Forgets claims older than `keep_ms`: the map's bound (a dead instance's entry goes).
    pub fn expire(&mut self, now_ms: i64, keep_ms: i64) {
        self.claims.retain(|_, (_, seen)| now_ms - *seen <= keep_ms);
    }

    /// Instances known, live or not.
    pub fn len(&self) -> usize {
        self.claims.len()
    }

    /// True when no instance is known.
    pub fn is_empty(&self) -> bool {
        self.claims.is_empty()
    }
}

/// Where an instance's HTTP endpoint is, as its claim gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The instance's id.
    pub instance: String,
    /// Its HTTP address (`host:port`).
    pub http: String,
}

/// Who holds one partition, as far as this instance knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// This instance.
    Me,
    /// Another live instance.
    Other(Owner),
    /// No live instance claims it, or two do (a rebalance in progress): ask again shortly.
    Moving,
}

#[derive(Debug, Default)]
struct Snapshot {
    me: String,
    /// Full topic name -> its partition count.
    counts: HashMap<String, i32>,
    /// Every partition claimed by exactly one live instance.
    owners: HashMap<TopicPartition, Owner>,
}

/// Which instance holds which input partition and where it answers HTTP: what lets any
/// instance answer a query for any key. The watchdog thread rebuilds it from the live claims at
/// every check ([`Directory::update`]); HTTP handlers read it ([`Directory::holder`]).
///
/// It never names an owner it is unsure of: a partition claimed by two live instances (one has
/// it, the other has not yet said it gave it up) or by none is [`Holder::Moving`], which a query
/// answers with a `503` and `Retry-After`, not with a stale or wrong answer.
#[derive(Debug, Default)]
pub struct Directory {
    inner: std::sync::RwLock<Snapshot>,
}

impl Directory {
    /// An empty directory: every partition is [`Holder::Moving`] until the first update.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds the directory from this instance's own claim `own`, everyone's claims in `map`
    /// (live if seen within `timeout_ms` of `now_ms`) and the input partitions `all`.
    pub fn update(&self, own: &Claim, map: &InstanceMap, all: &BTreeSet<TopicPartition>, now_ms: i64, timeout_ms: i64) {
        let mut counts: HashMap<String, i32> = HashMap::new();
        for (t, _) in all {
            *counts.entry(t.clone()).or_default() += 1;
        }
        let mut claimed: HashMap<TopicPartition, Option<Owner>> = HashMap::new();
        let others = map.live(now_ms, timeout_ms).filter(|c| c.instance != own.instance);
        for c in std::iter::once(own).chain(others) {
            for tp in c.iter() {
                let owner = Owner { instance: c.instance.clone(), http: c.http.clone() };
                claimed
                    .entry(tp)
                    .and_modify(|o| {
                        if o.as_ref().is_some_and(|o| o.instance != owner.instance) {
                            *o = None; // claimed twice: moving
                        }
                    })
                    .or_insert(Some(owner));
            }
        }
        let owners = claimed.into_iter().filter_map(|(tp, o)| o.map(|o| (tp, o))).collect();
        let snapshot = Snapshot { me: own.instance.clone(), counts, owners };
        *self.inner.write().unwrap_or_else(|p| p.into_inner()) = snapshot;
    }

    /// This instance's id (empty before the first update).
    pub fn me(&self) -> String {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).me.clone()
    }

    /// The partition count of full topic name `topic`, once known.
    pub fn partitions(&self, topic: &str) -> Option<i32> {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).counts.get(topic).copied()
    }

    /// Who holds the partition of `key` in full topic name `topic` (see
    /// [`super::partitioner`]), with that partition; `None` before the topic's partition count
    /// is known.
    pub fn holder(&self, topic: &str, key: &[u8]) -> Option<(i32, Holder)> {
        let s = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let n = *s.counts.get(topic)?;
        let p = super::partitioner::partition_for(key, n);
        let holder = match s.owners.get(&(topic.to_string(), p)) {
            Some(o) if o.instance == s.me => Holder::Me,
            Some(o) => Holder::Other(o.clone()),
            None => Holder::Moving,
        };
        Some((p, holder))
    }
}

/// What the watchdog sees at one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Instances alive, this one included.
    pub live_instances: usize,
    /// Input partitions no live instance holds.
    pub orphaned: Vec<TopicPartition>,
    /// Input partitions this instance holds.
    pub owned: usize,
    /// Input partitions in all.
    pub total: usize,
}

/// The watchdog's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every input partition has a live owner (or there is nothing to own).
    Healthy,
    /// Partitions are orphaned, but not for long enough yet (a rebalance may be under way), or
    /// this instance already holds its share, or it rejoined too recently.
    Waiting,
    /// Rejoin the group now.
    Rejoin(RejoinReason),
}

/// Why the watchdog asks for a rejoin (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejoinReason {
    /// Input partitions have had no live owner for the whole grace period while this instance
    /// holds fewer than its share.
    Orphaned,
}

impl RejoinReason {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Orphaned => "orphaned_partitions",
        }
    }
}

/// Decides when this instance must rejoin its group. Plain state machine: time comes in with
/// every call.
#[derive(Debug)]
pub struct Watchdog {
    /// How long partitions must stay orphaned before acting.
    grace_ms: i64,
    /// Least time between two rejoins of this instance (a rejoin takes a rebalance to settle).
    backoff_ms: i64,
    orphaned_since: Option<i64>,
    last_rejoin: Option<i64>,
}

impl Watchdog {
    /// A watchdog that acts after orphans persist for `grace_ms`, at most once per `backoff_ms`.
    pub fn new(grace_ms: i64, backoff_ms: i64) -> Self {
        Self { grace_ms, backoff_ms, orphaned_since: None, last_rejoin: None }
    }

    /// Looks at the group: `own` is this instance's claim, `map` the others' (its own entry, if
    /// any, is ignored), `all` every partition of the input topics.
    pub fn check(
        &mut self,
        own: &Claim,
        map: &InstanceMap,
        all: &BTreeSet<TopicPartition>,
        now_ms: i64,
        timeout_ms: i64,
    ) -> (Check, Verdict) {
        let mut held: BTreeSet<TopicPartition> = own.iter().collect();
        let mut live_instances = 1;
        for claim in map.live(now_ms, timeout_ms).filter(|c| c.instance != own.instance) {
            live_instances += 1;
            held.extend(claim.iter());
        }
        let orphaned: Vec<TopicPartition> = all.iter().filter(|tp| !held.contains(*tp)).cloned().collect();
        let check = Check { live_instances, orphaned, owned: own.count(), total: all.len() };
        if check.orphaned.is_empty() {
            self.orphaned_since = None;
            return (check, Verdict::Healthy);
        }
        let since = *self.orphaned_since.get_or_insert(now_ms);
        // Whoever holds less than an even share asks (with one instance: whenever anything is
        // orphaned). Instances that hold their share leave it to those that do not.
        let share = check.total.div_ceil(live_instances);
        let recently = self.last_rejoin.is_some_and(|at| now_ms - at < self.backoff_ms);
        // Claims can overlap for a moment (two instances both naming a partition while one of
        // them has not reported its revocation yet): then everyone may hold its share and still
        // leave orphans. Past three grace periods anyone acts.
        let long = now_ms - since >= 3 * self.grace_ms;
        if now_ms - since < self.grace_ms || (check.owned >= share && !long) || recently {
            return (check, Verdict::Waiting);
        }
        self.last_rejoin = Some(now_ms);
        self.orphaned_since = None;
        (check, Verdict::Rejoin(RejoinReason::Orphaned))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: i64 = 6_000;

    fn claim(id: &str, parts: &[i32], at: i64) -> Claim {
        let pairs: Vec<TopicPartition> = parts.iter().map(|p| ("in".to_string(), *p)).collect();
        Claim {
            instance: id.into(),
            http: "127.0.0.1:1".into(),
            member: Some(format!("{id}-member")),
            partitions: by_topic(&pairs),
            sent_at_ms: at,
        }
    }

    fn all(n: i32) -> BTreeSet<TopicPartition> {
        (0..n).map(|p| ("in".to_string(), p)).collect()
    }

    #[test]
    fn a_restart_with_nothing_assigned_rejoins_once_the_dead_claim_is_stale_and_the_grace_passed() {
        // A held every partition and was killed at 0; A' started and was handed nothing.
        let mut map = InstanceMap::new();
        map.apply(claim("A", &[0, 1, 2, 3], 0), 0);
        let me = claim("B", &[], 1_000);
        let mut w = Watchdog::new(2_000, 20_000);
        // A's claim still counts as live: no orphans.
        assert_eq!(w.check(&me, &map, &all(4), 5_000, TIMEOUT).1, Verdict::Healthy);
        // Stale from 6 s on: orphans, but within the grace period.
        let (c, v) = w.check(&me, &map, &all(4), 6_500, TIMEOUT);
        assert_eq!((c.orphaned.len(), c.live_instances, v), (4, 1, Verdict::Waiting));
        assert_eq!(w.check(&me, &map, &all(4), 8_000, TIMEOUT).1, Verdict::Waiting);
        assert_eq!(w.check(&me, &map, &all(4), 8_500, TIMEOUT).1, Verdict::Rejoin(RejoinReason::Orphaned));
        // Not again while the rebalance settles.
        assert_eq!(w.check(&me, &map, &all(4), 12_000, TIMEOUT).1, Verdict::Waiting);
        // Once it got them, healthy.
        let me = claim("B", &[0, 1, 2, 3], 13_000);
        assert_eq!(w.check(&me, &map, &all(4), 13_000, TIMEOUT).1, Verdict::Healthy);
    }

    #[test]
    fn orphans_that_a_rebalance_clears_within_the_grace_never_trigger() {
        let mut map = InstanceMap::new();
        map.apply(claim("A", &[0, 1], 0), 0);
        let mut w = Watchdog::new(3_000, 20_000);
        let me = claim("B", &[2, 3], 0);
        // A died at 0; from 6 s its two partitions are orphaned.
        assert_eq!(w.check(&me, &map, &all(4), 7_000, TIMEOUT).1, Verdict::Waiting);
        // The coordinator reassigns (as Kafka does) before the grace runs out.
        let me = claim("B", &[0, 1, 2, 3], 8_000);
        assert_eq!(w.check(&me, &map, &all(4), 8_000, TIMEOUT).1, Verdict::Healthy);
        // A new orphan episode starts its grace from scratch.
        let me = claim("B", &[0, 1, 2], 9_000);
        assert_eq!(w.check(&me, &map, &all(4), 9_000, TIMEOUT).1, Verdict::Waiting);
        assert_eq!(w.check(&me, &map, &all(4), 11_900, TIMEOUT).1, Verdict::Waiting);
        assert_eq!(w.check(&me, &map, &all(4), 12_000, TIMEOUT).1, Verdict::Rejoin(RejoinReason::Orphaned));
    }

    #[test]
    fn an_instance_holding_its_share_leaves_the_rejoin_to_the_one_that_does_not() {
        // Three instances, 6 partitions; C died holding 4 and 5. A holds 0..3 (more than its
        // share of 3 among the two live ones), B holds none.
        let mut map = InstanceMap::new();
        map.apply(claim("A", &[0, 1, 2, 3], 10_000), 10_000);
        map.apply(claim("B", &[], 10_000), 10_000);
        map.apply(claim("C", &[4, 5], 0), 0);
        let (mut wa, mut wb) = (Watchdog::new(1_000, 20_000), Watchdog::new(1_000, 20_000));
        let a = claim("A", &[0, 1, 2, 3], 10_000);
        let b = claim("B", &[], 10_000);
        for now in [10_000, 12_000] {
            let (ca, va) = wa.check(&a, &map, &all(6), now, TIMEOUT);
            assert_eq!((ca.live_instances, ca.orphaned.len()), (2, 2));
            assert_eq!(va, Verdict::Waiting, "A holds more than its share");
        }
        assert_eq!(wb.check(&b, &map, &all(6), 10_000, TIMEOUT).1, Verdict::Waiting);
        assert_eq!(wb.check(&b, &map, &all(6), 11_000, TIMEOUT).1, Verdict::Rejoin(RejoinReason::Orphaned));
        // Should B never manage it, A steps in after three grace periods.
        assert_eq!(wa.check(&a, &map, &all(6), 13_000, TIMEOUT).1, Verdict::Rejoin(RejoinReason::Orphaned));
    }

    #[test]
    fn more_instances_than_partitions_is_healthy_for_the_idle_ones() {
        let mut map = InstanceMap::new();
        map.apply(claim("A", &[0, 1], 0), 0);
        let mut w = Watchdog::new(0, 0);
        let me = claim("B", &[], 0);
        for now in [0, 1_000, 5_000] {
            let (c, v) = w.check(&me, &map, &all(2), now, TIMEOUT);
            assert_eq!((c.orphaned.len(), v), (0, Verdict::Healthy));
        }
    }

    #[test]
    fn its_own_old_record_does_not_count_as_another_instance() {
        let mut map = InstanceMap::new();
        map.apply(claim("B", &[0, 1], 0), 0);
        let mut w = Watchdog::new(0, 0);
        let (c, _) = w.check(&claim("B", &[], 1_000), &map, &all(2), 1_000, TIMEOUT);
        assert_eq!((c.live_instances, c.orphaned.len()), (1, 2));
    }

    #[test]
    fn the_map_keeps_the_newest_claim_forgets_tombstoned_and_expired_instances() {
        let mut map = InstanceMap::new();
        map.apply(claim("A", &[0], 2_000), 2_000);
        map.apply(claim("A", &[1], 1_000), 3_000);
        assert_eq!(map.live(3_000, TIMEOUT).next().map(Claim::count), Some(1));
        assert_eq!(map.live(3_000, TIMEOUT).next().and_then(|c| c.iter().next()), Some(("in".to_string(), 0)));
        map.apply(claim("B", &[1], 2_000), 2_000);
        map.remove("B");
        assert_eq!(map.len(), 1);
        assert_eq!(map.dead(2_000 + TIMEOUT, TIMEOUT).count(), 0);
        assert_eq!(
            map.dead(3_001 + TIMEOUT, TIMEOUT).filter_map(|c| c.member.clone()).collect::<Vec<_>>(),
            ["A-member"]
        );
        map.expire(100_000, 60_000);
        assert!(map.is_empty());
    }

    #[test]
    fn the_directory_names_an_owner_only_when_exactly_one_live_instance_claims_the_partition() {
        let topic = "in";
        let all = all(4);
        let me = Claim { http: "10.0.0.1:1".into(), ..claim("me", &[0, 1], 1_000) };
        let mut map = InstanceMap::new();
        map.apply(Claim { http: "10.0.0.2:2".into(), ..claim("b", &[2], 1_000) }, 1_000);
        // `c` still claims 1, which `me` already took: a rebalance in progress.
        map.apply(claim("c", &[1], 1_000), 1_000);
        // `d`'s claim is stale: dead.
        map.apply(claim("d", &[3], 0), 0);
        let d = Directory::new();
        assert_eq!(d.holder(topic, b"x"), None, "nothing known before the first update");
        d.update(&me, &map, &all, 5_000, 4_000);
        assert_eq!(d.me(), "me");
        assert_eq!(d.partitions(topic), Some(4));
        // Find a key of each partition with the partitioner the producers use.
        let key_of = |p: i32| {
            (0..)
                .map(|i| format!("k{i}"))
                .find(|k| crate::kafka::partitioner::partition_for(k.as_bytes(), 4) == p)
                .unwrap()
        };
        assert_eq!(d.holder(topic, key_of(0).as_bytes()), Some((0, Holder::Me)));
        assert_eq!(d.holder(topic, key_of(1).as_bytes()), Some((1, Holder::Moving)), "claimed twice");
        assert_eq!(
            d.holder(topic, key_of(2).as_bytes()),
            Some((2, Holder::Other(Owner { instance: "b".into(), http: "10.0.0.2:2".into() })))
        );
        assert_eq!(d.holder(topic, key_of(3).as_bytes()), Some((3, Holder::Moving)), "its claimant is dead");
        assert_eq!(d.holder("other", b"x"), None);
    }

    #[test]
    fn claims_round_trip_as_json() {
        let c = claim("A", &[3, 1, 1], 7);
        assert_eq!(c.partitions["in"], vec![1, 3]);
        let back: Claim = serde_json::from_slice(&serde_json::to_vec(&c).expect("serialize")).expect("parse");
        assert_eq!(back, c);
    }
}
