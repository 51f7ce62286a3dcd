//! The position guard: makes sure a partition's records continue exactly where they should after
//! the consumer was positioned (an assignment starting at the committed offset, a resume after a
//! pause), on any broker.
//!
//! Kafka answers a fetch from offset X with the record batch that *contains* X, and the client
//! drops the records before X. tansu 0.6.0 answers it with the first batch that *starts* at or
//! after X (measured here: producing 500 records in batches of 10 and fetching from offset 3
//! returns offsets 10, 11, ...), so a consumer positioned inside a batch silently skips the rest
//! of that batch. Positions inside batches are the rule, not the exception: a committed offset is
//! wherever a task's batch ended, and a resume restarts from the record after the last one
//! polled. So after every positioning the guard knows the offset that must come next:
//!
//! - a record before it was already had (a resume restarts where librdkafka's application
//!   position was, which can trail what the polling thread took by the few records it polled
//!   while the pause took effect): dropped, never processed twice;
//! - the record at it: the guard is done;
//! - a record after it, with nothing before it seen since the positioning: the broker skipped.
//!   The guard asks to fetch again from further back (256, then 4096, then 65536 records back)
//!   and drops records before the expected offset until it arrives;
//! - a record after it once records before it were seen: the gap is in the log itself (records
//!   removed by compaction, or transaction markers), and is accepted.
//!
//! - nothing at all since the positioning: tansu answers a fetch from inside the log's *last*
//!   batch with nothing, so no record ever comes to show the skip. The polling thread asks
//!   [`PositionGuard::silent`] for such partitions (after 0.5 s when the broker's high watermark is
//!   past the position, after 3 s otherwise) and fetches them again from further back.
//!
//! On Kafka the first record after a positioning is the expected one, so the guard costs one
//! comparison per record of a guarded partition, and nothing after that.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How far back each successive fetch starts, in offsets before the expected one.
pub const REWINDS: [i64; 3] = [256, 4096, 65536];

/// A partition, as the polling thread numbers it: (input index, partition).
pub type Key = (usize, i32);

#[derive(Debug, Clone, Copy)]
struct Guard {
    expected: i64,
    /// Rewinds so far.
    tries: usize,
    /// A record before `expected` arrived since the last positioning.
    seen_before: bool,
    /// Records before `expected` that may arrive and be dropped: a resume's trail, or a rewind.
    window: i64,
    /// When it was positioned, or last fetched again after a silence.
    since: Instant,
}

/// What to do with a record of a guarded partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Process it.
    Deliver,
    /// Already had: drop it.
    Duplicate,
    /// The broker skipped records: drop this one and fetch again from this offset.
    Rewind(i64),
    /// The records between the expected offset and this one could not be fetched after every
    /// rewind: process it, and report the gap.
    GapAccepted {
        /// The offset that was expected.
        expected: i64,
    },
}

/// Guards of every positioned partition, and the last offset taken from each partition.
#[derive(Debug, Default)]
pub struct PositionGuard {
    guards: HashMap<Key, Guard>,
    last: HashMap<Key, i64>,
    /// The last offset delivered per partition since it was positioned; `hot` caches the
    /// partition of the previous record (records come in runs of one partition).
    delivered: HashMap<Key, i64>,
    hot: Option<(Key, i64)>,
}

/// Records a resume may redeliver before the expected offset (those the polling thread took
/// between the pause call and the pause taking effect are a few; this bounds them generously).
const RESUME_TRAIL: i64 = 100_000;

impl PositionGuard {
    /// No partition guarded.
    pub fn new() -> Self {
        Self::default()
    }

    /// The partition was assigned and its consumption starts at the committed offset `at`.
    pub fn assigned(&mut self, key: Key, at: i64) {
        self.last.remove(&key);
        self.forget(key);
        self.guards.insert(key, Guard { expected: at, tries: 0, seen_before: false, window: 0, since: Instant::now() });
    }

