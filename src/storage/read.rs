//! The read side of [`PartitionLog`]: fetch by offset and look up by time.
//!
//! Reads never take the writer lock and never copy: a [`ReadBatch`] is a
//! view into a mapped segment that keeps the map alive. Every frame's CRC is
//! checked before it is handed out; a frame that fails is never served. A
//! read that starts inside damaged bytes gets [`StorageError::Corrupt`]
//! naming the unreadable offset range; a read that starts after the damage
//! skips it.

use std::sync::Arc;

use super::counters;
use super::error::{Result, StorageError};
use super::frame::{check_frame, check_header, FrameCheck, FrameHeader, HEADER_LEN};
use super::index::{IndexFile, OffsetEntry};
use super::mapped_file::MappedFile;
use super::partition_log::PartitionLog;
use super::scan::resync;

/// One stored batch, viewed in place.
#[derive(Debug, Clone)]
pub struct ReadBatch {
    map: Arc<MappedFile>,
    position: u64,
    /// The batch's frame header.
    pub header: FrameHeader,
}

impl ReadBatch {
    /// The whole frame, header included.
    pub fn frame(&self) -> &[u8] {
        self.map
            .slice(self.position, self.header.frame_len as usize)
    }

    /// The payload (the bytes that were appended).
    pub fn payload(&self) -> &[u8] {
        self.map
            .slice(self.position + HEADER_LEN as u64, self.header.payload_len())
    }
}

/// The answer to [`PartitionLog::read`].
#[derive(Debug, Clone, Default)]
pub struct ReadResult {
    /// Whole batches in offset order; the first contains the requested offset.
    pub batches: Vec<ReadBatch>,
    /// Records of the first batch that precede the requested offset.
    pub skip_records: u32,
    /// Offset the next appended record will get.
    pub high_watermark: u64,
    /// First offset still stored.
    pub log_start_offset: u64,
}

/// One segment as a reader sees it.
struct Source {
    base_offset: u64,
    end_offset: Option<u64>,
    log: Arc<MappedFile>,
    index: Arc<IndexFile>,
    time_index: Arc<IndexFile>,
    /// Bytes of published frames.
    limit: u64,
    /// Largest timestamp, when known without a scan.
    max_timestamp_ms: Option<i64>,
}

