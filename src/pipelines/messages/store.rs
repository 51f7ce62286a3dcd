//! The messages pipeline's durable state: one partition's counts ([`PartitionCounts`]: its users,
//! its cities with their all-time counts, and its share of every open minute), written by its
//! task and read by the instance's [`super::MinuteBoard`], and [`MessagesStore`], which owns
//! them and writes their changes to the `messages` store's changelog.
//!
//! Changelog layout (values start with a format byte; numbers are varints, [`crate::ops::codec`]):
//!
//! - `meta`: newest event time, the durable frontier (minutes before it have their final record
//!   acknowledged), late messages. Rewritten when it changed.
//! - `u/<first id>`: the users first seen since the previous flush, with consecutive ids from
//!   `first id`. Never deleted: distinct users are counted over all time.
//! - `p/<id>`: one (state, city) pair with its all-time count and shown spelling, rewritten when
//!   it changed (compaction keeps one record per city).
//! - `m/<minute start ms>/<n>`: what flush `n` of that minute added to it (messages, new user
//!   ids, counts per city). Deleted, every chunk of the minute, once the minute's final record
//!   is acknowledged.
//!
//! A flush thus costs what changed since the previous one, and the live changelog is the users,
//! the cities and the open minutes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use hashbrown::{HashMap, HashSet};

use super::names::MINUTE_MS;
use crate::engine::state::{Change, Entries};
use crate::engine::{RejectClass, Rejection};
use crate::ops::codec::{self, Corrupt, Reader};

/// Version byte of every value this store writes.
const FORMAT: u8 = 1;
/// Key of the meta record.
pub const META_KEY: &[u8] = b"meta";

/// A message as the counts see it: decoded and normalized (see [`super::processor`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counted<'a> {
    /// Username, exactly as sent.
    pub username: &'a str,
    /// State, trimmed and upper-cased.
    pub state: &'a str,
    /// City as shown: trimmed, inner whitespace collapsed to one space.
    pub city: &'a str,
    /// What groups a city's spellings: `<state>` NUL `<city, lower-cased>`.
    pub place: &'a str,
    /// Event time, epoch milliseconds.
    pub ts_ms: i64,
}

/// The start of the minute holding `ts_ms`.
pub fn minute_of(ts_ms: i64) -> i64 {
    ts_ms.div_euclid(MINUTE_MS) * MINUTE_MS
}

/// The spelling a city is shown in: that of its earliest message (event time), ties broken by
/// the smallest spelling, so every processing order, partitioning and restore shows the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spelling {
    /// Event time of the message it comes from.
    pub ts_ms: i64,
    /// The spelling.
    pub text: Arc<str>,
}

impl Spelling {
    /// Takes `text` seen at `ts_ms` if it comes first; true if it did.
    fn offer(&mut self, ts_ms: i64, text: &str) -> bool {
        if (ts_ms, text) < (self.ts_ms, &*self.text) {
            self.ts_ms = ts_ms;
            self.text = text.into();
            return true;
        }
        false
    }

    /// Takes `other` if it comes first.
    pub fn merge(&mut self, other: &Spelling) {
        if (other.ts_ms, &*other.text) < (self.ts_ms, &*self.text) {
            *self = other.clone();
        }
    }
}

/// A (state, city) pair with its all-time figures in one partition.
#[derive(Debug, Clone)]
pub struct Place {
    /// `<state>` NUL `<city, lower-cased>`: the pair's identity across partitions.
    pub key: Arc<str>,
    /// The state.
    pub state: Arc<str>,
    /// How the city is shown.
    pub city: Spelling,
    /// Messages from it, late ones included.
    pub count: u64,
}

/// One city's share of a minute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MinutePlace {
    /// Messages.
    pub count: u64,
    /// The spelling of its earliest message in the minute.
    pub city: Spelling,
}

