//! Reloading TLS certificates and the auth file while the broker runs: on
//! SIGHUP, and when one of the files changes on disk (checked every
//! `security.reload_check_interval_ms`; a change is a different
//! modification time, size or inode, which also catches the usual
//! "write a temp file, rename it over" replacement).
//!
//! A reload that fails keeps what is in force and logs an error; the next
//! change or SIGHUP tries again. Successful reloads are logged at info
//! (`TLS certificates reloaded`, `auth file reloaded`).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::tls::TlsState;
use crate::auth::AuthStore;

/// What identifies one version of a file on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<FileStamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        modified: m.modified().ok(),
        len: m.len(),
        inode: m.ino(),
    })
}

/// The stamps of a set of files, to tell when any of them changed.
#[derive(Debug)]
struct Watched {
    paths: Vec<PathBuf>,
    stamps: Vec<Option<FileStamp>>,
}

impl Watched {
    fn new(paths: Vec<PathBuf>) -> Watched {
        let stamps = paths.iter().map(|p| stamp(p)).collect();
        Watched { paths, stamps }
    }

    /// Whether a file changed since the last call (and remembers the new
    /// stamps).
    fn changed(&mut self) -> bool {
        let now: Vec<_> = self.paths.iter().map(|p| stamp(p)).collect();
        let changed = now != self.stamps;
        self.stamps = now;
        changed
    }
}

/// Everything that can be reloaded.
#[derive(Debug, Clone, Default)]
pub struct Reloadable {
    /// TLS certificates, when TLS is on.
    pub tls: Option<Arc<TlsState>>,
    /// The auth file, when authentication is on.
    pub auth: Option<Arc<AuthStore>>,
}

impl Reloadable {
    /// Whether there is anything to reload.
    pub fn is_empty(&self) -> bool {
        self.tls.is_none() && self.auth.is_none()
    }
}

/// Starts the reload task (when there is anything to reload). It ends when
/// `shutdown` turns true.
pub fn spawn(reloadable: Reloadable, interval: Duration, mut shutdown: watch::Receiver<bool>) {
    if reloadable.is_empty() {
        return;
    }
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; files reload only when they change");
            None
        }
    };
    let mut tls_files = Watched::new(
        reloadable
            .tls
            .as_ref()
            .map(|t| {
                t.files()
                    .paths()
                    .into_iter()
                    .map(Path::to_path_buf)
                    .collect()
            })
            .unwrap_or_default(),
    );
    let mut auth_file = Watched::new(
        reloadable
            .auth
            .as_ref()
            .map(|a| vec![a.path().to_path_buf()])
            .unwrap_or_default(),
    );
    tokio::spawn(async move {
        let mut ticker = (!interval.is_zero()).then(|| {
            let mut t = tokio::time::interval(interval);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        loop {
            let forced = tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => return,
                Some(()) = async {
                    match &mut hangup { Some(h) => h.recv().await, None => std::future::pending().await }
                } => true,
                _ = async {
                    match &mut ticker { Some(t) => t.tick().await, None => std::future::pending().await }
                } => false,
            };
            if forced {
                tracing::info!("SIGHUP: reloading TLS certificates and the auth file");
            }
            if let Some(tls) = &reloadable.tls {
                if tls_files.changed() || forced {
                    match tls.reload() {
                        Ok(()) => tracing::info!("TLS certificates reloaded"),
                        Err(e) => tracing::error!(error = %e,
                            "TLS reload failed; the previous certificates stay in use"),
                    }
                }
            }
            if let Some(auth) = &reloadable.auth {
                if auth_file.changed() || forced {
                    match auth.reload() {
                        Ok(principals) => tracing::info!(principals, "auth file reloaded"),
                        Err(e) => tracing::error!(error = %e,
                            "auth file reload failed; the previous principals stay in force"),
                    }
                }
            }
        }
    });
}
