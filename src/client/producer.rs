//! [`Producer`]: batches records per partition and sends them in order.
//!
//! Records are grouped per partition into batches of up to
//! [`ProducerConfig::batch_records`] records or [`ProducerConfig::batch_bytes`]
//! bytes; a batch is sent when full or [`ProducerConfig::linger`] after its
//! first record. Partitions proceed in parallel; within one partition at
//! most one request is in flight, so records are stored in the order they
//! were sent, retries included. The partition of a keyed record is the
//! broker's (Kafka's murmur2) key hash, so the producer and the broker agree;
//! keyless records stick to one partition per batch and rotate.
//!
//! Retries: a request that fails with `UNAVAILABLE` (or cannot reach the
//! broker) is retried up to [`ProducerConfig::retries`] times with doubling
//! backoff. A retry after a request that reached the broker but whose answer
//! was lost can store the batch twice (at-least-once); idempotent producer
//! sequences would remove that and are not implemented yet.
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
use std::time::{Duration, Instant};

use prost::Message;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{Acks, Client, ClientError, Record};
use crate::broker::produce::partition_for_key;

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

#[derive(Default)]
struct Batch {
    records: Vec<Record>,
    replies: Vec<Reply>,
    bytes: usize,
    started: Option<Instant>,
}

struct Worker {
    client: Client,
    config: ProducerConfig,
    batches: HashMap<(String, u32), Batch>,
    in_flight: HashMap<(String, u32), JoinHandle<()>>,
    partitions: HashMap<String, u32>,
    sticky: HashMap<String, u32>,
}

impl Worker {
    fn new(client: Client, config: ProducerConfig) -> Worker {
        Worker {
            client,
            config,
            batches: HashMap::new(),
            in_flight: HashMap::new(),
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
                        self.drain().await;
                        let _ = done.send(());
                    }
                    None => {
                        self.drain().await;
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
        batch.bytes += record.encoded_len();
        batch.records.push(record);
        batch.replies.push(reply);
        batch.started.get_or_insert_with(Instant::now);
        if batch.records.len() >= self.config.batch_records
            || batch.bytes >= self.config.batch_bytes
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

    /// Sends the batch of `key` after the partition's previous request.
    fn dispatch(&mut self, key: (String, u32)) {
        let Some(batch) = self.batches.remove(&key) else {
            return;
        };
        if let Some(n) = self.sticky.get_mut(&key.0) {
            *n = n.wrapping_add(1);
        }
        let previous = self.in_flight.remove(&key);
        let client = self.client.clone();
        let config = self.config.clone();
        let (topic, partition) = key.clone();
        let handle = tokio::spawn(async move {
            if let Some(p) = previous {
                let _ = p.await;
            }
            let result =
                send_with_retries(&client, &config, &topic, partition, batch.records).await;
            for (i, reply) in batch.replies.into_iter().enumerate() {
                let r = match &result {
                    Ok(base) => Ok(RecordMetadata {
                        partition,
                        offset: base + i as u64,
                    }),
                    Err(e) => Err(share(e)),
                };
                let _ = reply.send(r);
            }
        });
        self.in_flight.insert(key, handle);
    }

    async fn drain(&mut self) {
        let keys: Vec<_> = self.batches.keys().cloned().collect();
        for key in keys {
            self.dispatch(key);
        }
        for (_, handle) in self.in_flight.drain() {
            let _ = handle.await;
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

async fn send_with_retries(
    client: &Client,
    config: &ProducerConfig,
    topic: &str,
    partition: u32,
    records: Vec<Record>,
) -> Result<u64, ClientError> {
    let mut backoff = config.retry_backoff;
    let mut attempt = 0;
    loop {
        match client
            .produce(topic, Some(partition), records.clone(), config.acks)
            .await
        {
            Ok(appends) => {
                return appends
                    .first()
                    .map(|a| a.base_offset)
                    .ok_or(ClientError::MissingField {
                        rpc: "Produce",
                        field: "appends",
                    })
            }
            Err(e) if attempt < config.retries && e.code() == tonic::Code::Unavailable => {
                attempt += 1;
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The same error for every record of a failed batch.
fn share(e: &ClientError) -> ClientError {
    match e.status() {
        Some(s) => ClientError::Status(tonic::Status::new(s.code(), s.message().to_string())),
        None => ClientError::Status(tonic::Status::new(e.code(), e.to_string())),
    }
}
