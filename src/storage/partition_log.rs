//! [`PartitionLog`]: one partition's append-only log of segments.
//!
//! # Concurrency
//!
//! - One writer at a time: appends, rolls and retention hold the `writer`
//!   mutex (never across I/O waits other than the memcpy into the map and,
//!   on a roll, the seal of the old segment).
//! - Readers never take the writer lock. They clone the current segment list
//!   (`segments`, an `Arc` behind a short read lock) and read frames below the
//!   published ends: the writer copies a frame into the map, then publishes
//!   the segment's end position and the high watermark with `Release`;
//!   readers load them with `Acquire` and never look past them. Writer and
//!   readers therefore touch disjoint bytes.
//! - A reader's [`ReadBatch`] holds an `Arc` of the map it points into, so a
//!   segment deleted by retention meanwhile stays readable (the file is only
//!   unlinked), and no file is shrunk while a map of it is live.
//!
//! # Durability
//!
//! [`PartitionLog::append`] returns once the frame is in the mapped file: the
//! page cache owns it, so it survives a crash (`kill -9`) of the process, but
//! not a power loss. [`PartitionLog::wait_durable`] returns once
//! `fdatasync` of the log covering the append has returned Ok; concurrent
//! callers share one flush (group commit). [`PartitionLog::flush`] (the
//! background flusher's call) also syncs the indexes and writes the recovery
//! checkpoint. A failed flush is never retried into a success: the log turns
//! read-only ([`StorageError::Poisoned`]) and pending durable waits fail.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::checkpoint::{Checkpoint, CHECKPOINT_FILE};
use super::config::LogConfig;
use super::counters;
use super::error::{Result, StorageError};
use super::frame::{encode_header, BatchMeta, HEADER_LEN};
use super::fs;
use super::index::{encode_offset_entry, encode_time_entry};
use super::map_cache::MapCache;
use super::producers::{ProducerTable, SequenceCheck, DEFAULT_MAX_PRODUCERS};
use super::recovery::{recover_active, Recovered, RecoveryReport};
use super::scan::Damage;
use super::segment::{parse_segment_name, ActiveSegment, IndexCursor, SealedSegment};

/// The segments of a log at one moment: an immutable snapshot.
#[derive(Debug)]
pub(crate) struct Segments {
    /// Closed segments, oldest first.
    pub sealed: Vec<Arc<SealedSegment>>,
    /// The segment being appended to.
    pub active: Arc<ActiveSegment>,
}

/// State only the writer touches.
#[derive(Debug)]
struct Writer {
    config: LogConfig,
    active: Arc<ActiveSegment>,
    position: u64,
    next_offset: u64,
    cursor: IndexCursor,
    /// CRC and length of the last frame written.
    last_frame: (u32, u32),
    /// Timestamp of the active segment's first batch (for `segment_ms`).
    first_batch_ms: Option<i64>,
    /// When the oldest unflushed append happened.
    dirty_since: Option<Instant>,
    /// Bytes appended since the last flush started.
    unflushed_bytes: u64,
    /// Sealed segments whose files still await their trim.
    pending_trims: Vec<Arc<SealedSegment>>,
    /// Segments sealed by a roll whose files are not synced yet: the next
    /// flush syncs them before the active segment and writes the checkpoint
    /// naming the new segment, so a producer never waits for a whole
    /// segment's sync at a roll (see [`PartitionLog::roll`]).
    pending_seals: Vec<(Arc<ActiveSegment>, Arc<SealedSegment>)>,
    /// Position in the active segment up to which write-back was started
    /// or a flush synced (see `LogConfig::writeback_bytes`).
    writeback_from: u64,
    /// Idempotent producers' recent batches (saved with each checkpoint).
    producers: ProducerTable,
}

#[derive(Debug, Default)]
struct FlushState {
    /// Every offset below this is durable.
    durable_offset: u64,
    /// A flush is in progress (its leader will notify).
    flushing: bool,
}

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset given to the first record.
    pub base_offset: u64,
    /// Offset after the last record (the new high watermark).
    pub next_offset: u64,
    /// Whether the flush policy says a background flush is due now.
    pub flush_due: bool,
    /// The batch was a retry of an idempotent producer's batch already in
    /// the log: nothing was appended and the offsets are the original ones.
    pub duplicate: bool,
    /// The batch's largest timestamp (the original batch's append time for a
    /// duplicate).
    pub batch_time_ms: i64,
}

