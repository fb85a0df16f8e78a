//! `strata topic ...`: create, list, describe, alter, grow and delete
//! topics. Results go to stdout as readable text; errors are one line.

use clap::{Args, Subcommand};

use super::format::Table;
use super::{print_stdout, BrokerArgs, CliError};
use crate::client::{Client, PartitionDescription, TopicConfig, TopicDescription};

/// Arguments of `strata topic`.
#[derive(Debug, Args)]
pub struct TopicArgs {
    /// Where the broker is.
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: TopicCommand,
}

/// The `topic` subcommands.
#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic; unset settings take the broker's defaults.
    Create {
        /// Topic name: 1-249 characters of [A-Za-z0-9._-], not "." or "..".
        name: String,
        /// Number of partitions, at least 1 [default: the broker's
        /// default-partitions].
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        partitions: Option<u32>,
        /// Topic settings.
        #[command(flatten)]
        config: TopicConfigArgs,
    },
    /// List all topics with their partition counts.
    List,
    /// Show a topic's settings and the state of each partition.
    Describe {
        /// Topic name.
        name: String,
    },
    /// Change settings of a topic; settings not given stay as they are.
    #[command(mut_group("topic_config", |g| g.required(true)))]
    Alter {
        /// Topic name.
        name: String,
        /// The settings to change (at least one).
        #[command(flatten)]
        config: TopicConfigArgs,
    },
    /// Grow a topic to a total number of partitions (it cannot shrink).
    AddPartitions {
        /// Topic name.
        name: String,
        /// The new total number of partitions.
        #[arg(long, value_name = "N")]
        total: u32,
    },
    /// Delete a topic and all its data.
    Delete {
        /// Topic name.
        name: String,
    },
}

/// Per-topic settings as flags (used by `create` and `alter`).
#[derive(Debug, Clone, Default, Args)]
#[group(id = "topic_config", multiple = true)]
pub struct TopicConfigArgs {
    /// Keep records at least this long, ms; -1 = forever.
    #[arg(long, value_name = "MS", allow_negative_numbers = true)]
    pub retention_ms: Option<i64>,
    /// Keep at most about this many bytes per partition; -1 = no limit.
    #[arg(long, value_name = "BYTES", allow_negative_numbers = true)]
    pub retention_bytes: Option<i64>,
    /// Roll to a new segment file at this size, bytes.
    #[arg(long, value_name = "BYTES")]
    pub segment_bytes: Option<u64>,
    /// Roll to a new segment when the active one is this old, ms.
    #[arg(long, value_name = "MS")]
    pub segment_ms: Option<i64>,
    /// Largest accepted encoded record, bytes.
    #[arg(long, value_name = "BYTES")]
    pub max_record_bytes: Option<u32>,
}

impl TopicConfigArgs {
    /// The settings as the API's `TopicConfig` (unset stays unset).
    pub fn to_config(&self) -> TopicConfig {
        TopicConfig {
            retention_ms: self.retention_ms,
            retention_bytes: self.retention_bytes,
            segment_bytes: self.segment_bytes,
            segment_ms: self.segment_ms,
            max_record_bytes: self.max_record_bytes,
        }
    }
}

/// Runs a `topic` subcommand.
///
/// # Errors
/// Connection or broker errors, or a failed write to stdout.
pub async fn run(args: TopicArgs) -> Result<(), CliError> {
    let client = args.broker.connect().await?;
    let text = execute(&client, args.command).await?;
    print_stdout(&text)
}

/// Performs the command and returns what to print.
async fn execute(client: &Client, command: TopicCommand) -> Result<String, CliError> {
    Ok(match command {
        TopicCommand::Create {
            name,
            partitions,
            config,
        } => {
            let topic = client
                .create_topic(&name, partitions.unwrap_or(0), config.to_config())
                .await?;
            format!(
                "created topic '{}' with {} partitions\n",
                topic.name,
                topic.partitions.len()
            )
        }
        TopicCommand::List => {
            let mut table = Table::new(&["TOPIC", "PARTITIONS"]);
            for t in client.list_topics().await? {
                table.row(vec![t.name, t.partitions.to_string()]);
            }
            table.render()
        }
        TopicCommand::Describe { name } => describe(&client.describe_topic(&name).await?),
        TopicCommand::Alter { name, config } => {
            let topic = client.alter_topic_config(&name, config.to_config()).await?;
            format!(
                "altered topic '{}': {}\n",
                topic.name,
                config_line(topic.config.as_ref())
            )
        }
        TopicCommand::AddPartitions { name, total } => {
            let topic = client.create_partitions(&name, total).await?;
            format!(
                "topic '{}' now has {} partitions\n",
                topic.name,
                topic.partitions.len()
            )
        }
        TopicCommand::Delete { name } => {
            client.delete_topic(&name).await?;
            format!("deleted topic '{name}'\n")
        }
    })
}

