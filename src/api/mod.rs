//! The gRPC layer: turns requests into broker calls and broker errors into
//! status codes. No storage logic here.
//!
//! | module     | job                                                  |
//! |------------|------------------------------------------------------|
//! | [`log`]    | `strata.v1.Log`: produce, fetch, subscribe, offsets  |
//! | [`admin`]  | `strata.v1.Admin`: topics                            |
//! | [`groups`] | `strata.v1.Groups`: the consumer-group coordinator   |
//! | [`status`] | the one `BrokerError` → `tonic::Status` mapping      |
//! | [`budget`] | the budget of request bytes in flight, all services together |
//! | [`connections`] | the cap on open client connections, and their count |
//! | [`resets`] | closing connections that reset streams too fast   |
//! | [`observe`] | per-call span, RPC metrics, slow-request log        |
//! | [`auth`]   | authentication interceptor, permission/quota checks  |
//! | [`tls`]    | TLS accept loop with reloadable certificates         |
//! | [`x509`]   | the client certificate's subject CN                  |
//! | [`reload`] | SIGHUP and file-change reloads of certificates/auth  |
//!
//! [`run`] assembles the server: Strata's services plus the standard
//! `grpc.health.v1.Health` and server reflection, explicit message-size
//! limits, HTTP/2 settings, and graceful shutdown on SIGINT/SIGTERM (stop
//! accepting, end streams and long-polls, finish in-flight requests, flush
//! every partition, exit 0).

pub mod admin;
pub mod auth;
pub mod budget;
pub mod codec;
pub mod connections;
pub mod groups;
pub mod limits;
pub mod log;
pub mod observe;
pub mod reload;
pub mod resets;
pub mod status;
pub mod tls;
pub mod x509;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::broker::{Broker, BrokerError};
use crate::config::{BrokerConfig, ConfigError, ReflectionAccess};
use crate::proto::server::admin_server::AdminServer;
use crate::proto::server::groups_server::GroupsServer;
use crate::proto::server::log_server::LogServer;
use tonic::service::interceptor::InterceptedService;

/// HTTP/2 flow-control window of each request stream, bytes: what a client
/// may send on one stream before the broker reads it. A request that waits
/// for room in the in-flight budget ([`budget`]) keeps up to this much of
/// its body unread in h2's buffers, outside the budget (RELIABILITY 13
/// bounds both together by 2 × the budget). 128 KiB holds a typical produce
/// batch (1,000 records of 100 B) whole; at 64 KiB such a batch waited for
/// a window update and the produce benchmark lost 10–20 %. A bigger
/// request streams in window-sized pieces, refilled as the broker reads.
pub const HTTP2_STREAM_WINDOW_BYTES: u32 = 128 << 10;

/// HTTP/2 flow-control window of each connection, bytes: the most one
/// connection can have received and not yet read, all its streams
/// together (16 MiB before). It must stay well above a few stream windows:
/// requests waiting for budget hold their stream windows of it, and once
/// they fill it the admitted request on the same connection gets no more
/// of its body until they give up (after 1 s; that happened at 256 KiB
/// streams in 1 MiB). 2 MiB carries 8 batches of 116 KB in flight, and
/// 200 MB/s per connection at a 10 ms round trip.
pub const HTTP2_CONNECTION_WINDOW_BYTES: u32 = 2 << 20;

/// How long shutdown waits for clients to finish and close their connections.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The data directory could not be opened.
    #[error("cannot open the broker: {0}")]
    Broker(#[from] BrokerError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("gRPC server error: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// Reflection could not be built from the descriptors (a build bug).
    #[error("reflection setup failed: {0}")]
    Reflection(String),
    /// A TLS file cannot be used.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The auth file cannot be used.
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthFileError),
}

/// A running server (for tests and embedding): its address and a way to stop it.
#[derive(Debug)]
pub struct RunningServer {
    /// The bound address (with the real port when 0 was asked for).
    pub addr: SocketAddr,
    /// The metrics listener's bound address, when `metrics_listen` is set.
    pub metrics_addr: Option<SocketAddr>,
    /// The broker behind it.
    pub broker: Arc<Broker>,
    handle: tokio::task::JoinHandle<Result<(), ServeError>>,
}

impl RunningServer {
    /// Begins a graceful shutdown and waits for it to complete.
    pub async fn shutdown(self) -> Result<(), ServeError> {
        self.broker.begin_shutdown();
        match self.handle.await {
            Ok(r) => r,
            Err(e) => Err(ServeError::Broker(BrokerError::Internal(format!(
                "server task failed: {e}"
            )))),
        }
    }
}

