//! Broker settings: defaults, the optional TOML file, `STRATA_*` environment
//! variables and command-line flags, in rising order of precedence.
//!
//! Every field documents its default. [`BrokerConfig::validate`] rejects
//! impossible combinations at start-up, and the effective configuration is
//! logged once.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Default address of the gRPC listener.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "data";

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Limits on what clients may ask for. Exceeding one is a clear
/// `INVALID_ARGUMENT` or `RESOURCE_EXHAUSTED`, never a partial write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest encoded record (key + value + headers + framing), bytes.
    /// Topics may lower or raise it per topic. Default: 1 MiB.
    pub max_record_bytes: u32,
    /// Largest gRPC request message, bytes. tonic's own decode limit is set
    /// just above it so that ours answers first, with a clear message.
    /// Default: 64 MiB.
    pub max_request_bytes: u32,
    /// Request bytes held in memory at once, all connections together: a
    /// request waits (unread) until its size fits, and one bigger than the
    /// whole budget is refused with `RESOURCE_EXHAUSTED`. At least
    /// `max_record_bytes`. Default: 256 MiB.
    pub max_inflight_request_bytes: u32,
    /// Default `max_bytes` of a fetch that asks for 0. Default: 1 MiB.
    pub default_fetch_bytes: u32,
    /// Largest `max_bytes` a fetch may ask for. Default: 64 MiB.
    pub max_fetch_bytes: u32,
    /// Longest long-poll, ms. Default: 60,000.
    pub max_wait_ms: u32,
    /// Partitions per topic. Default: 10,000.
    pub max_partitions_per_topic: u32,
    /// Partitions on this broker, all topics together. Default: 100,000.
    pub max_partitions: u32,
    /// Concurrent HTTP/2 streams per connection. Default: 1,024.
    pub max_concurrent_streams: u32,
    /// Open client connections. A connection beyond it is closed as soon as
    /// it is accepted (the client sees `UNAVAILABLE`) and a warning names the
    /// limit. Default: 4,096.
    pub max_connections: u32,
    /// HTTP/2 stream resets (`RST_STREAM`) a connection may send per
    /// second; past it the connection is closed (the "rapid reset" attack,
    /// CVE-2023-44487). A client cancelling long-polls or the odd timed-out
    /// call stays far below it. 0 = no limit. Default: 1,000.
    pub max_stream_resets_per_sec: u32,
    /// Sealed segments kept memory-mapped at once (each costs one map of
    /// the kernel's `vm.max_map_count`). Default: 4,096.
    pub max_open_segment_maps: u32,
    /// How many records a `Subscribe` stream may fall behind the high
    /// watermark: a stream about to read further behind than this ends with
    /// `RESOURCE_EXHAUSTED` (and one asked to start further behind is
    /// refused), so the client resubscribes from a later offset or catches
    /// up with `Fetch`. A lagging stream holds no memory either way (it reads
    /// the log as its HTTP/2 window allows); the limit is for deployments
    /// that want slow live followers dropped rather than served from cold
    /// segments. 0 = no limit. Default: 0.
    pub max_subscriber_lag_records: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_record_bytes: 1 << 20,
            max_request_bytes: 64 << 20,
            max_inflight_request_bytes: 256 << 20,
            default_fetch_bytes: 1 << 20,
            max_fetch_bytes: 64 << 20,
            max_wait_ms: 60_000,
            max_partitions_per_topic: 10_000,
            max_partitions: 100_000,
            max_concurrent_streams: 1024,
            max_connections: 4096,
            max_stream_resets_per_sec: 1000,
            max_open_segment_maps: 4096,
            max_subscriber_lag_records: 0,
        }
    }
}

/// Defaults for new topics, each overridable per topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopicDefaults {
    /// Partitions of a topic created without a count. Default: 1.
    pub partitions: u32,
    /// Keep closed segments this long, ms; -1 = forever. Default: 7 days.
    pub retention_ms: i64,
    /// Keep at most this many bytes per partition; -1 = no limit. Default: -1.
    pub retention_bytes: i64,
    /// Segment file size, bytes. Default: 1 GiB.
    pub segment_bytes: u64,
    /// Roll the active segment after this long, ms. Default: 7 days.
    pub segment_ms: i64,
}

impl Default for TopicDefaults {
    fn default() -> Self {
        TopicDefaults {
            partitions: 1,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
        }
    }
}

