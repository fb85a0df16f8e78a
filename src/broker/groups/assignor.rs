//! The partition assignor: balanced, sticky and pure.
//!
//! Given the live members (with the topics each subscribes to), the
//! partitions of those topics, and who owns what now, it computes the target
//! assignment:
//!
//! - **complete and disjoint**: every partition of a subscribed topic goes to
//!   exactly one member subscribed to that topic;
//! - **balanced**: when members subscribe to the same topics, their partition
//!   counts differ by at most one (with different subscriptions, as close as
//!   the subscriptions allow);
//! - **sticky**: a member keeps every partition it owns up to its quota, so
//!   no more partitions move than balance requires.
//!
//! It only computes targets. Handing a moved partition to its new owner only
//! after the old owner has released it is the coordinator's job
//! ([`super::state`]).

use std::collections::{BTreeMap, BTreeSet};

/// A topic partition.
pub type TopicPartition = (String, u32);

/// A member as the assignor sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSpec {
    /// Topics the member subscribes to.
    pub topics: BTreeSet<String>,
    /// Partitions it owns now (its current target).
    pub current: BTreeSet<TopicPartition>,
}

/// Computes the target assignment. `partitions` maps each existing topic to
/// its partition count; subscribed topics that do not exist are ignored.
pub fn assign(
    members: &BTreeMap<String, MemberSpec>,
    partitions: &BTreeMap<String, u32>,
) -> BTreeMap<String, BTreeSet<TopicPartition>> {
    let mut result: BTreeMap<String, BTreeSet<TopicPartition>> = members
        .keys()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect();
    if members.is_empty() {
        return result;
    }
    // Every partition some member subscribes to (each topic once, however
    // many members subscribe to it).
    let subscribed: BTreeSet<&String> = members.values().flat_map(|m| m.topics.iter()).collect();
    let all: BTreeSet<TopicPartition> = subscribed
        .into_iter()
        .filter_map(|t| partitions.get(t).map(|&n| (t, n)))
        .flat_map(|(t, n)| (0..n).map(move |p| (t.clone(), p)))
        .collect();
    let quotas = quotas(members, all.len());
    // 1. Stickiness: keep owned partitions that are still valid, up to quota.
    let mut taken = BTreeSet::new();
    for (id, m) in members {
        let keep = result.get_mut(id).expect("every member has an entry");
        for tp in &m.current {
            if keep.len() >= quotas[id] {
                break;
            }
            if all.contains(tp) && m.topics.contains(&tp.0) && !taken.contains(tp) {
                keep.insert(tp.clone());
                taken.insert(tp.clone());
            }
        }
    }
    // 2. Hand out the rest to the eligible member with the most room left
    //    (then the fewest partitions, then the smallest id: deterministic).
    //    `all` is sorted by topic, so the partitions come topic by topic;
    //    each topic's eligible members wait in an ordered set by that key,
    //    so each partition costs O(log members), not a scan of them all.
    let untaken: Vec<&TopicPartition> = all.iter().filter(|tp| !taken.contains(*tp)).collect();
    for run in untaken.chunk_by(|a, b| a.0 == b.0) {
        let topic = &run[0].0;
        let mut queue: BTreeSet<(bool, usize, &String)> = members
            .iter()
            .filter(|(_, m)| m.topics.contains(topic))
            .map(|(id, _)| {
                let have = result[id].len();
                (have >= quotas[id], have, id)
            })
            .collect();
        for tp in run {
            let Some((_, have, id)) = queue.pop_first() else {
                break;
            };
            result
                .get_mut(id)
                .expect("member exists")
                .insert((*tp).clone());
            queue.insert((have + 1 >= quotas[id], have + 1, id));
        }
    }
    rebalance_uneven(members, &mut result);
    result
}

