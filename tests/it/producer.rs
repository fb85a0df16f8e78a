//! The client library's batching `Producer` against a real broker.

use std::time::Duration;

use strata::client::{Acks, Client, Producer, ProducerConfig, Record};

use crate::harness::BrokerProcess;
use crate::log_api::{create_topic, fetch_all};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_keep_per_partition_order_and_report_every_offset() {
    let b = BrokerProcess::start();
    create_topic(&b, "p", 4).await;
    let client = Client::connect(&b.addr).await.unwrap();
    let config = ProducerConfig {
        batch_records: 37,
        linger: Duration::from_millis(1),
        acks: Acks::Leader,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(client, config);
    let mut deliveries = Vec::new();
    for i in 0..3000u32 {
        let key = format!("user-{}", i % 13);
        let record = Record {
            key: key.clone().into_bytes(),
            value: format!("{key}:{i}").into_bytes(),
            ..Default::default()
        };
        deliveries.push((key, i, producer.send("p", record).await.unwrap()));
    }
    let mut stored_at = Vec::new();
    for (key, i, d) in deliveries {
        let m = d.wait().await.unwrap();
        assert_eq!(
            m.partition,
            strata::broker::produce::partition_for_key(key.as_bytes(), 4)
        );
        stored_at.push((key, i, m));
    }
    producer.close().await;
    let mut partitions = Vec::new();
    for p in 0..4 {
        partitions.push(fetch_all(&b, "p", p, 0).await);
    }
    assert_eq!(partitions.iter().map(|p| p.len()).sum::<usize>(), 3000);
    for (key, i, m) in &stored_at {
        let (offset, record) = &partitions[m.partition as usize][m.offset as usize];
        assert_eq!(*offset, m.offset);
        assert_eq!(
            record.value,
            format!("{key}:{i}").into_bytes(),
            "the reported offset holds the record"
        );
    }
    // Per key (so per partition), offsets follow send order.
    for k in 0..13 {
        let key = format!("user-{k}");
        let offsets: Vec<u64> = stored_at
            .iter()
            .filter(|(kk, _, _)| *kk == key)
            .map(|(_, _, m)| m.offset)
            .collect();
        assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{key} reordered");
    }
}

#[tokio::test]
async fn flush_sends_without_waiting_for_the_linger_and_errors_reach_each_record() {
    let b = BrokerProcess::start();
    create_topic(&b, "f", 1).await;
    let client = Client::connect(&b.addr).await.unwrap();
    let producer = Producer::new(
        client,
        ProducerConfig {
            linger: Duration::from_secs(3600),
            ..ProducerConfig::default()
        },
    );
    let d = producer
        .send(
            "f",
            Record {
                value: b"now".to_vec(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    producer.flush().await;
    assert_eq!(d.wait().await.unwrap().offset, 0);
    let d = producer
        .send(
            "missing",
            Record {
                value: b"x".to_vec(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(d.wait().await.unwrap_err().code(), tonic::Code::NotFound);
    producer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_reads_assigned_partitions_seeks_and_commits() {
    use strata::client::{Consumer, SeekTo};
    let b = BrokerProcess::start();
    create_topic(&b, "c", 2).await;
    let client = Client::connect(&b.addr).await.unwrap();
    for p in 0..2u32 {
        let records = (0..50)
            .map(|i| Record {
                value: format!("{p}-{i}").into_bytes(),
                ..Default::default()
            })
            .collect();
        client
            .produce("c", Some(p), records, Acks::Leader)
            .await
            .unwrap();
    }
    let mut consumer = Consumer::new(client.clone());
    consumer.assign("c", 0, SeekTo::Earliest).await.unwrap();
    consumer.assign("c", 1, SeekTo::Offset(40)).await.unwrap();
    let mut got = Vec::new();
    while got.len() < 60 {
        let batch = consumer.poll(Duration::from_secs(10)).await.unwrap();
        assert!(!batch.is_empty(), "records arrive");
        got.extend(batch);
    }
    assert_eq!(got.iter().filter(|r| r.record.partition == 0).count(), 50);
    assert_eq!(
        got.iter()
            .find(|r| r.record.partition == 1)
            .unwrap()
            .record
            .offset,
        40
    );
    assert_eq!(consumer.position("c", 0), Some(50));
    // Seek back: prefetched records are dropped, reading restarts there.
    consumer.seek("c", 0, SeekTo::Offset(10)).await.unwrap();
    let again = consumer.poll(Duration::from_secs(10)).await.unwrap();
    assert_eq!(again[0].record.offset, 10);
    assert_eq!(again[0].record.value, b"0-10");
    consumer.seek("c", 1, SeekTo::Latest).await.unwrap();
    assert_eq!(consumer.position("c", 1), Some(50));
    consumer.commit("standalone").await.unwrap();
    let committed = client.fetch_offsets("standalone", vec![]).await.unwrap();
    assert_eq!(committed.len(), 2);
    // New records reach a consumer positioned at the end (long-poll).
    client
        .produce(
            "c",
            Some(1),
            vec![Record {
                value: b"late".to_vec(),
                ..Default::default()
            }],
            Acks::Leader,
        )
        .await
        .unwrap();
    let mut late = Vec::new();
    while !late
        .iter()
        .any(|r: &strata::client::TopicRecord| r.record.value == b"late")
    {
        late.extend(consumer.poll(Duration::from_secs(10)).await.unwrap());
    }
}
