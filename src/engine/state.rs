//! Durable state: every stateful task writes the changes of its state to a compacted changelog
//! topic (one partition per input partition) and restores from it when it gets its partition.
//!
//! ## The changelog protocol
//!
//! A task writes its changes in **flushes** (every `kafka.commit_interval`, and when it stops):
//! the changed entries (`key -> value`, a tombstone for a removed entry), then one **position
//! marker** whose value is the input offset the flush covers (the next input offset to process).
//! An input offset is committed only once the flush that covers it is acknowledged, so the
//! committed offset never runs ahead of durable state; the marker lets a restoring task skip the
//! input records whose effect is already in the restored state, so no record counts twice.
//!
//! Every record carries its writer's **owner id** (header `pagepulse.owner`, a random number per
//! task incarnation). A restoring task first appends a **fence** record with its new owner id,
//! then reads the partition up to that fence. Records of any other owner after a fence are
//! ignored, so a previous owner that still writes (a crashed instance's last in-flight flush, or
//! one that has not noticed a rebalance yet) cannot change the state the new owner restored.
//!
//! A flush is atomic on replay: entries count only once their flush's marker is read. Entries of
//! a flush cut short by a crash (a **torn** tail) are dropped at restore, and the new owner
//! rewrites those keys (their committed value, or a tombstone) before it writes anything else, so
//! a later restore cannot mistake them for committed entries either.
//!
//! [`Replay`] is that logic as plain code; [`StateBackend`] reads and writes a changelog (Kafka in
//! production, [`MemoryBackend`] in tests).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use super::record::OutRecord;

/// Key of a position marker. Starts with a zero byte, which no pipeline's keys do.
pub const MARKER_KEY: &[u8] = b"\0pagepulse.position";
/// Key of a fence record.
pub const FENCE_KEY: &[u8] = b"\0pagepulse.fence";
/// Header naming the owner that wrote a changelog record (8 bytes, little endian).
pub const OWNER_HEADER: &str = "pagepulse.owner";

/// One change of a store: a key and its new value, or `None` when the entry is gone.
pub type Change = (Vec<u8>, Option<Vec<u8>>);

/// The live entries of a store, as restored: key -> value.
pub type Entries = HashMap<Vec<u8>, Vec<u8>>;

/// The name of store `store`'s changelog topic for application (consumer group) `app_id`,
/// without the deployment's topic prefix.
pub fn changelog_topic(app_id: &str, store: &str) -> String {
    format!("{app_id}-{store}-changelog")
}

/// A fresh owner id for a task incarnation.
pub fn new_owner() -> u64 {
    loop {
        let id = rand::random::<u64>();
        if id != 0 {
            return id;
        }
    }
}

/// Encodes a position marker's value: the next input offset.
pub fn encode_position(next_offset: i64) -> Vec<u8> {
    next_offset.to_le_bytes().to_vec()
}

/// Decodes a position marker's value.
pub fn decode_position(value: &[u8]) -> Option<i64> {
    Some(i64::from_le_bytes(value.try_into().ok()?))
}

