//! [`Producer`]: batches records per partition and sends them in order.
//!
//! Records are grouped per partition into batches of up to
//! [`ProducerConfig::batch_records`] records or [`ProducerConfig::batch_bytes`]
//! bytes; a batch is sent when full or [`ProducerConfig::linger`] after its
//! first record. The partition of a keyed record is the broker's (Kafka's
//! murmur2) key hash, so the producer and the broker agree; keyless records
//! stick to one partition per batch and rotate.
//!
//! # Ordering, pipelining and retries
//!
//! Partitions proceed in parallel, and within one partition up to
//! [`ProducerConfig::max_in_flight`] requests (at most
//! [`RECENT_BATCHES`](crate::storage::producers::RECENT_BATCHES) = 5) are in
//! flight at once. The producer is *idempotent* by default: it picks a random
//! producer id and numbers its records per partition, and the broker stores
//! a partition's batches strictly in sequence order, answers a retried batch
//! that is already stored with its original offsets instead of storing it
//! again, and refuses (`ABORTED`) a batch whose predecessor is missing. So
//! records are stored exactly once and in the order they were sent, retries
//! and pipelining included.
//!
//! When a request fails with a retriable error (`UNAVAILABLE`, a lost
//! connection, `ABORTED` behind a failed predecessor), the partition stops
//! sending, waits for its in-flight requests, and resends the failed batches
//! one at a time in order, with doubling backoff, up to
//! [`ProducerConfig::retries`] times each. A batch the broker refuses for
//! good (`INVALID_ARGUMENT`, say) fails its records; the later batches are
//! renumbered under a new producer epoch and resent, so one bad record does
//! not block the partition. A batch that exhausts its retries fails, and so
//! do the batches sent after it to that partition.
//!
//! Quotas: a batch refused with `RESOURCE_EXHAUSTED` that carries the
//! broker's `retry-after-ms` hint (the principal is over its produce quota;
//! nothing was stored) is resent after the hinted wait, for as long as the
//! waits add up to at most [`ProducerConfig::quota_wait_max`] per batch;
//! these resends do not count against `retries`. Other `RESOURCE_EXHAUSTED`
//! answers (a full disk, a limit) fail the batch at once.
//!
//! With [`ProducerConfig::idempotent`] off, requests carry no sequence and
//! one request per partition is in flight; a retry after an answer was lost
//! can then store a batch twice (at-least-once).
//!
//! ```no_run
//! # async fn example() -> Result<(), strata::client::ClientError> {
//! use strata::client::{Client, Producer, ProducerConfig, Record};
//! let client = Client::connect("127.0.0.1:50051").await?;
//! let producer = Producer::new(client, ProducerConfig::default());
//! let delivery = producer
//!     .send("orders", Record { key: b"order-1".to_vec(), value: b"{}".to_vec(), ..Default::default() })
//!     .await?;
//! let stored = delivery.wait().await?;
//! println!("partition {} offset {}", stored.partition, stored.offset);
//! producer.close().await;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};

use super::{Acks, Client, ClientError, Record};
use crate::broker::produce::partition_for_key;
use crate::storage::producers::{add_sequence, RECENT_BATCHES};
use crate::wire::{ProduceRequestWire, RecordsPayload, RECORDS_FIELD};

/// How a [`Producer`] batches and retries.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// Most records per request. Default: 1,000.
    pub batch_records: usize,
    /// Most record bytes per request. Default: 1 MiB.
    pub batch_bytes: usize,
    /// How long a batch waits for more records. Default: 5 ms.
    pub linger: Duration,
    /// Acknowledgement level. Default: leader.
    pub acks: Acks,
    /// Retries of a request that failed with `UNAVAILABLE`. Default: 3.
    pub retries: u32,
    /// First retry backoff (doubles each time). Default: 50 ms.
    pub retry_backoff: Duration,
    /// Records queued before `send` waits (back-pressure). Default: 100,000.
    pub queue_records: usize,
    /// Requests in flight per partition, 1..=5. Default: 5. Without
    /// idempotence it is always 1.
    pub max_in_flight: usize,
    /// Number records so the broker drops retried duplicates and keeps the
    /// order of pipelined requests. Default: on.
    pub idempotent: bool,
    /// Longest total wait on the broker's quota retry hints for one batch,
    /// after which its `RESOURCE_EXHAUSTED` is returned. Default: 60 s.
    pub quota_wait_max: Duration,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            batch_records: 1000,
            batch_bytes: 1 << 20,
            linger: Duration::from_millis(5),
            acks: Acks::Leader,
            retries: 3,
            retry_backoff: Duration::from_millis(50),
            queue_records: 100_000,
            max_in_flight: RECENT_BATCHES,
            idempotent: true,
            quota_wait_max: Duration::from_secs(60),
        }
    }
}

