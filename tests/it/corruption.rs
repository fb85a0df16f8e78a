//! Damaged bytes on a real broker: found by the scrubber, answered with
//! `DATA_LOSS`, never served, and intact records stay readable.

use std::time::{Duration, Instant};

use strata::proto::v1::{DescribeTopicRequest, FetchRequest};
use tonic::Code;

use crate::harness::BrokerProcess;
use crate::log_api::{create_topic, produce_req, record};

/// Flags for 1 MiB segments and a scrubber that passes every 50 ms.
pub const SCRUB_FLAGS: [&str; 6] = [
    "--default-segment-bytes",
    "1048576",
    "--scrub-interval-ms",
    "50",
    "--scrub-bytes-per-sec",
    "1000000000",
];

/// A broker started with [`SCRUB_FLAGS`] and `extra`, whose topic `c` holds
/// 30 batches of one 100 KB record each (record `i` is 100,000 bytes of
/// `i`): ten frames per segment, so three segments, the active one from
/// offset 20.
pub async fn scrubbed_broker_with_three_segments(extra: &[&str]) -> BrokerProcess {
    let flags: Vec<&str> = SCRUB_FLAGS.iter().chain(extra).copied().collect();
    let b = BrokerProcess::start_with(&flags);
    create_topic(&b, "c", 1).await;
    let mut log = b.log().await;
    for i in 0..30u8 {
        log.produce(produce_req("c", Some(0), vec![record(&vec![i; 100_000])]))
            .await
            .expect("produce");
    }
    b
}

#[tokio::test]
async fn a_flipped_bit_in_a_closed_segment_is_found_and_never_served() {
    let scrub = SCRUB_FLAGS;
    let mut b = scrubbed_broker_with_three_segments(&[]).await;
    assert!(b.stop().await);
    // Flip one bit in the payload of the third batch of the first segment
    // (each frame: 64-byte header, 4 bytes of framing, a 100,004-byte record).
    let seg = b.data_dir.join("topics/c/0/00000000000000000000.log");
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = 2 * (100_000 + 64 + 5) + 5000;
    assert!(at < bytes.len());
    bytes[at] ^= 0x08;
    std::fs::write(&seg, &bytes).unwrap();

    let data_dir = b.data_dir.clone();
    let temp_holder = b; // keep the temp dir alive while a new process uses it
    let b = BrokerProcess::start_in(&data_dir, &scrub);
    // The scrubber reports the damaged batch in DescribeTopic.
    let start = Instant::now();
    let damaged = loop {
        let d = b
            .admin()
            .await
            .describe_topic(DescribeTopicRequest { name: "c".into() })
            .await
            .unwrap()
            .into_inner()
            .topic
            .unwrap();
        if let Some(r) = d.partitions[0].damaged_ranges.first() {
            break (r.first_offset, r.end_offset);
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the scrubber never reported the damage"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        damaged,
        (2, 3),
        "the scrubber names the damaged batch, as reads and verify do"
    );
    let mut log = b.log().await;
    let fetch = |offset| FetchRequest {
        topic: "c".into(),
        partition: 0,
        offset,
        max_bytes: 0,
        max_wait_ms: 0,
    };
    let e = log.fetch(fetch(2)).await.unwrap_err();
    assert_eq!(e.code(), Code::DataLoss);
    assert!(
        e.message().contains("2..3"),
        "the error names the offset range: {}",
        e.message()
    );
    // Intact records on both sides are served with their exact bytes.
    for offset in [0u64, 1, 3, 20, 29] {
        let resp = log.fetch(fetch(offset)).await.unwrap().into_inner();
        assert_eq!(resp.batches[0].base_offset, offset);
        assert_eq!(
            resp.batches[0].records[0].value,
            vec![offset as u8; 100_000]
        );
    }
    // A fetch that starts before the damage stops short of it.
    let resp = log.fetch(fetch(1)).await.unwrap().into_inner();
    assert!(resp.batches.iter().all(|b| b.base_offset < 2));
    drop(temp_holder);
}
