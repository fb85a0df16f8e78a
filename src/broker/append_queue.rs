//! Appends from many request tasks to one partition, without parking a
//! runtime worker on the log's writer lock.
//!
//! A partition log has a single writer. When requests for one busy partition
//! are handled on several workers at once, a worker that waited for the
//! writer lock would sit idle: on a 2-core machine, half of the runtime
//! (measured: a quarter of all the broker's context switches in a
//! 1-partition produce run were workers waiting on that lock). Instead,
//! appends go through a queue (flat combining):
//!
//! - a caller that finds nobody appending becomes the *drainer*: it appends
//!   its own batch at once (the uncontended path: no queue, no wake-up), then
//!   the batches queued meanwhile, in queue order;
//! - a caller that finds a drainer queues its batch and awaits the result,
//!   so its worker goes on with other tasks (decoding the next request,
//!   sending answers) while the drainer copies.
//!
//! A drainer appends at most [`DRAIN_BUDGET`] queued batches and then hands
//! the rest to a new task, so its own answer is not held back by a steady
//! stream of arrivals. Subscribers and long polls are woken right after
//! each append, by whichever task made it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::oneshot;

use super::error::{BrokerError, Result};
use super::topics::Partition;
use crate::storage::{now_ms, AppendInfo, BatchMeta};

/// Queued batches one drainer appends before handing the rest on.
pub const DRAIN_BUDGET: usize = 8;

/// A batch waiting for the drainer.
struct Job {
    meta: BatchMeta,
    records: Bytes,
    done: oneshot::Sender<crate::storage::Result<AppendInfo>>,
}

#[derive(Default)]
struct State {
    /// Someone is appending: new batches must queue.
    draining: bool,
    jobs: VecDeque<Job>,
}

/// One partition's queue of batches waiting to be appended.
#[derive(Default)]
pub struct AppendQueue {
    state: Mutex<State>,
}

impl std::fmt::Debug for AppendQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.lock();
        f.debug_struct("AppendQueue")
            .field("draining", &st.draining)
            .field("queued", &st.jobs.len())
            .finish()
    }
}

impl AppendQueue {
    /// The state; held only to push or pop, which cannot panic, so a
    /// poisoned lock still holds consistent data.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Appends `records` to `partition` as one batch stamped with the time of
/// the append, and wakes the partition's waiters.
///
/// # Errors
/// The log's error for this batch (the batch is not stored), or
/// [`BrokerError::Internal`] if the task appending it was torn down first
/// (a runtime shutting down).
pub async fn append(
    partition: &Arc<Partition>,
    meta: BatchMeta,
    records: Bytes,
) -> Result<AppendInfo> {
    let waiting = {
        let mut st = partition.append_queue.lock();
        if st.draining {
            let (done, result) = oneshot::channel();
            st.jobs.push_back(Job {
                meta,
                records: records.clone(),
                done,
            });
            Some(result)
        } else {
            st.draining = true;
            None
        }
    };
    match waiting {
        Some(result) => match result.await {
            Ok(appended) => Ok(appended?),
            Err(_) => Err(BrokerError::Internal(
                "the batch was dropped from the append queue before it was written".into(),
            )),
        },
        None => {
            let drainer = Drainer {
                partition: partition.clone(),
                finished: false,
            };
            let own = append_one(partition, meta, &records);
            drainer.drain(DRAIN_BUDGET);
            Ok(own?)
        }
    }
}

/// Appends one batch now and wakes the partition's waiters.
fn append_one(
    partition: &Partition,
    mut meta: BatchMeta,
    records: &[u8],
) -> crate::storage::Result<AppendInfo> {
    let append_time_ms = now_ms();
    meta.first_timestamp_ms = append_time_ms;
    meta.max_timestamp_ms = append_time_ms;
    let info = partition.log.append(&meta, &[records])?;
    if !info.duplicate {
        partition.appended(info.next_offset);
    }
    Ok(info)
}

/// The right to append, held by one task at a time. Dropped without
/// [`Drainer::drain`] finishing (a panic in the log, a task torn down
/// before it ran), it gives the right back and fails the queued batches,
/// so a partition never stays blocked behind a drainer that is gone.
struct Drainer {
    partition: Arc<Partition>,
    finished: bool,
}

impl Drainer {
    /// Appends up to `budget` queued batches; if more are waiting, hands
    /// them to a new task (or goes on here outside a runtime).
    fn drain(mut self, budget: usize) {
        let mut left = budget;
        loop {
            let job = {
                let mut st = self.partition.append_queue.lock();
                match st.jobs.pop_front() {
                    Some(job) => job,
                    None => {
                        st.draining = false;
                        self.finished = true;
                        return;
                    }
                }
            };
            let result = append_one(&self.partition, job.meta, &job.records);
            // The waiter may have gone (its request was cancelled): the
            // batch is stored either way, like any cancelled produce.
            let _ = job.done.send(result);
            left -= 1;
            if left == 0 {
                break;
            }
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                // `self` moves into the task: if the task is dropped before
                // it runs, `Drop` releases the queue.
                runtime.spawn(async move { self.drain(DRAIN_BUDGET) });
            }
            Err(_) => self.drain(usize::MAX),
        }
    }
}

