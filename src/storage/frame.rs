//! The record-batch frame: the unit that is appended to, and read from, a `.log` file.
//!
//! # Byte layout (all integers little-endian)
//!
//! | bytes  | type | field              | meaning                                                  |
//! |--------|------|--------------------|----------------------------------------------------------|
//! | 0      | u8   | magic              | format version, [`FORMAT_VERSION`]; never 0              |
//! | 1..4   | -    | reserved           | must be 0                                                |
//! | 4..8   | u32  | frame_len          | whole frame in bytes, header included; ≥ [`HEADER_LEN`]  |
//! | 8..12  | u32  | crc                | CRC-32 (IEEE, crc32fast) of bytes `12..frame_len`        |
//! | 12..20 | u64  | base_offset        | offset of the first record in the batch                  |
//! | 20..24 | u32  | record_count       | number of records, ≥ 1; they take offsets `base..base+n` |
//! | 24..32 | i64  | first_timestamp_ms | timestamp of the first record (ms since the Unix epoch)  |
//! | 32..40 | i64  | max_timestamp_ms   | largest timestamp in the batch                           |
//! | 40..48 | u64  | producer_id        | 0 when the producer is not idempotent                    |
//! | 48..52 | u32  | producer_epoch     |                                                          |
//! | 52..56 | i32  | base_sequence      |                                                          |
//! | 56..58 | u16  | attributes         | flags, none defined yet (0)                              |
//! | 58..64 | -    | reserved           | must be 0                                                |
//! | 64..   | [u8] | payload            | opaque to storage (the broker stores records' wire bytes)|
//!
//! A zero-filled region is never a frame: the magic byte and `frame_len` are
//! checked before anything else, and a CRC of 0 means nothing special. The CRC
//! covers everything after itself, so a torn write anywhere in the frame,
//! including the offsets and counts, is detected.

/// Format version written into byte 0 of every frame. Bump it when the layout changes.
pub const FORMAT_VERSION: u8 = 1;

/// Size of the fixed frame header in bytes.
pub const HEADER_LEN: usize = 64;

/// Start of the CRC-covered region.
const CRC_START: usize = 12;

/// What describes a batch apart from its payload and its (log-assigned) base offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BatchMeta {
    /// Number of records in the payload, ≥ 1.
    pub record_count: u32,
    /// Timestamp of the first record, ms since the Unix epoch.
    pub first_timestamp_ms: i64,
    /// Largest record timestamp in the batch, ms since the Unix epoch.
    pub max_timestamp_ms: i64,
    /// Idempotent producer id (0 = none).
    pub producer_id: u64,
    /// Idempotent producer epoch.
    pub producer_epoch: u32,
    /// Sequence number of the first record for idempotent producers.
    pub base_sequence: i32,
    /// Batch flags; none defined yet.
    pub attributes: u16,
}

/// A decoded, validated frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Offset of the first record.
    pub base_offset: u64,
    /// Whole frame length in bytes, header included.
    pub frame_len: u32,
    /// The stored CRC.
    pub crc: u32,
    /// Everything else the producer described.
    pub meta: BatchMeta,
}

impl FrameHeader {
    /// The offset after the last record of this batch.
    pub fn next_offset(&self) -> u64 {
        self.base_offset + u64::from(self.meta.record_count)
    }

    /// Payload length in bytes.
    pub fn payload_len(&self) -> usize {
        self.frame_len as usize - HEADER_LEN
    }
}

/// Why bytes at a position are not a valid frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameCheck {
    /// A complete frame whose checks (and CRC, if asked) passed.
    Valid(FrameHeader),
    /// A zero magic byte: pre-allocated space, i.e. the end of written data
    /// (or a page that never reached the disk).
    Zero,
    /// Anything else: torn, garbage or damaged bytes.
    Invalid(&'static str),
}

/// Encodes a frame header for `meta` placed at `base_offset` with a payload of
/// `payload_len` bytes, computing the CRC over the header tail and `payload`.
///
/// `payload` is given in pieces so callers can frame scattered buffers without
/// first gathering them.
pub fn encode_header(meta: &BatchMeta, base_offset: u64, payload: &[&[u8]]) -> [u8; HEADER_LEN] {
    let payload_len: usize = payload.iter().map(|p| p.len()).sum();
    let mut h = [0u8; HEADER_LEN];
    h[0] = FORMAT_VERSION;
    h[4..8].copy_from_slice(&((HEADER_LEN + payload_len) as u32).to_le_bytes());
    h[12..20].copy_from_slice(&base_offset.to_le_bytes());
    h[20..24].copy_from_slice(&meta.record_count.to_le_bytes());
    h[24..32].copy_from_slice(&meta.first_timestamp_ms.to_le_bytes());
    h[32..40].copy_from_slice(&meta.max_timestamp_ms.to_le_bytes());
    h[40..48].copy_from_slice(&meta.producer_id.to_le_bytes());
    h[48..52].copy_from_slice(&meta.producer_epoch.to_le_bytes());
    h[52..56].copy_from_slice(&meta.base_sequence.to_le_bytes());
    h[56..58].copy_from_slice(&meta.attributes.to_le_bytes());
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&h[CRC_START..]);
    for piece in payload {
        hasher.update(piece);
    }
    h[8..12].copy_from_slice(&hasher.finalize().to_le_bytes());
    h
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Decodes the header at the start of `buf` without checking the CRC.
///
/// `buf` may extend past the frame; the frame must fit inside it.
pub fn check_header(buf: &[u8]) -> FrameCheck {
    if buf.is_empty() || buf[0] == 0 {
        return FrameCheck::Zero;
    }
    if buf.len() < HEADER_LEN {
        return FrameCheck::Invalid("truncated frame header");
    }
    if buf[0] != FORMAT_VERSION {
        return FrameCheck::Invalid("unknown frame format version");
    }
    if buf[1..4] != [0, 0, 0] || buf[58..64] != [0; 6] {
        return FrameCheck::Invalid("non-zero reserved header bytes");
    }
    let frame_len = u32_at(buf, 4);
    if (frame_len as usize) < HEADER_LEN {
        return FrameCheck::Invalid("frame length shorter than its header");
    }
    if frame_len as usize > buf.len() {
        return FrameCheck::Invalid("frame extends past the end of the data");
    }
    let record_count = u32_at(buf, 20);
    if record_count == 0 {
        return FrameCheck::Invalid("frame with zero records");
    }
    let header = FrameHeader {
        base_offset: u64_at(buf, 12),
        frame_len,
        crc: u32_at(buf, 8),
        meta: BatchMeta {
            record_count,
            first_timestamp_ms: u64_at(buf, 24) as i64,
            max_timestamp_ms: u64_at(buf, 32) as i64,
            producer_id: u64_at(buf, 40),
            producer_epoch: u32_at(buf, 48),
            base_sequence: u32_at(buf, 52) as i32,
            attributes: u16::from_le_bytes([buf[56], buf[57]]),
        },
    };
    if header
        .base_offset
        .checked_add(u64::from(record_count))
        .is_none()
    {
        return FrameCheck::Invalid("offset overflow");
    }
    FrameCheck::Valid(header)
}

