//! The consumer-group coordinator.
//!
//! | module       | job                                                           |
//! |--------------|---------------------------------------------------------------|
//! | [`assignor`] | pure balanced, sticky partition assignment                    |
//! | [`state`]    | one group's pure state machine (members, epochs, commits)     |
//! | [`offsets`]  | durable committed offsets: append-only log plus snapshots     |
//! | [`consume`]  | the one-call `Consume` stream, a group member while open      |
//!
//! [`Coordinator`] is the impure shell: it owns the clock, the store and
//! the wake-ups of `Consume` streams. Its lock is held for the state change
//! and the one `write(2)` of a commit, never across an await.

pub mod assignor;
pub mod consume;
pub mod offsets;
pub mod state;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use tokio::sync::watch;

use self::assignor::TopicPartition;
use self::offsets::{OffsetRecord, OffsetStore};
use self::state::{Committed, GroupError, GroupState, MemberKind};
use super::error::{BrokerError, Result};
use super::fetch::OffsetQuery;
use super::Broker;
use crate::config::GroupSettings;
use crate::storage::now_ms;

/// The reply to a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatReply {
    /// The member's id.
    pub member_id: String,
    /// Its current epoch.
    pub member_epoch: i32,
    /// When to heartbeat next, ms.
    pub heartbeat_interval_ms: u32,
    /// What it owns now, grouped by topic.
    pub assignment: BTreeMap<String, Vec<u32>>,
}

/// A member as `DescribeGroup` shows it.
#[derive(Debug, Clone)]
pub struct MemberDescription {
    /// Id.
    pub member_id: String,
    /// Epoch.
    pub member_epoch: i32,
    /// Assignment, grouped by topic.
    pub assignment: BTreeMap<String, Vec<u32>>,
}

/// Lag of a group in one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// The committed offset (the log start when nothing is committed).
    pub committed_offset: u64,
    /// The high watermark.
    pub high_watermark: u64,
    /// Records behind.
    pub lag: u64,
    /// Age of the oldest unconsumed record, ms (0 when caught up).
    pub lag_ms: u64,
}

/// `DescribeGroup`'s answer.
#[derive(Debug, Clone)]
pub struct GroupDescription {
    /// Group name.
    pub group: String,
    /// "Empty", "Reconciling" or "Stable".
    pub state: String,
    /// Live members.
    pub members: Vec<MemberDescription>,
    /// Lag per partition of every topic the group reads or committed.
    pub lag: Vec<PartitionLag>,
}

/// A position to commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommit {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Next offset to read.
    pub offset: u64,
    /// Application text.
    pub metadata: String,
}

/// Where `ResetOffsets` moves a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTarget {
    /// Log start of each partition.
    Earliest,
    /// High watermark of each partition.
    Latest,
    /// First batch appended at or after this time (ms since the epoch).
    Timestamp(i64),
    /// This offset, clamped to each partition's range.
    Offset(u64),
}

struct Inner {
    groups: BTreeMap<String, GroupState>,
    store: OffsetStore,
    /// Wake-ups of `Consume` stream members, by member id.
    streams: HashMap<String, watch::Sender<u64>>,
}

