//! The poll schedule of one `pages` partition: when each tracked page is next due.
//!
//! # The phase grid
//! A page with interval `I` is polled only at the epoch times `phase + k * I`, where `phase =
//! hash(page) % I` with a hash fixed in this file, so every instance and release agrees on it:
//!
//! - **Spread.** Phases are uniform: a million pages added at once come due spread over `(now,
//!   now + I]` instead of together.
//! - **No drift, no clumping.** A polled page re-arms at its next grid point after `now`, not at
//!   `now + I`: lateness does not accumulate, and pages delayed together by a stall part again.
//! - **Handover.** On revoke the old owner drops its `Schedule`; the new owner rebuilds from the
//!   `pages` topic, and each page lands on the same grid strictly after the new owner's `now`, so
//!   the slot just polled is not polled again (given host clocks agree better than the
//!   revoke-to-assign gap). [`Schedule::upsert_with_last_poll`] resumes restored state on phase.
//!
//! # Guarantees, on due times (slots)
//! Two polls of a tracked page are at least its current interval apart in due time, and a late
//! driver polls a page once, skipping the missed slots ([`Due::skipped`]) rather than catching up
//! in a burst. Actual poll times come closer only while a backlog shrinks (lateness drops between
//! two polls): the price of keeping the phase, and it adds no polls, as each slot fires at most
//! once. A tombstone ([`Schedule::remove`]) stops polls at once; a re-add is a new tracking.
//!
//! # Memory: 125 to 150 bytes a page (15-character ids)
//! A `HashMap<PageKey, Entry>` (32-byte slots at most 7/8 full, plus a control byte), the same
//! keys in due order in a `BTreeSet<(due, PageKey)>` (24-byte elements, leaves about half full
//! under pop-front/insert-back traffic), and one shared `Arc<str>` per id (16 bytes of counts plus
//! the id). Measured with a counting allocator at 100 k to 1 M pages; the table's doublings cause
//! the spread. A hashed timer wheel would save part of the tree, but needs levels to cover 10 s
//! to 1 day and loses exact due order; a pop with its re-arm costs about 1 µs, so a million pages
//! every 600 s cost about 2 ms of CPU a second.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// A page id as the schedule stores it: one allocation shared by both indexes and every [`Due`].
pub type PageKey = Arc<str>;

/// Shortest poll interval the issue allows (10 s): faster polling would only burn platform quota.
pub const MIN_INTERVAL_MS: i64 = 10_000;
/// Longest poll interval the issue allows (1 day).
pub const MAX_INTERVAL_MS: i64 = 86_400_000;
/// Interval of a page whose record names none (600 s, from the issue).
pub const DEFAULT_INTERVAL_MS: i64 = 600_000;

/// B-tree bytes per page: a 24-byte element in leaves of 11 that pop-front/insert-back traffic
/// keeps about half full, plus node headers and the internal levels (measured, see module docs).
const BTREE_BYTES_PER_PAGE: usize = 50;

/// Why a page was not scheduled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The record asks for an interval the issue does not allow.
    #[error("poll interval {interval_ms} ms is outside {MIN_INTERVAL_MS}..={MAX_INTERVAL_MS} ms")]
    IntervalOutOfRange {
        /// The interval asked for.
        interval_ms: i64,
    },
    /// A new page while the schedule already holds its bound.
    #[error("schedule already tracks its maximum of {max_pages} pages")]
    Full {
        /// The bound.
        max_pages: usize,
    },
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What an upsert changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upserted {
    /// A page not tracked before.
    Added,
    /// Tracked with the same interval: nothing changed, so a re-sent record cannot double-poll.
    Unchanged,
    /// Tracked with another interval (or a later restored last poll): next due time moved.
    Rescheduled,
}

/// One page to poll now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// The page.
    pub page: PageKey,
    /// The slot this poll is for; `now - due_ms` is the schedule delay.
    pub due_ms: i64,
    /// Whole slots missed because the driver was later than one interval (0 when on time).
    pub skipped: i64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    due_ms: i64,
    interval_ms: u32,
}

