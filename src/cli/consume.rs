//! `strata consume`: print records of a topic to stdout.
//!
//! With `--group G` the command reads as a member of consumer group G
//! instead, from the group's committed offsets, and commits as it goes; see
//! [`super::group_consume`]. The start options below do not apply then.
//!
//! Start position (per partition read): `--offset N`, `--from-beginning`
//! (the log start), `--from-time TS` (the first record at or after TS), or
//! by default the latest offset, so that only new records show, as in
//! Kafka's console consumer.
//!
//! Without `--follow`, each partition is read in turn up to the high
//! watermark it had when the command started, and the command exits. With
//! `--follow`, every partition is subscribed at once and records are printed
//! as they arrive (in offset order within a partition, interleaved across
//! partitions) until interrupted or `--max-records` is reached; across a
//! broker restart or a lost connection it subscribes again from where it
//! was, printing nothing twice and skipping nothing.
//!
//! Output formats:
//! - `text`: `<partition>:<offset>\t<key>\t<value>` per record. Key and value
//!   are printed as UTF-8, with invalid bytes replaced by U+FFFD, and are
//!   not escaped: a value containing a newline spans lines. Use `json` for
//!   binary or multi-line data.
//! - `json`: one object per line, `{"topic","partition","offset",
//!   "timestamp_ms","key","value","headers"}`. `key` is `null` for a record
//!   without key. Key, value and header values are strings when they are
//!   valid UTF-8, otherwise base64 under `key_base64`, `value_base64`,
//!   `value_base64`. `headers` is an array of `{"key","value"}` objects.

use clap::{ArgGroup, Args, ValueEnum};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::format::{push_json_bytes, push_json_string};
use super::time::parse_timestamp;
use super::{write_stdout, BrokerArgs, CliError, ReconnectBackoff};
use crate::client::{
    Client, ClientError, ConsumedRecord, OffsetSpec, PartitionDescription, PartitionReader,
};

/// Record batches buffered between the partition subscriptions and the
/// printer in `--follow` mode.
const FOLLOW_CHANNEL_CAPACITY: usize = 64;

/// Arguments of `strata consume`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("start").args(["offset", "from_beginning", "from_time"])))]
pub struct ConsumeArgs {
    /// Where the broker is.
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// Topic to read.
    pub topic: String,
    /// Read only this partition [default: all partitions].
    #[arg(long, value_name = "P")]
    pub partition: Option<u32>,
    /// Start at this offset, in every partition read.
    #[arg(long, value_name = "N")]
    pub offset: Option<u64>,
    /// Start at the oldest record still stored.
    #[arg(long)]
    pub from_beginning: bool,
    /// Start at the first record at or after this time: milliseconds since the
    /// epoch or RFC 3339, e.g. 2024-05-01T12:00:00Z or 2024-05-01T14:00:00.250+02:00.
    #[arg(long, value_name = "TS", value_parser = parse_timestamp, allow_negative_numbers = true)]
    pub from_time: Option<i64>,
    /// Read as a member of this consumer group: share the partitions with
    /// the group's other members, start at the group's committed offsets,
    /// commit as records are printed, and leave the group on exit.
    #[arg(
        long,
        value_name = "G",
        conflicts_with_all = ["partition", "offset", "from_beginning", "from_time"]
    )]
    pub group: Option<String>,
    /// With --group: where to start in partitions the group has no
    /// committed offset for.
    #[arg(
        long,
        value_enum,
        value_name = "WHERE",
        default_value_t = GroupReset::Earliest,
        requires = "group"
    )]
    pub reset: GroupReset,
    /// Stop after this many records, all partitions together.
    #[arg(long, value_name = "N")]
    pub max_records: Option<u64>,
    /// Keep waiting for new records instead of stopping at the end of the log.
    #[arg(long)]
    pub follow: bool,
    /// Output format: text = `partition:offset<TAB>key<TAB>value` (lossy
    /// UTF-8); json = one object per line (base64 for non-UTF-8 bytes).
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
}

