//! [`Consumer`]: reads manually assigned partitions, with seek and prefetch.
//!
//! Each assigned partition has a background reader that long-polls the next
//! fetch while the application processes the records it already has; at
//! most [`PREFETCH`] fetched responses wait in all (plus one being fetched
//! per partition), so memory stays bounded. [`Consumer::seek`] moves a partition to an offset, a time, the
//! earliest or the latest offset; records fetched before the seek are
//! dropped. Positions can be committed to a group as a standalone consumer
//! (a group with no live members, see `Groups.CommitOffsets`). For group
//! membership with automatic assignment use
//! [`GroupConsumer`](super::GroupConsumer).
//!
//! ```no_run
//! # async fn example() -> Result<(), strata::client::ClientError> {
//! use strata::client::{Client, Consumer, SeekTo};
//! let client = Client::connect("127.0.0.1:50051").await?;
//! let mut consumer = Consumer::new(client);
//! consumer.assign("orders", 0, SeekTo::Earliest).await?;
//! for record in consumer.poll(std::time::Duration::from_secs(1)).await? {
//!     let r = &record.record;
//!     println!("{} {}:{} {:?}", record.topic, r.partition, r.offset, r.value);
//! }
//! consumer.commit("billing").await?;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{Client, ClientError, ConsumedRecord, OffsetSpec, PartitionOffset};

/// Fetched responses that may wait for the application, all partitions together.
pub const PREFETCH: usize = 8;
/// Long-poll wait of the background fetches, ms.
const FETCH_WAIT_MS: u32 = 500;

/// Where [`Consumer::assign`] and [`Consumer::seek`] position a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeekTo {
    /// The oldest stored record.
    Earliest,
    /// The end of the log (only new records).
    Latest,
    /// This offset.
    Offset(u64),
    /// The first record appended at or after this time (ms since the epoch).
    Timestamp(i64),
}

/// A record of a [`Consumer`], with its topic.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicRecord {
    /// The topic.
    pub topic: String,
    /// The record, its partition and offset.
    pub record: ConsumedRecord,
}

type Fetched = (String, u32, u64, Result<Vec<ConsumedRecord>, ClientError>);

struct Assigned {
    /// Next offset to hand to the application.
    position: u64,
    /// Bumped by every seek; fetches of older generations are dropped.
    generation: u64,
    reader: JoinHandle<()>,
}

/// A consumer of manually assigned partitions.
pub struct Consumer {
    client: Client,
    assigned: BTreeMap<(String, u32), Assigned>,
    tx: mpsc::Sender<Fetched>,
    rx: mpsc::Receiver<Fetched>,
    generation: u64,
    max_bytes: u32,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("assigned", &self.assigned.keys())
            .finish_non_exhaustive()
    }
}

impl Consumer {
    /// A consumer with nothing assigned.
    pub fn new(client: Client) -> Consumer {
        let (tx, rx) = mpsc::channel(PREFETCH);
        Consumer {
            client,
            assigned: BTreeMap::new(),
            tx,
            rx,
            generation: 0,
            max_bytes: 0,
        }
    }

    /// Adds a partition, positioned by `at`.
    ///
    /// # Errors
    /// `NOT_FOUND` for an unknown topic or partition.
    pub async fn assign(
        &mut self,
        topic: &str,
        partition: u32,
        at: SeekTo,
    ) -> Result<(), ClientError> {
        self.seek(topic, partition, at).await
    }

    /// Stops reading a partition.
    pub fn unassign(&mut self, topic: &str, partition: u32) {
        if let Some(a) = self.assigned.remove(&(topic.to_string(), partition)) {
            a.reader.abort();
        }
    }

    /// The next offset the application gets from a partition.
    pub fn position(&self, topic: &str, partition: u32) -> Option<u64> {
        self.assigned
            .get(&(topic.to_string(), partition))
            .map(|a| a.position)
    }

