//! Idempotent-producer state of one partition: which batches of which
//! producer are already in the log, so a retried batch is recognised and
//! answered with its original offsets instead of being stored twice, and a
//! batch that arrives ahead of its predecessor is refused instead of being
//! stored out of order.
//!
//! # The protocol (Kafka's, simplified)
//!
//! A producer picks a non-zero 64-bit `producer_id` and an epoch, and numbers
//! its records per partition from 0: a batch carries the sequence of its first
//! record (`base_sequence`, ≥ 0), and the next batch must start right after its
//! last record (sequences wrap from `i32::MAX` to 0). For a batch of a known
//! producer:
//!
//! | the batch                                       | answer                               |
//! |-------------------------------------------------|--------------------------------------|
//! | epoch below the producer's current epoch        | [`SequenceError::Fenced`]            |
//! | same first sequence and count as one of the last [`RECENT_BATCHES`] batches | [`SequenceCheck::Duplicate`] with that batch's offsets |
//! | starts at the expected sequence                 | [`SequenceCheck::Append`]            |
//! | starts after the expected sequence (a gap)      | [`SequenceError::OutOfOrder`]        |
//! | starts before it, older than the window         | [`SequenceError::StaleDuplicate`]    |
//! | a higher epoch, sequence 0                      | [`SequenceCheck::Append`]; the state restarts |
//! | a higher epoch, another sequence                | [`SequenceError::OutOfOrder`] (expected 0) |
//!
//! A producer the table does not know must start at sequence 0, like a new
//! epoch: otherwise a pipelined second batch that overtakes the first would
//! be stored before it. A producer whose state was lost (evicted from a full
//! table) gets `OutOfOrder` until it starts a new epoch. Duplicates are
//! caught as long as the producer's last [`RECENT_BATCHES`] batches are
//! remembered: a client keeps at most that many requests in flight per
//! partition and retries only those.
//!
//! # Durability
//!
//! The table is saved inside the recovery checkpoint (see
//! [`super::checkpoint`]) after every background flush and at every segment
//! roll, and recovery replays the frame headers after the checkpoint into
//! it, so a restart (clean or after `kill -9`) remembers every batch in the
//! log that the checkpointed table or the replayed tail covers.
//!
//! # Byte layout of an encoded table (little-endian)
//!
//! | bytes | type | field                                   |
//! |-------|------|-----------------------------------------|
//! | 0..4  | u32  | number of producers *n*                 |
//! | …     |      | *n* producer entries                    |
//!
//! A producer entry:
//!
//! | bytes  | type | field                                              |
//! |--------|------|----------------------------------------------------|
//! | 0..8   | u64  | producer_id (non-zero)                             |
//! | 8..12  | u32  | epoch                                              |
//! | 12..20 | i64  | last_append_ms (for eviction)                      |
//! | 20     | u8   | number of batches *b*, 1..=[`RECENT_BATCHES`]      |
//! | …      |      | *b* batches of 24 bytes, oldest first:             |
//! |        | i32  | first sequence                                     |
//! |        | u32  | record count (≥ 1)                                 |
//! |        | u64  | base offset                                        |
//! |        | i64  | append time, ms since the epoch                    |

use std::collections::{HashMap, VecDeque};

use super::frame::BatchMeta;

/// How many of a producer's most recent batches are remembered; also the
/// most requests a client may keep in flight per partition.
pub const RECENT_BATCHES: usize = 5;

/// Default bound on producers remembered per partition (the least recently
/// active one is forgotten first).
pub const DEFAULT_MAX_PRODUCERS: usize = 1024;

const BATCH_LEN: usize = 24;
const ENTRY_HEAD_LEN: usize = 21;

/// A batch of an idempotent producer that is in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchRecord {
    /// Sequence of its first record.
    pub first_sequence: i32,
    /// Number of records.
    pub record_count: u32,
    /// Offset of its first record.
    pub base_offset: u64,
    /// When it was appended, ms since the epoch.
    pub append_time_ms: i64,
}

