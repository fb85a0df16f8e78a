//! The limit matrix (RELIABILITY.md scenario 21): for every limit a client
//! can reach, a request exactly at the limit succeeds and one just over it is
//! refused with `INVALID_ARGUMENT` or `RESOURCE_EXHAUSTED`, a message that
//! names the setting and the allowed value, and no side effect (log end,
//! topic tree, metadata files and group lists as they were). Also the two
//! transport limits: HTTP/2 streams per connection (the excess waits, nothing
//! breaks) and connections (the excess is closed, the rest keep working).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use strata::proto::v1::admin_client::AdminClient;
use strata::proto::v1::groups_client::GroupsClient;
use strata::proto::v1::log_client::LogClient;
use strata::proto::v1::{
    CreatePartitionsRequest, CreateTopicRequest, DescribeGroupRequest, DescribeTopicRequest,
    FetchRequest, HeartbeatRequest, ListGroupsRequest, Record, SubscribeRequest,
};
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::harness::BrokerProcess;
use crate::log_api::produce_req;

/// Fails a wait longer than this (a failure detector, not synchronization).
const PATIENCE: Duration = Duration::from_secs(30);

/// Every file under `meta/` and `topics/` with the bytes of the metadata
/// files (segment contents are covered by the high watermarks).
fn tree(data_dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![data_dir.join("meta"), data_dir.join("topics")];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path.clone());
            }
            let name = path.strip_prefix(data_dir).unwrap().display().to_string();
            let bytes = if name.ends_with(".toml") {
                std::fs::read(&path).unwrap_or_default()
            } else {
                Vec::new()
            };
            out.insert(name, bytes);
        }
    }
    out
}

/// Checks a refusal: its code, and that its message names `setting` and `value`.
fn refused<T: std::fmt::Debug>(r: Result<T, Status>, code: Code, setting: &str, value: &str) {
    let e = r.expect_err("the call over the limit must fail");
    assert_eq!(e.code(), code, "{}", e.message());
    assert!(
        e.message().contains(setting),
        "names {setting}: {}",
        e.message()
    );
    assert!(
        e.message().contains(value),
        "names {value}: {}",
        e.message()
    );
}

fn topic(name: &str, partitions: u32) -> CreateTopicRequest {
    CreateTopicRequest {
        name: name.into(),
        partitions,
        config: None,
    }
}

fn join(group: &str) -> HeartbeatRequest {
    HeartbeatRequest {
        group: group.into(),
        member_id: String::new(),
        member_epoch: 0,
        topics: vec!["t".into()],
        session_timeout_ms: 60_000,
        owned: vec![],
    }
}

/// A record whose encoded size is `bytes` (for 131..=16386 bytes: one tag
/// byte and two length bytes before the value).
fn record_of(bytes: usize) -> Record {
    Record {
        value: vec![b'v'; bytes - 3],
        ..Default::default()
    }
}

async fn high_watermark(admin: &mut AdminClient<Channel>, name: &str) -> u64 {
    admin
        .describe_topic(DescribeTopicRequest { name: name.into() })
        .await
        .unwrap()
        .into_inner()
        .topic
        .unwrap()
        .partitions[0]
        .high_watermark
}