/// Where a record was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMetadata {
    /// Partition.
    pub partition: u32,
    /// Offset.
    pub offset: u64,
}

type Reply = oneshot::Sender<Result<RecordMetadata, ClientError>>;

/// The future result of one sent record.
#[derive(Debug)]
pub struct Delivery(oneshot::Receiver<Result<RecordMetadata, ClientError>>);

impl Delivery {
    /// Waits until the record is stored (or failed).
    ///
    /// # Errors
    /// The request's error, or [`ClientError::ProducerClosed`] if the
    /// producer was dropped before sending it.
    pub async fn wait(self) -> Result<RecordMetadata, ClientError> {
        self.0.await.unwrap_or(Err(ClientError::ProducerClosed))
    }
}

enum Command {
    Record {
        topic: String,
        partition: Option<u32>,
        record: Record,
        reply: Reply,
    },
    Flush(oneshot::Sender<()>),
}

/// A batching producer. Cheap to share behind an `Arc`; close it to send
/// what is still queued.
#[derive(Debug)]
pub struct Producer {
    tx: mpsc::Sender<Command>,
    worker: JoinHandle<()>,
}

impl Producer {
    /// Starts a producer on `client`.
    pub fn new(client: Client, config: ProducerConfig) -> Producer {
        let (tx, rx) = mpsc::channel(config.queue_records.max(1));
        let worker = tokio::spawn(Worker::new(client, config).run(rx));
        Producer { tx, worker }
    }

    /// Queues a record for `topic` (partition by key hash, or sticky
    /// round-robin without a key).
    ///
    /// # Errors
    /// [`ClientError::ProducerClosed`] if the producer has stopped.
    pub async fn send(&self, topic: &str, record: Record) -> Result<Delivery, ClientError> {
        self.send_to(topic, None, record).await
    }

    /// Queues a record for an explicit partition (`None`: as [`Producer::send`]).
    ///
    /// # Errors
    /// [`ClientError::ProducerClosed`] if the producer has stopped.
    pub async fn send_to(
        &self,
        topic: &str,
        partition: Option<u32>,
        record: Record,
    ) -> Result<Delivery, ClientError> {
        let (reply, rx) = oneshot::channel();
        let cmd = Command::Record {
            topic: topic.to_string(),
            partition,
            record,
            reply,
        };
        self.tx
            .send(cmd)
            .await
            .map_err(|_| ClientError::ProducerClosed)?;
        Ok(Delivery(rx))
    }

    /// Sends every queued record now and waits until all are answered.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Flushes and stops.
    pub async fn close(self) {
        self.flush().await;
        drop(self.tx);
        let _ = self.worker.await;
    }
}

/// Records gathered for one partition, already in their wire form.
#[derive(Default)]
struct Batch {
    /// The records as `ProduceRequest.records` entries (field 3): each record
    /// is copied once, here, and the request is never re-encoded.
    records: BytesMut,
    /// One reply per record, in order.
    replies: Vec<Reply>,
    started: Option<Instant>,
}

/// What the worker tells a partition's sender.
enum LaneMessage {
    /// Send this batch after the ones before it.
    Batch(Batch),
    /// Answer once every batch handed over so far is answered.
    Flush(oneshot::Sender<()>),
}

struct Worker {
    client: Client,
    config: ProducerConfig,
    producer_id: u64,
    batches: HashMap<(String, u32), Batch>,
    lanes: HashMap<(String, u32), Lane>,
    partitions: HashMap<String, u32>,
    sticky: HashMap<String, u32>,
}