/// The owner id of a changelog record, from its header.
pub fn owner_of(headers: &[(&'static str, Vec<u8>)]) -> Option<u64> {
    let (_, v) = headers.iter().find(|(n, _)| *n == OWNER_HEADER)?;
    Some(u64::from_le_bytes(v.as_slice().try_into().ok()?))
}

/// What a restore found.
#[derive(Debug, Default)]
pub struct Restored {
    /// The live entries of every complete flush.
    pub entries: Entries,
    /// The input offset the restored state covers: input records before it are already in it.
    pub position: Option<i64>,
    /// Keys written by flushes that never completed: the new owner rewrites them.
    pub torn: Vec<Vec<u8>>,
    /// Changelog records read.
    pub records: u64,
    /// Changelog bytes read (keys and values).
    pub bytes: u64,
}

impl Restored {
    /// The records that repair the torn keys: each key's committed value, or a tombstone.
    pub fn repairs(&self) -> Vec<Change> {
        self.torn.iter().map(|k| (k.clone(), self.entries.get(k).cloned())).collect()
    }
}

/// Replays a changelog partition, record by record in offset order (see the module docs).
#[derive(Debug, Default)]
pub struct Replay {
    entries: Entries,
    pending: Vec<Change>,
    owner: Option<u64>,
    position: Option<i64>,
    torn: HashSet<Vec<u8>>,
    records: u64,
    bytes: u64,
}

impl Replay {
    /// An empty replay.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one changelog record written by `owner` (`None` when the header is missing).
    pub fn apply(&mut self, key: &[u8], value: Option<&[u8]>, owner: Option<u64>) {
        self.records += 1;
        self.bytes += (key.len() + value.map_or(0, <[u8]>::len)) as u64;
        if key == FENCE_KEY {
            // A new owner: whatever the previous one left unfinished is torn.
            self.tear();
            self.owner = owner;
            return;
        }
        if self.owner.is_some() && owner != self.owner {
            return; // fenced off
        }
        if self.owner.is_none() {
            // Records before the first fence (none in practice): adopt their writer.
            self.owner = owner;
        }
        if key == MARKER_KEY {
            if let Some(pos) = value.and_then(decode_position) {
                self.position = Some(pos);
            }
            for (k, v) in self.pending.drain(..) {
                self.torn.remove(&k);
                match v {
                    Some(v) => self.entries.insert(k, v),
                    None => self.entries.remove(&k),
                };
            }
        } else {
            self.pending.push((key.to_vec(), value.map(<[u8]>::to_vec)));
        }
    }

    fn tear(&mut self) {
        for (k, _) in self.pending.drain(..) {
            self.torn.insert(k);
        }
    }

    /// The state of every complete flush.
    pub fn finish(mut self) -> Restored {
        self.tear();
        let mut torn: Vec<Vec<u8>> = self.torn.into_iter().collect();
        torn.sort();
        Restored { entries: self.entries, position: self.position, torn, records: self.records, bytes: self.bytes }
    }
}

/// Errors of reading or writing a changelog.
#[derive(Debug, thiserror::Error)]
#[error("changelog {topic}/{partition}: {reason}")]
pub struct Error {
    /// Full changelog topic name.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// What went wrong.
    pub reason: String,
}

/// Where changelogs live.
pub trait StateBackend: Send + Sync + 'static {
    /// Fences partition `partition` of changelog `topic` (logical name) for `owner`, then
    /// replays it up to the fence.
    fn restore(&self, topic: &'static str, partition: i32, owner: u64) -> Result<Restored, Error>;

    /// True once the engine that uses this backend is stopping: a restore that keeps failing
    /// stops retrying then (default: never).
    fn cancelled(&self) -> bool {
        false
    }
}

/// Changelog records as a store's writer sends them: `changes` then a marker for `position`,
/// each stamped with `owner`, to partition `partition` of `topic`.
pub fn flush_records(
    topic: &'static str,
    partition: i32,
    owner: u64,
    changes: impl IntoIterator<Item = Change>,
    position: Option<i64>,
) -> Vec<OutRecord> {
    let mut out = change_records(topic, partition, owner, changes);
    out.push(marker_record(topic, partition, owner, position));
    out
}

/// The records of `changes`, stamped with `owner`, for partition `partition` of `topic`.
pub fn change_records(
    topic: &'static str,
    partition: i32,
    owner: u64,
    changes: impl IntoIterator<Item = Change>,
) -> Vec<OutRecord> {
    changes
        .into_iter()
        .map(|(k, v)| OutRecord {
            topic,
            key: Some(k),
            value: v,
            headers: vec![(OWNER_HEADER, owner.to_le_bytes().to_vec())],
            partition: Some(partition),
        })
        .collect()
}

/// The position marker that commits the changes written before it.
pub fn marker_record(topic: &'static str, partition: i32, owner: u64, position: Option<i64>) -> OutRecord {
    OutRecord {
        topic,
        key: Some(MARKER_KEY.to_vec()),
        value: position.map(encode_position),
        headers: vec![(OWNER_HEADER, owner.to_le_bytes().to_vec())],
        partition: Some(partition),
    }
}

/// The fence record of `owner`.
pub fn fence_record(topic: &'static str, partition: i32, owner: u64) -> OutRecord {
    OutRecord {
        topic,
        key: Some(FENCE_KEY.to_vec()),
        value: Some(owner.to_le_bytes().to_vec()),
        headers: vec![(OWNER_HEADER, owner.to_le_bytes().to_vec())],
        partition: Some(partition),
    }
}

/// Changelogs in memory, fed from a [`super::MemorySink`]'s records: for tests.
#[derive(Debug, Default, Clone)]
pub struct MemoryBackend {
    log: Arc<Mutex<Vec<OutRecord>>>,
}

impl MemoryBackend {
    /// An empty backend.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends records (changelog records among others; the rest are ignored at restore).
    pub fn append(&self, records: impl IntoIterator<Item = OutRecord>) {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).extend(records);
    }
}

impl StateBackend for MemoryBackend {
    fn restore(&self, topic: &'static str, partition: i32, owner: u64) -> Result<Restored, Error> {
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.push(fence_record(topic, partition, owner));
        let mut replay = Replay::new();
        for r in log.iter().filter(|r| r.topic == topic && r.partition == Some(partition)) {
            replay.apply(r.key.as_deref().unwrap_or_default(), r.value.as_deref(), owner_of(&r.headers));
        }
        Ok(replay.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "s-changelog";

    fn replay(records: &[OutRecord]) -> Restored {
        let mut r = Replay::new();
        for rec in records {
            r.apply(rec.key.as_deref().unwrap(), rec.value.as_deref(), owner_of(&rec.headers));
        }
        r.finish()
    }

    fn ch(k: &str, v: Option<&str>) -> Change {
        (k.as_bytes().to_vec(), v.map(|v| v.as_bytes().to_vec()))
    }

    #[test]
    fn complete_flushes_apply_in_order_and_tombstones_remove() {
        let mut log = vec![fence_record(T, 0, 1)];
        log.extend(flush_records(T, 0, 1, [ch("a", Some("1")), ch("b", Some("1"))], Some(10)));
        log.extend(flush_records(T, 0, 1, [ch("a", Some("2")), ch("b", None)], Some(20)));
        let r = replay(&log);
        assert_eq!(r.position, Some(20));
        assert_eq!(r.entries.len(), 1);
        assert_eq!(r.entries[b"a".as_slice()], b"2");
        assert!(r.torn.is_empty());
        assert_eq!(r.records, 7);
    }

    #[test]
    fn a_torn_flush_is_dropped_and_its_keys_reported() {
        let mut log = vec![fence_record(T, 0, 1)];
        log.extend(flush_records(T, 0, 1, [ch("a", Some("1"))], Some(10)));
        let mut torn = flush_records(T, 0, 1, [ch("a", Some("2")), ch("c", Some("9"))], Some(20));
        torn.pop(); // the crash took the marker
        log.extend(torn);
        let r = replay(&log);
        assert_eq!(r.position, Some(10));
        assert_eq!(r.entries[b"a".as_slice()], b"1");
        assert!(!r.entries.contains_key(b"c".as_slice()));
        assert_eq!(r.torn, vec![b"a".to_vec(), b"c".to_vec()]);
        assert_eq!(r.repairs(), vec![ch("a", Some("1")), ch("c", None)]);
    }

    #[test]
    fn a_repaired_tail_stays_dead_after_the_next_owner_commits() {
        let mut log = vec![fence_record(T, 0, 1)];
        log.extend(flush_records(T, 0, 1, [ch("a", Some("1"))], Some(10)));
        let mut torn = flush_records(T, 0, 1, [ch("c", Some("9"))], Some(20));
        torn.pop();
        log.extend(torn);
        // Owner 2 restores, repairs, and commits a flush of its own.
        log.push(fence_record(T, 0, 2));
        let first = replay(&log);
        log.extend(flush_records(T, 0, 2, first.repairs(), first.position));
        log.extend(flush_records(T, 0, 2, [ch("a", Some("3"))], Some(15)));
        let r = replay(&log);
        assert_eq!(r.position, Some(15));
        assert_eq!(r.entries.len(), 1, "c was never committed: {:?}", r.entries);
        assert_eq!(r.entries[b"a".as_slice()], b"3");
    }

    #[test]
    fn a_fenced_owner_cannot_change_the_state() {
        let mut log = vec![fence_record(T, 0, 1)];
        log.extend(flush_records(T, 0, 1, [ch("a", Some("1"))], Some(10)));
        log.push(fence_record(T, 0, 2));
        // Owner 1 has not noticed the rebalance: a full flush lands after owner 2's fence.
        log.extend(flush_records(T, 0, 1, [ch("a", Some("99"))], Some(50)));
        log.extend(flush_records(T, 0, 2, [ch("b", Some("2"))], Some(12)));
        let r = replay(&log);
        assert_eq!(r.position, Some(12));
        assert_eq!(r.entries[b"a".as_slice()], b"1");
        assert_eq!(r.entries[b"b".as_slice()], b"2");
    }

    #[test]
    fn memory_backend_fences_and_restores_one_partition() {
        let b = MemoryBackend::new();
        b.append(flush_records(T, 0, 7, [ch("a", Some("1"))], Some(3)));
        b.append(flush_records(T, 1, 8, [ch("z", Some("1"))], Some(4)));
        let r = b.restore(T, 0, 9).unwrap();
        assert_eq!(r.position, Some(3));
        assert_eq!(r.entries.len(), 1);
        // Owner 7 writes after owner 9's fence: ignored by the next restore.
        b.append(flush_records(T, 0, 7, [ch("a", Some("2"))], Some(9)));
        let r = b.restore(T, 0, 10).unwrap();
        assert_eq!(r.entries[b"a".as_slice()], b"1");
    }

    #[test]
    fn changelog_topic_names_the_application_and_store() {
        assert_eq!(changelog_topic("pagepulse", "fans"), "pagepulse-fans-changelog");
    }
}
