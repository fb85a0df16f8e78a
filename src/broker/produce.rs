//! The produce path: choose the partition, validate the records with a fast
//! scan, append them as one batch, wait for the requested acknowledgement.
//!
//! The records arrive as the raw bytes of the request's `records` field and
//! are stored exactly as they came (see [`crate::wire`]): no record is
//! decoded into a struct or re-encoded, and the only copy is into the map.
//!
//! # Partition choice
//!
//! An explicit partition wins. Otherwise, when the first record has a
//! non-empty key, the partition is `(murmur2(key) & 0x7fffffff) % partitions`
//! — the hash of Kafka's default partitioner, so keys land on the same
//! partition numbers as they would in Kafka. Without a key, requests rotate
//! over the partitions.
//!
//! # Idempotent producers
//!
//! A request with a non-zero `producer_id` carries the producer's epoch and
//! the sequence of its first record; the partition log checks it (see
//! [`crate::storage::producers`]): a retry of a stored batch is answered with
//! the original offsets and stores nothing, and a batch whose predecessor has
//! not arrived yet waits here up to [`SEQUENCE_GAP_WAIT`] for it (requests
//! pipelined on one connection may be handled out of order) before it is
//! refused with `ABORTED`, so the client resends from the missing batch.
//!
//! # Timestamps
//!
//! A batch's frame timestamps are the broker's append time (ms since the
//! epoch), so the time index is ordered by arrival. Records keep their own
//! `timestamp_ms` in the payload; 0 there means "the batch's append time".

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::append_queue;
use super::error::{BrokerError, Result};
use super::Broker;
use crate::storage::counters::Histogram;
use crate::storage::producers::SequenceError;
use crate::storage::{AppendInfo, BatchMeta, StorageError};
use crate::wire::{scan_records, RECORDS_KEY_BYTE};

/// How long a batch whose sequence runs ahead waits for its predecessor
/// before it is refused with `ABORTED`.
pub const SEQUENCE_GAP_WAIT: Duration = Duration::from_millis(500);

/// Records per stored produce request (one request is one batch).
pub static BATCH_RECORDS: Histogram<12> =
    Histogram::new([1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000, 10_000]);

/// Bytes of records per stored produce request.
pub static BATCH_BYTES: Histogram<12> = Histogram::new([
    128,
    512,
    2 << 10,
    8 << 10,
    32 << 10,
    128 << 10,
    512 << 10,
    1 << 20,
    2 << 20,
    8 << 20,
    32 << 20,
    128 << 20,
]);

/// Acknowledgement level of a produce request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckLevel {
    /// Answer once the batch is in the mapped segment (survives a broker
    /// crash, not a power loss).
    Leader,
    /// Answer once the batch is flushed to disk (group commit).
    Durable,
}

/// A validated-enough produce request, ready for the broker.
#[derive(Debug, Clone)]
pub struct ProduceInput {
    /// Topic name.
    pub topic: String,
    /// Explicit partition, if any.
    pub partition: Option<u32>,
    /// The raw `records` entries (tag, length, `Record` bytes, repeated).
    pub records: Bytes,
    /// Acknowledgement level.
    pub acks: AckLevel,
    /// Idempotent producer id (0 = none).
    pub producer_id: u64,
    /// Idempotent producer epoch.
    pub producer_epoch: u32,
    /// Sequence of the first record.
    pub base_sequence: i32,
}

/// Where a produce request's records went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Partition written.
    pub partition: u32,
    /// Offset of the first record.
    pub base_offset: u64,
    /// Number of records.
    pub record_count: u32,
    /// Append time of the batch, ms since the epoch.
    pub append_time_ms: i64,
}

impl Broker {
    /// Appends a produce request's records as one batch.
    ///
    /// # Errors
    /// Unknown topic or partition, malformed or oversized records, a full
    /// disk (nothing is written), a read-only partition after a failed flush.
    pub async fn produce(&self, input: ProduceInput) -> Result<Appended> {
        if self.is_shutting_down() {
            return Err(BrokerError::ShuttingDown);
        }
        let limit = u64::from(self.config.limits.max_request_bytes);
        if input.records.len() as u64 > limit {
            return Err(BrokerError::LimitExceeded {
                what: "produce request size in bytes (limits.max_request_bytes)",
                limit,
                requested: input.records.len() as u64,
            });
        }
        if input.producer_id != 0 && input.partition.is_none() {
            // The broker's pick could differ between a batch and its retry,
            // and the sequence that catches duplicates is per partition.
            return Err(BrokerError::InvalidArgument {
                field: "partition",
                reason: "an idempotent batch (producer_id set) must name its partition".into(),
            });
        }
        let topic = self.topic(&input.topic)?;
        let summary = scan_records(&input.records, topic.config.max_record_bytes)?;
        let partition_id = match input.partition {
            Some(p) => p,
            None => match first_key(&input.records) {
                Some(key) if !key.is_empty() => partition_for_key(key, topic.partition_count()),
                _ => topic.next_keyless.fetch_add(1, Ordering::Relaxed) % topic.partition_count(),
            },
        };
        let partition = topic.partition(partition_id)?.clone();
        let meta = BatchMeta {
            record_count: summary.record_count,
            first_timestamp_ms: 0,
            max_timestamp_ms: 0,
            producer_id: input.producer_id,
            producer_epoch: input.producer_epoch,
            base_sequence: input.base_sequence,
            attributes: 0,
        };
        let info = if input.producer_id == 0 {
            append_queue::append(&partition, meta, input.records.clone()).await?
        } else {
            self.append_in_sequence(&partition, meta, &input.records)
                .await?
        };
        if partition.is_deleted() {
            // The topic was deleted before the batch landed: it went into
            // unlinked files, so it must not be acknowledged.
            return Err(BrokerError::UnknownTopic {
                topic: input.topic.clone(),
            });
        }
        // A duplicate answers with the original batch's time.
        let append_time_ms = info.batch_time_ms;
        if !info.duplicate {
            // A duplicate is answered, not stored: it is not counted.
            let bytes = input.records.len() as u64;
            partition
                .traffic
                .produced(u64::from(summary.record_count), bytes);
            BATCH_RECORDS.observe(u64::from(summary.record_count));
            BATCH_BYTES.observe(bytes);
        }
        if info.flush_due {
            self.flush_wake.notify_one();
        }
        if input.acks == AckLevel::Durable {
            let log = partition.log.clone();
            tokio::task::spawn_blocking(move || log.wait_durable(info.next_offset))
                .await
                .map_err(|e| BrokerError::Internal(format!("durable wait task failed: {e}")))??;
        }
        Ok(Appended {
            partition: partition_id,
            base_offset: info.base_offset,
            record_count: summary.record_count,
            append_time_ms,
        })
    }
}

