//! The `Log` service on a real broker process.

use std::time::Duration;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use strata::proto::v1::{
    Acks, CreateTopicRequest, DescribeTopicRequest, FetchRequest, Header, ListOffsetsRequest,
    OffsetSpec, ProduceRequest, Record, SubscribeRequest, TopicConfig,
};
use tonic::Code;

use crate::harness::BrokerProcess;

pub async fn create_topic(b: &BrokerProcess, name: &str, partitions: u32) {
    b.admin()
        .await
        .create_topic(CreateTopicRequest {
            name: name.into(),
            partitions,
            config: None,
        })
        .await
        .expect("create topic");
}

pub fn record(value: &[u8]) -> Record {
    Record {
        value: value.to_vec(),
        ..Default::default()
    }
}

pub fn produce_req(topic: &str, partition: Option<u32>, records: Vec<Record>) -> ProduceRequest {
    ProduceRequest {
        topic: topic.into(),
        partition,
        records,
        ..Default::default()
    }
}

pub fn fetch_req(topic: &str, partition: u32, offset: u64) -> FetchRequest {
    FetchRequest {
        topic: topic.into(),
        partition,
        offset,
        max_bytes: 0,
        max_wait_ms: 0,
    }
}

/// Fetches everything from `offset` to the high watermark, flattening records
/// into (offset, record).
pub async fn fetch_all(
    b: &BrokerProcess,
    topic: &str,
    partition: u32,
    mut offset: u64,
) -> Vec<(u64, Record)> {
    let mut log = b.log().await;
    let mut out = Vec::new();
    loop {
        let resp = log
            .fetch(fetch_req(topic, partition, offset))
            .await
            .expect("fetch")
            .into_inner();
        for batch in resp.batches {
            for (i, r) in batch.records.into_iter().enumerate() {
                out.push((batch.base_offset + i as u64, r));
            }
        }
        match out.last() {
            Some((o, _)) if o + 1 < resp.high_watermark => offset = o + 1,
            _ => return out,
        }
    }
}

fn arb_record() -> impl Strategy<Value = Record> {
    (
        proptest::collection::vec(any::<u8>(), 0..20),
        proptest::collection::vec(any::<u8>(), 0..300),
        proptest::collection::vec(
            ("[a-z]{0,5}", proptest::collection::vec(any::<u8>(), 0..10)),
            0..3,
        ),
        0i64..2_000_000_000_000,
    )
        .prop_map(|(key, value, headers, ts)| Record {
            key,
            value,
            headers: headers
                .into_iter()
                .map(|(key, value)| Header { key, value })
                .collect(),
            timestamp_ms: ts,
        })
}

#[tokio::test]
async fn round_trip_random_records_with_headers() {
    let b = BrokerProcess::start();
    create_topic(&b, "rt", 1).await;
    let mut log = b.log().await;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = proptest::collection::vec(proptest::collection::vec(arb_record(), 1..20), 1..20);
    let batches = strategy.new_tree(&mut runner).unwrap().current();
    let mut expected = Vec::new();
    for batch in batches {
        let resp = log
            .produce(produce_req("rt", Some(0), batch.clone()))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(resp.appends[0].base_offset, expected.len() as u64);
        assert_eq!(resp.appends[0].record_count as usize, batch.len());
        expected.extend(batch);
    }
    let got = fetch_all(&b, "rt", 0, 0).await;
    assert_eq!(got.len(), expected.len());
    for (i, ((offset, r), e)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(*offset, i as u64, "offsets are dense");
        assert_eq!(r, e, "record {i} comes back byte for byte");
    }
}

