//! Recovery of damaged partition directories (RELIABILITY.md §2 scenarios
//! 4, 6, 7, 8, 9): torn and garbage tails, bit flips in the active and in
//! sealed segments, damaged indexes and checkpoints, and crash states built
//! page by page from snapshots of the files.
//!
//! Every case works on a fresh copy of a pristine directory in a temp dir.

use std::collections::BTreeMap;
use std::path::Path;

use strata::storage::checkpoint::{Checkpoint, CHECKPOINT_FILE};
use strata::storage::frame::{check_frame, encode_header, FrameCheck, FORMAT_VERSION, HEADER_LEN};
use strata::storage::segment::{parse_segment_name, segment_path};
use strata::storage::{
    counters, BatchMeta, LogConfig, MapCache, PartitionLog, ReadBatch, StorageError,
};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// SplitMix64: a small deterministic generator (no dependency, fixed seeds).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// One appended batch, as the test remembers it.
#[derive(Debug, Clone)]
struct Entry {
    base: u64,
    meta: BatchMeta,
    payload: Vec<u8>,
}

impl Entry {
    fn next(&self) -> u64 {
        self.base + u64::from(self.meta.record_count)
    }
}

/// Where a frame lies on disk.
#[derive(Debug, Clone, Copy)]
struct Loc {
    segment: u64,
    position: u64,
    len: u64,
    base: u64,
    next: u64,
}

impl Loc {
    fn end(&self) -> u64 {
        self.position + self.len
    }
}

fn config(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        segment_ms: None,
        index_interval_bytes: 256,
        preallocate_chunk_bytes: 4096,
        retention_ms: None,
        retention_bytes: None,
        ..LogConfig::default()
    }
}

fn open(dir: &Path, cfg: &LogConfig) -> PartitionLog {
    PartitionLog::open(dir, cfg.clone(), MapCache::new(2)).expect("open partition log")
}

/// Appends a batch with `len` random payload bytes and a timestamp, recording it.
fn append(log: &PartitionLog, ledger: &mut Vec<Entry>, rng: &mut Rng, len: usize, ts: i64) {
    let payload = rng.bytes(len);
    let records = rng.range(1, 5) as u32;
    let meta = BatchMeta {
        record_count: records,
        first_timestamp_ms: ts - 3,
        max_timestamp_ms: ts,
        producer_id: ledger.len() as u64,
        ..BatchMeta::default()
    };
    let info = log.append(&meta, &[&payload]).expect("append");
    let expected = ledger.last().map_or(log.log_start_offset(), Entry::next);
    assert_eq!(info.base_offset, expected, "offsets must be dense");
    ledger.push(Entry {
        base: info.base_offset,
        meta,
        payload,
    });
}

/// Base offsets of the segments in `dir`, sorted.
fn segment_bases(dir: &Path) -> Vec<u64> {
    let mut v: Vec<u64> = std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|e| parse_segment_name(e.ok()?.file_name().to_str()?, "log"))
        .collect();
    v.sort_unstable();
    v
}

/// Every valid frame of every segment, walking each `.log` from its start.
fn frames_of(dir: &Path) -> Vec<Loc> {
    let mut out = Vec::new();
    for seg in segment_bases(dir) {
        let bytes = std::fs::read(segment_path(dir, seg, "log")).expect("read log");
        let mut pos = 0usize;
        while let FrameCheck::Valid(h) = check_frame(&bytes[pos..]) {
            out.push(Loc {
                segment: seg,
                position: pos as u64,
                len: u64::from(h.frame_len),
                base: h.base_offset,
                next: h.next_offset(),
            });
            pos += h.frame_len as usize;
        }
    }
    out
}

fn copy_dir(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("dir entry");
        if e.file_type().expect("file type").is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).expect("copy file");
        }
    }
}

/// A fresh copy of `pristine`, changed by `damage`.
fn damaged_copy(pristine: &Path, damage: impl FnOnce(&Path)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_dir(pristine, dir.path());
    damage(dir.path());
    dir
}

fn patch(path: &Path, at: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open for patch");
    f.write_all_at(bytes, at).expect("patch");
}

fn set_len(path: &Path, len: u64) {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open for set_len");
    f.set_len(len).expect("set_len");
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

fn nonzero_extent(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |i| i as u64 + 1)
}

fn same_batch(got: &ReadBatch, want: &Entry) {
    assert_eq!(got.header.base_offset, want.base);
    assert_eq!(got.header.meta, want.meta, "header of batch {}", want.base);
    assert!(
        got.payload() == &want.payload[..],
        "payload of batch {} differs",
        want.base
    );
}

/// Reads every offset of `ledger` one by one; offsets inside `damaged` must
/// fail as corrupt with exactly that range, all others must be served intact.
fn check_reads(log: &PartitionLog, ledger: &[Entry], damaged: Option<(u64, u64)>, what: &str) {
    for e in ledger {
        for offset in e.base..e.next() {
            let r = log.read(offset, 1);
            match damaged {
                Some((first, end)) if offset >= first && offset < end => match r {
                    Err(StorageError::Corrupt {
                        first_offset,
                        end_offset,
                        ..
                    }) => assert_eq!(
                        (first_offset, end_offset),
                        (first, end),
                        "{what}: corrupt range at {offset}"
                    ),
                    other => panic!(
                        "{what}: read({offset}) inside damage {first}..{end}: {:?}",
                        other.map(|r| r.batches.len())
                    ),
                },
                _ => {
                    let r = r.unwrap_or_else(|e| panic!("{what}: read({offset}): {e}"));
                    same_batch(&r.batches[0], e);
                    assert_eq!(u64::from(r.skip_records), offset - e.base);
                }
            }
        }
    }
}

