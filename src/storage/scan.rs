//! Walking the frames of a `.log` and telling the end of data from damage.
//!
//! Used by recovery (the unflushed tail of the active segment), by index
//! rebuilds and by readers that meet a bad frame. The rules, from DESIGN.md:
//!
//! - a frame is accepted only when its header checks, its CRC matches and its
//!   base offset is the next expected offset;
//! - at the first frame that is not accepted, look ahead for a later valid
//!   frame whose base offset continues the log (≥ the expected offset, and no
//!   further ahead than the damaged bytes could have held). If there is one,
//!   the bytes in between are *interior damage*: reported, never served, and
//!   the frames after it are kept. If there is none, the data ends there and
//!   any non-zero bytes after it are a *torn tail*.
//! - zero bytes are never a frame (the magic byte is non-zero).

use super::frame::{
    check_frame, check_header, FrameCheck, FrameHeader, FORMAT_VERSION, HEADER_LEN,
};

/// A damaged byte range between two valid frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Damage {
    /// First damaged byte.
    pub position: u64,
    /// Position of the next valid frame.
    pub end_position: u64,
    /// First offset that cannot be served.
    pub first_offset: u64,
    /// Base offset of the next valid frame.
    pub end_offset: u64,
    /// Which check failed at `position`.
    pub reason: &'static str,
}

/// What a scan found, in log order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanItem {
    /// A valid frame at `position`.
    Frame {
        /// Byte position of the frame.
        position: u64,
        /// Its header.
        header: FrameHeader,
    },
    /// Interior damage, followed by a valid frame.
    Damage(Damage),
}

/// Where a scan stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanEnd {
    /// End of the last valid frame: where the next append goes.
    pub position: u64,
    /// Offset the next frame must carry.
    pub next_offset: u64,
    /// Non-zero bytes after `position` (a torn or garbage tail), to be cut.
    pub torn_bytes: u64,
    /// Why the frame at `position` was rejected, when `torn_bytes > 0`.
    pub torn_reason: Option<&'static str>,
}

/// Scans `bytes` (a whole `.log` prefix) from `position`, where a frame
/// carrying `next_offset` is expected, calling `visit` for each item.
pub fn scan(bytes: &[u8], position: u64, next_offset: u64, visit: impl FnMut(ScanItem)) -> ScanEnd {
    scan_inner(bytes, position, next_offset, true, visit)
}

/// Like [`scan`], but the first frame that is not accepted ends the data:
/// nothing after it is kept, even valid frames. For bytes written after the
/// last flush, where write-back order is arbitrary: a later page may have
/// reached the disk while an earlier one did not, and keeping the frames
/// after such a hole would leave a hole in the log instead of a prefix.
pub fn scan_prefix(
    bytes: &[u8],
    position: u64,
    next_offset: u64,
    visit: impl FnMut(ScanItem),
) -> ScanEnd {
    scan_inner(bytes, position, next_offset, false, visit)
}

fn scan_inner(
    bytes: &[u8],
    mut position: u64,
    mut next_offset: u64,
    keep_after_damage: bool,
    mut visit: impl FnMut(ScanItem),
) -> ScanEnd {
    loop {
        let at = position as usize;
        let reason = match check_frame(&bytes[at.min(bytes.len())..]) {
            FrameCheck::Valid(h) if h.base_offset == next_offset => {
                visit(ScanItem::Frame {
                    position,
                    header: h,
                });
                position += u64::from(h.frame_len);
                next_offset = h.next_offset();
                continue;
            }
            FrameCheck::Valid(_) => "unexpected base offset",
            FrameCheck::Zero => "zero bytes",
            FrameCheck::Invalid(reason) => reason,
        };
        let resumed = if keep_after_damage {
            resync(bytes, position + 1, next_offset)
        } else {
            None
        };
        match resumed {
            Some((found, header)) => {
                visit(ScanItem::Damage(Damage {
                    position,
                    end_position: found,
                    first_offset: next_offset,
                    end_offset: header.base_offset,
                    reason,
                }));
                position = found;
                next_offset = header.base_offset;
            }
            None => {
                let torn_bytes = nonzero_extent(&bytes[at.min(bytes.len())..]);
                return ScanEnd {
                    position,
                    next_offset,
                    torn_bytes,
                    torn_reason: (torn_bytes > 0).then_some(reason),
                };
            }
        }
    }
}

