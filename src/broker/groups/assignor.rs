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
fn rebalance_uneven(
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
