//! Process-wide counters of storage events, read by the broker's metrics
//! and `DescribeTopic`. Plain atomics: the storage layer does not depend on
//! a metrics crate.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

static TRUNCATED_BYTES: AtomicU64 = AtomicU64::new(0);
static TRUNCATIONS: AtomicU64 = AtomicU64::new(0);
static DAMAGED_RANGES: AtomicU64 = AtomicU64::new(0);
static CRC_FAILURES: AtomicU64 = AtomicU64::new(0);
static FLUSHES: AtomicU64 = AtomicU64::new(0);
static FLUSH_NANOS: AtomicU64 = AtomicU64::new(0);
static FLUSH_FAILURES: AtomicU64 = AtomicU64::new(0);

/// A snapshot of every counter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Torn tails cut at recovery.
    pub truncations: u64,
    /// Bytes cut at recovery.
    pub truncated_bytes: u64,
    /// Interior damaged ranges found at recovery.
    pub damaged_ranges: u64,
    /// Frames that failed their checks when read.
    pub crc_failures: u64,
    /// Completed flushes.
    pub flushes: u64,
    /// Total time spent in completed flushes, in nanoseconds.
    pub flush_nanos: u64,
    /// Failed flushes (each poisons its partition).
    pub flush_failures: u64,
}

/// Reads all counters.
pub fn snapshot() -> Counters {
    Counters {
        truncations: TRUNCATIONS.load(Ordering::Relaxed),
        truncated_bytes: TRUNCATED_BYTES.load(Ordering::Relaxed),
        damaged_ranges: DAMAGED_RANGES.load(Ordering::Relaxed),
        crc_failures: CRC_FAILURES.load(Ordering::Relaxed),
        flushes: FLUSHES.load(Ordering::Relaxed),
        flush_nanos: FLUSH_NANOS.load(Ordering::Relaxed),
        flush_failures: FLUSH_FAILURES.load(Ordering::Relaxed),
    }
}

pub(crate) fn add_truncated(bytes: u64) {
    TRUNCATIONS.fetch_add(1, Ordering::Relaxed);
    TRUNCATED_BYTES.fetch_add(bytes, Ordering::Relaxed);
}
pub(crate) fn add_damage() {
    DAMAGED_RANGES.fetch_add(1, Ordering::Relaxed);
}
pub(crate) fn add_crc_failure() {
    CRC_FAILURES.fetch_add(1, Ordering::Relaxed);
}
pub(crate) fn add_flush_failure() {
    FLUSH_FAILURES.fetch_add(1, Ordering::Relaxed);
}
pub(crate) fn record_flush(took: Duration) {
    FLUSHES.fetch_add(1, Ordering::Relaxed);
    FLUSH_NANOS.fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
}
