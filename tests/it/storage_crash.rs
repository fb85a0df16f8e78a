//! `kill -9` in the middle of appending (RELIABILITY.md §2 scenarios 1 and 2,
//! at the storage layer).
//!
//! The parent test runs this very test binary again as a child that selects
//! only the ignored [`child_writer`] test. The child opens the log in the
//! directory it is given and appends batches in a loop, printing one
//! `ACK <base> <next> <len> <crc>` line after each append has returned (and,
//! in the durable variant, after `wait_durable` has). The parent reads those
//! lines, sends SIGKILL after a random number of them, reopens the log and
//! checks that every acknowledged batch is there with identical bytes, that
//! offsets are dense, and that every stored batch is one the child wrote.
//! Several rounds run on the same directory, each child continuing the log.
//!
//! Synchronisation is by the child's output only: no sleeps.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};

use strata::storage::{BatchMeta, LogConfig, MapCache, PartitionLog};

const DIR_ENV: &str = "STRATA_CRASH_CHILD_DIR";
const ROUND_ENV: &str = "STRATA_CRASH_CHILD_ROUND";
const DURABLE_ENV: &str = "STRATA_CRASH_CHILD_DURABLE";

fn config() -> LogConfig {
    LogConfig {
        // Small segments, so kills also land in rolls and trims.
        segment_bytes: 256 * 1024,
        index_interval_bytes: 1024,
        preallocate_chunk_bytes: 64 * 1024,
        retention_ms: None,
        ..LogConfig::default()
    }
}

/// The batch the child writes as its `seq`-th append of `round`: the payload
/// starts with the round and sequence number, so any stored batch can be
/// checked against what the child must have written.
fn batch(round: u32, seq: u32) -> (BatchMeta, Vec<u8>) {
    let mut x = (u64::from(round) << 32 | u64::from(seq)).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let len = match next() % 10 {
        0 => 16 * 1024,
        _ => 8 + (next() % 3000) as usize,
    };
    let mut payload = Vec::with_capacity(len);
    payload.extend_from_slice(&round.to_le_bytes());
    payload.extend_from_slice(&seq.to_le_bytes());
    while payload.len() < len {
        payload.push(next() as u8);
    }
    let meta = BatchMeta {
        record_count: 1 + (next() % 7) as u32,
        first_timestamp_ms: i64::from(seq),
        max_timestamp_ms: i64::from(seq),
        ..BatchMeta::default()
    };
    (meta, payload)
}

/// The writer process. Ignored in normal runs; started by the tests below.
#[test]
#[ignore = "child process of the SIGKILL tests; they start it themselves"]
fn child_writer() {
    let Ok(dir) = std::env::var(DIR_ENV) else {
        return;
    };
    let round: u32 = std::env::var(ROUND_ENV)
        .expect("round")
        .parse()
        .expect("round number");
    let durable = std::env::var(DURABLE_ENV).is_ok_and(|v| v == "1");
    let log =
        PartitionLog::open(Path::new(&dir), config(), MapCache::new(4)).expect("open in child");
    let mut out = std::io::stdout().lock();
    writeln!(out, "READY {}", log.high_watermark()).expect("stdout");
    out.flush().expect("stdout");
    // Bounded, in case the parent goes away without killing us (a closed
    // pipe also ends the loop).
    for seq in 0..200_000u32 {
        let (meta, payload) = batch(round, seq);
        let info = log.append(&meta, &[&payload]).expect("append in child");
        if durable {
            log.wait_durable(info.next_offset)
                .expect("wait_durable in child");
        }
        if seq % 97 == 96 {
            // Move the recovery checkpoint now and then, so kills also land
            // inside flushes and recovery starts from varied checkpoints.
            log.flush().expect("flush in child");
        }
        let line = format!(
            "ACK {} {} {} {:08x}\n",
            info.base_offset,
            info.next_offset,
            payload.len(),
            crc32fast::hash(&payload)
        );
        if out
            .write_all(line.as_bytes())
            .and_then(|()| out.flush())
            .is_err()
        {
            return;
        }
    }
}

/// One acknowledged append, as the parent's ledger records it.
#[derive(Debug, Clone, Copy)]
struct Ack {
    base: u64,
    next: u64,
    len: usize,
    crc: u32,
}

fn parse_ack(line: &str) -> Option<Ack> {
    let mut it = line.strip_prefix("ACK ")?.split(' ');
    Some(Ack {
        base: it.next()?.parse().ok()?,
        next: it.next()?.parse().ok()?,
        len: it.next()?.parse().ok()?,
        crc: u32::from_str_radix(it.next()?, 16).ok()?,
    })
}

