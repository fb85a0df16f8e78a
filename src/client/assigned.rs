//! [`Consumer`]: reads manually assigned partitions, with seek and prefetch.
//!
//! Each assigned partition has a background reader that long-polls the next
//! fetch while the application processes the records it already has; at
//! most [`PREFETCH`] fetched responses wait in all (plus one being fetched
//! per partition), so memory stays bounded. [`Consumer::seek`] moves a partition to an offset, a time, the
//! earliest or the latest offset; records fetched before the seek are
//! dropped. Positions can be committed to a group as a standalone consumer
//! (a group with no live members, see `Groups.CommitOffsets`).
//!
//! Or the consumer joins a group with [`Consumer::join_group`]: the group
//! coordinator assigns its partitions over the `Groups.Heartbeat` protocol
//! (see [`member`](super::member)); [`Consumer::poll`] sends the heartbeats,
//! starts new partitions at their committed offsets, commits and drops
//! revoked ones, and commits automatically on an interval; call it at
//! least once per heartbeat interval (1 s by default), or the session
//! times out and the partitions move to other members. After every epoch
//! change it re-reads the committed offsets of the partitions it kept and
//! moves those a `ResetOffsets` changed, so its commits never undo a reset;
//! a member that was expelled and joins again drops what it owned without
//! committing it (another member may have moved on). A fetch error of one
//! partition is returned by the poll after the records already collected
//! from others, so none of those is skipped.
//! [`GroupConsumer`](super::GroupConsumer) is the alternative that rides
//! one `Consume` stream instead.
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
//!
//! As a group member:
//!
//! ```no_run
//! # async fn example() -> Result<(), strata::client::ClientError> {
//! use strata::client::{AutoOffsetReset, Client, Consumer, MemberConfig};
//! let client = Client::connect("127.0.0.1:50051").await?;
//! let mut consumer = Consumer::new(client);
//! let config = MemberConfig { auto_offset_reset: AutoOffsetReset::Earliest, ..MemberConfig::default() };
//! consumer.join_group("billing", &["orders"], config).await?;
//! loop {
//!     for record in consumer.poll(std::time::Duration::from_millis(500)).await? {
//!         println!("{} {}:{}", record.topic, record.record.partition, record.record.offset);
//!     }
//!     # break;
//! }
//! consumer.leave_group().await?; // commits what was handed out, then leaves
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::member::{AssignmentChange, MemberConfig, Membership, TopicPartition};
use super::{
    AutoOffsetReset, Client, ClientError, ConsumedRecord, OffsetSpec, PartitionOffset,
    TopicPartitions,
};

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
    /// As a group member: the group's committed offset as far as this
    /// consumer knows (where it started reading, or its own last commit).
    /// One that moved without this consumer is a `ResetOffsets`.
    committed: Option<u64>,
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
    membership: Option<Membership>,
    /// A fetch error met while records of other partitions were already
    /// collected: those are handed out first, the error by the next poll.
    deferred_error: Option<ClientError>,
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
            membership: None,
            deferred_error: None,
        }
    }

    /// Joins `group` as a consumer of `topics` over the heartbeat protocol
    /// and starts reading the partitions the coordinator assigns (from
    /// their committed offsets, or `config.auto_offset_reset`). Manually
    /// assigned partitions are dropped first.
    ///
    /// # Errors
    /// `FAILED_PRECONDITION` if this consumer is already a member;
    /// `INVALID_ARGUMENT` for a bad group name or session timeout; group
    /// limits as `RESOURCE_EXHAUSTED`; any connection error.
    pub async fn join_group(
        &mut self,
        group: &str,
        topics: &[&str],
        config: MemberConfig,
    ) -> Result<(), ClientError> {
        if self.membership.is_some() {
            return Err(ClientError::Status(tonic::Status::failed_precondition(
                "this consumer is already a group member; leave_group first",
            )));
        }
        let keys: Vec<_> = self.assigned.keys().cloned().collect();
        for (topic, partition) in keys {
            self.unassign(&topic, partition);
        }
        let topics = topics.iter().map(|t| t.to_string()).collect();
        let (membership, change) = Membership::join(&self.client, group, topics, config).await?;
        self.membership = Some(membership);
        self.apply(change).await
    }

    /// The member id and epoch while this consumer is a group member.
    pub fn member(&self) -> Option<(&str, i32)> {
        self.membership
            .as_ref()
            .map(|m| (m.member_id.as_str(), m.epoch))
    }

    /// The partitions currently read, in order.
    pub fn assignment(&self) -> Vec<(String, u32)> {
        self.assigned.keys().cloned().collect()
    }

    /// As a group member: commits the position of every owned partition
    /// (the offset after the last record [`Consumer::poll`] handed out),
    /// with the current member epoch.
    ///
    /// # Errors
    /// `FAILED_PRECONDITION` if this consumer is not a group member, or if
    /// the member was fenced and its partitions moved on; any connection
    /// error.
    pub async fn commit_positions(&mut self) -> Result<(), ClientError> {
        let Some(m) = &self.membership else {
            return Err(ClientError::Status(tonic::Status::failed_precondition(
                "not a group member: use commit(group) for a standalone commit",
            )));
        };
        let keys: Vec<_> = m.owned.iter().cloned().collect();
        self.commit_member(&keys).await
    }

    /// Commits the positions of `keys` as the member; after a refused epoch,
    /// heartbeats once and retries what is still owned.
    async fn commit_member(&mut self, keys: &[(String, u32)]) -> Result<(), ClientError> {
        for attempt in 0..2 {
            let Some(m) = &self.membership else {
                return Ok(());
            };
            let offsets = self.positions(keys.iter().filter(|k| m.owned.contains(*k)));
            if offsets.is_empty() {
                return Ok(());
            }
            let result = self
                .client
                .commit_offsets(&m.group, &m.member_id, m.epoch, offsets.clone())
                .await;
            match result {
                Err(e) if attempt == 0 && e.code() == tonic::Code::FailedPrecondition => {
                    // The epoch moved: a rebalance or a reset. The heartbeat
                    // learns the new epoch and moves partitions whose
                    // committed offset was reset, so the retry commits the
                    // reset positions rather than undoing them.
                    self.heartbeat_now().await?;
                }
                other => {
                    if other.is_ok() {
                        for o in &offsets {
                            if let Some(a) = self.assigned.get_mut(&(o.topic.clone(), o.partition))
                            {
                                a.committed = Some(o.offset);
                            }
                        }
                    }
                    if let Some(m) = &mut self.membership {
                        m.last_commit = std::time::Instant::now();
                    }
                    return other;
                }
            }
        }
        Ok(())
    }

    /// The positions of those of `keys` that are assigned, to commit.
    fn positions<'a>(&self, keys: impl Iterator<Item = &'a (String, u32)>) -> Vec<PartitionOffset> {
        keys.filter_map(|k| {
            self.assigned.get(k).map(|a| PartitionOffset {
                topic: k.0.clone(),
                partition: k.1,
                offset: a.position,
                metadata: String::new(),
            })
        })
        .collect()
    }

    /// Commits what was handed out and leaves the group; the consumer then
    /// reads nothing until assigned or joined again.
    ///
    /// # Errors
    /// The commit's or the leave's error; the consumer has left its
    /// partitions either way.
    pub async fn leave_group(&mut self) -> Result<(), ClientError> {
        if self.membership.is_none() {
            return Ok(());
        }
        let committed = self.commit_positions().await;
        let left = match self.membership.take() {
            Some(mut m) => m.leave(&self.client).await,
            None => Ok(()),
        };
        let keys: Vec<_> = self.assigned.keys().cloned().collect();
        for (topic, partition) in keys {
            self.unassign(&topic, partition);
        }
        committed.and(left)
    }

    /// Heartbeats now and applies the assignment change; after an epoch
    /// change, follows offsets that a `ResetOffsets` moved.
    async fn heartbeat_now(&mut self) -> Result<(), ClientError> {
        let Some(m) = &mut self.membership else {
            return Ok(());
        };
        let epoch = m.epoch;
        let change = match m.heartbeat(&self.client).await {
            Ok(change) => change,
            Err(e) => {
                // Partitions no longer owned (lost when the member was
                // expelled and could not join again) must not be read.
                self.drop_unowned();
                return Err(e);
            }
        };
        let kept: Vec<TopicPartition> = m
            .owned
            .iter()
            .filter(|tp| !change.added.contains(*tp))
            .cloned()
            .collect();
        let epoch_moved = m.epoch != epoch;
        self.apply(change).await?;
        if epoch_moved {
            self.follow_resets(&kept).await?;
        }
        Ok(())
    }

    /// Stops reading partitions the membership does not own, uncommitted.
    fn drop_unowned(&mut self) {
        let Some(m) = &self.membership else { return };
        let unowned: Vec<TopicPartition> = self
            .assigned
            .keys()
            .filter(|k| !m.owned.contains(*k))
            .cloned()
            .collect();
        for (topic, partition) in unowned {
            self.unassign(&topic, partition);
        }
    }

    /// Re-reads the group's committed offsets of `partitions` (kept across
    /// an epoch change) and moves each whose offset changed without this
    /// consumer (a `ResetOffsets`) to the new offset, dropping what was
    /// prefetched from the old position.
    async fn follow_resets(&mut self, partitions: &[TopicPartition]) -> Result<(), ClientError> {
        let Some(m) = &self.membership else {
            return Ok(());
        };
        let partitions: Vec<&TopicPartition> = partitions
            .iter()
            .filter(|tp| self.assigned.contains_key(*tp))
            .collect();
        if partitions.is_empty() {
            return Ok(());
        }
        let group = m.group.clone();
        let committed = self
            .client
            .fetch_offsets(&group, to_request(partitions.iter().copied()))
            .await?;
        for o in committed {
            let key = (o.topic, o.partition);
            let Some(a) = self.assigned.get(&key) else {
                continue;
            };
            if a.committed != Some(o.offset) {
                tracing::info!(group = %group, topic = %key.0, partition = key.1, offset = o.offset, "committed offset was reset: continuing from it");
                self.seek(&key.0, key.1, SeekTo::Offset(o.offset)).await?;
                if let Some(a) = self.assigned.get_mut(&key) {
                    a.committed = Some(o.offset);
                }
            }
        }
        Ok(())
    }

    /// Group duties due now: the heartbeat and the automatic commit.
    async fn maintain_membership(&mut self) -> Result<(), ClientError> {
        let Some(m) = &self.membership else {
            return Ok(());
        };
        let now = std::time::Instant::now();
        let commit_due = m
            .config
            .auto_commit_interval
            .is_some_and(|i| now >= m.last_commit + i);
        if now >= m.next_heartbeat() {
            self.heartbeat_now().await?;
        }
        if commit_due {
            self.commit_positions().await?;
        }
        Ok(())
    }

    /// Starts added partitions at their committed offsets, commits and drops
    /// revoked ones and drops lost ones; tells the coordinator at once when
    /// something was released, so the next owner does not wait a heartbeat
    /// interval. Added partitions that could not be started are given up
    /// (not reported as owned), so the next heartbeat hands them out again.
    async fn apply(&mut self, change: AssignmentChange) -> Result<(), ClientError> {
        let Some(m) = &self.membership else {
            return Ok(());
        };
        let (group, reset) = (m.group.clone(), m.config.auto_offset_reset);
        if !change.revoked.is_empty() {
            // Commit with the epoch of the heartbeat that revoked them: the
            // broker accepts commits of partitions being released.
            let offsets = self.positions(change.revoked.iter());
            if !offsets.is_empty() {
                if let Err(e) = self
                    .client
                    .commit_offsets(&group, &m.member_id, m.epoch, offsets)
                    .await
                {
                    tracing::warn!(group = %group, error = %e, "could not commit revoked partitions");
                }
            }
            for (topic, partition) in &change.revoked {
                self.unassign(topic, *partition);
            }
        }
        for (topic, partition) in &change.lost {
            self.unassign(topic, *partition);
        }
        if !change.added.is_empty() {
            if let Err(e) = self.start_added(&group, reset, &change.added).await {
                if let Some(m) = &mut self.membership {
                    for tp in &change.added {
                        if !self.assigned.contains_key(tp) {
                            m.owned.remove(tp);
                        }
                    }
                }
                return Err(e);
            }
        }
        if !change.revoked.is_empty() {
            Box::pin(self.heartbeat_now()).await?;
        }
        Ok(())
    }

    /// Starts reading newly assigned partitions at the group's committed
    /// offsets, or where `reset` says for partitions without one.
    async fn start_added(
        &mut self,
        group: &str,
        reset: AutoOffsetReset,
        added: &[TopicPartition],
    ) -> Result<(), ClientError> {
        let committed = self
            .client
            .fetch_offsets(group, to_request(added.iter()))
            .await?;
        for (topic, partition) in added {
            let stored = committed
                .iter()
                .find(|o| o.topic == *topic && o.partition == *partition)
                .map(|o| o.offset);
            let at = match (stored, reset) {
                (Some(offset), _) => SeekTo::Offset(offset),
                (None, AutoOffsetReset::Earliest) => SeekTo::Earliest,
                (None, _) => SeekTo::Latest,
            };
            self.seek(topic, *partition, at).await?;
            if let Some(a) = self.assigned.get_mut(&(topic.clone(), *partition)) {
                a.committed = stored;
            }
        }
        Ok(())
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
                committed: None,
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
        loop {
            self.maintain_membership().await?;
            // A member wakes up for its next heartbeat.
            let step = match &self.membership {
                Some(m) => deadline.min(m.next_heartbeat().into()),
                None => deadline,
            };
            let out = self.poll_until(step).await?;
            if !out.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(out);
            }
        }
    }

    /// Records available before `deadline` (possibly none).
    async fn poll_until(
        &mut self,
        deadline: tokio::time::Instant,
    ) -> Result<Vec<TopicRecord>, ClientError> {
        if let Some(e) = self.deferred_error.take() {
            return Err(e);
        }
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
            let records = match result {
                Ok(records) => records,
                // Hand out what was collected (its positions advanced
                // already); the error comes with the next poll.
                Err(e) if !out.is_empty() => {
                    self.deferred_error = Some(e);
                    return Ok(out);
                }
                Err(e) => return Err(e),
            };
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

/// A `FetchOffsets` request for `partitions`, grouped by topic.
fn to_request<'a>(partitions: impl Iterator<Item = &'a TopicPartition>) -> Vec<TopicPartitions> {
    let mut by_topic: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for (topic, partition) in partitions {
        by_topic.entry(topic.clone()).or_default().push(*partition);
    }
    by_topic
        .into_iter()
        .map(|(topic, partitions)| TopicPartitions { topic, partitions })
        .collect()
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
