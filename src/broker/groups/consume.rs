//! `Consume`: the one-call group consumer. The stream is a group member for
//! as long as it is open. It reads its assigned partitions from the
//! committed offsets (or the reset policy), follows rebalances and resets by
//! itself, and leaves the group the moment the client goes away.
//!
//! Partitions are released as soon as the stream stops reading them (it
//! lives inside the broker, so no heartbeat round-trip is needed), which is
//! what lets a partition move to its new owner at once after a clean leave.
//!
//! A client that stops reading cannot hold its partitions: a send waiting
//! for the client gives way to a rebalance or reset (the unsent event is
//! dropped and its records read again later; a position only moves past
//! records whose event was handed on), and a client that accepts nothing
//! for `groups.stream_stall_timeout_ms` while events wait is ended with
//! `FAILED_PRECONDITION`, and its member leaves the group.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::WatchStream;
use tokio_stream::{StreamExt, StreamMap};

use super::assignor::TopicPartition;
use super::by_topic;
use super::state::MemberKind;
use crate::broker::error::{BrokerError, Result};
use crate::broker::fetch::{read, to_wire};
use crate::broker::Broker;
use crate::storage::StorageError;
use crate::wire::ConsumeEventWire;

/// Where a partition without a committed offset starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoReset {
    /// The log start.
    Earliest,
    /// The high watermark.
    Latest,
}

/// Events a `Consume` stream can buffer before it waits for the client.
const CONSUME_BUFFER: usize = 4;

/// One running stream member.
struct StreamMember {
    broker: Arc<Broker>,
    group: String,
    member_id: String,
    reset: AutoReset,
    tx: mpsc::Sender<Result<ConsumeEventWire>>,
    wake: watch::Receiver<u64>,
    /// Next offset to read, per owned partition.
    positions: BTreeMap<TopicPartition, u64>,
    epoch: i32,
    reset_generation: u64,
    /// A wake-up was taken from `wake` and not acted on yet.
    woken: bool,
}

/// What became of an event the stream tried to send.
enum Delivery {
    /// The client's buffer took it.
    Taken,
    /// A wake-up (rebalance or reset) came first; the event was dropped.
    Woken,
    /// The client went away or the broker is stopping.
    Gone,
}

impl Broker {
    /// Starts a `Consume` stream for `group` over `topics`.
    pub fn consume(
        self: &Arc<Self>,
        group: &str,
        topics: Vec<String>,
        reset: AutoReset,
    ) -> Result<mpsc::Receiver<Result<ConsumeEventWire>>> {
        let topics: BTreeSet<String> = topics.into_iter().collect();
        let timeout = u64::from(self.config.groups.session_timeout_ms);
        let member_id = self.join_group(group, topics, timeout, MemberKind::Stream)?;
        let (wake_tx, wake) = watch::channel(0u64);
        self.coordinator
            .lock()
            .streams
            .insert(member_id.clone(), wake_tx);
        let (tx, rx) = mpsc::channel(CONSUME_BUFFER);
        let mut member = StreamMember {
            broker: self.clone(),
            group: group.to_string(),
            member_id,
            reset,
            tx,
            wake,
            positions: BTreeMap::new(),
            epoch: 0,
            reset_generation: 0,
            woken: true,
        };
        tokio::spawn(async move {
            let outcome = member.run().await;
            // Leave at once so the partitions move to the other members.
            let _ = member.broker.leave_stream(&member.group, &member.member_id);
            if let Err(e) = outcome {
                // The client may be the one not reading: do not wait for it
                // longer than for any other event.
                let stall = u64::from(member.broker.config.groups.stream_stall_timeout_ms);
                let _ = tokio::time::timeout(Duration::from_millis(stall), member.tx.send(Err(e)))
                    .await;
            }
        });
        Ok(rx)
    }
}