#[tokio::test]
async fn fetch_starts_exactly_at_any_offset_inside_a_batch() {
    let b = BrokerProcess::start();
    create_topic(&b, "mid", 1).await;
    let mut log = b.log().await;
    let records: Vec<_> = (0..10)
        .map(|i| record(format!("v{i}").as_bytes()))
        .collect();
    log.produce(produce_req("mid", Some(0), records))
        .await
        .unwrap();
    for start in 0..10u64 {
        let resp = log
            .fetch(fetch_req("mid", 0, start))
            .await
            .unwrap()
            .into_inner();
        let first = &resp.batches[0];
        assert_eq!(first.base_offset, start);
        assert_eq!(first.records[0].value, format!("v{start}").into_bytes());
        assert_eq!(first.records.len() as u64, 10 - start);
        assert_eq!(resp.high_watermark, 10);
    }
    // At the end: empty, not an error.
    let resp = log
        .fetch(fetch_req("mid", 0, 10))
        .await
        .unwrap()
        .into_inner();
    assert!(resp.batches.is_empty());
    // Past the end: OUT_OF_RANGE naming the valid range.
    let err = log.fetch(fetch_req("mid", 0, 11)).await.unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange);
    assert!(err.message().contains("0..=10"), "{}", err.message());
}

#[tokio::test]
async fn long_poll_is_woken_by_a_produce() {
    let b = BrokerProcess::start();
    create_topic(&b, "lp", 1).await;
    let mut waiter = b.log().await;
    let poll = tokio::spawn(async move {
        let mut req = fetch_req("lp", 0, 0);
        req.max_wait_ms = 30_000;
        waiter.fetch(req).await.unwrap().into_inner()
    });
    // The poll is parked; a produce must wake it with the new record.
    let mut log = b.log().await;
    // Give the poll a chance to be registered first is not needed: if the
    // produce lands before the fetch, the fetch returns the data at once.
    log.produce(produce_req("lp", Some(0), vec![record(b"wake")]))
        .await
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(20), poll)
        .await
        .expect("long poll returned before its 30 s deadline")
        .unwrap();
    assert_eq!(resp.batches[0].records[0].value, b"wake");
    // A poll with nothing to return comes back empty when its time is up.
    let mut req = fetch_req("lp", 0, 1);
    req.max_wait_ms = 50;
    let resp = log.fetch(req).await.unwrap().into_inner();
    assert!(resp.batches.is_empty());
    assert_eq!(resp.high_watermark, 1);
}

#[tokio::test]
async fn subscribe_streams_history_then_live_records() {
    let b = BrokerProcess::start();
    create_topic(&b, "sub", 1).await;
    let mut log = b.log().await;
    for i in 0..3 {
        log.produce(produce_req(
            "sub",
            Some(0),
            vec![record(format!("old{i}").as_bytes())],
        ))
        .await
        .unwrap();
    }
    let mut stream = log
        .subscribe(SubscribeRequest {
            topic: "sub".into(),
            partition: 0,
            offset: 1,
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let msg = stream.message().await.unwrap().expect("stream open");
        for batch in msg.batches {
            for (i, r) in batch.records.into_iter().enumerate() {
                seen.push((batch.base_offset + i as u64, r.value));
            }
        }
    }
    assert_eq!(seen, vec![(1, b"old1".to_vec()), (2, b"old2".to_vec())]);
    let mut producer = b.log().await;
    producer
        .produce(produce_req(
            "sub",
            Some(0),
            vec![record(b"new3"), record(b"new4")],
        ))
        .await
        .unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(20), stream.message())
        .await
        .expect("live record delivered")
        .unwrap()
        .unwrap();
    assert_eq!(msg.batches[0].base_offset, 3);
    assert_eq!(msg.batches[0].records[1].value, b"new4");
}

#[tokio::test]
async fn keys_pick_stable_partitions_and_keyless_requests_rotate() {
    let b = BrokerProcess::start();
    create_topic(&b, "keys", 4).await;
    let mut log = b.log().await;
    let mut partitions_of_key = std::collections::HashMap::new();
    for round in 0..3 {
        for k in 0..8 {
            let key = format!("user-{k}");
            let r = Record {
                key: key.clone().into_bytes(),
                value: format!("{round}").into_bytes(),
                ..Default::default()
            };
            let resp = log
                .produce(produce_req("keys", None, vec![r]))
                .await
                .unwrap()
                .into_inner();
            let p = resp.appends[0].partition;
            assert_eq!(
                *partitions_of_key.entry(key).or_insert(p),
                p,
                "a key always maps to one partition"
            );
            assert_eq!(
                p,
                strata::broker::produce::partition_for_key(format!("user-{k}").as_bytes(), 4)
            );
        }
    }
    let mut seen = std::collections::HashSet::new();
    for _ in 0..4 {
        let resp = log
            .produce(produce_req("keys", None, vec![record(b"x")]))
            .await
            .unwrap()
            .into_inner();
        seen.insert(resp.appends[0].partition);
    }
    assert_eq!(
        seen.len(),
        4,
        "keyless requests rotate over every partition"
    );
}