/// Every tracked page of one partition, ordered by next due time. See the module docs.
#[derive(Debug)]
pub struct Schedule {
    entries: HashMap<PageKey, Entry>,
    queue: BTreeSet<(i64, PageKey)>,
    max_pages: usize,
    /// Sum of the `Arc<str>` allocation sizes, kept so the estimate needs no walk.
    key_alloc_bytes: usize,
}

/// The page's offset on a grid of period `interval_ms`: stable across hosts and releases.
pub fn phase_ms(page: &str, interval_ms: i64) -> i64 {
    let interval = u64::try_from(interval_ms).expect("intervals are validated positive");
    i64::try_from(stable_hash(page.as_bytes()) % interval).expect("below an i64 interval")
}

/// FNV-1a then the splitmix64 finaliser. Not std's `DefaultHasher`: its algorithm may change
/// between Rust releases, which would move every page's phase during a rolling upgrade. The
/// finaliser is there because `%` reads FNV's weak low bits.
fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The first point of the grid `phase + k * interval` at or after `t`.
fn grid_at_or_after(phase: i64, interval: i64, t: i64) -> i64 {
    t + (phase - t).rem_euclid(interval)
}

/// Allocation size of an `Arc<str>`: two counters plus the bytes, rounded to the allocator's
/// 8-byte granularity.
fn arc_str_bytes(len: usize) -> usize {
    (16 + len).div_ceil(8) * 8
}

impl Schedule {
    /// An empty schedule that tracks at most `max_pages` pages; more are refused with
    /// [`Error::Full`], which the caller counts and dead-letters.
    pub fn new(max_pages: usize) -> Self {
        Self { entries: HashMap::new(), queue: BTreeSet::new(), max_pages, key_alloc_bytes: 0 }
    }

    /// Tracks `page` every `interval_ms`, or changes its interval.
    ///
    /// - New page: first due at the first grid point after `now_ms`, in `(now, now + interval]`.
    /// - Same interval as tracked: [`Upserted::Unchanged`], the due time stays.
    /// - New interval: due at the first point of the new grid after `now_ms` and no earlier
    ///   than `previous slot + new interval`, where the previous slot is `due - old interval`
    ///   (the slot last polled, or a later one, so the rule errs towards waiting). Shortening
    ///   takes effect within one new interval; lengthening waits between one and two.
    pub fn upsert(&mut self, page: &str, interval_ms: i64, now_ms: i64) -> Result<Upserted> {
        self.upsert_inner(page, interval_ms, None, now_ms)
    }

    /// As [`upsert`](Self::upsert), for state restored with the time `page` was last polled
    /// (e.g. after a handover): the next due time is also no earlier than `last_poll_ms +
    /// interval_ms`, on the page's grid.
    pub fn upsert_with_last_poll(
        &mut self,
        page: &str,
        interval_ms: i64,
        last_poll_ms: i64,
        now_ms: i64,
    ) -> Result<Upserted> {
        self.upsert_inner(page, interval_ms, Some(last_poll_ms), now_ms)
    }

