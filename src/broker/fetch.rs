//! The read path: fetch by offset (with long-poll), subscribe (a stream that
//! follows the log) and offset lookups.
//!
//! Stored batches are handed to the response as views of the mapped
//! segments ([`ReadBatch`] implements [`PayloadSource`]); the gRPC encoder
//! copies them once, straight into the HTTP/2 buffer. Only the first batch
//! is trimmed, by walking record lengths, so a response starts exactly at the
//! requested offset.
//!
//! Waiting readers are woken by the partition's high-watermark channel, never
//! by polling timers. Reads that start in a closed segment may fault pages
//! in from disk, so they run on the blocking pool, off the async workers.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::watch;
use tokio_stream::Stream;

use super::error::{BrokerError, Result};
use super::topics::Partition;
use super::Broker;
use crate::storage::{ReadBatch, ReadResult};
use crate::wire::{FetchResponseWire, PayloadSource, PayloadView, WireBatch};

impl PayloadSource for ReadBatch {
    fn bytes(&self) -> &[u8] {
        self.payload()
    }
}

/// Which offset `ListOffsets` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetQuery {
    /// The log start offset.
    Earliest,
    /// The high watermark.
    Latest,
    /// The first batch appended at or after this time (ms since the epoch).
    Timestamp(i64),
}

impl Broker {
    fn fetch_bytes(&self, max_bytes: u32) -> Result<u64> {
        let limits = &self.config.limits;
        if max_bytes > limits.max_fetch_bytes {
            return Err(BrokerError::InvalidArgument {
                field: "max_bytes",
                reason: format!(
                    "{max_bytes} is above the limit of {} bytes (limits.max_fetch_bytes); use 0 for the default of {}",
                    limits.max_fetch_bytes, limits.default_fetch_bytes
                ),
            });
        }
        Ok(u64::from(if max_bytes == 0 {
            limits.default_fetch_bytes
        } else {
            max_bytes
        }))
    }

    /// Reads from `offset`, waiting up to `max_wait_ms` for data when the
    /// offset is at the end of the log.
    pub async fn fetch(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: u32,
        max_wait_ms: u32,
    ) -> Result<FetchResponseWire> {
        let max_bytes = self.fetch_bytes(max_bytes)?;
        let wait =
            Duration::from_millis(u64::from(max_wait_ms.min(self.config.limits.max_wait_ms)));
        let partition = self.partition(topic, partition)?;
        let mut watcher = partition.watch_high_watermark();
        let deadline = tokio::time::Instant::now() + wait;
        let mut shutdown = self.shutdown_signal();
        loop {
            // Mark the current value seen before reading, so an append that
            // lands after the read still wakes us.
            watcher.borrow_and_update();
            let result = read(&partition, offset, max_bytes).await?;
            if !result.batches.is_empty() || wait.is_zero() || self.is_shutting_down() {
                return to_wire(&partition, result);
            }
            tokio::select! {
                changed = watcher.changed() => {
                    if changed.is_err() || partition.is_deleted() {
                        return Err(BrokerError::UnknownTopic { topic: topic.to_string() });
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    return to_wire(&partition, read(&partition, offset, max_bytes).await?);
                }
                _ = shutdown.changed() => return to_wire(&partition, result),
            }
        }
    }

    /// Follows a partition from `offset`: a stream of fetch responses that
    /// waits (on the high-watermark channel) whenever it reaches the end of
    /// the log, and ends after the first error.
    ///
    /// The stream does its reading when it is polled, in the task that sends
    /// the response (no task or channel in between, so a new batch costs one
    /// wake-up to reach the wire). A client that stops reading is not polled
    /// once HTTP/2 flow control is full, so a slow subscriber holds at most
    /// one response of `max_bytes` beyond the connection's send window, and
    /// never slows producers.
    ///
    /// With `limits.max_subscriber_lag_records` set, a stream that is about
    /// to read from further behind the high watermark than that ends with
    /// [`BrokerError::SubscriberLagging`] instead (checked at the start and
    /// before every read, so a stalled client meets it when it reads again).
    pub fn subscribe(
        self: &Arc<Self>,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: u32,
    ) -> Result<Subscription> {
        let max_bytes = self.fetch_bytes(max_bytes)?;
        let part = self.partition(topic, partition)?;
        let (low, high) = (part.log.log_start_offset(), part.log.high_watermark());
        if offset < low || offset > high {
            return Err(crate::storage::StorageError::OffsetOutOfRange {
                offset,
                log_start: low,
                high_watermark: high,
            }
            .into());
        }
        check_lag(self.config.limits.max_subscriber_lag_records, offset, high)?;
        let follower = Follower {
            watcher: part.watch_high_watermark(),
            shutdown: self.shutdown_signal(),
            broker: self.clone(),
            part,
            topic: topic.to_string(),
            offset,
            max_bytes,
        };
        Ok(Subscription {
            next: Some(Box::pin(follower.next())),
        })
    }

    /// Looks up an offset of a partition. For a timestamp with no batch at or
    /// after it, answers the high watermark (where such records will go).
    pub async fn list_offsets(
        &self,
        topic: &str,
        partition: u32,
        query: OffsetQuery,
    ) -> Result<(u64, i64)> {
        let partition = self.partition(topic, partition)?;
        match query {
            OffsetQuery::Earliest => Ok((partition.log.log_start_offset(), -1)),
            OffsetQuery::Latest => Ok((partition.log.high_watermark(), -1)),
            OffsetQuery::Timestamp(ts) => {
                let log = partition.log.clone();
                let found = tokio::task::spawn_blocking(move || log.offset_for_timestamp(ts))
                    .await
                    .map_err(|e| BrokerError::Internal(format!("lookup task failed: {e}")))??;
                Ok(found.unwrap_or((partition.log.high_watermark(), -1)))
            }
        }
    }
}

/// The stream [`Broker::subscribe`] returns: fetch responses in offset order,
/// ending after the first error (which is its last item) or at shutdown.
pub struct Subscription {
    /// The read in progress; `None` once the stream has ended.
    next: Option<FollowStep>,
}

/// One step of a subscription: the next response (or `None` at the end) and
/// the follower to take the step after it.
type FollowStep =
    Pin<Box<dyn Future<Output = Option<(Result<FetchResponseWire>, Follower)>> + Send>>;

impl Stream for Subscription {
    type Item = Result<FetchResponseWire>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Some(step) = self.next.as_mut() else {
            return Poll::Ready(None);
        };
        match step.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                self.next = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some((item, follower))) => {
                // After an error the stream ends.
                self.next = item
                    .is_ok()
                    .then(|| Box::pin(follower.next()) as FollowStep);
                Poll::Ready(Some(item))
            }
        }
    }
}