    /// Moves a partition (assigning it if needed); prefetched records are dropped.
    ///
    /// # Errors
    /// `NOT_FOUND` for an unknown topic or partition.
    pub async fn seek(
        &mut self,
        topic: &str,
        partition: u32,
        at: SeekTo,
    ) -> Result<(), ClientError> {
        let offset = match at {
            SeekTo::Offset(o) => o,
            SeekTo::Earliest => {
                self.client
                    .list_offsets(topic, partition, OffsetSpec::Earliest, 0)
                    .await?
                    .offset
            }
            SeekTo::Latest => {
                self.client
                    .list_offsets(topic, partition, OffsetSpec::Latest, 0)
                    .await?
                    .offset
            }
            SeekTo::Timestamp(ts) => {
                self.client
                    .list_offsets(topic, partition, OffsetSpec::Timestamp, ts)
                    .await?
                    .offset
            }
        };
        self.unassign(topic, partition);
        self.generation += 1;
        let reader = tokio::spawn(prefetch(
            self.client.clone(),
            topic.to_string(),
            partition,
            offset,
            self.generation,
            self.max_bytes,
            self.tx.clone(),
        ));
        self.assigned.insert(
            (topic.to_string(), partition),
            Assigned {
                position: offset,
                generation: self.generation,
                reader,
            },
        );
        Ok(())
    }

    /// Records available within `wait` (possibly none), in offset order per
    /// partition.
    ///
    /// # Errors
    /// A fetch error of an assigned partition (e.g. `OUT_OF_RANGE` after
    /// retention, `DATA_LOSS`); seek to continue.
    pub async fn poll(&mut self, wait: Duration) -> Result<Vec<TopicRecord>, ClientError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut out = Vec::new();
        loop {
            let next = if out.is_empty() {
                tokio::time::timeout_at(deadline, self.rx.recv())
                    .await
                    .ok()
                    .flatten()
            } else {
                self.rx.try_recv().ok()
            };
            let Some((topic, partition, generation, result)) = next else {
                return Ok(out);
            };
            let Some(a) = self.assigned.get_mut(&(topic.clone(), partition)) else {
                continue;
            };
            if a.generation != generation {
                continue;
            }
            let records = result?;
            if let Some(last) = records.last() {
                a.position = last.offset + 1;
            }
            out.extend(records.into_iter().map(|record| TopicRecord {
                topic: topic.clone(),
                record,
            }));
        }
    }

    /// Commits the positions of every assigned partition to `group` as a
    /// standalone consumer (the group must have no live members).
    ///
    /// # Errors
    /// `FAILED_PRECONDITION` while the group has live members.
    pub async fn commit(&self, group: &str) -> Result<(), ClientError> {
        let offsets = self
            .assigned
            .iter()
            .map(|((topic, partition), a)| PartitionOffset {
                topic: topic.clone(),
                partition: *partition,
                offset: a.position,
                metadata: String::new(),
            })
            .collect();
        self.client.commit_offsets(group, "", -1, offsets).await
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        for a in self.assigned.values() {
            a.reader.abort();
        }
    }
}

/// One partition's reader: long-polls ahead; the channel send waits when the
/// application is behind.
async fn prefetch(
    client: Client,
    topic: String,
    partition: u32,
    mut offset: u64,
    generation: u64,
    max_bytes: u32,
    tx: mpsc::Sender<Fetched>,
) {
    loop {
        match client
            .fetch(&topic, partition, offset, max_bytes, FETCH_WAIT_MS)
            .await
        {
            Ok(resp) => {
                let records = ConsumedRecord::from_response(partition, resp);
                let Some(last) = records.last() else { continue };
                offset = last.offset + 1;
                if tx
                    .send((topic.clone(), partition, generation, Ok(records)))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(e) => {
                let _ = tx
                    .send((topic.clone(), partition, generation, Err(e)))
                    .await;
                return;
            }
        }
    }
}
