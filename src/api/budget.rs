//! The broker-wide budget of request bytes in flight
//! (`limits.max_inflight_request_bytes`).
//!
//! tonic reads a whole request message into memory before a handler sees
//! it, so without a bound, 100 clients each sending a 64 MiB produce
//! request hold 6.4 GiB of heap at once. [`Budgeted`] wraps a service and,
//! before the request body is read, takes the message length from the
//! 5-byte gRPC prefix (compressed flag, big-endian length) and acquires that
//! many bytes (plus the prefix) from one semaphore shared by every service.
//! The bytes go back when the response is ready, which for a unary call is
//! after the handler finished with the decoded message.
//!
//! - A request waits, unread, until its bytes fit, in arrival order, for at
//!   most [`BUDGET_WAIT`]. Past that it is refused with `RESOURCE_EXHAUSTED`
//!   and a `retry-after-ms` hint (the client library's producer retries it).
//!   The wait must be bounded: HTTP/2 flow control shares one connection
//!   window among the connection's streams, and a request waiting unread
//!   keeps up to its stream window of it, so waiting requests could starve
//!   one that holds budget on the same connection of the rest of its body,
//!   and nothing would ever give the budget back.
//! - A request bigger than the whole budget (but within tonic's decode
//!   limit, which sits 1 MiB above `limits.max_request_bytes`) can never
//!   fit: it is refused at once with `RESOURCE_EXHAUSTED` naming the limit.
//!   Every message tonic would read is budgeted, including those between
//!   `limits.max_request_bytes` and tonic's limit, which the handlers then
//!   refuse: tonic reads them whole first. Only a message over tonic's
//!   limit passes unbudgeted, because tonic refuses it from its prefix
//!   without reading the body.
//! - A request whose body ends before 5 bytes passes through untouched
//!   (tonic rejects it).
//!
//! What the budget does not cover: bytes HTTP/2 has received but nobody has
//! read yet, bounded per stream and per connection by the flow-control
//! windows ([`super::HTTP2_STREAM_WINDOW_BYTES`], 128 KiB, and
//! [`super::HTTP2_CONNECTION_WINDOW_BYTES`], 2 MiB).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::codegen::{http, BoxFuture, Service};
use tonic::server::NamedService;

use super::status::{budget_busy_status, to_status};
use crate::broker::BrokerError;

/// Length of the gRPC message prefix: 1 flag byte, 4 length bytes.
const PREFIX_BYTES: usize = 5;

/// Longest a request waits for room in the budget before it is refused
/// with a retry hint.
pub const BUDGET_WAIT: Duration = Duration::from_secs(1);

/// Why a request was not admitted.
#[derive(Debug)]
enum Refusal {
    /// Bigger than the whole budget: it can never fit.
    TooLarge(BrokerError),
    /// The budget stayed full for [`BUDGET_WAIT`].
    Busy,
}

/// The shared budget: one semaphore whose permits are bytes.
#[derive(Debug, Clone)]
pub struct Budget {
    permits: Arc<Semaphore>,
    budget_bytes: u32,
    decode_limit_bytes: usize,
}

impl Budget {
    /// A budget of `budget_bytes` for every message tonic reads, i.e. of
    /// at most `decode_limit_bytes` (tonic's `max_decoding_message_size`;
    /// bigger ones tonic refuses without reading them).
    pub fn new(budget_bytes: u32, decode_limit_bytes: usize) -> Budget {
        Budget {
            permits: Arc::new(Semaphore::new(budget_bytes as usize)),
            budget_bytes,
            decode_limit_bytes,
        }
    }

    /// Bytes of the budget not held by any request now.
    pub fn available_bytes(&self) -> usize {
        self.permits.available_permits()
    }