/// Where a subscription is: the next offset to read and what wakes it.
struct Follower {
    broker: Arc<Broker>,
    part: Arc<Partition>,
    topic: String,
    offset: u64,
    max_bytes: u64,
    watcher: watch::Receiver<u64>,
    shutdown: watch::Receiver<bool>,
}

impl Follower {
    /// Reads the next batches, waiting for an append when at the end of the
    /// log. `None` at shutdown.
    async fn next(mut self) -> Option<(Result<FetchResponseWire>, Follower)> {
        loop {
            if self.broker.is_shutting_down() {
                return None;
            }
            if self.part.is_deleted() {
                let gone = BrokerError::UnknownTopic {
                    topic: self.topic.clone(),
                };
                return Some((Err(gone), self));
            }
            // Mark the current value seen before reading, so an append that
            // lands after the read still wakes us.
            self.watcher.borrow_and_update();
            let max_lag = self.broker.config.limits.max_subscriber_lag_records;
            if let Err(e) = check_lag(max_lag, self.offset, self.part.log.high_watermark()) {
                return Some((Err(e), self));
            }
            let result = match read(&self.part, self.offset, self.max_bytes).await {
                Ok(result) => result,
                Err(e) => return Some((Err(e), self)),
            };
            if let Some(last) = result.batches.last() {
                self.offset = last.header.next_offset();
                let response = to_wire(&self.part, result);
                return Some((response, self));
            }
            tokio::select! {
                changed = self.watcher.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                }
                _ = self.shutdown.changed() => return None,
            }
        }
    }
}

/// Refuses a subscription read at `offset` that is more than `max_lag`
/// records behind `high_watermark` (0 = no limit).
fn check_lag(max_lag: u64, offset: u64, high_watermark: u64) -> Result<()> {
    let lag = high_watermark.saturating_sub(offset);
    if max_lag > 0 && lag > max_lag {
        return Err(BrokerError::SubscriberLagging {
            offset,
            high_watermark,
            lag,
            limit: max_lag,
        });
    }
    Ok(())
}

/// Reads from the partition, off the async workers when the data may be cold.
pub(crate) async fn read(partition: &Partition, offset: u64, max_bytes: u64) -> Result<ReadResult> {
    if partition.log.is_hot(offset) {
        return Ok(partition.log.read(offset, max_bytes)?);
    }
    let log = partition.log.clone();
    let result = tokio::task::spawn_blocking(move || log.read(offset, max_bytes))
        .await
        .map_err(|e| BrokerError::Internal(format!("read task failed: {e}")))??;
    Ok(result)
}

/// Turns stored batches into the response, trimming the first one so it
/// starts exactly at the requested offset, and counts what it hands out in
/// the partition's traffic.
pub(crate) fn to_wire(partition: &Partition, result: ReadResult) -> Result<FetchResponseWire> {
    let mut batches = Vec::with_capacity(result.batches.len());
    let (mut records, mut bytes) = (0u64, 0u64);
    for (i, batch) in result.batches.into_iter().enumerate() {
        records += u64::from(batch.header.meta.record_count);
        let mut wire = WireBatch {
            base_offset: batch.header.base_offset,
            append_time_ms: batch.header.meta.max_timestamp_ms,
            records: PayloadView::whole(Arc::new(batch)),
        };
        if i == 0 && result.skip_records > 0 {
            // The batch passed its CRC and was validated when produced, so a
            // failure here is a bug, not bad input.
            let base = wire.base_offset;
            wire.skip_front(result.skip_records).map_err(|e| {
                BrokerError::Internal(format!(
                    "stored batch at offset {base} cannot be trimmed: {e}"
                ))
            })?;
        }
        bytes += wire.records.len() as u64;
        batches.push(wire);
    }
    partition.traffic.fetched(
        records.saturating_sub(u64::from(result.skip_records)),
        bytes,
    );
    Ok(FetchResponseWire {
        batches,
        high_watermark: result.high_watermark,
        log_start_offset: result.log_start_offset,
    })
}
