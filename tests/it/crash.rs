//! Kill -9 of a real broker in the middle of produce, group-consume and
//! commit traffic. After every restart: every acknowledged record is back at
//! its offset with its exact bytes, offsets are dense, every record a group
//! member received matches the acknowledged bytes, committed offsets never go
//! backwards (never below the highest acknowledged commit of the partition,
//! never past its log end), and the time from spawn to the first successful
//! fetch is measured and reported. At the end, a fresh group member drains
//! the topic: the records the group received, over all rounds, cover every
//! offset with no hole (at-least-once), and `strata verify` is clean.
//!
//! Each restart checks what was acknowledged since the previous check; every
//! tenth restart and the last one check every record from offset 0.
//!
//! The broker compacts its group offsets log every 1 KiB
//! (`--offsets-compact-bytes 1024`, the smallest allowed) instead of every
//! 64 MiB, so the kills also land during compactions: the test counts the
//! kills that left `groups/offsets.log.old` behind (a compaction begun and
//! not finished) and fails if no compaction ever completed.
//!
//! The short variant (4 rounds) runs in `cargo test`; the long one is
//! `STRATA_CRASH_ROUNDS=200 cargo test --test it crash::acknowledged -- --nocapture`,
//! which prints rounds, records checked and recovery times.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strata::client::{AutoOffsetReset, Client, GroupConsumer};
use strata::proto::v1::groups_client::GroupsClient;
use strata::proto::v1::{
    Acks, CommitOffsetsRequest, FetchOffsetsRequest, FetchRequest, ListOffsetsRequest, OffsetSpec,
    PartitionOffset, Record,
};

use crate::harness::BrokerProcess;
use crate::log_api::{create_topic, fetch_all, produce_req};

/// The topic under test and its partition count.
const TOPIC: &str = "crash";
const PARTITIONS: u32 = 4;
/// The consumer group whose members read and commit during the crashes.
const GROUP: &str = "workers";
/// Group members running in every round.
const MEMBERS: u64 = 2;
/// The broker's offsets-log compaction size in this test.
const COMPACT_BYTES: &str = "1024";
/// Fails a wait for the broker longer than this (a failure detector, not
/// synchronization).
const PATIENCE: Duration = Duration::from_secs(60);

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

/// An acknowledged batch, kept as what regenerates its values exactly (the
/// values themselves would cost gigabytes over a long run).
#[derive(Debug, Clone)]
struct Batch {
    seed: u64,
    n: u64,
    lens: Vec<u32>,
}

impl Batch {
    /// Value `i`: a unique prefix, padded to its length with a fill byte.
    fn value(&self, i: usize) -> Vec<u8> {
        let mut v = format!("{}-{}-{i}-", self.seed, self.n).into_bytes();
        v.resize((self.lens[i] as usize).max(v.len()), (self.n % 251) as u8);
        v
    }

    fn len(&self) -> usize {
        self.lens.len()
    }
}

/// (partition, base offset) → the batch acknowledged there.
type Ledger = Arc<Mutex<BTreeMap<(u32, u64), Batch>>>;

/// What the group's members saw, over all rounds.
#[derive(Default)]
struct GroupLedger {
    /// Partition → every offset handed to some member.
    delivered: BTreeMap<u32, BTreeSet<u64>>,
    /// Partition → the highest commit the broker acknowledged.
    committed: BTreeMap<u32, u64>,
    /// Commits the broker acknowledged.
    commits: u64,
    /// Records delivered that matched an acknowledged record's bytes.
    checked: u64,
}

type Shared = Arc<Mutex<GroupLedger>>;

