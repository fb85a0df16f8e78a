//! Topic metadata on disk: `data/meta/topics/<topic>.toml`, one file per
//! topic, replaced atomically (temp file, fsync, rename, fsync dir).
//!
//! # File format
//!
//! A TOML document followed by one checksum line:
//!
//! ```text
//! version = 1
//! name = "orders"
//! partitions = 3
//! created_ms = 1700000000000
//!
//! [overrides]
//! retention_ms = 86400000
//! # crc32 = 1a2b3c4d
//! ```
//!
//! The checksum is the CRC-32 (crc32fast) of every byte before the
//! `# crc32 = ` line, as 8 lower-case hex digits. A file that fails it is
//! reported at start-up by name; it is never silently ignored or trusted.
//!
//! # Crash safety of topic operations
//!
//! The metadata file is the commit point. Create makes the partition
//! directories first and writes the file last; delete removes the file
//! first and the directories after. At start-up, topic directories without
//! a metadata file are leftovers of an interrupted create or delete and are
//! removed.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::{BrokerError, Result};
use super::topics::TopicOverrides;
use crate::storage::fs;

/// Current metadata format version.
pub const METADATA_VERSION: u32 = 1;
const CRC_PREFIX: &str = "# crc32 = ";

/// What is persisted about a topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicMeta {
    /// Format version ([`METADATA_VERSION`]).
    pub version: u32,
    /// Topic name.
    pub name: String,
    /// Number of partitions.
    pub partitions: u32,
    /// Creation time, ms since the Unix epoch.
    pub created_ms: i64,
    /// Per-topic settings.
    #[serde(default)]
    pub overrides: TopicOverrides,
}

/// Decodes the metadata file of `topic` (the name its file is under):
/// [`decode`], and the file must name that topic. Start-up and
/// `strata verify` both check files this way.
///
/// # Errors
/// Why the file is not valid metadata of `topic`.
pub fn decode_file(topic: &str, text: &str) -> std::result::Result<TopicMeta, String> {
    let meta = decode(text)?;
    if meta.name != topic {
        return Err(format!("file names topic '{}'", meta.name));
    }
    Ok(meta)
}

/// Directory of the metadata files.
pub fn meta_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("meta").join("topics")
}

/// Directory holding a topic's partitions.
pub fn topic_dir(data_dir: &Path, topic: &str) -> PathBuf {
    data_dir.join("topics").join(topic)
}

fn meta_path(data_dir: &Path, topic: &str) -> PathBuf {
    meta_dir(data_dir).join(format!("{topic}.toml"))
}

/// Encodes metadata with its checksum line.
pub fn encode(meta: &TopicMeta) -> String {
    let mut text = toml::to_string(meta).expect("topic metadata always serializes");
    let crc = crc32fast::hash(text.as_bytes());
    text.push_str(&format!("{CRC_PREFIX}{crc:08x}\n"));
    text
}

/// Decodes and verifies a metadata file's text.
pub fn decode(text: &str) -> std::result::Result<TopicMeta, String> {
    let body_end = text
        .rfind(CRC_PREFIX)
        .ok_or_else(|| "missing checksum line".to_string())?;
    let (body, trailer) = text.split_at(body_end);
    let stored = trailer[CRC_PREFIX.len()..].trim();
    let stored =
        u32::from_str_radix(stored, 16).map_err(|_| "malformed checksum line".to_string())?;
    if crc32fast::hash(body.as_bytes()) != stored {
        return Err("checksum mismatch (the file is corrupt)".into());
    }
    let meta: TopicMeta = toml::from_str(body).map_err(|e| e.to_string())?;
    if meta.version != METADATA_VERSION {
        return Err(format!("unsupported metadata version {}", meta.version));
    }
    Ok(meta)
}

/// Writes a topic's metadata durably and atomically.
pub fn store(data_dir: &Path, meta: &TopicMeta) -> Result<()> {
    let path = meta_path(data_dir, &meta.name);
    fs::write_atomic(&path, encode(meta).as_bytes()).map_err(|e| BrokerError::Metadata {
        path,
        reason: e.to_string(),
    })
}

/// Removes a topic's metadata durably (the commit point of a delete).
pub fn remove(data_dir: &Path, topic: &str) -> Result<()> {
    let path = meta_path(data_dir, topic);
    let dir = meta_dir(data_dir);
    std::fs::remove_file(&path)
        .and_then(|()| fs::sync_dir(&dir))
        .map_err(|e| BrokerError::Metadata {
            path,
            reason: e.to_string(),
        })
}

