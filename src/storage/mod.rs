//! The storage layer: one [`PartitionLog`] per partition, a sequence of
//! memory-mapped segments with sparse offset and time indexes.
//!
//! It knows nothing about gRPC, topics or groups, and is usable and tested
//! on its own.
//!
//! | module            | job                                                        |
//! |-------------------|------------------------------------------------------------|
//! | [`frame`]         | the record-batch frame: byte layout, encode, validate, CRC |
//! | [`mapped_file`]   | one mapped file: chunked `fallocate`, raw writes, trim     |
//! | [`index`]         | sparse `.index` and `.timeindex`: layouts, lookups         |
//! | [`segment`]       | naming; `ActiveSegment` and lazily opened `SealedSegment`  |
//! | [`scan`]          | walking frames: end of data, torn tails, interior damage   |
//! | [`recovery`]      | opening the active segment from the recovery checkpoint    |
//! | [`checkpoint`]    | the recovery checkpoint file                               |
//! | [`producers`]     | idempotent producers: sequences, duplicates, fencing       |
//! | [`partition_log`] | `PartitionLog`: append, roll, flush, retention             |
//! | [`read`]          | reads by offset and lookups by time                        |
//! | [`map_cache`]     | the bound on mapped sealed segments                        |
//! | [`scrub`]         | the background scrubber's `pread` check of closed segments |
//! | [`fs`]            | durable filesystem calls, the directory lock               |
//! | `failpoint`       | fault injection for tests (debug builds only)              |
//! | [`counters`]      | process-wide counters for metrics                          |
//!
//! # What survives what
//!
//! - Process crash (`kill -9`, panic, OOM kill): every append that returned.
//!   The bytes are in the kernel's page cache, which outlives the process;
//!   recovery re-validates them by CRC.
//! - Power loss or kernel crash: every append covered by a successful
//!   [`PartitionLog::wait_durable`] or [`PartitionLog::flush`]. Appends after
//!   the last flush may be lost, as a suffix: recovery cuts the log at the
//!   first frame that did not reach the disk whole and reports the bytes cut.

pub mod checkpoint;
pub mod config;
pub mod counters;
pub mod error;
#[cfg(debug_assertions)]
pub mod failpoint;
pub mod frame;
pub mod fs;
pub mod index;
pub mod map_cache;
pub mod mapped_file;
pub mod partition_log;
pub mod producers;
pub mod read;
pub mod recovery;
pub mod scan;
pub mod scrub;
pub mod segment;

pub use config::LogConfig;
pub use error::{Result, StorageError};
pub use frame::BatchMeta;
pub use map_cache::MapCache;
pub use partition_log::{now_ms, AppendInfo, LogStats, PartitionLog, RetentionOutcome};
pub use read::{ReadBatch, ReadResult};
