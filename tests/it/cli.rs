//! The `strata` command line against a real broker.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use crate::harness::BrokerProcess;

/// Runs `strata ARGS --broker ADDR` with `stdin`, returning its output.
pub fn strata(b: &BrokerProcess, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .args(["--broker", &b.addr])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn strata");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().expect("strata output")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}, stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn produce_then_consume_round_trip() {
    let b = BrokerProcess::start();
    ok(&strata(
        &b,
        &["topic", "create", "orders", "--partitions", "3"],
        "",
    ));
    let listed = ok(&strata(&b, &["topic", "list"], ""));
    assert!(listed.contains("orders"), "{listed}");

    let events: String = (0..30)
        .map(|i| format!("order-{}\t{{\"type\":\"OrderPlaced\",\"n\":{i}}}\n", i % 5))
        .collect();
    let out = strata(&b, &["produce", "orders", "--key-separator", "\t"], &events);
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("30 records"));

    // Two independent readers see every event.
    for _ in 0..2 {
        let text = ok(&strata(&b, &["consume", "orders", "--from-beginning"], ""));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 30, "{text}");
        for i in 0..30 {
            assert!(text.contains(&format!("\"n\":{i}}}")), "event {i} missing");
        }
        // Same key, same partition.
        for line in &lines {
            let (pos, rest) = line.split_once('\t').unwrap();
            let key = rest.split('\t').next().unwrap();
            let partition: u32 = pos.split(':').next().unwrap().parse().unwrap();
            let expected = strata::broker::produce::partition_for_key(key.as_bytes(), 3);
            assert_eq!(partition, expected, "{line}");
        }
    }
    // JSON output and replay of one partition from offset 0.
    let json = ok(&strata(
        &b,
        &[
            "consume",
            "orders",
            "--partition",
            "0",
            "--offset",
            "0",
            "--format",
            "json",
        ],
        "",
    ));
    for line in json.lines() {
        assert!(
            line.starts_with('{')
                && line.contains("\"partition\":0")
                && line.contains("\"offset\":"),
            "{line}"
        );
    }
    let limited = ok(&strata(
        &b,
        &[
            "consume",
            "orders",
            "--from-beginning",
            "--max-records",
            "4",
        ],
        "",
    ));
    assert_eq!(limited.lines().count(), 4);
    let described = ok(&strata(&b, &["topic", "describe", "orders"], ""));
    assert!(described.contains("orders"), "{described}");
}

#[test]
fn errors_are_one_line_and_exit_non_zero() {
    let b = BrokerProcess::start();
    let out = strata(&b, &["consume", "missing", "--from-beginning"], "");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: ") && err.contains("NOT_FOUND") && err.contains("missing"),
        "{err}"
    );
    let out = strata(&b, &["topic", "create", "bad name"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("INVALID_ARGUMENT"));
    let out = strata(&b, &["topic", "bogus"], "");
    assert_eq!(out.status.code(), Some(2), "usage errors exit 2");
}
