//! Which partition a key lives in: the one partitioner every pagepulse producer and every lookup
//! agree on.
//!
//! pagepulse uses **Kafka's default partitioner for keyed records**: `murmur2(key)` made positive
//! (`& 0x7fffffff`), modulo the topic's partition count. It is what the Java client, Kafka Streams
//! and Kafka Connect use, and librdkafka's `murmur2_random` (librdkafka's own default,
//! `consistent_random`, hashes with CRC32 and puts keys elsewhere). Every producer pagepulse
//! creates sets `partitioner = murmur2_random` ([`super::client`]): HTTP writes, the CLI loaders
//! and demo producers, the pipelines' own outputs. External producers must use the same to have
//! their keys answered by the instance that holds them (librdkafka clients:
//! `partitioner=murmur2_random`; Java clients: the default). A query computes the partition of its
//! key with [`partition_for`] and asks that partition's owner (see [`super::instances`]).

/// Kafka's murmur2 hash (`org.apache.kafka.common.utils.Utils.murmur2`), seed `0x9747b28c`.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= (rest[2] as u32) << 16;
    }
    if rest.len() >= 2 {
        h ^= (rest[1] as u32) << 8;
    }
    if !rest.is_empty() {
        h ^= rest[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition of `key` in a topic of `partitions` partitions (at least 1), as Kafka's default
/// partitioner and librdkafka's `murmur2_random` place it.
pub fn partition_for(key: &[u8], partitions: i32) -> i32 {
    let n = partitions.max(1);
    ((murmur2(key) as u32 & 0x7fff_ffff) % n as u32) as i32
}

/// The librdkafka property value every pagepulse producer sets for `partitioner`.
pub const LIBRDKAFKA_PARTITIONER: &str = "murmur2_random";

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectors of Kafka's own `UtilsTest.testMurmur2`.
    #[test]
    fn murmur2_matches_kafkas_test_vectors() {
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58_897_971),
            (b"abc", 479_470_107),
        ];
        for (data, want) in cases {
            assert_eq!(murmur2(data), want, "{}", String::from_utf8_lossy(data));
        }
    }

    #[test]
    fn partitions_are_in_range_and_spread() {
        let mut seen = [0u32; 8];
        for i in 0..8000 {
            let p = partition_for(format!("facebook:page-{i}").as_bytes(), 8);
            assert!((0..8).contains(&p));
            seen[p as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 800), "{seen:?}");
        assert_eq!(partition_for(b"anything", 1), 0);
        assert_eq!(partition_for(b"anything", 0), 0, "a bad count never panics");
    }
}
