//! Load and resources: many subscribers that stop reading cost bounded
//! broker memory, and thousands of partitions can be created, written and
//! reopened after a crash.
//!
//! `STRATA_PARTITIONS=10000 cargo test --test it many_partitions -- --nocapture`
//! runs the partition test at full scale (the default, 1,000, runs in CI) and
//! prints the figures.

use std::time::Instant;

use strata::proto::v1::log_client::LogClient;
use strata::proto::v1::{CreateTopicRequest, FetchRequest, Record, SubscribeRequest};

use crate::harness::BrokerProcess;
use crate::log_api::{create_topic, fetch_req, produce_req};

/// Subscribers that never read.
const STALLED: usize = 200;
/// They share this many connections (HTTP/2 connection windows apply per
/// connection; a real fleet of consumers has many).
const CONNECTIONS: usize = 20;
/// `--default-fetch-bytes` of the slow-subscriber broker: the most one
/// subscription response carries.
const FETCH_BYTES: u64 = 64 << 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_subscribers_that_stop_reading_cost_bounded_memory() {
    let b = BrokerProcess::start_with(&["--default-fetch-bytes", &FETCH_BYTES.to_string()]);
    create_topic(&b, "slow", 1).await;
    let mut channels = Vec::new();
    for _ in 0..CONNECTIONS {
        channels.push(b.channel().await);
    }
    let mut stalled = Vec::new();
    for i in 0..STALLED {
        let stream = LogClient::new(channels[i % CONNECTIONS].clone())
            .subscribe(SubscribeRequest {
                topic: "slow".into(),
                partition: 0,
                offset: 0,
            })
            .await
            .unwrap()
            .into_inner();
        stalled.push(stream); // kept open, never read
    }
    let before = b.rss_anon_kib();
    let mut log = b.log().await;
    let value = vec![7u8; 100_000];
    for _ in 0..1100 {
        log.produce(produce_req(
            "slow",
            Some(0),
            vec![Record {
                value: value.clone(),
                ..Default::default()
            }],
        ))
        .await
        .unwrap();
    }
    // Every stalled stream holds at most its channel's responses (2) plus the
    // one being encoded into HTTP/2 frames: 3 fetch-sized buffers; 16 MiB
    // more for the allocator and everything else.
    let bound_kib = ((STALLED as u64 * 3 * FETCH_BYTES) >> 10) + (16 << 10);
    let after = b.rss_anon_kib();
    let grown = after.saturating_sub(before);
    eprintln!(
        "slow subscribers: {STALLED} stalled streams, 110 MB produced; broker heap {before} → \
         {after} KiB (+{grown} KiB, bound {bound_kib} KiB)"
    );
    assert!(
        grown < bound_kib,
        "heap grew by {grown} KiB with {STALLED} stalled subscribers (bound {bound_kib} KiB)"
    );
    // The broker still serves everyone else, and the streams are alive.
    let hw = log
        .fetch(FetchRequest {
            topic: "slow".into(),
            partition: 0,
            offset: 1099,
            max_bytes: 0,
            max_wait_ms: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .high_watermark;
    assert_eq!(hw, 1100);
    let first = stalled[0].message().await.unwrap().unwrap();
    assert_eq!(first.batches[0].base_offset, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_partitions_are_created_written_and_reopened_after_a_crash() {
    let partitions: u32 = std::env::var("STRATA_PARTITIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let per_topic = partitions.min(100);
    let topics = partitions.div_ceil(per_topic);
    let mut b = BrokerProcess::start();
    let started = Instant::now();
    let mut admin = b.admin().await;
    for t in 0..topics {
        admin
            .create_topic(CreateTopicRequest {
                name: format!("t{t}"),
                partitions: per_topic,
                config: None,
            })
            .await
            .unwrap();
    }
    let created = started.elapsed();
    // One batch to every partition, 16 requests in flight.
    let log = b.log().await;
    let value = |t: u32, p: u32| format!("topic {t} partition {p}").into_bytes();
    let all: Vec<(u32, u32)> = (0..topics)
        .flat_map(|t| (0..per_topic).map(move |p| (t, p)))
        .collect();
    for chunk in all.chunks(16) {
        let mut sends = tokio::task::JoinSet::new();
        for &(t, p) in chunk {
            let mut log = log.clone();
            sends.spawn(async move {
                let record = Record {
                    value: value(t, p),
                    ..Default::default()
                };
                log.produce(produce_req(&format!("t{t}"), Some(p), vec![record]))
                    .await
                    .unwrap();
            });
        }
        while let Some(done) = sends.join_next().await {
            done.expect("produce task");
        }
    }
    let written = b.resources();
    b.kill();
    let restarted = Instant::now();
    b.restart();
    let listening = restarted.elapsed();
    let reopened = b.resources();
    // Every partition has its record back, fetched 16 at a time like the
    // writes; the first answer is when the broker started serving.
    let log = b.log().await;
    let mut first_fetch = None;
    for chunk in all.chunks(16) {
        let mut fetches = tokio::task::JoinSet::new();
        for &(t, p) in chunk {
            let mut log = log.clone();
            fetches.spawn(async move {
                let got = log
                    .fetch(fetch_req(&format!("t{t}"), p, 0))
                    .await
                    .unwrap()
                    .into_inner();
                assert_eq!(got.high_watermark, 1, "t{t}/{p}");
                assert_eq!(got.batches[0].records[0].value, value(t, p));
            });
        }
        while let Some(done) = fetches.join_next().await {
            done.expect("fetch task");
        }
        first_fetch.get_or_insert_with(|| restarted.elapsed());
    }
    let first_fetch = first_fetch.expect("at least one partition");
    let serving = restarted.elapsed();
    eprintln!(
        "partitions: {partitions} ({topics} topics) created in {created:?}; after one batch each: \
         RSS {} KiB, heap {} KiB, {} maps, {} fds; kill -9 and restart: listening after \
         {listening:?}, first 16 partitions fetched after {first_fetch:?}, every partition \
         fetched after {serving:?}; reopened: RSS {} KiB, heap {} \
         KiB, {} maps, {} fds",
        written.rss_kib,
        written.rss_anon_kib,
        written.maps,
        written.fds,
        reopened.rss_kib,
        reopened.rss_anon_kib,
        reopened.maps,
        reopened.fds,
    );
    // RELIABILITY.md scenario 12: at most 3 maps per partition (plus the
    // process's own), and far below 1 GiB of memory.
    let base_maps = 1000;
    assert!(written.maps <= 3 * u64::from(partitions) + base_maps);
    assert!(written.rss_kib < 1 << 20, "RSS {} KiB", written.rss_kib);
    assert!(reopened.rss_kib < 1 << 20, "RSS {} KiB", reopened.rss_kib);
}
