//! Opening a partition directory after a clean stop or a crash.
//!
//! Closed segments are only listed (one `stat` each), never read: start-up
//! time does not grow with the data. The active (last) segment is scanned
//! from the recovery checkpoint, so the cost is the tail written since the
//! last background flush:
//!
//! 1. Find the checkpoint and check that the frame it names really ends at
//!    its position with its CRC; otherwise scan the whole active segment.
//! 2. Keep index entries that point inside the checkpointed prefix, zero the
//!    rest (they are derived data and may be stale or torn).
//! 3. Scan the tail frame by frame ([`scan`]): valid frames are re-indexed,
//!    interior damage is kept and reported, a torn tail is zeroed and
//!    reported with its byte count.
//!
//! One exception reads closed segments: when the newest checkpoint names a
//! segment older than the active one, the closed segments written after it
//! are read. A roll leaves the sealed segment's sync to the next flush,
//! which then writes the checkpoint naming the new segment, so this happens
//! after a crash in that short window (or after a checkpoint write failed,
//! say on a full disk). Those segments are then unflushed data like the
//! active segment's tail: [`settle_unsynced_segments`] ends the log at the
//! first one a power cut left incomplete, and their idempotent batches are
//! replayed into the producer table (a retry of one must not be stored
//! again). Only the bytes after the checkpoint are scanned.

use std::path::Path;

use super::checkpoint::Checkpoint;
use super::config::LogConfig;
use super::error::{Result, StorageError};
use super::frame::{check_frame, check_header, FrameCheck};
use super::index::{
    encode_offset_entry, encode_time_entry, valid_offset_entries, valid_time_entries, IndexFile,
    TimeEntry, OFFSET_ENTRY_LEN, TIME_ENTRY_LEN,
};
use super::mapped_file::MappedFile;
use super::producers::{ProducerTable, DEFAULT_MAX_PRODUCERS};
use super::scan::{nonzero_extent, scan, scan_prefix, walk_headers, Damage, ScanEnd, ScanItem};
use super::segment::{segment_path, ActiveSegment, IndexCursor};

/// Records in `producers` the idempotent batches of the closed segments
/// written after checkpoint `c` (which names one of them, or one retention
/// deleted since).
fn replay_sealed_producers(
    dir: &Path,
    c: &Checkpoint,
    sealed_bases: &[u64],
    producers: &mut ProducerTable,
) -> Result<()> {
    for &seg_base in sealed_bases.iter().filter(|&&b| b >= c.segment_base) {
        let file = MappedFile::open_read_only(&segment_path(dir, seg_base, "log"))?;
        let len = file.allocated() as usize;
        let (position, next_offset) = if seg_base == c.segment_base {
            (c.position.min(len as u64), c.next_offset)
        } else {
            (0, seg_base)
        };
        scan(file.slice(0, len), position, next_offset, |item| {
            if let ScanItem::Frame { header, .. } = item {
                producers.record(
                    &header.meta,
                    header.base_offset,
                    header.meta.max_timestamp_ms,
                );
            }
        });
    }
    Ok(())
}

