//! Storage micro-benchmarks, each beside a baseline measured in the same run
//! (see BENCHMARKS.md: ratios against a ceiling, because the machine is
//! shared and noisy).
//!
//! | group                      | what                                              | baseline in the same group                |
//! |----------------------------|---------------------------------------------------|-------------------------------------------|
//! | `append_1000x100B`         | `append` of 1,000 × 100-byte records (100 KB)     | memcpy, and CRC-32 + memcpy, of the bytes |
//! | `append_16KiB`             | `append` of one 16 KiB record                     | the same two                              |
//! | `append_16x16KiB`          | `append` of a batch of 16 × 16 KiB records (W4)   | the same two                              |
//! | `durable_append_…_writers` | `append` + `wait_durable` of 100 KB, 1 and 8 logs | `pwrite` + `fdatasync` of the bytes (flush ceiling) |
//! | `sequential_read`          | `read` of a whole log, CRC-checked, payload touched | CRC-32 of the same bytes in memory      |
//! | `index_lookup`             | `IndexFile::lookup_offset`, `read(offset, 1)`     | binary search of a `Vec` of the entries   |
//! | `recovery_full_scan`       | `open` of a log whose active segment has no checkpoint | CRC-32 of the same bytes in memory   |
//! | `recovery_from_checkpoint` | `open` of the same log after a flush              | —                                         |
//! | `open_100_closed_segments` | `open` with 100 closed segments of two sizes      | listing and `stat` of the directory       |
//!
//! Each group ends with a line giving strata's mean throughput as a share
//! of its baseline's. Criterion's own lines give the medians.
//!
//! Data lives in temp dirs and stays in the page cache: these measure CPU
//! and memory cost, not the disk.
//!
//! ```text
//! cargo bench --bench storage                  # ~3 minutes
//! STRATA_BENCH_BIG=1 cargo bench --bench storage   # 1 GiB active segment for recovery (default 256 MiB)
//! cargo bench --bench storage -- --test        # run each once, small data (CI)
//! ```

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, Criterion, SamplingMode, Throughput,
};
use strata::storage::index::{decode_offset_entry, IndexFile, OFFSET_ENTRY_LEN};
use strata::storage::mapped_file::MappedFile;
use strata::storage::segment::segment_path;
use strata::storage::{BatchMeta, LogConfig, MapCache, PartitionLog};

const MIB: u64 = 1 << 20;

/// `--test` mode (criterion runs each benchmark once): use small data.
fn quick() -> bool {
    std::env::args().any(|a| a == "--test")
}

/// Bytes of log for the read and recovery benchmarks.
fn log_bytes() -> u64 {
    if quick() {
        8 * MIB
    } else {
        256 * MIB
    }
}

/// Size of the active segment recovered: 256 MiB by default, 1 GiB with
/// `STRATA_BENCH_BIG=1` (the RELIABILITY.md figure).
fn recovery_bytes() -> u64 {
    if quick() {
        8 * MIB
    } else if std::env::var("STRATA_BENCH_BIG").is_ok_and(|v| v == "1") {
        1024 * MIB
    } else {
        256 * MIB
    }
}

// --- mean throughput per benchmark, for the ratio lines -------------------

static TALLY: Mutex<BTreeMap<String, (u64, Duration)>> = Mutex::new(BTreeMap::new());

fn tally(id: &str, bytes: u64, took: Duration) {
    let mut t = TALLY.lock().expect("tally lock");
    let e = t.entry(id.to_string()).or_default();
    e.0 += bytes;
    e.1 += took;
}

fn gbps(id: &str) -> Option<f64> {
    let t = TALLY.lock().expect("tally lock");
    t.get(id)
        .filter(|(_, d)| !d.is_zero())
        .map(|(b, d)| *b as f64 / d.as_secs_f64() / 1e9)
}

fn ratio_line(what: &str, strata: &str, baselines: &[&str]) {
    let Some(s) = gbps(strata) else { return };
    let mut line = format!("  => {what}: strata {s:.2} GB/s");
    for b in baselines {
        if let Some(v) = gbps(b) {
            line += &format!(" | {b} {v:.2} GB/s (strata = {:.0}%)", 100.0 * s / v);
        }
    }
    println!("{line}");
}

fn group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    g
}

fn meta(records: u32) -> BatchMeta {
    BatchMeta {
        record_count: records,
        first_timestamp_ms: 1_700_000_000_000,
        max_timestamp_ms: 1_700_000_000_000,
        ..BatchMeta::default()
    }
}

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

// --- append --------------------------------------------------------------

