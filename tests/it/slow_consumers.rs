//! RELIABILITY.md scenario 14: many streaming subscribers that each read one
//! message a second while producers write at half the broker's measured
//! maximum. The broker's heap must stay bounded by the per-stream buffers,
//! and the producers' latency is reported against a baseline taken without
//! the subscribers, and against windows of the same run in which the
//! subscribers pause (10 s of every 60 s).
//!
//! Long; off by default:
//! `STRATA_SLOW_SECS=600 cargo test --release --test it slow_subscribers -- --ignored --nocapture`
//! (`STRATA_SLOW_SUBSCRIBERS`, default 1,000, sets how many).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use strata::bench::report::MachineTimes;
use strata::proto::v1::log_client::LogClient;
use strata::proto::v1::{Record, SubscribeRequest};
use tokio::task::JoinSet;

use crate::harness::{proc_status_number, rss_anon_kib_of, BrokerProcess};
use crate::log_api::{create_topic, produce_req};

/// `--default-fetch-bytes`: the most one subscription message carries.
const FETCH_BYTES: u64 = 64 << 10;
/// The subscribers pause the last [`PAUSE_SECS`] of every
/// `PAUSE_EVERY_SECS`, for a baseline inside the run.
const PAUSE_EVERY_SECS: u64 = 60;
const PAUSE_SECS: u64 = 10;
/// Connections the subscribers share.
const CONNECTIONS: usize = 50;
/// Producer tasks, each with one request in flight.
const PRODUCERS: usize = 4;
/// Records per produce request, and value bytes per record.
const BATCH: usize = 100;
const VALUE_BYTES: usize = 100;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn batch() -> Vec<Record> {
    (0..BATCH)
        .map(|i| Record {
            key: format!("k{}", i % 16).into_bytes(),
            value: vec![b'v'; VALUE_BYTES],
            ..Default::default()
        })
        .collect()
}

/// Produces for `length` from [`PRODUCERS`] tasks: as fast as they can when
/// `rate` is `None`, else at `rate` requests/s in all (on a fixed schedule,
/// so a slow answer delays the next request rather than bunching them).
/// Returns the requests made and their latencies in µs: those sent while
/// `paused` was false, then those sent while it was true.
async fn produce_for(
    b: &BrokerProcess,
    rate: Option<f64>,
    length: Duration,
    paused: Arc<AtomicBool>,
) -> (u64, Histogram<u64>, Histogram<u64>) {
    let mut tasks = JoinSet::new();
    for _ in 0..PRODUCERS {
        let mut log = b.log().await;
        let paused = paused.clone();
        tasks.spawn(async move {
            let (mut active, mut quiet) = (latency_histogram(), latency_histogram());
            let records = batch();
            let start = tokio::time::Instant::now();
            let every = rate.map(|r| Duration::from_secs_f64(PRODUCERS as f64 / r));
            let mut sent = 0u64;
            while start.elapsed() < length {
                if let Some(every) = every {
                    let due = start + every * sent as u32;
                    tokio::time::sleep_until(due).await;
                }
                let in_pause = paused.load(Ordering::Relaxed);
                let t = Instant::now();
                log.produce(produce_req("slow", Some(0), records.clone()))
                    .await
                    .expect("produce while subscribers lag");
                let hist = if in_pause { &mut quiet } else { &mut active };
                hist.saturating_record(t.elapsed().as_micros() as u64);
                sent += 1;
            }
            (sent, active, quiet)
        });
    }
    let (mut active, mut quiet) = (latency_histogram(), latency_histogram());
    let mut requests = 0;
    while let Some(done) = tasks.join_next().await {
        let (sent, a, q) = done.expect("producer task");
        requests += sent;
        active.add(a).unwrap();
        quiet.add(q).unwrap();
    }
    (requests, active, quiet)
}

