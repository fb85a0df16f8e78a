//! Model-based property test of `PartitionLog`: random appends, reads at
//! random offsets, rolls (by size and by age), flushes, restarts (clean and
//! without a flush), retention by bytes and by time, and time lookups, all
//! compared against a plain in-memory model of the log.
//!
//! Tiny segments make rolls frequent; a map cache of one or two segments
//! makes evictions frequent; after every step the number of files mapped
//! from the partition directory is checked against the cache's bound.

use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use strata::storage::{BatchMeta, LogConfig, MapCache, PartitionLog, StorageError};

/// Bytes of a frame header (`storage::frame::HEADER_LEN`).
const HEADER: u64 = 64;

#[derive(Debug, Clone)]
enum Op {
    /// Append a batch; the payload is passed in `pieces` slices.
    Append {
        records: u32,
        len: usize,
        ts_delta: i64,
        pieces: u8,
    },
    /// Read at an offset chosen from `pick` (in range or not).
    Read { pick: u64, max_bytes: u64 },
    /// Close (or just drop, when not `clean`) and open again; `verify`
    /// reads everything back at once (which also opens every segment).
    Reopen {
        clean: bool,
        new_cache: bool,
        verify: bool,
    },
    /// `flush()` (checkpoint) or `wait_durable(hw)`.
    Flush { full: bool },
    /// Retention by size with this limit.
    RetainBytes { limit: u64 },
    /// Retention by time: keep 1 s before `last timestamp + now_delta`.
    RetainTime { now_delta: i64 },
    /// `offset_for_timestamp` near a stored batch's timestamp.
    OffsetForTime { pick: u64, delta: i64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => (1u32..20, 0usize..3000, -1000i64..3000, 1u8..4).prop_map(|(records, len, ts_delta, pieces)| {
            Op::Append { records, len, ts_delta, pieces }
        }),
        6 => (any::<u64>(), prop_oneof![1u64..20_000, Just(u64::MAX)])
            .prop_map(|(pick, max_bytes)| Op::Read { pick, max_bytes }),
        1 => (any::<bool>(), any::<bool>(), any::<bool>())
            .prop_map(|(clean, new_cache, verify)| Op::Reopen { clean, new_cache, verify }),
        1 => any::<bool>().prop_map(|full| Op::Flush { full }),
        1 => (0u64..40_000).prop_map(|limit| Op::RetainBytes { limit }),
        1 => (-8000i64..4000).prop_map(|now_delta| Op::RetainTime { now_delta }),
        2 => (any::<u64>(), -2i64..3).prop_map(|(pick, delta)| Op::OffsetForTime { pick, delta }),
    ]
}

#[derive(Debug, Clone)]
struct MBatch {
    base: u64,
    meta: BatchMeta,
    payload: Vec<u8>,
}

impl MBatch {
    fn frame_len(&self) -> u64 {
        HEADER + self.payload.len() as u64
    }
    fn next(&self) -> u64 {
        self.base + u64::from(self.meta.record_count)
    }
}

#[derive(Debug, Clone)]
struct MSeg {
    base: u64,
    /// Index into `Model::batches` of its first batch.
    first: usize,
    bytes: u64,
    max_ts: i64,
    first_ts: Option<i64>,
}

/// The log as a list of batches cut into segments by the documented roll
/// rules (size, age), with retention removing whole segments.
#[derive(Debug)]
struct Model {
    batches: Vec<MBatch>,
    segs: Vec<MSeg>,
    next: u64,
    segment_bytes: u64,
    segment_ms: Option<u64>,
    last_ts: i64,
}

impl Model {
    fn new(config: &LogConfig) -> Model {
        Model {
            batches: Vec::new(),
            segs: vec![MSeg {
                base: 0,
                first: 0,
                bytes: 0,
                max_ts: i64::MIN,
                first_ts: None,
            }],
            next: 0,
            segment_bytes: config.effective_segment_bytes(),
            segment_ms: config.segment_ms,
            last_ts: 1_000_000,
        }
    }

    fn log_start(&self) -> u64 {
        self.segs[0].base
    }

    fn first_live(&self) -> usize {
        self.segs[0].first
    }

    fn live(&self) -> &[MBatch] {
        &self.batches[self.first_live()..]
    }