impl PartitionLog {
    /// Reads whole batches starting with the one that holds `offset`, up to
    /// about `max_bytes` of frames (at least one batch is returned even if it
    /// is larger, so a consumer always makes progress).
    ///
    /// # Errors
    /// [`StorageError::OffsetOutOfRange`] outside `[log_start, high_watermark]`
    /// (reading at the high watermark returns no batches);
    /// [`StorageError::Corrupt`] when `offset` lies in damaged bytes.
    pub fn read(&self, offset: u64, max_bytes: u64) -> Result<ReadResult> {
        let high_watermark = self.high_watermark();
        let log_start = self.log_start_offset();
        if offset < log_start || offset > high_watermark {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                log_start,
                high_watermark,
            });
        }
        let mut out = ReadResult {
            high_watermark,
            log_start_offset: log_start,
            ..ReadResult::default()
        };
        if offset == high_watermark {
            return Ok(out);
        }
        let snap = self.snapshot();
        // Retention may have deleted the segment holding `offset` after the
        // check above: the first remaining segment then starts past it, and
        // reading on from there would skip records without a word.
        let first_base = snap
            .sealed
            .first()
            .map_or(snap.active.base_offset, |s| s.base_offset);
        if offset < first_base {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                log_start: self.log_start_offset().max(first_base),
                high_watermark,
            });
        }
        // `i` indexes sealed segments; `sealed.len()` means the active one.
        let mut i = if offset >= snap.active.base_offset {
            snap.sealed.len()
        } else {
            snap.sealed
                .partition_point(|s| s.base_offset <= offset)
                .saturating_sub(1)
        };
        let mut total = 0u64;
        let mut start_at = Some(offset);
        loop {
            let source = self.source(&snap, i)?;
            let done = read_segment(
                &source,
                start_at,
                high_watermark,
                max_bytes,
                &mut total,
                &mut out,
            )?;
            start_at = None;
            if done || i >= snap.sealed.len() {
                break;
            }
            i += 1;
        }
        if let Some(b) = out.batches.first() {
            out.skip_records = offset.saturating_sub(b.header.base_offset) as u32;
        }
        Ok(out)
    }

    /// Finds the first batch whose (running maximum) timestamp is at or after
    /// `timestamp_ms`. Returns its base offset and timestamp, or `None` when
    /// every stored batch is older.
    pub fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<(u64, i64)>> {
        let snap = self.snapshot();
        let high_watermark = self.high_watermark();
        for i in 0..=snap.sealed.len() {
            if let Some(s) = snap.sealed.get(i) {
                if s.max_timestamp_ms(self.cache())? < timestamp_ms {
                    continue;
                }
            }
            let source = self.source(&snap, i)?;
            if source.max_timestamp_ms.is_some_and(|m| m < timestamp_ms) {
                continue;
            }
            if let Some(found) = find_time(&source, timestamp_ms, high_watermark) {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    fn source(&self, snap: &super::partition_log::Segments, i: usize) -> Result<Source> {
        match snap.sealed.get(i) {
            Some(seg) => {
                let (maps, opened) = seg.maps()?;
                if opened {
                    self.cache().opened(seg);
                } else {
                    self.cache().touch(seg);
                }
                Ok(Source {
                    base_offset: seg.base_offset,
                    end_offset: Some(seg.end_offset),
                    log: maps.log.clone(),
                    index: maps.index.clone(),
                    time_index: maps.time_index.clone(),
                    limit: maps.data_len,
                    max_timestamp_ms: Some(maps.max_timestamp_ms),
                })
            }
            None => {
                let a = &snap.active;
                Ok(Source {
                    base_offset: a.base_offset,
                    end_offset: None,
                    log: a.log.clone(),
                    index: a.index.clone(),
                    time_index: a.time_index.clone(),
                    limit: a.end_position(),
                    max_timestamp_ms: None,
                })
            }
        }
    }
}

/// Reads frames of one segment into `out`. `start_at` is the requested offset
/// for the first segment read (None: from the segment start). Returns true
/// when the read is complete.
fn read_segment(
    src: &Source,
    start_at: Option<u64>,
    high_watermark: u64,
    max_bytes: u64,
    total: &mut u64,
    out: &mut ReadResult,
) -> Result<bool> {
    let target = start_at.unwrap_or(src.base_offset);
    let bytes = src.log.slice(0, src.limit as usize);
    let (mut position, mut expected) = match start_at {
        Some(o) => indexed_start(
            src,
            bytes,
            src.index
                .lookup_offset((o.saturating_sub(src.base_offset)).min(u64::from(u32::MAX)) as u32),
        ),
        None => (0, src.base_offset),
    };
    src.log
        .will_need(position, max_bytes.min(16 << 20) as usize);
    while position < src.limit {
        if expected >= high_watermark {
            return Ok(true);
        }
        let reason = match check_frame(&bytes[position as usize..]) {
            FrameCheck::Valid(h) if h.base_offset == expected => {
                if take_frame(src, position, h, target, max_bytes, total, out) {
                    return Ok(true);
                }
                position += u64::from(h.frame_len);
                expected = h.next_offset();
                continue;
            }
            FrameCheck::Valid(_) => "unexpected base offset",
            FrameCheck::Zero => "zero bytes",
            FrameCheck::Invalid(r) => r,
        };
        counters::add_crc_failure();
        let resume = resync(bytes, position + 1, expected);
        let end_offset = resume
            .map(|(_, h)| h.base_offset)
            .or(src.end_offset)
            .unwrap_or(high_watermark);
        if target < end_offset || !out.batches.is_empty() {
            if !out.batches.is_empty() {
                // Serve what precedes the damage; the next read reports it.
                return Ok(true);
            }
            return Err(StorageError::Corrupt {
                segment_base: src.base_offset,
                position,
                first_offset: expected,
                end_offset,
                reason,
            });
        }
        match resume {
            Some((p, h)) => {
                position = p;
                expected = h.base_offset;
            }
            None => return Ok(false),
        }
    }
    Ok(false)
}

/// Where to start walking frames for an index entry: its position, if a
/// frame header carrying its offset really starts there (an index is derived
/// data and never trusted over the log), else the segment start. A damaged
/// frame at the entry is met again, and reported the same way, by the walk
/// from the start.
fn indexed_start(src: &Source, bytes: &[u8], entry: Option<OffsetEntry>) -> (u64, u64) {
    match entry {
        Some(e) if u64::from(e.position) < src.limit => {
            let (position, offset) = (
                u64::from(e.position),
                src.base_offset + u64::from(e.relative_offset),
            );
            match check_header(&bytes[position as usize..]) {
                FrameCheck::Valid(h) if h.base_offset == offset => (position, offset),
                _ => (0, src.base_offset),
            }
        }
        _ => (0, src.base_offset),
    }
}

/// Adds the frame at `position` to `out` if it holds offsets at or after
/// `target`. Returns true when the byte budget is used up.
fn take_frame(
    src: &Source,
    position: u64,
    header: FrameHeader,
    target: u64,
    max_bytes: u64,
    total: &mut u64,
    out: &mut ReadResult,
) -> bool {
    if header.next_offset() <= target {
        return false;
    }
    let len = u64::from(header.frame_len);
    if !out.batches.is_empty() && *total + len > max_bytes {
        return true;
    }
    *total += len;
    out.batches.push(ReadBatch {
        map: src.log.clone(),
        position,
        header,
    });
    *total >= max_bytes
}

/// The first frame in `src` whose running max timestamp reaches `timestamp_ms`.
fn find_time(src: &Source, timestamp_ms: i64, high_watermark: u64) -> Option<(u64, i64)> {
    let bytes = src.log.slice(0, src.limit as usize);
    let (mut position, mut expected) = match src.time_index.lookup_time_before(timestamp_ms) {
        Some(t) => indexed_start(src, bytes, src.index.lookup_offset(t.relative_offset)),
        None => (0, src.base_offset),
    };
    let mut running = i64::MIN;
    while position < src.limit && expected < high_watermark {
        match check_frame(&bytes[position as usize..]) {
            FrameCheck::Valid(h) if h.base_offset == expected => {
                running = running.max(h.meta.max_timestamp_ms);
                if running >= timestamp_ms {
                    return Some((h.base_offset, h.meta.max_timestamp_ms));
                }
                position += u64::from(h.frame_len);
                expected = h.next_offset();
            }
            _ => match resync(bytes, position + 1, expected) {
                Some((p, h)) => {
                    position = p;
                    expected = h.base_offset;
                }
                None => return None,
            },
        }
    }
    None
}

impl PartitionLog {
    /// Whether `offset` lies in the active segment, whose pages are almost
    /// certainly in memory (so a read will not block on disk).
    pub fn is_hot(&self, offset: u64) -> bool {
        offset >= self.snapshot().active.base_offset
    }
}
