//! `strata bench partitions` (W7): a broker with 10,000 partitions.
//!
//! It starts a `strata serve` child ([`super::child`]) on an empty data
//! directory and measures, in order:
//! 1. creating one topic of `--partitions` partitions;
//! 2. producing `--records` round-robin over them, one partition per
//!    request (as `bench produce` does), `--runs` times, alternating with
//!    the same records to a topic of 8 partitions on the same broker (W1's
//!    8-partition shape, re-created before each of its runs): the target is
//!    a ratio between the two medians, measured side by side;
//! 3. the broker's memory after the runs (`VmRSS`, `VmHWM`, `RssAnon`);
//! 4. a kill -9 and a restart: the time from spawn to the listening line
//!    (recovery done) and the memory then, and the time until every
//!    partition answered a `Fetch` at offset 0 with the high watermark its
//!    acknowledged records give (checked, partition by partition), and the
//!    memory after that: the fetches map each partition's first batch, so
//!    its file pages (`RssFile`) grow by about one batch per partition.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use tokio::task::JoinSet;

use super::child::{fresh_data_dir, ChildBroker, ProcessMemory};
use super::report::{
    group_digits, json_number, json_string, median_run, LatencySummary, RunFigures,
};
use super::workloads::{self, ProduceSpec, RecordShape};
use super::{BenchError, Progress};
use crate::client::{Client, ConnectOptions, Connection, TopicConfig};
use crate::proto::v1::Acks;

/// The topic of `--partitions` partitions.
const TOPIC: &str = "bench-partitions";
/// The 8-partition topic the comparison runs write.
const W1_TOPIC: &str = "bench-partitions-w1";
/// Partitions of the comparison topic (W1's 8-partition shape).
const W1_PARTITIONS: u32 = 8;
/// Fetches in flight at once while checking every partition after the
/// restart.
const CHECK_CONCURRENCY: usize = 64;

/// `strata bench partitions`: W7.
#[derive(Debug, Clone, Args)]
pub struct PartitionsArgs {
    /// Partitions of the topic (at most the broker's
    /// `limits.max_partitions_per_topic`, 10,000 by default).
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub partitions: u32,
    /// Records per run, produced round-robin by request.
    #[arg(long, value_name = "N", default_value_t = 10_000_000)]
    pub records: u64,
    /// Value bytes per record.
    #[arg(long, value_name = "B", default_value_t = 100)]
    pub record_size: usize,
    /// Key bytes per record (0 = no key).
    #[arg(long, value_name = "B", default_value_t = 16)]
    pub key_size: usize,
    /// Records per produce request.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub batch: u32,
    /// Produce requests in flight at once.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub in_flight: usize,
    /// HTTP/2 connections the load is spread over.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub connections: usize,
    /// Produce runs of each topic (alternating); the medians are reported.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub runs: usize,
    /// Data directory of the child broker [default: a temporary directory,
    /// removed at the end]. Must be empty or not exist.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Print one JSON object on stdout instead of the summary.
    #[arg(long)]
    pub json: bool,
}

/// What `bench partitions` measured.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionsReport {
    /// Partitions of the topic.
    pub partitions: u32,
    /// Wall time of the topic's creation.
    pub create: Duration,
    /// Each produce run to the many-partition topic.
    pub runs: Vec<RunFigures>,
    /// Each produce run to the 8-partition topic.
    pub w1_runs: Vec<RunFigures>,
    /// The broker's memory after the produce runs.
    pub memory: Option<ProcessMemory>,
    /// Spawn → listening line, after the kill -9.
    pub restart_listening: Duration,
    /// The broker's memory at its listening line after the restart:
    /// recovery done, nothing fetched yet.
    pub memory_after_recovery: Option<ProcessMemory>,
    /// Spawn → every partition answered a fetch.
    pub restart_serving: Duration,
    /// The broker's memory after every partition was fetched.
    pub memory_after_restart: Option<ProcessMemory>,
}

impl PartitionsReport {
    /// The median runs of both topics.
    pub fn medians(&self) -> Option<(RunFigures, RunFigures)> {
        Some((median_run(&self.runs)?.0, median_run(&self.w1_runs)?.0))
    }

    /// Median records/s of the many-partition topic over that of the
    /// 8-partition one.
    pub fn ratio_to_w1(&self) -> Option<f64> {
        let (many, w1) = self.medians()?;
        let base = w1.records_per_sec();
        (base > 0.0).then(|| many.records_per_sec() / base)
    }
}

