//! `strata serve`: builds the effective [`BrokerConfig`], sets up logging
//! and runs the broker.
//!
//! Precedence, highest first: command-line flags, `STRATA_*` environment
//! variables, the `--config` TOML file, built-in defaults. clap resolves the
//! first two into one `Option` per setting (a flag wins over its variable);
//! [`overlay`] then lays every `Some` over the file's (or the default)
//! configuration. The broker validates the result and logs it once.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use tracing_subscriber::EnvFilter;

use super::CliError;
use crate::config::{BrokerConfig, ConfigError, LogFormat, ReflectionAccess};

/// Log filter when `RUST_LOG` is unset or invalid.
pub const DEFAULT_LOG_FILTER: &str = "info";

/// Arguments of `strata serve`. Every setting is optional here: an absent
/// one comes from the environment, the config file or the defaults, in
/// that order.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// TOML config file; its settings are overridden by STRATA_* variables
    /// and flags.
    #[arg(long, value_name = "FILE", env = "STRATA_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory for topics, metadata and group state [default: ./data].
    #[arg(long, value_name = "DIR", env = "STRATA_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// gRPC listen address; port 0 picks a free port, printed at start
    /// [default: 127.0.0.1:50051].
    #[arg(long, value_name = "ADDR", env = "STRATA_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Log line format on stderr (filter with RUST_LOG) [default: text].
    #[arg(long, value_name = "FORMAT", env = "STRATA_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Serve Prometheus metrics at http://ADDR/metrics (its own port; port 0
    /// picks a free one, printed at start) [default: off].
    #[arg(long, value_name = "ADDR", env = "STRATA_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Log requests slower than this at WARN, with their RPC, fields and
    /// duration, ms; 0 = off [default: 1000].
    #[arg(long, value_name = "MS", env = "STRATA_SLOW_REQUEST_MS")]
    pub slow_request_ms: Option<u64>,
    /// Background flush after this long with unflushed data, ms: the most
    /// acks=leader data a power loss can take [default: 1000].
    #[arg(long, value_name = "MS", env = "STRATA_FLUSH_INTERVAL_MS")]
    pub flush_interval_ms: Option<u64>,
    /// Background flush after this many unflushed bytes per partition
    /// [default: 67108864 (64 MiB)].
    #[arg(long, value_name = "BYTES", env = "STRATA_FLUSH_BYTES")]
    pub flush_bytes: Option<u64>,
    /// Start write-back of every this many bytes appended to a partition,
    /// without waiting (not a durability point); 0 = off [default: 8388608
    /// (8 MiB)].
    #[arg(long, value_name = "BYTES", env = "STRATA_WRITEBACK_BYTES")]
    pub writeback_bytes: Option<u64>,
    /// How often retention runs over all partitions, ms [default: 60000].
    #[arg(long, value_name = "MS", env = "STRATA_RETENTION_CHECK_INTERVAL_MS")]
    pub retention_check_interval_ms: Option<u64>,
    /// Scrubber read rate over closed segments, bytes/s; 0 = off
    /// [default: 8388608 (8 MiB/s)].
    #[arg(long, value_name = "BYTES", env = "STRATA_SCRUB_BYTES_PER_SEC")]
    pub scrub_bytes_per_sec: Option<u64>,
    /// Pause between two scrubber passes, ms [default: 3600000].
    #[arg(long, value_name = "MS", env = "STRATA_SCRUB_INTERVAL_MS")]
    pub scrub_interval_ms: Option<u64>,
    /// Client-facing limits.
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Defaults for new topics.
    #[command(flatten)]
    pub topic_defaults: TopicDefaultArgs,
    /// Consumer-group settings.
    #[command(flatten)]
    pub groups: GroupArgs,
    /// TLS and authentication.
    #[command(flatten)]
    pub security: SecurityArgs,
}