/// The coordinator of every group on this broker.
pub struct Coordinator {
    inner: Mutex<Inner>,
    /// Flushes the offsets log without the lock (see [`Coordinator::sync`]).
    offsets_sync: offsets::OffsetSync,
    /// Whether the offsets log was written since its last flush.
    offsets_dirty: AtomicBool,
    settings: GroupSettings,
    started: Instant,
    member_seq: AtomicU64,
    /// Distinguishes member ids across broker restarts.
    incarnation: u64,
    /// Tests: a compaction's disk work, once the lock is released, says
    /// so on the first channel and waits for the second.
    #[cfg(test)]
    compaction_pause: Mutex<Option<(std::sync::mpsc::Sender<()>, std::sync::mpsc::Receiver<()>)>>,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn group_error(e: GroupError) -> BrokerError {
    BrokerError::FailedPrecondition(e.to_string())
}

fn by_topic(set: &BTreeSet<TopicPartition>) -> BTreeMap<String, Vec<u32>> {
    let mut out: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for (t, p) in set {
        out.entry(t.clone()).or_default().push(*p);
    }
    out
}

impl Coordinator {
    /// Opens the store in `dir` and loads every group's committed offsets.
    pub fn open(dir: &std::path::Path, settings: GroupSettings) -> Result<Coordinator> {
        let (store, groups) = OffsetStore::open(dir, settings.offsets_compact_bytes)?;
        let offsets_sync = store.sync_handle();
        Ok(Coordinator {
            offsets_sync,
            offsets_dirty: AtomicBool::new(false),
            inner: Mutex::new(Inner {
                groups,
                store,
                streams: HashMap::new(),
            }),
            settings,
            started: Instant::now(),
            member_seq: AtomicU64::new(1),
            incarnation: now_ms() as u64,
            #[cfg(test)]
            compaction_pause: Mutex::new(None),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("coordinator lock poisoned")
    }

    /// Monotonic milliseconds since the coordinator started (session
    /// timeouts never follow wall-clock jumps).
    fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn new_member_id(&self) -> String {
        let seq = self.member_seq.fetch_add(1, Ordering::Relaxed);
        format!("m-{:x}-{seq}", self.incarnation)
    }

    /// Recomputes targets, reconciles, and wakes the stream members whose
    /// assignment changed.
    fn rebalance(inner: &mut Inner, group: &str, partitions: &BTreeMap<String, u32>) {
        let Some(g) = inner.groups.get_mut(group) else {
            return;
        };
        g.recompute_targets(partitions);
        let changed = g.reconcile_all();
        wake(&inner.streams, changed.iter());
    }

    /// Writes records to the offsets log: a change must be durable before
    /// it is applied to the state. The caller applies it and then calls
    /// [`Coordinator::compact_if_due`].
    fn persist(&self, inner: &mut Inner, records: &[OffsetRecord]) -> Result<()> {
        inner.store.append(records)?;
        self.offsets_dirty.store(true, Ordering::Release);
        Ok(())
    }

    /// Compacts the offsets log if it is due, from the state with the latest
    /// change applied (a snapshot taken before would miss that change, and
    /// the compaction retires the log that holds it). Releases `inner`: the
    /// snapshot is written to disk without the lock, so other group calls
    /// go on meanwhile, and the lock is taken again briefly to record the end.
    fn compact_if_due(&self, mut inner: std::sync::MutexGuard<'_, Inner>) {
        let Inner { groups, store, .. } = &mut *inner;
        let Some(job) = store.begin_compaction(groups) else {
            return;
        };
        drop(inner);
        #[cfg(test)]
        if let Some((started, go)) = self.compaction_pause.lock().expect("pause").take() {
            started.send(()).expect("the test waits");
            go.recv().expect("the test lets it go on");
        }
        let result = job.run();
        self.lock().store.finish_compaction(&result);
    }

    /// Flushes the offsets log (called by the background flusher and on
    /// close) if anything was written since the last flush. It does not
    /// take the coordinator's lock: group calls go on during the
    /// `fdatasync`. A write that lands during it marks the log dirty again,
    /// for the next flush.
    pub fn sync(&self) -> Result<()> {
        if !self.offsets_dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        self.offsets_sync.sync().inspect_err(|_| {
            // Not flushed: the next pass tries again.
            self.offsets_dirty.store(true, Ordering::Release);
        })
    }
}

fn wake<'a>(streams: &HashMap<String, watch::Sender<u64>>, ids: impl Iterator<Item = &'a String>) {
    for id in ids {
        if let Some(tx) = streams.get(id) {
            tx.send_modify(|v| *v += 1);
        }
    }
}

fn validate_group(group: &str) -> Result<()> {
    if group.is_empty() || group.len() > 255 || group.chars().any(|c| c.is_control()) {
        return Err(BrokerError::InvalidArgument {
            field: "group",
            reason: "group names are 1-255 characters without control characters".into(),
        });
    }
    Ok(())
}

impl Broker {
    /// Partition counts of every topic.
    pub(crate) fn partition_counts(&self) -> BTreeMap<String, u32> {
        self.topics()
            .iter()
            .map(|t| (t.name.clone(), t.partition_count()))
            .collect()
    }

    fn session_timeout(&self, asked_ms: u32) -> Result<u64> {
        let g = &self.config.groups;
        if asked_ms == 0 {
            return Ok(u64::from(g.session_timeout_ms));
        }
        if !(g.min_session_timeout_ms..=g.max_session_timeout_ms).contains(&asked_ms) {
            return Err(BrokerError::InvalidArgument {
                field: "session_timeout_ms",
                reason: format!(
                    "{asked_ms} is outside the allowed {}..={} ms (0 = default {})",
                    g.min_session_timeout_ms, g.max_session_timeout_ms, g.session_timeout_ms
                ),
            });
        }
        Ok(u64::from(asked_ms))
    }

    /// Adds a member to `group` (creating the group), returning its id.
    pub(crate) fn join_group(
        &self,
        group: &str,
        topics: BTreeSet<String>,
        session_timeout_ms: u64,
        kind: MemberKind,
    ) -> Result<String> {
        validate_group(group)?;
        if topics.is_empty() {
            return Err(BrokerError::InvalidArgument {
                field: "topics",
                reason: "a member must subscribe to at least one topic".into(),
            });
        }
        for t in &topics {
            super::topics::validate_topic_name(t)?;
        }
        let c = &self.coordinator;
        let partitions = self.partition_counts();
        let mut inner = c.lock();
        let groups_now = inner.groups.len();
        let settings = &self.config.groups;
        let g = match inner.groups.get_mut(group) {
            Some(g) => g,
            None => {
                if groups_now >= settings.max_groups as usize {
                    return Err(BrokerError::LimitExceeded {
                        what: "consumer groups on this broker (groups.max_groups)",
                        limit: u64::from(settings.max_groups),
                        requested: groups_now as u64 + 1,
                    });
                }
                inner
                    .groups
                    .entry(group.to_string())
                    .or_insert_with(|| GroupState::new(group, now_ms()))
            }
        };
        if g.members.len() >= settings.max_members_per_group as usize {
            return Err(BrokerError::LimitExceeded {
                what: "members per group (groups.max_members_per_group)",
                limit: u64::from(settings.max_members_per_group),
                requested: g.members.len() as u64 + 1,
            });
        }
        let id = c.new_member_id();
        g.join(id.clone(), topics, session_timeout_ms, c.now(), kind);
        g.last_activity_ms = now_ms();
        Coordinator::rebalance(&mut inner, group, &partitions);
        tracing::info!(group, member = %id, "member joined");
        Ok(id)
    }