    /// Waits until a message of `message_bytes` fits. `Ok(None)` for a
    /// message over tonic's decode limit (tonic refuses it without reading
    /// it).
    ///
    /// # Errors
    ///
    /// [`Refusal::TooLarge`] when the message is within the request limit
    /// but bigger than the whole budget; [`Refusal::Busy`] when it did not
    /// fit within `wait`.
    async fn admit(
        &self,
        message_bytes: u32,
        wait: Duration,
    ) -> Result<Option<OwnedSemaphorePermit>, Refusal> {
        if message_bytes as usize > self.decode_limit_bytes {
            return Ok(None);
        }
        let needed = u64::from(message_bytes) + PREFIX_BYTES as u64;
        if needed > u64::from(self.budget_bytes) {
            return Err(Refusal::TooLarge(BrokerError::LimitExceeded {
                what: "request bytes in flight on this broker (limits.max_inflight_request_bytes, \
                       --max-inflight-request-bytes); send smaller requests",
                limit: u64::from(self.budget_bytes),
                requested: needed,
            }));
        }
        // `needed` <= budget_bytes, a u32. The semaphore is never closed.
        let acquire = self.permits.clone().acquire_many_owned(needed as u32);
        match tokio::time::timeout(wait, acquire).await {
            Ok(Ok(permit)) => Ok(Some(permit)),
            Ok(Err(_)) | Err(_) => Err(Refusal::Busy),
        }
    }
}

/// Wraps a gRPC service so each request holds its size in the [`Budget`]
/// until its response is ready.
#[derive(Debug, Clone)]
pub struct Budgeted<S> {
    inner: S,
    budget: Budget,
}

impl<S> Budgeted<S> {
    /// Wraps `inner`, sharing `budget` with the other services.
    pub fn new(inner: S, budget: Budget) -> Self {
        Budgeted { inner, budget }
    }
}

impl<S: NamedService> NamedService for Budgeted<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B, R> Service<http::Request<B>> for Budgeted<S>
where
    S: Service<http::Request<Prefixed<B>>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Send,
    R: Default + Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // The service that was polled ready serves this call; the clone
        // stays for the next one (tower's usual pattern).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let budget = self.budget.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let body = Prefixed::read(Box::pin(body)).await;
            let permit = match body.message_bytes() {
                Some(length) => match budget.admit(length, BUDGET_WAIT).await {
                    Ok(permit) => permit,
                    Err(Refusal::TooLarge(e)) => return Ok(to_status(e).into_http()),
                    Err(Refusal::Busy) => {
                        let status = budget_busy_status(budget.budget_bytes, BUDGET_WAIT);
                        return Ok(status.into_http());
                    }
                },
                None => None,
            };
            let response = inner.call(http::Request::from_parts(parts, body)).await;
            drop(permit);
            response
        })
    }
}

/// A request body whose first frames were read (to learn the message
/// length) and are handed out again before the rest.
#[derive(Debug)]
pub struct Prefixed<B: Body> {
    head: VecDeque<Frame<Bytes>>,
    /// An error met while reading the head, handed out after it.
    error: Option<B::Error>,
    rest: Pin<Box<B>>,
    /// The first [`PREFIX_BYTES`] data bytes, when the body had that many.
    prefix: Option<[u8; PREFIX_BYTES]>,
}

// Nothing of a `Prefixed` is ever pinned in place: the one pinned part,
// the rest of the body, is boxed, and the error is only moved out.
impl<B: Body> Unpin for Prefixed<B> {}

impl<B: Body<Data = Bytes>> Prefixed<B> {
    /// Reads frames until [`PREFIX_BYTES`] data bytes arrived, or the body
    /// ended, failed or sent trailers.
    async fn read(mut rest: Pin<Box<B>>) -> Prefixed<B> {
        let mut head = VecDeque::new();
        let mut seen = Vec::with_capacity(PREFIX_BYTES);
        let mut error = None;
        while seen.len() < PREFIX_BYTES {
            match rest.frame().await {
                Some(Ok(frame)) => {
                    let Some(data) = frame.data_ref() else {
                        head.push_back(frame);
                        break;
                    };
                    let take = data.remaining().min(PREFIX_BYTES - seen.len());
                    seen.extend_from_slice(&data[..take]);
                    head.push_back(frame);
                }
                Some(Err(e)) => {
                    error = Some(e);
                    break;
                }
                None => break,
            }
        }
        Prefixed {
            head,
            error,
            rest,
            prefix: seen.try_into().ok(),
        }
    }

    /// The message length the gRPC prefix announces, if it was complete.
    fn message_bytes(&self) -> Option<u32> {
        self.prefix
            .map(|p| u32::from_be_bytes([p[1], p[2], p[3], p[4]]))
    }
}

