//! `strata bench`: the load generator of BENCHMARKS.md.
//!
//! | module          | job                                                          |
//! |-----------------|--------------------------------------------------------------|
//! | [`workloads`]   | produce (W1/W2/W4), consume (W3), e2e (W5), group (W6)        |
//! | [`ceiling`]     | the "gRPC ceiling": a null `Log` server whose handlers do no work |
//! | [`report`]      | figures, medians, the human summary and the `--json` object  |
//! | [`rate`]        | `--rate` pacing arithmetic                                   |
//! | [`partitions`]  | W7: 10,000 partitions: create, produce, memory, restart      |
//! | [`restart`]     | W8: time to serve again after kill -9 with a large log       |
//! | [`child`]       | the `strata serve` child process W7 and W8 kill and restart  |
//!
//! ```text
//! strata bench produce --embedded --records 2000000 --partitions 8 --compare-ceiling --runs 3
//! strata bench consume --embedded --mode subscribe --compare-ceiling
//! strata bench e2e --embedded --rate 10000 --records 100000
//! strata bench group --embedded --leave
//! strata bench ceiling produce --batch 1000
//! strata bench partitions --partitions 10000
//! strata bench restart --closed-bytes 10737418240 --active-bytes 1073741824
//! ```
//!
//! Every run against Strata goes to a broker at `--broker`, or with
//! `--embedded` to one started in this process on a temporary directory.
//! The ceiling is always an in-process null server. With `--runs N` each
//! side runs N times (alternating) and the median run by records/s is
//! reported; `produce` re-creates the bench's topic before each run, so
//! every run starts on an empty log.

pub mod ceiling;
pub mod child;
pub mod partitions;
pub mod rate;
pub mod report;
pub mod restart;
pub mod workloads;

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::client::{ConnectOptions, Connection};
use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::api::{RunningServer, ServeError};
use crate::cli::CliError;
use crate::client::{Client, ClientError, OffsetSpec, TopicConfig, DEFAULT_BROKER};
use crate::config::BrokerConfig;
use crate::proto::v1::Acks;

use self::ceiling::{FetchShape, NullServer};
use self::rate::RateLimiter;
use self::report::{median_run, CeilingFigures, Report, RunFigures};
use self::workloads::{ConsumeMode, ConsumeSpec, E2eSpec, GroupSpec, ProduceSpec, RecordShape};

/// Records of a run when neither `--records` nor `--duration` is given.
pub const DEFAULT_RECORDS: u64 = 1_000_000;

/// `strata bench`: measure Strata (and the gRPC ceiling) on this machine.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The workload.
    #[command(subcommand)]
    pub command: BenchCommand,
}

/// The workloads of BENCHMARKS.md.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// W1/W2/W4: produce batches of records as fast as --in-flight requests
    /// go (or at --rate). Latency: each request, sent → answered.
    Produce(BenchOpts),
    /// W3: produce --records (untimed), then time reading them from offset 0
    /// with Fetch (--max-bytes per fetch) or Subscribe (--mode), decoding
    /// every record. Latency: each fetch, or each wait for a stream message.
    Consume(BenchOpts),
    /// W5: produce at --rate (default 10,000 records/s) while a Subscribe
    /// consumer per partition tails the topic. Latency: delivery − send
    /// time, per record.
    E2e(BenchOpts),
    /// W6: --members Groups.Consume streams of one group read --records
    /// from a topic of --partitions (default 6); --leave makes one member
    /// commit and leave halfway. Latency: gaps between deliveries of one
    /// partition; max gap: with --leave, the longest gap of the leaver's
    /// partitions across the rebalance.
    Group(BenchOpts),
    /// Run a workload against the null server only (handlers that do no
    /// work): the most any gRPC broker could do here with this client.
    Ceiling(CeilingArgs),
    /// W7: a broker (child process) with --partitions partitions: create
    /// time, produce round-robin against 8 partitions side by side, memory,
    /// and kill -9 + restart until every partition is served.
    Partitions(partitions::PartitionsArgs),
    /// W8: fill a broker (child process) with closed segments and a large
    /// active one, kill -9 it, and time each restart to its first fetch.
    Restart(restart::RestartArgs),
}

/// `strata bench ceiling WORKLOAD`.
#[derive(Debug, Args)]
pub struct CeilingArgs {
    /// The workload to run against the null server.
    #[command(subcommand)]
    pub workload: CeilingWorkload,
}

/// Workloads that have a null-server ceiling.
#[derive(Debug, Subcommand)]
pub enum CeilingWorkload {
    /// The produce workload against the null server.
    Produce(BenchOpts),
    /// The consume workload against the null server (pre-built responses).
    Consume(BenchOpts),
}

/// Acknowledgement level of `--acks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AcksArg {
    /// Answered once the batch is in the page cache (ACKS_LEADER).
    Leader,
    /// Answered after fdatasync (ACKS_DURABLE).
    Durable,
}

impl From<AcksArg> for Acks {
    fn from(a: AcksArg) -> Acks {
        match a {
            AcksArg::Leader => Acks::Leader,
            AcksArg::Durable => Acks::Durable,
        }
    }
}

