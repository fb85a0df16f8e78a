//! The recovery checkpoint: how far a partition's log is known to be durable.
//!
//! Written (atomically, see [`super::fs::write_atomic`]) after every
//! successful background flush, so recovery scans only the tail written since.
//!
//! # Byte layout of `recovery-checkpoint` (48 bytes, little-endian)
//!
//! | bytes  | type | field               | meaning                                             |
//! |--------|------|---------------------|-----------------------------------------------------|
//! | 0..4   | [u8] | magic               | `b"SCKP"`                                           |
//! | 4..8   | u32  | version             | [`CHECKPOINT_VERSION`]                              |
//! | 8..16  | u64  | segment_base        | base offset of the segment the checkpoint is in     |
//! | 16..24 | u64  | position            | end of the flushed frames in that segment's `.log`  |
//! | 24..32 | u64  | next_offset         | offset after the last flushed record                |
//! | 32..36 | u32  | last_frame_crc      | CRC of the frame ending at `position` (0 if none)   |
//! | 36..40 | u32  | last_frame_len      | its length (0 if `position` is 0)                   |
//! | 40..44 | u32  | index_entries       | `.index` entries flushed with it                    |
//! | 44..48 | u32  | checksum            | CRC-32 of bytes 0..44                               |
//!
//! Version 2 continues with the idempotent-producer table as of the same
//! point (layout in [`super::producers`]):
//!
//! | bytes         | type | field                                        |
//! |---------------|------|----------------------------------------------|
//! | 48..52        | u32  | table length *t* in bytes                    |
//! | 52..52+t      |      | the encoded [`ProducerTable`]                |
//! | 52+t..56+t    | u32  | CRC-32 of bytes 48..52+t                     |
//!
//! Version 1 files (48 bytes, no table) are still read, with an empty table.
//! A checkpoint that fails its checksum, or whose last frame does not match
//! the log, is ignored: recovery then scans the whole active segment.

use std::path::Path;

use super::producers::ProducerTable;

/// File name of the checkpoint inside a partition directory.
pub const CHECKPOINT_FILE: &str = "recovery-checkpoint";
/// Version written into the checkpoint.
pub const CHECKPOINT_VERSION: u32 = 2;
const MAGIC: &[u8; 4] = b"SCKP";
const LEN: usize = 48;

/// A decoded recovery checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// Base offset of the segment it refers to.
    pub segment_base: u64,
    /// End of the flushed frames.
    pub position: u64,
    /// Next offset after the flushed frames.
    pub next_offset: u64,
    /// CRC of the frame ending at `position`.
    pub last_frame_crc: u32,
    /// Length of that frame.
    pub last_frame_len: u32,
    /// Number of offset-index entries that were flushed.
    pub index_entries: u32,
}

