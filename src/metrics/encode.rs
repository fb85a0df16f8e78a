//! Turns a [`Scrape`] into OpenMetrics text with `prometheus-client`'s
//! encoder: a [`Collector`] describes each family (`# HELP`, `# TYPE`) and
//! its samples; the crate writes the syntax (`_total` on counters, `_bucket`,
//! `_sum` and `_count` on histograms, label escaping, `# EOF`).
//!
//! Names carry their unit (`_bytes`, `_seconds`, `_records`); time is
//! exported in seconds, Prometheus's base unit.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::scrape::Scrape;
use crate::storage::counters::HistogramSnapshot;

/// Label pairs of one sample.
type Labels = Vec<(&'static str, String)>;

/// Encodes one scrape, `# EOF` included.
///
/// # Errors
/// Only if writing to the `String` fails.
pub fn encode(scrape: Scrape) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(ScrapeCollector(scrape)));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

#[derive(Debug)]
struct ScrapeCollector(Scrape);

impl Collector for ScrapeCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        gauge(
            &mut enc,
            "strata_build_info",
            "Always 1; the version label says which build runs.",
            [(
                vec![("version", env!("CARGO_PKG_VERSION").to_string())],
                1.0,
            )],
        )?;
        traffic(&mut enc, s)?;
        rpc(&mut enc, s)?;
        logs(&mut enc, s)?;
        groups(&mut enc, s)?;
        storage(&mut enc, s)?;
        resources(&mut enc, s)
    }
}

fn topic(t: &str) -> Labels {
    vec![("topic", t.to_string())]
}

fn partition(t: &str, p: u32) -> Labels {
    vec![("topic", t.to_string()), ("partition", p.to_string())]
}

fn traffic(enc: &mut DescriptorEncoder, s: &Scrape) -> std::fmt::Result {
    let per_topic = |f: fn(&crate::broker::topics::TrafficSnapshot) -> u64| {
        s.topics
            .iter()
            .map(move |t| (topic(&t.topic), f(&t.traffic)))
    };
    counter(
        enc,
        "strata_records_produced",
        "Records appended, per topic.",
        per_topic(|t| t.records_produced),
    )?;
    counter(
        enc,
        "strata_bytes_produced",
        "Bytes of records appended (as sent and stored, without frame headers), per topic.",
        per_topic(|t| t.bytes_produced),
    )?;
    counter(
        enc,
        "strata_records_fetched",
        "Records handed to readers (Fetch, Subscribe, Consume), per topic.",
        per_topic(|t| t.records_fetched),
    )?;
    counter(
        enc,
        "strata_bytes_fetched",
        "Bytes of records handed to readers, per topic.",
        per_topic(|t| t.bytes_fetched),
    )?;
    histogram(
        enc,
        "strata_produce_batch_records",
        "Records per produce request (each request is one stored batch).",
        [(Labels::new(), &s.batch_records)],
        1.0,
    )?;
    histogram(
        enc,
        "strata_produce_batch_bytes",
        "Bytes of records per produce request.",
        [(Labels::new(), &s.batch_bytes)],
        1.0,
    )
}

