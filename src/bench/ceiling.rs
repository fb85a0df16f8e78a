//! The "gRPC ceiling" of BENCHMARKS.md: an in-process null server that
//! speaks `strata.v1.Log` with handlers that do no work.
//!
//! - `Produce`: the request is decoded exactly as the broker decodes it (the
//!   zero-copy [`ProduceRequestWire`]) and answered with a fixed
//!   `PartitionAppend`.
//! - `Fetch` and `Subscribe`: answered with a response built once, of the
//!   same size and record count as the real broker's for the workload
//!   (`batches_per_response` batches of `batch_records` records, encoded
//!   with prost exactly as a client would encode them). Only the batches'
//!   base offsets change, so the client sees progress. `Subscribe` streams
//!   such responses, back to back, until the client goes away.
//! - `ListOffsets`: answers offset 0.
//!
//! The server uses the broker's transport settings (see `build_router` in
//! `crate::api`): `TCP_NODELAY`, the same HTTP/2 windows, stream limit and
//! message-size limits. What it measures is what any gRPC broker could at
//! best do on this machine with this client and these messages.
//!
//! `TCP_NODELAY` is set on each accepted socket through tonic's
//! [`TcpIncoming`]: tonic ignores `Server::tcp_nodelay` when it is handed
//! its own incoming stream (`serve_with_incoming*`, as documented there).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_stream::Stream;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use crate::config::Limits;
use crate::proto::server::log_server::{Log, LogServer};
use crate::proto::v1::{
    FetchRequest, ListOffsetsRequest, ListOffsetsResponse, PartitionAppend, ProduceResponse,
    SubscribeRequest,
};
use crate::wire::{FetchResponseWire, PayloadView, ProduceRequestWire, WireBatch};

use super::BenchError;

/// Storage frame header per batch, bytes: the broker counts it against a
/// fetch's `max_bytes` (see `crate::storage::frame`).
pub const FRAME_OVERHEAD_BYTES: usize = 64;

/// How many batches of `payload_bytes` the broker puts in one fetch response
/// of `max_bytes`: whole frames while they fit, and at least one.
pub fn batches_per_response(payload_bytes: usize, max_bytes: u32) -> u32 {
    let frame = payload_bytes.saturating_add(FRAME_OVERHEAD_BYTES).max(1);
    let fit = max_bytes as usize / frame;
    u32::try_from(fit).unwrap_or(u32::MAX).max(1)
}

/// The shape of the pre-built fetch response.
#[derive(Debug, Clone)]
pub struct FetchShape {
    /// The records entries of one batch (field 3 of `RecordBatch`), encoded.
    pub batch_payload: Bytes,
    /// Records in one batch.
    pub batch_records: u32,
    /// Batches in one response.
    pub batches_per_response: u32,
}

impl FetchShape {
    /// Records in one response.
    pub fn records_per_response(&self) -> u64 {
        u64::from(self.batch_records) * u64::from(self.batches_per_response)
    }
}

/// The null `Log` service.
#[derive(Debug, Clone)]
struct NullLog {
    shape: Arc<Prebuilt>,
}

#[derive(Debug)]
struct Prebuilt {
    payload: PayloadView,
    batch_records: u64,
    batches: u32,
    append_time_ms: i64,
}

impl Prebuilt {
    /// The pre-built response, with batches starting at `offset`. Costs one
    /// `Vec` of batch headers; the payload is shared.
    fn response(&self, offset: u64) -> FetchResponseWire {
        let batches = (0..u64::from(self.batches))
            .map(|i| WireBatch {
                base_offset: offset + i * self.batch_records,
                append_time_ms: self.append_time_ms,
                records: self.payload.clone(),
            })
            .collect();
        FetchResponseWire {
            batches,
            high_watermark: offset + u64::from(self.batches) * self.batch_records,
            log_start_offset: 0,
        }
    }
}