/// Sizes and health of a log, for `DescribeTopic`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogStats {
    /// First offset still stored.
    pub log_start_offset: u64,
    /// Offset the next record gets.
    pub high_watermark: u64,
    /// Bytes of log data.
    pub size_bytes: u64,
    /// Number of segments, the active one included.
    pub segment_count: u32,
    /// Bytes cut from a torn tail when the log was opened.
    pub truncated_bytes: u64,
    /// Damaged offset ranges found when the log was opened.
    pub damaged_ranges: Vec<(u64, u64)>,
}

/// What one retention pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionOutcome {
    /// Segments deleted.
    pub segments_deleted: u32,
    /// Bytes of log deleted.
    pub bytes_deleted: u64,
}

/// One partition's log. Cheap to share: wrap it in an `Arc`.
#[derive(Debug)]
pub struct PartitionLog {
    dir: PathBuf,
    cache: Arc<MapCache>,
    writer: Mutex<Writer>,
    pub(crate) segments: RwLock<Arc<Segments>>,
    high_watermark: AtomicU64,
    log_start: AtomicU64,
    flush_state: Mutex<FlushState>,
    flushed: Condvar,
    poisoned: AtomicBool,
    /// Serialises every `fsync` of this log's files (see
    /// [`PartitionLog::sync_files`]).
    sync_lock: Mutex<()>,
    /// The last full flush synced the data but could not write its recovery
    /// checkpoint (a full disk, say): the data is durable, but the checkpoint
    /// on disk is older than it, so a shutdown must not be called clean.
    checkpoint_failed: AtomicBool,
    report: RecoveryReport,
    /// Damaged ranges the scrubber found since the log was opened.
    pub(crate) scrub_damage: Mutex<Vec<(u64, u64)>>,
    /// `(next_offset, segment_base)` of the newest checkpoint written, so a
    /// slow flush never overwrites a newer checkpoint written by a roll.
    checkpoint_written: Mutex<(u64, u64)>,
    /// A valid recovery checkpoint exists for this log. Until one does, a roll
    /// syncs the old segment itself: without a checkpoint, recovery could not
    /// tell a closed segment whose sync a power cut interrupted.
    checkpoint_on_disk: AtomicBool,
}

