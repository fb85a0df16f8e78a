//! Who a client is and what it may do: principals from the auth file,
//! bearer-token and certificate-subject lookup, permissions and byte-rate
//! quotas. No gRPC here; `api::auth` applies this to requests.
//!
//! | module         | job                                                     |
//! |----------------|---------------------------------------------------------|
//! | [`file`](mod@file) | the `--auth-file` TOML format and its validation  |
//! | [`permission`] | `action:glob` permissions and the glob matcher          |
//! | [`token`]      | SHA-256 of tokens, constant-time compare, new tokens    |
//! | [`quota`]      | the token bucket behind produce and fetch quotas        |
//!
//! [`AuthStore`] holds the current [`Registry`] and swaps in a new one when
//! the file is reloaded (SIGHUP or a change on disk); a file that does not
//! validate leaves the old registry in force.

pub mod file;
pub mod permission;
pub mod quota;
pub mod token;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

pub use file::{AuthFile, AuthFileError, PrincipalEntry};
pub use permission::{Action, Permission};
use quota::TokenBucket;
use token::TokenDigest;

/// Why a request is refused by access control.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    /// No credentials, or credentials that match no principal.
    #[error("missing or invalid credentials: send 'authorization: Bearer TOKEN' with a token registered in the broker's auth file{}", if *.cert_seen { " (the client certificate's subject matches no principal)" } else { "" })]
    Unauthenticated {
        /// Whether a client certificate was presented (and matched nobody).
        cert_seen: bool,
    },
    /// The principal lacks the permission.
    #[error("principal '{principal}' may not {} {kind} '{resource}': it needs a permission matching {action}:{resource}", .action.verb())]
    Denied {
        /// The principal.
        principal: String,
        /// The action asked for.
        action: Action,
        /// `topic` or `group`.
        kind: &'static str,
        /// The topic or group.
        resource: String,
    },
    /// The principal is over a byte-rate quota.
    #[error("principal '{principal}' is over its {direction} quota of {rate_bytes_per_sec} bytes/s; retry in {} ms", .retry_after.as_millis())]
    OverQuota {
        /// The principal.
        principal: String,
        /// `produce` or `fetch`.
        direction: &'static str,
        /// The quota.
        rate_bytes_per_sec: u64,
        /// How long until the request would be admitted.
        retry_after: Duration,
    },
}

/// An authenticated client identity with its permissions and quotas.
#[derive(Debug)]
pub struct Principal {
    /// Its name in the auth file.
    pub name: String,
    permissions: Vec<Permission>,
    produce: Option<Mutex<TokenBucket>>,
    fetch: Option<Mutex<TokenBucket>>,
}

impl Principal {
    /// Whether the principal may do `action` on `resource` (a topic, or a
    /// group for [`Action::Group`]).
    pub fn allows(&self, action: Action, resource: &str) -> bool {
        self.permissions.iter().any(|p| p.allows(action, resource))
    }

    /// Checks `action` on `resource`.
    ///
    /// # Errors
    /// [`AccessError::Denied`].
    pub fn check(&self, action: Action, resource: &str) -> Result<(), AccessError> {
        if self.allows(action, resource) {
            return Ok(());
        }
        Err(AccessError::Denied {
            principal: self.name.clone(),
            action,
            kind: if action.on_topics() { "topic" } else { "group" },
            resource: resource.to_string(),
        })
    }

    /// Whether the principal holds any topic permission on `topic`, which
    /// lets it describe the topic and see it in `ListTopics`.
    pub fn may_describe_topic(&self, topic: &str) -> bool {
        Action::ALL
            .into_iter()
            .filter(|a| a.on_topics())
            .any(|a| self.allows(a, topic))
    }

    /// Checks `DescribeTopic`.
    ///
    /// # Errors
    /// [`AccessError::Denied`] naming `consume` (the weakest grant that
    /// would do).
    pub fn check_describe(&self, topic: &str) -> Result<(), AccessError> {
        if self.may_describe_topic(topic) {
            return Ok(());
        }
        self.check(Action::Consume, topic)
    }

