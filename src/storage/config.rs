//! Settings of one partition log.

/// How a [`PartitionLog`](super::PartitionLog) lays out, flushes and retains data.
///
/// Every field has a default (see [`LogConfig::default`]); the broker fills
/// them from the topic's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Largest `.log` file; the active segment rolls before a batch would
    /// cross it. Also the largest batch accepted. Default: 1 GiB.
    pub segment_bytes: u64,
    /// Age (ms since its first batch) after which the active segment rolls;
    /// `None` = never by age. Default: 7 days.
    pub segment_ms: Option<u64>,
    /// Bytes of log between two sparse index entries. Default: 4 KiB.
    pub index_interval_bytes: u32,
    /// Disk space is reserved for the active segment this many bytes at a
    /// time (with `fallocate`). Recovery after a crash reads at most this much
    /// of zero-filled tail per partition. Default: 1 MiB.
    pub preallocate_chunk_bytes: u64,
    /// Background flush when the oldest unflushed byte is this old (ms).
    /// Default: 1000.
    pub flush_interval_ms: u64,
    /// Background flush when this many bytes are unflushed. Default: 64 MiB.
    pub flush_bytes: u64,
    /// Start write-back of every this many appended bytes, without waiting
    /// for it (`sync_file_range(SYNC_FILE_RANGE_WRITE)`, from the background
    /// flusher), so a flush finds little left to write and a busy
    /// partition's writer is not held up by the write-back of a whole
    /// `flush_bytes`. Not a durability point: only a flush is. 0 turns it
    /// off. Default: 8 MiB.
    pub writeback_bytes: u64,
    /// Delete closed segments whose newest record is older than this (ms);
    /// `None` = keep forever. Default: 7 days.
    pub retention_ms: Option<u64>,
    /// Delete the oldest closed segments while the log is larger than this;
    /// `None` = no size limit. Default: none.
    pub retention_bytes: Option<u64>,
}

/// 7 days in milliseconds.
pub const WEEK_MS: u64 = 7 * 24 * 3600 * 1000;

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: Some(WEEK_MS),
            index_interval_bytes: 4096,
            preallocate_chunk_bytes: 1 << 20,
            flush_interval_ms: 1000,
            flush_bytes: 64 << 20,
            writeback_bytes: 8 << 20,
            retention_ms: Some(WEEK_MS),
            retention_bytes: None,
        }
    }
}

impl LogConfig {
    /// Smallest segment size accepted: a segment must hold a frame header and
    /// a useful payload.
    pub const MIN_SEGMENT_BYTES: u64 = 4096;

    /// The segment size actually used (never below [`Self::MIN_SEGMENT_BYTES`],
    /// never above what a `u32` position can address).
    pub fn effective_segment_bytes(&self) -> u64 {
        self.segment_bytes
            .clamp(Self::MIN_SEGMENT_BYTES, u64::from(u32::MAX))
    }

    /// Index interval actually used (at least 1 byte... and at most the segment).
    pub fn effective_index_interval(&self) -> u64 {
        u64::from(self.index_interval_bytes.max(64))
    }

    /// Most index entries a segment can need: one per interval plus the final one.
    pub fn max_index_entries(&self) -> u64 {
        self.effective_segment_bytes() / self.effective_index_interval() + 2
    }
}
