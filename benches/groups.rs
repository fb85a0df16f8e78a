//! What the partition assignor (`strata::broker::groups::assignor::assign`)
//! costs at scale. It runs under the group coordinator's lock on every join,
//! leave and topic change, so its time is a stall of every group call.
//!
//! - `assign/join/M×P`: M − 1 members own a balanced assignment of one
//!   topic's P partitions and one new member joins (the common rebalance);
//! - `assign/fresh/M×P`: M members own nothing yet (a group forming);
//! - `baseline/copy/M×P`: cloning an assignment of that size, the least any
//!   computation of a new one must do, beside it in the same run.
//!
//! Run: `cargo bench --bench groups`.

use std::collections::{BTreeMap, BTreeSet};

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use strata::broker::groups::assignor::{assign, MemberSpec, TopicPartition};

/// `members` members of one topic with `partitions` partitions; all but the
/// last own a balanced share when `owned`.
fn group(members: usize, partitions: u32, owned: bool) -> BTreeMap<String, MemberSpec> {
    let topics: BTreeSet<String> = ["orders".to_string()].into();
    let owners = if owned { members - 1 } else { 0 };
    (0..members)
        .map(|m| {
            let current: BTreeSet<TopicPartition> = if m < owners {
                (0..partitions)
                    .filter(|p| *p as usize % owners == m)
                    .map(|p| ("orders".to_string(), p))
                    .collect()
            } else {
                BTreeSet::new()
            };
            (
                format!("member-{m:05}"),
                MemberSpec {
                    topics: topics.clone(),
                    current,
                },
            )
        })
        .collect()
}

fn bench_assign(c: &mut Criterion) {
    let mut g = c.benchmark_group("assign");
    g.sample_size(10);
    for (members, partitions) in [(10usize, 100u32), (100, 1_000), (1_000, 10_000)] {
        let counts: BTreeMap<String, u32> = [("orders".to_string(), partitions)].into();
        let label = format!("{members}x{partitions}");
        let joining = group(members, partitions, true);
        g.bench_function(format!("join/{label}"), |b| {
            b.iter(|| assign(black_box(&joining), &counts))
        });
        let fresh = group(members, partitions, false);
        g.bench_function(format!("fresh/{label}"), |b| {
            b.iter(|| assign(black_box(&fresh), &counts))
        });
        let assignment = assign(&joining, &counts);
        g.bench_function(format!("baseline/copy/{label}"), |b| {
            b.iter(|| black_box(&assignment).clone())
        });
    }
    g.finish();
}

criterion_group!(benches, bench_assign);
criterion_main!(benches);
