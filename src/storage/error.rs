//! Errors of the storage layer.

use std::io;
use std::path::PathBuf;

/// Everything a [`PartitionLog`](super::PartitionLog) operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The requested offset is outside `[log_start, high_watermark]`.
    #[error("offset {offset} is out of range: valid offsets are {log_start}..={high_watermark}")]
    OffsetOutOfRange {
        /// The offset that was asked for.
        offset: u64,
        /// The first offset still stored.
        log_start: u64,
        /// The offset the next appended record will get.
        high_watermark: u64,
    },
    /// A stored batch failed its checks (CRC, magic, length or offset chain).
    #[error("corrupt data for offsets {first_offset}..{end_offset} in segment {segment_base} at byte {position}: {reason}")]
    Corrupt {
        /// Base offset of the segment holding the damage.
        segment_base: u64,
        /// Byte position of the damaged frame inside the segment's `.log`.
        position: u64,
        /// First offset that cannot be served.
        first_offset: u64,
        /// First offset after the damage that can be served again.
        end_offset: u64,
        /// What check failed.
        reason: &'static str,
    },
    /// A batch is larger than a segment may hold.
    #[error("batch of {size} bytes is too large: a segment holds at most {max} bytes per batch")]
    BatchTooLarge {
        /// Frame size of the rejected batch.
        size: u64,
        /// Largest frame a segment accepts.
        max: u64,
    },
    /// A batch passed to append is malformed (no records, bad counts).
    #[error("invalid batch: {0}")]
    InvalidBatch(&'static str),
    /// The disk (or quota) is full; nothing was written.
    #[error("disk full while writing {path}: {source}")]
    DiskFull {
        /// File being grown.
        path: PathBuf,
        /// The underlying `ENOSPC`/`EDQUOT`.
        source: io::Error,
    },
    /// A flush failed earlier; the log refuses writes until it is reopened and recovered.
    #[error("partition log at {path} is read-only after a failed flush; restart to recover it")]
    Poisoned {
        /// Directory of the partition.
        path: PathBuf,
    },
    /// An idempotent producer's batch is out of sequence or fenced; nothing
    /// was written.
    #[error(transparent)]
    Sequence(#[from] super::producers::SequenceError),
    /// The log was closed.
    #[error("partition log is closed")]
    Closed,
    /// Any other I/O failure, with the file it concerned.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// File or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

impl StorageError {
    /// Wraps an I/O error with its path, recognising a full disk.
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> StorageError {
        let path = path.into();
        if super::fs::is_disk_full(&source) {
            super::counters::add_disk_full();
            StorageError::DiskFull { path, source }
        } else {
            StorageError::Io { path, source }
        }
    }
}

/// Result alias of the storage layer.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;
