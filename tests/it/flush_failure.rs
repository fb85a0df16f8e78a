//! A failed flush is never retried into a success (RELIABILITY.md section 3,
//! hazard 5): when one `.log` `fdatasync` fails (the debug-build failpoint
//! `STRATA_FAILPOINT_LOG_SYNC_EIO_AT`; every later sync would work), the
//! durable produce it served is refused, the partition turns read-only
//! instead of accepting writes it could not make durable (a retry is not
//! turned into a success), reads keep serving, and a restart recovers it.

use strata::proto::v1::Acks;
use tonic::Code;

use crate::harness::BrokerProcess;
use crate::log_api::{create_topic, fetch_all, produce_req, record};

#[tokio::test]
async fn a_failed_flush_fails_durable_produces_and_fences_the_partition_until_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The first `.log` sync fails; no background flush gets there first.
    let failing = [("STRATA_FAILPOINT_LOG_SYNC_EIO_AT", "0")];
    let quiet = ["--flush-interval-ms", "3600000"];
    let mut b = BrokerProcess::start_in_env(dir.path(), &quiet, &failing);
    create_topic(&b, "f", 1).await;
    let mut log = b.log().await;
    // A leader-acked produce needs no flush.
    log.produce(produce_req("f", Some(0), vec![record(b"acked")]))
        .await
        .expect("a leader produce");
    // A durable produce meets the failing flush: refused, never acknowledged.
    let mut durable = produce_req("f", Some(0), vec![record(b"not durable")]);
    durable.acks = Acks::Durable.into();
    // It gets the I/O error itself (INTERNAL: a real I/O failure), naming the file.
    let e = log
        .produce(durable.clone())
        .await
        .expect_err("the flush failed");
    assert_eq!(e.code(), Code::Internal, "{e:?}");
    assert!(
        e.message().contains(".log") && e.message().contains("Input/output error"),
        "{}",
        e.message()
    );
    // The partition is read-only now: even leader produces are refused, and
    // a durable retry does not turn the failed flush into a success.
    for request in [produce_req("f", Some(0), vec![record(b"later")]), durable] {
        let e = log.produce(request).await.expect_err("read-only");
        assert_eq!(e.code(), Code::Unavailable, "{e:?}");
        assert!(e.message().contains("read-only"), "{}", e.message());
    }
    // Reads keep serving what was acknowledged.
    let stored = fetch_all(&b, "f", 0, 0).await;
    assert_eq!(stored[0].1.value, b"acked");
    // A restart (with a working disk) recovers the partition.
    b.kill();
    let b = BrokerProcess::start_in(dir.path(), &[]);
    let mut log = b.log().await;
    let mut durable = produce_req("f", Some(0), vec![record(b"after restart")]);
    durable.acks = Acks::Durable.into();
    log.produce(durable).await.expect("writable again");
    let stored = fetch_all(&b, "f", 0, 0).await;
    assert_eq!(stored[0].1.value, b"acked");
    assert_eq!(stored.last().expect("records").1.value, b"after restart");
}