    /// Admits a produce of `bytes` under the produce quota.
    ///
    /// # Errors
    /// [`AccessError::OverQuota`]; nothing is taken from the quota then.
    pub fn admit_produce(&self, bytes: u64, now: Instant) -> Result<(), AccessError> {
        let Some(bucket) = &self.produce else {
            return Ok(());
        };
        let mut b = bucket.lock().unwrap_or_else(|e| e.into_inner());
        b.try_take(bytes, now)
            .map_err(|retry_after| self.over_quota("produce", b.rate_bytes_per_sec(), retry_after))
    }

    /// Admits a fetch (or the next item of a stream) while the fetch quota
    /// is not in debt.
    ///
    /// # Errors
    /// [`AccessError::OverQuota`].
    pub fn admit_fetch(&self, now: Instant) -> Result<(), AccessError> {
        let Some(bucket) = &self.fetch else {
            return Ok(());
        };
        let mut b = bucket.lock().unwrap_or_else(|e| e.into_inner());
        b.check_positive(now)
            .map_err(|retry_after| self.over_quota("fetch", b.rate_bytes_per_sec(), retry_after))
    }

    /// Charges `bytes` read to the fetch quota.
    pub fn charge_fetch(&self, bytes: u64, now: Instant) {
        if let Some(bucket) = &self.fetch {
            bucket
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .charge(bytes, now);
        }
    }

    /// Whether a fetch quota applies.
    pub fn has_fetch_quota(&self) -> bool {
        self.fetch.is_some()
    }

    fn over_quota(&self, direction: &'static str, rate: u64, retry_after: Duration) -> AccessError {
        AccessError::OverQuota {
            principal: self.name.clone(),
            direction,
            rate_bytes_per_sec: rate,
            retry_after,
        }
    }
}

/// The principals of one version of the auth file, indexed for lookup.
#[derive(Debug, Default)]
pub struct Registry {
    by_token: Vec<(TokenDigest, Arc<Principal>)>,
    by_subject: HashMap<String, Arc<Principal>>,
    all: Vec<Arc<Principal>>,
}

impl Registry {
    /// Builds the registry of `file`. Quota buckets of principals that keep
    /// their name and rate in `previous` carry over, so a reload does not
    /// hand everyone a fresh burst.
    pub fn new(file: AuthFile, previous: Option<&Registry>, now: Instant) -> Registry {
        let mut registry = Registry::default();
        for entry in file.principals {
            let old = previous.and_then(|r| r.all.iter().find(|p| p.name == entry.name));
            let bucket = |rate: u64, old: Option<&Mutex<TokenBucket>>| {
                if rate == 0 {
                    return None;
                }
                let carried = old
                    .map(|m| m.lock().unwrap_or_else(|e| e.into_inner()).clone())
                    .filter(|b| b.rate_bytes_per_sec() == rate);
                Some(Mutex::new(
                    carried.unwrap_or_else(|| TokenBucket::new(rate, now)),
                ))
            };
            let principal = Arc::new(Principal {
                produce: bucket(
                    entry.produce_bytes_per_sec,
                    old.and_then(|p| p.produce.as_ref()),
                ),
                fetch: bucket(
                    entry.fetch_bytes_per_sec,
                    old.and_then(|p| p.fetch.as_ref()),
                ),
                name: entry.name,
                permissions: entry.permissions,
            });
            if let Some(d) = entry.token {
                registry.by_token.push((d, principal.clone()));
            }
            if let Some(s) = entry.cert_subject {
                registry.by_subject.insert(s, principal.clone());
            }
            registry.all.push(principal);
        }
        registry
    }

    /// The principal whose token hashes to the digest of `token`. Every
    /// registered digest is compared, in constant time each.
    pub fn by_token(&self, token: &[u8]) -> Option<Arc<Principal>> {
        let presented = TokenDigest::of(token);
        let mut found = None;
        for (digest, principal) in &self.by_token {
            if digest.ct_eq(&presented) {
                found = Some(principal.clone());
            }
        }
        found
    }