/// Settings shared by every workload (each uses those that apply to it).
#[derive(Debug, Clone, Args)]
pub struct BenchOpts {
    /// Records to produce or read [default: 1,000,000, or unlimited with
    /// --duration].
    #[arg(long, value_name = "N")]
    pub records: Option<u64>,
    /// Stop the timed part after this many seconds.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Value bytes per record.
    #[arg(long, value_name = "B", default_value_t = 100)]
    pub record_size: usize,
    /// Key bytes per record (0 = no key).
    #[arg(long, value_name = "B", default_value_t = 16)]
    pub key_size: usize,
    /// Distinct keys.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub key_space: u64,
    /// Records per produce request (e2e: at most, as records fall due).
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub batch: u32,
    /// Produce requests in flight at once.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub in_flight: usize,
    /// Partitions of the topic [default: an existing --topic's count,
    /// else 1; group: 6]. With an existing topic, the first N are used.
    #[arg(long, value_name = "N")]
    pub partitions: Option<u32>,
    /// Acknowledgement level of produce requests.
    #[arg(long, value_enum, default_value_t = AcksArg::Leader)]
    pub acks: AcksArg,
    /// Produce at most this many records per second [e2e default: 10,000].
    #[arg(long, value_name = "R")]
    pub rate: Option<f64>,
    /// consume: read with Fetch or Subscribe.
    #[arg(long, value_enum, default_value_t = ConsumeMode::Fetch)]
    pub mode: ConsumeMode,
    /// consume: max_bytes of each fetch.
    #[arg(long, value_name = "B", default_value_t = 1 << 20)]
    pub max_bytes: u32,
    /// group: Consume streams in the group.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub members: usize,
    /// group: one member commits and leaves when half is read.
    #[arg(long)]
    pub leave: bool,
    /// HTTP/2 connections the load is spread over.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub connections: usize,
    /// Run the workload N times and report the median run.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub runs: usize,
    /// Start a broker in this process on a temporary directory.
    #[arg(long)]
    pub embedded: bool,
    /// Broker address (ignored with --embedded).
    #[arg(long, value_name = "ADDR", env = "STRATA_BROKER", default_value = DEFAULT_BROKER)]
    pub broker: String,
    /// TLS and token for --broker (the embedded broker is plaintext).
    #[command(flatten)]
    pub connect: crate::cli::ConnectArgs,
    /// Topic to use [default: bench-WORKLOAD-PID, created and deleted by
    /// the bench]. An existing topic is used as it is (consume and group
    /// read what it holds).
    #[arg(long, value_name = "NAME")]
    pub topic: Option<String>,
    /// Keep the topic the bench created.
    #[arg(long)]
    pub keep_topic: bool,
    /// Also run the workload against the null server and report the ratio.
    #[arg(long)]
    pub compare_ceiling: bool,
    /// Print one JSON object on stdout instead of the summary.
    #[arg(long)]
    pub json: bool,
}

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A broker call failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The embedded broker failed to start or stop.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// The options do not make sense together.
    #[error("{0}")]
    Usage(String),
    /// The temporary data directory of --embedded could not be made.
    #[error("cannot create a temporary data directory: {0}")]
    TempDir(std::io::Error),
    /// The null server failed.
    #[error("ceiling server: {0}")]
    Ceiling(String),
    /// The run went wrong (a task died, records went missing).
    #[error("{0}")]
    Failed(String),
}

impl From<tonic::Status> for BenchError {
    fn from(status: tonic::Status) -> Self {
        BenchError::Client(ClientError::from(status))
    }
}

impl From<BenchError> for CliError {
    fn from(e: BenchError) -> CliError {
        match e {
            BenchError::Client(e) => CliError::Client(e),
            BenchError::Serve(e) => CliError::Serve(e),
            BenchError::Usage(m) => CliError::Usage(m),
            other => CliError::Io {
                action: "run the benchmark",
                source: std::io::Error::other(other.to_string()),
            },
        }
    }
}

/// Records and bytes moved so far, read by the progress bar.
#[derive(Debug, Default)]
pub struct Progress {
    records: AtomicU64,
    bytes: AtomicU64,
}

impl Progress {
    /// Counts `records` records of `bytes` key + value bytes.
    pub fn add(&self, records: u64, bytes: u64) {
        self.records.fetch_add(records, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Records counted so far.
    pub fn records(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }
}

/// A progress bar on stderr fed from a [`Progress`] by a ticker task.
struct Bar {
    bar: ProgressBar,
    ticker: tokio::task::JoinHandle<()>,
}

impl Bar {
    fn start(label: String, total: Option<u64>, visible: bool, progress: Arc<Progress>) -> Bar {
        let target = if visible {
            ProgressDrawTarget::stderr_with_hz(10)
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(total, target);
        let template = if total.is_some() {
            "{prefix:>22} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} records ({msg}, ETA {eta})"
        } else {
            "{prefix:>22} [{elapsed_precise}] {spinner} {human_pos} records ({msg})"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
        bar.set_prefix(label);
        bar.set_message("0/s");
        let ticking = bar.clone();
        let started = std::time::Instant::now();
        let ticker = tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(100));
            loop {
                every.tick().await;
                let records = progress.records();
                let seconds = started.elapsed().as_secs_f64();
                let rate = if seconds > 0.0 {
                    (records as f64 / seconds) as u64
                } else {
                    0
                };
                ticking.set_message(format!("{}/s", report::group_digits(rate)));
                ticking.set_position(records);
            }
        });
        Bar { bar, ticker }
    }

    fn finish(self) {
        self.ticker.abort();
        self.bar.finish_and_clear();
    }
}

/// Which workload, normalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workload {
    Produce,
    Consume,
    E2e,
    Group,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Produce => "produce",
            Workload::Consume => "consume",
            Workload::E2e => "e2e",
            Workload::Group => "group",
        }
    }
}

