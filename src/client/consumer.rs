//! [`GroupConsumer`]: a consumer-group member on one `Groups.Consume` stream.
//!
//! The broker does the hard part: while the stream is open it is a member
//! of the group, reads the assigned partitions from the committed offsets,
//! follows rebalances and `ResetOffsets` by itself, and the member leaves
//! the group the moment the stream closes (when the consumer is dropped).
//! The consumer hides the stream's `joined` and `assignment` events, keeps
//! the member id, the current epoch and the assignment, and hands out
//! [`GroupRecord`]s.
//!
//! Committing: [`GroupConsumer::commit_processed`] stores, per partition,
//! the offset after the last record handed out (at-least-once: call it after
//! processing). A commit always carries the *current* epoch. When the broker
//! refuses it with `FAILED_PRECONDITION` (the epoch moved: a rebalance or a
//! reset happened), the consumer reads the stream's pending events until it
//! learns the new epoch, drops partitions no longer assigned, and retries
//! once. Positions that predate an epoch change are committed only if the
//! group's committed offset is still the one this member last knew, so a
//! commit never undoes a `ResetOffsets` (after a reset the stream delivers
//! the partition again from the new position).
//!
//! ```no_run
//! use strata::client::{AutoOffsetReset, Client};
//!
//! # async fn demo() -> Result<(), strata::client::ClientError> {
//! let client = Client::connect("127.0.0.1:50051").await?;
//! let mut consumer = client
//!     .group_consumer("billing", ["orders"], AutoOffsetReset::Earliest)
//!     .await?;
//! while let Some(item) = consumer.next().await {
//!     let r = item?;
//!     println!("{}/{}:{} {}", r.topic, r.record.partition, r.record.offset,
//!         String::from_utf8_lossy(&r.record.value));
//!     consumer.commit_processed().await?;
//! }
//! # Ok(())
//! # }
//! ```

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use super::{Client, ClientError, ConsumedRecord};
use crate::proto::v1::consume_event::Event;
use crate::proto::v1::{
    Assignment, AutoOffsetReset, ConsumeEvent, ConsumeRequest, ConsumedBatch, PartitionOffset,
    TopicPartitions,
};

/// How long a commit refused for a stale epoch waits for the stream to
/// report the new epoch before giving up with the broker's error.
pub const EPOCH_WAIT: Duration = Duration::from_secs(5);

/// Most `Consume` events [`GroupConsumer::next_batch`] takes from the
/// connection's buffer without waiting, to fill one batch.
const READY_EVENTS_PER_BATCH: usize = 64;

/// One record delivered to a group member: the topic and the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRecord {
    /// Topic the record was read from.
    pub topic: String,
    /// The record, with its partition, offset and effective timestamp.
    pub record: ConsumedRecord,
}

/// What the consumer knows about one assigned partition.
#[derive(Debug, Default)]
struct Track {
    /// The offset the stream should deliver next (after the last received
    /// record); a batch starting elsewhere means the stream repositioned.
    delivered_next: Option<u64>,
    /// The group's committed offset as far as this member knows: its own
    /// last commit, or where the stream started reading.
    committed: Option<u64>,
    /// The offset after the last record handed out, tagged with the epoch
    /// that was current when the record arrived.
    processed: Option<Tagged>,
}

/// An offset and the member epoch it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tagged {
    offset: u64,
    epoch: i32,
}

/// A received record not yet handed out.
#[derive(Debug)]
struct Pending {
    topic: String,
    record: ConsumedRecord,
    /// The epoch when it arrived.
    epoch: i32,
}

/// A position to commit.
#[derive(Debug, Clone)]
struct Item {
    topic: String,
    partition: u32,
    offset: u64,
    metadata: String,
    /// The epoch the position belongs to.
    epoch: i32,
}

impl Item {
    fn to_offset(&self) -> PartitionOffset {
        PartitionOffset {
            topic: self.topic.clone(),
            partition: self.partition,
            offset: self.offset,
            metadata: self.metadata.clone(),
        }
    }
}

/// A member of a consumer group, reading records through one `Consume`
/// stream. Created by [`Client::group_consumer`]; dropping it closes the
/// stream, which leaves the group at once (commit first: see
/// [`GroupConsumer::close`]).
pub struct GroupConsumer {
    client: Client,
    group: String,
    stream: tonic::Streaming<ConsumeEvent>,
    ended: bool,
    state: MemberState,
    commit_interval: Option<Duration>,
    last_commit: Instant,
}