/// One partition's share of one minute.
#[derive(Debug, Clone, Default)]
pub struct MinuteCounts {
    /// Messages.
    pub total: u64,
    /// Distinct users (ids in the partition's user table).
    pub users: HashSet<u32>,
    /// Counts per place id.
    pub places: HashMap<u32, MinutePlace>,
}

/// What counting one message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Added {
    /// The user's id, and whether the user is new to the partition.
    pub user: (u32, bool),
    /// The place's id.
    pub place: u32,
    /// The message's minute, unless the message was late (its minute already final, or behind
    /// the partition's watermark): then it counts in the all-time figures only.
    pub minute: Option<i64>,
    /// Whether the user is new to that minute.
    pub new_in_minute: bool,
}

/// One partition's counts: written by its task (one short lock per message), read by the
/// instance's board, which also moves the frontiers forward.
#[derive(Debug, Default)]
pub struct PartitionCounts {
    users: HashMap<Box<str>, u32>,
    /// The next user's id (ids stay unique when a restore skipped a corrupt users chunk).
    next_user: u32,
    places: Vec<Place>,
    place_ids: HashMap<Arc<str>, u32>,
    minutes: BTreeMap<i64, MinuteCounts>,
    total: u64,
    late: u64,
    max_ts: Option<i64>,
    /// Minutes starting before this are final: their messages are late.
    closed_before: i64,
    /// Minutes starting before this have their final record acknowledged: their counts go.
    durable_before: i64,
    /// Messages counted (all, ever, also by the incarnation restored): the board's activity signal.
    inputs: u64,
}

impl PartitionCounts {
    fn new() -> Self {
        Self { closed_before: i64::MIN, durable_before: i64::MIN, ..Self::default() }
    }

    /// Distinct users, all time.
    pub fn users(&self) -> usize {
        self.users.len()
    }

    /// The places, by id.
    pub fn places(&self) -> &[Place] {
        &self.places
    }

    /// Messages, all time (late ones included).
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Messages that came after their minute was final.
    pub fn late(&self) -> u64 {
        self.late
    }

    /// The newest event time seen.
    pub fn max_ts(&self) -> Option<i64> {
        self.max_ts
    }

    /// Messages counted so far: it moves while the partition has input.
    pub fn inputs(&self) -> u64 {
        self.inputs
    }

    /// The minutes held, final or open, by start.
    pub fn minutes(&self) -> &BTreeMap<i64, MinuteCounts> {
        &self.minutes
    }

    /// Minutes starting before this are final.
    pub fn closed_before(&self) -> i64 {
        self.closed_before
    }

    /// Minutes starting before this have their final record acknowledged.
    pub fn durable_before(&self) -> i64 {
        self.durable_before
    }

    /// Moves the frontiers forward (never back): the board's part.
    pub fn advance(&mut self, closed_before: i64, durable_before: i64) {
        self.closed_before = self.closed_before.max(closed_before);
        self.durable_before = self.durable_before.max(durable_before);
    }

    /// Whether a message of `ts_ms` is late: its minute is final, or behind the partition's
    /// watermark (newest event time, counting this message, minus `lateness_ms`). Deciding by the
    /// partition's own watermark makes a minute's content independent of how partitions
    /// interleave, so a replay after a crash counts the same messages in it.
    fn is_late(&self, ts_ms: i64, lateness_ms: i64) -> bool {
        let minute = minute_of(ts_ms);
        let newest = self.max_ts.map_or(ts_ms, |m| m.max(ts_ms));
        minute < self.closed_before || minute + MINUTE_MS <= newest.saturating_sub(lateness_ms)
    }

