//! The budget of request bytes in flight (RELIABILITY.md scenario 13).
//!
//! 100 concurrent 1 MiB produce requests over 10 connections against a
//! 16 MiB budget are all stored (a request the budget kept waiting for a
//! second is refused with a `retry-after-ms` hint and retried), and the
//! broker's heap grows by less than 2 × the budget (RELIABILITY 13): the
//! budget itself, plus what HTTP/2 flow control lets the waiting requests
//! hold unread outside it (a stream window each, at most a connection
//! window per connection: `api::HTTP2_STREAM_WINDOW_BYTES`,
//! `api::HTTP2_CONNECTION_WINDOW_BYTES`), plus allocator slack. A request bigger than the whole budget is refused with
//! `RESOURCE_EXHAUSTED` naming the setting, and writes nothing.
//!
//! The heap is the broker's anonymous resident memory (`RssAnon` in
//! `/proc/PID/status`): `VmRSS` also counts the segment pages the writes
//! touch through their maps, which are page cache, not request buffers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use strata::proto::v1::{DescribeTopicRequest, Record};
use tonic::Code;

use crate::harness::BrokerProcess;
use crate::log_api::{create_topic, produce_req};

/// HTTP/2 windows the broker grants, KiB: what one connection, and one
/// request stream, can have buffered outside the budget.
const CONNECTION_WINDOW_KIB: u64 = (strata::api::HTTP2_CONNECTION_WINDOW_BYTES >> 10) as u64;
const STREAM_WINDOW_KIB: u64 = (strata::api::HTTP2_STREAM_WINDOW_BYTES >> 10) as u64;

fn records(count: usize, value_bytes: usize, fill: u8) -> Vec<Record> {
    (0..count)
        .map(|_| Record {
            value: vec![fill; value_bytes],
            ..Default::default()
        })
        .collect()
}

/// The sum of a topic's high watermarks.
async fn records_in(b: &BrokerProcess, topic: &str) -> u64 {
    let described = b
        .admin()
        .await
        .describe_topic(DescribeTopicRequest { name: topic.into() })
        .await
        .unwrap()
        .into_inner();
    described
        .topic
        .unwrap()
        .partitions
        .iter()
        .map(|p| p.high_watermark)
        .sum()
}

/// Samples the broker's heap until stopped; returns the highest sample, KiB.
/// (A sampler, not synchronization: it only watches.)
fn heap_peak_sampler(pid: u32, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut peak = 0;
        while !stop.load(Ordering::Relaxed) {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let anon = status
                .lines()
                .find_map(|l| l.strip_prefix("RssAnon:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0);
            peak = peak.max(anon);
            std::thread::sleep(Duration::from_millis(2));
        }
        peak
    })
}

/// Sends `requests` produce requests of `records` × `value_bytes` to topic
/// `big` (4 partitions) at once over `connections` connections; every one
/// must succeed, after the retries the broker asks for (`retry-after-ms`
/// when the budget stayed full for a second). Returns the broker's heap
/// before and at its peak, KiB, and the number of retries.
async fn burst(
    b: &BrokerProcess,
    connections: usize,
    requests: usize,
    (records_per_request, value_bytes): (usize, usize),
) -> (u64, u64, u64) {
    let mut clients = Vec::new();
    for _ in 0..connections {
        clients.push(b.log().await);
    }
    let before = records_in(b, "big").await;
    let idle_kib = b.rss_anon_kib();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = heap_peak_sampler(b.pid(), stop.clone());
    let tasks: Vec<_> = (0..requests)
        .map(|i| {
            let mut log = clients[i % connections].clone();
            tokio::spawn(async move {
                let mut retries = 0;
                loop {
                    let batch = records(records_per_request, value_bytes, i as u8);
                    let req = produce_req("big", Some(i as u32 % 4), batch);
                    match log.produce(req).await {
                        Ok(_) => return Ok(retries),
                        Err(e) if e.metadata().get("retry-after-ms").is_some() && retries < 100 => {
                            retries += 1;
                            let ms = e.metadata().get("retry-after-ms").unwrap();
                            let ms: u64 = ms.to_str().unwrap().parse().unwrap();
                            // The broker's own back-off hint, not synchronization.
                            tokio::time::sleep(Duration::from_millis(ms)).await;
                        }
                        Err(e) => return Err(e),
                    }
                }
            })
        })
        .collect();
    let mut retries = 0;
    for t in tasks {
        retries += t.await.unwrap().expect("every request is admitted in turn");
    }
    stop.store(true, Ordering::Relaxed);
    let peak_kib = sampler.join().unwrap();
    let written = records_in(b, "big").await - before;
    assert_eq!(written, (requests * records_per_request) as u64);
    (idle_kib, peak_kib, retries)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_large_produces_stay_within_the_inflight_budget() {
    const BUDGET_MIB: u64 = 16;
    const CONNECTIONS: u64 = 10;
    let budget = (BUDGET_MIB << 20).to_string();
    let b = BrokerProcess::start_with(&["--max-inflight-request-bytes", &budget]);
    create_topic(&b, "big", 4).await;
    // Warm up the produce path's first allocations.
    burst(&b, 1, 1, (1, 10)).await;
    // RELIABILITY 13: 100 concurrent 1 MiB requests (16 × 64 KiB records).
    let (idle_kib, peak_kib, retries) = burst(&b, CONNECTIONS as usize, 100, (16, 64 << 10)).await;
    // RELIABILITY 13's bound. What the design allows: the budget, plus
    // what the windows let HTTP/2 hold unread (each connection's window,
    // or each request's stream window, whichever is less); the rest is
    // slack for the allocator.
    let bound_mib = 2 * BUDGET_MIB;
    let unread_kib = (CONNECTIONS * CONNECTION_WINDOW_KIB).min(100 * STREAM_WINDOW_KIB);
    let design_kib = (BUDGET_MIB << 10) + unread_kib;
    assert!(design_kib < bound_mib << 10);
    eprintln!(
        "inflight: 100 × 1 MiB produce requests over {CONNECTIONS} connections, {BUDGET_MIB} MiB \
         budget: all stored ({retries} retried on the broker's hint); heap idle {} MiB, peak {} \
         MiB (+{} MiB; bound 2 × budget = {bound_mib} MiB, of which budget + unread in HTTP/2 \
         windows = {} MiB)",
        idle_kib >> 10,
        peak_kib >> 10,
        peak_kib.saturating_sub(idle_kib) >> 10,
        design_kib >> 10,
    );
    assert!(
        peak_kib < idle_kib + (bound_mib << 10),
        "heap peaked at {peak_kib} KiB over an idle {idle_kib} KiB"
    );

    // Bigger than the whole budget (but under max_request_bytes): refused
    // at once, naming the setting, and nothing written.
    let hw = records_in(&b, "big").await;
    let mut log = b.log().await;
    let e = log
        .produce(produce_req("big", Some(0), records(20, 1000 << 10, 7)))
        .await
        .expect_err("a request over the whole budget");
    assert_eq!(e.code(), Code::ResourceExhausted, "{}", e.message());
    assert!(
        e.message().contains("limits.max_inflight_request_bytes") && e.message().contains(&budget),
        "{}",
        e.message()
    );
    assert_eq!(
        records_in(&b, "big").await,
        hw,
        "the refused request wrote nothing"
    );
    // The broker still serves after the refusal.
    log.produce(produce_req("big", Some(1), records(1, 10, 0)))
        .await
        .unwrap();
}
