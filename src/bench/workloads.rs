//! The load generators, one function per workload; each times one run and
//! returns its [`RunFigures`].
//!
//! Requests are built once and reused: a produce request is a
//! [`ProduceRequestWire`] whose records are one pre-encoded [`Bytes`]
//! payload, so cloning it costs a reference count and sending it costs one
//! copy into tonic's encode buffer. Readers decode every response into the
//! generated `strata.v1` types (prost), as a real client would.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::client::{ConnectOptions, Connection, EncodedLog};
use bytes::{Bytes, BytesMut};
use hdrhistogram::Histogram;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::client::{ClientError, MAX_MESSAGE_BYTES};
use crate::proto::v1::consume_event::Event;
use crate::proto::v1::groups_client::GroupsClient;
use crate::proto::v1::log_client::LogClient;
use crate::proto::v1::{
    Acks, AutoOffsetReset, CommitOffsetsRequest, ConsumeRequest, FetchRequest, FetchResponse,
    PartitionOffset, Record, RecordBatch, SubscribeRequest,
};
use crate::wire::{ProduceRequestWire, RecordsPayload, RECORDS_FIELD};

use super::rate::RateLimiter;
use super::report::{merge_histogram, new_histogram, LatencySummary, RunFigures};
use super::{BenchError, Progress};

/// How long the end-to-end bench waits, after the last produce was answered,
/// for the remaining records to be delivered.
const E2E_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens `count` HTTP/2 connections to `addr` (`host:port`), with the client
/// library's settings, TLS and token.
///
/// # Errors
/// [`ClientError::InvalidAddress`], [`ClientError::Options`] or
/// [`ClientError::Connect`].
pub async fn connect(
    addr: &str,
    count: usize,
    options: &ConnectOptions,
) -> Result<Vec<Connection>, BenchError> {
    let mut channels = Vec::with_capacity(count.max(1));
    for _ in 0..count.max(1) {
        channels.push(crate::client::connect::connect(addr, options).await?);
    }
    Ok(channels)
}

// ---------------------------------------------------------------------------
// Records
// ---------------------------------------------------------------------------

/// What the generated records look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordShape {
    /// Value bytes per record.
    pub value_bytes: usize,
    /// Key bytes per record (0 = no key).
    pub key_bytes: usize,
    /// Distinct keys.
    pub key_space: u64,
}

impl RecordShape {
    /// Key + value bytes of one record (what MB/s counts).
    pub fn record_bytes(&self) -> u64 {
        (self.value_bytes + self.key_bytes) as u64
    }

    /// The key of record `n`: `n % key_space` in decimal, zero-padded to
    /// `key_bytes` (its last `key_bytes` digits when longer).
    pub fn key(&self, n: u64) -> Vec<u8> {
        if self.key_bytes == 0 {
            return Vec::new();
        }
        let digits = format!(
            "{:0width$}",
            n % self.key_space.max(1),
            width = self.key_bytes
        );
        digits.as_bytes()[digits.len() - self.key_bytes..].to_vec()
    }

