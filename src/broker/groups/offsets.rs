//! Durable committed offsets: `data/groups/offsets.log` (append-only) plus
//! `data/groups/snapshot` (the whole state, replaced atomically), so the log
//! never grows without bound.
//!
//! # Record layout (both files are sequences of records, little-endian)
//!
//! | bytes      | type | field    | meaning                                   |
//! |------------|------|----------|-------------------------------------------|
//! | 0..4       | u32  | body_len | length of the body, ≤ [`MAX_RECORD_BYTES`] |
//! | 4..8       | u32  | crc      | CRC-32 (crc32fast) of the body            |
//! | 8..        | body |          | see below                                 |
//!
//! Body: `u8 kind`, `u16 group_len`, group (UTF-8), then for kind 1 (commit):
//! `u16 topic_len`, topic, `u32 partition`, `u64 offset`, `i64
//! commit_time_ms`, `u32 metadata_len`, metadata (UTF-8). Kind 2 (group
//! deleted) has no more fields. Kind 3 (topic deleted: every group's
//! offsets of the topic are forgotten) has an empty group, then `u16
//! topic_len`, topic.
//!
//! # Durability
//!
//! Each commit is one `write(2)` to the log before it is acknowledged, so it
//! survives a crash of the process (`kill -9`). The file is `fdatasync`ed by
//! the background flusher (same interval as partition logs), which bounds
//! what a power loss can take. A torn last record (crash mid-write) is
//! detected by its CRC and cut off at start-up with a warning.
//!
//! # Compaction
//!
//! When the log passes its compaction size (`groups.offsets_compact_bytes`,
//! [`DEFAULT_COMPACT_BYTES`] unless set), it is compacted in two steps, so
//! group calls do not wait for the disk:
//!
//! 1. Under the coordinator's lock ([`OffsetStore::begin_compaction`]): the
//!    state is encoded in memory, `offsets.log` is renamed to
//!    `offsets.log.old`, and later appends go to a new, empty `offsets.log`.
//! 2. Without the lock ([`Compaction::run`]): the encoded state is written
//!    as the snapshot (temp file, fsync, rename, fsync dir), then
//!    `offsets.log.old` is deleted.
//!
//! Start-up replays the snapshot, then `offsets.log.old` if it exists, then
//! `offsets.log`. A crash after step 1 leaves the old snapshot plus the old
//! log (the state when the compaction began) plus the new log; a crash in
//! step 2 may also leave the new snapshot beside the old log, and replaying
//! the old log over the snapshot that holds it changes nothing (every
//! record sets or removes keys, so the last record touching a key decides
//! it). Start-up then finishes the compaction. The log is never rewritten
//! in place: a torn rewrite could leave stale records after its end.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::state::{Committed, GroupState};
use crate::broker::error::{BrokerError, Result};
use crate::storage::fs;

/// Largest record body accepted when reading (bounds every allocation).
pub const MAX_RECORD_BYTES: u32 = 1 << 20;
/// Log size at which the state is snapshotted and the log emptied, unless
/// `groups.offsets_compact_bytes` says otherwise.
pub const DEFAULT_COMPACT_BYTES: u64 = 64 << 20;
/// After a failed compaction, how much more the log grows before the next try
/// (so a full disk does not cost a snapshot attempt per commit).
pub const COMPACT_RETRY_BYTES: u64 = 1 << 20;

const KIND_COMMIT: u8 = 1;
const KIND_DELETE: u8 = 2;
const KIND_TOPIC_DELETED: u8 = 3;

/// One change to the committed state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OffsetRecord {
    /// A committed offset.
    Commit {
        /// Group.
        group: String,
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
        /// The position.
        committed: Committed,
    },
    /// A deleted group.
    Delete {
        /// Group.
        group: String,
    },
    /// A deleted topic: every group's committed offsets of it are gone, so
    /// a topic created again under the name starts with none.
    TopicDeleted {
        /// Topic.
        topic: String,
    },
}

