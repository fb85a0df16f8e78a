//! The two sparse, memory-mapped indexes of a segment.
//!
//! # `.index` (offset index) entry layout, 8 bytes, little-endian
//!
//! | bytes | type | field           | meaning                                          |
//! |-------|------|-----------------|--------------------------------------------------|
//! | 0..4  | u32  | relative_offset | batch base offset minus the segment base offset  |
//! | 4..8  | u32  | position        | byte position of that batch's frame in the `.log`|
//!
//! # `.timeindex` entry layout, 12 bytes, little-endian
//!
//! | bytes | type | field           | meaning                                                   |
//! |-------|------|-----------------|-----------------------------------------------------------|
//! | 0..8  | i64  | timestamp_ms    | running maximum batch timestamp up to and including it    |
//! | 8..12 | u32  | relative_offset | base offset of that batch minus the segment base offset   |
//!
//! One entry of each is written for the first batch that starts at least
//! `index_interval_bytes` after the previous entry, so a lookup scans at most
//! about that many bytes of log. The batch at position 0 gets no entry (it is
//! implied), which makes an all-zero entry an unambiguous end marker in the
//! zero-filled pre-allocated tail.
//!
//! Indexes are derived data. They are validated when opened (strictly
//! increasing offsets and positions, positions inside the valid log) and
//! rebuilt from the log when they are missing, short or inconsistent; they
//! are never evidence about the log.

use std::sync::atomic::{AtomicU32, Ordering};

use super::error::Result;
use super::mapped_file::MappedFile;

/// Size of one `.index` entry.
pub const OFFSET_ENTRY_LEN: usize = 8;
/// Size of one `.timeindex` entry.
pub const TIME_ENTRY_LEN: usize = 12;

/// One offset-index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    /// Base offset of the batch minus the segment base.
    pub relative_offset: u32,
    /// Byte position of the batch in the `.log`.
    pub position: u32,
}

/// One time-index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    /// Running maximum timestamp (ms) up to and including this batch.
    pub timestamp_ms: i64,
    /// Base offset of the batch minus the segment base.
    pub relative_offset: u32,
}

/// A memory-mapped index file with a published entry count.
///
/// One writer appends entries; readers binary-search the first
/// [`IndexFile::len`] entries, which are never modified again.
#[derive(Debug)]
pub struct IndexFile {
    file: MappedFile,
    entry_len: usize,
    entries: AtomicU32,
}

impl IndexFile {
    /// Wraps a mapped file whose first `entries` entries are valid.
    pub fn new(file: MappedFile, entry_len: usize, entries: u32) -> IndexFile {
        IndexFile {
            file,
            entry_len,
            entries: AtomicU32::new(entries),
        }
    }

    /// Number of published entries.
    pub fn len(&self) -> u32 {
        self.entries.load(Ordering::Acquire)
    }

    /// Whether no entry is published.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether one more entry fits in the mapped capacity.
    pub fn has_room(&self) -> bool {
        (u64::from(self.len()) + 1) * self.entry_len as u64 <= self.file.capacity()
    }

    /// The underlying file.
    pub fn file(&self) -> &MappedFile {
        &self.file
    }

    /// Consumes the index, returning its file (for trimming).
    pub fn into_file(self) -> MappedFile {
        self.file
    }

    /// Bytes of valid entries.
    pub fn valid_bytes(&self) -> u64 {
        u64::from(self.len()) * self.entry_len as u64
    }

    fn raw(&self, i: u32) -> &[u8] {
        self.file
            .slice(u64::from(i) * self.entry_len as u64, self.entry_len)
    }

    /// Appends one encoded entry and publishes it. Single writer only.
    pub fn push(&self, entry: &[u8]) -> Result<()> {
        debug_assert_eq!(entry.len(), self.entry_len);
        let n = self.len();
        let at = u64::from(n) * self.entry_len as u64;
        self.file.reserve(at + self.entry_len as u64)?;
        self.file.write(at, entry);
        self.entries.store(n + 1, Ordering::Release);
        Ok(())
    }

    /// Zeroes every byte after the published entries (used by recovery, before
    /// any reader exists, so stale entries can never be mistaken for new ones).
    /// A reserved tail the filesystem shows was never written is zeros
    /// already and is not read.
    pub fn zero_tail(&self) {
        let start = self.valid_bytes();
        let allocated = self.file.allocated();
        let end = self.file.unwritten_tail_start().unwrap_or(allocated);
        if end > start {
            let zeros = vec![0u8; (end - start) as usize];
            if self.file.slice(start, zeros.len()).iter().any(|&b| b != 0) {
                self.file.write(start, &zeros);
            }
        }
    }

