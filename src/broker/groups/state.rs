//! One group's state machine: pure, with time passed in.
//!
//! Membership follows the heartbeat model of Kafka's newest group protocol:
//! members join with an empty id, heartbeat with the partitions they still
//! own, and get their assignment in the reply. The coordinator computes a
//! *target* per member with the [`assignor`](super::assignor), then hands
//! each member only the part of its target that no other member still holds,
//! so a partition never has two live owners: a moved partition reaches its
//! new owner only after the old one said it released it (or was expelled).
//!
//! A member's epoch goes up whenever what it is told to own changes, and on
//! every `ResetOffsets`. Commits must carry the current epoch.

use std::collections::{BTreeMap, BTreeSet};

use super::assignor::{assign, MemberSpec, TopicPartition};

/// How a member talks to the coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberKind {
    /// An external client sending `Heartbeat`s; expelled after its session timeout.
    Heartbeat,
    /// A `Consume` stream inside the broker; a member while the stream is open.
    Stream,
}

/// One live member.
#[derive(Debug, Clone)]
pub struct Member {
    /// Broker-assigned id.
    pub id: String,
    /// Current epoch.
    pub epoch: i32,
    /// Subscribed topics.
    pub topics: BTreeSet<String>,
    /// Session timeout (ms) for heartbeat members.
    pub session_timeout_ms: u64,
    /// Monotonic time (ms) of the last heartbeat.
    pub last_seen_ms: u64,
    /// The assignment last sent to the member.
    pub sent: BTreeSet<TopicPartition>,
    /// What the member last reported it owns.
    pub owned: BTreeSet<TopicPartition>,
    /// What the assignor wants it to own.
    pub target: BTreeSet<TopicPartition>,
    /// Heartbeat client or internal stream.
    pub kind: MemberKind,
}

/// A committed position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// Next offset to read.
    pub offset: u64,
    /// Application text stored with it.
    pub metadata: String,
    /// Wall-clock time of the commit, ms since the epoch.
    pub commit_time_ms: i64,
}

/// Why a group operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    /// The member id is not (or no longer) in the group.
    #[error("member '{member}' is not in group '{group}' (expired, left, or never joined): join again with an empty member id")]
    UnknownMember {
        /// Group.
        group: String,
        /// Member id given.
        member: String,
    },
    /// The epoch is not the member's current one.
    #[error("stale member epoch {given} for member '{member}' of group '{group}': the current epoch is {current} (the assignment changed or offsets were reset); heartbeat to learn it")]
    StaleEpoch {
        /// Group.
        group: String,
        /// Member.
        member: String,
        /// Epoch given.
        given: i32,
        /// Current epoch.
        current: i32,
    },
    /// A member committed a partition it neither is assigned nor still
    /// holds (e.g. one it lost when it was expelled and joined again).
    #[error("member '{member}' of group '{group}' does not own {topic}/{partition}: only a partition's owner commits it")]
    NotOwner {
        /// Group.
        group: String,
        /// Member.
        member: String,
        /// Topic of the partition.
        topic: String,
        /// The partition.
        partition: u32,
    },
    /// A commit without a member id while the group has live members.
    #[error("group '{group}' has {members} live member(s): commits must come from a member with its id and epoch")]
    NotStandalone {
        /// Group.
        group: String,
        /// Live member count.
        members: usize,
    },
}

/// A group: members and committed offsets.
#[derive(Debug, Clone)]
pub struct GroupState {
    /// Group name.
    pub name: String,
    /// Live members by id.
    pub members: BTreeMap<String, Member>,
    /// Committed offsets.
    pub committed: BTreeMap<TopicPartition, Committed>,
    /// Bumped by every reset, so `Consume` streams know to reposition.
    pub reset_generation: u64,
    /// Wall-clock ms of the last commit or membership change (for expiry).
    pub last_activity_ms: i64,
}

impl GroupState {
    /// An empty group.
    pub fn new(name: &str, now_wall_ms: i64) -> GroupState {
        GroupState {
            name: name.to_string(),
            members: BTreeMap::new(),
            committed: BTreeMap::new(),
            reset_generation: 0,
            last_activity_ms: now_wall_ms,
        }
    }

    /// "Empty", "Reconciling" (someone still waits for or holds partitions
    /// that move) or "Stable".
    pub fn state_name(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self
            .members
            .values()
            .all(|m| m.sent == m.target && m.owned.is_subset(&m.target))
        {
            "Stable"
        } else {
            "Reconciling"
        }
    }

