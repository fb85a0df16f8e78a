//! Consumer-group administration on [`Client`]: list, describe, delete,
//! reset, and read or store committed offsets.
//!
//! To *consume* as a group member, use [`Client::group_consumer`] (see
//! [`super::consumer`]); the calls here are for tools and for consumers that
//! manage membership themselves with `Heartbeat`.
//!
//! ```no_run
//! use strata::client::{Client, ResetTarget};
//!
//! # async fn demo() -> Result<(), strata::client::ClientError> {
//! let client = Client::connect("127.0.0.1:50051").await?;
//! for g in client.list_groups().await? {
//!     println!("{} {} {}", g.group, g.state, g.member_count);
//! }
//! let group = client.describe_group("billing").await?;
//! let behind: u64 = group.lag.iter().map(|l| l.lag).sum();
//! println!("billing is {behind} records behind");
//! // Replay everything: move the committed offsets to the log start.
//! client.reset_offsets("billing", "orders", ResetTarget::Earliest, false).await?;
//! # Ok(())
//! # }
//! ```

use super::{Client, ClientError};
use crate::proto::v1::{
    CommitOffsetsRequest, DeleteGroupRequest, DescribeGroupRequest, DescribeGroupResponse,
    FetchOffsetsRequest, GroupSummary, ListGroupsRequest, PartitionOffset, ResetOffsetsRequest,
    ResetTo, TopicPartitions,
};

/// Where [`Client::reset_offsets`] moves a group's committed offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTarget {
    /// Each partition's log start offset: replay everything stored.
    Earliest,
    /// Each partition's high watermark: skip everything stored.
    Latest,
    /// The first record appended at or after this time, in milliseconds
    /// since the Unix epoch (UTC); the high watermark if there is none.
    Timestamp(i64),
    /// This offset, clamped by the broker to each partition's
    /// `[log_start_offset, high_watermark]`.
    Offset(u64),
}

impl ResetTarget {
    /// The request's `to` and `value` fields. An offset beyond `i64::MAX`
    /// is past any log, so it is sent as `i64::MAX` (the broker clamps it to
    /// the high watermark).
    fn to_request(self) -> (ResetTo, i64) {
        match self {
            ResetTarget::Earliest => (ResetTo::Earliest, 0),
            ResetTarget::Latest => (ResetTo::Latest, 0),
            ResetTarget::Timestamp(ms) => (ResetTo::Timestamp, ms),
            ResetTarget::Offset(o) => (ResetTo::Offset, i64::try_from(o).unwrap_or(i64::MAX)),
        }
    }
}

impl Client {
    /// Lists every group on the broker, ordered by name, with its state
    /// (`Empty`, `Reconciling` or `Stable`) and number of live members.
    ///
    /// # Errors
    /// Any connection error.
    pub async fn list_groups(&self) -> Result<Vec<GroupSummary>, ClientError> {
        let response = self
            .groups
            .clone()
            .list_groups(ListGroupsRequest {})
            .await?;
        Ok(response.into_inner().groups)
    }

    /// Describes a group: state, live members with their epochs and
    /// assignments, and the lag of every partition it reads or committed
    /// (in records and in milliseconds).
    ///
    /// # Errors
    /// `NOT_FOUND` for an unknown group, and any connection error.
    pub async fn describe_group(&self, group: &str) -> Result<DescribeGroupResponse, ClientError> {
        let request = DescribeGroupRequest {
            group: group.to_string(),
        };
        let response = self.groups.clone().describe_group(request).await?;
        Ok(response.into_inner())
    }

    /// Deletes a group and its committed offsets.
    ///
    /// # Errors
    /// `NOT_FOUND` for an unknown group, `FAILED_PRECONDITION` while the
    /// group has live members, and any connection error.
    pub async fn delete_group(&self, group: &str) -> Result<(), ClientError> {
        let request = DeleteGroupRequest {
            group: group.to_string(),
        };
        self.groups.clone().delete_group(request).await?;
        Ok(())
    }

    /// Moves the committed offsets of `group` for every partition of `topic`
    /// and returns the new positions; with `dry_run`, only returns where they
    /// would go. On a live group, members get new epochs (commits from before
    /// the reset are refused) and `Consume` streams continue from the new
    /// positions by themselves.
    ///
    /// ```no_run
    /// # async fn demo(client: strata::client::Client) -> Result<(), strata::client::ClientError> {
    /// use strata::client::ResetTarget;
    /// let preview = client.reset_offsets("billing", "orders", ResetTarget::Timestamp(1_714_566_600_000), true).await?;
    /// for p in preview {
    ///     println!("{}:{} would restart at {}", p.topic, p.partition, p.offset);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// `NOT_FOUND` for an unknown topic, `INVALID_ARGUMENT` for a bad group
    /// name, and any connection error.
    pub async fn reset_offsets(
        &self,
        group: &str,
        topic: &str,
        to: ResetTarget,
        dry_run: bool,
    ) -> Result<Vec<PartitionOffset>, ClientError> {
        let (to, value) = to.to_request();
        let request = ResetOffsetsRequest {
            group: group.to_string(),
            topic: topic.to_string(),
            to: to.into(),
            value,
            dry_run,
        };
        let response = self.groups.clone().reset_offsets(request).await?;
        Ok(response.into_inner().offsets)
    }

    /// Reads the committed offsets of `group` for `partitions` (all
    /// committed partitions when empty). Partitions without a committed
    /// offset are absent from the answer; an unknown group has none.
    ///
    /// # Errors
    /// Any connection error.
    pub async fn fetch_offsets(
        &self,
        group: &str,
        partitions: Vec<TopicPartitions>,
    ) -> Result<Vec<PartitionOffset>, ClientError> {
        let request = FetchOffsetsRequest {
            group: group.to_string(),
            partitions,
        };
        let response = self.groups.clone().fetch_offsets(request).await?;
        Ok(response.into_inner().offsets)
    }

    /// Stores positions of `group` (each `offset` is the next offset to
    /// read). A member passes its id and current epoch; a standalone
    /// consumer passes an empty `member_id` (and epoch 0), which is allowed
    /// only while the group has no live members.
    ///
    /// A [`GroupConsumer`](super::GroupConsumer) does this for you with
    /// [`commit_processed`](super::GroupConsumer::commit_processed).
    ///
    /// # Errors
    /// `FAILED_PRECONDITION` for a stale epoch, an unknown member, or a
    /// standalone commit to a group with live members; `INVALID_ARGUMENT`
    /// for an offset past the high watermark; `NOT_FOUND` for an unknown
    /// partition; and any connection error.
    pub async fn commit_offsets(
        &self,
        group: &str,
        member_id: &str,
        member_epoch: i32,
        offsets: Vec<PartitionOffset>,
    ) -> Result<(), ClientError> {
        let request = CommitOffsetsRequest {
            group: group.to_string(),
            member_id: member_id.to_string(),
            member_epoch,
            offsets,
        };
        self.groups.clone().commit_offsets(request).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_targets_map_to_request_fields() {
        assert_eq!(ResetTarget::Earliest.to_request(), (ResetTo::Earliest, 0));
        assert_eq!(ResetTarget::Latest.to_request(), (ResetTo::Latest, 0));
        assert_eq!(
            ResetTarget::Timestamp(-5).to_request(),
            (ResetTo::Timestamp, -5)
        );
        assert_eq!(ResetTarget::Offset(7).to_request(), (ResetTo::Offset, 7));
        assert_eq!(
            ResetTarget::Offset(u64::MAX).to_request(),
            (ResetTo::Offset, i64::MAX)
        );
    }
}