/// What the invocation runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sides {
    Strata,
    CeilingOnly,
    Both,
}

/// Runs `strata bench ...` and prints its report (summary or JSON) on stdout.
///
/// # Errors
/// Invalid options, a broker that cannot be reached or started, or a failed
/// run.
pub async fn run(args: BenchArgs) -> Result<(), CliError> {
    let (workload, opts, ceiling_only) = match args.command {
        BenchCommand::Partitions(args) => return partitions::run(args).await,
        BenchCommand::Restart(args) => return restart::run(args).await,
        BenchCommand::Produce(o) => (Workload::Produce, o, false),
        BenchCommand::Consume(o) => (Workload::Consume, o, false),
        BenchCommand::E2e(o) => (Workload::E2e, o, false),
        BenchCommand::Group(o) => (Workload::Group, o, false),
        BenchCommand::Ceiling(c) => match c.workload {
            CeilingWorkload::Produce(o) => (Workload::Produce, o, true),
            CeilingWorkload::Consume(o) => (Workload::Consume, o, true),
        },
    };
    let sides = if ceiling_only {
        Sides::CeilingOnly
    } else if opts.compare_ceiling {
        Sides::Both
    } else {
        Sides::Strata
    };
    let show_bar = !opts.json && std::io::stderr().is_terminal();
    let report = execute(workload, &opts, sides, show_bar).await?;
    print_report(
        opts.json,
        || report::render_json(&report),
        || report::render_human(&report),
    )
}

/// Prints a bench's report on stdout: its one-line JSON object with
/// `--json`, else its human summary.
fn print_report(
    json: bool,
    render_json: impl FnOnce() -> String,
    render_human: impl FnOnce() -> String,
) -> Result<(), CliError> {
    let text = if json {
        format!("{}\n", render_json())
    } else {
        render_human()
    };
    crate::cli::print_stdout(&text)
}

/// The embedded broker and its temporary directory (removed on drop).
struct Embedded {
    server: RunningServer,
    _dir: tempfile::TempDir,
}

/// The Strata side of an invocation: where the broker is and the topic.
struct StrataSide {
    addr: String,
    options: ConnectOptions,
    client: Client,
    embedded: Option<Embedded>,
    topic: String,
    created_topic: bool,
    keep_topic: bool,
}

impl StrataSide {
    async fn open(opts: &BenchOpts, workload: Workload) -> Result<StrataSide, BenchError> {
        let (addr, embedded, options) = if opts.embedded {
            let dir = tempfile::Builder::new()
                .prefix("strata-bench-")
                .tempdir()
                .map_err(BenchError::TempDir)?;
            let config = BrokerConfig {
                data_dir: dir.path().to_path_buf(),
                listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
                ..BrokerConfig::default()
            };
            let server = crate::api::start(config).await?;
            (
                server.addr.to_string(),
                Some(Embedded { server, _dir: dir }),
                ConnectOptions::default(),
            )
        } else {
            (opts.broker.clone(), None, opts.connect.options())
        };
        let client = Client::connect_with(&addr, &options).await?;
        let topic = opts
            .topic
            .clone()
            .unwrap_or_else(|| format!("bench-{}-{}", workload.name(), std::process::id()));
        Ok(StrataSide {
            addr,
            options,
            client,
            embedded,
            topic,
            created_topic: false,
            keep_topic: opts.keep_topic,
        })
    }