    /// Adds a member (epoch 0 until its first assignment).
    pub fn join(
        &mut self,
        id: String,
        topics: BTreeSet<String>,
        session_timeout_ms: u64,
        now_ms: u64,
        kind: MemberKind,
    ) {
        self.members.insert(
            id.clone(),
            Member {
                id,
                epoch: 0,
                topics,
                session_timeout_ms,
                last_seen_ms: now_ms,
                sent: BTreeSet::new(),
                owned: BTreeSet::new(),
                target: BTreeSet::new(),
                kind,
            },
        );
    }

    /// Removes a member. Returns whether it was there.
    pub fn leave(&mut self, id: &str) -> bool {
        self.members.remove(id).is_some()
    }

    /// Removes heartbeat members whose session timed out; returns their ids.
    pub fn expire(&mut self, now_ms: u64) -> Vec<String> {
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                m.kind == MemberKind::Heartbeat
                    && now_ms.saturating_sub(m.last_seen_ms) > m.session_timeout_ms
            })
            .map(|m| m.id.clone())
            .collect();
        for id in &expired {
            self.members.remove(id);
        }
        expired
    }

    /// Records a heartbeat: the member's subscription and what it owns.
    /// Returns whether the subscription changed (targets must be recomputed).
    pub fn heartbeat(
        &mut self,
        id: &str,
        epoch: i32,
        topics: Option<BTreeSet<String>>,
        owned: BTreeSet<TopicPartition>,
        now_ms: u64,
    ) -> Result<bool, GroupError> {
        let group = self.name.clone();
        let m = self
            .members
            .get_mut(id)
            .ok_or_else(|| GroupError::UnknownMember {
                group: group.clone(),
                member: id.to_string(),
            })?;
        if epoch > m.epoch {
            return Err(GroupError::StaleEpoch {
                group,
                member: id.to_string(),
                given: epoch,
                current: m.epoch,
            });
        }
        m.last_seen_ms = now_ms;
        m.owned = owned;
        let changed = match topics {
            Some(t) if t != m.topics => {
                m.topics = t;
                true
            }
            _ => false,
        };
        Ok(changed)
    }

    /// Records what an internal stream member holds now.
    pub fn set_owned(&mut self, id: &str, owned: BTreeSet<TopicPartition>) {
        if let Some(m) = self.members.get_mut(id) {
            m.owned = owned;
        }
    }

    /// Recomputes every member's target from the topics' partition counts.
    pub fn recompute_targets(&mut self, partitions: &BTreeMap<String, u32>) {
        let specs: BTreeMap<String, MemberSpec> = self
            .members
            .iter()
            .map(|(id, m)| {
                (
                    id.clone(),
                    MemberSpec {
                        topics: m.topics.clone(),
                        current: m.target.clone(),
                    },
                )
            })
            .collect();
        let targets = assign(&specs, partitions);
        for (id, target) in targets {
            if let Some(m) = self.members.get_mut(&id) {
                m.target = target;
            }
        }
    }

    /// What member `id` may own now: its target minus whatever another live
    /// member still holds (was told to own, or says it owns). Bumps the
    /// member's epoch when that changes. Returns (epoch, assignment).
    pub fn reconcile(&mut self, id: &str) -> Option<(i32, BTreeSet<TopicPartition>)> {
        let target = self.members.get(id)?.target.clone();
        let held_elsewhere: BTreeSet<&TopicPartition> = self
            .members
            .values()
            .filter(|m| m.id != id)
            .flat_map(|m| m.sent.iter().chain(m.owned.iter()))
            .collect();
        let allowed: BTreeSet<TopicPartition> = target
            .into_iter()
            .filter(|tp| !held_elsewhere.contains(tp))
            .collect();
        let m = self.members.get_mut(id)?;
        if allowed != m.sent || m.epoch == 0 {
            // A partition taken away stays held by this member until it
            // reports (heartbeat `owned`, or a stream's `set_owned`) that it
            // stopped reading it: a member that has not heard of the change
            // yet may still be reading, and the next owner must wait.
            let revoked: Vec<TopicPartition> = m.sent.difference(&allowed).cloned().collect();
            m.owned.extend(revoked);
            m.sent = allowed;
            m.epoch += 1;
        }
        Some((m.epoch, m.sent.clone()))
    }

    /// Reconciles every member; returns the ids whose assignment or epoch changed.
    pub fn reconcile_all(&mut self) -> Vec<String> {
        let ids: Vec<String> = self.members.keys().cloned().collect();
        let mut changed = Vec::new();
        for id in ids {
            let before = self.members[&id].epoch;
            if let Some((after, _)) = self.reconcile(&id) {
                if after != before {
                    changed.push(id);
                }
            }
        }
        changed
    }

    /// Checks that a commit of `partitions` may be stored: from the member
    /// at its current epoch, of partitions it is assigned or still holds
    /// (one being released), or (empty member id) from a standalone
    /// consumer while the group has no live members.
    pub fn check_commit<'a>(
        &self,
        member: &str,
        epoch: i32,
        partitions: impl IntoIterator<Item = (&'a str, u32)>,
    ) -> Result<(), GroupError> {
        if member.is_empty() {
            if self.members.is_empty() {
                return Ok(());
            }
            return Err(GroupError::NotStandalone {
                group: self.name.clone(),
                members: self.members.len(),
            });
        }
        let m = self
            .members
            .get(member)
            .ok_or_else(|| GroupError::UnknownMember {
                group: self.name.clone(),
                member: member.to_string(),
            })?;
        if m.epoch != epoch {
            return Err(GroupError::StaleEpoch {
                group: self.name.clone(),
                member: member.to_string(),
                given: epoch,
                current: m.epoch,
            });
        }
        for (topic, partition) in partitions {
            let tp = (topic.to_string(), partition);
            if !m.sent.contains(&tp) && !m.owned.contains(&tp) {
                return Err(GroupError::NotOwner {
                    group: self.name.clone(),
                    member: member.to_string(),
                    topic: tp.0,
                    partition,
                });
            }
        }
        Ok(())
    }

    /// Stores a committed offset.
    pub fn commit(&mut self, tp: TopicPartition, committed: Committed) {
        self.last_activity_ms = self.last_activity_ms.max(committed.commit_time_ms);
        self.committed.insert(tp, committed);
    }

    /// Applies a reset: new committed offsets, and every member's epoch
    /// bumped so commits from before the reset are fenced.
    pub fn reset(&mut self, offsets: Vec<(TopicPartition, Committed)>) {
        for (tp, c) in offsets {
            self.commit(tp, c);
        }
        for m in self.members.values_mut() {
            m.epoch += 1;
        }
        self.reset_generation += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics(t: &[&str]) -> BTreeSet<String> {
        t.iter().map(|s| s.to_string()).collect()
    }

    fn tps(v: &[u32]) -> BTreeSet<TopicPartition> {
        v.iter().map(|p| ("t".to_string(), *p)).collect()
    }

    #[test]
    fn a_moved_partition_waits_for_its_release() {
        let parts = BTreeMap::from([("t".to_string(), 4)]);
        let mut g = GroupState::new("g", 0);
        g.join("a".into(), topics(&["t"]), 10_000, 0, MemberKind::Heartbeat);
        g.recompute_targets(&parts);
        let (e1, a) = g.reconcile("a").unwrap();
        assert_eq!(a, tps(&[0, 1, 2, 3]));
        g.heartbeat("a", e1, None, a.clone(), 1).unwrap();
        // b joins: two partitions move from a to b.
        g.join("b".into(), topics(&["t"]), 10_000, 1, MemberKind::Heartbeat);
        g.recompute_targets(&parts);
        let (_, b_first) = g.reconcile("b").unwrap();
        assert!(
            b_first.is_empty(),
            "a still holds everything: b gets nothing yet"
        );
        let (e2, a_now) = g.reconcile("a").unwrap();
        assert_eq!(a_now.len(), 2);
        assert!(e2 > e1);
        // a still reports owning all four until it releases.
        g.heartbeat("a", e2, None, tps(&[0, 1, 2, 3]), 2).unwrap();
        assert!(g.reconcile("b").unwrap().1.is_empty());
        g.heartbeat("a", e2, None, a_now.clone(), 3).unwrap();
        let (_, b_now) = g.reconcile("b").unwrap();
        assert_eq!(b_now.len(), 2);
        assert!(b_now.is_disjoint(&a_now));
        assert_eq!(g.state_name(), "Stable");
    }

    #[test]
    fn a_revoked_partition_waits_until_its_old_owner_reports_it_released() {
        let parts = BTreeMap::from([("t".to_string(), 2)]);
        let mut g = GroupState::new("g", 0);
        g.join("a".into(), topics(&["t"]), 1000, 0, MemberKind::Heartbeat);
        g.recompute_targets(&parts);
        let (_, a_parts) = g.reconcile("a").unwrap();
        assert_eq!(a_parts.len(), 2);
        // "a" has not heartbeated since it was told: it reported owning nothing.
        g.join("b".into(), topics(&["t"]), 1000, 0, MemberKind::Heartbeat);
        g.recompute_targets(&parts);
        g.reconcile_all();
        let (_, b_parts) = g.reconcile("b").unwrap();
        assert!(
            b_parts.is_empty(),
            "b got {b_parts:?} while a may still read it"
        );
        // "a" learns its new assignment and reports what it still reads.
        let (epoch, a_now) = g.reconcile("a").unwrap();
        g.heartbeat("a", epoch, None, a_now.clone(), 1).unwrap();
        g.reconcile_all();
        let (_, b_parts) = g.reconcile("b").unwrap();
        assert_eq!(b_parts.len(), 1);
        assert!(a_now.is_disjoint(&b_parts));
    }

    #[test]
    fn commits_are_fenced_by_epoch_and_reset() {
        let parts = BTreeMap::from([("t".to_string(), 1)]);
        let mut g = GroupState::new("g", 0);
        let c = Committed {
            offset: 5,
            metadata: String::new(),
            commit_time_ms: 1,
        };
        assert!(
            g.check_commit("", -1, []).is_ok(),
            "standalone commits on an empty group"
        );
        g.join("a".into(), topics(&["t"]), 100, 0, MemberKind::Heartbeat);
        g.recompute_targets(&parts);
        let (e, _) = g.reconcile("a").unwrap();
        assert!(g.check_commit("a", e, []).is_ok());
        assert!(matches!(
            g.check_commit("", -1, []),
            Err(GroupError::NotStandalone { .. })
        ));
        assert!(matches!(
            g.check_commit("zz", e, []),
            Err(GroupError::UnknownMember { .. })
        ));
        g.reset(vec![(("t".into(), 0), c)]);
        assert!(matches!(
            g.check_commit("a", e, []),
            Err(GroupError::StaleEpoch { .. })
        ));
        assert!(g.check_commit("a", e + 1, []).is_ok());
        // Expiry after the session timeout.
        assert!(g.expire(50).is_empty());
        assert_eq!(g.expire(101), vec!["a".to_string()]);
    }

    #[test]
    fn members_commit_only_partitions_they_are_assigned_or_still_hold() {
        let parts = BTreeMap::from([("t".to_string(), 2)]);
        let mut g = GroupState::new("g", 0);
        g.join("a".into(), topics(&["t"]), 1000, 0, MemberKind::Heartbeat);
        g.recompute_targets(&parts);
        let (e, owned) = g.reconcile("a").unwrap();
        g.heartbeat("a", e, None, owned, 1).unwrap();
        assert!(g.check_commit("a", e, [("t", 0), ("t", 1)]).is_ok());
        assert!(matches!(
            g.check_commit("a", e, [("t", 0), ("t", 2)]),
            Err(GroupError::NotOwner { partition: 2, .. })
        ));
        // "b" joins: one partition moves, but "a" holds it until it says it
        // released it, and may commit it meanwhile; "b" may not yet.
        g.join("b".into(), topics(&["t"]), 1000, 1, MemberKind::Heartbeat);
        g.recompute_targets(&parts);
        g.reconcile_all();
        let (ea, a_now) = g.reconcile("a").unwrap();
        let (eb, b_now) = g.reconcile("b").unwrap();
        assert_eq!(a_now.len(), 1);
        assert!(b_now.is_empty());
        let moved: Vec<_> = [("t", 0), ("t", 1)]
            .into_iter()
            .filter(|(t, p)| !a_now.contains(&(t.to_string(), *p)))
            .collect();
        assert!(g.check_commit("a", ea, moved.clone()).is_ok());
        assert!(matches!(
            g.check_commit("b", eb, moved.clone()),
            Err(GroupError::NotOwner { .. })
        ));
        // Once "a" reported the release, only "b" (once told) commits it.
        g.heartbeat("a", ea, None, a_now, 2).unwrap();
        g.reconcile_all();
        let (eb, b_now) = g.reconcile("b").unwrap();
        assert_eq!(b_now.len(), 1);
        assert!(matches!(
            g.check_commit("a", ea, moved.clone()),
            Err(GroupError::NotOwner { .. })
        ));
        assert!(g.check_commit("b", eb, moved).is_ok());
    }
}
