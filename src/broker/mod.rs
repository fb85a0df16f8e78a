//! The broker: topics, partitions and their settings, produce and fetch
//! orchestration, long-poll waiters and the background jobs (flusher and
//! retention). [`Broker`] is the only handle the `api` layer uses.
//!
//! | module       | job                                                         |
//! |--------------|-------------------------------------------------------------|
//! | [`topics`]   | name rules, per-topic settings, `Topic` and `Partition`     |
//! | [`metadata`] | topic metadata files, atomic persistence                    |
//! | [`produce`]  | partition choice (key hash), validation scan, acks          |
//! | [`fetch`]    | fetch by offset, first-batch trim, long-poll, subscribe     |
//! | [`tasks`]    | the background flusher and retention job                    |
//! | [`error`]    | `BrokerError`                                               |

pub mod append_queue;
pub mod error;
pub mod fetch;
pub mod groups;
pub mod metadata;
pub mod orphans;
pub mod produce;
pub mod tasks;
pub mod topics;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::{watch, Notify};

pub use error::{BrokerError, Result};
use metadata::TopicMeta;
pub use topics::{EffectiveTopicConfig, Partition, Topic, TopicOverrides};

use crate::config::BrokerConfig;
use crate::storage::fs::DirLock;
use crate::storage::{now_ms, LogStats, MapCache, PartitionLog};

/// Written last on a clean shutdown, removed first at start-up.
pub const CLEAN_SHUTDOWN_FILE: &str = ".clean-shutdown";

/// A topic as `DescribeTopic` reports it.
#[derive(Debug, Clone)]
pub struct TopicDescription {
    /// Topic name.
    pub name: String,
    /// Effective settings.
    pub config: EffectiveTopicConfig,
    /// One entry per partition, in order.
    pub partitions: Vec<LogStats>,
}

/// The running broker's state.
#[derive(Debug)]
pub struct Broker {
    config: BrokerConfig,
    data_dir: PathBuf,
    _lock: DirLock,
    cache: Arc<MapCache>,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    /// Serializes topic creation, deletion and changes (not produce/fetch).
    admin: Mutex<()>,
    total_partitions: AtomicU32,
    shutdown: watch::Sender<bool>,
    /// Wakes the flusher when an append crossed the flush byte threshold.
    flush_wake: Notify,
    /// Consumer groups.
    pub(crate) coordinator: groups::Coordinator,
}

