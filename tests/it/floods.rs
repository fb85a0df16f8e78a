//! Connection and authentication floods (RELIABILITY.md scenario 23): from
//! one address, thousands of new connections and a thousand requests with a
//! wrong token, against a broker with authentication on and a small
//! connection cap. The cap holds, every failed authentication is counted in
//! `strata_auth_failures_total`, the heap stays bounded, and an authorised
//! client that connected before the flood keeps being served (its latency
//! is printed, never asserted).
//!
//! The attacker runs on a runtime of its own: on the test's runtime its
//! 50 concurrent calls and its connect loop queue ahead of the authorised
//! client's calls, and the printed latency would measure the test process's
//! scheduler rather than the broker. Both still share the machine's cores
//! with the broker.

use std::path::Path;
use std::time::{Duration, Instant};

use strata::auth::token::TokenDigest;
use strata::client::{Client, ConnectOptions};
use tonic::Code;

use crate::harness::{attacker_runtime, cpu_secs, BrokerProcess};
use crate::metrics::scrape;

const TOKEN: &str = "flood-test-token";
/// The broker's connection cap in this test.
const MAX_CONNECTIONS: usize = 32;
/// New connections the flood opens (one after another, each closed).
const NEW_CONNECTIONS: usize = 5_000;
/// Connections the flood also holds open (beyond the cap).
const HELD_CONNECTIONS: usize = 100;
/// Requests with a wrong token.
const FAILED_AUTHS: usize = 1_000;

fn write_auth_file(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("auth.toml");
    let text = format!(
        "[[principal]]\nname = \"app\"\ntoken_sha256 = \"{}\"\npermissions = [\"admin:*\", \"produce:*\", \"consume:*\"]\n",
        TokenDigest::of(TOKEN.as_bytes()).to_hex()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Latencies of `calls` authorised `ListTopics` calls, sorted.
async fn latencies(client: &Client, calls: usize) -> Vec<Duration> {
    let mut out = Vec::with_capacity(calls);
    for _ in 0..calls {
        let started = Instant::now();
        client
            .list_topics()
            .await
            .expect("the authorised client is served");
        out.push(started.elapsed());
    }
    out.sort();
    out
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q) as usize]
}

/// Opens and closes `count` TCP connections, 5 every millisecond (the
/// scenario's 5,000/s; an interval paces the attacker, it synchronizes
/// nothing); returns the number the kernel accepted (the broker may close
/// them at once).
async fn connection_churn(addr: String, count: usize) -> usize {
    let mut pace = tokio::time::interval(Duration::from_millis(1));
    let mut opened = 0;
    for i in 0..count {
        if i % 5 == 0 {
            pace.tick().await;
        }
        if tokio::net::TcpStream::connect(&addr).await.is_ok() {
            opened += 1;
        }
    }
    opened
}

