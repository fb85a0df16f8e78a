//! The client's [`Consumer`] against a real broker: what it hands out and
//! commits when fetches fail, offsets are reset under it, or it is expelled
//! from its group.

use std::collections::BTreeMap;
use std::time::Duration;

use strata::client::{
    Acks, AutoOffsetReset, Client, Consumer, MemberConfig, Record, ResetTarget, SeekTo,
};

use crate::harness::BrokerProcess;
use crate::log_api::create_topic;

/// Appends values `0..count` to `topic`/`partition`.
async fn produce(client: &Client, topic: &str, partition: u32, count: u32) {
    let records = (0..count)
        .map(|i| Record {
            value: i.to_string().into_bytes(),
            ..Default::default()
        })
        .collect();
    client
        .produce(topic, Some(partition), records, Acks::Leader)
        .await
        .unwrap();
}

/// The group's committed offsets by partition.
async fn committed(client: &Client, group: &str) -> BTreeMap<u32, u64> {
    client
        .fetch_offsets(group, Vec::new())
        .await
        .unwrap()
        .into_iter()
        .map(|o| (o.partition, o.offset))
        .collect()
}

fn config() -> MemberConfig {
    MemberConfig {
        auto_offset_reset: AutoOffsetReset::Earliest,
        auto_commit_interval: None,
        ..MemberConfig::default()
    }
}

/// Polls until `count` records were handed out, returning their offsets.
async fn read(consumer: &mut Consumer, count: usize) -> Vec<u64> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut offsets = Vec::new();
    while offsets.len() < count {
        assert!(tokio::time::Instant::now() < deadline, "read {offsets:?}");
        let batch = consumer.poll(Duration::from_millis(100)).await.unwrap();
        offsets.extend(batch.iter().map(|r| r.record.offset));
    }
    offsets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_partition_does_not_lose_the_records_of_another() {
    let b = BrokerProcess::start();
    create_topic(&b, "two", 2).await;
    let client = Client::connect(&b.addr).await.unwrap();
    produce(&client, "two", 0, 10).await;
    let mut consumer = Consumer::new(client.clone());
    consumer.assign("two", 0, SeekTo::Earliest).await.unwrap();
    // Past the end of an empty partition: its fetch fails at once.
    consumer
        .assign("two", 1, SeekTo::Offset(1000))
        .await
        .unwrap();
    // Both answers are (very likely) waiting before the first poll.
    client.describe_topic("two").await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (mut got, mut failed) = (Vec::new(), false);
    while got.len() < 10 || !failed {
        assert!(tokio::time::Instant::now() < deadline, "{got:?} {failed}");
        match consumer.poll(Duration::from_millis(100)).await {
            Ok(batch) => got.extend(batch.iter().map(|r| r.record.offset)),
            Err(e) => {
                assert_eq!(e.code(), tonic::Code::OutOfRange, "{e}");
                failed = true;
            }
        }
    }
    assert_eq!(got, (0..10).collect::<Vec<u64>>(), "every record, once");
    assert_eq!(consumer.position("two", 0), Some(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_member_follows_a_reset_instead_of_undoing_it() {
    let b = BrokerProcess::start_with(&["--heartbeat-interval-ms", "100"]);
    create_topic(&b, "r", 1).await;
    let client = Client::connect(&b.addr).await.unwrap();
    produce(&client, "r", 0, 20).await;
    let mut member = Consumer::new(client.clone());
    member.join_group("rg", &["r"], config()).await.unwrap();
    assert_eq!(read(&mut member, 20).await, (0..20).collect::<Vec<u64>>());
    member.commit_positions().await.unwrap();
    assert_eq!(committed(&client, "rg").await, BTreeMap::from([(0, 20)]));

    // Replay from 5 while the member is live: its next commit (refused for
    // the old epoch, retried after a heartbeat) must not put back 20.
    client
        .reset_offsets("rg", "r", ResetTarget::Offset(5), false)
        .await
        .unwrap();
    member.commit_positions().await.unwrap();
    assert_eq!(
        committed(&client, "rg").await,
        BTreeMap::from([(0, 5)]),
        "the reset stands"
    );
    assert_eq!(member.position("r", 0), Some(5));
    assert_eq!(read(&mut member, 15).await, (5..20).collect::<Vec<u64>>());

    // A reset learned from a plain heartbeat also moves the member.
    client
        .reset_offsets("rg", "r", ResetTarget::Earliest, false)
        .await
        .unwrap();
    assert_eq!(read(&mut member, 20).await, (0..20).collect::<Vec<u64>>());
    member.leave_group().await.unwrap();
    assert_eq!(committed(&client, "rg").await, BTreeMap::from([(0, 20)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expelled_member_that_joins_again_does_not_commit_what_it_lost() {
    let b = BrokerProcess::start_with(&["--heartbeat-interval-ms", "100"]);
    create_topic(&b, "x", 2).await;
    let client = Client::connect(&b.addr).await.unwrap();
    for p in 0..2 {
        produce(&client, "x", p, 10).await;
    }
    let slow_config = MemberConfig {
        session_timeout: Duration::from_millis(300),
        ..config()
    };
    let mut slow = Consumer::new(client.clone());
    slow.join_group("xg", &["x"], slow_config).await.unwrap();
    read(&mut slow, 20).await;
    // `slow` stops polling: expelled after its session timeout, and its
    // partitions go to `fast`, which reads more and commits.
    let mut fast = Consumer::new(client.clone());
    fast.join_group("xg", &["x"], config()).await.unwrap();
    for p in 0..2 {
        produce(&client, "x", p, 10).await;
    }
    read(&mut fast, 40).await;
    fast.leave_group().await.unwrap();
    assert_eq!(
        committed(&client, "xg").await,
        BTreeMap::from([(0, 20), (1, 20)])
    );

    // `slow` comes back: refused, it joins again and owns both partitions,
    // starting at the committed offsets; its old positions (10) are not
    // committed over them.
    let old_id = slow.member().unwrap().0.to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while slow.assignment().len() != 2 || slow.member().is_some_and(|(id, _)| id == old_id) {
        assert!(tokio::time::Instant::now() < deadline);
        let batch = slow.poll(Duration::from_millis(100)).await.unwrap();
        assert!(batch.is_empty(), "nothing new to read: {batch:?}");
    }
    assert_eq!(slow.position("x", 0), Some(20));
    assert_eq!(slow.position("x", 1), Some(20));
    slow.leave_group().await.unwrap();
    assert_eq!(
        committed(&client, "xg").await,
        BTreeMap::from([(0, 20), (1, 20)]),
        "offsets never go backwards"
    );
}
