//! The `strata` command line: argument definitions (clap derive) and the
//! code that runs each command.
//!
//! | module                 | command                                            |
//! |------------------------|----------------------------------------------------|
//! | [`serve`]              | `strata serve`: the broker, with config precedence |
//! | [`topic`]              | `strata topic ...`: topic administration           |
//! | [`produce`]            | `strata produce`: stdin lines to records           |
//! | [`consume`]            | `strata consume`: records to stdout (text or JSON) |
//! | [`group_consume`]      | `strata consume --group`: as a group member        |
//! | [`group`]              | `strata group ...`: consumer-group administration  |
//! | [`format`](mod@format) | JSON escaping, base64, tables                      |
//! | [`time`]               | timestamps: epoch ms or RFC 3339                   |
//! | [`auth`]               | `strata auth ...`: token hashes for the auth file  |
//!
//! Errors surface as one [`CliError`] whose `Display` is a single line;
//! `main` prints it as `error: ...` and exits with status 1. Usage errors
//! (clap's, and [`CliError::Usage`] for options that do not fit together)
//! exit with status 2.

pub mod auth;
pub mod consume;
pub mod format;
pub mod group;
pub mod group_consume;
pub mod malloc;
pub mod produce;
pub mod serve;
pub mod time;
pub mod topic;
pub mod verify;

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::api::ServeError;
use crate::client::{Client, ClientError, ClientTls, ConnectOptions, DEFAULT_BROKER};
use crate::config::ConfigError;

/// Strata: an append-only, partitioned log broker.
///
/// Run a broker with `strata serve`; manage topics, produce and consume with
/// the other commands, which talk to a broker over gRPC (see --broker).
///
/// A flag given twice takes its last value (so wrappers can append
/// overrides to a command line).
#[derive(Debug, Parser)]
#[command(name = "strata", version, args_override_self = true)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a broker until SIGINT or SIGTERM.
    Serve(Box<serve::ServeArgs>),
    /// Create, list, describe, change and delete topics.
    Topic(topic::TopicArgs),
    /// Append records read from stdin, one per line.
    Produce(produce::ProduceArgs),
    /// Print records of a topic to stdout (alone, or as a group member).
    Consume(consume::ConsumeArgs),
    /// List, describe and delete consumer groups; reset their offsets.
    Group(group::GroupArgs),
    /// Benchmark a broker (or the gRPC ceiling): the workloads of BENCHMARKS.md.
    Bench(crate::bench::BenchArgs),
    /// Check every stored batch's CRC offline (the broker must be stopped).
    Verify(verify::VerifyArgs),
    /// Make tokens and their hashes for the broker's auth file.
    Auth(auth::AuthArgs),
}

/// Where the broker is, for every client command.
#[derive(Debug, Clone, Args)]
pub struct BrokerArgs {
    /// Broker address: host:port or http://host:port.
    #[arg(
        long,
        global = true,
        value_name = "ADDR",
        env = "STRATA_BROKER",
        default_value = DEFAULT_BROKER
    )]
    pub broker: String,
    /// TLS and token.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

impl BrokerArgs {
    /// Connects to the broker.
    ///
    /// # Errors
    /// [`ClientError::InvalidAddress`], [`ClientError::Options`] or
    /// [`ClientError::Connect`].
    pub async fn connect(&self) -> Result<Client, ClientError> {
        Client::connect_with(&self.broker, &self.connect.options()).await
    }
}

/// How client commands authenticate the broker and themselves. `Debug`
/// does not show the token.
#[derive(Clone, Default, Args)]
pub struct ConnectArgs {
    /// CA certificate (PEM) that signed the broker's certificate; turns TLS
    /// on (a bare host:port then means https://host:port).
    #[arg(long, global = true, value_name = "FILE", env = "STRATA_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM), for brokers that require mutual TLS.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "STRATA_CLIENT_TLS_CERT"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "STRATA_CLIENT_TLS_KEY"
    )]
    pub tls_key: Option<PathBuf>,
    /// Bearer token for brokers with authentication on.
    #[arg(
        long,
        global = true,
        value_name = "TOKEN",
        env = "STRATA_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
}

impl std::fmt::Debug for ConnectArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectArgs")
            .field("tls_ca", &self.tls_ca)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl ConnectArgs {
    /// The client library's options.
    pub fn options(&self) -> ConnectOptions {
        let any_tls = self.tls_ca.is_some() || self.tls_cert.is_some() || self.tls_key.is_some();
        ConnectOptions {
            tls: any_tls.then(|| ClientTls {
                ca: self.tls_ca.clone(),
                cert: self.tls_cert.clone(),
                key: self.tls_key.clone(),
            }),
            token: self.token.clone(),
        }
    }
}

