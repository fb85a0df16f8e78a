//! The Rust client library for Strata.
//!
//! [`Client`] wraps the generated gRPC clients of [`crate::proto::v1`] over
//! one shared HTTP/2 connection: topic administration, produce, fetch,
//! subscribe and offset lookups. Reading helpers live in [`records`]:
//! [`ConsumedRecord`] carries each record's offset and effective timestamp,
//! so callers never do the `base_offset + i` arithmetic themselves.
//!
//! Consumer groups: [`Client::group_consumer`] joins a group and returns a
//! [`GroupConsumer`] (module [`consumer`]) that hands out records of the
//! member's partitions and commits what was processed; the group
//! administration calls (list, describe, delete, reset, fetch and commit
//! offsets) are in [`groups`].
//!
//! ```no_run
//! use strata::client::{Acks, Client, Record, TopicConfig};
//!
//! # async fn demo() -> Result<(), strata::client::ClientError> {
//! let client = Client::connect("127.0.0.1:50051").await?;
//! client.create_topic("orders", 3, TopicConfig::default()).await?;
//! let record = Record { key: b"user-1".to_vec(), value: b"hello".to_vec(), ..Default::default() };
//! let appends = client.produce("orders", None, vec![record], Acks::Leader).await?;
//! let p = appends[0].partition;
//! let response = client.fetch("orders", p, appends[0].base_offset, 0, 0).await?;
//! for r in strata::client::ConsumedRecord::from_response(p, response) {
//!     println!("{}:{} {}", r.partition, r.offset, String::from_utf8_lossy(&r.value));
//! }
//! # Ok(())
//! # }
//! ```

pub mod assigned;
pub mod connect;
pub mod consumer;
pub mod encoded;
pub mod error;
pub mod groups;
pub mod member;
pub mod producer;
pub mod records;

use std::time::Duration;

use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::proto::v1::admin_client::AdminClient;
use crate::proto::v1::groups_client::GroupsClient;
use crate::proto::v1::log_client::LogClient;
use crate::proto::v1::{
    AlterTopicConfigRequest, CreatePartitionsRequest, CreateTopicRequest, DeleteTopicRequest,
    DescribeTopicRequest, FetchRequest, ListOffsetsRequest, ListTopicsRequest, ProduceRequest,
    SubscribeRequest,
};

pub use crate::proto::v1::{
    Acks, AutoOffsetReset, DamagedRange, DescribeGroupResponse, FetchResponse, GroupSummary,
    Header, ListOffsetsResponse, Member, OffsetSpec, PartitionAppend, PartitionDescription,
    PartitionLag, PartitionOffset, Record, RecordBatch, TopicConfig, TopicDescription,
    TopicPartitions, TopicSummary,
};
pub use assigned::{Consumer, SeekTo, TopicRecord};
pub use connect::{BearerToken, ClientTls, ConnectOptions, Connection};
pub use consumer::{GroupConsumer, GroupRecord};
pub use encoded::EncodedLog;
pub use error::ClientError;
pub use groups::ResetTarget;
pub use member::MemberConfig;
pub use producer::{Delivery, Producer, ProducerConfig, RecordMetadata};
pub use records::{ConsumedRecord, PartitionReader, SubscribeStream};

/// Default broker address of the CLI and of examples.
pub const DEFAULT_BROKER: &str = "127.0.0.1:50051";

/// Largest gRPC message the client sends or accepts, bytes. Far above the
/// broker's own limits, so that the broker's clear errors (and not the
/// client's codec) decide what is too large.
pub const MAX_MESSAGE_BYTES: usize = 256 << 20;

/// How long [`Client::connect`] waits for the TCP connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// While calls are in flight, the client pings the broker this often (HTTP/2
/// PING) and drops the connection when no answer comes within
/// [`KEEPALIVE_TIMEOUT`]: a broker that vanished without closing the
/// connection (a network partition, a powered-off host) fails the calls as
/// connection errors, which the producer retries, instead of leaving them
/// (and `flush`/`close`) waiting forever.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// How long a keep-alive ping may go unanswered; see [`KEEPALIVE_INTERVAL`].
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// HTTP/2 flow-control windows, matching the broker's, so that large fetches
/// are not throttled by the protocol's 64 KiB default.
pub(crate) const STREAM_WINDOW_BYTES: u32 = 4 << 20;
pub(crate) const CONNECTION_WINDOW_BYTES: u32 = 16 << 20;

/// A connection to a Strata broker.
///
/// Cloning is cheap: clones share the one HTTP/2 connection, and calls from
/// several tasks are multiplexed over it. Every method takes `&self`.
#[derive(Debug, Clone)]
pub struct Client {
    log: LogClient<Connection>,
    admin: AdminClient<Connection>,
    groups: GroupsClient<Connection>,
    encoded: EncodedLog,
}

