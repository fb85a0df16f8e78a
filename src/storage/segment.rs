//! Segments: the files of one stretch of a partition's log.
//!
//! A segment is three files named by its base offset, zero-padded to 20
//! digits so a directory listing is already in log order:
//! `00000000000000000000.log`, `.index` and `.timeindex`.
//!
//! Two distinct states, two types:
//! - [`ActiveSegment`]: the one segment being appended to, mapped writable,
//!   its end published through an atomic.
//! - [`SealedSegment`]: every older segment, immutable. Its files are opened
//!   and mapped lazily on first read and can be unmapped again by the
//!   [`MapCache`](super::map_cache::MapCache), so thousands of idle partitions
//!   cost no maps. A segment sealed while a reader still held its writable
//!   maps is trimmed to its real length later, once nobody holds them.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::config::LogConfig;
use super::error::{Result, StorageError};
use super::frame::FrameHeader;
use super::fs;
use super::index::{
    encode_offset_entry, encode_time_entry, valid_offset_entries, valid_time_entries, IndexFile,
    OffsetEntry, TimeEntry, OFFSET_ENTRY_LEN, TIME_ENTRY_LEN,
};
use super::map_cache::MapCache;
use super::mapped_file::MappedFile;
use super::scan::{scan, ScanItem};

/// Growth step of index files, in bytes.
const INDEX_CHUNK_BYTES: u64 = 64 * 1024;

/// The 20-digit file stem of the segment starting at `base_offset`.
pub fn stem(base_offset: u64) -> String {
    format!("{base_offset:020}")
}

/// Path of a segment file with the given extension (`log`, `index`, `timeindex`).
pub fn segment_path(dir: &Path, base_offset: u64, ext: &str) -> PathBuf {
    dir.join(format!("{}.{ext}", stem(base_offset)))
}

