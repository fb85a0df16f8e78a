//! Topics and partitions: naming rules, per-topic settings, and the
//! in-memory handles the produce and fetch paths use.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::error::{BrokerError, Result};
use crate::config::TopicDefaults;
use crate::storage::{LogConfig, PartitionLog};

/// Longest topic name, as in Kafka.
pub const MAX_TOPIC_NAME_LEN: usize = 249;

/// Checks a topic name: 1–249 characters of `[A-Za-z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > MAX_TOPIC_NAME_LEN {
        Some("it is longer than 249 characters")
    } else if name == "." || name == ".." {
        Some("'.' and '..' are reserved")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("it contains a character outside [A-Za-z0-9._-]")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(BrokerError::InvalidTopicName {
            name: name.chars().take(64).collect(),
            reason,
        }),
    }
}

/// Per-topic overrides of the broker's topic defaults. `None` = use the default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicOverrides {
    /// Retention by age, ms; -1 = forever.
    pub retention_ms: Option<i64>,
    /// Retention by size per partition, bytes; -1 = no limit.
    pub retention_bytes: Option<i64>,
    /// Segment size, bytes.
    pub segment_bytes: Option<u64>,
    /// Segment age before it rolls, ms.
    pub segment_ms: Option<i64>,
    /// Largest record, bytes.
    pub max_record_bytes: Option<u32>,
}

impl TopicOverrides {
    /// Applies the fields set in `other` on top of `self`.
    pub fn merge(&mut self, other: &TopicOverrides) {
        macro_rules! take {
            ($($f:ident),*) => { $( if other.$f.is_some() { self.$f = other.$f; } )* };
        }
        take!(
            retention_ms,
            retention_bytes,
            segment_bytes,
            segment_ms,
            max_record_bytes
        );
    }

    /// Checks every set field's range.
    pub fn validate(&self) -> Result<()> {
        let bad = |field, reason: &str| {
            Err(BrokerError::InvalidArgument {
                field,
                reason: reason.to_string(),
            })
        };
        if self.retention_ms.is_some_and(|v| v < -1 || v == 0) {
            return bad(
                "config.retention_ms",
                "must be -1 (forever) or a positive number of ms",
            );
        }
        if self.retention_bytes.is_some_and(|v| v < -1 || v == 0) {
            return bad(
                "config.retention_bytes",
                "must be -1 (no limit) or a positive number of bytes",
            );
        }
        if self
            .segment_bytes
            .is_some_and(|v| !(1 << 20..=u64::from(u32::MAX)).contains(&v))
        {
            return bad(
                "config.segment_bytes",
                "must be between 1 MiB (1048576) and 4294967295 bytes",
            );
        }
        if self.segment_ms.is_some_and(|v| v <= 0) {
            return bad("config.segment_ms", "must be a positive number of ms");
        }
        if self.max_record_bytes.is_some_and(|v| v == 0) {
            return bad("config.max_record_bytes", "must be at least 1");
        }
        Ok(())
    }
}

/// A topic's settings with every default filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EffectiveTopicConfig {
    /// Retention by age, ms; -1 = forever.
    pub retention_ms: i64,
    /// Retention by size per partition, bytes; -1 = no limit.
    pub retention_bytes: i64,
    /// Segment size, bytes.
    pub segment_bytes: u64,
    /// Segment age before it rolls, ms.
    pub segment_ms: i64,
    /// Largest record, bytes.
    pub max_record_bytes: u32,
}

impl EffectiveTopicConfig {
    /// Fills `overrides` from the broker defaults.
    pub fn resolve(
        overrides: &TopicOverrides,
        defaults: &TopicDefaults,
        max_record_bytes: u32,
    ) -> Self {
        EffectiveTopicConfig {
            retention_ms: overrides.retention_ms.unwrap_or(defaults.retention_ms),
            retention_bytes: overrides
                .retention_bytes
                .unwrap_or(defaults.retention_bytes),
            segment_bytes: overrides.segment_bytes.unwrap_or(defaults.segment_bytes),
            segment_ms: overrides.segment_ms.unwrap_or(defaults.segment_ms),
            max_record_bytes: overrides.max_record_bytes.unwrap_or(max_record_bytes),
        }
    }

    /// The storage settings of each partition of the topic, with the
    /// broker-wide flush settings.
    pub fn log_config(
        &self,
        flush_interval_ms: u64,
        flush_bytes: u64,
        writeback_bytes: u64,
    ) -> LogConfig {
        LogConfig {
            segment_bytes: self.segment_bytes,
            segment_ms: (self.segment_ms > 0).then_some(self.segment_ms as u64),
            retention_ms: (self.retention_ms > 0).then_some(self.retention_ms as u64),
            retention_bytes: (self.retention_bytes > 0).then_some(self.retention_bytes as u64),
            flush_interval_ms,
            flush_bytes,
            writeback_bytes,
            ..LogConfig::default()
        }
    }
}