    /// Checks the partition's bounds for `m` (see [`super::MessagesConfig`]): a refusal names the
    /// field and the config key.
    pub fn admits(&self, m: &Counted<'_>, limits: &Limits) -> Result<(), Rejection> {
        let refuse = |msg: String| Err(Rejection::new(RejectClass::InvalidValue, msg));
        if self.users.len() >= limits.users && !self.users.contains_key(m.username) {
            return refuse(format!(
                "key (username) \"{}\" refused: this partition already counts {} users \
                 (pipelines.messages.max_users_per_partition)",
                m.username, limits.users
            ));
        }
        if self.places.len() >= limits.cities && !self.place_ids.contains_key(m.place) {
            return refuse(format!(
                "field `city` \"{}\" ({}) refused: this partition already counts {} cities \
                 (pipelines.messages.max_cities_per_partition)",
                m.city, m.state, limits.cities
            ));
        }
        let minute = minute_of(m.ts_ms);
        if self.minutes.len() >= limits.open_minutes
            && !self.minutes.contains_key(&minute)
            && !self.is_late(m.ts_ms, limits.lateness_ms)
        {
            return refuse(format!(
                "field `ts` opens a minute while this partition already holds {} open minutes \
                 (pipelines.messages.max_open_minutes)",
                limits.open_minutes
            ));
        }
        Ok(())
    }

    /// Counts `m`: in the all-time figures always, in its minute unless it is late.
    fn add(&mut self, m: &Counted<'_>, lateness_ms: i64) -> Added {
        let late = self.is_late(m.ts_ms, lateness_ms);
        self.max_ts = Some(self.max_ts.map_or(m.ts_ms, |t| t.max(m.ts_ms)));
        self.inputs += 1;
        self.total += 1;
        let user = match self.users.get(m.username) {
            Some(&id) => (id, false),
            None => {
                let id = self.next_user;
                self.next_user += 1;
                self.users.insert(m.username.into(), id);
                (id, true)
            }
        };
        let place = match self.place_ids.get(m.place) {
            Some(&id) => {
                let p = &mut self.places[id as usize];
                p.count += 1;
                p.city.offer(m.ts_ms, m.city);
                id
            }
            None => {
                let id = self.places.len() as u32;
                let key: Arc<str> = m.place.into();
                let city = Spelling { ts_ms: m.ts_ms, text: m.city.into() };
                self.places.push(Place { key: key.clone(), state: m.state.into(), city, count: 1 });
                self.place_ids.insert(key, id);
                id
            }
        };
        if late {
            self.late += 1;
            return Added { user, place, minute: None, new_in_minute: false };
        }
        let minute = minute_of(m.ts_ms);
        let counts = self.minutes.entry(minute).or_default();
        counts.total += 1;
        let new_in_minute = counts.users.insert(user.0);
        match counts.places.get_mut(&place) {
            Some(mp) => {
                mp.count += 1;
                mp.city.offer(m.ts_ms, m.city);
            }
            None => {
                // Usually the place's own spelling: share it rather than allocate.
                let shown = &self.places[place as usize].city.text;
                let text = if **shown == *m.city { shown.clone() } else { m.city.into() };
                counts.places.insert(place, MinutePlace { count: 1, city: Spelling { ts_ms: m.ts_ms, text } });
            }
        }
        Added { user, place, minute: Some(minute), new_in_minute }
    }
}

/// The bounds of one partition's counts (from [`super::MessagesConfig`]).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Distinct users.
    pub users: usize,
    /// Distinct (state, city) pairs.
    pub cities: usize,
    /// Minutes held at once.
    pub open_minutes: usize,
    /// Allowed lateness, ms.
    pub lateness_ms: i64,
}

/// What one minute gained since the previous flush.
#[derive(Debug, Default)]
struct MinuteDelta {
    total: u64,
    users: Vec<u32>,
    places: HashMap<u32, u64>,
}

/// Changes since the previous flush (durable stores only).
#[derive(Debug, Default)]
struct Pending {
    new_users: Vec<Box<str>>,
    /// Id of the first of `new_users`.
    first_new_user: u32,
    places: HashSet<u32>,
    minutes: BTreeMap<i64, MinuteDelta>,
    /// Chunks written per minute: chunk `n` of minute `m` is key `m/<m>/<n>`.
    chunks: BTreeMap<i64, u32>,
    /// Keys to delete at the next flush.
    deleted: Vec<Vec<u8>>,
    meta: bool,
}

