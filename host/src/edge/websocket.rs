//! The self-hosted WebSocket endpoint (no API Gateway): `GET /ws` upgrades
//! when the policy's CONNECT decision is 200, and the host serves API
//! Gateway's Management API shape for its own sockets
//! (`POST`/`DELETE /@connections/{id}`), so `deliver` reaches a self-hosted
//! host exactly as it reaches AWS.
//!
//! A socket ends on a close frame, a lost TCP connection, an unanswered
//! ping, 10 minutes without data, 2 hours of age (API Gateway's limits),
//! a send queue that overflows (a slow reader), a `DELETE`, or the token
//! it was authorised with expiring (close code 4001 `token expired`, the
//! grace window after its `exp`; a `refresh_required` message comes first);
//! then the DISCONNECT decision runs and its records go.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use futures_util::SinkExt;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, TryAcquireError, mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};

use crate::delivery::{Closing, ConnectionSender, MAX_MESSAGE_BYTES, SendError};
use crate::service::{Current, Handler, new_request_id};
use crate::telemetry;
use crate::wit::types::Response as PolicyResponse;

pub use gitgazer_ws_event::BEARER_PROTOCOL;
use gitgazer_ws_event::offered_bearer_token;

/// Bounds of the self-hosted endpoint.
#[derive(Debug, Clone)]
pub struct SocketLimits {
    /// Open sockets at once; more upgrades are refused with 503.
    pub max_connections: usize,
    /// Open sockets of one user (by `sub`) at once; more are refused with
    /// 503, so one valid token cannot take every slot.
    pub max_per_user: usize,
    /// Bytes waiting for one socket (each message also counts
    /// [`QUEUED_MESSAGE_OVERHEAD`]); a reader that falls further behind is
    /// disconnected, so memory stays bounded however slow it is.
    pub send_queue_bytes: usize,
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
    /// How long after its token's `exp` a socket stays open without a
    /// refresh (deliveries stop at `exp`); then it is closed with 4001.
    pub auth_grace: Duration,
}

impl Default for SocketLimits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_per_user: 32,
            send_queue_bytes: 1024 * 1024,
            max_message_bytes: MAX_MESSAGE_BYTES,
            idle_timeout: Duration::from_secs(600),
            max_age: Duration::from_secs(7200),
            ping_interval: Duration::from_secs(30),
            send_timeout: Duration::from_secs(10),
            auth_grace: Duration::from_secs(DEFAULT_AUTH_GRACE_SECONDS),
        }
    }
}

/// The default grace window after a token's `exp` (Ably uses 30 s,
/// Centrifugo 25 s).
pub const DEFAULT_AUTH_GRACE_SECONDS: u64 = 30;

/// The close code of a socket whose token expired: get a fresh token and
/// reconnect.
pub const TOKEN_EXPIRED_CODE: u16 = Closing::TokenExpired.code();
/// Its close reason.
pub const TOKEN_EXPIRED_REASON: &str = Closing::TokenExpired.reason();
/// A socket hears `refresh_required` at most this long before its token's
/// `exp` (and at most half the token's remaining life at CONNECT).
pub const REFRESH_NOTICE: Duration = Duration::from_secs(60);

/// A refresh frame is at most this long (a text frame over it closes the
/// socket with 1009: the only frame a client sends is a refresh).
pub use gitgazer_ws_event::MAX_REFRESH_FRAME_BYTES;
/// At most one refresh per this long…
pub const REFRESH_MIN_INTERVAL: Duration = Duration::from_secs(10);
/// …and at most [`REFRESHES_PER_MINUTE`] in any minute; beyond: 4029.
pub const REFRESHES_PER_MINUTE: usize = 5;
/// The close code and reason of a socket that refreshes too often.
pub const RATE_LIMITED_CODE: u16 = 4029;
pub const RATE_LIMITED_REASON: &str = "rate limited";

/// The token of a refresh frame; `None` for any other text (ignored, as
/// before refreshes existed).
fn refresh_frame(text: &str) -> Option<Option<String>> {
    gitgazer_ws_event::refresh_frame_token(text)
}

/// How often a socket may refresh: one per [`REFRESH_MIN_INTERVAL`],
/// [`REFRESHES_PER_MINUTE`] per minute.
#[derive(Debug, Default)]
struct RefreshLimiter {
    recent: std::collections::VecDeque<Instant>,
}

