//! Idempotent-producer sequences in the partition log: retries are answered
//! with the original offsets, gaps and stale epochs are refused with nothing
//! written, and the state survives a clean close, a crash and segment rolls.

use strata::storage::producers::SequenceError;
use strata::storage::{BatchMeta, LogConfig, MapCache, PartitionLog, StorageError};

fn meta(producer_id: u64, epoch: u32, seq: i32, count: u32) -> BatchMeta {
    BatchMeta {
        record_count: count,
        first_timestamp_ms: 1000 + i64::from(seq),
        max_timestamp_ms: 1000 + i64::from(seq),
        producer_id,
        producer_epoch: epoch,
        base_sequence: seq,
        attributes: 0,
    }
}

fn tiny_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 256,
        preallocate_chunk_bytes: 4096,
        retention_ms: None,
        ..LogConfig::default()
    }
}

fn open(dir: &std::path::Path, config: &LogConfig) -> PartitionLog {
    PartitionLog::open(dir, config.clone(), MapCache::new(8)).expect("open")
}

/// Appends `batches` batches of 2 records for producer 7 from sequence 0.
fn append_batches(log: &PartitionLog, batches: i32) -> Vec<u64> {
    (0..batches)
        .map(|i| {
            let info = log
                .append(&meta(7, 0, i * 2, 2), &[format!("batch-{i}").as_bytes()])
                .expect("append");
            assert!(!info.duplicate);
            info.base_offset
        })
        .collect()
}

/// Resends the producer's last batches and checks each is a duplicate with
/// its original offset, and that nothing was appended.
fn assert_retries_are_duplicates(log: &PartitionLog, bases: &[u64]) {
    let hw = log.high_watermark();
    let n = bases.len() as i32;
    for i in (n - 5).max(0)..n {
        let info = log
            .append(&meta(7, 0, i * 2, 2), &[b"retry"])
            .expect("a retry is answered");
        assert!(info.duplicate, "batch {i} was stored twice");
        assert_eq!(info.base_offset, bases[i as usize]);
        assert_eq!(info.next_offset, bases[i as usize] + 2);
    }
    assert_eq!(log.high_watermark(), hw, "a retry appended records");
}

#[test]
fn retries_gaps_and_fencing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), &LogConfig::default());
    let bases = append_batches(&log, 8);
    assert_retries_are_duplicates(&log, &bases);
    let hw = log.high_watermark();
    // A gap: sequence 18 while 16 is expected.
    match log.append(&meta(7, 0, 18, 1), &[b"x"]) {
        Err(StorageError::Sequence(SequenceError::OutOfOrder {
            expected: 16,
            received: 18,
            ..
        })) => {}
        other => panic!("{other:?}"),
    }
    // Older than the window.
    assert!(matches!(
        log.append(&meta(7, 0, 0, 2), &[b"x"]),
        Err(StorageError::Sequence(SequenceError::StaleDuplicate { .. }))
    ));
    // A new epoch restarts the sequence and fences the old one.
    log.append(&meta(7, 1, 0, 1), &[b"epoch 1"])
        .expect("new epoch");
    assert!(matches!(
        log.append(&meta(7, 0, 16, 1), &[b"x"]),
        Err(StorageError::Sequence(SequenceError::Fenced { .. }))
    ));
    assert_eq!(
        log.high_watermark(),
        hw + 1,
        "refused batches wrote records"
    );
    // Other producers and plain appends are independent.
    log.append(&meta(8, 0, 0, 1), &[b"other"])
        .expect("other producer");
    assert!(
        log.append(&meta(9, 0, 40, 1), &[b"x"]).is_err(),
        "an unknown producer must start at sequence 0"
    );
    log.append(&meta(0, 0, 0, 1), &[b"plain"]).expect("plain");
    log.append(&meta(0, 0, 0, 1), &[b"plain"])
        .expect("plain twice");
}

#[test]
fn producer_state_survives_a_clean_close() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), &LogConfig::default());
    let bases = append_batches(&log, 6);
    log.close().expect("close");
    drop(log);
    let log = open(dir.path(), &LogConfig::default());
    assert_retries_are_duplicates(&log, &bases);
    log.append(&meta(7, 0, 12, 1), &[b"next"])
        .expect("in order");
}

#[test]
fn producer_state_survives_a_crash_after_a_flush() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path(), &LogConfig::default());
    let mut bases = append_batches(&log, 3);
    log.flush().expect("flush");
    // Unflushed, then the process "dies": no close, no checkpoint.
    for i in 3..7 {
        bases.push(
            log.append(&meta(7, 0, i * 2, 2), &[b"after the flush"])
                .expect("append")
                .base_offset,
        );
    }
    drop(log);
    let log = open(dir.path(), &LogConfig::default());
    assert_retries_are_duplicates(&log, &bases);
}

#[test]
fn producer_state_survives_rolls_and_a_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = tiny_segments();
    let log = open(dir.path(), &config);
    let payload = vec![b'p'; 900];
    let mut bases = Vec::new();
    for i in 0..30 {
        bases.push(
            log.append(&meta(7, 0, i * 2, 2), &[&payload])
                .expect("append")
                .base_offset,
        );
        if i == 10 {
            log.flush().expect("flush");
        }
    }
    assert!(log.stats().segment_count > 5, "{:?}", log.stats());
    // Roll right before the crash: the active segment holds one batch.
    drop(log);
    let log = open(dir.path(), &config);
    assert_retries_are_duplicates(&log, &bases);
    log.append(&meta(7, 0, 60, 1), &[b"next"])
        .expect("in order");
}

/// The checkpoints of the rolls could not be written (a directory blocks the
/// temporary file, as a full disk would), so after a crash the newest
/// checkpoint on disk predates two closed segments: recovery replays the
/// batches of those segments into the producer table. Producer 7's last five
/// batches are all in closed segments (producer 8 wrote the active one), so
/// without the replay the table still expected batch 3 and its retry was
/// stored a second time.
#[test]
fn producer_state_survives_rolls_whose_checkpoints_failed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = tiny_segments();
    let log = open(dir.path(), &config);
    let payload = vec![b'p'; 900];
    let mut bases = Vec::new();
    // 4 frames fill a 4 KiB segment: batches 0-3, then 4-7, then producer 8.
    for i in 0..8 {
        if i == 3 {
            log.flush().expect("flush");
            let tmp = dir.path().join("recovery-checkpoint.tmp");
            std::fs::create_dir(&tmp).expect("block checkpoint writes");
            std::fs::write(tmp.join("blocker"), b"x").expect("blocker");
        }
        bases.push(
            log.append(&meta(7, 0, i * 2, 2), &[&payload])
                .expect("append")
                .base_offset,
        );
    }
    for i in 0..3 {
        log.append(&meta(8, 0, i, 1), &[&payload]).expect("append");
    }
    assert_eq!(log.stats().segment_count, 3, "{:?}", log.stats());
    // The crash: no close.
    drop(log);
    std::fs::remove_dir_all(dir.path().join("recovery-checkpoint.tmp")).expect("unblock");
    let log = open(dir.path(), &config);
    assert_retries_are_duplicates(&log, &bases);
    log.append(&meta(7, 0, 16, 1), &[b"next"])
        .expect("in order");
}