/// Runs the broker until SIGINT or SIGTERM, then shuts down gracefully.
/// Prints `strata listening on ADDR` on stdout once it accepts connections.
pub async fn run(config: BrokerConfig) -> Result<(), ServeError> {
    let server = start(config).await?;
    // Printed before the gRPC line, so a reader that waits for that line
    // has already seen this one.
    if let Some(metrics) = server.metrics_addr {
        println!("strata metrics listening on {metrics}");
    }
    println!("strata listening on {}", server.addr);
    let broker = server.broker.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received: finishing in-flight requests");
        broker.begin_shutdown();
    });
    server.shutdown_when_signalled().await
}

impl RunningServer {
    async fn shutdown_when_signalled(self) -> Result<(), ServeError> {
        match self.handle.await {
            Ok(r) => r,
            Err(e) => Err(ServeError::Broker(BrokerError::Internal(format!(
                "server task failed: {e}"
            )))),
        }
    }
}

/// Opens the broker, binds the listener and starts serving in a task.
pub async fn start(config: BrokerConfig) -> Result<RunningServer, ServeError> {
    config.validate()?;
    tracing::info!(config = ?config, "starting strata");
    // Bad certificates or a bad auth file stop the start, before any data
    // is opened.
    let reloadable = load_security(&config)?;
    let listen = config.listen;
    let open_config = config.clone();
    let broker = tokio::task::spawn_blocking(move || Broker::open(open_config))
        .await
        .map_err(|e| {
            ServeError::Broker(BrokerError::Internal(format!("open task failed: {e}")))
        })??;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: listen,
        source,
    })?;
    let metrics = match config.metrics_listen {
        Some(metrics_addr) => Some(
            crate::metrics::MetricsServer::start(
                metrics_addr,
                broker.clone(),
                // Scrapes follow `security.auth_metrics` when auth is on.
                reloadable
                    .auth
                    .clone()
                    .filter(|_| config.security.auth_metrics == ReflectionAccess::Authenticated),
            )
            .await
            .map_err(|source| ServeError::Bind {
                addr: metrics_addr,
                source,
            })?,
        ),
        None => None,
    };
    let metrics_addr = metrics.as_ref().map(|m| m.addr);
    let background = broker.start_background();
    let access = match &reloadable.auth {
        Some(store) => auth::Access::with_store(store.clone()),
        None => auth::Access::open(),
    };
    let router = build_router(&broker, &config, &access)?;
    reload::spawn(
        reloadable.clone(),
        std::time::Duration::from_millis(config.security.reload_check_interval_ms),
        broker.shutdown_signal(),
    );
    let handshake_timeout =
        std::time::Duration::from_millis(config.security.tls_handshake_timeout_ms);
    let connection_limits = connections::ConnectionLimits {
        max_connections: config.limits.max_connections as usize,
        max_stream_resets_per_sec: config.limits.max_stream_resets_per_sec,
    };
    let mut shutdown = broker.shutdown_signal();
    let serving = broker.clone();
    let mut grace = broker.shutdown_signal();
    let handle = tokio::spawn(async move {
        let signal = async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        };
        let serving_fut: ServeFuture = match reloadable.tls {
            // TLS: Strata's own accept loop, so certificates can be reloaded
            // (it sets TCP_NODELAY itself).
            // The connection cap counts connections whose handshake is
            // done; handshakes in progress have their own bound.
            Some(state) => Box::pin(router.serve_with_incoming_shutdown(
                connections::limit(
                    tls::incoming(listener, state, handshake_timeout),
                    connection_limits,
                ),
                signal,
            )),
            // `Server::tcp_nodelay` does not apply to an incoming stream we
            // hand over: set TCP_NODELAY here, or every small response waits
            // for Nagle's algorithm (40 ms stalls; Fetch ran at 1/4 speed).
            None => Box::pin(router.serve_with_incoming_shutdown(
                connections::limit(
                    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                    connection_limits,
                ),
                signal,
            )),
        };
        // A client that never closes its connection must not keep the
        // broker alive: after the grace period, stop waiting for it.
        let served = tokio::select! {
            served = serving_fut => served,
            _ = async {
                let _ = grace.wait_for(|stop| *stop).await;
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } => {
                tracing::warn!(grace_ms = SHUTDOWN_GRACE.as_millis() as u64,
                    "connections still open after the shutdown grace period; closing them");
                Ok(())
            }
        };
        serving.begin_shutdown();
        background.join().await;
        if let Some(metrics) = metrics {
            metrics.join().await;
        }
        let closing = serving.clone();
        let closed = tokio::task::spawn_blocking(move || closing.close()).await;
        served?;
        match closed {
            Ok(Ok(())) => {
                tracing::info!("all partitions flushed; bye");
                Ok(())
            }
            Ok(Err(e)) => Err(ServeError::Broker(e)),
            Err(e) => Err(ServeError::Broker(BrokerError::Internal(format!(
                "close task failed: {e}"
            )))),
        }
    });
    tracing::info!(%addr, "listening");
    Ok(RunningServer {
        addr,
        metrics_addr,
        broker,
        handle,
    })
}