    /// The partition was resumed: consumption continues after the last record taken, if any.
    pub fn resumed(&mut self, key: Key) {
        if let Some(&last) = self.last.get(&key) {
            self.guards.insert(
                key,
                Guard { expected: last + 1, tries: 0, seen_before: false, window: RESUME_TRAIL, since: Instant::now() },
            );
        }
    }

    /// Guarded partitions from which nothing at all arrived since they were positioned for as
    /// long as `patience(key, expected)` allows (`None`: leave it alone for now, e.g. paused),
    /// with the offset to fetch again from. tansu 0.6.0 answers a fetch from inside a record batch
    /// with the next batch; at the end of the log there is none, so a resume inside the last
    /// batch would wait for new input forever, and no record would come to show the skip.
    /// Fetching again from further back costs a few duplicates, which the guard drops; once a
    /// record before the expected one came (the log really ends there), it stops.
    pub fn silent(&mut self, now: Instant, mut patience: impl FnMut(Key, i64) -> Option<Duration>) -> Vec<(Key, i64)> {
        let mut out = Vec::new();
        for (key, g) in &mut self.guards {
            if g.seen_before || g.tries >= REWINDS.len() || g.expected <= 0 {
                continue;
            }
            match patience(*key, g.expected) {
                Some(after) if now.duration_since(g.since) >= after => {}
                _ => continue,
            }
            let back = REWINDS[g.tries];
            g.tries += 1;
            g.window = g.window.max(back);
            g.since = now;
            out.push((*key, (g.expected - back).max(0)));
        }
        out
    }

    /// The partition was revoked: forget it.
    pub fn revoked(&mut self, key: Key) {
        self.guards.remove(&key);
        self.forget(key);
        self.last.remove(&key);
    }

    /// Whether a record the guard let through (`Verdict::Deliver` or `GapAccepted`) at `offset`
    /// of `key` is new: after the last one delivered since the partition was positioned. A record
    /// at or before it was delivered already: dropped (under load, tansu 0.6.0 and librdkafka were
    /// seen to deliver the last records of a partition's log again, with no positioning by
    /// pagepulse). A record far before it ([`RESUME_TRAIL`] offsets or more) means the log itself
    /// started over (the broker lost it): delivered, and tracked from there.
    pub fn fresh(&mut self, key: Key, offset: i64) -> bool {
        let last = match &mut self.hot {
            Some((k, last)) if *k == key => last,
            hot => {
                if let Some((k, last)) = hot.take() {
                    self.delivered.insert(k, last);
                }
                let last = self.delivered.remove(&key).unwrap_or(i64::MIN);
                &mut hot.insert((key, last)).1
            }
        };
        if offset > *last || *last - offset >= RESUME_TRAIL {
            *last = offset;
            true
        } else {
            false
        }
    }

    /// Forgets what was delivered of `key` (it is positioned anew).
    fn forget(&mut self, key: Key) {
        self.delivered.remove(&key);
        if self.hot.is_some_and(|(k, _)| k == key) {
            self.hot = None;
        }
    }

    /// Partitions guarded right now.
    pub fn guarded(&self) -> usize {
        self.guards.len()
    }

    /// Notes that records of `key` up to `offset` were taken (called once per shipped run of
    /// records, not per record: the position only matters at the next resume).
    pub fn taken(&mut self, key: Key, offset: i64) {
        self.last.insert(key, offset);
    }

