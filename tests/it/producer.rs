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