/// Flags for [`crate::config::SecuritySettings`].
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "TLS and authentication")]
pub struct SecurityArgs {
    /// Server certificate chain (PEM); with --tls-key, serves TLS only
    /// [default: none, plaintext].
    #[arg(long, value_name = "FILE", env = "STRATA_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// Server private key (PEM) [default: none].
    #[arg(long, value_name = "FILE", env = "STRATA_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// CA certificates (PEM) client certificates must chain to; requires a
    /// client certificate (mutual TLS) [default: none].
    #[arg(long, value_name = "FILE", env = "STRATA_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// Longest TLS handshake, ms [default: 10000].
    #[arg(long, value_name = "MS", env = "STRATA_TLS_HANDSHAKE_TIMEOUT_MS")]
    pub tls_handshake_timeout_ms: Option<u64>,
    /// How often TLS and auth files are checked for changes, ms; 0 = only on
    /// SIGHUP [default: 5000].
    #[arg(long, value_name = "MS", env = "STRATA_RELOAD_CHECK_INTERVAL_MS")]
    pub reload_check_interval_ms: Option<u64>,
    /// Principals file (TOML: tokens, certificate subjects, permissions,
    /// quotas); turns authentication on [default: none].
    #[arg(long, value_name = "FILE", env = "STRATA_AUTH_FILE")]
    pub auth_file: Option<PathBuf>,
    /// Who may use server reflection with authentication on
    /// [default: authenticated].
    #[arg(long, value_name = "ACCESS", env = "STRATA_AUTH_REFLECTION")]
    pub auth_reflection: Option<ReflectionAccess>,
    /// Who may scrape the metrics endpoint with authentication on (a
    /// principal's `Authorization: Bearer` token) [default: authenticated].
    #[arg(long, value_name = "ACCESS", env = "STRATA_AUTH_METRICS")]
    pub auth_metrics: Option<ReflectionAccess>,
}

/// Flags for [`crate::config::Limits`].
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Limits")]
pub struct LimitArgs {
    /// Largest encoded record (key + value + headers + framing), bytes;
    /// topics may override it [default: 1048576 (1 MiB)].
    #[arg(long, value_name = "BYTES", env = "STRATA_MAX_RECORD_BYTES")]
    pub max_record_bytes: Option<u32>,
    /// Largest gRPC request, bytes [default: 67108864 (64 MiB)].
    #[arg(long, value_name = "BYTES", env = "STRATA_MAX_REQUEST_BYTES")]
    pub max_request_bytes: Option<u32>,
    /// Request bytes held in memory at once, all connections together;
    /// requests wait for room [default: 268435456 (256 MiB)].
    #[arg(long, value_name = "BYTES", env = "STRATA_MAX_INFLIGHT_REQUEST_BYTES")]
    pub max_inflight_request_bytes: Option<u32>,
    /// Fetch size when a fetch asks for 0 bytes [default: 1048576 (1 MiB)].
    #[arg(long, value_name = "BYTES", env = "STRATA_DEFAULT_FETCH_BYTES")]
    pub default_fetch_bytes: Option<u32>,
    /// Largest fetch size a client may ask for [default: 67108864 (64 MiB)].
    #[arg(long, value_name = "BYTES", env = "STRATA_MAX_FETCH_BYTES")]
    pub max_fetch_bytes: Option<u32>,
    /// Longest long-poll wait, ms [default: 60000].
    #[arg(long, value_name = "MS", env = "STRATA_MAX_WAIT_MS")]
    pub max_wait_ms: Option<u32>,
    /// Most partitions per topic [default: 10000].
    #[arg(long, value_name = "N", env = "STRATA_MAX_PARTITIONS_PER_TOPIC")]
    pub max_partitions_per_topic: Option<u32>,
    /// Most partitions on this broker, all topics together [default: 100000].
    #[arg(long, value_name = "N", env = "STRATA_MAX_PARTITIONS")]
    pub max_partitions: Option<u32>,
    /// Concurrent HTTP/2 streams per connection [default: 1024].
    #[arg(long, value_name = "N", env = "STRATA_MAX_CONCURRENT_STREAMS")]
    pub max_concurrent_streams: Option<u32>,
    /// Open client connections; more are closed at once [default: 4096].
    #[arg(long, value_name = "N", env = "STRATA_MAX_CONNECTIONS")]
    pub max_connections: Option<u32>,
    /// Stream resets a connection may send per second before it is closed;
    /// 0 = no limit [default: 1000].
    #[arg(long, value_name = "N", env = "STRATA_MAX_STREAM_RESETS_PER_SEC")]
    pub max_stream_resets_per_sec: Option<u32>,
    /// Sealed segments kept memory-mapped at once [default: 4096].
    #[arg(long, value_name = "N", env = "STRATA_MAX_OPEN_SEGMENT_MAPS")]
    pub max_open_segment_maps: Option<u32>,
    /// Records a Subscribe stream may fall behind the high watermark before
    /// it is ended with RESOURCE_EXHAUSTED; 0 = no limit [default: 0].
    #[arg(
        long,
        value_name = "RECORDS",
        env = "STRATA_MAX_SUBSCRIBER_LAG_RECORDS"
    )]
    pub max_subscriber_lag_records: Option<u64>,
}

