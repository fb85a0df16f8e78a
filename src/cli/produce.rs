//! `strata produce`: one record per stdin line, sent in batches.
//!
//! Lines are bytes, not necessarily UTF-8; the trailing `\n` (and a `\r`
//! before it) is removed. Lines are gathered into requests of up to
//! [`MAX_BATCH_RECORDS`] records or [`MAX_BATCH_BYTES`] bytes, and pending
//! records are sent whenever stdin has nothing more buffered, so typing
//! into an interactive terminal sends each line at once while a piped file
//! goes out in large batches.
//!
//! With `--key-separator` each line carries its own key, and the broker
//! would put a whole request on the partition of its *first* key. So the
//! CLI picks the partition of every keyed line itself, with the broker's
//! partitioner ([`crate::broker::produce::partition_for_key`]), and batches
//! per partition; lines with an empty key are left to the broker
//! (round-robin per request).

use std::collections::BTreeMap;

use clap::{Args, ValueEnum};
use tokio::io::{AsyncBufReadExt, BufReader};

use super::{BrokerArgs, CliError};
use crate::client::{Acks, Client, PartitionAppend, Record};

/// Most records in one produce request.
pub const MAX_BATCH_RECORDS: usize = 1000;
/// Most bytes (keys + values) in one produce request; a single larger line
/// still goes alone.
pub const MAX_BATCH_BYTES: usize = 1 << 20;
/// Size of the stdin read buffer.
const STDIN_BUFFER_BYTES: usize = 1 << 20;

/// Arguments of `strata produce`.
#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// Where the broker is.
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// Topic to append to.
    pub topic: String,
    /// Key of every record (UTF-8). Without a key the broker spreads
    /// requests over partitions round-robin.
    #[arg(long, value_name = "K", conflicts_with = "key_separator")]
    pub key: Option<String>,
    /// Partition for every record [default: by key hash, else round-robin].
    #[arg(long, value_name = "P")]
    pub partition: Option<u32>,
    /// When a write is acknowledged: leader = in the broker's page cache,
    /// durable = flushed to disk.
    #[arg(long, value_enum, value_name = "ACKS", default_value_t = AcksArg::Leader)]
    pub acks: AcksArg,
    /// Read each line as `KEY<SEP>VALUE`, split at the first SEP (`\t` means a
    /// tab). A line without SEP is an error; an empty KEY means no key.
    #[arg(long, value_name = "SEP", value_parser = parse_separator)]
    pub key_separator: Option<String>,
}

/// The `--acks` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AcksArg {
    /// Acknowledge once in the broker's page cache (survives a broker crash,
    /// not a power loss).
    Leader,
    /// Acknowledge once flushed to stable storage.
    Durable,
}

impl From<AcksArg> for Acks {
    fn from(acks: AcksArg) -> Acks {
        match acks {
            AcksArg::Leader => Acks::Leader,
            AcksArg::Durable => Acks::Durable,
        }
    }
}

/// Unescapes `\t` (tab) and `\\`; the separator must not be empty.
fn parse_separator(s: &str) -> Result<String, String> {
    let unescaped = s.replace("\\t", "\t").replace("\\\\", "\\");
    if unescaped.is_empty() {
        return Err("the key separator must not be empty".into());
    }
    Ok(unescaped)
}

/// Runs `strata produce` until stdin ends, then prints a summary to stderr.
///
/// # Errors
/// Connection or broker errors, a stdin read error, or a line without the
/// key separator (after sending the lines before it).
pub async fn run(args: ProduceArgs) -> Result<(), CliError> {
    let client = args.broker.connect().await?;
    let mut producer = LineProducer::new(client, &args).await?;
    let result = producer.read_stdin().await;
    eprintln!("{}", producer.summary.line(&args.topic));
    result
}

/// Where a record goes: a partition, or `None` for the broker to choose.
type Destination = Option<u32>;

/// Turns lines into records and sends them.
struct LineProducer {
    client: Client,
    topic: String,
    acks: Acks,
    partition: Option<u32>,
    key: Vec<u8>,
    separator: Option<Vec<u8>>,
    /// Partition count, when the CLI partitions keyed lines itself.
    partitions: Option<u32>,
    batches: Batches,
    summary: Summary,
}