    /// Judges the record at `offset` of `key`. Costs nothing while no partition is guarded.
    pub fn check(&mut self, key: Key, offset: i64) -> Verdict {
        if self.guards.is_empty() {
            return Verdict::Deliver;
        }
        let Some(g) = self.guards.get_mut(&key) else { return Verdict::Deliver };
        let verdict = if offset < g.expected {
            if g.expected - offset <= g.window {
                g.seen_before = true;
                return Verdict::Duplicate;
            }
            // Far before anything we asked for: the broker reset the position (e.g. its log was
            // recreated). Not ours to filter.
            Verdict::Deliver
        } else if offset == g.expected || g.seen_before {
            Verdict::Deliver
        } else if g.tries < REWINDS.len() {
            let back = REWINDS[g.tries];
            g.tries += 1;
            g.window = g.window.max(back);
            // The silence check measures from this new positioning.
            g.since = Instant::now();
            return Verdict::Rewind((g.expected - back).max(0));
        } else {
            Verdict::GapAccepted { expected: g.expected }
        };
        self.guards.remove(&key);
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silent_partition_is_fetched_again_from_further_back_until_a_record_comes() {
        let mut g = PositionGuard::new();
        g.assigned(K, 1000);
        let t0 = Instant::now();
        let wait = |secs| move |_: Key, _: i64| Some(Duration::from_secs(secs));
        assert!(g.silent(t0, wait(3600)).is_empty(), "not yet silent long enough");
        let later = t0 + Duration::from_secs(5);
        assert!(g.silent(later, |_, _| None).is_empty(), "left alone (paused) whatever the time");
        assert_eq!(g.silent(later, wait(2)), vec![(K, 1000 - REWINDS[0])]);
        assert!(g.silent(later, wait(2)).is_empty(), "waits again after a rewind");
        let again = later + Duration::from_secs(3);
        assert_eq!(g.silent(again, wait(2)), vec![(K, 0)], "then further back, to the beginning at most");
        // The tail of the last batch arrives: a duplicate, then the expected record.
        assert_eq!(g.check(K, 999), Verdict::Duplicate);
        assert!(g.silent(again + Duration::from_secs(10), wait(2)).is_empty(), "the log ends here");
        assert_eq!(g.check(K, 1000), Verdict::Deliver);
        assert_eq!(g.guarded(), 0);
    }

    const K: Key = (0, 3);

    #[test]
    fn a_record_delivered_again_is_dropped_until_the_partition_is_positioned_anew() {
        let mut g = PositionGuard::new();
        let other: Key = (1, 0);
        assert!(g.fresh(K, 10) && g.fresh(K, 11) && g.fresh(other, 5) && g.fresh(K, 12));
        assert!(!g.fresh(K, 12) && !g.fresh(K, 11), "delivered again");
        assert!(!g.fresh(other, 5) && g.fresh(other, 6), "per partition");
        assert!(g.fresh(K, 14), "a gap forward is the log's own");
        assert!(g.fresh(K, 14 - RESUME_TRAIL), "far before: the log started over");
        assert!(g.fresh(K, 15 - RESUME_TRAIL) && !g.fresh(K, 14 - RESUME_TRAIL));
        g.assigned(K, 3);
        assert!(g.fresh(K, 3), "positioned anew: from the committed offset again");
        g.revoked(other);
        assert!(g.fresh(other, 0));
    }

    /// A log with record batches of `batch` records, fetched from `from` the way tansu 0.6.0
    /// does: from the first batch starting at or after `from`.
    fn tansu_fetch(from: i64, batch: i64, end: i64) -> impl Iterator<Item = i64> {
        let start = (from + batch - 1) / batch * batch;
        start..end
    }

    /// Feeds the guard from a broker that fetches like `fetch`, following its rewinds, and
    /// returns the offsets delivered.
    fn consume(guard: &mut PositionGuard, mut from: i64, fetch: impl Fn(i64) -> Vec<i64>) -> Vec<i64> {
        let mut out = Vec::new();
        'fetch: loop {
            for o in fetch(from) {
                match guard.check(K, o) {
                    Verdict::Deliver | Verdict::GapAccepted { .. } => out.push(o),
                    Verdict::Duplicate => {}
                    Verdict::Rewind(to) => {
                        from = to;
                        continue 'fetch;
                    }
                }
            }
            return out;
        }
    }

