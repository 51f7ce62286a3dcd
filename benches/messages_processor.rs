//! In-process cost of the messages pipeline's logic on one core, without Kafka or actors: decode,
//! normalize and count each message (memory only, then with the changelog's change tracking and a
//! flush every 20,000 messages), and the board's work (closing minutes, the totals). Prints
//! messages per second.
//!
//!   cargo bench --bench messages_processor [-- N [USERS]]

use std::sync::{Arc, Mutex};
use std::time::Instant;

use pagepulse::cli::demo::message;
use pagepulse::config::Config;
use pagepulse::engine::{Aggregate, Emit, Processor, RawRecord, RecordMeta};
use pagepulse::metrics::Metrics;
use pagepulse::pipelines::messages::{self, board_settings, MessagesProcessor, MinuteBoard};
use rand::SeedableRng;

fn main() {
    let args: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let n = args.first().copied().unwrap_or(1_000_000) as usize;
    let users = args.get(1).copied().unwrap_or(20_000);
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    // Event time over ten minutes, in order, like a live stream at n / 600 messages per second.
    let t0 = 1_796_464_800_000i64;
    let records: Vec<RawRecord> = (0..n as u64)
        .map(|i| {
            let ts = t0 + (i as i64 * 600_000) / n as i64;
            let (key, value) = message(&mut rng, i, users, 1, ts);
            RawRecord {
                key: Some(key.into_bytes()),
                value: Some(value.into_bytes()),
                offset: i as i64,
                timestamp_ms: Some(ts),
            }
        })
        .collect();
    let bytes: usize = records.iter().map(|r| r.value.as_ref().map_or(0, Vec::len)).sum();
    let cfg = Config::default().messages;
    println!(
        "messages processor: {n} messages ({:.1} MB) of {users} users over 10 minutes of event time, one core",
        bytes as f64 / 1e6
    );
    for durable in [false, true] {
        let board = Arc::new(Mutex::new(MinuteBoard::new(board_settings(&cfg))));
        let mut p = MessagesProcessor::new(0, &cfg, board.clone(), &Metrics::new(), durable);
        if durable {
            p.restore(Default::default(), &mut Emit::default());
        }
        let mut out = Emit::default();
        let (mut changes, mut change_bytes, mut flushes) = (Vec::new(), 0usize, 0);
        let t = Instant::now();
        for (i, rec) in records.iter().enumerate() {
            let m = p.decode(messages::INPUT, rec).expect("demo messages are valid");
            let meta =
                RecordMeta { topic: messages::INPUT, partition: 0, offset: rec.offset, timestamp_ms: rec.timestamp_ms };
            p.process(m, &meta, &mut out);
            if durable && i % 20_000 == 19_999 {
                p.take_changes(&mut changes);
                change_bytes += changes.iter().map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len)).sum::<usize>();
                changes.clear();
                flushes += 1;
            }
        }
        let secs = t.elapsed().as_secs_f64();
        let what = if durable { "durable (changes tracked, flushed every 20,000)" } else { "memory only" };
        println!(
            "  {what:48} {:>9.0} messages/s ({:.2} µs/message){}",
            n as f64 / secs,
            secs * 1e6 / n as f64,
            if durable {
                format!("; {flushes} flushes, {:.1} MB of changelog", change_bytes as f64 / 1e6)
            } else {
                String::new()
            }
        );
        // The board: every minute closes (the input went idle), then the totals.
        let t = Instant::now();
        let mut recs = Vec::new();
        board
            .lock()
            .expect("board")
            .on_tick(chrono::DateTime::from_timestamp_millis(t0 + 86_400_000).expect("t"), &mut recs);
        let closed = recs.iter().filter(|r| r.topic == messages::STATS).count();
        println!(
            "  board: {closed} minutes closed and the totals taken in {:.2} ms ({} records, {:.1} KB)",
            t.elapsed().as_secs_f64() * 1e3,
            recs.len(),
            recs.iter().map(|r| r.value.as_ref().map_or(0, Vec::len)).sum::<usize>() as f64 / 1e3
        );
    }
}