#[tokio::test]
async fn durable_acks_and_list_offsets() {
    let b = BrokerProcess::start();
    create_topic(&b, "dur", 1).await;
    let mut log = b.log().await;
    let before = strata::storage::now_ms();
    let mut req = produce_req("dur", Some(0), vec![record(b"a"), record(b"b")]);
    req.acks = Acks::Durable as i32;
    let resp = log.produce(req).await.unwrap().into_inner();
    assert_eq!(resp.appends[0].base_offset, 0);
    assert!(resp.appends[0].append_time_ms >= before);
    let q = |spec: OffsetSpec, ts: i64| {
        let mut log = log.clone();
        async move {
            log.list_offsets(ListOffsetsRequest {
                topic: "dur".into(),
                partition: 0,
                spec: spec as i32,
                timestamp_ms: ts,
            })
            .await
            .unwrap()
            .into_inner()
        }
    };
    assert_eq!(q(OffsetSpec::Earliest, 0).await.offset, 0);
    assert_eq!(q(OffsetSpec::Latest, 0).await.offset, 2);
    assert_eq!(q(OffsetSpec::Timestamp, before).await.offset, 0);
    assert_eq!(q(OffsetSpec::Timestamp, i64::MAX).await.offset, 2);
}

#[tokio::test]
async fn errors_say_what_is_wrong_and_change_nothing() {
    let b = BrokerProcess::start();
    let mut admin = b.admin().await;
    admin
        .create_topic(CreateTopicRequest {
            name: "small".into(),
            partitions: 2,
            config: Some(TopicConfig {
                max_record_bytes: Some(100),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let mut log = b.log().await;

    let e = code(
        log.produce(produce_req("nope", None, vec![record(b"x")]))
            .await,
    );
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains("'nope'"));
    let e = code(
        log.produce(produce_req("small", Some(2), vec![record(b"x")]))
            .await,
    );
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains("0..2"), "{}", e.message());
    let e = code(log.produce(produce_req("small", Some(0), vec![])).await);
    assert_eq!(e.code(), Code::InvalidArgument);
    // At the limit is fine, one byte over is refused.
    // An encoded record of 98 value bytes is 100 bytes (1 tag byte, 1 length byte).
    let at_limit = Record {
        value: vec![1; 98],
        ..Default::default()
    };
    log.produce(produce_req("small", Some(0), vec![at_limit]))
        .await
        .unwrap();
    let over = Record {
        value: vec![1; 99],
        ..Default::default()
    };
    let e = code(
        log.produce(produce_req("small", Some(0), vec![record(b"ok"), over]))
            .await,
    );
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("100"), "{}", e.message());
    let mut bad_acks = produce_req("small", Some(0), vec![record(b"x")]);
    bad_acks.acks = 7;
    assert_eq!(
        code(log.produce(bad_acks).await).code(),
        Code::InvalidArgument
    );
    let mut huge_fetch = fetch_req("small", 0, 0);
    huge_fetch.max_bytes = u32::MAX;
    assert_eq!(
        code(log.fetch(huge_fetch).await).code(),
        Code::InvalidArgument
    );
    let e = code(
        log.list_offsets(ListOffsetsRequest {
            topic: "small".into(),
            partition: 0,
            spec: 9,
            timestamp_ms: 0,
        })
        .await,
    );
    assert_eq!(e.code(), Code::InvalidArgument);
    // Nothing the rejected requests carried was written.
    let d = admin
        .describe_topic(DescribeTopicRequest {
            name: "small".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .topic
        .unwrap();
    assert_eq!(d.partitions[0].high_watermark, 1);
    assert_eq!(d.partitions[1].high_watermark, 0);
}

#[tokio::test]
async fn a_subscriber_that_stops_reading_costs_bounded_memory() {
    let b = BrokerProcess::start();
    create_topic(&b, "slow", 1).await;
    let mut log = b.log().await;
    // A subscriber that never reads after opening the stream.
    let _stalled = b
        .log()
        .await
        .subscribe(SubscribeRequest {
            topic: "slow".into(),
            partition: 0,
            offset: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let before = b.rss_anon_kib();
    let value = vec![7u8; 100_000];
    for _ in 0..1000 {
        log.produce(produce_req("slow", Some(0), vec![record(&value)]))
            .await
            .unwrap();
    }
    let after = b.rss_anon_kib();
    let d = b
        .admin()
        .await
        .describe_topic(DescribeTopicRequest {
            name: "slow".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .topic
        .unwrap();
    assert_eq!(
        d.partitions[0].high_watermark, 1000,
        "the producer was never blocked"
    );
    // 100 MB went through; the stalled stream may buffer a few fetches' worth.
    assert!(
        after.saturating_sub(before) < 48 * 1024,
        "heap grew by {} KiB while a subscriber stalled",
        after - before
    );
}

/// The error of a call that must fail.
fn code<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>) -> tonic::Status {
    r.expect_err("the call must fail")
}

#[tokio::test]
async fn request_size_limit_is_ours_on_both_sides_of_tonics_limit() {
    // Strata's limit: 1 MiB; tonic's own sits 1 MiB above it.
    let b = BrokerProcess::start_with(&["--max-request-bytes", "1048576"]);
    create_topic(&b, "big", 1).await;
    let mut log = b.log().await;
    let values = |total: usize| -> Vec<Record> {
        (0..total / 100_000)
            .map(|_| record(&vec![3u8; 99_990]))
            .collect()
    };
    // Under the limit: accepted.
    log.produce(produce_req("big", Some(0), values(1_000_000)))
        .await
        .unwrap();
    // Over Strata's limit but under tonic's: our check answers.
    let e = code(
        log.produce(produce_req("big", Some(0), values(1_500_000)))
            .await,
    );
    assert_eq!(e.code(), Code::ResourceExhausted, "{}", e.message());
    assert!(e.message().contains("max_request_bytes"), "{}", e.message());
    // Over tonic's limit too: still our code and message, never OUT_OF_RANGE.
    let e = code(
        log.produce(produce_req("big", Some(0), values(3_000_000)))
            .await,
    );
    assert_eq!(e.code(), Code::ResourceExhausted, "{}", e.message());
    assert!(e.message().contains("max_request_bytes"), "{}", e.message());
    let resp = log
        .fetch(fetch_req("big", 0, 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        resp.high_watermark, 10,
        "only the accepted request was written"
    );
}

/// Both reflection protocols list Strata's services: tools still split
/// between `v1` (grpcurl ≥ 1.9) and `v1alpha` (Python's grpcio-reflection,
/// older grpcurl, Postman).
#[tokio::test]
async fn reflection_v1_and_v1alpha_both_list_the_services() {
    use tonic_reflection::pb::{v1, v1alpha};
    let b = BrokerProcess::start();
    let expected = [
        "strata.v1.Admin",
        "strata.v1.Groups",
        "strata.v1.Log",
        "grpc.health.v1.Health",
    ];

    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut stream = v1::server_reflection_client::ServerReflectionClient::new(b.channel().await)
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect("v1 reflection")
        .into_inner();
    let reply = stream.message().await.unwrap().expect("a v1 reply");
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        reply.message_response
    else {
        panic!("not a service list: {reply:?}");
    };
    let v1_names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();

    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut stream =
        v1alpha::server_reflection_client::ServerReflectionClient::new(b.channel().await)
            .server_reflection_info(tokio_stream::iter(vec![request]))
            .await
            .expect("v1alpha reflection")
            .into_inner();
    let reply = stream.message().await.unwrap().expect("a v1alpha reply");
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        reply.message_response
    else {
        panic!("not a service list: {reply:?}");
    };
    let v1alpha_names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();

    for name in expected {
        assert!(
            v1_names.iter().any(|n| n == name),
            "v1 lacks {name}: {v1_names:?}"
        );
        assert!(
            v1alpha_names.iter().any(|n| n == name),
            "v1alpha lacks {name}: {v1alpha_names:?}"
        );
    }
}