impl BatchRecord {
    /// The sequence the producer's next batch must start with.
    fn next_sequence(&self) -> i32 {
        add_sequence(self.first_sequence, self.record_count)
    }
}

/// What one producer has in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ProducerState {
    epoch: u32,
    /// The last [`RECENT_BATCHES`] batches, oldest first; never empty.
    batches: VecDeque<BatchRecord>,
    last_append_ms: i64,
}

/// The verdict on an idempotent batch that may be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// New and in order: append it.
    Append,
    /// Already in the log: answer with these offsets, append nothing.
    Duplicate(BatchRecord),
}

/// Why an idempotent batch is refused (nothing is appended).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    /// The batch starts after the expected sequence: an earlier batch of the
    /// producer is missing (still in flight, or failed and to be retried).
    #[error(
        "out-of-order sequence for producer {producer_id}: expected {expected}, got {received}"
    )]
    OutOfOrder {
        /// The producer.
        producer_id: u64,
        /// The sequence the next batch must start with.
        expected: i32,
        /// The batch's first sequence.
        received: i32,
    },
    /// A newer epoch of the same producer id exists.
    #[error("producer {producer_id} epoch {epoch} is fenced by epoch {current_epoch}")]
    Fenced {
        /// The producer.
        producer_id: u64,
        /// The batch's epoch.
        epoch: u32,
        /// The epoch the partition knows.
        current_epoch: u32,
    },
    /// A retry of a batch older than the remembered window: it is in the
    /// log, but its offsets are no longer known.
    #[error("producer {producer_id} sequence {sequence} was stored earlier (older than the last {RECENT_BATCHES} batches); its offsets are no longer known")]
    StaleDuplicate {
        /// The producer.
        producer_id: u64,
        /// The batch's first sequence.
        sequence: i32,
    },
    /// A negative base sequence.
    #[error("producer {producer_id}: base_sequence must be >= 0, got {sequence}")]
    InvalidSequence {
        /// The producer.
        producer_id: u64,
        /// The batch's first sequence.
        sequence: i32,
    },
}

/// `seq + n` in the wrapping sequence space `0..=i32::MAX`.
pub fn add_sequence(seq: i32, n: u32) -> i32 {
    let space = i64::from(i32::MAX) + 1;
    ((i64::from(seq) + i64::from(n)) % space) as i32
}

/// The producers of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerTable {
    producers: HashMap<u64, ProducerState>,
    max_producers: usize,
}

impl Default for ProducerTable {
    fn default() -> Self {
        ProducerTable::new(DEFAULT_MAX_PRODUCERS)
    }
}

impl ProducerTable {
    /// An empty table remembering at most `max_producers` producers.
    pub fn new(max_producers: usize) -> ProducerTable {
        ProducerTable {
            producers: HashMap::new(),
            max_producers: max_producers.max(1),
        }
    }

    /// Number of producers remembered.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// Whether no producer is remembered.
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Decides what to do with an idempotent batch (`meta.producer_id != 0`).
    ///
    /// # Errors
    /// See [`SequenceError`]; the table is not changed either way.
    pub fn check(&self, meta: &BatchMeta) -> Result<SequenceCheck, SequenceError> {
        let producer_id = meta.producer_id;
        let received = meta.base_sequence;
        if received < 0 {
            return Err(SequenceError::InvalidSequence {
                producer_id,
                sequence: received,
            });
        }
        let starts_at_zero = || {
            if received == 0 {
                Ok(SequenceCheck::Append)
            } else {
                Err(SequenceError::OutOfOrder {
                    producer_id,
                    expected: 0,
                    received,
                })
            }
        };
        let Some(state) = self.producers.get(&producer_id) else {
            return starts_at_zero();
        };
        if meta.producer_epoch < state.epoch {
            return Err(SequenceError::Fenced {
                producer_id,
                epoch: meta.producer_epoch,
                current_epoch: state.epoch,
            });
        }
        if meta.producer_epoch > state.epoch {
            return starts_at_zero();
        }
        if let Some(b) = state
            .batches
            .iter()
            .find(|b| b.first_sequence == received && b.record_count == meta.record_count)
        {
            return Ok(SequenceCheck::Duplicate(*b));
        }
        let last = state
            .batches
            .back()
            .expect("a producer has at least one batch");
        let expected = last.next_sequence();
        if received == expected {
            return Ok(SequenceCheck::Append);
        }
        // Distance in the wrapping space: less than half of it ahead is a gap.
        let space = i64::from(i32::MAX) + 1;
        let ahead = (i64::from(received) - i64::from(expected)).rem_euclid(space);
        if ahead < space / 2 {
            Err(SequenceError::OutOfOrder {
                producer_id,
                expected,
                received,
            })
        } else {
            Err(SequenceError::StaleDuplicate {
                producer_id,
                sequence: received,
            })
        }
    }