/// The sender of one partition: a task that owns the partition's sequence.
struct Lane {
    tx: mpsc::UnboundedSender<LaneMessage>,
    task: JoinHandle<()>,
}

impl Worker {
    fn new(client: Client, config: ProducerConfig) -> Worker {
        let producer_id = if config.idempotent {
            random_producer_id()
        } else {
            0
        };
        Worker {
            client,
            config,
            producer_id,
            batches: HashMap::new(),
            lanes: HashMap::new(),
            partitions: HashMap::new(),
            sticky: HashMap::new(),
        }
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(Command::Record { topic, partition, record, reply }) => {
                        self.add(topic, partition, record, reply).await;
                    }
                    Some(Command::Flush(done)) => {
                        self.flush_lanes().await;
                        let _ = done.send(());
                    }
                    None => {
                        self.flush_lanes().await;
                        for (_, lane) in self.lanes.drain() {
                            drop(lane.tx);
                            let _ = lane.task.await;
                        }
                        return;
                    }
                },
                _ = sleep_until(deadline) => self.dispatch_expired(),
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.batches
            .values()
            .filter_map(|b| b.started)
            .min()
            .map(|t| t + self.config.linger)
    }

    async fn partition_count(&mut self, topic: &str) -> Result<u32, ClientError> {
        if let Some(&n) = self.partitions.get(topic) {
            return Ok(n);
        }
        let n = self.client.describe_topic(topic).await?.partitions.len() as u32;
        self.partitions.insert(topic.to_string(), n);
        Ok(n)
    }

    async fn add(&mut self, topic: String, partition: Option<u32>, record: Record, reply: Reply) {
        let partition = match partition {
            Some(p) => p,
            None => match self.partition_count(&topic).await {
                Ok(n) if !record.key.is_empty() => partition_for_key(&record.key, n),
                Ok(n) => *self.sticky.entry(topic.clone()).or_insert(0) % n.max(1),
                Err(e) => {
                    let _ = reply.send(Err(e));
                    return;
                }
            },
        };
        let key = (topic, partition);
        let batch = self.batches.entry(key.clone()).or_default();
        prost::encoding::message::encode(RECORDS_FIELD, &record, &mut batch.records);
        batch.replies.push(reply);
        batch.started.get_or_insert_with(Instant::now);
        if batch.replies.len() >= self.config.batch_records
            || batch.records.len() >= self.config.batch_bytes
        {
            self.dispatch(key);
        }
    }

    fn dispatch_expired(&mut self) {
        let now = Instant::now();
        let due: Vec<_> = self
            .batches
            .iter()
            .filter(|(_, b)| b.started.is_some_and(|t| t + self.config.linger <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            self.dispatch(key);
        }
    }

    /// Hands the batch of `key` to its partition's sender.
    fn dispatch(&mut self, key: (String, u32)) {
        let Some(batch) = self.batches.remove(&key) else {
            return;
        };
        if let Some(n) = self.sticky.get_mut(&key.0) {
            *n = n.wrapping_add(1);
        }
        let lane = self.lanes.entry(key.clone()).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            let sender = LaneSender::new(
                self.client.clone(),
                self.config.clone(),
                key.0.clone(),
                key.1,
                self.producer_id,
            );
            Lane {
                tx,
                task: tokio::spawn(sender.run(rx)),
            }
        });
        if let Err(mpsc::error::SendError(LaneMessage::Batch(batch))) =
            lane.tx.send(LaneMessage::Batch(batch))
        {
            fail_batch(batch, &ClientError::ProducerClosed);
        }
    }

    /// Sends every pending batch and waits until all are answered.
    async fn flush_lanes(&mut self) {
        let keys: Vec<_> = self.batches.keys().cloned().collect();
        for key in keys {
            self.dispatch(key);
        }
        let mut waits = Vec::with_capacity(self.lanes.len());
        for lane in self.lanes.values() {
            let (tx, rx) = oneshot::channel();
            if lane.tx.send(LaneMessage::Flush(tx)).is_ok() {
                waits.push(rx);
            }
        }
        for rx in waits {
            let _ = rx.await;
        }
    }
}