/// The member's view of its stream, apart from the stream itself: pure
/// bookkeeping, driven by events and hand-outs.
#[derive(Debug, Default)]
struct MemberState {
    member_id: String,
    epoch: i32,
    assigned_once: bool,
    /// The assignment: topic, then partition.
    tracks: BTreeMap<String, BTreeMap<u32, Track>>,
    /// Received records not yet handed out, in delivery order.
    pending: VecDeque<Pending>,
}

impl std::fmt::Debug for GroupConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupConsumer")
            .field("group", &self.group)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Joins `group` as a consumer of `topics` through a `Consume` stream
    /// and returns once the broker has sent the member's first assignment.
    /// Partitions without a committed offset start at `auto_offset_reset`.
    ///
    /// ```no_run
    /// # async fn demo(client: strata::client::Client) -> Result<(), strata::client::ClientError> {
    /// use strata::client::AutoOffsetReset;
    /// let consumer = client.group_consumer("billing", ["orders", "refunds"], AutoOffsetReset::Latest).await?;
    /// println!("member {} owns {:?}", consumer.member_id(), consumer.assignment());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// `INVALID_ARGUMENT` for a bad group name, a group limit as
    /// `RESOURCE_EXHAUSTED`, [`ClientError::StreamEnded`] if the broker
    /// closes the stream before the first assignment, and any connection
    /// error.
    pub async fn group_consumer<I, S>(
        &self,
        group: &str,
        topics: I,
        auto_offset_reset: AutoOffsetReset,
    ) -> Result<GroupConsumer, ClientError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let request = ConsumeRequest {
            group: group.to_string(),
            topics: topics.into_iter().map(Into::into).collect(),
            auto_offset_reset: auto_offset_reset.into(),
        };
        let stream = self.groups.clone().consume(request).await?.into_inner();
        let mut consumer = GroupConsumer {
            client: self.clone(),
            group: group.to_string(),
            stream,
            ended: false,
            state: MemberState::default(),
            commit_interval: None,
            last_commit: Instant::now(),
        };
        consumer.await_first_assignment().await?;
        Ok(consumer)
    }
}

impl GroupConsumer {
    /// The group this consumer is a member of.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The member id the broker gave this stream.
    pub fn member_id(&self) -> &str {
        &self.state.member_id
    }

    /// The member's current epoch (as last reported by the stream).
    pub fn member_epoch(&self) -> i32 {
        self.state.epoch
    }

    /// The partitions currently assigned, grouped by topic, ascending.
    pub fn assignment(&self) -> Vec<TopicPartitions> {
        self.state.assignment()
    }

    /// Whether `partition` of `topic` is currently assigned to this member.
    pub fn is_assigned(&self, topic: &str, partition: u32) -> bool {
        self.state.track(topic, partition).is_some()
    }

    /// The offset after the last record of an assigned partition handed out
    /// by [`GroupConsumer::next`] or [`GroupConsumer::next_batch`] (what
    /// [`GroupConsumer::commit_processed`] would commit); `None` before the
    /// first one, after a reset repositioned the partition, or when the
    /// partition is not assigned.
    pub fn position(&self, topic: &str, partition: u32) -> Option<u64> {
        self.state
            .track(topic, partition)?
            .processed
            .map(|t| t.offset)
    }

    /// Commits processed positions automatically, at most once per
    /// `interval`, when [`GroupConsumer::next`] or
    /// [`GroupConsumer::next_batch`] is called (so a record counts as
    /// processed once the next one is asked for). `None` (the default)
    /// turns that off.
    pub fn set_commit_interval(&mut self, interval: Option<Duration>) {
        self.commit_interval = interval;
    }

    /// [`GroupConsumer::set_commit_interval`] as a builder.
    pub fn with_commit_interval(mut self, interval: Duration) -> GroupConsumer {
        self.commit_interval = Some(interval);
        self
    }

    /// The next record, waiting for one if needed; `None` once the broker
    /// ended the stream (for example on shutdown). Cancel-safe: dropping the
    /// future loses no record.
    ///
    /// # Errors
    /// A stream error (the broker's status, or `UNAVAILABLE` when the
    /// connection drops), after which the stream is over; or the error of an
    /// automatic commit (see [`GroupConsumer::set_commit_interval`]).
    pub async fn next(&mut self) -> Option<Result<GroupRecord, ClientError>> {
        match self.next_batch(1).await? {
            Ok(mut records) => records.pop().map(Ok),
            Err(e) => Some(Err(e)),
        }
    }

