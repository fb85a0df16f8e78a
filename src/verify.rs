//! `strata verify DATA_DIR`: an offline check of every stored batch.
//!
//! Reads every segment of every partition with ordinary `read(2)` calls (not
//! through a map, so a media error comes back as an error instead of a
//! `SIGBUS`), checks every frame's header, CRC and offset chain, and reports
//! damaged ranges and torn tails. It also checks the CRC of every topic
//! metadata file (`meta/topics/*.toml`) and every record of the group
//! offsets files (`groups/snapshot`, `groups/offsets.log.old`,
//! `groups/offsets.log`). It takes the data directory's lock, so it
//! refuses to run while a broker uses the directory.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::storage::checkpoint::Checkpoint;
use crate::storage::fs::DirLock;
use crate::storage::producers::DEFAULT_MAX_PRODUCERS;
use crate::storage::scan::{scan, ScanItem};
use crate::storage::segment::parse_segment_name;

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The segment file.
    pub file: PathBuf,
    /// Byte position of the problem in the file.
    pub position: u64,
    /// First offset affected.
    pub first_offset: u64,
    /// First offset after the problem (exclusive), when known.
    pub end_offset: Option<u64>,
    /// What is wrong.
    pub what: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let range = match self.end_offset {
            Some(end) => format!("offsets {}..{end}", self.first_offset),
            None => format!("offsets from {}", self.first_offset),
        };
        write!(
            f,
            "{} at byte {}: {range}: {}",
            self.file.display(),
            self.position,
            self.what
        )
    }
}

/// A damaged topic metadata or group offsets file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProblem {
    /// The file.
    pub file: PathBuf,
    /// What is wrong, and what the next start does about it.
    pub what: String,
}

impl fmt::Display for FileProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.what)
    }
}

/// What `verify` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Partitions checked.
    pub partitions: u64,
    /// Segment files checked.
    pub segments: u64,
    /// Valid batches.
    pub batches: u64,
    /// Records in valid batches.
    pub records: u64,
    /// Bytes of valid batches.
    pub bytes: u64,
    /// Everything that is wrong in the segments.
    pub problems: Vec<Problem>,
    /// Topic metadata files checked.
    pub metadata_files: u64,
    /// Group offsets files checked.
    pub offsets_files: u64,
    /// Valid records in them.
    pub offsets_records: u64,
    /// Everything that is wrong in metadata and group offsets files.
    pub file_problems: Vec<FileProblem>,
}

impl Report {
    /// Whether anything is wrong.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty() && self.file_problems.is_empty()
    }

    /// How many problems were found.
    pub fn problem_count(&self) -> usize {
        self.problems.len() + self.file_problems.len()
    }
}

/// Why verification could not run.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The directory is in use by a broker (or another tool).
    #[error("{dir} is locked by a running broker or tool; stop it first: {source}")]
    Locked {
        /// The data directory.
        dir: PathBuf,
        /// The lock error.
        source: std::io::Error,
    },
    /// A file or directory could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> VerifyError + '_ {
    move |source| VerifyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Checks every batch under `data_dir` (the broker's data directory).
pub fn verify(data_dir: &Path) -> Result<Report, VerifyError> {
    if !data_dir.join("topics").is_dir() {
        return Err(VerifyError::Io {
            path: data_dir.join("topics"),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "not a Strata data directory",
            ),
        });
    }
    let _lock = DirLock::acquire(data_dir).map_err(|source| VerifyError::Locked {
        dir: data_dir.to_path_buf(),
        source,
    })?;
    let mut report = Report::default();
    let topics = data_dir.join("topics");
    for topic in sorted_dirs(&topics)? {
        if topic
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        {
            continue;
        }
        for partition in sorted_dirs(&topic)? {
            report.partitions += 1;
            verify_partition(&partition, &mut report)?;
        }
    }
    verify_topic_metadata(data_dir, &mut report)?;
    verify_group_offsets(&data_dir.join("groups"), &mut report)?;
    Ok(report)
}

/// Checks every `meta/topics/<topic>.toml`: its CRC, its fields, and that
/// it names the topic of its file name (the broker refuses to start
/// otherwise).
fn verify_topic_metadata(data_dir: &Path, report: &mut Report) -> Result<(), VerifyError> {
    let dir = crate::broker::metadata::meta_dir(data_dir);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(&dir)(e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(io(&dir))?.path();
        if path.extension().is_some_and(|e| e == "toml") {
            files.push(path);
        }
    }
    files.sort();
    for path in files {
        report.metadata_files += 1;
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        let topic = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let problem = match String::from_utf8(bytes) {
            Err(_) => Some("not UTF-8 text".to_string()),
            Ok(text) => crate::broker::metadata::decode_file(&topic, &text).err(),
        };
        if let Some(reason) = problem {
            report.file_problems.push(FileProblem {
                file: path,
                what: format!("topic metadata fails its check ({reason}); the broker refuses to start until it is repaired"),
            });
        }
    }
    Ok(())
}

