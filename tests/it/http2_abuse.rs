//! HTTP/2 abuse (RELIABILITY.md scenario 20): a client that opens streams
//! and resets them at once, thousands of times on one connection (the
//! "rapid reset" attack, CVE-2023-44487). The broker may close that
//! connection; it must not crash, must keep serving everyone else, and must
//! not grow its memory with the attack.

use strata::proto::v1::{DescribeTopicRequest, FetchRequest};

use crate::harness::BrokerProcess;
use crate::log_api::{create_topic, produce_req, record};

/// Streams opened and reset by the attacker.
const RESETS: usize = 10_000;

fn subscribe_headers(addr: &str) -> http::Request<()> {
    http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}/strata.v1.Log/Subscribe"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request")
}

/// Opens and resets streams until `RESETS` or until the broker closes the
/// connection; returns how many were reset.
async fn rapid_reset(addr: &str) -> usize {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut client, connection) = h2::client::handshake(tcp).await.expect("handshake");
    let driver = tokio::spawn(async move {
        let _ = connection.await; // ends when the broker closes it
    });
    let mut reset = 0;
    while reset < RESETS {
        let Ok(mut ready) = client.clone().ready().await else {
            break; // the broker sent GOAWAY: that is an allowed answer
        };
        let Ok((_response, mut stream)) = ready.send_request(subscribe_headers(addr), false) else {
            break;
        };
        stream.send_reset(h2::Reason::CANCEL);
        reset += 1;
        client = ready;
    }
    drop(client);
    let _ = driver.await;
    reset
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_neither_crashes_nor_starves_the_broker() {
    let b = BrokerProcess::start();
    create_topic(&b, "t", 1).await;
    let mut log = b.log().await;
    log.produce(produce_req("t", Some(0), vec![record(b"before")]))
        .await
        .unwrap();
    let idle = b.rss_anon_kib();
    let mut total = 0;
    for _ in 0..3 {
        total += rapid_reset(&b.addr).await;
    }
    let after = b.rss_anon_kib();
    eprintln!(
        "rapid reset: {total} streams opened and reset over 3 connections; heap {idle} → {after} KiB"
    );
    assert!(total > 0, "the attack got to open streams");
    // The broker is alive and serves: the existing client and a new one.
    log.produce(produce_req("t", Some(0), vec![record(b"after")]))
        .await
        .unwrap();
    let got = b
        .log()
        .await
        .fetch(FetchRequest {
            topic: "t".into(),
            partition: 0,
            offset: 0,
            max_bytes: 0,
            max_wait_ms: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.high_watermark, 2);
    b.admin()
        .await
        .describe_topic(DescribeTopicRequest { name: "t".into() })
        .await
        .unwrap();
    // Nothing of the attack stays in memory (generous: 32 MiB).
    assert!(
        after < idle + (32 << 10),
        "heap grew from {idle} to {after} KiB under the attack"
    );
}