/// A log appended to until it holds `limit` bytes, then replaced by a fresh
/// one (outside the timed part), so disk use stays bounded.
struct Appender {
    log: PartitionLog,
    _dir: tempfile::TempDir,
    written: u64,
    limit: u64,
}

impl Appender {
    fn new(limit: u64) -> Appender {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = LogConfig {
            segment_bytes: limit + 64 * MIB,
            retention_ms: None,
            flush_bytes: u64::MAX,
            ..LogConfig::default()
        };
        let log = PartitionLog::open(dir.path(), cfg, MapCache::new(16)).expect("open");
        Appender {
            log,
            _dir: dir,
            written: 0,
            limit,
        }
    }

    /// Appends one batch and returns the time the append took.
    fn append(&mut self, m: &BatchMeta, payload: &[u8]) -> Duration {
        let frame = payload.len() as u64 + 64;
        if self.written + frame > self.limit {
            *self = Appender::new(self.limit);
        }
        let t = Instant::now();
        let info = self.log.append(m, &[payload]).expect("append");
        let took = t.elapsed();
        black_box(info);
        self.written += frame;
        took
    }
}

/// The storage layer's own `MappedFile`, written sequentially with no frame,
/// CRC or index: the cost of first-touch stores into a freshly reserved,
/// shared file map (page faults included). Replaced when full, untimed.
struct RawMap {
    file: MappedFile,
    _dir: tempfile::TempDir,
    at: u64,
    limit: u64,
}

impl RawMap {
    fn new(limit: u64) -> RawMap {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = MappedFile::create(&dir.path().join("raw"), limit, 8 * MIB).expect("create");
        RawMap {
            file,
            _dir: dir,
            at: 0,
            limit,
        }
    }

    fn copy(&mut self, src: &[u8]) -> Duration {
        if self.at + src.len() as u64 > self.limit {
            *self = RawMap::new(self.limit);
        }
        let t = Instant::now();
        self.file
            .reserve(self.at + src.len() as u64)
            .expect("reserve");
        self.file.write(self.at, src);
        let took = t.elapsed();
        self.at += src.len() as u64;
        took
    }
}

/// A pre-faulted buffer the baselines copy into, sequentially, wrapping.
struct Sink {
    buf: Vec<u8>,
    at: usize,
}

impl Sink {
    fn new(len: usize) -> Sink {
        let mut buf = vec![0u8; len];
        for page in buf.chunks_mut(4096) {
            page[0] = 1;
        }
        Sink { buf, at: 0 }
    }

    fn copy(&mut self, src: &[u8], with_crc: bool) -> Duration {
        if self.at + src.len() > self.buf.len() {
            self.at = 0;
        }
        let t = Instant::now();
        if with_crc {
            black_box(crc32fast::hash(src));
        }
        self.buf[self.at..self.at + src.len()].copy_from_slice(src);
        black_box(&self.buf[self.at]);
        let took = t.elapsed();
        self.at += src.len();
        took
    }
}

fn bench_append_shape(c: &mut Criterion, name: &str, records: u32, payload: Vec<u8>) {
    let limit = if quick() { 16 * MIB } else { 256 * MIB };
    let len = payload.len() as u64;
    let m = meta(records);
    let mut g = group(c, name);
    g.throughput(Throughput::Bytes(len));
    let mut appender = Appender::new(limit);
    let id = format!("{name}/strata_append");
    g.bench_function("strata_append", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                total += appender.append(&m, &payload);
            }
            tally(&id, len * iters, total);
            total
        })
    });
    drop(appender);
    let mut sink = Sink::new(limit as usize);
    for (bench, crc) in [("memcpy", false), ("crc32_and_memcpy", true)] {
        let id = format!("{name}/{bench}");
        g.bench_function(bench, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += sink.copy(&payload, crc);
                }
                tally(&id, len * iters, total);
                total
            })
        });
    }
    drop(sink);
    let mut raw = RawMap::new(limit);
    let id = format!("{name}/memcpy_into_fresh_file_map");
    g.bench_function("memcpy_into_fresh_file_map", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                total += raw.copy(&payload);
            }
            tally(&id, len * iters, total);
            total
        })
    });
    g.finish();
    ratio_line(
        name,
        &format!("{name}/strata_append"),
        &[
            &format!("{name}/memcpy"),
            &format!("{name}/crc32_and_memcpy"),
            &format!("{name}/memcpy_into_fresh_file_map"),
        ],
    );
}

