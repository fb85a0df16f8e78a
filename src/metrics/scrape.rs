//! One reading of everything the broker exports, taken when Prometheus
//! scrapes. Counters come from atomics; sizes, offsets, lag and process
//! resources are read from the broker and `/proc` here, so none of that
//! work touches the request paths.

use std::path::Path;

use crate::api::{connections, observe};
use crate::broker::topics::TrafficSnapshot;
use crate::broker::Broker;
use crate::storage::counters::{self, Counters, HistogramSnapshot};

/// One partition's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRow {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: u32,
    /// Bytes of log data.
    pub size_bytes: u64,
    /// Segments, the active one included.
    pub segments: u32,
    /// First offset still stored.
    pub log_start_offset: u64,
    /// Offset the next record gets.
    pub high_watermark: u64,
    /// Bytes appended since the last full flush began.
    pub unflushed_bytes: u64,
    /// Read-only after a failed flush.
    pub read_only: bool,
}

/// One topic's traffic, summed over its partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicRow {
    /// Topic name.
    pub topic: String,
    /// Records and bytes produced and fetched.
    pub traffic: TrafficSnapshot,
}

/// One consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRow {
    /// Group name.
    pub group: String,
    /// Live members.
    pub members: u32,
}

/// A group's lag on one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LagRow {
    /// Group name.
    pub group: String,
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: u32,
    /// Records between the committed offset and the high watermark.
    pub lag_records: u64,
    /// Age of the oldest unconsumed record, ms (0 when caught up).
    pub lag_ms: u64,
}

/// Files and maps the process holds, from `/proc` (absent where `/proc`
/// cannot be read).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    /// Open file descriptors.
    pub open_files: Option<u64>,
    /// The soft limit on open file descriptors.
    pub open_files_limit: Option<u64>,
    /// Memory maps of the process (each takes a `vm.max_map_count` slot).
    pub maps: Option<u64>,
    /// The part of `maps` that maps files under the data directory.
    pub segment_maps: Option<u64>,
}

/// Everything one scrape exports.
#[derive(Debug, Clone)]
pub struct Scrape {
    /// Every partition, by topic then number.
    pub partitions: Vec<PartitionRow>,
    /// Every topic, by name.
    pub topics: Vec<TopicRow>,
    /// Every group.
    pub groups: Vec<GroupRow>,
    /// Lag of every group on every partition it reads or committed.
    pub lag: Vec<LagRow>,
    /// Storage events.
    pub storage: Counters,
    /// Flush latency, ns.
    pub flush_latency_ns: HistogramSnapshot,
    /// Records per produce request.
    pub batch_records: HistogramSnapshot,
    /// Bytes per produce request.
    pub batch_bytes: HistogramSnapshot,
    /// Calls per RPC and code, streams.
    pub rpc: observe::RpcReport,
    /// Client connections open now.
    pub connected_clients: i64,
    /// Client connections accepted so far.
    pub connections_accepted: u64,
    /// Client connections refused (closed at once) at `max_connections`.
    pub connections_refused: u64,
    /// Client connections closed for resetting streams too fast.
    pub connections_closed_for_resets: u64,
    /// Failed authentications.
    pub auth_failures: u64,
    /// Files and maps.
    pub resources: Resources,
}

impl Scrape {
    /// Reads everything. Blocking (see [`super::render`]).
    pub fn gather(broker: &Broker) -> Scrape {
        let mut partitions = Vec::new();
        let mut topics = Vec::new();
        for topic in broker.topics() {
            let mut traffic = TrafficSnapshot::default();
            for p in &topic.partitions {
                let t = p.traffic.snapshot();
                traffic.records_produced += t.records_produced;
                traffic.bytes_produced += t.bytes_produced;
                traffic.records_fetched += t.records_fetched;
                traffic.bytes_fetched += t.bytes_fetched;
                let stats = p.log.stats();
                partitions.push(PartitionRow {
                    topic: topic.name.clone(),
                    partition: p.id,
                    size_bytes: stats.size_bytes,
                    segments: stats.segment_count,
                    log_start_offset: stats.log_start_offset,
                    high_watermark: stats.high_watermark,
                    unflushed_bytes: p.log.unflushed_bytes(),
                    read_only: p.log.is_poisoned(),
                });
            }
            topics.push(TopicRow {
                topic: topic.name.clone(),
                traffic,
            });
        }
        let (groups, lag) = groups_and_lag(broker);
        Scrape {
            partitions,
            topics,
            groups,
            lag,
            storage: counters::snapshot(),
            flush_latency_ns: counters::FLUSH_LATENCY.snapshot(),
            batch_records: crate::broker::produce::BATCH_RECORDS.snapshot(),
            batch_bytes: crate::broker::produce::BATCH_BYTES.snapshot(),
            rpc: observe::report(),
            connected_clients: connections::connected(),
            connections_accepted: connections::accepted(),
            connections_refused: connections::refused(),
            connections_closed_for_resets: connections::closed_for_resets(),
            auth_failures: super::auth_failures(),
            resources: resources(&broker.config().data_dir),
        }
    }
}

fn groups_and_lag(broker: &Broker) -> (Vec<GroupRow>, Vec<LagRow>) {
    let mut groups = Vec::new();
    let mut lag = Vec::new();
    for (group, _state, members) in broker.list_groups() {
        // A group deleted since the listing has no lag to report.
        if let Ok(d) = broker.describe_group(&group) {
            lag.extend(d.lag.into_iter().map(|l| LagRow {
                group: group.clone(),
                topic: l.topic,
                partition: l.partition,
                lag_records: l.lag,
                lag_ms: l.lag_ms,
            }));
        }
        groups.push(GroupRow { group, members });
    }
    (groups, lag)
}

/// Open files and maps of this process, from `/proc/self`.
fn resources(data_dir: &Path) -> Resources {
    let open_files = std::fs::read_dir("/proc/self/fd")
        // The directory handle being read is one of the entries.
        .map(|d| d.count().saturating_sub(1) as u64)
        .ok();
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) writes one `rlimit` into the struct we own.
    let open_files_limit = (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0)
        .then_some(limit.rlim_cur);
    let (maps, segment_maps) = match std::fs::read_to_string("/proc/self/maps") {
        Ok(text) => {
            let dir = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
            let dir = dir.to_string_lossy().into_owned();
            let under_dir = text
                .lines()
                // The path is the only field with a '/' in it.
                .filter(|l| l.find('/').is_some_and(|i| l[i..].starts_with(&dir)))
                .count();
            (Some(text.lines().count() as u64), Some(under_dir as u64))
        }
        Err(_) => (None, None),
    };
    Resources {
        open_files,
        open_files_limit,
        maps,
        segment_maps,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_see_this_process() {
        let dir = tempfile::tempdir().unwrap();
        let r = resources(dir.path());
        assert!(r.open_files.unwrap() >= 3, "{r:?}");
        assert!(r.open_files_limit.unwrap() >= r.open_files.unwrap());
        assert!(r.maps.unwrap() > 0);
        assert_eq!(r.segment_maps, Some(0), "nothing mapped under a fresh dir");
    }
}