/// The durable state of one messages partition: its [`PartitionCounts`] (shared with the board)
/// and, when durable, the changes since the previous flush.
#[derive(Debug)]
pub struct MessagesStore {
    counts: Arc<Mutex<PartitionCounts>>,
    limits: Limits,
    /// `None` when state is kept in memory only: nothing is tracked for a flush that never comes.
    pending: Option<Pending>,
    /// The durable frontier the changelog holds.
    written_durable: i64,
    corrupt: u64,
}

impl MessagesStore {
    /// An empty store; `durable` tracks changes for the changelog.
    pub fn new(limits: Limits, durable: bool) -> Self {
        Self {
            counts: Arc::new(Mutex::new(PartitionCounts::new())),
            limits,
            pending: durable.then(Pending::default),
            written_durable: i64::MIN,
            corrupt: 0,
        }
    }

    /// The counts, for the board.
    pub fn counts(&self) -> &Arc<Mutex<PartitionCounts>> {
        &self.counts
    }

    /// Locks the counts. A panic while holding the lock leaves counts, not broken invariants.
    pub fn lock(&self) -> MutexGuard<'_, PartitionCounts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The bounds.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Changelog entries the restore skipped because they did not decode.
    pub fn corrupt_entries(&self) -> u64 {
        self.corrupt
    }

    /// Counts one message (checked with [`PartitionCounts::admits`] first).
    pub fn add(&mut self, m: &Counted<'_>) -> Added {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let added = counts.add(m, self.limits.lateness_ms);
        drop(counts);
        if let Some(p) = &mut self.pending {
            if added.user.1 {
                if p.new_users.is_empty() {
                    p.first_new_user = added.user.0;
                }
                p.new_users.push(m.username.into());
            }
            p.places.insert(added.place);
            p.meta = true;
            if let Some(minute) = added.minute {
                let d = p.minutes.entry(minute).or_default();
                d.total += 1;
                if added.new_in_minute {
                    d.users.push(added.user.0);
                }
                *d.places.entry(added.place).or_default() += 1;
            }
        }
        added
    }

    /// Drops the minutes whose final record is acknowledged (the board says which), deleting
    /// their chunks at the next flush. Returns how many went.
    pub fn prune(&mut self) -> usize {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let durable = counts.durable_before;
        let Some((&first, _)) = counts.minutes.first_key_value() else { return 0 };
        if first >= durable {
            return 0;
        }
        let keep = counts.minutes.split_off(&durable);
        let gone = std::mem::replace(&mut counts.minutes, keep);
        drop(counts);
        if let Some(p) = &mut self.pending {
            p.meta = true;
            for minute in gone.keys() {
                p.minutes.remove(minute);
                if let Some(n) = p.chunks.remove(minute) {
                    p.deleted.extend((0..n).map(|i| chunk_key(*minute, i)));
                }
            }
        }
        gone.len()
    }

