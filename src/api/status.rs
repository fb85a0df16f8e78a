//! The single mapping from broker errors to gRPC status codes.
//!
//! Exhaustive, with no wildcard arm: a new error variant does not compile
//! until someone decides its code. `INTERNAL` is only for bugs and real I/O
//! failures, which are logged with their detail here.

use tonic::{Code, Status};

use crate::auth::AccessError;
use crate::broker::BrokerError;
use crate::storage::producers::SequenceError;
use crate::storage::StorageError;

/// Converts a broker error into the status the client sees.
pub fn to_status(err: BrokerError) -> Status {
    let code = match &err {
        BrokerError::UnknownTopic { .. }
        | BrokerError::UnknownPartition { .. }
        | BrokerError::UnknownGroup { .. } => Code::NotFound,
        BrokerError::TopicExists { .. } => Code::AlreadyExists,
        BrokerError::InvalidTopicName { .. }
        | BrokerError::InvalidArgument { .. }
        | BrokerError::InvalidRecords(_) => Code::InvalidArgument,
        BrokerError::LimitExceeded { .. } | BrokerError::SubscriberLagging { .. } => {
            Code::ResourceExhausted
        }
        BrokerError::FailedPrecondition(_) => Code::FailedPrecondition,
        BrokerError::ShuttingDown => Code::Unavailable,
        BrokerError::Storage(s) => storage_code(s),
        BrokerError::Metadata { .. } | BrokerError::Internal(_) => Code::Internal,
    };
    if code == Code::Internal {
        tracing::error!(error = %err, "internal error answered to a client");
    }
    Status::new(code, err.to_string())
}

/// Runs a blocking broker call (file creation, a commit's `write(2)`) on the
/// blocking pool and maps its error.
pub async fn run_blocking<T, F>(
    broker: &std::sync::Arc<crate::broker::Broker>,
    f: F,
) -> Result<T, Status>
where
    T: Send + 'static,
    F: FnOnce(&crate::broker::Broker) -> Result<T, BrokerError> + Send + 'static,
{
    let broker = broker.clone();
    // Carry the request span over, so what the call logs names its request.
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(|| f(&broker)))
        .await
        .map_err(|e| to_status(BrokerError::Internal(format!("blocking task failed: {e}"))))?
        .map_err(to_status)
}

/// gRPC metadata key of the retry hint on a `RESOURCE_EXHAUSTED` answer
/// for a quota: milliseconds until the request would be admitted.
pub const RETRY_AFTER_MS: &str = "retry-after-ms";

/// Converts an access-control refusal into the status the client sees:
/// `UNAUTHENTICATED`, `PERMISSION_DENIED`, or `RESOURCE_EXHAUSTED` with a
/// `retry-after-ms` hint for a quota.
pub fn access_status(err: &AccessError) -> Status {
    match err {
        AccessError::Unauthenticated { .. } => Status::unauthenticated(err.to_string()),
        AccessError::Denied { .. } => Status::permission_denied(err.to_string()),
        AccessError::OverQuota { retry_after, .. } => {
            let mut status = Status::resource_exhausted(err.to_string());
            let ms = retry_after.as_millis().to_string();
            if let Ok(value) = ms.parse() {
                status.metadata_mut().insert(RETRY_AFTER_MS, value);
            }
            status
        }
    }
}

/// The answer to a request that waited `waited` for room in the in-flight
/// request budget of `budget_bytes` and did not get it: `RESOURCE_EXHAUSTED`
/// with a `retry-after-ms` hint (nothing was read or stored).
pub fn budget_busy_status(budget_bytes: u32, waited: std::time::Duration) -> Status {
    let mut status = Status::resource_exhausted(format!(
        "the broker is busy: requests in flight hold its whole budget of {budget_bytes} bytes \
         (limits.max_inflight_request_bytes) and this one waited {} ms for room; retry later",
        waited.as_millis()
    ));
    // As long again as it waited: room comes back as requests finish.
    if let Ok(value) = waited.as_millis().to_string().parse() {
        status.metadata_mut().insert(RETRY_AFTER_MS, value);
    }
    status
}

fn storage_code(err: &StorageError) -> Code {
    match err {
        StorageError::OffsetOutOfRange { .. } => Code::OutOfRange,
        StorageError::Corrupt { .. } => Code::DataLoss,
        StorageError::BatchTooLarge { .. } | StorageError::InvalidBatch(_) => Code::InvalidArgument,
        StorageError::DiskFull { .. } => Code::ResourceExhausted,
        StorageError::Poisoned { .. } => Code::Unavailable,
        StorageError::Closed => Code::Unavailable,
        StorageError::Io { .. } => Code::Internal,
        StorageError::Sequence(e) => match e {
            // An earlier batch of the producer is missing: resend from it.
            SequenceError::OutOfOrder { .. } => Code::Aborted,
            SequenceError::Fenced { .. } => Code::FailedPrecondition,
            SequenceError::StaleDuplicate { .. } => Code::AlreadyExists,
            SequenceError::InvalidSequence { .. } => Code::InvalidArgument,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        let s = to_status(BrokerError::UnknownTopic { topic: "t".into() });
        assert_eq!(s.code(), Code::NotFound);
        assert!(s.message().contains("'t'"));
        let s = to_status(
            StorageError::OffsetOutOfRange {
                offset: 9,
                log_start: 0,
                high_watermark: 5,
            }
            .into(),
        );
        assert_eq!(s.code(), Code::OutOfRange);
        assert!(s.message().contains("0..=5"), "{}", s.message());
    }
}