impl OffsetRecord {
    /// Encodes the record with its length and CRC.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut body = Vec::with_capacity(64);
        let put_str16 = |b: &mut Vec<u8>, s: &str| {
            b.extend_from_slice(&(s.len() as u16).to_le_bytes());
            b.extend_from_slice(s.as_bytes());
        };
        match self {
            OffsetRecord::Commit {
                group,
                topic,
                partition,
                committed,
            } => {
                body.push(KIND_COMMIT);
                put_str16(&mut body, group);
                put_str16(&mut body, topic);
                body.extend_from_slice(&partition.to_le_bytes());
                body.extend_from_slice(&committed.offset.to_le_bytes());
                body.extend_from_slice(&committed.commit_time_ms.to_le_bytes());
                body.extend_from_slice(&(committed.metadata.len() as u32).to_le_bytes());
                body.extend_from_slice(committed.metadata.as_bytes());
            }
            OffsetRecord::Delete { group } => {
                body.push(KIND_DELETE);
                put_str16(&mut body, group);
            }
            OffsetRecord::TopicDeleted { topic } => {
                body.push(KIND_TOPIC_DELETED);
                put_str16(&mut body, "");
                put_str16(&mut body, topic);
            }
        }
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        out.extend_from_slice(&body);
    }

    /// Decodes one record from the front of `buf`: `Ok(Some((record, len)))`,
    /// `Ok(None)` at a clean end, `Err(reason)` for a torn or corrupt record.
    pub fn decode(buf: &[u8]) -> std::result::Result<Option<(OffsetRecord, usize)>, &'static str> {
        if buf.is_empty() {
            return Ok(None);
        }
        if buf.len() < 8 {
            return Err("truncated record header");
        }
        let len = u32::from_le_bytes(buf[0..4].try_into().expect("4 bytes"));
        if len > MAX_RECORD_BYTES || len == 0 {
            return Err("record length out of bounds");
        }
        let end = 8 + len as usize;
        let body = buf.get(8..end).ok_or("truncated record body")?;
        if crc32fast::hash(body) != u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes")) {
            return Err("record CRC mismatch");
        }
        let mut r = Reader { buf: body };
        let kind = r.u8()?;
        let group = r.str16()?;
        let record = match kind {
            KIND_COMMIT => {
                let topic = r.str16()?;
                let partition = r.u32()?;
                let offset = r.u64()?;
                let commit_time_ms = r.u64()? as i64;
                let meta_len = r.u32()? as usize;
                let metadata = r.string(meta_len)?;
                OffsetRecord::Commit {
                    group,
                    topic,
                    partition,
                    committed: Committed {
                        offset,
                        metadata,
                        commit_time_ms,
                    },
                }
            }
            KIND_DELETE => OffsetRecord::Delete { group },
            KIND_TOPIC_DELETED if group.is_empty() => {
                OffsetRecord::TopicDeleted { topic: r.str16()? }
            }
            KIND_TOPIC_DELETED => return Err("topic deletion record with a group"),
            _ => return Err("unknown record kind"),
        };
        if !r.buf.is_empty() {
            return Err("trailing bytes in record");
        }
        Ok(Some((record, end)))
    }
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> std::result::Result<&[u8], &'static str> {
        if self.buf.len() < n {
            return Err("record field past its end");
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    fn u8(&mut self) -> std::result::Result<u8, &'static str> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> std::result::Result<u32, &'static str> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> std::result::Result<u64, &'static str> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn string(&mut self, n: usize) -> std::result::Result<String, &'static str> {
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| "invalid UTF-8 in record")
    }
    fn str16(&mut self) -> std::result::Result<String, &'static str> {
        let n = u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")) as usize;
        self.string(n)
    }
}

/// Applies a record to a set of groups.
pub fn apply(groups: &mut BTreeMap<String, GroupState>, record: OffsetRecord) {
    match record {
        OffsetRecord::Commit {
            group,
            topic,
            partition,
            committed,
        } => {
            let time = committed.commit_time_ms;
            groups
                .entry(group.clone())
                .or_insert_with(|| GroupState::new(&group, time))
                .commit((topic, partition), committed);
        }
        OffsetRecord::Delete { group } => {
            groups.remove(&group);
        }
        OffsetRecord::TopicDeleted { topic } => {
            for g in groups.values_mut() {
                g.committed.retain(|(t, _), _| *t != topic);
            }
        }
    }
}

/// Name of the append-only log in the store's directory.
const LOG_NAME: &str = "offsets.log";
/// Name the log is renamed to when a compaction starts; it is deleted once
/// the snapshot that holds its records is durable.
const OLD_LOG_NAME: &str = "offsets.log.old";
/// Name of the snapshot in the store's directory.
const SNAPSHOT_NAME: &str = "snapshot";

/// The on-disk store of committed offsets.
#[derive(Debug)]
pub struct OffsetStore {
    dir: PathBuf,
    log: File,
    /// Bytes of whole records in the log: where the next record goes.
    log_bytes: u64,
    /// Log size at which the next compaction is due.
    compact_at: u64,
    /// Log size at which a compaction is due after a successful one.
    compact_bytes: u64,
    /// A failed write could not be undone: the log's tail is unknown, so
    /// nothing more is appended (every commit fails) until a restart, whose
    /// replay cuts the tail at the last whole record.
    fenced: bool,
    /// `offsets.log.old` exists: its records may not be in the snapshot yet,
    /// so the log must not be renamed over it.
    old_log: bool,
    /// A compaction was started and has not finished.
    compacting: bool,
    /// What the flusher syncs; follows the log across compactions.
    sync: Arc<SyncTarget>,
}

/// The work of a compaction that runs without the coordinator's lock: the
/// snapshot of the state when it started, to be written durably, and then
/// the old log to delete. Made by [`OffsetStore::begin_compaction`]; hand
/// its result to [`OffsetStore::finish_compaction`].
#[derive(Debug)]
#[must_use = "a compaction that is begun must be run and finished"]
pub struct Compaction {
    dir: PathBuf,
    snapshot: Vec<u8>,
}