impl StreamMember {
    async fn run(&mut self) -> Result<()> {
        let (epoch, _) = self.current_assignment()?;
        let joined = ConsumeEventWire::joined(self.member_id.clone(), epoch);
        // The client needs this one whatever happens meanwhile; a wake-up
        // is acted on by the first refresh below.
        loop {
            match self.send(joined.clone()).await? {
                Delivery::Taken => break,
                Delivery::Woken => {}
                Delivery::Gone => return Ok(()),
            }
        }
        let mut shutdown = self.broker.shutdown_signal();
        let mut watchers: StreamMap<TopicPartition, WatchStream<u64>> = StreamMap::new();
        let mut rotate = 0usize;
        loop {
            if self.broker.is_shutting_down() {
                return Ok(());
            }
            // `changed()` marks a wake-up as seen, hence `woken`.
            if self.woken || self.wake.has_changed().unwrap_or(false) {
                self.woken = false;
                self.wake.borrow_and_update();
                if !self.refresh(&mut watchers).await? {
                    return Ok(());
                }
                // A wake-up during the refresh (its assignment event unsent)
                // means another refresh before any records go out.
                continue;
            }
            // One round over the owned partitions, starting at a rotating
            // point so no partition starves the others.
            let owned: Vec<TopicPartition> = self.positions.keys().cloned().collect();
            let mut sent_any = false;
            for i in 0..owned.len() {
                if self.woken || self.wake.has_changed().unwrap_or(false) {
                    break;
                }
                let tp = &owned[(rotate + i) % owned.len()];
                match self.send_from(tp).await? {
                    Some(true) => sent_any = true,
                    Some(false) => {}
                    None => return Ok(()),
                }
            }
            rotate = rotate.wrapping_add(1);
            if sent_any || self.woken || self.wake.has_changed().unwrap_or(false) {
                continue;
            }
            tokio::select! {
                changed = self.wake.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    self.woken = true;
                }
                Some(_) = watchers.next(), if !watchers.is_empty() => {}
                _ = self.tx.closed() => return Ok(()),
                _ = shutdown.changed() => return Ok(()),
            }
        }
    }

    /// Hands `event` to the client, unless a wake-up comes first, the client
    /// goes away or the broker stops.
    ///
    /// # Errors
    /// `FAILED_PRECONDITION` when the client accepted nothing for
    /// `groups.stream_stall_timeout_ms`: the stream ends and its member
    /// leaves the group.
    async fn send(&mut self, event: ConsumeEventWire) -> Result<Delivery> {
        let stall_ms = self.broker.config.groups.stream_stall_timeout_ms;
        let mut shutdown = self.broker.shutdown_signal();
        if self.broker.is_shutting_down() {
            return Ok(Delivery::Gone);
        }
        enum Outcome {
            Sent(bool),
            Woken(bool),
            Stopping,
            Stalled,
        }
        let outcome = tokio::select! {
            biased;
            sent = self.tx.send(Ok(event)) => Outcome::Sent(sent.is_ok()),
            changed = self.wake.changed() => Outcome::Woken(changed.is_ok()),
            _ = shutdown.changed() => Outcome::Stopping,
            () = tokio::time::sleep(Duration::from_millis(u64::from(stall_ms))) => Outcome::Stalled,
        };
        match outcome {
            Outcome::Sent(true) => Ok(Delivery::Taken),
            Outcome::Woken(true) => {
                self.woken = true;
                Ok(Delivery::Woken)
            }
            Outcome::Sent(false) | Outcome::Woken(false) | Outcome::Stopping => Ok(Delivery::Gone),
            Outcome::Stalled => {
                tracing::warn!(group = %self.group, member = %self.member_id, stall_ms,
                    "ending a Consume stream whose client read nothing (groups.stream_stall_timeout_ms)");
                Err(BrokerError::FailedPrecondition(format!(
                    "the client read nothing from this Consume stream for {stall_ms} ms while events waited (groups.stream_stall_timeout_ms): the member left group '{}' and its partitions moved to the other members; open a new stream to join again",
                    self.group
                )))
            }
        }
    }

    /// The member's current epoch and allowed partitions.
    fn current_assignment(&self) -> Result<(i32, BTreeSet<TopicPartition>)> {
        let mut inner = self.broker.coordinator.lock();
        let g = inner
            .groups
            .get_mut(&self.group)
            .ok_or_else(|| BrokerError::UnknownGroup {
                group: self.group.clone(),
            })?;
        g.reconcile(&self.member_id).ok_or_else(|| {
            BrokerError::FailedPrecondition(format!(
                "member '{}' is no longer in group '{}'",
                self.member_id, self.group
            ))
        })
    }

    /// Adopts the current assignment: drops revoked partitions (and tells the
    /// coordinator so they can move), positions new ones, repositions all on
    /// a reset, and sends an `assignment` event. Returns false when the
    /// client is gone.
    async fn refresh(
        &mut self,
        watchers: &mut StreamMap<TopicPartition, WatchStream<u64>>,
    ) -> Result<bool> {
        let (epoch, allowed) = self.current_assignment()?;
        let (committed, generation) = {
            let inner = self.broker.coordinator.lock();
            let g = inner.groups.get(&self.group);
            (
                g.map(|g| g.committed.clone()).unwrap_or_default(),
                g.map_or(0, |g| g.reset_generation),
            )
        };
        let was_reset = generation != self.reset_generation;
        self.reset_generation = generation;
        self.positions.retain(|tp, _| allowed.contains(tp));
        for tp in &allowed {
            if was_reset || !self.positions.contains_key(tp) {
                match self.start_offset(tp, committed.get(tp).map(|c| c.offset)) {
                    Ok(start) => {
                        self.positions.insert(tp.clone(), start);
                    }
                    // Deleted since the assignment was computed: skipped
                    // until the rebalance that follows takes it away.
                    Err(e) if is_gone(&e) => {
                        self.positions.remove(tp);
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        // Report what we hold now: revoked partitions are free for others.
        {
            let mut inner = self.broker.coordinator.lock();
            let streams_to_wake = match inner.groups.get_mut(&self.group) {
                Some(g) => {
                    g.set_owned(&self.member_id, allowed.clone());
                    g.reconcile_all()
                }
                None => Vec::new(),
            };
            super::wake(
                &inner.streams,
                streams_to_wake.iter().filter(|id| **id != self.member_id),
            );
        }
        watchers.clear();
        for tp in &allowed {
            if let Ok(p) = self.broker.partition(&tp.0, tp.1) {
                watchers.insert(tp.clone(), WatchStream::new(p.watch_high_watermark()));
            }
        }
        if epoch != self.epoch || was_reset {
            let event = ConsumeEventWire::assignment(crate::proto::v1::Assignment {
                partitions: by_topic(&allowed)
                    .into_iter()
                    .map(|(topic, partitions)| crate::proto::v1::TopicPartitions {
                        topic,
                        partitions,
                    })
                    .collect(),
                member_epoch: epoch,
            });
            match self.send(event).await? {
                // The epoch is remembered once the client has the event; a
                // wake-up first means another refresh, which sends it again.
                Delivery::Taken => self.epoch = epoch,
                Delivery::Woken => {}
                Delivery::Gone => return Ok(false),
            }
        }
        Ok(true)
    }

    /// Where to start reading a partition: the committed offset clamped into
    /// the log, or the reset policy.
    fn start_offset(&self, tp: &TopicPartition, committed: Option<u64>) -> Result<u64> {
        let p = self.broker.partition(&tp.0, tp.1)?;
        let (start, hw) = (p.log.log_start_offset(), p.log.high_watermark());
        Ok(match committed {
            Some(o) => o.clamp(start, hw),
            None => match self.reset {
                AutoReset::Earliest => start,
                AutoReset::Latest => hw,
            },
        })
    }

    /// Sends what is available from one partition. `Some(sent_anything)`,
    /// or `None` when the client is gone.
    async fn send_from(&mut self, tp: &TopicPartition) -> Result<Option<bool>> {
        let Some(&offset) = self.positions.get(tp) else {
            return Ok(Some(false));
        };
        let partition = match self.broker.partition(&tp.0, tp.1) {
            Ok(p) => p,
            Err(e) if is_gone(&e) => {
                // Deleted: the rebalance that follows takes it away; the
                // stream goes on with its other partitions.
                self.positions.remove(tp);
                return Ok(Some(false));
            }
            Err(e) => return Err(e),
        };
        let max_bytes = u64::from(self.broker.config.limits.default_fetch_bytes);
        let result = match read(&partition, offset, max_bytes).await {
            Ok(r) => r,
            Err(BrokerError::Storage(StorageError::OffsetOutOfRange { log_start, .. }))
                if offset < log_start =>
            {
                // Retention passed us: continue from the oldest record kept.
                tracing::warn!(group = %self.group, topic = %tp.0, partition = tp.1, offset, log_start,
                    "consumer position was deleted by retention; skipping to the log start");
                self.positions.insert(tp.clone(), log_start);
                return Ok(Some(false));
            }
            Err(e) => return Err(e),
        };
        if result.batches.is_empty() {
            return Ok(Some(false));
        }
        let nexts: Vec<u64> = result
            .batches
            .iter()
            .map(|b| b.header.next_offset())
            .collect();
        let wire = to_wire(&partition, result)?;
        let mut sent_any = false;
        for (batch, next) in wire.batches.into_iter().zip(nexts) {
            let event = ConsumeEventWire::records(tp.0.clone(), tp.1, batch);
            match self.send(event).await? {
                // Only records the client's buffer took are passed.
                Delivery::Taken => {
                    self.positions.insert(tp.clone(), next);
                    sent_any = true;
                }
                Delivery::Woken => break,
                Delivery::Gone => return Ok(None),
            }
        }
        Ok(Some(sent_any))
    }
}

/// Whether `e` says the partition no longer exists (its topic was deleted).
fn is_gone(e: &BrokerError) -> bool {
    matches!(
        e,
        BrokerError::UnknownTopic { .. } | BrokerError::UnknownPartition { .. }
    )
}