/// Reads every topic's metadata. A corrupt file is an error naming it.
pub fn load_all(data_dir: &Path) -> Result<Vec<TopicMeta>> {
    let dir = meta_dir(data_dir);
    std::fs::create_dir_all(&dir).map_err(|e| BrokerError::Metadata {
        path: dir.clone(),
        reason: e.to_string(),
    })?;
    let entries = std::fs::read_dir(&dir).map_err(|e| BrokerError::Metadata {
        path: dir.clone(),
        reason: e.to_string(),
    })?;
    let mut metas = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| BrokerError::Metadata {
            path: dir.clone(),
            reason: e.to_string(),
        })?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".tmp") {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        let Some(topic) = name.strip_suffix(".toml") else {
            continue;
        };
        let text = std::fs::read_to_string(&path).map_err(|e| BrokerError::Metadata {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let meta = decode_file(topic, &text).map_err(|reason| BrokerError::Metadata {
            path: path.clone(),
            reason,
        })?;
        metas.push(meta);
    }
    metas.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(metas)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_meta() -> impl Strategy<Value = TopicMeta> {
        let overrides = (
            proptest::option::of(any::<i64>()),
            proptest::option::of(any::<i64>()),
            proptest::option::of(0u64..i64::MAX as u64),
            proptest::option::of(any::<i64>()),
            proptest::option::of(any::<u32>()),
        )
            .prop_map(|(a, b, c, d, e)| TopicOverrides {
                retention_ms: a,
                retention_bytes: b,
                segment_bytes: c,
                segment_ms: d,
                max_record_bytes: e,
            });
        (
            "[A-Za-z0-9._-]{1,40}",
            any::<u32>(),
            any::<i64>(),
            overrides,
        )
            .prop_map(|(name, partitions, created_ms, overrides)| TopicMeta {
                version: METADATA_VERSION,
                name,
                partitions,
                created_ms,
                overrides,
            })
    }

    /// Appends a valid checksum line to `body`, as [`encode`] does.
    fn with_crc(body: &str) -> String {
        format!(
            "{body}{CRC_PREFIX}{:08x}\n",
            crc32fast::hash(body.as_bytes())
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// Every metadata file the broker writes reads back the same.
        #[test]
        fn any_metadata_round_trips(meta in arb_meta()) {
            prop_assert_eq!(decode(&encode(&meta)), Ok(meta));
        }

        /// Arbitrary text never panics the decoder (and without a matching
        /// checksum line it is always refused).
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
            let _ = decode(&text);
            let _ = decode(&with_crc(&text));
        }

        /// A valid file with bytes changed, inserted or removed never
        /// panics; unless the edit left the text unchanged, the checksum
        /// refuses it. With the checksum recomputed (damage the CRC cannot
        /// see), the TOML and the version checks still answer, never panic.
        #[test]
        fn mutated_files_never_panic(
            meta in arb_meta(),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..4),
        ) {
            let text = encode(&meta);
            let mut bytes = text.clone().into_bytes();
            for (index, byte, op) in edits {
                let i = index.index(bytes.len());
                match op {
                    0 => bytes[i] = byte,
                    1 => bytes.insert(i, byte),
                    _ => { bytes.remove(i); }
                }
            }
            let mutated = String::from_utf8_lossy(&bytes).into_owned();
            if mutated != text {
                prop_assert!(decode(&mutated).is_err() || decode(&mutated) == Ok(meta.clone()));
            }
            let body = match mutated.rfind(CRC_PREFIX) {
                Some(at) => &mutated[..at],
                None => &mutated[..],
            };
            let _ = decode(&with_crc(body));
        }
    }

    #[test]
    fn round_trip_and_corruption() {
        let meta = TopicMeta {
            version: METADATA_VERSION,
            name: "orders".into(),
            partitions: 3,
            created_ms: 1,
            overrides: TopicOverrides {
                retention_ms: Some(5),
                ..Default::default()
            },
        };
        let text = encode(&meta);
        assert_eq!(decode(&text), Ok(meta));
        let flipped = text.replace("partitions = 3", "partitions = 4");
        assert!(decode(&flipped).unwrap_err().contains("checksum"));
        assert!(decode("garbage").is_err());
        assert!(decode("").is_err());
    }
}
