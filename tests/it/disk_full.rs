//! A full disk: produce gets RESOURCE_EXHAUSTED, nothing acknowledged is
//! lost, reads go on, and writes resume once space is freed. Runs on a
//! small tmpfs the test mounts; skipped (with a message) where it may not.

use std::path::{Path, PathBuf};
use std::process::Command;

use strata::proto::v1::{DeleteTopicRequest, FetchRequest};
use tonic::Code;

use crate::harness::BrokerProcess;
use crate::log_api::{create_topic, fetch_all, produce_req, record};

/// A tmpfs mounted for the test, unmounted when dropped.
struct SmallDisk {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().ok()?;
        let path = dir.path().join("disk");
        std::fs::create_dir(&path).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(SmallDisk { path, _dir: dir })
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

#[tokio::test]
async fn a_full_disk_refuses_writes_loses_nothing_and_recovers() {
    let Some(disk) = SmallDisk::mount("24m") else {
        eprintln!(
            "skipped: cannot mount a tmpfs here (needs root); the full-disk test did not run"
        );
        return;
    };
    let data = disk.path().join("data");
    let mut b = BrokerProcess::start_in(&data, &[]);
    create_topic(&b, "keep", 1).await;
    create_topic(&b, "filler", 1).await;
    let mut log = b.log().await;
    log.produce(produce_req(
        "keep",
        Some(0),
        vec![record(b"before the disk filled")],
    ))
    .await
    .unwrap();
    let value = vec![0xabu8; 100_000];
    let mut acked = 0u64;
    let error = loop {
        match log
            .produce(produce_req("filler", Some(0), vec![record(&value)]))
            .await
        {
            Ok(_) => acked += 1,
            Err(e) => break e,
        }
        assert!(
            acked < 1000,
            "24 MiB cannot hold 100 MB: the disk never filled"
        );
    };
    assert_eq!(error.code(), Code::ResourceExhausted, "{}", error.message());
    assert!(error.message().contains("disk full"), "{}", error.message());
    assert!(acked > 50, "most of the disk was usable ({acked} records)");
    // Everything acknowledged is there, byte for byte, and reads go on.
    let stored = fetch_all(&b, "filler", 0, 0).await;
    assert_eq!(stored.len() as u64, acked);
    assert!(stored.iter().all(|(_, r)| r.value == value));
    let keep = log
        .fetch(FetchRequest {
            topic: "keep".into(),
            partition: 0,
            offset: 0,
            max_bytes: 0,
            max_wait_ms: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(keep.batches[0].records[0].value, b"before the disk filled");
    // Free space by deleting the filler topic: writes resume, no restart.
    b.admin()
        .await
        .delete_topic(DeleteTopicRequest {
            name: "filler".into(),
        })
        .await
        .unwrap();
    log.produce(produce_req("keep", Some(0), vec![record(&value)]))
        .await
        .unwrap();
    // And the data survives a restart on the same disk.
    assert!(b.stop().await);
    b.restart();
    assert_eq!(fetch_all(&b, "keep", 0, 0).await.len(), 2);
    drop(b);
}
