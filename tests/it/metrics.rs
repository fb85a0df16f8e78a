//! The Prometheus endpoint and the request log of a real broker process:
//! the exposition is well-formed, counters move by exactly what the test
//! did, and a slow request is logged with its span's fields.

use std::collections::HashMap;
use std::sync::mpsc;
use std::time::Duration;

use strata::proto::v1::groups_client::GroupsClient;
use strata::proto::v1::{
    CommitOffsetsRequest, FetchRequest, HeartbeatRequest, PartitionOffset, SubscribeRequest,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::BrokerProcess;
use crate::log_api::{create_topic, produce_req, record};

/// How long to wait for an expected log line before failing (a failure
/// detector, not synchronisation).
const LOG_TIMEOUT: Duration = Duration::from_secs(60);

/// One HTTP/1.1 request; returns the status code, the content type and
/// the body.
async fn http_get(addr: &str, path: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect to metrics");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.expect("read");
    let raw = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("header end");
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let mut content_type = String::new();
    let mut length = None;
    for line in lines {
        let (name, value) = line.split_once(':').expect("header line");
        match name.to_ascii_lowercase().as_str() {
            "content-type" => content_type = value.trim().to_string(),
            "content-length" => length = value.trim().parse::<usize>().ok(),
            "transfer-encoding" => panic!("unexpected transfer-encoding: {value}"),
            _ => {}
        }
    }
    assert_eq!(length, Some(body.len()), "content-length matches the body");
    (status, content_type, body.to_string())
}

/// Scrapes `/metrics`, checks the exposition, and returns every sample by
/// its `name{labels}` as written.
pub async fn scrape(b: &BrokerProcess) -> HashMap<String, f64> {
    let addr = b
        .metrics_addr
        .as_deref()
        .expect("started with --metrics-listen");
    let (status, content_type, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    check_exposition(&body)
}

/// Validates the text exposition: every non-comment line is
/// `name{labels} value` (or `name value`), every sample belongs to a family
/// declared by `# TYPE` (and `# HELP`) before it, with the suffix its type
/// allows, no sample appears twice, and the text ends with `# EOF`.
fn check_exposition(text: &str) -> HashMap<String, f64> {
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helped = Vec::new();
    let mut samples = HashMap::new();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"), "ends with # EOF");
    for line in &lines[..lines.len() - 1] {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            helped.push(rest.split(' ').next().unwrap_or_default().to_string());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            assert!(helped.iter().any(|h| h == name), "{name} has no # HELP");
            assert!(
                ["counter", "gauge", "histogram"].contains(&kind),
                "{name}: type {kind}"
            );
            assert!(
                types.insert(name.to_string(), kind.to_string()).is_none(),
                "{name} declared twice"
            );
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment: {line}");
        let (key, value) = line.rsplit_once(' ').expect("sample: name value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        let name = match key.split_once('{') {
            Some((name, labels)) => {
                check_labels(labels.strip_suffix('}').expect("labels end with }"), line);
                name
            }
            None => key,
        };
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                && !name.starts_with(|c: char| c.is_ascii_digit()),
            "bad metric name in {line}"
        );
        assert!(name.starts_with("strata_"), "{name} is not strata_*");
        let family_ok = match types.get(name).map(String::as_str) {
            Some("gauge") => true,
            Some(_) => false,
            None => {
                let typed = |suffix: &str, kind: &str| {
                    name.strip_suffix(suffix)
                        .is_some_and(|f| types.get(f).is_some_and(|t| t == kind))
                };
                typed("_total", "counter")
                    || typed("_bucket", "histogram")
                    || typed("_sum", "histogram")
                    || typed("_count", "histogram")
            }
        };
        assert!(family_ok, "{line}: no matching # TYPE before it");
        assert!(
            samples.insert(key.to_string(), value).is_none(),
            "{key} appears twice"
        );
    }
    samples
}

/// `k="v",k2="v2"` with escaped values.
fn check_labels(labels: &str, line: &str) {
    let mut rest = labels;
    while !rest.is_empty() {
        let (name, after) = rest
            .split_once("=\"")
            .unwrap_or_else(|| panic!("label in {line}"));
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "label name {name:?} in {line}"
        );
        let mut end = None;
        let mut escaped = false;
        for (i, c) in after.char_indices() {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let end = end.unwrap_or_else(|| panic!("unterminated label value in {line}"));
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

fn get(samples: &HashMap<String, f64>, key: &str) -> f64 {
    *samples
        .get(key)
        .unwrap_or_else(|| panic!("no sample {key}"))
}

fn rpc_key(name: &str, service: &str, method: &str, code: &str) -> String {
    format!("{name}{{service=\"strata.v1.{service}\",method=\"{method}\",code=\"{code}\"}}")
}

#[tokio::test]
async fn counters_move_by_exactly_what_was_done() {
    let b = BrokerProcess::start_with(&["--metrics-listen", "127.0.0.1:0"]);
    let metrics = b.metrics_addr.clone().expect("metrics address printed");
    assert_ne!(metrics, b.addr, "metrics have their own port");
    let (status, _, _) = http_get(&metrics, "/").await;
    assert_eq!(status, 404);

    let before = scrape(&b).await;
    let build = format!(
        "strata_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(get(&before, &build), 1.0);
    create_topic(&b, "orders", 2).await;

    // 137 records in three requests, over both partitions (and one below).
    let mut log = b.log().await;
    let mut produced_bytes = 0;
    for (partition, n) in [(0u32, 50usize), (1, 50), (0, 37)] {
        let records: Vec<_> = (0..n)
            .map(|i| record(format!("event-{i}").as_bytes()))
            .collect();
        produced_bytes += records
            .iter()
            .map(|r| prost::Message::encoded_len(r) + 2)
            .sum::<usize>();
        log.produce(produce_req("orders", Some(partition), records))
            .await
            .expect("produce");
    }
    // One more, durable: answered after a flush, which the histogram saw.
    let mut durable = produce_req("orders", Some(1), vec![record(b"kept")]);
    durable.acks = strata::proto::v1::Acks::Durable as i32;
    log.produce(durable).await.expect("durable produce");
    produced_bytes += prost::Message::encoded_len(&record(b"kept")) + 2;
    let missing = log
        .produce(produce_req("nope", None, vec![record(b"x")]))
        .await
        .expect_err("unknown topic");
    assert_eq!(missing.code(), tonic::Code::NotFound);

    let s = scrape(&b).await;
    assert_eq!(
        get(&s, "strata_records_produced_total{topic=\"orders\"}"),
        138.0
    );
    assert_eq!(
        get(&s, "strata_bytes_produced_total{topic=\"orders\"}"),
        produced_bytes as f64
    );
    let produce_ok = rpc_key("strata_rpc_requests_total", "Log", "Produce", "OK");
    let produce_nf = rpc_key("strata_rpc_requests_total", "Log", "Produce", "NOT_FOUND");
    assert_eq!(
        get(&s, &produce_ok) - before.get(&produce_ok).unwrap_or(&0.0),
        4.0
    );
    assert_eq!(get(&s, &produce_nf), 1.0);
    assert_eq!(
        get(
            &s,
            &rpc_key("strata_rpc_duration_seconds_count", "Log", "Produce", "OK")
        ),
        get(&s, &produce_ok),
        "every unary call has its latency"
    );
    assert_eq!(
        get(
            &s,
            &rpc_key("strata_rpc_requests_total", "Admin", "CreateTopic", "OK")
        ),
        1.0
    );
    assert_eq!(get(&s, "strata_produce_batch_records_count"), 4.0);
    assert_eq!(get(&s, "strata_produce_batch_records_sum"), 138.0);
    assert!(get(&s, "strata_flush_duration_seconds_count") >= 1.0);
    assert_eq!(
        get(&s, "strata_log_segments{topic=\"orders\",partition=\"0\"}"),
        1.0
    );
    assert_eq!(
        get(
            &s,
            "strata_high_watermark{topic=\"orders\",partition=\"0\"}"
        ),
        87.0
    );
    assert!(
        get(
            &s,
            "strata_log_size_bytes{topic=\"orders\",partition=\"1\"}"
        ) > 0.0
    );
    assert!(get(&s, "strata_connected_clients") >= 1.0);
    assert!(get(&s, "strata_open_segment_maps") >= 1.0);
    assert!(get(&s, "strata_open_files") > 0.0);
    assert_eq!(get(&s, "strata_crc_failures_total"), 0.0);

    // Fetch from inside the first batch: the response starts at offset 10,
    // and exactly what it carries is counted.
    let resp = log
        .fetch(FetchRequest {
            topic: "orders".into(),
            partition: 0,
            offset: 10,
            max_bytes: 0,
            max_wait_ms: 0,
        })
        .await
        .expect("fetch")
        .into_inner();
    let fetched: usize = resp.batches.iter().map(|b| b.records.len()).sum();
    assert_eq!(fetched, 77);
    let s = scrape(&b).await;
    assert_eq!(
        get(&s, "strata_records_fetched_total{topic=\"orders\"}"),
        77.0
    );
    assert!(get(&s, "strata_bytes_fetched_total{topic=\"orders\"}") > 0.0);
    assert_eq!(
        get(
            &s,
            &rpc_key("strata_rpc_requests_total", "Log", "Fetch", "OK")
        ),
        1.0
    );

    // A group: a standalone commit at 20 on partition 0, then one member.
    let mut groups = GroupsClient::new(b.channel().await);
    groups
        .commit_offsets(CommitOffsetsRequest {
            group: "billing".into(),
            member_id: String::new(),
            member_epoch: 0,
            offsets: vec![PartitionOffset {
                topic: "orders".into(),
                partition: 0,
                offset: 20,
                metadata: String::new(),
            }],
        })
        .await
        .expect("commit");
    groups
        .heartbeat(HeartbeatRequest {
            group: "billing".into(),
            topics: vec!["orders".into()],
            session_timeout_ms: 60_000,
            ..Default::default()
        })
        .await
        .expect("join");
    // A subscription stream, open while we scrape.
    let mut sub = log
        .subscribe(SubscribeRequest {
            topic: "orders".into(),
            partition: 1,
            offset: 0,
        })
        .await
        .expect("subscribe")
        .into_inner();
    sub.message().await.expect("stream").expect("a response");

    let s = scrape(&b).await;
    assert_eq!(get(&s, "strata_group_members{group=\"billing\"}"), 1.0);
    let lag = |p: u32| format!("{{group=\"billing\",topic=\"orders\",partition=\"{p}\"}}");
    assert_eq!(
        get(&s, &format!("strata_group_lag_records{}", lag(0))),
        67.0
    );
    assert_eq!(
        get(&s, &format!("strata_group_lag_records{}", lag(1))),
        51.0,
        "no commit: lag from the log start"
    );
    assert!(get(&s, &format!("strata_group_lag_seconds{}", lag(0))) >= 0.0);
    let stream = "{service=\"strata.v1.Log\",method=\"Subscribe\"}";
    assert_eq!(get(&s, &format!("strata_rpc_open_streams{stream}")), 1.0);
    assert_eq!(
        get(&s, &format!("strata_rpc_streams_opened_total{stream}")),
        1.0
    );
    assert_eq!(
        get(&s, "strata_records_fetched_total{topic=\"orders\"}"),
        128.0,
        "the subscription read partition 1's 51 records"
    );
    assert_eq!(
        get(
            &s,
            &rpc_key("strata_rpc_requests_total", "Groups", "CommitOffsets", "OK")
        ),
        1.0
    );
}

/// Waits for a log line that satisfies `wanted`.
fn wait_for_line(rx: &mpsc::Receiver<String>, wanted: impl Fn(&str) -> bool) -> String {
    loop {
        match rx.recv_timeout(LOG_TIMEOUT) {
            Ok(line) if wanted(&line) => return line,
            Ok(_) => {}
            Err(e) => panic!("no such log line: {e}"),
        }
    }
}

/// A long-poll that waits its full 50 ms on an empty partition is slower
/// than a 1 ms threshold, whatever the machine: it is logged at WARN, as
/// JSON, with the request span's fields.
#[tokio::test]
async fn a_slow_request_is_logged_as_json_with_its_span_fields() {
    let (b, logs) =
        BrokerProcess::start_logged(&["--log-format", "json", "--slow-request-ms", "1"]);
    create_topic(&b, "quiet", 1).await;
    let resp = b
        .log()
        .await
        .fetch(FetchRequest {
            topic: "quiet".into(),
            partition: 0,
            offset: 0,
            max_bytes: 0,
            max_wait_ms: 50,
        })
        .await
        .expect("fetch")
        .into_inner();
    assert!(resp.batches.is_empty());
    let line = wait_for_line(&logs, |l| l.contains("slow request") && l.contains("Fetch"));
    for field in [
        "\"level\":\"WARN\"",
        "\"rpc\":\"Fetch\"",
        "\"topic\":\"quiet\"",
        "\"partition\":0",
        "\"code\":\"OK\"",
        "\"duration_ms\":",
    ] {
        assert!(line.contains(field), "{field} missing from {line}");
    }
}

/// Storage damage shows in the counters: a torn tail cut by recovery
/// after a `kill -9`, a flipped bit the scrubber finds in a closed segment,
/// and the read that meets it.
#[tokio::test]
async fn truncations_scrubber_findings_and_crc_failures_are_counted() {
    let metrics = ["--metrics-listen", "127.0.0.1:0"];
    let mut b = crate::corruption::scrubbed_broker_with_three_segments(&metrics).await;
    let flags: Vec<&str> = crate::corruption::SCRUB_FLAGS
        .iter()
        .chain(&metrics)
        .copied()
        .collect();
    let s = scrape(&b).await;
    let size = get(&s, "strata_log_size_bytes{topic=\"c\",partition=\"0\"}") as usize;
    assert_eq!(
        get(&s, "strata_log_segments{topic=\"c\",partition=\"0\"}"),
        3.0
    );
    let frame = size / 30;
    assert_eq!(frame * 30, size);
    b.kill();
    let dir = b.data_dir.join("topics/c/0");
    // A bit flip in the payload of the third batch of the first segment.
    let first = dir.join("00000000000000000000.log");
    let mut bytes = std::fs::read(&first).expect("first segment");
    bytes[2 * frame + 5000] ^= 0x08;
    std::fs::write(&first, &bytes).expect("write first segment");
    // Garbage right after the last frame of the active segment: a torn tail.
    let active = dir.join("00000000000000000020.log");
    let mut bytes = std::fs::read(&active).expect("active segment");
    bytes[10 * frame..10 * frame + 100].fill(0xAB);
    std::fs::write(&active, &bytes).expect("write active segment");

    let data_dir = b.data_dir.clone();
    let temp_holder = b;
    let b = BrokerProcess::start_in(&data_dir, &flags);
    let s = scrape(&b).await;
    assert_eq!(get(&s, "strata_recovery_truncations_total"), 1.0);
    let described = b
        .admin()
        .await
        .describe_topic(strata::proto::v1::DescribeTopicRequest { name: "c".into() })
        .await
        .expect("describe")
        .into_inner()
        .topic
        .expect("topic");
    let cut = described.partitions[0].truncated_bytes;
    assert!(cut > 0);
    assert_eq!(get(&s, "strata_recovery_truncated_bytes_total"), cut as f64);
    assert_eq!(
        get(&s, "strata_high_watermark{topic=\"c\",partition=\"0\"}"),
        30.0,
        "only the garbage was cut"
    );
    assert_eq!(get(&s, "strata_crc_failures_total"), 0.0);

    // The scrubber runs every 50 ms; wait (bounded) for its finding.
    let mut scrubbed = None;
    for _ in 0..600 {
        let s = scrape(&b).await;
        if get(&s, "strata_scrub_damaged_ranges_total") > 0.0 {
            scrubbed = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let s = scrubbed.expect("the scrubber never reported the damage");
    assert_eq!(get(&s, "strata_scrub_damaged_ranges_total"), 1.0);
    assert_eq!(get(&s, "strata_damaged_ranges_total"), 1.0);

    let e = b
        .log()
        .await
        .fetch(FetchRequest {
            topic: "c".into(),
            partition: 0,
            offset: 2,
            max_bytes: 0,
            max_wait_ms: 0,
        })
        .await
        .expect_err("damaged batch");
    assert_eq!(e.code(), tonic::Code::DataLoss);
    let s = scrape(&b).await;
    assert_eq!(get(&s, "strata_crc_failures_total"), 1.0);
    assert_eq!(
        get(
            &s,
            &rpc_key("strata_rpc_requests_total", "Log", "Fetch", "DATA_LOSS")
        ),
        1.0
    );
    drop(temp_holder);
}