/// Walks the frame headers of `bytes` from `position` (where a frame
/// carrying `next_offset` is expected), calling `visit` for each frame whose
/// header checks and continues the offsets, without reading the payloads or
/// checking their CRCs. Stops at the end of `bytes` or at the first header
/// that does not check, and returns where it stopped and the offset expected
/// there.
///
/// For flushed bytes whose frames only need their headers (recovery's walk
/// of the checkpointed prefix for the largest timestamp): one page per
/// frame is read instead of the whole frame, so a restart does not read,
/// and does not keep mapped, what earlier runs wrote. A caller that must
/// go on after a bad header continues with [`scan`] from the returned
/// position.
pub fn walk_headers(
    bytes: &[u8],
    mut position: u64,
    mut next_offset: u64,
    mut visit: impl FnMut(u64, &FrameHeader),
) -> (u64, u64) {
    while let Some(rest) = bytes.get(position as usize..).filter(|r| !r.is_empty()) {
        match check_header(rest) {
            FrameCheck::Valid(h) if h.base_offset == next_offset => {
                visit(position, &h);
                position += u64::from(h.frame_len);
                next_offset = h.next_offset();
            }
            _ => break,
        }
    }
    (position, next_offset)
}

/// Finds the first position ≥ `from` holding a valid frame that can continue
/// a log expecting `next_offset` after damage starting at `from - 1`.
pub fn resync(bytes: &[u8], from: u64, next_offset: u64) -> Option<(u64, FrameHeader)> {
    let damage_start = from.saturating_sub(1);
    let mut at = from as usize;
    while at + HEADER_LEN <= bytes.len() {
        at = find_byte(bytes, at, FORMAT_VERSION)?;
        if let FrameCheck::Valid(h) = check_frame(&bytes[at..]) {
            if continues_after_damage(h.base_offset, next_offset, damage_start, at as u64) {
                return Some((at as u64, h));
            }
        }
        at += 1;
    }
    None
}

/// Whether a valid frame at byte `at` with base offset `base` can be the
/// continuation of a log that expected `next_offset` at `damage_start`.
/// Every record takes at least one byte, so damage of D bytes cannot hide
/// more than D offsets: a frame further ahead is a stray frame-like
/// pattern, not the continuation of this log.
pub fn continues_after_damage(base: u64, next_offset: u64, damage_start: u64, at: u64) -> bool {
    base >= next_offset && base - next_offset <= at - damage_start
}

/// Zero-filled blocks are skipped by comparing whole blocks of this size
/// with [`ZERO_BLOCK`] (one `memcmp`), not byte by byte: after a crash every
/// partition's pre-allocated, zero-filled tail is searched, and with
/// thousands of partitions a byte-wise search made restarts take minutes.
const BLOCK: usize = 4096;
static ZERO_BLOCK: [u8; BLOCK] = [0; BLOCK];

/// The position of the first `byte` (non-zero) at or after `from`.
fn find_byte(bytes: &[u8], from: usize, byte: u8) -> Option<usize> {
    debug_assert_ne!(byte, 0);
    let mut at = from;
    while at < bytes.len() {
        let end = (at + BLOCK).min(bytes.len());
        let block = &bytes[at..end];
        if block.len() < BLOCK || block != ZERO_BLOCK {
            if let Some(i) = block.iter().position(|&b| b == byte) {
                return Some(at + i);
            }
        }
        at = end;
    }
    None
}