/// Records each partition gets when `records` are produced in requests of
/// `batch` (the last one shorter), request `i` going to partition `i %
/// partitions`: the rule of `bench produce`.
pub fn round_robin_counts(records: u64, batch: u32, partitions: u32) -> Vec<u64> {
    let batch = u64::from(batch.max(1));
    let partitions = u64::from(partitions.max(1));
    let requests = records.div_ceil(batch);
    let (full_rounds, extra) = (requests / partitions, requests % partitions);
    let mut counts: Vec<u64> = (0..partitions)
        .map(|p| (full_rounds + u64::from(p < extra)) * batch)
        .collect();
    if requests > 0 {
        // The last request carries only what was left.
        counts[((requests - 1) % partitions) as usize] -= requests * batch - records;
    }
    counts
}

/// Runs `strata bench partitions` and prints its report.
///
/// # Errors
/// Bad options, a child broker that cannot start, a failed run, or a
/// restart that lost acknowledged records.
pub async fn run(args: PartitionsArgs) -> Result<(), crate::cli::CliError> {
    let report = execute(&args).await?;
    super::print_report(
        args.json,
        || render_json(&report),
        || render_human(&report, &args),
    )
}

fn check(args: &PartitionsArgs) -> Result<(), BenchError> {
    let usage = |m: &str| Err(BenchError::Usage(m.to_string()));
    if args.partitions == 0 || args.records == 0 || args.runs == 0 {
        return usage("--partitions, --records and --runs must be at least 1");
    }
    if args.batch == 0 || args.in_flight == 0 || args.connections == 0 {
        return usage("--batch, --in-flight and --connections must be at least 1");
    }
    if args.record_size + args.key_size == 0 {
        return usage("--record-size and --key-size cannot both be 0");
    }
    Ok(())
}

async fn execute(args: &PartitionsArgs) -> Result<PartitionsReport, BenchError> {
    check(args)?;
    let (_temp, data_dir) = fresh_data_dir(args.data_dir.as_deref(), "strata-bench-partitions-")?;
    let (mut broker, _) = ChildBroker::start(&data_dir, &[]).await?;
    let client = Client::connect(broker.addr()).await?;
    let created = Instant::now();
    client
        .create_topic(TOPIC, args.partitions, TopicConfig::default())
        .await?;
    let create = created.elapsed();
    let channels =
        workloads::connect(broker.addr(), args.connections, &ConnectOptions::default()).await?;
    let mut runs = Vec::with_capacity(args.runs);
    let mut w1_runs = Vec::with_capacity(args.runs);
    for _ in 0..args.runs {
        runs.push(produce(&channels, args, TOPIC, args.partitions).await?);
        // The comparison starts each run on an empty log, as `bench
        // produce` does.
        let _ = client.delete_topic(W1_TOPIC).await;
        client
            .create_topic(W1_TOPIC, W1_PARTITIONS, TopicConfig::default())
            .await?;
        w1_runs.push(produce(&channels, args, W1_TOPIC, W1_PARTITIONS).await?);
    }
    let memory = broker.memory();
    drop((client, channels));
    broker.kill().await?;
    let spawned = Instant::now();
    broker.restart().await?;
    let restart_listening = spawned.elapsed();
    let memory_after_recovery = broker.memory();
    let per_run = round_robin_counts(args.records, args.batch, args.partitions);
    let expected: Vec<u64> = per_run.iter().map(|n| n * args.runs as u64).collect();
    check_every_partition(&Client::connect(broker.addr()).await?, &expected).await?;
    let restart_serving = spawned.elapsed();
    let memory_after_restart = broker.memory();
    broker.kill().await?;
    Ok(PartitionsReport {
        partitions: args.partitions,
        create,
        runs,
        w1_runs,
        memory,
        restart_listening,
        memory_after_recovery,
        restart_serving,
        memory_after_restart,
    })
}

async fn produce(
    channels: &[Connection],
    args: &PartitionsArgs,
    topic: &str,
    partitions: u32,
) -> Result<RunFigures, BenchError> {
    let spec = ProduceSpec {
        topic: topic.to_string(),
        partitions,
        batch: args.batch,
        in_flight: args.in_flight,
        acks: Acks::Leader,
        records: Some(args.records),
        duration: None,
        rate: None,
        shape: RecordShape {
            value_bytes: args.record_size,
            key_bytes: args.key_size,
            key_space: 1000,
        },
    };
    workloads::produce(channels, &spec, &Arc::new(Progress::default())).await
}