impl<B: Body<Data = Bytes>> Body for Prefixed<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        if let Some(frame) = this.head.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        if let Some(e) = this.error.take() {
            return Poll::Ready(Some(Err(e)));
        }
        this.rest.as_mut().poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.head.is_empty() && self.error.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let head: u64 = self
            .head
            .iter()
            .filter_map(|f| f.data_ref().map(|d| d.remaining() as u64))
            .sum();
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + head);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + head);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full, StreamBody};

    fn framed(
        chunks: &[&[u8]],
    ) -> Pin<Box<impl Body<Data = Bytes, Error = std::convert::Infallible>>> {
        let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        Box::pin(StreamBody::new(tokio_stream::iter(frames)))
    }

    #[tokio::test]
    async fn the_prefix_is_read_across_frames_and_every_byte_is_handed_on() {
        let body = framed(&[&[0, 0], &[0, 1], &[2, 9, 9], &[9]]);
        let prefixed = Prefixed::read(body).await;
        assert_eq!(prefixed.message_bytes(), Some(258));
        let all = prefixed.collect().await.unwrap().to_bytes();
        assert_eq!(&all[..], &[0, 0, 0, 1, 2, 9, 9, 9]);
    }

    #[tokio::test]
    async fn a_body_shorter_than_the_prefix_has_no_length() {
        let prefixed = Prefixed::read(Box::pin(Full::new(Bytes::from_static(&[0, 0])))).await;
        assert_eq!(prefixed.message_bytes(), None);
        assert_eq!(&prefixed.collect().await.unwrap().to_bytes()[..], &[0, 0]);
    }

    #[tokio::test]
    async fn requests_wait_for_budget_and_give_it_back() {
        let budget = Budget::new(100, 1000);
        let first = budget.admit(60, WAIT).await.unwrap().expect("fits");
        assert_eq!(budget.available_bytes(), 35);
        let waiting = {
            let budget = budget.clone();
            tokio::spawn(async move { budget.admit(60, WAIT).await.map(|p| p.is_some()) })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "65 bytes do not fit in 35");
        drop(first);
        assert!(waiting.await.unwrap().unwrap());
        assert_eq!(budget.available_bytes(), 100);
    }

    /// A wait no test reaches: the paused clock never moves by itself.
    const WAIT: Duration = Duration::from_secs(3600);

    #[tokio::test]
    async fn a_request_that_waits_too_long_is_refused_as_busy() {
        let budget = Budget::new(100, 1000);
        let _held = budget.admit(60, WAIT).await.unwrap();
        // Held for the whole test: the short wait always runs out.
        let refused = budget.admit(60, Duration::from_millis(10)).await;
        assert!(matches!(refused, Err(Refusal::Busy)));
        let status = budget_busy_status(100, Duration::from_secs(1));
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(status
            .metadata()
            .get(super::super::status::RETRY_AFTER_MS)
            .is_some());
        assert!(status
            .message()
            .contains("limits.max_inflight_request_bytes"));
    }

    #[tokio::test]
    async fn a_request_over_the_whole_budget_is_refused_naming_the_limit() {
        let budget = Budget::new(100, 1000);
        let Err(Refusal::TooLarge(err)) = budget.admit(96, WAIT).await else {
            panic!("96 + 5 bytes do not fit in 100");
        };
        assert!(
            err.to_string()
                .contains("limits.max_inflight_request_bytes"),
            "{err}"
        );
        assert_eq!(to_status(err).code(), tonic::Code::ResourceExhausted);
        // Over tonic's limit: tonic answers from the prefix, no budget taken.
        assert!(budget.admit(1001, WAIT).await.unwrap().is_none());
        assert_eq!(budget.available_bytes(), 100);
    }

    #[tokio::test]
    async fn every_message_tonic_reads_is_budgeted() {
        let (max_request_bytes, decode_limit) = (400u32, 1000usize);
        let budget = Budget::new(2000, decode_limit);
        // Over Strata's request limit, under tonic's: tonic reads it whole
        // before the handler refuses it, so it holds budget meanwhile.
        let permit = budget.admit(max_request_bytes + 100, WAIT).await.unwrap();
        assert!(permit.is_some());
        assert_eq!(budget.available_bytes(), 2000 - 505);
        drop(permit);
        let at_limit = budget.admit(1000, WAIT).await.unwrap();
        assert!(at_limit.is_some());
        assert!(budget.admit(1001, WAIT).await.unwrap().is_none());
    }
}
