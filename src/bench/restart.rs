//! `strata bench restart` (W8): how long a broker killed with SIGKILL takes
//! to serve again, with a large log on disk.
//!
//! It starts a `strata serve` child ([`super::child`]) on an empty data
//! directory, fills one partition with `--closed-bytes` of records in
//! closed segments and `--active-bytes` in the active one, kills the child
//! with SIGKILL right after the last acknowledgement, and starts it again
//! `--runs` times (each run kills the previous start). Each start is timed
//! from spawn to three points: the listening line, the first `Fetch` at
//! offset 0 answered (the oldest closed segment), and a `Fetch` of the last
//! record answered (the tail of the recovered active segment). Every start
//! must hold every acknowledged record: the high watermark is checked
//! against the records produced, and a fetch that does not start at the
//! offset asked for fails the run.
//!
//! The segment size of the bench's topic is `--active-bytes` plus a
//! headroom ([`FillPlan`]), so that the active segment holds
//! `--active-bytes` without rolling; the closed segments are that size too.
//! What was on disk (segment files and their sizes) is read from the data
//! directory and reported.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;

use super::child::{fresh_data_dir, ChildBroker};
use super::report::{group_digits, json_number, json_string, median_index};
use super::workloads::{self, ProduceSpec, RecordShape};
use super::{BenchError, Progress};
use crate::client::{Client, ConnectOptions, OffsetSpec, TopicConfig};
use crate::proto::v1::Acks;

/// The topic the bench creates in its broker.
const TOPIC: &str = "bench-restart";

/// `strata bench restart`: W8.
#[derive(Debug, Clone, Args)]
pub struct RestartArgs {
    /// Key + value bytes of records to put in closed segments [default:
    /// 10 GiB].
    #[arg(long, value_name = "B", default_value_t = 10 << 30)]
    pub closed_bytes: u64,
    /// Key + value bytes of records in the active segment at the kill
    /// [default: 1 GiB, at least 1 MiB].
    #[arg(long, value_name = "B", default_value_t = 1 << 30)]
    pub active_bytes: u64,
    /// Value bytes per record.
    #[arg(long, value_name = "B", default_value_t = 16384)]
    pub record_size: usize,
    /// Key bytes per record (0 = no key).
    #[arg(long, value_name = "B", default_value_t = 16)]
    pub key_size: usize,
    /// Records per produce request of the fill.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub batch: u32,
    /// Produce requests of the fill in flight at once.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub in_flight: usize,
    /// Kill -9 and restart this many times; the median is reported.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub runs: usize,
    /// Before each restart, write the page cache back and drop it (`sync`,
    /// then `3` into /proc/sys/vm/drop_caches; needs root), so the broker
    /// starts on a cold cache as after a machine restart.
    #[arg(long)]
    pub drop_caches: bool,
    /// Data directory of the child broker [default: a temporary directory,
    /// removed at the end]. Must be empty or not exist.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Print one JSON object on stdout instead of the summary.
    #[arg(long)]
    pub json: bool,
}

/// The three times of one restart, from spawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RestartTimes {
    /// Spawn → `strata listening on`.
    pub listening: Duration,
    /// Spawn → a `Fetch` at offset 0 answered.
    pub first_fetch: Duration,
    /// Spawn → a `Fetch` of the last record answered.
    pub tail_fetch: Duration,
}

/// The log on disk at the kill: its segment files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Layout {
    /// Closed segments (every `.log` file but the last).
    pub closed_segments: u64,
    /// Their bytes on disk.
    pub closed_bytes: u64,
    /// Bytes of the active (last) segment file.
    pub active_bytes: u64,
}

/// What `bench restart` measured.
#[derive(Debug, Clone, PartialEq)]
pub struct RestartReport {
    /// The log at the first kill.
    pub layout: Layout,
    /// Records produced (all acknowledged).
    pub records: u64,
    /// Key + value bytes produced.
    pub bytes: u64,
    /// Wall time of the fill, seconds.
    pub fill_seconds: f64,
    /// Whether the page cache was dropped before each restart.
    pub dropped_caches: bool,
    /// Each restart, in order.
    pub runs: Vec<RestartTimes>,
}

