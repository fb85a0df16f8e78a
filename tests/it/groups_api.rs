//! The `Groups` service on a real broker process.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use strata::proto::v1::consume_event::Event;
use strata::proto::v1::groups_client::GroupsClient;
use strata::proto::v1::{
    CommitOffsetsRequest, ConsumeRequest, DeleteGroupRequest, DescribeGroupRequest,
    FetchOffsetsRequest, HeartbeatRequest, HeartbeatResponse, LeaveGroupRequest, ListGroupsRequest,
    PartitionOffset, ResetOffsetsRequest, ResetTo, TopicPartitions,
};
use tonic::transport::Channel;
use tonic::Code;

use crate::harness::BrokerProcess;
use crate::log_api::{create_topic, produce_req, record};

/// Fails a test that waits for a condition longer than this (a failure
/// detector: the conditions themselves are protocol events).
const PATIENCE: Duration = Duration::from_secs(30);

async fn groups(b: &BrokerProcess) -> GroupsClient<Channel> {
    GroupsClient::new(b.channel().await)
}

/// A heartbeat member as a client library would run it.
struct Member {
    id: String,
    epoch: i32,
    owned: BTreeSet<u32>,
    session_timeout_ms: u32,
}

impl Member {
    async fn join(g: &mut GroupsClient<Channel>, group: &str, session_timeout_ms: u32) -> Member {
        let mut m = Member {
            id: String::new(),
            epoch: 0,
            owned: BTreeSet::new(),
            session_timeout_ms,
        };
        m.beat(g, group).await;
        m
    }

    async fn beat(&mut self, g: &mut GroupsClient<Channel>, group: &str) -> HeartbeatResponse {
        let resp = g
            .heartbeat(HeartbeatRequest {
                group: group.into(),
                member_id: self.id.clone(),
                member_epoch: self.epoch,
                topics: vec!["t".into()],
                session_timeout_ms: self.session_timeout_ms,
                owned: vec![TopicPartitions {
                    topic: "t".into(),
                    partitions: self.owned.iter().copied().collect(),
                }],
            })
            .await
            .unwrap()
            .into_inner();
        self.id = resp.member_id.clone();
        self.epoch = resp.member_epoch;
        // Adopt the assignment at once (release revoked partitions).
        self.owned = resp
            .assignment
            .iter()
            .flat_map(|t| t.partitions.iter().copied())
            .collect();
        resp
    }
}

