//! `strata consume TOPIC --group G`: consume as a member of a consumer
//! group.
//!
//! The command joins the group with one `Consume` stream (a
//! [`GroupConsumer`]), so it shares the topic's partitions with the group's
//! other members and starts where the group left off: at the committed
//! offsets, or at `--reset earliest|latest` in partitions without one. It
//! prints records in the formats of `strata consume`, commits after every
//! printed batch (and once more on the way out, including the start
//! position of partitions that had no committed offset), and leaves the
//! group when it exits. A batch is committed only once its write to stdout
//! and the flush succeeded: when stdout fails (a full disk, or a reader
//! that closed the pipe) the command leaves the group without committing
//! that batch, so the group reads it again.
//!
//! With `--follow`, a broker restart or a lost connection does not end the
//! command: it joins the group again (retrying with backoff while the broker
//! is away) and goes on from the committed offsets.
//!
//! Without `--follow` it exits once it has caught up: when every partition
//! assigned to it has reached the high watermark that partition had when it
//! was assigned (looked up then with `ListOffsets`), the group is not in
//! the middle of a rebalance, and the broker's view of this member's
//! assignment matches the stream's (so partitions still on their way to
//! this member are waited for). `--max-records` ends it earlier; SIGINT or
//! SIGTERM end it cleanly at any time.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::consume::{ConsumeArgs, GroupReset, Printer};
use super::{CliError, ReconnectBackoff};
use crate::client::{
    AutoOffsetReset, Client, ClientError, GroupConsumer, OffsetSpec, PartitionOffset,
    TopicPartitions,
};

/// How often, without `--follow`, the command re-checks whether it has
/// caught up while no records arrive.
const CATCH_UP_TICK: Duration = Duration::from_millis(200);

/// The `DescribeGroup` state of a group whose assignment is still moving.
const RECONCILING: &str = "Reconciling";

/// A partition: topic and index.
pub type TopicPartition = (String, u32);

/// Where reading an assigned partition started and where it has caught up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// The position at assignment: the committed offset, or the reset
    /// policy's offset, clamped into the log.
    pub start: u64,
    /// The high watermark at assignment.
    pub end: u64,
}

/// Where the group's stream starts in a partition: the committed offset
/// clamped into `[log_start, high_watermark]`, or the reset policy's end of
/// the log when nothing is committed.
pub fn start_position(
    committed: Option<u64>,
    log_start: u64,
    high_watermark: u64,
    reset: GroupReset,
) -> u64 {
    match (committed, reset) {
        (Some(offset), _) => offset.clamp(log_start, high_watermark.max(log_start)),
        (None, GroupReset::Earliest) => log_start,
        (None, GroupReset::Latest) => high_watermark,
    }
}

/// Whether every assigned partition has reached the end of its span. A
/// partition's position is the one after the last record printed, or its
/// start while nothing was printed. A partition without a span (not looked
/// up yet) has not caught up.
pub fn caught_up(
    spans: &BTreeMap<TopicPartition, Span>,
    assigned: &BTreeSet<TopicPartition>,
    position: impl Fn(&TopicPartition) -> Option<u64>,
) -> bool {
    assigned.iter().all(|tp| match spans.get(tp) {
        Some(span) => position(tp).unwrap_or(span.start).max(span.start) >= span.end,
        None => false,
    })
}

/// Runs `strata consume TOPIC --group G`.
///
/// # Errors
/// Connection or broker errors (`NOT_FOUND` for an unknown topic), the
/// broker ending the stream, or a failed write to stdout.
pub async fn run(args: &ConsumeArgs, group: &str) -> Result<(), CliError> {
    let mut printer = Printer::new(args);
    if printer.is_done() {
        return Ok(());
    }
    let client = args.broker.connect().await?;
    // The broker lets a group subscribe to a topic that does not exist yet;
    // for a command line that is almost always a typo.
    client.describe_topic(&args.topic).await?;
    let reset = match args.reset {
        GroupReset::Earliest => AutoOffsetReset::Earliest,
        GroupReset::Latest => AutoOffsetReset::Latest,
    };
    let consumer = client
        .group_consumer(group, [args.topic.clone()], reset)
        .await?;
    let mut session = Session {
        client,
        consumer,
        group: group.to_string(),
        args,
        spans: BTreeMap::new(),
        uncommitted: BTreeSet::new(),
    };
    let outcome = loop {
        let outcome = session.consume(&mut printer).await;
        match &outcome {
            Err(e) if args.follow && is_connection_loss(e) => {
                eprintln!("note: group '{group}': {e}; joining again");
                if !session.rejoin(reset).await? {
                    // Interrupted while the broker was away.
                    return Ok(());
                }
                eprintln!("note: group '{group}': joined again");
            }
            _ => break outcome,
        }
    };
    if let Err(e @ (CliError::OutputClosed | CliError::Io { .. })) = outcome {
        // The last batch did not reach the reader: leave without
        // committing it (dropping the consumer closes the stream).
        drop(session);
        return Err(e);
    }
    let starts = session.commit_starts().await;
    // Commit what was printed, and leave the group (closing the stream).
    let committed = session.consumer.close().await;
    outcome?;
    starts?;
    committed?;
    Ok(())
}