    fn append(&mut self, meta: BatchMeta, payload: Vec<u8>) -> u64 {
        let frame = HEADER + payload.len() as u64;
        let active = self.segs.last().expect("an active segment");
        let full = active.bytes + frame > self.segment_bytes;
        let old = match (self.segment_ms, active.first_ts) {
            (Some(limit), Some(first)) => {
                meta.max_timestamp_ms.saturating_sub(first) >= limit as i64
            }
            _ => false,
        };
        if active.bytes > 0 && (full || old) {
            self.segs.push(MSeg {
                base: self.next,
                first: self.batches.len(),
                bytes: 0,
                max_ts: i64::MIN,
                first_ts: None,
            });
        }
        let active = self.segs.last_mut().expect("an active segment");
        active.bytes += frame;
        active.max_ts = active.max_ts.max(meta.max_timestamp_ms);
        active.first_ts.get_or_insert(meta.max_timestamp_ms);
        let base = self.next;
        self.next += u64::from(meta.record_count);
        self.batches.push(MBatch {
            base,
            meta,
            payload,
        });
        base
    }

    /// Index of the batch holding `offset` (which must be stored).
    fn batch_at(&self, offset: u64) -> usize {
        let i = self.batches.partition_point(|b| b.base <= offset) - 1;
        assert!(offset < self.batches[i].next());
        i
    }

    /// Segments retention deletes: (count, bytes).
    fn retention(&self, bytes_limit: Option<u64>, time_cutoff: Option<i64>) -> (usize, u64) {
        let total: u64 = self.segs.iter().map(|s| s.bytes).sum();
        let mut remaining = total;
        let mut deleted = (0, 0);
        for seg in &self.segs[..self.segs.len() - 1] {
            let by_bytes = bytes_limit.is_some_and(|l| remaining - seg.bytes >= l);
            let by_time = time_cutoff.is_some_and(|c| seg.max_ts < c);
            if !(by_bytes || by_time) {
                break;
            }
            remaining -= seg.bytes;
            deleted.0 += 1;
            deleted.1 += seg.bytes;
        }
        deleted
    }

    fn first_at_or_after(&self, ts: i64) -> Option<(u64, i64)> {
        self.live()
            .iter()
            .find(|b| b.meta.max_timestamp_ms >= ts)
            .map(|b| (b.base, b.meta.max_timestamp_ms))
    }
}