/// Checks every record of the group offsets files.
fn verify_group_offsets(dir: &Path, report: &mut Report) -> Result<(), VerifyError> {
    use crate::broker::groups::offsets;
    for (path, consequence) in offsets::files(dir) {
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(&path)(e)),
        };
        report.offsets_files += 1;
        let check = offsets::check_file(&bytes);
        report.offsets_records += check.records;
        if let Some(reason) = check.problem {
            report.file_problems.push(FileProblem {
                file: path,
                what: format!(
                    "{} bytes after record {} (byte {}) are not a valid record ({reason}); {consequence}",
                    bytes.len() - check.valid_bytes,
                    check.records,
                    check.valid_bytes,
                ),
            });
        }
    }
    Ok(())
}

fn sorted_dirs(dir: &Path) -> Result<Vec<PathBuf>, VerifyError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        if entry.file_type().map_err(io(dir))?.is_dir() {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

fn verify_partition(dir: &Path, report: &mut Report) -> Result<(), VerifyError> {
    let mut bases = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        if let Some(base) = entry
            .file_name()
            .to_str()
            .and_then(|n| parse_segment_name(n, "log"))
        {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    // Closed segments from the one the recovery checkpoint names on were
    // sealed after the last flush: the next start treats a problem there as
    // the end of the log (see `recovery::settle_unsynced_segments`).
    let unflushed_from = Checkpoint::read(dir, DEFAULT_MAX_PRODUCERS)
        .map(|(c, _)| c.segment_base)
        .filter(|&b| bases.last().is_some_and(|&last| b < last));
    for (i, &base) in bases.iter().enumerate() {
        let file = dir.join(format!("{base:020}.log"));
        let problems_before = report.problems.len();
        let bytes = std::fs::read(&file).map_err(io(&file))?;
        report.segments += 1;
        let next_base = bases.get(i + 1).copied();
        let end = scan(&bytes, 0, base, |item| match item {
            ScanItem::Frame { header, .. } => {
                report.batches += 1;
                report.records += u64::from(header.meta.record_count);
                report.bytes += u64::from(header.frame_len);
            }
            ScanItem::Damage(d) => report.problems.push(Problem {
                file: file.clone(),
                position: d.position,
                first_offset: d.first_offset,
                end_offset: Some(d.end_offset),
                what: format!(
                    "damaged batch ({}), {} bytes",
                    d.reason,
                    d.end_position - d.position
                ),
            }),
        });
        if end.torn_bytes > 0 {
            report.problems.push(Problem {
                file: file.clone(),
                position: end.position,
                first_offset: end.next_offset,
                end_offset: next_base,
                what: format!(
                    "{} bytes after the last valid batch ({}){}",
                    end.torn_bytes,
                    end.torn_reason.unwrap_or("invalid"),
                    if next_base.is_none() {
                        "; the next start cuts this torn tail"
                    } else {
                        ""
                    }
                ),
            });
        }
        if let Some(next) = next_base {
            if end.torn_bytes == 0 && end.next_offset != next {
                report.problems.push(Problem {
                    file: file.clone(),
                    position: end.position,
                    first_offset: end.next_offset,
                    end_offset: Some(next),
                    what: "closed segment ends before the next segment's base offset".into(),
                });
            }
            if unflushed_from.is_some_and(|from| base >= from) {
                for p in &mut report.problems[problems_before..] {
                    p.what += "; this closed segment was sealed after the last flush, so the \
                               next start ends the log at its first problem and deletes the \
                               segments after it";
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{BatchMeta, LogConfig, MapCache, PartitionLog};

    #[test]
    fn a_problem_in_a_segment_sealed_after_the_last_flush_says_the_log_ends_there() {
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().join("topics/t/0");
        let config = LogConfig {
            segment_bytes: 4096,
            ..LogConfig::default()
        };
        let meta = BatchMeta {
            record_count: 1,
            ..Default::default()
        };
        {
            let log = PartitionLog::open(&dir, config, MapCache::new(4)).unwrap();
            log.append(&meta, &[&[5u8; 1000]]).unwrap();
            log.flush().unwrap();
            // Fill the first segment and roll; no flush afterwards (a crash).
            for _ in 0..5 {
                log.append(&meta, &[&[6u8; 1000]]).unwrap();
            }
        }
        // A power cut took the last batch of the sealed segment.
        let file = dir.join("00000000000000000000.log");
        let mut bytes = std::fs::read(&file).unwrap();
        let last_frame = 3 * 1064;
        bytes[last_frame + 100] ^= 1;
        std::fs::write(&file, &bytes).unwrap();
        let report = verify(data.path()).unwrap();
        assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
        let p = &report.problems[0];
        assert_eq!(p.first_offset, 3);
        assert!(p.what.contains("next start ends the log"), "{}", p.what);
    }

    #[test]
    fn finds_a_flipped_byte_and_refuses_a_locked_dir() {
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().join("topics/t/0");
        {
            let log = PartitionLog::open(&dir, LogConfig::default(), MapCache::new(4)).unwrap();
            for _ in 0..10 {
                let meta = BatchMeta {
                    record_count: 2,
                    ..Default::default()
                };
                log.append(&meta, &[&[5u8; 200]]).unwrap();
            }
            log.close().unwrap();
        }
        let clean = verify(data.path()).unwrap();
        assert_eq!(
            (clean.partitions, clean.batches, clean.records),
            (1, 10, 20)
        );
        assert!(clean.problems.is_empty(), "{:?}", clean.problems);
        // Flip one payload byte of the fourth batch (each frame is 264 bytes).
        let file = dir.join("00000000000000000000.log");
        let mut bytes = std::fs::read(&file).unwrap();
        bytes[3 * 264 + 100] ^= 1;
        std::fs::write(&file, &bytes).unwrap();
        let damaged = verify(data.path()).unwrap();
        assert_eq!(damaged.problems.len(), 1, "{:?}", damaged.problems);
        assert_eq!(
            (
                damaged.problems[0].first_offset,
                damaged.problems[0].end_offset
            ),
            (6, Some(8))
        );
        assert_eq!(
            damaged.batches, 9,
            "the batches after the damage are still counted"
        );
        let _held = DirLock::acquire(data.path()).unwrap();
        assert!(matches!(
            verify(data.path()),
            Err(VerifyError::Locked { .. })
        ));
    }

    #[test]
    fn checks_topic_metadata_and_group_offsets_files() {
        use crate::broker::groups::offsets::{OffsetRecord, OffsetStore};
        use crate::broker::metadata::{self, TopicMeta, METADATA_VERSION};
        let data = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(data.path().join("topics")).unwrap();
        std::fs::create_dir_all(metadata::meta_dir(data.path())).unwrap();
        for name in ["a", "b"] {
            let meta = TopicMeta {
                version: METADATA_VERSION,
                name: name.into(),
                partitions: 1,
                created_ms: 1,
                overrides: Default::default(),
            };
            metadata::store(data.path(), &meta).unwrap();
        }
        {
            let (mut store, _) = OffsetStore::open(
                &data.path().join("groups"),
                crate::broker::groups::offsets::DEFAULT_COMPACT_BYTES,
            )
            .unwrap();
            for offset in 0..3 {
                store
                    .append(&[OffsetRecord::Commit {
                        group: "g".into(),
                        topic: "a".into(),
                        partition: 0,
                        committed: crate::broker::groups::state::Committed {
                            offset,
                            metadata: String::new(),
                            commit_time_ms: 1,
                        },
                    }])
                    .unwrap();
            }
        }
        let clean = verify(data.path()).unwrap();
        assert!(clean.is_clean(), "{:?}", clean.file_problems);
        assert_eq!(
            (
                clean.metadata_files,
                clean.offsets_files,
                clean.offsets_records
            ),
            (2, 1, 3)
        );
        // One flipped byte in a metadata file, one in the second commit.
        let flip = |path: &Path, at: usize| {
            let mut bytes = std::fs::read(path).unwrap();
            bytes[at] ^= 1;
            std::fs::write(path, bytes).unwrap();
        };
        let toml = metadata::meta_dir(data.path()).join("b.toml");
        flip(&toml, 3);
        let log = data.path().join("groups/offsets.log");
        let record = std::fs::metadata(&log).unwrap().len() as usize / 3;
        flip(&log, record + 12);
        let damaged = verify(data.path()).unwrap();
        assert_eq!(damaged.problem_count(), 2, "{:?}", damaged.file_problems);
        assert_eq!(damaged.file_problems[0].file, toml);
        assert!(damaged.file_problems[0].what.contains("refuses to start"));
        assert_eq!(damaged.file_problems[1].file, log);
        let what = &damaged.file_problems[1].what;
        assert!(
            what.contains(&format!("after record 1 (byte {record})"))
                && what.contains("cuts the log"),
            "{what}"
        );
        assert_eq!(damaged.offsets_records, 1);
    }
}