/// One run of the command: the member and what it knows.
struct Session<'a> {
    client: Client,
    consumer: GroupConsumer,
    group: String,
    args: &'a ConsumeArgs,
    /// Catch-up targets of the assigned partitions.
    spans: BTreeMap<TopicPartition, Span>,
    /// Assigned partitions that had no committed offset when assigned.
    uncommitted: BTreeSet<TopicPartition>,
}

/// Whether `--follow` should join again after `e`: the broker ended the
/// stream (a restart) or the connection broke.
fn is_connection_loss(e: &CliError) -> bool {
    match e {
        CliError::GroupStreamEnded { .. } => true,
        CliError::Client(e) => e.is_connection_error(),
        _ => false,
    }
}

impl Session<'_> {
    /// Joins the group again with a new stream after the old one was lost
    /// (`--follow` across a broker restart), retrying with backoff while
    /// the broker cannot be reached. The new member starts at the group's
    /// committed offsets: every printed batch whose commit reached the
    /// broker is not printed again; one whose commit was lost with the
    /// connection is (at least once). Returns false when interrupted
    /// first.
    ///
    /// # Errors
    /// Any error other than an unreachable broker.
    async fn rejoin(&mut self, reset: AutoOffsetReset) -> Result<bool, CliError> {
        let interrupt = interrupted();
        tokio::pin!(interrupt);
        let mut backoff = ReconnectBackoff::new();
        loop {
            tokio::select! {
                () = tokio::time::sleep(backoff.next_wait()) => {}
                () = &mut interrupt => return Ok(false),
            }
            let joined = tokio::select! {
                joined = self.client.group_consumer(&self.group, [self.args.topic.clone()], reset) => joined,
                () = &mut interrupt => return Ok(false),
            };
            match joined {
                Ok(consumer) => {
                    // The old member's stream is gone; dropping it commits nothing.
                    self.consumer = consumer;
                    self.spans.clear();
                    self.uncommitted.clear();
                    return Ok(true);
                }
                Err(e) if e.is_connection_error() => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Prints and commits batches until caught up (without `--follow`),
    /// `--max-records`, a signal or an error.
    async fn consume(&mut self, printer: &mut Printer) -> Result<(), CliError> {
        let interrupt = interrupted();
        tokio::pin!(interrupt);
        loop {
            if !self.args.follow && self.is_caught_up().await? {
                return Ok(());
            }
            tokio::select! {
                batch = self.consumer.next_batch(printer.budget()) => {
                    let records = match batch {
                        Some(records) => records?,
                        None => return Err(CliError::GroupStreamEnded { group: self.group.clone() }),
                    };
                    let records: Vec<_> = records.into_iter().map(|r| r.record).collect();
                    let more = printer.print(&records)?;
                    self.consumer.commit_processed().await?;
                    if !more {
                        return Ok(());
                    }
                }
                () = tokio::time::sleep(CATCH_UP_TICK), if !self.args.follow => {}
                () = &mut interrupt => return Ok(()),
            }
        }
    }

    /// Whether every assigned partition has caught up and the group's
    /// assignment is settled.
    async fn is_caught_up(&mut self) -> Result<bool, ClientError> {
        let mine = assigned(&self.consumer.assignment());
        self.learn_spans(&mine).await?;
        let consumer = &self.consumer;
        let done = caught_up(&self.spans, &mine, |(topic, p)| {
            consumer.position(topic, *p)
        });
        if !done {
            return Ok(false);
        }
        // A rebalance may be moving partitions to this member: wait until
        // the group is settled and the broker's view of this member's
        // assignment is the one the stream reported.
        let group = self.client.describe_group(&self.group).await?;
        let me = group
            .members
            .iter()
            .find(|m| m.member_id == self.consumer.member_id());
        Ok(group.state != RECONCILING && me.is_some_and(|m| assigned(&m.assignment) == mine))
    }

    /// Looks up the span of every newly assigned partition and forgets
    /// revoked ones.
    async fn learn_spans(
        &mut self,
        assigned: &BTreeSet<TopicPartition>,
    ) -> Result<(), ClientError> {
        self.spans.retain(|tp, _| assigned.contains(tp));
        self.uncommitted.retain(|tp| assigned.contains(tp));
        let missing: Vec<TopicPartition> = assigned
            .iter()
            .filter(|tp| !self.spans.contains_key(*tp))
            .cloned()
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let committed = self.committed(&missing).await?;
        for tp in missing {
            let (topic, p) = (&tp.0, tp.1);
            let log_start = self.client.list_offsets(topic, p, OffsetSpec::Earliest, 0);
            let log_start = log_start.await?.offset;
            let end = self.client.list_offsets(topic, p, OffsetSpec::Latest, 0);
            let end = end.await?.offset;
            let committed = committed.get(&tp).copied();
            let start = start_position(committed, log_start, end, self.args.reset);
            if committed.is_none() {
                self.uncommitted.insert(tp.clone());
            }
            self.spans.insert(tp, Span { start, end });
        }
        Ok(())
    }

    /// Commits the start position of the assigned partitions that had no
    /// committed offset and where nothing was printed, so that the next run
    /// continues from there (with `--reset latest`, from the end as it was
    /// now) rather than applying `--reset` again.
    async fn commit_starts(&mut self) -> Result<(), ClientError> {
        let consumer = &self.consumer;
        let starts: Vec<PartitionOffset> = self
            .uncommitted
            .iter()
            .filter(|(topic, p)| consumer.is_assigned(topic, *p))
            .filter(|(topic, p)| consumer.position(topic, *p).is_none())
            .filter_map(|tp| {
                Some(PartitionOffset {
                    topic: tp.0.clone(),
                    partition: tp.1,
                    offset: self.spans.get(tp)?.start,
                    metadata: String::new(),
                })
            })
            .collect();
        if !starts.is_empty() {
            self.consumer.commit(starts).await?;
        }
        Ok(())
    }

    /// The group's committed offsets of `partitions`.
    async fn committed(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, u64>, ClientError> {
        let mut wanted: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for (topic, p) in partitions {
            wanted.entry(topic.clone()).or_default().push(*p);
        }
        let wanted = wanted
            .into_iter()
            .map(|(topic, partitions)| TopicPartitions { topic, partitions })
            .collect();
        let offsets = self.client.fetch_offsets(&self.group, wanted).await?;
        Ok(offsets
            .into_iter()
            .map(|o| ((o.topic, o.partition), o.offset))
            .collect())
    }
}

/// The partitions of an assignment, one by one.
fn assigned(assignment: &[TopicPartitions]) -> BTreeSet<TopicPartition> {
    assignment
        .iter()
        .flat_map(|tp| tp.partitions.iter().map(|p| (tp.topic.clone(), *p)))
        .collect()
}

/// Completes on SIGINT or SIGTERM (never, if they cannot be watched).
async fn interrupted() {
    use tokio::signal::unix::{signal, SignalKind};
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                () = ctrl_c => {}
            }
        }
        Err(_) => ctrl_c.await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: u32) -> TopicPartition {
        ("t".to_string(), p)
    }

    #[test]
    fn start_is_the_committed_offset_clamped_or_the_reset_policy() {
        assert_eq!(start_position(Some(5), 0, 10, GroupReset::Earliest), 5);
        assert_eq!(start_position(Some(1), 3, 10, GroupReset::Latest), 3);
        assert_eq!(start_position(Some(12), 3, 10, GroupReset::Earliest), 10);
        assert_eq!(start_position(None, 3, 10, GroupReset::Earliest), 3);
        assert_eq!(start_position(None, 3, 10, GroupReset::Latest), 10);
    }

    #[test]
    fn caught_up_when_every_assigned_partition_reached_its_end() {
        let spans = BTreeMap::from([
            (tp(0), Span { start: 0, end: 3 }),
            (tp(1), Span { start: 7, end: 7 }),
        ]);
        let assigned: BTreeSet<_> = [tp(0), tp(1)].into();
        let at = |positions: &'static [(u32, u64)]| {
            move |tp: &TopicPartition| positions.iter().find(|(p, _)| *p == tp.1).map(|(_, o)| *o)
        };
        assert!(!caught_up(&spans, &assigned, at(&[])));
        assert!(!caught_up(&spans, &assigned, at(&[(0, 2)])));
        assert!(caught_up(&spans, &assigned, at(&[(0, 3)])));
        // Partition 1 started at its end: nothing to read there.
        assert!(caught_up(&spans, &assigned, at(&[(0, 3), (1, 7)])));
        // A partition not looked up yet is not caught up.
        let more: BTreeSet<_> = [tp(0), tp(2)].into();
        assert!(!caught_up(&spans, &more, at(&[(0, 3)])));
        // Nothing assigned: nothing to wait for.
        assert!(caught_up(&spans, &BTreeSet::new(), at(&[])));
    }
}