/// Number of bytes from the start of `bytes` to the end of its last non-zero byte.
pub fn nonzero_extent(bytes: &[u8]) -> u64 {
    let mut end = bytes.len();
    while end >= BLOCK && bytes[end - BLOCK..end] == ZERO_BLOCK {
        end -= BLOCK;
    }
    bytes[..end]
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |i| i as u64 + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::frame::{encode_header, BatchMeta};

    fn log_of(batches: &[(u64, u32, &[u8])]) -> (Vec<u8>, Vec<u64>) {
        let mut log = Vec::new();
        let mut positions = Vec::new();
        for &(base, n, payload) in batches {
            positions.push(log.len() as u64);
            let meta = BatchMeta {
                record_count: n,
                ..Default::default()
            };
            log.extend_from_slice(&encode_header(&meta, base, &[payload]));
            log.extend_from_slice(payload);
        }
        (log, positions)
    }

    fn collect(bytes: &[u8]) -> (Vec<ScanItem>, ScanEnd) {
        let mut items = Vec::new();
        let end = scan(bytes, 0, 0, |i| items.push(i));
        (items, end)
    }

    #[test]
    fn a_header_walk_visits_what_a_scan_accepts_without_checking_payloads() {
        let (mut log, positions) = log_of(&[(0, 3, b"abc"), (3, 2, b"de"), (5, 4, b"fghi")]);
        let mut walked = Vec::new();
        let end = walk_headers(&log, 0, 0, |p, h| walked.push((p, h.base_offset)));
        assert_eq!(walked, vec![(0, 0), (positions[1], 3), (positions[2], 5)]);
        assert_eq!(end, (log.len() as u64, 9));
        // A damaged payload is not read: the walk goes on where a scan
        // reports damage.
        let payload_byte = positions[1] as usize + HEADER_LEN;
        log[payload_byte] ^= 0xff;
        assert_eq!(walk_headers(&log, 0, 0, |_, _| ()), (log.len() as u64, 9));
        // It starts where it is told and stops at a header that does not
        // check or does not continue the offsets, at a cut, and at zeros.
        assert_eq!(
            walk_headers(&log, positions[1], 3, |_, _| ()),
            (log.len() as u64, 9)
        );
        assert_eq!(
            walk_headers(&log, positions[1], 4, |_, _| ()),
            (positions[1], 4)
        );
        let mut bad = log.clone();
        bad[positions[2] as usize + 1] = 7;
        assert_eq!(walk_headers(&bad, 0, 0, |_, _| ()), (positions[2], 5));
        let cut = &log[..log.len() - 1];
        assert_eq!(walk_headers(cut, 0, 0, |_, _| ()), (positions[2], 5));
        let mut padded = log.clone();
        padded.extend_from_slice(&[0; 100]);
        assert_eq!(
            walk_headers(&padded, 0, 0, |_, _| ()),
            (log.len() as u64, 9)
        );
    }

    #[test]
    fn block_skipping_finds_the_same_bytes_as_a_byte_search() {
        let mut bytes = vec![0u8; 3 * BLOCK + 100];
        assert_eq!(nonzero_extent(&bytes), 0);
        assert_eq!(find_byte(&bytes, 0, 1), None);
        for at in [0, 1, BLOCK - 1, BLOCK, 2 * BLOCK + 7, bytes.len() - 1] {
            let mut b = bytes.clone();
            b[at] = 1;
            assert_eq!(nonzero_extent(&b), at as u64 + 1, "{at}");
            assert_eq!(find_byte(&b, 0, 1), Some(at), "{at}");
            assert_eq!(find_byte(&b, at, 1), Some(at), "{at}");
            assert_eq!(find_byte(&b, at + 1, 1), None, "{at}");
        }
        bytes[5] = 2;
        bytes[BLOCK + 3] = 1;
        assert_eq!(find_byte(&bytes, 0, 1), Some(BLOCK + 3));
    }

    #[test]
    fn clean_log_with_zero_tail() {
        let (mut log, _) = log_of(&[(0, 2, b"ab"), (2, 3, b"cde")]);
        let len = log.len() as u64;
        log.extend_from_slice(&[0; 4096]);
        let (items, end) = collect(&log);
        assert_eq!(items.len(), 2);
        assert_eq!(
            end,
            ScanEnd {
                position: len,
                next_offset: 5,
                torn_bytes: 0,
                torn_reason: None
            }
        );
    }

    #[test]
    fn torn_tail_is_measured() {
        let (log, pos) = log_of(&[(0, 2, b"ab"), (2, 3, b"cdefgh")]);
        let mut torn = log[..log.len() - 2].to_vec();
        torn.extend_from_slice(&[0; 100]);
        let (items, end) = collect(&torn);
        assert_eq!(items.len(), 1);
        assert_eq!(end.position, pos[1]);
        assert_eq!(end.next_offset, 2);
        assert_eq!(end.torn_bytes, log.len() as u64 - 2 - pos[1]);
    }

    #[test]
    fn interior_damage_keeps_later_frames() {
        let (mut log, pos) = log_of(&[(0, 2, b"ab"), (2, 3, b"cdefgh"), (5, 1, b"i")]);
        // A payload byte of the middle frame (its header is 64 bytes).
        log[pos[1] as usize + 66] ^= 0x40;
        let (items, end) = collect(&log);
        assert_eq!(items.len(), 3);
        assert_eq!(
            items[1],
            ScanItem::Damage(Damage {
                position: pos[1],
                end_position: pos[2],
                first_offset: 2,
                end_offset: 5,
                reason: "CRC mismatch"
            })
        );
        assert_eq!(end.next_offset, 6);
        assert_eq!(end.torn_bytes, 0);
    }

    #[test]
    fn zeroed_page_before_valid_frames_is_damage_not_end() {
        let (mut log, pos) = log_of(&[(0, 2, b"ab"), (2, 3, b"cdefgh"), (5, 1, b"i")]);
        for b in &mut log[pos[1] as usize..pos[2] as usize] {
            *b = 0;
        }
        let (items, end) = collect(&log);
        assert!(matches!(
            items[1],
            ScanItem::Damage(Damage {
                first_offset: 2,
                end_offset: 5,
                ..
            })
        ));
        assert_eq!(end.next_offset, 6);
    }
}
