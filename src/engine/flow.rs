//! Flow control per input partition: what the router does when a task's inbox is full.
//!
//! The consumer must keep polling whatever the tasks do: a consumer that stops polling for
//! longer than `max.poll.interval.ms` is dropped from its group, and one slow partition would
//! hold up every other. So the router never waits for an inbox. A batch that does not fit is
//! *parked* in its partition's queue here (later batches of that partition queue up behind it, in
//! order); once a partition holds more than its byte budget, it is paused in the consumer, which
//! stops fetching it while every other partition keeps flowing. Parked batches go to the inbox as
//! room appears; when the queue is empty again the partition is resumed, and the consumer fetches
//! from the record after the last one it returned (librdkafka drops what it had prefetched for a
//! paused partition, so nothing is read twice or skipped).
//!
//! The budget is in bytes, and is the bound on what a partition holds beyond its inbox (plus at
//! most what the polling thread had fetched before the pause took effect). It also sets how often
//! a partition that is always behind is paused and resumed: once per budget of records, not once
//! per batch, because every resume costs a fetch of what librdkafka had already prefetched.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use tokio::sync::mpsc::error::TrySendError;

use super::record::Batch;

/// Bytes a record counts for in a budget: its key and value plus the bookkeeping around them.
pub fn record_bytes(r: &super::record::RawRecord) -> usize {
    r.key.as_ref().map_or(0, Vec::len) + r.value.as_ref().map_or(0, Vec::len) + 48
}

/// Bytes of every record of `batch`.
pub fn batch_bytes(batch: &Batch) -> usize {
    batch.records.iter().map(record_bytes).sum()
}

/// A change the consumer must apply: pause or resume fetching a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlowChange {
    /// Stop fetching (full topic name, partition).
    Pause(Arc<str>, i32),
    /// Fetch again.
    Resume(Arc<str>, i32),
}

/// Key of a parked queue: (input index, partition), as the router numbers inputs.
pub type Key = (usize, i32);

/// The parked batches of one partition for one of its readers (the pipelines reading its topic).
#[derive(Debug, Default)]
struct Lane {
    batches: VecDeque<Batch>,
    bytes: usize,
}

/// The parked batches of one partition, a lane per reader, and whether it is paused.
#[derive(Debug)]
struct Queue {
    full_topic: Arc<str>,
    lanes: Vec<Lane>,
    paused: bool,
}

impl Queue {
    fn is_empty(&self) -> bool {
        self.lanes.iter().all(|l| l.batches.is_empty())
    }
}

/// Batches waiting for room in their task's inbox, per partition and reader, and which partitions
/// are paused. Plain bookkeeping: the router sends, the consumer pauses.
///
/// With several pipelines reading one topic (fan-out), each reader's copies of a partition's
/// batches queue in a lane of their own, so a slow reader holds up only itself until the
/// partition is paused: the partition is paused when any lane exceeds the budget, and resumed
/// when every lane is empty (the records of the copies are shared, so the budget bounds the
/// bytes one lane holds, not their sum).
#[derive(Debug)]
pub struct Parking {
    queues: HashMap<Key, Queue>,
    budget: usize,
}

impl Parking {
    /// Parking that pauses a partition once one reader's parked batches exceed `budget` bytes.
    pub fn new(budget: usize) -> Self {
        Self { queues: HashMap::new(), budget }
    }

    /// True when `key` has batches of `reader` waiting: a new batch of it must queue behind them.
    pub fn is_parked(&self, key: Key, reader: usize) -> bool {
        self.queues.get(&key).and_then(|q| q.lanes.get(reader)).is_some_and(|l| !l.batches.is_empty())
    }

    /// True when any partition has batches waiting.
    pub fn any(&self) -> bool {
        !self.queues.is_empty()
    }

    /// Partitions paused right now.
    pub fn paused(&self) -> usize {
        self.queues.values().filter(|q| q.paused).count()
    }

    /// Bytes parked in all (a batch parked for two readers counts twice).
    pub fn bytes(&self) -> usize {
        self.queues.values().flat_map(|q| &q.lanes).map(|l| l.bytes).sum()
    }