impl RestartReport {
    /// The run with the median time to the first fetch.
    pub fn median(&self) -> Option<RestartTimes> {
        let firsts: Vec<f64> = self
            .runs
            .iter()
            .map(|r| r.first_fetch.as_secs_f64())
            .collect();
        median_index(&firsts).map(|i| self.runs[i])
    }
}

/// How the bench fills its partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FillPlan {
    /// `segment_bytes` of the bench's topic.
    pub segment_bytes: u64,
    /// Closed segments the fill should leave.
    pub closed_segments: u64,
    /// Records to produce.
    pub records: u64,
}

impl FillPlan {
    /// A fill of `closed_bytes` in whole closed segments (rounded to the
    /// nearest, at least one) and then `active_bytes` in the active one,
    /// with `batch` records per produce request, each stored as a frame of
    /// `frame_bytes` (the frame header and the records' framing included:
    /// see [`stored_frame_bytes`]).
    ///
    /// A segment rolls when the next request's batch does not fit, so each
    /// closed segment can end up to one batch short of its size, and the
    /// active one gets what they did not take. The segment size is
    /// therefore `active_bytes` plus a headroom of 1/32 of it or twice one
    /// batch per closed segment, whichever is larger, so that the active
    /// segment never rolls.
    pub fn new(closed_bytes: u64, active_bytes: u64, batch: u64, frame_bytes: u64) -> Self {
        let estimate = active_bytes + active_bytes / 32;
        let closed_segments = ((closed_bytes + estimate / 2) / estimate).max(1);
        let headroom = (active_bytes / 32).max(2 * closed_segments * frame_bytes);
        let segment_bytes = active_bytes + headroom;
        let bytes = closed_segments * segment_bytes + active_bytes;
        FillPlan {
            segment_bytes,
            closed_segments,
            records: bytes.div_ceil(frame_bytes.max(1)) * batch.max(1),
        }
    }
}

/// Bytes one produce request of `batch` records of `shape` takes in a
/// segment: the frame header and the records as the request carries them
/// (the broker stores their wire bytes), per-record lengths and tags
/// included.
pub fn stored_frame_bytes(shape: &RecordShape, batch: u64) -> u64 {
    (crate::storage::frame::HEADER_LEN + workloads::batch_payload(shape, batch).len()) as u64
}

/// Runs `strata bench restart` and prints its report.
///
/// # Errors
/// Bad options, a child broker that cannot start, a failed fill, a
/// restart that lost acknowledged records, or `--drop-caches` without the
/// right to drop them.
pub async fn run(args: RestartArgs) -> Result<(), crate::cli::CliError> {
    let report = execute(&args).await?;
    super::print_report(
        args.json,
        || render_json(&report),
        || render_human(&report, &args),
    )
}

fn check(args: &RestartArgs) -> Result<(), BenchError> {
    let usage = |m: &str| Err(BenchError::Usage(m.to_string()));
    if args.runs == 0 {
        return usage("--runs must be at least 1");
    }
    if args.batch == 0 || args.in_flight == 0 {
        return usage("--batch and --in-flight must be at least 1");
    }
    if args.active_bytes < 1 << 20 {
        return usage("--active-bytes must be at least 1 MiB (1048576), the smallest segment");
    }
    if args.active_bytes > 3 << 30 {
        return usage("--active-bytes must be at most 3 GiB (a segment is at most 4 GiB)");
    }
    if args.record_size + args.key_size == 0 {
        return usage("--record-size and --key-size cannot both be 0");
    }
    Ok(())
}