/// Heartbeats every member round after round until `done` holds.
async fn beat_until(
    g: &mut GroupsClient<Channel>,
    group: &str,
    members: &mut [Member],
    done: impl Fn(&[Member]) -> bool,
) -> usize {
    let start = Instant::now();
    for round in 1.. {
        for m in members.iter_mut() {
            m.beat(g, group).await;
        }
        if done(members) {
            return round;
        }
        assert!(start.elapsed() < PATIENCE, "group never settled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    unreachable!()
}

fn disjoint_cover(members: &[Member], partitions: u32, each: &[usize]) -> bool {
    let mut all = BTreeSet::new();
    let mut sizes: Vec<usize> = members.iter().map(|m| m.owned.len()).collect();
    sizes.sort_unstable();
    for m in members {
        for p in &m.owned {
            if !all.insert(*p) {
                return false;
            }
        }
    }
    all.len() == partitions as usize && sizes == each
}

#[tokio::test]
async fn members_share_partitions_and_rebalance_on_leave_and_expiry() {
    let b = BrokerProcess::start();
    create_topic(&b, "t", 6).await;
    let mut g = groups(&b).await;
    let mut members = vec![
        Member::join(&mut g, "billing", 10_000).await,
        Member::join(&mut g, "billing", 10_000).await,
        Member::join(&mut g, "billing", 500).await,
    ];
    beat_until(&mut g, "billing", &mut members, |m| {
        disjoint_cover(m, 6, &[2, 2, 2])
    })
    .await;

    // A clean leave: the others cover all six within one heartbeat each.
    let gone = members.remove(0);
    g.leave_group(LeaveGroupRequest {
        group: "billing".into(),
        member_id: gone.id.clone(),
    })
    .await
    .unwrap();
    let rounds = beat_until(&mut g, "billing", &mut members, |m| {
        disjoint_cover(m, 6, &[3, 3])
    })
    .await;
    assert!(rounds <= 2, "reassigned after {rounds} heartbeat rounds");

    // The member with a 500 ms session stops heartbeating: expelled, and its
    // partitions reach the survivor.
    let silent = members.pop().unwrap();
    let mut survivor = members;
    beat_until(&mut g, "billing", &mut survivor, |m| {
        disjoint_cover(m, 6, &[6])
    })
    .await;
    // The expelled member's heartbeat is refused.
    let e = g
        .heartbeat(HeartbeatRequest {
            group: "billing".into(),
            member_id: silent.id.clone(),
            member_epoch: silent.epoch,
            topics: vec!["t".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn commits_are_fenced_and_survive_kill_9_with_correct_lag() {
    let mut b = BrokerProcess::start();
    create_topic(&b, "t", 2).await;
    let mut log = b.log().await;
    for i in 0..10 {
        log.produce(produce_req("t", Some(i % 2), vec![record(b"x")]))
            .await
            .unwrap();
    }
    let mut g = groups(&b).await;
    let mut m = Member::join(&mut g, "pay", 10_000).await;
    let commit = |member: String, epoch: i32, offset: u64| CommitOffsetsRequest {
        group: "pay".into(),
        member_id: member,
        member_epoch: epoch,
        offsets: vec![PartitionOffset {
            topic: "t".into(),
            partition: 0,
            offset,
            metadata: "m".into(),
        }],
    };
    g.commit_offsets(commit(m.id.clone(), m.epoch, 3))
        .await
        .unwrap();
    let e = g
        .commit_offsets(commit(m.id.clone(), m.epoch - 1, 4))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{}", e.message());
    let e = g
        .commit_offsets(commit("stranger".into(), 1, 4))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    let e = g
        .commit_offsets(commit(m.id.clone(), m.epoch, 99))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "past the high watermark");
    let e = g
        .delete_group(DeleteGroupRequest {
            group: "pay".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        Code::FailedPrecondition,
        "live members block a delete"
    );
    m.beat(&mut g, "pay").await;

    b.kill();
    b.restart();
    let mut g = groups(&b).await;
    let offsets = g
        .fetch_offsets(FetchOffsetsRequest {
            group: "pay".into(),
            partitions: vec![],
        })
        .await
        .unwrap()
        .into_inner()
        .offsets;
    assert_eq!(offsets.len(), 1);
    assert_eq!((offsets[0].offset, offsets[0].metadata.as_str()), (3, "m"));
    let d = g
        .describe_group(DescribeGroupRequest {
            group: "pay".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        d.state, "Empty",
        "members do not survive a restart; offsets do"
    );
    let lag: BTreeMap<u32, (u64, u64)> = d
        .lag
        .iter()
        .map(|l| (l.partition, (l.lag, l.lag_ms)))
        .collect();
    assert_eq!(lag[&0].0, 2, "5 records in partition 0, committed 3");
    assert_eq!(
        lag[&1].0, 5,
        "nothing committed in partition 1: all 5 are lag"
    );
    assert!(
        lag[&0].1 > 0,
        "lag in ms is the age of the oldest unconsumed record"
    );
    // With no live members, a standalone consumer may commit.
    g.commit_offsets(commit(String::new(), -1, 5))
        .await
        .unwrap();
    let d = g
        .describe_group(DescribeGroupRequest {
            group: "pay".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        d.lag.iter().find(|l| l.partition == 0).unwrap().lag_ms,
        0,
        "caught up"
    );
    let listed = g
        .list_groups(ListGroupsRequest {})
        .await
        .unwrap()
        .into_inner()
        .groups;
    assert_eq!(listed.len(), 1);
    g.delete_group(DeleteGroupRequest {
        group: "pay".into(),
    })
    .await
    .unwrap();
    let e = g
        .describe_group(DescribeGroupRequest {
            group: "pay".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
}

/// A `Consume` stream as a test sees it.
struct Stream {
    inner: tonic::Streaming<strata::proto::v1::ConsumeEvent>,
    member_id: String,
    epoch: i32,
    owned: BTreeSet<u32>,
}

impl Stream {
    async fn open(b: &BrokerProcess, group: &str) -> Stream {
        let mut inner = groups(b)
            .await
            .consume(ConsumeRequest {
                group: group.into(),
                topics: vec!["t".into()],
                auto_offset_reset: 0,
            })
            .await
            .unwrap()
            .into_inner();
        let Some(Event::Joined(j)) = inner.message().await.unwrap().unwrap().event else {
            panic!("first event is joined")
        };
        Stream {
            inner,
            member_id: j.member_id,
            epoch: j.member_epoch,
            owned: BTreeSet::new(),
        }
    }

    /// The next batch of records as (partition, offset, value), applying
    /// assignment events on the way. `None` if nothing comes within `wait`.
    async fn next_records(&mut self, wait: Duration) -> Option<Vec<(u32, u64, Vec<u8>)>> {
        loop {
            let msg = tokio::time::timeout(wait, self.inner.message())
                .await
                .ok()?
                .unwrap()?;
            match msg.event? {
                Event::Records(r) => {
                    let batch = r.batch.unwrap();
                    return Some(
                        batch
                            .records
                            .into_iter()
                            .enumerate()
                            .map(|(i, rec)| (r.partition, batch.base_offset + i as u64, rec.value))
                            .collect(),
                    );
                }
                Event::Assignment(a) => {
                    self.epoch = a.member_epoch;
                    self.owned = a
                        .partitions
                        .iter()
                        .flat_map(|t| t.partitions.iter().copied())
                        .collect();
                }
                Event::Joined(_) => panic!("joined twice"),
            }
        }
    }
}

#[tokio::test]
async fn two_consume_streams_get_every_record_once_and_a_live_reset_replays() {
    let b = BrokerProcess::start();
    create_topic(&b, "t", 4).await;
    let mut log = b.log().await;
    for i in 0..40u32 {
        log.produce(produce_req(
            "t",
            Some(i % 4),
            vec![record(format!("r{i}").as_bytes())],
        ))
        .await
        .unwrap();
    }
    let mut s1 = Stream::open(&b, "ship").await;
    let mut s2 = Stream::open(&b, "ship").await;
    let mut seen: BTreeMap<(u32, u64), Vec<u8>> = BTreeMap::new();
    let start = Instant::now();
    while seen.len() < 40 {
        assert!(
            start.elapsed() < PATIENCE,
            "only {} of 40 records arrived",
            seen.len()
        );
        for s in [&mut s1, &mut s2] {
            if let Some(records) = s.next_records(Duration::from_millis(200)).await {
                for (p, o, v) in records {
                    // A partition may be read by s1 until s2 takes it over, so
                    // a duplicate is only allowed with the same bytes; once
                    // stable, each record arrives once.
                    if let Some(old) = seen.insert((p, o), v.clone()) {
                        assert_eq!(old, v);
                    }
                }
            }
        }
    }
    // Take in every event still queued (assignment changes after s2 joined).
    for s in [&mut s1, &mut s2] {
        while s.next_records(Duration::from_millis(300)).await.is_some() {}
    }
    assert!(
        s1.owned.is_disjoint(&s2.owned),
        "no partition has two owners"
    );
    assert_eq!(s1.owned.len() + s2.owned.len(), 4);
    // Commit everything, then check nothing more arrives (exactly once when stable).
    let mut g = groups(&b).await;
    for s in [&s1, &s2] {
        let offsets = s
            .owned
            .iter()
            .map(|p| PartitionOffset {
                topic: "t".into(),
                partition: *p,
                offset: 10,
                metadata: String::new(),
            })
            .collect();
        g.commit_offsets(CommitOffsetsRequest {
            group: "ship".into(),
            member_id: s.member_id.clone(),
            member_epoch: s.epoch,
            offsets,
        })
        .await
        .unwrap();
    }
    assert!(s1.next_records(Duration::from_millis(300)).await.is_none());
    // Live reset to offset 5: both streams replay from there by themselves,
    // and commits carrying the old epoch are fenced.
    let old_epoch = s1.epoch;
    let reset = g
        .reset_offsets(ResetOffsetsRequest {
            group: "ship".into(),
            topic: "t".into(),
            to: ResetTo::Offset as i32,
            value: 5,
            dry_run: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(reset.offsets.iter().all(|o| o.offset == 5));
    let mut replayed = BTreeSet::new();
    let start = Instant::now();
    while replayed.len() < 20 {
        assert!(
            start.elapsed() < PATIENCE,
            "replay stalled at {}",
            replayed.len()
        );
        for s in [&mut s1, &mut s2] {
            if let Some(records) = s.next_records(Duration::from_millis(200)).await {
                for (p, o, _) in records {
                    assert!(o >= 5, "replay starts at the reset offset");
                    replayed.insert((p, o));
                }
            }
        }
    }
    assert!(s1.epoch > old_epoch, "the stream learned its new epoch");
    let e = g
        .commit_offsets(CommitOffsetsRequest {
            group: "ship".into(),
            member_id: s1.member_id.clone(),
            member_epoch: old_epoch,
            offsets: vec![PartitionOffset {
                topic: "t".into(),
                partition: *s1.owned.iter().next().unwrap(),
                offset: 7,
                metadata: String::new(),
            }],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    // Closing a stream leaves the group at once: the other takes everything.
    drop(s2);
    let start = Instant::now();
    while s1.owned.len() < 4 {
        assert!(
            start.elapsed() < PATIENCE,
            "partitions never moved to the remaining stream"
        );
        let _ = s1.next_records(Duration::from_millis(200)).await;
    }
    // dry_run moves nothing.
    let preview = g
        .reset_offsets(ResetOffsetsRequest {
            group: "ship".into(),
            topic: "t".into(),
            to: ResetTo::Earliest as i32,
            value: 0,
            dry_run: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(preview.offsets.iter().all(|o| o.offset == 0));
    let committed = g
        .fetch_offsets(FetchOffsetsRequest {
            group: "ship".into(),
            partitions: vec![],
        })
        .await
        .unwrap()
        .into_inner()
        .offsets;
    assert!(committed.iter().all(|o| o.offset == 5));
}

#[tokio::test]
async fn no_record_is_lost_across_a_rebalance_when_members_commit_what_they_processed() {
    let b = BrokerProcess::start();
    create_topic(&b, "t", 4).await;
    let mut log = b.log().await;
    for i in 0..200u32 {
        log.produce(produce_req(
            "t",
            Some(i % 4),
            vec![record(format!("r{i}").as_bytes())],
        ))
        .await
        .unwrap();
    }
    let mut g = groups(&b).await;
    let mut processed: BTreeSet<(u32, u64)> = BTreeSet::new();
    // Processes one batch from `s` and commits the next offset after it.
    async fn step(
        s: &mut Stream,
        g: &mut GroupsClient<Channel>,
        processed: &mut BTreeSet<(u32, u64)>,
    ) {
        if let Some(records) = s.next_records(Duration::from_millis(200)).await {
            let Some(&(p, last, _)) = records.last() else {
                return;
            };
            processed.extend(records.iter().map(|(p, o, _)| (*p, *o)));
            // A commit refused for a stale epoch is fine: those records are
            // delivered again (at least once), never skipped.
            let _ = g
                .commit_offsets(CommitOffsetsRequest {
                    group: "audit".into(),
                    member_id: s.member_id.clone(),
                    member_epoch: s.epoch,
                    offsets: vec![PartitionOffset {
                        topic: "t".into(),
                        partition: p,
                        offset: last + 1,
                        metadata: String::new(),
                    }],
                })
                .await;
        }
    }
    let mut a = Stream::open(&b, "audit").await;
    while processed.len() < 60 {
        step(&mut a, &mut g, &mut processed).await;
    }
    // A second member joins mid-stream: partitions move from a to b.
    let mut bm = Stream::open(&b, "audit").await;
    let start = Instant::now();
    while processed.len() < 200 {
        assert!(
            start.elapsed() < PATIENCE,
            "{} of 200 records processed",
            processed.len()
        );
        step(&mut a, &mut g, &mut processed).await;
        step(&mut bm, &mut g, &mut processed).await;
    }
    let all: BTreeSet<(u32, u64)> = (0..4).flat_map(|p| (0..50).map(move |o| (p, o))).collect();
    assert_eq!(processed, all, "every record was processed by some member");
    assert!(!bm.owned.is_empty(), "the new member took over partitions");
}

#[tokio::test]
async fn assignments_follow_topics_created_and_grown_after_members_subscribed() {
    let b = BrokerProcess::start();
    let mut g = groups(&b).await;
    // The member subscribes before the topic exists: nothing to own yet.
    let mut m = Member::join(&mut g, "early", 10_000).await;
    assert!(m.owned.is_empty());
    create_topic(&b, "t", 2).await;
    beat_until(&mut g, "early", std::slice::from_mut(&mut m), |m| {
        m[0].owned.len() == 2
    })
    .await;
    b.admin()
        .await
        .create_partitions(strata::proto::v1::CreatePartitionsRequest {
            name: "t".into(),
            total_partitions: 5,
        })
        .await
        .unwrap();
    beat_until(&mut g, "early", std::slice::from_mut(&mut m), |m| {
        m[0].owned.len() == 5
    })
    .await;
    b.admin()
        .await
        .delete_topic(strata::proto::v1::DeleteTopicRequest { name: "t".into() })
        .await
        .unwrap();
    beat_until(&mut g, "early", std::slice::from_mut(&mut m), |m| {
        m[0].owned.is_empty()
    })
    .await;
}

#[tokio::test]
async fn empty_groups_expire_after_the_offsets_retention() {
    let b = BrokerProcess::start_with(&["--offsets-retention-ms", "200"]);
    create_topic(&b, "t", 1).await;
    let mut g = groups(&b).await;
    g.commit_offsets(CommitOffsetsRequest {
        group: "short-lived".into(),
        member_id: String::new(),
        member_epoch: -1,
        offsets: vec![PartitionOffset {
            topic: "t".into(),
            partition: 0,
            offset: 0,
            metadata: String::new(),
        }],
    })
    .await
    .unwrap();
    let start = Instant::now();
    loop {
        let listed = g
            .list_groups(ListGroupsRequest {})
            .await
            .unwrap()
            .into_inner()
            .groups;
        if listed.is_empty() {
            break;
        }
        assert!(start.elapsed() < PATIENCE, "the empty group never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let e = g
        .describe_group(DescribeGroupRequest {
            group: "short-lived".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
}