/// The `--format` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// `partition:offset<TAB>key<TAB>value`, lossy UTF-8.
    Text,
    /// One JSON object per line.
    Json,
}

/// The `--reset` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GroupReset {
    /// The oldest record still stored.
    Earliest,
    /// The end of the log: only records produced from now on.
    Latest,
}

/// Where reading one partition starts and, without `--follow`, ends.
#[derive(Debug, Clone, Copy)]
struct Span {
    partition: u32,
    start: u64,
    /// The high watermark when the command started.
    end: u64,
}

/// Runs `strata consume`.
///
/// # Errors
/// Connection or broker errors, a partition the topic does not have, or a
/// failed write to stdout.
pub async fn run(args: ConsumeArgs) -> Result<(), CliError> {
    if let Some(group) = &args.group {
        return super::group_consume::run(&args, group).await;
    }
    let client = args.broker.connect().await?;
    let topic = client.describe_topic(&args.topic).await?;
    let mut spans = Vec::new();
    for p in selected_partitions(&topic.partitions, &args)? {
        spans.push(Span {
            partition: p.partition,
            start: start_offset(&client, &args, p).await?,
            end: p.high_watermark,
        });
    }
    let mut printer = Printer::new(&args);
    if printer.is_done() {
        return Ok(());
    }
    if args.follow {
        follow(client, &args.topic, spans, &mut printer).await
    } else {
        read_to_end(&client, &args.topic, spans, &mut printer).await
    }
}

/// The partitions to read: the one asked for, or all.
fn selected_partitions<'a>(
    partitions: &'a [PartitionDescription],
    args: &ConsumeArgs,
) -> Result<Vec<&'a PartitionDescription>, CliError> {
    let Some(wanted) = args.partition else {
        return Ok(partitions.iter().collect());
    };
    match partitions.iter().find(|p| p.partition == wanted) {
        Some(p) => Ok(vec![p]),
        None => Err(CliError::NoSuchPartition {
            topic: args.topic.clone(),
            partition: wanted,
            partitions: partitions.len() as u32,
        }),
    }
}

/// The first offset to read in partition `p`.
async fn start_offset(
    client: &Client,
    args: &ConsumeArgs,
    p: &PartitionDescription,
) -> Result<u64, ClientError> {
    if let Some(offset) = args.offset {
        return Ok(offset);
    }
    if args.from_beginning {
        return Ok(p.log_start_offset);
    }
    match args.from_time {
        Some(ts) => {
            let found = client
                .list_offsets(&args.topic, p.partition, OffsetSpec::Timestamp, ts)
                .await?;
            Ok(found.offset)
        }
        None => Ok(p.high_watermark),
    }
}

