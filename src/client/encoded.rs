//! [`EncodedLog`]: a `strata.v1.Log` client that sends produce requests whose
//! records are already encoded.
//!
//! The generated client takes a [`ProduceRequest`](crate::proto::v1::ProduceRequest)
//! by value, so resending one means cloning every record. A
//! [`ProduceRequestWire`] carries the records as one shared buffer of their
//! wire bytes (the `records` entries, field 3), byte-identical on the wire:
//! cloning it for a retry copies a reference, and encoding it copies the
//! buffer once into the HTTP/2 frame. The [`Producer`](super::Producer) and
//! `strata bench` send through it.

use tonic::codegen::http::uri::PathAndQuery;
use tonic::{GrpcMethod, Status};

use super::{Connection, MAX_MESSAGE_BYTES};
use crate::proto::v1::ProduceResponse;
use crate::wire::ProduceRequestWire;

/// A `strata.v1.Log/Produce` client for pre-encoded requests. Cheap to clone
/// (it shares the connection).
#[derive(Debug, Clone)]
pub struct EncodedLog {
    grpc: tonic::client::Grpc<Connection>,
}

impl EncodedLog {
    /// A client on `connection`, with the same message size limits as
    /// [`Client`](super::Client).
    pub fn new(connection: Connection) -> Self {
        EncodedLog {
            grpc: tonic::client::Grpc::new(connection)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        }
    }

    /// Sends one `Produce` call.
    ///
    /// # Errors
    /// The broker's status, or `UNAVAILABLE` when the connection is not
    /// ready.
    pub async fn produce(
        &mut self,
        request: ProduceRequestWire,
    ) -> Result<ProduceResponse, Status> {
        self.grpc
            .ready()
            .await
            .map_err(|e| Status::unavailable(format!("connection not ready: {e}")))?;
        let codec = tonic_prost::ProstCodec::<ProduceRequestWire, ProduceResponse>::default();
        let path = PathAndQuery::from_static("/strata.v1.Log/Produce");
        let mut request = tonic::Request::new(request);
        request
            .extensions_mut()
            .insert(GrpcMethod::new("strata.v1.Log", "Produce"));
        Ok(self.grpc.unary(request, path, codec).await?.into_inner())
    }
}