/// Sends `count` requests with a wrong token over `client`'s connection,
/// 50 at a time every 50 ms (the scenario's 1,000/s); returns how many
/// were refused with `UNAUTHENTICATED`.
async fn failed_auths(client: Client, count: usize) -> usize {
    let mut pace = tokio::time::interval(Duration::from_millis(50));
    let mut refused = 0;
    for _ in 0..count / 50 {
        pace.tick().await;
        let calls: Vec<_> = (0..50)
            .map(|_| {
                let client = client.clone();
                tokio::spawn(async move { client.list_topics().await })
            })
            .collect();
        for c in calls {
            if let Err(e) = c.await.unwrap() {
                if e.code() == Code::Unauthenticated {
                    refused += 1;
                }
            }
        }
    }
    refused
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_and_auth_floods_are_capped_counted_and_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let auth = write_auth_file(dir.path());
    let cap = MAX_CONNECTIONS.to_string();
    let b = BrokerProcess::start_with(&[
        "--auth-file",
        auth.to_str().unwrap(),
        "--max-connections",
        &cap,
        "--metrics-listen",
        "127.0.0.1:0",
        "--auth-metrics",
        "open",
    ]);
    let options = ConnectOptions {
        tls: None,
        token: Some(TOKEN.into()),
    };
    // The authorised client connects before the flood (it holds a slot).
    let good = Client::connect_with(&b.addr, &options).await.unwrap();
    latencies(&good, 100).await; // warm-up
    let baseline = latencies(&good, 500).await;
    // The attacker's authenticating connection is open before the held
    // connections fill the cap (its first refusal opens it). It lives on
    // the attacker's runtime, with everything else the attacker does.
    let attack = attacker_runtime(1);
    let addr = b.addr.clone();
    let attacker = attack
        .spawn(async move {
            let wrong = ConnectOptions {
                tls: None,
                token: Some("wrong-token".into()),
            };
            let attacker = Client::connect_with(&addr, &wrong).await.unwrap();
            assert_eq!(
                attacker.list_topics().await.unwrap_err().code(),
                Code::Unauthenticated
            );
            attacker
        })
        .await
        .unwrap();
    let before = scrape(&b).await;
    let idle_kib = b.rss_anon_kib();

    // The flood, from 127.0.0.1: connections held beyond the cap, a stream
    // of new connections, and requests with a wrong token.
    let addr = b.addr.clone();
    let held = attack
        .spawn(async move {
            let mut held = Vec::new();
            for _ in 0..HELD_CONNECTIONS {
                if let Ok(s) = tokio::net::TcpStream::connect(&addr).await {
                    held.push(s);
                }
            }
            held
        })
        .await
        .unwrap();
    let started = Instant::now();
    let cpu_before = (
        cpu_secs(b.pid(), ""),
        cpu_secs(std::process::id(), "attacker"),
    );
    let churn = attack.spawn(connection_churn(b.addr.clone(), NEW_CONNECTIONS));
    let auths = attack.spawn(failed_auths(attacker, FAILED_AUTHS));
    let during = latencies(&good, 500).await;
    let opened = churn.await.unwrap();
    let refused = auths.await.unwrap();
    let flood_secs = started.elapsed().as_secs_f64();
    let broker_cpu = cpu_secs(b.pid(), "") - cpu_before.0;
    let attacker_cpu = cpu_secs(std::process::id(), "attacker") - cpu_before.1;
    let after = scrape(&b).await;
    let peak_kib = b.rss_anon_kib();
    drop(held);
    attack.shutdown_background();

    let delta = |name: &str| after[name] - before.get(name).copied().unwrap_or(0.0);
    eprintln!(
        "floods: {opened} new connections and {refused} failed authentications in {flood_secs:.1} s \
         ({:.0} connections/s, {:.0} failed auths/s); connections refused by the cap of \
         {MAX_CONNECTIONS}: {}; authorised client p50/p99 {:?}/{:?} alone, {:?}/{:?} during the \
         flood; CPU during the flood: broker {:.0} %, attacker {:.0} % of one core; heap \
         {idle_kib} → {peak_kib} KiB",
        opened as f64 / flood_secs,
        refused as f64 / flood_secs,
        delta("strata_connections_refused_total"),
        quantile(&baseline, 0.5),
        quantile(&baseline, 0.99),
        quantile(&during, 0.5),
        quantile(&during, 0.99),
        broker_cpu / flood_secs * 100.0,
        attacker_cpu / flood_secs * 100.0,
    );
    // Every failed authentication is refused and counted.
    assert_eq!(refused, FAILED_AUTHS);
    assert_eq!(delta("strata_auth_failures_total"), FAILED_AUTHS as f64);
    // The cap held: the connections beyond it were refused, and never more
    // than the cap were open at once (the gauge is sampled after the flood).
    assert!(
        delta("strata_connections_refused_total") >= (HELD_CONNECTIONS - MAX_CONNECTIONS) as f64
    );
    assert!(after["strata_connected_clients"] <= MAX_CONNECTIONS as f64);
    // Memory stays bounded (generous: 32 MiB for thousands of connections).
    assert!(
        peak_kib < idle_kib + (32 << 10),
        "heap grew from {idle_kib} to {peak_kib} KiB under the flood"
    );
}