/// Parses `<20 digits>.<ext>` into the base offset.
pub fn parse_segment_name(name: &str, ext: &str) -> Option<u64> {
    let stem = name.strip_suffix(ext)?.strip_suffix('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// Decides which batches get sparse index entries; shared by the append
/// path, recovery and index rebuilds so all three produce the same index.
#[derive(Debug, Clone, Copy)]
pub struct IndexCursor {
    /// Position of the last batch that got an entry (0: the implied first one).
    pub last_indexed_position: u64,
    /// Running maximum of batch timestamps in this segment.
    pub running_max_ms: i64,
    /// Relative offset and running max of the last batch seen, if any.
    pub last_batch: Option<TimeEntry>,
}

impl IndexCursor {
    /// A cursor for an empty segment.
    pub fn new() -> IndexCursor {
        IndexCursor {
            last_indexed_position: 0,
            running_max_ms: i64::MIN,
            last_batch: None,
        }
    }

    /// Accounts for the batch `header` at `position` of the segment based at
    /// `base`; returns the index entries to write for it, if it gets any.
    pub fn on_batch(
        &mut self,
        base: u64,
        position: u64,
        header: &FrameHeader,
        interval: u64,
    ) -> Option<(OffsetEntry, TimeEntry)> {
        self.running_max_ms = self.running_max_ms.max(header.meta.max_timestamp_ms);
        let relative_offset = (header.base_offset - base) as u32;
        let time = TimeEntry {
            timestamp_ms: self.running_max_ms,
            relative_offset,
        };
        self.last_batch = Some(time);
        if position == 0 || position < self.last_indexed_position + interval {
            return None;
        }
        self.last_indexed_position = position;
        Some((
            OffsetEntry {
                relative_offset,
                position: position as u32,
            },
            time,
        ))
    }
}

impl Default for IndexCursor {
    fn default() -> Self {
        Self::new()
    }
}

/// The segment being appended to.
#[derive(Debug)]
pub struct ActiveSegment {
    /// Offset of the first record in this segment.
    pub base_offset: u64,
    /// The `.log` file, mapped writable.
    pub log: Arc<MappedFile>,
    /// The `.index`, mapped writable.
    pub index: Arc<IndexFile>,
    /// The `.timeindex`, mapped writable.
    pub time_index: Arc<IndexFile>,
    /// End of the published frames: readers never look past it.
    end_position: AtomicU64,
}

impl ActiveSegment {
    /// Creates the three files of a new segment at `base_offset` and makes
    /// their directory entries durable.
    pub fn create(dir: &Path, base_offset: u64, config: &LogConfig) -> Result<ActiveSegment> {
        let log = MappedFile::create(
            &segment_path(dir, base_offset, "log"),
            config.effective_segment_bytes(),
            config.preallocate_chunk_bytes,
        )?;
        // Disk space is reserved by the first append, so idle partitions
        // cost no disk; indexes keep no descriptor open (derived data).
        let mut index = MappedFile::create(
            &segment_path(dir, base_offset, "index"),
            config.max_index_entries() * OFFSET_ENTRY_LEN as u64,
            INDEX_CHUNK_BYTES,
        )?;
        let mut time_index = MappedFile::create(
            &segment_path(dir, base_offset, "timeindex"),
            config.max_index_entries() * TIME_ENTRY_LEN as u64,
            INDEX_CHUNK_BYTES,
        )?;
        index.close_fd();
        time_index.close_fd();
        fs::sync_dir(dir).map_err(|e| StorageError::io(dir, e))?;
        Ok(ActiveSegment::from_parts(
            base_offset,
            log,
            IndexFile::new(index, OFFSET_ENTRY_LEN, 0),
            IndexFile::new(time_index, TIME_ENTRY_LEN, 0),
            0,
        ))
    }

    /// Assembles an active segment from opened files (used by recovery).
    pub fn from_parts(
        base_offset: u64,
        log: MappedFile,
        index: IndexFile,
        time_index: IndexFile,
        end_position: u64,
    ) -> ActiveSegment {
        ActiveSegment {
            base_offset,
            log: Arc::new(log),
            index: Arc::new(index),
            time_index: Arc::new(time_index),
            end_position: AtomicU64::new(end_position),
        }
    }

    /// End of the published frames (Acquire: everything before it is written).
    pub fn end_position(&self) -> u64 {
        self.end_position.load(Ordering::Acquire)
    }

    /// Publishes frames up to `position` (Release, after the bytes are in place).
    pub fn publish_end(&self, position: u64) {
        self.end_position.store(position, Ordering::Release);
    }

    /// Flushes all three files.
    pub fn sync_all_files(&self) -> Result<()> {
        self.log.sync_data()?;
        self.index.file().sync_data()?;
        self.time_index.file().sync_data()
    }
}

/// The open (mapped) files of a sealed segment.
#[derive(Debug)]
pub struct SealedMaps {
    /// The `.log`.
    pub log: Arc<MappedFile>,
    /// The `.index`.
    pub index: Arc<IndexFile>,
    /// The `.timeindex`.
    pub time_index: Arc<IndexFile>,
    /// Bytes of frames in the `.log` (the file may be longer if untrimmed).
    pub data_len: u64,
    /// Largest batch timestamp in the segment.
    pub max_timestamp_ms: i64,
}

/// A closed segment: immutable, opened lazily.
#[derive(Debug)]
pub struct SealedSegment {
    /// Offset of its first record.
    pub base_offset: u64,
    /// Offset after its last record (the next segment's base offset).
    pub end_offset: u64,
    dir: PathBuf,
    interval: u64,
    size_bytes: AtomicU64,
    slot: Mutex<Option<Arc<SealedMaps>>>,
    /// The files still have their pre-allocated tail (sealed while maps were shared).
    needs_trim: AtomicBool,
    /// Largest timestamp, once known (`i64::MIN` = not yet known).
    max_timestamp_ms: AtomicI64,
    /// Monotonic tick of the last read, for the map cache's LRU choice.
    pub(crate) last_used: AtomicU64,
    deleted: AtomicBool,
}

impl SealedSegment {
    /// A sealed segment found on disk at start-up; nothing is opened.
    pub fn on_disk(
        dir: &Path,
        base_offset: u64,
        end_offset: u64,
        size_bytes: u64,
        config: &LogConfig,
    ) -> SealedSegment {
        SealedSegment {
            base_offset,
            end_offset,
            dir: dir.to_path_buf(),
            interval: config.effective_index_interval(),
            size_bytes: AtomicU64::new(size_bytes),
            slot: Mutex::new(None),
            needs_trim: AtomicBool::new(false),
            max_timestamp_ms: AtomicI64::new(i64::MIN),
            last_used: AtomicU64::new(0),
            deleted: AtomicBool::new(false),
        }
    }

    /// Seals the active segment in place: its writable maps stay in use until
    /// they can be trimmed ([`SealedSegment::try_trim`]).
    pub fn from_active(
        dir: &Path,
        active: &ActiveSegment,
        end_offset: u64,
        max_timestamp_ms: i64,
        config: &LogConfig,
    ) -> SealedSegment {
        let data_len = active.end_position();
        let seg = SealedSegment::on_disk(dir, active.base_offset, end_offset, data_len, config);
        seg.max_timestamp_ms
            .store(max_timestamp_ms, Ordering::Relaxed);
        seg.needs_trim.store(true, Ordering::Relaxed);
        *seg.slot.lock().expect("fresh mutex") = Some(Arc::new(SealedMaps {
            log: active.log.clone(),
            index: active.index.clone(),
            time_index: active.time_index.clone(),
            data_len,
            max_timestamp_ms,
        }));
        seg
    }

    /// Bytes of log data in this segment.
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes.load(Ordering::Relaxed)
    }

    /// Whether its files are currently mapped.
    pub fn is_open(&self) -> bool {
        self.slot.lock().map(|s| s.is_some()).unwrap_or(false)
    }

    /// Whether retention deleted the segment's files.
    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Relaxed)
    }

    /// Whether the files still await trimming.
    pub fn needs_trim(&self) -> bool {
        self.needs_trim.load(Ordering::Relaxed)
    }

    /// The mapped files, opening (and validating) them on first use.
    /// Returns whether this call opened them (so the caller registers it in the cache).
    pub fn maps(&self) -> Result<(Arc<SealedMaps>, bool)> {
        let mut slot = self.slot.lock().expect("segment slot lock poisoned");
        if let Some(maps) = &*slot {
            return Ok((maps.clone(), false));
        }
        if self.deleted.load(Ordering::Relaxed) {
            return Err(StorageError::io(
                segment_path(&self.dir, self.base_offset, "log"),
                std::io::Error::from(std::io::ErrorKind::NotFound),
            ));
        }
        let maps = Arc::new(open_sealed(
            &self.dir,
            self.base_offset,
            self.end_offset,
            self.interval,
        )?);
        self.size_bytes.store(maps.data_len, Ordering::Relaxed);
        self.max_timestamp_ms
            .store(maps.max_timestamp_ms, Ordering::Relaxed);
        *slot = Some(maps.clone());
        Ok((maps, true))
    }

    /// Largest batch timestamp, opening the segment if it is not known yet.
    /// A segment opened here is registered in `cache` like one opened by a
    /// read, so time lookups and retention passes stay within the map bound.
    pub fn max_timestamp_ms(self: &Arc<Self>, cache: &MapCache) -> Result<i64> {
        let known = self.max_timestamp_ms.load(Ordering::Relaxed);
        if known != i64::MIN {
            return Ok(known);
        }
        let (maps, opened) = self.maps()?;
        if opened {
            cache.opened(self);
        }
        Ok(maps.max_timestamp_ms)
    }

    /// Unmaps the files (readers holding views keep theirs). Segments that
    /// await trimming are trimmed instead if possible; returns whether the
    /// maps were released.
    pub fn evict(&self) -> bool {
        if self.needs_trim() {
            return self.try_trim().unwrap_or(false);
        }
        if let Ok(mut slot) = self.slot.lock() {
            *slot = None;
        }
        true
    }

    /// Trims the pre-allocated tail off the files once no one else holds
    /// their maps. Returns whether it happened (or was not needed).
    pub fn try_trim(&self) -> Result<bool> {
        if !self.needs_trim() {
            return Ok(true);
        }
        let mut slot = self.slot.lock().expect("segment slot lock poisoned");
        let Some(maps) = slot.take() else {
            return Ok(true);
        };
        let maps = match Arc::try_unwrap(maps) {
            Ok(m) => m,
            Err(shared) => {
                *slot = Some(shared);
                return Ok(false);
            }
        };
        let SealedMaps {
            log,
            index,
            time_index,
            data_len,
            max_timestamp_ms,
        } = maps;
        match (
            Arc::try_unwrap(log),
            Arc::try_unwrap(index),
            Arc::try_unwrap(time_index),
        ) {
            (Ok(log), Ok(index), Ok(time_index)) => {
                let (index_len, time_len) = (index.valid_bytes(), time_index.valid_bytes());
                log.trim(data_len)?;
                index.into_file().trim(index_len)?;
                time_index.into_file().trim(time_len)?;
                self.needs_trim.store(false, Ordering::Relaxed);
                Ok(true)
            }
            (log, index, time_index) => {
                // Someone (an old snapshot of the active segment) still holds a
                // map: put everything back and try again later.
                fn back<T>(r: std::result::Result<T, Arc<T>>) -> Arc<T> {
                    match r {
                        Ok(v) => Arc::new(v),
                        Err(shared) => shared,
                    }
                }
                *slot = Some(Arc::new(SealedMaps {
                    log: back(log),
                    index: back(index),
                    time_index: back(time_index),
                    data_len,
                    max_timestamp_ms,
                }));
                Ok(false)
            }
        }
    }

    /// Marks the segment deleted, drops its maps and unlinks its files.
    /// Readers holding views keep reading: an unlinked file's map stays valid.
    pub fn delete_files(&self) -> Result<()> {
        self.deleted.store(true, Ordering::Relaxed);
        if let Ok(mut slot) = self.slot.lock() {
            *slot = None;
        }
        for ext in ["log", "index", "timeindex"] {
            let path = segment_path(&self.dir, self.base_offset, ext);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StorageError::io(path, e)),
            }
        }
        Ok(())
    }
}