/// The server future, whichever the kind of incoming connections.
type ServeFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<(), tonic::transport::Error>> + Send>,
>;

/// Loads the TLS files and the auth file of `config`, if set.
fn load_security(config: &BrokerConfig) -> Result<reload::Reloadable, ServeError> {
    let sec = &config.security;
    let tls = match (&sec.tls_cert, &sec.tls_key) {
        (Some(cert), Some(key)) => Some(Arc::new(tls::TlsState::load(tls::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: sec.tls_client_ca.clone(),
        })?)),
        _ => None,
    };
    let auth = match &sec.auth_file {
        Some(path) => {
            let store = crate::auth::AuthStore::load(path)?;
            tracing::info!(file = %path.display(), principals = store.registry().len(),
                "authentication on");
            Some(Arc::new(store))
        }
        None => None,
    };
    Ok(reload::Reloadable { tls, auth })
}

fn build_router(
    broker: &Arc<Broker>,
    config: &BrokerConfig,
    access: &auth::Access,
) -> Result<tonic::transport::server::Router, ServeError> {
    // tonic's own decode limit sits above ours, so that a request between the
    // two gets Strata's clear error rather than tonic's OUT_OF_RANGE.
    let request_limit = config.limits.max_request_bytes;
    let decode_limit = request_limit as usize + (1 << 20);
    let encode_limit = config.limits.max_fetch_bytes as usize * 2 + (1 << 20);
    let authenticate = access.interceptor();
    // Authentication runs first, so unauthenticated requests never wait
    // for (or hold) request budget.
    let budget = budget::Budget::new(config.limits.max_inflight_request_bytes, decode_limit);
    let log = LogServer::new(log::LogService::new(broker.clone()).with_access(access.clone()))
        .max_decoding_message_size(decode_limit)
        .max_encoding_message_size(encode_limit);
    let log = InterceptedService::new(
        budget::Budgeted::new(log, budget.clone()),
        authenticate.clone(),
    );
    let admin =
        AdminServer::new(admin::AdminService::new(broker.clone()).with_access(access.clone()))
            .max_decoding_message_size(decode_limit)
            .max_encoding_message_size(encode_limit);
    let admin = InterceptedService::new(
        budget::Budgeted::new(admin, budget.clone()),
        authenticate.clone(),
    );
    let groups =
        GroupsServer::new(groups::GroupsService::new(broker.clone()).with_access(access.clone()))
            .max_decoding_message_size(decode_limit)
            .max_encoding_message_size(encode_limit);
    let groups = InterceptedService::new(
        budget::Budgeted::new(groups, budget.clone()),
        authenticate.clone(),
    );
    let (health_reporter, health) = tonic_health::server::health_reporter();
    tokio::spawn(async move {
        health_reporter
            .set_serving::<LogServer<log::LogService>>()
            .await;
        health_reporter
            .set_serving::<AdminServer<admin::AdminService>>()
            .await;
        health_reporter
            .set_serving::<GroupsServer<groups::GroupsService>>()
            .await;
    });
    let reflection_builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection = reflection_builder()
        .build_v1()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    // Many tools (grpcurl before 1.9, Python's grpcio-reflection, Postman)
    // still speak only the v1alpha protocol.
    let reflection_v1alpha = reflection_builder()
        .build_v1alpha()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    // Health stays open; reflection follows `security.auth_reflection`.
    let reflection_access = match config.security.auth_reflection {
        ReflectionAccess::Authenticated => authenticate,
        ReflectionAccess::Open => auth::Access::open().interceptor(),
    };
    let reflection = InterceptedService::new(reflection, reflection_access.clone());
    let reflection_v1alpha = InterceptedService::new(reflection_v1alpha, reflection_access);
    Ok(tonic::transport::Server::builder()
        .max_concurrent_streams(Some(config.limits.max_concurrent_streams))
        .initial_stream_window_size(Some(HTTP2_STREAM_WINDOW_BYTES))
        .initial_connection_window_size(Some(HTTP2_CONNECTION_WINDOW_BYTES))
        .add_service(health)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(wrap(log, config))
        .add_service(wrap(admin, config))
        .add_service(wrap(groups, config)))
}

/// Wraps one of Strata's services: the request limit inside, the
/// observation (span, metrics, slow log) outside, so that the metrics count
/// the codes clients really receive.
fn wrap<S>(service: S, config: &BrokerConfig) -> observe::Observed<limits::RequestLimit<S>> {
    observe::Observed::new(
        limits::RequestLimit::new(service, config.limits.max_request_bytes),
        config.slow_request_ms,
    )
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only SIGINT will stop the broker");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