    /// Moves every change since the previous call into `out` (see the module docs).
    pub fn take_changes(&mut self, out: &mut Vec<Change>) {
        self.prune();
        let Some(p) = &mut self.pending else { return };
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        for key in p.deleted.drain(..) {
            out.push((key, None));
        }
        if !p.new_users.is_empty() {
            let mut v = Vec::with_capacity(8 + p.new_users.iter().map(|u| u.len() + 1).sum::<usize>());
            v.push(FORMAT);
            codec::put_u64(&mut v, p.new_users.len() as u64);
            for u in p.new_users.drain(..) {
                codec::put_bytes(&mut v, u.as_bytes());
            }
            out.push((format!("u/{}", p.first_new_user).into_bytes(), Some(v)));
        }
        let mut ids: Vec<u32> = p.places.drain().collect();
        ids.sort_unstable();
        for id in ids {
            let Some(place) = counts.places.get(id as usize) else { continue };
            out.push((format!("p/{id}").into_bytes(), Some(encode_place(place))));
        }
        for (minute, d) in std::mem::take(&mut p.minutes) {
            let Some(mc) = counts.minutes.get(&minute) else { continue };
            let n = p.chunks.entry(minute).or_insert(0);
            let mut v = Vec::with_capacity(16 + d.users.len() * 3 + d.places.len() * 24);
            v.push(FORMAT);
            codec::put_u64(&mut v, d.total);
            codec::put_u64(&mut v, d.users.len() as u64);
            for u in &d.users {
                codec::put_u64(&mut v, u64::from(*u));
            }
            let mut places: Vec<(u32, u64)> = d.places.into_iter().collect();
            places.sort_unstable();
            codec::put_u64(&mut v, places.len() as u64);
            for (id, n) in places {
                let city = &mc.places.get(&id).expect("a place counted in a minute's delta is in the minute").city;
                codec::put_u64(&mut v, u64::from(id));
                codec::put_u64(&mut v, n);
                codec::put_i64(&mut v, city.ts_ms);
                codec::put_bytes(&mut v, city.text.as_bytes());
            }
            out.push((chunk_key(minute, *n), Some(v)));
            *n += 1;
        }
        if p.meta || counts.durable_before != self.written_durable {
            p.meta = false;
            self.written_durable = counts.durable_before;
            let mut v = vec![FORMAT];
            match counts.max_ts {
                Some(t) => {
                    v.push(1);
                    codec::put_i64(&mut v, t);
                }
                None => v.push(0),
            }
            codec::put_i64(&mut v, counts.durable_before);
            codec::put_u64(&mut v, counts.late);
            out.push((META_KEY.to_vec(), Some(v)));
        }
    }

    /// Rebuilds the counts from the live changelog entries. Corrupt entries are skipped, logged
    /// and counted; chunks of minutes already final and acknowledged are deleted at the next flush.
    pub fn restore(&mut self, entries: Entries) {
        let mut meta = None;
        let mut users: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
        let mut places: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
        let mut chunks: BTreeMap<(i64, u32), Vec<u8>> = BTreeMap::new();
        for (key, value) in entries {
            let k = std::str::from_utf8(&key).unwrap_or("");
            let parsed = if key == META_KEY {
                meta = Some(value);
                Some(())
            } else if let Some(id) = k.strip_prefix("u/").and_then(|s| s.parse().ok()) {
                users.insert(id, value);
                Some(())
            } else if let Some(id) = k.strip_prefix("p/").and_then(|s| s.parse().ok()) {
                places.insert(id, value);
                Some(())
            } else {
                k.strip_prefix("m/").and_then(|s| s.split_once('/')).and_then(|(m, n)| {
                    chunks.insert((m.parse().ok()?, n.parse().ok()?), value);
                    Some(())
                })
            };
            if parsed.is_none() {
                self.skip(&key, None);
            }
        }
        let mut c = PartitionCounts::new();
        if let Some(v) = meta {
            match decode_meta(&v) {
                Ok((max_ts, durable, late)) => {
                    c.max_ts = max_ts;
                    c.durable_before = durable;
                    c.closed_before = durable;
                    c.late = late;
                }
                Err(e) => self.skip(META_KEY, Some(e)),
            }
        }
        self.written_durable = c.durable_before;
        for (first, v) in users {
            match decode_users(&v) {
                Ok(names) => {
                    c.next_user = c.next_user.max(first.saturating_add(names.len() as u32));
                    for (i, name) in names.into_iter().enumerate() {
                        c.users.insert(name.into(), first + i as u32);
                    }
                }
                Err(e) => self.skip(format!("u/{first}").as_bytes(), Some(e)),
            }
        }
        let mut next_id = 0u32;
        for (id, v) in places {
            match decode_place(&v) {
                Ok(place) if id == next_id => {
                    c.total += place.count;
                    c.place_ids.insert(place.key.clone(), id);
                    c.places.push(place);
                    next_id += 1;
                }
                Ok(_) => {
                    self.skip(format!("p/{id}").as_bytes(), Some(Corrupt { at: 0, what: "consecutive place ids" }))
                }
                Err(e) => self.skip(format!("p/{id}").as_bytes(), Some(e)),
            }
        }
        let mut written: BTreeMap<i64, u32> = BTreeMap::new();
        let mut stale = Vec::new();
        for ((minute, n), v) in chunks {
            let slot = written.entry(minute).or_insert(0);
            *slot = (*slot).max(n + 1);
            if minute < c.durable_before {
                stale.push(chunk_key(minute, n));
                continue;
            }
            if let Err(e) = apply_chunk(&mut c, minute, &v) {
                self.skip(&chunk_key(minute, n), Some(e));
            }
        }
        written.retain(|m, _| *m >= c.durable_before);
        c.inputs = c.total;
        *self.counts.lock().unwrap_or_else(|p| p.into_inner()) = c;
        if let Some(p) = &mut self.pending {
            p.chunks = written;
            p.deleted = stale;
        }
    }