impl Client {
    /// Connects to the broker at `addr`: `host:port` or `http://host:port`.
    ///
    /// The connection is made eagerly, so an unreachable broker is reported
    /// here rather than on the first call.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), strata::client::ClientError> {
    /// let client = strata::client::Client::connect("127.0.0.1:50051").await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`ClientError::InvalidAddress`] if `addr` is not a valid URI authority,
    /// [`ClientError::Connect`] if the broker cannot be reached.
    pub async fn connect(addr: &str) -> Result<Client, ClientError> {
        Client::connect_with(addr, &ConnectOptions::default()).await
    }

    /// Connects with TLS and/or a bearer token (see [`connect`](mod@connect)).
    ///
    /// # Errors
    /// As [`Client::connect`], and [`ClientError::Options`] for unreadable
    /// TLS files or inconsistent options.
    pub async fn connect_with(addr: &str, options: &ConnectOptions) -> Result<Client, ClientError> {
        Ok(Client::from_connection(
            connect::connect(addr, options).await?,
        ))
    }

    /// Builds a client on an existing channel, without a token (for custom
    /// TLS or lazy connections).
    pub fn from_channel(channel: Channel) -> Client {
        Client::from_connection(InterceptedService::new(channel, BearerToken::default()))
    }

    /// Builds a client on a connection made by [`connect::connect`].
    pub fn from_connection(channel: Connection) -> Client {
        Client {
            log: LogClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            admin: AdminClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            groups: GroupsClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            encoded: EncodedLog::new(channel),
        }
    }

    /// The generated `strata.v1.Log` client on this connection, for requests
    /// the methods here do not cover (idempotent produce, for one).
    pub fn log_service(&self) -> LogClient<Connection> {
        self.log.clone()
    }

    /// A `Produce` client for requests with pre-encoded records on this
    /// connection (see [`EncodedLog`]).
    pub fn encoded_log(&self) -> EncodedLog {
        self.encoded.clone()
    }

    /// The generated `strata.v1.Admin` client on this connection.
    pub fn admin_service(&self) -> AdminClient<Connection> {
        self.admin.clone()
    }

    /// The generated `strata.v1.Groups` client on this connection.
    pub fn groups_service(&self) -> GroupsClient<Connection> {
        self.groups.clone()
    }

    // ---- Admin -----------------------------------------------------------