impl RefreshLimiter {
    /// Whether a refresh at `now` is allowed (and counts it if so).
    fn allow(&mut self, now: Instant) -> bool {
        while self
            .recent
            .front()
            .is_some_and(|at| now.duration_since(*at) >= Duration::from_secs(60))
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= REFRESHES_PER_MINUTE
            || self
                .recent
                .back()
                .is_some_and(|at| now.duration_since(*at) < REFRESH_MIN_INTERVAL)
        {
            return false;
        }
        self.recent.push_back(now);
        true
    }
}

/// What a socket is authorised with: the token its CONNECT (or last
/// refresh) verified, and where its records say it lives.
pub struct SocketAuth {
    token: String,
    expires_at: Option<u64>,
    endpoint: String,
    /// When the socket connected, RFC 3339 UTC (as its records say).
    connected_at: String,
}

/// When a socket's token stops authorising it: when to tell the client to
/// refresh, when deliveries stop, when the socket is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AuthWindow {
    /// The token's `exp`, seconds since the Unix epoch.
    expires_at: u64,
    /// When `refresh_required` is sent (`None`: sent already).
    notice_at: Option<Instant>,
    /// `exp` plus the grace window: closed with 4001.
    close_at: Instant,
}

impl AuthWindow {
    /// The window of a token expiring at `expires_at`, seen at `now`.
    fn new(expires_at: u64, grace: Duration, now: SystemTime) -> Self {
        let now = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        let until_exp = Duration::from_secs(expires_at)
            .saturating_sub(now)
            // A far-future exp must not overflow an Instant.
            .min(LONGEST_SOCKET_LIMIT);
        let notice = REFRESH_NOTICE.min(until_exp / 2);
        let start = Instant::now();
        Self {
            expires_at,
            notice_at: Some(start + (until_exp - notice)),
            close_at: start + until_exp + grace,
        }
    }

    /// `{"type":"refresh_required","expiresIn":S}`: seconds until `exp`
    /// (relative, so the client's clock does not matter).
    fn notice(&self, now: SystemTime) -> String {
        let now = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        format!(
            r#"{{"type":"refresh_required","expiresIn":{}}}"#,
            self.expires_at.saturating_sub(now)
        )
    }
}

/// The longest idle timeout, age or ping interval a socket can have.
pub const LONGEST_SOCKET_LIMIT: Duration = Duration::from_secs(366 * 24 * 3600);

/// What a queued message costs beyond its bytes (the buffer and the queue's
/// slot), so that a flood of tiny messages is bounded too.
pub const QUEUED_MESSAGE_OVERHEAD: usize = 64;

/// A socket's read buffer. tungstenite allocates it when the socket opens
/// and zero-fills up to this much before every read, 128 KiB by default: a
/// memset per incoming frame and 128 KiB of memory per socket. Clients send
/// only pongs, close frames and refresh frames (at most 16 KiB, read in a
/// few chunks), so 4 KiB is plenty.
const READ_BUFFER_BYTES: usize = 4 * 1024;

/// What one write to a socket carries at most when messages are queued for
/// it (a burst of events): each write is a system call and, on the client's
/// side, a wake-up and a read, whatever it carries.
const WRITE_BATCH_BYTES: usize = 64 * 1024;

/// Why the server ends a socket: the close frame it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerClose {
    /// `DELETE /@connections/{id}`.
    Deleted,
    /// The send queue overflowed.
    SlowReader,
    /// The host is shutting down.
    Shutdown,
    /// Ended on purpose (`DELETE /@connections/{id}?code=…`: its user was
    /// evicted, say).
    Ended(Closing),
}

/// Why a socket ended after a refused refresh (its close frame carries the
/// policy's code and reason).
const REFRESH_REFUSED: &str = "refresh refused";

/// A far-off instant for a timer that is not armed.
fn never() -> Instant {
    Instant::now() + LONGEST_SOCKET_LIMIT
}

impl ServerClose {
    fn frame(self) -> (u16, &'static str) {
        match self {
            Self::Deleted => (1000, "closed by the server"),
            Self::SlowReader => (1008, "slow reader"),
            Self::Shutdown => (1001, "server shutting down"),
            Self::Ended(closing) => (closing.code(), closing.reason()),
        }
    }
}