/// Milliseconds since the Unix epoch by the wall clock.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl PartitionLog {
    /// Opens the log in `dir` (creating an empty one if the directory has no
    /// segment), recovering the active segment's tail.
    ///
    /// # Errors
    /// I/O errors with their path; a full disk when a new segment cannot be reserved.
    pub fn open(dir: &Path, config: LogConfig, cache: Arc<MapCache>) -> Result<PartitionLog> {
        Self::open_with(dir, config, cache, false)
    }

    /// Like [`PartitionLog::open`], told whether the previous run shut down
    /// cleanly (flushed and checkpointed every partition): then the active
    /// segment's pre-allocated tail is not scanned, which keeps restarts of
    /// brokers with many partitions cheap.
    pub fn open_with(
        dir: &Path,
        config: LogConfig,
        cache: Arc<MapCache>,
        clean: bool,
    ) -> Result<PartitionLog> {
        std::fs::create_dir_all(dir).map_err(|e| StorageError::io(dir, e))?;
        let saved = Checkpoint::read(dir, DEFAULT_MAX_PRODUCERS);
        let mut bases = list_segments(dir)?;
        let cut =
            super::recovery::settle_unsynced_segments(dir, &bases, saved.as_ref().map(|(c, _)| c))?;
        if cut.is_some() {
            bases = list_segments(dir)?;
        }
        let Some((&active_base, sealed_bases)) = bases.split_last() else {
            let active = ActiveSegment::create(dir, 0, &config)?;
            return Ok(Self::assemble(
                dir,
                config,
                cache,
                Vec::new(),
                active,
                None,
                saved.is_some(),
            ));
        };
        let mut sealed = Vec::with_capacity(sealed_bases.len());
        for (i, &base) in sealed_bases.iter().enumerate() {
            let end = bases[i + 1];
            let path = super::segment::segment_path(dir, base, "log");
            let size = std::fs::metadata(&path)
                .map_err(|e| StorageError::io(&path, e))?
                .len();
            sealed.push(Arc::new(SealedSegment::on_disk(
                dir, base, end, size, &config,
            )));
        }
        let has_checkpoint = saved.is_some();
        let (active, recovered) =
            recover_active(dir, active_base, sealed_bases, saved, &config, clean)?;
        let Recovered {
            start,
            mut report,
            producers,
        } = recovered;
        if let Some(bytes) = cut.filter(|&b| b > 0) {
            report.truncated_bytes += bytes;
            report
                .truncation_reason
                .get_or_insert("a segment sealed after the last checkpoint was incomplete");
        }
        if report.truncated_bytes > 0 {
            counters::add_truncated(report.truncated_bytes);
            tracing::warn!(
                dir = %dir.display(),
                bytes = report.truncated_bytes,
                at_offset = start.next_offset,
                reason = report.truncation_reason.unwrap_or(""),
                "recovery cut a torn tail off the active segment"
            );
        }
        for d in &report.damaged {
            counters::add_damage();
            tracing::error!(
                dir = %dir.display(),
                first_offset = d.first_offset,
                end_offset = d.end_offset,
                position = d.position,
                bytes = d.end_position - d.position,
                reason = d.reason,
                "recovery found interior damage; those offsets will be answered as corrupt"
            );
        }
        let log = Self::assemble(
            dir,
            config,
            cache,
            sealed,
            active,
            Some((start, report, producers)),
            has_checkpoint,
        );
        Ok(log)
    }

    fn assemble(
        dir: &Path,
        config: LogConfig,
        cache: Arc<MapCache>,
        sealed: Vec<Arc<SealedSegment>>,
        active: ActiveSegment,
        recovered: Option<(super::recovery::WriterStart, RecoveryReport, ProducerTable)>,
        has_checkpoint: bool,
    ) -> PartitionLog {
        let active = Arc::new(active);
        let log_start = sealed.first().map_or(active.base_offset, |s| s.base_offset);
        let (start, report, producers) = match recovered {
            Some((s, r, p)) => (Some(s), r, p),
            None => (
                None,
                RecoveryReport::default(),
                ProducerTable::new(DEFAULT_MAX_PRODUCERS),
            ),
        };
        let writer = Writer {
            config,
            active: active.clone(),
            position: start.map_or(0, |s| s.position),
            next_offset: start.map_or(active.base_offset, |s| s.next_offset),
            cursor: start.map_or_else(IndexCursor::new, |s| s.cursor),
            last_frame: start.map_or((0, 0), |s| s.last_frame),
            first_batch_ms: start.and_then(|s| s.first_batch_ms),
            dirty_since: None,
            unflushed_bytes: 0,
            pending_trims: Vec::new(),
            pending_seals: Vec::new(),
            writeback_from: start.map_or(0, |s| s.position),
            producers,
        };
        let next = writer.next_offset;
        PartitionLog {
            dir: dir.to_path_buf(),
            cache,
            writer: Mutex::new(writer),
            segments: RwLock::new(Arc::new(Segments { sealed, active })),
            high_watermark: AtomicU64::new(next),
            log_start: AtomicU64::new(log_start),
            flush_state: Mutex::new(FlushState {
                // Recovered data is treated as durable from here on: it is
                // what the disk holds (a power cut could still lose the
                // recovered-but-unflushed tail, but no ack was ever waiting).
                durable_offset: next,
                flushing: false,
            }),
            flushed: Condvar::new(),
            poisoned: AtomicBool::new(false),
            sync_lock: Mutex::new(()),
            checkpoint_failed: AtomicBool::new(false),
            report,
            scrub_damage: Mutex::new(Vec::new()),
            checkpoint_written: Mutex::new((0, 0)),
            checkpoint_on_disk: AtomicBool::new(has_checkpoint),
        }
    }

    /// The partition directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What recovery found when this log was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// Offset the next appended record will get.
    pub fn high_watermark(&self) -> u64 {
        self.high_watermark.load(Ordering::Acquire)
    }

    /// First offset still stored.
    pub fn log_start_offset(&self) -> u64 {
        self.log_start.load(Ordering::Acquire)
    }

    /// Whether a failed flush turned the log read-only.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    /// Bytes appended since the last full flush (the one that writes the
    /// recovery checkpoint) began: an upper bound on what a power loss could
    /// take now (durable produces flushed in between still count until the
    /// next full flush). Takes the writer lock briefly: for metrics, not for
    /// hot paths.
    pub fn unflushed_bytes(&self) -> u64 {
        self.lock_writer().unflushed_bytes
    }

    pub(crate) fn cache(&self) -> &MapCache {
        &self.cache
    }

    pub(crate) fn snapshot(&self) -> Arc<Segments> {
        self.segments
            .read()
            .expect("segment list lock poisoned")
            .clone()
    }

    fn lock_writer(&self) -> std::sync::MutexGuard<'_, Writer> {
        self.writer.lock().expect("writer lock poisoned")
    }

    fn poison(&self, why: &StorageError) {
        if !self.poisoned.swap(true, Ordering::AcqRel) {
            counters::add_flush_failure();
            tracing::error!(dir = %self.dir.display(), error = %why,
                "flush failed: the partition is read-only until the broker restarts and recovers it");
        }
        self.flushed.notify_all();
    }

    fn poisoned_error(&self) -> StorageError {
        StorageError::Poisoned {
            path: self.dir.clone(),
        }
    }

    /// Replaces the log's settings (segment size and age, flush policy,
    /// retention). The active segment keeps its mapped size until it rolls.
    pub fn set_config(&self, config: LogConfig) {
        self.lock_writer().config = config;
    }

    /// The current settings.
    pub fn config(&self) -> LogConfig {
        self.lock_writer().config.clone()
    }

    /// Appends one batch of `meta.record_count` records whose payload is the
    /// concatenation of `payload`, assigning it the next offsets.
    ///
    /// The batch is visible to readers when this returns and survives a
    /// process crash; call [`PartitionLog::wait_durable`] for power loss.
    ///
    /// # Errors
    /// A batch of an idempotent producer (`meta.producer_id != 0`) is
    /// checked against the producer's sequence first (see
    /// [`super::producers`]): a retry of a batch already in the log returns
    /// the original offsets with [`AppendInfo::duplicate`] set.
    ///
    /// # Errors
    /// [`StorageError::BatchTooLarge`], [`StorageError::InvalidBatch`],
    /// [`StorageError::DiskFull`] (nothing written; later appends may succeed),
    /// [`StorageError::Poisoned`], [`StorageError::Sequence`] (nothing written).
    pub fn append(&self, meta: &BatchMeta, payload: &[&[u8]]) -> Result<AppendInfo> {
        if meta.record_count == 0 {
            return Err(StorageError::InvalidBatch(
                "a batch must hold at least one record",
            ));
        }
        let frame_len = (HEADER_LEN + payload.iter().map(|p| p.len()).sum::<usize>()) as u64;
        let mut w = self.lock_writer();
        if self.is_poisoned() {
            return Err(self.poisoned_error());
        }
        if meta.producer_id != 0 {
            if let SequenceCheck::Duplicate(b) = w.producers.check(meta)? {
                return Ok(AppendInfo {
                    base_offset: b.base_offset,
                    next_offset: b.base_offset + u64::from(b.record_count),
                    flush_due: false,
                    duplicate: true,
                    batch_time_ms: b.append_time_ms,
                });
            }
        }
        let max = w.config.effective_segment_bytes();
        if frame_len > max {
            return Err(StorageError::BatchTooLarge {
                size: frame_len,
                max,
            });
        }
        if self.should_roll(&w, frame_len, meta) {
            self.roll(&mut w)?;
        }
        let base_offset = w.next_offset;
        let position = w.position;
        let end = position + frame_len;
        let active = w.active.clone();
        // Reserve everything first: a full disk must fail before any byte moves.
        active.log.reserve(end)?;
        let interval = w.config.effective_index_interval();
        let header_probe = super::frame::FrameHeader {
            base_offset,
            frame_len: frame_len as u32,
            crc: 0,
            meta: *meta,
        };
        let mut cursor = w.cursor;
        let entries = cursor.on_batch(active.base_offset, position, &header_probe, interval);
        if entries.is_some() {
            active
                .index
                .file()
                .reserve(active.index.valid_bytes() + 8)?;
            active
                .time_index
                .file()
                .reserve(active.time_index.valid_bytes() + 12)?;
        }
        let header = encode_header(meta, base_offset, payload);
        // An I/O error here leaves nothing published: the next append
        // overwrites the same unpublished range.
        active.log.write_vectored(position, &header, payload)?;
        if let Some((o, t)) = entries {
            active.index.push(&encode_offset_entry(o))?;
            active.time_index.push(&encode_time_entry(t))?;
        }
        let crc = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
        w.cursor = cursor;
        w.position = end;
        w.next_offset = base_offset + u64::from(meta.record_count);
        w.last_frame = (crc, frame_len as u32);
        w.first_batch_ms.get_or_insert(meta.max_timestamp_ms);
        w.dirty_since.get_or_insert_with(Instant::now);
        w.unflushed_bytes += frame_len;
        if meta.producer_id != 0 {
            w.producers.record(meta, base_offset, meta.max_timestamp_ms);
        }
        // Publish: bytes first, then the segment end, then the watermark.
        active.publish_end(end);
        self.high_watermark.store(w.next_offset, Ordering::Release);
        let flush_due = w.unflushed_bytes >= w.config.flush_bytes
            || !w.pending_seals.is_empty()
            || Self::writeback_due(&w);
        Ok(AppendInfo {
            base_offset,
            next_offset: w.next_offset,
            flush_due,
            duplicate: false,
            batch_time_ms: meta.max_timestamp_ms,
        })
    }

    fn should_roll(&self, w: &Writer, frame_len: u64, meta: &BatchMeta) -> bool {
        if w.position == 0 {
            return false;
        }
        let active = &w.active;
        let full = w.position + frame_len
            > active
                .log
                .capacity()
                .min(w.config.effective_segment_bytes());
        let relative_overflow =
            w.next_offset + u64::from(meta.record_count) - active.base_offset > u64::from(u32::MAX);
        let index_full = !active.index.has_room() || !active.time_index.has_room();
        let old = match (w.config.segment_ms, w.first_batch_ms) {
            (Some(limit), Some(first)) => {
                meta.max_timestamp_ms.saturating_sub(first) >= limit as i64
            }
            _ => false,
        };
        full || relative_overflow || index_full || old
    }

    /// Seals the active segment and starts a new one at the next offset.
    ///
    /// The old segment's files are not synced here, under the writer lock,
    /// where every producer of the partition would wait for up to a whole
    /// flush interval of data to reach the disk: the roll queues them
    /// (`pending_seals`) and asks for a flush, which syncs them before the
    /// new segment's data, so a durable acknowledgement still covers every
    /// byte before it. Until that flush writes the checkpoint naming the new
    /// segment, recovery checks the closed segments after the checkpoint and
    /// cuts the log at the first one a power cut left incomplete
    /// ([`super::recovery::settle_unsynced_segments`]). Without a checkpoint
    /// file yet (a new log), or with the last roll's segment still unsynced,
    /// the roll syncs the old segments itself.
    fn roll(&self, w: &mut Writer) -> Result<()> {
        let old = w.active.clone();
        // The last batch always gets a time entry, so a sealed segment's
        // largest timestamp is in its time index.
        if let Some(last) = w.cursor.last_batch {
            let covered = old
                .time_index
                .last_time_entry()
                .is_some_and(|e| e.relative_offset >= last.relative_offset);
            if !covered {
                old.time_index.push(&encode_time_entry(last))?;
            }
        }
        // One segment's sync at a time is left to the flush: a roll that
        // finds the last one still unsynced (rolls faster than flushes)
        // syncs both itself, so a partition never holds the maps of more
        // than one sealed, untrimmed segment.
        let defer_sync =
            self.checkpoint_on_disk.load(Ordering::Acquire) && w.pending_seals.is_empty();
        if !defer_sync {
            self.sync_files(|| {
                sync_seals(&w.pending_seals)?;
                old.sync_all_files()
            })?;
            w.pending_seals.clear();
        }
        let new = Arc::new(ActiveSegment::create(&self.dir, w.next_offset, &w.config)?);
        let sealed = Arc::new(SealedSegment::from_active(
            &self.dir,
            &old,
            w.next_offset,
            w.cursor.running_max_ms,
            &w.config,
        ));
        {
            let mut segs = self.segments.write().expect("segment list lock poisoned");
            let mut list = segs.sealed.clone();
            list.push(sealed.clone());
            *segs = Arc::new(Segments {
                sealed: list,
                active: new.clone(),
            });
        }
        w.active = new;
        w.position = 0;
        w.writeback_from = 0;
        w.cursor = IndexCursor::new();
        w.first_batch_ms = None;
        w.last_frame = (0, 0);
        if defer_sync {
            w.pending_seals.push((old, sealed.clone()));
            w.pending_trims.push(sealed);
            return Ok(());
        }
        {
            // The old segment is synced: checkpoint the start of the new one,
            // so the producer state of the batches since the last flush
            // survives a crash, and recovery has no closed segment to read
            // (it replays only the active segment; see `recovery`). A tiny
            // file, once per segment, beside the three syncs above.
            let c = Checkpoint {
                segment_base: w.next_offset,
                position: 0,
                next_offset: w.next_offset,
                last_frame_crc: 0,
                last_frame_len: 0,
                index_entries: 0,
            };
            if let Err(e) = self.write_checkpoint(&c, &c.encode_with(&w.producers)) {
                tracing::warn!(dir = %self.dir.display(), error = %e, "could not checkpoint at a segment roll");
            }
        }
        drop(old);
        w.pending_trims.push(sealed);
        Self::retry_trims(w);
        Ok(())
    }

    fn retry_trims(w: &mut Writer) {
        w.pending_trims.retain(|s| match s.try_trim() {
            Ok(done) => !done,
            Err(e) => {
                tracing::warn!(error = %e, "could not trim a sealed segment; will retry");
                true
            }
        });
    }

    /// Waits until every offset below `offset_end` is on disk (`fdatasync`
    /// returned Ok). Concurrent callers share one flush.
    ///
    /// # Errors
    /// [`StorageError::Poisoned`] if this or an earlier flush failed.
    pub fn wait_durable(&self, offset_end: u64) -> Result<()> {
        self.flush_until(offset_end, false)
    }

    /// Flushes everything appended so far, including the indexes, and writes
    /// the recovery checkpoint.
    pub fn flush(&self) -> Result<()> {
        let target = self.high_watermark();
        self.flush_until(target, true)
    }

    /// Whether `writeback_bytes` were appended since write-back was last
    /// started (or a flush synced the active segment).
    fn writeback_due(w: &Writer) -> bool {
        w.config.writeback_bytes > 0
            && w.position.saturating_sub(w.writeback_from) >= w.config.writeback_bytes
    }

    /// Flushes if the policy says so (`flush_interval_ms` since the oldest
    /// unflushed append, or `flush_bytes` unflushed); otherwise starts
    /// write-back of the bytes appended since the last time, once there are
    /// `writeback_bytes` of them. Returns whether it flushed.
    ///
    /// # Errors
    /// A failed flush, or write-back that could not be started: both turn
    /// the log read-only ([`StorageError::Poisoned`] afterwards), since the
    /// pages' fate is then unknown.
    pub fn flush_if_due(&self) -> Result<bool> {
        let mut writeback = None;
        let due = {
            let mut w = self.lock_writer();
            let by_time = w
                .dirty_since
                .is_some_and(|t| t.elapsed().as_millis() as u64 >= w.config.flush_interval_ms);
            let due =
                by_time || w.unflushed_bytes >= w.config.flush_bytes || !w.pending_seals.is_empty();
            if !due && Self::writeback_due(&w) {
                writeback = Some((w.active.clone(), w.writeback_from, w.position));
                w.writeback_from = w.position;
            }
            due
        };
        if due {
            self.flush()?;
        } else if let Some((active, from, to)) = writeback {
            if self.is_poisoned() {
                return Err(self.poisoned_error());
            }
            active
                .log
                .start_writeback(from, to - from)
                .inspect_err(|e| self.poison(e))?;
        }
        Ok(due)
    }

    fn flush_until(&self, target: u64, full: bool) -> Result<()> {
        let mut st = self.flush_state.lock().expect("flush lock poisoned");
        loop {
            if self.is_poisoned() {
                return Err(self.poisoned_error());
            }
            if st.durable_offset >= target && !full {
                return Ok(());
            }
            if !st.flushing {
                break;
            }
            st = self.flushed.wait(st).expect("flush lock poisoned");
        }
        st.flushing = true;
        drop(st);
        let result = self.flush_as_leader(full);
        let mut st = self.flush_state.lock().expect("flush lock poisoned");
        st.flushing = false;
        match result {
            Ok(flushed_to) => {
                st.durable_offset = st.durable_offset.max(flushed_to);
                drop(st);
                self.flushed.notify_all();
                if flushed_to >= target {
                    Ok(())
                } else {
                    // Our append was not covered (cannot happen: target was
                    // published before we started); flush again.
                    self.flush_until(target, false)
                }
            }
            Err(e) => {
                // Poisoned before anyone else may lead a flush: a second
                // fsync would report success for the pages that failed.
                self.poison(&e);
                drop(st);
                self.flushed.notify_all();
                Err(e)
            }
        }
    }

    /// Runs one `fsync` of this log's files. Syncs never overlap, and a
    /// failure poisons the log before the next one may start: Linux reports
    /// a write-back error to one `fsync` per open file, so a sync running
    /// beside the failing one (or after it) would return Ok for pages that
    /// never reached the disk. A sync after a failure fails too.
    fn sync_files(&self, sync: impl FnOnce() -> Result<()>) -> Result<()> {
        let _one_at_a_time = self.sync_lock.lock().expect("sync lock poisoned");
        if self.is_poisoned() {
            return Err(self.poisoned_error());
        }
        sync().inspect_err(|e| self.poison(e))
    }

    /// One flush. Everything appended before it starts is covered, the
    /// segments sealed since the last flush first.
    fn flush_as_leader(&self, full: bool) -> Result<u64> {
        let started = Instant::now();
        let (active, seals, trims, checkpoint) = {
            let mut w = self.lock_writer();
            // Segments sealed since the last flush are synced here, and the
            // checkpoint then names the new segment: a full flush, once per
            // roll, even when a durable append asked for it.
            let full = full || !w.pending_seals.is_empty();
            if full {
                // Only a full flush advances the checkpoint, so only it
                // resets the policy's clock: durable appends alone must not
                // let the recovery scan grow without bound.
                w.dirty_since = None;
                w.unflushed_bytes = 0;
            }
            let c = Checkpoint {
                segment_base: w.active.base_offset,
                position: w.position,
                next_offset: w.next_offset,
                last_frame_crc: w.last_frame.0,
                last_frame_len: w.last_frame.1,
                index_entries: w.active.index.len(),
            };
            // This flush writes back everything up to here.
            w.writeback_from = w.position;
            // Trimmed after the sync, outside the writer lock (a trim syncs
            // the file's new length).
            let trims = if full {
                std::mem::take(&mut w.pending_trims)
            } else {
                Vec::new()
            };
            // Encoded here, so the producer table matches the checkpoint
            // exactly (one buffer, no copy of the table).
            let encoded = full.then(|| c.encode_with(&w.producers));
            (
                w.active.clone(),
                w.pending_seals.clone(),
                trims,
                (c, encoded),
            )
        };
        let (checkpoint, encoded) = checkpoint;
        let synced = if let Some(encoded) = encoded {
            self.sync_files(|| {
                sync_seals(&seals)?;
                active.sync_all_files()
            })
            .map(|()| {
                if !seals.is_empty() {
                    self.lock_writer()
                        .pending_seals
                        .retain(|(a, _)| !seals.iter().any(|(b, _)| Arc::ptr_eq(a, b)));
                }
                drop(seals);
                // The data is durable whether or not the checkpoint is
                // written; a failure (a full disk) costs recovery time after
                // a crash, not data, so it must not turn the log read-only.
                match self.write_checkpoint(&checkpoint, &encoded) {
                    Ok(()) => self.checkpoint_failed.store(false, Ordering::Release),
                    Err(e) => {
                        if !self.checkpoint_failed.swap(true, Ordering::AcqRel) {
                            tracing::warn!(dir = %self.dir.display(), error = %e,
                                "flushed, but could not write the recovery checkpoint; will retry at the next flush");
                        }
                    }
                }
            })
        } else {
            self.sync_files(|| active.log.sync_data())
        };
        let mut left = trims;
        if synced.is_ok() {
            left.retain(|s| match s.try_trim() {
                Ok(done) => !done,
                Err(e) => {
                    tracing::warn!(error = %e, "could not trim a sealed segment; will retry");
                    true
                }
            });
        }
        if !left.is_empty() {
            self.lock_writer().pending_trims.extend(left);
        }
        synced?;
        counters::record_flush(started.elapsed());
        Ok(checkpoint.next_offset)
    }

    /// Writes the recovery checkpoint `c` (`encoded`: it with the producer
    /// table as of the same point), unless a newer one was written meanwhile.
    fn write_checkpoint(&self, c: &Checkpoint, encoded: &[u8]) -> Result<()> {
        let mut last = self
            .checkpoint_written
            .lock()
            .expect("checkpoint lock poisoned");
        if (c.next_offset, c.segment_base) < *last {
            return Ok(());
        }
        let path = self.dir.join(CHECKPOINT_FILE);
        fs::write_atomic(&path, encoded).map_err(|e| StorageError::io(&path, e))?;
        *last = (c.next_offset, c.segment_base);
        self.checkpoint_on_disk.store(true, Ordering::Release);
        Ok(())
    }

    /// Deletes closed segments past the retention limits (`retention_ms` by
    /// their newest timestamp against `now_ms`, `retention_bytes` by total
    /// size) and advances the log start offset. The active segment is never
    /// deleted.
    pub fn apply_retention(&self, now_ms: i64) -> Result<RetentionOutcome> {
        let mut w = self.lock_writer();
        let snap = self.snapshot();
        let total: u64 = snap.sealed.iter().map(|s| s.size_bytes()).sum::<u64>() + w.position;
        let mut remaining = total;
        let mut delete = 0usize;
        for seg in &snap.sealed {
            let by_bytes = w
                .config
                .retention_bytes
                .is_some_and(|limit| remaining - seg.size_bytes() >= limit);
            let by_time = match w.config.retention_ms {
                Some(limit) => {
                    seg.max_timestamp_ms(&self.cache)? < now_ms.saturating_sub(limit as i64)
                }
                None => false,
            };
            if !(by_bytes || by_time) {
                break;
            }
            remaining -= seg.size_bytes();
            delete += 1;
        }
        Self::retry_trims(&mut w);
        if delete == 0 {
            return Ok(RetentionOutcome::default());
        }
        let doomed: Vec<_> = snap.sealed[..delete].to_vec();
        let new_start = snap
            .sealed
            .get(delete)
            .map_or(snap.active.base_offset, |s| s.base_offset);
        // The start moves first: a reader that passed the old bound and then
        // sees the new list is caught by the check in `read`.
        self.log_start.store(new_start, Ordering::Release);
        {
            let mut segs = self.segments.write().expect("segment list lock poisoned");
            *segs = Arc::new(Segments {
                sealed: snap.sealed[delete..].to_vec(),
                active: snap.active.clone(),
            });
        }
        w.pending_trims
            .retain(|p| !doomed.iter().any(|d| Arc::ptr_eq(p, d)));
        w.pending_seals
            .retain(|(_, p)| !doomed.iter().any(|d| Arc::ptr_eq(p, d)));
        drop(w);
        let mut outcome = RetentionOutcome::default();
        for seg in &doomed {
            seg.delete_files()?;
            outcome.segments_deleted += 1;
            outcome.bytes_deleted += seg.size_bytes();
        }
        fs::sync_dir(&self.dir).map_err(|e| StorageError::io(&self.dir, e))?;
        tracing::info!(dir = %self.dir.display(), segments = outcome.segments_deleted,
            bytes = outcome.bytes_deleted, log_start = new_start, "retention deleted segments");
        Ok(outcome)
    }

    /// Sizes and health for `DescribeTopic`.
    pub fn stats(&self) -> LogStats {
        let snap = self.snapshot();
        let sealed: u64 = snap.sealed.iter().map(|s| s.size_bytes()).sum();
        LogStats {
            log_start_offset: self.log_start_offset(),
            high_watermark: self.high_watermark(),
            size_bytes: sealed + snap.active.end_position(),
            segment_count: snap.sealed.len() as u32 + 1,
            truncated_bytes: self.report.truncated_bytes,
            damaged_ranges: self
                .report
                .damaged
                .iter()
                .map(|d: &Damage| (d.first_offset, d.end_offset))
                .chain(
                    self.scrub_damage
                        .lock()
                        .map(|v| v.clone())
                        .unwrap_or_default(),
                )
                .collect(),
        }
    }

    /// Flushes everything and trims what can be trimmed. The log stays usable.
    pub fn close(&self) -> Result<()> {
        if self.is_poisoned() {
            return Err(self.poisoned_error());
        }
        // Nothing appended since the last checkpoint: nothing to flush (a
        // broker with many idle partitions stops in milliseconds).
        let dirty = {
            let w = self.lock_writer();
            w.dirty_since.is_some() || w.unflushed_bytes > 0 || !w.pending_seals.is_empty()
        };
        if dirty || self.checkpoint_failed.load(Ordering::Acquire) {
            self.flush()?;
        }
        if self.checkpoint_failed.load(Ordering::Acquire) {
            let path = self.dir.join(CHECKPOINT_FILE);
            return Err(StorageError::io(
                &path,
                std::io::Error::other(
                    "the data is flushed, but the recovery checkpoint could not be written",
                ),
            ));
        }
        Self::retry_trims(&mut self.lock_writer());
        Ok(())
    }
}

