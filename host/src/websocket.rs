//! The self-hosted WebSocket endpoint (no API Gateway): `GET /ws` upgrades
//! when the policy's CONNECT decision is 200, and the host serves API
//! Gateway's Management API shape for its own sockets
//! (`POST`/`DELETE /@connections/{id}`), so `deliver` reaches a self-hosted
//! host exactly as it reaches AWS.
//!
//! A socket ends on a close frame, a lost TCP connection, an unanswered
//! ping, 10 minutes without data, 2 hours of age (API Gateway's limits),
//! a send queue that overflows (a slow reader) or a `DELETE`; then the
//! DISCONNECT decision runs and its records go.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tokio::sync::{Notify, mpsc};
use tokio::time::{Instant, MissedTickBehavior};

use crate::delivery::{ConnectionSender, MAX_MESSAGE_BYTES, SendError};
use crate::service::{Handler, new_request_id};

/// The subprotocol that carries the token: `Sec-WebSocket-Protocol: bearer, <token>`.
pub const BEARER_PROTOCOL: &str = "bearer";

/// Bounds of the self-hosted endpoint.
#[derive(Debug, Clone)]
pub struct SocketLimits {
    /// Open sockets at once; more upgrades are refused with 503.
    pub max_connections: usize,
    /// Messages waiting for one socket; a reader that falls further behind
    /// is disconnected (memory stays bounded).
    pub send_queue: usize,
    /// Largest message, either way.
    pub max_message_bytes: usize,
    /// No data frame either way for this long: closed (API Gateway: 10 min).
    pub idle_timeout: Duration,
    /// Closed at this age (API Gateway: 2 h).
    pub max_age: Duration,
    /// A ping this often; no pong before the next one: closed.
    pub ping_interval: Duration,
    /// One frame's write may take this long.
    pub send_timeout: Duration,
}

impl Default for SocketLimits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            send_queue: 64,
            max_message_bytes: MAX_MESSAGE_BYTES,
            idle_timeout: Duration::from_secs(600),
            max_age: Duration::from_secs(7200),
            ping_interval: Duration::from_secs(30),
            send_timeout: Duration::from_secs(10),
        }
    }
}

/// The open sockets of this host, by connection id.
pub struct Sockets {
    open: Mutex<HashMap<String, SocketHandle>>,
    limits: SocketLimits,
    /// Signalled whenever a socket is removed (shutdown waits on it).
    removed: Notify,
}

#[derive(Clone)]
struct SocketHandle {
    queue: mpsc::Sender<Vec<u8>>,
    close: Arc<Notify>,
}

impl Sockets {
    pub fn new(limits: SocketLimits) -> Arc<Self> {
        Arc::new(Self {
            open: Mutex::new(HashMap::new()),
            limits,
            removed: Notify::new(),
        })
    }

    pub fn limits(&self) -> &SocketLimits {
        &self.limits
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, SocketHandle>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn remove(&self, connection_id: &str) -> Option<SocketHandle> {
        let handle = self.lock().remove(connection_id);
        self.removed.notify_waiters();
        handle
    }

    /// Queues a message for a socket: `Gone` when there is no such socket or
    /// its reader is too slow (then it is closed).
    pub fn send(&self, connection_id: &str, message: &[u8]) -> Result<(), SendError> {
        if message.len() > self.limits.max_message_bytes {
            return Err(SendError::Failed(format!(
                "message of {} bytes; the limit is {}",
                message.len(),
                self.limits.max_message_bytes
            )));
        }
        let Some(handle) = self.lock().get(connection_id).cloned() else {
            return Err(SendError::Gone);
        };
        match handle.queue.try_send(message.to_vec()) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(connection_id, "send queue full: a slow reader; closing it");
                self.remove(connection_id);
                handle.close.notify_one();
                Err(SendError::Gone)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(SendError::Gone),
        }
    }

    /// Closes a socket (`DELETE /@connections/{id}`); false when unknown.
    pub fn close(&self, connection_id: &str) -> bool {
        match self.remove(connection_id) {
            Some(handle) => {
                handle.close.notify_one();
                true
            }
            None => false,
        }
    }

    /// Closes every socket and waits (at most `within`) until their
    /// DISCONNECTs have run: for a graceful shutdown.
    pub async fn close_all(&self, within: Duration) {
        let handles: Vec<SocketHandle> = self.lock().values().cloned().collect();
        for handle in &handles {
            handle.close.notify_one();
        }
        let _ = tokio::time::timeout(within, async {
            loop {
                let removed = self.removed.notified();
                if self.is_empty() {
                    return;
                }
                removed.await;
            }
        })
        .await;
    }
}

/// Posting through [`Sockets`]: the host delivers to its own sockets.
#[async_trait::async_trait]
impl ConnectionSender for Sockets {
    async fn post(&self, connection_id: &str, message: &[u8]) -> Result<(), SendError> {
        self.send(connection_id, message)
    }
}

/// The token of an upgrade request: `Sec-WebSocket-Protocol: bearer, <token>`
/// first (it keeps the token out of URLs and access logs), else the query's
/// `idToken`. Also says whether the bearer subprotocol was offered.
pub fn upgrade_token(headers: &HeaderMap, query_token: Option<String>) -> (Option<String>, bool) {
    let offered: Vec<String> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|part| part.trim().to_owned())
        .filter(|part| !part.is_empty())
        .collect();
    match offered
        .iter()
        .position(|p| p.eq_ignore_ascii_case(BEARER_PROTOCOL))
    {
        Some(at) => (offered.get(at + 1).cloned(), true),
        None => (query_token, false),
    }
}

