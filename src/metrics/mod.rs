//! The Prometheus endpoint: `strata serve --metrics-listen ADDR` serves
//! `GET /metrics` on its own port, in the OpenMetrics text format (encoded
//! by the `prometheus-client` crate).
//!
//! | module       | job                                                      |
//! |--------------|----------------------------------------------------------|
//! | [`scrape`]   | reads the broker, storage and RPC counters at scrape time |
//! | [`encode`]   | turns one scrape into OpenMetrics text                   |
//! | [`server`]   | the HTTP/1.1 listener                                    |
//!
//! Nothing here runs on the request paths. The events are counted where
//! they happen, in plain atomics: records and bytes per partition
//! ([`crate::broker::topics::Traffic`]), produce batch sizes
//! ([`crate::broker::produce::BATCH_RECORDS`]), storage events and flush
//! latency ([`crate::storage::counters`]), calls per RPC and code and open
//! streams ([`crate::api::observe`]), connections
//! ([`crate::api::connections`]) and failed authentications (here,
//! [`auth_failure`]). Sizes, offsets, group lag, open files and maps are
//! read from the broker when Prometheus scrapes, on the blocking pool.
//!
//! The README's "Monitoring" section lists every metric and what to alert
//! on.

pub mod encode;
pub mod scrape;
pub mod server;

use std::sync::atomic::{AtomicU64, Ordering};

pub use server::MetricsServer;

static AUTH_FAILURES: AtomicU64 = AtomicU64::new(0);

/// Counts one failed authentication (a request refused as
/// `UNAUTHENTICATED`), exported as `strata_auth_failures_total`. One relaxed
/// atomic add: cheap enough for a flood of bad requests.
pub fn auth_failure() {
    AUTH_FAILURES.fetch_add(1, Ordering::Relaxed);
}

/// Failed authentications since the process started.
pub fn auth_failures() -> u64 {
    AUTH_FAILURES.load(Ordering::Relaxed)
}

/// The OpenMetrics text of everything the broker exports right now.
///
/// Blocking: it walks every partition and group (and may read a batch per
/// lagging group partition for its age). Call it from the blocking pool.
///
/// # Errors
/// Formatting failed (only if a writer to a `String` fails, which it does
/// not).
pub fn render(broker: &crate::broker::Broker) -> Result<String, std::fmt::Error> {
    encode::encode(scrape::Scrape::gather(broker))
}