/// A batch that has its sequence numbers.
struct SentBatch {
    /// Cheap to clone for a resend: the records are a shared buffer.
    request: ProduceRequestWire,
    replies: Vec<Reply>,
    /// Send order within the partition (sequence order within an epoch).
    order: u64,
    attempts: u32,
}

/// Sends one partition's batches in order, several in flight.
struct LaneSender {
    client: Client,
    config: ProducerConfig,
    topic: String,
    partition: u32,
    producer_id: u64,
    epoch: u32,
    next_sequence: i32,
    next_order: u64,
    max_in_flight: usize,
}

type Outcome = (SentBatch, Result<u64, ClientError>);

impl LaneSender {
    fn new(
        client: Client,
        config: ProducerConfig,
        topic: String,
        partition: u32,
        producer_id: u64,
    ) -> LaneSender {
        let max_in_flight = if producer_id == 0 {
            1
        } else {
            config.max_in_flight.clamp(1, RECENT_BATCHES)
        };
        LaneSender {
            client,
            config,
            topic,
            partition,
            producer_id,
            epoch: 0,
            next_sequence: 0,
            next_order: 0,
            max_in_flight,
        }
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<LaneMessage>) {
        let mut in_flight: JoinSet<Outcome> = JoinSet::new();
        let mut failed: Vec<(SentBatch, ClientError)> = Vec::new();
        let mut flush_waiters: Vec<oneshot::Sender<()>> = Vec::new();
        let mut open = true;
        loop {
            if in_flight.is_empty() {
                if !failed.is_empty() {
                    self.recover(std::mem::take(&mut failed)).await;
                }
                for w in flush_waiters.drain(..) {
                    let _ = w.send(());
                }
                if !open {
                    return;
                }
            }
            let may_send = open && failed.is_empty() && in_flight.len() < self.max_in_flight;
            tokio::select! {
                message = rx.recv(), if may_send => match message {
                    Some(LaneMessage::Batch(batch)) => {
                        let sent = self.number(batch);
                        in_flight.spawn(send_once(self.client.clone(), sent));
                    }
                    Some(LaneMessage::Flush(done)) => flush_waiters.push(done),
                    None => open = false,
                },
                Some(joined) = in_flight.join_next(), if !in_flight.is_empty() => match joined {
                    Ok((sent, Ok(base))) => answer(sent.replies, self.partition, base),
                    Ok((sent, Err(e))) => failed.push((sent, e)),
                    // A send task panicked (a bug): its replies were dropped,
                    // so their deliveries report the producer as closed.
                    Err(_) => {}
                },
            }
        }
    }

    /// Gives a batch the next sequence numbers of this partition.
    fn number(&mut self, batch: Batch) -> SentBatch {
        let count = batch.replies.len() as u32;
        let mut request = ProduceRequestWire::default();
        request.topic = self.topic.clone();
        request.partition = Some(self.partition);
        request.acks = self.config.acks.into();
        request.producer_id = self.producer_id;
        request.producer_epoch = self.epoch;
        request.base_sequence = if self.producer_id == 0 {
            0
        } else {
            self.next_sequence
        };
        request.set_records_payload(RecordsPayload::from_bytes(batch.records.freeze()));
        self.next_sequence = add_sequence(self.next_sequence, count);
        self.next_order += 1;
        SentBatch {
            request,
            replies: batch.replies,
            order: self.next_order,
            attempts: 1,
        }
    }

    /// Starts a new epoch: the sequence restarts at 0 and batches of the old
    /// epoch still on their way are fenced by the broker.
    fn new_epoch(&mut self) {
        self.epoch = self.epoch.wrapping_add(1);
        self.next_sequence = 0;
    }

