//! The scrubber's check of a closed segment: every frame's header, CRC and
//! offset chain, read with `pread` (not through the map), so a media error
//! comes back as an error instead of a `SIGBUS`, and reported before a
//! fetch trips on it.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::error::{Result, StorageError};
use super::frame::{check_frame, check_header, FrameCheck, HEADER_LEN};
use super::partition_log::PartitionLog;
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

/// The first problem found in a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrubFinding {
    /// Byte position of the bad frame.
    pub position: u64,
    /// First offset that cannot be read (the damage reaches at most to the
    /// segment's end offset).
    pub first_offset: u64,
    /// The segment's end offset.
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
/// and returns false to stop early. Returns the first problem, if any; a
/// deleted file is not a problem.
pub fn scrub_segment(
    target: &ScrubTarget,
    mut pace: impl FnMut(u64) -> bool,
) -> Result<Option<ScrubFinding>> {
    let file = match File::open(&target.path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StorageError::io(&target.path, e)),
    };
    let len = file
        .metadata()
        .map_err(|e| StorageError::io(&target.path, e))?
        .len();
    let (mut position, mut expected) = (0u64, target.base_offset);
    let mut header = [0u8; HEADER_LEN];
    let mut frame = Vec::new();
    let finding = |position, first_offset, reason| ScrubFinding {
        position,
        first_offset,
        end_offset: target.end_offset,
        reason,
    };
    while expected < target.end_offset {
        if position + HEADER_LEN as u64 > len {
            return Ok(Some(finding(
                position,
                expected,
                "segment ends before its last offset",
            )));
        }
        read_at(&file, &target.path, &mut header, position)?;
        let h = match check_header_only(&header) {
            Ok(h) => h,
            Err(reason) => return Ok(Some(finding(position, expected, reason))),
        };
        if h.base_offset != expected {
            return Ok(Some(finding(position, expected, "unexpected base offset")));
        }
        if position + u64::from(h.frame_len) > len {
            return Ok(Some(finding(
                position,
                expected,
                "frame extends past the end of the file",
            )));
        }
        frame.resize(h.frame_len as usize, 0);
        read_at(&file, &target.path, &mut frame, position)?;
        match check_frame(&frame) {
            FrameCheck::Valid(_) => {}
            FrameCheck::Zero => return Ok(Some(finding(position, expected, "zero bytes"))),
            FrameCheck::Invalid(reason) => return Ok(Some(finding(position, expected, reason))),
        }
        position += u64::from(h.frame_len);
        expected = h.next_offset();
        if !pace(u64::from(h.frame_len)) {
            return Ok(None);
        }
    }
    Ok(None)
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
            assert_eq!(
                scrub_segment(t, |n| {
                    paced += n;
                    true
                })
                .unwrap(),
                None
            );
        }
        assert!(paced > 0);
        let t = &targets[1];
        let mut bytes = std::fs::read(&t.path).unwrap();
        bytes[364 + 200] ^= 4; // payload of the second frame
        std::fs::write(&t.path, &bytes).unwrap();
        let found = scrub_segment(t, |_| true).unwrap().unwrap();
        assert_eq!(
            (found.position, found.first_offset, found.reason),
            (364, t.base_offset + 1, "CRC mismatch")
        );
        assert!(log.record_scrub_damage(found.first_offset, found.end_offset));
        assert!(
            !log.record_scrub_damage(found.first_offset, found.end_offset),
            "the same damage found again is not new"
        );
        assert!(log
            .stats()
            .damaged_ranges
            .contains(&(found.first_offset, found.end_offset)));
    }
}