    /// Offset-index entry `i` (< `len()`).
    pub fn offset_entry(&self, i: u32) -> OffsetEntry {
        decode_offset_entry(self.raw(i))
    }

    /// Time-index entry `i` (< `len()`).
    pub fn time_entry(&self, i: u32) -> TimeEntry {
        decode_time_entry(self.raw(i))
    }

    /// The last offset-index entry at or before `relative_offset`, if any.
    pub fn lookup_offset(&self, relative_offset: u32) -> Option<OffsetEntry> {
        let n = self.len();
        // Number of entries with relative_offset <= target.
        let (mut lo, mut hi) = (0u32, n);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.offset_entry(mid).relative_offset <= relative_offset {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo.checked_sub(1).map(|i| self.offset_entry(i))
    }

    /// The last time-index entry whose timestamp is below `timestamp_ms`, if any:
    /// the batch a search for the first timestamp ≥ `timestamp_ms` may start from.
    pub fn lookup_time_before(&self, timestamp_ms: i64) -> Option<TimeEntry> {
        let n = self.len();
        let (mut lo, mut hi) = (0u32, n);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.time_entry(mid).timestamp_ms < timestamp_ms {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo.checked_sub(1).map(|i| self.time_entry(i))
    }

    /// The last time-index entry, if any.
    pub fn last_time_entry(&self) -> Option<TimeEntry> {
        self.len().checked_sub(1).map(|i| self.time_entry(i))
    }
}

/// Encodes an offset-index entry.
pub fn encode_offset_entry(e: OffsetEntry) -> [u8; OFFSET_ENTRY_LEN] {
    let mut b = [0u8; OFFSET_ENTRY_LEN];
    b[0..4].copy_from_slice(&e.relative_offset.to_le_bytes());
    b[4..8].copy_from_slice(&e.position.to_le_bytes());
    b
}

/// Decodes an offset-index entry from 8 bytes.
pub fn decode_offset_entry(b: &[u8]) -> OffsetEntry {
    OffsetEntry {
        relative_offset: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        position: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
    }
}

/// Encodes a time-index entry.
pub fn encode_time_entry(e: TimeEntry) -> [u8; TIME_ENTRY_LEN] {
    let mut b = [0u8; TIME_ENTRY_LEN];
    b[0..8].copy_from_slice(&e.timestamp_ms.to_le_bytes());
    b[8..12].copy_from_slice(&e.relative_offset.to_le_bytes());
    b
}

/// Decodes a time-index entry from 12 bytes.
pub fn decode_time_entry(b: &[u8]) -> TimeEntry {
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&b[0..8]);
    TimeEntry {
        timestamp_ms: i64::from_le_bytes(ts),
        relative_offset: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
    }
}

/// Counts the leading offset-index entries of `bytes` that are valid for a log
/// whose trusted data ends at `log_end` and whose next relative offset is
/// `next_relative`: positions and offsets strictly increasing, positions
/// above 0 and below `log_end`.
pub fn valid_offset_entries(bytes: &[u8], log_end: u64, next_relative: u64) -> u32 {
    let mut count = 0u32;
    let mut prev = OffsetEntry {
        relative_offset: 0,
        position: 0,
    };
    for chunk in bytes.chunks_exact(OFFSET_ENTRY_LEN) {
        let e = decode_offset_entry(chunk);
        let ok = e.position > prev.position
            && e.relative_offset > prev.relative_offset
            && u64::from(e.position) < log_end
            && u64::from(e.relative_offset) < next_relative;
        if !ok {
            break;
        }
        prev = e;
        count += 1;
    }
    count
}

/// Counts the leading valid time-index entries: timestamps non-decreasing,
/// relative offsets strictly increasing and below `next_relative`, and not
/// the all-zero end marker.
pub fn valid_time_entries(bytes: &[u8], next_relative: u64) -> u32 {
    let mut count = 0u32;
    let mut prev: Option<TimeEntry> = None;
    for chunk in bytes.chunks_exact(TIME_ENTRY_LEN) {
        let e = decode_time_entry(chunk);
        if chunk.iter().all(|&b| b == 0) || u64::from(e.relative_offset) >= next_relative {
            break;
        }
        if let Some(p) = prev {
            if e.timestamp_ms < p.timestamp_ms || e.relative_offset <= p.relative_offset {
                break;
            }
        }
        prev = Some(e);
        count += 1;
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// Arbitrary index bytes never panic, and what is counted as valid
        /// obeys the rules: strictly increasing, inside the trusted log.
        #[test]
        fn arbitrary_offset_index_bytes_count_only_valid_entries(
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
            log_end in any::<u64>(),
            next_relative in any::<u64>(),
        ) {
            let n = valid_offset_entries(&bytes, log_end, next_relative) as usize;
            prop_assert!(n <= bytes.len() / OFFSET_ENTRY_LEN);
            let entries: Vec<OffsetEntry> =
                bytes.chunks_exact(OFFSET_ENTRY_LEN).take(n).map(decode_offset_entry).collect();
            let mut prev = (0u32, 0u32);
            for e in entries {
                prop_assert!(e.relative_offset > prev.0 && e.position > prev.1);
                prop_assert!(u64::from(e.position) < log_end);
                prop_assert!(u64::from(e.relative_offset) < next_relative);
                prev = (e.relative_offset, e.position);
            }
        }

        /// Same for the time index: non-decreasing times, increasing offsets.
        #[test]
        fn arbitrary_time_index_bytes_count_only_valid_entries(
            bytes in proptest::collection::vec(any::<u8>(), 0..240),
            next_relative in any::<u64>(),
        ) {
            let n = valid_time_entries(&bytes, next_relative) as usize;
            prop_assert!(n <= bytes.len() / TIME_ENTRY_LEN);
            let entries: Vec<TimeEntry> =
                bytes.chunks_exact(TIME_ENTRY_LEN).take(n).map(decode_time_entry).collect();
            for pair in entries.windows(2) {
                prop_assert!(pair[1].timestamp_ms >= pair[0].timestamp_ms);
                prop_assert!(pair[1].relative_offset > pair[0].relative_offset);
            }
            for e in &entries {
                prop_assert!(u64::from(e.relative_offset) < next_relative);
            }
        }

        /// Valid indexes (as the writer makes them) round-trip whole, and a
        /// zero-filled tail after them ends them.
        #[test]
        fn valid_indexes_round_trip(
            steps in proptest::collection::vec((1u32..1000, 1u32..100_000, 0i64..1000), 0..20),
            start_ms in 0i64..1 << 40,
        ) {
            let (mut off, mut pos, mut ts) = (0u32, 0u32, start_ms);
            let (mut offsets, mut times) = (Vec::new(), Vec::new());
            let mut written = Vec::new();
            for (d_off, d_pos, d_ts) in steps {
                off += d_off;
                pos += d_pos;
                ts += d_ts;
                let o = OffsetEntry { relative_offset: off, position: pos };
                let t = TimeEntry { timestamp_ms: ts, relative_offset: off };
                offsets.extend_from_slice(&encode_offset_entry(o));
                times.extend_from_slice(&encode_time_entry(t));
                prop_assert_eq!(decode_offset_entry(&encode_offset_entry(o)), o);
                prop_assert_eq!(decode_time_entry(&encode_time_entry(t)), t);
                written.push(o);
            }
            offsets.extend_from_slice(&[0u8; 3 * OFFSET_ENTRY_LEN]);
            times.extend_from_slice(&[0u8; 3 * TIME_ENTRY_LEN]);
            let n = written.len() as u32;
            let (log_end, next) = (u64::from(pos) + 1, u64::from(off) + 1);
            prop_assert_eq!(valid_offset_entries(&offsets, log_end, next), n);
            prop_assert_eq!(valid_time_entries(&times, next), n);
        }
    }

    #[test]
    fn zero_entries_end_the_index() {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&encode_offset_entry(OffsetEntry {
            relative_offset: 5,
            position: 4100,
        }));
        bytes.extend_from_slice(&encode_offset_entry(OffsetEntry {
            relative_offset: 9,
            position: 8300,
        }));
        bytes.extend_from_slice(&[0u8; 16]);
        assert_eq!(valid_offset_entries(&bytes, 10_000, 20), 2);
        // An entry past the trusted log end is not trusted.
        assert_eq!(valid_offset_entries(&bytes, 8300, 20), 1);
        // Nor one that points at an offset the log does not have.
        assert_eq!(valid_offset_entries(&bytes, 10_000, 9), 1);
    }

    #[test]
    fn time_entries_must_not_go_backwards() {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&encode_time_entry(TimeEntry {
            timestamp_ms: 10,
            relative_offset: 0,
        }));
        bytes.extend_from_slice(&encode_time_entry(TimeEntry {
            timestamp_ms: 20,
            relative_offset: 4,
        }));
        bytes.extend_from_slice(&encode_time_entry(TimeEntry {
            timestamp_ms: 15,
            relative_offset: 8,
        }));
        assert_eq!(valid_time_entries(&bytes, 100), 2);
    }
}