/// Deterministic payload bytes for the `n`-th append.
fn payload(n: u64, len: usize) -> Vec<u8> {
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn base_config(segment_bytes: u64, segment_ms: Option<u64>) -> LogConfig {
    LogConfig {
        segment_bytes,
        segment_ms,
        index_interval_bytes: 256,
        preallocate_chunk_bytes: 4096,
        retention_ms: None,
        retention_bytes: None,
        ..LogConfig::default()
    }
}

/// Number of mappings of files inside `dir` held by this process.
pub fn mapped_files_under(dir: &Path) -> usize {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
    let needle = dir.to_str().expect("utf-8 temp path");
    maps.lines().filter(|l| l.contains(needle)).count()
}

struct Harness {
    dir: tempfile::TempDir,
    config: LogConfig,
    cache_capacity: usize,
    cache: Arc<MapCache>,
    log: Option<PartitionLog>,
    model: Model,
    appends: u64,
}

impl Harness {
    fn log(&self) -> &PartitionLog {
        self.log.as_ref().expect("log is open")
    }

    fn check_batch(
        &self,
        got: &strata::storage::ReadBatch,
        want: &MBatch,
    ) -> Result<(), TestCaseError> {
        prop_assert_eq!(got.header.base_offset, want.base);
        prop_assert_eq!(got.header.meta, want.meta);
        prop_assert_eq!(u64::from(got.header.frame_len), want.frame_len());
        prop_assert_eq!(got.frame().len() as u64, want.frame_len());
        prop_assert!(
            got.payload() == &want.payload[..],
            "payload of batch at {} differs",
            want.base
        );
        Ok(())
    }

    fn check_read(&self, offset: u64, max_bytes: u64) -> Result<(), TestCaseError> {
        let m = &self.model;
        let (start, hw) = (m.log_start(), m.next);
        let r = self.log().read(offset, max_bytes);
        if offset < start || offset > hw {
            match r {
                Err(StorageError::OffsetOutOfRange {
                    offset: o,
                    log_start,
                    high_watermark,
                }) => {
                    prop_assert_eq!((o, log_start, high_watermark), (offset, start, hw));
                }
                other => prop_assert!(
                    false,
                    "read({}) outside {}..={}: {:?}",
                    offset,
                    start,
                    hw,
                    other.map(|r| r.batches.len())
                ),
            }
            return Ok(());
        }
        let r = r.map_err(|e| TestCaseError::fail(format!("read({offset}, {max_bytes}): {e}")))?;
        prop_assert_eq!(r.high_watermark, hw);
        prop_assert_eq!(r.log_start_offset, start);
        if offset == hw {
            prop_assert!(r.batches.is_empty());
            return Ok(());
        }
        prop_assert!(!r.batches.is_empty());
        let first = m.batch_at(offset);
        prop_assert_eq!(r.skip_records as u64, offset - m.batches[first].base);
        let mut total = 0u64;
        for (k, got) in r.batches.iter().enumerate() {
            let want = m
                .batches
                .get(first + k)
                .ok_or_else(|| TestCaseError::fail("read returned more batches than stored"))?;
            self.check_batch(got, want)?;
            total += want.frame_len();
        }
        // Whole batches up to the byte budget, at least one, and no fewer
        // than fit: the next batch (if any) would have crossed the budget.
        prop_assert!(
            r.batches.len() == 1 || total <= max_bytes,
            "{} bytes over budget {}",
            total,
            max_bytes
        );
        if let Some(next) = m.batches.get(first + r.batches.len()) {
            prop_assert!(
                total.saturating_add(next.frame_len()) > max_bytes,
                "read stopped early: {} bytes read, next frame {} bytes, budget {}",
                total,
                next.frame_len(),
                max_bytes
            );
        }
        Ok(())
    }

    fn check_invariants(&self) -> Result<(), TestCaseError> {
        let log = self.log();
        let m = &self.model;
        prop_assert_eq!(log.high_watermark(), m.next);
        prop_assert_eq!(log.log_start_offset(), m.log_start());
        let stats = log.stats();
        prop_assert_eq!(
            stats.segment_count as usize,
            m.segs.len(),
            "segments: {:?}",
            m.segs
        );
        prop_assert_eq!(
            stats.size_bytes,
            m.segs.iter().map(|s| s.bytes).sum::<u64>()
        );
        prop_assert!(stats.damaged_ranges.is_empty());
        prop_assert_eq!(stats.truncated_bytes, 0);
        prop_assert!(self.cache.open_count() <= self.cache_capacity);
        // The active segment's three maps, three per cached sealed segment,
        // and three of the segment the last roll sealed until the next flush
        // syncs and trims it.
        let maps = mapped_files_under(self.dir.path());
        prop_assert!(
            maps <= 3 * (self.cache_capacity + 2),
            "{} files mapped with a cache of {}",
            maps,
            self.cache_capacity
        );
        Ok(())
    }

    /// Reads every stored batch one by one, and everything at once.
    fn check_all(&self) -> Result<(), TestCaseError> {
        let m = &self.model;
        for b in m.live() {
            let r = self
                .log()
                .read(b.base, 1)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(r.batches.len(), 1);
            self.check_batch(&r.batches[0], b)?;
        }
        let all = self
            .log()
            .read(m.log_start(), u64::MAX)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(all.batches.len(), m.live().len());
        Ok(())
    }

    fn pick_offset(&self, pick: u64) -> u64 {
        let (start, hw) = (self.model.log_start(), self.model.next);
        match pick % 10 {
            0 => start.saturating_sub(1 + pick / 10 % 3),
            1 => hw + 1 + pick / 10 % 3,
            2 => hw,
            _ => start + (pick / 10) % (hw - start + 1),
        }
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Append {
                records,
                len,
                ts_delta,
                pieces,
            } => {
                let ts = self.model.last_ts + ts_delta;
                self.model.last_ts = ts;
                let meta = BatchMeta {
                    record_count: records,
                    first_timestamp_ms: ts - 5,
                    max_timestamp_ms: ts,
                    producer_id: self.appends,
                    ..BatchMeta::default()
                };
                let bytes = payload(self.appends, len);
                self.appends += 1;
                // Split the payload into `pieces` slices.
                let cuts: Vec<usize> = (1..pieces as usize)
                    .map(|i| len * i / pieces as usize)
                    .collect();
                let mut parts: Vec<&[u8]> = Vec::new();
                let mut from = 0;
                for &c in &cuts {
                    parts.push(&bytes[from..c]);
                    from = c;
                }
                parts.push(&bytes[from..]);
                let info = self
                    .log()
                    .append(&meta, &parts)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let base = self.model.append(meta, bytes);
                prop_assert_eq!(info.base_offset, base);
                prop_assert_eq!(info.next_offset, self.model.next);
            }
            Op::Read { pick, max_bytes } => {
                let offset = self.pick_offset(pick);
                self.check_read(offset, max_bytes)?;
            }
            Op::Reopen {
                clean,
                new_cache,
                verify,
            } => {
                let log = self.log.take().expect("log is open");
                if clean {
                    log.close()
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                }
                drop(log);
                if new_cache {
                    self.cache = MapCache::new(self.cache_capacity);
                }
                let log =
                    PartitionLog::open(self.dir.path(), self.config.clone(), self.cache.clone())
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                self.log = Some(log);
                if verify {
                    self.check_all()?;
                }
            }
            Op::Flush { full } => {
                let r = if full {
                    self.log().flush()
                } else {
                    self.log().wait_durable(self.model.next)
                };
                r.map_err(|e| TestCaseError::fail(e.to_string()))?;
            }
            Op::RetainBytes { limit } => {
                let mut cfg = self.config.clone();
                cfg.retention_bytes = Some(limit);
                self.log().set_config(cfg);
                let want = self.model.retention(Some(limit), None);
                let out = self.log().apply_retention(self.model.last_ts);
                self.log().set_config(self.config.clone());
                let out = out.map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!((out.segments_deleted as usize, out.bytes_deleted), want);
                self.model.segs.drain(..want.0);
            }
            Op::RetainTime { now_delta } => {
                let mut cfg = self.config.clone();
                cfg.retention_ms = Some(1000);
                self.log().set_config(cfg);
                let now = self.model.last_ts + now_delta;
                let want = self.model.retention(None, Some(now - 1000));
                let out = self.log().apply_retention(now);
                self.log().set_config(self.config.clone());
                let out = out.map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!((out.segments_deleted as usize, out.bytes_deleted), want);
                self.model.segs.drain(..want.0);
            }
            Op::OffsetForTime { pick, delta } => {
                let live = self.model.live();
                let ts = if live.is_empty() {
                    self.model.last_ts + delta
                } else {
                    live[(pick % live.len() as u64) as usize]
                        .meta
                        .max_timestamp_ms
                        + delta
                };
                let got = self
                    .log()
                    .offset_for_timestamp(ts)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(
                    got,
                    self.model.first_at_or_after(ts),
                    "offset_for_timestamp({})",
                    ts
                );
            }
        }
        self.check_invariants()
    }
}