    /// The records already received, at least one (waiting for it if
    /// needed) and at most `max` (0 counts as 1), in delivery order (offset
    /// order within a partition); `None` once the broker ended the stream.
    /// Cancel-safe like [`GroupConsumer::next`].
    ///
    /// # Errors
    /// As [`GroupConsumer::next`].
    pub async fn next_batch(
        &mut self,
        max: usize,
    ) -> Option<Result<Vec<GroupRecord>, ClientError>> {
        if let Err(e) = self.auto_commit().await {
            return Some(Err(e));
        }
        while self.state.pending.is_empty() {
            match self.receive().await {
                Ok(true) => {}
                Ok(false) => return None,
                Err(e) => return Some(Err(e)),
            }
        }
        let max = max.max(1);
        if let Err(e) = self.receive_ready(max).await {
            return Some(Err(e));
        }
        Some(Ok(self.state.hand_out(max)))
    }

    /// Commits, for every assigned partition, the offset after the last
    /// record handed out (unless already committed) and returns what was
    /// stored. See the module docs for what happens on a stale epoch.
    ///
    /// # Errors
    /// The broker's refusal (after the one retry), `UNAVAILABLE` and other
    /// connection errors.
    pub async fn commit_processed(&mut self) -> Result<Vec<PartitionOffset>, ClientError> {
        let items = self.state.processed_items();
        self.commit_items(items).await
    }

    /// Commits the given positions (each `offset` is the next offset to
    /// read) with the current epoch and returns what was stored. Positions
    /// of partitions not assigned to this member are left out; on a stale
    /// epoch the consumer learns the new one and retries once, for the
    /// partitions still assigned whose committed offset nobody else moved.
    ///
    /// # Errors
    /// As [`GroupConsumer::commit_processed`].
    pub async fn commit(
        &mut self,
        offsets: Vec<PartitionOffset>,
    ) -> Result<Vec<PartitionOffset>, ClientError> {
        let epoch = self.state.epoch;
        let items = offsets
            .into_iter()
            .map(|o| Item {
                topic: o.topic,
                partition: o.partition,
                offset: o.offset,
                metadata: o.metadata,
                epoch,
            })
            .collect();
        self.commit_items(items).await
    }

    /// Commits the processed positions, then closes the stream, which
    /// leaves the group at once. Returns what was committed.
    ///
    /// # Errors
    /// As [`GroupConsumer::commit_processed`]; the member leaves the group
    /// either way.
    pub async fn close(mut self) -> Result<Vec<PartitionOffset>, ClientError> {
        self.commit_processed().await
    }

    // ---- The stream ------------------------------------------------------

    /// Reads events until the first assignment has arrived.
    async fn await_first_assignment(&mut self) -> Result<(), ClientError> {
        while !self.state.assigned_once {
            if !self.receive().await? {
                return Err(ClientError::StreamEnded { rpc: "Consume" });
            }
        }
        if self.state.member_id.is_empty() {
            return Err(ClientError::MissingField {
                rpc: "Consume",
                field: "joined",
            });
        }
        Ok(())
    }

    /// Reads and applies one event; false when the stream has ended.
    async fn receive(&mut self) -> Result<bool, ClientError> {
        if self.ended {
            return Ok(false);
        }
        match self.stream.message().await {
            Ok(Some(event)) => {
                self.state.apply(event);
                Ok(true)
            }
            Ok(None) => {
                self.ended = true;
                Ok(false)
            }
            Err(status) => {
                self.ended = true;
                Err(status.into())
            }
        }
    }