    /// Handles `Heartbeat`: join (empty id, epoch 0), leave (epoch -1), or stay.
    pub fn heartbeat(
        &self,
        group: &str,
        member_id: &str,
        member_epoch: i32,
        topics: Vec<String>,
        session_timeout_ms: u32,
        owned: Vec<(String, Vec<u32>)>,
    ) -> Result<HeartbeatReply> {
        validate_group(group)?;
        let interval = self.config.groups.heartbeat_interval_ms;
        let timeout = self.session_timeout(session_timeout_ms)?;
        let member_id = if member_id.is_empty() {
            if member_epoch != 0 {
                return Err(BrokerError::InvalidArgument {
                    field: "member_epoch",
                    reason: "joining (empty member_id) needs member_epoch 0".into(),
                });
            }
            self.join_group(
                group,
                topics.iter().cloned().collect(),
                timeout,
                MemberKind::Heartbeat,
            )?
        } else if member_epoch == -1 {
            self.leave_group(group, member_id)?;
            return Ok(HeartbeatReply {
                member_id: member_id.to_string(),
                member_epoch: -1,
                heartbeat_interval_ms: interval,
                assignment: BTreeMap::new(),
            });
        } else {
            member_id.to_string()
        };
        let owned: BTreeSet<TopicPartition> = owned
            .into_iter()
            .flat_map(|(t, ps)| ps.into_iter().map(move |p| (t.clone(), p)))
            .collect();
        let partitions = self.partition_counts();
        let c = &self.coordinator;
        let mut inner = c.lock();
        let g = inner.groups.get_mut(group).ok_or_else(|| {
            BrokerError::FailedPrecondition(format!(
            "member '{member_id}' is not in group '{group}': join again with an empty member id"
        ))
        })?;
        let topics = (!topics.is_empty()).then(|| topics.into_iter().collect());
        let subscription_changed = g
            .heartbeat(&member_id, member_epoch.max(0), topics, owned, c.now())
            .map_err(group_error)?;
        if subscription_changed {
            Coordinator::rebalance(&mut inner, group, &partitions);
        } else {
            // What this member released may unblock others.
            let g = inner.groups.get_mut(group).expect("checked above");
            let changed = g.reconcile_all();
            wake(&inner.streams, changed.iter());
        }
        let g = inner.groups.get_mut(group).expect("checked above");
        let (epoch, assignment) = g.reconcile(&member_id).expect("member exists");
        Ok(HeartbeatReply {
            member_id,
            member_epoch: epoch,
            heartbeat_interval_ms: interval,
            assignment: by_topic(&assignment),
        })
    }

    /// Removes a heartbeat member at once (`LeaveGroup`, or a heartbeat
    /// with epoch -1); its partitions go to the others. A `Consume` stream's
    /// member cannot be removed this way: it leaves when its stream closes.
    pub fn leave_group(&self, group: &str, member_id: &str) -> Result<()> {
        self.remove_member(group, member_id, Some(MemberKind::Heartbeat))
    }

    /// Removes the member of a `Consume` stream that ended.
    pub(crate) fn leave_stream(&self, group: &str, member_id: &str) -> Result<()> {
        self.remove_member(group, member_id, None)
    }

    /// Removes member `member_id` of `group` if it is of `kind` (any kind
    /// with `None`), and its stream entry; nothing changes otherwise.
    fn remove_member(&self, group: &str, member_id: &str, kind: Option<MemberKind>) -> Result<()> {
        let partitions = self.partition_counts();
        let mut inner = self.coordinator.lock();
        if kind.is_none() {
            // The stream itself ended: its entry goes whatever the group says.
            inner.streams.remove(member_id);
        }
        let unknown = || {
            group_error(GroupError::UnknownMember {
                group: group.to_string(),
                member: member_id.to_string(),
            })
        };
        let g = inner.groups.get_mut(group).ok_or_else(unknown)?;
        let found = g.members.get(member_id).ok_or_else(unknown)?.kind;
        if kind.is_some_and(|k| k != found) {
            return Err(BrokerError::FailedPrecondition(format!(
                "member '{member_id}' of group '{group}' is a Consume stream: it leaves when its stream closes"
            )));
        }
        g.leave(member_id);
        g.last_activity_ms = now_ms();
        inner.streams.remove(member_id);
        tracing::info!(group, member = member_id, "member left");
        Coordinator::rebalance(&mut inner, group, &partitions);
        Ok(())
    }