/// Decodes and fully validates (CRC included) the frame at the start of `buf`.
pub fn check_frame(buf: &[u8]) -> FrameCheck {
    match check_header(buf) {
        FrameCheck::Valid(h) => {
            if crc32fast::hash(&buf[CRC_START..h.frame_len as usize]) == h.crc {
                FrameCheck::Valid(h)
            } else {
                FrameCheck::Invalid("CRC mismatch")
            }
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(meta: &BatchMeta, base: u64, payload: &[u8]) -> Vec<u8> {
        let mut v = encode_header(meta, base, &[payload]).to_vec();
        v.extend_from_slice(payload);
        v
    }

    fn meta(n: u32) -> BatchMeta {
        BatchMeta {
            record_count: n,
            first_timestamp_ms: 1_700_000_000_000,
            max_timestamp_ms: 1_700_000_000_005,
            producer_id: 7,
            producer_epoch: 2,
            base_sequence: -1,
            attributes: 0,
        }
    }

    #[test]
    fn zero_bytes_are_never_a_frame() {
        assert_eq!(check_frame(&[0u8; 200]), FrameCheck::Zero);
        assert_eq!(check_frame(&[]), FrameCheck::Zero);
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let f = frame(&meta(3), 42, b"hello world payload");
        for byte in 0..f.len() {
            for bit in 0..8 {
                let mut g = f.clone();
                g[byte] ^= 1 << bit;
                assert!(
                    !matches!(check_frame(&g), FrameCheck::Valid(_)),
                    "flip at byte {byte} bit {bit} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn every_truncation_is_detected() {
        let f = frame(&meta(3), 42, b"some payload bytes");
        for len in 0..f.len() {
            assert!(!matches!(check_frame(&f[..len]), FrameCheck::Valid(_)));
        }
    }

    proptest! {
        #[test]
        fn round_trip(base in 0u64..u64::MAX / 2, n in 1u32..10_000, ts in any::<i64>(),
                      pid in any::<u64>(), epoch in any::<u32>(), seq in any::<i32>(),
                      payload in proptest::collection::vec(any::<u8>(), 0..512)) {
            let m = BatchMeta { record_count: n, first_timestamp_ms: ts, max_timestamp_ms: ts,
                producer_id: pid, producer_epoch: epoch, base_sequence: seq, attributes: 0 };
            let f = frame(&m, base, &payload);
            match check_frame(&f) {
                FrameCheck::Valid(h) => {
                    prop_assert_eq!(h.base_offset, base);
                    prop_assert_eq!(h.meta, m);
                    prop_assert_eq!(h.payload_len(), payload.len());
                }
                other => prop_assert!(false, "{:?}", other),
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = check_frame(&bytes);
        }

        /// A valid frame whose header fields (length, count, offsets…) are
        /// overwritten with arbitrary values and whose CRC is recomputed, so
        /// that the checks behind the CRC are reached: never a panic, and a
        /// frame accepted as valid always lies inside the buffer.
        #[test]
        fn lying_header_fields_never_panic(
            payload in proptest::collection::vec(any::<u8>(), 0..200),
            field in 0usize..14,
            value in any::<u32>(),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut f = frame(&meta(2), 9, &payload);
            let at = 4 + field * 4; // any u32-aligned word of the header after the magic
            f[at..at + 4].copy_from_slice(&value.to_le_bytes());
            let len = (u32_at(&f, 4) as usize).min(f.len()).max(CRC_START);
            let crc = crc32fast::hash(&f[CRC_START..len]);
            if at != 8 {
                f[8..12].copy_from_slice(&crc.to_le_bytes());
            }
            let f = &f[..cut.index(f.len() + 1)];
            for check in [check_header(f), check_frame(f)] {
                if let FrameCheck::Valid(h) = check {
                    prop_assert!(h.frame_len as usize <= f.len());
                    prop_assert!(h.frame_len as usize >= HEADER_LEN);
                    prop_assert!(h.meta.record_count > 0);
                }
            }
        }
    }
}