    /// Remembers a batch that is now in the log (after an append, or while
    /// replaying the log in recovery). Batches of older epochs, or not newer
    /// than what is remembered, are ignored, so replaying twice is harmless.
    pub fn record(&mut self, meta: &BatchMeta, base_offset: u64, append_time_ms: i64) {
        if meta.producer_id == 0 || meta.base_sequence < 0 || meta.record_count == 0 {
            return;
        }
        let batch = BatchRecord {
            first_sequence: meta.base_sequence,
            record_count: meta.record_count,
            base_offset,
            append_time_ms,
        };
        if let Some(state) = self.producers.get_mut(&meta.producer_id) {
            if meta.producer_epoch < state.epoch {
                return;
            }
            if meta.producer_epoch > state.epoch {
                state.epoch = meta.producer_epoch;
                state.batches.clear();
            }
            if state
                .batches
                .back()
                .is_some_and(|b| b.base_offset >= base_offset)
            {
                return;
            }
            if state.batches.len() == RECENT_BATCHES {
                state.batches.pop_front();
            }
            state.batches.push_back(batch);
            state.last_append_ms = state.last_append_ms.max(append_time_ms);
            return;
        }
        if self.producers.len() >= self.max_producers {
            self.evict_least_recent();
        }
        self.producers.insert(
            meta.producer_id,
            ProducerState {
                epoch: meta.producer_epoch,
                batches: VecDeque::from([batch]),
                last_append_ms: append_time_ms,
            },
        );
    }

    fn evict_least_recent(&mut self) {
        if let Some(&id) = self
            .producers
            .iter()
            .min_by_key(|(id, s)| (s.last_append_ms, **id))
            .map(|(id, _)| id)
        {
            self.producers.remove(&id);
        }
    }

    /// Encodes the table (layout in the module docs), appending to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.producers.len() as u32).to_le_bytes());
        let mut ids: Vec<_> = self.producers.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let s = &self.producers[&id];
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&s.epoch.to_le_bytes());
            out.extend_from_slice(&s.last_append_ms.to_le_bytes());
            out.push(s.batches.len() as u8);
            for b in &s.batches {
                out.extend_from_slice(&b.first_sequence.to_le_bytes());
                out.extend_from_slice(&b.record_count.to_le_bytes());
                out.extend_from_slice(&b.base_offset.to_le_bytes());
                out.extend_from_slice(&b.append_time_ms.to_le_bytes());
            }
        }
    }

    /// Decodes a table written by [`ProducerTable::encode_into`]; `None` if
    /// the bytes are not exactly one valid table.
    pub fn decode(mut b: &[u8], max_producers: usize) -> Option<ProducerTable> {
        let count = take_u32(&mut b)? as usize;
        // Every entry takes at least this much: refuse absurd counts early.
        if count > b.len() / (ENTRY_HEAD_LEN + BATCH_LEN) {
            return None;
        }
        let mut table = ProducerTable::new(max_producers.max(count));
        for _ in 0..count {
            let id = take_u64(&mut b)?;
            let epoch = take_u32(&mut b)?;
            let last_append_ms = take_u64(&mut b)? as i64;
            let n = usize::from(*b.first()?);
            b = &b[1..];
            if id == 0 || n == 0 || n > RECENT_BATCHES {
                return None;
            }
            let mut batches = VecDeque::with_capacity(n);
            for _ in 0..n {
                let first_sequence = take_u32(&mut b)? as i32;
                let record_count = take_u32(&mut b)?;
                let base_offset = take_u64(&mut b)?;
                let append_time_ms = take_u64(&mut b)? as i64;
                if first_sequence < 0 || record_count == 0 {
                    return None;
                }
                if batches
                    .back()
                    .is_some_and(|p: &BatchRecord| p.base_offset >= base_offset)
                {
                    return None;
                }
                batches.push_back(BatchRecord {
                    first_sequence,
                    record_count,
                    base_offset,
                    append_time_ms,
                });
            }
            let state = ProducerState {
                epoch,
                batches,
                last_append_ms,
            };
            if table.producers.insert(id, state).is_some() {
                return None;
            }
        }
        if !b.is_empty() {
            return None;
        }
        table.max_producers = max_producers.max(1);
        while table.producers.len() > table.max_producers {
            table.evict_least_recent();
        }
        Some(table)
    }
}

