//! The cap on open client connections (`limits.max_connections`).
//!
//! [`limit`] wraps the stream of accepted connections: each connection takes
//! a permit of a semaphore and gives it back when it closes. A connection
//! accepted while every permit is taken is closed at once, before any HTTP/2
//! is spoken, so no gRPC status can be sent on it: the client sees
//! `UNAVAILABLE` (connection closed), and the broker logs a warning that
//! names the limit (at the 1st, 2nd, 4th, 8th… refusal, so a flood cannot
//! flood the log). Closing beats leaving the connection in the kernel's
//! accept queue, where the client would hang without an answer.
//!
//! The same wrapper counts connections for the metrics: accepted, refused,
//! closed for resetting streams too fast, and open now (a [`Limited`]
//! connection counts until it is dropped). It also watches the bytes each
//! client sends for `RST_STREAM` frames and fails the connection's reads
//! once they pass `limits.max_stream_resets_per_sec` ([`super::resets`]);
//! hyper then drops the connection.

use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::Connected;

use super::resets::{FrameScanner, ResetWindow};

static CONNECTED: AtomicI64 = AtomicI64::new(0);
static ACCEPTED: AtomicU64 = AtomicU64::new(0);
static REFUSED: AtomicU64 = AtomicU64::new(0);
static CLOSED_FOR_RESETS: AtomicU64 = AtomicU64::new(0);

/// Client connections open now, on every gRPC listener of this process.
pub fn connected() -> i64 {
    CONNECTED.load(Ordering::Relaxed)
}

/// Client connections accepted (and kept) since the process started.
pub fn accepted() -> u64 {
    ACCEPTED.load(Ordering::Relaxed)
}

/// Client connections closed at once because `max_connections` were open.
pub fn refused() -> u64 {
    REFUSED.load(Ordering::Relaxed)
}

/// Client connections closed because they reset streams faster than
/// `max_stream_resets_per_sec`.
pub fn closed_for_resets() -> u64 {
    CLOSED_FOR_RESETS.load(Ordering::Relaxed)
}

/// The limits [`limit`] enforces on each connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Open connections at once (`limits.max_connections`).
    pub max_connections: usize,
    /// `RST_STREAM` frames a connection may send per second; 0 = no limit
    /// (`limits.max_stream_resets_per_sec`).
    pub max_stream_resets_per_sec: u32,
}

/// An accepted connection holding one of the `max_connections` permits
/// until it is dropped, and watching its client's stream resets.
#[derive(Debug)]
pub struct Limited<IO> {
    io: IO,
    _permit: OwnedSemaphorePermit,
    frames: FrameScanner,
    resets: ResetWindow,
}

impl<IO> Limited<IO> {
    fn new(io: IO, permit: OwnedSemaphorePermit, max_stream_resets_per_sec: u32) -> Self {
        ACCEPTED.fetch_add(1, Ordering::Relaxed);
        CONNECTED.fetch_add(1, Ordering::Relaxed);
        Limited {
            io,
            _permit: permit,
            frames: FrameScanner::default(),
            resets: ResetWindow::new(max_stream_resets_per_sec),
        }
    }

    /// Counts the resets in `fresh` (bytes just read from the client).
    ///
    /// # Errors
    ///
    /// `ConnectionAborted` once the client reset too many streams.
    fn watch(&mut self, fresh: &[u8]) -> std::io::Result<()> {
        let resets = self.frames.scan(fresh);
        if resets == 0 {
            return Ok(());
        }
        let before = self.resets.is_flooded();
        self.resets.record(resets, Instant::now()).map_err(|flood| {
            if !before {
                let n = CLOSED_FOR_RESETS.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::warn!(limit = flood.limit, closed_total = n, "{flood}");
                }
            }
            std::io::Error::new(std::io::ErrorKind::ConnectionAborted, flood)
        })
    }
}

impl<IO> Drop for Limited<IO> {
    fn drop(&mut self) {
        CONNECTED.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Caps the connections of `incoming` at `max_connections` open at once;
/// connections beyond it are dropped (closed) as they are accepted.
/// Accept errors pass through unchanged.
pub fn limit<S, IO>(
    incoming: S,
    limits: ConnectionLimits,
) -> impl Stream<Item = std::io::Result<Limited<IO>>>
where
    S: Stream<Item = std::io::Result<IO>>,
{
    let max_connections = limits.max_connections;
    let permits = Arc::new(Semaphore::new(max_connections));
    let refused = AtomicU64::new(0);
    incoming.filter_map(move |accepted| {
        let io = match accepted {
            Ok(io) => io,
            Err(e) => return Some(Err(e)),
        };
        match permits.clone().try_acquire_owned() {
            Ok(permit) => Some(Ok(Limited::new(
                io,
                permit,
                limits.max_stream_resets_per_sec,
            ))),
            Err(_) => {
                REFUSED.fetch_add(1, Ordering::Relaxed);
                let n = refused.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::warn!(
                        limit = max_connections,
                        refused_total = n,
                        "connection refused: max_connections is {max_connections} \
                         (limits.max_connections, --max-connections)"
                    );
                }
                None // dropping `io` closes the connection
            }
        }
    })
}

impl<IO: Connected> Connected for Limited<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Limited<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.io).poll_read(cx, buf))?;
        let this = &mut *self;
        Poll::Ready(this.watch(&buf.filled()[before..]))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Limited<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_beyond_the_limit_are_dropped_and_permits_come_back() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<std::io::Result<u32>>();
        let limits = ConnectionLimits {
            max_connections: 2,
            max_stream_resets_per_sec: 0,
        };
        let stream = limit(
            tokio_stream::wrappers::UnboundedReceiverStream::new(rx),
            limits,
        );
        tokio::pin!(stream);
        for i in 0..3 {
            tx.send(Ok(i)).unwrap();
        }
        tx.send(Err(std::io::Error::other("accept failed")))
            .unwrap();
        let first = stream.next().await.unwrap().unwrap();
        let _second = stream.next().await.unwrap().unwrap();
        // The third is refused (skipped); the accept error passes through.
        assert!(stream.next().await.unwrap().is_err());
        drop(first);
        tx.send(Ok(9)).unwrap();
        assert_eq!(stream.next().await.unwrap().unwrap().io, 9);
    }
}