/// Flags for [`crate::config::TopicDefaults`].
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Defaults for new topics")]
pub struct TopicDefaultArgs {
    /// Partitions of a topic created without a count [default: 1].
    #[arg(long, value_name = "N", env = "STRATA_DEFAULT_PARTITIONS")]
    pub default_partitions: Option<u32>,
    /// Keep closed segments this long, ms; -1 = forever [default: 604800000
    /// (7 days)].
    #[arg(
        long,
        value_name = "MS",
        env = "STRATA_DEFAULT_RETENTION_MS",
        allow_negative_numbers = true
    )]
    pub default_retention_ms: Option<i64>,
    /// Keep at most this many bytes per partition; -1 = no limit
    /// [default: -1].
    #[arg(
        long,
        value_name = "BYTES",
        env = "STRATA_DEFAULT_RETENTION_BYTES",
        allow_negative_numbers = true
    )]
    pub default_retention_bytes: Option<i64>,
    /// Segment file size, bytes [default: 1073741824 (1 GiB)].
    #[arg(long, value_name = "BYTES", env = "STRATA_DEFAULT_SEGMENT_BYTES")]
    pub default_segment_bytes: Option<u64>,
    /// Roll the active segment after this long, ms [default: 604800000
    /// (7 days)].
    #[arg(long, value_name = "MS", env = "STRATA_DEFAULT_SEGMENT_MS")]
    pub default_segment_ms: Option<i64>,
}

