//! The `strata.v1.Groups` service: the consumer-group coordinator.
//!
//! Coordinator calls touch the offsets store (one `write(2)` per commit),
//! so the mutating ones run on the blocking pool.

use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::auth::Access;
use super::observe::{record_group, record_topic};
use super::status::to_status;
use crate::auth::Action;
use crate::broker::groups::consume::AutoReset;
use crate::broker::groups::{OffsetCommit, ResetTarget};
use crate::broker::{Broker, BrokerError};
use crate::proto::server::groups_server::Groups;
use crate::proto::v1::{
    AutoOffsetReset, CommitOffsetsRequest, CommitOffsetsResponse, ConsumeRequest,
    DeleteGroupRequest, DeleteGroupResponse, DescribeGroupRequest, DescribeGroupResponse,
    FetchOffsetsRequest, FetchOffsetsResponse, GroupSummary, HeartbeatRequest, HeartbeatResponse,
    LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse, Member,
    PartitionLag, PartitionOffset, ResetOffsetsRequest, ResetOffsetsResponse, ResetTo,
    TopicPartitions,
};
use crate::wire::ConsumeEventWire;

/// Serves `Groups` on a broker.
#[derive(Debug, Clone)]
pub struct GroupsService {
    broker: Arc<Broker>,
    access: Access,
}

impl GroupsService {
    /// A service backed by `broker`.
    pub fn new(broker: Arc<Broker>) -> Self {
        GroupsService {
            broker,
            access: Access::open(),
        }
    }

    /// The same service with access control (permissions and quotas).
    pub fn with_access(mut self, access: Access) -> Self {
        self.access = access;
        self
    }

    /// Runs a blocking broker call off the async workers.
    async fn blocking<T, F>(&self, f: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&Broker) -> Result<T, BrokerError> + Send + 'static,
    {
        super::status::run_blocking(&self.broker, f).await
    }
}

fn pairs(tps: Vec<TopicPartitions>) -> Vec<(String, Vec<u32>)> {
    tps.into_iter().map(|t| (t.topic, t.partitions)).collect()
}

fn to_tps(map: std::collections::BTreeMap<String, Vec<u32>>) -> Vec<TopicPartitions> {
    map.into_iter()
        .map(|(topic, partitions)| TopicPartitions { topic, partitions })
        .collect()
}

