//! Keeping tonic's own answers from speaking for Strata.
//!
//! Two of tonic's statuses are rewritten, by looking at response headers only:
//!
//! - a request that does not parse as its protobuf message: tonic (following
//!   gRPC's status-code guide) answers `INTERNAL`, which Strata reserves for
//!   its own bugs and I/O failures; it becomes `INVALID_ARGUMENT`;
//! - a request over tonic's size limit, below.
//!
//! tonic rejects a message over its decode limit with `OUT_OF_RANGE`
//! ("decoded message length too large"), which would collide with Strata's
//! meaning of that code (an offset outside the log). Strata sets tonic's
//! limit just above its own `limits.max_request_bytes` and checks its own
//! limit in the handlers; this wrapper turns tonic's answer, for a message
//! past even tonic's limit, into the same `RESOURCE_EXHAUSTED` with a clear
//! message. It only looks at response headers; bodies pass through.

use std::task::{Context, Poll};

use tonic::codegen::{http, BoxFuture, Service};
use tonic::server::NamedService;

/// The text tonic puts in `grpc-message` when a request exceeds its limit.
const TONIC_TOO_LARGE: &str = "decoded message length too large";
/// How prost's decode errors start (tonic answers them with `INTERNAL`).
const PROST_DECODE_FAILED: &str = "failed to decode Protobuf message";

/// Wraps a gRPC service, rewriting tonic's oversized-request status.
#[derive(Debug, Clone)]
pub struct RequestLimit<S> {
    inner: S,
    limit_bytes: u32,
}

impl<S> RequestLimit<S> {
    /// Wraps `inner`; `limit_bytes` is Strata's request limit, for the message.
    pub fn new(inner: S, limit_bytes: u32) -> Self {
        RequestLimit { inner, limit_bytes }
    }
}

impl<S: NamedService> NamedService for RequestLimit<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B, R> Service<http::Request<B>> for RequestLimit<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let future = self.inner.call(request);
        let limit = self.limit_bytes;
        Box::pin(async move {
            let mut response = future.await?;
            rewrite_too_large(response.headers_mut(), limit);
            rewrite_malformed(response.headers_mut());
            Ok(response)
        })
    }
}

/// Rewrites tonic's `OUT_OF_RANGE` for an oversized message in `headers`.
pub fn rewrite_too_large(headers: &mut http::HeaderMap, limit_bytes: u32) {
    let is_out_of_range = headers.get("grpc-status").is_some_and(|v| v == "11");
    let is_size = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        // tonic percent-encodes the message (spaces as %20).
        .is_some_and(|m| m.replace("%20", " ").contains(TONIC_TOO_LARGE));
    if !(is_out_of_range && is_size) {
        return;
    }
    let message = format!(
        "request too large: the limit is {limit_bytes} bytes (limits.max_request_bytes); split it into smaller requests"
    );
    headers.insert("grpc-status", http::HeaderValue::from_static("8"));
    // gRPC messages are percent-encoded; ours needs only its spaces encoded.
    if let Ok(v) = http::HeaderValue::from_str(&message.replace(' ', "%20")) {
        headers.insert("grpc-message", v);
    }
}

/// Rewrites tonic's `INTERNAL` for a request that does not parse.
pub fn rewrite_malformed(headers: &mut http::HeaderMap) {
    let is_internal = headers.get("grpc-status").is_some_and(|v| v == "13");
    let message = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .map(|m| m.replace("%20", " "));
    let Some(message) = message.filter(|m| is_internal && m.starts_with(PROST_DECODE_FAILED))
    else {
        return;
    };
    headers.insert("grpc-status", http::HeaderValue::from_static("3"));
    let text = format!(
        "malformed request: {message}; send a valid strata.v1 message (see proto/strata/v1)"
    );
    if let Ok(v) = http::HeaderValue::from_str(&text.replace(' ', "%20")) {
        headers.insert("grpc-message", v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_size_status_is_rewritten() {
        let mut h = http::HeaderMap::new();
        h.insert("grpc-status", http::HeaderValue::from_static("11"));
        h.insert(
            "grpc-message",
            http::HeaderValue::from_static(
                "Error,%20decoded%20message%20length%20too%20large:%20found%209%20bytes",
            ),
        );
        rewrite_too_large(&mut h, 4);
        assert_eq!(h["grpc-status"], "8");
        assert!(h["grpc-message"]
            .to_str()
            .unwrap()
            .contains("limit%20is%204%20bytes"));
        let mut h = http::HeaderMap::new();
        h.insert("grpc-status", http::HeaderValue::from_static("11"));
        h.insert(
            "grpc-message",
            http::HeaderValue::from_static("offset 9 is out of range"),
        );
        rewrite_too_large(&mut h, 4);
        assert_eq!(h["grpc-status"], "11", "our own OUT_OF_RANGE stays");
    }
}