/// The largest `groups.max_commit_metadata_bytes` allowed: keeps every
/// record of the group offsets log far below its 1 MiB record bound.
pub const MAX_COMMIT_METADATA_BYTES: u32 = 64 << 10;

/// Consumer-group coordinator settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroupSettings {
    /// How often members are asked to heartbeat, ms. Default: 1000.
    pub heartbeat_interval_ms: u32,
    /// Session timeout of members that ask for 0, ms. Default: 10,000.
    pub session_timeout_ms: u32,
    /// Smallest session timeout a member may ask for, ms. Default: 100.
    pub min_session_timeout_ms: u32,
    /// Largest session timeout a member may ask for, ms. Default: 300,000.
    pub max_session_timeout_ms: u32,
    /// An empty group (no members) with no commit for this long is deleted,
    /// ms (like Kafka's offsets retention). Default: 7 days.
    pub offsets_retention_ms: i64,
    /// Groups on this broker. Default: 10,000.
    pub max_groups: u32,
    /// Live members per group. Default: 1,000.
    pub max_members_per_group: u32,
    /// Bytes of `metadata` one committed offset may carry (like Kafka's
    /// `offset.metadata.max.bytes`). Default: 4,096; at most 65,536.
    pub max_commit_metadata_bytes: u32,
    /// A `Consume` stream whose client accepts nothing for this long while
    /// events wait to be sent is ended, and its member leaves the group so
    /// its partitions move to the others (like Kafka's
    /// `max.poll.interval.ms`), ms. Default: 300,000.
    pub stream_stall_timeout_ms: u32,
    /// Size of the group offsets log (`groups/offsets.log`) at which it is
    /// compacted into `groups/snapshot` and emptied, bytes. Smaller keeps
    /// start-up replay short; each compaction writes the whole committed
    /// state once. Default: 64 MiB; at least 1,024.
    pub offsets_compact_bytes: u64,
}

/// The smallest `groups.offsets_compact_bytes` allowed.
pub const MIN_OFFSETS_COMPACT_BYTES: u64 = 1024;

impl Default for GroupSettings {
    fn default() -> Self {
        GroupSettings {
            heartbeat_interval_ms: 1000,
            session_timeout_ms: 10_000,
            min_session_timeout_ms: 100,
            max_session_timeout_ms: 300_000,
            offsets_retention_ms: 7 * 24 * 3600 * 1000,
            max_groups: 10_000,
            max_members_per_group: 1000,
            max_commit_metadata_bytes: 4096,
            stream_stall_timeout_ms: 300_000,
            offsets_compact_bytes: crate::broker::groups::offsets::DEFAULT_COMPACT_BYTES,
        }
    }
}

/// Who may reach the reflection service (`auth_reflection`) or the metrics
/// endpoint (`auth_metrics`) when authentication is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ReflectionAccess {
    /// Anyone, like health.
    Open,
    /// Any authenticated principal (no particular permission needed).
    #[default]
    Authenticated,
}

/// TLS on the listener, and authentication with permissions and quotas.
/// Everything is off by default: no TLS, no authentication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecuritySettings {
    /// Server certificate chain, PEM. With `tls_key`, turns TLS on.
    /// Default: none (plaintext).
    pub tls_cert: Option<PathBuf>,
    /// Server private key, PEM (PKCS#8, PKCS#1 or SEC1). Default: none.
    pub tls_key: Option<PathBuf>,
    /// CA certificates, PEM; when set, clients must present a certificate
    /// signed by one of them (mutual TLS). Default: none.
    pub tls_client_ca: Option<PathBuf>,
    /// How long a client may take to complete the TLS handshake, ms.
    /// Default: 10,000.
    pub tls_handshake_timeout_ms: u64,
    /// How often the TLS files and the auth file are checked for changes,
    /// ms; 0 = reload only on SIGHUP. Default: 5,000.
    pub reload_check_interval_ms: u64,
    /// The principals file (TOML): tokens, certificate subjects,
    /// permissions and quotas. When set, every request but health must
    /// authenticate. Default: none (no authentication).
    pub auth_file: Option<PathBuf>,
    /// Who may use server reflection when authentication is on.
    /// Default: authenticated.
    pub auth_reflection: ReflectionAccess,
    /// Who may scrape the metrics endpoint when authentication is on
    /// (`authenticated`: any principal's bearer token). Default:
    /// authenticated.
    pub auth_metrics: ReflectionAccess,
}

