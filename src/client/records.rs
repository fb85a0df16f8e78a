//! Reading helpers: records with their offsets, a fetch loop over one
//! partition, and the stream of a subscription.
//!
//! The broker sends batches (`base_offset`, `append_time_ms`, records). The
//! helpers here flatten them into [`ConsumedRecord`]s: record *i* of a batch
//! gets offset `base_offset + i`, and a record whose `timestamp_ms` is 0
//! ("use the append time") gets the batch's `append_time_ms`, so every
//! record a user sees has a real timestamp.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio_stream::Stream;

use super::{Client, ClientError, FetchResponse, Header, RecordBatch};

/// One record as read from a partition, with its position and effective
/// timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    /// Partition index the record was read from.
    pub partition: u32,
    /// The record's offset in its partition.
    pub offset: u64,
    /// Effective timestamp, ms since the Unix epoch (UTC): the producer's
    /// timestamp, or the broker's append time when the producer gave none.
    pub timestamp_ms: i64,
    /// Key bytes; empty means no key.
    pub key: Vec<u8>,
    /// Value bytes.
    pub value: Vec<u8>,
    /// Headers in producer order, duplicates kept.
    pub headers: Vec<Header>,
}

impl ConsumedRecord {
    /// The records of one batch of `partition`, in offset order.
    pub fn from_batch(partition: u32, batch: RecordBatch) -> impl Iterator<Item = ConsumedRecord> {
        let base = batch.base_offset;
        let append_time_ms = batch.append_time_ms;
        batch
            .records
            .into_iter()
            .enumerate()
            .map(move |(i, r)| ConsumedRecord {
                partition,
                offset: base + i as u64,
                timestamp_ms: if r.timestamp_ms == 0 {
                    append_time_ms
                } else {
                    r.timestamp_ms
                },
                key: r.key,
                value: r.value,
                headers: r.headers,
            })
    }

    /// All records of a fetch response (or subscription message) of
    /// `partition`, in offset order.
    pub fn from_response(partition: u32, response: FetchResponse) -> Vec<ConsumedRecord> {
        response
            .batches
            .into_iter()
            .flat_map(|batch| ConsumedRecord::from_batch(partition, batch))
            .collect()
    }
}

/// Reads one partition forward with [`Client::fetch`], remembering where it
/// is.
///
/// ```no_run
/// # async fn demo(client: strata::client::Client) -> Result<(), strata::client::ClientError> {
/// use strata::client::PartitionReader;
/// let mut reader = PartitionReader::new(client, "orders", 0, 0);
/// loop {
///     let records = reader.poll(0, 1000).await?;
///     for r in &records {
///         println!("{} {}", r.offset, String::from_utf8_lossy(&r.value));
///     }
/// }
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct PartitionReader {
    client: Client,
    topic: String,
    partition: u32,
    next_offset: u64,
    high_watermark: Option<u64>,
}

impl PartitionReader {
    /// A reader of `partition` of `topic` whose first record will be the one
    /// at `offset`.
    pub fn new(client: Client, topic: &str, partition: u32, offset: u64) -> PartitionReader {
        PartitionReader {
            client,
            topic: topic.to_string(),
            partition,
            next_offset: offset,
            high_watermark: None,
        }
    }

    /// The partition this reader reads.
    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// The offset the next [`PartitionReader::poll`] starts at.
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// The high watermark reported by the last fetch, if any.
    pub fn high_watermark(&self) -> Option<u64> {
        self.high_watermark
    }

    /// Fetches the next records (`max_bytes` 0 = broker default; waits up to
    /// `max_wait_ms` when there are none yet) and advances past them. An
    /// empty result means no record was available in time.
    ///
    /// # Errors
    /// The errors of [`Client::fetch`]; the position is unchanged then.
    pub async fn poll(
        &mut self,
        max_bytes: u32,
        max_wait_ms: u32,
    ) -> Result<Vec<ConsumedRecord>, ClientError> {
        let response = self
            .client
            .fetch(
                &self.topic,
                self.partition,
                self.next_offset,
                max_bytes,
                max_wait_ms,
            )
            .await?;
        self.high_watermark = Some(response.high_watermark);
        let mut records = ConsumedRecord::from_response(self.partition, response);
        // The broker starts exactly at the requested offset; dropping anything
        // earlier keeps the reader correct even if it ever did not.
        records.retain(|r| r.offset >= self.next_offset);
        if let Some(last) = records.last() {
            self.next_offset = last.offset + 1;
        }
        Ok(records)
    }
}

/// The messages of a [`Client::subscribe`] call: fetch responses, in offset
/// order, as the partition grows. Ends when the broker closes it (for
/// example on shutdown); dropping it cancels the subscription.
pub struct SubscribeStream {
    inner: tonic::Streaming<FetchResponse>,
}

impl std::fmt::Debug for SubscribeStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscribeStream").finish_non_exhaustive()
    }
}

impl SubscribeStream {
    pub(super) fn new(inner: tonic::Streaming<FetchResponse>) -> SubscribeStream {
        SubscribeStream { inner }
    }

    /// The next message, or `None` when the broker ended the stream.
    ///
    /// # Errors
    /// The errors of [`Client::fetch`], and `UNAVAILABLE` if the connection
    /// drops.
    pub async fn message(&mut self) -> Result<Option<FetchResponse>, ClientError> {
        Ok(self.inner.message().await?)
    }
}

impl Stream for SubscribeStream {
    type Item = Result<FetchResponse, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner)
            .poll_next(cx)
            .map(|item| item.map(|r| r.map_err(ClientError::from)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::v1::Record;

    fn record(value: &[u8], timestamp_ms: i64) -> Record {
        Record {
            value: value.to_vec(),
            timestamp_ms,
            ..Default::default()
        }
    }

    #[test]
    fn offsets_and_effective_timestamps() {
        let response = FetchResponse {
            batches: vec![
                RecordBatch {
                    base_offset: 10,
                    append_time_ms: 1_000,
                    records: vec![record(b"a", 0), record(b"b", 555)],
                },
                RecordBatch {
                    base_offset: 12,
                    append_time_ms: 2_000,
                    records: vec![record(b"c", 0)],
                },
            ],
            high_watermark: 13,
            log_start_offset: 0,
        };
        let got = ConsumedRecord::from_response(3, response);
        let summary: Vec<_> = got
            .iter()
            .map(|r| (r.partition, r.offset, r.timestamp_ms, r.value.clone()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (3, 10, 1_000, b"a".to_vec()),
                (3, 11, 555, b"b".to_vec()),
                (3, 12, 2_000, b"c".to_vec()),
            ]
        );
    }
}