    /// Creates a topic with `partitions` partitions (0 = broker default).
    /// Unset fields of `config` take the broker's defaults.
    ///
    /// # Errors
    /// `ALREADY_EXISTS` if the topic exists, `INVALID_ARGUMENT` for a bad name
    /// or setting, and any connection error.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        config: TopicConfig,
    ) -> Result<TopicDescription, ClientError> {
        let request = CreateTopicRequest {
            name: name.to_string(),
            partitions,
            config: Some(config),
        };
        let response = self.admin.clone().create_topic(request).await?;
        required(response.into_inner().topic, "CreateTopic", "topic")
    }

    /// Deletes a topic and all its data.
    ///
    /// # Errors
    /// `NOT_FOUND` if the topic does not exist, and any connection error.
    pub async fn delete_topic(&self, name: &str) -> Result<(), ClientError> {
        let request = DeleteTopicRequest {
            name: name.to_string(),
        };
        self.admin.clone().delete_topic(request).await?;
        Ok(())
    }

    /// Lists all topics, ordered by name.
    ///
    /// # Errors
    /// Any connection error.
    pub async fn list_topics(&self) -> Result<Vec<TopicSummary>, ClientError> {
        let response = self.admin.clone().list_topics(ListTopicsRequest {}).await?;
        Ok(response.into_inner().topics)
    }

    /// Describes a topic: effective configuration and per-partition state.
    ///
    /// # Errors
    /// `NOT_FOUND` if the topic does not exist, and any connection error.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicDescription, ClientError> {
        let request = DescribeTopicRequest {
            name: name.to_string(),
        };
        let response = self.admin.clone().describe_topic(request).await?;
        required(response.into_inner().topic, "DescribeTopic", "topic")
    }

    /// Grows a topic to `total` partitions (the count can only grow).
    ///
    /// # Errors
    /// `NOT_FOUND`, `INVALID_ARGUMENT` if `total` is below the current
    /// count or above the broker's limit, and any connection error.
    pub async fn create_partitions(
        &self,
        name: &str,
        total: u32,
    ) -> Result<TopicDescription, ClientError> {
        let request = CreatePartitionsRequest {
            name: name.to_string(),
            total_partitions: total,
        };
        let response = self.admin.clone().create_partitions(request).await?;
        required(response.into_inner().topic, "CreatePartitions", "topic")
    }

    /// Changes the settings of a topic that are set in `config`; the others
    /// stay as they are. Returns the topic with its effective configuration.
    ///
    /// # Errors
    /// `NOT_FOUND`, `INVALID_ARGUMENT` for a bad value, and any connection
    /// error.
    pub async fn alter_topic_config(
        &self,
        name: &str,
        config: TopicConfig,
    ) -> Result<TopicDescription, ClientError> {
        let request = AlterTopicConfigRequest {
            name: name.to_string(),
            config: Some(config),
        };
        let response = self.admin.clone().alter_topic_config(request).await?;
        required(response.into_inner().topic, "AlterTopicConfig", "topic")
    }

    // ---- Log -------------------------------------------------------------

    /// Appends `records` as one batch to `partition` of `topic`, or, with
    /// `None`, to the partition the broker picks (by the first record's key,
    /// else round-robin). The records get consecutive offsets in order.
    ///
    /// ```no_run
    /// # async fn demo(client: strata::client::Client) -> Result<(), strata::client::ClientError> {
    /// use strata::client::{Acks, Record};
    /// let records = vec![Record { value: b"v".to_vec(), ..Default::default() }];
    /// let appends = client.produce("orders", Some(0), records, Acks::Durable).await?;
    /// println!("offset {}", appends[0].base_offset);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// `NOT_FOUND` for an unknown topic or partition, `INVALID_ARGUMENT` for
    /// an empty batch or an oversized record, `RESOURCE_EXHAUSTED` when the
    /// broker's disk is full, and any connection error.
    pub async fn produce(
        &self,
        topic: &str,
        partition: Option<u32>,
        records: Vec<Record>,
        acks: Acks,
    ) -> Result<Vec<PartitionAppend>, ClientError> {
        let request = ProduceRequest {
            topic: topic.to_string(),
            partition,
            records,
            acks: acks.into(),
            ..Default::default()
        };
        let response = self.log.clone().produce(request).await?;
        Ok(response.into_inner().appends)
    }

    /// Reads records of one partition starting exactly at `offset`.
    ///
    /// `max_bytes` is a soft bound on the record bytes returned (0 = broker
    /// default); `max_wait_ms` is how long to wait when `offset` is the high
    /// watermark (0 = answer at once, possibly with no batches). Use
    /// [`ConsumedRecord::from_response`] to get records with their offsets.
    ///
    /// # Errors
    /// `NOT_FOUND`, `OUT_OF_RANGE` when `offset` is outside
    /// `[log_start_offset, high_watermark]`, `DATA_LOSS` for a damaged range,
    /// and any connection error.
    pub async fn fetch(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: u32,
        max_wait_ms: u32,
    ) -> Result<FetchResponse, ClientError> {
        let request = FetchRequest {
            topic: topic.to_string(),
            partition,
            offset,
            max_bytes,
            max_wait_ms,
        };
        let response = self.log.clone().fetch(request).await?;
        Ok(response.into_inner())
    }

    /// Follows one partition from `offset` on: a stream of fetch responses
    /// that continues as the log grows, until it is dropped.
    ///
    /// ```no_run
    /// # async fn demo(client: strata::client::Client) -> Result<(), strata::client::ClientError> {
    /// let mut stream = client.subscribe("orders", 0, 0).await?;
    /// while let Some(response) = stream.message().await? {
    ///     for r in strata::client::ConsumedRecord::from_response(0, response) {
    ///         println!("{} {:?}", r.offset, r.value);
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// The same as [`Client::fetch`], either at once or as an item of the
    /// stream.
    pub async fn subscribe(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
    ) -> Result<SubscribeStream, ClientError> {
        let request = SubscribeRequest {
            topic: topic.to_string(),
            partition,
            offset,
        };
        let response = self.log.clone().subscribe(request).await?;
        Ok(SubscribeStream::new(response.into_inner()))
    }

    /// Looks up an offset of a partition: the log start (`Earliest`), the
    /// high watermark (`Latest`), or the first record at or after
    /// `timestamp_ms` (`Timestamp`; the high watermark if there is none).
    /// `timestamp_ms` is ignored by the other specs.
    ///
    /// # Errors
    /// `NOT_FOUND` and any connection error.
    pub async fn list_offsets(
        &self,
        topic: &str,
        partition: u32,
        spec: OffsetSpec,
        timestamp_ms: i64,
    ) -> Result<ListOffsetsResponse, ClientError> {
        let request = ListOffsetsRequest {
            topic: topic.to_string(),
            partition,
            spec: spec.into(),
            timestamp_ms,
        };
        let response = self.log.clone().list_offsets(request).await?;
        Ok(response.into_inner())
    }
}

/// Turns `host:port` or a full URI into a plaintext endpoint with the
/// client's connection settings.
#[cfg(test)]
fn endpoint(addr: &str) -> Result<tonic::transport::Endpoint, ClientError> {
    connect::endpoint(addr, &ConnectOptions::default())
}

/// Unwraps a response field the API always sets.
fn required<T>(value: Option<T>, rpc: &'static str, field: &'static str) -> Result<T, ClientError> {
    value.ok_or(ClientError::MissingField { rpc, field })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_accepts_host_port_and_uri() {
        assert_eq!(
            endpoint("127.0.0.1:50051").unwrap().uri().to_string(),
            "http://127.0.0.1:50051/"
        );
        assert_eq!(
            endpoint("http://localhost:1").unwrap().uri().to_string(),
            "http://localhost:1/"
        );
    }

    #[test]
    fn endpoint_rejects_garbage() {
        let e = endpoint("not a host:port").unwrap_err();
        assert!(matches!(e, ClientError::InvalidAddress { .. }), "{e}");
        assert!(e
            .to_string()
            .starts_with("invalid broker address 'not a host:port'"));
    }
}
