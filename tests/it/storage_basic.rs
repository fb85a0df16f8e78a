//! Basic behaviour of `PartitionLog` through its public API.

use std::sync::Arc;

use strata::storage::{BatchMeta, LogConfig, MapCache, PartitionLog, StorageError};

pub fn meta(n: u32, ts: i64) -> BatchMeta {
    BatchMeta {
        record_count: n,
        first_timestamp_ms: ts,
        max_timestamp_ms: ts,
        ..Default::default()
    }
}

pub fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 16 * 1024,
        index_interval_bytes: 256,
        preallocate_chunk_bytes: 4096,
        retention_ms: None,
        ..LogConfig::default()
    }
}

#[test]
fn append_read_roll_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let cache = MapCache::new(4);
    let log = PartitionLog::open(dir.path(), small_config(), cache.clone()).unwrap();
    let mut expected = Vec::new();
    for i in 0..500u64 {
        let payload = format!("payload-{i}-").repeat((i % 7 + 1) as usize);
        let info = log
            .append(&meta(2, 1000 + i as i64), &[payload.as_bytes()])
            .unwrap();
        assert_eq!(info.base_offset, i * 2);
        expected.push(payload);
    }
    assert_eq!(log.high_watermark(), 1000);
    assert!(log.stats().segment_count > 3, "{:?}", log.stats());
    let check = |log: &PartitionLog| {
        for i in 0..500u64 {
            for off in [i * 2, i * 2 + 1] {
                let r = log.read(off, 1).unwrap();
                assert_eq!(r.batches[0].header.base_offset, i * 2);
                assert_eq!(r.skip_records, (off - i * 2) as u32);
                assert_eq!(r.batches[0].payload(), expected[i as usize].as_bytes());
            }
        }
        // Read everything in one go.
        let r = log.read(0, u64::MAX).unwrap();
        assert_eq!(r.batches.len(), 500);
        // Time lookup.
        assert_eq!(
            log.offset_for_timestamp(1250).unwrap().map(|x| x.0),
            Some(500)
        );
        assert_eq!(log.offset_for_timestamp(0).unwrap().map(|x| x.0), Some(0));
        assert_eq!(log.offset_for_timestamp(999_999).unwrap(), None);
    };
    check(&log);
    assert!(matches!(
        log.read(1001, 10),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    assert!(log.read(1000, 10).unwrap().batches.is_empty());
    log.close().unwrap();
    drop(log);
    let log = PartitionLog::open(dir.path(), small_config(), cache).unwrap();
    assert_eq!(log.high_watermark(), 1000);
    check(&log);
    let info = log.append(&meta(1, 5000), &[b"after"]).unwrap();
    assert_eq!(info.base_offset, 1000);
}

#[test]
fn durable_appends_and_retention() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(PartitionLog::open(dir.path(), small_config(), MapCache::new(2)).unwrap());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    let p = format!("t{t}-{i}");
                    let info = log.append(&meta(1, 10), &[p.as_bytes()]).unwrap();
                    log.wait_durable(info.next_offset).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(log.high_watermark(), 200);
    let mut cfg = small_config();
    cfg.retention_bytes = Some(1);
    for _ in 0..400 {
        log.append(&meta(1, 10), &[&[7u8; 100]]).unwrap();
    }
    log.set_config(cfg);
    let before = log.stats();
    let out = log.apply_retention(100).unwrap();
    let after = log.stats();
    assert!(out.segments_deleted > 0);
    assert_eq!(after.segment_count, 1);
    assert!(after.log_start_offset > before.log_start_offset);
    assert!(
        matches!(log.read(0, 10), Err(StorageError::OffsetOutOfRange { log_start, .. }) if log_start == after.log_start_offset)
    );
    assert!(!log
        .read(after.log_start_offset, 10)
        .unwrap()
        .batches
        .is_empty());
}

/// A checkpoint that cannot be written (here: a directory sits where the
/// file goes, as a full disk would refuse it) costs recovery time, never
/// data or availability: flushes and durable appends still succeed, the log
/// stays writable, only `close` reports that the shutdown is not clean, and
/// a reopen recovers every batch by scanning.
#[test]
fn a_failed_checkpoint_write_keeps_the_log_writable() {
    let dir = tempfile::tempdir().unwrap();
    let cache = MapCache::new(4);
    let log = PartitionLog::open(dir.path(), small_config(), cache.clone()).unwrap();
    log.append(&meta(1, 1), &[b"before"]).unwrap();
    log.flush().unwrap();
    let checkpoint = dir.path().join("recovery-checkpoint");
    std::fs::remove_file(&checkpoint).unwrap();
    std::fs::create_dir(&checkpoint).unwrap();
    std::fs::write(checkpoint.join("blocker"), b"x").unwrap();

    let info = log.append(&meta(1, 2), &[b"during"]).unwrap();
    log.flush()
        .expect("the data flush succeeds without a checkpoint");
    log.wait_durable(info.next_offset).unwrap();
    assert!(!log.is_poisoned());
    log.append(&meta(1, 3), &[b"after"]).unwrap();
    let err = log
        .close()
        .expect_err("close must say the checkpoint is missing");
    assert!(err.to_string().contains("checkpoint"), "{err}");
    drop(log);

    std::fs::remove_dir_all(&checkpoint).unwrap();
    let log = PartitionLog::open(dir.path(), small_config(), cache).unwrap();
    assert_eq!(log.high_watermark(), 3);
    let read = log.read(0, u64::MAX).unwrap();
    let payloads: Vec<&[u8]> = read.batches.iter().map(|b| b.payload()).collect();
    assert_eq!(payloads, [&b"before"[..], b"during", b"after"]);
    log.close().unwrap();
}

/// Every `writeback_bytes` appended, the background flusher's call starts
/// write-back instead of waiting for a flush: the append asks for the call
/// (`flush_due`), the call is not a flush (it returns false, and the
/// checkpoint does not move), and nothing about the data changes. With the
/// setting at 0 nothing is asked for.
#[test]
fn write_back_starts_every_writeback_bytes_without_being_a_flush() {
    use strata::storage::checkpoint::Checkpoint;
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 1 << 20,
        flush_bytes: u64::MAX,
        flush_interval_ms: u64::MAX,
        writeback_bytes: 64 * 1024,
        ..small_config()
    };
    let log = PartitionLog::open(dir.path(), config.clone(), MapCache::new(4)).unwrap();
    log.flush().unwrap();
    let payload = vec![7u8; 10_000];
    let mut asked = Vec::new();
    for i in 0..20 {
        asked.push(log.append(&meta(1, i), &[&payload]).unwrap().flush_due);
        if asked[i as usize] {
            assert!(!log.flush_if_due().unwrap(), "write-back is not a flush");
        }
    }
    // 10,064-byte frames: due after the 7th (70,448 bytes), then 7 later.
    let due_at: Vec<usize> = (0..20).filter(|&i| asked[i]).collect();
    assert_eq!(due_at, vec![6, 13]);
    let (c, _) = Checkpoint::read(dir.path(), 16).unwrap();
    assert_eq!(
        c.next_offset, 0,
        "the checkpoint is still the first flush's"
    );
    assert_eq!(log.read(0, 1 << 20).unwrap().batches.len(), 20);
    log.flush().unwrap();
    drop(log);

    let off = LogConfig {
        writeback_bytes: 0,
        ..config
    };
    let log = PartitionLog::open(dir.path(), off, MapCache::new(4)).unwrap();
    for i in 0..20 {
        assert!(!log.append(&meta(1, i), &[&payload]).unwrap().flush_due);
    }
}