    /// Resends failed batches one at a time, in the order they were sent.
    async fn recover(&mut self, mut failed: Vec<(SentBatch, ClientError)>) {
        failed.sort_by_key(|(b, _)| b.order);
        let mut give_up: Option<ClientError> = None;
        for (mut batch, error) in failed {
            if let Some(e) = &give_up {
                fail_replies(batch.replies, e);
                continue;
            }
            if !is_retriable(&error) && error.retry_after().is_none() {
                // Refused for good (nothing stored): the batches after it,
                // failed here or not sent yet, must not wait for its
                // sequence numbers, so they are numbered in a new epoch.
                fail_replies(batch.replies, &error);
                if self.producer_id != 0 {
                    self.new_epoch();
                }
                continue;
            }
            if batch.request.producer_epoch != self.epoch && self.producer_id != 0 {
                let count = batch.replies.len() as u32;
                batch.request.producer_epoch = self.epoch;
                batch.request.base_sequence = self.next_sequence;
                self.next_sequence = add_sequence(self.next_sequence, count);
            }
            let mut error = error;
            let mut backoff = self.config.retry_backoff;
            let mut quota_waited = Duration::ZERO;
            loop {
                // Over quota: nothing was stored; wait as the broker says.
                if let Some(wait) = error
                    .retry_after()
                    .filter(|wait| quota_waited + *wait <= self.config.quota_wait_max)
                {
                    quota_waited += wait;
                    tokio::time::sleep(wait).await;
                    let (sent, result) = send_once(self.client.clone(), batch).await;
                    batch = sent;
                    match result {
                        Ok(base) => {
                            answer(batch.replies, self.partition, base);
                            break;
                        }
                        Err(e) => error = e,
                    }
                    continue;
                }
                if !is_retriable(&error) || batch.attempts > self.config.retries {
                    // Whether it was stored is unknown after a lost answer,
                    // so the batches behind it fail too rather than risk a
                    // duplicate; the sequence restarts in a new epoch.
                    fail_replies(batch.replies, &error);
                    if self.producer_id != 0 {
                        self.new_epoch();
                    }
                    give_up = Some(error);
                    break;
                }
                // A batch refused behind a failed predecessor can go at once.
                if error.code() != tonic::Code::Aborted || batch.attempts > 1 {
                    tokio::time::sleep(backoff).await;
                    backoff = backoff.saturating_mul(2);
                }
                batch.attempts += 1;
                let (sent, result) = send_once(self.client.clone(), batch).await;
                batch = sent;
                match result {
                    Ok(base) => {
                        answer(batch.replies, self.partition, base);
                        break;
                    }
                    Err(e) => error = e,
                }
            }
        }
    }
}

/// One `Produce` call for a batch; the batch comes back for a retry.
async fn send_once(client: Client, batch: SentBatch) -> Outcome {
    let result = client
        .encoded_log()
        .produce(batch.request.clone())
        .await
        .map_err(ClientError::from)
        .and_then(|response| {
            response
                .appends
                .first()
                .map(|a| a.base_offset)
                .ok_or(ClientError::MissingField {
                    rpc: "Produce",
                    field: "appends",
                })
        });
    (batch, result)
}

/// Errors after which resending the same batch can succeed: a connection
/// error ([`ClientError::is_connection_error`]), or a batch that waited for a
/// predecessor that failed (`ABORTED`).
fn is_retriable(e: &ClientError) -> bool {
    e.is_connection_error() || e.code() == tonic::Code::Aborted
}

fn answer(replies: Vec<Reply>, partition: u32, base: u64) {
    for (i, reply) in replies.into_iter().enumerate() {
        let _ = reply.send(Ok(RecordMetadata {
            partition,
            offset: base + i as u64,
        }));
    }
}

fn fail_replies(replies: Vec<Reply>, e: &ClientError) {
    for reply in replies {
        let _ = reply.send(Err(share(e)));
    }
}

fn fail_batch(batch: Batch, e: &ClientError) {
    fail_replies(batch.replies, e);
}

/// A random non-zero producer id (std's per-process random hash keys mixed
/// with the time and the process id).
fn random_producer_id() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish().max(1)
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

/// The same error for every record of a failed batch.
fn share(e: &ClientError) -> ClientError {
    match e.status() {
        Some(s) => ClientError::Status(tonic::Status::new(s.code(), s.message().to_string())),
        None => ClientError::Status(tonic::Status::new(e.code(), e.to_string())),
    }
}
