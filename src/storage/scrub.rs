//! The scrubber's check of a closed segment: every frame's header, CRC and
//! offset chain, read with `pread` (not through the map), so a media error
//! comes back as an error instead of a `SIGBUS`, and reported before a
//! fetch trips on it.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::error::{Result, StorageError};
use super::frame::{check_frame, check_header, FrameCheck, FORMAT_VERSION, HEADER_LEN};
use super::partition_log::PartitionLog;
use super::scan::continues_after_damage;
use super::segment::segment_path;

/// A closed segment to scrub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrubTarget {
    /// Its `.log` file.
    pub path: PathBuf,
    /// Its base offset.
    pub base_offset: u64,
    /// The offset after its last record.
    pub end_offset: u64,
}

/// A damaged range found in a segment: the same range a read of it names
/// in its `DATA_LOSS` error and `strata verify` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrubFinding {
    /// Byte position of the bad frame.
    pub position: u64,
    /// First offset that cannot be read.
    pub first_offset: u64,
    /// First offset after the damage that can be read again: the base
    /// offset of the next valid frame that continues the log, or the
    /// segment's end offset when none does.
    pub end_offset: u64,
    /// Which check failed.
    pub reason: &'static str,
}

impl PartitionLog {
    /// The closed segments, oldest first (for the scrubber).
    pub fn scrub_targets(&self) -> Vec<ScrubTarget> {
        self.snapshot()
            .sealed
            .iter()
            .map(|s| ScrubTarget {
                path: segment_path(self.dir(), s.base_offset, "log"),
                base_offset: s.base_offset,
                end_offset: s.end_offset,
            })
            .collect()
    }

    /// Records damage found by the scrubber, for `DescribeTopic`. Returns
    /// whether it is new (each pass finds the same damage again).
    pub fn record_scrub_damage(&self, first_offset: u64, end_offset: u64) -> bool {
        let mut found = self.scrub_damage.lock().expect("scrub lock poisoned");
        if found.contains(&(first_offset, end_offset)) {
            return false;
        }
        found.push((first_offset, end_offset));
        super::counters::add_scrub_finding();
        true
    }
}

/// Checks every frame of a closed segment. `pace` is called with the bytes
/// read after each frame (the caller sleeps there to bound the read rate)
/// and returns false to stop early. Returns every damaged range, in order;
/// after each one the check goes on at the next valid frame that continues
/// the log (the rule of [`super::scan::resync`], which reads use too). A
/// deleted file is not a problem.
pub fn scrub_segment(
    target: &ScrubTarget,
    mut pace: impl FnMut(u64) -> bool,
) -> Result<Vec<ScrubFinding>> {
    let file = match File::open(&target.path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StorageError::io(&target.path, e)),
    };
    let len = file
        .metadata()
        .map_err(|e| StorageError::io(&target.path, e))?
        .len();
    let (mut position, mut expected) = (0u64, target.base_offset);
    let mut header = [0u8; HEADER_LEN];
    let mut frame = Vec::new();
    let mut findings = Vec::new();
    while expected < target.end_offset {
        let problem = if position + HEADER_LEN as u64 > len {
            "segment ends before its last offset"
        } else {
            read_at(&file, &target.path, &mut header, position)?;
            match check_header_only(&header) {
                Err(reason) => reason,
                Ok(h) if h.base_offset != expected => "unexpected base offset",
                Ok(h) if position + u64::from(h.frame_len) > len => {
                    "frame extends past the end of the file"
                }
                Ok(h) => {
                    frame.resize(h.frame_len as usize, 0);
                    read_at(&file, &target.path, &mut frame, position)?;
                    match check_frame(&frame) {
                        FrameCheck::Valid(_) => {
                            position += u64::from(h.frame_len);
                            expected = h.next_offset();
                            if !pace(u64::from(h.frame_len)) {
                                return Ok(findings);
                            }
                            continue;
                        }
                        FrameCheck::Zero => "zero bytes",
                        FrameCheck::Invalid(reason) => reason,
                    }
                }
            }
        };
        let resume = resync_file(&file, &target.path, len, position + 1, expected, &mut pace)?;
        let end_offset = match resume {
            Resync::Found(_, base) => base.min(target.end_offset),
            Resync::None => target.end_offset,
            Resync::Stopped => return Ok(findings),
        };
        findings.push(ScrubFinding {
            position,
            first_offset: expected,
            end_offset,
            reason: problem,
        });
        match resume {
            Resync::Found(at, base) => (position, expected) = (at, base),
            _ => return Ok(findings),
        }
    }
    Ok(findings)
}

/// The outcome of [`resync_file`].
enum Resync {
    /// A valid frame at this position, with this base offset.
    Found(u64, u64),
    /// No frame continues the log.
    None,
    /// `pace` asked to stop.
    Stopped,
}

/// Bytes read per step of [`resync_file`].
const RESYNC_CHUNK: usize = 1 << 20;