    /// The principal registered for a client certificate subject CN.
    pub fn by_cert_subject(&self, subject: &str) -> Option<Arc<Principal>> {
        self.by_subject.get(subject).cloned()
    }

    /// How many principals there are.
    pub fn len(&self) -> usize {
        self.all.len()
    }

    /// Whether there are none (every request is then unauthenticated).
    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }
}

/// The auth file in force, reloadable.
#[derive(Debug)]
pub struct AuthStore {
    path: PathBuf,
    current: RwLock<Arc<Registry>>,
}

impl AuthStore {
    /// Loads `path`.
    ///
    /// # Errors
    /// [`AuthFileError`]: the broker must not start with a bad file.
    pub fn load(path: &Path) -> Result<AuthStore, AuthFileError> {
        let file = AuthFile::load(path)?;
        Ok(AuthStore {
            path: path.to_path_buf(),
            current: RwLock::new(Arc::new(Registry::new(file, None, Instant::now()))),
        })
    }

    /// The file this store reads.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Re-reads the file and, if it validates, puts it in force. Returns
    /// the number of principals now in force.
    ///
    /// # Errors
    /// [`AuthFileError`]; the previous principals stay in force.
    pub fn reload(&self) -> Result<usize, AuthFileError> {
        let file = AuthFile::load(&self.path)?;
        let previous = self.registry();
        let next = Arc::new(Registry::new(file, Some(&previous), Instant::now()));
        let count = next.len();
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = next;
        Ok(count)
    }

    /// The registry in force.
    pub fn registry(&self) -> Arc<Registry> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(text: &str) -> Registry {
        let file = AuthFile::parse(text, Path::new("a.toml")).unwrap();
        Registry::new(file, None, Instant::now())
    }

    #[test]
    fn lookup_by_token_and_subject() {
        let hash = TokenDigest::of(b"tok").to_hex();
        let r = registry(&format!(
            "[[principal]]\nname = \"p\"\ntoken_sha256 = \"{hash}\"\ncert_subject = \"cn-p\"\npermissions = [\"produce:orders\", \"consume:logs.*\"]\n"
        ));
        let p = r.by_token(b"tok").unwrap();
        assert_eq!(p.name, "p");
        assert!(r.by_token(b"tok2").is_none());
        assert_eq!(r.by_cert_subject("cn-p").unwrap().name, "p");
        assert!(r.by_cert_subject("other").is_none());
        assert!(p.check(Action::Produce, "orders").is_ok());
        let e = p.check(Action::Produce, "logs.x").unwrap_err().to_string();
        assert!(
            e.contains(
                "may not produce to topic 'logs.x': it needs a permission matching produce:logs.x"
            ),
            "{e}"
        );
        assert!(p.check_describe("logs.x").is_ok());
        assert!(p.check_describe("secret").is_err());
        assert!(!p.allows(Action::Group, "orders"));
    }

    #[test]
    fn quotas_refuse_with_a_hint_and_survive_a_reload() {
        let hash = TokenDigest::of(b"tok").to_hex();
        let text = format!(
            "[[principal]]\nname = \"p\"\ntoken_sha256 = \"{hash}\"\nproduce_bytes_per_sec = 100\n"
        );
        let r = registry(&text);
        let p = r.by_token(b"tok").unwrap();
        let now = Instant::now();
        assert!(p.admit_produce(100, now).is_ok());
        let e = p.admit_produce(50, now).unwrap_err();
        assert!(
            matches!(e, AccessError::OverQuota { retry_after, .. } if retry_after == Duration::from_millis(500))
        );
        assert!(e.to_string().contains("retry in 500 ms"), "{e}");
        assert!(p.admit_fetch(now).is_ok(), "no fetch quota");
        let file = AuthFile::parse(&text, Path::new("a.toml")).unwrap();
        let reloaded = Registry::new(file, Some(&r), now);
        let p2 = reloaded.by_token(b"tok").unwrap();
        assert!(
            p2.admit_produce(50, now).is_err(),
            "the empty bucket carried over"
        );
    }
}
