//! Where the process's memory is: `pagepulse_memory_bytes{area}`, read at every scrape.
//!
//! - `resident`: the resident set (`/proc/self/statm`), what the operating system charges.
//! - `rust_heap`: memory mimalloc (the global allocator of the `pagepulse` binary, which every
//!   Rust allocation goes through: pipeline state, queues, buffers) holds committed, including
//!   freed pages it keeps for reuse.
//! - `c_heap`: memory glibc's `malloc` holds from the system (arenas and large mappings). Only C
//!   code allocates there, which in pagepulse is librdkafka: its fetched and queued messages,
//!   its per-broker buffers.
//! - `kafka_fetch_queue`, `kafka_produce_queue`: the bytes librdkafka reports in its consumer's
//!   prefetch queues and its producer's queue (from its statistics, every
//!   `kafka.statistics_interval`), a part of `c_heap`. The first is bounded by
//!   `queued.max.messages.kbytes`, the second by `engine.producer_queue_bytes`.
//!
//! The rest of `resident` is the binary, thread stacks and whatever the allocators have freed but
//! the kernel has not taken back.

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntGaugeVec, Opts};

/// `pagepulse_memory_bytes{area}`: refreshes the process-wide areas on every collection; the
/// Kafka queue areas are set by the clients' statistics callbacks.
#[derive(Clone)]
pub struct MemoryCollector {
    gauges: IntGaugeVec,
}

impl MemoryCollector {
    /// The gauges, unregistered.
    pub fn new() -> Self {
        let gauges = IntGaugeVec::new(
            Opts::new(
                "pagepulse_memory_bytes",
                "Memory of the process by area: resident, rust_heap (mimalloc committed), c_heap (glibc malloc: \
                 librdkafka), kafka_fetch_queue and kafka_produce_queue (librdkafka's queues, part of c_heap).",
            ),
            &["area"],
        )
        .expect("metric definition is valid");
        Self { gauges }
    }

    /// Sets the bytes of one Kafka queue area (`kafka_fetch_queue` or `kafka_produce_queue`).
    pub fn set_queue(&self, area: &'static str, bytes: i64) {
        self.gauges.with_label_values(&[area]).set(bytes);
    }

    fn refresh(&self) {
        if let Some(rss) = resident_bytes() {
            self.gauges.with_label_values(&["resident"]).set(rss);
        }
        self.gauges.with_label_values(&["rust_heap"]).set(mimalloc_committed());
        self.gauges.with_label_values(&["c_heap"]).set(glibc_heap());
    }
}

impl Default for MemoryCollector {
    fn default() -> Self {
        Self::new()
    }
}

impl Collector for MemoryCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.gauges.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.refresh();
        self.gauges.collect()
    }
}

/// The resident set in bytes, from `/proc/self/statm` (Linux).
pub fn resident_bytes() -> Option<i64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: i64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * page.max(1) as i64)
}

/// Bytes mimalloc holds committed (0 when it is not the allocator in use, as in tests).
fn mimalloc_committed() -> i64 {
    let mut commit = 0usize;
    // SAFETY: every out-parameter may be null; `commit` is a valid place for one usize.
    unsafe {
        libmimalloc_sys::mi_process_info(
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            &mut commit,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        );
    }
    i64::try_from(commit).unwrap_or(i64::MAX)
}

/// Bytes glibc's malloc holds from the system: its arenas plus its directly mapped blocks.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn glibc_heap() -> i64 {
    // SAFETY: mallinfo2 has no preconditions and returns a plain struct.
    let m = unsafe { libc::mallinfo2() };
    i64::try_from(m.arena.saturating_add(m.hblkhd)).unwrap_or(i64::MAX)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn glibc_heap() -> i64 {
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_areas_follow_allocations_in_each_heap() {
        let c = MemoryCollector::new();
        let read = |area: &str| c.gauges.with_label_values(&[area]).get();
        c.refresh();
        let (rss0, c0) = (read("resident"), read("c_heap"));
        assert!(rss0 > 0, "a running process has a resident set");
        // 64 MiB from glibc's malloc, touched so that it is resident.
        let n = 64 << 20;
        // SAFETY: a plain allocation, written then freed below.
        let p = unsafe { libc::malloc(n) } as *mut u8;
        assert!(!p.is_null());
        unsafe { std::ptr::write_bytes(p, 1, n) };
        c.refresh();
        let (rss1, c1) = (read("resident"), read("c_heap"));
        unsafe { libc::free(p.cast()) };
        assert!(c1 - c0 >= n as i64, "c_heap grew by {} for a {n}-byte malloc", c1 - c0);
        assert!(rss1 - rss0 >= (n as i64) * 9 / 10, "resident grew by {} for {n} touched bytes", rss1 - rss0);
        c.set_queue("kafka_fetch_queue", 1234);
        let families = c.collect();
        let text = {
            let mut buf = Vec::new();
            prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &families, &mut buf).unwrap();
            String::from_utf8(buf).unwrap()
        };
        assert!(text.contains("pagepulse_memory_bytes{area=\"kafka_fetch_queue\"} 1234"), "{text}");
    }
}