impl Broker {
    /// Opens the data directory (taking its lock), loads every topic and
    /// recovers every partition.
    ///
    /// # Errors
    /// The directory is locked by another process, a metadata file is
    /// corrupt (named in the error), or a partition cannot be recovered.
    pub fn open(config: BrokerConfig) -> Result<Arc<Broker>> {
        let data_dir = config.data_dir.clone();
        let io = |path: &Path, e: std::io::Error| BrokerError::Metadata {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(data_dir.join("topics")).map_err(|e| io(&data_dir, e))?;
        let lock = DirLock::acquire(&data_dir).map_err(|e| BrokerError::Metadata {
            path: data_dir.clone(),
            reason: format!("cannot lock the data directory (is another broker using it?): {e}"),
        })?;
        match crate::storage::fs::raise_open_files_limit() {
            Ok(n) => tracing::debug!(open_files_limit = n, "raised the open-files limit"),
            Err(e) => tracing::warn!(error = %e, "could not raise the open-files limit"),
        }
        let cache = MapCache::new(config.limits.max_open_segment_maps as usize);
        let metas = metadata::load_all(&data_dir)?;
        let clean = data_dir.join(CLEAN_SHUTDOWN_FILE).exists();
        orphans::remove_orphan_topic_dirs(&data_dir, &metas);
        let (shutdown, _) = watch::channel(false);
        let coordinator =
            groups::Coordinator::open(&data_dir.join("groups"), config.groups.clone())?;
        let broker = Broker {
            coordinator,
            data_dir,
            _lock: lock,
            cache,
            topics: RwLock::new(HashMap::new()),
            admin: Mutex::new(()),
            total_partitions: AtomicU32::new(0),
            shutdown,
            flush_wake: Notify::new(),
            config,
        };
        let started = std::time::Instant::now();
        for meta in metas {
            let topic = broker.open_topic(&meta, clean)?;
            broker
                .total_partitions
                .fetch_add(topic.partition_count(), Ordering::Relaxed);
            broker
                .topics_write()
                .insert(meta.name.clone(), Arc::new(topic));
        }
        // From here on the data changes: a crash must not look clean.
        if clean {
            let marker = broker.data_dir.join(CLEAN_SHUTDOWN_FILE);
            std::fs::remove_file(&marker)
                .and_then(|()| crate::storage::fs::sync_dir(&broker.data_dir))
                .map_err(|e| io(&marker, e))?;
        }
        broker.forget_offsets_of_missing_topics()?;
        tracing::info!(
            clean_shutdown_before = clean,
            topics = broker.topics_read().len(),
            partitions = broker.total_partitions.load(Ordering::Relaxed),
            took_ms = started.elapsed().as_millis() as u64,
            "opened data directory {}",
            broker.data_dir.display()
        );
        Ok(Arc::new(broker))
    }

    /// The broker's settings.
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    fn topics_read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Topic>>> {
        self.topics.read().expect("topic registry lock poisoned")
    }

    fn topics_write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Topic>>> {
        self.topics.write().expect("topic registry lock poisoned")
    }

    fn open_topic(&self, meta: &TopicMeta, clean: bool) -> Result<Topic> {
        let config = self.effective(&meta.overrides);
        let mut partitions = Vec::with_capacity(meta.partitions as usize);
        for id in 0..meta.partitions {
            partitions.push(Arc::new(
                self.open_partition(&meta.name, id, &config, clean)?,
            ));
        }
        Ok(Topic {
            name: meta.name.clone(),
            overrides: meta.overrides.clone(),
            config,
            partitions,
            next_keyless: AtomicU32::new(0),
            created_ms: meta.created_ms,
        })
    }

    fn open_partition(
        &self,
        topic: &str,
        id: u32,
        config: &EffectiveTopicConfig,
        clean: bool,
    ) -> Result<Partition> {
        let dir = metadata::topic_dir(&self.data_dir, topic).join(id.to_string());
        let log_config = config.log_config(
            self.config.flush_interval_ms,
            self.config.flush_bytes,
            self.config.writeback_bytes,
        );
        let log = PartitionLog::open_with(&dir, log_config, self.cache.clone(), clean)?;
        Ok(Partition::new(id, log))
    }

    fn effective(&self, overrides: &TopicOverrides) -> EffectiveTopicConfig {
        EffectiveTopicConfig::resolve(
            overrides,
            &self.config.topic_defaults,
            self.config.limits.max_record_bytes,
        )
    }

    /// The topic named `name`.
    pub fn topic(&self, name: &str) -> Result<Arc<Topic>> {
        self.topics_read()
            .get(name)
            .cloned()
            .ok_or_else(|| BrokerError::UnknownTopic {
                topic: name.to_string(),
            })
    }

    /// A partition of a topic.
    pub fn partition(&self, topic: &str, partition: u32) -> Result<Arc<Partition>> {
        self.topic(topic)?.partition(partition).cloned()
    }

    /// Every topic, sorted by name.
    pub fn topics(&self) -> Vec<Arc<Topic>> {
        let mut all: Vec<_> = self.topics_read().values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    fn check_partition_limits(&self, per_topic: u32, added: u32) -> Result<()> {
        let limits = &self.config.limits;
        if per_topic == 0 {
            return Err(BrokerError::InvalidArgument {
                field: "partitions",
                reason: "a topic needs at least 1 partition".into(),
            });
        }
        if per_topic > limits.max_partitions_per_topic {
            return Err(BrokerError::LimitExceeded {
                what: "partitions per topic (limits.max_partitions_per_topic)",
                limit: u64::from(limits.max_partitions_per_topic),
                requested: u64::from(per_topic),
            });
        }
        let total = u64::from(self.total_partitions.load(Ordering::Relaxed)) + u64::from(added);
        if total > u64::from(limits.max_partitions) {
            return Err(BrokerError::LimitExceeded {
                what: "partitions on this broker (limits.max_partitions)",
                limit: u64::from(limits.max_partitions),
                requested: total,
            });
        }
        Ok(())
    }

    /// Creates a topic with `partitions` partitions (0 = the default count).
    ///
    /// Blocking: creates files. Call from a blocking context.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        overrides: TopicOverrides,
    ) -> Result<Arc<Topic>> {
        topics::validate_topic_name(name)?;
        overrides.validate()?;
        let partitions = if partitions == 0 {
            self.config.topic_defaults.partitions
        } else {
            partitions
        };
        let _admin = self.admin.lock().expect("admin lock poisoned");
        if self.topics_read().contains_key(name) {
            return Err(BrokerError::TopicExists {
                topic: name.to_string(),
            });
        }
        self.check_partition_limits(partitions, partitions)?;
        // Files of that name that no metadata names: a folder start-up left
        // in place because it is not only Strata's, or a deleted topic's
        // directory that could not be removed. Never adopt or delete them.
        let dir = metadata::topic_dir(&self.data_dir, name);
        if std::fs::symlink_metadata(&dir).is_ok() {
            return Err(BrokerError::FailedPrecondition(format!(
                "cannot create topic '{name}': {} exists and is not a topic's (move it away, or restart the broker to clear a deleted topic's leftovers)",
                dir.display()
            )));
        }
        let meta = TopicMeta {
            version: metadata::METADATA_VERSION,
            name: name.to_string(),
            partitions,
            created_ms: now_ms(),
            overrides,
        };
        // Partition directories first; the metadata file commits the create.
        let topic = match self.open_topic(&meta, false).and_then(|t| {
            metadata::store(&self.data_dir, &meta)?;
            Ok(t)
        }) {
            Ok(t) => Arc::new(t),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        self.total_partitions
            .fetch_add(partitions, Ordering::Relaxed);
        self.topics_write().insert(name.to_string(), topic.clone());
        tracing::info!(topic = name, partitions, "created topic");
        drop(_admin);
        self.topics_changed();
        Ok(topic)
    }

    /// Deletes a topic and its data. Readers still streaming from it get
    /// `NOT_FOUND`; the name can be reused at once.
    pub fn delete_topic(&self, name: &str) -> Result<()> {
        let _admin = self.admin.lock().expect("admin lock poisoned");
        let topic = self.topic(name)?;
        metadata::remove(&self.data_dir, name)?;
        self.topics_write().remove(name);
        self.total_partitions
            .fetch_sub(topic.partition_count(), Ordering::Relaxed);
        for p in &topic.partitions {
            p.mark_deleted();
        }
        // Rename first so a same-named topic can be created at once; open
        // maps of the removed files stay valid for readers still holding them.
        let dir = metadata::topic_dir(&self.data_dir, name);
        let doomed = self
            .data_dir
            .join("topics")
            // The name is not repeated in full: `.deleted-` and a 249-character
            // name would pass the 255-byte limit of a file name.
            .join(format!(
                "{}{}-{:08x}",
                orphans::DELETED_PREFIX,
                now_ms(),
                crc32fast::hash(name.as_bytes())
            ));
        let target = if std::fs::rename(&dir, &doomed).is_ok() {
            doomed
        } else {
            dir
        };
        if let Err(e) = std::fs::remove_dir_all(&target) {
            tracing::warn!(path = %target.display(), error = %e, "could not remove a deleted topic's files; they are removed at next start");
        }
        // The delete is committed; a failure here leaves offsets that the
        // next start forgets (before any topic of the name can be created).
        if let Err(e) = self.forget_topic_offsets(name) {
            tracing::warn!(topic = name, error = %e, "could not forget the deleted topic's committed offsets; they are forgotten at next start");
        }
        tracing::info!(topic = name, "deleted topic");
        drop(_admin);
        self.topics_changed();
        Ok(())
    }

    /// Grows a topic to `total` partitions (never shrinks).
    pub fn create_partitions(&self, name: &str, total: u32) -> Result<Arc<Topic>> {
        let _admin = self.admin.lock().expect("admin lock poisoned");
        let topic = self.topic(name)?;
        let current = topic.partition_count();
        if total <= current {
            return Err(BrokerError::InvalidArgument {
                field: "total_partitions",
                reason: format!("topic '{name}' has {current} partitions; the new total must be larger (partitions are never removed)"),
            });
        }
        self.check_partition_limits(total, total - current)?;
        let mut partitions = topic.partitions.clone();
        for id in current..total {
            partitions.push(Arc::new(self.open_partition(
                name,
                id,
                &topic.config,
                false,
            )?));
        }
        let meta = TopicMeta {
            version: metadata::METADATA_VERSION,
            name: name.to_string(),
            partitions: total,
            created_ms: topic.created_ms,
            overrides: topic.overrides.clone(),
        };
        metadata::store(&self.data_dir, &meta)?;
        let grown = Arc::new(Topic {
            name: name.to_string(),
            overrides: topic.overrides.clone(),
            config: topic.config,
            partitions,
            next_keyless: AtomicU32::new(topic.next_keyless.load(Ordering::Relaxed)),
            created_ms: topic.created_ms,
        });
        self.total_partitions
            .fetch_add(total - current, Ordering::Relaxed);
        self.topics_write().insert(name.to_string(), grown.clone());
        tracing::info!(topic = name, from = current, to = total, "added partitions");
        drop(_admin);
        self.topics_changed();
        Ok(grown)
    }

    /// Changes the settings that are set in `changes`; the others stay.
    pub fn alter_topic_config(&self, name: &str, changes: &TopicOverrides) -> Result<Arc<Topic>> {
        changes.validate()?;
        let _admin = self.admin.lock().expect("admin lock poisoned");
        let topic = self.topic(name)?;
        let mut overrides = topic.overrides.clone();
        overrides.merge(changes);
        let config = self.effective(&overrides);
        let meta = TopicMeta {
            version: metadata::METADATA_VERSION,
            name: name.to_string(),
            partitions: topic.partition_count(),
            created_ms: topic.created_ms,
            overrides: overrides.clone(),
        };
        metadata::store(&self.data_dir, &meta)?;
        let log_config = config.log_config(
            self.config.flush_interval_ms,
            self.config.flush_bytes,
            self.config.writeback_bytes,
        );
        for p in &topic.partitions {
            p.log.set_config(log_config.clone());
        }
        let altered = Arc::new(Topic {
            name: name.to_string(),
            overrides,
            config,
            partitions: topic.partitions.clone(),
            next_keyless: AtomicU32::new(topic.next_keyless.load(Ordering::Relaxed)),
            created_ms: topic.created_ms,
        });
        self.topics_write()
            .insert(name.to_string(), altered.clone());
        Ok(altered)
    }

    /// Offsets, sizes and health of every partition of a topic.
    pub fn describe_topic(&self, name: &str) -> Result<TopicDescription> {
        let topic = self.topic(name)?;
        Ok(describe(&topic))
    }

    /// A receiver that turns true when the broker begins shutting down.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Begins shutdown: streams and long-polls end, background jobs stop.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Flushes every partition (blocking). Called last on shutdown.
    pub fn close(&self) -> Result<()> {
        let mut first_error: Option<BrokerError> = None;
        for topic in self.topics() {
            for p in &topic.partitions {
                if let Err(e) = p.log.close() {
                    tracing::error!(topic = %topic.name, partition = p.id, error = %e, "flush on close failed");
                    first_error.get_or_insert(e.into());
                }
            }
        }
        if let Err(e) = self.coordinator.sync() {
            tracing::error!(error = %e, "flushing group offsets on close failed");
            first_error.get_or_insert(e);
        }
        if first_error.is_none() {
            // Every partition is flushed and checkpointed: the next start
            // may skip scanning the active segments' tails.
            let marker = self.data_dir.join(CLEAN_SHUTDOWN_FILE);
            if let Err(e) = crate::storage::fs::write_atomic(&marker, b"clean\n") {
                tracing::warn!(error = %e, "could not write the clean-shutdown marker; the next start scans every tail");
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Builds the description of a topic.
pub fn describe(topic: &Topic) -> TopicDescription {
    TopicDescription {
        name: topic.name.clone(),
        config: topic.config,
        partitions: topic.partitions.iter().map(|p| p.log.stats()).collect(),
    }
}