fn append(c: &mut Criterion) {
    // 1,000 records of 100 bytes in one batch: the W1 request shape.
    bench_append_shape(c, "append_1000x100B", 1000, pseudo_random(100_000, 1));
    // One 16 KiB record per batch: the W4 record, unbatched (the worst case).
    bench_append_shape(c, "append_16KiB", 1, pseudo_random(16 * 1024, 2));
    // 16 records of 16 KiB per batch: what W4's `strata bench produce
    // --record-size 16384 --batch 16` has the broker append (plus a few
    // bytes of wire keys and lengths per record).
    bench_append_shape(
        c,
        "append_16x16KiB",
        16,
        pseudo_random(16 * (16 * 1024 + 8), 4),
    );
}

// --- durable append --------------------------------------------------------

/// The flush ceiling: `pwrite` of `payload` then `fdatasync`, sequentially
/// into a plain file reserved a chunk at a time as the log reserves its
/// segments (unwritten `fallocate`d blocks), no frame, CRC or index. The
/// file is replaced (untimed) when it reaches `limit`.
struct RawDurable {
    file: std::fs::File,
    _dir: tempfile::TempDir,
    at: u64,
    reserved: u64,
    limit: u64,
}

impl RawDurable {
    fn new(limit: u64) -> RawDurable {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = std::fs::File::create_new(dir.path().join("raw")).expect("create");
        RawDurable {
            file,
            _dir: dir,
            at: 0,
            reserved: 0,
            limit,
        }
    }

    fn write_durably(&mut self, payload: &[u8]) {
        use std::os::unix::fs::FileExt;
        let len = payload.len() as u64;
        if self.at + len > self.limit {
            *self = RawDurable::new(self.limit);
        }
        while self.reserved < self.at + len {
            strata::storage::fs::preallocate(&self.file, self.reserved, MIB).expect("fallocate");
            self.reserved += MIB;
        }
        self.file.write_all_at(payload, self.at).expect("pwrite");
        self.file.sync_data().expect("fdatasync");
        self.at += len;
    }
}

/// Runs `iters` durable writes split over `writers` threads, each with its
/// own state from `make`; returns the wall time.
fn run_writers<T: Send>(
    writers: usize,
    iters: u64,
    make: impl Fn() -> T,
    write: impl Fn(&mut T) + Sync,
) -> Duration {
    let mut states: Vec<T> = (0..writers).map(|_| make()).collect();
    let per = iters.div_ceil(writers as u64);
    let t = Instant::now();
    std::thread::scope(|scope| {
        for state in &mut states {
            let write = &write;
            scope.spawn(move || {
                for _ in 0..per {
                    write(state);
                }
            });
        }
    });
    let took = t.elapsed();
    drop(states);
    took
}

/// Durable appends (`append` then `wait_durable`, W2's path) beside the
/// flush ceiling of BENCHMARKS.md: the same bytes written and
/// `fdatasync`ed with no log around them, in the same run. With one writer
/// and with 8 writers on 8 logs (W2 with 8 partitions: every request waits
/// for its own partition's flush).
fn durable_append(c: &mut Criterion) {
    let limit = if quick() { 8 * MIB } else { 64 * MIB };
    let payload = pseudo_random(100_000, 5);
    let len = payload.len() as u64;
    let m = meta(1000);
    for writers in [1usize, 8] {
        let name = format!("durable_append_1000x100B_{writers}_writers");
        let mut g = group(c, &name);
        g.throughput(Throughput::Bytes(len));
        let id = format!("{name}/strata");
        g.bench_function("strata_append_wait_durable", |b| {
            b.iter_custom(|iters| {
                let took = run_writers(
                    writers,
                    iters,
                    || Appender::new(limit),
                    |a: &mut Appender| {
                        let info = a.log.append(&m, &[&payload]).expect("append");
                        a.log.wait_durable(info.next_offset).expect("durable");
                        a.written += len + 64;
                        if a.written + len + 64 > a.limit {
                            *a = Appender::new(a.limit);
                        }
                    },
                );
                tally(&id, len * iters, took);
                took
            })
        });
        let id = format!("{name}/ceiling");
        g.bench_function("pwrite_fdatasync", |b| {
            b.iter_custom(|iters| {
                let took = run_writers(
                    writers,
                    iters,
                    || RawDurable::new(limit),
                    |r: &mut RawDurable| r.write_durably(&payload),
                );
                tally(&id, len * iters, took);
                took
            })
        });
        g.finish();
        ratio_line(
            &name,
            &format!("{name}/strata"),
            &[&format!("{name}/ceiling")],
        );
    }
}

// --- sequential read -----------------------------------------------------

