//! The client library's batching `Producer` against a real broker.

use std::time::Duration;

use strata::client::{Acks, Client, Producer, ProducerConfig, Record};

use crate::harness::{free_port, BrokerProcess};
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

/// A batch the broker refuses for good (a record over the size limit) fails
/// its own records only: the next batch is numbered in a new epoch instead
/// of waiting for sequence numbers that will never be stored, so it is
/// stored at once rather than refused as out of order after retries.
#[tokio::test]
async fn a_refused_batch_does_not_fail_the_batches_after_it() {
    let b = BrokerProcess::start_with(&["--max-record-bytes", "1000"]);
    create_topic(&b, "r", 1).await;
    let client = Client::connect(&b.addr).await.unwrap();
    let producer = Producer::new(
        client.clone(),
        ProducerConfig {
            linger: Duration::from_secs(3600),
            retries: 0,
            ..ProducerConfig::default()
        },
    );
    let value = |len: usize| Record {
        value: vec![b'v'; len],
        ..Default::default()
    };
    for (len, expect_ok) in [(10, true), (2000, false), (20, true), (30, true)] {
        let d = producer.send("r", value(len)).await.unwrap();
        producer.flush().await;
        let result = d.wait().await;
        if expect_ok {
            result.unwrap_or_else(|e| panic!("record of {len} bytes: {e}"));
        } else {
            assert_eq!(result.unwrap_err().code(), tonic::Code::InvalidArgument);
        }
    }
    producer.close().await;
    let stored = client.fetch("r", 0, 0, 0, 0).await.unwrap();
    let lens: Vec<usize> = stored
        .batches
        .iter()
        .flat_map(|b| b.records.iter().map(|r| r.value.len()))
        .collect();
    assert_eq!(lens, [10, 20, 30]);
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

/// A produce request of an idempotent producer.
fn idempotent_request(
    topic: &str,
    epoch: u32,
    sequence: i32,
    values: &[&str],
) -> strata::proto::v1::ProduceRequest {
    strata::proto::v1::ProduceRequest {
        topic: topic.into(),
        partition: Some(0),
        records: values
            .iter()
            .map(|v| Record {
                value: v.as_bytes().to_vec(),
                ..Default::default()
            })
            .collect(),
        producer_id: 0xfeed,
        producer_epoch: epoch,
        base_sequence: sequence,
        ..Default::default()
    }
}

#[tokio::test]
async fn idempotent_produce_answers_retries_refuses_gaps_and_fences_old_epochs() {
    let b = BrokerProcess::start();
    create_topic(&b, "idem", 1).await;
    let mut log = b.log().await;
    // Without a partition the broker could pick another one for a retry.
    let mut unnamed = idempotent_request("idem", 0, 0, &["a", "b"]);
    unnamed.partition = None;
    let refused = log.produce(unnamed).await.expect_err("no partition");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(refused.message().contains("partition"), "{refused:?}");
    let first = log
        .produce(idempotent_request("idem", 0, 0, &["a", "b"]))
        .await
        .expect("first")
        .into_inner();
    let second = log
        .produce(idempotent_request("idem", 0, 2, &["c"]))
        .await
        .expect("second")
        .into_inner();
    assert_eq!(second.appends[0].base_offset, 2);
    // A retry of the first batch: same answer, nothing stored.
    let retry = log
        .produce(idempotent_request("idem", 0, 0, &["a", "b"]))
        .await
        .expect("retry")
        .into_inner();
    assert_eq!(retry.appends, first.appends);
    // A gap: refused with ABORTED after the bounded wait, nothing stored.
    let gap = log
        .produce(idempotent_request("idem", 0, 9, &["z"]))
        .await
        .expect_err("a gap is refused");
    assert_eq!(gap.code(), tonic::Code::Aborted, "{gap:?}");
    assert!(gap.message().contains("expected 3"), "{}", gap.message());
    // A new epoch starts over at any sequence and fences the old epoch.
    log.produce(idempotent_request("idem", 1, 0, &["d"]))
        .await
        .expect("new epoch");
    let fenced = log
        .produce(idempotent_request("idem", 0, 3, &["late"]))
        .await
        .expect_err("old epoch");
    assert_eq!(fenced.code(), tonic::Code::FailedPrecondition, "{fenced:?}");
    let stored: Vec<Vec<u8>> = fetch_all(&b, "idem", 0, 0)
        .await
        .into_iter()
        .map(|(_, r)| r.value)
        .collect();
    assert_eq!(stored, [&b"a"[..], b"b", b"c", b"d"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_batches_are_stored_once_in_send_order() {
    let b = BrokerProcess::start();
    create_topic(&b, "pipe", 1).await;
    let client = Client::connect(&b.addr).await.unwrap();
    let producer = Producer::new(
        client,
        ProducerConfig {
            batch_records: 7,
            linger: Duration::ZERO,
            max_in_flight: 5,
            ..ProducerConfig::default()
        },
    );
    let mut deliveries = Vec::new();
    for i in 0..5000u32 {
        let record = Record {
            value: i.to_string().into_bytes(),
            ..Default::default()
        };
        deliveries.push(producer.send_to("pipe", Some(0), record).await.unwrap());
    }
    for (i, d) in deliveries.into_iter().enumerate() {
        assert_eq!(d.wait().await.unwrap().offset, i as u64, "record {i}");
    }
    producer.close().await;
    let stored = fetch_all(&b, "pipe", 0, 0).await;
    assert_eq!(stored.len(), 5000);
    for (i, (offset, r)) in stored.iter().enumerate() {
        assert_eq!(*offset, i as u64);
        assert_eq!(r.value, i.to_string().into_bytes(), "offset {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_across_a_broker_crash_store_every_record_exactly_once_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let listen = format!("127.0.0.1:{}", free_port());
    let mut b = BrokerProcess::start_in(dir.path(), &["--listen", &listen]);
    create_topic(&b, "crash", 2).await;
    let client = Client::connect(&b.addr).await.unwrap();
    let producer = std::sync::Arc::new(Producer::new(
        client,
        ProducerConfig {
            batch_records: 50,
            linger: Duration::from_millis(1),
            retries: 12,
            retry_backoff: Duration::from_millis(10),
            ..ProducerConfig::default()
        },
    ));
    const TOTAL: u32 = 20_000;
    let (first_half_tx, first_half_rx) = tokio::sync::oneshot::channel();
    let sender = {
        let producer = producer.clone();
        tokio::spawn(async move {
            let mut waited = Vec::new();
            let mut deliveries = Vec::new();
            let mut signal = Some(first_half_tx);
            for i in 0..TOTAL {
                let key = format!("k{}", i % 5);
                let record = Record {
                    key: key.into_bytes(),
                    value: i.to_string().into_bytes(),
                    ..Default::default()
                };
                let d = producer.send("crash", record).await.expect("queued");
                if i == TOTAL / 4 {
                    // Let a quarter land before the crash.
                    waited.push((i, d.wait().await));
                    if let Some(s) = signal.take() {
                        let _ = s.send(());
                    }
                } else {
                    deliveries.push((i, d));
                }
            }
            (waited, deliveries)
        })
    };
    first_half_rx.await.expect("a quarter delivered");
    b.kill();
    b = BrokerProcess::start_in(dir.path(), &["--listen", &listen]);
    let (waited, deliveries) = sender.await.expect("sender");
    let mut stored_at = Vec::new();
    for (i, m) in waited {
        stored_at.push((i, m.unwrap_or_else(|e| panic!("record {i}: {e}"))));
    }
    for (i, d) in deliveries {
        let m = d.wait().await.unwrap_or_else(|e| panic!("record {i}: {e}"));
        stored_at.push((i, m));
    }
    let mut partitions = Vec::new();
    for p in 0..2 {
        partitions.push(fetch_all(&b, "crash", p, 0).await);
    }
    let total: usize = partitions.iter().map(|p| p.len()).sum();
    assert_eq!(total, TOTAL as usize, "a record was lost or stored twice");
    for (i, m) in &stored_at {
        let (_, r) = &partitions[m.partition as usize][m.offset as usize];
        assert_eq!(r.value, i.to_string().into_bytes(), "delivery of {i}");
    }
    // Per key, values are stored in send order.
    for p in &partitions {
        let mut last_per_key = std::collections::HashMap::new();
        for (_, r) in p {
            let v: u32 = String::from_utf8_lossy(&r.value).parse().expect("number");
            if let Some(prev) = last_per_key.insert(r.key.clone(), v) {
                assert!(prev < v, "reordered: {prev} before {v}");
            }
        }
    }
    drop(b);
}

/// A TCP proxy that can swallow the broker's answers and then cut every
/// connection: the broker has stored what was sent, the client heard nothing.
struct LossyProxy {
    addr: String,
    swallow: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cut: tokio::sync::watch::Sender<u64>,
}

impl LossyProxy {
    async fn start(target: String) -> LossyProxy {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let swallow = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (cut, _) = tokio::sync::watch::channel(0u64);
        let (swallow2, cut2) = (swallow.clone(), cut.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(broker) = tokio::net::TcpStream::connect(&target).await else {
                    continue;
                };
                let swallow = swallow2.clone();
                let mut cut = cut2.subscribe();
                tokio::spawn(async move {
                    let (mut cr, mut cw) = client.into_split();
                    let (mut br, mut bw) = broker.into_split();
                    let up = tokio::io::copy(&mut cr, &mut bw);
                    let down = async {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = br.read(&mut buf).await?;
                            if n == 0 {
                                return Ok::<_, std::io::Error>(());
                            }
                            if !swallow.load(Ordering::SeqCst) {
                                cw.write_all(&buf[..n]).await?;
                            }
                        }
                    };
                    tokio::select! {
                        _ = up => {}
                        _ = down => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        LossyProxy { addr, swallow, cut }
    }

    fn swallow_answers(&self, on: bool) {
        self.swallow.store(on, std::sync::atomic::Ordering::SeqCst);
    }

    /// Closes every connection made so far.
    fn cut_connections(&self) {
        self.cut.send_modify(|g| *g += 1);
    }
}

/// Waits (bounded) until the broker's high watermark of `topic`/0 reaches `target`.
async fn wait_for_high_watermark(b: &BrokerProcess, topic: &str, target: u64) {
    let mut log = b.log().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let hw = log
            .fetch(crate::log_api::fetch_req(topic, 0, 0))
            .await
            .expect("fetch")
            .into_inner()
            .high_watermark;
        if hw >= target {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "high watermark stuck at {hw}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Sends 1,000 records, then 500 more whose answers are lost (the broker
/// stores them, the connection is cut), lets the producer retry, and
/// returns how many records the partition holds.
async fn lost_answers_scenario(idempotent: bool) -> usize {
    let b = BrokerProcess::start();
    create_topic(&b, "lossy", 1).await;
    let proxy = LossyProxy::start(b.addr.clone()).await;
    let client = Client::connect(&proxy.addr).await.unwrap();
    let in_flight = if idempotent { 5 } else { 1 };
    let producer = Producer::new(
        client,
        ProducerConfig {
            // Batches go out exactly when full (100 records).
            batch_records: 100,
            linger: Duration::from_secs(60),
            max_in_flight: 5,
            idempotent,
            retries: 10,
            retry_backoff: Duration::from_millis(10),
            ..ProducerConfig::default()
        },
    );
    let send = |i: u32| Record {
        value: i.to_string().into_bytes(),
        ..Default::default()
    };
    let mut deliveries = Vec::new();
    for i in 0..1000 {
        deliveries.push((
            i,
            producer.send_to("lossy", Some(0), send(i)).await.unwrap(),
        ));
    }
    producer.flush().await;
    proxy.swallow_answers(true);
    for i in 1000..1500 {
        deliveries.push((
            i,
            producer.send_to("lossy", Some(0), send(i)).await.unwrap(),
        ));
    }
    // The requests in flight reach the broker; their answers do not come back.
    wait_for_high_watermark(&b, "lossy", 1000 + 100 * in_flight).await;
    proxy.cut_connections();
    proxy.swallow_answers(false);
    let stored = {
        let mut offsets = Vec::new();
        for (i, d) in deliveries {
            let m = d.wait().await.unwrap_or_else(|e| panic!("record {i}: {e}"));
            offsets.push((i, m.offset));
        }
        offsets
    };
    producer.close().await;
    let log = fetch_all(&b, "lossy", 0, 0).await;
    for (i, offset) in stored {
        assert_eq!(
            log[offset as usize].1.value,
            i.to_string().into_bytes(),
            "the offset reported for {i} holds it"
        );
    }
    log.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_retries_after_lost_answers_store_nothing_twice() {
    assert_eq!(lost_answers_scenario(true).await, 1500);
}

/// Without idempotence a retry after a lost answer stores the batch again
/// (at-least-once), as the producer's docs say.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_idempotence_a_lost_answer_duplicates_the_batch() {
    assert_eq!(lost_answers_scenario(false).await, 1600);
}

/// The group's committed offset of `topic`/0 (`None` when nothing is committed).
async fn committed(client: &Client, group: &str, topic: &str) -> Option<u64> {
    client
        .fetch_offsets(group, Vec::new())
        .await
        .expect("fetch offsets")
        .into_iter()
        .find(|o| o.topic == topic && o.partition == 0)
        .map(|o| o.offset)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_commit_commits_only_what_was_handed_out() {
    let b = BrokerProcess::start();
    create_topic(&b, "auto", 1).await;
    let client = Client::connect(&b.addr).await.unwrap();
    let records: Vec<Record> = (0..100)
        .map(|i: u32| Record {
            value: i.to_string().into_bytes(),
            ..Default::default()
        })
        .collect();
    client
        .produce("auto", Some(0), records, Acks::Leader)
        .await
        .unwrap();
    let mut consumer = client
        .group_consumer(
            "auto-g",
            ["auto"],
            strata::client::AutoOffsetReset::Earliest,
        )
        .await
        .unwrap()
        // Every call to `next_batch` is due for an automatic commit.
        .with_commit_interval(Duration::ZERO);
    let first = consumer.next_batch(10).await.unwrap().unwrap();
    assert_eq!(first.len(), 10);
    // The stream has very likely prefetched all 100; none beyond the 10
    // handed out may be committed, and nothing before the next call.
    assert_eq!(committed(&client, "auto-g", "auto").await, None);
    let second = consumer.next_batch(5).await.unwrap().unwrap();
    assert_eq!(second.first().map(|r| r.record.offset), Some(10));
    assert_eq!(
        committed(&client, "auto-g", "auto").await,
        Some(10),
        "the automatic commit covers exactly the first batch handed out"
    );
    // Closing commits what was handed out since.
    consumer.close().await.unwrap();
    assert_eq!(committed(&client, "auto-g", "auto").await, Some(15));
}

/// Appends `"P:I"` for each I of `range` to each of the topic's 4 partitions P.
async fn produce_numbered(client: &Client, topic: &str, range: std::ops::Range<u32>) {
    for p in 0..4 {
        let records = range
            .clone()
            .map(|i| Record {
                value: format!("{p}:{i}").into_bytes(),
                ..Default::default()
            })
            .collect();
        client
            .produce(topic, Some(p), records, Acks::Leader)
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_members_split_partitions_and_hand_them_over_exactly_once() {
    use std::collections::BTreeMap;
    use strata::client::{AutoOffsetReset, Consumer, MemberConfig};
    let b = BrokerProcess::start_with(&["--heartbeat-interval-ms", "100"]);
    create_topic(&b, "hb", 4).await;
    let client = Client::connect(&b.addr).await.unwrap();
    produce_numbered(&client, "hb", 0..100).await;
    let config = MemberConfig {
        auto_offset_reset: AutoOffsetReset::Earliest,
        auto_commit_interval: None,
        ..MemberConfig::default()
    };
    let mut a = Consumer::new(client.clone());
    a.join_group("hb-g", &["hb"], config.clone()).await.unwrap();
    assert_eq!(a.assignment().len(), 4, "a lone member owns everything");
    // Who got each record: (partition, offset) -> member.
    let mut seen: BTreeMap<(u32, u64), &str> = BTreeMap::new();
    let mut take = |who: &'static str, records: Vec<strata::client::TopicRecord>| {
        for r in records {
            let key = (r.record.partition, r.record.offset);
            assert_eq!(r.record.value, format!("{}:{}", key.0, key.1).into_bytes());
            if let Some(first) = seen.insert(key, who) {
                panic!("{key:?} handed to {first} and to {who}");
            }
        }
        seen.len()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while take("a", a.poll(Duration::from_millis(50)).await.unwrap()) < 100 {
        assert!(tokio::time::Instant::now() < deadline, "a reads nothing");
    }
    a.commit_positions().await.unwrap();
    let mut b2 = Consumer::new(client.clone());
    b2.join_group("hb-g", &["hb"], config.clone())
        .await
        .unwrap();
    let mut total = 0;
    while a.assignment().len() != 2 || b2.assignment().len() != 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no balance: a {:?}, b {:?}",
            a.assignment(),
            b2.assignment()
        );
        total = take("a", a.poll(Duration::from_millis(20)).await.unwrap());
        total = take("b", b2.poll(Duration::from_millis(20)).await.unwrap()).max(total);
    }
    // Balanced: more records, which each member reads from its partitions.
    produce_numbered(&client, "hb", 100..200).await;
    while total < 800 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{total} of 800 read"
        );
        total = take("a", a.poll(Duration::from_millis(20)).await.unwrap());
        total = take("b", b2.poll(Duration::from_millis(20)).await.unwrap()).max(total);
    }
    for (tp, who) in &seen {
        let owner = if b2.assignment().contains(&("hb".to_string(), tp.0)) {
            "b"
        } else {
            "a"
        };
        if tp.1 >= 100 {
            assert_eq!(
                *who, owner,
                "{tp:?} read by the member that does not own it"
            );
        }
    }
    // The second member leaves: its partitions come back to the first.
    b2.leave_group().await.unwrap();
    while a.assignment().len() != 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            a.assignment()
        );
        a.poll(Duration::from_millis(20)).await.unwrap();
    }
    a.leave_group().await.unwrap();
    // Every committed position is the end: nothing left to read.
    let committed = client.fetch_offsets("hb-g", Vec::new()).await.unwrap();
    assert_eq!(committed.len(), 4);
    assert!(committed.iter().all(|o| o.offset == 200), "{committed:?}");
}

/// A broker that stops answering without closing the connection (here a
/// proxy swallows everything it sends, keep-alive acknowledgements
/// included): the client's HTTP/2 keep-alive gives up after
/// `KEEPALIVE_INTERVAL + KEEPALIVE_TIMEOUT` and the call fails as a
/// connection error, which the producer retries, instead of waiting forever.
/// (Takes about 30 s; the 120 s timeout only guards against a hang.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_broker_fails_calls_instead_of_hanging_them() {
    let b = BrokerProcess::start();
    create_topic(&b, "silent", 1).await;
    let proxy = LossyProxy::start(b.addr.clone()).await;
    let client = Client::connect(&proxy.addr).await.unwrap();
    let record = || {
        vec![Record {
            value: b"x".to_vec(),
            ..Default::default()
        }]
    };
    client
        .produce("silent", Some(0), record(), Acks::Leader)
        .await
        .expect("through the proxy");
    proxy.swallow_answers(true);
    let bound = strata::client::KEEPALIVE_INTERVAL + strata::client::KEEPALIVE_TIMEOUT;
    let outcome = tokio::time::timeout(
        bound * 4,
        client.produce("silent", Some(0), record(), Acks::Leader),
    )
    .await
    .expect("the call must fail, not hang");
    let error = outcome.expect_err("no answer can arrive");
    assert!(error.is_connection_error(), "{error:?}");
}