    fn skip(&mut self, key: &[u8], why: Option<Corrupt>) {
        self.corrupt += 1;
        let why = why.map_or_else(|| "unknown key".to_string(), |e| e.to_string());
        tracing::warn!(key = %String::from_utf8_lossy(key), %why, "skipping a corrupt messages state entry");
    }
}

fn chunk_key(minute: i64, n: u32) -> Vec<u8> {
    format!("m/{minute}/{n}").into_bytes()
}

fn format_byte(r: &mut Reader<'_>) -> Result<(), Corrupt> {
    match r.u8()? {
        FORMAT => Ok(()),
        _ => Err(Corrupt { at: 0, what: "format 1" }),
    }
}

fn finished(r: &Reader<'_>) -> Result<(), Corrupt> {
    match r.is_empty() {
        true => Ok(()),
        false => Err(Corrupt { at: 0, what: "nothing after the value" }),
    }
}

fn decode_meta(v: &[u8]) -> Result<(Option<i64>, i64, u64), Corrupt> {
    let mut r = Reader::new(v);
    format_byte(&mut r)?;
    let max_ts = match r.u8()? {
        0 => None,
        1 => Some(r.i64()?),
        _ => return Err(Corrupt { at: 1, what: "a flag" }),
    };
    let out = (max_ts, r.i64()?, r.u64()?);
    finished(&r)?;
    Ok(out)
}

fn decode_users(v: &[u8]) -> Result<Vec<&str>, Corrupt> {
    let mut r = Reader::new(v);
    format_byte(&mut r)?;
    let n = r.u64()?;
    let mut names = Vec::with_capacity(n.min(1 << 20) as usize);
    for _ in 0..n {
        names.push(r.str()?);
    }
    finished(&r)?;
    Ok(names)
}

fn encode_place(p: &Place) -> Vec<u8> {
    let mut v = Vec::with_capacity(24 + p.key.len() + p.city.text.len());
    v.push(FORMAT);
    codec::put_bytes(&mut v, p.key.as_bytes());
    codec::put_u64(&mut v, p.count);
    codec::put_i64(&mut v, p.city.ts_ms);
    codec::put_bytes(&mut v, p.city.text.as_bytes());
    v
}

fn decode_place(v: &[u8]) -> Result<Place, Corrupt> {
    let mut r = Reader::new(v);
    format_byte(&mut r)?;
    let key = r.str()?;
    let (state, _) = key.split_once('\0').ok_or(Corrupt { at: 1, what: "a place key `<state>\\0<city>`" })?;
    let count = r.u64()?;
    let city = Spelling { ts_ms: r.i64()?, text: r.str()?.into() };
    finished(&r)?;
    Ok(Place { key: key.into(), state: state.into(), city, count })
}