type NullStream = Pin<Box<dyn Stream<Item = Result<FetchResponseWire, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Log for NullLog {
    async fn produce(
        &self,
        request: Request<ProduceRequestWire>,
    ) -> Result<Response<ProduceResponse>, Status> {
        let partition = request.get_ref().partition.unwrap_or(0);
        Ok(Response::new(ProduceResponse {
            appends: vec![PartitionAppend {
                partition,
                base_offset: 0,
                record_count: 0,
                append_time_ms: 0,
            }],
        }))
    }

    async fn fetch(
        &self,
        request: Request<FetchRequest>,
    ) -> Result<Response<FetchResponseWire>, Status> {
        Ok(Response::new(self.shape.response(request.get_ref().offset)))
    }

    type SubscribeStream = NullStream;

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<NullStream>, Status> {
        let start = request.get_ref().offset;
        let shape = self.shape.clone();
        let step = u64::from(shape.batches) * shape.batch_records;
        let responses = (0u64..).map(move |i| Ok(shape.response(start + i * step)));
        Ok(Response::new(Box::pin(tokio_stream::iter(responses))))
    }

    async fn list_offsets(
        &self,
        _request: Request<ListOffsetsRequest>,
    ) -> Result<Response<ListOffsetsResponse>, Status> {
        Ok(Response::new(ListOffsetsResponse {
            offset: 0,
            timestamp_ms: -1,
        }))
    }
}

/// A running null server.
#[derive(Debug)]
pub struct NullServer {
    /// The bound address (127.0.0.1 and a free port).
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl NullServer {
    /// Starts the null server on 127.0.0.1 with a free port, serving fetches
    /// with responses of `shape`.
    ///
    /// # Errors
    /// [`BenchError::Ceiling`] when the listener cannot be bound.
    pub async fn start(shape: FetchShape) -> Result<NullServer, BenchError> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|e| BenchError::Ceiling(format!("cannot bind 127.0.0.1:0: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| BenchError::Ceiling(format!("cannot read the bound address: {e}")))?;
        let append_time_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let service = NullLog {
            shape: Arc::new(Prebuilt {
                payload: PayloadView::from_bytes(shape.batch_payload),
                batch_records: u64::from(shape.batch_records),
                batches: shape.batches_per_response.max(1),
                append_time_ms,
            }),
        };
        // The broker's settings (crate::api::build_router), with its default limits.
        let limits = Limits::default();
        let decode_limit = limits.max_request_bytes as usize + (1 << 20);
        let encode_limit = limits.max_fetch_bytes as usize * 2 + (1 << 20);
        let log = LogServer::new(service)
            .max_decoding_message_size(decode_limit)
            .max_encoding_message_size(encode_limit);
        let router = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .max_concurrent_streams(Some(limits.max_concurrent_streams))
            .initial_stream_window_size(Some(crate::api::HTTP2_STREAM_WINDOW_BYTES))
            .initial_connection_window_size(Some(crate::api::HTTP2_CONNECTION_WINDOW_BYTES))
            .add_service(log);
        let (stop, stopped) = oneshot::channel::<()>();
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let handle = tokio::spawn(async move {
            router
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = stopped.await;
                })
                .await
        });
        Ok(NullServer { addr, stop, handle })
    }

    /// Stops the server (open streams are dropped).
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        // Open subscriptions would keep a graceful shutdown waiting; the
        // bench has closed its clients by now, so give it a moment only.
        let mut handle = self.handle;
        if tokio::time::timeout(std::time::Duration::from_secs(2), &mut handle)
            .await
            .is_err()
        {
            handle.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_per_response_matches_the_broker_read_rule() {
        // 1000 records of ~120 bytes: 120,000-byte payloads, 8 fit in 1 MiB.
        assert_eq!(batches_per_response(120_000, 1 << 20), 8);
        // Exactly fitting frames.
        assert_eq!(batches_per_response(1024 - 64, 4096), 4);
        // A batch larger than max_bytes still makes one batch per response.
        assert_eq!(batches_per_response(4 << 20, 1 << 20), 1);
        assert_eq!(batches_per_response(0, 0), 1);
    }

    #[test]
    fn prebuilt_responses_advance_offsets() {
        let p = Prebuilt {
            payload: PayloadView::from_bytes(Bytes::from_static(b"\x1a\x00")),
            batch_records: 10,
            batches: 3,
            append_time_ms: 5,
        };
        let r = p.response(100);
        let bases: Vec<u64> = r.batches.iter().map(|b| b.base_offset).collect();
        assert_eq!(bases, vec![100, 110, 120]);
        assert_eq!(r.high_watermark, 130);
    }
}