#[tokio::test]
async fn every_limit_allows_its_value_and_refuses_one_more_without_side_effects() {
    let b = BrokerProcess::start_with(&[
        "--max-record-bytes",
        "1000",
        "--max-request-bytes",
        "20000",
        "--max-partitions-per-topic",
        "4",
        "--max-partitions",
        "6",
        "--max-fetch-bytes",
        "65536",
        "--default-fetch-bytes",
        "4096",
        "--max-groups",
        "2",
        "--max-members-per-group",
        "2",
        "--max-wait-ms",
        "100",
    ]);
    let channel = b.channel().await;
    let mut admin = AdminClient::new(channel.clone());
    let mut log = LogClient::new(channel.clone());
    let mut groups = GroupsClient::new(channel);

    // Topic name: 249 characters, then 250.
    let before = tree(&b.data_dir);
    let long = "n".repeat(250);
    refused(
        admin.create_topic(topic(&long, 1)).await,
        Code::InvalidArgument,
        "names are 1-249 characters",
        "249",
    );
    assert_eq!(tree(&b.data_dir), before, "a refused name leaves no trace");
    admin.create_topic(topic(&long[..249], 1)).await.unwrap();

    // Partitions per topic: 4, then 5 (at creation and when growing).
    let before = tree(&b.data_dir);
    refused(
        admin.create_topic(topic("five", 5)).await,
        Code::ResourceExhausted,
        "limits.max_partitions_per_topic",
        "limit is 4",
    );
    assert_eq!(tree(&b.data_dir), before);
    admin.create_topic(topic("t", 4)).await.unwrap();
    let before = tree(&b.data_dir);
    refused(
        admin
            .create_partitions(CreatePartitionsRequest {
                name: "t".into(),
                total_partitions: 5,
            })
            .await,
        Code::ResourceExhausted,
        "limits.max_partitions_per_topic",
        "limit is 4",
    );
    assert_eq!(tree(&b.data_dir), before);

    // Partitions on the broker: 5 so far; the 6th fits, a 7th does not.
    admin.create_topic(topic("sixth", 1)).await.unwrap();
    let before = tree(&b.data_dir);
    refused(
        admin.create_topic(topic("seventh", 1)).await,
        Code::ResourceExhausted,
        "limits.max_partitions",
        "limit is 6",
    );
    assert_eq!(tree(&b.data_dir), before);

    // Record size: an encoded record of 1000 bytes, then 1001.
    log.produce(produce_req("sixth", Some(0), vec![record_of(1000)]))
        .await
        .unwrap();
    refused(
        log.produce(produce_req("sixth", Some(0), vec![record_of(1001)]))
            .await,
        Code::InvalidArgument,
        "max_record_bytes",
        "1000 bytes",
    );
    assert_eq!(high_watermark(&mut admin, "sixth").await, 1);

    // Request size: 20 records of 997 bytes are 20 × 1000 payload bytes
    // (each with its tag and length), exactly the limit; one byte more is over.
    let records = |extra: usize| {
        let mut r: Vec<Record> = (0..20).map(|_| record_of(997)).collect();
        r[0] = record_of(997 + extra);
        r
    };
    log.produce(produce_req("sixth", Some(0), records(0)))
        .await
        .unwrap();
    refused(
        log.produce(produce_req("sixth", Some(0), records(1))).await,
        Code::ResourceExhausted,
        "limits.max_request_bytes",
        "limit is 20000",
    );
    assert_eq!(high_watermark(&mut admin, "sixth").await, 21);

    // Fetch size: 65536, then 65537.
    let fetch = |max_bytes| FetchRequest {
        topic: "sixth".into(),
        partition: 0,
        offset: 0,
        max_bytes,
        max_wait_ms: 0,
    };
    let got = log.fetch(fetch(65536)).await.unwrap().into_inner();
    assert_eq!(got.high_watermark, 21);
    refused(
        log.fetch(fetch(65537)).await,
        Code::InvalidArgument,
        "limits.max_fetch_bytes",
        "65536",
    );

    // Long-poll wait: asking for 1000 s at the log end is clamped to the
    // configured 100 ms, so the fetch answers (empty) instead of hanging.
    let mut at_end = fetch(0);
    at_end.offset = 21;
    at_end.max_wait_ms = 1_000_000;
    let got = tokio::time::timeout(PATIENCE, log.fetch(at_end))
        .await
        .expect("the wait is clamped to limits.max_wait_ms")
        .unwrap()
        .into_inner();
    assert!(got.batches.is_empty());

    // Session timeout: 100 ms is the smallest allowed, 99 is refused (and
    // creates no group). The 100 ms member is g2's only one: its expiry
    // changes nothing below (an empty group is still listed).
    let mut short = join("g2");
    short.session_timeout_ms = 99;
    refused(
        groups.heartbeat(short).await,
        Code::InvalidArgument,
        "session_timeout_ms",
        "100..=300000",
    );
    let mut shortest = join("g2");
    shortest.session_timeout_ms = 100;

    // Groups: 2, then a third; members per group: 2, then a third.
    groups.heartbeat(shortest).await.unwrap();
    groups.heartbeat(join("g1")).await.unwrap();
    refused(
        groups.heartbeat(join("g3")).await,
        Code::ResourceExhausted,
        "groups.max_groups",
        "limit is 2",
    );
    groups.heartbeat(join("g1")).await.unwrap();
    refused(
        groups.heartbeat(join("g1")).await,
        Code::ResourceExhausted,
        "groups.max_members_per_group",
        "limit is 2",
    );
    let listed = groups
        .list_groups(ListGroupsRequest {})
        .await
        .unwrap()
        .into_inner()
        .groups;
    let names: Vec<&str> = listed.iter().map(|g| g.group.as_str()).collect();
    assert_eq!(names, ["g1", "g2"], "the refused group was not created");
    let g1 = groups
        .describe_group(DescribeGroupRequest { group: "g1".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(g1.members.len(), 2, "the refused member did not join");

    // The longest name is also deleted and created again.
    admin
        .delete_topic(strata::proto::v1::DeleteTopicRequest {
            name: long[..249].into(),
        })
        .await
        .unwrap();
    admin.create_topic(topic(&long[..249], 1)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_over_the_per_connection_limit_wait_for_a_free_slot() {
    let b = BrokerProcess::start_with(&["--max-concurrent-streams", "4"]);
    crate::log_api::create_topic(&b, "s", 1).await;
    // Everything below shares ONE connection.
    let channel = b.channel().await;
    let subscribe = |channel: Channel| async move {
        LogClient::new(channel)
            .subscribe(SubscribeRequest {
                topic: "s".into(),
                partition: 0,
                offset: 0,
            })
            .await
            .map(|r| r.into_inner())
    };
    let mut open = Vec::new();
    for _ in 0..4 {
        open.push(subscribe(channel.clone()).await.unwrap());
    }
    // Sixteen more on the same connection: HTTP/2 makes them wait for a
    // slot. Each reads the first record and closes, freeing its slot.
    let waiting: Vec<_> = (0..16)
        .map(|_| {
            let channel = channel.clone();
            tokio::spawn(async move {
                let mut s = subscribe(channel).await.unwrap();
                let m = tokio::time::timeout(PATIENCE, s.message()).await;
                m.expect("the record").unwrap().unwrap().batches[0].base_offset
            })
        })
        .collect();
    // A record reaches the four open streams; the broker is fine.
    LogClient::new(b.channel().await)
        .produce(produce_req("s", Some(0), vec![record_of(200)]))
        .await
        .unwrap();
    for s in &mut open {
        let m = tokio::time::timeout(PATIENCE, s.message())
            .await
            .expect("an open stream gets the record")
            .unwrap()
            .unwrap();
        assert_eq!(m.batches[0].base_offset, 0);
    }
    assert!(
        waiting.iter().all(|w| !w.is_finished()),
        "a fifth stream opened while four were open"
    );
    // Closing the open streams lets the waiting ones in, four at a time;
    // each gets the record.
    drop(open);
    for w in waiting {
        let offset = tokio::time::timeout(PATIENCE, w)
            .await
            .expect("a waiting stream gets a slot")
            .unwrap();
        assert_eq!(offset, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_are_closed_and_the_others_keep_working() {
    let b = BrokerProcess::start_with(&["--max-connections", "2"]);
    // Only these two connections, from the start: a helper's short-lived
    // connection could still hold its slot when the next one arrives.
    let first = b.channel().await;
    let second = b.channel().await;
    AdminClient::new(first.clone())
        .create_topic(topic("c", 1))
        .await
        .unwrap();
    for c in [&first, &second] {
        AdminClient::new(c.clone())
            .describe_topic(DescribeTopicRequest { name: "c".into() })
            .await
            .unwrap();
    }
    // The third connection is closed by the broker: connecting or the first
    // call fails with UNAVAILABLE, and nothing is created.
    let third = crate::harness::try_channel_to(&b.addr).await;
    if let Ok(third) = third {
        let e = AdminClient::new(third)
            .create_topic(topic("never", 1))
            .await
            .unwrap_err();
        // tonic reports a connection closed under a call as UNAVAILABLE,
        // UNKNOWN ("transport error") or CANCELLED ("operation was
        // canceled: connection closed"), depending on when it notices.
        assert!(
            matches!(
                e.code(),
                Code::Unavailable | Code::Unknown | Code::Cancelled
            ),
            "{e:?}"
        );
    }
    // The two admitted connections still work, and the refused call left
    // nothing behind.
    let mut admin = AdminClient::new(first.clone());
    let e = admin
        .describe_topic(DescribeTopicRequest {
            name: "never".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    LogClient::new(second.clone())
        .produce(produce_req("c", Some(0), vec![record_of(200)]))
        .await
        .unwrap();
    // Closing one frees its slot: a new connection is admitted once the
    // broker has seen the close (retried until then; bounded).
    drop(second);
    let mut admitted = false;
    for _ in 0..200 {
        if let Ok(c) = crate::harness::try_channel_to(&b.addr).await {
            let call = AdminClient::new(c)
                .describe_topic(DescribeTopicRequest { name: "c".into() })
                .await;
            if call.is_ok() {
                admitted = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(admitted, "a slot freed by a closed connection is reused");
}

#[tokio::test]
async fn subscribers_past_the_lag_limit_are_cut_off_and_the_rest_keep_going() {
    const LAG: u64 = 2000;
    let b = BrokerProcess::start_with(&[
        "--max-subscriber-lag-records",
        &LAG.to_string(),
        "--default-fetch-bytes",
        "65536",
    ]);
    let channel = b.channel().await;
    let mut admin = AdminClient::new(channel.clone());
    let mut log = LogClient::new(channel.clone()).max_encoding_message_size(64 << 20);
    admin.create_topic(topic("lag", 1)).await.unwrap();
    let subscribe = |offset: u64| SubscribeRequest {
        topic: "lag".into(),
        partition: 0,
        offset,
    };
    let batch = |n: usize| (0..n).map(|_| record_of(1000)).collect::<Vec<_>>();

    // At the limit a subscription starts; one record more and it is refused.
    log.produce(produce_req("lag", Some(0), batch(LAG as usize)))
        .await
        .unwrap();
    LogClient::new(channel.clone())
        .subscribe(subscribe(0))
        .await
        .expect("a subscription exactly at the lag limit starts");
    log.produce(produce_req("lag", Some(0), batch(1)))
        .await
        .unwrap();
    refused(
        LogClient::new(channel.clone())
            .subscribe(subscribe(0))
            .await,
        Code::ResourceExhausted,
        "max_subscriber_lag_records",
        &LAG.to_string(),
    );

    // Two followers from the end: one stalls (its own connection, so its
    // HTTP/2 window fills and it stops being served), one keeps reading.
    let start = LAG + 1;
    let mut stalled = LogClient::new(b.channel().await)
        .subscribe(subscribe(start))
        .await
        .unwrap()
        .into_inner();
    let mut reader = LogClient::new(b.channel().await)
        .subscribe(subscribe(start))
        .await
        .unwrap()
        .into_inner();
    // 16 MB: far more than the stalled client's HTTP/2 windows hold.
    let (batches, per_batch) = (80u64, 200u64);
    let end = start + batches * per_batch;
    let producing = tokio::spawn(async move {
        for _ in 0..batches {
            log.produce(produce_req("lag", Some(0), batch(per_batch as usize)))
                .await
                .expect("producers are never held up by a lagging subscriber");
        }
    });
    let mut next = start;
    while next < end {
        let m = tokio::time::timeout(PATIENCE, reader.message())
            .await
            .expect("the reader keeps being served")
            .expect("the reader that keeps up is not cut off")
            .expect("the stream goes on");
        for batch in &m.batches {
            assert_eq!(batch.base_offset, next, "offsets are dense");
            next += batch.records.len() as u64;
        }
    }
    producing.await.unwrap();

    // The stalled stream delivers what it had buffered, densely, then ends
    // with RESOURCE_EXHAUSTED once it would read too far behind.
    let mut delivered = start;
    let cut_off = loop {
        let m = tokio::time::timeout(PATIENCE, stalled.message())
            .await
            .expect("the stalled stream answers once read");
        match m {
            Ok(Some(m)) => {
                for batch in &m.batches {
                    assert_eq!(batch.base_offset, delivered, "offsets are dense");
                    delivered += batch.records.len() as u64;
                }
            }
            Ok(None) => panic!("the stream ended without an error"),
            Err(status) => break status,
        }
    };
    assert_eq!(
        cut_off.code(),
        Code::ResourceExhausted,
        "{}",
        cut_off.message()
    );
    assert!(
        cut_off.message().contains("max_subscriber_lag_records")
            && cut_off.message().contains(&format!("offset {delivered}")),
        "names the setting and where the stream stopped: {}",
        cut_off.message()
    );
    assert!(delivered < end - LAG, "it was cut off behind the limit");
    assert_eq!(high_watermark(&mut admin, "lag").await, end, "nothing lost");
}
