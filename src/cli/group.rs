//! `strata group ...`: list, describe, delete consumer groups and reset
//! their committed offsets. Results go to stdout as readable text; errors
//! are one line.
//!
//! To consume as a group member, use `strata consume TOPIC --group G`.

use clap::{ArgGroup, Args, Subcommand};

use super::format::{human_duration_ms, Table};
use super::time::parse_timestamp;
use super::{print_stdout, BrokerArgs, CliError};
use crate::client::{
    Client, DescribeGroupResponse, GroupSummary, Member, PartitionLag, PartitionOffset,
    ResetTarget, TopicPartitions,
};

/// Arguments of `strata group`.
#[derive(Debug, Args)]
pub struct GroupArgs {
    /// Where the broker is.
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: GroupCommand,
}

/// The `group` subcommands.
#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// List all groups with their state and number of live members.
    List,
    /// Show a group's members, their assignments, and its lag per partition.
    Describe {
        /// Group name.
        group: String,
    },
    /// Delete a group and its committed offsets (refused while it has live
    /// members).
    Delete {
        /// Group name.
        group: String,
    },
    /// Move a group's committed offsets for every partition of a topic
    /// (live members continue from the new positions).
    ResetOffsets(ResetOffsetsArgs),
}

/// Arguments of `strata group reset-offsets`.
#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("to")
        .required(true)
        .args(["to_earliest", "to_latest", "to_offset", "to_time"])
))]
pub struct ResetOffsetsArgs {
    /// Group name.
    pub group: String,
    /// Topic whose partitions are reset (all of them).
    #[arg(long, value_name = "T")]
    pub topic: String,
    /// To each partition's oldest stored record (replay everything).
    #[arg(long)]
    pub to_earliest: bool,
    /// To each partition's end (skip everything stored).
    #[arg(long)]
    pub to_latest: bool,
    /// To this offset, clamped to each partition's stored range.
    #[arg(long, value_name = "N")]
    pub to_offset: Option<u64>,
    /// To the first record appended at or after this time: milliseconds
    /// since the epoch or RFC 3339, e.g. 2024-05-01T12:00:00Z.
    #[arg(long, value_name = "TS", value_parser = parse_timestamp, allow_negative_numbers = true)]
    pub to_time: Option<i64>,
    /// Only show where the offsets would go; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

impl ResetOffsetsArgs {
    /// The chosen `--to-*` (clap guarantees exactly one).
    fn target(&self) -> ResetTarget {
        if let Some(offset) = self.to_offset {
            ResetTarget::Offset(offset)
        } else if let Some(ms) = self.to_time {
            ResetTarget::Timestamp(ms)
        } else if self.to_latest {
            ResetTarget::Latest
        } else {
            ResetTarget::Earliest
        }
    }
}

/// Runs a `group` subcommand.
///
/// # Errors
/// Connection or broker errors, or a failed write to stdout.
pub async fn run(args: GroupArgs) -> Result<(), CliError> {
    let client = args.broker.connect().await?;
    let text = execute(&client, args.command).await?;
    print_stdout(&text)
}

/// Performs the command and returns what to print.
async fn execute(client: &Client, command: GroupCommand) -> Result<String, CliError> {
    Ok(match command {
        GroupCommand::List => list(&client.list_groups().await?),
        GroupCommand::Describe { group } => describe(&client.describe_group(&group).await?),
        GroupCommand::Delete { group } => {
            client.delete_group(&group).await?;
            format!("deleted group '{group}'\n")
        }
        GroupCommand::ResetOffsets(args) => {
            let offsets = client
                .reset_offsets(&args.group, &args.topic, args.target(), args.dry_run)
                .await?;
            reset_report(&args, &offsets)
        }
    })
}

/// The text of `group list`.
pub fn list(groups: &[GroupSummary]) -> String {
    let mut table = Table::new(&["GROUP", "STATE", "MEMBERS"]);
    for g in groups {
        table.row(vec![
            g.group.clone(),
            g.state.clone(),
            g.member_count.to_string(),
        ]);
    }
    table.render()
}

/// The text of `group describe`: state, the members table, the lag table
/// and a total.
pub fn describe(d: &DescribeGroupResponse) -> String {
    let mut out = format!(
        "group: {}\nstate: {}\nmembers: {}\n",
        d.group,
        d.state,
        d.members.len()
    );
    if !d.members.is_empty() {
        out.push('\n');
        out.push_str(&members_table(&d.members));
    }
    out.push('\n');
    out.push_str(&lag_table(&d.lag));
    out.push('\n');
    out.push_str(&total_lag_line(&d.lag));
    out
}

fn members_table(members: &[Member]) -> String {
    let mut table = Table::new(&["MEMBER", "EPOCH", "ASSIGNMENT"]);
    for m in members {
        table.row(vec![
            m.member_id.clone(),
            m.member_epoch.to_string(),
            assignment_text(&m.assignment),
        ]);
    }
    table.render()
}

/// `orders:0,1 payments:2`, or `-` for nothing.
pub fn assignment_text(assignment: &[TopicPartitions]) -> String {
    let parts: Vec<String> = assignment
        .iter()
        .filter(|tp| !tp.partitions.is_empty())
        .map(|tp| {
            let partitions: Vec<String> = tp.partitions.iter().map(u32::to_string).collect();
            format!("{}:{}", tp.topic, partitions.join(","))
        })
        .collect();
    if parts.is_empty() {
        "-".to_string()
    } else {
        parts.join(" ")
    }
}

fn lag_table(lag: &[PartitionLag]) -> String {
    let mut table = Table::new(&[
        "TOPIC",
        "PARTITION",
        "COMMITTED",
        "HIGH-WATERMARK",
        "LAG",
        "LAG-TIME",
    ]);
    for l in lag {
        table.row(vec![
            l.topic.clone(),
            l.partition.to_string(),
            l.committed_offset.to_string(),
            l.high_watermark.to_string(),
            l.lag.to_string(),
            human_duration_ms(l.lag_ms),
        ]);
    }
    table.render()
}

/// `total lag: N records` and, when behind, the age of the oldest
/// unconsumed record.
fn total_lag_line(lag: &[PartitionLag]) -> String {
    let records: u64 = lag.iter().map(|l| l.lag).fold(0, u64::saturating_add);
    let oldest = lag.iter().map(|l| l.lag_ms).max().unwrap_or(0);
    if records == 0 {
        "total lag: 0 records\n".to_string()
    } else {
        format!(
            "total lag: {records} records, oldest {}\n",
            human_duration_ms(oldest)
        )
    }
}

/// The text of `group reset-offsets`: what happened, then the new (or,
/// with `--dry-run`, would-be) position of every partition.
fn reset_report(args: &ResetOffsetsArgs, offsets: &[PartitionOffset]) -> String {
    let mut out = if args.dry_run {
        format!(
            "dry run: offsets of group '{}' for topic '{}' would be (nothing changed):\n",
            args.group, args.topic
        )
    } else {
        format!(
            "reset offsets of group '{}' for topic '{}':\n",
            args.group, args.topic
        )
    };
    let mut table = Table::new(&["TOPIC", "PARTITION", "NEW-OFFSET"]);
    for o in offsets {
        table.row(vec![
            o.topic.clone(),
            o.partition.to_string(),
            o.offset.to_string(),
        ]);
    }
    out.push_str(&table.render());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct W {
        #[command(subcommand)]
        c: GroupCommand,
    }

    fn lag(partition: u32, committed: u64, hw: u64, lag_ms: u64) -> PartitionLag {
        PartitionLag {
            topic: "orders".into(),
            partition,
            committed_offset: committed,
            high_watermark: hw,
            lag: hw - committed,
            lag_ms,
        }
    }

    #[test]
    fn assignment_is_compact() {
        let a = vec![
            TopicPartitions {
                topic: "orders".into(),
                partitions: vec![0, 1],
            },
            TopicPartitions {
                topic: "payments".into(),
                partitions: vec![2],
            },
        ];
        assert_eq!(assignment_text(&a), "orders:0,1 payments:2");
        assert_eq!(assignment_text(&[]), "-");
    }

    #[test]
    fn describe_shows_members_lag_and_total() {
        let d = DescribeGroupResponse {
            group: "billing".into(),
            state: "Stable".into(),
            members: vec![Member {
                member_id: "m-1".into(),
                member_epoch: 3,
                assignment: vec![TopicPartitions {
                    topic: "orders".into(),
                    partitions: vec![0, 1],
                }],
            }],
            lag: vec![lag(0, 10, 10, 0), lag(1, 5, 17, 184_000)],
        };
        assert_eq!(
            describe(&d),
            "group: billing\nstate: Stable\nmembers: 1\n\n\
             MEMBER  EPOCH  ASSIGNMENT\n\
             m-1     3      orders:0,1\n\n\
             TOPIC   PARTITION  COMMITTED  HIGH-WATERMARK  LAG  LAG-TIME\n\
             orders  0          10         10              0    0\n\
             orders  1          5          17              12   3m4s\n\n\
             total lag: 12 records, oldest 3m4s\n"
        );
    }

    #[test]
    fn describe_of_an_empty_group_skips_the_members_table() {
        let d = DescribeGroupResponse {
            group: "g".into(),
            state: "Empty".into(),
            members: vec![],
            lag: vec![lag(0, 4, 4, 0)],
        };
        let text = describe(&d);
        assert!(
            text.starts_with("group: g\nstate: Empty\nmembers: 0\n\nTOPIC"),
            "{text}"
        );
        assert!(text.ends_with("total lag: 0 records\n"), "{text}");
    }

    #[test]
    fn list_is_a_table() {
        let groups = vec![GroupSummary {
            group: "billing".into(),
            state: "Empty".into(),
            member_count: 0,
        }];
        assert_eq!(
            list(&groups),
            "GROUP    STATE  MEMBERS\nbilling  Empty  0\n"
        );
    }

    #[test]
    fn reset_needs_exactly_one_target() {
        let parse = |args: &[&str]| {
            let mut argv = vec!["w", "reset-offsets", "g", "--topic", "t"];
            argv.extend_from_slice(args);
            W::try_parse_from(argv)
        };
        assert!(parse(&[]).is_err());
        assert!(parse(&["--to-earliest", "--to-latest"]).is_err());
        assert!(parse(&["--to-offset", "-1"]).is_err());
        let target = |args: &[&str]| match parse(args).map(|w| w.c) {
            Ok(GroupCommand::ResetOffsets(r)) => Some((r.target(), r.dry_run)),
            _ => None,
        };
        assert_eq!(
            target(&["--to-earliest"]),
            Some((ResetTarget::Earliest, false))
        );
        assert_eq!(
            target(&["--to-latest", "--dry-run"]),
            Some((ResetTarget::Latest, true))
        );
        assert_eq!(
            target(&["--to-offset", "42"]),
            Some((ResetTarget::Offset(42), false))
        );
        assert_eq!(
            target(&["--to-time", "1970-01-01T00:00:01Z"]),
            Some((ResetTarget::Timestamp(1000), false))
        );
        assert_eq!(
            target(&["--to-time", "1500"]),
            Some((ResetTarget::Timestamp(1500), false))
        );
        assert!(parse(&["--to-time", "later"]).is_err());
    }
}