async fn execute(args: &RestartArgs) -> Result<RestartReport, BenchError> {
    check(args)?;
    let (_temp, data_dir) = fresh_data_dir(args.data_dir.as_deref(), "strata-bench-restart-")?;
    let (mut broker, _) = ChildBroker::start(&data_dir, &[]).await?;
    let shape = RecordShape {
        value_bytes: args.record_size,
        key_bytes: args.key_size,
        key_space: 1000,
    };
    let batch = u64::from(args.batch);
    let plan = FillPlan::new(
        args.closed_bytes,
        args.active_bytes,
        batch,
        stored_frame_bytes(&shape, batch),
    );
    if plan.segment_bytes > u64::from(u32::MAX) {
        return Err(BenchError::Usage(format!(
            "a segment of {} bytes would be needed (over 4 GiB): use a smaller --batch or \
             --closed-bytes",
            plan.segment_bytes
        )));
    }
    let records = plan.records;
    let fill_started = Instant::now();
    fill(&broker, args, shape, &plan).await?;
    let fill_seconds = fill_started.elapsed().as_secs_f64();
    broker.kill().await?;
    let layout = read_layout(&data_dir.join("topics").join(TOPIC).join("0"))?;
    let mut runs = Vec::with_capacity(args.runs);
    for run in 0..args.runs {
        if run > 0 {
            broker.kill().await?;
        }
        if args.drop_caches {
            drop_page_cache()?;
        }
        runs.push(restart_once(&mut broker, records).await?);
    }
    broker.kill().await?;
    Ok(RestartReport {
        layout,
        records,
        bytes: records * shape.record_bytes(),
        fill_seconds,
        dropped_caches: args.drop_caches,
        runs,
    })
}

async fn fill(
    broker: &ChildBroker,
    args: &RestartArgs,
    shape: RecordShape,
    plan: &FillPlan,
) -> Result<(), BenchError> {
    let client = Client::connect(broker.addr()).await?;
    let config = TopicConfig {
        segment_bytes: Some(plan.segment_bytes),
        ..TopicConfig::default()
    };
    client.create_topic(TOPIC, 1, config).await?;
    let channels = workloads::connect(broker.addr(), 2, &ConnectOptions::default()).await?;
    let spec = ProduceSpec {
        topic: TOPIC.to_string(),
        partitions: 1,
        batch: args.batch,
        in_flight: args.in_flight,
        acks: Acks::Leader,
        records: Some(plan.records),
        duration: None,
        rate: None,
        shape,
    };
    let progress = Arc::new(Progress::default());
    workloads::produce(&channels, &spec, &progress).await?;
    Ok(())
}

/// Starts the killed broker again and times it to its listening line, a
/// fetch at offset 0 and a fetch of the last record, checking that all
/// `records` are there.
async fn restart_once(broker: &mut ChildBroker, records: u64) -> Result<RestartTimes, BenchError> {
    let spawned = Instant::now();
    broker.restart().await?;
    let listening = spawned.elapsed();
    let client = Client::connect(broker.addr()).await?;
    let first = client.fetch(TOPIC, 0, 0, 1 << 20, 0).await?;
    let first_fetch = spawned.elapsed();
    if first.batches.first().map(|b| b.base_offset) != Some(0) {
        return Err(BenchError::Failed(
            "after the restart a fetch at offset 0 returned no batch at offset 0".into(),
        ));
    }
    let end = client
        .list_offsets(TOPIC, 0, OffsetSpec::Latest, 0)
        .await?
        .offset;
    if end != records {
        return Err(BenchError::Failed(format!(
            "after the restart the log ends at offset {end}, but {records} records were acknowledged"
        )));
    }
    let tail = client.fetch(TOPIC, 0, records - 1, 1 << 20, 0).await?;
    let tail_fetch = spawned.elapsed();
    let last = tail
        .batches
        .first()
        .map(|b| (b.base_offset, b.records.len()));
    if last != Some((records - 1, 1)) {
        return Err(BenchError::Failed(format!(
            "after the restart a fetch of the last record (offset {}) returned {last:?}",
            records - 1
        )));
    }
    Ok(RestartTimes {
        listening,
        first_fetch,
        tail_fetch,
    })
}

/// The segment files of a partition directory.
fn read_layout(partition_dir: &Path) -> Result<Layout, BenchError> {
    let unreadable = |e: std::io::Error| {
        BenchError::Failed(format!("cannot list {}: {e}", partition_dir.display()))
    };
    let mut segments: Vec<(OsString, u64)> = Vec::new();
    for entry in std::fs::read_dir(partition_dir).map_err(unreadable)? {
        let entry = entry.map_err(unreadable)?;
        let name = entry.file_name();
        if Path::new(&name).extension().is_some_and(|e| e == "log") {
            segments.push((name, entry.metadata().map_err(unreadable)?.len()));
        }
    }
    // Names are zero-padded base offsets: their order is the log's.
    segments.sort();
    let Some((_, active_bytes)) = segments.pop() else {
        return Err(BenchError::Failed(format!(
            "{} holds no segment file",
            partition_dir.display()
        )));
    };
    Ok(Layout {
        closed_segments: segments.len() as u64,
        closed_bytes: segments.iter().map(|(_, len)| len).sum(),
        active_bytes,
    })
}

