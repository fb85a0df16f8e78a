//! How a client reaches a broker: plaintext or TLS (optionally with a
//! client certificate for mutual TLS), with or without a bearer token.
//!
//! TLS is on when the address starts with `https://` or any TLS file is
//! given; a bare `host:port` then means `https://host:port`. The broker's
//! certificate is verified against `ca` (no system roots are built in, so
//! TLS needs a CA file) and the host name of the address (an IP address
//! must appear in the certificate's subject alternative names).
//!
//! ```no_run
//! use strata::client::{Client, ClientTls, ConnectOptions};
//! # async fn demo() -> Result<(), strata::client::ClientError> {
//! let options = ConnectOptions {
//!     tls: Some(ClientTls {
//!         ca: Some("ca.pem".into()),
//!         cert: Some("client.pem".into()),
//!         key: Some("client.key".into()),
//!     }),
//!     token: Some("s3cret".into()),
//! };
//! let client = Client::connect_with("broker.internal:50051", &options).await?;
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::{
    ClientError, CONNECTION_WINDOW_BYTES, CONNECT_TIMEOUT, KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT,
    STREAM_WINDOW_BYTES,
};

/// The transport every generated client of the library runs on: a tonic
/// channel that adds the bearer token (if any) to each call.
pub type Connection = InterceptedService<Channel, BearerToken>;

/// TLS files of a client (PEM).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// CA certificate(s) the broker's certificate must chain to.
    pub ca: Option<PathBuf>,
    /// Client certificate chain, for brokers that require mutual TLS.
    pub cert: Option<PathBuf>,
    /// The client certificate's private key.
    pub key: Option<PathBuf>,
}

/// Everything about connecting besides the address. `Debug` does not show
/// the token.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ConnectOptions {
    /// TLS settings; `None` with an `https://` address is an error (no CA).
    pub tls: Option<ClientTls>,
    /// Bearer token sent as `authorization: Bearer TOKEN` on every call.
    pub token: Option<String>,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("tls", &self.tls)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Adds `authorization: Bearer TOKEN` to every request (nothing without a
/// token). The header is marked sensitive (never HPACK-indexed) and `Debug`
/// does not show it.
#[derive(Clone, Default)]
pub struct BearerToken(Option<MetadataValue<Ascii>>);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = self.0.as_ref().map(|_| "<redacted>");
        f.debug_tuple("BearerToken").field(&shown).finish()
    }
}

impl BearerToken {
    /// A token interceptor.
    ///
    /// # Errors
    /// [`ClientError::Options`] if the token is not printable ASCII.
    pub fn new(token: Option<&str>) -> Result<BearerToken, ClientError> {
        let Some(token) = token else {
            return Ok(BearerToken(None));
        };
        let token = token.trim();
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ClientError::Options {
                reason: "the token must be printable ASCII without spaces".into(),
            });
        }
        let mut value = format!("Bearer {token}")
            .parse::<MetadataValue<Ascii>>()
            .map_err(|_| ClientError::Options {
                reason: "the token must be printable ASCII".into(),
            })?;
        value.set_sensitive(true);
        Ok(BearerToken(Some(value)))
    }
}

impl Interceptor for BearerToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|e| ClientError::Options {
        reason: format!("cannot read TLS {what} {}: {e}", path.display()),
    })
}

/// Turns an address and options into an endpoint with the client's
/// connection settings.
///
/// # Errors
/// [`ClientError::InvalidAddress`] for a bad address, [`ClientError::Options`]
/// for unreadable TLS files or inconsistent options.
pub fn endpoint(addr: &str, options: &ConnectOptions) -> Result<Endpoint, ClientError> {
    let tls_wanted = options.tls.is_some() || addr.starts_with("https://");
    let uri = match (addr.contains("://"), tls_wanted) {
        (true, _) => addr.to_string(),
        (false, true) => format!("https://{addr}"),
        (false, false) => format!("http://{addr}"),
    };
    if tls_wanted && uri.starts_with("http://") {
        return Err(ClientError::Options {
            reason: format!(
                "'{addr}' is plaintext (http://) but TLS options are set; use https://"
            ),
        });
    }
    let mut endpoint = Endpoint::from_shared(uri).map_err(|e| ClientError::InvalidAddress {
        addr: addr.to_string(),
        reason: e.to_string(),
    })?;
    if tls_wanted {
        endpoint = endpoint
            .tls_config(tls_config(options.tls.as_ref())?)
            .map_err(|e| ClientError::Options {
                reason: format!("TLS setup failed: {e}"),
            })?;
    }
    Ok(endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(false)
        .tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES))
}

fn tls_config(tls: Option<&ClientTls>) -> Result<ClientTlsConfig, ClientError> {
    let tls = tls.cloned().unwrap_or_default();
    let Some(ca) = &tls.ca else {
        return Err(ClientError::Options {
            reason: "TLS needs the CA that signed the broker's certificate (--tls-ca FILE)".into(),
        });
    };
    let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca, "CA")?));
    match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            config = config.identity(Identity::from_pem(
                read(cert, "certificate")?,
                read(key, "key")?,
            ));
        }
        (None, None) => {}
        _ => {
            return Err(ClientError::Options {
                reason: "a client certificate needs both --tls-cert and --tls-key".into(),
            })
        }
    }
    Ok(config)
}

/// Connects to `addr` with `options`.
///
/// # Errors
/// See [`endpoint`], and [`ClientError::Connect`] if the broker cannot be
/// reached or the TLS handshake fails.
pub async fn connect(addr: &str, options: &ConnectOptions) -> Result<Connection, ClientError> {
    let endpoint = endpoint(addr, options)?;
    let token = BearerToken::new(options.token.as_deref())?;
    let channel = endpoint
        .connect()
        .await
        .map_err(|source| ClientError::Connect {
            addr: addr.to_string(),
            source,
        })?;
    Ok(InterceptedService::new(channel, token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_is_chosen_by_scheme_or_options() {
        let plain = endpoint("127.0.0.1:1", &ConnectOptions::default()).unwrap();
        assert_eq!(plain.uri().scheme_str(), Some("http"));
        let e = endpoint("https://127.0.0.1:1", &ConnectOptions::default()).unwrap_err();
        assert!(e.to_string().contains("--tls-ca"), "{e}");
        let options = ConnectOptions {
            tls: Some(ClientTls {
                ca: Some("/nonexistent/ca.pem".into()),
                ..Default::default()
            }),
            token: None,
        };
        let e = endpoint("127.0.0.1:1", &options).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
        let e = endpoint("http://127.0.0.1:1", &options).unwrap_err();
        assert!(e.to_string().contains("use https://"), "{e}");
    }

    #[test]
    fn tokens_must_be_ascii() {
        assert!(BearerToken::new(Some("abc")).is_ok());
        assert!(BearerToken::new(Some("ä")).is_err());
        assert!(BearerToken::new(Some("a b")).is_err());
        assert!(BearerToken::new(Some("")).is_err());
        let shown = format!(
            "{:?} {:?}",
            BearerToken::new(Some("s3cret")).unwrap(),
            ConnectOptions {
                tls: None,
                token: Some("s3cret".into())
            }
        );
        assert!(
            !shown.contains("s3cret") && shown.contains("<redacted>"),
            "{shown}"
        );
    }
}