fn rpc(enc: &mut DescriptorEncoder, s: &Scrape) -> std::fmt::Result {
    let method = |r: &crate::api::observe::Rpc| {
        vec![
            ("service", r.service.to_string()),
            ("method", r.method.to_string()),
        ]
    };
    let with_code = |c: &crate::api::observe::CallCount| {
        let mut l = method(&c.rpc);
        l.push(("code", c.code.to_string()));
        l
    };
    counter(
        enc,
        "strata_rpc_requests",
        "gRPC calls that ended, per method and final status code (streams count when they end).",
        s.rpc.calls.iter().map(|c| (with_code(c), c.count)),
    )?;
    histogram(
        enc,
        "strata_rpc_duration_seconds",
        "Time from a unary call's arrival to its last response byte, per method and code.",
        s.rpc
            .calls
            .iter()
            .filter_map(|c| c.latency_ns.as_ref().map(|h| (with_code(c), h))),
        1e-9,
    )?;
    let streaming = || s.rpc.methods.iter().filter(|m| m.rpc.streaming);
    counter(
        enc,
        "strata_rpc_streams_opened",
        "Streaming calls (Subscribe, Consume) opened, per method.",
        streaming().map(|m| (method(&m.rpc), m.streams_opened)),
    )?;
    gauge(
        enc,
        "strata_rpc_open_streams",
        "Streaming calls open now, per method.",
        streaming().map(|m| (method(&m.rpc), m.open_streams as f64)),
    )?;
    counter(
        enc,
        "strata_rpc_slow_requests",
        "Unary calls slower than slow_request_ms (each logged at WARN), per method.",
        s.rpc
            .methods
            .iter()
            .filter(|m| !m.rpc.streaming)
            .map(|m| (method(&m.rpc), m.slow)),
    )?;
    gauge(
        enc,
        "strata_connected_clients",
        "Client connections to the gRPC listener open now.",
        [(Labels::new(), s.connected_clients as f64)],
    )?;
    counter(
        enc,
        "strata_connections_accepted",
        "Client connections accepted by the gRPC listener.",
        [(Labels::new(), s.connections_accepted)],
    )?;
    counter(
        enc,
        "strata_connections_refused",
        "Client connections closed at once because max_connections were open.",
        [(Labels::new(), s.connections_refused)],
    )?;
    counter(
        enc,
        "strata_connections_closed_for_resets",
        "Client connections closed because they reset streams faster than \
         max_stream_resets_per_sec (rapid reset).",
        [(Labels::new(), s.connections_closed_for_resets)],
    )?;
    counter(
        enc,
        "strata_auth_failures",
        "Requests refused because their credentials were missing or wrong.",
        [(Labels::new(), s.auth_failures)],
    )
}

fn logs(enc: &mut DescriptorEncoder, s: &Scrape) -> std::fmt::Result {
    let rows = |f: fn(&super::scrape::PartitionRow) -> f64| {
        s.partitions
            .iter()
            .map(move |p| (partition(&p.topic, p.partition), f(p)))
    };
    gauge(
        enc,
        "strata_log_size_bytes",
        "Bytes of log data, per partition.",
        rows(|p| p.size_bytes as f64),
    )?;
    gauge(
        enc,
        "strata_log_segments",
        "Segments, the active one included, per partition.",
        rows(|p| f64::from(p.segments)),
    )?;
    gauge(
        enc,
        "strata_log_start_offset",
        "First offset still stored, per partition.",
        rows(|p| p.log_start_offset as f64),
    )?;
    gauge(
        enc,
        "strata_high_watermark",
        "Offset the next record gets, per partition.",
        rows(|p| p.high_watermark as f64),
    )?;
    gauge(
        enc,
        "strata_unflushed_bytes",
        "Bytes appended since the last full flush began: at most what a power loss could take now, per partition.",
        rows(|p| p.unflushed_bytes as f64),
    )?;
    gauge(
        enc,
        "strata_read_only_partitions",
        "Partitions refusing writes after a failed flush (until the broker restarts).",
        [(
            Labels::new(),
            s.partitions.iter().filter(|p| p.read_only).count() as f64,
        )],
    )
}

fn groups(enc: &mut DescriptorEncoder, s: &Scrape) -> std::fmt::Result {
    gauge(
        enc,
        "strata_group_members",
        "Live members, per consumer group.",
        s.groups
            .iter()
            .map(|g| (vec![("group", g.group.clone())], f64::from(g.members))),
    )?;
    let lag = |l: &super::scrape::LagRow| {
        let mut labels = vec![("group", l.group.clone())];
        labels.extend(partition(&l.topic, l.partition));
        labels
    };
    gauge(
        enc,
        "strata_group_lag_records",
        "Records between a group's committed offset and the high watermark, per group and partition.",
        s.lag.iter().map(|l| (lag(l), l.lag_records as f64)),
    )?;
    gauge(
        enc,
        "strata_group_lag_seconds",
        "Age of the oldest record a group has not committed (0 when caught up), per group and partition.",
        s.lag.iter().map(|l| (lag(l), l.lag_ms as f64 / 1000.0)),
    )
}