/// Fills a log in `dir` with `bytes` of batches of `records` records and
/// `payload_len` bytes each; returns the log (still open).
fn fill(dir: &Path, cfg: LogConfig, bytes: u64, records: u32, payload_len: usize) -> PartitionLog {
    let log = PartitionLog::open(dir, cfg, MapCache::new(1024)).expect("open");
    let payload = pseudo_random(payload_len, 3);
    let m = meta(records);
    let mut written = 0;
    while written < bytes {
        log.append(&m, &[&payload]).expect("append");
        written += payload_len as u64 + 64;
    }
    log
}

/// The frame bytes of every segment of the log, concatenated.
fn log_data(log: &PartitionLog) -> Vec<u8> {
    let mut data = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.high_watermark() {
        let r = log.read(offset, 64 * MIB).expect("read");
        for b in &r.batches {
            data.extend_from_slice(b.frame());
            offset = b.header.next_offset();
        }
    }
    data
}

fn sequential_read(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = LogConfig {
        segment_bytes: 64 * MIB,
        retention_ms: None,
        ..LogConfig::default()
    };
    let log = fill(dir.path(), cfg, log_bytes(), 1000, 100_000);
    let data = log_data(&log);
    let bytes = data.len() as u64;
    let mut g = group(c, "sequential_read");
    g.throughput(Throughput::Bytes(bytes))
        .sampling_mode(SamplingMode::Flat);
    g.bench_function("strata_read_crc_checked", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                let mut offset = log.log_start_offset();
                let mut touched = 0u64;
                while offset < log.high_watermark() {
                    let r = log.read(offset, MIB).expect("read");
                    for batch in &r.batches {
                        let p = batch.payload();
                        touched += u64::from(p[0]) + u64::from(p[p.len() - 1]) + p.len() as u64;
                        offset = batch.header.next_offset();
                    }
                }
                black_box(touched);
            }
            let took = t.elapsed();
            tally("sequential_read/strata", bytes * iters, took);
            took
        })
    });
    g.bench_function("crc32_of_same_bytes", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                black_box(crc32fast::hash(black_box(&data)));
            }
            let took = t.elapsed();
            tally("sequential_read/crc32", bytes * iters, took);
            took
        })
    });
    g.finish();
    ratio_line(
        "sequential read",
        "sequential_read/strata",
        &["sequential_read/crc32"],
    );
}

// --- index lookup --------------------------------------------------------

fn index_lookup(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let seg = if quick() { 4 * MIB } else { 64 * MIB };
    let cfg = LogConfig {
        segment_bytes: seg,
        retention_ms: None,
        ..LogConfig::default()
    };
    // 1 KiB frames (10 records of ~96 bytes); one more batch than fits, so
    // the first segment is sealed and trimmed.
    let log = fill(dir.path(), cfg, seg + 1024, 10, 960);
    log.close().expect("close");
    let sealed_end = log
        .read(0, seg)
        .expect("read")
        .batches
        .last()
        .expect("batch")
        .header
        .next_offset();
    let index_path = segment_path(dir.path(), 0, "index");
    let file = MappedFile::open_read_only(&index_path).expect("open index");
    let entries = (file.allocated() / OFFSET_ENTRY_LEN as u64) as u32;
    let index = IndexFile::new(file, OFFSET_ENTRY_LEN, entries);
    let vec: Vec<u32> = std::fs::read(&index_path)
        .expect("read index")
        .chunks_exact(OFFSET_ENTRY_LEN)
        .map(|e| decode_offset_entry(e).relative_offset)
        .collect();
    assert_eq!(vec.len(), entries as usize);
    let targets: Vec<u32> = pseudo_random(4096 * 8, 5)
        .chunks_exact(8)
        .map(|b| (u64::from_le_bytes(b.try_into().expect("8 bytes")) % sealed_end) as u32)
        .collect();
    let mask = targets.len() - 1;
    println!("index_lookup: {entries} entries over {sealed_end} offsets");
    let mut g = group(c, "index_lookup");
    let mut i = 0usize;
    g.bench_function("IndexFile::lookup_offset", |b| {
        b.iter(|| {
            i = (i + 1) & mask;
            black_box(index.lookup_offset(targets[i]))
        })
    });
    g.bench_function("vec_binary_search_baseline", |b| {
        b.iter(|| {
            i = (i + 1) & mask;
            black_box(vec.partition_point(|&r| r <= targets[i]))
        })
    });
    g.bench_function("PartitionLog::read(offset,1)", |b| {
        b.iter(|| {
            i = (i + 1) & mask;
            black_box(
                log.read(u64::from(targets[i]), 1)
                    .expect("read")
                    .batches
                    .len(),
            )
        })
    });
    g.finish();
}

// --- recovery ------------------------------------------------------------