/// Opens `subscribers` streams from offset 0 over [`CONNECTIONS`]
/// connections, says so on `ready`, and reads each at one message a second
/// until `stop`, skipping the seconds in which `paused` is set. Returns the
/// fewest messages any one of them read.
async fn run_subscribers(
    addr: String,
    subscribers: usize,
    stop: Arc<AtomicBool>,
    paused: Arc<AtomicBool>,
    messages: Arc<AtomicU64>,
    ready: tokio::sync::oneshot::Sender<()>,
) -> u64 {
    let mut channels = Vec::new();
    for _ in 0..CONNECTIONS {
        let channel = crate::harness::channel_to(&addr).await;
        channels.push(channel);
    }
    let mut readers = JoinSet::new();
    for i in 0..subscribers {
        let mut stream = LogClient::new(channels[i % CONNECTIONS].clone())
            .max_decoding_message_size(64 << 20)
            .subscribe(SubscribeRequest {
                topic: "slow".into(),
                partition: 0,
                offset: 0,
            })
            .await
            .expect("subscribe")
            .into_inner();
        let (stop, paused, messages) = (stop.clone(), paused.clone(), messages.clone());
        // Each reads on its own one-second schedule, the phases spread evenly
        // over the second as independent clients' would be (all sleeping a
        // second after one shared start, they would all read in one burst).
        let phase = Duration::from_secs(1) * i as u32 / subscribers as u32;
        readers.spawn(async move {
            let first = tokio::time::Instant::now() + phase;
            let mut read = 0u64;
            for tick in 0u64.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                tokio::time::sleep_until(first + Duration::from_secs(tick)).await;
                if paused.load(Ordering::Relaxed) {
                    continue;
                }
                // A subscriber that caught up waits for the next append; once
                // the producers are done there is none, so it stops waiting.
                let next = tokio::time::timeout(Duration::from_secs(5), stream.message()).await;
                let Ok(message) = next else { continue };
                let message = message.expect("subscription message");
                assert!(message.is_some(), "a subscription ended while it lagged");
                read += 1;
                messages.fetch_add(1, Ordering::Relaxed);
            }
            read
        });
    }
    let _ = ready.send(());
    let mut least_read = u64::MAX;
    while let Some(done) = readers.join_next().await {
        least_read = least_read.min(done.expect("subscriber task"));
    }
    least_read
}

/// The machine's and the broker's CPU counters at one moment, to say how
/// busy the cores were over a phase (the latencies mean little without it).
struct CpuSample {
    at: Instant,
    machine: Option<MachineTimes>,
    broker_secs: Option<f64>,
    /// This test process: the producers and the subscribers.
    clients_secs: Option<f64>,
}

impl CpuSample {
    fn take(pid: u32) -> CpuSample {
        CpuSample {
            at: Instant::now(),
            machine: MachineTimes::now(),
            broker_secs: process_cpu_secs(pid),
            clients_secs: process_cpu_secs(std::process::id()),
        }
    }

    /// Cores busy per wall second since `self`: the broker's, the test's
    /// clients' and the whole machine's (user + system; idle and steal
    /// beside).
    fn report(self, pid: u32) -> String {
        let wall = self.at.elapsed().as_secs_f64();
        let cores = |before: Option<f64>, after: Option<f64>| match (before, after) {
            (Some(a), Some(b)) => format!("{:.2}", (b - a) / wall),
            _ => "?".into(),
        };
        let broker = cores(self.broker_secs, process_cpu_secs(pid));
        let clients = cores(self.clients_secs, process_cpu_secs(std::process::id()));
        let machine = match (self.machine, MachineTimes::now()) {
            (Some(a), Some(b)) => {
                let d = b.since(&a);
                format!(
                    "{:.2} (idle {:.2}, steal {:.2})",
                    (d.user + d.system) / wall,
                    (d.idle + d.iowait) / wall,
                    d.steal / wall
                )
            }
            _ => "?".into(),
        };
        format!("broker {broker}, clients {clients}, machine {machine}")
    }
}

/// CPU seconds (user + system) a process has used, from `/proc/PID/stat`.
fn process_cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at state.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
    // utime and stime are fields 14 and 15 of the line, 11 and 12 here.
    Some((ticks(11)? + ticks(12)?) / 100.0)
}

/// A latency histogram in µs, up to a minute.
fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