impl Compaction {
    /// Writes the snapshot (temp file, fsync, rename, directory fsync), then
    /// deletes `offsets.log.old`, whose records it holds. Blocking I/O:
    /// milliseconds to seconds on a slow disk.
    ///
    /// # Errors
    /// The snapshot could not be written or the old log deleted; nothing is
    /// lost (the old snapshot and the old log still hold the state).
    pub fn run(&self) -> Result<()> {
        self.write_snapshot()?;
        self.remove_old_log()
    }

    /// Step one of [`Compaction::run`]: the snapshot, durably.
    fn write_snapshot(&self) -> Result<()> {
        let snapshot = self.dir.join(SNAPSHOT_NAME);
        fs::write_atomic(&snapshot, &self.snapshot).map_err(|e| BrokerError::Metadata {
            path: snapshot,
            reason: e.to_string(),
        })
    }

    /// Step two of [`Compaction::run`]: the old log goes, durably.
    fn remove_old_log(&self) -> Result<()> {
        let old = self.dir.join(OLD_LOG_NAME);
        match std::fs::remove_file(&old) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(BrokerError::Metadata {
                    path: old,
                    reason: e.to_string(),
                })
            }
        }
        fs::sync_dir(&self.dir).map_err(|e| BrokerError::Metadata {
            path: self.dir.clone(),
            reason: e.to_string(),
        })
    }
}

impl OffsetStore {
    /// Opens `dir` (creating it), loading the snapshot and replaying the
    /// old log (if a compaction was interrupted) and the log. The log is
    /// compacted each time it passes `compact_bytes`.
    pub fn open(
        dir: &Path,
        compact_bytes: u64,
    ) -> Result<(OffsetStore, BTreeMap<String, GroupState>)> {
        let meta_err = |path: &Path, reason: String| BrokerError::Metadata {
            path: path.to_path_buf(),
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|e| meta_err(dir, e.to_string()))?;
        let mut groups = BTreeMap::new();
        let snapshot = dir.join(SNAPSHOT_NAME);
        if let Ok(bytes) = std::fs::read(&snapshot) {
            let (_, bad) = replay(&bytes, &mut groups);
            if let Some(reason) = bad {
                // The snapshot is written atomically, so damage here is not a
                // torn write: refuse to start rather than lose commits.
                return Err(meta_err(
                    &snapshot,
                    format!("corrupt group offsets snapshot: {reason}"),
                ));
            }
        }
        // A compaction stopped before its snapshot replaced the old one (or
        // before the old log was deleted: replaying it over the snapshot
        // that holds it changes nothing, every record sets or removes keys).
        let old_path = dir.join(OLD_LOG_NAME);
        let old_log = match std::fs::read(&old_path) {
            Ok(bytes) => {
                let (good, bad) = replay(&bytes, &mut groups);
                if let Some(reason) = bad {
                    // It was renamed after a whole-record append, so damage
                    // is not a torn write; keep what is whole and say so.
                    tracing::warn!(path = %old_path.display(), ignored_bytes = bytes.len() - good,
                        reason, "damaged record in the old group offsets log; replayed up to it");
                }
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(meta_err(&old_path, e.to_string())),
        };
        let log_path = dir.join(LOG_NAME);
        let bytes = std::fs::read(&log_path).unwrap_or_default();
        let (good, bad) = replay(&bytes, &mut groups);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| meta_err(&log_path, e.to_string()))?;
        if let Some(reason) = bad {
            tracing::warn!(path = %log_path.display(), cut_bytes = bytes.len() - good, reason,
                "cutting a torn record off the group offsets log");
            log.set_len(good as u64)
                .map_err(|e| meta_err(&log_path, e.to_string()))?;
        }
        fs::sync_dir(dir).map_err(|e| meta_err(dir, e.to_string()))?;
        let sync = Arc::new(SyncTarget {
            file: Mutex::new(Arc::new(
                log.try_clone()
                    .map_err(|e| meta_err(&log_path, e.to_string()))?,
            )),
            dir_dirty: AtomicBool::new(false),
            dir: dir.to_path_buf(),
        });
        let mut store = OffsetStore {
            dir: dir.to_path_buf(),
            log,
            log_bytes: good as u64,
            compact_at: compact_bytes,
            compact_bytes,
            fenced: false,
            old_log,
            compacting: false,
            sync,
        };
        if old_log {
            // Finish the interrupted compaction now, so the next one can
            // rename the log again. If it cannot, the broker still starts
            // (nothing is lost); the next compaction tries again.
            let job = store.snapshot_job(&groups);
            let result = job.run();
            store.finish_compaction(&result);
        }
        Ok((store, groups))
    }

    /// Appends records (one `write`), so they survive a process crash.
    ///
    /// # Errors
    /// The write failed (a full disk, an I/O error): none of the records is
    /// stored. Bytes a failed write left behind are cut off again, so the
    /// next append follows the last whole record; if even that fails, the
    /// store refuses every later append until a restart.
    pub fn append(&mut self, records: &[OffsetRecord]) -> Result<()> {
        self.append_with(records, |log, buf| log.write_all(buf))
    }

