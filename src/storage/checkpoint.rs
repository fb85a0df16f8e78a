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
//! A checkpoint that fails its checksum, or whose last frame does not match
//! the log, is ignored: recovery then scans the whole active segment.

use std::path::Path;

/// File name of the checkpoint inside a partition directory.
pub const CHECKPOINT_FILE: &str = "recovery-checkpoint";
/// Version written into the checkpoint.
pub const CHECKPOINT_VERSION: u32 = 1;
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

    /// Decodes a checkpoint, `None` when the bytes are not a valid one.
    pub fn decode(b: &[u8]) -> Option<Checkpoint> {
        if b.len() != LEN || &b[0..4] != MAGIC {
            return None;
        }
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        if u32_at(4) != CHECKPOINT_VERSION || u32_at(44) != crc32fast::hash(&b[..44]) {
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

    /// Reads the checkpoint of the partition in `dir`; `None` if absent or invalid.
    pub fn read(dir: &Path) -> Option<Checkpoint> {
        std::fs::read(dir.join(CHECKPOINT_FILE))
            .ok()
            .and_then(|b| Checkpoint::decode(&b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