fn run(
    ops: &[Op],
    segment_bytes: u64,
    segment_ms: Option<u64>,
    cache_capacity: usize,
) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = base_config(segment_bytes, segment_ms);
    let cache = MapCache::new(cache_capacity);
    let log = PartitionLog::open(dir.path(), config.clone(), cache.clone())
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let model = Model::new(&config);
    let mut h = Harness {
        dir,
        config,
        cache_capacity,
        cache,
        log: Some(log),
        model,
        appends: 0,
    };
    for op in ops {
        h.apply(op)?;
    }
    h.check_all()?;
    // A final clean restart must change nothing.
    h.apply(&Op::Reopen {
        clean: true,
        new_cache: true,
        verify: true,
    })?;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, max_shrink_iters: 2000, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_model(
        ops in proptest::collection::vec(op(), 1..120),
        segment_bytes in 4096u64..16_384,
        segment_ms in proptest::option::of(2000u64..20_000),
        cache_capacity in 1usize..3,
    ) {
        run(&ops, segment_bytes, segment_ms, cache_capacity)?;
    }
}

/// A fixed sequence that exercises every kind of step at least once, so a
/// failure here is easy to read before the random cases run.
#[test]
fn model_smoke() {
    let mut ops = Vec::new();
    for i in 0..60u64 {
        ops.push(Op::Append {
            records: 1 + (i % 5) as u32,
            len: (i as usize * 97) % 2500,
            ts_delta: (i as i64 % 7 - 2) * 300,
            pieces: 1 + (i % 3) as u8,
        });
        if i % 9 == 0 {
            ops.push(Op::Read {
                pick: i * 31,
                max_bytes: 5000,
            });
            ops.push(Op::OffsetForTime { pick: i, delta: 1 });
        }
        if i % 17 == 0 {
            ops.push(Op::Reopen {
                clean: i % 2 == 0,
                new_cache: i % 3 == 0,
                verify: i % 4 == 0,
            });
        }
    }
    ops.push(Op::RetainBytes { limit: 20_000 });
    ops.push(Op::RetainTime { now_delta: -3000 });
    ops.push(Op::Read {
        pick: 0,
        max_bytes: 1,
    });
    run(&ops, 8192, Some(5000), 1).unwrap();
}
