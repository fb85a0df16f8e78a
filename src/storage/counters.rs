//! Process-wide counters of storage events, read by the broker's metrics
//! and `DescribeTopic`, and [`Histogram`], the lock-free histogram the
//! metrics of every layer use. Plain atomics: the storage layer does not
//! depend on a metrics crate.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

static TRUNCATED_BYTES: AtomicU64 = AtomicU64::new(0);
static TRUNCATIONS: AtomicU64 = AtomicU64::new(0);
static DAMAGED_RANGES: AtomicU64 = AtomicU64::new(0);
static SCRUB_FINDINGS: AtomicU64 = AtomicU64::new(0);
static CRC_FAILURES: AtomicU64 = AtomicU64::new(0);
static FLUSH_FAILURES: AtomicU64 = AtomicU64::new(0);
static DISK_FULL: AtomicU64 = AtomicU64::new(0);

/// Upper bounds of the flush-latency buckets, in nanoseconds: 50 µs to 10 s.
const FLUSH_BOUNDS_NS: [u64; 16] = [
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    10_000_000_000,
];

/// How long completed flushes took (`fdatasync`/`msync` plus, for a full
/// flush, the checkpoint), in nanoseconds.
pub static FLUSH_LATENCY: Histogram<16> = Histogram::new(FLUSH_BOUNDS_NS);

/// A snapshot of every counter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Torn tails cut at recovery.
    pub truncations: u64,
    /// Bytes cut at recovery.
    pub truncated_bytes: u64,
    /// Damaged ranges found, at recovery (interior damage) or by the
    /// scrubber.
    pub damaged_ranges: u64,
    /// The part of `damaged_ranges` the background scrubber found.
    pub scrub_findings: u64,
    /// Frames that failed their checks when read.
    pub crc_failures: u64,
    /// Completed flushes.
    pub flushes: u64,
    /// Total time spent in completed flushes, in nanoseconds.
    pub flush_nanos: u64,
    /// Failed flushes (each poisons its partition).
    pub flush_failures: u64,
    /// Writes refused because the disk (or quota) was full.
    pub disk_full: u64,
}

/// Reads all counters.
pub fn snapshot() -> Counters {
    let flush = FLUSH_LATENCY.snapshot();
    Counters {
        truncations: TRUNCATIONS.load(Ordering::Relaxed),
        truncated_bytes: TRUNCATED_BYTES.load(Ordering::Relaxed),
        damaged_ranges: DAMAGED_RANGES.load(Ordering::Relaxed),
        scrub_findings: SCRUB_FINDINGS.load(Ordering::Relaxed),
        crc_failures: CRC_FAILURES.load(Ordering::Relaxed),
        flushes: flush.count(),
        flush_nanos: flush.sum,
        flush_failures: FLUSH_FAILURES.load(Ordering::Relaxed),
        disk_full: DISK_FULL.load(Ordering::Relaxed),
    }
}

pub(crate) fn add_truncated(bytes: u64) {
    TRUNCATIONS.fetch_add(1, Ordering::Relaxed);
    TRUNCATED_BYTES.fetch_add(bytes, Ordering::Relaxed);
}
pub(crate) fn add_damage() {
    DAMAGED_RANGES.fetch_add(1, Ordering::Relaxed);
}
pub(crate) fn add_scrub_finding() {
    SCRUB_FINDINGS.fetch_add(1, Ordering::Relaxed);
    DAMAGED_RANGES.fetch_add(1, Ordering::Relaxed);
}
pub(crate) fn add_crc_failure() {
    CRC_FAILURES.fetch_add(1, Ordering::Relaxed);
}
pub(crate) fn add_flush_failure() {
    FLUSH_FAILURES.fetch_add(1, Ordering::Relaxed);
}
pub(crate) fn add_disk_full() {
    DISK_FULL.fetch_add(1, Ordering::Relaxed);
}
pub(crate) fn record_flush(took: Duration) {
    FLUSH_LATENCY.observe(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
}

/// A histogram over `N` fixed upper bounds (inclusive, ascending) plus an
/// overflow bucket, in integer units (nanoseconds, records, bytes).
///
/// Recording is two relaxed atomic adds (the bucket and the sum): no lock,
/// no allocation, so it can sit on a hot path. The count is the sum of the
/// buckets, so a snapshot's count always matches its buckets; the sum may
/// run ahead of them by the observations in flight.
#[derive(Debug)]
pub struct Histogram<const N: usize> {
    bounds: [u64; N],
    buckets: [AtomicU64; N],
    overflow: AtomicU64,
    sum: AtomicU64,
}

/// A histogram's counts at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Upper bounds, ascending.
    pub bounds: Vec<u64>,
    /// Observations per bucket (not cumulative): one per bound, then the
    /// overflow bucket (above the last bound).
    pub buckets: Vec<u64>,
    /// Sum of all observations (wrapping at `u64::MAX`).
    pub sum: u64,
}

impl HistogramSnapshot {
    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

impl<const N: usize> Histogram<N> {
    /// An empty histogram. `bounds` must ascend.
    pub const fn new(bounds: [u64; N]) -> Self {
        Histogram {
            bounds,
            buckets: [const { AtomicU64::new(0) }; N],
            overflow: AtomicU64::new(0),
            sum: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, value: u64) {
        let i = self.bounds.partition_point(|b| *b < value);
        match self.buckets.get(i) {
            Some(bucket) => bucket.fetch_add(1, Ordering::Relaxed),
            None => self.overflow.fetch_add(1, Ordering::Relaxed),
        };
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    /// The current counts.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut buckets: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        buckets.push(self.overflow.load(Ordering::Relaxed));
        HistogramSnapshot {
            bounds: self.bounds.to_vec(),
            buckets,
            sum: self.sum.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_inclusive_upper_bounds() {
        let h = Histogram::new([10, 100]);
        for v in [0, 10, 11, 100, 101, 5_000] {
            h.observe(v);
        }
        let s = h.snapshot();
        assert_eq!(s.bounds, vec![10, 100]);
        assert_eq!(s.buckets, vec![2, 2, 2]);
        assert_eq!(s.count(), 6);
        assert_eq!(s.sum, 5_222);
    }
}
