//! Start-up clean-up of `<data-dir>/topics/`: the files of topics that no
//! metadata file names.
//!
//! Two interrupted operations leave such files: a create that stopped
//! before its metadata file was written (the partition directories come
//! first, the metadata file commits the create), and a delete whose
//! metadata file was removed (the commit point) but whose directory was not
//! renamed to `.deleted-*` or not removed yet. Both are removed at start.
//!
//! Anything else under `topics/` is not Strata's to delete: a folder a user
//! put there, or a `--data-dir` that points at the wrong place. Only entries
//! made entirely of what Strata writes are removed, i.e. a `.deleted-*`
//! directory, or a directory with a valid topic name holding only partition
//! directories (decimal names) that hold only segment files
//! (`<20 digits>.log|.index|.timeindex`), a `recovery-checkpoint` and
//! `*.tmp` files. Everything else is left in place with a warning, and
//! creating a topic of that name is refused while it is there.

use std::path::Path;

use crate::storage::checkpoint::CHECKPOINT_FILE;
use crate::storage::segment::parse_segment_name;

use super::topics::validate_topic_name;
use super::TopicMeta;

/// Name prefix of a deleted topic's directory awaiting removal.
pub const DELETED_PREFIX: &str = ".deleted-";

/// What start-up does with an entry of `topics/` that no metadata names.
#[derive(Debug, PartialEq, Eq)]
pub enum Orphan {
    /// Files of an interrupted create or delete: removed.
    Remove,
    /// Not (only) Strata's files: left in place, for this reason.
    Keep(String),
}

/// Decides what to do with the entry `path` (named `name`) of `topics/`.
pub fn classify(path: &Path, name: &str) -> Orphan {
    let Ok(kind) = std::fs::symlink_metadata(path).map(|m| m.file_type()) else {
        return Orphan::Keep("it cannot be examined".into());
    };
    if !kind.is_dir() {
        return Orphan::Keep("it is not a directory".into());
    }
    if name.starts_with(DELETED_PREFIX) {
        return Orphan::Remove;
    }
    if validate_topic_name(name).is_err() {
        return Orphan::Keep("its name is not a topic name".into());
    }
    let Ok(entries) = std::fs::read_dir(path) else {
        return Orphan::Keep("it cannot be listed".into());
    };
    for entry in entries {
        let Ok(entry) = entry else {
            return Orphan::Keep("it cannot be listed".into());
        };
        let partition = entry.file_name();
        let partition = partition.to_string_lossy();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if !is_dir || partition.is_empty() || !partition.bytes().all(|b| b.is_ascii_digit()) {
            return Orphan::Keep(format!("'{partition}' is not a partition directory"));
        }
        if let Some(reason) = foreign_file_in_partition(&entry.path()) {
            return Orphan::Keep(format!("partition {partition}: {reason}"));
        }
    }
    Orphan::Remove
}

/// The first entry of a partition directory that Strata does not write, if
/// any.
fn foreign_file_in_partition(dir: &Path) -> Option<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Some("it cannot be listed".into());
    };
    for entry in entries {
        let Ok(entry) = entry else {
            return Some("it cannot be listed".into());
        };
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        let ours = ["log", "index", "timeindex"]
            .iter()
            .any(|ext| parse_segment_name(&name, ext).is_some())
            || name == CHECKPOINT_FILE
            || name.ends_with(".tmp");
        if !is_file || !ours {
            return Some(format!("'{name}' is not a file Strata writes"));
        }
    }
    None
}

/// Removes the files of interrupted creates and deletes from
/// `<data_dir>/topics/` and warns about (and keeps) everything else no
/// metadata names.
pub fn remove_orphan_topic_dirs(data_dir: &Path, metas: &[TopicMeta]) {
    let Ok(entries) = std::fs::read_dir(data_dir.join("topics")) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if metas.iter().any(|m| m.name == name) {
            continue;
        }
        let path = entry.path();
        match classify(&path, &name) {
            Orphan::Remove => {
                tracing::warn!(path = %path.display(), "removing topic files without metadata (interrupted create or delete)");
                if let Err(e) = std::fs::remove_dir_all(&path) {
                    tracing::warn!(path = %path.display(), error = %e, "could not remove topic files without metadata");
                }
            }
            Orphan::Keep(reason) => {
                tracing::warn!(path = %path.display(), reason = %reason, "leaving an entry of the topics directory in place: no topic metadata names it and it is not only Strata's files (a topic of this name cannot be created while it is there)");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"x").unwrap();
    }

    #[test]
    fn only_strata_files_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let topics = dir.path().join("topics");
        // An interrupted create: partitions with segments and a checkpoint.
        write(&topics.join("orders/0/00000000000000000000.log"));
        write(&topics.join("orders/0/00000000000000000000.index"));
        write(&topics.join("orders/0/00000000000000000000.timeindex"));
        write(&topics.join("orders/0/recovery-checkpoint"));
        write(&topics.join("orders/1/recovery-checkpoint.tmp"));
        std::fs::create_dir_all(topics.join("orders/2")).unwrap();
        // An interrupted delete, renamed.
        write(&topics.join(".deleted-1-0000abcd/0/00000000000000000000.log"));
        // Not Strata's.
        write(&topics.join("important/file.csv"));
        write(&topics.join("reports/0/summary.txt"));
        write(&topics.join("backup/01/00000000000000000000.log.bak"));
        write(&topics.join("notes.txt"));
        write(&topics.join("kept/0/00000000000000000000.log"));
        let kept = TopicMeta {
            version: super::super::metadata::METADATA_VERSION,
            name: "kept".into(),
            partitions: 1,
            created_ms: 0,
            overrides: Default::default(),
        };

        remove_orphan_topic_dirs(dir.path(), &[kept]);

        let mut left: Vec<String> = std::fs::read_dir(&topics)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            ["backup", "important", "kept", "notes.txt", "reports"]
        );
        assert!(topics.join("important/file.csv").exists());
        assert!(topics.join("kept/0/00000000000000000000.log").exists());
    }

    #[test]
    fn classification_names_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        write(&dir.path().join("important/file.csv"));
        let Orphan::Keep(reason) = classify(&dir.path().join("important"), "important") else {
            panic!("a folder with a csv file is not a topic");
        };
        assert!(reason.contains("file.csv"), "{reason}");
        std::fs::create_dir_all(dir.path().join("bad name")).unwrap();
        assert_eq!(
            classify(&dir.path().join("bad name"), "bad name"),
            Orphan::Keep("its name is not a topic name".into())
        );
        std::fs::create_dir_all(dir.path().join("empty")).unwrap();
        assert_eq!(classify(&dir.path().join("empty"), "empty"), Orphan::Remove);
    }

    #[test]
    fn a_broker_keeps_a_foreign_folder_and_will_not_create_a_topic_over_it() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("topics/important/file.csv");
        write(&csv);
        let config = crate::config::BrokerConfig {
            data_dir: dir.path().to_path_buf(),
            ..Default::default()
        };
        let broker = crate::broker::Broker::open(config).unwrap();
        let err = broker
            .create_topic("important", 1, Default::default())
            .unwrap_err();
        assert!(
            matches!(&err, crate::broker::BrokerError::FailedPrecondition(m) if m.contains("exists")),
            "{err}"
        );
        assert!(csv.exists(), "the user's file is still there");
        assert!(broker.topic("important").is_err());
        broker
            .create_topic("orders", 1, Default::default())
            .unwrap();
    }
}
