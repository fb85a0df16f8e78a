//! The gRPC codec of every Strata service: prost's, except that each
//! message is encoded into room reserved for its exact encoded length.
//!
//! tonic-prost's encoder lets the output buffer grow as prost writes, by
//! doubling (`Vec`'s amortised growth) from tonic's 8 KiB start: a 64 KiB
//! `FetchResponse` takes up to four reallocations, up to about 120 KiB
//! copied on the way, and a 128 KiB allocation per message while it waits
//! for a slow client. Under 1,000 slow subscribers heaptrack named those
//! encode buffers the broker's peak memory consumer (184 MiB). Reserving `encoded_len` first (cheap:
//! the wire types know their sizes) makes it one allocation of the
//! message's size. Decoding is prost's, unchanged.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic::Status;
use tonic_prost::ProstDecoder;

/// [`Codec`] for request type `U` and response type `T` (the generated
/// servers name it through `codec_path` in `build.rs`).
#[derive(Debug, Clone, Copy)]
pub struct ExactCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for ExactCodec<T, U> {
    fn default() -> Self {
        ExactCodec(PhantomData)
    }
}

impl<T, U> Codec for ExactCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ExactEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> ExactEncoder<T> {
        ExactEncoder(PhantomData)
    }

    fn decoder(&mut self) -> ProstDecoder<U> {
        ProstDecoder::default()
    }
}

/// Encodes a prost message after reserving its encoded length.
#[derive(Debug, Clone, Copy)]
pub struct ExactEncoder<T>(PhantomData<T>);

impl<T: Message> Encoder for ExactEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.reserve(item.encoded_len());
        item.encode(buf)
            .map_err(|e| Status::internal(format!("cannot encode the response: {e}")))
    }
}