    /// Stores committed offsets, fenced by member epoch.
    pub fn commit_offsets(
        &self,
        group: &str,
        member_id: &str,
        member_epoch: i32,
        offsets: Vec<OffsetCommit>,
    ) -> Result<()> {
        validate_group(group)?;
        let metadata_limit = self.config.groups.max_commit_metadata_bytes;
        // Check every partition exists and the offset is inside the log.
        for o in &offsets {
            if o.metadata.len() > metadata_limit as usize {
                return Err(BrokerError::InvalidArgument {
                    field: "offsets.metadata",
                    reason: format!(
                        "{} bytes of metadata for {}/{}, over the limit of {metadata_limit} bytes \
                         (groups.max_commit_metadata_bytes)",
                        o.metadata.len(),
                        o.topic,
                        o.partition
                    ),
                });
            }
            let p = self.partition(&o.topic, o.partition)?;
            let hw = p.log.high_watermark();
            if o.offset > hw {
                return Err(BrokerError::InvalidArgument {
                    field: "offsets.offset",
                    reason: format!(
                        "offset {} of {}/{} is past the high watermark {hw}: commit the next offset to read, at most {hw}",
                        o.offset, o.topic, o.partition
                    ),
                });
            }
        }
        let now = now_ms();
        let mut inner = self.coordinator.lock();
        let exists = inner.groups.contains_key(group);
        if !exists && !member_id.is_empty() {
            return Err(group_error(GroupError::UnknownMember {
                group: group.to_string(),
                member: member_id.to_string(),
            }));
        }
        if !exists {
            if offsets.is_empty() {
                // Nothing to store: no group is created for it.
                return Ok(());
            }
            let max_groups = self.config.groups.max_groups;
            if inner.groups.len() >= max_groups as usize {
                return Err(BrokerError::LimitExceeded {
                    what: "consumer groups on this broker (groups.max_groups)",
                    limit: u64::from(max_groups),
                    requested: inner.groups.len() as u64 + 1,
                });
            }
        }
        if let Some(g) = inner.groups.get(group) {
            let partitions = offsets.iter().map(|o| (o.topic.as_str(), o.partition));
            g.check_commit(member_id, member_epoch, partitions)
                .map_err(group_error)?;
        }
        let records: Vec<OffsetRecord> = offsets
            .into_iter()
            .map(|o| OffsetRecord::Commit {
                group: group.to_string(),
                topic: o.topic,
                partition: o.partition,
                committed: Committed {
                    offset: o.offset,
                    metadata: o.metadata,
                    commit_time_ms: now,
                },
            })
            .collect();
        self.coordinator.persist(&mut inner, &records)?;
        let g = inner
            .groups
            .entry(group.to_string())
            .or_insert_with(|| GroupState::new(group, now));
        for r in records {
            if let OffsetRecord::Commit {
                topic,
                partition,
                committed,
                ..
            } = r
            {
                g.commit((topic, partition), committed);
            }
        }
        self.coordinator.compact_if_due(inner);
        Ok(())
    }

    /// Committed offsets of a group (all of them when `partitions` is empty).
    pub fn fetch_offsets(
        &self,
        group: &str,
        partitions: Vec<(String, Vec<u32>)>,
    ) -> Result<Vec<(String, u32, Committed)>> {
        let inner = self.coordinator.lock();
        let Some(g) = inner.groups.get(group) else {
            return Ok(Vec::new());
        };
        let wanted: Option<BTreeSet<TopicPartition>> = (!partitions.is_empty()).then(|| {
            partitions
                .into_iter()
                .flat_map(|(t, ps)| ps.into_iter().map(move |p| (t.clone(), p)))
                .collect()
        });
        Ok(g.committed
            .iter()
            .filter(|(tp, _)| wanted.as_ref().is_none_or(|w| w.contains(*tp)))
            .map(|((t, p), c)| (t.clone(), *p, c.clone()))
            .collect())
    }

    /// Names, states and member counts of every group.
    pub fn list_groups(&self) -> Vec<(String, String, u32)> {
        let inner = self.coordinator.lock();
        inner
            .groups
            .values()
            .map(|g| {
                (
                    g.name.clone(),
                    g.state_name().to_string(),
                    g.members.len() as u32,
                )
            })
            .collect()
    }

    /// Deletes a group with no live members.
    pub fn delete_group(&self, group: &str) -> Result<()> {
        let mut inner = self.coordinator.lock();
        let g = inner
            .groups
            .get(group)
            .ok_or_else(|| BrokerError::UnknownGroup {
                group: group.to_string(),
            })?;
        if !g.members.is_empty() {
            return Err(BrokerError::FailedPrecondition(format!(
                "group '{group}' has {} live member(s); stop them (or let their sessions expire) before deleting it",
                g.members.len()
            )));
        }
        self.coordinator.persist(
            &mut inner,
            &[OffsetRecord::Delete {
                group: group.to_string(),
            }],
        )?;
        inner.groups.remove(group);
        self.coordinator.compact_if_due(inner);
        tracing::info!(group, "deleted group");
        Ok(())
    }

    /// Members, state and lag of a group.
    pub fn describe_group(&self, group: &str) -> Result<GroupDescription> {
        let (state, members, committed, subscribed) = {
            let inner = self.coordinator.lock();
            let g = inner
                .groups
                .get(group)
                .ok_or_else(|| BrokerError::UnknownGroup {
                    group: group.to_string(),
                })?;
            let members = g
                .members
                .values()
                .map(|m| MemberDescription {
                    member_id: m.id.clone(),
                    member_epoch: m.epoch,
                    assignment: by_topic(&m.sent),
                })
                .collect::<Vec<_>>();
            let subscribed: BTreeSet<String> = g
                .members
                .values()
                .flat_map(|m| m.topics.iter().cloned())
                .collect();
            (
                g.state_name().to_string(),
                members,
                g.committed.clone(),
                subscribed,
            )
        };
        let mut topics: BTreeSet<String> = subscribed;
        topics.extend(committed.keys().map(|(t, _)| t.clone()));
        let now = now_ms();
        let mut lag = Vec::new();
        for name in topics {
            let Ok(topic) = self.topic(&name) else {
                continue;
            };
            for p in &topic.partitions {
                let hw = p.log.high_watermark();
                let start = p.log.log_start_offset();
                let committed_offset = committed
                    .get(&(name.clone(), p.id))
                    .map_or(start, |c| c.offset)
                    .clamp(start, hw);
                let lag_ms = if committed_offset < hw {
                    p.log
                        .read(committed_offset, 1)
                        .ok()
                        .and_then(|r| r.batches.first().map(|b| b.header.meta.max_timestamp_ms))
                        .map_or(0, |ts| now.saturating_sub(ts).max(0) as u64)
                } else {
                    0
                };
                lag.push(PartitionLag {
                    topic: name.clone(),
                    partition: p.id,
                    committed_offset,
                    high_watermark: hw,
                    lag: hw - committed_offset,
                    lag_ms,
                });
            }
        }
        Ok(GroupDescription {
            group: group.to_string(),
            state,
            members,
            lag,
        })
    }