/// Adds one minute chunk to `c`; on error `c` is left as it was.
fn apply_chunk(c: &mut PartitionCounts, minute: i64, v: &[u8]) -> Result<(), Corrupt> {
    let mut r = Reader::new(v);
    format_byte(&mut r)?;
    let total = r.u64()?;
    let n_users = r.u64()?;
    let mut users = Vec::with_capacity(n_users.min(1 << 20) as usize);
    for _ in 0..n_users {
        let id = u32::try_from(r.u64()?).map_err(|_| Corrupt { at: 0, what: "a user id" })?;
        if id >= c.next_user {
            return Err(Corrupt { at: 0, what: "a known user id" });
        }
        users.push(id);
    }
    let n_places = r.u64()?;
    let mut places = Vec::with_capacity(n_places.min(1 << 20) as usize);
    for _ in 0..n_places {
        let id = u32::try_from(r.u64()?).map_err(|_| Corrupt { at: 0, what: "a place id" })?;
        if id as usize >= c.places.len() {
            return Err(Corrupt { at: 0, what: "a known place id" });
        }
        places.push((id, r.u64()?, Spelling { ts_ms: r.i64()?, text: r.str()?.into() }));
    }
    finished(&r)?;
    let m = c.minutes.entry(minute).or_default();
    m.total += total;
    m.users.extend(users);
    for (id, n, city) in places {
        match m.places.get_mut(&id) {
            Some(mp) => {
                mp.count += n;
                mp.city.merge(&city);
            }
            None => {
                m.places.insert(id, MinutePlace { count: n, city });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_796_464_800_000; // 2026-12-05T10:00:00Z

    fn limits() -> Limits {
        Limits { users: 1000, cities: 1000, open_minutes: 100, lateness_ms: 30_000 }
    }

    fn msg<'a>(user: &'a str, state: &'a str, city: &'a str, place: &'a str, ts_ms: i64) -> Counted<'a> {
        Counted { username: user, state, city, place, ts_ms }
    }

    #[test]
    fn late_means_behind_the_partition_watermark_or_a_final_minute() {
        let mut s = MessagesStore::new(limits(), false);
        let a = s.add(&msg("fred", "NY", "New York", "NY\0new york", T0 + 5_000));
        assert_eq!((a.user, a.minute, a.new_in_minute), ((0, true), Some(T0), true));
        // Watermark T0 + 95 s - 30 s = T0 + 65 s: the first minute is behind it.
        s.add(&msg("ana", "NY", "New York", "NY\0new york", T0 + 95_000));
        let late = s.add(&msg("fred", "NY", "new york", "NY\0new york", T0 + 10_000));
        assert_eq!(late.minute, None, "behind the watermark");
        let ok = s.add(&msg("fred", "NY", "NEW YORK", "NY\0new york", T0 + 61_000));
        assert_eq!(ok.minute, Some(T0 + 60_000), "within the allowed lateness");
        s.lock().advance(T0 + 120_000, i64::MIN);
        assert_eq!(s.add(&msg("bo", "CA", "LA", "CA\0la", T0 + 119_000)).minute, None, "final minute");
        let c = s.lock();
        assert_eq!((c.total(), c.late(), c.users()), (5, 2, 3));
        assert_eq!(c.places()[0].count, 4, "late messages count all time");
        assert_eq!(&*c.places()[0].city.text, "New York", "earliest spelling");
        let m = &c.minutes()[&(T0 + 60_000)];
        assert_eq!((m.total, m.users.len()), (2, 2));
        assert_eq!(&*m.places[&0].city.text, "NEW YORK", "a minute shows its own earliest spelling");
    }

    #[test]
    fn bounds_name_the_field_and_the_key() {
        let lim = Limits { users: 2, cities: 2, open_minutes: 2, lateness_ms: 0 };
        let mut s = MessagesStore::new(lim, false);
        for (i, u) in ["a", "b"].iter().enumerate() {
            let m = msg(u, "NY", "X", "NY\0x", T0 + i as i64 * 60_000);
            s.lock().admits(&m, &lim).expect("room");
            s.add(&m);
        }
        let c = s.lock();
        let e = c.admits(&msg("c", "NY", "X", "NY\0x", T0), &lim).expect_err("a third user");
        assert!(e.message.contains("max_users_per_partition") && e.message.starts_with("key"), "{}", e.message);
        c.admits(&msg("a", "NY", "X", "NY\0x", T0 + 60_000), &lim).expect("known user, open minute");
        let e = c.admits(&msg("a", "NY", "X", "NY\0x", T0 + 120_000), &lim).expect_err("a third minute");
        assert!(e.message.contains("`ts`"), "{}", e.message);
        c.admits(&msg("a", "NY", "X", "NY\0x", T0 - 60_000), &lim).expect("late: opens nothing");
        drop(c);
        s.add(&msg("a", "CA", "Y", "CA\0y", T0 + 60_000));
        let e = s.lock().admits(&msg("a", "TX", "Z", "TX\0z", T0 + 60_000), &lim).expect_err("a third city");
        assert!(e.message.contains("`city`") && e.message.contains("max_cities"), "{}", e.message);
    }

    #[test]
    fn flushes_round_trip_and_prune_deletes_a_minutes_chunks() {
        let mut s = MessagesStore::new(limits(), true);
        let mut log: Vec<Change> = Vec::new();
        s.add(&msg("fred", "NY", "New York", "NY\0new york", T0));
        s.add(&msg("zoë", "NY", "new york", "NY\0new york", T0 + 1));
        s.take_changes(&mut log);
        s.add(&msg("fred", "CA", "Los Angeles", "CA\0los angeles", T0 + 61_000));
        s.add(&msg("ana", "NY", "New York", "NY\0new york", T0 + 2));
        s.take_changes(&mut log);
        let mut nothing = Vec::new();
        s.take_changes(&mut nothing);
        assert!(nothing.is_empty(), "nothing changed: {nothing:?}");
        let replay = |log: &[Change]| {
            let mut e = Entries::new();
            for (k, v) in log {
                match v {
                    Some(v) => e.insert(k.clone(), v.clone()),
                    None => e.remove(k),
                };
            }
            e
        };
        let mut r = MessagesStore::new(limits(), true);
        r.restore(replay(&log));
        assert_eq!(r.corrupt_entries(), 0);
        {
            let (a, b) = (s.lock(), r.lock());
            assert_eq!((b.total(), b.users(), b.max_ts(), b.places().len()), (a.total(), 3, Some(T0 + 61_000), 2));
            for (m, counts) in a.minutes() {
                let got = &b.minutes()[m];
                assert_eq!((got.total, &got.users, &got.places), (counts.total, &counts.users, &counts.places));
            }
        }
        // The board acknowledges minute T0: its two chunks go, the other minute stays.
        r.lock().advance(T0 + 60_000, T0 + 60_000);
        let mut changes = Vec::new();
        r.take_changes(&mut changes);
        let deleted: Vec<String> =
            changes.iter().filter(|c| c.1.is_none()).map(|c| String::from_utf8_lossy(&c.0).into_owned()).collect();
        assert_eq!(deleted, [format!("m/{T0}/0"), format!("m/{T0}/1")]);
        log.extend(changes);
        let mut again = MessagesStore::new(limits(), true);
        again.restore(replay(&log));
        let c = again.lock();
        assert_eq!(c.minutes().keys().copied().collect::<Vec<_>>(), [T0 + 60_000]);
        assert_eq!((c.closed_before(), c.durable_before(), c.total()), (T0 + 60_000, T0 + 60_000, 4));
    }
}