async fn producer(b: String, ledger: Ledger, seed: u64) {
    let mut rng = Rng(seed);
    let Ok(channel) = crate::harness::try_channel_to(&b).await else {
        return;
    };
    let mut log = strata::proto::v1::log_client::LogClient::new(channel);
    for n in 0u64.. {
        let partition = rng.range(0, PARTITIONS as u64) as u32;
        let count = rng.range(1, 40) as usize;
        let batch = Batch {
            seed,
            n,
            lens: (0..count).map(|_| rng.range(10, 2000) as u32).collect(),
        };
        let mut req = produce_req(
            TOPIC,
            Some(partition),
            (0..count)
                .map(|i| Record {
                    value: batch.value(i),
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
                let twice = ledger
                    .lock()
                    .unwrap()
                    .insert((a.partition, a.base_offset), batch);
                assert!(
                    twice.is_none(),
                    "offset {} acknowledged twice",
                    a.base_offset
                );
            }
            Err(_) => return, // the broker died: this request was never acknowledged
        }
    }
}

/// The acknowledged bytes at `offset` of `partition`, if that record's
/// produce was acknowledged.
fn acked_value(ledger: &Ledger, partition: u32, offset: u64) -> Option<Vec<u8>> {
    let ledger = ledger.lock().unwrap();
    let ((_, base), batch) = ledger
        .range((partition, 0)..=(partition, offset))
        .next_back()?;
    let i = (offset - base) as usize;
    (i < batch.len()).then(|| batch.value(i))
}

/// A group member: receives batches, checks each record against the ledger,
/// and commits what it processed every few batches, until the broker dies.
async fn member(addr: String, ledger: Ledger, seen: Shared, seed: u64) {
    let Ok(client) = Client::connect(&addr).await else {
        return;
    };
    let Ok(mut consumer) = client
        .group_consumer(GROUP, [TOPIC], AutoOffsetReset::Earliest)
        .await
    else {
        return;
    };
    let mut rng = Rng(seed);
    loop {
        let Some(Ok(records)) = consumer.next_batch(rng.range(1, 200) as usize).await else {
            return; // the broker died (or ended the stream)
        };
        for r in &records {
            let (p, o) = (r.record.partition, r.record.offset);
            if let Some(v) = acked_value(&ledger, p, o) {
                assert_eq!(r.record.value, v, "member got other bytes at {p}:{o}");
                seen.lock().unwrap().checked += 1;
            }
            seen.lock()
                .unwrap()
                .delivered
                .entry(p)
                .or_default()
                .insert(o);
        }
        if rng.next().is_multiple_of(3) {
            commit(&mut consumer, &seen).await;
        }
    }
}

/// Commits what the member processed and remembers each acknowledged
/// position. A refused commit (a rebalance moved the epoch) or a dead broker
/// is fine: only acknowledged commits are promises.
async fn commit(consumer: &mut GroupConsumer, seen: &Shared) {
    if let Ok(stored) = consumer.commit_processed().await {
        let mut seen = seen.lock().unwrap();
        seen.commits += 1;
        for o in stored {
            let max = seen.committed.entry(o.partition).or_default();
            *max = (*max).max(o.offset);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_and_group_commits_survive_kill_9() {
    let rounds: u64 = std::env::var("STRATA_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let mut b = BrokerProcess::start_with(&["--offsets-compact-bytes", COMPACT_BYTES]);
    create_topic(&b, TOPIC, PARTITIONS).await;
    let ledger: Ledger = Arc::default();
    let seen: Shared = Arc::default();
    let mut audited: u64 = 0;
    let mut recovery = Vec::new();
    let mut mid_compaction = 0u64;
    let mut checked = [0u64; PARTITIONS as usize];
    let mut rng = Rng(42);
    for round in 0..rounds {
        let mut tasks: Vec<_> = (0..4)
            .map(|i| tokio::spawn(producer(b.addr.clone(), ledger.clone(), round * 10 + i)))
            .collect();
        tasks.extend((0..MEMBERS).map(|i| {
            let seed = round * 10 + 5 + i;
            tokio::spawn(member(b.addr.clone(), ledger.clone(), seen.clone(), seed))
        }));
        audited = standalone_commit(&b, &ledger, audited).await;
        // Kill at a random moment of the traffic (the randomness is the
        // point; nothing waits on it).
        tokio::time::sleep(Duration::from_millis(rng.range(50, 400))).await;
        b.kill();
        for t in tasks {
            t.await.expect("a producer or member panicked");
        }
        if b.data_dir.join("groups/offsets.log.old").exists() {
            mid_compaction += 1;
        }
        let started = Instant::now();
        b.restart();
        let listening = started.elapsed();
        first_fetch(&b).await;
        recovery.push((listening, started.elapsed()));
        let full = round % 10 == 9 || round + 1 == rounds;
        check(&b, &ledger, &mut checked, full).await;
        check_commits(&b, &seen).await;
        assert_eq!(
            fetch_committed(&b, "auditors").await.get(&0).copied(),
            Some(audited),
            "the standalone commit survives and never goes back"
        );
    }
    drain_and_check_coverage(&b, &seen).await;
    report(rounds, &ledger, &seen, &recovery, mid_compaction);
    assert!(
        b.data_dir.join("groups/snapshot").exists(),
        "no offsets-log compaction completed: the kills never met one"
    );
    assert!(b.stop().await);
    crate::harness::assert_verify_clean(&b.data_dir, "the crashes");
}

/// A standalone commit (no member) to group `auditors` on partition 0,
/// never below the previous one; returns the offset committed.
async fn standalone_commit(b: &BrokerProcess, ledger: &Ledger, before: u64) -> u64 {
    let acked = ledger
        .lock()
        .unwrap()
        .keys()
        .filter(|(p, _)| *p == 0)
        .count() as u64;
    let hw = high_watermark(b, 0).await;
    let offset = acked.min(hw).max(before);
    GroupsClient::new(b.channel().await)
        .commit_offsets(CommitOffsetsRequest {
            group: "auditors".into(),
            member_id: String::new(),
            member_epoch: -1,
            offsets: vec![PartitionOffset {
                topic: TOPIC.into(),
                partition: 0,
                offset,
                metadata: String::new(),
            }],
        })
        .await
        .unwrap();
    offset
}

/// The high watermark of partition `p`.
async fn high_watermark(b: &BrokerProcess, p: u32) -> u64 {
    b.log()
        .await
        .list_offsets(ListOffsetsRequest {
            topic: TOPIC.into(),
            partition: p,
            spec: OffsetSpec::Latest as i32,
            timestamp_ms: 0,
        })
        .await
        .expect("list offsets")
        .into_inner()
        .offset
}

/// One fetch of partition 0 that must succeed (the end of the recovery
/// time measured).
async fn first_fetch(b: &BrokerProcess) {
    b.log()
        .await
        .fetch(FetchRequest {
            topic: TOPIC.into(),
            partition: 0,
            offset: 0,
            max_bytes: 0,
            max_wait_ms: 0,
        })
        .await
        .expect("the first fetch after a restart");
}

/// Every acknowledged batch is at its offset with its bytes; offsets are
/// dense. Checks each partition from `checked[p]` (where the previous check
/// ended: everything acknowledged since lies beyond it), or from 0 when
/// `full`, and moves `checked` to the end.
async fn check(b: &BrokerProcess, ledger: &Ledger, checked: &mut [u64], full: bool) {
    let ledger = ledger.lock().unwrap().clone();
    for p in 0..PARTITIONS {
        let start = if full { 0 } else { checked[p as usize] };
        let stored = fetch_all(b, TOPIC, p, start).await;
        for (i, (offset, _)) in stored.iter().enumerate() {
            assert_eq!(
                *offset,
                start + i as u64,
                "offsets of partition {p} are dense"
            );
        }
        let end = start + stored.len() as u64;
        assert!(end >= checked[p as usize], "partition {p} lost its end");
        checked[p as usize] = end;
        for ((lp, base), batch) in ledger.range((p, start)..(p + 1, 0)) {
            for i in 0..batch.len() {
                let v = &batch.value(i);
                let at = (*base + i as u64 - start) as usize;
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

/// The group's committed offsets after a restart: at least the highest
/// acknowledged commit of each partition, at most its log end.
async fn check_commits(b: &BrokerProcess, seen: &Shared) {
    let stored = fetch_committed(b, GROUP).await;
    let acked = seen.lock().unwrap().committed.clone();
    for (p, max) in acked {
        let got = stored.get(&p).copied().unwrap_or(0);
        assert!(
            got >= max,
            "the commit of partition {p} went back from {max} to {got}"
        );
        let hw = high_watermark(b, p).await;
        assert!(
            got <= hw,
            "commit {got} of partition {p} is past the log end {hw}"
        );
    }
}

/// Partition → committed offset of `group`.
async fn fetch_committed(b: &BrokerProcess, group: &str) -> BTreeMap<u32, u64> {
    GroupsClient::new(b.channel().await)
        .fetch_offsets(FetchOffsetsRequest {
            group: group.into(),
            partitions: vec![],
        })
        .await
        .unwrap()
        .into_inner()
        .offsets
        .into_iter()
        .map(|o| (o.partition, o.offset))
        .collect()
}

/// A fresh member reads from the committed offsets to the log end; then the
/// group has received every offset of every partition at least once.
async fn drain_and_check_coverage(b: &BrokerProcess, seen: &Shared) {
    let mut ends = BTreeMap::new();
    for p in 0..PARTITIONS {
        ends.insert(p, high_watermark(b, p).await);
    }
    let client = Client::connect(&b.addr).await.unwrap();
    let mut consumer = client
        .group_consumer(GROUP, [TOPIC], AutoOffsetReset::Earliest)
        .await
        .unwrap();
    let behind = |seen: &GroupLedger| {
        ends.iter().any(|(p, end)| {
            let next = seen
                .delivered
                .get(p)
                .and_then(|s| s.last())
                .map_or(0, |o| o + 1);
            next < *end
        })
    };
    while behind(&seen.lock().unwrap()) {
        let records = tokio::time::timeout(PATIENCE, consumer.next_batch(1000))
            .await
            .expect("the drain made no progress")
            .expect("stream open")
            .expect("records");
        let mut seen = seen.lock().unwrap();
        for r in records {
            seen.delivered
                .entry(r.record.partition)
                .or_default()
                .insert(r.record.offset);
        }
    }
    let seen = seen.lock().unwrap();
    for (p, end) in ends {
        let got = seen
            .delivered
            .get(&p)
            .map_or(0, |s| s.range(..end).count() as u64);
        assert_eq!(got, end, "the group skipped records of partition {p}");
    }
}

/// Prints the figures of the run (visible with `--nocapture`).
fn report(
    rounds: u64,
    ledger: &Ledger,
    seen: &Shared,
    recovery: &[(Duration, Duration)],
    mid_compaction: u64,
) {
    let records: usize = ledger.lock().unwrap().values().map(Batch::len).sum();
    let seen = seen.lock().unwrap();
    let delivered: usize = seen.delivered.values().map(BTreeSet::len).sum();
    if recovery.is_empty() {
        return;
    }
    let mut listening: Vec<Duration> = recovery.iter().map(|r| r.0).collect();
    let mut serving: Vec<Duration> = recovery.iter().map(|r| r.1).collect();
    listening.sort();
    serving.sort();
    let mid = recovery.len() / 2;
    eprintln!(
        "crash: {rounds} rounds survived; {records} acknowledged records checked after every \
         restart; {delivered} offsets delivered to the group ({} checked against the ledger), {} acknowledged \
         commits ({mid_compaction} kills during an offsets-log compaction); \
         recovery, spawn to listening: median {:?}, max {:?}; spawn to first fetch: median {:?}, \
         max {:?}",
        seen.checked,
        seen.commits,
        listening[mid],
        listening[recovery.len() - 1],
        serving[mid],
        serving[recovery.len() - 1]
    );
}