    /// Creates the topic with `partitions` partitions, or uses the existing
    /// one. Returns its partition count.
    async fn ensure_topic(&mut self, partitions: u32) -> Result<u32, BenchError> {
        match self
            .client
            .create_topic(&self.topic, partitions, TopicConfig::default())
            .await
        {
            Ok(t) => {
                self.created_topic = true;
                Ok(t.partitions.len() as u32)
            }
            Err(e) if e.code() == tonic::Code::AlreadyExists => {
                let t = self.client.describe_topic(&self.topic).await?;
                Ok(t.partitions.len() as u32)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The partition count of the bench's topic if it exists already.
    async fn existing_partitions(&self) -> Result<Option<u32>, BenchError> {
        match self.client.describe_topic(&self.topic).await {
            Ok(t) => Ok(Some(t.partitions.len() as u32)),
            Err(e) if e.code() == tonic::Code::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes and re-creates the topic the bench created, so that every
    /// produce run starts on an empty log (and the previous run's dirty
    /// pages are dropped instead of throttling the next run). A topic the
    /// user named is left alone.
    async fn recreate_topic(&mut self, partitions: u32) -> Result<(), BenchError> {
        if !self.created_topic {
            return Ok(());
        }
        self.client.delete_topic(&self.topic).await?;
        self.client
            .create_topic(&self.topic, partitions, TopicConfig::default())
            .await?;
        Ok(())
    }

    /// Deletes the group a `bench group` run used, so runs leave nothing
    /// behind. Its members leave as their streams close, which the broker
    /// sees a moment later: a group that still has members is asked again
    /// for up to 2 s. A failure is reported on stderr, not as the run's.
    async fn forget_group(&self, group: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        loop {
            match self.client.delete_group(group).await {
                Ok(()) => return,
                Err(e) if e.code() == tonic::Code::NotFound => return,
                Err(e)
                    if e.code() == tonic::Code::FailedPrecondition
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => {
                    eprintln!("note: could not delete the bench group '{group}': {e}");
                    return;
                }
            }
        }
    }

    /// Per partition, the high watermark.
    async fn high_watermarks(&self, partitions: u32) -> Result<Vec<u64>, BenchError> {
        let mut out = Vec::with_capacity(partitions as usize);
        for p in 0..partitions {
            let r = self
                .client
                .list_offsets(&self.topic, p, OffsetSpec::Latest, 0)
                .await?;
            out.push(r.offset);
        }
        Ok(out)
    }

    fn flushes(&self) -> Option<u64> {
        self.embedded
            .as_ref()
            .map(|_| crate::storage::counters::snapshot().flushes)
    }

    async fn close(self) -> Result<(), BenchError> {
        if self.created_topic && (!self.keep_topic || self.embedded.is_some()) {
            // Deleting first also spares the embedded broker flushing it all at exit.
            let _ = self.client.delete_topic(&self.topic).await;
        }
        drop(self.client);
        if let Some(embedded) = self.embedded {
            embedded.server.shutdown().await?;
        }
        Ok(())
    }
}

/// The settings of a run, resolved from the options.
struct Plan {
    workload: Workload,
    shape: RecordShape,
    partitions: u32,
    batch: u32,
    records: Option<u64>,
    duration: Option<Duration>,
    rate: Option<RateLimiter>,
    acks: Acks,
}

fn plan(workload: Workload, opts: &BenchOpts, sides: Sides) -> Result<Plan, BenchError> {
    let usage = |m: &str| Err(BenchError::Usage(m.to_string()));
    if sides != Sides::Strata && matches!(workload, Workload::E2e | Workload::Group) {
        return usage(
            "the null-server ceiling exists for produce and consume only (e2e and group need a real log)",
        );
    }
    if opts.batch == 0 {
        return usage("--batch must be at least 1");
    }
    if opts.in_flight == 0 || opts.connections == 0 || opts.members == 0 {
        return usage("--in-flight, --connections and --members must be at least 1");
    }
    if opts.runs == 0 {
        return usage("--runs must be at least 1");
    }
    if opts.records == Some(0) {
        return usage("--records must be at least 1");
    }
    if opts.key_space == 0 {
        return usage("--key-space must be at least 1");
    }
    let duration = match opts.duration {
        None => None,
        Some(s) if s.is_finite() && s > 0.0 => Duration::try_from_secs_f64(s).ok(),
        Some(_) => return usage("--duration must be a positive number of seconds"),
    };
    let rate = match opts.rate {
        None if workload == Workload::E2e => RateLimiter::new(10_000.0),
        None => None,
        Some(r) => match RateLimiter::new(r) {
            Some(limiter) => Some(limiter),
            None => return usage("--rate must be a positive number of records per second"),
        },
    };
    let partitions = opts
        .partitions
        .unwrap_or(if workload == Workload::Group { 6 } else { 1 });
    if partitions == 0 {
        return usage("--partitions must be at least 1");
    }
    if workload == Workload::E2e && opts.record_size < 8 {
        return usage("e2e needs --record-size of at least 8 (the send time rides in the value)");
    }
    // Reads need a known amount to fill first; produce may run by time alone.
    let records = match (opts.records, duration, workload) {
        (Some(n), _, _) => Some(n),
        (None, Some(_), Workload::Produce | Workload::E2e) => None,
        (None, _, _) => Some(DEFAULT_RECORDS),
    };
    Ok(Plan {
        workload,
        shape: RecordShape {
            value_bytes: opts.record_size,
            key_bytes: opts.key_size,
            key_space: opts.key_space,
        },
        partitions,
        batch: opts.batch,
        records,
        duration,
        rate,
        acks: opts.acks.into(),
    })
}

fn describe(plan: &Plan, opts: &BenchOpts, sides: Sides) -> String {
    let target = match (sides, opts.embedded) {
        (Sides::CeilingOnly, _) => "null server".to_string(),
        (_, true) => "embedded broker".to_string(),
        (_, false) => format!("broker {}", opts.broker),
    };
    let amount = match (plan.records, plan.duration) {
        (Some(n), Some(d)) => format!(
            "{} records or {:.1} s",
            report::group_digits(n),
            d.as_secs_f64()
        ),
        (Some(n), None) => format!("{} records", report::group_digits(n)),
        (None, Some(d)) => format!("{:.1} s", d.as_secs_f64()),
        (None, None) => "unbounded".to_string(),
    };
    let mut text = format!(
        "{amount}, {} partition(s), {}-byte values, {}-byte keys over {} keys, {target}",
        plan.partitions,
        plan.shape.value_bytes,
        plan.shape.key_bytes,
        report::group_digits(plan.shape.key_space),
    );
    match plan.workload {
        Workload::Produce | Workload::E2e => {
            let acks = match opts.acks {
                AcksArg::Leader => "leader",
                AcksArg::Durable => "durable",
            };
            text.push_str(&format!(
                ", batch {}, in-flight {}, acks {acks}, {} connection(s)",
                plan.batch, opts.in_flight, opts.connections
            ));
        }
        Workload::Consume => {
            let mode = match opts.mode {
                ConsumeMode::Fetch => format!("Fetch of {} bytes", opts.max_bytes),
                ConsumeMode::Subscribe => "Subscribe".to_string(),
            };
            text.push_str(&format!(", batches of {}, {mode}", plan.batch));
        }
        Workload::Group => text.push_str(&format!(
            ", {} members{}",
            opts.members,
            if opts.leave {
                ", one leaves halfway"
            } else {
                ""
            }
        )),
    }
    if let Some(rate) = plan.rate {
        text.push_str(&format!(
            ", rate {} records/s",
            report::group_digits(rate.per_sec().round() as u64)
        ));
    }
    text
}

fn workload_label(plan: &Plan, opts: &BenchOpts, sides: Sides) -> String {
    let base = match plan.workload {
        Workload::Consume => match opts.mode {
            ConsumeMode::Fetch => "consume-fetch",
            ConsumeMode::Subscribe => "consume-subscribe",
        },
        w => w.name(),
    };
    if sides == Sides::CeilingOnly {
        format!("ceiling-{base}")
    } else {
        base.to_string()
    }
}

fn produce_spec(plan: &Plan, opts: &BenchOpts, topic: &str, partitions: u32) -> ProduceSpec {
    ProduceSpec {
        topic: topic.to_string(),
        partitions,
        batch: plan.batch,
        in_flight: opts.in_flight,
        acks: plan.acks,
        records: plan.records,
        duration: plan.duration,
        rate: plan.rate,
        shape: plan.shape,
    }
}

/// Spreads `total` records over `partitions` as evenly as possible.
fn split_evenly(total: u64, partitions: u32) -> Vec<u64> {
    let p = u64::from(partitions.max(1));
    (0..p)
        .map(|i| total / p + u64::from(i < total % p))
        .collect()
}

/// Runs the whole invocation: sets up both sides, runs them `--runs` times
/// (alternating), and builds the report.
async fn execute(
    workload: Workload,
    opts: &BenchOpts,
    sides: Sides,
    show_bar: bool,
) -> Result<Report, BenchError> {
    let mut plan = plan(workload, opts, sides)?;
    let mut strata = if sides == Sides::CeilingOnly {
        None
    } else {
        Some(StrataSide::open(opts, workload).await?)
    };
    let result = async {
        // An existing topic named without --partitions is used whole.
        if let (Some(side), None) = (strata.as_mut(), opts.partitions) {
            if let Some(n) = side.existing_partitions().await? {
                plan.partitions = n;
            }
        }
        let description = describe(&plan, opts, sides);
        let label = workload_label(&plan, opts, sides);
        let outcome = execute_with(&plan, opts, sides, show_bar, strata.as_mut()).await?;
        Ok::<_, BenchError>((outcome, description, label))
    }
    .await;
    let closed = match strata {
        Some(s) => s.close().await,
        None => Ok(()),
    };
    let ((runs, ceiling_runs, notes), description, label) = result?;
    closed?;

    let (median, runs_per_sec) =
        median_run(&runs).ok_or_else(|| BenchError::Failed("no run completed".into()))?;
    let ceiling = median_run(&ceiling_runs).map(|(median, runs_per_sec)| CeilingFigures {
        median,
        runs_per_sec,
    });
    Ok(Report {
        workload: label,
        description,
        median,
        runs_per_sec,
        ceiling,
        notes,
    })
}

type Outcome = (Vec<RunFigures>, Vec<RunFigures>, Vec<String>);

async fn execute_with(
    plan: &Plan,
    opts: &BenchOpts,
    sides: Sides,
    show_bar: bool,
    mut strata: Option<&mut StrataSide>,
) -> Result<Outcome, BenchError> {
    let mut notes = Vec::new();
    // Strata: topic, fill, connections.
    let mut strata_channels: Vec<Connection> = Vec::new();
    let mut partitions = plan.partitions;
    let mut ends: Vec<u64> = Vec::new();
    if let Some(side) = strata.as_deref_mut() {
        partitions = side.ensure_topic(plan.partitions).await?;
        if partitions < plan.partitions {
            return Err(BenchError::Usage(format!(
                "topic '{}' has {partitions} partitions, fewer than --partitions {}",
                side.topic, plan.partitions
            )));
        }
        partitions = plan.partitions;
        strata_channels = workloads::connect(&side.addr, opts.connections, &side.options).await?;
        if matches!(plan.workload, Workload::Consume | Workload::Group) {
            ends = fill(plan, opts, side, &strata_channels, partitions, show_bar).await?;
        }
    }
    // The ceiling: a null server shaped like the workload.
    let ceiling_server = if sides == Sides::Strata {
        None
    } else {
        let batch_payload = workloads::batch_payload(&plan.shape, u64::from(plan.batch));
        let batches = match (plan.workload, opts.mode) {
            (Workload::Consume, ConsumeMode::Fetch) => {
                ceiling::batches_per_response(batch_payload.len(), opts.max_bytes)
            }
            // Subscribe reads with the broker's default of 1 MiB.
            _ => ceiling::batches_per_response(
                batch_payload.len(),
                BrokerConfig::default().limits.default_fetch_bytes,
            ),
        };
        Some(
            NullServer::start(FetchShape {
                batch_payload,
                batch_records: plan.batch,
                batches_per_response: batches,
            })
            .await?,
        )
    };
    let ceiling_channels = match &ceiling_server {
        Some(server) => {
            workloads::connect(
                &server.addr.to_string(),
                opts.connections,
                &ConnectOptions::default(),
            )
            .await?
        }
        None => Vec::new(),
    };

    let mut runs = Vec::new();
    let mut ceiling_runs = Vec::new();
    let outcome = async {
        for run in 0..opts.runs {
            if let Some(side) = strata.as_deref_mut() {
                if run > 0 && plan.workload == Workload::Produce {
                    side.recreate_topic(partitions).await?;
                }
                let (figures, run_notes) = run_strata(
                    plan,
                    opts,
                    side,
                    &strata_channels,
                    partitions,
                    &ends,
                    run,
                    show_bar,
                )
                .await?;
                notes.extend(run_notes);
                runs.push(figures);
            }
            if !ceiling_channels.is_empty() {
                let figures = run_ceiling(plan, opts, &ceiling_channels, run, show_bar).await?;
                ceiling_runs.push(figures);
            }
        }
        Ok::<(), BenchError>(())
    }
    .await;
    drop(ceiling_channels);
    if let Some(server) = ceiling_server {
        server.shutdown().await;
    }
    outcome?;
    if sides == Sides::CeilingOnly {
        // The ceiling is the result itself.
        return Ok((ceiling_runs, Vec::new(), notes));
    }
    Ok((runs, ceiling_runs, notes))
}

/// Produces the records the read workloads read (untimed), unless the topic
/// already holds them. Returns the per-partition ends to read to.
async fn fill(
    plan: &Plan,
    opts: &BenchOpts,
    side: &StrataSide,
    channels: &[Connection],
    partitions: u32,
    show_bar: bool,
) -> Result<Vec<u64>, BenchError> {
    let have = side.high_watermarks(partitions).await?;
    let held: u64 = have.iter().sum();
    let wanted = plan.records.unwrap_or(DEFAULT_RECORDS);
    if held == 0 {
        let spec = ProduceSpec {
            records: Some(wanted),
            duration: None,
            rate: None,
            acks: Acks::Leader,
            ..produce_spec(plan, opts, &side.topic, partitions)
        };
        let progress = Arc::new(Progress::default());
        let bar = Bar::start(
            "filling (untimed)".into(),
            Some(wanted),
            show_bar,
            progress.clone(),
        );
        let filled = workloads::produce(channels, &spec, &progress).await;
        bar.finish();
        filled?;
        return side.high_watermarks(partitions).await;
    }
    Ok(have)
}

#[allow(clippy::too_many_arguments)]
async fn run_strata(
    plan: &Plan,
    opts: &BenchOpts,
    side: &StrataSide,
    channels: &[Connection],
    partitions: u32,
    ends: &[u64],
    run: usize,
    show_bar: bool,
) -> Result<(RunFigures, Vec<String>), BenchError> {
    let progress = Arc::new(Progress::default());
    let label = format!("strata run {}/{}", run + 1, opts.runs);
    let total = match plan.workload {
        Workload::Consume | Workload::Group => Some(ends.iter().sum()),
        _ => plan.records,
    };
    let bar = Bar::start(label, total, show_bar, progress.clone());
    let flushes_before = side.flushes();
    let cpu_before = report::process_cpu_seconds();
    let machine_before = report::MachineTimes::now();
    let result = match plan.workload {
        Workload::Produce => {
            let spec = produce_spec(plan, opts, &side.topic, partitions);
            workloads::produce(channels, &spec, &progress)
                .await
                .map(|f| (f, Vec::new()))
        }
        Workload::Consume => {
            let spec = ConsumeSpec {
                topic: side.topic.clone(),
                ends: ends.to_vec(),
                mode: opts.mode,
                max_bytes: opts.max_bytes,
                duration: plan.duration,
            };
            workloads::consume(channels, &spec, &progress)
                .await
                .map(|f| (f, Vec::new()))
        }
        Workload::E2e => match (side.high_watermarks(partitions).await, plan.rate) {
            (Ok(start_offsets), Some(rate)) => {
                let spec = E2eSpec {
                    topic: side.topic.clone(),
                    start_offsets,
                    records: plan.records,
                    batch: plan.batch,
                    in_flight: opts.in_flight,
                    acks: plan.acks,
                    rate,
                    duration: plan.duration,
                    shape: plan.shape,
                };
                workloads::end_to_end(channels, &spec, &progress)
                    .await
                    .map(|f| (f, Vec::new()))
            }
            (Err(e), _) => Err(e),
            (Ok(_), None) => Err(BenchError::Usage("e2e needs a --rate".into())),
        },
        Workload::Group => {
            let spec = GroupSpec {
                topic: side.topic.clone(),
                ends: ends.to_vec(),
                group: format!("{}-group-{}", side.topic, run),
                members: opts.members,
                leave_halfway: opts.leave,
                duration: plan.duration,
            };
            let outcome = workloads::group(channels, &spec, &progress).await;
            side.forget_group(&spec.group).await;
            outcome
        }
    };
    let cpu_after = report::process_cpu_seconds();
    let machine_after = report::MachineTimes::now();
    bar.finish();
    let (mut figures, notes) = result?;
    figures.cpu_seconds = cpu_before.zip(cpu_after).map(|(b, a)| a - b);
    figures.machine = machine_before.zip(machine_after).map(|(b, a)| a.since(&b));
    if let (Some(before), Some(after)) = (flushes_before, side.flushes()) {
        if plan.workload == Workload::Produce {
            figures.flushes = Some(after.saturating_sub(before));
        }
    }
    Ok((figures, notes))
}

async fn run_ceiling(
    plan: &Plan,
    opts: &BenchOpts,
    channels: &[Connection],
    run: usize,
    show_bar: bool,
) -> Result<RunFigures, BenchError> {
    let progress = Arc::new(Progress::default());
    let label = format!("ceiling run {}/{}", run + 1, opts.runs);
    let records = plan.records.unwrap_or(DEFAULT_RECORDS);
    let bar = Bar::start(label, plan.records, show_bar, progress.clone());
    let cpu_before = report::process_cpu_seconds();
    let machine_before = report::MachineTimes::now();
    let result = match plan.workload {
        Workload::Consume => {
            let spec = ConsumeSpec {
                topic: "null".into(),
                ends: split_evenly(records, plan.partitions),
                mode: opts.mode,
                max_bytes: opts.max_bytes,
                duration: plan.duration,
            };
            workloads::consume(channels, &spec, &progress).await
        }
        _ => {
            let spec = produce_spec(plan, opts, "null", plan.partitions);
            workloads::produce(channels, &spec, &progress).await
        }
    };
    let cpu_after = report::process_cpu_seconds();
    let machine_after = report::MachineTimes::now();
    bar.finish();
    let mut figures = result?;
    figures.cpu_seconds = cpu_before.zip(cpu_after).map(|(b, a)| a - b);
    figures.machine = machine_before.zip(machine_after).map(|(b, a)| a.since(&b));
    Ok(figures)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct TestCli {
        #[command(subcommand)]
        command: BenchCommand,
    }

    fn opts(args: &[&str]) -> (Workload, BenchOpts, Sides) {
        let mut argv = vec!["bench"];
        argv.extend_from_slice(args);
        let cli = TestCli::try_parse_from(argv).unwrap();
        match cli.command {
            BenchCommand::Produce(o) => {
                let sides = if o.compare_ceiling {
                    Sides::Both
                } else {
                    Sides::Strata
                };
                (Workload::Produce, o, sides)
            }
            BenchCommand::Consume(o) => {
                let sides = if o.compare_ceiling {
                    Sides::Both
                } else {
                    Sides::Strata
                };
                (Workload::Consume, o, sides)
            }
            BenchCommand::E2e(o) => (Workload::E2e, o, Sides::Strata),
            BenchCommand::Group(o) => (Workload::Group, o, Sides::Strata),
            BenchCommand::Ceiling(c) => match c.workload {
                CeilingWorkload::Produce(o) => (Workload::Produce, o, Sides::CeilingOnly),
                CeilingWorkload::Consume(o) => (Workload::Consume, o, Sides::CeilingOnly),
            },
            BenchCommand::Partitions(_) | BenchCommand::Restart(_) => {
                panic!("not a BenchOpts workload")
            }
        }
    }

    #[test]
    fn defaults_per_workload() {
        let (w, o, s) = opts(&["produce"]);
        let p = plan(w, &o, s).unwrap();
        assert_eq!(p.records, Some(DEFAULT_RECORDS));
        assert_eq!((p.partitions, p.batch), (1, 1000));
        assert!(p.rate.is_none());

        let (w, o, s) = opts(&["group"]);
        assert_eq!(plan(w, &o, s).unwrap().partitions, 6);

        let (w, o, s) = opts(&["e2e"]);
        let p = plan(w, &o, s).unwrap();
        assert_eq!(p.rate.map(|r| r.per_sec()), Some(10_000.0));

        let (w, o, s) = opts(&["produce", "--duration", "2"]);
        assert_eq!(plan(w, &o, s).unwrap().records, None);
        let (w, o, s) = opts(&["consume", "--duration", "2"]);
        assert_eq!(plan(w, &o, s).unwrap().records, Some(DEFAULT_RECORDS));
    }

    #[test]
    fn bad_combinations_are_usage_errors() {
        for args in [
            &["produce", "--batch", "0"][..],
            &["produce", "--records", "0"],
            &["produce", "--rate", "0"],
            &["produce", "--duration=-1"],
            &["produce", "--partitions", "0"],
            &["produce", "--runs", "0"],
            &["e2e", "--record-size", "4"],
            &["e2e", "--compare-ceiling"],
            &["group", "--compare-ceiling"],
        ] {
            let (w, o, mut s) = opts(args);
            if o.compare_ceiling {
                s = Sides::Both;
            }
            assert!(
                matches!(plan(w, &o, s), Err(BenchError::Usage(_))),
                "{args:?}"
            );
        }
        // Flags clap rejects itself.
        assert!(TestCli::try_parse_from(["bench", "produce", "--acks", "all"]).is_err());
        assert!(TestCli::try_parse_from(["bench", "ceiling", "group"]).is_err());
    }

    #[test]
    fn labels_name_the_mode_and_the_ceiling() {
        let (w, o, s) = opts(&["consume", "--mode", "subscribe"]);
        let p = plan(w, &o, s).unwrap();
        assert_eq!(workload_label(&p, &o, s), "consume-subscribe");
        let (w, o, s) = opts(&["ceiling", "produce"]);
        let p = plan(w, &o, s).unwrap();
        assert_eq!(workload_label(&p, &o, s), "ceiling-produce");
        assert!(describe(&p, &o, s).contains("null server"));
    }

    #[test]
    fn records_split_evenly() {
        assert_eq!(split_evenly(10, 3), vec![4, 3, 3]);
        assert_eq!(split_evenly(2, 4), vec![1, 1, 0, 0]);
        assert_eq!(split_evenly(7, 1), vec![7]);
    }

    #[test]
    fn bench_errors_become_one_line_cli_errors() {
        let e = CliError::from(BenchError::Usage("--batch must be at least 1".into()));
        assert_eq!(e.to_string(), "--batch must be at least 1");
        assert!(matches!(e, CliError::Usage(_)), "usage errors exit 2");
        let e = CliError::from(BenchError::Failed("records went missing".into()));
        assert_eq!(
            e.to_string(),
            "cannot run the benchmark: records went missing"
        );
    }

    fn small(args: &[&str]) -> BenchOpts {
        let mut argv = vec![
            "--embedded",
            "--records",
            "2000",
            "--batch",
            "100",
            "--in-flight",
            "2",
            "--connections",
            "1",
        ];
        argv.extend_from_slice(args);
        let mut full = vec!["produce"];
        full.extend(argv);
        opts(&full).1
    }

    fn assert_sane(r: &Report, workload: &str) {
        assert_eq!(r.workload, workload);
        assert_eq!(r.median.records, 2000, "{r:?}");
        assert_eq!(r.median.bytes, 2000 * 116, "{r:?}");
        assert!(r.median.seconds > 0.0, "{r:?}");
        assert!(r.median.records_per_sec() > 0.0, "{r:?}");
        let l = r.median.latency;
        assert!(l.p50_ms <= l.p99_ms && l.p99_ms <= l.max_ms, "{l:?}");
        let json = report::render_json(r);
        assert!(
            json.starts_with(&format!("{{\"workload\":\"{workload}\"")),
            "{json}"
        );
    }

    /// A tiny embedded produce, consume (both modes) and ceiling comparison.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn embedded_smoke() {
        let o = small(&["--compare-ceiling", "--runs", "2"]);
        let r = execute(Workload::Produce, &o, Sides::Both, false)
            .await
            .unwrap();
        assert_sane(&r, "produce");
        assert_eq!(r.runs_per_sec.len(), 2);
        let ceiling = r.ceiling.as_ref().unwrap();
        assert_eq!(ceiling.median.records, 2000);
        assert_eq!(ceiling.runs_per_sec.len(), 2);
        assert!(r.ratio_to_ceiling().unwrap() > 0.0);

        let o = small(&["--partitions", "2"]);
        let r = execute(Workload::Consume, &o, Sides::Strata, false)
            .await
            .unwrap();
        assert_sane(&r, "consume-fetch");

        let mut o = small(&["--compare-ceiling"]);
        o.mode = ConsumeMode::Subscribe;
        let r = execute(Workload::Consume, &o, Sides::Both, false)
            .await
            .unwrap();
        assert_sane(&r, "consume-subscribe");
        assert_eq!(r.ceiling.unwrap().median.records, 2000);

        // The null server's responses are all full; the count stops at the
        // records asked for (it reported whole responses: 24,000 of 20,000).
        let mut o = small(&[]);
        (o.records, o.batch) = (Some(2500), 1000);
        let r = execute(Workload::Consume, &o, Sides::CeilingOnly, false)
            .await
            .unwrap();
        assert_eq!(r.median.records, 2500, "{r:?}");
    }

    /// A broker outside the bench (as `--broker` would reach), on a temp dir.
    async fn broker_on_temp_dir() -> (tempfile::TempDir, RunningServer) {
        let dir = tempfile::tempdir().unwrap();
        let config = BrokerConfig {
            data_dir: dir.path().to_path_buf(),
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            ..BrokerConfig::default()
        };
        let server = crate::api::start(config).await.unwrap();
        (dir, server)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_group_run_leaves_no_group_behind() {
        let (_dir, server) = broker_on_temp_dir().await;
        let addr = server.addr.to_string();
        let (_, o, _) = opts(&[
            "group",
            "--broker",
            &addr,
            "--records",
            "400",
            "--batch",
            "100",
            "--partitions",
            "2",
            "--members",
            "2",
        ]);
        let r = execute(Workload::Group, &o, Sides::Strata, false)
            .await
            .unwrap();
        assert_eq!(r.median.records, 400, "{r:?}");
        let client = Client::connect(&addr).await.unwrap();
        assert!(client.list_groups().await.unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_existing_topic_named_without_partitions_is_written_whole() {
        let (_dir, server) = broker_on_temp_dir().await;
        let addr = server.addr.to_string();
        let client = Client::connect(&addr).await.unwrap();
        client
            .create_topic("orders", 3, TopicConfig::default())
            .await
            .unwrap();
        let (_, o, _) = opts(&[
            "produce",
            "--broker",
            &addr,
            "--topic",
            "orders",
            "--records",
            "3000",
            "--batch",
            "100",
        ]);
        let r = execute(Workload::Produce, &o, Sides::Strata, false)
            .await
            .unwrap();
        assert_eq!(r.median.records, 3000, "{r:?}");
        assert!(
            r.description.contains("3 partition(s)"),
            "{}",
            r.description
        );
        for p in 0..3 {
            let end = client
                .list_offsets("orders", p, OffsetSpec::Latest, 0)
                .await
                .unwrap();
            assert!(end.offset > 0, "partition {p} got nothing");
        }
        // The bench's topic was the user's: it stays.
        assert!(client.describe_topic("orders").await.is_ok());
    }
}