fn recovery(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let size = recovery_bytes();
    let cfg = LogConfig {
        segment_bytes: size + 64 * MIB,
        retention_ms: None,
        ..LogConfig::default()
    };
    // 16 KiB frames, never flushed: no checkpoint, the whole segment is scanned.
    let log = fill(dir.path(), cfg.clone(), size, 1, 16 * 1024 - 64);
    let data = log_data(&log);
    drop(log);
    let bytes = data.len() as u64;
    let mut g = group(c, "recovery_full_scan");
    g.throughput(Throughput::Bytes(bytes))
        .sampling_mode(SamplingMode::Flat);
    g.bench_function("strata_open_no_checkpoint", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                let log =
                    PartitionLog::open(dir.path(), cfg.clone(), MapCache::new(16)).expect("open");
                total += t.elapsed();
                let report = log.recovery_report();
                assert!(
                    !report.from_checkpoint && report.scanned_bytes == bytes,
                    "{report:?}"
                );
                drop(log);
            }
            tally("recovery/strata", bytes * iters, total);
            total
        })
    });
    g.bench_function("crc32_of_same_bytes", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                black_box(crc32fast::hash(black_box(&data)));
            }
            let took = t.elapsed();
            tally("recovery/crc32", bytes * iters, took);
            took
        })
    });
    g.finish();
    ratio_line("recovery scan", "recovery/strata", &["recovery/crc32"]);
    drop(data);

    // The same log after a flush: recovery starts at the checkpoint.
    let log = PartitionLog::open(dir.path(), cfg.clone(), MapCache::new(16)).expect("open");
    log.flush().expect("flush");
    drop(log);
    let mut g = group(c, "recovery_from_checkpoint");
    g.bench_function("strata_open_with_checkpoint", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                let log =
                    PartitionLog::open(dir.path(), cfg.clone(), MapCache::new(16)).expect("open");
                total += t.elapsed();
                assert!(log.recovery_report().from_checkpoint);
                drop(log);
            }
            total
        })
    });
    g.finish();
}

// --- open with 100 closed segments ------------------------------------------

fn open_closed_segments(c: &mut Criterion) {
    let sizes = if quick() {
        [64 * 1024, 256 * 1024]
    } else {
        [MIB, 4 * MIB]
    };
    let mut dirs = Vec::new();
    for seg in sizes {
        let dir = tempfile::tempdir().expect("tempdir");
        // The same pre-allocation chunk for both sizes, so the active
        // segment's files are identical and only the closed data differs.
        let cfg = LogConfig {
            segment_bytes: seg,
            preallocate_chunk_bytes: 64 * 1024,
            retention_ms: None,
            ..LogConfig::default()
        };
        // 100 full segments and one more batch in the active one.
        let per_segment = seg / (16 * 1024);
        let log = fill(
            dir.path(),
            cfg.clone(),
            100 * per_segment * 16 * 1024 + 1,
            1,
            16 * 1024 - 64,
        );
        log.close().expect("close");
        assert_eq!(log.stats().segment_count, 101, "{:?}", log.stats());
        drop(log);
        dirs.push((seg, dir, cfg));
    }
    let mut g = group(c, "open_100_closed_segments");
    for (seg, dir, cfg) in &dirs {
        g.bench_function(format!("strata_open_{}KiB_segments", seg / 1024), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    let log = PartitionLog::open(dir.path(), cfg.clone(), MapCache::new(16))
                        .expect("open");
                    total += t.elapsed();
                    drop(log);
                }
                total
            })
        });
    }
    // One small batch in an active segment with the default 8 MiB
    // pre-allocation: recovery reads the whole zero tail after the
    // checkpoint to find any torn bytes, so this is the per-partition floor
    // of a restart with the default settings.
    let fresh = tempfile::tempdir().expect("tempdir");
    let default_cfg = LogConfig {
        retention_ms: None,
        ..LogConfig::default()
    };
    let log = fill(fresh.path(), default_cfg.clone(), 1, 1, 100);
    log.close().expect("close");
    drop(log);
    g.bench_function("strata_open_one_batch_default_8MiB_preallocation", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                let log = PartitionLog::open(fresh.path(), default_cfg.clone(), MapCache::new(16))
                    .expect("open");
                total += t.elapsed();
                drop(log);
            }
            total
        })
    });
    let (_, dir, _) = &dirs[1];
    g.bench_function("list_and_stat_baseline", |b| {
        b.iter(|| {
            let mut n = 0u64;
            for e in std::fs::read_dir(dir.path()).expect("read dir") {
                n += e.expect("entry").metadata().expect("stat").len();
            }
            black_box(n)
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    append,
    durable_append,
    sequential_read,
    index_lookup,
    recovery,
    open_closed_segments
);
criterion_main!(benches);
