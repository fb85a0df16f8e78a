//! Group membership over the `Groups.Heartbeat` protocol, for a
//! [`Consumer`](super::Consumer) that joined a group with
//! [`Consumer::join_group`](super::Consumer::join_group).
//!
//! The protocol is the broker's incremental one: a member joins with an empty
//! id, heartbeats every `heartbeat_interval_ms` reporting the partitions it
//! still owns, and receives the partitions it should own now. A partition
//! moving to another member is first taken away from its old owner (which
//! commits its position and stops reading it, then reports it released), and
//! only then handed to the new one, so two members never read the same
//! partition at once. Every heartbeat and commit carries the member epoch;
//! the broker refuses a commit of an older epoch, so a member that fell out
//! of the group cannot move offsets.
//!
//! This module is the bookkeeping: what to heartbeat, and what changed.
//! The consumer applies the changes (seek to the committed offsets of new
//! partitions, commit and drop revoked ones).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::{AutoOffsetReset, Client, ClientError, TopicPartitions};
use crate::proto::v1::HeartbeatRequest;

/// A partition as `(topic, partition)`.
pub type TopicPartition = (String, u32);

/// How a [`Consumer`](super::Consumer) behaves as a group member.
#[derive(Debug, Clone)]
pub struct MemberConfig {
    /// The broker removes the member when it hears nothing for this long;
    /// 0 = the broker's default (10 s unless configured).
    pub session_timeout: Duration,
    /// Where partitions without a committed offset start.
    pub auto_offset_reset: AutoOffsetReset,
    /// Commit the positions of the records handed out every this often,
    /// from [`Consumer::poll`](super::Consumer::poll); `None` = only
    /// explicit commits. Default: 5 s.
    pub auto_commit_interval: Option<Duration>,
}

impl Default for MemberConfig {
    fn default() -> Self {
        MemberConfig {
            session_timeout: Duration::ZERO,
            auto_offset_reset: AutoOffsetReset::Latest,
            auto_commit_interval: Some(Duration::from_secs(5)),
        }
    }
}

/// What a heartbeat changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AssignmentChange {
    /// Partitions to start reading.
    pub added: Vec<TopicPartition>,
    /// Partitions to commit and stop reading.
    pub revoked: Vec<TopicPartition>,
    /// Partitions to stop reading *without* committing: the member was
    /// expelled (its session expired or it was fenced), so they may belong
    /// to another member by now, and the old positions must not be stored.
    pub lost: Vec<TopicPartition>,
}

/// One group membership.
#[derive(Debug)]
pub struct Membership {
    /// The group.
    pub group: String,
    /// Subscribed topics.
    pub topics: Vec<String>,
    /// The id the broker gave.
    pub member_id: String,
    /// The current member epoch.
    pub epoch: i32,
    /// The member's settings.
    pub config: MemberConfig,
    /// Partitions the member owns (reads) now.
    pub owned: BTreeSet<TopicPartition>,
    interval: Duration,
    next_heartbeat: Instant,
    /// When positions were last committed.
    pub last_commit: Instant,
}

impl Membership {
    /// Joins `group` (one heartbeat with an empty member id).
    ///
    /// # Errors
    /// The broker's answer: `INVALID_ARGUMENT` for a bad group name or
    /// session timeout, `RESOURCE_EXHAUSTED` for group limits, and any
    /// connection error.
    pub async fn join(
        client: &Client,
        group: &str,
        topics: Vec<String>,
        config: MemberConfig,
    ) -> Result<(Membership, AssignmentChange), ClientError> {
        let mut m = Membership {
            group: group.to_string(),
            topics,
            member_id: String::new(),
            epoch: 0,
            config,
            owned: BTreeSet::new(),
            interval: Duration::from_secs(1),
            next_heartbeat: Instant::now(),
            last_commit: Instant::now(),
        };
        let change = m.heartbeat(client).await?;
        Ok((m, change))
    }

    /// When the next heartbeat is due.
    pub fn next_heartbeat(&self) -> Instant {
        self.next_heartbeat
    }

