//! The metrics listener: plain HTTP/1.1 (hyper) on its own address, never
//! the gRPC port. `GET /metrics` answers the OpenMetrics text; anything
//! else is 404 (or 405 for another method on `/metrics`).
//!
//! With authentication on and `auth_metrics = "authenticated"` (the
//! default), a scrape must carry `Authorization: Bearer TOKEN` with the
//! token of any principal of the auth file (Prometheus: `authorization:
//! { credentials: … }` in the scrape config); otherwise it gets 401 and
//! counts in `strata_auth_failures_total`.
//!
//! Bounded like every other listener: at most [`MAX_CONNECTIONS`] scrapers
//! at once (more are closed at once), and a client must send its request
//! headers within [`HEADER_TIMEOUT`]. It stops accepting when the broker
//! begins shutting down.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::auth::AuthStore;
use crate::broker::Broker;

/// Scrape connections served at once.
pub const MAX_CONNECTIONS: usize = 16;
/// How long a scraper may take to send its request headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The OpenMetrics text format, which Prometheus asks for and parses.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A running metrics listener.
#[derive(Debug)]
pub struct MetricsServer {
    /// The bound address (with the real port when 0 was asked for).
    pub addr: SocketAddr,
    handle: tokio::task::JoinHandle<()>,
}

impl MetricsServer {
    /// Binds `addr` and serves `broker`'s metrics until it shuts down;
    /// with `auth`, only to scrapers that present a principal's token.
    ///
    /// # Errors
    /// The address cannot be bound.
    pub async fn start(
        addr: SocketAddr,
        broker: Arc<Broker>,
        auth: Option<Arc<AuthStore>>,
    ) -> std::io::Result<MetricsServer> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let handle = tokio::spawn(accept_loop(listener, broker, auth));
        tracing::info!(%addr, "serving metrics at /metrics");
        Ok(MetricsServer { addr, handle })
    }

    /// Waits for the listener to stop (after the broker's shutdown began).
    pub async fn join(self) {
        let _ = self.handle.await;
    }
}

async fn accept_loop(listener: TcpListener, broker: Arc<Broker>, auth: Option<Arc<AuthStore>>) {
    let mut shutdown = broker.shutdown_signal();
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, usually: back off instead of
                    // spinning on the same error.
                    tracing::warn!(error = %e, "metrics listener cannot accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = async { drop(shutdown.wait_for(|stop| *stop).await) } => return,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::debug!("too many metrics connections; closing one");
            continue;
        };
        let (broker, auth) = (broker.clone(), auth.clone());
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req| respond(req, broker.clone(), auth.clone()));
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(error = %e, "metrics connection ended with an error");
            }
            drop(permit);
        });
    }
}

/// Whether the request carries the bearer token of a known principal.
fn authenticated(request: &Request<Incoming>, auth: &AuthStore) -> bool {
    request
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|token| auth.registry().by_token(token.trim().as_bytes()).is_some())
}

async fn respond(
    request: Request<Incoming>,
    broker: Arc<Broker>,
    auth: Option<Arc<AuthStore>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if let Some(auth) = &auth {
        if !authenticated(&request, auth) {
            super::auth_failure();
            let mut r = plain(
                StatusCode::UNAUTHORIZED,
                "unauthenticated: scraping needs Authorization: Bearer TOKEN of a principal\n",
            );
            r.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                hyper::header::HeaderValue::from_static("Bearer realm=\"strata\""),
            );
            return Ok(r);
        }
    }
    if request.uri().path() != "/metrics" {
        return Ok(plain(
            StatusCode::NOT_FOUND,
            "not found: the metrics are at /metrics\n",
        ));
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut r = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET (and HEAD) are allowed\n",
        );
        r.headers_mut().insert(
            hyper::header::ALLOW,
            hyper::header::HeaderValue::from_static("GET, HEAD"),
        );
        return Ok(r);
    }
    let rendered = tokio::task::spawn_blocking(move || super::render(&broker)).await;
    Ok(match rendered {
        Ok(Ok(text)) => {
            let mut r = Response::new(Full::new(Bytes::from(text)));
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(CONTENT_TYPE),
            );
            r
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "encoding metrics failed");
            plain(StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n")
        }
        Err(e) => {
            tracing::error!(error = %e, "metrics task failed");
            plain(StatusCode::INTERNAL_SERVER_ERROR, "metrics task failed\n")
        }
    })
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