/// Settles the closed segments written after the recovery checkpoint
/// `saved` names (`bases`: every segment's base offset, ascending, the
/// active one last), before the active segment is recovered.
///
/// A roll leaves the sealed segment's sync to the next flush (see
/// `PartitionLog::roll`), which then writes a checkpoint naming the new
/// segment; so when the checkpoint names an older segment, the segments
/// between may have lost pages in a power cut. Each is scanned from the
/// checkpoint (or its start) as a prefix of unflushed bytes: the first bad
/// frame ends the log. A segment that does not end exactly where the next
/// one begins is where the log ends: every later segment is deleted (newest
/// first), so it becomes the active segment again and [`recover_active`]
/// cuts its torn tail, which makes a crash in the middle of this step
/// harmless. The segments kept are trimmed to their data (their trim waits
/// for the sync, so it may not have happened) and synced: a `kill -9` may
/// have left their pages dirty, and later durable appends must not be
/// acknowledged ahead of them.
///
/// Nothing is read when the checkpoint names the active segment (the normal
/// case, and always after a clean shutdown) or when there is no checkpoint
/// (closed segments were then synced by their roll). A checkpoint that does
/// not match the frame it names leaves the closed segments as they are:
/// damage there is kept and reported, never cut.
///
/// Returns, when it deleted segments, the bytes of data they held.
pub fn settle_unsynced_segments(
    dir: &Path,
    bases: &[u64],
    saved: Option<&Checkpoint>,
) -> Result<Option<u64>> {
    let Some(c) = saved else { return Ok(None) };
    let Some((&active_base, _)) = bases.split_last() else {
        return Ok(None);
    };
    if c.segment_base >= active_base {
        return Ok(None);
    }
    for (i, &base) in bases.iter().enumerate() {
        let Some(&next_base) = bases.get(i + 1) else {
            break;
        };
        if base < c.segment_base {
            continue;
        }
        let path = segment_path(dir, base, "log");
        let file = MappedFile::open_read_only(&path)?;
        let bytes = file.slice(0, file.allocated() as usize);
        let (position, next_offset) = if base == c.segment_base {
            if !checkpoint_matches(c, base, bytes) {
                return Ok(None);
            }
            (c.position, c.next_offset)
        } else {
            (0, base)
        };
        let end = scan_prefix(bytes, position, next_offset, |_| {});
        if end.torn_bytes == 0 && end.next_offset == next_base {
            // Complete. Its trim (which waits for the sync) may not have
            // happened: cut the zero tail now, before any map is handed out.
            let data_len = end.position;
            let file_len = file.allocated();
            drop(file);
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| StorageError::io(&path, e))?;
            if data_len < file_len {
                f.set_len(data_len)
                    .map_err(|e| StorageError::io(&path, e))?;
            }
            f.sync_all().map_err(|e| StorageError::io(&path, e))?;
            continue;
        }
        drop(file);
        let mut cut = 0u64;
        for &later in bases[i + 1..].iter().rev() {
            let log_path = segment_path(dir, later, "log");
            if let Ok(later_log) = MappedFile::open_read_only(&log_path) {
                cut += nonzero_extent(later_log.slice(0, later_log.allocated() as usize));
            }
            for ext in ["log", "index", "timeindex"] {
                let p = segment_path(dir, later, ext);
                match std::fs::remove_file(&p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(StorageError::io(p, e)),
                }
            }
        }
        super::fs::sync_dir(dir).map_err(|e| StorageError::io(dir, e))?;
        tracing::warn!(
            dir = %dir.display(),
            segment = base,
            at_offset = end.next_offset,
            deleted_segments = bases.len() - i - 1,
            deleted_bytes = cut,
            "a segment sealed after the last checkpoint is incomplete (its sync was cut short); the log ends there"
        );
        return Ok(Some(cut));
    }
    Ok(None)
}

/// What recovery found in a partition's active segment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Bytes of torn or garbage tail that were cut off.
    pub truncated_bytes: u64,
    /// Why the first cut byte was rejected.
    pub truncation_reason: Option<&'static str>,
    /// Interior damage kept in place (reads of it fail as corrupt).
    pub damaged: Vec<Damage>,
    /// Bytes of log scanned.
    pub scanned_bytes: u64,
    /// Whether the scan could start at a valid checkpoint.
    pub from_checkpoint: bool,
}

/// The writer's starting point after recovery.
#[derive(Debug, Clone, Copy)]
pub struct WriterStart {
    /// End of the valid frames.
    pub position: u64,
    /// Offset the next batch gets.
    pub next_offset: u64,
    /// Index bookkeeping for further appends.
    pub cursor: IndexCursor,
    /// CRC and length of the last frame (for the next checkpoint).
    pub last_frame: (u32, u32),
    /// Timestamp of the segment's first batch, if it has one.
    pub first_batch_ms: Option<i64>,
}

/// Everything recovery hands to the log besides the segment itself.
#[derive(Debug)]
pub struct Recovered {
    /// Where the writer continues.
    pub start: WriterStart,
    /// What was found.
    pub report: RecoveryReport,
    /// Idempotent producers: the checkpointed table plus the replayed tail.
    pub producers: ProducerTable,
}

