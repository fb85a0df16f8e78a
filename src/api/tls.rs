//! TLS (and mutual TLS) on the gRPC listener, with certificates that can be
//! replaced while the broker runs.
//!
//! tonic's `ServerTlsConfig` is fixed at start, so Strata accepts TCP
//! itself: [`incoming`] runs the accept loop, hands every new connection to
//! its own task that does the rustls handshake (bounded by a timeout, so a
//! client that stalls mid-handshake delays nobody else), and passes finished
//! [`TlsConnection`]s to tonic. Each handshake uses the [`ServerConfig`] in
//! force at that moment; [`TlsState::reload`] builds a new one from the
//! files and swaps it in. Connections already open keep the session they
//! negotiated, so a reload never drops a connection. A reload that fails
//! (a half-written file, a key that does not match) keeps the old
//! configuration and is logged; at start the same failure is a start-up
//! error.
//!
//! With a client CA (`--tls-client-ca`), every client must present a
//! certificate signed by it; the certificate's subject common name is
//! offered to authentication as [`PeerInfo::cert_subject`].

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use super::x509::subject_common_name;

/// Handshakes in progress at once; connections beyond are closed at once
/// (a flood of stalled handshakes cannot hold unbounded memory).
pub const MAX_PENDING_HANDSHAKES: usize = 1024;

/// The PEM files TLS is configured from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Server certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// Server private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA certificates (PEM) that client certificates must chain to; when
    /// set, a client certificate is required.
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    /// The files, for change detection.
    pub fn paths(&self) -> Vec<&Path> {
        let mut v = vec![self.cert.as_path(), self.key.as_path()];
        if let Some(ca) = &self.client_ca {
            v.push(ca);
        }
        v
    }
}

/// A TLS file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read.
    #[error("cannot read TLS {what} {path}: {source}")]
    Read {
        /// `certificate`, `private key` or `client CA`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The file does not hold what it should, or the parts do not fit.
    #[error("invalid TLS {what} {path}: {reason}")]
    Invalid {
        /// `certificate`, `private key` or `client CA`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The TLS configuration in force, replaceable at run time.
#[derive(Debug)]
pub struct TlsState {
    files: TlsFiles,
    config: RwLock<Arc<ServerConfig>>,
}

impl TlsState {
    /// Loads the files.
    ///
    /// # Errors
    /// [`TlsError`] naming the file.
    pub fn load(files: TlsFiles) -> Result<TlsState, TlsError> {
        let config = build_config(&files)?;
        Ok(TlsState {
            files,
            config: RwLock::new(Arc::new(config)),
        })
    }

    /// The files this state reads.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Re-reads the files; new handshakes use them from now on.
    ///
    /// # Errors
    /// [`TlsError`]; the previous configuration stays in force.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = Arc::new(build_config(&self.files)?);
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = config;
        Ok(())
    }

    fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(
            self.config
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn certificates(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(what, path)?;
    let invalid = |reason: String| TlsError::Invalid {
        what,
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(e.to_string()))?;
    if certs.is_empty() {
        return Err(invalid("no PEM CERTIFICATE block found".into()));
    }
    Ok(certs)
}

fn build_config(files: &TlsFiles) -> Result<ServerConfig, TlsError> {
    let certs = certificates("certificate", &files.cert)?;
    let key_pem = read("private key", &files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Invalid {
        what: "private key",
        path: files.key.clone(),
        reason: e.to_string(),
    })?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Invalid {
            what: "certificate",
            path: files.cert.clone(),
            reason: e.to_string(),
        })?;
    let builder = match &files.client_ca {
        Some(ca_path) => {
            let invalid = |reason: String| TlsError::Invalid {
                what: "client CA",
                path: ca_path.clone(),
                reason,
            };
            let mut roots = RootCertStore::empty();
            for ca in certificates("client CA", ca_path)? {
                roots.add(ca).map_err(|e| invalid(e.to_string()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| invalid(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Invalid {
            what: "private key",
            path: files.key.clone(),
            reason: format!("does not fit the certificate {}: {e}", files.cert.display()),
        })?;
    // gRPC is HTTP/2 only; tonic's client insists on negotiating "h2".
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// What authentication learns about a TLS connection.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// The client's address.
    pub remote_addr: Option<SocketAddr>,
    /// The subject common name of the client certificate (mTLS only).
    pub cert_subject: Option<Arc<str>>,
}

/// A connection whose TLS handshake has completed.
#[derive(Debug)]
pub struct TlsConnection {
    stream: TlsStream<TcpStream>,
    peer: PeerInfo,
}

impl Connected for TlsConnection {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.peer.clone()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Accepts connections on `listener` and yields those whose TLS handshake
/// completed within `handshake_timeout`. The accept loop ends when tonic
/// drops the stream (at shutdown).
pub fn incoming(
    listener: TcpListener,
    state: Arc<TlsState>,
    handshake_timeout: Duration,
) -> ReceiverStream<Result<TlsConnection, io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(accept_loop(listener, state, handshake_timeout, tx));
    ReceiverStream::new(rx)
}

type ConnectionSender = mpsc::Sender<Result<TlsConnection, io::Error>>;

async fn accept_loop(
    listener: TcpListener,
    state: Arc<TlsState>,
    handshake_timeout: Duration,
    tx: ConnectionSender,
) {
    let pending = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    loop {
        let accepted = tokio::select! {
            _ = tx.closed() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, remote) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off briefly rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = pending.clone().try_acquire_owned() else {
            tracing::warn!(%remote, limit = MAX_PENDING_HANDSHAKES,
                "too many TLS handshakes in progress; closing the new connection");
            continue;
        };
        // Small responses must not wait for Nagle's algorithm.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let acceptor = state.acceptor();
        let tx = tx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let cert_subject = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|certs| certs.first())
                        .and_then(|leaf| subject_common_name(leaf.as_ref()))
                        .map(Arc::<str>::from);
                    let peer = PeerInfo {
                        remote_addr: Some(remote),
                        cert_subject,
                    };
                    let _ = tx.send(Ok(TlsConnection { stream, peer })).await;
                }
                Ok(Err(e)) => tracing::debug!(%remote, error = %e, "TLS handshake failed"),
                Err(_) => {
                    tracing::debug!(%remote, timeout_ms = handshake_timeout.as_millis() as u64,
                    "TLS handshake timed out")
                }
            }
        });
    }
}