/// [`super::scan::resync`] over a file read with `pread` in chunks (a
/// segment may be far larger than what the scrubber should hold): the first
/// position ≥ `from` holding a valid frame whose base offset continues a log
/// expecting `next_offset`, no further ahead than the damaged bytes since
/// `from - 1` could have held.
fn resync_file(
    file: &File,
    path: &Path,
    len: u64,
    from: u64,
    next_offset: u64,
    pace: &mut impl FnMut(u64) -> bool,
) -> Result<Resync> {
    let damage_start = from.saturating_sub(1);
    let mut chunk = vec![0u8; RESYNC_CHUNK + HEADER_LEN - 1];
    let mut frame = Vec::new();
    let mut start = from;
    while start + HEADER_LEN as u64 <= len {
        let n = chunk.len().min((len - start) as usize);
        read_at(file, path, &mut chunk[..n], start)?;
        // Candidate positions whose whole header is in this chunk.
        let candidates = (n + 1 - HEADER_LEN).min(RESYNC_CHUNK);
        for i in 0..candidates {
            if chunk[i] != FORMAT_VERSION {
                continue;
            }
            let at = start + i as u64;
            let head: &[u8; HEADER_LEN] = chunk[i..i + HEADER_LEN]
                .try_into()
                .expect("a header-long slice");
            let Ok(h) = check_header_only(head) else {
                continue;
            };
            if !continues_after_damage(h.base_offset, next_offset, damage_start, at)
                || at + u64::from(h.frame_len) > len
            {
                continue;
            }
            frame.resize(h.frame_len as usize, 0);
            read_at(file, path, &mut frame, at)?;
            if matches!(check_frame(&frame), FrameCheck::Valid(v) if v.base_offset == h.base_offset)
            {
                return Ok(Resync::Found(at, h.base_offset));
            }
        }
        if !pace(candidates as u64) {
            return Ok(Resync::Stopped);
        }
        start += candidates as u64;
    }
    Ok(Resync::None)
}

fn read_at(file: &File, path: &Path, buf: &mut [u8], position: u64) -> Result<()> {
    file.read_exact_at(buf, position)
        .map_err(|e| StorageError::io(path, e))
}

/// Decodes a header whose frame is not read yet (length checks only).
fn check_header_only(
    header: &[u8; HEADER_LEN],
) -> std::result::Result<super::frame::FrameHeader, &'static str> {
    // check_header wants the whole frame in the buffer; give it a view that
    // claims the declared length is present by checking the fields directly.
    let mut probe = [0u8; HEADER_LEN];
    probe.copy_from_slice(header);
    let declared = u32::from_le_bytes([probe[4], probe[5], probe[6], probe[7]]);
    if (declared as usize) < HEADER_LEN {
        return Err("frame length shorter than its header");
    }
    // Pretend the frame is exactly a header long to reuse the field checks.
    probe[4..8].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
    match check_header(&probe) {
        FrameCheck::Valid(mut h) => {
            h.frame_len = declared;
            Ok(h)
        }
        FrameCheck::Zero => Err("zero bytes"),
        FrameCheck::Invalid(reason) => Err(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{BatchMeta, LogConfig, MapCache};

    #[test]
    fn finds_a_flip_in_a_closed_segment() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            segment_bytes: 4096,
            ..LogConfig::default()
        };
        let log = PartitionLog::open(dir.path(), config, MapCache::new(2)).unwrap();
        for _ in 0..40 {
            let meta = BatchMeta {
                record_count: 1,
                ..Default::default()
            };
            log.append(&meta, &[&[9u8; 300]]).unwrap();
        }
        let targets = log.scrub_targets();
        assert!(targets.len() > 2);
        let mut paced = 0;
        for t in &targets {
            let found = scrub_segment(t, |n| {
                paced += n;
                true
            })
            .unwrap();
            assert_eq!(found, vec![]);
        }
        assert!(paced > 0);
        let t = &targets[1];
        assert!(t.end_offset - t.base_offset >= 4, "{t:?}");
        let mut bytes = std::fs::read(&t.path).unwrap();
        bytes[364 + 200] ^= 4; // payload of the second frame
        std::fs::write(&t.path, &bytes).unwrap();
        let found = scrub_segment(t, |_| true).unwrap();
        // Only the damaged batch, as a read names it, not the rest of the segment.
        assert_eq!(
            found,
            vec![ScrubFinding {
                position: 364,
                first_offset: t.base_offset + 1,
                end_offset: t.base_offset + 2,
                reason: "CRC mismatch",
            }]
        );
        let read = log.read(t.base_offset + 1, 1 << 20).unwrap_err();
        let crate::storage::StorageError::Corrupt {
            first_offset,
            end_offset,
            ..
        } = read
        else {
            panic!("{read:?}");
        };
        assert_eq!(
            (first_offset, end_offset),
            (t.base_offset + 1, t.base_offset + 2)
        );
        let f = &found[0];
        assert!(log.record_scrub_damage(f.first_offset, f.end_offset));
        assert!(
            !log.record_scrub_damage(f.first_offset, f.end_offset),
            "the same damage found again is not new"
        );
        assert!(log
            .stats()
            .damaged_ranges
            .contains(&(f.first_offset, f.end_offset)));

        // A second damaged batch further on is found too.
        bytes[3 * 364 + 100] ^= 1;
        std::fs::write(&t.path, &bytes).unwrap();
        let found = scrub_segment(t, |_| true).unwrap();
        let ranges: Vec<_> = found
            .iter()
            .map(|f| (f.first_offset, f.end_offset))
            .collect();
        assert_eq!(
            ranges,
            vec![
                (t.base_offset + 1, t.base_offset + 2),
                (t.base_offset + 3, t.base_offset + 4)
            ]
        );

        // Damage in the last batch reaches to the segment's end.
        let last = t.end_offset - t.base_offset - 1;
        bytes[(last as usize) * 364 + 100] ^= 1;
        std::fs::write(&t.path, &bytes).unwrap();
        let found = scrub_segment(t, |_| true).unwrap();
        assert_eq!(
            found.last().map(|f| (f.first_offset, f.end_offset)),
            Some((t.end_offset - 1, t.end_offset))
        );
    }
}