/// Fetches every partition at offset 0, [`CHECK_CONCURRENCY`] at a time,
/// and fails unless each one's high watermark is `expected[partition]` and
/// a partition with records returns its first batch at offset 0.
async fn check_every_partition(client: &Client, expected: &[u64]) -> Result<(), BenchError> {
    let mut pending = JoinSet::new();
    let mut next = 0usize;
    loop {
        while pending.len() < CHECK_CONCURRENCY && next < expected.len() {
            let (client, partition, want) = (client.clone(), next as u32, expected[next]);
            pending.spawn(async move {
                let got = client.fetch(TOPIC, partition, 0, 1 << 10, 0).await?;
                let first = got.batches.first().map(|b| b.base_offset);
                if got.high_watermark != want || (want > 0 && first != Some(0)) {
                    return Err(BenchError::Failed(format!(
                        "after the restart partition {partition} ends at {} (first batch at \
                         {first:?}), but {want} records were acknowledged",
                        got.high_watermark
                    )));
                }
                Ok(())
            });
            next += 1;
        }
        match pending.join_next().await {
            None => return Ok(()),
            Some(Ok(result)) => result?,
            Some(Err(e)) => return Err(BenchError::Failed(format!("a check task failed: {e}"))),
        }
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn memory_text(m: Option<ProcessMemory>) -> String {
    m.map_or_else(
        || "not readable".to_string(),
        |m| {
            format!(
                "RSS {} (peak {}): heap {}, file pages {}",
                mib(m.rss_kib),
                mib(m.peak_rss_kib),
                mib(m.anon_kib),
                mib(m.file_kib)
            )
        },
    )
}

fn throughput_text(run: &RunFigures) -> String {
    let l: &LatencySummary = &run.latency;
    format!(
        "{} records/s, {:.1} MB/s, p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms",
        group_digits(run.records_per_sec().round() as u64),
        run.mb_per_sec(),
        l.p50_ms,
        l.p99_ms,
        l.p999_ms
    )
}

fn runs_text(runs: &[RunFigures]) -> String {
    runs.iter()
        .map(|r| group_digits(r.records_per_sec().round() as u64))
        .collect::<Vec<_>>()
        .join(" | ")
}

fn render_human(report: &PartitionsReport, args: &PartitionsArgs) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "workload   partitions: {} partitions, {} records per run round-robin by request, \
         {}-byte values, {}-byte keys, batch {}, in-flight {}, acks leader, broker in a child process",
        group_digits(u64::from(report.partitions)),
        group_digits(args.records),
        args.record_size,
        args.key_size,
        args.batch,
        args.in_flight
    );
    let _ = writeln!(
        out,
        "create     {} partitions in {:.2} s",
        group_digits(u64::from(report.partitions)),
        report.create.as_secs_f64()
    );
    if let Some((many, w1)) = report.medians() {
        let _ = writeln!(out, "runs       {} records/s", runs_text(&report.runs));
        let _ = writeln!(out, "produce    {}", throughput_text(&many));
        let _ = writeln!(
            out,
            "w1 8p      {} (runs {}; same broker, alternating)",
            throughput_text(&w1),
            runs_text(&report.w1_runs)
        );
    }
    if let Some(ratio) = report.ratio_to_w1() {
        let _ = writeln!(
            out,
            "ratio      {ratio:.3} of the 8-partition records/s ({:.1} %)",
            ratio * 100.0
        );
    }
    let memory_line = |out: &mut String, m: Option<ProcessMemory>, when: &str| {
        let _ = writeln!(out, "memory     {} {when}", memory_text(m));
    };
    memory_line(&mut out, report.memory, "after the runs");
    let _ = writeln!(
        out,
        "restart    kill -9, then listening (recovered) after {:.3} s; every partition fetched \
         with all its acknowledged records after {:.3} s",
        report.restart_listening.as_secs_f64(),
        report.restart_serving.as_secs_f64()
    );
    memory_line(&mut out, report.memory_after_recovery, "after the recovery");
    memory_line(
        &mut out,
        report.memory_after_restart,
        "after fetching every partition",
    );
    out
}

fn memory_json(m: Option<ProcessMemory>) -> String {
    m.map_or_else(
        || "null".to_string(),
        |m| {
            format!(
                "{{\"rss_kib\":{},\"peak_rss_kib\":{},\"anon_kib\":{},\"file_kib\":{}}}",
                m.rss_kib, m.peak_rss_kib, m.anon_kib, m.file_kib
            )
        },
    )
}