impl LineProducer {
    async fn new(client: Client, args: &ProduceArgs) -> Result<LineProducer, CliError> {
        let separator = args.key_separator.as_ref().map(|s| s.as_bytes().to_vec());
        let partitions = match (&separator, args.partition) {
            (Some(_), None) => {
                Some(client.describe_topic(&args.topic).await?.partitions.len() as u32)
            }
            _ => None,
        };
        Ok(LineProducer {
            client,
            topic: args.topic.clone(),
            acks: args.acks.into(),
            partition: args.partition,
            key: args.key.clone().unwrap_or_default().into_bytes(),
            separator,
            partitions,
            batches: Batches::default(),
            summary: Summary::default(),
        })
    }

    /// Reads stdin to the end, sending batches as they fill or as stdin
    /// runs dry.
    async fn read_stdin(&mut self) -> Result<(), CliError> {
        let mut reader = BufReader::with_capacity(STDIN_BUFFER_BYTES, tokio::io::stdin());
        let mut line = Vec::new();
        let mut line_number = 0u64;
        loop {
            line.clear();
            let read = reader.read_until(b'\n', &mut line).await;
            if read.map_err(|source| CliError::Io {
                action: "read stdin",
                source,
            })? == 0
            {
                break;
            }
            line_number += 1;
            strip_line_end(&mut line);
            let Some((destination, record)) = self.record(&line) else {
                self.flush().await?;
                return Err(CliError::MissingKeySeparator {
                    line: line_number,
                    separator: String::from_utf8_lossy(
                        self.separator.as_deref().unwrap_or_default(),
                    )
                    .into_owned(),
                    produced: self.summary.records,
                });
            };
            if self.batches.push(destination, record) || reader.buffer().is_empty() {
                self.flush().await?;
            }
        }
        self.flush().await
    }

    /// The record for one line and where it goes; `None` if the line lacks
    /// the key separator.
    fn record(&self, line: &[u8]) -> Option<(Destination, Record)> {
        let (key, value) = match &self.separator {
            Some(sep) => split_once(line, sep)?,
            None => (self.key.as_slice(), line),
        };
        let destination = match (self.partition, self.partitions) {
            (Some(p), _) => Some(p),
            (None, Some(n)) if !key.is_empty() => {
                Some(crate::broker::produce::partition_for_key(key, n))
            }
            _ => None,
        };
        let record = Record {
            key: key.to_vec(),
            value: value.to_vec(),
            ..Default::default()
        };
        Some((destination, record))
    }

    /// Sends every pending batch, one request per destination.
    async fn flush(&mut self) -> Result<(), CliError> {
        for (destination, records) in self.batches.take() {
            let appends = self
                .client
                .produce(&self.topic, destination, records, self.acks)
                .await?;
            for append in &appends {
                self.summary.add(append);
            }
        }
        Ok(())
    }
}

/// Removes a trailing `\n` or `\r\n`.
fn strip_line_end(line: &mut Vec<u8>) {
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
}

/// Splits at the first occurrence of `sep`.
fn split_once<'a>(line: &'a [u8], sep: &[u8]) -> Option<(&'a [u8], &'a [u8])> {
    let at = line.windows(sep.len()).position(|w| w == sep)?;
    Some((&line[..at], &line[at + sep.len()..]))
}

/// Records waiting to be sent, per destination.
#[derive(Debug, Default)]
struct Batches {
    pending: BTreeMap<Destination, Vec<Record>>,
    records: usize,
    bytes: usize,
}

impl Batches {
    /// Adds a record; true when the pending records reached a request's
    /// limit and should be sent.
    fn push(&mut self, destination: Destination, record: Record) -> bool {
        self.records += 1;
        self.bytes += record.key.len() + record.value.len();
        self.pending.entry(destination).or_default().push(record);
        self.records >= MAX_BATCH_RECORDS || self.bytes >= MAX_BATCH_BYTES
    }