    /// Moves a group's committed offsets for `topic` (all partitions). With
    /// `dry_run`, only computes them. A live group's members get new epochs
    /// (stale commits are fenced) and `Consume` streams reposition.
    pub async fn reset_offsets(
        &self,
        group: &str,
        topic: &str,
        to: ResetTarget,
        dry_run: bool,
    ) -> Result<Vec<OffsetCommit>> {
        validate_group(group)?;
        let t = self.topic(topic)?;
        let mut positions = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let (start, hw) = (p.log.log_start_offset(), p.log.high_watermark());
            let offset = match to {
                ResetTarget::Earliest => start,
                ResetTarget::Latest => hw,
                ResetTarget::Offset(o) => o.clamp(start, hw),
                ResetTarget::Timestamp(ts) => {
                    self.list_offsets(topic, p.id, OffsetQuery::Timestamp(ts))
                        .await?
                        .0
                }
            };
            positions.push(OffsetCommit {
                topic: topic.to_string(),
                partition: p.id,
                offset,
                metadata: String::new(),
            });
        }
        if dry_run {
            return Ok(positions);
        }
        let now = now_ms();
        let records: Vec<OffsetRecord> = positions
            .iter()
            .map(|o| OffsetRecord::Commit {
                group: group.to_string(),
                topic: o.topic.clone(),
                partition: o.partition,
                committed: Committed {
                    offset: o.offset,
                    metadata: String::new(),
                    commit_time_ms: now,
                },
            })
            .collect();
        let mut inner = self.coordinator.lock();
        if !inner.groups.contains_key(group)
            && inner.groups.len() >= self.config.groups.max_groups as usize
        {
            return Err(BrokerError::LimitExceeded {
                what: "consumer groups on this broker (groups.max_groups)",
                limit: u64::from(self.config.groups.max_groups),
                requested: inner.groups.len() as u64 + 1,
            });
        }
        self.coordinator.persist(&mut inner, &records)?;
        let g = inner
            .groups
            .entry(group.to_string())
            .or_insert_with(|| GroupState::new(group, now));
        g.reset(
            records
                .into_iter()
                .filter_map(|r| match r {
                    OffsetRecord::Commit {
                        topic,
                        partition,
                        committed,
                        ..
                    } => Some(((topic, partition), committed)),
                    OffsetRecord::Delete { .. } | OffsetRecord::TopicDeleted { .. } => None,
                })
                .collect(),
        );
        let ids: Vec<String> = g.members.keys().cloned().collect();
        wake(&inner.streams, ids.iter());
        self.coordinator.compact_if_due(inner);
        tracing::info!(group, topic, ?to, "reset committed offsets");
        Ok(positions)
    }

    /// Expels members past their session timeout and deletes empty groups
    /// past the offsets retention. Called periodically.
    pub fn expire_groups(&self) {
        let partitions = self.partition_counts();
        let c = &self.coordinator;
        let now = c.now();
        let wall = now_ms();
        let retention = self.config.groups.offsets_retention_ms;
        let mut inner = c.lock();
        let names: Vec<String> = inner.groups.keys().cloned().collect();
        let mut doomed = Vec::new();
        for name in names {
            let g = inner.groups.get_mut(&name).expect("listed");
            let expired = g.expire(now);
            if !expired.is_empty() {
                tracing::info!(group = %name, members = ?expired, "expelled members after their session timeout");
                g.last_activity_ms = wall;
                Coordinator::rebalance(&mut inner, &name, &partitions);
            }
            let g = &inner.groups[&name];
            if g.members.is_empty() && wall.saturating_sub(g.last_activity_ms) > retention {
                doomed.push(name);
            }
        }
        for name in doomed {
            if c.persist(
                &mut inner,
                &[OffsetRecord::Delete {
                    group: name.clone(),
                }],
            )
            .is_ok()
            {
                inner.groups.remove(&name);
                tracing::info!(group = %name, "deleted an empty group past its offsets retention");
            }
        }
        c.compact_if_due(inner);
    }

    /// Recomputes every group's assignment after topics changed.
    /// Forgets every group's committed offsets of `topic` (deleted), durably,
    /// so that a topic created again under the name starts with none.
    ///
    /// # Errors
    /// The offsets log could not be written.
    pub(crate) fn forget_topic_offsets(&self, topic: &str) -> Result<()> {
        let mut inner = self.coordinator.lock();
        let holds = inner
            .groups
            .values()
            .any(|g| g.committed.keys().any(|(t, _)| t == topic));
        if !holds {
            return Ok(());
        }
        let record = OffsetRecord::TopicDeleted {
            topic: topic.to_string(),
        };
        self.coordinator
            .persist(&mut inner, std::slice::from_ref(&record))?;
        offsets::apply(&mut inner.groups, record);
        self.coordinator.compact_if_due(inner);
        tracing::info!(topic, "forgot the deleted topic's committed offsets");
        Ok(())
    }

    /// At start: forgets committed offsets of topics that no longer exist
    /// (a delete that stopped between removing the topic's metadata, its
    /// commit point, and forgetting its offsets). Commits are only accepted
    /// for existing partitions, so no other offsets name a missing topic.
    pub(crate) fn forget_offsets_of_missing_topics(&self) -> Result<()> {
        let existing: BTreeSet<String> = self.topics_read().keys().cloned().collect();
        let missing: BTreeSet<String> = {
            let inner = self.coordinator.lock();
            inner
                .groups
                .values()
                .flat_map(|g| g.committed.keys().map(|(t, _)| t))
                .filter(|t| !existing.contains(*t))
                .cloned()
                .collect()
        };
        for topic in missing {
            self.forget_topic_offsets(&topic)?;
        }
        Ok(())
    }