/// Syncs the three files of each segment sealed by a roll. A segment
/// retention deleted meanwhile needs no sync (its index files are gone, and
/// its data with them).
fn sync_seals(seals: &[(Arc<ActiveSegment>, Arc<SealedSegment>)]) -> Result<()> {
    for (segment, sealed) in seals {
        if sealed.is_deleted() {
            continue;
        }
        match segment.sync_all_files() {
            Err(_) if sealed.is_deleted() => {}
            other => other?,
        }
    }
    Ok(())
}

/// Base offsets of the segments in `dir`, sorted; removes leftovers of
/// interrupted operations (temp files, indexes without their log).
fn list_segments(dir: &Path) -> Result<Vec<u64>> {
    let mut logs = Vec::new();
    let mut indexes = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| StorageError::io(dir, e))? {
        let entry = entry.map_err(|e| StorageError::io(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(base) = parse_segment_name(name, "log") {
            logs.push(base);
        } else if let Some(base) =
            parse_segment_name(name, "index").or_else(|| parse_segment_name(name, "timeindex"))
        {
            indexes.push((base, entry.path()));
        } else if name.ends_with(".tmp") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    logs.sort_unstable();
    for (base, path) in indexes {
        if logs.binary_search(&base).is_err() {
            tracing::warn!(path = %path.display(), "removing an index without its log");
            std::fs::remove_file(&path).map_err(|e| StorageError::io(&path, e))?;
        }
    }
    Ok(logs)
}