/// The open sockets of this host, by connection id.
pub struct Sockets {
    open: Mutex<HashMap<String, SocketHandle>>,
    /// Upgrades under way plus open sockets: what `max_connections` bounds.
    /// Taken before the CONNECT decision, so a burst cannot overshoot.
    /// Closed by [`Sockets::close_all`]: no new sockets, and one that opens
    /// anyway (its upgrade was under way) is closed at once.
    slots: Arc<Semaphore>,
    /// Signalled whenever a slot is released (shutdown waits on it).
    released: Notify,
    /// Open sockets per user (`sub`), only users with at least one.
    per_user: Mutex<HashMap<String, usize>>,
    limits: SocketLimits,
}

#[derive(Clone)]
struct SocketHandle {
    queue: mpsc::UnboundedSender<Bytes>,
    /// Bytes in `queue` (plus the overhead per message); bounded by
    /// `send_queue_bytes` at the sending side.
    queued_bytes: Arc<AtomicUsize>,
    /// Set once, when the server ends the socket.
    close: Arc<watch::Sender<Option<ServerClose>>>,
}

/// A connection registered before its CONNECT (see [`Sockets::register`]):
/// the receiving ends of its queue and close signal.
pub struct Registration {
    sockets: Arc<Sockets>,
    connection_id: String,
    outgoing: mpsc::UnboundedReceiver<Bytes>,
    queued_bytes: Arc<AtomicUsize>,
    closed: watch::Receiver<Option<ServerClose>>,
    /// Taken over by the socket; else unregistered on drop.
    served: bool,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if !self.served {
            self.sockets.remove(&self.connection_id);
        }
    }
}

/// One of `max_connections`, held from before the CONNECT decision until the
/// socket's DISCONNECT has run; released when dropped.
pub struct Slot {
    sockets: Arc<Sockets>,
    permit: Option<OwnedSemaphorePermit>,
    /// The user this slot counts against, once the CONNECT said who.
    user: Option<String>,
}

impl Slot {
    /// Counts this socket against its user: refused (503) at
    /// `max_per_user`.
    pub fn claim_user(&mut self, sub: &str) -> Result<(), &'static str> {
        let mut per_user = self.sockets.lock_per_user();
        let open = per_user.entry(sub.to_owned()).or_insert(0);
        if *open >= self.sockets.limits.max_per_user {
            return Err("Too many connections.");
        }
        *open += 1;
        self.user = Some(sub.to_owned());
        Ok(())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(user) = self.user.take() {
            let mut per_user = self.sockets.lock_per_user();
            if let Some(open) = per_user.get_mut(&user) {
                *open -= 1;
                if *open == 0 {
                    per_user.remove(&user);
                }
            }
        }
        // Back to the semaphore first, then tell a waiting shutdown.
        drop(self.permit.take());
        self.sockets.released.notify_waiters();
    }
}

impl Sockets {
    pub fn new(mut limits: SocketLimits) -> Arc<Self> {
        // A zero period would panic in `interval_at`, and an instant past
        // the clock's range in `Instant + Duration`.
        for duration in [
            &mut limits.idle_timeout,
            &mut limits.max_age,
            &mut limits.ping_interval,
            &mut limits.send_timeout,
        ] {
            *duration = (*duration).clamp(Duration::from_millis(1), LONGEST_SOCKET_LIMIT);
        }
        Arc::new(Self {
            open: Mutex::new(HashMap::new()),
            slots: Arc::new(Semaphore::new(limits.max_connections)),
            released: Notify::new(),
            per_user: Mutex::default(),
            limits,
        })
    }

    pub fn limits(&self) -> &SocketLimits {
        &self.limits
    }

    /// Open sockets.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes waiting in every socket's send queue.
    pub fn queued_bytes(&self) -> usize {
        self.lock()
            .values()
            .map(|handle| handle.queued_bytes.load(Ordering::Relaxed))
            .sum()
    }