impl Checkpoint {
    /// Encodes the checkpoint (see the module docs for the layout).
    pub fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[0..4].copy_from_slice(MAGIC);
        b[4..8].copy_from_slice(&CHECKPOINT_VERSION.to_le_bytes());
        b[8..16].copy_from_slice(&self.segment_base.to_le_bytes());
        b[16..24].copy_from_slice(&self.position.to_le_bytes());
        b[24..32].copy_from_slice(&self.next_offset.to_le_bytes());
        b[32..36].copy_from_slice(&self.last_frame_crc.to_le_bytes());
        b[36..40].copy_from_slice(&self.last_frame_len.to_le_bytes());
        b[40..44].copy_from_slice(&self.index_entries.to_le_bytes());
        let sum = crc32fast::hash(&b[..44]);
        b[44..48].copy_from_slice(&sum.to_le_bytes());
        b
    }

    /// Encodes the checkpoint followed by the producer table (version 2).
    pub fn encode_with(&self, producers: &ProducerTable) -> Vec<u8> {
        let mut b = Vec::with_capacity(LEN + 8 + 64 * producers.len());
        b.extend_from_slice(&self.encode());
        b.extend_from_slice(&[0u8; 4]);
        producers.encode_into(&mut b);
        let table_len = (b.len() - LEN - 4) as u32;
        b[LEN..LEN + 4].copy_from_slice(&table_len.to_le_bytes());
        let sum = crc32fast::hash(&b[LEN..]);
        b.extend_from_slice(&sum.to_le_bytes());
        b
    }

    /// Decodes a checkpoint with its producer table (empty for version 1
    /// files), `None` when the bytes are not a valid checkpoint.
    pub fn decode_with(b: &[u8], max_producers: usize) -> Option<(Checkpoint, ProducerTable)> {
        let checkpoint = Checkpoint::decode(b.get(..LEN)?)?;
        let version = u32::from_le_bytes(b[4..8].try_into().ok()?);
        let rest = &b[LEN..];
        if version == 1 {
            return rest
                .is_empty()
                .then(|| (checkpoint, ProducerTable::new(max_producers)));
        }
        let (len, _) = rest.split_first_chunk::<4>()?;
        let table_len = u32::from_le_bytes(*len) as usize;
        if rest.len() != 4 + table_len + 4 {
            return None;
        }
        let (section, sum) = rest.split_at(4 + table_len);
        if u32::from_le_bytes(sum.try_into().ok()?) != crc32fast::hash(section) {
            return None;
        }
        let table = ProducerTable::decode(&section[4..], max_producers)?;
        Some((checkpoint, table))
    }

    /// Decodes the fixed 48-byte part of a checkpoint (either version),
    /// `None` when the bytes are not a valid one.
    pub fn decode(b: &[u8]) -> Option<Checkpoint> {
        if b.len() != LEN || &b[0..4] != MAGIC {
            return None;
        }
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        if !(1..=CHECKPOINT_VERSION).contains(&u32_at(4)) || u32_at(44) != crc32fast::hash(&b[..44])
        {
            return None;
        }
        Some(Checkpoint {
            segment_base: u64_at(8),
            position: u64_at(16),
            next_offset: u64_at(24),
            last_frame_crc: u32_at(32),
            last_frame_len: u32_at(36),
            index_entries: u32_at(40),
        })
    }

    /// Reads the checkpoint of the partition in `dir` with its producer
    /// table; `None` if absent or invalid.
    pub fn read(dir: &Path, max_producers: usize) -> Option<(Checkpoint, ProducerTable)> {
        std::fs::read(dir.join(CHECKPOINT_FILE))
            .ok()
            .and_then(|b| Checkpoint::decode_with(&b, max_producers))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_checkpoint() -> impl Strategy<Value = Checkpoint> {
        (
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
        )
            .prop_map(|(segment_base, position, next_offset, crc, len, entries)| {
                Checkpoint {
                    segment_base,
                    position,
                    next_offset,
                    last_frame_crc: crc,
                    last_frame_len: len,
                    index_entries: entries,
                }
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// Every checkpoint round-trips.
        #[test]
        fn any_checkpoint_round_trips(c in arb_checkpoint()) {
            prop_assert_eq!(Checkpoint::decode(&c.encode()), Some(c));
        }

        /// Arbitrary bytes (every length around the real one) decode to
        /// `None` or a checkpoint that round-trips; never a panic.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Some(c) = Checkpoint::decode(&bytes) {
                // A version 1 file re-encodes as version 2: compare values.
                prop_assert_eq!(Checkpoint::decode(&c.encode()), Some(c));
            }
        }

        /// Arbitrary bytes after a valid fixed part, with the section
        /// length and CRC made to match so that the producer-table parser
        /// sees them: never a panic, and what decodes re-encodes the same.
        #[test]
        fn arbitrary_producer_sections_never_panic(
            c in arb_checkpoint(),
            table in proptest::collection::vec(any::<u8>(), 0..160),
            max_producers in 0usize..8,
        ) {
            let mut b = c.encode().to_vec();
            b.extend_from_slice(&(table.len() as u32).to_le_bytes());
            b.extend_from_slice(&table);
            let sum = crc32fast::hash(&b[LEN..]);
            b.extend_from_slice(&sum.to_le_bytes());
            let _ = Checkpoint::decode_with(&b, max_producers);
            let _ = Checkpoint::decode_with(&b[..b.len() / 2], max_producers);
            let _ = Checkpoint::decode_with(&table, max_producers);
        }

        /// A valid checkpoint with its magic and version intact and any
        /// other bytes changed is rejected by its checksum.
        #[test]
        fn mutated_checkpoints_are_rejected(
            c in arb_checkpoint(),
            edits in proptest::collection::vec((8usize..LEN, 1u8..=255), 1..4),
        ) {
            let mut b = c.encode();
            for (i, x) in edits {
                b[i] ^= x;
            }
            if b != c.encode() {
                prop_assert_eq!(Checkpoint::decode(&b), None);
            }
        }
    }

    #[test]
    fn round_trip_and_any_flip_is_rejected() {
        let c = Checkpoint {
            segment_base: 100,
            position: 4096,
            next_offset: 180,
            last_frame_crc: 0xdead_beef,
            last_frame_len: 300,
            index_entries: 1,
        };
        let b = c.encode();
        assert_eq!(Checkpoint::decode(&b), Some(c));
        for i in 0..b.len() {
            let mut d = b;
            d[i] ^= 1;
            assert_eq!(Checkpoint::decode(&d), None, "flip at {i}");
        }
    }

    #[test]
    fn version_2_carries_the_producer_table_and_rejects_any_flip() {
        let c = Checkpoint {
            segment_base: 0,
            position: 128,
            next_offset: 3,
            last_frame_crc: 1,
            last_frame_len: 128,
            index_entries: 0,
        };
        let mut table = ProducerTable::default();
        let meta = crate::storage::BatchMeta {
            record_count: 3,
            producer_id: 42,
            base_sequence: 0,
            ..Default::default()
        };
        table.record(&meta, 0, 77);
        let b = c.encode_with(&table);
        assert_eq!(Checkpoint::decode_with(&b, 1024), Some((c, table.clone())));
        for i in 0..b.len() {
            let mut d = b.clone();
            d[i] ^= 1;
            assert_eq!(Checkpoint::decode_with(&d, 16), None, "flip at {i}");
        }
        assert_eq!(Checkpoint::decode_with(&b[..b.len() - 1], 16), None);
    }

    #[test]
    fn version_1_files_are_still_read() {
        let c = Checkpoint {
            segment_base: 5,
            position: 0,
            next_offset: 5,
            last_frame_crc: 0,
            last_frame_len: 0,
            index_entries: 0,
        };
        let mut b = c.encode();
        b[4..8].copy_from_slice(&1u32.to_le_bytes());
        let sum = crc32fast::hash(&b[..44]);
        b[44..48].copy_from_slice(&sum.to_le_bytes());
        let (decoded, table) = Checkpoint::decode_with(&b, 16).expect("v1 decodes");
        assert_eq!(decoded, c);
        assert!(table.is_empty());
    }
}
