//! Bytes that are not the message they claim to be: every request gets a
//! clear status (never INTERNAL, never a crash), and nothing changes.

use bytes::{Buf, BufMut};
use strata::proto::v1::DescribeTopicRequest;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Code, Status};

use crate::harness::BrokerProcess;
use crate::log_api::create_topic;

/// Sends raw bytes as a request message and returns raw response bytes.
#[derive(Debug, Clone, Default)]
struct RawCodec;

struct RawEncoder;
struct RawDecoder;

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

async fn call(b: &BrokerProcess, path: &'static str, body: Vec<u8>) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(b.channel().await);
    grpc.ready().await.expect("ready");
    grpc.unary(
        tonic::Request::new(body),
        tonic::codegen::http::uri::PathAndQuery::from_static(path),
        RawCodec,
    )
    .await
    .map(|r| r.into_inner())
}

#[tokio::test]
async fn malformed_messages_get_invalid_argument_and_change_nothing() {
    let b = BrokerProcess::start();
    create_topic(&b, "t", 1).await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated varint", vec![0x08, 0xff]),
        ("length past the end", vec![0x0a, 0x7f, b'a']),
        ("wrong wire type for topic", vec![0x0d, 1, 2, 3, 4]),
        ("invalid UTF-8 topic", vec![0x0a, 0x02, 0xc3, 0x28]),
        (
            "records field of garbage",
            vec![0x0a, 0x01, b't', 0x1a, 0x03, 0xff, 0xff, 0xff],
        ),
    ];
    for (what, body) in &cases {
        for path in [
            "/strata.v1.Log/Produce",
            "/strata.v1.Log/Fetch",
            "/strata.v1.Admin/CreateTopic",
        ] {
            let e = call(&b, path, body.clone()).await.expect_err(what);
            assert_eq!(
                e.code(),
                Code::InvalidArgument,
                "{path}, {what}: {}",
                e.message()
            );
        }
    }
    // The broker is alive and nothing was written.
    let d = b
        .admin()
        .await
        .describe_topic(DescribeTopicRequest { name: "t".into() })
        .await
        .unwrap()
        .into_inner()
        .topic
        .unwrap();
    assert_eq!(d.partitions[0].high_watermark, 0);
}