fn ms(hist: &Histogram<u64>, q: f64) -> f64 {
    hist.value_at_quantile(q) as f64 / 1000.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: STRATA_SLOW_SECS=600 cargo test --release --test it slow_subscribers -- --ignored --nocapture"]
async fn slow_subscribers_keep_broker_memory_bounded_while_producers_write() {
    let secs = env_or("STRATA_SLOW_SECS", 60);
    let subscribers = env_or("STRATA_SLOW_SUBSCRIBERS", 1000) as usize;
    let b = BrokerProcess::start_with(&["--default-fetch-bytes", &FETCH_BYTES.to_string()]);
    create_topic(&b, "slow", 1).await;

    // The broker's maximum for this shape, then half of it.
    let never_paused = Arc::new(AtomicBool::new(false));
    let (flat_out, _, _) =
        produce_for(&b, None, Duration::from_secs(5), never_paused.clone()).await;
    let rate = flat_out as f64 / 5.0 / 2.0;
    let baseline_cpu = CpuSample::take(b.pid());
    let (_, baseline, _) = produce_for(
        &b,
        Some(rate),
        Duration::from_secs(10),
        never_paused.clone(),
    )
    .await;
    let baseline_cpu = baseline_cpu.report(b.pid());

    // The subscribers, from offset 0, each taking one message a second, on
    // their own runtime and thread: they stand for clients on other machines,
    // so their decoding must not queue the producers' tasks behind it (the
    // two still share this machine's cores).
    let stop = Arc::new(AtomicBool::new(false));
    // The last PAUSE_SECS of every PAUSE_EVERY_SECS the subscribers stop
    // reading (their streams stay open): the producers' latency in those
    // windows is a baseline taken in the same run, with the same log and
    // page cache, which the one taken before the subscribers cannot be over
    // ten minutes and tens of GB written.
    let paused = Arc::new(AtomicBool::new(false));
    let messages = Arc::new(AtomicU64::new(0));
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let readers = {
        let (addr, stop, paused, messages) = (
            b.addr.clone(),
            stop.clone(),
            paused.clone(),
            messages.clone(),
        );
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("subscriber runtime")
                .block_on(run_subscribers(
                    addr,
                    subscribers,
                    stop,
                    paused,
                    messages,
                    ready_tx,
                ))
        })
    };
    ready_rx.await.expect("the subscribers started");
    let heap_before = b.rss_anon_kib();

    // Sample the broker's heap while the producers write at half speed.
    let heap_sampler = {
        let stop = stop.clone();
        let pid = b.pid();
        tokio::spawn(async move {
            let (mut samples, mut threads) = (Vec::new(), Vec::new());
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_secs(5)).await;
                samples.push(rss_anon_kib_of(pid));
                threads.push(proc_status_number(pid, "Threads").unwrap_or(0));
            }
            (samples, threads)
        })
    };
    let pauser = {
        let (stop, paused) = (stop.clone(), paused.clone());
        tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            for window in 1u64.. {
                let pause_at = start + Duration::from_secs(window * PAUSE_EVERY_SECS - PAUSE_SECS);
                tokio::time::sleep_until(pause_at).await;
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                paused.store(true, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_secs(PAUSE_SECS)).await;
                paused.store(false, Ordering::Relaxed);
            }
        })
    };
    let loaded_cpu = CpuSample::take(b.pid());
    let (requests, loaded, in_run_baseline) =
        produce_for(&b, Some(rate), Duration::from_secs(secs), paused.clone()).await;
    let loaded_cpu = loaded_cpu.report(b.pid());
    stop.store(true, Ordering::Relaxed);
    let (samples, threads) = heap_sampler.await.expect("sampler");
    pauser.abort();
    let least_read = tokio::task::spawn_blocking(move || readers.join())
        .await
        .expect("join")
        .expect("subscriber thread");
    let heap_after = b.rss_anon_kib();

    // Every stream holds at most its channel's responses (2) plus the one
    // being framed: 3 fetch-sized buffers; 16 MiB more for everything else.
    let bound_kib = ((subscribers as u64 * 3 * FETCH_BYTES) >> 10) + (16 << 10);
    let grown = heap_after.saturating_sub(heap_before);
    let half = samples.len() / 2;
    let (mid, last) = (
        samples.get(half).copied().unwrap_or(heap_after),
        samples.last().copied().unwrap_or(heap_after),
    );
    let drift = (last as f64 - mid as f64) / mid.max(1) as f64 * 100.0;
    eprintln!(
        "slow subscribers: {subscribers} streams reading 1 message/s for {secs} s \
         ({} messages in all, the slowest read {least_read}); producers at {rate:.0} requests/s \
         (half of the {:.0}/s measured flat out, {BATCH} × {VALUE_BYTES} B each), {requests} \
         requests; produce latency p50/p99/max: baseline {:.2}/{:.2}/{:.2} ms, with the \
         subscribers reading {:.2}/{:.2}/{:.2} ms (p99 × {:.2}), in the run's windows with the \
         subscribers paused {:.2}/{:.2}/{:.2} ms (reading vs paused p99 × {:.2}); broker heap {heap_before} → \
         {heap_after} KiB (+{grown} KiB, bound {bound_kib} KiB), second half {mid} → {last} KiB \
         ({drift:+.1} %), samples every 5 s: {samples:?}, the broker's threads then: \
         {threads:?}; cores busy: baseline {baseline_cpu}, \
         with the subscribers {loaded_cpu}",
        messages.load(Ordering::Relaxed),
        flat_out as f64 / 5.0,
        ms(&baseline, 0.5),
        ms(&baseline, 0.99),
        ms(&baseline, 1.0),
        ms(&loaded, 0.5),
        ms(&loaded, 0.99),
        ms(&loaded, 1.0),
        ms(&loaded, 0.99) / ms(&baseline, 0.99).max(0.001),
        ms(&in_run_baseline, 0.5),
        ms(&in_run_baseline, 0.99),
        ms(&in_run_baseline, 1.0),
        ms(&loaded, 0.99) / ms(&in_run_baseline, 0.99).max(0.001),
    );
    assert!(
        grown < bound_kib,
        "heap grew by {grown} KiB with {subscribers} slow subscribers (bound {bound_kib} KiB)"
    );
    assert!(least_read > 0, "a subscriber never got a message");
}