/// Opens a sealed segment's files read-only, finding its real data length,
/// trimming a leftover pre-allocated tail and rebuilding indexes that are
/// missing or inconsistent with the log.
fn open_sealed(dir: &Path, base: u64, end_offset: u64, interval: u64) -> Result<SealedMaps> {
    let log_path = segment_path(dir, base, "log");
    let mut log = MappedFile::open_read_only(&log_path)?;
    let file_len = log.allocated();
    let index_path = segment_path(dir, base, "index");
    let time_path = segment_path(dir, base, "timeindex");
    let next_relative = end_offset.saturating_sub(base);

    let index = open_index_ro(&index_path)?;
    let index_entries = index
        .as_ref()
        .map(|f| valid_offset_entries(f.slice(0, f.allocated() as usize), file_len, next_relative))
        .unwrap_or(0);
    let (start_pos, start_off) = match (index_entries, &index) {
        (n, Some(f)) if n > 0 => {
            let e = super::index::decode_offset_entry(
                f.slice(u64::from(n - 1) * OFFSET_ENTRY_LEN as u64, OFFSET_ENTRY_LEN),
            );
            (u64::from(e.position), base + u64::from(e.relative_offset))
        }
        _ => (0, base),
    };
    // Walk the last stretch to find where the frames end.
    let mut tail_max_ts = i64::MIN;
    let mut last_base = None;
    let end = scan(
        log.slice(0, file_len as usize),
        start_pos,
        start_off,
        |item| {
            if let ScanItem::Frame { header, .. } = item {
                tail_max_ts = tail_max_ts.max(header.meta.max_timestamp_ms);
                last_base = Some(header.base_offset);
            }
        },
    );
    let mut data_len = if end.torn_bytes == 0 {
        end.position
    } else {
        file_len
    };
    if data_len < file_len {
        // Sealed, but its pre-allocated zero tail was never trimmed (a crash
        // came between the roll and the trim). No map of it is live here.
        drop(log);
        truncate_file(&log_path, data_len)?;
        log = MappedFile::open_read_only(&log_path)?;
    }
    data_len = data_len.min(log.allocated());

    let index_ok = index.as_ref().is_some_and(|f| {
        index_consistent(f, index_entries, OFFSET_ENTRY_LEN)
            && end.torn_bytes == 0
            && end.next_offset == end_offset
    });
    let time_index = open_index_ro(&time_path)?;
    let time_entries = time_index
        .as_ref()
        .map(|f| valid_time_entries(f.slice(0, f.allocated() as usize), next_relative))
        .unwrap_or(0);
    // The roll writes a time entry for the last batch, so the time index
    // ends at it; one that ends earlier is short, and its last entry would
    // understate the segment's largest timestamp.
    let time_ok = time_index.as_ref().is_some_and(|f| {
        let last_rel = time_entries.checked_sub(1).map(|i| {
            let at = u64::from(i) * TIME_ENTRY_LEN as u64;
            super::index::decode_time_entry(f.slice(at, TIME_ENTRY_LEN)).relative_offset
        });
        index_consistent(f, time_entries, TIME_ENTRY_LEN)
            && last_base.map(|b| (b - base) as u32) == last_rel
    });

    let (index, time_index) = if index_ok && time_ok {
        let index = index.expect("checked");
        let time_index = time_index.expect("checked");
        trim_index_if_longer(&index_path, index, index_entries, OFFSET_ENTRY_LEN)?;
        trim_index_if_longer(&time_path, time_index, time_entries, TIME_ENTRY_LEN)?;
        (
            IndexFile::new(
                open_ro_or_empty(&index_path)?,
                OFFSET_ENTRY_LEN,
                index_entries,
            ),
            IndexFile::new(open_ro_or_empty(&time_path)?, TIME_ENTRY_LEN, time_entries),
        )
    } else {
        drop((index, time_index));
        rebuild_indexes(dir, base, &log, data_len, interval)?
    };
    let max_ts = time_index
        .last_time_entry()
        .map_or(i64::MIN, |e| e.timestamp_ms)
        .max(tail_max_ts);
    Ok(SealedMaps {
        log: Arc::new(log),
        index: Arc::new(index),
        time_index: Arc::new(time_index),
        data_len,
        max_timestamp_ms: max_ts,
    })
}