fn take_u32(b: &mut &[u8]) -> Option<u32> {
    let (head, rest) = b.split_first_chunk::<4>()?;
    *b = rest;
    Some(u32::from_le_bytes(*head))
}

fn take_u64(b: &mut &[u8]) -> Option<u64> {
    let (head, rest) = b.split_first_chunk::<8>()?;
    *b = rest;
    Some(u64::from_le_bytes(*head))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn meta(producer_id: u64, epoch: u32, seq: i32, count: u32) -> BatchMeta {
        BatchMeta {
            record_count: count,
            producer_id,
            producer_epoch: epoch,
            base_sequence: seq,
            ..Default::default()
        }
    }

    #[test]
    fn in_order_batches_append_and_retries_are_duplicates() {
        let mut t = ProducerTable::default();
        let mut offset = 0;
        for (seq, count) in [(0, 3), (3, 1), (4, 10)] {
            let m = meta(7, 0, seq, count);
            assert_eq!(t.check(&m), Ok(SequenceCheck::Append));
            t.record(&m, offset, 100);
            offset += u64::from(count);
        }
        match t.check(&meta(7, 0, 3, 1)) {
            Ok(SequenceCheck::Duplicate(b)) => assert_eq!((b.base_offset, b.record_count), (3, 1)),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            t.check(&meta(7, 0, 15, 1)),
            Err(SequenceError::OutOfOrder {
                producer_id: 7,
                expected: 14,
                received: 15
            })
        );
        assert_eq!(t.check(&meta(7, 0, 14, 2)), Ok(SequenceCheck::Append));
        // Same first sequence, other count: not the same batch, and behind.
        assert!(matches!(
            t.check(&meta(7, 0, 4, 2)),
            Err(SequenceError::StaleDuplicate { .. })
        ));
    }

    #[test]
    fn only_the_last_batches_are_remembered() {
        let mut t = ProducerTable::default();
        for i in 0..(RECENT_BATCHES as i32 + 2) {
            t.record(&meta(1, 0, i, 1), i as u64, 0);
        }
        assert!(matches!(
            t.check(&meta(1, 0, 0, 1)),
            Err(SequenceError::StaleDuplicate { .. })
        ));
        assert!(matches!(
            t.check(&meta(1, 0, 2, 1)),
            Ok(SequenceCheck::Duplicate(_))
        ));
    }

    #[test]
    fn epochs_fence_and_restart() {
        let mut t = ProducerTable::default();
        t.record(&meta(9, 2, 0, 5), 0, 0);
        assert!(matches!(
            t.check(&meta(9, 1, 5, 1)),
            Err(SequenceError::Fenced {
                current_epoch: 2,
                ..
            })
        ));
        assert_eq!(t.check(&meta(9, 3, 0, 1)), Ok(SequenceCheck::Append));
        assert!(t.check(&meta(9, 3, 4, 1)).is_err());
        t.record(&meta(9, 3, 0, 1), 5, 0);
        // The old epoch's batch is no longer a duplicate; its sequence is stale.
        assert!(t.check(&meta(9, 2, 0, 5)).is_err());
        // Replaying an old-epoch batch changes nothing.
        let before = t.clone();
        t.record(&meta(9, 2, 5, 1), 6, 0);
        assert_eq!(t, before);
    }

    #[test]
    fn unknown_producers_start_at_zero_and_negative_sequences_are_refused() {
        let t = ProducerTable::default();
        assert_eq!(t.check(&meta(3, 0, 0, 1)), Ok(SequenceCheck::Append));
        assert_eq!(
            t.check(&meta(3, 0, 12345, 1)),
            Err(SequenceError::OutOfOrder {
                producer_id: 3,
                expected: 0,
                received: 12345
            })
        );
        assert!(matches!(
            t.check(&meta(3, 0, -1, 1)),
            Err(SequenceError::InvalidSequence { .. })
        ));
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        let mut t = ProducerTable::default();
        let m = meta(4, 0, i32::MAX - 1, 2);
        t.record(&m, 0, 0);
        assert_eq!(t.check(&meta(4, 0, 0, 1)), Ok(SequenceCheck::Append));
        assert!(matches!(
            t.check(&meta(4, 0, 1, 1)),
            Err(SequenceError::OutOfOrder { expected: 0, .. })
        ));
    }

    #[test]
    fn the_least_recent_producer_is_evicted() {
        let mut t = ProducerTable::new(2);
        t.record(&meta(1, 0, 0, 1), 0, 10);
        t.record(&meta(2, 0, 0, 1), 1, 20);
        t.record(&meta(1, 0, 1, 1), 2, 30);
        t.record(&meta(3, 0, 0, 1), 3, 40);
        assert_eq!(t.len(), 2);
        // Producer 2 was forgotten: it must start over at 0.
        assert_eq!(t.check(&meta(2, 0, 1, 1)).ok(), None);
        assert_eq!(t.check(&meta(2, 0, 0, 1)), Ok(SequenceCheck::Append));
        assert!(matches!(
            t.check(&meta(1, 0, 1, 1)),
            Ok(SequenceCheck::Duplicate(_))
        ));
    }

    #[test]
    fn replaying_the_same_batches_twice_is_harmless() {
        let mut once = ProducerTable::default();
        let batches = [(0, 2, 0), (2, 2, 2), (4, 1, 4)];
        for (s, c, o) in batches {
            once.record(&meta(5, 0, s, c), o, 0);
        }
        let mut twice = once.clone();
        for (s, c, o) in batches {
            twice.record(&meta(5, 0, s, c), o, 0);
        }
        assert_eq!(once, twice);
    }

    fn arb_table() -> impl Strategy<Value = ProducerTable> {
        prop::collection::vec((1u64..20, 0u32..3, 0i32..1000, 1u32..50, 0i64..1000), 0..60)
            .prop_map(|ops| {
                let mut t = ProducerTable::new(8);
                let mut offset = 0;
                for (id, epoch, seq, count, time) in ops {
                    t.record(&meta(id, epoch, seq, count), offset, time);
                    offset += u64::from(count);
                }
                t
            })
    }

    proptest! {
        #[test]
        fn encoding_round_trips(t in arb_table()) {
            let mut b = Vec::new();
            t.encode_into(&mut b);
            prop_assert_eq!(ProducerTable::decode(&b, 8), Some(t));
        }

        #[test]
        fn decoding_any_bytes_never_panics(b in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = ProducerTable::decode(&b, 8);
        }

        #[test]
        fn decoding_truncated_or_extended_tables_fails(t in arb_table(), cut in 1usize..40) {
            let mut b = Vec::new();
            t.encode_into(&mut b);
            let short = &b[..b.len().saturating_sub(cut)];
            prop_assert_eq!(ProducerTable::decode(short, 8), None);
            let mut long = b.clone();
            long.push(0);
            prop_assert_eq!(ProducerTable::decode(&long, 8), None);
        }
    }
}