/// Why a command failed. `Display` is one line, printed after `error: `.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A broker call failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The broker's configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The broker failed to start or stopped with an error.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// Reading stdin or writing stdout failed.
    #[error("cannot {action}: {source}")]
    Io {
        /// What was being done, e.g. "read stdin".
        action: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A `produce --key-separator` line does not contain the separator.
    #[error(
        "line {line} has no key separator {separator:?} ({produced} earlier records were produced)"
    )]
    MissingKeySeparator {
        /// 1-based line number.
        line: u64,
        /// The separator looked for.
        separator: String,
        /// Records produced before the bad line.
        produced: u64,
    },
    /// A `--partition` beyond the topic's partitions.
    #[error("topic '{topic}' has no partition {partition} (it has {partitions})")]
    NoSuchPartition {
        /// The topic.
        topic: String,
        /// The partition asked for.
        partition: u32,
        /// The topic's partition count.
        partitions: u32,
    },
    /// `consume --group`: the broker closed the group stream (for example
    /// because it is shutting down).
    #[error("the broker ended the stream of group '{group}'")]
    GroupStreamEnded {
        /// The group.
        group: String,
    },
    /// Logging could not be set up.
    #[error("cannot initialise logging: {0}")]
    Logging(String),
    /// Options that parse but do not make sense together (e.g. `bench e2e`
    /// without `--rate`): a usage error, exit status 2 like clap's.
    #[error("{0}")]
    Usage(String),
    /// Whoever reads stdout closed it (e.g. `strata consume … | head`):
    /// nothing more can be printed, so a consuming command stops, commits
    /// nothing it did not print, and exits successfully without a message.
    #[error("stdout was closed by its reader")]
    OutputClosed,
    /// `strata verify` could not run or found problems.
    #[error("verify: {0}")]
    Verify(String),
}

/// Runs one parsed command line to completion.
///
/// # Errors
/// The command's [`CliError`].
pub async fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Serve(args) => serve::run(*args).await,
        Command::Topic(args) => topic::run(args).await,
        Command::Produce(args) => produce::run(args).await,
        Command::Consume(args) => consume::run(args).await,
        Command::Group(args) => group::run(args).await,
        Command::Bench(args) => crate::bench::run(args).await,
        Command::Verify(args) => verify::run(args).await,
        Command::Auth(args) => auth::run(args),
    }
}

/// Writes `text` to stdout and flushes it. A closed pipe (`strata ... |
/// head`) is not an error: the reader has what it wanted.
/// The waits between attempts to reach a broker again after `consume
/// --follow` lost it: 0.1 s, doubling up to 5 s.
pub(crate) struct ReconnectBackoff(std::time::Duration);

impl ReconnectBackoff {
    const MIN: std::time::Duration = std::time::Duration::from_millis(100);
    const MAX: std::time::Duration = std::time::Duration::from_secs(5);

    /// Starts at the shortest wait.
    pub(crate) fn new() -> ReconnectBackoff {
        ReconnectBackoff(Self::MIN)
    }

    /// The wait before the next attempt (each one twice the last, capped).
    pub(crate) fn next_wait(&mut self) -> std::time::Duration {
        let wait = self.0;
        self.0 = (wait * 2).min(Self::MAX);
        wait
    }

    /// Back to the shortest wait, once the broker answered.
    pub(crate) fn reset(&mut self) {
        self.0 = Self::MIN;
    }
}

pub(crate) fn print_stdout(text: &str) -> Result<(), CliError> {
    match write_stdout(text) {
        Err(CliError::OutputClosed) => Ok(()),
        other => other,
    }
}

/// Writes `text` to stdout and flushes it, telling a closed pipe
/// ([`CliError::OutputClosed`]) apart from other write errors: a consumer
/// must know whether its records reached the reader before it commits them.
pub(crate) fn write_stdout(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(CliError::OutputClosed),
        Err(e) => Err(CliError::Io {
            action: "write to stdout",
            source: e,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn broker_flag_is_accepted_after_the_subcommand() {
        let cli = Cli::try_parse_from(["strata", "topic", "list", "--broker", "h:1"]).unwrap();
        let Command::Topic(args) = cli.command else {
            panic!("not a topic command")
        };
        assert_eq!(args.broker.broker, "h:1");
    }
}