/// The `--json` output: one object on one line.
///
/// `{"workload": "partitions", "partitions", "create_seconds", "records",
/// "records_per_sec", "mb_per_sec", "latency_ms": {"p50","p90","p99",
/// "p999","max"}, "w1_records_per_sec", "ratio_to_w1", "memory",
/// "restart_listening_seconds", "memory_after_recovery",
/// "restart_serving_seconds", "memory_after_restart"}`: the median runs;
/// `memory` objects are `{"rss_kib", "peak_rss_kib", "anon_kib",
/// "file_kib"}` or null where unreadable.
pub fn render_json(report: &PartitionsReport) -> String {
    let mut out = format!(
        "{{\"workload\":{},\"partitions\":{},\"create_seconds\":{}",
        json_string("partitions"),
        report.partitions,
        json_number(report.create.as_secs_f64(), 3)
    );
    if let Some((many, w1)) = report.medians() {
        let _ = write!(
            out,
            ",\"records\":{},\"records_per_sec\":{},\"mb_per_sec\":{},\"latency_ms\":{},\
             \"w1_records_per_sec\":{}",
            many.records,
            json_number(many.records_per_sec(), 1),
            json_number(many.mb_per_sec(), 3),
            many.latency.to_json(),
            json_number(w1.records_per_sec(), 1),
        );
    }
    if let Some(ratio) = report.ratio_to_w1() {
        let _ = write!(out, ",\"ratio_to_w1\":{}", json_number(ratio, 4));
    }
    let _ = write!(
        out,
        ",\"memory\":{},\"restart_listening_seconds\":{},\"memory_after_recovery\":{},\
         \"restart_serving_seconds\":{},\"memory_after_restart\":{}}}",
        memory_json(report.memory),
        json_number(report.restart_listening.as_secs_f64(), 3),
        memory_json(report.memory_after_recovery),
        json_number(report.restart_serving.as_secs_f64(), 3),
        memory_json(report.memory_after_restart)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The rule spelled out: one request at a time.
    fn by_request(records: u64, batch: u32, partitions: u32) -> Vec<u64> {
        let mut counts = vec![0; partitions as usize];
        let (mut i, mut left) = (0u64, records);
        while left > 0 {
            let n = left.min(u64::from(batch));
            counts[(i % u64::from(partitions)) as usize] += n;
            left -= n;
            i += 1;
        }
        counts
    }

    #[test]
    fn round_robin_counts_follow_the_requests() {
        // 10 M records in 1,000-record requests over 10,000 partitions: one each.
        assert_eq!(
            round_robin_counts(10_000_000, 1000, 10_000),
            vec![1000; 10_000]
        );
        assert_eq!(round_robin_counts(2500, 1000, 2), vec![1500, 1000]);
        assert_eq!(round_robin_counts(2500, 1000, 3), vec![1000, 1000, 500]);
        assert_eq!(round_robin_counts(3500, 1000, 2), vec![2000, 1500]);
        assert_eq!(round_robin_counts(1, 1000, 4), vec![1, 0, 0, 0]);
    }

    proptest! {
        #[test]
        fn round_robin_counts_match_sending_request_by_request(
            records in 1u64..20_000,
            batch in 1u32..300,
            partitions in 1u32..50,
        ) {
            let counts = round_robin_counts(records, batch, partitions);
            prop_assert_eq!(counts.iter().sum::<u64>(), records);
            prop_assert_eq!(counts, by_request(records, batch, partitions));
        }
    }

    #[test]
    fn the_json_has_the_medians_and_the_ratio() {
        let run = |records_per_sec: u64| RunFigures {
            records: records_per_sec,
            bytes: records_per_sec * 116,
            seconds: 1.0,
            ..RunFigures::default()
        };
        let report = PartitionsReport {
            partitions: 10,
            create: Duration::from_millis(1500),
            runs: vec![run(300), run(100), run(200)],
            w1_runs: vec![run(400), run(500), run(450)],
            memory: Some(ProcessMemory {
                rss_kib: 1,
                peak_rss_kib: 2,
                anon_kib: 3,
                file_kib: 4,
            }),
            restart_listening: Duration::from_millis(250),
            memory_after_recovery: None,
            restart_serving: Duration::from_millis(750),
            memory_after_restart: None,
        };
        assert_eq!(report.ratio_to_w1(), Some(200.0 / 450.0));
        let json = render_json(&report);
        for part in [
            "\"workload\":\"partitions\"",
            "\"create_seconds\":1.500",
            "\"records_per_sec\":200.0",
            "\"w1_records_per_sec\":450.0",
            "\"ratio_to_w1\":0.4444",
            "\"memory\":{\"rss_kib\":1,\"peak_rss_kib\":2,\"anon_kib\":3,\"file_kib\":4}",
            "\"memory_after_recovery\":null,",
            "\"restart_serving_seconds\":0.750",
            "\"memory_after_restart\":null}",
        ] {
            assert!(json.contains(part), "{part} not in {json}");
        }
    }
}
