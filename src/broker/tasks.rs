//! Background jobs: one flusher and one retention job serve every partition
//! (no timer per partition, so idle partitions cost nothing).

use std::sync::Arc;
use std::time::Duration;

use super::Broker;
use crate::storage::now_ms;

/// Handles of the running background jobs.
#[derive(Debug)]
pub struct BackgroundTasks {
    flusher: tokio::task::JoinHandle<()>,
    retention: tokio::task::JoinHandle<()>,
    groups: tokio::task::JoinHandle<()>,
    scrubber: tokio::task::JoinHandle<()>,
}

impl BackgroundTasks {
    /// Waits for both jobs to stop (after [`Broker::begin_shutdown`]).
    pub async fn join(self) {
        let _ = self.flusher.await;
        let _ = self.retention.await;
        let _ = self.groups.await;
        let _ = self.scrubber.await;
    }
}

impl Broker {
    /// Starts the flusher and the retention job.
    pub fn start_background(self: &Arc<Self>) -> BackgroundTasks {
        BackgroundTasks {
            flusher: tokio::spawn(flusher(self.clone())),
            retention: tokio::spawn(retention(self.clone())),
            groups: tokio::spawn(group_sessions(self.clone())),
            scrubber: tokio::spawn(scrubber(self.clone())),
        }
    }
}

/// Flushes partitions whose flush policy is due: checks dirty partitions a
/// few times per flush interval, and at once when an append crossed the
/// byte threshold.
async fn flusher(broker: Arc<Broker>) {
    let tick = Duration::from_millis((broker.config.flush_interval_ms / 4).clamp(1, 250));
    let mut shutdown = broker.shutdown_signal();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = broker.flush_wake.notified() => {}
            _ = shutdown.changed() => return,
        }
        let b = broker.clone();
        let pass = tokio::task::spawn_blocking(move || flush_pass(&b)).await;
        if let Err(e) = pass {
            tracing::error!(error = %e, "flush pass panicked");
        }
    }
}

fn flush_pass(broker: &Broker) {
    if let Err(e) = broker.coordinator.sync() {
        tracing::error!(error = %e, "flushing group offsets failed");
    }
    for topic in broker.topics() {
        for p in &topic.partitions {
            if !p.take_dirty() {
                continue;
            }
            match p.log.flush_if_due() {
                Ok(true) => {}
                Ok(false) => p.mark_dirty(),
                Err(e) => {
                    // The log has poisoned itself (read-only) and logged it.
                    tracing::error!(topic = %topic.name, partition = p.id, error = %e, "background flush failed");
                }
            }
        }
    }
}

/// Applies retention to every partition periodically.
async fn retention(broker: Arc<Broker>) {
    let every = Duration::from_millis(broker.config.retention_check_interval_ms.max(10));
    let mut shutdown = broker.shutdown_signal();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        let b = broker.clone();
        let pass = tokio::task::spawn_blocking(move || retention_pass(&b)).await;
        if let Err(e) = pass {
            tracing::error!(error = %e, "retention pass panicked");
        }
    }
}

/// One retention pass over every partition.
pub fn retention_pass(broker: &Broker) {
    let now = now_ms();
    for topic in broker.topics() {
        for p in &topic.partitions {
            if let Err(e) = p.log.apply_retention(now) {
                tracing::warn!(topic = %topic.name, partition = p.id, error = %e, "retention failed; will retry");
            }
        }
    }
}

/// Expels members whose session timed out and expires empty groups, a few
/// times per minimum session timeout.
async fn group_sessions(broker: Arc<Broker>) {
    let every = Duration::from_millis(
        u64::from(broker.config.groups.min_session_timeout_ms / 2).clamp(10, 1000),
    );
    let mut shutdown = broker.shutdown_signal();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        broker.expire_groups();
    }
}

/// Re-reads every closed segment at a bounded rate, checking every batch's
/// CRC, so damage is found and reported (log line, counter, `DescribeTopic`)
/// before a consumer trips on it.
async fn scrubber(broker: Arc<Broker>) {
    let rate = broker.config.scrub_bytes_per_sec;
    if rate == 0 {
        return;
    }
    let pause = Duration::from_millis(broker.config.scrub_interval_ms.max(1));
    let mut shutdown = broker.shutdown_signal();
    loop {
        let b = broker.clone();
        if tokio::task::spawn_blocking(move || scrub_pass(&b, rate))
            .await
            .is_err()
        {
            tracing::error!("scrub pass panicked");
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// One pass over every closed segment of every partition.
fn scrub_pass(broker: &Broker, bytes_per_sec: u64) {
    let started = std::time::Instant::now();
    let mut read = 0u64;
    for topic in broker.topics() {
        for p in &topic.partitions {
            for target in p.log.scrub_targets() {
                let pace = |n: u64| {
                    read += n;
                    // Sleep until the average rate is back under the limit.
                    let due = Duration::from_secs_f64(read as f64 / bytes_per_sec as f64);
                    if let Some(wait) = due.checked_sub(started.elapsed()) {
                        std::thread::sleep(wait.min(Duration::from_millis(100)));
                    }
                    !broker.is_shutting_down()
                };
                match crate::storage::scrub::scrub_segment(&target, pace) {
                    Ok(findings) => {
                        for f in findings {
                            // Logged at ERROR once; later passes find it again.
                            if p.log.record_scrub_damage(f.first_offset, f.end_offset) {
                                tracing::error!(topic = %topic.name, partition = p.id, segment = %target.path.display(),
                                    position = f.position, first_offset = f.first_offset, end_offset = f.end_offset,
                                    reason = f.reason, "scrubber found a damaged batch; reads of these offsets answer DATA_LOSS");
                            } else {
                                tracing::debug!(topic = %topic.name, partition = p.id, first_offset = f.first_offset,
                                    end_offset = f.end_offset, "scrubber found the known damaged batch again");
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(topic = %topic.name, partition = p.id, error = %e, "scrubber could not read a segment")
                    }
                }
                if broker.is_shutting_down() {
                    return;
                }
            }
        }
    }
}