    /// A slot for one more socket; refused at `max_connections` or during
    /// shutdown (both 503).
    pub fn reserve(self: &Arc<Self>) -> Result<Slot, &'static str> {
        match self.slots.clone().try_acquire_owned() {
            Ok(permit) => Ok(Slot {
                sockets: self.clone(),
                permit: Some(permit),
                user: None,
            }),
            Err(TryAcquireError::Closed) => Err("Shutting down."),
            Err(TryAcquireError::NoPermits) => Err("Too many connections."),
        }
    }

    fn lock_per_user(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.per_user.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, SocketHandle>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn remove(&self, connection_id: &str) -> Option<SocketHandle> {
        self.lock().remove(connection_id)
    }

    /// Registers a connection before its CONNECT stores records, so that a
    /// delivery that reads them during the handshake queues its message
    /// (sent once the socket opens) instead of finding the connection gone
    /// and deleting its records. Unregistered when the [`Registration`] is
    /// dropped unserved (CONNECT refused, upgrade failed). During shutdown
    /// the connection is ended at once.
    pub fn register(self: &Arc<Self>, connection_id: &str) -> Registration {
        let (queue, outgoing) = mpsc::unbounded_channel::<Bytes>();
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let (close, closed) = watch::channel(None);
        let handle = SocketHandle {
            queue,
            queued_bytes: queued_bytes.clone(),
            close: Arc::new(close),
        };
        self.lock().insert(connection_id.to_owned(), handle.clone());
        // After the insert: `close_all` closes the slots before it takes the
        // lock, so it either saw this socket or this sees them closed.
        if self.slots.is_closed() {
            Self::end(&handle, ServerClose::Shutdown);
        }
        Registration {
            sockets: self.clone(),
            connection_id: connection_id.to_owned(),
            outgoing,
            queued_bytes,
            closed,
            served: false,
        }
    }

    /// Ends a socket with `why` (if the server has not already ended it).
    fn end(handle: &SocketHandle, why: ServerClose) {
        handle.close.send_if_modified(|close| {
            let first = close.is_none();
            close.get_or_insert(why);
            first
        });
    }

    /// Queues a message for a socket: `Gone` when there is no such socket or
    /// its reader is too slow (then it is closed).
    pub fn send(&self, connection_id: &str, message: &Bytes) -> Result<(), SendError> {
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
        let cost = message.len() + QUEUED_MESSAGE_OVERHEAD;
        let queued = handle.queued_bytes.fetch_add(cost, Ordering::AcqRel) + cost;
        if queued > self.limits.send_queue_bytes {
            handle.queued_bytes.fetch_sub(cost, Ordering::AcqRel);
            tracing::warn!(
                connection_id,
                queued,
                "send queue full: a slow reader; closing it"
            );
            self.remove(connection_id);
            Self::end(&handle, ServerClose::SlowReader);
            return Err(SendError::Gone);
        }
        if handle.queue.send(message.clone()).is_err() {
            handle.queued_bytes.fetch_sub(cost, Ordering::AcqRel);
            return Err(SendError::Gone);
        }
        Ok(())
    }

    /// Closes a socket (`DELETE /@connections/{id}`), with 1000 or the code
    /// and reason of `why`; false when unknown.
    pub fn close(&self, connection_id: &str, why: Option<Closing>) -> bool {
        match self.remove(connection_id) {
            Some(handle) => {
                Self::end(
                    &handle,
                    why.map_or(ServerClose::Deleted, ServerClose::Ended),
                );
                true
            }
            None => false,
        }
    }

    /// Closes every socket, refuses new ones, and waits (at most `within`)
    /// until every socket's DISCONNECT has run: for a graceful shutdown.
    pub async fn close_all(&self, within: Duration) {
        self.slots.close();
        let handles: Vec<SocketHandle> = self.lock().values().cloned().collect();
        for handle in &handles {
            Self::end(handle, ServerClose::Shutdown);
        }
        drop(handles);
        let _ = tokio::time::timeout(within, async {
            loop {
                let released = self.released.notified();
                if self.slots.available_permits() == self.limits.max_connections {
                    return;
                }
                released.await;
            }
        })
        .await;
    }
}

/// Posting through [`Sockets`]: the host delivers to its own sockets.
#[async_trait::async_trait]
impl ConnectionSender for Sockets {
    async fn post(&self, connection_id: &str, message: &Bytes) -> Result<(), SendError> {
        self.send(connection_id, message)
    }

    async fn close(&self, connection_id: &str, why: Closing) -> Result<(), SendError> {
        if Sockets::close(self, connection_id, Some(why)) {
            Ok(())
        } else {
            Err(SendError::Gone)
        }
    }
}