    /// Applies the events already buffered on the connection, without
    /// waiting, until `max` records are pending.
    async fn receive_ready(&mut self, max: usize) -> Result<(), ClientError> {
        for _ in 0..READY_EVENTS_PER_BATCH {
            if self.state.pending.len() >= max || self.ended {
                break;
            }
            // A zero timeout polls the read once: ready or not, no waiting.
            match tokio::time::timeout(Duration::ZERO, self.receive()).await {
                Ok(received) => {
                    if !received? {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        Ok(())
    }

    /// Reads events (queueing records) until the epoch differs from `old`;
    /// false if the stream ended or [`EPOCH_WAIT`] passed first.
    async fn await_epoch_change(&mut self, old: i32) -> Result<bool, ClientError> {
        let wait = async {
            while self.state.epoch == old {
                if !self.receive().await? {
                    return Ok(false);
                }
            }
            Ok(true)
        };
        tokio::time::timeout(EPOCH_WAIT, wait)
            .await
            .unwrap_or(Ok(false))
    }

    // ---- Commits ---------------------------------------------------------

    async fn auto_commit(&mut self) -> Result<(), ClientError> {
        match self.commit_interval {
            Some(interval) if self.last_commit.elapsed() >= interval => {
                self.commit_processed().await.map(drop)
            }
            _ => Ok(()),
        }
    }

    /// Commits `items`; on `FAILED_PRECONDITION`, learns the new epoch from
    /// the stream and tries once more.
    async fn commit_items(
        &mut self,
        items: Vec<Item>,
    ) -> Result<Vec<PartitionOffset>, ClientError> {
        self.last_commit = Instant::now();
        let epoch = self.state.epoch;
        match self.try_commit(items.clone()).await {
            Err(e) if e.code() == tonic::Code::FailedPrecondition => {
                if self.await_epoch_change(epoch).await? {
                    self.try_commit(items).await
                } else {
                    Err(e)
                }
            }
            other => other,
        }
    }

    /// One commit attempt with the current epoch, of the items still
    /// assigned and (for older epochs) still valid.
    async fn try_commit(
        &mut self,
        mut items: Vec<Item>,
    ) -> Result<Vec<PartitionOffset>, ClientError> {
        items.retain(|i| self.is_assigned(&i.topic, i.partition));
        let older: Vec<&Item> = items
            .iter()
            .filter(|i| i.epoch != self.state.epoch)
            .collect();
        let committed = if older.is_empty() {
            BTreeMap::new()
        } else {
            self.server_committed(&older).await?
        };
        let items = self.state.still_valid(items, &committed);
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let offsets: Vec<PartitionOffset> = items.iter().map(Item::to_offset).collect();
        self.client
            .commit_offsets(
                &self.group,
                &self.state.member_id,
                self.state.epoch,
                offsets.clone(),
            )
            .await?;
        self.state.committed(&offsets);
        Ok(offsets)
    }

    /// The group's committed offsets of the items' partitions.
    async fn server_committed(&self, items: &[&Item]) -> Result<Committed, ClientError> {
        let mut wanted: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for i in items {
            wanted.entry(i.topic.clone()).or_default().push(i.partition);
        }
        let partitions = wanted
            .into_iter()
            .map(|(topic, partitions)| TopicPartitions { topic, partitions })
            .collect();
        let offsets = self.client.fetch_offsets(&self.group, partitions).await?;
        Ok(offsets
            .into_iter()
            .map(|o| ((o.topic, o.partition), o.offset))
            .collect())
    }
}

/// Committed offsets by (topic, partition).
type Committed = BTreeMap<(String, u32), u64>;

impl MemberState {
    fn track(&self, topic: &str, partition: u32) -> Option<&Track> {
        self.tracks.get(topic)?.get(&partition)
    }

    fn track_mut(&mut self, topic: &str, partition: u32) -> Option<&mut Track> {
        self.tracks.get_mut(topic)?.get_mut(&partition)
    }

    fn assignment(&self) -> Vec<TopicPartitions> {
        self.tracks
            .iter()
            .map(|(topic, partitions)| TopicPartitions {
                topic: topic.clone(),
                partitions: partitions.keys().copied().collect(),
            })
            .collect()
    }

    fn apply(&mut self, event: ConsumeEvent) {
        match event.event {
            Some(Event::Joined(joined)) => {
                self.member_id = joined.member_id;
                self.epoch = joined.member_epoch;
            }
            Some(Event::Assignment(assignment)) => self.adopt(assignment),
            Some(Event::Records(batch)) => self.accept(batch),
            // An event type newer than this client: nothing to do with it.
            None => {}
        }
    }

    /// Adopts a new assignment and epoch: forgets revoked partitions and
    /// their undelivered records.
    fn adopt(&mut self, assignment: Assignment) {
        self.epoch = assignment.member_epoch;
        self.assigned_once = true;
        let assigned: BTreeSet<(String, u32)> = assignment
            .partitions
            .into_iter()
            .flat_map(|tp| {
                let topic = tp.topic;
                tp.partitions.into_iter().map(move |p| (topic.clone(), p))
            })
            .collect();
        for (topic, partitions) in self.tracks.iter_mut() {
            partitions.retain(|p, _| assigned.contains(&(topic.clone(), *p)));
        }
        self.tracks.retain(|_, partitions| !partitions.is_empty());
        for (topic, p) in assigned {
            self.tracks.entry(topic).or_default().entry(p).or_default();
        }
        let tracks = &self.tracks;
        self.pending.retain(|r| {
            tracks
                .get(&r.topic)
                .is_some_and(|ps| ps.contains_key(&r.record.partition))
        });
    }

    /// Queues the records of a batch of an assigned partition. A batch that
    /// does not follow the previous one means the stream repositioned (a
    /// reset): the records before it are superseded, and the batch starts
    /// at the group's new committed offset.
    fn accept(&mut self, batch: ConsumedBatch) {
        let (topic, partition) = (batch.topic, batch.partition);
        let Some(records) = batch.batch else { return };
        let Some(track) = self
            .tracks
            .get_mut(&topic)
            .and_then(|ps| ps.get_mut(&partition))
        else {
            return;
        };
        let first = records.base_offset;
        let repositioned = track.delivered_next.is_some_and(|next| next != first);
        if repositioned {
            track.processed = None;
        }
        if repositioned || track.committed.is_none() {
            track.committed = Some(first);
        }
        track.delivered_next = Some(first + records.records.len() as u64);
        if repositioned {
            self.pending
                .retain(|r| r.topic != topic || r.record.partition != partition);
        }
        let epoch = self.epoch;
        for record in ConsumedRecord::from_batch(partition, records) {
            self.pending.push_back(Pending {
                topic: topic.clone(),
                record,
                epoch,
            });
        }
    }

    /// Hands out up to `max` pending records, remembering each partition's
    /// position.
    fn hand_out(&mut self, max: usize) -> Vec<GroupRecord> {
        let take = max.min(self.pending.len());
        let handed: Vec<Pending> = self.pending.drain(..take).collect();
        let mut out = Vec::with_capacity(handed.len());
        for p in handed {
            if let Some(track) = self.track_mut(&p.topic, p.record.partition) {
                track.processed = Some(Tagged {
                    offset: p.record.offset + 1,
                    epoch: p.epoch,
                });
            }
            out.push(GroupRecord {
                topic: p.topic,
                record: p.record,
            });
        }
        out
    }

    /// The processed positions not yet committed.
    fn processed_items(&self) -> Vec<Item> {
        let mut items = Vec::new();
        for (topic, partitions) in &self.tracks {
            for (&partition, track) in partitions {
                match track.processed {
                    Some(t) if Some(t.offset) != track.committed => items.push(Item {
                        topic: topic.clone(),
                        partition,
                        offset: t.offset,
                        metadata: String::new(),
                        epoch: t.epoch,
                    }),
                    _ => {}
                }
            }
        }
        items
    }

    /// Keeps the items of the current epoch, and those of older epochs whose
    /// partition's committed offset (`server`) is absent or still the one
    /// this member knows, so that a reset or another owner's commits are not
    /// undone. A processed position that fails the check is forgotten.
    fn still_valid(&mut self, items: Vec<Item>, server: &Committed) -> Vec<Item> {
        let epoch = self.epoch;
        let mut keep = Vec::with_capacity(items.len());
        for item in items {
            let Some(track) = self.track_mut(&item.topic, item.partition) else {
                continue;
            };
            let on_server = server.get(&(item.topic.clone(), item.partition)).copied();
            if item.epoch == epoch || on_server.is_none() || on_server == track.committed {
                keep.push(item);
            } else if track.processed.map(|t| t.offset) == Some(item.offset) {
                track.processed = None;
            }
        }
        keep
    }

    /// Records a successful commit.
    fn committed(&mut self, offsets: &[PartitionOffset]) {
        for o in offsets {
            if let Some(track) = self.track_mut(&o.topic, o.partition) {
                track.committed = Some(o.offset);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::v1::{Joined, Record, RecordBatch};

    fn assignment(epoch: i32, partitions: &[u32]) -> ConsumeEvent {
        ConsumeEvent {
            event: Some(Event::Assignment(Assignment {
                partitions: vec![TopicPartitions {
                    topic: "t".into(),
                    partitions: partitions.to_vec(),
                }],
                member_epoch: epoch,
            })),
        }
    }

    fn records(partition: u32, base_offset: u64, count: usize) -> ConsumeEvent {
        let record = Record {
            value: b"v".to_vec(),
            ..Default::default()
        };
        ConsumeEvent {
            event: Some(Event::Records(ConsumedBatch {
                topic: "t".into(),
                partition,
                batch: Some(RecordBatch {
                    base_offset,
                    append_time_ms: 1,
                    records: vec![record; count],
                }),
            })),
        }
    }

    fn joined_state(epoch: i32, partitions: &[u32]) -> MemberState {
        let mut s = MemberState::default();
        s.apply(ConsumeEvent {
            event: Some(Event::Joined(Joined {
                member_id: "m".into(),
                member_epoch: epoch,
            })),
        });
        s.apply(assignment(epoch, partitions));
        s
    }

    fn offsets(items: &[Item]) -> Vec<(u32, u64, i32)> {
        items
            .iter()
            .map(|i| (i.partition, i.offset, i.epoch))
            .collect()
    }

    #[test]
    fn hands_out_in_order_and_commits_the_next_offset() {
        let mut s = joined_state(1, &[0, 1]);
        s.apply(records(0, 5, 2));
        s.apply(records(1, 0, 1));
        let got: Vec<(u32, u64)> = s
            .hand_out(2)
            .iter()
            .map(|r| (r.record.partition, r.record.offset))
            .collect();
        assert_eq!(got, vec![(0, 5), (0, 6)]);
        assert_eq!(offsets(&s.processed_items()), vec![(0, 7, 1)]);
        s.committed(&[PartitionOffset {
            topic: "t".into(),
            partition: 0,
            offset: 7,
            metadata: String::new(),
        }]);
        assert!(s.processed_items().is_empty());
        assert_eq!(s.hand_out(10).len(), 1);
        assert_eq!(offsets(&s.processed_items()), vec![(1, 1, 1)]);
    }

    #[test]
    fn a_revocation_forgets_the_partition_and_its_pending_records() {
        let mut s = joined_state(1, &[0, 1]);
        s.apply(records(0, 0, 1));
        s.apply(records(1, 0, 3));
        s.hand_out(1);
        s.apply(assignment(2, &[1]));
        assert_eq!(s.epoch, 2);
        assert!(s.track("t", 0).is_none());
        assert!(s.processed_items().is_empty());
        let left: Vec<u32> = s.hand_out(10).iter().map(|r| r.record.partition).collect();
        assert_eq!(left, vec![1, 1, 1]);
        // Records delivered under epoch 1 keep their tag.
        assert_eq!(offsets(&s.processed_items()), vec![(1, 3, 1)]);
    }

    #[test]
    fn a_reset_repositions_and_supersedes_earlier_records() {
        let mut s = joined_state(1, &[0]);
        s.apply(records(0, 0, 10));
        s.hand_out(4);
        // Reset to offset 2: new epoch, then the stream starts again at 2.
        s.apply(assignment(2, &[0]));
        s.apply(records(0, 2, 3));
        let got: Vec<u64> = s.hand_out(10).iter().map(|r| r.record.offset).collect();
        assert_eq!(got, vec![2, 3, 4]);
        assert_eq!(s.track("t", 0).and_then(|t| t.committed), Some(2));
        assert_eq!(offsets(&s.processed_items()), vec![(0, 5, 2)]);
    }

    #[test]
    fn older_positions_commit_only_if_nobody_moved_the_offset() {
        let mut s = joined_state(1, &[0, 1, 2]);
        for p in 0..3 {
            s.apply(records(p, 3, 2));
        }
        s.hand_out(6);
        // The epoch moves (a rebalance that kept everything, or a reset).
        s.apply(assignment(2, &[0, 1, 2]));
        let items = s.processed_items();
        assert_eq!(offsets(&items), vec![(0, 5, 1), (1, 5, 1), (2, 5, 1)]);
        // Partition 0: committed offset unchanged (3, where we started).
        // Partition 1: moved by a reset to 0. Partition 2: nothing committed.
        let server = Committed::from([(("t".to_string(), 0), 3), (("t".to_string(), 1), 0)]);
        let kept = s.still_valid(items, &server);
        assert_eq!(offsets(&kept), vec![(0, 5, 1), (2, 5, 1)]);
        assert_eq!(s.track("t", 1).and_then(|t| t.processed), None);
    }

    #[test]
    fn current_epoch_positions_are_kept_and_unassigned_ones_dropped() {
        let mut s = joined_state(3, &[0]);
        let item = |partition| Item {
            topic: "t".into(),
            partition,
            offset: 1,
            metadata: String::new(),
            epoch: 3,
        };
        let server = Committed::from([(("t".to_string(), 0), 9)]);
        let kept = s.still_valid(vec![item(0), item(1)], &server);
        assert_eq!(offsets(&kept), vec![(0, 1, 3)]);
    }
}
