//! Fault injection for tests, compiled into debug builds only (release
//! builds have none of this).
//!
//! `STRATA_FAILPOINT_LOG_SYNC_EIO_AT=N` (read once per process): the `N`-th
//! (from 0) `fdatasync` call on a `.log` file fails with `EIO` without
//! syncing — what a failing disk's write-back error looks like to the
//! broker — and every other one works. Since a later sync would succeed, it
//! lets the tests prove that a failed flush is never retried into a success
//! (RELIABILITY.md section 3, hazard 5).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::OnceLock;

/// The environment variable that arms the sync failpoint.
pub const LOG_SYNC_EIO_AT: &str = "STRATA_FAILPOINT_LOG_SYNC_EIO_AT";

/// The injected error for this `.log` sync, if it is the one the failpoint names.
pub fn log_sync_error() -> Option<std::io::Error> {
    static REMAINING: OnceLock<Option<AtomicI64>> = OnceLock::new();
    let remaining = REMAINING.get_or_init(|| {
        std::env::var(LOG_SYNC_EIO_AT)
            .ok()?
            .trim()
            .parse::<i64>()
            .ok()
            .map(AtomicI64::new)
    });
    let remaining = remaining.as_ref()?;
    (remaining.fetch_sub(1, Ordering::SeqCst) == 0)
        .then(|| std::io::Error::from_raw_os_error(libc::EIO))
}