    /// Sends a heartbeat now and returns what changed in the assignment. A
    /// member the broker no longer knows (its session expired) joins again
    /// and gives up everything it owned first, uncommitted
    /// ([`AssignmentChange::lost`]).
    ///
    /// # Errors
    /// The broker's status or a connection error; the membership is
    /// unchanged and the next heartbeat retries.
    pub async fn heartbeat(&mut self, client: &Client) -> Result<AssignmentChange, ClientError> {
        let request = HeartbeatRequest {
            group: self.group.clone(),
            member_id: self.member_id.clone(),
            member_epoch: self.epoch,
            topics: self.topics.clone(),
            session_timeout_ms: self.config.session_timeout.as_millis() as u32,
            owned: to_topic_partitions(&self.owned),
        };
        let response = match client.groups.clone().heartbeat(request).await {
            Ok(r) => r.into_inner(),
            Err(status)
                if status.code() == tonic::Code::FailedPrecondition
                    && !self.member_id.is_empty() =>
            {
                // Fenced or expired: everything owned is lost; join again.
                tracing::warn!(group = %self.group, member = %self.member_id, reason = %status.message(), "rejoining the group");
                let lost: Vec<_> = std::mem::take(&mut self.owned).into_iter().collect();
                self.member_id.clear();
                self.epoch = 0;
                // If joining again fails, nothing is owned now and the next
                // heartbeat tries again.
                let mut change = Box::pin(self.heartbeat(client)).await?;
                change.lost = lost;
                return Ok(change);
            }
            Err(status) => {
                self.next_heartbeat = Instant::now() + self.interval / 4;
                return Err(status.into());
            }
        };
        self.member_id = response.member_id;
        self.epoch = response.member_epoch;
        self.interval = Duration::from_millis(u64::from(response.heartbeat_interval_ms.max(10)));
        self.next_heartbeat = Instant::now() + self.interval;
        let target: BTreeSet<TopicPartition> = response
            .assignment
            .into_iter()
            .flat_map(|tp| {
                let topic = tp.topic;
                tp.partitions.into_iter().map(move |p| (topic.clone(), p))
            })
            .collect();
        let change = AssignmentChange {
            added: target.difference(&self.owned).cloned().collect(),
            revoked: self.owned.difference(&target).cloned().collect(),
            lost: Vec::new(),
        };
        self.owned = target;
        Ok(change)
    }

    /// Leaves the group (a heartbeat with epoch -1).
    ///
    /// # Errors
    /// The broker's status or a connection error.
    pub async fn leave(&mut self, client: &Client) -> Result<(), ClientError> {
        if self.member_id.is_empty() {
            return Ok(());
        }
        let request = HeartbeatRequest {
            group: self.group.clone(),
            member_id: self.member_id.clone(),
            member_epoch: -1,
            ..Default::default()
        };
        client.groups.clone().heartbeat(request).await?;
        self.owned.clear();
        Ok(())
    }
}

fn to_topic_partitions(owned: &BTreeSet<TopicPartition>) -> Vec<TopicPartitions> {
    let mut out: Vec<TopicPartitions> = Vec::new();
    for (topic, partition) in owned {
        match out.last_mut() {
            Some(tp) if tp.topic == *topic => tp.partitions.push(*partition),
            _ => out.push(TopicPartitions {
                topic: topic.clone(),
                partitions: vec![*partition],
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_partitions_are_grouped_by_topic() {
        let owned: BTreeSet<TopicPartition> = [("a".into(), 1), ("a".into(), 0), ("b".into(), 2)]
            .into_iter()
            .collect();
        let tps = to_topic_partitions(&owned);
        assert_eq!(tps.len(), 2);
        assert_eq!(
            (tps[0].topic.as_str(), tps[0].partitions.clone()),
            ("a", vec![0, 1])
        );
        assert_eq!(
            (tps[1].topic.as_str(), tps[1].partitions.clone()),
            ("b", vec![2])
        );
    }
}
