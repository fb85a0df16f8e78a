//! Kill -9 of a real broker in the middle of produce and commit traffic:
//! every acknowledged record must come back at its offset with its exact
//! bytes, offsets stay dense, and committed offsets never go backwards.
//! `STRATA_CRASH_ROUNDS=N` runs more rounds (the default is the short CI
//! variant).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strata::proto::v1::groups_client::GroupsClient;
use strata::proto::v1::{Acks, CommitOffsetsRequest, FetchOffsetsRequest, PartitionOffset, Record};

use crate::harness::BrokerProcess;
use crate::log_api::{create_topic, fetch_all, produce_req};

/// A small deterministic generator (SplitMix64): the test needs no more.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `lo..hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

/// (partition, base offset) → the values acknowledged there.
type Ledger = Arc<Mutex<BTreeMap<(u32, u64), Vec<Vec<u8>>>>>;

async fn producer(b: String, ledger: Ledger, seed: u64) {
    let mut rng = Rng(seed);
    let Ok(channel) = tonic::transport::Channel::from_shared(format!("http://{b}"))
        .unwrap()
        .connect()
        .await
    else {
        return;
    };
    let mut log = strata::proto::v1::log_client::LogClient::new(channel);
    for n in 0u64.. {
        let partition = rng.range(0, 4) as u32;
        let count = rng.range(1, 40) as usize;
        let values: Vec<Vec<u8>> = (0..count)
            .map(|i| {
                let len = rng.range(10, 2000) as usize;
                let mut v = format!("{seed}-{n}-{i}-").into_bytes();
                v.resize(len.max(v.len()), (n % 251) as u8);
                v
            })
            .collect();
        let mut req = produce_req(
            "crash",
            Some(partition),
            values
                .iter()
                .map(|v| Record {
                    value: v.clone(),
                    ..Default::default()
                })
                .collect(),
        );
        if rng.next().is_multiple_of(2) {
            req.acks = Acks::Durable as i32;
        }
        match log.produce(req).await {
            Ok(resp) => {
                let a = &resp.into_inner().appends[0];
                ledger
                    .lock()
                    .unwrap()
                    .insert((a.partition, a.base_offset), values);
            }
            Err(_) => return, // the broker died: this request was never acknowledged
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_kill_9() {
    let rounds: u64 = std::env::var("STRATA_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let mut b = BrokerProcess::start();
    create_topic(&b, "crash", 4).await;
    let ledger: Ledger = Arc::default();
    let mut committed_before: u64 = 0;
    let mut rng = Rng(42);
    for round in 0..rounds {
        let tasks: Vec<_> = (0..4)
            .map(|i| tokio::spawn(producer(b.addr.clone(), ledger.clone(), round * 10 + i)))
            .collect();
        // A commit each round; it must never go backwards.
        let mut g = GroupsClient::new(b.channel().await);
        let target = ledger
            .lock()
            .unwrap()
            .keys()
            .filter(|(p, _)| *p == 0)
            .count() as u64;
        let target = target.max(committed_before);
        let hw = fetch_all(&b, "crash", 0, 0).await.len() as u64;
        let commit = target.min(hw).max(committed_before);
        g.commit_offsets(CommitOffsetsRequest {
            group: "auditors".into(),
            member_id: String::new(),
            member_epoch: -1,
            offsets: vec![PartitionOffset {
                topic: "crash".into(),
                partition: 0,
                offset: commit,
                metadata: String::new(),
            }],
        })
        .await
        .unwrap();
        committed_before = commit;
        // Kill at a random moment of the traffic (the randomness is the
        // point; nothing waits on it).
        tokio::time::sleep(Duration::from_millis(rng.range(50, 400))).await;
        b.kill();
        for t in tasks {
            let _ = t.await;
        }
        b.restart();
        assert!(
            !ledger.lock().unwrap().is_empty(),
            "some produce was acknowledged"
        );
        check(&b, &ledger).await;
        let mut g = GroupsClient::new(b.channel().await);
        let offsets = g
            .fetch_offsets(FetchOffsetsRequest {
                group: "auditors".into(),
                partitions: vec![],
            })
            .await
            .unwrap()
            .into_inner()
            .offsets;
        assert_eq!(
            offsets[0].offset, committed_before,
            "committed offsets survive and never go back"
        );
    }
    assert!(b.stop().await);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("verify")
        .arg(&b.data_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "verify after the crashes: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Every acknowledged batch is at its offset with its bytes; offsets are dense.
async fn check(b: &BrokerProcess, ledger: &Ledger) {
    let ledger = ledger.lock().unwrap().clone();
    for p in 0..4u32 {
        let stored = fetch_all(b, "crash", p, 0).await;
        for (i, (offset, _)) in stored.iter().enumerate() {
            assert_eq!(*offset, i as u64, "offsets of partition {p} are dense");
        }
        for ((lp, base), values) in ledger.range((p, 0)..(p + 1, 0)) {
            for (i, v) in values.iter().enumerate() {
                let at = (*base + i as u64) as usize;
                let got = stored.get(at).unwrap_or_else(|| {
                    panic!("acknowledged offset {} of partition {lp} is lost", at)
                });
                assert_eq!(
                    &got.1.value, v,
                    "offset {at} of partition {lp} came back different"
                );
            }
        }
    }
}