    pub(crate) fn topics_changed(&self) {
        let partitions = self.partition_counts();
        let mut inner = self.coordinator.lock();
        let names: Vec<String> = inner.groups.keys().cloned().collect();
        for name in names {
            Coordinator::rebalance(&mut inner, &name, &partitions);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::broker::{Broker, TopicOverrides};
    use crate::config::BrokerConfig;

    fn open(dir: &std::path::Path, configure: impl FnOnce(&mut BrokerConfig)) -> Arc<Broker> {
        let mut config = BrokerConfig {
            data_dir: dir.to_path_buf(),
            ..BrokerConfig::default()
        };
        configure(&mut config);
        Broker::open(config).unwrap()
    }

    /// A fresh broker in `dir` with topic `t` (1 partition).
    fn open_with_topic(
        dir: &std::path::Path,
        configure: impl FnOnce(&mut BrokerConfig),
    ) -> Arc<Broker> {
        let broker = open(dir, configure);
        broker
            .create_topic("t", 1, TopicOverrides::default())
            .unwrap();
        broker
    }

    fn commit(metadata: &str) -> OffsetCommit {
        OffsetCommit {
            topic: "t".into(),
            partition: 0,
            offset: 0,
            metadata: metadata.into(),
        }
    }

    fn committed_metadata(broker: &Broker, group: &str) -> Option<String> {
        let got = broker.fetch_offsets(group, Vec::new()).unwrap();
        got.into_iter().next().map(|(_, _, c)| c.metadata)
    }

    /// Runs `call` on a thread of its own and sends its result back, so the
    /// test can wait for it with a timeout (a failure detector for a call
    /// that must not block).
    fn on_thread<T: Send + 'static>(
        broker: &Arc<Broker>,
        call: impl FnOnce(&Broker) -> T + Send + 'static,
    ) -> (std::thread::JoinHandle<()>, std::sync::mpsc::Receiver<T>) {
        let (tx, rx) = std::sync::mpsc::channel();
        let broker = broker.clone();
        let thread = std::thread::spawn(move || {
            let _ = tx.send(call(&broker));
        });
        (thread, rx)
    }

    /// The flusher's `fdatasync` of the offsets log runs without the
    /// coordinator's lock, so a slow disk does not stall group calls (and a
    /// commit during it is flushed by the next pass).
    #[test]
    fn flushing_offsets_does_not_take_the_coordinator_lock() {
        let dir = tempfile::tempdir().unwrap();
        let broker = open_with_topic(dir.path(), |_| {});
        broker
            .commit_offsets("g", "", 0, vec![commit("m")])
            .unwrap();
        let held = broker.coordinator.lock();
        let (flusher, rx) = on_thread(&broker, |b| b.coordinator.sync());
        let flushed = rx.recv_timeout(std::time::Duration::from_secs(20));
        drop(held);
        flusher.join().unwrap();
        flushed
            .expect("the flush waited for the coordinator lock")
            .unwrap();
        assert!(!broker.coordinator.offsets_dirty.load(Ordering::Acquire));
        broker
            .commit_offsets("g", "", 0, vec![commit("n")])
            .unwrap();
        assert!(broker.coordinator.offsets_dirty.load(Ordering::Acquire));
    }

    /// The snapshot of a compaction is written without the coordinator's
    /// lock: group calls go on while it is on its way to the disk, and
    /// what they change survives a restart beside the compacted state.
    #[test]
    fn compaction_writes_its_snapshot_without_the_coordinator_lock() {
        let dir = tempfile::tempdir().unwrap();
        let broker = open_with_topic(dir.path(), |_| {});
        broker
            .commit_offsets("a", "", 0, vec![commit("a1")])
            .unwrap();
        let (started_tx, started) = std::sync::mpsc::channel();
        let (go, go_rx) = std::sync::mpsc::channel();
        *broker.coordinator.compaction_pause.lock().unwrap() = Some((started_tx, go_rx));
        broker.coordinator.lock().store.set_compact_at(1);
        let compacting = {
            let broker = broker.clone();
            std::thread::spawn(move || broker.commit_offsets("a", "", 0, vec![commit("a2")]))
        };
        started
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("the commit began a compaction");
        // The compaction is paused before its snapshot: other calls go on.
        let (other, rx) = on_thread(&broker, |b| {
            b.commit_offsets("b", "", 0, vec![commit("b1")])
        });
        let committed = rx.recv_timeout(std::time::Duration::from_secs(20));
        go.send(()).unwrap();
        other.join().unwrap();
        compacting.join().unwrap().unwrap();
        committed
            .expect("the commit waited for the compaction's disk work")
            .unwrap();
        assert!(!dir.path().join("groups/offsets.log.old").exists());
        broker.close().unwrap();
        drop(broker);
        let broker = open(dir.path(), |_| {});
        assert_eq!(committed_metadata(&broker, "a").as_deref(), Some("a2"));
        assert_eq!(committed_metadata(&broker, "b").as_deref(), Some("b1"));
    }

    /// The change that makes the offsets log due for compaction must be in
    /// the snapshot: compaction empties the log that holds it.
    #[tokio::test]
    async fn the_change_that_triggers_compaction_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let broker = open_with_topic(dir.path(), |_| {});
        broker.coordinator.lock().store.set_compact_at(2_000);
        let mut last = String::new();
        for i in 0..10 {
            last = format!("{i}-{}", "x".repeat(500));
            broker
                .commit_offsets("g", "", 0, vec![commit(&last)])
                .unwrap();
        }
        // A reset and a group deletion that each trigger compaction too.
        broker
            .commit_offsets("doomed", "", 0, vec![commit("d")])
            .unwrap();
        broker.coordinator.lock().store.set_compact_at(1);
        broker.delete_group("doomed").unwrap();
        broker.coordinator.lock().store.set_compact_at(1);
        let reset = broker
            .reset_offsets("r", "t", ResetTarget::Earliest, false)
            .await
            .unwrap();
        assert_eq!(reset.len(), 1);
        assert!(broker.coordinator.lock().store.log_is_empty());
        broker.close().unwrap();
        drop(broker);

        let broker = open(dir.path(), |_| {});
        assert_eq!(committed_metadata(&broker, "g").as_deref(), Some(&*last));
        assert_eq!(committed_metadata(&broker, "r").as_deref(), Some(""));
        let names: Vec<String> = broker
            .list_groups()
            .into_iter()
            .map(|(name, _, _)| name)
            .collect();
        assert_eq!(names, ["g", "r"], "the deleted group stays deleted");
    }