/// The token of an upgrade request: `Sec-WebSocket-Protocol: bearer, <token>`
/// first (it keeps the token out of URLs and access logs), else the query's
/// `idToken`. Also says whether the bearer subprotocol was offered.
pub fn upgrade_token(headers: &HeaderMap, query_token: Option<String>) -> (Option<String>, bool) {
    let values = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok());
    match offered_bearer_token(values) {
        Some(token) => (token.map(str::to_owned), true),
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
    endpoint: String,
) -> Response {
    let mut slot = match sockets.reserve() {
        Ok(slot) => slot,
        Err(why) => return (StatusCode::SERVICE_UNAVAILABLE, why).into_response(),
    };
    let (token, bearer) = upgrade_token(headers, query_token);
    let connection_id = new_connection_id();
    // Every call for this socket follows its keys: its DISCONNECT deletes
    // them without a GSI Query.
    let handler = handler.for_socket(&connection_id);
    let registration = sockets.register(&connection_id);
    // The CONNECT's own `connectedAt` (the second it read), near enough.
    let connected_at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let (reply, connected): (PolicyResponse, _) = handler
        .connect_as(
            &new_request_id(),
            &connection_id,
            token.as_deref(),
            Some(&endpoint),
        )
        .await;
    if reply.status != 200 {
        return reply.into_response();
    }
    let auth = SocketAuth {
        token: token.clone().unwrap_or_default(),
        expires_at: connected.as_ref().and_then(|c| c.auth_expires_at),
        endpoint: endpoint.clone(),
        connected_at,
    };
    if let Some(connected) = connected
        && let Err(why) = slot.claim_user(&connected.sub)
    {
        // The CONNECT stored records: a refused socket must leave none.
        tracing::warn!(connection_id, "too many sockets of one user; refused");
        handler.disconnect(&new_request_id(), &connection_id).await;
        return (StatusCode::SERVICE_UNAVAILABLE, why).into_response();
    }
    let upgrade = if bearer {
        upgrade.protocols([BEARER_PROTOCOL])
    } else {
        upgrade
    };
    let failed = (handler.clone(), connection_id.clone());
    upgrade
        .max_message_size(sockets.limits.max_message_bytes)
        .read_buffer_size(READ_BUFFER_BYTES)
        .on_failed_upgrade(move |error| {
            // The records were stored; the socket never opened. (The slot
            // goes with the dropped `on_upgrade` callback.)
            let (handler, connection_id) = failed;
            tracing::warn!(connection_id, %error, "upgrade failed after CONNECT; disconnecting");
            tokio::spawn(async move {
                handler.disconnect(&new_request_id(), &connection_id).await;
            });
        })
        .on_upgrade(move |socket| serve_socket(socket, registration, handler, slot, auth))
}

/// Sends the messages in one write: frames into the socket's buffer, then
/// one flush. Each is text when it is UTF-8 (a cheap clone of the shared
/// buffer), binary otherwise.
async fn send_all(socket: &mut WebSocket, messages: Vec<Bytes>) -> Result<(), axum::Error> {
    for message in messages {
        let frame = match Utf8Bytes::try_from(message.clone()) {
            Ok(text) => Message::Text(text),
            Err(_) => Message::Binary(message),
        };
        socket.feed(frame).await?;
    }
    socket.flush().await
}

/// An API Gateway-like connection id: 12 random bytes, URL-safe base64.
fn new_connection_id() -> String {
    let uuid = uuid::Uuid::new_v4();
    URL_SAFE_NO_PAD.encode(&uuid.as_bytes()[..12])
}