/// Records and bytes a partition took in and served, for the metrics.
/// Updated once per request (relaxed atomic adds), never per record.
#[derive(Debug, Default)]
pub struct Traffic {
    records_produced: AtomicU64,
    bytes_produced: AtomicU64,
    records_fetched: AtomicU64,
    bytes_fetched: AtomicU64,
}

/// A [`Traffic`] reading.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrafficSnapshot {
    /// Records appended.
    pub records_produced: u64,
    /// Bytes of records appended (as sent and stored, without frame headers).
    pub bytes_produced: u64,
    /// Records handed to readers (`Fetch`, `Subscribe`, `Consume`).
    pub records_fetched: u64,
    /// Bytes of records handed to readers.
    pub bytes_fetched: u64,
}

impl Traffic {
    /// Counts one appended batch.
    pub fn produced(&self, records: u64, bytes: u64) {
        self.records_produced.fetch_add(records, Ordering::Relaxed);
        self.bytes_produced.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts one read handed to a client.
    pub fn fetched(&self, records: u64, bytes: u64) {
        if records > 0 {
            self.records_fetched.fetch_add(records, Ordering::Relaxed);
            self.bytes_fetched.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    /// The current totals.
    pub fn snapshot(&self) -> TrafficSnapshot {
        TrafficSnapshot {
            records_produced: self.records_produced.load(Ordering::Relaxed),
            bytes_produced: self.bytes_produced.load(Ordering::Relaxed),
            records_fetched: self.records_fetched.load(Ordering::Relaxed),
            bytes_fetched: self.bytes_fetched.load(Ordering::Relaxed),
        }
    }
}

/// One partition: its log and the channel that wakes waiting readers.
#[derive(Debug)]
pub struct Partition {
    /// Partition number within its topic.
    pub id: u32,
    /// The storage.
    pub log: Arc<PartitionLog>,
    /// What was produced to and fetched from it since the broker started.
    pub traffic: Traffic,
    /// Carries the high watermark; long-polls and subscribers wait on it.
    high_watermark: watch::Sender<u64>,
    /// Set by appends, cleared by the background flusher.
    dirty: AtomicBool,
    /// Set when the topic is deleted: waiters wake up and give up.
    deleted: AtomicBool,
    /// Batches waiting for the writer (see [`super::append_queue`]).
    pub(crate) append_queue: super::append_queue::AppendQueue,
}

impl Partition {
    /// Wraps an opened log.
    pub fn new(id: u32, log: PartitionLog) -> Partition {
        let (tx, _) = watch::channel(log.high_watermark());
        Partition {
            id,
            log: Arc::new(log),
            traffic: Traffic::default(),
            high_watermark: tx,
            dirty: AtomicBool::new(false),
            deleted: AtomicBool::new(false),
            append_queue: Default::default(),
        }
    }

    /// A receiver that changes whenever new records are appended.
    pub fn watch_high_watermark(&self) -> watch::Receiver<u64> {
        self.high_watermark.subscribe()
    }

    /// Wakes every waiter after an append.
    pub fn appended(&self, high_watermark: u64) {
        self.dirty.store(true, Ordering::Release);
        self.high_watermark.send_replace(high_watermark);
    }

    /// Takes the dirty flag (the flusher calls this before flushing).
    pub fn take_dirty(&self) -> bool {
        self.dirty.swap(false, Ordering::AcqRel)
    }

    /// Marks the partition deleted and wakes every waiter.
    pub fn mark_deleted(&self) {
        self.deleted.store(true, Ordering::Release);
        self.high_watermark.send_modify(|_| {});
    }

    /// Whether the partition's topic was deleted.
    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    /// Sets the dirty flag again (a flush was not due yet).
    pub fn mark_dirty(&self) {
        self.dirty.store(true, Ordering::Release);
    }
}

/// A topic: its name, settings and partitions.
#[derive(Debug)]
pub struct Topic {
    /// The topic name.
    pub name: String,
    /// Per-topic overrides as stored in metadata.
    pub overrides: TopicOverrides,
    /// Effective settings.
    pub config: EffectiveTopicConfig,
    /// Partitions, indexed by number.
    pub partitions: Vec<Arc<Partition>>,
    /// Rotates keyless produce requests over the partitions.
    pub next_keyless: AtomicU32,
    /// Creation time, ms since the Unix epoch.
    pub created_ms: i64,
}

impl Topic {
    /// The partition numbered `id`.
    pub fn partition(&self, id: u32) -> Result<&Arc<Partition>> {
        self.partitions
            .get(id as usize)
            .ok_or_else(|| BrokerError::UnknownPartition {
                topic: self.name.clone(),
                partition: id,
                partitions: self.partitions.len() as u32,
            })
    }

    /// Number of partitions.
    pub fn partition_count(&self) -> u32 {
        self.partitions.len() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        for ok in ["orders", "a", "A.b_c-9", &"x".repeat(249)] {
            assert!(validate_topic_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a b", "é", "a/b", &"x".repeat(250)] {
            assert!(validate_topic_name(bad).is_err(), "{bad}");
        }
    }
}