impl Drop for Drainer {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let abandoned: Vec<Job> = {
            let mut st = self.partition.append_queue.lock();
            st.draining = false;
            st.jobs.drain(..).collect()
        };
        // Dropping the senders tells each waiter its batch was not written.
        drop(abandoned);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{LogConfig, MapCache, PartitionLog};

    fn partition(dir: &std::path::Path) -> Arc<Partition> {
        let log = PartitionLog::open(dir, LogConfig::default(), MapCache::new(8)).expect("open");
        Arc::new(Partition::new(0, log))
    }

    fn meta() -> BatchMeta {
        BatchMeta {
            record_count: 1,
            ..BatchMeta::default()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_get_dense_distinct_offsets_and_wake_waiters() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = partition(dir.path());
        let mut watch = p.watch_high_watermark();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..400u32 {
            let p = p.clone();
            tasks.spawn(async move {
                let info = append(&p, meta(), Bytes::from(i.to_le_bytes().to_vec()))
                    .await
                    .expect("append");
                (info.base_offset, i)
            });
        }
        let mut offsets = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            offsets.push(joined.expect("task"));
        }
        offsets.sort_unstable();
        let bases: Vec<u64> = offsets.iter().map(|&(o, _)| o).collect();
        assert_eq!(bases, (0..400).collect::<Vec<u64>>(), "dense, each once");
        // Every batch holds the payload its own caller sent.
        let read = p.log.read(0, 1 << 20).expect("read");
        assert_eq!(read.batches.len(), 400);
        for (batch, &(offset, i)) in read.batches.iter().zip(&offsets) {
            assert_eq!(batch.header.base_offset, offset);
            assert_eq!(batch.payload(), i.to_le_bytes());
        }
        assert!(watch.has_changed().expect("sender alive"));
        assert_eq!(*watch.borrow_and_update(), 400);
        assert!(!p.append_queue.lock().draining, "the queue is released");
    }

    #[test]
    fn a_drainer_dropped_before_it_ran_releases_the_queue_and_fails_the_waiters() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = partition(dir.path());
        let (done, mut result) = oneshot::channel();
        {
            let mut st = p.append_queue.lock();
            st.draining = true;
            st.jobs.push_back(Job {
                meta: meta(),
                records: Bytes::from_static(b"x"),
                done,
            });
        }
        drop(Drainer {
            partition: p.clone(),
            finished: false,
        });
        assert!(!p.append_queue.lock().draining);
        assert!(
            result.try_recv().is_err(),
            "the waiter learns it was dropped"
        );
        assert_eq!(p.log.high_watermark(), 0, "nothing was written");
    }

    /// Queues `n` one-record batches behind a (pretend) drainer.
    fn queue_jobs(
        p: &Partition,
        n: usize,
    ) -> Vec<oneshot::Receiver<crate::storage::Result<AppendInfo>>> {
        let mut st = p.append_queue.lock();
        st.draining = true;
        (0..n)
            .map(|_| {
                let (done, result) = oneshot::channel();
                st.jobs.push_back(Job {
                    meta: meta(),
                    records: Bytes::from_static(b"x"),
                    done,
                });
                result
            })
            .collect()
    }

    #[test]
    fn outside_a_runtime_the_drainer_empties_the_queue_itself() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = partition(dir.path());
        let results = queue_jobs(&p, DRAIN_BUDGET * 2 + 1);
        Drainer {
            partition: p.clone(),
            finished: false,
        }
        .drain(DRAIN_BUDGET);
        for (i, mut r) in results.into_iter().enumerate() {
            let info = r.try_recv().expect("answered").expect("appended");
            assert_eq!(info.base_offset, i as u64);
        }
        assert!(!p.append_queue.lock().draining);
    }

    #[tokio::test]
    async fn a_drainer_over_budget_hands_the_rest_to_a_task_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = partition(dir.path());
        let results = queue_jobs(&p, DRAIN_BUDGET * 2 + 1);
        Drainer {
            partition: p.clone(),
            finished: false,
        }
        .drain(DRAIN_BUDGET);
        // On a current-thread runtime the handed-off task has not run yet.
        assert_eq!(p.log.high_watermark(), DRAIN_BUDGET as u64);
        assert!(p.append_queue.lock().draining, "the task owns the queue");
        for (i, r) in results.into_iter().enumerate() {
            let info = r.await.expect("answered").expect("appended");
            assert_eq!(info.base_offset, i as u64);
        }
        assert!(!p.append_queue.lock().draining);
    }
}
