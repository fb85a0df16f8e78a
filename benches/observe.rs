//! What observing a gRPC call costs (`strata::api::observe`): the span, the
//! per-method counters, the latency histogram and the response-body
//! wrapper, beside the same call without them, measured in the same run:
//!
//! - `bare`: a trivial service answering one message and its trailers;
//! - `observed`: the same behind `Observed`, with no tracing subscriber
//!   (as in `strata bench --embedded`);
//! - `observed_fmt_info`: the same with a text subscriber at INFO writing
//!   to a sink (as `strata serve` logs by default), so the span is built;
//! - `histogram_observe`: one observation of the lock-free histogram.
//!
//! Run: `cargo bench --bench observe`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::{pin, Pin};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use http_body::{Body, Frame};
use strata::api::observe::Observed;
use strata::storage::counters::Histogram;
use tonic::codegen::{http, Service};

/// One message, then trailers with `grpc-status: 0`.
struct Frames(Option<Frame<Bytes>>, Option<Frame<Bytes>>);

impl Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.take().or_else(|| self.1.take()).map(Ok))
    }
}

#[derive(Clone)]
struct Answer;

impl Service<http::Request<()>> for Answer {
    type Response = http::Response<Frames>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _request: http::Request<()>) -> Self::Future {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        std::future::ready(Ok(http::Response::new(Frames(
            Some(Frame::data(Bytes::from_static(b"reply"))),
            Some(Frame::trailers(trailers)),
        ))))
    }
}

/// Polls a future that completes without waiting.
fn now<F: Future>(future: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(future).poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the bench services never wait"),
    }
}

/// Sends one request through `svc` and reads its whole response body.
fn round_trip<S, B>(svc: &mut S)
where
    S: Service<http::Request<()>, Response = http::Response<B>>,
    S::Error: std::fmt::Debug,
    B: Body + Unpin,
{
    let request = http::Request::builder()
        .uri("/strata.v1.Log/Produce")
        .body(())
        .expect("request");
    let response = now(svc.call(request)).expect("response");
    let mut body = response.into_body();
    let mut cx = Context::from_waker(Waker::noop());
    while let Poll::Ready(Some(frame)) = Pin::new(&mut body).poll_frame(&mut cx) {
        black_box(frame.is_ok());
    }
}

fn per_call(c: &mut Criterion) {
    let mut g = c.benchmark_group("observe_per_call");
    g.bench_function("bare", |b| {
        let mut svc = Answer;
        b.iter(|| round_trip(&mut svc))
    });
    g.bench_function("observed", |b| {
        let mut svc = Observed::new(Answer, 0);
        b.iter(|| round_trip(&mut svc))
    });
    g.bench_function("observed_fmt_info", |b| {
        let subscriber = tracing_subscriber::fmt()
            .with_writer(std::io::sink)
            .with_max_level(tracing::Level::INFO)
            .finish();
        let _default = tracing::subscriber::set_default(subscriber);
        let mut svc = Observed::new(Answer, 0);
        b.iter(|| round_trip(&mut svc))
    });
    g.finish();
    let h = Histogram::new([10, 100, 1_000, 10_000, 100_000, 1_000_000]);
    c.bench_function("histogram_observe", |b| {
        let mut v = 0u64;
        b.iter(|| {
            v = v.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            h.observe(black_box(v >> 44));
        })
    });
}

criterion_group!(benches, per_call);
criterion_main!(benches);