/// Reads each partition in turn from its start to its end.
async fn read_to_end(
    client: &Client,
    topic: &str,
    spans: Vec<Span>,
    printer: &mut Printer,
) -> Result<(), CliError> {
    for span in spans {
        let mut reader = PartitionReader::new(client.clone(), topic, span.partition, span.start);
        // A start past the end is fetched anyway, so that the broker
        // reports it as OUT_OF_RANGE rather than it passing silently.
        while reader.next_offset() != span.end {
            let mut records = reader.poll(0, 0).await?;
            records.retain(|r| r.offset < span.end);
            if records.is_empty() {
                break;
            }
            if !printer.print(&records)? {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Subscribes to every partition and prints records as they arrive.
async fn follow(
    client: Client,
    topic: &str,
    spans: Vec<Span>,
    printer: &mut Printer,
) -> Result<(), CliError> {
    let (tx, mut rx) = mpsc::channel(FOLLOW_CHANNEL_CAPACITY);
    let mut tasks = JoinSet::new();
    for span in spans {
        let (client, topic, tx) = (client.clone(), topic.to_string(), tx.clone());
        tasks.spawn(forward_partition(client, topic, span, tx));
    }
    drop(tx);
    // Dropping `tasks` on return aborts the subscriptions.
    while let Some(item) = rx.recv().await {
        if !printer.print(&item?)? {
            return Ok(());
        }
    }
    Ok(())
}

/// Forwards one partition's subscription into `tx` until the printer stops
/// listening (the send fails) or the stream fails for good. A lost
/// connection or a stream the broker ended (a restart) is not the end of a
/// `--follow`: it subscribes again from the offset after the last record it
/// forwarded, waiting longer between attempts while the broker is away,
/// and says so on stderr. Any other error (the topic was deleted, the
/// offset fell out of retention, damaged data) ends the command.
async fn forward_partition(
    client: Client,
    topic: String,
    span: Span,
    tx: mpsc::Sender<Result<Vec<ConsumedRecord>, CliError>>,
) {
    let mut next = span.start;
    let mut backoff = ReconnectBackoff::new();
    let mut lost = false;
    loop {
        let ended = match client.subscribe(&topic, span.partition, next).await {
            Ok(mut stream) => loop {
                match stream.message().await {
                    Ok(Some(response)) => {
                        if lost {
                            eprintln!(
                                "note: partition {}: reading again from offset {next}",
                                span.partition
                            );
                            lost = false;
                        }
                        backoff.reset();
                        let mut records = ConsumedRecord::from_response(span.partition, response);
                        records.retain(|r| r.offset >= next);
                        let Some(last) = records.last() else { continue };
                        next = last.offset + 1;
                        if tx.send(Ok(records)).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => break None,
                    Err(e) => break Some(e),
                }
            },
            Err(e) => Some(e),
        };
        match ended {
            Some(e) if !e.is_connection_error() => {
                let _ = tx.send(Err(e.into())).await;
                return;
            }
            why => {
                if !lost {
                    let why = why.map_or_else(
                        || "the broker ended the subscription".to_string(),
                        |e| e.to_string(),
                    );
                    eprintln!(
                        "note: partition {}: {why}; subscribing again from offset {next}",
                        span.partition
                    );
                    lost = true;
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff.next_wait()) => {}
            () = tx.closed() => return,
        }
    }
}

/// Formats records and writes them to stdout, counting toward
/// `--max-records`.
pub(super) struct Printer {
    format: OutputFormat,
    topic: String,
    remaining: Option<u64>,
}

impl Printer {
    pub(super) fn new(args: &ConsumeArgs) -> Printer {
        Printer {
            format: args.format,
            topic: args.topic.clone(),
            remaining: args.max_records,
        }
    }

    pub(super) fn is_done(&self) -> bool {
        self.remaining == Some(0)
    }

    /// How many more records may be printed.
    pub(super) fn budget(&self) -> usize {
        self.remaining
            .map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// Prints records (up to the remaining budget) and flushes stdout; false
    /// once no more should be printed.
    ///
    /// # Errors
    /// [`CliError::OutputClosed`] when the reader closed stdout, `Io` for
    /// any other failed write: the records were not printed (and a group
    /// consumer must not commit them).
    pub(super) fn print(&mut self, records: &[ConsumedRecord]) -> Result<bool, CliError> {
        let take = match self.remaining {
            Some(n) => records.len().min(usize::try_from(n).unwrap_or(usize::MAX)),
            None => records.len(),
        };
        let mut text = String::new();
        for record in &records[..take] {
            match self.format {
                OutputFormat::Text => push_text(&mut text, record),
                OutputFormat::Json => push_json(&mut text, &self.topic, record),
            }
        }
        if let Some(n) = self.remaining.as_mut() {
            *n -= take as u64;
        }
        write_stdout(&text)?;
        Ok(!self.is_done())
    }
}

/// `partition:offset<TAB>key<TAB>value\n`, lossy UTF-8.
fn push_text(out: &mut String, r: &ConsumedRecord) {
    out.push_str(&format!(
        "{}:{}\t{}\t{}\n",
        r.partition,
        r.offset,
        String::from_utf8_lossy(&r.key),
        String::from_utf8_lossy(&r.value)
    ));
}

/// One JSON object and a newline (see the module docs for the shape).
pub fn push_json(out: &mut String, topic: &str, r: &ConsumedRecord) {
    out.push_str("{\"topic\":");
    push_json_string(out, topic);
    out.push_str(&format!(
        ",\"partition\":{},\"offset\":{},\"timestamp_ms\":{},",
        r.partition, r.offset, r.timestamp_ms
    ));
    if r.key.is_empty() {
        out.push_str("\"key\":null");
    } else {
        push_json_bytes(out, "key", &r.key);
    }
    out.push(',');
    push_json_bytes(out, "value", &r.value);
    out.push_str(",\"headers\":[");
    for (i, h) in r.headers.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"key\":");
        push_json_string(out, &h.key);
        out.push(',');
        push_json_bytes(out, "value", &h.value);
        out.push('}');
    }
    out.push_str("]}\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Header;
    use clap::Parser;

    fn record(key: &[u8], value: &[u8]) -> ConsumedRecord {
        ConsumedRecord {
            partition: 2,
            offset: 7,
            timestamp_ms: 1_700_000_000_000,
            key: key.to_vec(),
            value: value.to_vec(),
            headers: vec![],
        }
    }

    #[test]
    fn text_line() {
        let mut out = String::new();
        push_text(&mut out, &record(b"k", b"v\xff"));
        assert_eq!(out, "2:7\tk\tv\u{fffd}\n");
    }

    #[test]
    fn json_line() {
        let mut r = record(b"", b"say \"hi\"");
        r.headers.push(Header {
            key: "h".into(),
            value: vec![0xff],
        });
        let mut out = String::new();
        push_json(&mut out, "t", &r);
        assert_eq!(
            out,
            "{\"topic\":\"t\",\"partition\":2,\"offset\":7,\"timestamp_ms\":1700000000000,\
             \"key\":null,\"value\":\"say \\\"hi\\\"\",\"headers\":[{\"key\":\"h\",\"value_base64\":\"/w==\"}]}\n"
        );
    }

    #[test]
    fn start_options_are_exclusive() {
        #[derive(Debug, Parser)]
        struct W {
            #[command(flatten)]
            c: ConsumeArgs,
        }
        assert!(W::try_parse_from(["c", "t", "--offset", "1", "--from-beginning"]).is_err());
        let w = W::try_parse_from(["c", "t", "--from-time", "1970-01-01T00:00:01Z"]).unwrap();
        assert_eq!(w.c.from_time, Some(1000));
        assert!(W::try_parse_from(["c", "t", "--from-time", "soon"]).is_err());
    }

    #[test]
    fn group_excludes_explicit_positions_and_owns_reset() {
        #[derive(Debug, Parser)]
        struct W {
            #[command(flatten)]
            c: ConsumeArgs,
        }
        for flag in [
            &["--partition", "0"][..],
            &["--offset", "1"],
            &["--from-beginning"],
            &["--from-time", "0"],
        ] {
            let mut argv = vec!["c", "t", "--group", "g"];
            argv.extend_from_slice(flag);
            assert!(W::try_parse_from(argv).is_err(), "{flag:?}");
        }
        let w = W::try_parse_from(["c", "t", "--group", "g"]).unwrap();
        assert_eq!(
            (w.c.group.as_deref(), w.c.reset),
            (Some("g"), GroupReset::Earliest)
        );
        let w = W::try_parse_from(["c", "t", "--group", "g", "--reset", "latest"]).unwrap();
        assert_eq!(w.c.reset, GroupReset::Latest);
        assert!(W::try_parse_from(["c", "t", "--reset", "latest"]).is_err());
        assert!(W::try_parse_from(["c", "t", "--from-beginning"]).is_ok());
    }
}
