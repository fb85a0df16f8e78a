//! `strata verify DATA_DIR`: an offline check of every stored batch.
//!
//! Reads every segment of every partition with ordinary `read(2)` calls (not
//! through a map, so a media error comes back as an error instead of a
//! `SIGBUS`), checks every frame's header, CRC and offset chain, and reports
//! damaged ranges and torn tails. It takes the data directory's lock, so it
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
    /// Everything that is wrong.
    pub problems: Vec<Problem>,
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
    Ok(report)
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
}
