//! [`ClientError`]: everything a [`Client`](super::Client) call can fail with.
//!
//! Every variant displays as one line meant for people: the CLI prints it
//! after `error: ` and nothing else, so the line must carry the whole story
//! (the gRPC code and the server's message, or the transport's cause chain).

use std::error::Error as StdError;

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The broker address could not be turned into an endpoint URI.
    #[error("invalid broker address '{addr}': {reason}")]
    InvalidAddress {
        /// The address as given.
        addr: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No connection could be established to the broker.
    #[error("cannot connect to {addr}: {}", cause_chain(.source))]
    Connect {
        /// The address as given.
        addr: String,
        /// The transport's error (its causes are in the message).
        source: tonic::transport::Error,
    },
    /// The broker (or the transport, for a dropped connection) answered with a
    /// gRPC status other than OK. Displays as `CODE: message`, for example
    /// `NOT_FOUND: topic 'x' does not exist`.
    #[error("{}", status_line(.0))]
    Status(#[from] tonic::Status),
    /// The broker's answer lacks a field the API promises (a broker bug or a
    /// version mismatch).
    #[error("malformed {rpc} response: missing field '{field}'")]
    MissingField {
        /// The RPC whose response was incomplete.
        rpc: &'static str,
        /// The missing field.
        field: &'static str,
    },
    /// The broker closed a stream before it sent what the call waits for
    /// (for example a `Consume` stream before its first assignment).
    #[error("the broker ended the {rpc} stream")]
    StreamEnded {
        /// The streaming RPC.
        rpc: &'static str,
    },
    /// The [`Producer`](super::Producer) stopped before the record was sent.
    #[error("the producer was closed before the record was sent")]
    ProducerClosed,
    /// The connection options cannot be used (an unreadable TLS file, a
    /// token that is not ASCII, TLS without a CA).
    #[error("{reason}")]
    Options {
        /// What is wrong.
        reason: String,
    },
}

impl ClientError {
    /// The gRPC status code: the broker's for [`ClientError::Status`],
    /// `UNAVAILABLE` for connection problems and ended streams,
    /// `INVALID_ARGUMENT` for a bad address and `INTERNAL` for a malformed
    /// response.
    pub fn code(&self) -> tonic::Code {
        match self {
            ClientError::InvalidAddress { .. } => tonic::Code::InvalidArgument,
            ClientError::Connect { .. } => tonic::Code::Unavailable,
            ClientError::Status(status) => status.code(),
            ClientError::MissingField { .. } => tonic::Code::Internal,
            ClientError::StreamEnded { .. } => tonic::Code::Unavailable,
            ClientError::ProducerClosed => tonic::Code::Cancelled,
            ClientError::Options { .. } => tonic::Code::InvalidArgument,
        }
    }

    /// Whether the call failed because the connection did (the broker is
    /// unreachable or restarting, or the connection broke mid-call): the
    /// request may or may not have reached the broker. tonic reports a call
    /// cut by a broken connection as `UNKNOWN` or `CANCELLED` with the
    /// transport error as the status's source; the broker itself never
    /// answers those codes with a source.
    pub fn is_connection_error(&self) -> bool {
        match self.code() {
            tonic::Code::Unavailable => true,
            tonic::Code::Unknown | tonic::Code::Cancelled => self
                .status()
                .is_some_and(|s| std::error::Error::source(s).is_some()),
            _ => false,
        }
    }

    /// The broker's retry hint: for `RESOURCE_EXHAUSTED` over a quota, how
    /// long to wait before the request would be admitted (the
    /// `retry-after-ms` metadata).
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        let status = self.status()?;
        if status.code() != tonic::Code::ResourceExhausted {
            return None;
        }
        let ms: u64 = status
            .metadata()
            .get(crate::api::status::RETRY_AFTER_MS)?
            .to_str()
            .ok()?
            .parse()
            .ok()?;
        Some(std::time::Duration::from_millis(ms))
    }

    /// The gRPC status, if the error came from the broker or the transport
    /// during a call.
    pub fn status(&self) -> Option<&tonic::Status> {
        match self {
            ClientError::Status(status) => Some(status),
            _ => None,
        }
    }
}

/// The canonical upper-case name of a gRPC code, as in the gRPC spec
/// (`NOT_FOUND`, not tonic's `NotFound` or its English description).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// `CODE: message` on one line; tonic's description of the code stands in
/// for an empty message. Line breaks in the message become spaces.
fn status_line(status: &tonic::Status) -> String {
    let message = status.message().trim();
    let message = if message.is_empty() {
        status.code().description()
    } else {
        message
    };
    let mut line = format!("{}: {}", code_name(status.code()), message);
    // Transport failures (a refused TLS handshake, a dropped connection)
    // carry their real cause as the status's source.
    if let Some(source) = StdError::source(status) {
        let cause = cause_chain(source);
        if !line.contains(&cause) {
            line.push_str(": ");
            line.push_str(&cause);
        }
    }
    line.replace(['\n', '\r'], " ")
}

/// An error and its causes joined with `: `, skipping a cause whose text
/// the previous one already contains (hyper repeats itself).
fn cause_chain(error: &(dyn StdError + 'static)) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let text = e.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = e.source();
    }
    line.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_displays_code_and_message_on_one_line() {
        let e = ClientError::from(tonic::Status::not_found("topic 'x' does not exist"));
        assert_eq!(e.to_string(), "NOT_FOUND: topic 'x' does not exist");
        assert_eq!(e.code(), tonic::Code::NotFound);

        let e = ClientError::from(tonic::Status::internal("two\nlines"));
        assert_eq!(e.to_string(), "INTERNAL: two lines");
    }

    #[test]
    fn empty_message_uses_code_description() {
        let e = ClientError::from(tonic::Status::new(tonic::Code::Unavailable, ""));
        assert!(e.to_string().starts_with("UNAVAILABLE: "));
        assert!(e.to_string().len() > "UNAVAILABLE: ".len());
    }
}