impl Broker {
    /// Appends an idempotent producer's batch, waiting (bounded) for a
    /// missing predecessor that may still be on its way.
    async fn append_in_sequence(
        &self,
        partition: &Arc<super::topics::Partition>,
        meta: BatchMeta,
        records: &Bytes,
    ) -> Result<AppendInfo> {
        // Subscribe before the first attempt so no append in between is missed.
        let mut appends = partition.watch_high_watermark();
        let deadline = tokio::time::Instant::now() + SEQUENCE_GAP_WAIT;
        loop {
            match append_queue::append(partition, meta, records.clone()).await {
                Err(BrokerError::Storage(StorageError::Sequence(SequenceError::OutOfOrder {
                    ..
                }))) if tokio::time::Instant::now() < deadline && !self.is_shutting_down() => {
                    // Wake on the next append to this partition, or give up.
                    match tokio::time::timeout_at(deadline, appends.changed()).await {
                        Ok(Ok(())) => continue,
                        // Deadline or a deleted partition: one last attempt.
                        _ => return append_queue::append(partition, meta, records.clone()).await,
                    }
                }
                other => return other,
            }
        }
    }
}

/// The key of the first record of a records payload, if the bytes allow it.
pub fn first_key(records: &[u8]) -> Option<&[u8]> {
    let mut buf = records;
    if *buf.first()? != RECORDS_KEY_BYTE {
        return None;
    }
    buf = &buf[1..];
    let len = prost::encoding::decode_varint(&mut buf).ok()? as usize;
    let mut record = buf.get(..len)?;
    while !record.is_empty() {
        let tag = prost::encoding::decode_varint(&mut record).ok()?;
        let (field, wire_type) = (tag >> 3, tag & 7);
        match wire_type {
            0 => {
                prost::encoding::decode_varint(&mut record).ok()?;
            }
            1 => record = record.get(8..)?,
            5 => record = record.get(4..)?,
            2 => {
                let n = prost::encoding::decode_varint(&mut record).ok()? as usize;
                let value = record.get(..n)?;
                if field == 1 {
                    return Some(value);
                }
                record = &record[n..];
            }
            _ => return None,
        }
    }
    None
}

/// The partition a key maps to: Kafka's default partitioner.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    ((murmur2(key) & 0x7fff_ffff) as u32) % partitions.max(1)
}

/// MurmurHash2, 32-bit, seed 0x9747b28c, as Kafka's `Utils.murmur2`.
pub fn murmur2(data: &[u8]) -> i32 {
    const M: i32 = 0x5bd1_e995;
    const R: u32 = 24;
    let seed = 0x9747_b28c_u32 as i32;
    let mut h = seed ^ data.len() as i32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = i32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= ((k as u32) >> R) as i32;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= i32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= i32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= i32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= ((h as u32) >> 13) as i32;
    h = h.wrapping_mul(M);
    h ^= ((h as u32) >> 15) as i32;
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// The vectors of Kafka's `UtilsTest.testMurmur2`.
    #[test]
    fn murmur2_matches_kafka() {
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (input, expected) in cases {
            assert_eq!(
                murmur2(input),
                expected,
                "{}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn first_key_is_found_after_other_fields() {
        use crate::proto::v1::{Header, ProduceRequest, Record};
        let req = ProduceRequest {
            records: vec![
                Record {
                    key: Vec::new(),
                    value: b"v".to_vec(),
                    headers: vec![Header {
                        key: "h".into(),
                        value: b"x".to_vec(),
                    }],
                    timestamp_ms: 5,
                },
                Record {
                    key: b"second".to_vec(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let bytes = req.encode_to_vec();
        // Skip field 1 (topic is empty, so records start the message).
        assert_eq!(first_key(&bytes), None);
        let req = ProduceRequest {
            records: vec![Record {
                timestamp_ms: 9,
                value: b"value".to_vec(),
                key: b"user-42".to_vec(),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(first_key(&req.encode_to_vec()), Some(&b"user-42"[..]));
    }
}