fn storage(enc: &mut DescriptorEncoder, s: &Scrape) -> std::fmt::Result {
    let c = &s.storage;
    histogram(
        enc,
        "strata_flush_duration_seconds",
        "Time of each completed flush (fdatasync, plus the checkpoint for a full flush).",
        [(Labels::new(), &s.flush_latency_ns)],
        1e-9,
    )?;
    let one = |v: u64| [(Labels::new(), v)];
    counter(
        enc,
        "strata_flush_failures",
        "Failed flushes; each turns its partition read-only.",
        one(c.flush_failures),
    )?;
    counter(
        enc,
        "strata_recovery_truncations",
        "Torn tails cut by recovery at start-up.",
        one(c.truncations),
    )?;
    counter(
        enc,
        "strata_recovery_truncated_bytes",
        "Bytes cut by recovery at start-up.",
        one(c.truncated_bytes),
    )?;
    counter(
        enc,
        "strata_damaged_ranges",
        "Damaged batch ranges found, by recovery (interior damage) or by the scrubber.",
        one(c.damaged_ranges),
    )?;
    counter(
        enc,
        "strata_scrub_damaged_ranges",
        "Damaged batch ranges the background scrubber found.",
        one(c.scrub_findings),
    )?;
    counter(
        enc,
        "strata_crc_failures",
        "Reads that met a batch failing its CRC or frame checks (answered DATA_LOSS).",
        one(c.crc_failures),
    )?;
    counter(
        enc,
        "strata_disk_full_errors",
        "Writes refused because the disk (or quota) was full.",
        one(c.disk_full),
    )
}

fn resources(enc: &mut DescriptorEncoder, s: &Scrape) -> std::fmt::Result {
    let r = &s.resources;
    let one = |v: Option<u64>| v.map(|v| (Labels::new(), v as f64));
    gauge(
        enc,
        "strata_open_files",
        "Open file descriptors of the broker process.",
        one(r.open_files),
    )?;
    gauge(
        enc,
        "strata_open_files_limit",
        "The soft limit on open file descriptors (RLIMIT_NOFILE).",
        one(r.open_files_limit),
    )?;
    gauge(
        enc,
        "strata_open_maps",
        "Memory maps of the broker process (each takes a vm.max_map_count slot).",
        one(r.maps),
    )?;
    gauge(
        enc,
        "strata_open_segment_maps",
        "Memory maps of files under the data directory (segments and indexes).",
        one(r.segment_maps),
    )
}

fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Labels, u64)>,
) -> std::fmt::Result {
    let mut metric = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in rows {
        if labels.is_empty() {
            metric.encode_counter::<NoLabelSet, u64, u64>(&value, None)?;
        } else {
            metric
                .encode_family(&labels)?
                .encode_counter::<NoLabelSet, u64, u64>(&value, None)?;
        }
    }
    Ok(())
}

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Labels, f64)>,
) -> std::fmt::Result {
    let mut metric = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in rows {
        if labels.is_empty() {
            metric.encode_gauge(&value)?;
        } else {
            metric.encode_family(&labels)?.encode_gauge(&value)?;
        }
    }
    Ok(())
}

/// A histogram family; `scale` turns the recorded unit into the exported
/// one (1e-9 for nanoseconds to seconds).
fn histogram<'h>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Labels, &'h HistogramSnapshot)>,
    scale: f64,
) -> std::fmt::Result {
    let mut metric = enc.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, h) in rows {
        let buckets: Vec<(f64, u64)> = h
            .bounds
            .iter()
            .map(|b| *b as f64 * scale)
            .chain(std::iter::once(f64::INFINITY))
            .zip(h.buckets.iter().copied())
            .collect();
        let (sum, count) = (h.sum as f64 * scale, h.count());
        if labels.is_empty() {
            metric.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        } else {
            metric
                .encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        }
    }
    Ok(())
}