/// Opens the active segment at `base` in `dir`, recovering its tail.
/// `sealed_bases` are the closed segments' base offsets, ascending; `saved`
/// the recovery checkpoint as read from the directory.
///
/// `clean` says the broker shut down cleanly (it flushed and checkpointed
/// every partition and wrote its clean-shutdown marker): then a checkpoint
/// that matches the log and is followed by zero bytes is the end of data,
/// and the pre-allocated tail is not read at all.
pub fn recover_active(
    dir: &Path,
    base: u64,
    sealed_bases: &[u64],
    saved: Option<(Checkpoint, ProducerTable)>,
    config: &LogConfig,
    clean: bool,
) -> Result<(ActiveSegment, Recovered)> {
    let log = MappedFile::open_writable(
        &segment_path(dir, base, "log"),
        config.effective_segment_bytes(),
        config.preallocate_chunk_bytes,
    )?;
    let allocated = log.allocated();
    // Past the first hole with no data after it, the reserved tail is known
    // to be zeros without reading it (a kill -9 of a broker with thousands
    // of partitions would otherwise read 1 MiB of zeros per partition).
    let readable = log.unwritten_tail_start().unwrap_or(allocated);
    let bytes = log.slice(0, readable as usize);
    let mut report = RecoveryReport::default();

    // 1. Where can the scan start?
    let checkpoint = saved
        .as_ref()
        .map(|(c, _)| *c)
        .filter(|c| checkpoint_matches(c, base, bytes));
    let saved_is_older = saved.as_ref().is_some_and(|(c, _)| c.segment_base < base);
    // The saved producer table is trusted when the checkpoint matches this
    // segment or predates it (then the whole segment is replayed on top).
    let (saved, saved_table) = match saved {
        Some((c, table)) => (Some(c), Some(table)),
        None => (None, None),
    };
    let mut producers = saved_table
        .filter(|_| checkpoint.is_some() || saved_is_older)
        .unwrap_or_else(|| ProducerTable::new(DEFAULT_MAX_PRODUCERS));
    if saved_is_older {
        if let Some(c) = &saved {
            // The checkpoint predates one roll or more (the roll's own
            // checkpoint could not be written): the batches written after
            // it in the closed segments are not in its table. Replay them,
            // or a retry of one of them would be stored again. Rare (a crash
            // soon after a roll), and only those segments are read.
            replay_sealed_producers(dir, c, sealed_bases, &mut producers)?;
        }
    }
    // What follows a valid checkpoint (all of this segment, when the
    // checkpoint names an older one: it was written before the roll) was
    // never flushed. A power cut may have left holes there (write-back
    // order is arbitrary), so the first bad frame ends the log: recovery
    // yields a prefix, never a log with holes. Without a checkpoint nothing
    // tells flushed from unflushed bytes, and damage is kept and reported.
    let unflushed_tail = checkpoint.is_some() || saved.is_some_and(|c| c.segment_base < base);
    let (start_pos, start_off, mut last_frame) = match checkpoint {
        Some(c) => {
            report.from_checkpoint = true;
            (
                c.position,
                c.next_offset,
                (c.last_frame_crc, c.last_frame_len),
            )
        }
        None => (0, base, (0, 0)),
    };

    // 2. Trust index entries only inside the checkpointed prefix.
    let index = open_index_writable(dir, base, "index", OFFSET_ENTRY_LEN, config)?;
    let n = valid_offset_entries(
        index.slice(0, index.allocated() as usize),
        start_pos,
        start_off - base,
    );
    let index = IndexFile::new(index, OFFSET_ENTRY_LEN, n);
    index.zero_tail();
    let time = open_index_writable(dir, base, "timeindex", TIME_ENTRY_LEN, config)?;
    let n = valid_time_entries(time.slice(0, time.allocated() as usize), start_off - base);
    let time = IndexFile::new(time, TIME_ENTRY_LEN, n);
    time.zero_tail();

    let mut cursor = IndexCursor::new();
    if let Some(last) = index.len().checked_sub(1).map(|i| index.offset_entry(i)) {
        cursor.last_indexed_position = u64::from(last.position);
    }
    // The last time entry holds the running maximum only up to its own batch;
    // the batches after it in the checkpointed prefix (up to an index
    // interval, or all of them when the time index was lost) must be walked,
    // or the segment's largest timestamp would be understated and retention
    // and time lookups would skip data that is newer than they think.
    let walk_from = match time.last_time_entry() {
        Some(last) => {
            cursor.running_max_ms = last.timestamp_ms;
            index
                .lookup_offset(last.relative_offset)
                .map_or((0, base), |e| {
                    (u64::from(e.position), base + u64::from(e.relative_offset))
                })
        }
        None => (0, base),
    };
    if walk_from.0 < start_pos {
        // The prefix was flushed and its last frame checked against the
        // checkpoint: headers are enough (one page per batch, not every
        // byte). Past a header that does not check, a full scan resyncs so
        // the frames after the damage still count.
        let prefix = &bytes[..start_pos as usize];
        let mut note = |header: &super::frame::FrameHeader| {
            cursor.running_max_ms = cursor.running_max_ms.max(header.meta.max_timestamp_ms);
            cursor.last_batch = Some(TimeEntry {
                timestamp_ms: cursor.running_max_ms,
                relative_offset: (header.base_offset - base) as u32,
            });
        };
        let (stopped, expected) =
            walk_headers(prefix, walk_from.0, walk_from.1, |_, header| note(header));
        if stopped < start_pos {
            scan(prefix, stopped, expected, |item| {
                if let ScanItem::Frame { header, .. } = item {
                    note(&header);
                }
            });
        }
    }

    // 3. Scan the tail (nothing to scan after a clean shutdown).
    let interval = config.effective_index_interval();
    let mut push_error = None;
    let ends_cleanly =
        clean && checkpoint.is_some() && bytes.get(start_pos as usize).is_none_or(|&b| b == 0);
    let tail_scan = if ends_cleanly {
        clean_end
    } else if unflushed_tail {
        scan_prefix
    } else {
        scan
    };
    let end = tail_scan(bytes, start_pos, start_off, |item| match item {
        ScanItem::Frame { position, header } => {
            last_frame = (header.crc, header.frame_len);
            producers.record(
                &header.meta,
                header.base_offset,
                header.meta.max_timestamp_ms,
            );
            if let Some((o, t)) = cursor.on_batch(base, position, &header, interval) {
                let pushed = index
                    .push(&encode_offset_entry(o))
                    .and_then(|()| time.push(&encode_time_entry(t)));
                if let Err(e) = pushed {
                    push_error.get_or_insert(e);
                }
            }
        }
        ScanItem::Damage(d) => report.damaged.push(d),
    });
    if let Some(e) = push_error {
        return Err(e);
    }
    report.scanned_bytes = end.position - start_pos + end.torn_bytes;
    if end.torn_bytes > 0 {
        // Zero the torn bytes so they can never be mistaken for data by a
        // later recovery; no reader exists yet. A MiB at a time: the tail
        // of a segment whose sync a power cut interrupted can be most of it.
        let zeros = vec![0u8; end.torn_bytes.min(1 << 20) as usize];
        let mut at = end.position;
        while at < end.position + end.torn_bytes {
            let n = (end.position + end.torn_bytes - at).min(zeros.len() as u64);
            log.write(at, &zeros[..n as usize]);
            at += n;
        }
        report.truncated_bytes = end.torn_bytes;
        report.truncation_reason = end.torn_reason;
    }
    if !ends_cleanly {
        log.release_tail(end.position + end.torn_bytes);
    }
    // Every frame up to `end.position` was checked, by the last flush and
    // the checkpoint or by the scan above: the header is all that is read.
    let first_batch_ms = match check_header(&bytes[..end.position as usize]) {
        FrameCheck::Valid(h) => Some(h.meta.max_timestamp_ms),
        _ => None,
    };
    // The pages recovery read (frames, index entries) stay in the page
    // cache for the readers to come, but not in this process's page
    // tables: with thousands of partitions they would add up to gigabytes
    // of resident set size.
    log.unmap_pages(0, end.position);
    for file in [index.file(), time.file()] {
        file.unmap_pages(0, file.allocated());
    }
    let start = WriterStart {
        position: end.position,
        next_offset: end.next_offset,
        cursor,
        last_frame,
        first_batch_ms,
    };
    Ok((
        ActiveSegment::from_parts(base, log, index, time, end.position),
        Recovered {
            start,
            report,
            producers,
        },
    ))
}