/// Reads everything from `from` in one go (stopping at damage).
/// After recovery cut the log at `cut`: an append of `records` records lands
/// there (offsets stay dense), and recovering `dir` again finds nothing more
/// to cut. Returns the reopened log.
fn append_at_the_cut_and_recover_again(
    log: PartitionLog,
    dir: &Path,
    cfg: &LogConfig,
    cut: u64,
    records: u32,
    what: &str,
) -> PartitionLog {
    let info = log
        .append(
            &BatchMeta {
                record_count: records,
                ..BatchMeta::default()
            },
            &[b"after the cut"],
        )
        .expect("append after the cut");
    assert_eq!(info.base_offset, cut, "{what}: offsets stay dense");
    drop(log);
    let log = open(dir, cfg);
    assert_eq!(
        log.high_watermark(),
        cut + u64::from(records),
        "{what}: second recovery"
    );
    assert_eq!(
        log.stats().truncated_bytes,
        0,
        "{what}: nothing more to cut"
    );
    log
}

fn read_all(log: &PartitionLog, from: u64) -> Vec<ReadBatch> {
    log.read(from, u64::MAX).expect("read all").batches
}

/// A pristine log: three or more sealed segments and an active one.
struct Pristine {
    dir: tempfile::TempDir,
    cfg: LogConfig,
    ledger: Vec<Entry>,
}

fn build_pristine(seed: u64, batches: usize, close: bool) -> Pristine {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(16 * 1024);
    let mut rng = Rng(seed);
    let log = open(dir.path(), &cfg);
    let mut ledger = Vec::new();
    let mut ts = 1_000_000i64;
    for i in 0..batches {
        // Mostly increasing timestamps with occasional spikes and dips, so
        // time lookups depend on running maxima, not on the last batch.
        ts += rng.range(0, 50) as i64;
        let t = match i % 11 {
            3 => ts + 10_000 + rng.range(0, 1000) as i64,
            7 => ts - 5_000,
            _ => ts,
        };
        let len = rng.range(20, 600) as usize;
        append(&log, &mut ledger, &mut rng, len, t);
    }
    if close {
        log.close().expect("close");
    }
    drop(log);
    Pristine { dir, cfg, ledger }
}

fn last_segment(dir: &Path) -> u64 {
    *segment_bases(dir).last().expect("a segment")
}

// ---------------------------------------------------------------------------
// (a) Torn tail: cut at every byte inside the last three frames
// ---------------------------------------------------------------------------

