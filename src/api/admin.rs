//! The `strata.v1.Admin` service: topic administration.
//!
//! Topic operations create and remove files, so they run on the blocking pool.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::auth::Access;
use super::observe::record_topic;
use super::status::to_status;
use crate::auth::Action;
use crate::broker::{describe, Broker, BrokerError, TopicDescription, TopicOverrides};
use crate::proto::server::admin_server::Admin;
use crate::proto::v1::{
    AlterTopicConfigRequest, AlterTopicConfigResponse, CreatePartitionsRequest,
    CreatePartitionsResponse, CreateTopicRequest, CreateTopicResponse, DamagedRange,
    DeleteTopicRequest, DeleteTopicResponse, DescribeTopicRequest, DescribeTopicResponse,
    ListTopicsRequest, ListTopicsResponse, PartitionDescription, TopicConfig,
    TopicDescription as ProtoTopicDescription, TopicSummary,
};

/// Serves `Admin` on a broker.
#[derive(Debug, Clone)]
pub struct AdminService {
    broker: Arc<Broker>,
    access: Access,
}

impl AdminService {
    /// A service backed by `broker`.
    pub fn new(broker: Arc<Broker>) -> Self {
        AdminService {
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

fn overrides(config: Option<TopicConfig>) -> TopicOverrides {
    let c = config.unwrap_or_default();
    TopicOverrides {
        retention_ms: c.retention_ms,
        retention_bytes: c.retention_bytes,
        segment_bytes: c.segment_bytes,
        segment_ms: c.segment_ms,
        max_record_bytes: c.max_record_bytes,
    }
}

fn to_proto(d: TopicDescription) -> ProtoTopicDescription {
    ProtoTopicDescription {
        name: d.name,
        config: Some(TopicConfig {
            retention_ms: Some(d.config.retention_ms),
            retention_bytes: Some(d.config.retention_bytes),
            segment_bytes: Some(d.config.segment_bytes),
            segment_ms: Some(d.config.segment_ms),
            max_record_bytes: Some(d.config.max_record_bytes),
        }),
        partitions: d
            .partitions
            .into_iter()
            .enumerate()
            .map(|(i, s)| PartitionDescription {
                partition: i as u32,
                log_start_offset: s.log_start_offset,
                high_watermark: s.high_watermark,
                size_bytes: s.size_bytes,
                segment_count: s.segment_count,
                truncated_bytes: s.truncated_bytes,
                damaged_ranges: s
                    .damaged_ranges
                    .into_iter()
                    .map(|(first_offset, end_offset)| DamagedRange {
                        first_offset,
                        end_offset,
                    })
                    .collect(),
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn create_topic(
        &self,
        request: Request<CreateTopicRequest>,
    ) -> Result<Response<CreateTopicResponse>, Status> {
        let caller = self.access.caller(&request)?;
        let r = request.into_inner();
        record_topic(&r.name);
        caller.check(Action::Admin, &r.name)?;
        let topic = self
            .blocking(move |b| b.create_topic(&r.name, r.partitions, overrides(r.config)))
            .await?;
        Ok(Response::new(CreateTopicResponse {
            topic: Some(to_proto(describe(&topic))),
        }))
    }

    async fn delete_topic(
        &self,
        request: Request<DeleteTopicRequest>,
    ) -> Result<Response<DeleteTopicResponse>, Status> {
        let caller = self.access.caller(&request)?;
        let name = request.into_inner().name;
        record_topic(&name);
        caller.check(Action::Admin, &name)?;
        self.blocking(move |b| b.delete_topic(&name)).await?;
        Ok(Response::new(DeleteTopicResponse {}))
    }

    async fn list_topics(
        &self,
        request: Request<ListTopicsRequest>,
    ) -> Result<Response<ListTopicsResponse>, Status> {
        let caller = self.access.caller(&request)?;
        let topics = self
            .broker
            .topics()
            .iter()
            .filter(|t| caller.sees_topic(&t.name))
            .map(|t| TopicSummary {
                name: t.name.clone(),
                partitions: t.partition_count(),
            })
            .collect();
        Ok(Response::new(ListTopicsResponse { topics }))
    }

    async fn describe_topic(
        &self,
        request: Request<DescribeTopicRequest>,
    ) -> Result<Response<DescribeTopicResponse>, Status> {
        let caller = self.access.caller(&request)?;
        let name = request.into_inner().name;
        record_topic(&name);
        caller.check_describe(&name)?;
        let d = self.broker.describe_topic(&name).map_err(to_status)?;
        Ok(Response::new(DescribeTopicResponse {
            topic: Some(to_proto(d)),
        }))
    }

    async fn create_partitions(
        &self,
        request: Request<CreatePartitionsRequest>,
    ) -> Result<Response<CreatePartitionsResponse>, Status> {
        let caller = self.access.caller(&request)?;
        let r = request.into_inner();
        record_topic(&r.name);
        caller.check(Action::Admin, &r.name)?;
        let topic = self
            .blocking(move |b| b.create_partitions(&r.name, r.total_partitions))
            .await?;
        Ok(Response::new(CreatePartitionsResponse {
            topic: Some(to_proto(describe(&topic))),
        }))
    }

    async fn alter_topic_config(
        &self,
        request: Request<AlterTopicConfigRequest>,
    ) -> Result<Response<AlterTopicConfigResponse>, Status> {
        let caller = self.access.caller(&request)?;
        let r = request.into_inner();
        record_topic(&r.name);
        caller.check(Action::Admin, &r.name)?;
        let changes = overrides(r.config);
        let topic = self
            .blocking(move |b| b.alter_topic_config(&r.name, &changes))
            .await?;
        Ok(Response::new(AlterTopicConfigResponse {
            topic: Some(to_proto(describe(&topic))),
        }))
    }
}