    /// Queues `batch` behind the other parked batches of `key` for `reader`; returns a pause
    /// when this takes the reader's lane over the budget and the partition is not paused yet.
    pub fn park(&mut self, key: Key, reader: usize, batch: Batch) -> Option<FlowChange> {
        let bytes = batch_bytes(&batch);
        let q = self.queues.entry(key).or_insert_with(|| Queue {
            full_topic: batch.full_topic.clone(),
            lanes: Vec::new(),
            paused: false,
        });
        if q.lanes.len() <= reader {
            q.lanes.resize_with(reader + 1, Lane::default);
        }
        let lane = &mut q.lanes[reader];
        lane.bytes += bytes;
        lane.batches.push_back(batch);
        if !q.paused && lane.bytes > self.budget {
            q.paused = true;
            return Some(FlowChange::Pause(q.full_topic.clone(), key.1));
        }
        None
    }

    /// Offers every partition's parked batches, oldest first per reader, to `send` until it
    /// refuses one (full: the batch stays first in line) or fails (closed: the error is returned,
    /// the batch dropped). Returns the resumes of paused partitions whose every lane emptied.
    pub fn drain<E>(
        &mut self,
        mut send: impl FnMut(Key, usize, Batch) -> Result<(), TrySendError<Batch>>,
        gone: impl Fn(Key, &Batch) -> E,
    ) -> Result<Vec<FlowChange>, E> {
        let mut changes = Vec::new();
        let mut emptied = Vec::new();
        for (&key, q) in self.queues.iter_mut() {
            for (reader, lane) in q.lanes.iter_mut().enumerate() {
                while let Some(batch) = lane.batches.pop_front() {
                    let bytes = batch_bytes(&batch);
                    match send(key, reader, batch) {
                        Ok(()) => lane.bytes -= bytes,
                        Err(TrySendError::Full(batch)) => {
                            lane.batches.push_front(batch);
                            break;
                        }
                        Err(TrySendError::Closed(batch)) => return Err(gone(key, &batch)),
                    }
                }
            }
            if q.is_empty() {
                emptied.push(key);
            }
        }
        for key in emptied {
            if let Some(q) = self.queues.remove(&key) {
                if q.paused {
                    changes.push(FlowChange::Resume(q.full_topic, key.1));
                }
            }
        }
        Ok(changes)
    }

