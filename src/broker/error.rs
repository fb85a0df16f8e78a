//! Errors of the broker layer. Mapped to gRPC status codes in exactly one
//! place: `api::status`.

use crate::storage::StorageError;
use crate::wire::WireError;

/// Everything a broker operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// No topic by that name.
    #[error("topic '{topic}' does not exist")]
    UnknownTopic {
        /// The name asked for.
        topic: String,
    },
    /// No group by that name.
    #[error("group '{group}' does not exist")]
    UnknownGroup {
        /// The name asked for.
        group: String,
    },
    /// A topic by that name exists already.
    #[error("topic '{topic}' already exists")]
    TopicExists {
        /// The name asked for.
        topic: String,
    },
    /// The partition number is not in the topic.
    #[error("topic '{topic}' has no partition {partition}: valid partitions are 0..{partitions}")]
    UnknownPartition {
        /// The topic.
        topic: String,
        /// The partition asked for.
        partition: u32,
        /// How many partitions the topic has.
        partitions: u32,
    },
    /// A topic name breaks the naming rules.
    #[error("invalid topic name '{name}': {reason}; names are 1-249 characters of [A-Za-z0-9._-], not '.' or '..'")]
    InvalidTopicName {
        /// The name (possibly shortened).
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// An argument is out of its allowed range.
    #[error("invalid {field}: {reason}")]
    InvalidArgument {
        /// The request field.
        field: &'static str,
        /// What was wrong and what is allowed.
        reason: String,
    },
    /// The produced records are malformed or too large.
    #[error("invalid records: {0}")]
    InvalidRecords(#[from] WireError),
    /// A broker-wide limit would be exceeded.
    #[error("{what}: limit is {limit}, requested {requested}")]
    LimitExceeded {
        /// The limit's name and setting.
        what: &'static str,
        /// The configured limit.
        limit: u64,
        /// What the request would have needed.
        requested: u64,
    },
    /// A subscription fell further behind the high watermark than
    /// `limits.max_subscriber_lag_records` allows.
    #[error("the subscription at offset {offset} is {lag} records behind the high watermark {high_watermark}, over limits.max_subscriber_lag_records ({limit}); subscribe again from a later offset (e.g. the latest) or catch up with Fetch")]
    SubscriberLagging {
        /// The next offset the stream would have read.
        offset: u64,
        /// The partition's high watermark then.
        high_watermark: u64,
        /// `high_watermark - offset`.
        lag: u64,
        /// The configured limit.
        limit: u64,
    },
    /// The request conflicts with the current state.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A storage failure (offsets, corruption, disk full, I/O).
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The broker is shutting down.
    #[error("the broker is shutting down")]
    ShuttingDown,
    /// Metadata on disk could not be read or written.
    #[error("metadata error on {path}: {reason}")]
    Metadata {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A background task failed to run (a bug or resource exhaustion).
    #[error("internal error: {0}")]
    Internal(String),
}

/// Result alias of the broker layer.
pub type Result<T, E = BrokerError> = std::result::Result<T, E>;