impl Default for SecuritySettings {
    fn default() -> Self {
        SecuritySettings {
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            tls_handshake_timeout_ms: 10_000,
            reload_check_interval_ms: 5_000,
            auth_file: None,
            auth_reflection: ReflectionAccess::Authenticated,
            auth_metrics: ReflectionAccess::Authenticated,
        }
    }
}

/// Everything `strata serve` needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// Where topics, metadata and group state live. Default: `./data`.
    pub data_dir: PathBuf,
    /// gRPC listen address. Port 0 picks a free port (printed at start).
    /// Default: 127.0.0.1:50051.
    pub listen: SocketAddr,
    /// Log line format. Default: text.
    pub log_format: LogFormat,
    /// Address of the Prometheus endpoint (`GET /metrics`, plain HTTP, its
    /// own port, never the gRPC one). Port 0 picks a free port (printed at
    /// start). Default: none (no metrics listener).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
    /// Requests that take longer than this are logged at WARN with their
    /// RPC, fields and duration, ms; 0 turns it off. Streams (`Subscribe`,
    /// `Consume`) are never slow: they last as long as the client wants.
    /// Default: 1000.
    pub slow_request_ms: u64,
    /// Background flush after this long with unflushed data, ms: the most
    /// `ACKS_LEADER` data a power loss can take. Default: 1000.
    pub flush_interval_ms: u64,
    /// Background flush after this many unflushed bytes per partition.
    /// Default: 64 MiB.
    pub flush_bytes: u64,
    /// Start write-back (without waiting for it) of every this many bytes
    /// appended to a partition, so flushes find little left to write; not a
    /// durability point. 0 turns it off. Default: 8 MiB.
    pub writeback_bytes: u64,
    /// How often retention runs over all partitions, ms. Default: 60,000.
    pub retention_check_interval_ms: u64,
    /// The background scrubber re-reads closed segments and checks every
    /// batch's CRC at most this fast, bytes/s; 0 turns it off.
    /// Default: 8 MiB/s.
    pub scrub_bytes_per_sec: u64,
    /// Pause between two scrubber passes over all closed segments, ms.
    /// Default: 3,600,000 (1 hour).
    pub scrub_interval_ms: u64,
    /// Defaults for new topics.
    pub topic_defaults: TopicDefaults,
    /// Client-facing limits.
    pub limits: Limits,
    /// Consumer groups.
    pub groups: GroupSettings,
    /// TLS, authentication and permissions.
    pub security: SecuritySettings,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            log_format: LogFormat::Text,
            metrics_listen: None,
            slow_request_ms: 1000,
            flush_interval_ms: 1000,
            flush_bytes: 64 << 20,
            writeback_bytes: 8 << 20,
            retention_check_interval_ms: 60_000,
            scrub_bytes_per_sec: 8 << 20,
            scrub_interval_ms: 3_600_000,
            topic_defaults: TopicDefaults::default(),
            limits: Limits::default(),
            groups: GroupSettings::default(),
            security: SecuritySettings::default(),
        }
    }
}

/// A configuration problem, reported at start-up.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for these settings.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (line, column, field).
        message: String,
    },
    /// A setting is out of its allowed range.
    #[error("invalid setting {field}: {reason}")]
    Invalid {
        /// The setting.
        field: &'static str,
        /// What is allowed.
        reason: String,
    },
}

