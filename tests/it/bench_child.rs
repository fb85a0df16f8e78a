//! `strata bench partitions` (W7) and `strata bench restart` (W8) run their
//! broker as a child process, kill it with SIGKILL and start it again; these
//! run both at a small scale through the real binary and check that they
//! complete, verify every acknowledged record, and print their JSON.

use std::process::Command;

fn bench(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("bench")
        .args(args)
        .output()
        .expect("run strata bench");
    assert!(
        out.status.success(),
        "exit {:?}, stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The number after `"key":` in a one-line JSON object.
fn number(json: &str, key: &str) -> f64 {
    let at = json
        .find(&format!("\"{key}\":"))
        .unwrap_or_else(|| panic!("{key} in {json}"));
    let rest = &json[at + key.len() + 3..];
    let end = rest.find([',', '}']).unwrap();
    rest[..end]
        .parse()
        .unwrap_or_else(|_| panic!("{key} in {json}"))
}

#[test]
fn restart_fills_closed_and_active_segments_and_times_each_restart() {
    let json = bench(&[
        "restart",
        "--closed-bytes",
        "67108864",
        "--active-bytes",
        "16777216",
        "--runs",
        "2",
        "--json",
    ]);
    assert!(json.starts_with("{\"workload\":\"restart\""), "{json}");
    assert_eq!(number(&json, "closed_segments"), 4.0, "{json}");
    // The active segment holds at least what was asked for.
    assert!(number(&json, "active_bytes") >= 16777216.0, "{json}");
    assert!(number(&json, "first_fetch_ms") >= number(&json, "listening_ms"));
    assert_eq!(json.matches("\"tail_fetch_ms\"").count(), 3, "{json}");
}

/// Small records in small segments: the plan counts each record's framing,
/// so the active segment does not roll and the closed count is the one
/// planned (before that mend, 5 closed segments were left instead of 4).
#[test]
fn restart_with_small_records_leaves_the_planned_segments() {
    let json = bench(&[
        "restart",
        "--record-size",
        "1000",
        "--closed-bytes",
        "8388608",
        "--active-bytes",
        "2097152",
        "--runs",
        "1",
        "--json",
    ]);
    assert_eq!(number(&json, "closed_segments"), 4.0, "{json}");
    assert!(number(&json, "active_bytes") >= 2097152.0, "{json}");
}

#[test]
fn partitions_creates_produces_and_serves_every_partition_after_a_kill() {
    let json = bench(&[
        "partitions",
        "--partitions",
        "40",
        "--records",
        "50000",
        "--batch",
        "300",
        "--runs",
        "2",
        "--json",
    ]);
    assert!(json.starts_with("{\"workload\":\"partitions\""), "{json}");
    assert_eq!(number(&json, "partitions"), 40.0);
    assert_eq!(number(&json, "records"), 50000.0);
    assert!(number(&json, "ratio_to_w1") > 0.0, "{json}");
    assert!(number(&json, "restart_serving_seconds") >= number(&json, "restart_listening_seconds"));
    assert!(json.contains("\"memory\":{\"rss_kib\":"), "{json}");
}

#[test]
fn restart_refuses_an_active_segment_under_the_smallest_segment() {
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["bench", "restart", "--active-bytes", "1000"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--active-bytes"));
}
