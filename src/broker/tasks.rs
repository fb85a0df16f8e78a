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
}

impl BackgroundTasks {
    /// Waits for both jobs to stop (after [`Broker::begin_shutdown`]).
    pub async fn join(self) {
        let _ = self.flusher.await;
        let _ = self.retention.await;
        let _ = self.groups.await;
    }
}

impl Broker {
    /// Starts the flusher and the retention job.
    pub fn start_background(self: &Arc<Self>) -> BackgroundTasks {
        BackgroundTasks {
            flusher: tokio::spawn(flusher(self.clone())),
            retention: tokio::spawn(retention(self.clone())),
            groups: tokio::spawn(group_sessions(self.clone())),
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