    fn upsert_inner(
        &mut self,
        page: &str,
        interval_ms: i64,
        last_poll_ms: Option<i64>,
        now_ms: i64,
    ) -> Result<Upserted> {
        if !(MIN_INTERVAL_MS..=MAX_INTERVAL_MS).contains(&interval_ms) {
            return Err(Error::IntervalOutOfRange { interval_ms });
        }
        let interval = u32::try_from(interval_ms).expect("MAX_INTERVAL_MS fits u32");
        let phase = phase_ms(page, interval_ms);
        let after_last = last_poll_ms.map_or(i64::MIN, |l| l.saturating_add(interval_ms));
        let Some((key, old)) = self.entries.get_key_value(page) else {
            if self.entries.len() >= self.max_pages {
                return Err(Error::Full { max_pages: self.max_pages });
            }
            let due_ms = grid_at_or_after(phase, interval_ms, (now_ms + 1).max(after_last));
            let key: PageKey = Arc::from(page);
            self.key_alloc_bytes += arc_str_bytes(page.len());
            self.queue.insert((due_ms, key.clone()));
            self.entries.insert(key, Entry { due_ms, interval_ms: interval });
            return Ok(Upserted::Added);
        };
        let floor = if old.interval_ms == interval {
            // An overdue page stays overdue: it fires on the next pop.
            old.due_ms
        } else {
            (now_ms + 1).max(old.due_ms - i64::from(old.interval_ms) + interval_ms)
        };
        let due_ms = grid_at_or_after(phase, interval_ms, floor.max(after_last));
        if old.interval_ms == interval && due_ms == old.due_ms {
            return Ok(Upserted::Unchanged);
        }
        let (key, old_due) = (key.clone(), old.due_ms);
        self.queue.remove(&(old_due, key.clone()));
        self.queue.insert((due_ms, key.clone()));
        self.entries.insert(key, Entry { due_ms, interval_ms: interval });
        Ok(Upserted::Rescheduled)
    }

    /// Stops tracking `page` (a tombstone); true if it was tracked.
    pub fn remove(&mut self, page: &str) -> bool {
        let Some((key, entry)) = self.entries.remove_entry(page) else {
            return false;
        };
        self.queue.remove(&(entry.due_ms, key));
        self.key_alloc_bytes -= arc_str_bytes(page.len());
        true
    }

    /// Up to `max` pages due at or before `now_ms`, earliest first, each re-armed at its next
    /// grid point after `now_ms`: `due + k * interval` with the smallest `k >= 1` that is past
    /// `now_ms`, so a page more than one interval late fires once, not once per missed slot.
    /// Pages left over because of `max` stay due for the next call.
    pub fn pop_due(&mut self, now_ms: i64, max: usize) -> Vec<Due> {
        let mut out = Vec::new();
        while out.len() < max {
            match self.queue.first() {
                Some((due, _)) if *due <= now_ms => {}
                _ => break,
            }
            let (due_ms, page) = self.queue.pop_first().expect("first() just saw an element");
            let entry = self.entries.get_mut(&page).expect("queue and entries hold the same pages");
            let interval = i64::from(entry.interval_ms);
            let k = (now_ms - due_ms) / interval + 1;
            entry.due_ms = due_ms + k * interval;
            self.queue.insert((entry.due_ms, page.clone()));
            out.push(Due { page, due_ms, skipped: k - 1 });
        }
        out
    }

    /// The earliest due time, for the driver to sleep until; `None` when nothing is tracked.
    pub fn next_due(&self) -> Option<i64> {
        self.queue.first().map(|(due, _)| *due)
    }

    /// The next due time of `page`, if tracked.
    pub fn due_of(&self, page: &str) -> Option<i64> {
        self.entries.get(page).map(|e| e.due_ms)
    }

    /// The most pages this schedule tracks.
    pub fn max_pages(&self) -> usize {
        self.max_pages
    }