    /// [`OffsetStore::append`] with the write itself passed in (tests inject
    /// failures through it).
    fn append_with(
        &mut self,
        records: &[OffsetRecord],
        write: impl FnOnce(&mut File, &[u8]) -> std::io::Result<()>,
    ) -> Result<()> {
        let log_path = || self.dir.join(LOG_NAME);
        if self.fenced {
            return Err(BrokerError::Metadata {
                path: log_path(),
                reason: "an earlier failed write could not be undone; restart the broker to \
                         cut the log at its last whole record"
                    .into(),
            });
        }
        let mut buf = Vec::with_capacity(records.len() * 64);
        for r in records {
            r.encode(&mut buf);
        }
        if let Err(e) = write(&mut self.log, &buf) {
            // A short write leaves part of a record at the end: later records
            // would follow it, and replay stops at the first bad record.
            if let Err(undo) = self.log.set_len(self.log_bytes) {
                tracing::error!(path = %log_path().display(), error = %undo,
                    "cannot cut a failed write off the group offsets log; refusing commits until restart");
                self.fenced = true;
            }
            return Err(BrokerError::Storage(crate::storage::StorageError::io(
                log_path(),
                e,
            )));
        }
        self.log_bytes += buf.len() as u64;
        Ok(())
    }

    /// Makes compaction due once the log holds `bytes` (tests).
    #[cfg(test)]
    pub fn set_compact_at(&mut self, bytes: u64) {
        self.compact_at = bytes;
    }

    /// Whether the log holds no record (tests).
    #[cfg(test)]
    pub fn log_is_empty(&self) -> bool {
        self.log_bytes == 0
    }

    /// Starts a compaction if one is due and none is running (call it
    /// after the latest records were applied to `groups`, so the snapshot
    /// holds them). Cheap, for use under the coordinator's lock: it encodes
    /// the state and renames the log to `offsets.log.old`, so later appends
    /// go to a new, empty log. Run the returned [`Compaction`] without the
    /// lock, then pass its result to [`OffsetStore::finish_compaction`].
    ///
    /// If the rename fails, nothing changed: the failure is logged and
    /// compaction is tried again once the log has grown another
    /// [`COMPACT_RETRY_BYTES`].
    pub fn begin_compaction(
        &mut self,
        groups: &BTreeMap<String, GroupState>,
    ) -> Option<Compaction> {
        if self.log_bytes < self.compact_at || self.compacting || self.fenced {
            return None;
        }
        if !self.old_log {
            if let Err(e) = self.rotate() {
                tracing::warn!(error = %e, "cannot start compacting the group offsets log; will retry");
                self.compact_at = self.log_bytes + COMPACT_RETRY_BYTES;
                return None;
            }
        }
        // With an old log left by a compaction that failed, the log is not
        // renamed (that would replace the old log); the snapshot holds both
        // and the old log goes. The log is emptied by the next compaction.
        Some(self.snapshot_job(groups))
    }

    /// Records the end of a compaction, successful or not (a failure is
    /// logged and tried again once the log has grown another
    /// [`COMPACT_RETRY_BYTES`]; it loses nothing).
    pub fn finish_compaction(&mut self, result: &Result<()>) {
        self.compacting = false;
        match result {
            Ok(()) => {
                self.old_log = false;
                // After a retry the log was not emptied: if it is already
                // this big, the next append starts a compaction at once.
                self.compact_at = self.compact_bytes;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot compact the group offsets log; will retry");
                self.compact_at = self.log_bytes + COMPACT_RETRY_BYTES;
            }
        }
    }

    /// Compacts now, whether due or not: begins, runs and finishes a
    /// compaction in one call (tests).
    ///
    /// # Errors
    /// The log could not be renamed or the snapshot written.
    #[cfg(test)]
    pub fn compact(&mut self, groups: &BTreeMap<String, GroupState>) -> Result<()> {
        self.compact_at = 0;
        let Some(job) = self.begin_compaction(groups) else {
            return Err(BrokerError::Metadata {
                path: self.dir.join(LOG_NAME),
                reason: "the log could not be renamed for compaction".into(),
            });
        };
        let result = job.run();
        self.finish_compaction(&result);
        result
    }

    /// The snapshot of `groups` as a compaction to run, marking one running.
    fn snapshot_job(&mut self, groups: &BTreeMap<String, GroupState>) -> Compaction {
        let mut snapshot = Vec::new();
        for g in groups.values() {
            for ((topic, partition), c) in &g.committed {
                OffsetRecord::Commit {
                    group: g.name.clone(),
                    topic: topic.clone(),
                    partition: *partition,
                    committed: c.clone(),
                }
                .encode(&mut snapshot);
            }
        }
        self.compacting = true;
        Compaction {
            dir: self.dir.clone(),
            snapshot,
        }
    }