#[test]
fn torn_tail_at_every_byte_of_the_last_frames() {
    for checkpoint_early in [false, true] {
        // A log whose last three frames are small, so every cut is cheap.
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = config(16 * 1024);
        let mut rng = Rng(7 + checkpoint_early as u64);
        let log = open(dir.path(), &cfg);
        let mut ledger = Vec::new();
        for i in 0..70 {
            let len = if i >= 67 {
                rng.range(1, 120)
            } else {
                rng.range(50, 500)
            } as usize;
            append(&log, &mut ledger, &mut rng, len, 1000 + i);
            if checkpoint_early && i == 62 {
                log.flush().expect("flush");
            }
        }
        if !checkpoint_early {
            log.close().expect("close");
        }
        drop(log);
        let active = last_segment(dir.path());
        let frames: Vec<Loc> = frames_of(dir.path())
            .into_iter()
            .filter(|f| f.segment == active)
            .collect();
        assert!(
            frames.len() >= 5,
            "active segment has {} frames",
            frames.len()
        );
        let log_path = segment_path(dir.path(), active, "log");
        let original = std::fs::read(&log_path).expect("read log");
        let last3 = &frames[frames.len() - 3..];
        for cut in last3[0].position..last3[2].end() {
            // The first frame that does not fit whole before the cut.
            let torn = frames.iter().find(|f| f.end() > cut).expect("a cut frame");
            let kept: Vec<&Entry> = ledger.iter().filter(|e| e.next() <= torn.base).collect();
            let active_kept: Vec<&Entry> =
                kept.iter().copied().filter(|e| e.base >= active).collect();
            let want_torn = nonzero_extent(&original[torn.position as usize..cut as usize]);
            for zero_tail in [false, true] {
                let case = damaged_copy(dir.path(), |d| {
                    let p = segment_path(d, active, "log");
                    if zero_tail {
                        let len = file_len(&p);
                        patch(&p, cut, &vec![0u8; (len - cut) as usize]);
                    } else {
                        set_len(&p, cut);
                    }
                });
                let what = format!(
                    "cut at {cut} (zero tail: {zero_tail}, early checkpoint: {checkpoint_early})"
                );
                let log = open(case.path(), &cfg);
                assert_eq!(log.high_watermark(), torn.base, "{what}");
                let stats = log.stats();
                assert_eq!(stats.truncated_bytes, want_torn, "{what}");
                assert!(stats.damaged_ranges.is_empty(), "{what}");
                let report = log.recovery_report();
                assert_eq!(report.truncated_bytes, want_torn, "{what}");
                assert_eq!(report.truncation_reason.is_some(), want_torn > 0, "{what}");
                let got = read_all(&log, active);
                assert_eq!(got.len(), active_kept.len(), "{what}");
                for (g, e) in got.iter().zip(&active_kept) {
                    same_batch(g, e);
                }
                assert!(log
                    .read(torn.base, 10)
                    .expect("read at end")
                    .batches
                    .is_empty());
                assert!(matches!(
                    log.read(torn.base + 1, 10),
                    Err(StorageError::OffsetOutOfRange { high_watermark, .. }) if high_watermark == torn.base
                ));
                let log = append_at_the_cut_and_recover_again(
                    log,
                    case.path(),
                    &cfg,
                    torn.base,
                    2,
                    &what,
                );
                let got = read_all(&log, active);
                assert_eq!(got.len(), active_kept.len() + 1, "{what}");
                assert_eq!(got.last().expect("batch").payload(), b"after the cut");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// (b) Garbage tail after the last valid frame
// ---------------------------------------------------------------------------

#[test]
fn garbage_tail_is_cut_back_to_the_last_valid_frame() {
    for (checkpoint_at_end, seed) in [(true, 11u64), (false, 12)] {
        let p = build_pristine(seed, 60, checkpoint_at_end);
        let active = last_segment(p.dir.path());
        let frames: Vec<Loc> = frames_of(p.dir.path())
            .into_iter()
            .filter(|f| f.segment == active)
            .collect();
        let last = *frames.last().expect("a frame");
        let end = last.end();
        let hw = p.ledger.last().expect("entries").next();
        let original = std::fs::read(segment_path(p.dir.path(), active, "log")).expect("read");
        let last_frame = original[last.position as usize..end as usize].to_vec();
        let mut rng = Rng(seed * 1000);
        for case_no in 0..120u64 {
            let len = rng.range(1, 3000) as usize;
            let mut garbage = rng.bytes(len);
            match case_no % 6 {
                // Looks like the start of a frame.
                1 => garbage[0] = FORMAT_VERSION,
                // A stale copy of the last frame: valid CRC, wrong offset.
                2 => {
                    garbage = last_frame.clone();
                    garbage.extend(rng.bytes(len % 300));
                }
                // A frame with the right next offset whose payload is torn.
                3 => {
                    let payload = rng.bytes(len);
                    let meta = BatchMeta {
                        record_count: 1,
                        ..BatchMeta::default()
                    };
                    let mut f = encode_header(&meta, hw, &[&payload]).to_vec();
                    f.extend(&payload);
                    let keep = rng.range(HEADER_LEN as u64, f.len() as u64) as usize;
                    f[keep..].fill(0);
                    *f.last_mut().expect("byte") ^= 0x5a;
                    garbage = f;
                }
                // A valid header for the next offset claiming more bytes than exist.
                4 => {
                    let meta = BatchMeta {
                        record_count: 1,
                        ..BatchMeta::default()
                    };
                    let mut h = encode_header(&meta, hw, &[&[7u8; 100]]).to_vec();
                    h[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
                    garbage = h;
                }
                // Zero bytes first, garbage later.
                5 => garbage[..len / 2].fill(0),
                _ => {}
            }
            let want_torn = nonzero_extent(&garbage);
            let case = damaged_copy(p.dir.path(), |d| {
                patch(&segment_path(d, active, "log"), end, &garbage)
            });
            let what = format!(
                "garbage case {case_no} ({} bytes, checkpoint at end: {checkpoint_at_end})",
                garbage.len()
            );
            let log = open(case.path(), &p.cfg);
            assert_eq!(log.high_watermark(), hw, "{what}");
            assert_eq!(log.stats().truncated_bytes, want_torn, "{what}");
            assert!(log.stats().damaged_ranges.is_empty(), "{what}");
            let got = read_all(&log, active);
            let want: Vec<&Entry> = p.ledger.iter().filter(|e| e.base >= active).collect();
            assert_eq!(got.len(), want.len(), "{what}");
            for (g, e) in got.iter().zip(&want) {
                same_batch(g, e);
            }
            let info = log
                .append(
                    &BatchMeta {
                        record_count: 1,
                        ..BatchMeta::default()
                    },
                    &[b"next"],
                )
                .expect("append");
            assert_eq!(info.base_offset, hw, "{what}");
            drop(log);
            let log = open(case.path(), &p.cfg);
            assert_eq!(log.high_watermark(), hw + 1, "{what}");
            assert_eq!(log.stats().truncated_bytes, 0, "{what}");
        }
    }
}

// ---------------------------------------------------------------------------
// (c) One flipped bit in the middle of the active segment
// ---------------------------------------------------------------------------

#[test]
fn bit_flip_in_the_active_segment_is_interior_damage() {
    let p = build_pristine(21, 60, true);
    let active = last_segment(p.dir.path());
    let frames: Vec<Loc> = frames_of(p.dir.path())
        .into_iter()
        .filter(|f| f.segment == active)
        .collect();
    assert!(frames.len() >= 5);
    let target = frames[frames.len() / 2];
    let hw = p.ledger.last().expect("entries").next();
    for delete_checkpoint in [false, true] {
        for byte in 0..target.len {
            let bit = (byte * 5 + 3) % 8;
            let case = damaged_copy(p.dir.path(), |d| {
                let path = segment_path(d, active, "log");
                let mut b = [0u8];
                use std::os::unix::fs::FileExt;
                std::fs::File::open(&path)
                    .expect("open")
                    .read_exact_at(&mut b, target.position + byte)
                    .expect("read");
                patch(&path, target.position + byte, &[b[0] ^ (1 << bit)]);
                if delete_checkpoint {
                    std::fs::remove_file(d.join(CHECKPOINT_FILE)).expect("remove checkpoint");
                }
            });
            let what = format!("flip of bit {bit} of byte {byte} in frame at {} (checkpoint deleted: {delete_checkpoint})", target.position);
            let before = counters::snapshot();
            let log = open(case.path(), &p.cfg);
            assert_eq!(log.high_watermark(), hw, "{what}: nothing may be cut");
            let stats = log.stats();
            assert_eq!(stats.truncated_bytes, 0, "{what}");
            if delete_checkpoint {
                // The full scan saw the damage.
                assert_eq!(
                    stats.damaged_ranges,
                    vec![(target.base, target.next)],
                    "{what}"
                );
            } else {
                // The scan started at the checkpoint; if it saw anything, it is this.
                assert!(
                    stats
                        .damaged_ranges
                        .iter()
                        .all(|&r| r == (target.base, target.next)),
                    "{what}"
                );
            }
            check_reads(&log, &p.ledger, Some((target.base, target.next)), &what);
            assert!(
                counters::snapshot().crc_failures > before.crc_failures,
                "{what}"
            );
            // A read from the segment start stops before the damage; the
            // rest is served from just after it.
            let head = read_all(&log, active);
            assert_eq!(
                head.last().map(|b| b.header.next_offset()),
                Some(target.base),
                "{what}"
            );
            let tail = read_all(&log, target.next);
            assert_eq!(
                tail.last().map(|b| b.header.next_offset()),
                Some(hw),
                "{what}"
            );
            match log.read(target.base, 1) {
                Err(StorageError::Corrupt {
                    segment_base,
                    position,
                    ..
                }) => {
                    assert_eq!(
                        (segment_base, position),
                        (active, target.position),
                        "{what}"
                    )
                }
                other => panic!("{what}: {:?}", other.map(|r| r.batches.len())),
            }
            // Appends continue after the last frame, not at the damage.
            let info = log
                .append(
                    &BatchMeta {
                        record_count: 1,
                        ..BatchMeta::default()
                    },
                    &[b"x"],
                )
                .expect("append");
            assert_eq!(info.base_offset, hw, "{what}");
        }
    }
}

// ---------------------------------------------------------------------------
// (d) One flipped bit in a sealed segment
// ---------------------------------------------------------------------------

#[test]
fn bit_flip_in_a_sealed_segment_is_reported_never_truncated() {
    let p = build_pristine(31, 200, true);
    let segs = segment_bases(p.dir.path());
    assert!(segs.len() >= 4, "{segs:?}");
    let sealed = segs[1];
    let frames: Vec<Loc> = frames_of(p.dir.path())
        .into_iter()
        .filter(|f| f.segment == sealed)
        .collect();
    let hw = p.ledger.last().expect("entries").next();
    let nearby: Vec<Entry> = p
        .ledger
        .iter()
        .filter(|e| e.base < segs[3])
        .cloned()
        .collect();
    let log_path = |d: &Path| segment_path(d, sealed, "log");
    let size = file_len(&log_path(p.dir.path()));
    // First, middle and last frame of the segment; every byte of each.
    for target in [
        frames[0],
        frames[frames.len() / 2],
        *frames.last().expect("frame"),
    ] {
        for byte in 0..target.len {
            let bit = (byte * 3 + 1) % 8;
            let case = damaged_copy(p.dir.path(), |d| {
                let mut b = std::fs::read(log_path(d)).expect("read");
                b[(target.position + byte) as usize] ^= 1 << bit;
                std::fs::write(log_path(d), b).expect("write");
            });
            let what = format!(
                "flip of bit {bit} of byte {byte} in sealed frame at {}",
                target.position
            );
            let log = open(case.path(), &p.cfg);
            assert_eq!(log.high_watermark(), hw, "{what}");
            assert_eq!(log.stats().truncated_bytes, 0, "{what}");
            // Every offset of the damaged segment and its neighbours; the
            // active segment's batches once each.
            check_reads(&log, &nearby, Some((target.base, target.next)), &what);
            for e in p.ledger.iter().filter(|e| e.base >= segs[3]) {
                same_batch(&log.read(e.base, 1).expect("read").batches[0], e);
            }
            match log.read(target.base, 1) {
                Err(StorageError::Corrupt {
                    segment_base,
                    position,
                    ..
                }) => {
                    assert_eq!(
                        (segment_base, position),
                        (sealed, target.position),
                        "{what}"
                    )
                }
                other => panic!("{what}: {:?}", other.map(|r| r.batches.len())),
            }
            // A read across the damage stops before it.
            let head = read_all(&log, segs[0]);
            assert_eq!(
                head.last().map(|b| b.header.next_offset()),
                Some(target.base),
                "{what}"
            );
            drop(log);
            assert_eq!(
                file_len(&log_path(case.path())),
                size,
                "{what}: the sealed log was changed"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// (e) Damaged indexes are rebuilt from the log
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum IndexDamage {
    Delete,
    TruncateMidEntry,
    TruncateAtEntry,
    ZeroFill,
    Garble,
    GarbleTail,
    PastEnd,
    NonMonotonic,
    ShiftedPositions,
}

fn damage_index(path: &Path, kind: IndexDamage, entry_len: usize, rng: &mut Rng) {
    let bytes = std::fs::read(path).unwrap_or_default();
    let entries = bytes
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |i| i / entry_len + 1);
    let half = (entries / 2) as u64;
    match kind {
        IndexDamage::Delete => {
            let _ = std::fs::remove_file(path);
        }
        IndexDamage::TruncateMidEntry => {
            set_len(path, half * entry_len as u64 + entry_len as u64 / 2 + 1)
        }
        IndexDamage::TruncateAtEntry => set_len(path, half * entry_len as u64),
        IndexDamage::ZeroFill => patch(path, 0, &vec![0u8; bytes.len()]),
        IndexDamage::Garble => patch(path, 0, &rng.bytes(bytes.len().max(64))),
        IndexDamage::GarbleTail => patch(path, half * entry_len as u64, &rng.bytes(entry_len * 3)),
        IndexDamage::PastEnd => {
            // Plausible entries (increasing) that point past the end of the log.
            let mut extra = Vec::new();
            for k in 1..4u32 {
                let mut e = vec![0u8; entry_len];
                if entry_len == 8 {
                    e[0..4].copy_from_slice(&(1_000_000 * k).to_le_bytes());
                    e[4..8].copy_from_slice(&(1_000_000_000 * k).to_le_bytes());
                } else {
                    e[0..8].copy_from_slice(&(i64::MAX / 4 + i64::from(k)).to_le_bytes());
                    e[8..12].copy_from_slice(&(1_000_000 * k).to_le_bytes());
                }
                extra.extend(e);
            }
            patch(path, (entries * entry_len) as u64, &extra);
        }
        IndexDamage::NonMonotonic => {
            // Swap the first half's key field with the second half's: keys go backwards.
            if entries >= 2 {
                let (a, b) = (0usize, (entries - 1) * entry_len);
                let mut v = bytes.clone();
                for i in 0..entry_len {
                    v.swap(a + i, b + i);
                }
                std::fs::write(path, &v).expect("write");
            }
        }
        IndexDamage::ShiftedPositions => {
            // Still increasing and inside the log, but not at frame starts.
            if entry_len == 8 {
                let mut v = bytes.clone();
                for k in 0..entries {
                    let at = k * 8 + 4;
                    let pos = u32::from_le_bytes(v[at..at + 4].try_into().expect("4")) + 8;
                    v[at..at + 4].copy_from_slice(&pos.to_le_bytes());
                }
                std::fs::write(path, &v).expect("write");
            }
        }
    }
}

/// Timestamps worth asking about: every stored one, its neighbours, the extremes.
fn probe_times(ledger: &[Entry]) -> Vec<i64> {
    let mut t: Vec<i64> = ledger
        .iter()
        .flat_map(|e| {
            [
                e.meta.max_timestamp_ms - 1,
                e.meta.max_timestamp_ms,
                e.meta.max_timestamp_ms + 1,
            ]
        })
        .collect();
    t.push(i64::MIN);
    t.push(i64::MAX);
    t.sort_unstable();
    t.dedup();
    t
}

fn time_answers(log: &PartitionLog, times: &[i64]) -> Vec<Option<(u64, i64)>> {
    times
        .iter()
        .map(|&t| log.offset_for_timestamp(t).expect("offset_for_timestamp"))
        .collect()
}

/// Asserts two lists of time-lookup answers agree, naming the first difference.
fn same_answers(
    times: &[i64],
    got: &[Option<(u64, i64)>],
    want: &[Option<(u64, i64)>],
    what: &str,
) {
    if let Some(i) = (0..times.len()).find(|&i| got[i] != want[i]) {
        panic!(
            "{what}: offset_for_timestamp({}) = {:?}, expected {:?} ({} of {} answers differ)",
            times[i],
            got[i],
            want[i],
            (0..times.len()).filter(|&i| got[i] != want[i]).count(),
            times.len()
        );
    }
}

#[test]
fn damaged_indexes_are_rebuilt_from_the_log() {
    let p = build_pristine(41, 140, true);
    let segs = segment_bases(p.dir.path());
    assert!(segs.len() >= 4);
    let times = probe_times(&p.ledger);
    let clean = {
        let log = open(p.dir.path(), &p.cfg);
        let answers = time_answers(&log, &times);
        // Sanity of the reference itself: the first batch at or after each time.
        for (t, a) in times.iter().zip(&answers) {
            let want = p
                .ledger
                .iter()
                .find(|e| e.meta.max_timestamp_ms >= *t)
                .map(|e| (e.base, e.meta.max_timestamp_ms));
            assert_eq!(*a, want, "reference answer for {t}");
        }
        answers
    };
    let kinds = [
        IndexDamage::Delete,
        IndexDamage::TruncateMidEntry,
        IndexDamage::TruncateAtEntry,
        IndexDamage::ZeroFill,
        IndexDamage::Garble,
        IndexDamage::GarbleTail,
        IndexDamage::PastEnd,
        IndexDamage::NonMonotonic,
        IndexDamage::ShiftedPositions,
    ];
    let mut rng = Rng(4242);
    for kind in kinds {
        for (seg_name, seg) in [("sealed", segs[1]), ("active", *segs.last().expect("seg"))] {
            for files in [
                &["index"][..],
                &["timeindex"][..],
                &["index", "timeindex"][..],
            ] {
                let what = format!("{kind:?} of the {seg_name} segment's {files:?}");
                let case = damaged_copy(p.dir.path(), |d| {
                    for ext in files {
                        let len = if *ext == "index" { 8 } else { 12 };
                        damage_index(&segment_path(d, seg, ext), kind, len, &mut rng);
                    }
                });
                let log = open(case.path(), &p.cfg);
                assert_eq!(
                    log.high_watermark(),
                    p.ledger.last().expect("e").next(),
                    "{what}"
                );
                let stats = log.stats();
                assert!(
                    stats.damaged_ranges.is_empty() && stats.truncated_bytes == 0,
                    "{what}: {stats:?}"
                );
                check_reads(&log, &p.ledger, None, &what);
                same_answers(&times, &time_answers(&log, &times), &clean, &what);
                // Keep writing into both a clean copy and the damaged one
                // (through a roll), then compare again, and once more after
                // a restart.
                let reference = damaged_copy(p.dir.path(), |_| {});
                let rlog = open(reference.path(), &p.cfg);
                let mut ledger = p.ledger.clone();
                let mut rledger = p.ledger.clone();
                let mut r1 = Rng(99);
                let mut r2 = Rng(99);
                for i in 0..40 {
                    let ts = if i == 5 { 3_000_000 } else { 1_000_000 + i };
                    append(&log, &mut ledger, &mut r1, 400, ts);
                    append(&rlog, &mut rledger, &mut r2, 400, ts);
                }
                let times2 = probe_times(&ledger);
                same_answers(
                    &times2,
                    &time_answers(&log, &times2),
                    &time_answers(&rlog, &times2),
                    &format!("{what}, after appends"),
                );
                log.close().expect("close");
                drop(log);
                let log = open(case.path(), &p.cfg);
                same_answers(
                    &times2,
                    &time_answers(&log, &times2),
                    &time_answers(&rlog, &times2),
                    &format!("{what}, after restart"),
                );
                check_reads(&log, &ledger, None, &what);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// (f) A bad checkpoint means a full scan, never lost data
// ---------------------------------------------------------------------------

#[test]
fn bad_checkpoints_fall_back_to_a_full_scan() {
    // A stale (earlier, but genuine) checkpoint, kept aside while writing.
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(64 * 1024);
    let mut rng = Rng(51);
    let log = open(dir.path(), &cfg);
    let mut ledger = Vec::new();
    for i in 0..40 {
        append(&log, &mut ledger, &mut rng, 300, 1000 + i);
        if i == 20 {
            log.flush().expect("flush");
        }
    }
    let stale = std::fs::read(dir.path().join(CHECKPOINT_FILE)).expect("checkpoint");
    log.close().expect("close");
    drop(log);
    let (good, producers) = Checkpoint::read(dir.path(), 1024).expect("a valid checkpoint");
    let hw = ledger.last().expect("e").next();
    let frames = frames_of(dir.path());
    let mid = frames[frames.len() / 2];
    let forged = |c: Checkpoint| c.encode_with(&producers);
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("random bytes", rng.bytes(48), false),
        ("random length", rng.bytes(13), false),
        ("empty", Vec::new(), false),
        ("stale but genuine", stale, true),
        (
            "position inside a frame",
            forged(Checkpoint {
                position: mid.position + 10,
                ..good
            }),
            false,
        ),
        (
            "position past the end",
            forged(Checkpoint {
                position: 10 * 1024 * 1024,
                ..good
            }),
            false,
        ),
        (
            "wrong next offset",
            forged(Checkpoint {
                next_offset: good.next_offset + 1,
                ..good
            }),
            false,
        ),
        (
            "wrong frame crc",
            forged(Checkpoint {
                last_frame_crc: good.last_frame_crc ^ 1,
                ..good
            }),
            false,
        ),
        (
            "wrong segment",
            forged(Checkpoint {
                segment_base: good.segment_base + 1,
                ..good
            }),
            false,
        ),
        (
            "a frame that exists, wrong offsets",
            forged(Checkpoint {
                position: mid.end(),
                next_offset: mid.next + 5,
                ..good
            }),
            false,
        ),
    ];
    for (name, bytes, trusted) in cases {
        let case = damaged_copy(dir.path(), |d| {
            std::fs::write(d.join(CHECKPOINT_FILE), &bytes).expect("write")
        });
        let log = open(case.path(), &cfg);
        assert_eq!(log.high_watermark(), hw, "{name}");
        assert_eq!(log.recovery_report().from_checkpoint, trusted, "{name}");
        let stats = log.stats();
        assert!(
            stats.damaged_ranges.is_empty() && stats.truncated_bytes == 0,
            "{name}: {stats:?}"
        );
        check_reads(&log, &ledger, None, name);
        let info = log
            .append(
                &BatchMeta {
                    record_count: 1,
                    ..BatchMeta::default()
                },
                &[b"more"],
            )
            .expect("append");
        assert_eq!(info.base_offset, hw, "{name}");
    }
}

// ---------------------------------------------------------------------------
// (g) Crash states: what the disk may hold after a power cut
// ---------------------------------------------------------------------------

/// The bytes of every file in the directory at one moment.
type Snapshot = BTreeMap<String, Vec<u8>>;

fn snapshot(dir: &Path) -> Snapshot {
    std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name().into_string().ok()?;
            if name.ends_with(".tmp") {
                return None;
            }
            Some((name, std::fs::read(e.path()).ok()?))
        })
        .collect()
}

/// One step of the recorded run.
struct Step {
    files: Snapshot,
    /// Offset after the last batch appended so far.
    next: u64,
    /// Files made durable (fdatasync'd) in this step, by name.
    synced: Vec<String>,
}

/// Records a run of appends, flushes, durable waits and rolls, with a
/// snapshot of every file after each step and which files each step synced.
struct Recording {
    steps: Vec<Step>,
    ledger: Vec<Entry>,
}

fn record_run(seed: u64) -> Recording {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = LogConfig {
        index_interval_bytes: 1024,
        preallocate_chunk_bytes: 16 * 1024,
        ..config(96 * 1024)
    };
    let mut rng = Rng(seed);
    let log = open(dir.path(), &cfg);
    // A checkpoint exists from the start (see the test's doc comment).
    log.flush().expect("flush");
    let seg_files = |base: u64| {
        ["log", "index", "timeindex"]
            .map(|e| format!("{}.{e}", strata::storage::segment::stem(base)))
    };
    let mut steps = vec![Step {
        files: snapshot(dir.path()),
        next: 0,
        synced: seg_files(0)
            .into_iter()
            .chain([CHECKPOINT_FILE.to_string()])
            .collect(),
    }];
    let mut ledger = Vec::new();
    // Segments sealed by rolls and not synced yet: a roll leaves that to the
    // next flush or durable wait, which then syncs (and trims) them and the
    // active segment's three files and writes the checkpoint.
    let mut unsynced_seals: Vec<u64> = Vec::new();
    for i in 0..90 {
        let segs_before = segment_bases(dir.path());
        let len = rng.range(100, 5000) as usize;
        append(&log, &mut ledger, &mut rng, len, 1000 + i);
        let mut synced = Vec::new();
        let segs_after = segment_bases(dir.path());
        if segs_after != segs_before {
            unsynced_seals.push(*segs_before.last().expect("seg"));
        }
        let active = *segs_after.last().expect("seg");
        let full_flush = |synced: &mut Vec<String>, seals: &mut Vec<u64>| {
            for base in seals.drain(..) {
                synced.extend(seg_files(base));
            }
            synced.extend(seg_files(active));
            synced.push(CHECKPOINT_FILE.to_string());
        };
        match rng.range(0, 10) {
            0 => {
                log.flush().expect("flush");
                full_flush(&mut synced, &mut unsynced_seals);
            }
            1 | 2 => {
                log.wait_durable(log.high_watermark())
                    .expect("wait_durable");
                if unsynced_seals.is_empty() {
                    synced.push(seg_files(active)[0].clone());
                } else {
                    full_flush(&mut synced, &mut unsynced_seals);
                }
            }
            _ => {}
        }
        steps.push(Step {
            files: snapshot(dir.path()),
            next: log.high_watermark(),
            synced,
        });
    }
    Recording { steps, ledger }
}

/// Builds in `dir` a disk state a power cut after step `crash` may leave:
/// each file holds, page by page (or, at random, 512-byte sector by
/// sector), the bytes of some step between its last sync and the crash.
/// Returns the offset below which every batch was durable.
fn crash_state(rec: &Recording, crash: usize, rng: &mut Rng, dir: &Path) -> u64 {
    const PAGE: usize = 4096;
    const SECTOR: usize = 512;
    let mut durable = 0u64;
    for name in rec.steps[crash].files.keys() {
        // The last step at or before the crash that synced this file.
        let synced = (0..=crash)
            .rev()
            .find(|&s| rec.steps[s].synced.contains(name));
        let from = synced.unwrap_or(0);
        let version = |s: usize| rec.steps[s].files.get(name).map_or(&[][..], |v| &v[..]);
        if name == CHECKPOINT_FILE {
            // Replaced atomically: the last synced version.
            if let Some(s) = synced {
                std::fs::write(dir.join(name), version(s)).expect("write");
            }
            continue;
        }
        // The file length of some step in range (size changes reach the disk at any time).
        let len_step = rng.range(from as u64, crash as u64 + 1) as usize;
        let len = version(len_step)
            .len()
            .max(synced.map_or(0, |s| version(s).len()));
        let mut out = vec![0u8; len];
        let mut at = 0;
        while at < len {
            let grain = if rng.range(0, 4) == 0 { SECTOR } else { PAGE };
            let end = (at + grain).min(len);
            let s = rng.range(from as u64, crash as u64 + 1) as usize;
            let v = version(s);
            if at < v.len() {
                let e = end.min(v.len());
                out[at..e].copy_from_slice(&v[at..e]);
            }
            at = end;
        }
        std::fs::write(dir.join(name), &out).expect("write");
        if name.ends_with(".log") {
            if let Some(s) = synced {
                // Everything this log held when it was synced is durable.
                let base = parse_segment_name(name, "log").expect("segment name");
                let bytes = version(s);
                let mut pos = 0usize;
                let mut next = base;
                while let FrameCheck::Valid(h) = check_frame(&bytes[pos..]) {
                    pos += h.frame_len as usize;
                    next = h.next_offset();
                }
                durable = durable.max(next);
            }
        }
    }
    durable
}

/// RELIABILITY.md §2 scenario 4 at small scale. A recorded run (appends of
/// 100 B – 5 KiB, random `flush()` and `wait_durable()`, rolls at 96 KiB) is
/// replayed as crash states: every file holds, per 4 KiB page or per 512 B
/// sector, the bytes of any moment between its last sync and the crash.
/// Recovery must give exactly a prefix of the appended batches (no holes,
/// no damaged ranges), containing every durable batch, with every served
/// byte equal to what was appended; recovering twice gives the same bytes.
///
/// The log is flushed once right after it is created, so a checkpoint
/// always exists: without one, recovery cannot tell a page that never
/// reached the disk from interior damage, and keeps frames after it.
///
/// `STRATA_CRASH_STATES` sets the number of states (default 1500; the long
/// run uses 10000).
#[test]
fn crash_states_recover_to_a_durable_prefix() {
    let states: usize = std::env::var("STRATA_CRASH_STATES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1500);
    let cfg = LogConfig {
        index_interval_bytes: 1024,
        preallocate_chunk_bytes: 16 * 1024,
        ..config(96 * 1024)
    };
    let runs = [record_run(61), record_run(62)];
    let mut rng = Rng(6161);
    // (states that lost unflushed batches, that cut bytes, that recovered past the durable point)
    let mut seen = (0usize, 0usize, 0usize);
    for n in 0..states {
        let rec = &runs[n % runs.len()];
        let crash = rng.range(1, rec.steps.len() as u64) as usize;
        let dir = tempfile::tempdir().expect("tempdir");
        let durable = crash_state(rec, crash, &mut rng, dir.path());
        let what = format!("crash state {n} (after step {crash}, durable below {durable})");
        let log = open(dir.path(), &cfg);
        let hw = log.high_watermark();
        assert!(hw >= durable, "{what}: recovered only up to {hw}");
        assert!(
            hw <= rec.steps[crash].next,
            "{what}: recovered {hw} past what was written"
        );
        let stats = log.stats();
        assert!(
            stats.damaged_ranges.is_empty(),
            "{what}: holes {:?}",
            stats.damaged_ranges
        );
        seen.0 += usize::from(hw < rec.steps[crash].next);
        seen.1 += usize::from(stats.truncated_bytes > 0);
        seen.2 += usize::from(hw > durable);
        let kept: Vec<Entry> = rec
            .ledger
            .iter()
            .filter(|e| e.next() <= hw)
            .cloned()
            .collect();
        assert_eq!(
            kept.last().map_or(0, Entry::next),
            hw,
            "{what}: hw inside a batch"
        );
        let got = read_all(&log, 0);
        assert_eq!(got.len(), kept.len(), "{what}: not a prefix");
        for (g, e) in got.iter().zip(&kept) {
            same_batch(g, e);
        }
        drop(got);
        drop(log);
        let first = snapshot(dir.path());
        let log = open(dir.path(), &cfg);
        assert_eq!(log.high_watermark(), hw, "{what}: second recovery differs");
        assert_eq!(
            log.stats().truncated_bytes,
            0,
            "{what}: second recovery cut more"
        );
        drop(log);
        let second = snapshot(dir.path());
        for (name, bytes) in &first {
            if name.ends_with(".log") {
                assert!(
                    second.get(name) == Some(bytes),
                    "{what}: {name} changed on the second recovery"
                );
            }
        }
    }
    eprintln!(
        "{states} crash states: {} lost unflushed batches, {} had bytes cut, {} kept batches past the durable point",
        seen.0, seen.1, seen.2
    );
    // The generator must produce the interesting cases, or the test proves little.
    assert!(
        seen.0 > states / 10 && seen.1 > states / 10 && seen.2 > states / 10,
        "{seen:?}"
    );
}

// ---------------------------------------------------------------------------
// (h) Rolls leave the sealed segment's sync to the next flush
// ---------------------------------------------------------------------------

/// A roll does not sync the segment it seals (the producer would wait for a
/// whole flush interval of data); the next flush does, before it writes the
/// checkpoint naming the new segment. Until then a power cut can take pages
/// of the sealed segment while the next one exists: recovery must then end
/// the log at the first lost batch (a prefix, no hole), delete the segments
/// after it, and report the cut. After a `kill -9` (no page lost) nothing
/// is cut.
#[test]
fn a_power_cut_before_a_sealed_segment_is_synced_ends_the_log_at_the_loss() {
    let cfg = config(64 * 1024);
    let pristine = tempfile::tempdir().expect("tempdir");
    let mut rng = Rng(808);
    let mut ledger = Vec::new();
    let log = open(pristine.path(), &cfg);
    for i in 0..5 {
        append(&log, &mut ledger, &mut rng, 3000, 100 + i);
    }
    log.flush().expect("flush");
    let checkpointed = log.high_watermark();
    let mut i = 5;
    while segment_bases(pristine.path()).len() < 2 {
        append(&log, &mut ledger, &mut rng, 3000, 100 + i);
        i += 1;
    }
    for _ in 0..3 {
        append(&log, &mut ledger, &mut rng, 3000, 100 + i);
        i += 1;
    }
    let (c, _) = Checkpoint::read(pristine.path(), 1024).expect("checkpoint");
    assert_eq!(
        (c.segment_base, c.next_offset),
        (0, checkpointed),
        "the roll wrote no checkpoint: it synced nothing"
    );
    let end = log.high_watermark();
    drop(log); // no close: what a kill -9 leaves
    let frames = frames_of(pristine.path());
    let sealed_end = segment_bases(pristine.path())[1];

    // kill -9: every page is still there; nothing is cut, the sealed
    // segment is trimmed to its data.
    let killed = damaged_copy(pristine.path(), |_| {});
    let log = open(killed.path(), &cfg);
    assert_eq!(log.high_watermark(), end);
    assert_eq!(log.stats().truncated_bytes, 0);
    assert_eq!(segment_bases(killed.path()), vec![0, sealed_end]);
    let sealed_data = frames.iter().filter(|f| f.segment == 0).map(Loc::end).max();
    assert_eq!(
        Some(file_len(&segment_path(killed.path(), 0, "log"))),
        sealed_data
    );
    check_reads(&log, &ledger, None, "kill -9 after a roll");
    drop(log);

    // Power cut: the sealed segment lost the pages from a batch after the
    // checkpoint on (zeros: the blocks were reserved, never written), or
    // holds a torn batch (garbage in place of a page).
    let lost = *frames
        .iter()
        .find(|f| f.segment == 0 && f.base > checkpointed)
        .expect("a batch after the checkpoint in the sealed segment");
    let log_path = |dir: &Path| segment_path(dir, 0, "log");
    let zeroed = damaged_copy(pristine.path(), |d| {
        let len = file_len(&log_path(d));
        patch(
            &log_path(d),
            lost.position,
            &vec![0u8; (len - lost.position) as usize],
        );
    });
    let torn = damaged_copy(pristine.path(), |d| {
        patch(&log_path(d), lost.position + 40, &rng.bytes(300));
    });
    for (what, dir) in [("lost pages", &zeroed), ("torn batch", &torn)] {
        let log = open(dir.path(), &cfg);
        assert_eq!(
            log.high_watermark(),
            lost.base,
            "{what}: the log ends at the loss"
        );
        let stats = log.stats();
        assert!(
            stats.damaged_ranges.is_empty(),
            "{what}: a hole {:?}",
            stats.damaged_ranges
        );
        assert!(stats.truncated_bytes > 0, "{what}: the cut is reported");
        assert_eq!(
            segment_bases(dir.path()),
            vec![0],
            "{what}: the segment after the loss is gone"
        );
        let kept: Vec<Entry> = ledger
            .iter()
            .filter(|e| e.next() <= lost.base)
            .cloned()
            .collect();
        check_reads(&log, &kept, None, what);
        append_at_the_cut_and_recover_again(log, dir.path(), &cfg, lost.base, 1, what);
    }
}

/// A durable wait after a roll syncs the sealed segment first: the
/// checkpoint it writes names the new segment (written only once the
/// sealed one is synced), and the sealed segment is trimmed.
#[test]
fn a_durable_wait_after_a_roll_syncs_the_sealed_segment_first() {
    let cfg = config(64 * 1024);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = Rng(909);
    let mut ledger = Vec::new();
    let log = open(dir.path(), &cfg);
    append(&log, &mut ledger, &mut rng, 3000, 1);
    log.flush().expect("flush");
    let mut ts = 2;
    while segment_bases(dir.path()).len() < 2 {
        append(&log, &mut ledger, &mut rng, 3000, ts);
        ts += 1;
    }
    let new_base = segment_bases(dir.path())[1];
    let before = Checkpoint::read(dir.path(), 1024).expect("checkpoint").0;
    assert_eq!(before.segment_base, 0);
    log.wait_durable(log.high_watermark())
        .expect("wait_durable");
    let after = Checkpoint::read(dir.path(), 1024).expect("checkpoint").0;
    assert_eq!(after.segment_base, new_base);
    assert_eq!(after.next_offset, log.high_watermark());
    let sealed_data = frames_of(dir.path())
        .iter()
        .filter(|f| f.segment == 0)
        .map(Loc::end)
        .max();
    assert_eq!(
        Some(file_len(&segment_path(dir.path(), 0, "log"))),
        sealed_data
    );
    check_reads(&log, &ledger, None, "after a durable wait");
}

/// Resident KiB of this process's mappings of files under `dir`, from
/// `/proc/self/smaps`.
fn resident_kib_under(dir: &Path) -> u64 {
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
    let prefix = dir.to_str().expect("utf-8 path");
    let mut inside = false;
    let mut kib = 0;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            // A mapping's header line: "start-end perms offset dev inode path".
            inside = fields.nth(4).is_some_and(|p| p.starts_with(prefix));
        } else if inside && first == "Rss:" {
            kib += fields
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .expect("Rss kB");
        }
    }
    kib
}

/// What recovery reads (a checkpointed prefix's frames, an unflushed tail,
/// the indexes) stays in the page cache but not in the broker's resident
/// set: with 10,000 partitions it would add up to gigabytes.
#[test]
fn recovery_leaves_no_segment_page_mapped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = LogConfig {
        preallocate_chunk_bytes: 64 * 1024,
        ..config(8 << 20)
    };
    let mut rng = Rng(41);
    let mut ledger = Vec::new();
    let log = open(dir.path(), &cfg);
    for i in 0..256 {
        append(&log, &mut ledger, &mut rng, 8 * 1024, 1_000_000 + i);
        if i == 127 {
            log.flush().expect("flush");
        }
    }
    // A crash: half the data behind a checkpoint, half an unflushed tail.
    drop(log);
    let log = open(dir.path(), &cfg);
    let report = log.recovery_report().clone();
    assert!(report.from_checkpoint, "{report:?}");
    assert!(report.scanned_bytes >= 128 * 8 * 1024, "{report:?}");
    let resident = resident_kib_under(dir.path());
    assert!(
        resident <= 16,
        "{resident} KiB of the partition's files mapped after recovery (2 MiB of data)"
    );
    // Every byte is still served, and reading maps what it reads.
    check_reads(&log, &ledger, None, "after recovery");
    assert!(resident_kib_under(dir.path()) >= 1024);
}