/// Flags for [`crate::config::GroupSettings`].
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Consumer groups")]
pub struct GroupArgs {
    /// How often members are asked to heartbeat, ms [default: 1000].
    #[arg(long, value_name = "MS", env = "STRATA_HEARTBEAT_INTERVAL_MS")]
    pub heartbeat_interval_ms: Option<u32>,
    /// Session timeout of members that ask for 0, ms [default: 10000].
    #[arg(long, value_name = "MS", env = "STRATA_SESSION_TIMEOUT_MS")]
    pub session_timeout_ms: Option<u32>,
    /// Smallest session timeout a member may ask for, ms [default: 100].
    #[arg(long, value_name = "MS", env = "STRATA_MIN_SESSION_TIMEOUT_MS")]
    pub min_session_timeout_ms: Option<u32>,
    /// Largest session timeout a member may ask for, ms [default: 300000].
    #[arg(long, value_name = "MS", env = "STRATA_MAX_SESSION_TIMEOUT_MS")]
    pub max_session_timeout_ms: Option<u32>,
    /// An empty group with no commit for this long is deleted, ms
    /// [default: 604800000 (7 days)].
    #[arg(
        long,
        value_name = "MS",
        env = "STRATA_OFFSETS_RETENTION_MS",
        allow_negative_numbers = true
    )]
    pub offsets_retention_ms: Option<i64>,
    /// Most groups on this broker [default: 10000].
    #[arg(long, value_name = "N", env = "STRATA_MAX_GROUPS")]
    pub max_groups: Option<u32>,
    /// Most live members per group [default: 1000].
    #[arg(long, value_name = "N", env = "STRATA_MAX_MEMBERS_PER_GROUP")]
    pub max_members_per_group: Option<u32>,
    /// Most bytes of metadata per committed offset [default: 4096, at most 65536].
    #[arg(long, value_name = "B", env = "STRATA_MAX_COMMIT_METADATA_BYTES")]
    pub max_commit_metadata_bytes: Option<u32>,
    /// A Consume stream whose client reads nothing for this long while
    /// events wait is ended and leaves its group, ms [default: 300000].
    #[arg(long, value_name = "MS", env = "STRATA_STREAM_STALL_TIMEOUT_MS")]
    pub stream_stall_timeout_ms: Option<u32>,
    /// Size of the group offsets log at which it is compacted into a
    /// snapshot, bytes [default: 67108864, at least 1024].
    #[arg(long, value_name = "B", env = "STRATA_OFFSETS_COMPACT_BYTES")]
    pub offsets_compact_bytes: Option<u64>,
}

/// Runs `strata serve`: effective config, logging, then the broker until a
/// shutdown signal.
///
/// # Errors
/// A bad config file, a logging setup failure, or the broker's
/// [`crate::api::ServeError`].
pub async fn run(args: ServeArgs) -> Result<(), CliError> {
    let config = effective_config(&args)?;
    init_logging(config.log_format)?;
    crate::api::run(config).await?;
    Ok(())
}

/// The configuration `serve` runs with: the `--config` file (or the
/// defaults) with every set flag or variable laid over it. Not validated
/// here; the broker does that at start.
///
/// # Errors
/// The config file cannot be read or parsed.
pub fn effective_config(args: &ServeArgs) -> Result<BrokerConfig, ConfigError> {
    let base = match &args.config {
        Some(path) => BrokerConfig::from_file(path)?,
        None => BrokerConfig::default(),
    };
    Ok(overlay(base, args))
}