async fn serve_socket(
    mut socket: WebSocket,
    mut registration: Registration,
    handler: Handler,
    slot: Slot,
    mut authorised: SocketAuth,
) {
    let sockets = slot.sockets.clone();
    let limits = sockets.limits.clone();
    registration.served = true;
    let connection_id = std::mem::take(&mut registration.connection_id);
    let (mut outgoing, queued_bytes, mut closed) = {
        let (_, rx) = mpsc::unbounded_channel();
        (
            std::mem::replace(&mut registration.outgoing, rx),
            registration.queued_bytes.clone(),
            registration.closed.clone(),
        )
    };
    drop(registration);
    tracing::debug!(connection_id, "socket open");
    telemetry::socket_opened();

    let opened = Instant::now();
    let mut last_data = opened;
    let mut ping = tokio::time::interval_at(opened + limits.ping_interval, limits.ping_interval);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut awaiting_pong = false;
    let mut auth = authorised
        .expires_at
        .map(|expires_at| AuthWindow::new(expires_at, limits.auth_grace, SystemTime::now()));
    let mut limiter = RefreshLimiter::default();
    let reason = loop {
        let notice_at = auth.and_then(|auth| auth.notice_at);
        let auth_close_at = auth.map(|auth| auth.close_at);
        let deadline = (last_data + limits.idle_timeout).min(opened + limits.max_age);
        tokio::select! {
            // First, so that a socket the server has ended sends nothing more.
            biased;
            _ = closed.changed() => {
                let why = closed.borrow().unwrap_or(ServerClose::Deleted);
                let (code, text) = why.frame();
                close_with(&mut socket, &limits, code, text).await;
                break text;
            }
            incoming = socket.recv() => match incoming {
                None | Some(Err(_)) => break "connection lost",
                Some(Ok(Message::Close(_))) => break "closed by the client",
                Some(Ok(Message::Pong(_))) => awaiting_pong = false,
                Some(Ok(Message::Ping(_))) => {} // answered by the library
                Some(Ok(Message::Text(text))) => {
                    last_data = Instant::now();
                    if text.len() > MAX_REFRESH_FRAME_BYTES {
                        close_with(&mut socket, &limits, 1009, "message too big").await;
                        break "message too big";
                    }
                    // Any other text is ignored, as before refreshes.
                    let Some(new_token) = refresh_frame(&text) else { continue };
                    if !limiter.allow(Instant::now()) {
                        tracing::info!(connection_id, "refresh refused: rate limited");
                        telemetry::refresh(RATE_LIMITED_CODE);
                        close_with(&mut socket, &limits, RATE_LIMITED_CODE, RATE_LIMITED_REASON).await;
                        break RATE_LIMITED_REASON;
                    }
                    // Awaited here: one refresh in flight per socket.
                    let reply = handler
                        .refresh(
                            &new_request_id(),
                            &connection_id,
                            new_token.as_deref(),
                            Current::Token(authorised.token.clone()),
                            &authorised.connected_at,
                            Some(&authorised.endpoint),
                        )
                        .await;
                    match (reply.code, reply.expires_at, new_token) {
                        (1000, Some(expires_at), Some(new_token)) => {
                            authorised.token = new_token;
                            auth = Some(AuthWindow::new(expires_at, limits.auth_grace, SystemTime::now()));
                            let answer = Message::Text(reply.body.into());
                            let sent = tokio::time::timeout(limits.send_timeout, socket.send(answer)).await;
                            match sent {
                                Ok(Ok(())) => last_data = Instant::now(),
                                Ok(Err(_)) => break "connection lost",
                                Err(_) => break "send timed out (slow reader)",
                            }
                        }
                        (code, _, _) => {
                            let code = if code == 1000 { 1011 } else { code };
                            close_with(&mut socket, &limits, code, &reply.body).await;
                            break REFRESH_REFUSED;
                        }
                    }
                }
                // Binary data is ignored, but it counts as activity.
                Some(Ok(_)) => last_data = Instant::now(),
            },
            // The sending side keeps a handle until the socket is removed,
            // and removal always sets `closed` first.
            Some(message) = outgoing.recv() => {
                // The messages queued behind it go in the same write.
                let mut batch = vec![message];
                let mut bytes = batch[0].len();
                while bytes < WRITE_BATCH_BYTES {
                    let Ok(message) = outgoing.try_recv() else { break };
                    bytes += message.len();
                    batch.push(message);
                }
                let cost = bytes + batch.len() * QUEUED_MESSAGE_OVERHEAD;
                let sent = tokio::time::timeout(limits.send_timeout, send_all(&mut socket, batch)).await;
                queued_bytes.fetch_sub(cost, Ordering::AcqRel);
                match sent {
                    Ok(Ok(())) => last_data = Instant::now(),
                    Ok(Err(_)) => break "connection lost",
                    Err(_) => break "send timed out (slow reader)",
                }
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
            () = tokio::time::sleep_until(notice_at.unwrap_or_else(never)), if notice_at.is_some() => {
                let Some(window) = auth.as_mut() else { continue };
                window.notice_at = None;
                let notice = Message::Text(window.notice(SystemTime::now()).into());
                let sent = tokio::time::timeout(limits.send_timeout, socket.send(notice)).await;
                match sent {
                    Ok(Ok(())) => last_data = Instant::now(),
                    Ok(Err(_)) => break "connection lost",
                    Err(_) => break "send timed out (slow reader)",
                }
            }
            () = tokio::time::sleep_until(auth_close_at.unwrap_or_else(never)), if auth_close_at.is_some() => {
                close_with(&mut socket, &limits, TOKEN_EXPIRED_CODE, TOKEN_EXPIRED_REASON).await;
                break TOKEN_EXPIRED_REASON;
            }
            () = tokio::time::sleep_until(deadline) => {
                let why = if deadline == opened + limits.max_age { "maximum age" } else { "idle" };
                close_with(&mut socket, &limits, 1001, why).await;
                break why;
            }
        }
    };
    sockets.remove(&connection_id);
    telemetry::socket_closed(close_label(reason));
    let reply = handler.disconnect(&new_request_id(), &connection_id).await;
    tracing::debug!(
        connection_id,
        reason,
        status = reply.status,
        "socket closed"
    );
    // The slot goes last: shutdown waits for it, so the DISCONNECT has run.
    drop(slot);
}

/// The metric label of a socket's end (the texts above, a fixed set).
fn close_label(reason: &str) -> &'static str {
    match reason {
        "closed by the client" => "client",
        "connection lost" => "lost",
        "idle" => "idle",
        "maximum age" => "max_age",
        "no pong" => "ping_timeout",
        "closed by the server" => "deleted",
        "server shutting down" => "shutdown",
        "slow reader" | "send timed out (slow reader)" => "slow_reader",
        TOKEN_EXPIRED_REASON => "token_expired",
        reason if reason == Closing::Revoked.reason() => "revoked",
        REFRESH_REFUSED => "refresh_refused",
        RATE_LIMITED_REASON => "rate_limited",
        "message too big" => "too_big",
        _ => "other",
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_end_of_a_socket_has_a_metric_label_of_the_fixed_set() {
        let ends = [
            "closed by the client",
            "connection lost",
            "idle",
            "maximum age",
            "no pong",
            "send timed out (slow reader)",
            TOKEN_EXPIRED_REASON,
            REFRESH_REFUSED,
            RATE_LIMITED_REASON,
            "message too big",
        ]
        .into_iter()
        .chain(
            [
                ServerClose::Deleted,
                ServerClose::SlowReader,
                ServerClose::Shutdown,
                ServerClose::Ended(Closing::TokenExpired),
                ServerClose::Ended(Closing::Revoked),
            ]
            .map(|close| close.frame().1),
        );
        for end in ends {
            let label = close_label(end);
            assert_ne!(label, "other", "{end}");
            assert!(telemetry::CLOSE_REASONS.contains(&label), "{label}");
        }
    }

    #[tokio::test]
    async fn the_refresh_notice_comes_a_minute_or_half_the_life_before_exp_and_the_close_after_the_grace()
     {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let grace = Duration::from_secs(30);
        let start = Instant::now();
        let near = |at: Instant, from_start: u64| {
            let expected = start + Duration::from_secs(from_start);
            at.max(expected) - at.min(expected) < Duration::from_millis(500)
        };
        // An hour left: notice a minute before, close 30 s after.
        let hour = AuthWindow::new(1_800_003_600, grace, now);
        assert!(near(hour.notice_at.unwrap(), 3540), "{hour:?}");
        assert!(near(hour.close_at, 3630), "{hour:?}");
        assert_eq!(
            hour.notice(now),
            r#"{"type":"refresh_required","expiresIn":3600}"#
        );
        // Three seconds left: notice half-way.
        let short = AuthWindow::new(1_800_000_004, grace, now);
        assert!(near(short.notice_at.unwrap(), 2), "{short:?}");
        assert!(near(short.close_at, 34), "{short:?}");
        // Already expired: notice now, close after the grace.
        let past = AuthWindow::new(1_799_999_000, grace, now);
        assert!(near(past.notice_at.unwrap(), 0), "{past:?}");
        assert!(near(past.close_at, 30), "{past:?}");
        assert_eq!(
            past.notice(now),
            r#"{"type":"refresh_required","expiresIn":0}"#
        );
        // A far-future exp does not overflow.
        let _ = AuthWindow::new(u64::MAX, grace, now);
    }

    #[test]
    fn refreshes_are_one_per_ten_seconds_and_five_per_minute() {
        let start = Instant::now();
        let at = |seconds: u64| start + Duration::from_secs(seconds);
        let mut limiter = RefreshLimiter::default();
        assert!(limiter.allow(at(0)));
        assert!(!limiter.allow(at(9)), "within 10 s of the last");
        let mut limiter = RefreshLimiter::default();
        for second in [0, 10, 20, 30, 40] {
            assert!(limiter.allow(at(second)), "{second}");
        }
        assert!(!limiter.allow(at(50)), "a sixth within a minute");
        assert!(limiter.allow(at(60)), "the first has left the minute");
    }

    #[test]
    fn only_a_refresh_action_is_a_refresh() {
        assert_eq!(
            refresh_frame(r#"{"action":"refresh","idToken":"a.b.c"}"#),
            Some(Some("a.b.c".to_owned()))
        );
        assert_eq!(refresh_frame(r#"{"action":"refresh"}"#), Some(None));
        assert_eq!(
            refresh_frame(r#"{"action":"refresh","idToken":5}"#),
            Some(None)
        );
        assert_eq!(refresh_frame(r#"{"action":5}"#), None);
        assert_eq!(refresh_frame(r#"["refresh"]"#), None);
        assert_eq!(refresh_frame(r#"{"action":"ping"}"#), None);
        assert_eq!(refresh_frame("hello"), None);
    }

    fn limits(max_connections: usize) -> SocketLimits {
        SocketLimits {
            max_connections,
            ..SocketLimits::default()
        }
    }

    #[test]
    fn slots_are_bounded_and_come_back_when_dropped() {
        let sockets = Sockets::new(limits(2));
        let first = sockets.reserve().unwrap();
        let _second = sockets.reserve().unwrap();
        assert_eq!(sockets.reserve().err(), Some("Too many connections."));
        drop(first);
        assert!(sockets.reserve().is_ok());
    }

    #[test]
    fn each_user_has_a_bound_of_their_own_and_gets_it_back() {
        let sockets = Sockets::new(SocketLimits {
            max_per_user: 2,
            ..limits(10)
        });
        let claim = |sub: &str| {
            let mut slot = sockets.reserve().unwrap();
            slot.claim_user(sub).map(|()| slot)
        };
        let first = claim("alice").unwrap();
        let _second = claim("alice").unwrap();
        assert_eq!(claim("alice").err(), Some("Too many connections."));
        assert!(claim("bob").is_ok(), "another user is not affected");
        drop(first);
        assert!(claim("alice").is_ok());
    }

    #[tokio::test]
    async fn after_close_all_no_slot_is_given() {
        let sockets = Sockets::new(limits(10));
        sockets.close_all(Duration::from_secs(1)).await;
        assert_eq!(sockets.reserve().err(), Some("Shutting down."));
    }

    #[test]
    fn the_send_queue_is_bounded_in_bytes_and_a_slow_reader_is_gone() {
        let sockets = Sockets::new(SocketLimits {
            send_queue_bytes: 3 * (1000 + QUEUED_MESSAGE_OVERHEAD),
            ..SocketLimits::default()
        });
        let mut registration = sockets.register("c1");
        let message = Bytes::from(vec![b'x'; 1000]);
        for _ in 0..3 {
            sockets.send("c1", &message).unwrap();
        }
        assert!(matches!(sockets.send("c1", &message), Err(SendError::Gone)));
        assert_eq!(*registration.closed.borrow(), Some(ServerClose::SlowReader));
        assert!(sockets.is_empty());
        assert!(matches!(
            sockets.send("c1", &Bytes::from_static(b"x")),
            Err(SendError::Gone)
        ));
        // What was queued before stays queued; nothing after.
        let mut queued = 0;
        while registration.outgoing.try_recv().is_ok() {
            queued += 1;
        }
        assert_eq!(queued, 3);
    }

    /// A delivery that reads a connection's records while its CONNECT and
    /// handshake are under way must not find it gone (and delete them).
    #[test]
    fn a_connection_is_reachable_from_before_its_connect_until_its_registration_is_dropped() {
        let sockets = Sockets::new(SocketLimits::default());
        let mut registration = sockets.register("handshaking");
        sockets
            .send("handshaking", &Bytes::from_static(b"early"))
            .expect("queued while the handshake runs");
        assert_eq!(
            registration.outgoing.try_recv().ok(),
            Some(Bytes::from_static(b"early"))
        );
        // Refused or failed upgrade: dropped unserved, gone again.
        drop(registration);
        assert!(matches!(
            sockets.send("handshaking", &Bytes::from_static(b"late")),
            Err(SendError::Gone)
        ));
        assert!(sockets.is_empty());
    }
}