    /// Takes every pending batch.
    fn take(&mut self) -> BTreeMap<Destination, Vec<Record>> {
        self.records = 0;
        self.bytes = 0;
        std::mem::take(&mut self.pending)
    }
}

/// What was produced, for the closing summary line.
#[derive(Debug, Default)]
struct Summary {
    records: u64,
    /// Per partition: first and last offset written.
    ranges: BTreeMap<u32, (u64, u64)>,
}

impl Summary {
    fn add(&mut self, append: &PartitionAppend) {
        if append.record_count == 0 {
            return;
        }
        self.records += u64::from(append.record_count);
        let last = append.base_offset + u64::from(append.record_count) - 1;
        let range = self
            .ranges
            .entry(append.partition)
            .or_insert((append.base_offset, last));
        range.0 = range.0.min(append.base_offset);
        range.1 = range.1.max(last);
    }

    /// `produced N records to 'topic' (partition P: offsets A-B, ...)`.
    fn line(&self, topic: &str) -> String {
        let noun = if self.records == 1 {
            "record"
        } else {
            "records"
        };
        let mut line = format!("produced {} {noun} to '{topic}'", self.records);
        if !self.ranges.is_empty() {
            let parts: Vec<String> = self
                .ranges
                .iter()
                .map(|(p, (first, last))| format!("partition {p}: offsets {first}-{last}"))
                .collect();
            line.push_str(&format!(" ({})", parts.join(", ")));
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separators_unescape() {
        assert_eq!(parse_separator("\\t"), Ok("\t".to_string()));
        assert_eq!(parse_separator("::"), Ok("::".to_string()));
        assert!(parse_separator("").is_err());
    }

    #[test]
    fn lines_split_at_first_separator() {
        assert_eq!(
            split_once(b"k\tv\tw", b"\t"),
            Some((&b"k"[..], &b"v\tw"[..]))
        );
        assert_eq!(split_once(b"k::v", b"::"), Some((&b"k"[..], &b"v"[..])));
        assert_eq!(split_once(b"\tv", b"\t"), Some((&b""[..], &b"v"[..])));
        assert_eq!(split_once(b"kv", b"\t"), None);
    }

    #[test]
    fn line_ends_are_stripped() {
        for (input, expected) in [
            (&b"a\r\n"[..], &b"a"[..]),
            (b"a\n", b"a"),
            (b"a", b"a"),
            (b"a\r", b"a\r"),
        ] {
            let mut line = input.to_vec();
            strip_line_end(&mut line);
            assert_eq!(line, expected);
        }
    }

    #[test]
    fn batches_fill_by_count_and_bytes() {
        let mut b = Batches::default();
        let small = || Record {
            value: vec![0; 10],
            ..Default::default()
        };
        for i in 1..MAX_BATCH_RECORDS {
            assert!(!b.push(Some((i % 3) as u32), small()));
        }
        assert!(b.push(None, small()));
        let taken = b.take();
        assert_eq!(taken.len(), 4);
        assert_eq!(
            taken.values().map(Vec::len).sum::<usize>(),
            MAX_BATCH_RECORDS
        );
        let big = Record {
            value: vec![0; MAX_BATCH_BYTES],
            ..Default::default()
        };
        assert!(b.push(None, big));
    }

    #[test]
    fn summary_reports_ranges_per_partition() {
        let mut s = Summary::default();
        let append = |partition, base_offset, record_count| PartitionAppend {
            partition,
            base_offset,
            record_count,
            append_time_ms: 1,
        };
        s.add(&append(1, 10, 5));
        s.add(&append(0, 0, 2));
        s.add(&append(1, 15, 1));
        assert_eq!(
            s.line("t"),
            "produced 8 records to 't' (partition 0: offsets 0-1, partition 1: offsets 10-15)"
        );
        assert_eq!(Summary::default().line("t"), "produced 0 records to 't'");
        let mut one = Summary::default();
        one.add(&append(2, 4, 1));
        assert_eq!(
            one.line("t"),
            "produced 1 record to 't' (partition 2: offsets 4-4)"
        );
    }
}