/// Lays every setting present in `args` (from a flag or its `STRATA_*`
/// variable) over `base` (from the file or the defaults).
pub fn overlay(mut base: BrokerConfig, args: &ServeArgs) -> BrokerConfig {
    set(&mut base.data_dir, &args.data_dir);
    set(&mut base.listen, &args.listen);
    set(&mut base.log_format, &args.log_format);
    if args.metrics_listen.is_some() {
        base.metrics_listen = args.metrics_listen;
    }
    set(&mut base.slow_request_ms, &args.slow_request_ms);
    set(&mut base.flush_interval_ms, &args.flush_interval_ms);
    set(&mut base.flush_bytes, &args.flush_bytes);
    set(&mut base.writeback_bytes, &args.writeback_bytes);
    set(
        &mut base.retention_check_interval_ms,
        &args.retention_check_interval_ms,
    );
    set(&mut base.scrub_bytes_per_sec, &args.scrub_bytes_per_sec);
    set(&mut base.scrub_interval_ms, &args.scrub_interval_ms);

    let (l, a) = (&mut base.limits, &args.limits);
    set(&mut l.max_record_bytes, &a.max_record_bytes);
    set(&mut l.max_request_bytes, &a.max_request_bytes);
    set(
        &mut l.max_inflight_request_bytes,
        &a.max_inflight_request_bytes,
    );
    set(&mut l.default_fetch_bytes, &a.default_fetch_bytes);
    set(&mut l.max_fetch_bytes, &a.max_fetch_bytes);
    set(&mut l.max_wait_ms, &a.max_wait_ms);
    set(&mut l.max_partitions_per_topic, &a.max_partitions_per_topic);
    set(&mut l.max_partitions, &a.max_partitions);
    set(&mut l.max_concurrent_streams, &a.max_concurrent_streams);
    set(&mut l.max_connections, &a.max_connections);
    set(
        &mut l.max_stream_resets_per_sec,
        &a.max_stream_resets_per_sec,
    );
    set(&mut l.max_open_segment_maps, &a.max_open_segment_maps);
    set(
        &mut l.max_subscriber_lag_records,
        &a.max_subscriber_lag_records,
    );

    let (t, a) = (&mut base.topic_defaults, &args.topic_defaults);
    set(&mut t.partitions, &a.default_partitions);
    set(&mut t.retention_ms, &a.default_retention_ms);
    set(&mut t.retention_bytes, &a.default_retention_bytes);
    set(&mut t.segment_bytes, &a.default_segment_bytes);
    set(&mut t.segment_ms, &a.default_segment_ms);

    let (g, a) = (&mut base.groups, &args.groups);
    set(&mut g.heartbeat_interval_ms, &a.heartbeat_interval_ms);
    set(&mut g.session_timeout_ms, &a.session_timeout_ms);
    set(&mut g.min_session_timeout_ms, &a.min_session_timeout_ms);
    set(&mut g.max_session_timeout_ms, &a.max_session_timeout_ms);
    set(&mut g.offsets_retention_ms, &a.offsets_retention_ms);
    set(&mut g.max_groups, &a.max_groups);
    set(&mut g.max_members_per_group, &a.max_members_per_group);
    set(
        &mut g.max_commit_metadata_bytes,
        &a.max_commit_metadata_bytes,
    );
    set(&mut g.stream_stall_timeout_ms, &a.stream_stall_timeout_ms);
    set(&mut g.offsets_compact_bytes, &a.offsets_compact_bytes);

    let (s, a) = (&mut base.security, &args.security);
    set_some(&mut s.tls_cert, &a.tls_cert);
    set_some(&mut s.tls_key, &a.tls_key);
    set_some(&mut s.tls_client_ca, &a.tls_client_ca);
    set(&mut s.tls_handshake_timeout_ms, &a.tls_handshake_timeout_ms);
    set(&mut s.reload_check_interval_ms, &a.reload_check_interval_ms);
    set_some(&mut s.auth_file, &a.auth_file);
    set(&mut s.auth_reflection, &a.auth_reflection);
    set(&mut s.auth_metrics, &a.auth_metrics);
    base
}

/// Like [`set`], for settings that are optional in the file too.
fn set_some<T: Clone>(target: &mut Option<T>, value: &Option<T>) {
    if value.is_some() {
        target.clone_from(value);
    }
}

fn set<T: Clone>(target: &mut T, value: &Option<T>) {
    if let Some(v) = value {
        *target = v.clone();
    }
}