/// The text of `topic describe`: a header with the effective settings, then
/// one row per partition. The recovery columns appear only when some
/// partition lost a torn tail or has damaged ranges.
pub fn describe(topic: &TopicDescription) -> String {
    let mut out = format!(
        "topic: {}\npartitions: {}\nconfig: {}\n\n",
        topic.name,
        topic.partitions.len(),
        config_line(topic.config.as_ref())
    );
    let damaged = topic
        .partitions
        .iter()
        .any(|p| p.truncated_bytes > 0 || !p.damaged_ranges.is_empty());
    let mut headings = vec![
        "PARTITION",
        "LOG_START",
        "HIGH_WATERMARK",
        "SIZE_BYTES",
        "SEGMENTS",
    ];
    if damaged {
        headings.extend(["TRUNCATED_BYTES", "DAMAGED_RANGES"]);
    }
    let mut table = Table::new(&headings);
    for p in &topic.partitions {
        table.row(partition_row(p, damaged));
    }
    out.push_str(&table.render());
    out
}

fn partition_row(p: &PartitionDescription, damaged: bool) -> Vec<String> {
    let mut row = vec![
        p.partition.to_string(),
        p.log_start_offset.to_string(),
        p.high_watermark.to_string(),
        p.size_bytes.to_string(),
        p.segment_count.to_string(),
    ];
    if damaged {
        let ranges: Vec<String> = p
            .damaged_ranges
            .iter()
            .map(|r| format!("{}..{}", r.first_offset, r.end_offset))
            .collect();
        row.push(p.truncated_bytes.to_string());
        row.push(if ranges.is_empty() {
            "-".into()
        } else {
            ranges.join(" ")
        });
    }
    row
}

/// `name=value` for every set field of a topic config.
fn config_line(config: Option<&TopicConfig>) -> String {
    let Some(c) = config else {
        return "(not reported)".into();
    };
    let fields = [
        ("retention_ms", c.retention_ms.map(|v| v.to_string())),
        ("retention_bytes", c.retention_bytes.map(|v| v.to_string())),
        ("segment_bytes", c.segment_bytes.map(|v| v.to_string())),
        ("segment_ms", c.segment_ms.map(|v| v.to_string())),
        (
            "max_record_bytes",
            c.max_record_bytes.map(|v| v.to_string()),
        ),
    ];
    let set: Vec<String> = fields
        .into_iter()
        .filter_map(|(name, value)| value.map(|v| format!("{name}={v}")))
        .collect();
    set.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::DamagedRange;

    fn partition(partition: u32, hw: u64) -> PartitionDescription {
        PartitionDescription {
            partition,
            high_watermark: hw,
            size_bytes: 100,
            segment_count: 1,
            ..Default::default()
        }
    }

    #[test]
    fn describe_shows_recovery_columns_only_when_needed() {
        let mut topic = TopicDescription {
            name: "t".into(),
            config: Some(TopicConfig {
                retention_ms: Some(-1),
                ..Default::default()
            }),
            partitions: vec![partition(0, 5), partition(1, 7)],
        };
        let text = describe(&topic);
        assert!(text.contains("config: retention_ms=-1\n"), "{text}");
        assert!(
            text.contains("PARTITION  LOG_START  HIGH_WATERMARK  SIZE_BYTES  SEGMENTS\n"),
            "{text}"
        );
        assert!(!text.contains("DAMAGED"), "{text}");

        topic.partitions[1].damaged_ranges.push(DamagedRange {
            first_offset: 2,
            end_offset: 4,
        });
        let text = describe(&topic);
        assert!(text.contains("DAMAGED_RANGES"), "{text}");
        assert!(text.contains("2..4"), "{text}");
    }
}