    /// Number of tracked pages.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no page is tracked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Estimated heap bytes held (see the module docs for the layout), for a gauge and capacity
    /// planning. The hash table part is exact for std's table; the B-tree part is an average.
    pub fn heap_bytes_estimate(&self) -> usize {
        // std's table reports 7/8 of its power-of-two bucket count (bucket count - 1 below 8).
        let cap = self.entries.capacity();
        let buckets = if cap < 8 { cap + usize::from(cap > 0) } else { cap / 7 * 8 };
        let slot = std::mem::size_of::<(PageKey, Entry)>() + 1;
        buckets * slot + self.queue.len() * BTREE_BYTES_PER_PAGE + self.key_alloc_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    /// An arbitrary epoch instant, not aligned to any interval.
    const T0: i64 = 1_700_000_000_123;
    const MIN: i64 = 60_000;

    fn page(i: usize) -> String {
        format!("page-{i}")
    }

    /// Pops every due page at each due time before `end`: the polled due times per page.
    fn run(s: &mut Schedule, end: i64) -> HashMap<PageKey, Vec<i64>> {
        let mut polls: HashMap<PageKey, Vec<i64>> = HashMap::new();
        while let Some(now) = s.next_due().filter(|d| *d < end) {
            for d in s.pop_due(now, usize::MAX) {
                polls.entry(d.page).or_default().push(d.due_ms);
            }
        }
        polls
    }

    fn add_all(s: &mut Schedule, n: usize, interval: i64, now: i64) {
        for i in 0..n {
            s.upsert(&page(i), interval, now).expect("valid, under the bound");
        }
    }

    #[test]
    fn polls_each_page_exactly_once_per_interval() {
        let mut s = Schedule::new(1000);
        add_all(&mut s, 1000, MIN, T0);
        let polls = run(&mut s, T0 + 10 * MIN);
        assert_eq!(polls.len(), 1000);
        for (p, dues) in &polls {
            // Ten intervals from T0, first slots in (T0, T0 + I]: exactly ten polls, on phase.
            assert_eq!(dues.len(), 10, "{p}");
            assert_eq!(dues[0], grid_at_or_after(phase_ms(p, MIN), MIN, T0 + 1));
            assert!(dues.windows(2).all(|w| w[1] - w[0] == MIN), "{p}: {dues:?}");
        }
    }

    #[test]
    fn a_million_new_pages_spread_over_one_interval() {
        let interval = 10 * MIN;
        let mut s = Schedule::new(100_000);
        add_all(&mut s, 100_000, interval, T0);
        let mut per_second = vec![0u32; 600];
        for i in 0..1_000_000 {
            // The first 100 k through the schedule; the rest through the same first-due rule,
            // which keeps the debug-build test fast.
            let due = match s.due_of(&page(i)) {
                Some(due) => due,
                None => grid_at_or_after(phase_ms(&page(i), interval), interval, T0 + 1),
            };
            assert!((1..=interval).contains(&(due - T0)));
            per_second[usize::try_from((due - T0 - 1) / 1000).expect("positive")] += 1;
        }
        // 1,667 a second expected; a uniform spread stays within about 4 sigma (+-165).
        let (lo, hi) = (per_second.iter().min(), per_second.iter().max());
        assert!(lo >= Some(&1450) && hi <= Some(&1900), "min {lo:?} max {hi:?}");
        let per_page = s.heap_bytes_estimate() / s.len();
        assert!((100..=200).contains(&per_page), "{per_page} bytes a page");
    }

    #[test]
    fn resend_changes_nothing_and_reschedule_waits_for_the_new_interval() {
        let mut s = Schedule::new(10);
        s.upsert("a", MIN, T0).expect("valid");
        let first = s.next_due().expect("tracked");
        // A re-sent record, even once overdue, leaves it to fire once on the next pop.
        assert_eq!(s.upsert("a", MIN, first + 5), Ok(Upserted::Unchanged));
        assert_eq!(s.pop_due(first + 5, 10).len(), 1);
        assert!(s.pop_due(first + 5, 10).is_empty());
        // Lengthened to 10 min just after a poll: next in [first + 10 min, first + 20 min), on phase.
        assert_eq!(s.upsert("a", 10 * MIN, first + 1), Ok(Upserted::Rescheduled));
        let next = s.due_of("a").expect("tracked");
        assert!(next >= first + 10 * MIN && next < first + 20 * MIN);
        assert_eq!((next - phase_ms("a", 10 * MIN)).rem_euclid(10 * MIN), 0);
        // Shortened to 10 s an hour later: due within 10 s, then every 10 s.
        let now = first + 60 * MIN;
        s.upsert("a", 10_000, now).expect("valid");
        let due = s.due_of("a").expect("tracked");
        assert!(due > now && due <= now + 10_000);
        assert_eq!(s.pop_due(due, 10).len(), 1);
        assert_eq!(s.next_due(), Some(due + 10_000));
    }

    #[test]
    fn late_driver_polls_once_and_skips_missed_slots() {
        let mut s = Schedule::new(10);
        s.upsert("a", MIN, T0).expect("valid");
        let due = s.next_due().expect("tracked");
        let polled = s.pop_due(due + 5 * MIN, 10);
        assert_eq!(polled.iter().map(|d| (d.due_ms, d.skipped)).collect::<Vec<_>>(), [(due, 5)]);
        assert!(s.pop_due(due + 5 * MIN, 10).is_empty());
        assert_eq!(s.next_due(), Some(due + 6 * MIN), "back on phase");
    }

    #[test]
    fn pop_due_is_bounded_and_in_due_order() {
        let mut s = Schedule::new(100);
        add_all(&mut s, 50, MIN, T0);
        let first = s.pop_due(T0 + MIN, 20);
        assert_eq!(first.len(), 20);
        assert!(first.windows(2).all(|w| w[0].due_ms <= w[1].due_ms));
        assert_eq!(s.pop_due(T0 + MIN, 100).len(), 30, "the rest stayed due");
    }

    #[test]
    fn removal_stops_polls() {
        let mut s = Schedule::new(10);
        add_all(&mut s, 2, MIN, T0);
        assert!(s.remove(&page(0)) && !s.remove(&page(0)));
        let polls = run(&mut s, T0 + 10 * MIN);
        assert_eq!((polls.contains_key(page(0).as_str()), polls[page(1).as_str()].len()), (false, 10));
        assert!(s.remove(&page(1)) && s.is_empty() && s.next_due().is_none());
        assert_eq!(s.key_alloc_bytes, 0);
    }

    #[test]
    fn handover_to_a_new_owner_does_not_double_poll() {
        let mut old = Schedule::new(500);
        add_all(&mut old, 500, MIN, T0);
        let revoke = T0 + 3 * MIN + 12_345;
        let mut polls = run(&mut old, revoke);
        drop(old);
        // The new owner replays the pages topic 2 s after the revoke.
        let mut new = Schedule::new(500);
        add_all(&mut new, 500, MIN, revoke + 2_000);
        for (p, dues) in run(&mut new, T0 + 10 * MIN) {
            polls.entry(p).or_default().extend(dues);
        }
        for (p, dues) in &polls {
            assert!(dues.windows(2).all(|w| w[1] - w[0] >= MIN), "{p}: {dues:?}");
            // Only a slot inside the 2 s gap can be lost; none is polled twice.
            assert!((9..=10).contains(&dues.len()), "{p}: {dues:?}");
        }
    }

    #[test]
    fn restored_last_poll_resumes_on_phase() {
        let mut s = Schedule::new(10);
        let slot = grid_at_or_after(phase_ms("a", 10 * MIN), 10 * MIN, T0);
        assert_eq!(s.upsert_with_last_poll("a", 10 * MIN, slot, slot + MIN), Ok(Upserted::Added));
        assert_eq!(s.due_of("a"), Some(slot + 10 * MIN));
        // A restored poll later than the current schedule pushes it out, on the grid.
        let later = s.upsert_with_last_poll("a", 10 * MIN, slot + 10 * MIN, slot + MIN);
        assert_eq!((later, s.due_of("a")), (Ok(Upserted::Rescheduled), Some(slot + 20 * MIN)));
    }

    #[test]
    fn bad_intervals_and_the_page_bound_are_refused() {
        let mut s = Schedule::new(1);
        assert_eq!(s.upsert("a", 9_999, T0), Err(Error::IntervalOutOfRange { interval_ms: 9_999 }));
        assert!(s.upsert("a", MAX_INTERVAL_MS + 1, T0).is_err());
        assert_eq!(s.upsert("a", DEFAULT_INTERVAL_MS, T0), Ok(Upserted::Added));
        assert_eq!(s.upsert("b", DEFAULT_INTERVAL_MS, T0), Err(Error::Full { max_pages: 1 }));
        assert_eq!(s.upsert("a", MIN, T0), Ok(Upserted::Rescheduled), "tracked pages still update");
    }

    /// Random upserts, restores, removals and pops at random times: no page is polled sooner
    /// than its interval after its previous poll (also across a re-add on the same grid), and
    /// none after its removal.
    #[test]
    fn random_operations_never_poll_more_often_than_the_interval() {
        let mut rng = StdRng::seed_from_u64(7);
        let intervals = [10_000, 15_000, MIN, 10 * MIN];
        let mut s = Schedule::new(64);
        let mut tracked: HashMap<String, i64> = HashMap::new();
        let mut last: HashMap<String, (i64, i64)> = HashMap::new(); // (due, interval) of last poll
        let mut now = T0;
        for _ in 0..50_000 {
            let p = page(rng.gen_range(0..40));
            match rng.gen_range(0..10) {
                0..=2 => {
                    let interval = intervals[rng.gen_range(0..intervals.len())];
                    let restored = rng.gen_bool(0.2).then(|| now - rng.gen_range(0..2 * interval));
                    match restored {
                        Some(l) => s.upsert_with_last_poll(&p, interval, l, now),
                        None => s.upsert(&p, interval, now),
                    }
                    .expect("valid, under the bound");
                    if !tracked.contains_key(&p) && last.get(&p).is_some_and(|(_, i)| *i != interval) {
                        last.remove(&p); // re-added on another grid: a new tracking
                    }
                    tracked.insert(p, interval);
                }
                3 => assert_eq!(s.remove(&p), tracked.remove(&p).is_some()),
                _ => {
                    now += if rng.gen_bool(0.05) { rng.gen_range(0..3_000_000) } else { rng.gen_range(0..5_000) };
                    for d in s.pop_due(now, rng.gen_range(1..50)) {
                        let key = d.page.to_string();
                        let interval = *tracked.get(&key).expect("only tracked pages are polled");
                        assert!(d.due_ms <= now);
                        if let Some((prev, _)) = last.get(&key) {
                            assert!(d.due_ms - prev >= interval, "{key}: {prev} then {}", d.due_ms);
                        }
                        last.insert(key, (d.due_ms, interval));
                    }
                }
            }
            assert_eq!(s.len(), tracked.len());
        }
    }

    /// The intended driver: sleep until `next_due` on tokio time, pop, repeat. Paused time makes
    /// it exact; `advance` stands in for a driver that was blocked.
    #[tokio::test(start_paused = true)]
    async fn paused_tokio_driver_polls_exact_counts() {
        use tokio::time::{advance, sleep_until, Duration, Instant};
        let start = Instant::now();
        let now_ms = || T0 + i64::try_from(start.elapsed().as_millis()).expect("short test");
        let mut s = Schedule::new(100);
        add_all(&mut s, 100, 10_000, now_ms());
        let mut per_interval = [0usize; 6];
        while let Some(due) = s.next_due().filter(|d| *d <= T0 + 60_000) {
            sleep_until(start + Duration::from_millis(u64::try_from(due - T0).expect("future"))).await;
            assert_eq!(now_ms(), due, "paused time wakes exactly on the due time");
            per_interval[usize::try_from((due - T0 - 1) / 10_000).expect("positive")] +=
                s.pop_due(now_ms(), usize::MAX).len();
        }
        assert_eq!(per_interval, [100; 6]);
        // A 35 s stall: every page polls once, having missed two or three slots.
        advance(Duration::from_secs(35)).await;
        let polled = s.pop_due(now_ms(), usize::MAX);
        assert_eq!(polled.len(), 100);
        assert!(polled.iter().all(|d| (2..=3).contains(&d.skipped)));
    }
}