/// Writes dirty pages back, then drops the clean page cache, dentries and
/// inodes.
fn drop_page_cache() -> Result<(), BenchError> {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "3\n").map_err(|e| {
        BenchError::Failed(format!(
            "--drop-caches: cannot write /proc/sys/vm/drop_caches (it needs root): {e}"
        ))
    })
}

/// Bytes in GiB from 1 GiB up, else in MiB.
fn size_text(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{:.2} GiB", bytes as f64 / f64::from(1u32 << 30))
    } else {
        format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20))
    }
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

fn render_human(report: &RestartReport, args: &RestartArgs) -> String {
    let mut out = String::new();
    let l = &report.layout;
    let _ = writeln!(
        out,
        "workload    restart: {} closed segment(s) ({}) and an active segment of {}, \
         {}-byte values, {}-byte keys; kill -9 after the last acknowledgement, page cache {}",
        l.closed_segments,
        size_text(l.closed_bytes),
        size_text(l.active_bytes),
        args.record_size,
        args.key_size,
        if report.dropped_caches {
            "dropped before each restart"
        } else {
            "kept"
        }
    );
    let _ = writeln!(
        out,
        "fill        {} records, {:.1} MB in {:.1} s",
        group_digits(report.records),
        report.bytes as f64 / 1e6,
        report.fill_seconds
    );
    let list = |f: fn(&RestartTimes) -> Duration| {
        report
            .runs
            .iter()
            .map(|r| secs(f(r)))
            .collect::<Vec<_>>()
            .join(" | ")
    };
    let _ = writeln!(out, "runs        first fetch {}", list(|r| r.first_fetch));
    if let Some(m) = report.median() {
        for (label, time, what) in [
            (
                "listening  ",
                m.listening,
                "spawn → `strata listening on`, median run",
            ),
            (
                "first fetch",
                m.first_fetch,
                "spawn → Fetch at offset 0 answered",
            ),
            (
                "tail fetch ",
                m.tail_fetch,
                "spawn → Fetch of the last record answered",
            ),
        ] {
            let _ = writeln!(out, "{label} {} ({what})", secs(time));
        }
    }
    let _ = writeln!(
        out,
        "records     all {} acknowledged records were there after each of {} restart(s)",
        group_digits(report.records),
        report.runs.len()
    );
    out
}