    /// Renames the log to `offsets.log.old` and appends to a new, empty
    /// log from here on. The flusher follows the new log, and syncs the
    /// directory (making the new name durable) on its next pass.
    fn rotate(&mut self) -> Result<()> {
        let log_path = self.dir.join(LOG_NAME);
        let old_path = self.dir.join(OLD_LOG_NAME);
        let err = |path: &Path, e: std::io::Error| BrokerError::Metadata {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        std::fs::rename(&log_path, &old_path).map_err(|e| err(&log_path, e))?;
        let opened = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .and_then(|log| Ok((log.try_clone()?, log)));
        let (for_sync, log) = match opened {
            Ok(files) => files,
            Err(e) => {
                // Put the log back so appends go on where they were.
                if let Err(back) = std::fs::rename(&old_path, &log_path) {
                    tracing::error!(path = %log_path.display(), error = %back,
                        "cannot rename the group offsets log back after a failed compaction; refusing commits until restart");
                    self.fenced = true;
                }
                return Err(err(&log_path, e));
            }
        };
        self.log = log;
        self.log_bytes = 0;
        self.old_log = true;
        *self.sync.file.lock().expect("offsets sync lock poisoned") = Arc::new(for_sync);
        self.sync.dir_dirty.store(true, Ordering::Release);
        Ok(())
    }

    /// A handle that flushes this log without access to the store, so the
    /// coordinator's lock need not be held across an `fdatasync` (which can
    /// take milliseconds to seconds and would stall every group call).
    pub fn sync_handle(&self) -> OffsetSync {
        OffsetSync {
            target: Arc::clone(&self.sync),
        }
    }
}

/// The file the flusher syncs, shared by the store and its [`OffsetSync`]
/// handles: a compaction swaps in the new log.
#[derive(Debug)]
struct SyncTarget {
    /// A descriptor of the current log (held only to clone the `Arc`).
    file: Mutex<Arc<File>>,
    /// The log was replaced: the directory needs an fsync too.
    dir_dirty: AtomicBool,
    dir: PathBuf,
}

/// Flushes the offsets log (whichever file it is after compactions, see
/// [`OffsetStore::sync_handle`]) without access to the store.
#[derive(Debug)]
pub struct OffsetSync {
    target: Arc<SyncTarget>,
}

impl OffsetSync {
    /// `fdatasync` of the offsets log, and of its directory when a
    /// compaction has put a new log in place since the last call.
    ///
    /// # Errors
    /// The flush failed.
    pub fn sync(&self) -> Result<()> {
        let file = Arc::clone(&self.target.file.lock().expect("offsets sync lock poisoned"));
        file.sync_data().map_err(|e| BrokerError::Metadata {
            path: self.target.dir.join(LOG_NAME),
            reason: e.to_string(),
        })?;
        if self.target.dir_dirty.swap(false, Ordering::AcqRel) {
            fs::sync_dir(&self.target.dir).map_err(|e| {
                self.target.dir_dirty.store(true, Ordering::Release);
                BrokerError::Metadata {
                    path: self.target.dir.clone(),
                    reason: e.to_string(),
                }
            })?;
        }
        Ok(())
    }
}

/// What a check of one offsets file (the log, the old log or the
/// snapshot) found, without applying it: see [`check_file`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileCheck {
    /// Whole, valid records from the start.
    pub records: u64,
    /// Bytes they take: where the first problem is, if any.
    pub valid_bytes: usize,
    /// Why the bytes after them are not a valid record, if there are any.
    pub problem: Option<&'static str>,
}

/// Checks every record of an offsets file's bytes (CRC, lengths, fields),
/// the way start-up reads it (`strata verify`).
pub fn check_file(bytes: &[u8]) -> FileCheck {
    let mut records = 0;
    let (valid_bytes, problem) = scan(bytes, |_| records += 1);
    FileCheck {
        records,
        valid_bytes,
        problem,
    }
}