/// Checks the reopened log against the ledger: every ack present with the
/// same bytes at its offset; and the whole log dense, each batch exactly
/// what the child wrote for the (round, seq) it carries.
fn verify(log: &PartitionLog, ledger: &[Ack]) {
    for a in ledger {
        let r = log
            .read(a.base, 1)
            .unwrap_or_else(|e| panic!("acked batch at {} unreadable: {e}", a.base));
        let b = &r.batches[0];
        assert_eq!(b.header.base_offset, a.base, "acked batch moved");
        assert_eq!(
            b.header.next_offset(),
            a.next,
            "acked batch at {} has other records",
            a.base
        );
        assert_eq!(
            b.payload().len(),
            a.len,
            "acked batch at {} has another length",
            a.base
        );
        assert_eq!(
            crc32fast::hash(b.payload()),
            a.crc,
            "acked batch at {} has other bytes",
            a.base
        );
    }
    let hw = log.high_watermark();
    assert!(
        hw >= ledger.last().map_or(0, |a| a.next),
        "log ends before the last ack"
    );
    let mut offset = log.log_start_offset();
    while offset < hw {
        let r = log
            .read(offset, 1 << 20)
            .unwrap_or_else(|e| panic!("read({offset}): {e}"));
        for b in &r.batches {
            assert_eq!(b.header.base_offset, offset, "offsets are not dense");
            let p = b.payload();
            let round = u32::from_le_bytes(p[0..4].try_into().expect("4 bytes"));
            let seq = u32::from_le_bytes(p[4..8].try_into().expect("4 bytes"));
            let (meta, payload) = batch(round, seq);
            assert_eq!(
                b.header.meta, meta,
                "batch at {offset} is not what the child wrote"
            );
            assert!(
                p == &payload[..],
                "batch at {offset} is not what the child wrote"
            );
            offset = b.header.next_offset();
        }
    }
}

/// Runs `rounds` child writers on one directory, killing each after a random
/// number of acks in `acks`, and verifies the log after each kill.
fn kill_rounds(durable: bool, rounds: u32, acks: std::ops::Range<u64>, seed: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("current test binary");
    let mut ledger: Vec<Ack> = Vec::new();
    let mut x = seed;
    for round in 0..rounds {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let kill_after = acks.start + (x >> 33) % (acks.end - acks.start);
        let mut child = Command::new(&exe)
            .args([
                "storage_crash::child_writer",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(DIR_ENV, dir.path())
            .env(ROUND_ENV, round.to_string())
            .env(DURABLE_ENV, if durable { "1" } else { "0" })
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child writer");
        let stdout = child.stdout.take().expect("child stdout");
        let mut seen = 0u64;
        let mut ready = false;
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("child output");
            // libtest prints `test ... ` without a newline before the
            // child's first line, so READY may not start its line.
            if let Some(hw) = line.find("READY ").map(|i| &line[i + 6..]) {
                let hw: u64 = hw.parse().expect("READY offset");
                assert!(
                    hw >= ledger.last().map_or(0, |a| a.next),
                    "round {round}: the child's log lost acks"
                );
                ready = true;
            } else if let Some(ack) = parse_ack(&line) {
                assert!(ready, "ACK before READY");
                if let Some(prev) = ledger.last() {
                    assert!(
                        ack.base >= prev.next,
                        "round {round}: offset {} given twice",
                        ack.base
                    );
                }
                ledger.push(ack);
                seen += 1;
                if seen == kill_after {
                    child.kill().expect("SIGKILL the child");
                    break;
                }
            }
        }
        let status = child.wait().expect("wait for child");
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "round {round}: the child ended by itself ({status}) after {seen} acks"
        );
        let log =
            PartitionLog::open(dir.path(), config(), MapCache::new(4)).expect("reopen after kill");
        verify(&log, &ledger);
        drop(log);
    }
    assert!(ledger.len() as u64 >= u64::from(rounds) * acks.start);
}

/// Rounds per test: 5 by default; `STRATA_KILL_ROUNDS=1000` is the long run.
/// `STRATA_KILL_SEED` varies the kill points.
fn rounds_and_seed(seed: u64) -> (u32, u64) {
    let rounds = std::env::var("STRATA_KILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let extra: u64 = std::env::var("STRATA_KILL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (rounds, seed ^ extra.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// Appends acknowledged when in the page cache (`LEADER`): a process crash
/// keeps every one of them.
#[test]
fn sigkill_mid_append_keeps_every_acked_batch() {
    let (rounds, seed) = rounds_and_seed(0x5eed_0001);
    kill_rounds(false, rounds, 20..2000, seed);
}

/// Appends acknowledged after `wait_durable`.
#[test]
fn sigkill_mid_durable_append_keeps_every_acked_batch() {
    let (rounds, seed) = rounds_and_seed(0x5eed_0002);
    kill_rounds(true, rounds, 20..300, seed);
}