impl BrokerConfig {
    /// Reads a TOML config file (all fields optional, unknown fields rejected).
    pub fn from_file(path: &Path) -> Result<BrokerConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Checks ranges and combinations.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        let invalid = |field, reason: String| Err(ConfigError::Invalid { field, reason });
        if l.max_record_bytes == 0 {
            return invalid("limits.max_record_bytes", "must be at least 1".into());
        }
        if l.max_connections == 0 {
            return invalid("limits.max_connections", "must be at least 1".into());
        }
        if l.max_request_bytes < l.max_record_bytes {
            return invalid(
                "limits.max_request_bytes",
                format!(
                    "must be at least limits.max_record_bytes ({})",
                    l.max_record_bytes
                ),
            );
        }
        if l.max_inflight_request_bytes < l.max_record_bytes {
            return invalid(
                "limits.max_inflight_request_bytes",
                format!(
                    "must be at least limits.max_record_bytes ({})",
                    l.max_record_bytes
                ),
            );
        }
        if l.max_request_bytes > 1 << 30 {
            return invalid("limits.max_request_bytes", "must be at most 1 GiB".into());
        }
        if l.default_fetch_bytes == 0 || l.default_fetch_bytes > l.max_fetch_bytes {
            return invalid(
                "limits.default_fetch_bytes",
                format!(
                    "must be between 1 and limits.max_fetch_bytes ({})",
                    l.max_fetch_bytes
                ),
            );
        }
        if l.max_partitions_per_topic == 0 || l.max_partitions == 0 {
            return invalid("limits.max_partitions", "must be at least 1".into());
        }
        if self.topic_defaults.partitions == 0 {
            return invalid("topic_defaults.partitions", "must be at least 1".into());
        }
        if self.topic_defaults.segment_bytes < 1 << 20
            || self.topic_defaults.segment_bytes > u64::from(u32::MAX)
        {
            return invalid(
                "topic_defaults.segment_bytes",
                "must be between 1 MiB and 4 GiB - 1".into(),
            );
        }
        let g = &self.groups;
        if g.min_session_timeout_ms == 0
            || g.min_session_timeout_ms > g.max_session_timeout_ms
            || !(g.min_session_timeout_ms..=g.max_session_timeout_ms)
                .contains(&g.session_timeout_ms)
        {
            return invalid(
                "groups.session_timeout_ms",
                "need 0 < min_session_timeout_ms <= session_timeout_ms <= max_session_timeout_ms"
                    .into(),
            );
        }
        if g.heartbeat_interval_ms == 0 || g.heartbeat_interval_ms >= g.session_timeout_ms {
            return invalid(
                "groups.heartbeat_interval_ms",
                format!(
                    "must be at least 1 and below groups.session_timeout_ms ({})",
                    g.session_timeout_ms
                ),
            );
        }
        if g.stream_stall_timeout_ms == 0 {
            return invalid(
                "groups.stream_stall_timeout_ms",
                "must be at least 1".into(),
            );
        }
        if g.offsets_compact_bytes < MIN_OFFSETS_COMPACT_BYTES {
            return invalid(
                "groups.offsets_compact_bytes",
                format!("must be at least {MIN_OFFSETS_COMPACT_BYTES}"),
            );
        }
        if g.max_commit_metadata_bytes > MAX_COMMIT_METADATA_BYTES {
            return invalid(
                "groups.max_commit_metadata_bytes",
                format!("must be at most {MAX_COMMIT_METADATA_BYTES}"),
            );
        }
        if self
            .metrics_listen
            .is_some_and(|m| m == self.listen && m.port() != 0)
        {
            return invalid(
                "metrics_listen",
                format!(
                    "must differ from listen ({}): metrics have their own port",
                    self.listen
                ),
            );
        }
        if self.flush_interval_ms == 0 {
            return invalid("flush_interval_ms", "must be at least 1".into());
        }
        let sec = &self.security;
        if sec.tls_cert.is_some() != sec.tls_key.is_some() {
            return invalid(
                "security.tls_cert",
                "--tls-cert and --tls-key go together: set both or neither".into(),
            );
        }
        if sec.tls_client_ca.is_some() && sec.tls_cert.is_none() {
            return invalid(
                "security.tls_client_ca",
                "mutual TLS needs TLS: set --tls-cert and --tls-key too".into(),
            );
        }
        if sec.tls_handshake_timeout_ms == 0 {
            return invalid(
                "security.tls_handshake_timeout_ms",
                "must be at least 1".into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_compaction_below_its_minimum_is_refused_by_name() {
        let mut config = BrokerConfig::default();
        config.groups.offsets_compact_bytes = MIN_OFFSETS_COMPACT_BYTES;
        config.validate().expect("the minimum itself is allowed");
        config.groups.offsets_compact_bytes = MIN_OFFSETS_COMPACT_BYTES - 1;
        match config.validate() {
            Err(ConfigError::Invalid { field, .. }) => {
                assert_eq!(field, "groups.offsets_compact_bytes")
            }
            other => panic!("expected the setting to be refused, got {other:?}"),
        }
    }
}