/// Logs to stderr (stdout carries the `strata listening on` line), in the
/// configured format, filtered by `RUST_LOG` (default `info`).
fn init_logging(format: LogFormat) -> Result<(), CliError> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    result.map_err(|e| CliError::Logging(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(flatten)]
        serve: ServeArgs,
    }

    #[test]
    fn absent_settings_keep_the_base() {
        let mut file = BrokerConfig {
            flush_bytes: 123,
            ..Default::default()
        };
        file.limits.max_wait_ms = 7;
        assert_eq!(overlay(file.clone(), &ServeArgs::default()), file);
    }

    #[test]
    fn present_settings_win_over_the_base() {
        let mut file = BrokerConfig {
            flush_bytes: 123,
            flush_interval_ms: 5,
            ..Default::default()
        };
        file.topic_defaults.retention_ms = 9;
        let args = ServeArgs {
            flush_interval_ms: Some(77),
            listen: Some("0.0.0.0:9".parse().unwrap()),
            limits: LimitArgs {
                max_record_bytes: Some(42),
                ..Default::default()
            },
            topic_defaults: TopicDefaultArgs {
                default_retention_ms: Some(-1),
                ..Default::default()
            },
            ..Default::default()
        };
        let got = overlay(file, &args);
        assert_eq!(got.flush_bytes, 123, "file value kept");
        assert_eq!(got.flush_interval_ms, 77, "flag beats file");
        assert_eq!(got.listen.to_string(), "0.0.0.0:9");
        assert_eq!(got.limits.max_record_bytes, 42);
        assert_eq!(got.topic_defaults.retention_ms, -1);
        assert_eq!(
            got.limits.max_wait_ms,
            BrokerConfig::default().limits.max_wait_ms,
            "default kept"
        );
    }

    #[test]
    fn file_beats_defaults_and_flags_beat_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("strata.toml");
        std::fs::write(
            &path,
            "flush_bytes = 5\n[limits]\nmax_wait_ms = 9\nmax_record_bytes = 3\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path),
            limits: LimitArgs {
                max_record_bytes: Some(4),
                ..Default::default()
            },
            ..Default::default()
        };
        let got = effective_config(&args).unwrap();
        assert_eq!(got.flush_bytes, 5);
        assert_eq!(got.limits.max_wait_ms, 9);
        assert_eq!(got.limits.max_record_bytes, 4);
        assert_eq!(got.data_dir, BrokerConfig::default().data_dir);
    }

    #[test]
    fn flags_parse_into_options() {
        let w = Wrapper::try_parse_from([
            "serve",
            "--data-dir",
            "/d",
            "--log-format",
            "json",
            "--default-retention-bytes",
            "-1",
            "--max-fetch-bytes",
            "10",
        ])
        .unwrap();
        assert_eq!(w.serve.data_dir, Some(PathBuf::from("/d")));
        assert_eq!(w.serve.log_format, Some(LogFormat::Json));
        assert_eq!(w.serve.topic_defaults.default_retention_bytes, Some(-1));
        assert_eq!(w.serve.limits.max_fetch_bytes, Some(10));
    }

    /// Every setting can come from a `STRATA_*` variable named after its flag,
    /// so "flags > env" is clap's own precedence for each of them.
    #[test]
    fn every_flag_has_its_env_variable() {
        let command = Wrapper::command();
        for arg in command.get_arguments().filter(|a| a.get_long().is_some()) {
            let long = arg.get_long().unwrap_or_default();
            if long == "help" {
                continue;
            }
            let expected = format!("STRATA_{}", long.replace('-', "_").to_uppercase());
            let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
            assert_eq!(env.as_deref(), Some(expected.as_str()), "--{long}");
        }
    }

    /// Every setting of the config file has a flag: `section.field` becomes
    /// `--field`, except `topic_defaults.field`, which becomes
    /// `--default-field`. Fails when a new config field lacks its flag.
    #[test]
    fn every_config_setting_has_a_flag() {
        // Optional settings are left out of the file when unset: set them.
        let all = BrokerConfig {
            metrics_listen: Some("127.0.0.1:9464".parse().unwrap()),
            ..Default::default()
        };
        let toml::Value::Table(root) = toml::Value::try_from(all).unwrap() else {
            panic!("config is not a table")
        };
        let mut flags = Vec::new();
        for (key, value) in root {
            match value {
                toml::Value::Table(section) if key == "topic_defaults" => {
                    flags.extend(section.keys().map(|k| format!("default-{k}")));
                }
                toml::Value::Table(section) => flags.extend(section.keys().cloned()),
                _ => flags.push(key),
            }
        }
        let command = Wrapper::command();
        for flag in flags {
            let long = flag.replace('_', "-");
            let found = command
                .get_arguments()
                .any(|a| a.get_long() == Some(long.as_str()));
            assert!(found, "config setting without a serve flag: --{long}");
        }
    }

    /// The defaults quoted in --help match `BrokerConfig::default()`.
    #[test]
    fn help_quotes_the_real_defaults() {
        let d = BrokerConfig::default();
        let (l, t) = (&d.limits, &d.topic_defaults);
        let expected = [
            ("slow-request-ms", d.slow_request_ms.to_string()),
            ("flush-interval-ms", d.flush_interval_ms.to_string()),
            ("flush-bytes", d.flush_bytes.to_string()),
            ("writeback-bytes", d.writeback_bytes.to_string()),
            (
                "retention-check-interval-ms",
                d.retention_check_interval_ms.to_string(),
            ),
            ("scrub-bytes-per-sec", d.scrub_bytes_per_sec.to_string()),
            ("scrub-interval-ms", d.scrub_interval_ms.to_string()),
            ("listen", d.listen.to_string()),
            ("max-record-bytes", l.max_record_bytes.to_string()),
            ("max-request-bytes", l.max_request_bytes.to_string()),
            (
                "max-inflight-request-bytes",
                l.max_inflight_request_bytes.to_string(),
            ),
            ("default-fetch-bytes", l.default_fetch_bytes.to_string()),
            ("max-fetch-bytes", l.max_fetch_bytes.to_string()),
            ("max-wait-ms", l.max_wait_ms.to_string()),
            (
                "max-partitions-per-topic",
                l.max_partitions_per_topic.to_string(),
            ),
            ("max-partitions", l.max_partitions.to_string()),
            (
                "max-concurrent-streams",
                l.max_concurrent_streams.to_string(),
            ),
            ("max-connections", l.max_connections.to_string()),
            (
                "max-stream-resets-per-sec",
                l.max_stream_resets_per_sec.to_string(),
            ),
            ("max-open-segment-maps", l.max_open_segment_maps.to_string()),
            (
                "max-subscriber-lag-records",
                l.max_subscriber_lag_records.to_string(),
            ),
            ("default-partitions", t.partitions.to_string()),
            ("default-retention-ms", t.retention_ms.to_string()),
            ("default-retention-bytes", t.retention_bytes.to_string()),
            ("default-segment-bytes", t.segment_bytes.to_string()),
            ("default-segment-ms", t.segment_ms.to_string()),
            (
                "heartbeat-interval-ms",
                d.groups.heartbeat_interval_ms.to_string(),
            ),
            (
                "session-timeout-ms",
                d.groups.session_timeout_ms.to_string(),
            ),
            (
                "min-session-timeout-ms",
                d.groups.min_session_timeout_ms.to_string(),
            ),
            (
                "max-session-timeout-ms",
                d.groups.max_session_timeout_ms.to_string(),
            ),
            (
                "offsets-retention-ms",
                d.groups.offsets_retention_ms.to_string(),
            ),
            ("max-groups", d.groups.max_groups.to_string()),
            (
                "tls-handshake-timeout-ms",
                d.security.tls_handshake_timeout_ms.to_string(),
            ),
            (
                "reload-check-interval-ms",
                d.security.reload_check_interval_ms.to_string(),
            ),
            ("auth-reflection", "authenticated".to_string()),
            (
                "max-members-per-group",
                d.groups.max_members_per_group.to_string(),
            ),
            (
                "max-commit-metadata-bytes",
                d.groups.max_commit_metadata_bytes.to_string(),
            ),
            (
                "stream-stall-timeout-ms",
                d.groups.stream_stall_timeout_ms.to_string(),
            ),
            (
                "offsets-compact-bytes",
                d.groups.offsets_compact_bytes.to_string(),
            ),
        ];
        let command = Wrapper::command();
        for (long, value) in expected {
            let arg = command
                .get_arguments()
                .find(|a| a.get_long() == Some(long))
                .unwrap_or_else(|| panic!("no --{long}"));
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            assert!(
                help.contains(&format!("[default: {value}")),
                "--{long}: {help}"
            );
        }
    }
}
