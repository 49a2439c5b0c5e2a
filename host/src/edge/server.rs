//! The accept loop behind both listeners. `axum::serve` sets no header-read
//! timeout and accepts without bound, so a peer that opens connections and
//! never finishes a request (slowloris) holds file descriptors until the
//! process can accept nothing else. Here, with hyper's own knobs:
//!
//! - a connection must deliver a whole request head within `header_timeout`
//!   of opening, and again within it of each response (hyper starts the timer
//!   when it waits for a head, so this is also the keep-alive idle timeout);
//! - at most `max_connections` are open at once, upgraded WebSockets included
//!   (the permit travels inside the stream that the WebSocket takes over);
//!   beyond that the loop stops accepting and new connections wait in the
//!   kernel's queue until one closes;
//! - the cap never exceeds what the open-file limit leaves (see
//!   [`connection_budget`]), so an accept never fails for want of a file.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tower::ServiceExt;

/// What one listener allows its peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Time to send a request head, from connecting or from the last response.
    pub header_timeout: Duration,
    /// Open connections at once, upgraded WebSockets included.
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            // MAX_WEBSOCKETS' default plus room for plain requests.
            max_connections: 11_000,
        }
    }
}

/// The management listener's cap: publishers and operators, a handful.
pub const MANAGEMENT_MAX_CONNECTIONS: usize = 256;

/// Open files kept back from the public listener: the management listener's
/// connections, and the store's, key set's and Management API's clients.
const RESERVED_FILES: u64 = MANAGEMENT_MAX_CONNECTIONS as u64 + 128;

/// Raises the soft open-file limit to the hard one (as Go's runtime does),
/// and returns `wanted` or, if the limit leaves less, what it leaves.
pub fn connection_budget(wanted: usize) -> usize {
    let files = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(files) => files,
        Err(error) => {
            tracing::warn!(%error, "cannot read the open-file limit; the connection cap is not checked against it");
            return wanted;
        }
    };
    let room = usize::try_from(files.saturating_sub(RESERVED_FILES))
        .unwrap_or(usize::MAX)
        .max(1);
    if room < wanted {
        tracing::warn!(
            open_file_limit = files,
            max_connections = room,
            "the open-file limit leaves room for fewer connections than MAX_CONNECTIONS; \
             capping there (raise the limit, e.g. LimitNOFILE=, to allow more)"
        );
    }
    wanted.min(room)
}

/// Serves `app` on `listener` until `stopping` turns true; then stops
/// accepting, asks open connections to finish their request and close, and
/// returns when they have (upgraded WebSockets are not waited for: their
/// owner closes them).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    mut stopping: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    // Every connection task holds a receiver; when all are gone, all are done.
    let (done_tx, done_rx) = watch::channel(());
    loop {
        let accepted = tokio::select! {
            biased;
            () = stopped(&mut stopping) => break,
            accepted = accept(&listener, &slots) => accepted,
        };
        let Some((stream, slot, peer)) = accepted else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = app
            .clone()
            .map_request(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            });
        let connection = builder
            .serve_connection(
                TokioIo::new(Counted {
                    stream,
                    _slot: slot,
                }),
                TowerToHyperService::new(service),
            )
            .with_upgrades();
        let mut stopping = stopping.clone();
        let done = done_rx.clone();
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => finished(result, peer),
                () = stopped(&mut stopping) => {
                    connection.as_mut().graceful_shutdown();
                    finished(connection.await, peer);
                }
            }
            drop(done);
        });
    }
    drop(listener);
    drop(done_rx);
    done_tx.closed().await;
}

async fn stopped(stopping: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`: drop it here.
    let _ = stopping.wait_for(|stopping| *stopping).await;
}

/// The next connection, once a slot is free. `None` after an accept error
/// (logged; after one that is not the peer's, a pause, as hyper does).
async fn accept(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
) -> Option<(TcpStream, OwnedSemaphorePermit, SocketAddr)> {
    let slot = Arc::clone(slots)
        .acquire_owned()
        .await
        .expect("the slots are never closed");
    match listener.accept().await {
        Ok((stream, peer)) => Some((stream, slot, peer)),
        Err(error) if is_peer_error(&error) => None,
        Err(error) => {
            tracing::error!(%error, "accept failed; pausing 100 ms");
            tokio::time::sleep(Duration::from_millis(100)).await;
            None
        }
    }
}

fn is_peer_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

fn finished(result: hyper::Result<()>, peer: SocketAddr) {
    if let Err(error) = result {
        // Timeouts, resets and malformed requests: the peer's doing.
        tracing::debug!(%peer, %error, "connection ended");
    }
}

/// A connection that holds its slot until it is dropped, also after a
/// WebSocket upgrade has taken it over.
struct Counted {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
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