    /// The topics `group` has committed offsets of.
    fn committed_topics(broker: &Broker, group: &str) -> Vec<String> {
        broker
            .fetch_offsets(group, Vec::new())
            .unwrap()
            .into_iter()
            .map(|(topic, _, _)| topic)
            .collect()
    }

    #[test]
    fn a_deleted_topic_takes_its_committed_offsets_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let broker = open_with_topic(dir.path(), |_| {});
        broker
            .create_topic("u", 1, TopicOverrides::default())
            .unwrap();
        let at = |topic: &str| OffsetCommit {
            topic: topic.into(),
            ..commit("")
        };
        broker
            .commit_offsets("g", "", 0, vec![at("t"), at("u")])
            .unwrap();
        broker.delete_topic("t").unwrap();
        assert_eq!(committed_topics(&broker, "g"), ["u"]);
        // Created again: it starts without the old topic's offsets, also
        // after a restart (the forgetting is in the offsets log).
        broker
            .create_topic("t", 1, TopicOverrides::default())
            .unwrap();
        assert_eq!(committed_topics(&broker, "g"), ["u"]);
        broker.close().unwrap();
        drop(broker);
        let broker = open(dir.path(), |_| {});
        assert_eq!(committed_topics(&broker, "g"), ["u"]);
    }