/// `GET /ws`: the CONNECT decision first; upgrade only on 200.
pub async fn upgrade(
    handler: Handler,
    sockets: Arc<Sockets>,
    upgrade: WebSocketUpgrade,
    headers: &HeaderMap,
    query_token: Option<String>,
) -> Response {
    if sockets.len() >= sockets.limits.max_connections {
        return (StatusCode::SERVICE_UNAVAILABLE, "Too many connections.").into_response();
    }
    let (token, bearer) = upgrade_token(headers, query_token);
    let connection_id = new_connection_id();
    let reply = handler
        .connect(&new_request_id(), &connection_id, token.as_deref())
        .await;
    if reply.status != 200 {
        let status =
            StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return (status, reply.body).into_response();
    }
    let upgrade = if bearer {
        upgrade.protocols([BEARER_PROTOCOL])
    } else {
        upgrade
    };
    let limits = sockets.limits.clone();
    let failed = (handler.clone(), connection_id.clone());
    upgrade
        .max_message_size(limits.max_message_bytes)
        .on_failed_upgrade(move |error| {
            // The records were stored; the socket never opened.
            let (handler, connection_id) = failed;
            tracing::warn!(connection_id, %error, "upgrade failed after CONNECT; disconnecting");
            tokio::spawn(async move {
                handler.disconnect(&new_request_id(), &connection_id).await;
            });
        })
        .on_upgrade(move |socket| serve_socket(socket, connection_id, handler, sockets))
}

/// An API Gateway-like connection id: 12 random bytes, URL-safe base64.
fn new_connection_id() -> String {
    let uuid = uuid::Uuid::new_v4();
    URL_SAFE_NO_PAD.encode(&uuid.as_bytes()[..12])
}

async fn serve_socket(
    mut socket: WebSocket,
    connection_id: String,
    handler: Handler,
    sockets: Arc<Sockets>,
) {
    let limits = sockets.limits.clone();
    let (queue, mut outgoing) = mpsc::channel(limits.send_queue.max(1));
    let close = Arc::new(Notify::new());
    sockets.lock().insert(
        connection_id.clone(),
        SocketHandle {
            queue,
            close: close.clone(),
        },
    );
    tracing::debug!(connection_id, "socket open");

    let opened = Instant::now();
    let mut last_data = opened;
    let mut ping = tokio::time::interval_at(opened + limits.ping_interval, limits.ping_interval);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut awaiting_pong = false;
    let reason = loop {
        let deadline = (last_data + limits.idle_timeout).min(opened + limits.max_age);
        tokio::select! {
            incoming = socket.recv() => match incoming {
                None | Some(Err(_)) => break "connection lost",
                Some(Ok(Message::Close(_))) => break "closed by the client",
                Some(Ok(Message::Pong(_))) => awaiting_pong = false,
                Some(Ok(Message::Ping(_))) => {} // answered by the library
                // No routes beyond $connect/$disconnect: data is ignored, but
                // it counts as activity.
                Some(Ok(_)) => last_data = Instant::now(),
            },
            message = outgoing.recv() => {
                // No sender left: the server removed this socket (DELETE, a
                // slow reader, shutdown), racing the `close` signal below.
                let Some(message) = message else {
                    close_with(&mut socket, &limits, 1000, "closed by the server").await;
                    break "closed by the server";
                };
                let frame = match String::from_utf8(message) {
                    Ok(text) => Message::Text(text.into()),
                    Err(bytes) => Message::Binary(bytes.into_bytes().into()),
                };
                match tokio::time::timeout(limits.send_timeout, socket.send(frame)).await {
                    Ok(Ok(())) => last_data = Instant::now(),
                    Ok(Err(_)) => break "connection lost",
                    Err(_) => break "send timed out (slow reader)",
                }
            }
            () = close.notified() => {
                close_with(&mut socket, &limits, 1000, "closed by the server").await;
                break "closed by the server";
            }
            _ = ping.tick() => {
                if awaiting_pong {
                    break "no pong";
                }
                awaiting_pong = true;
                let sent = tokio::time::timeout(limits.send_timeout, socket.send(Message::Ping(Vec::new().into()))).await;
                if !matches!(sent, Ok(Ok(()))) {
                    break "connection lost";
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                let why = if deadline == opened + limits.max_age { "maximum age" } else { "idle" };
                close_with(&mut socket, &limits, 1001, why).await;
                break why;
            }
        }
    };
    sockets.remove(&connection_id);
    let reply = handler.disconnect(&new_request_id(), &connection_id).await;
    tracing::debug!(
        connection_id,
        reason,
        status = reply.status,
        "socket closed"
    );
}

/// The closing handshake: our close frame, then the client's (briefly), so
/// the TCP connection is not torn down under a frame the client has yet to
/// read.
async fn close_with(socket: &mut WebSocket, limits: &SocketLimits, code: u16, reason: &str) {
    let frame = Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }));
    if !matches!(
        tokio::time::timeout(limits.send_timeout, socket.send(frame)).await,
        Ok(Ok(()))
    ) {
        return;
    }
    let _ = tokio::time::timeout(CLOSE_REPLY_WAIT, async {
        while let Some(Ok(message)) = socket.recv().await {
            if matches!(message, Message::Close(_)) {
                return;
            }
        }
    })
    .await;
}

/// How long a server-initiated close waits for the client's close frame.
const CLOSE_REPLY_WAIT: Duration = Duration::from_secs(2);