    #[test]
    fn an_assignment_inside_a_batch_on_tansu_rewinds_and_loses_nothing() {
        let mut g = PositionGuard::new();
        g.assigned(K, 1_234);
        let got = consume(&mut g, 1_234, |from| tansu_fetch(from, 1_000, 3_000).collect());
        assert_eq!(got, (1_234..3_000).collect::<Vec<_>>());
        assert_eq!(g.guarded(), 0);
    }

    #[test]
    fn a_batch_larger_than_the_first_rewinds_takes_a_further_one() {
        let mut g = PositionGuard::new();
        g.assigned(K, 5_000);
        let got = consume(&mut g, 5_000, |from| tansu_fetch(from, 3_000, 9_000).collect());
        assert_eq!(got, (5_000..9_000).collect::<Vec<_>>());
    }

    #[test]
    fn on_kafka_the_expected_record_comes_first_and_nothing_is_dropped() {
        let mut g = PositionGuard::new();
        g.assigned(K, 1_234);
        let got = consume(&mut g, 1_234, |from| (from..2_000).collect());
        assert_eq!(got, (1_234..2_000).collect::<Vec<_>>());
    }

    #[test]
    fn a_resume_drops_what_was_already_taken_and_rewinds_past_a_skip() {
        let mut g = PositionGuard::new();
        for o in 0..700 {
            assert_eq!(g.check(K, o), Verdict::Deliver);
        }
        g.taken(K, 699);
        g.resumed(K);
        // librdkafka resumes from its application position, a few records behind: duplicates.
        for o in 695..700 {
            assert_eq!(g.check(K, o), Verdict::Duplicate);
        }
        assert_eq!(g.check(K, 700), Verdict::Deliver);
        // A resume on tansu inside a batch: skipped to 1000, so the guard rewinds.
        let mut g = PositionGuard::new();
        g.taken(K, 699);
        g.resumed(K);
        let got = consume(&mut g, 700, |from| tansu_fetch(from, 500, 1_500).collect());
        assert_eq!(got, (700..1_500).collect::<Vec<_>>());
    }

    #[test]
    fn a_gap_in_the_log_itself_is_accepted_after_records_before_it_were_seen() {
        // Offsets 100..110 were compacted away; the assignment starts at 105.
        let log: Vec<i64> = (0..100).chain(110..200).collect();
        let mut g = PositionGuard::new();
        g.assigned(K, 105);
        let got = consume(&mut g, 105, |from| log.iter().copied().filter(|o| *o >= from).collect());
        assert_eq!(got, (110..200).collect::<Vec<_>>(), "one rewind shows the gap is in the log");
    }

    #[test]
    fn a_gap_that_no_rewind_can_fill_is_reported_and_then_passed() {
        // Records up to 99_999 are gone (retention); the assignment starts at 100.
        let mut g = PositionGuard::new();
        g.assigned(K, 100);
        let mut verdicts = Vec::new();
        loop {
            let v = g.check(K, 100_000);
            verdicts.push(v);
            if !matches!(v, Verdict::Rewind(_)) {
                break;
            }
        }
        assert_eq!(verdicts.len(), REWINDS.len() + 1);
        assert_eq!(verdicts.last(), Some(&Verdict::GapAccepted { expected: 100 }));
    }

    #[test]
    fn a_reset_far_before_the_expected_offset_is_delivered() {
        // The broker lost its log and the consumer was reset to the new log's start.
        let mut g = PositionGuard::new();
        g.assigned(K, 50_000);
        assert_eq!(g.check(K, 0), Verdict::Deliver);
        assert_eq!(g.check(K, 1), Verdict::Deliver);
    }

    #[test]
    fn unguarded_partitions_deliver_everything() {
        let mut g = PositionGuard::new();
        assert_eq!(g.check(K, 10), Verdict::Deliver);
        assert_eq!(g.check(K, 12), Verdict::Deliver);
        g.revoked(K);
        g.resumed(K);
        assert_eq!(g.guarded(), 0, "nothing taken since the revocation: nothing to guard");
    }
}