/// The "scan" after a clean shutdown: the checkpoint is the end.
fn clean_end(
    _bytes: &[u8],
    position: u64,
    next_offset: u64,
    _visit: impl FnMut(ScanItem),
) -> ScanEnd {
    ScanEnd {
        position,
        next_offset,
        torn_bytes: 0,
        torn_reason: None,
    }
}

/// Whether the checkpoint names a frame that really ends at its position.
fn checkpoint_matches(c: &Checkpoint, base: u64, log: &[u8]) -> bool {
    if c.segment_base != base || c.position > log.len() as u64 || c.next_offset < base {
        return false;
    }
    if c.position == 0 {
        return c.next_offset == base;
    }
    let Some(start) = c.position.checked_sub(u64::from(c.last_frame_len)) else {
        return false;
    };
    match check_frame(&log[start as usize..c.position as usize]) {
        FrameCheck::Valid(h) => {
            h.crc == c.last_frame_crc
                && h.frame_len == c.last_frame_len
                && h.next_offset() == c.next_offset
        }
        _ => false,
    }
}

/// Opens (or creates, if a crash lost it) an index file of the active segment.
fn open_index_writable(
    dir: &Path,
    base: u64,
    ext: &str,
    entry_len: usize,
    config: &LogConfig,
) -> Result<MappedFile> {
    let path = segment_path(dir, base, ext);
    let capacity = config.max_index_entries() * entry_len as u64;
    let mut file = match MappedFile::open_writable(&path, capacity, 64 * 1024) {
        Ok(f) => f,
        Err(StorageError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            MappedFile::create(&path, capacity, 64 * 1024)?
        }
        Err(e) => return Err(e),
    };
    // Indexes are derived data: no descriptor kept open (see `close_fd`).
    file.close_fd();
    Ok(file)
}