    /// The partition was revoked: its parked batches are dropped (their offsets are never
    /// stored, so its next owner reads them again). Returns a resume when it was paused, to
    /// clear the consumer's pause flag in case the partition comes back.
    pub fn forget(&mut self, key: Key) -> Option<FlowChange> {
        let q = self.queues.remove(&key)?;
        q.paused.then_some(FlowChange::Resume(q.full_topic, key.1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{BatchAck, RawRecord};

    fn batch(offsets: std::ops::Range<i64>, value_len: usize) -> Batch {
        Batch {
            topic: "in",
            full_topic: "p.in".into(),
            partition: 0,
            records: Arc::new(
                offsets
                    .map(|o| RawRecord { key: None, value: Some(vec![b'x'; value_len]), offset: o, timestamp_ms: None })
                    .collect(),
            ),
            ack: BatchAck::untracked(),
            fanout: None,
        }
    }

    #[test]
    fn a_partition_is_paused_past_its_budget_and_resumed_once_its_queue_empties() {
        // Budget 300 bytes; each batch is 2 records of 52 + 48 bytes = 200 bytes.
        let mut parking = Parking::new(300);
        assert_eq!(parking.park((0, 3), 0, batch(0..2, 52)), None);
        assert_eq!(parking.park((0, 3), 0, batch(2..4, 52)), Some(FlowChange::Pause("p.in".into(), 3)));
        // Already paused: no second pause.
        assert_eq!(parking.park((0, 3), 0, batch(4..6, 52)), None);
        assert_eq!((parking.paused(), parking.bytes()), (1, 600));
        // Room for one batch: it leaves in order, the partition stays paused.
        let mut sent = Vec::new();
        let mut room = 1;
        let changes = parking
            .drain(
                |_, _, b| {
                    if room == 0 {
                        return Err(TrySendError::Full(b));
                    }
                    room -= 1;
                    sent.push(b.records[0].offset);
                    Ok(())
                },
                |_, _| (),
            )
            .expect("no task gone");
        assert!(changes.is_empty());
        assert_eq!((sent.clone(), parking.bytes(), parking.is_parked((0, 3), 0)), (vec![0], 400, true));
        // Room for everything: the rest leaves in order and the partition resumes.
        let changes = parking
            .drain(
                |_, _, b| {
                    sent.push(b.records[0].offset);
                    Ok(())
                },
                |_, _| (),
            )
            .expect("no task gone");
        assert_eq!(changes, vec![FlowChange::Resume("p.in".into(), 3)]);
        assert_eq!(sent, vec![0, 2, 4]);
        assert!(!parking.any());
    }

    #[test]
    fn a_queue_that_empties_before_its_budget_was_never_paused_and_needs_no_resume() {
        let mut parking = Parking::new(10_000);
        assert_eq!(parking.park((1, 0), 0, batch(0..2, 10)), None);
        let changes = parking.drain(|_, _, _| Ok(()), |_, _| ()).expect("no task gone");
        assert!(changes.is_empty() && !parking.any());
    }

    #[test]
    fn partitions_drain_independently() {
        let mut parking = Parking::new(0);
        parking.park((0, 0), 0, batch(0..1, 1));
        parking.park((0, 1), 0, batch(0..1, 1));
        // Partition 0's inbox is full, partition 1's is not.
        let changes = parking
            .drain(|key, _, b| if key.1 == 0 { Err(TrySendError::Full(b)) } else { Ok(()) }, |_, _| ())
            .expect("no task gone");
        assert_eq!(changes, vec![FlowChange::Resume("p.in".into(), 1)]);
        assert!(parking.is_parked((0, 0), 0) && !parking.is_parked((0, 1), 0));
    }

    #[test]
    fn readers_of_one_partition_park_in_lanes_and_the_partition_resumes_when_all_are_empty() {
        // Budget 300 bytes, batches of 200: reader 1 is stuck, reader 0 flows.
        let mut parking = Parking::new(300);
        assert_eq!(parking.park((0, 2), 1, batch(0..2, 52)), None);
        assert!(parking.is_parked((0, 2), 1) && !parking.is_parked((0, 2), 0), "lanes are separate");
        assert_eq!(parking.park((0, 2), 0, batch(2..4, 52)), None, "reader 0's lane is within budget");
        assert_eq!(parking.park((0, 2), 1, batch(2..4, 52)), Some(FlowChange::Pause("p.in".into(), 2)));
        assert_eq!(parking.park((0, 2), 0, batch(4..6, 52)), None, "one pause per partition");
        // Reader 0 has room, reader 1 not: reader 0's lane drains, the partition stays paused.
        let mut sent = Vec::new();
        let changes = parking
            .drain(
                |_, reader, b| {
                    if reader == 1 {
                        return Err(TrySendError::Full(b));
                    }
                    sent.push(b.records[0].offset);
                    Ok(())
                },
                |_, _| (),
            )
            .expect("no task gone");
        assert!(changes.is_empty(), "reader 1 still has parked batches");
        assert_eq!(sent, vec![2, 4]);
        assert_eq!(parking.paused(), 1);
        // Reader 1 catches up: its batches leave in order and the partition resumes.
        let mut sent = Vec::new();
        let changes = parking
            .drain(
                |_, reader, b| {
                    sent.push((reader, b.records[0].offset));
                    Ok(())
                },
                |_, _| (),
            )
            .expect("no task gone");
        assert_eq!(sent, vec![(1, 0), (1, 2)]);
        assert_eq!(changes, vec![FlowChange::Resume("p.in".into(), 2)]);
        assert!(!parking.any());
    }

    #[test]
    fn a_closed_inbox_is_an_error_and_a_revoked_partition_is_forgotten() {
        let mut parking = Parking::new(0);
        parking.park((0, 0), 0, batch(0..1, 1));
        let gone = parking.drain(|_, _, b| Err(TrySendError::Closed(b)), |key, _| key);
        assert_eq!(gone, Err((0, 0)));
        let mut parking = Parking::new(0);
        parking.park((0, 5), 0, batch(0..1, 1));
        assert_eq!(parking.forget((0, 5)), Some(FlowChange::Resume("p.in".into(), 5)));
        assert_eq!(parking.forget((0, 5)), None);
        assert!(!parking.any());
    }
}