type ConsumeStream = Pin<Box<dyn Stream<Item = Result<ConsumeEventWire, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Groups for GroupsService {
    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let caller = self.access.caller(&request)?;
        let r = request.into_inner();
        record_group(&r.group);
        caller.check(Action::Group, &r.group)?;
        caller.check_all(Action::Consume, r.topics.iter().map(String::as_str))?;
        let reply = self
            .blocking(move |b| {
                b.heartbeat(
                    &r.group,
                    &r.member_id,
                    r.member_epoch,
                    r.topics,
                    r.session_timeout_ms,
                    pairs(r.owned),
                )
            })
            .await?;
        Ok(Response::new(HeartbeatResponse {
            member_id: reply.member_id,
            member_epoch: reply.member_epoch,
            heartbeat_interval_ms: reply.heartbeat_interval_ms,
            assignment: to_tps(reply.assignment),
        }))
    }

    async fn leave_group(
        &self,
        request: Request<LeaveGroupRequest>,
    ) -> Result<Response<LeaveGroupResponse>, Status> {
        let caller = self.access.caller(&request)?;
        let r = request.into_inner();
        record_group(&r.group);
        caller.check(Action::Group, &r.group)?;
        self.blocking(move |b| b.leave_group(&r.group, &r.member_id))
            .await?;
        Ok(Response::new(LeaveGroupResponse {}))
    }

    async fn commit_offsets(
        &self,
        request: Request<CommitOffsetsRequest>,
    ) -> Result<Response<CommitOffsetsResponse>, Status> {
        let caller = self.access.caller(&request)?;
        let r = request.into_inner();
        record_group(&r.group);
        caller.check(Action::Group, &r.group)?;
        caller.check_all(Action::Consume, r.offsets.iter().map(|o| o.topic.as_str()))?;
        let offsets = r
            .offsets
            .into_iter()
            .map(|o| OffsetCommit {
                topic: o.topic,
                partition: o.partition,
                offset: o.offset,
                metadata: o.metadata,
            })
            .collect();
        self.blocking(move |b| b.commit_offsets(&r.group, &r.member_id, r.member_epoch, offsets))
            .await?;
        Ok(Response::new(CommitOffsetsResponse {}))
    }

    async fn fetch_offsets(
        &self,
        request: Request<FetchOffsetsRequest>,
    ) -> Result<Response<FetchOffsetsResponse>, Status> {
        let caller = self.access.caller(&request)?;
        let r = request.into_inner();
        record_group(&r.group);
        caller.check(Action::Group, &r.group)?;
        let offsets = self
            .broker
            .fetch_offsets(&r.group, pairs(r.partitions))
            .map_err(to_status)?
            .into_iter()
            .map(|(topic, partition, c)| PartitionOffset {
                topic,
                partition,
                offset: c.offset,
                metadata: c.metadata,
            })
            .collect();
        Ok(Response::new(FetchOffsetsResponse { offsets }))
    }

    async fn describe_group(
        &self,
        request: Request<DescribeGroupRequest>,
    ) -> Result<Response<DescribeGroupResponse>, Status> {
        let caller = self.access.caller(&request)?;
        let group = request.into_inner().group;
        record_group(&group);
        caller.check(Action::Group, &group)?;
        let d = self.blocking(move |b| b.describe_group(&group)).await?;
        Ok(Response::new(DescribeGroupResponse {
            group: d.group,
            state: d.state,
            members: d
                .members
                .into_iter()
                .map(|m| Member {
                    member_id: m.member_id,
                    member_epoch: m.member_epoch,
                    assignment: to_tps(m.assignment),
                })
                .collect(),
            lag: d
                .lag
                .into_iter()
                .map(|l| PartitionLag {
                    topic: l.topic,
                    partition: l.partition,
                    committed_offset: l.committed_offset,
                    high_watermark: l.high_watermark,
                    lag: l.lag,
                    lag_ms: l.lag_ms,
                })
                .collect(),
        }))
    }

    async fn list_groups(
        &self,
        request: Request<ListGroupsRequest>,
    ) -> Result<Response<ListGroupsResponse>, Status> {
        let caller = self.access.caller(&request)?;
        let groups = self
            .broker
            .list_groups()
            .into_iter()
            .filter(|(group, _, _)| caller.sees_group(group))
            .map(|(group, state, member_count)| GroupSummary {
                group,
                state,
                member_count,
            })
            .collect();
        Ok(Response::new(ListGroupsResponse { groups }))
    }

    async fn delete_group(
        &self,
        request: Request<DeleteGroupRequest>,
    ) -> Result<Response<DeleteGroupResponse>, Status> {
        let caller = self.access.caller(&request)?;
        let group = request.into_inner().group;
        record_group(&group);
        caller.check(Action::Group, &group)?;
        self.blocking(move |b| b.delete_group(&group)).await?;
        Ok(Response::new(DeleteGroupResponse {}))
    }

    async fn reset_offsets(
        &self,
        request: Request<ResetOffsetsRequest>,
    ) -> Result<Response<ResetOffsetsResponse>, Status> {
        let caller = self.access.caller(&request)?;
        let r = request.into_inner();
        record_group(&r.group);
        record_topic(&r.topic);
        caller.check(Action::Group, &r.group)?;
        caller.check(Action::Consume, &r.topic)?;
        let to = match ResetTo::try_from(r.to) {
            Ok(ResetTo::Earliest) => ResetTarget::Earliest,
            Ok(ResetTo::Latest) => ResetTarget::Latest,
            Ok(ResetTo::Timestamp) => ResetTarget::Timestamp(r.value),
            Ok(ResetTo::Offset) if r.value >= 0 => ResetTarget::Offset(r.value as u64),
            Ok(ResetTo::Offset) => {
                return Err(to_status(BrokerError::InvalidArgument {
                    field: "value",
                    reason: format!("offset {} is negative", r.value),
                }))
            }
            Err(_) => {
                return Err(to_status(BrokerError::InvalidArgument {
                    field: "to",
                    reason: format!("unknown value {}; allowed: EARLIEST (0), LATEST (1), TIMESTAMP (2), OFFSET (3)", r.to),
                }))
            }
        };
        let offsets = self
            .broker
            .reset_offsets(&r.group, &r.topic, to, r.dry_run)
            .await
            .map_err(to_status)?
            .into_iter()
            .map(|o| PartitionOffset {
                topic: o.topic,
                partition: o.partition,
                offset: o.offset,
                metadata: o.metadata,
            })
            .collect();
        Ok(Response::new(ResetOffsetsResponse { offsets }))
    }

    type ConsumeStream = ConsumeStream;

    async fn consume(
        &self,
        request: Request<ConsumeRequest>,
    ) -> Result<Response<ConsumeStream>, Status> {
        let caller = self.access.caller(&request)?;
        let r = request.into_inner();
        record_group(&r.group);
        caller.check(Action::Group, &r.group)?;
        caller.check_all(Action::Consume, r.topics.iter().map(String::as_str))?;
        caller.admit_fetch()?;
        let reset = match AutoOffsetReset::try_from(r.auto_offset_reset) {
            Ok(AutoOffsetReset::Earliest) => AutoReset::Earliest,
            Ok(AutoOffsetReset::Latest) => AutoReset::Latest,
            Err(_) => {
                return Err(to_status(BrokerError::InvalidArgument {
                    field: "auto_offset_reset",
                    reason: format!(
                        "unknown value {}; allowed: EARLIEST (0), LATEST (1)",
                        r.auto_offset_reset
                    ),
                }))
            }
        };
        let broker = self.broker.clone();
        let rx = tokio::task::spawn_blocking(move || broker.consume(&r.group, r.topics, reset))
            .await
            .map_err(|e| to_status(BrokerError::Internal(format!("consume task failed: {e}"))))?
            .map_err(to_status)?;
        let stream = ReceiverStream::new(rx).map(|item| item.map_err(to_status));
        Ok(Response::new(caller.throttle(stream)))
    }
}