fn open_index_ro(path: &Path) -> Result<Option<MappedFile>> {
    match MappedFile::open_read_only(path) {
        Ok(f) => Ok(Some(f)),
        Err(StorageError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

fn open_ro_or_empty(path: &Path) -> Result<MappedFile> {
    MappedFile::open_read_only(path)
}

/// An index is consistent when everything after its valid entries is zero
/// (an untrimmed tail) or absent.
fn index_consistent(file: &MappedFile, entries: u32, entry_len: usize) -> bool {
    let valid = u64::from(entries) * entry_len as u64;
    let len = file.allocated();
    valid <= len
        && file
            .slice(valid, (len - valid) as usize)
            .iter()
            .all(|&b| b == 0)
}

fn trim_index_if_longer(
    path: &Path,
    file: MappedFile,
    entries: u32,
    entry_len: usize,
) -> Result<()> {
    let valid = u64::from(entries) * entry_len as u64;
    let len = file.allocated();
    drop(file);
    if len > valid {
        truncate_file(path, valid)?;
    }
    Ok(())
}

fn truncate_file(path: &Path, len: u64) -> Result<()> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| StorageError::io(path, e))?;
    file.set_len(len).map_err(|e| StorageError::io(path, e))?;
    file.sync_all().map_err(|e| StorageError::io(path, e))
}

/// Rebuilds both indexes of a sealed segment from its log and replaces the
/// files atomically.
fn rebuild_indexes(
    dir: &Path,
    base: u64,
    log: &MappedFile,
    data_len: u64,
    interval: u64,
) -> Result<(IndexFile, IndexFile)> {
    let mut cursor = IndexCursor::new();
    let mut offsets = Vec::new();
    let mut times = Vec::new();
    scan(log.slice(0, data_len as usize), 0, base, |item| {
        if let ScanItem::Frame { position, header } = item {
            if let Some((o, t)) = cursor.on_batch(base, position, &header, interval) {
                offsets.extend_from_slice(&encode_offset_entry(o));
                times.extend_from_slice(&encode_time_entry(t));
            }
        }
    });
    // The final batch always gets a time entry so the segment's largest
    // timestamp is known from the time index alone.
    if let Some(last) = cursor.last_batch {
        let last_entry = times
            .len()
            .checked_sub(TIME_ENTRY_LEN)
            .map(|at| super::index::decode_time_entry(&times[at..]));
        if last_entry.is_none_or(|e| e.relative_offset < last.relative_offset) {
            times.extend_from_slice(&encode_time_entry(last));
        }
    }
    tracing::warn!(
        segment = %segment_path(dir, base, "log").display(),
        offset_entries = offsets.len() / OFFSET_ENTRY_LEN,
        "rebuilt missing or inconsistent indexes from the log"
    );
    let index_path = segment_path(dir, base, "index");
    let time_path = segment_path(dir, base, "timeindex");
    fs::write_atomic(&index_path, &offsets).map_err(|e| StorageError::io(&index_path, e))?;
    fs::write_atomic(&time_path, &times).map_err(|e| StorageError::io(&time_path, e))?;
    Ok((
        IndexFile::new(
            MappedFile::open_read_only(&index_path)?,
            OFFSET_ENTRY_LEN,
            (offsets.len() / OFFSET_ENTRY_LEN) as u32,
        ),
        IndexFile::new(
            MappedFile::open_read_only(&time_path)?,
            TIME_ENTRY_LEN,
            (times.len() / TIME_ENTRY_LEN) as u32,
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_and_parse() {
        assert_eq!(stem(42), "00000000000000000042");
        assert_eq!(
            parse_segment_name("00000000000000000042.log", "log"),
            Some(42)
        );
        assert_eq!(parse_segment_name("0042.log", "log"), None);
        assert_eq!(
            parse_segment_name("00000000000000000042.index", "log"),
            None
        );
    }
}