    /// A value of `value_bytes` pseudo-random bytes (deterministic per `n`).
    pub fn value(&self, n: u64) -> Vec<u8> {
        let mut state = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..self.value_bytes)
            .map(|_| {
                // xorshift64
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect()
    }

    /// `count` records, numbered from `first`.
    pub fn records(&self, first: u64, count: u64) -> Vec<Record> {
        (first..first + count)
            .map(|n| Record {
                key: self.key(n),
                value: self.value(n),
                headers: Vec::new(),
                timestamp_ms: 0,
            })
            .collect()
    }
}

/// Encodes records as the `records` entries of a produce request (field 3):
/// byte-identical to a `RecordBatch`'s records.
pub fn encode_records(records: &[Record]) -> Bytes {
    let mut buf = BytesMut::new();
    for r in records {
        prost::encoding::message::encode(RECORDS_FIELD, r, &mut buf);
    }
    buf.freeze()
}

/// The pre-encoded payload of one batch of `count` records of `shape`.
pub fn batch_payload(shape: &RecordShape, count: u64) -> Bytes {
    encode_records(&shape.records(0, count))
}

fn produce_request(topic: &str, partition: u32, acks: Acks, payload: Bytes) -> ProduceRequestWire {
    let mut request = ProduceRequestWire::default();
    request.topic = topic.to_string();
    request.partition = Some(partition);
    request.acks = acks.into();
    request.set_records_payload(RecordsPayload::from_bytes(payload));
    request
}

fn log_client(channel: &Connection) -> LogClient<Connection> {
    LogClient::new(channel.clone())
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Waits for every task; the first error aborts the others.
async fn join_all<T: 'static>(
    mut set: JoinSet<Result<T, BenchError>>,
) -> Result<Vec<T>, BenchError> {
    let mut out = Vec::with_capacity(set.len());
    while let Some(joined) = set.join_next().await {
        let result = match joined {
            Ok(r) => r,
            Err(e) => Err(BenchError::Failed(format!("a load task failed: {e}"))),
        };
        match result {
            Ok(v) => out.push(v),
            Err(e) => {
                set.abort_all();
                return Err(e);
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Produce (W1, W2, W4)
// ---------------------------------------------------------------------------

/// One produce run.
#[derive(Debug, Clone)]
pub struct ProduceSpec {
    /// Topic to produce to (ignored by the null server).
    pub topic: String,
    /// Partitions, written round-robin by request.
    pub partitions: u32,
    /// Records per request.
    pub batch: u32,
    /// Requests in flight at once (one task each).
    pub in_flight: usize,
    /// Acknowledgement level.
    pub acks: Acks,
    /// Records to send; `None` = until `duration`.
    pub records: Option<u64>,
    /// Longest time to keep sending.
    pub duration: Option<Duration>,
    /// Records per second, when limited.
    pub rate: Option<RateLimiter>,
    /// Record contents.
    pub shape: RecordShape,
}

/// Produces as fast as `in_flight` concurrent requests go (or at `rate`);
/// latency is request send → response, per request.
///
/// # Errors
/// The first failed request.
pub async fn produce(
    channels: &[Connection],
    spec: &ProduceSpec,
    progress: &Arc<Progress>,
) -> Result<RunFigures, BenchError> {
    let batch = u64::from(spec.batch.max(1));
    let partitions = spec.partitions.max(1);
    let total = spec.records.unwrap_or(u64::MAX);
    let full = batch_payload(&spec.shape, batch);
    let tail_records = if total == u64::MAX { 0 } else { total % batch };
    let tail = (tail_records > 0).then(|| batch_payload(&spec.shape, tail_records));
    let build = |payload: &Bytes| -> Arc<Vec<ProduceRequestWire>> {
        Arc::new(
            (0..partitions)
                .map(|p| produce_request(&spec.topic, p, spec.acks, payload.clone()))
                .collect(),
        )
    };
    let full_requests = build(&full);
    let tail_requests = tail.as_ref().map(build);
    let record_bytes = spec.shape.record_bytes();
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let tokio_start = tokio::time::Instant::now();
    let deadline = spec.duration.map(|d| start + d);
    let mut set = JoinSet::new();
    for worker in 0..spec.in_flight.max(1) {
        let mut log = EncodedLog::new(channels[worker % channels.len()].clone());
        let next = next.clone();
        let full_requests = full_requests.clone();
        let tail_requests = tail_requests.clone();
        let progress = progress.clone();
        let rate = spec.rate;
        set.spawn(async move {
            let mut hist = new_histogram();
            let (mut records, mut requests) = (0u64, 0u64);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let first = i.saturating_mul(batch);
                if first >= total || deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                if let Some(rate) = rate {
                    tokio::time::sleep_until(tokio_start + rate.due_at(first)).await;
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        break;
                    }
                }
                let n = batch.min(total - first);
                let p = (i % u64::from(partitions)) as usize;
                let request = match (&tail_requests, n == batch) {
                    (Some(tail), false) => tail[p].clone(),
                    _ => full_requests[p].clone(),
                };
                let sent = Instant::now();
                log.produce(request).await.map_err(ClientError::from)?;
                hist.saturating_record(micros(sent.elapsed()));
                records += n;
                requests += 1;
                progress.add(n, n * record_bytes);
            }
            Ok((hist, records, requests))
        });
    }
    let parts = join_all(set).await?;
    let seconds = start.elapsed().as_secs_f64();
    let mut hist = new_histogram();
    let (mut records, mut requests) = (0, 0);
    for (h, r, q) in &parts {
        merge_histogram(&mut hist, h);
        records += r;
        requests += q;
    }
    Ok(RunFigures {
        records,
        bytes: records * record_bytes,
        seconds,
        latency: LatencySummary::from_histogram(&hist),
        requests,
        ..RunFigures::default()
    })
}

// ---------------------------------------------------------------------------
// Consume (W3)
// ---------------------------------------------------------------------------

/// How the consume bench reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ConsumeMode {
    /// `Fetch` requests, one after the other per partition.
    Fetch,
    /// One `Subscribe` stream per partition.
    Subscribe,
}

/// One consume run.
#[derive(Debug, Clone)]
pub struct ConsumeSpec {
    /// Topic to read.
    pub topic: String,
    /// Per partition, the offset to stop at (reading starts at 0).
    pub ends: Vec<u64>,
    /// Fetch or Subscribe.
    pub mode: ConsumeMode,
    /// `max_bytes` of each fetch.
    pub max_bytes: u32,
    /// Longest time to keep reading.
    pub duration: Option<Duration>,
}

/// Counts the records of a decoded batch (and their key + value bytes) in
/// the offsets `from..until`; returns (records, bytes, next offset). The
/// bound matters for the null server, whose responses are all full: the
/// last one runs past the records the workload asked for.
fn count_batch(batch: &RecordBatch, from: u64, until: u64) -> (u64, u64, u64) {
    let base = batch.base_offset;
    let len = batch.records.len() as u64;
    let end = base + len;
    let skip = from.saturating_sub(base).min(len) as usize;
    let take = until.saturating_sub(base).min(len) as usize;
    let counted = batch.records.get(skip..take).unwrap_or_default();
    let bytes = counted
        .iter()
        .map(|r| (r.key.len() + r.value.len()) as u64)
        .sum();
    (counted.len() as u64, bytes, end.min(until))
}

fn count_response(response: &FetchResponse, offset: &mut u64, until: u64) -> (u64, u64) {
    let (mut records, mut bytes) = (0, 0);
    for batch in &response.batches {
        let (r, b, end) = count_batch(batch, *offset, until);
        records += r;
        bytes += b;
        *offset = (*offset).max(end);
    }
    (records, bytes)
}

/// Reads every partition from offset 0 to its end, one task per partition,
/// decoding every record. Latency: per fetch (request → decoded response),
/// or for `Subscribe` the wait for each message.
///
/// # Errors
/// A failed call, or a partition that stops short of its end.
pub async fn consume(
    channels: &[Connection],
    spec: &ConsumeSpec,
    progress: &Arc<Progress>,
) -> Result<RunFigures, BenchError> {
    let start = Instant::now();
    let deadline = spec.duration.map(|d| start + d);
    let mut set = JoinSet::new();
    for (p, &end) in spec.ends.iter().enumerate() {
        let mut log = log_client(&channels[p % channels.len()]);
        let topic = spec.topic.clone();
        let progress = progress.clone();
        let (mode, max_bytes) = (spec.mode, spec.max_bytes);
        let partition = p as u32;
        set.spawn(async move {
            let mut hist = new_histogram();
            let (mut records, mut bytes, mut messages, mut offset) = (0u64, 0u64, 0u64, 0u64);
            let past_deadline = || deadline.is_some_and(|d| Instant::now() >= d);
            match mode {
                ConsumeMode::Fetch => {
                    while offset < end && !past_deadline() {
                        let request = FetchRequest {
                            topic: topic.clone(),
                            partition,
                            offset,
                            max_bytes,
                            max_wait_ms: 0,
                        };
                        let sent = Instant::now();
                        let response = log
                            .fetch(request)
                            .await
                            .map_err(ClientError::from)?
                            .into_inner();
                        hist.saturating_record(micros(sent.elapsed()));
                        let before = offset;
                        let (r, b) = count_response(&response, &mut offset, end);
                        if offset == before {
                            return Err(BenchError::Failed(format!(
                                "fetch of partition {partition} at offset {offset} returned no \
                                 records before the end ({end})"
                            )));
                        }
                        records += r;
                        bytes += b;
                        messages += 1;
                        progress.add(r, b);
                    }
                }
                ConsumeMode::Subscribe => {
                    let request = SubscribeRequest {
                        topic: topic.clone(),
                        partition,
                        offset: 0,
                    };
                    let mut waited = Instant::now();
                    let mut stream = log
                        .subscribe(request)
                        .await
                        .map_err(ClientError::from)?
                        .into_inner();
                    while offset < end && !past_deadline() {
                        let Some(response) = stream.message().await.map_err(ClientError::from)?
                        else {
                            return Err(BenchError::Failed(format!(
                                "the subscription to partition {partition} ended at offset \
                                 {offset}, before the end ({end})"
                            )));
                        };
                        hist.saturating_record(micros(waited.elapsed()));
                        waited = Instant::now();
                        let (r, b) = count_response(&response, &mut offset, end);
                        records += r;
                        bytes += b;
                        messages += 1;
                        progress.add(r, b);
                    }
                }
            }
            Ok((hist, records, bytes, messages))
        });
    }
    let parts = join_all(set).await?;
    let seconds = start.elapsed().as_secs_f64();
    let mut hist = new_histogram();
    let mut figures = RunFigures {
        seconds,
        ..RunFigures::default()
    };
    for (h, r, b, m) in &parts {
        merge_histogram(&mut hist, h);
        figures.records += r;
        figures.bytes += b;
        figures.requests += m;
    }
    figures.latency = LatencySummary::from_histogram(&hist);
    Ok(figures)
}

// ---------------------------------------------------------------------------
// End-to-end latency (W5)
// ---------------------------------------------------------------------------

/// One end-to-end run.
#[derive(Debug, Clone)]
pub struct E2eSpec {
    /// Topic to produce to and tail.
    pub topic: String,
    /// Per partition, the offset to start tailing at (the high watermark).
    pub start_offsets: Vec<u64>,
    /// Records to produce; `None` = until `duration`.
    pub records: Option<u64>,
    /// Most records per request (records due at the same time share one).
    pub batch: u32,
    /// Produce requests in flight at most.
    pub in_flight: usize,
    /// Acknowledgement level.
    pub acks: Acks,
    /// The produce rate.
    pub rate: RateLimiter,
    /// Longest time to keep producing.
    pub duration: Option<Duration>,
    /// Record contents; values carry the send time in their first 8 bytes.
    pub shape: RecordShape,
}

/// A pre-encoded batch whose records' first 8 value bytes are patched with
/// the send time before each request.
struct StampedTemplate {
    payload: Bytes,
    /// Per record: (end of its entry in `payload`, start of its value).
    records: Vec<(usize, usize)>,
}

impl StampedTemplate {
    fn new(shape: &RecordShape, count: u64) -> Self {
        let mut buf = BytesMut::new();
        let mut records = Vec::new();
        for r in shape.records(0, count) {
            prost::encoding::message::encode(RECORDS_FIELD, &r, &mut buf);
            // prost writes fields in tag order and skips defaults: the value
            // (field 2) is last, so it ends the entry.
            records.push((buf.len(), buf.len() - r.value.len()));
        }
        StampedTemplate {
            payload: buf.freeze(),
            records,
        }
    }

    /// The first `n` records with `stamp` in each value's first 8 bytes.
    fn stamped(&self, n: usize, stamp: u64) -> Bytes {
        let n = n.clamp(1, self.records.len());
        let end = self.records[n - 1].0;
        let mut out = BytesMut::from(&self.payload[..end]);
        for &(_, value_start) in &self.records[..n] {
            out[value_start..value_start + 8].copy_from_slice(&stamp.to_le_bytes());
        }
        out.freeze()
    }
}

/// State shared by the tailing subscribers.
struct Tail {
    received: AtomicU64,
    bytes: AtomicU64,
    /// Records produced in all; `u64::MAX` while the producer runs.
    target: AtomicU64,
    done: watch::Sender<bool>,
    hist: Mutex<Histogram<u64>>,
    last_delivery: Mutex<Option<Instant>>,
}

impl Tail {
    fn check_done(&self) {
        if self.received.load(Ordering::Acquire) >= self.target.load(Ordering::Acquire) {
            self.done.send_replace(true);
        }
    }
}

/// Produces at a fixed rate while one `Subscribe` stream per partition tails
/// the topic; latency = delivery (decoded on the client) − send time, per
/// record. Records due at the same moment (the timer ticks every ms) go in
/// one request, up to `batch`.
///
/// # Errors
/// A failed call, a subscription that ends, or records not delivered
/// within 10 s of the last produce.
pub async fn end_to_end(
    channels: &[Connection],
    spec: &E2eSpec,
    progress: &Arc<Progress>,
) -> Result<RunFigures, BenchError> {
    if spec.shape.value_bytes < 8 {
        return Err(BenchError::Usage(
            "e2e needs --record-size of at least 8 (the send time rides in the value)".into(),
        ));
    }
    let epoch = Instant::now();
    let (done, _) = watch::channel(false);
    let tail = Arc::new(Tail {
        received: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        target: AtomicU64::new(u64::MAX),
        done,
        hist: Mutex::new(new_histogram()),
        last_delivery: Mutex::new(None),
    });
    // Subscribers first, so none misses the first records.
    let mut subscribers = JoinSet::new();
    for (p, &from) in spec.start_offsets.iter().enumerate() {
        let mut log = log_client(&channels[p % channels.len()]);
        let request = SubscribeRequest {
            topic: spec.topic.clone(),
            partition: p as u32,
            offset: from,
        };
        let mut stream = log
            .subscribe(request)
            .await
            .map_err(ClientError::from)?
            .into_inner();
        let tail = tail.clone();
        let progress = progress.clone();
        let mut done = tail.done.subscribe();
        subscribers.spawn(async move {
            let mut hist = new_histogram();
            let mut offset = from;
            loop {
                if *done.borrow_and_update() {
                    break;
                }
                let message = tokio::select! {
                    m = stream.message() => m.map_err(ClientError::from)?,
                    _ = done.changed() => break,
                };
                let Some(response) = message else {
                    return Err(BenchError::Failed(format!(
                        "the subscription to partition {p} ended at offset {offset}"
                    )));
                };
                let now = micros(epoch.elapsed());
                let (mut records, mut bytes) = (0u64, 0u64);
                for batch in &response.batches {
                    let skip = offset.saturating_sub(batch.base_offset) as usize;
                    for r in batch.records.iter().skip(skip) {
                        let stamp = r
                            .value
                            .get(..8)
                            .and_then(|b| <[u8; 8]>::try_from(b).ok())
                            .map_or(now, u64::from_le_bytes);
                        hist.saturating_record(now.saturating_sub(stamp));
                        records += 1;
                        bytes += (r.key.len() + r.value.len()) as u64;
                    }
                    offset = offset.max(batch.base_offset + batch.records.len() as u64);
                }
                if let Ok(mut last) = tail.last_delivery.lock() {
                    *last = Some(Instant::now());
                }
                tail.bytes.fetch_add(bytes, Ordering::Relaxed);
                tail.received.fetch_add(records, Ordering::AcqRel);
                progress.add(records, bytes);
                tail.check_done();
            }
            if let Ok(mut shared) = tail.hist.lock() {
                merge_histogram(&mut shared, &hist);
            }
            Ok(())
        });
    }

    // The producer: whatever is due, in one request of at most `batch`.
    let total = spec.records.unwrap_or(u64::MAX);
    let batch = u64::from(spec.batch.max(1));
    let template = StampedTemplate::new(&spec.shape, batch.min(total.max(1)));
    let permits = Arc::new(Semaphore::new(spec.in_flight.max(1)));
    let start = tokio::time::Instant::now();
    let produce_started = Instant::now();
    let deadline = spec.duration.map(|d| start + d);
    let partitions = spec.start_offsets.len().max(1) as u64;
    let mut producers = JoinSet::new();
    let (mut sent, mut requests) = (0u64, 0u64);
    let loggers: Vec<EncodedLog> = channels.iter().cloned().map(EncodedLog::new).collect();
    while sent < total && deadline.is_none_or(|d| tokio::time::Instant::now() < d) {
        while let Some(joined) = producers.try_join_next() {
            joined.map_err(|e| BenchError::Failed(format!("a produce task failed: {e}")))??;
        }
        let due = spec.rate.due_by(start.elapsed()).min(total);
        if due <= sent {
            tokio::time::sleep_until(start + spec.rate.due_at(sent)).await;
            continue;
        }
        let n = (due - sent).min(batch);
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| BenchError::Failed(format!("produce permits closed: {e}")))?;
        let stamp = micros(epoch.elapsed());
        let payload = template.stamped(n as usize, stamp);
        let p = (requests % partitions) as u32;
        let request = produce_request(&spec.topic, p, spec.acks, payload);
        let mut log = loggers[(requests as usize) % loggers.len()].clone();
        producers.spawn(async move {
            let _permit = permit;
            log.produce(request).await.map_err(ClientError::from)?;
            Ok::<(), BenchError>(())
        });
        sent += n;
        requests += 1;
    }
    while let Some(joined) = producers.join_next().await {
        joined.map_err(|e| BenchError::Failed(format!("a produce task failed: {e}")))??;
    }
    drop(loggers);
    tail.target.store(sent, Ordering::Release);
    tail.check_done();
    let mut done = tail.done.subscribe();
    let drained = tokio::time::timeout(E2E_DRAIN_TIMEOUT, async {
        loop {
            if *done.borrow_and_update() {
                return true;
            }
            tokio::select! {
                changed = done.changed() => if changed.is_err() { return false; },
                // A subscriber that failed ends the wait with its error below.
                Some(joined) = subscribers.join_next() => {
                    if !matches!(joined, Ok(Ok(()))) {
                        return false;
                    }
                }
            }
        }
    })
    .await;
    tail.done.send_replace(true);
    let mut first_error = None;
    while let Some(joined) = subscribers.join_next().await {
        let result = joined
            .map_err(|e| BenchError::Failed(format!("a subscriber task failed: {e}")))
            .and_then(|r| r);
        if let Err(e) = result {
            first_error.get_or_insert(e);
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    let received = tail.received.load(Ordering::Acquire);
    if !matches!(drained, Ok(true)) || received < sent {
        return Err(BenchError::Failed(format!(
            "only {received} of {sent} records were delivered within {} s of the last produce",
            E2E_DRAIN_TIMEOUT.as_secs()
        )));
    }
    let last = tail
        .last_delivery
        .lock()
        .ok()
        .and_then(|l| *l)
        .unwrap_or_else(Instant::now);
    let hist = tail
        .hist
        .lock()
        .map(|h| h.clone())
        .unwrap_or_else(|_| new_histogram());
    Ok(RunFigures {
        records: received,
        bytes: tail.bytes.load(Ordering::Relaxed),
        seconds: last
            .saturating_duration_since(produce_started)
            .as_secs_f64(),
        latency: LatencySummary::from_histogram(&hist),
        requests,
        ..RunFigures::default()
    })
}

// ---------------------------------------------------------------------------
// Consumer group (W6)
// ---------------------------------------------------------------------------

/// One consumer-group run.
#[derive(Debug, Clone)]
pub struct GroupSpec {
    /// Topic to read.
    pub topic: String,
    /// Per partition, the offset to stop at (the group starts at 0).
    pub ends: Vec<u64>,
    /// Group name (fresh per run).
    pub group: String,
    /// `Consume` streams.
    pub members: usize,
    /// Member 0 commits and leaves when half of the records are read.
    pub leave_halfway: bool,
    /// Longest time to keep reading.
    pub duration: Option<Duration>,
}

/// State shared by the group members.
struct GroupState {
    /// Next offset delivered so far, per partition (the furthest any member got).
    positions: Vec<AtomicU64>,
    counted: AtomicU64,
    bytes: AtomicU64,
    messages: AtomicU64,
    total: u64,
    /// Last delivery per partition, and the histogram of per-partition gaps.
    gaps: Mutex<(Vec<Option<Instant>>, Histogram<u64>)>,
    done: watch::Sender<bool>,
    notes: Mutex<Vec<String>>,
    /// After the leaver left: its partitions not yet delivered by their new
    /// owner, and the longest leave gap measured so far.
    moved: Mutex<Option<(Vec<u32>, Option<Duration>)>>,
}

impl GroupState {
    /// Counts a delivered batch (records before a partition's position were
    /// delivered before, e.g. re-read after a rebalance, and are not counted);
    /// returns (new records, their bytes).
    fn deliver(&self, partition: u32, batch: &RecordBatch) -> (u64, u64) {
        let Some(position) = self.positions.get(partition as usize) else {
            return (0, 0);
        };
        let end = batch.base_offset + batch.records.len() as u64;
        let before = position.fetch_max(end, Ordering::AcqRel);
        let (records, bytes, _) = count_batch(batch, before, u64::MAX);
        if let Ok(mut gaps) = self.gaps.lock() {
            let now = Instant::now();
            let (last, hist) = &mut *gaps;
            if let Some(slot) = last.get_mut(partition as usize) {
                if let Some(previous) = slot.replace(now) {
                    let gap = now.duration_since(previous);
                    hist.saturating_record(micros(gap));
                    self.first_after_leave(partition, gap);
                }
            }
        }
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.messages.fetch_add(1, Ordering::Relaxed);
        if self.counted.fetch_add(records, Ordering::AcqRel) + records >= self.total {
            self.done.send_replace(true);
        }
        (records, bytes)
    }

    /// Records `gap` as a rebalance gap if this is the first delivery of one
    /// of the leaver's partitions since it left.
    fn first_after_leave(&self, partition: u32, gap: Duration) {
        if let Ok(mut moved) = self.moved.lock() {
            if let Some((pending, longest)) = moved.as_mut() {
                if let Some(i) = pending.iter().position(|&p| p == partition) {
                    pending.swap_remove(i);
                    *longest = Some(longest.map_or(gap, |l| l.max(gap)));
                }
            }
        }
    }

    fn note(&self, text: String) {
        if let Ok(mut notes) = self.notes.lock() {
            notes.push(text);
        }
    }
}

/// One group member: a `Consume` stream read until the group has read
/// everything (or, for the leaver, until half of it).
async fn member(
    channel: Connection,
    spec: Arc<GroupSpec>,
    state: Arc<GroupState>,
    progress: Arc<Progress>,
    leaver: bool,
) -> Result<(), BenchError> {
    let mut groups = GroupsClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let request = ConsumeRequest {
        group: spec.group.clone(),
        topics: vec![spec.topic.clone()],
        auto_offset_reset: AutoOffsetReset::Earliest.into(),
    };
    let mut stream = groups
        .consume(request)
        .await
        .map_err(ClientError::from)?
        .into_inner();
    let mut done = state.done.subscribe();
    let (mut member_id, mut epoch, mut owned) = (String::new(), 0i32, Vec::<u32>::new());
    loop {
        if *done.borrow_and_update() {
            return Ok(());
        }
        let event = tokio::select! {
            m = stream.message() => m.map_err(ClientError::from)?,
            _ = done.changed() => return Ok(()),
        };
        let Some(event) = event.and_then(|e| e.event) else {
            if *done.borrow() {
                return Ok(());
            }
            return Err(BenchError::Failed(
                "the broker ended a Consume stream before the group read everything".into(),
            ));
        };
        match event {
            Event::Joined(joined) => {
                member_id = joined.member_id;
                epoch = joined.member_epoch;
            }
            Event::Assignment(assignment) => {
                epoch = assignment.member_epoch;
                owned = assignment
                    .partitions
                    .into_iter()
                    .filter(|tp| tp.topic == spec.topic)
                    .flat_map(|tp| tp.partitions)
                    .collect();
            }
            Event::Records(consumed) => {
                let Some(batch) = consumed.batch else {
                    continue;
                };
                let (records, bytes) = state.deliver(consumed.partition, &batch);
                progress.add(records, bytes);
                if leaver && state.counted.load(Ordering::Acquire) * 2 >= state.total {
                    // Commit what this member read, then leave by closing the stream.
                    let offsets = owned
                        .iter()
                        .filter_map(|&p| {
                            let offset = state.positions.get(p as usize)?.load(Ordering::Acquire);
                            Some(PartitionOffset {
                                topic: spec.topic.clone(),
                                partition: p,
                                offset,
                                metadata: String::new(),
                            })
                        })
                        .collect();
                    let commit = CommitOffsetsRequest {
                        group: spec.group.clone(),
                        member_id: member_id.clone(),
                        member_epoch: epoch,
                        offsets,
                    };
                    if let Err(e) = groups.commit_offsets(commit).await {
                        state.note(format!(
                            "the leaving member's commit failed ({}); its partitions were re-read",
                            ClientError::from(e)
                        ));
                    }
                    state.note(format!(
                        "member 0 left after {} records (partitions {owned:?})",
                        state.counted.load(Ordering::Acquire)
                    ));
                    if let Ok(mut moved) = state.moved.lock() {
                        *moved = Some((owned.clone(), None));
                    }
                    return Ok(());
                }
            }
        }
    }
}

/// Reads the topic with `members` `Groups.Consume` streams of one fresh
/// group until every partition reached its end. Latency: the gaps between
/// two deliveries of the same partition. `max_gap_ms`: with
/// `leave_halfway`, the longest gap of a partition the leaver owned, from
/// its last delivery to the leaver to its first to the new owner (the
/// rebalance gap); otherwise the longest gap of any partition.
///
/// # Errors
/// A failed call or a stream the broker ended early.
pub async fn group(
    channels: &[Connection],
    spec: &GroupSpec,
    progress: &Arc<Progress>,
) -> Result<(RunFigures, Vec<String>), BenchError> {
    let total: u64 = spec.ends.iter().sum();
    let (done, _) = watch::channel(total == 0);
    let state = Arc::new(GroupState {
        positions: spec.ends.iter().map(|_| AtomicU64::new(0)).collect(),
        counted: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        messages: AtomicU64::new(0),
        total,
        gaps: Mutex::new((vec![None; spec.ends.len()], new_histogram())),
        done,
        notes: Mutex::new(Vec::new()),
        moved: Mutex::new(None),
    });
    let shared_spec = Arc::new(spec.clone());
    let start = Instant::now();
    let mut set = JoinSet::new();
    for m in 0..spec.members.max(1) {
        set.spawn(member(
            channels[m % channels.len()].clone(),
            shared_spec.clone(),
            state.clone(),
            progress.clone(),
            spec.leave_halfway && m == 0,
        ));
    }
    let deadline = spec.duration.map(|d| tokio::time::Instant::now() + d);
    let state_for_deadline = state.clone();
    let timer = deadline.map(|d| {
        tokio::spawn(async move {
            tokio::time::sleep_until(d).await;
            state_for_deadline.done.send_replace(true);
        })
    });
    let joined = join_all(set).await;
    if let Some(timer) = timer {
        timer.abort();
    }
    joined?;
    let seconds = start.elapsed().as_secs_f64();
    let latency = state
        .gaps
        .lock()
        .map(|gaps| LatencySummary::from_histogram(&gaps.1))
        .unwrap_or_default();
    // With a leave: the longest gap of a moved partition across the leave;
    // otherwise the longest gap of any partition (joins included).
    let max_gap_ms = if spec.leave_halfway {
        let leave_gap = state.moved.lock().ok().and_then(|m| m.as_ref()?.1);
        leave_gap.map(|g| g.as_secs_f64() * 1000.0)
    } else {
        Some(latency.max_ms)
    };
    let notes = state.notes.lock().map(|n| n.clone()).unwrap_or_default();
    Ok((
        RunFigures {
            records: state.counted.load(Ordering::Acquire),
            bytes: state.bytes.load(Ordering::Relaxed),
            seconds,
            latency,
            requests: state.messages.load(Ordering::Relaxed),
            max_gap_ms,
            ..RunFigures::default()
        },
        notes,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn shape() -> RecordShape {
        RecordShape {
            value_bytes: 100,
            key_bytes: 16,
            key_space: 1000,
        }
    }

    #[test]
    fn keys_are_padded_and_wrap_at_the_key_space() {
        let s = shape();
        assert_eq!(s.key(7), b"0000000000000007".to_vec());
        assert_eq!(s.key(1007), s.key(7));
        let short = RecordShape {
            key_bytes: 2,
            ..shape()
        };
        assert_eq!(short.key(123), b"23".to_vec());
        let none = RecordShape {
            key_bytes: 0,
            ..shape()
        };
        assert!(none.key(5).is_empty());
        assert_eq!(s.value(3).len(), 100);
        assert_eq!(s.record_bytes(), 116);
    }

    #[test]
    fn payload_decodes_as_a_record_batch() {
        let payload = batch_payload(&shape(), 10);
        let batch = RecordBatch::decode(payload).unwrap();
        assert_eq!(batch.records.len(), 10);
        assert_eq!(batch.records[3].value.len(), 100);
        let summary = crate::wire::scan_records(&batch_payload(&shape(), 10), 1 << 20).unwrap();
        assert_eq!(summary.record_count, 10);
    }

    #[test]
    fn stamped_template_patches_every_value() {
        let t = StampedTemplate::new(&shape(), 5);
        let payload = t.stamped(3, 0x0102_0304_0506_0708);
        let batch = RecordBatch::decode(payload).unwrap();
        assert_eq!(batch.records.len(), 3);
        for r in &batch.records {
            assert_eq!(&r.value[..8], &0x0102_0304_0506_0708u64.to_le_bytes());
            assert_eq!(r.value.len(), 100);
        }
    }

    #[test]
    fn leave_gap_counts_the_first_delivery_of_each_moved_partition() {
        let (done, _) = watch::channel(false);
        let state = GroupState {
            positions: (0..6).map(|_| AtomicU64::new(0)).collect(),
            counted: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            messages: AtomicU64::new(0),
            total: 100,
            gaps: Mutex::new((vec![None; 6], new_histogram())),
            done,
            notes: Mutex::new(Vec::new()),
            moved: Mutex::new(None),
        };
        let ms = Duration::from_millis;
        // Before anyone left, gaps are not leave gaps.
        state.first_after_leave(3, ms(500));
        *state.moved.lock().unwrap() = Some((vec![3, 4], None));
        state.first_after_leave(3, ms(10));
        state.first_after_leave(3, ms(70)); // not the first delivery after the leave
        state.first_after_leave(5, ms(90)); // not a moved partition
        state.first_after_leave(4, ms(20));
        let moved = state.moved.lock().unwrap().clone();
        assert_eq!(moved, Some((vec![], Some(ms(20)))));
    }

    #[test]
    fn count_batch_skips_records_before_the_offset() {
        let batch = RecordBatch {
            base_offset: 10,
            append_time_ms: 0,
            records: shape().records(0, 5),
        };
        assert_eq!(count_batch(&batch, 0, u64::MAX), (5, 5 * 116, 15));
        assert_eq!(count_batch(&batch, 12, u64::MAX), (3, 3 * 116, 15));
        assert_eq!(count_batch(&batch, 20, u64::MAX), (0, 0, 15));
    }

    #[test]
    fn count_batch_stops_at_the_end_asked_for() {
        let batch = RecordBatch {
            base_offset: 10,
            append_time_ms: 0,
            records: shape().records(0, 5),
        };
        assert_eq!(count_batch(&batch, 10, 13), (3, 3 * 116, 13));
        assert_eq!(count_batch(&batch, 12, 13), (1, 116, 13));
        assert_eq!(count_batch(&batch, 0, 8), (0, 0, 8));
    }
}