/// The `--json` output: one object on one line.
///
/// `{"workload": "restart", "closed_segments", "closed_bytes",
/// "active_bytes", "records", "bytes", "fill_seconds", "page_cache":
/// "kept"|"dropped", "listening_ms", "first_fetch_ms", "tail_fetch_ms"}`:
/// the three times of the median run (by first fetch), and `"runs"`, each
/// run's `{"listening_ms", "first_fetch_ms", "tail_fetch_ms"}`.
pub fn render_json(report: &RestartReport) -> String {
    let ms = |d: Duration| json_number(d.as_secs_f64() * 1000.0, 3);
    let l = &report.layout;
    let mut out = format!(
        "{{\"workload\":{},\"closed_segments\":{},\"closed_bytes\":{},\"active_bytes\":{},\
         \"records\":{},\"bytes\":{},\"fill_seconds\":{},\"page_cache\":{}",
        json_string("restart"),
        l.closed_segments,
        l.closed_bytes,
        l.active_bytes,
        report.records,
        report.bytes,
        json_number(report.fill_seconds, 3),
        json_string(if report.dropped_caches {
            "dropped"
        } else {
            "kept"
        }),
    );
    if let Some(m) = report.median() {
        let _ = write!(
            out,
            ",\"listening_ms\":{},\"first_fetch_ms\":{},\"tail_fetch_ms\":{}",
            ms(m.listening),
            ms(m.first_fetch),
            ms(m.tail_fetch)
        );
    }
    out.push_str(",\"runs\":[");
    for (i, r) in report.runs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            "{{\"listening_ms\":{},\"first_fetch_ms\":{},\"tail_fetch_ms\":{}}}",
            ms(r.listening),
            ms(r.first_fetch),
            ms(r.tail_fetch)
        );
    }
    out.push_str("]}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fill_rounds_the_closed_part_to_whole_segments() {
        // 10 GiB is 9.7 segments of 1 GiB + 1/32: 10 closed segments.
        let plan = FillPlan::new(10 << 30, 1 << 30, 16, 16 * 16400);
        let segment = (1 << 30) + (1 << 25);
        assert_eq!(plan.segment_bytes, segment);
        assert_eq!(plan.closed_segments, 10);
        assert_eq!(
            plan.records,
            (10 * segment + (1 << 30)).div_ceil(16 * 16400) * 16
        );
        // Less than half a segment still gets one closed segment.
        assert_eq!(FillPlan::new(0, 1 << 20, 1, 100_000).closed_segments, 1);
    }

    #[test]
    fn the_headroom_covers_a_batch_left_out_of_every_closed_segment() {
        // 4 closed segments of 16 MiB-ish with 256 KiB batches: 1/32 of
        // 16 MiB (512 KiB) is less than the 1 MiB they may leave over.
        let request = 16 * 16400;
        let plan = FillPlan::new(64 << 20, 16 << 20, 16, request);
        assert_eq!(plan.closed_segments, 4);
        assert_eq!(plan.segment_bytes, (16 << 20) + 2 * 4 * request);
        let left_over = plan.closed_segments * request;
        assert!((16 << 20) + left_over < plan.segment_bytes);
    }

    #[test]
    fn the_stored_frame_counts_the_framing_of_every_record() {
        let shape = RecordShape {
            value_bytes: 1000,
            key_bytes: 16,
            key_space: 1000,
        };
        let frame = stored_frame_bytes(&shape, 100);
        let payload = workloads::batch_payload(&shape, 100).len() as u64;
        assert_eq!(frame, crate::storage::frame::HEADER_LEN as u64 + payload);
        // Each record carries a few bytes of tags and lengths beyond its
        // key and value: the old plan counted key + value only.
        assert!(frame > 100 * shape.record_bytes() + 100 * 4, "{frame}");
        // Small records in small segments: the fill is whole batches and
        // ends inside the active segment's size.
        let plan = FillPlan::new(8 << 20, 2 << 20, 100, frame);
        assert_eq!(plan.records % 100, 0);
        let stored = plan.records / 100 * frame;
        let closed_room = plan.closed_segments * plan.segment_bytes;
        assert!(
            stored - closed_room <= (2 << 20) + frame,
            "{stored} {closed_room}"
        );
    }

    #[test]
    fn the_layout_counts_every_log_file_but_the_last_as_closed() {
        let dir = tempfile::tempdir().unwrap();
        for (name, len) in [
            ("00000000000000000000.log", 100),
            ("00000000000000000000.index", 7),
            ("00000000000000000042.log", 50),
            ("00000000000000000042.timeindex", 9),
            ("00000000000000000090.log", 30),
            ("recovery-checkpoint", 5),
        ] {
            std::fs::write(dir.path().join(name), vec![0u8; len]).unwrap();
        }
        assert_eq!(
            read_layout(dir.path()).unwrap(),
            Layout {
                closed_segments: 2,
                closed_bytes: 150,
                active_bytes: 30,
            }
        );
    }

    #[test]
    fn a_partition_without_segments_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_layout(dir.path()).is_err());
    }

    #[test]
    fn the_median_run_is_chosen_by_first_fetch() {
        let t = |ms: u64| Duration::from_millis(ms);
        let run = |first: u64| RestartTimes {
            listening: t(first - 1),
            first_fetch: t(first),
            tail_fetch: t(first + 1),
        };
        let report = RestartReport {
            layout: Layout::default(),
            records: 1,
            bytes: 1,
            fill_seconds: 1.0,
            dropped_caches: false,
            runs: vec![run(300), run(100), run(200)],
        };
        assert_eq!(report.median(), Some(run(200)));
        let json = render_json(&report);
        assert!(json.contains("\"first_fetch_ms\":200.000,"), "{json}");
        assert!(json.ends_with("]}"), "{json}");
    }
}