/// Each member's share: `total / n`, and one more for the `total % n`
/// members that own the most now (so fewer partitions move).
fn quotas(members: &BTreeMap<String, MemberSpec>, total: usize) -> BTreeMap<String, usize> {
    let n = members.len();
    let (base, extra) = (total / n, total % n);
    let mut order: Vec<&String> = members.keys().collect();
    order.sort_by_key(|id| (std::cmp::Reverse(members[*id].current.len()), (*id).clone()));
    order
        .into_iter()
        .enumerate()
        .map(|(i, id)| (id.clone(), base + usize::from(i < extra)))
        .collect()
}

/// With differing subscriptions the quotas may be unreachable; move
/// partitions from the fullest member to an eligible emptier one while that
/// narrows the gap by more than one.
///
/// Each step moves the first partition (members by load, most first, ties
/// by id; their partitions in order) whose emptiest eligible other member
/// (fewest partitions, then smallest id) has at least two fewer. The target
/// depends only on the partition's topic, so it is found once per topic and
/// step; with loads all within one of each other nothing can move, which is
/// checked first (the usual case: one shared subscription).
fn rebalance_uneven(
    members: &BTreeMap<String, MemberSpec>,
    result: &mut BTreeMap<String, BTreeSet<TopicPartition>>,
) {
    let limit = result.values().map(|s| s.len()).sum::<usize>() + 1;
    for _ in 0..limit {
        let loads = result.values().map(BTreeSet::len);
        let (min, max) = loads.fold((usize::MAX, 0), |(lo, hi), n| (lo.min(n), hi.max(n)));
        if max < min + 2 {
            return;
        }
        // Stable sort: equal loads stay in id order.
        let mut by_load: Vec<&String> = result.keys().collect();
        by_load.sort_by_key(|id| std::cmp::Reverse(result[*id].len()));
        let mut chosen = None;
        'outer: for from in by_load {
            let from_len = result[from].len();
            // Per topic: the emptiest eligible member other than `from`.
            let mut targets: BTreeMap<&str, Option<(usize, &String)>> = BTreeMap::new();
            for tp in &result[from] {
                let target = *targets.entry(tp.0.as_str()).or_insert_with(|| {
                    members
                        .iter()
                        .filter(|(id, m)| *id != from && m.topics.contains(&tp.0))
                        .map(|(id, _)| (result[id].len(), id))
                        .min()
                });
                if let Some((len, to)) = target {
                    if len + 1 < from_len {
                        chosen = Some((from.clone(), to.clone(), tp.clone()));
                        break 'outer;
                    }
                }
            }
        }
        let Some((from, to, tp)) = chosen else {
            return;
        };
        result.get_mut(&from).expect("exists").remove(&tp);
        result.get_mut(&to).expect("exists").insert(tp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec(topics: &[&str], current: &[(&str, u32)]) -> MemberSpec {
        MemberSpec {
            topics: topics.iter().map(|t| t.to_string()).collect(),
            current: current.iter().map(|(t, p)| (t.to_string(), *p)).collect(),
        }
    }

    #[test]
    fn three_members_six_partitions_get_two_each() {
        let members: BTreeMap<_, _> = ["a", "b", "c"]
            .iter()
            .map(|m| (m.to_string(), spec(&["orders"], &[])))
            .collect();
        let parts = BTreeMap::from([("orders".to_string(), 6)]);
        let out = assign(&members, &parts);
        assert!(out.values().all(|s| s.len() == 2), "{out:?}");
    }

    #[test]
    fn a_leaving_member_moves_only_its_partitions() {
        let mut members = BTreeMap::new();
        members.insert("a".to_string(), spec(&["t"], &[("t", 0), ("t", 1)]));
        members.insert("b".to_string(), spec(&["t"], &[("t", 2), ("t", 3)]));
        let parts = BTreeMap::from([("t".to_string(), 6)]);
        // "c" owned 4 and 5 and left.
        let out = assign(&members, &parts);
        assert!(out["a"].is_superset(&members["a"].current));
        assert!(out["b"].is_superset(&members["b"].current));
        assert_eq!(out["a"].len() + out["b"].len(), 6);
    }

    #[test]
    fn different_subscriptions_still_balance_where_they_can() {
        let mut members = BTreeMap::new();
        members.insert("a".to_string(), spec(&["x", "y"], &[]));
        members.insert("b".to_string(), spec(&["y"], &[]));
        let parts = BTreeMap::from([("x".to_string(), 2), ("y".to_string(), 2)]);
        let out = assign(&members, &parts);
        assert_eq!(out["a"].len(), 2);
        assert_eq!(out["b"].len(), 2);
        assert!(out["b"].iter().all(|(t, _)| t == "y"));
    }

    // The assignor as it was before step 2 and the uneven rebalance were
    // made faster (a scan of every member per partition): the new one must
    // give exactly the same answers.
    fn reference_assign(
        members: &BTreeMap<String, MemberSpec>,
        partitions: &BTreeMap<String, u32>,
    ) -> BTreeMap<String, BTreeSet<TopicPartition>> {
        let mut result: BTreeMap<String, BTreeSet<TopicPartition>> = members
            .keys()
            .map(|m| (m.clone(), BTreeSet::new()))
            .collect();
        if members.is_empty() {
            return result;
        }
        // Every partition some member subscribes to.
        let all: BTreeSet<TopicPartition> = members
            .values()
            .flat_map(|m| m.topics.iter())
            .filter_map(|t| partitions.get(t).map(|&n| (t, n)))
            .flat_map(|(t, n)| (0..n).map(move |p| (t.clone(), p)))
            .collect();
        let quotas = quotas(members, all.len());
        // 1. Stickiness: keep owned partitions that are still valid, up to quota.
        let mut taken = BTreeSet::new();
        for (id, m) in members {
            let keep = result.get_mut(id).expect("every member has an entry");
            for tp in &m.current {
                if keep.len() >= quotas[id] {
                    break;
                }
                if all.contains(tp) && m.topics.contains(&tp.0) && !taken.contains(tp) {
                    keep.insert(tp.clone());
                    taken.insert(tp.clone());
                }
            }
        }
        // 2. Hand out the rest to the eligible member with the most room left
        //    (then the fewest partitions, then the smallest id: deterministic).
        for tp in all.iter().filter(|tp| !taken.contains(*tp)) {
            let best = members
                .iter()
                .filter(|(_, m)| m.topics.contains(&tp.0))
                .min_by_key(|(id, _)| {
                    let have = result[*id].len();
                    (have >= quotas[*id], have, (*id).clone())
                })
                .map(|(id, _)| id.clone());
            if let Some(id) = best {
                result
                    .get_mut(&id)
                    .expect("member exists")
                    .insert(tp.clone());
            }
        }
        reference_rebalance_uneven(members, &mut result);
        result
    }

    /// With differing subscriptions the quotas may be unreachable; move
    /// partitions from the fullest member to an eligible emptier one while that
    /// narrows the gap by more than one.
    fn reference_rebalance_uneven(
        members: &BTreeMap<String, MemberSpec>,
        result: &mut BTreeMap<String, BTreeSet<TopicPartition>>,
    ) {
        let limit = result.values().map(|s| s.len()).sum::<usize>() + 1;
        for _ in 0..limit {
            let mut moved = false;
            let mut by_load: Vec<String> = result.keys().cloned().collect();
            by_load.sort_by_key(|id| std::cmp::Reverse(result[id].len()));
            'outer: for from in &by_load {
                for tp in result[from].clone() {
                    let target = members
                        .iter()
                        .filter(|(id, m)| *id != from && m.topics.contains(&tp.0))
                        .min_by_key(|(id, _)| (result[*id].len(), (*id).clone()))
                        .map(|(id, _)| id.clone());
                    if let Some(to) = target {
                        if result[&to].len() + 1 < result[from].len() {
                            result.get_mut(from).expect("exists").remove(&tp);
                            result.get_mut(&to).expect("exists").insert(tp);
                            moved = true;
                            break 'outer;
                        }
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// Members with random subscriptions to three topics and random owned
    /// partitions (some stale, some shared), for the equivalence check.
    fn mixed_group() -> impl Strategy<Value = (BTreeMap<String, MemberSpec>, BTreeMap<String, u32>)>
    {
        let topics = ["a", "b", "c"];
        let member = (
            proptest::collection::vec(any::<bool>(), 3),
            proptest::collection::vec((0usize..3, 0u32..12), 0..8),
        );
        (
            proptest::collection::vec(member, 0..9),
            proptest::collection::vec(0u32..10, 3),
        )
            .prop_map(move |(specs, counts)| {
                let members = specs
                    .into_iter()
                    .enumerate()
                    .map(|(i, (subscribed, owned))| {
                        let spec = MemberSpec {
                            topics: topics
                                .iter()
                                .zip(&subscribed)
                                .filter(|(_, s)| **s)
                                .map(|(t, _)| t.to_string())
                                .collect(),
                            current: owned
                                .into_iter()
                                .map(|(t, p)| (topics[t].to_string(), p))
                                .collect(),
                        };
                        (format!("m{i}"), spec)
                    })
                    .collect();
                let partitions = topics
                    .iter()
                    .zip(counts)
                    .map(|(t, n)| (t.to_string(), n))
                    .collect();
                (members, partitions)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]
        #[test]
        fn gives_exactly_the_answers_of_the_reference((members, partitions) in mixed_group()) {
            prop_assert_eq!(assign(&members, &partitions), reference_assign(&members, &partitions));
        }
    }

    /// Random membership changes with one shared subscription.
    fn scenario() -> impl Strategy<Value = (u32, Vec<Vec<bool>>)> {
        (
            1u32..40,
            proptest::collection::vec(proptest::collection::vec(any::<bool>(), 8), 1..12),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn disjoint_complete_balanced_minimal((n_parts, rounds) in scenario()) {
            let parts = BTreeMap::from([("t".to_string(), n_parts)]);
            let mut current: BTreeMap<String, BTreeSet<TopicPartition>> = BTreeMap::new();
            for alive in rounds {
                let members: BTreeMap<String, MemberSpec> = alive
                    .iter()
                    .enumerate()
                    .filter(|(_, a)| **a)
                    .map(|(i, _)| {
                        let id = format!("m{i}");
                        let cur = current.get(&id).cloned().unwrap_or_default();
                        (id, MemberSpec { topics: BTreeSet::from(["t".to_string()]), current: cur })
                    })
                    .collect();
                let out = assign(&members, &parts);
                if members.is_empty() {
                    prop_assert!(out.is_empty());
                    current.clear();
                    continue;
                }
                // Disjoint and complete.
                let mut seen = BTreeSet::new();
                for set in out.values() {
                    for tp in set {
                        prop_assert!(seen.insert(tp.clone()), "{:?} assigned twice", tp);
                    }
                }
                prop_assert_eq!(seen.len(), n_parts as usize);
                // Balanced within one.
                let max = out.values().map(|s| s.len()).max().unwrap();
                let min = out.values().map(|s| s.len()).min().unwrap();
                prop_assert!(max - min <= 1, "{:?}", out);
                // Minimal movement: a surviving member keeps as many of its
                // partitions as its new share allows, and the larger shares go
                // to members that owned more.
                for (id, m) in &members {
                    let kept = m.current.intersection(&out[id]).count();
                    prop_assert!(kept == m.current.len().min(out[id].len()),
                        "{} kept {} of {:?} with a share of {}", id, kept, m.current, out[id].len());
                }
                for (a, ma) in &members {
                    for (b, mb) in &members {
                        if out[a].len() > out[b].len() {
                            prop_assert!(ma.current.len() >= mb.current.len().min(max),
                                "{} got the larger share though {} owned more", a, b);
                        }
                    }
                }
                current = out;
            }
        }
    }
}