/// The files of the store in `dir` that start-up reads, in replay order,
/// with what a problem in each means for the next start.
pub fn files(dir: &Path) -> [(PathBuf, &'static str); 3] {
    [
        (
            dir.join(SNAPSHOT_NAME),
            "the snapshot is written atomically, so this is damage, not a torn write: the broker \
             refuses to start until it is repaired or removed (removing it loses the commits it holds)",
        ),
        (
            dir.join(OLD_LOG_NAME),
            "the next start replays the records before it and ignores the rest",
        ),
        (
            dir.join(LOG_NAME),
            "the next start cuts the log here (a torn last write after a crash)",
        ),
    ]
}

/// Replays records into `groups`; returns the bytes of valid records and,
/// if it stopped early, why.
fn replay(
    bytes: &[u8],
    groups: &mut BTreeMap<String, GroupState>,
) -> (usize, Option<&'static str>) {
    scan(bytes, |record| apply(groups, record))
}

/// Decodes records from the start of `bytes`, handing each to `each`;
/// returns the bytes of valid records and, if it stopped early, why.
fn scan(bytes: &[u8], mut each: impl FnMut(OffsetRecord)) -> (usize, Option<&'static str>) {
    let mut at = 0;
    loop {
        match OffsetRecord::decode(&bytes[at..]) {
            Ok(Some((record, len))) => {
                each(record);
                at += len;
            }
            Ok(None) => return (at, None),
            Err(reason) => return (at, Some(reason)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn commit(group: &str, p: u32, offset: u64) -> OffsetRecord {
        OffsetRecord::Commit {
            group: group.into(),
            topic: "t".into(),
            partition: p,
            committed: Committed {
                offset,
                metadata: "m".into(),
                commit_time_ms: 7,
            },
        }
    }

    #[test]
    fn reopen_replays_and_cuts_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut store, groups) = OffsetStore::open(dir.path(), DEFAULT_COMPACT_BYTES).unwrap();
            assert!(groups.is_empty());
            store
                .append(&[commit("g", 0, 5), commit("g", 1, 9), commit("h", 0, 1)])
                .unwrap();
            store
                .append(&[
                    OffsetRecord::Delete { group: "h".into() },
                    commit("g", 0, 6),
                ])
                .unwrap();
        }
        // A torn write at the end.
        let log = dir.path().join("offsets.log");
        let mut bytes = std::fs::read(&log).unwrap();
        let mut torn = Vec::new();
        commit("g", 0, 99).encode(&mut torn);
        bytes.extend_from_slice(&torn[..torn.len() - 3]);
        std::fs::write(&log, &bytes).unwrap();
        let (mut store, groups) = OffsetStore::open(dir.path(), DEFAULT_COMPACT_BYTES).unwrap();
        assert_eq!(groups.len(), 1);
        assert_eq!(groups["g"].committed[&("t".to_string(), 0)].offset, 6);
        assert_eq!(groups["g"].committed[&("t".to_string(), 1)].offset, 9);
        // Compaction keeps the state.
        store.compact(&groups).unwrap();
        store.append(&[commit("g", 1, 10)]).unwrap();
        drop(store);
        let (_, groups) = OffsetStore::open(dir.path(), DEFAULT_COMPACT_BYTES).unwrap();
        assert_eq!(groups["g"].committed[&("t".to_string(), 0)].offset, 6);
        assert_eq!(groups["g"].committed[&("t".to_string(), 1)].offset, 10);
    }

    #[test]
    fn a_failed_write_is_cut_off_so_later_commits_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut store, _) = OffsetStore::open(dir.path(), DEFAULT_COMPACT_BYTES).unwrap();
            store.append(&[commit("g", 0, 5)]).unwrap();
            // A full disk: half the record reaches the file, then ENOSPC.
            let err = store
                .append_with(&[commit("g", 0, 6)], |log, buf| {
                    log.write_all(&buf[..buf.len() / 2])?;
                    Err(std::io::Error::from_raw_os_error(libc::ENOSPC))
                })
                .unwrap_err();
            assert!(err.to_string().contains("offsets.log"), "{err}");
            // Space is back: the next commit follows the last whole record.
            store.append(&[commit("g", 1, 9)]).unwrap();
        }
        let log = dir.path().join("offsets.log");
        let mut whole = Vec::new();
        commit("g", 0, 5).encode(&mut whole);
        commit("g", 1, 9).encode(&mut whole);
        assert_eq!(std::fs::read(&log).unwrap(), whole);
        let (_, groups) = OffsetStore::open(dir.path(), DEFAULT_COMPACT_BYTES).unwrap();
        assert_eq!(groups["g"].committed[&("t".to_string(), 0)].offset, 5);
        assert_eq!(groups["g"].committed[&("t".to_string(), 1)].offset, 9);
    }

    fn arb_record() -> impl Strategy<Value = OffsetRecord> {
        let commit = (
            ".{0,12}",
            ".{0,12}",
            any::<u32>(),
            any::<u64>(),
            any::<i64>(),
            ".{0,20}",
        )
            .prop_map(|(group, topic, partition, offset, time, metadata)| {
                OffsetRecord::Commit {
                    group,
                    topic,
                    partition,
                    committed: Committed {
                        offset,
                        metadata,
                        commit_time_ms: time,
                    },
                }
            });
        prop_oneof![
            4 => commit,
            1 => ".{0,12}".prop_map(|group| OffsetRecord::Delete { group }),
            1 => ".{0,12}".prop_map(|topic| OffsetRecord::TopicDeleted { topic }),
        ]
    }

    /// Frames `body` with a correct length and CRC, so the decoder's body
    /// parsing is reached.
    fn framed(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
        out.extend_from_slice(body);
        out
    }

    /// Committed offsets by (group, topic, partition): what a restart must
    /// give back (a group whose offsets were all forgotten is not kept).
    fn committed_view(groups: &BTreeMap<String, GroupState>) -> Vec<String> {
        groups
            .values()
            .flat_map(|g| {
                g.committed
                    .iter()
                    .map(move |((t, p), c)| format!("{}/{t}/{p}={c:?}", g.name))
            })
            .collect()
    }

    /// One step against a store in [`compaction_steps_and_crashes_lose_nothing`].
    #[derive(Debug, Clone)]
    enum Step {
        Append(Vec<OffsetRecord>),
        /// Start a compaction (made due first).
        Begin,
        /// Write the running compaction's snapshot but not delete the old log.
        WriteSnapshot,
        /// Run the rest of the compaction and finish it.
        Finish,
        /// The compaction's disk work failed.
        Fail,
        /// `kill -9` and restart: the running compaction is abandoned.
        Crash,
    }

    fn arb_step() -> impl Strategy<Value = Step> {
        prop_oneof![
            6 => proptest::collection::vec(arb_record(), 1..4).prop_map(Step::Append),
            2 => Just(Step::Begin),
            1 => Just(Step::WriteSnapshot),
            2 => Just(Step::Finish),
            1 => Just(Step::Fail),
            2 => Just(Step::Crash),
        ]
    }

    /// A new store in `dir` holding `records`, and the state they make.
    fn store_with(
        dir: &Path,
        records: impl IntoIterator<Item = OffsetRecord>,
    ) -> (OffsetStore, BTreeMap<String, GroupState>) {
        let (mut store, _) = OffsetStore::open(dir, DEFAULT_COMPACT_BYTES).unwrap();
        let mut groups = BTreeMap::new();
        for r in records {
            store.append(std::slice::from_ref(&r)).unwrap();
            apply(&mut groups, r);
        }
        (store, groups)
    }

    #[test]
    fn an_interrupted_compaction_is_finished_at_start_up() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, groups) = store_with(dir.path(), [commit("g", 0, 5), commit("g", 1, 9)]);
        store.set_compact_at(1);
        let job = store.begin_compaction(&groups).expect("due");
        assert!(store.log_is_empty());
        assert!(dir.path().join(OLD_LOG_NAME).exists());
        // A second one does not start while this one runs.
        store.set_compact_at(0);
        assert!(store.begin_compaction(&groups).is_none());
        // Commits go on to the new log; then the process dies.
        store.append(&[commit("g", 0, 6)]).unwrap();
        drop(job);
        drop(store);
        let (_, groups) = OffsetStore::open(dir.path(), DEFAULT_COMPACT_BYTES).unwrap();
        assert_eq!(groups["g"].committed[&("t".to_string(), 0)].offset, 6);
        assert_eq!(groups["g"].committed[&("t".to_string(), 1)].offset, 9);
        assert!(
            !dir.path().join(OLD_LOG_NAME).exists(),
            "start-up finishes it"
        );
        let snapshot = std::fs::read(dir.path().join(SNAPSHOT_NAME)).unwrap();
        let mut from_snapshot = BTreeMap::new();
        assert_eq!(replay(&snapshot, &mut from_snapshot).1, None);
        assert_eq!(committed_view(&from_snapshot), committed_view(&groups));
    }

    #[test]
    fn a_failed_snapshot_keeps_the_old_log_until_one_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, mut groups) =
            store_with(dir.path(), [commit("g", 0, 5), commit("h", 0, 1)]);
        // A directory where the snapshot goes: the rename onto it fails.
        let snapshot = dir.path().join(SNAPSHOT_NAME);
        std::fs::create_dir(&snapshot).unwrap();
        std::fs::write(snapshot.join("x"), b"x").unwrap();
        let err = store.compact(&groups).unwrap_err();
        assert!(err.to_string().contains("snapshot"), "{err}");
        let old = std::fs::read(dir.path().join(OLD_LOG_NAME)).unwrap();
        // The next one does not rename the log over the old one.
        let r = commit("g", 0, 7);
        store.append(std::slice::from_ref(&r)).unwrap();
        apply(&mut groups, r);
        store.set_compact_at(0);
        let job = store.begin_compaction(&groups).expect("due");
        assert_eq!(std::fs::read(dir.path().join(OLD_LOG_NAME)).unwrap(), old);
        assert!(!store.log_is_empty());
        std::fs::remove_dir_all(&snapshot).unwrap();
        let result = job.run();
        store.finish_compaction(&result);
        result.unwrap();
        assert!(!dir.path().join(OLD_LOG_NAME).exists());
        drop(store);
        let (_, reopened) = OffsetStore::open(dir.path(), DEFAULT_COMPACT_BYTES).unwrap();
        assert_eq!(committed_view(&reopened), committed_view(&groups));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = OffsetRecord::decode(&bytes);
        }

        /// Arbitrary bodies behind a valid length and CRC: never a panic; a
        /// record that decodes re-encodes to the same bytes.
        #[test]
        fn arbitrary_bodies_behind_a_valid_crc_never_panic(
            body in proptest::collection::vec(any::<u8>(), 1..120),
        ) {
            let bytes = framed(&body);
            if let Ok(Some((record, len))) = OffsetRecord::decode(&bytes) {
                let mut again = Vec::new();
                record.encode(&mut again);
                prop_assert_eq!(&again[..], &bytes[..len]);
            }
        }

        /// Mutated valid records (CRC recomputed, so the body parser sees the
        /// damage): lying string lengths and kinds never panic.
        #[test]
        fn mutated_records_never_panic(
            record in arb_record(),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..4),
        ) {
            let mut buf = Vec::new();
            record.encode(&mut buf);
            let mut body = buf[8..].to_vec();
            for (index, byte, op) in edits {
                if body.is_empty() {
                    body.push(byte);
                    continue;
                }
                let i = index.index(body.len());
                match op {
                    0 => body[i] = byte,
                    1 => body.insert(i, byte),
                    _ => { body.remove(i); }
                }
            }
            let _ = OffsetRecord::decode(&buf);
            if !body.is_empty() {
                let _ = OffsetRecord::decode(&framed(&body));
            }
        }

        /// A log or snapshot (a sequence of records) replays to the state
        /// its records describe, and a torn or damaged tail stops the replay
        /// at the last whole record, never a panic.
        #[test]
        fn sequences_replay_and_damage_stops_at_a_record_boundary(
            records in proptest::collection::vec(arb_record(), 0..12),
            cut in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
        ) {
            let mut bytes = Vec::new();
            let mut ends = vec![0usize];
            for r in &records {
                r.encode(&mut bytes);
                ends.push(bytes.len());
            }
            let mut expected = BTreeMap::new();
            for r in records.clone() {
                apply(&mut expected, r);
            }
            let mut groups = BTreeMap::new();
            prop_assert_eq!(replay(&bytes, &mut groups), (bytes.len(), None));
            prop_assert_eq!(format!("{groups:?}"), format!("{expected:?}"));
            // Torn: a prefix of the bytes.
            let torn = &bytes[..cut.index(bytes.len() + 1)];
            let (good, _) = replay(torn, &mut BTreeMap::new());
            prop_assert!(ends.contains(&good) && good <= torn.len());
            // Damaged: one byte flipped.
            if !bytes.is_empty() {
                let mut damaged = bytes.clone();
                let i = flip.index(damaged.len());
                damaged[i] ^= 0x5a;
                let (good, bad) = replay(&damaged, &mut BTreeMap::new());
                prop_assert!(ends.contains(&good) && good <= i && bad.is_some());
            }
        }

        /// Opening a store whose snapshot and log hold arbitrary bytes
        /// answers (a corrupt snapshot is an error naming it), never panics.
        #[test]
        fn open_survives_arbitrary_files(
            snapshot in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..100)),
            log in proptest::collection::vec(any::<u8>(), 0..100),
        ) {
            let dir = tempfile::tempdir().unwrap();
            if let Some(s) = &snapshot {
                std::fs::write(dir.path().join("snapshot"), s).unwrap();
            }
            std::fs::write(dir.path().join("offsets.log"), &log).unwrap();
            match OffsetStore::open(dir.path(), DEFAULT_COMPACT_BYTES) {
                Ok(_) => {}
                Err(e) => prop_assert!(e.to_string().contains("snapshot"), "{}", e),
            }
        }

        #[test]
        fn round_trip(group in "[a-z]{1,10}", topic in "[a-z]{1,10}", p in any::<u32>(),
                      offset in any::<u64>(), meta in ".{0,20}") {
            let r = OffsetRecord::Commit { group, topic, partition: p,
                committed: Committed { offset, metadata: meta, commit_time_ms: 3 } };
            let mut buf = Vec::new();
            r.encode(&mut buf);
            let (back, len) = OffsetRecord::decode(&buf).unwrap().unwrap();
            prop_assert_eq!(back, r);
            prop_assert_eq!(len, buf.len());
        }

        /// Any interleaving of commits, compaction steps (begun, snapshot
        /// written, finished, failed) and crashes: every restart gives back
        /// exactly the committed offsets the records set.
        #[test]
        fn compaction_steps_and_crashes_lose_nothing(
            steps in proptest::collection::vec(arb_step(), 1..40),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let (mut store, _) = OffsetStore::open(dir.path(), DEFAULT_COMPACT_BYTES).unwrap();
            let mut model = BTreeMap::new();
            let mut job: Option<Compaction> = None;
            for step in steps.into_iter().chain([Step::Crash]) {
                match step {
                    Step::Append(records) => {
                        store.append(&records).unwrap();
                        for r in records {
                            apply(&mut model, r);
                        }
                    }
                    Step::Begin => {
                        store.set_compact_at(0);
                        let begun = store.begin_compaction(&model);
                        prop_assert_eq!(begun.is_some(), job.is_none());
                        job = job.or(begun);
                    }
                    Step::WriteSnapshot => {
                        if let Some(j) = &job {
                            j.write_snapshot().unwrap();
                        }
                    }
                    Step::Finish => {
                        if let Some(j) = job.take() {
                            let result = j.run();
                            prop_assert!(result.is_ok());
                            store.finish_compaction(&result);
                        }
                    }
                    Step::Fail => {
                        if job.take().is_some() {
                            store.finish_compaction(&Err(BrokerError::FailedPrecondition(
                                "injected".into(),
                            )));
                        }
                    }
                    Step::Crash => {
                        job = None;
                        drop(store);
                        let (reopened, groups) = OffsetStore::open(dir.path(), DEFAULT_COMPACT_BYTES).unwrap();
                        prop_assert_eq!(committed_view(&groups), committed_view(&model));
                        prop_assert!(!dir.path().join(OLD_LOG_NAME).exists());
                        store = reopened;
                    }
                }
            }
        }
    }
}