    #[test]
    fn offsets_of_a_topic_deleted_by_an_interrupted_delete_are_forgotten_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let broker = open_with_topic(dir.path(), |_| {});
        broker.commit_offsets("g", "", 0, vec![commit("")]).unwrap();
        broker.close().unwrap();
        drop(broker);
        // The delete stopped right after its commit point.
        crate::broker::metadata::remove(dir.path(), "t").unwrap();
        let broker = open(dir.path(), |_| {});
        assert!(committed_topics(&broker, "g").is_empty());
        broker
            .create_topic("t", 1, TopicOverrides::default())
            .unwrap();
        broker.close().unwrap();
        drop(broker);
        let broker = open(dir.path(), |_| {});
        assert!(committed_topics(&broker, "g").is_empty());
    }

    #[tokio::test]
    async fn leave_group_cannot_end_a_consume_stream() {
        let dir = tempfile::tempdir().unwrap();
        let broker = open_with_topic(dir.path(), |_| {});
        let mut events = broker
            .consume("g", vec!["t".into()], consume::AutoReset::Earliest)
            .unwrap();
        let joined = events.recv().await.unwrap().unwrap();
        let id = {
            let inner = broker.coordinator.lock();
            inner.groups["g"].members.keys().next().unwrap().clone()
        };
        drop(joined);
        // Named under another group, or as a heartbeat member: refused,
        // and the stream's member and wake-up entry stay.
        let err = broker.leave_group("other", &id).unwrap_err();
        assert!(matches!(err, BrokerError::FailedPrecondition(_)), "{err}");
        let err = broker.leave_group("g", &id).unwrap_err();
        assert!(err.to_string().contains("Consume stream"), "{err}");
        {
            let inner = broker.coordinator.lock();
            assert!(inner.groups["g"].members.contains_key(&id));
            assert!(inner.streams.contains_key(&id));
        }
        // Closing the stream is what makes it leave.
        drop(events);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while broker.coordinator.lock().groups["g"]
            .members
            .contains_key(&id)
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the stream never left"
            );
            tokio::task::yield_now().await;
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert!(!broker.coordinator.lock().streams.contains_key(&id));
    }

    /// Appends one batch of `count` records to `topic`/`partition`.
    async fn produce(broker: &Broker, topic: &str, partition: u32, count: usize) {
        use prost::Message;
        let request = crate::proto::v1::ProduceRequest {
            records: vec![
                crate::proto::v1::Record {
                    value: b"v".to_vec(),
                    ..Default::default()
                };
                count
            ],
            ..Default::default()
        };
        let input = crate::broker::produce::ProduceInput {
            topic: topic.into(),
            partition: Some(partition),
            records: request.encode_to_vec().into(),
            acks: crate::broker::produce::AckLevel::Leader,
            producer_id: 0,
            producer_epoch: 0,
            base_sequence: 0,
        };
        broker.produce(input).await.unwrap();
    }

    type Events = tokio::sync::mpsc::Receiver<Result<crate::wire::ConsumeEventWire>>;

    /// The next assignment event of a stream, as (topic, partition) pairs;
    /// records events before it are skipped.
    async fn next_assignment(events: &mut Events) -> Vec<(String, u32)> {
        use crate::wire::WireEvent;
        loop {
            let event = tokio::time::timeout(std::time::Duration::from_secs(20), events.recv())
                .await
                .expect("an assignment within 20 s")
                .expect("the stream is open")
                .unwrap();
            if let Some(WireEvent::Assignment(a)) = event.event {
                return a
                    .partitions
                    .into_iter()
                    .flat_map(|tp| {
                        let topic = tp.topic;
                        tp.partitions.into_iter().map(move |p| (topic.clone(), p))
                    })
                    .collect();
            }
        }
    }

    #[tokio::test]
    async fn deleting_one_topic_does_not_end_streams_reading_others() {
        use crate::wire::WireEvent;
        let dir = tempfile::tempdir().unwrap();
        let broker = open_with_topic(dir.path(), |_| {});
        broker
            .create_topic("u", 1, TopicOverrides::default())
            .unwrap();
        let mut events = broker
            .consume(
                "g",
                vec!["t".into(), "u".into()],
                consume::AutoReset::Earliest,
            )
            .unwrap();
        assert_eq!(next_assignment(&mut events).await.len(), 2);
        broker.delete_topic("u").unwrap();
        assert_eq!(next_assignment(&mut events).await, [("t".to_string(), 0)]);
        produce(&broker, "t", 0, 3).await;
        let event = tokio::time::timeout(std::time::Duration::from_secs(20), events.recv())
            .await
            .unwrap()
            .expect("the stream is still open")
            .unwrap();
        let Some(WireEvent::Records(batch)) = event.event else {
            panic!("records of t, got {event:?}");
        };
        assert_eq!((batch.topic.as_str(), batch.partition), ("t", 0));
    }

    #[tokio::test]
    async fn a_stream_that_is_not_read_releases_partitions_and_is_ended_after_the_stall_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let broker = open(dir.path(), |c| c.groups.stream_stall_timeout_ms = 60_000);
        broker
            .create_topic("t", 2, TopicOverrides::default())
            .unwrap();
        for _ in 0..20 {
            produce(&broker, "t", 0, 1).await;
            produce(&broker, "t", 1, 1).await;
        }
        // `stalled` takes its assignment, then reads nothing more.
        let mut stalled = broker
            .consume("g", vec!["t".into()], consume::AutoReset::Earliest)
            .unwrap();
        assert_eq!(next_assignment(&mut stalled).await.len(), 2);
        // A second member still gets its half: the stalled stream gives up
        // the partition although its client takes no more events.
        let mut other = broker
            .consume("g", vec!["t".into()], consume::AutoReset::Earliest)
            .unwrap();
        let mut mine = next_assignment(&mut other).await;
        while mine.is_empty() {
            mine = next_assignment(&mut other).await;
        }
        assert_eq!(mine.len(), 1);
        drop(other);
        drop(stalled);

        // With a short stall timeout, the member of a stream nobody reads
        // leaves the group.
        let dir = tempfile::tempdir().unwrap();
        let broker = open(dir.path(), |c| c.groups.stream_stall_timeout_ms = 200);
        broker
            .create_topic("t", 1, TopicOverrides::default())
            .unwrap();
        for _ in 0..20 {
            produce(&broker, "t", 0, 1).await;
        }
        let _stalled = broker
            .consume("g", vec!["t".into()], consume::AutoReset::Earliest)
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !broker.coordinator.lock().groups["g"].members.is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the stalled member stayed"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    #[test]
    fn commit_metadata_over_the_limit_is_refused_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let broker = open_with_topic(dir.path(), |c| c.groups.max_commit_metadata_bytes = 8);
        broker
            .commit_offsets("g", "", 0, vec![commit("12345678")])
            .unwrap();
        let err = broker
            .commit_offsets("g", "", 0, vec![commit("123456789")])
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, BrokerError::InvalidArgument { .. }), "{text}");
        assert!(text.contains("groups.max_commit_metadata_bytes"), "{text}");
        assert!(text.contains("limit of 8 bytes"), "{text}");
        let err = broker
            .commit_offsets("h", "", 0, vec![commit("123456789")])
            .unwrap_err();
        assert!(matches!(err, BrokerError::InvalidArgument { .. }));
        assert_eq!(
            committed_metadata(&broker, "g").as_deref(),
            Some("12345678")
        );
        assert_eq!(broker.list_groups().len(), 1, "no group 'h' was created");
    }

    #[test]
    fn commits_create_groups_only_within_max_groups_and_never_when_empty() {
        let dir = tempfile::tempdir().unwrap();
        let broker = open_with_topic(dir.path(), |c| c.groups.max_groups = 1);
        broker.commit_offsets("empty", "", 0, Vec::new()).unwrap();
        assert!(
            broker.list_groups().is_empty(),
            "an empty commit creates nothing"
        );
        broker.commit_offsets("g", "", 0, vec![commit("")]).unwrap();
        let err = broker
            .commit_offsets("h", "", 0, vec![commit("")])
            .unwrap_err();
        assert!(err.to_string().contains("groups.max_groups"), "{err}");
        assert_eq!(broker.list_groups().len(), 1);
        // The existing group still takes commits.
        broker
            .commit_offsets("g", "", 0, vec![commit("again")])
            .unwrap();
    }
}
