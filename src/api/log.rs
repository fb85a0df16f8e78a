//! The `strata.v1.Log` service: produce, fetch, subscribe, list offsets.

use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::auth::Access;
use super::observe::{record_partition, record_topic};
use super::status::to_status;
use crate::auth::Action;
use crate::broker::fetch::OffsetQuery;
use crate::broker::produce::{AckLevel, ProduceInput};
use crate::broker::{Broker, BrokerError};
use crate::proto::server::log_server::Log;
use crate::proto::v1::{
    Acks, FetchRequest, ListOffsetsRequest, ListOffsetsResponse, OffsetSpec, PartitionAppend,
    ProduceResponse, SubscribeRequest,
};
use crate::wire::{FetchResponseWire, ProduceRequestWire};

/// Serves `Log` on a broker.
#[derive(Debug, Clone)]
pub struct LogService {
    broker: Arc<Broker>,
    access: Access,
}

impl LogService {
    /// A service backed by `broker`.
    pub fn new(broker: Arc<Broker>) -> Self {
        LogService {
            broker,
            access: Access::open(),
        }
    }

    /// The same service with access control (permissions and quotas).
    pub fn with_access(mut self, access: Access) -> Self {
        self.access = access;
        self
    }
}

type FetchStream = Pin<Box<dyn Stream<Item = Result<FetchResponseWire, Status>> + Send + 'static>>;

fn invalid(field: &'static str, reason: String) -> Status {
    to_status(BrokerError::InvalidArgument { field, reason })
}

#[tonic::async_trait]
impl Log for LogService {
    async fn produce(
        &self,
        request: Request<ProduceRequestWire>,
    ) -> Result<Response<ProduceResponse>, Status> {
        let caller = self.access.caller(&request)?;
        let req = request.into_inner();
        record_topic(&req.topic);
        if let Some(p) = req.partition {
            record_partition(p);
        }
        caller.check(Action::Produce, &req.topic)?;
        let acks = match req.acks_level() {
            Some(Acks::Leader) => AckLevel::Leader,
            Some(Acks::Durable) => AckLevel::Durable,
            None => {
                return Err(invalid(
                    "acks",
                    format!(
                        "unknown value {}; allowed: ACKS_LEADER (0), ACKS_DURABLE (1)",
                        req.acks
                    ),
                ))
            }
        };
        let records = req.records_payload().into_bytes();
        caller.admit_produce(records.len() as u64)?;
        let input = ProduceInput {
            records,
            topic: req.topic,
            partition: req.partition,
            acks,
            producer_id: req.producer_id,
            producer_epoch: req.producer_epoch,
            base_sequence: req.base_sequence,
        };
        let appended = self.broker.produce(input).await.map_err(to_status)?;
        // The broker picks the partition when the request names none.
        record_partition(appended.partition);
        Ok(Response::new(ProduceResponse {
            appends: vec![PartitionAppend {
                partition: appended.partition,
                base_offset: appended.base_offset,
                record_count: appended.record_count,
                append_time_ms: appended.append_time_ms,
            }],
        }))
    }

    async fn fetch(
        &self,
        request: Request<FetchRequest>,
    ) -> Result<Response<FetchResponseWire>, Status> {
        let caller = self.access.caller(&request)?;
        let r = request.into_inner();
        record_topic(&r.topic);
        record_partition(r.partition);
        caller.check(Action::Consume, &r.topic)?;
        caller.admit_fetch()?;
        let out = self
            .broker
            .fetch(&r.topic, r.partition, r.offset, r.max_bytes, r.max_wait_ms)
            .await
            .map_err(to_status)?;
        caller.charge_fetch(prost::Message::encoded_len(&out));
        Ok(Response::new(out))
    }

    type SubscribeStream = FetchStream;

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<FetchStream>, Status> {
        let caller = self.access.caller(&request)?;
        let r = request.into_inner();
        record_topic(&r.topic);
        record_partition(r.partition);
        caller.check(Action::Consume, &r.topic)?;
        caller.admit_fetch()?;
        let stream = self
            .broker
            .subscribe(&r.topic, r.partition, r.offset, 0)
            .map_err(to_status)?
            .map(|item| item.map_err(to_status));
        Ok(Response::new(caller.throttle(stream)))
    }

    async fn list_offsets(
        &self,
        request: Request<ListOffsetsRequest>,
    ) -> Result<Response<ListOffsetsResponse>, Status> {
        let caller = self.access.caller(&request)?;
        let r = request.into_inner();
        record_topic(&r.topic);
        record_partition(r.partition);
        caller.check(Action::Consume, &r.topic)?;
        let query = match OffsetSpec::try_from(r.spec) {
            Ok(OffsetSpec::Earliest) => OffsetQuery::Earliest,
            Ok(OffsetSpec::Latest) => OffsetQuery::Latest,
            Ok(OffsetSpec::Timestamp) => OffsetQuery::Timestamp(r.timestamp_ms),
            Err(_) => {
                return Err(invalid(
                    "spec",
                    format!(
                        "unknown value {}; allowed: EARLIEST (0), LATEST (1), TIMESTAMP (2)",
                        r.spec
                    ),
                ))
            }
        };
        let (offset, timestamp_ms) = self
            .broker
            .list_offsets(&r.topic, r.partition, query)
            .await
            .map_err(to_status)?;
        Ok(Response::new(ListOffsetsResponse {
            offset,
            timestamp_ms,
        }))
    }
}
