//! Event delivery: one message to every connection of an integration.
//!
//! The records come from the store (`records_of`, every page); records whose
//! `expiresAt` has passed are skipped and deleted (DynamoDB's TTL deletion
//! lags by up to days). Records whose `authExpiresAt` has passed (the token
//! the connection was authorised with expired) are skipped and counted
//! `expiredAuth`, but kept: the connection may still refresh its token within
//! the grace window, and its owner closes it (and deletes them) when it does
//! not. The rest are grouped by where their connection lives
//! (the record's `endpoint`, see [`Routes`]) and each group is posted where
//! it lives, with its own bound on posts in flight: this node's sockets
//! directly, another node through its management listener ([`nodes`]), an
//! API Gateway stage through its Management API ([`ManagementApi`]).
//! A connection found gone loses all its records (found through the
//! connection-id index, as a DISCONNECT would); only its owner can say so.

pub mod evict;
mod management_api;
pub mod nodes;

pub use management_api::ManagementApi;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use tokio::task::JoinSet;

use crate::retry::Backoff;
use crate::store::{ConnectionRecord, ConnectionStore, StoreError};
use crate::telemetry;
use nodes::{ManagementToken, PeerNode, is_node_endpoint};

/// API Gateway's WebSocket frame limit (128 KB); larger messages are refused
/// before anything is sent.
pub const MAX_MESSAGE_BYTES: usize = 128 * 1024;

/// Bounds of one delivery.
#[derive(Debug, Clone)]
pub struct DeliveryOptions {
    /// Posts in flight at once, per endpoint.
    pub concurrency: usize,
    /// Deadline of one post attempt.
    pub call_timeout: Duration,
    /// Attempts per connection on throttling, 5xx or a timeout.
    pub max_attempts: u32,
    /// Backoff between attempts.
    pub backoff: Backoff,
    /// API Gateway's CONNECT timeout. Its 410 also answers a post that
    /// arrives while `$connect` still runs (the records are written before
    /// the handshake completes), so a 410 for a record younger than this
    /// deletes nothing and counts as failed.
    pub connect_timeout: Duration,
    /// How long after `authExpiresAt` an API Gateway connection may still
    /// refresh; past it, a delivery ends it (a last `{"type":"close",…}`
    /// message, `DeleteConnection`, its records deleted). A node ends its
    /// own sockets.
    pub auth_grace: Duration,
}

impl Default for DeliveryOptions {
    fn default() -> Self {
        Self {
            concurrency: 32,
            call_timeout: Duration::from_secs(5),
            max_attempts: 4,
            backoff: Backoff {
                base: Duration::from_millis(50),
                max: Duration::from_secs(1),
            },
            connect_timeout: Duration::from_secs(30),
            auth_grace: Duration::from_secs(30),
        }
    }
}

/// Why a post to one connection failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// 410: the connection is closed; its records should go.
    Gone,
    /// 401/403: not allowed (IAM, wrong stage, no or another management
    /// token); retrying will not help.
    Forbidden(String),
    /// Throttling (429 included: API Gateway's full client buffer), 5xx, a
    /// timeout or a lost connection: worth another try.
    Retryable(String),
    /// The endpoint could not be reached at all (refused, connect timeout):
    /// retried; once attempts run out, the rest of its group fails at once.
    Unreachable(String),
    /// Anything else (e.g. 400, 413): not retried.
    Failed(String),
}

/// Posts a message to one WebSocket connection.
#[async_trait::async_trait]
pub trait ConnectionSender: Send + Sync + 'static {
    /// `message` is shared, not copied, by senders that keep it (a
    /// delivery hands the same buffer to every connection).
    async fn post(&self, connection_id: &str, message: &Bytes) -> Result<(), SendError>;

    /// Ends a connection on purpose, saying why ([`Closing`]); `Gone` when
    /// it was gone already.
    async fn close(&self, connection_id: &str, why: Closing) -> Result<(), SendError> {
        let _ = (connection_id, why);
        Err(SendError::Failed(
            "this sender cannot close connections".into(),
        ))
    }
}

/// Why the server ends a connection on purpose, and how the client hears
/// it: a self-hosted socket in its close frame, an API Gateway connection
/// (API Gateway has no close code of its own) in a last message
/// `{"type":"close","code":…,"reason":…}` before `DeleteConnection`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closing {
    /// Its token expired and no refresh came within the grace window: get
    /// a fresh token and reconnect.
    TokenExpired,
    /// Its user was evicted: terminal, sign in again.
    Revoked,
}

impl Closing {
    /// The close code.
    pub const fn code(self) -> u16 {
        match self {
            Closing::TokenExpired => 4001,
            Closing::Revoked => 4003,
        }
    }

    /// The close frame's reason.
    pub const fn reason(self) -> &'static str {
        match self {
            Closing::TokenExpired => "token expired",
            Closing::Revoked => "forbidden",
        }
    }

    /// The last message of an API Gateway connection.
    pub const fn message(self) -> &'static str {
        match self {
            Closing::TokenExpired => r#"{"type":"close","code":4001,"reason":"token expired"}"#,
            Closing::Revoked => r#"{"type":"close","code":4003,"reason":"revoked"}"#,
        }
    }

    /// The closing a code names (`DELETE …/@connections/{id}?code=…`).
    pub fn from_code(code: u16) -> Option<Self> {
        [Closing::TokenExpired, Closing::Revoked]
            .into_iter()
            .find(|closing| closing.code() == code)
    }
}

/// A sender, and whether its 410 is the final word: a node knows its
/// sockets, handshakes under way included; API Gateway does not (see
/// [`DeliveryOptions::connect_timeout`]).
#[derive(Clone)]
pub struct Route {
    pub sender: Arc<dyn ConnectionSender>,
    pub gone_is_certain: bool,
    /// Its posts complete without waiting (this node's sockets: a queue
    /// push), so a delivery makes them in its own loop: a task per
    /// connection would cost more than the post.
    pub immediate: bool,
}

/// Where each record's connection is posted, by its `endpoint`:
/// - this node's own endpoint: its sockets;
/// - another node's (`…/n/{incarnation}`): that node's management listener,
///   with the management token;
/// - an API Gateway stage (`https://{api}.execute-api.{region}.amazonaws.com/{stage}`):
///   its Management API, one SDK client per stage;
/// - none (records written before endpoints, or by the original handler):
///   the fallback, `WEBSOCKET_API_ENDPOINT` or this node's sockets.
///
/// Anything else is counted failed and deleted nowhere.
pub struct Routes {
    local: Option<(String, Route)>,
    fallback: Option<Route>,
    token: Option<ManagementToken>,
    peers: reqwest::Client,
    call_timeout: Duration,
    apis: tokio::sync::Mutex<HashMap<String, Route>>,
}

impl Routes {
    pub fn new(call_timeout: Duration, token: Option<ManagementToken>) -> anyhow::Result<Self> {
        Ok(Self {
            local: None,
            fallback: None,
            token,
            peers: PeerNode::client()?,
            call_timeout,
            apis: tokio::sync::Mutex::default(),
        })
    }

    /// This node's sockets, under its endpoint.
    pub fn with_local(mut self, endpoint: String, sockets: Arc<dyn ConnectionSender>) -> Self {
        let route = Route {
            sender: sockets,
            gone_is_certain: true,
            immediate: true,
        };
        self.local = Some((endpoint, route));
        self
    }

    /// Where records without an endpoint go.
    pub fn with_fallback(mut self, route: Route) -> Self {
        self.fallback = Some(route);
        self
    }

    /// The route of one endpoint, or why there is none.
    pub async fn route(&self, endpoint: Option<&str>) -> Result<Route, String> {
        let Some(endpoint) = endpoint else {
            return self.fallback.clone().ok_or_else(|| {
                "the records name no endpoint and WEBSOCKET_API_ENDPOINT is not set".to_owned()
            });
        };
        if let Some((local, route)) = &self.local
            && local == endpoint
        {
            return Ok(route.clone());
        }
        if is_node_endpoint(endpoint) {
            let peer = PeerNode::new(self.peers.clone(), endpoint, self.token.as_ref())
                .map_err(|e| e.to_string())?;
            return Ok(Route {
                sender: Arc::new(peer),
                gone_is_certain: true,
                immediate: false,
            });
        }
        if is_execute_api(endpoint) {
            let mut apis = self.apis.lock().await;
            if let Some(route) = apis.get(endpoint) {
                return Ok(route.clone());
            }
            let api = ManagementApi::connect(endpoint, self.call_timeout)
                .await
                .map_err(|e| e.to_string())?;
            let route = Route {
                sender: Arc::new(api),
                gone_is_certain: false,
                immediate: false,
            };
            apis.insert(endpoint.to_owned(), route.clone());
            return Ok(route);
        }
        Err("an endpoint of no known kind (neither a node nor an API Gateway stage)".to_owned())
    }
}

/// `https://{api-id}.execute-api.{region}.amazonaws.com/{stage}`.
fn is_execute_api(endpoint: &str) -> bool {
    url::Url::parse(endpoint).is_ok_and(|url| {
        url.scheme() == "https"
            && url.host_str().is_some_and(|host| {
                host.contains(".execute-api.")
                    && (host.ends_with(".amazonaws.com") || host.ends_with(".amazonaws.com.cn"))
            })
    })
}

/// The outcome of one delivery, counted per connection.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct DeliveryReport {
    /// Connections that accepted the message.
    pub delivered: u32,
    /// Connections found gone (their records are deleted).
    pub gone: u32,
    /// Connections the message could not reach (403, retries exhausted, an
    /// unreachable node, …); their records stay.
    pub failed: u32,
    /// Records skipped because their `expiresAt` had passed (and deleted).
    pub expired: u32,
    /// Connections skipped because the token they were authorised with had
    /// expired (`authExpiresAt` passed); their records stay.
    #[serde(rename = "expiredAuth")]
    pub expired_auth: u32,
}

impl DeliveryReport {
    fn add(&mut self, other: &DeliveryReport) {
        self.delivered += other.delivered;
        self.gone += other.gone;
        self.failed += other.failed;
        self.expired += other.expired;
        self.expired_auth += other.expired_auth;
    }
}

/// Why a delivery did not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryError {
    /// The message exceeds [`MAX_MESSAGE_BYTES`].
    TooLarge { size: usize },
    /// The integration id is no Cognito group name (empty, whitespace or
    /// control characters).
    NotAnIntegration,
    /// The records could not be read.
    Store(StoreError),
}

impl std::fmt::Display for DeliveryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeliveryError::TooLarge { size } => write!(
                f,
                "the message is {size} bytes; API Gateway accepts at most {MAX_MESSAGE_BYTES}"
            ),
            DeliveryError::NotAnIntegration => f.write_str(
                "not an integration id: a Cognito group name holds no whitespace or control characters",
            ),
            DeliveryError::Store(error) => write!(f, "reading the integration's records: {error}"),
        }
    }
}

impl std::error::Error for DeliveryError {}

/// Sends `message` to every live connection of `integration_id` (`now`:
/// seconds since the Unix epoch, against `expiresAt` and `connectedAt`).
pub async fn deliver(
    store: Arc<dyn ConnectionStore>,
    routes: &Routes,
    integration_id: &str,
    message: Bytes,
    now: u64,
    options: &DeliveryOptions,
) -> Result<DeliveryReport, DeliveryError> {
    if message.len() > MAX_MESSAGE_BYTES {
        return Err(DeliveryError::TooLarge {
            size: message.len(),
        });
    }
    // Only a group name names an integration; other partitions of the
    // table (revocations) are no connections.
    if !gitgazer_ws_guest::claims::is_group_name(integration_id) {
        tracing::warn!(integration_id, "delivery refused: not an integration id");
        return Err(DeliveryError::NotAnIntegration);
    }
    let records = store
        .records_of(integration_id)
        .await
        .map_err(DeliveryError::Store)?;
    let (expired, live): (Vec<_>, Vec<_>) = records
        .into_iter()
        .partition(|record| record.expires_at <= now);
    let (expired_auth, live): (Vec<_>, Vec<_>) = live
        .into_iter()
        .partition(|record| record.auth_expires_at.is_some_and(|at| at <= now));
    let mut report = DeliveryReport {
        expired: count(expired.len()),
        expired_auth: count(expired_auth.len()),
        ..DeliveryReport::default()
    };
    for _ in &expired {
        telemetry::delivery("expired", None);
    }
    for _ in &expired_auth {
        telemetry::delivery("expired_auth", None);
    }
    if !expired.is_empty() {
        let keys: Vec<_> = expired.iter().map(|record| record.key()).collect();
        if let Err(error) = store.delete(&keys).await {
            // Not fatal: they are skipped either way, and TTL removes them.
            tracing::warn!(integration_id, %error, records = keys.len(), "could not delete expired records");
        }
    }

    let grace = options.auth_grace.as_secs();
    let past_grace: Vec<_> = expired_auth
        .into_iter()
        .filter(|record| {
            record
                .auth_expires_at
                .is_some_and(|at| at.saturating_add(grace) <= now)
        })
        .collect();
    end_expired(&*store, routes, integration_id, past_grace).await;

    let mut groups = JoinSet::new();
    for (endpoint, connections) in by_endpoint(live) {
        match routes.route(endpoint.as_deref()).await {
            Ok(route) => {
                let (store, message, options) = (store.clone(), message.clone(), options.clone());
                groups.spawn(async move {
                    deliver_group(store, route, connections, message, now, &options).await
                });
            }
            Err(reason) => {
                tracing::warn!(
                    integration_id,
                    endpoint = ?endpoint,
                    connections = connections.len(),
                    reason,
                    "no route to these connections; counted failed, records kept"
                );
                report.failed += count(connections.len());
                for _ in 0..connections.len() {
                    telemetry::delivery("failed", None);
                }
            }
        }
    }
    while let Some(group) = groups.join_next().await {
        match group {
            Ok(group) => report.add(&group),
            Err(error) => tracing::error!(%error, "a delivery group failed"),
        }
    }
    tracing::info!(
        integration_id,
        delivered = report.delivered,
        gone = report.gone,
        failed = report.failed,
        expired = report.expired,
        expired_auth = report.expired_auth,
        "delivered"
    );
    Ok(report)
}

/// Ends the API Gateway connections whose token expired more than the grace
/// window ago: a last close message, `DeleteConnection`, and their records
/// deleted (only once the close succeeded). A node's connections are left
/// to it (it closes its own sockets with 4001); unroutable ones to TTL.
async fn end_expired(
    store: &dyn ConnectionStore,
    routes: &Routes,
    integration_id: &str,
    records: Vec<ConnectionRecord>,
) {
    for (endpoint, connections) in by_endpoint(records) {
        let Ok(route) = routes.route(endpoint.as_deref()).await else {
            continue;
        };
        if route.gone_is_certain {
            continue;
        }
        for connection_id in connections.into_keys() {
            match route
                .sender
                .close(&connection_id, Closing::TokenExpired)
                .await
            {
                Ok(()) | Err(SendError::Gone) => remove_connection(store, &connection_id).await,
                Err(error) => tracing::warn!(
                    integration_id,
                    connection_id,
                    ?error,
                    "could not close a connection whose token expired; records kept"
                ),
            }
        }
    }
}

/// Connections by endpoint, each once (a record per group: a connection
/// appears once per integration, but be safe) with when it connected (the
/// latest of its records, seconds; `None` when unreadable).
fn by_endpoint(
    records: Vec<ConnectionRecord>,
) -> BTreeMap<Option<String>, BTreeMap<String, Option<u64>>> {
    let mut groups: BTreeMap<Option<String>, BTreeMap<String, Option<u64>>> = BTreeMap::new();
    for record in records {
        let connected = connected_at_seconds(&record.connected_at);
        let at = groups
            .entry(record.endpoint)
            .or_default()
            .entry(record.connection_id)
            .or_insert(connected);
        *at = (*at).max(connected);
    }
    groups
}

/// `connectedAt` as seconds since the epoch: RFC 3339 (ours) or the
/// original handler's epoch milliseconds.
fn connected_at_seconds(text: &str) -> Option<u64> {
    if let Ok(millis) = text.parse::<u64>() {
        return Some(millis / 1000);
    }
    humantime::parse_rfc3339_weak(text)
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|since| since.as_secs())
}

/// One endpoint's connections, at most `concurrency` posts at once.
async fn deliver_group(
    store: Arc<dyn ConnectionStore>,
    route: Route,
    connections: BTreeMap<String, Option<u64>>,
    message: Bytes,
    now: u64,
    options: &DeliveryOptions,
) -> DeliveryReport {
    let mut report = DeliveryReport::default();
    let unreachable = Arc::new(AtomicBool::new(false));
    let mut pending = connections.into_iter();
    let mut in_flight = JoinSet::new();
    loop {
        while in_flight.len() < options.concurrency.max(1) {
            let Some((connection_id, connected_at)) = pending.next() else {
                break;
            };
            // A 410 we cannot trust for a connection that may still be
            // completing its CONNECT (an unreadable time counts as old).
            let young = !route.gone_is_certain
                && connected_at
                    .is_some_and(|at| now < at.saturating_add(options.connect_timeout.as_secs()));
            if route.immediate {
                let started = std::time::Instant::now();
                if route.sender.post(&connection_id, &message).await.is_ok() {
                    report.delivered += 1;
                    telemetry::delivery("delivered", Some(started.elapsed()));
                    continue;
                }
                // Gone or failed: the task below posts again and handles it
                // (a 410 again, then the records go).
            }
            let (store, sender, message, options, unreachable) = (
                store.clone(),
                route.sender.clone(),
                message.clone(),
                options.clone(),
                unreachable.clone(),
            );
            in_flight.spawn(async move {
                let started = std::time::Instant::now();
                let post = Post {
                    store: &*store,
                    sender: &*sender,
                    options: &options,
                    unreachable: &unreachable,
                    young,
                };
                let outcome = post.deliver_to(&connection_id, &message).await;
                (outcome, started.elapsed())
            });
        }
        let Some(outcome) = in_flight.join_next().await else {
            break;
        };
        let (outcome, elapsed) = match outcome {
            Ok((outcome, elapsed)) => (outcome, Some(elapsed)),
            Err(error) => {
                tracing::error!(%error, "a delivery task failed");
                (Outcome::Failed, None)
            }
        };
        let label = match outcome {
            Outcome::Delivered => {
                report.delivered += 1;
                "delivered"
            }
            Outcome::Gone => {
                report.gone += 1;
                "gone"
            }
            Outcome::Failed => {
                report.failed += 1;
                "failed"
            }
        };
        telemetry::delivery(label, elapsed);
    }
    report
}

enum Outcome {
    Delivered,
    Gone,
    Failed,
}

/// What one connection's post needs.
struct Post<'a> {
    store: &'a dyn ConnectionStore,
    sender: &'a dyn ConnectionSender,
    options: &'a DeliveryOptions,
    /// Set once the endpoint was found unreachable: the rest fail at once.
    unreachable: &'a AtomicBool,
    /// Its 410 would not be final (see [`DeliveryOptions::connect_timeout`]).
    young: bool,
}

impl Post<'_> {
    /// Post with retries; when gone, delete all the connection's records.
    async fn deliver_to(&self, connection_id: &str, message: &Bytes) -> Outcome {
        let options = self.options;
        let mut attempt = 0;
        loop {
            if self.unreachable.load(Ordering::Relaxed) {
                return Outcome::Failed;
            }
            attempt += 1;
            let result = match tokio::time::timeout(
                options.call_timeout,
                self.sender.post(connection_id, message),
            )
            .await
            {
                Ok(result) => result,
                Err(_) => Err(SendError::Retryable(format!(
                    "no answer within {:?}",
                    options.call_timeout
                ))),
            };
            let unreachable = matches!(result, Err(SendError::Unreachable(_)));
            match result {
                Ok(()) => return Outcome::Delivered,
                Err(SendError::Gone) if self.young => {
                    tracing::info!(
                        connection_id,
                        "410 for a connection made within the CONNECT timeout; records kept"
                    );
                    return Outcome::Failed;
                }
                Err(SendError::Gone) => {
                    remove_connection(self.store, connection_id).await;
                    return Outcome::Gone;
                }
                Err(SendError::Forbidden(reason)) => {
                    tracing::error!(
                        connection_id,
                        reason = reason.as_str(),
                        "post refused; not retried"
                    );
                    return Outcome::Failed;
                }
                Err(SendError::Failed(reason)) => {
                    tracing::warn!(
                        connection_id,
                        reason = reason.as_str(),
                        "post failed; not retried"
                    );
                    return Outcome::Failed;
                }
                Err(SendError::Retryable(reason) | SendError::Unreachable(reason))
                    if attempt >= options.max_attempts =>
                {
                    if unreachable {
                        self.unreachable.store(true, Ordering::Relaxed);
                    }
                    tracing::warn!(
                        connection_id,
                        reason = reason.as_str(),
                        attempt,
                        "post failed; attempts exhausted"
                    );
                    return Outcome::Failed;
                }
                Err(SendError::Retryable(_) | SendError::Unreachable(_)) => {
                    tokio::time::sleep(options.backoff.delay(attempt)).await;
                }
            }
        }
    }
}

/// A gone connection's records, every integration's, as a DISCONNECT would.
async fn remove_connection(store: &dyn ConnectionStore, connection_id: &str) {
    let result = match store.keys_of(connection_id).await {
        Ok(keys) if keys.is_empty() => Ok(0),
        Ok(keys) => store.delete(&keys).await,
        Err(error) => Err(error),
    };
    match result {
        Ok(removed) => tracing::info!(connection_id, removed, "connection gone; records deleted"),
        Err(error) => {
            tracing::warn!(connection_id, %error, "connection gone; its records could not be deleted")
        }
    }
}

/// An error with its sources (the SDK's and reqwest's top-level texts are
/// terse).
pub(crate) fn with_sources(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::*;
    use crate::store::{ConnectionRecord, MemoryStore};

    /// An hour ahead of the clock: records "expired" at this delivery time
    /// are still live for the memory store, which drops them by the clock.
    static NOW: std::sync::LazyLock<u64> =
        std::sync::LazyLock::new(|| crate::clock::unix_now() + 3600);

    /// Answers per connection id, in order (the last one repeats); records
    /// every post. A stand-in for faults the real API cannot be made to
    /// produce here (throttling, 403, a hang).
    #[derive(Default)]
    struct ScriptedSender {
        script: HashMap<String, Vec<Answer>>,
        posts: Mutex<Vec<(String, Vec<u8>)>>,
        closes: Mutex<Vec<(String, Closing)>>,
    }

    #[derive(Clone)]
    enum Answer {
        Send(Result<(), SendError>),
        Hang,
    }

    #[async_trait::async_trait]
    impl ConnectionSender for ScriptedSender {
        async fn post(&self, connection_id: &str, message: &Bytes) -> Result<(), SendError> {
            let attempt = {
                let mut posts = self.posts.lock().unwrap();
                posts.push((connection_id.to_owned(), message.to_vec()));
                posts.iter().filter(|(id, _)| id == connection_id).count()
            };
            let answer = self
                .script
                .get(connection_id)
                .map(|answers| answers[(attempt - 1).min(answers.len() - 1)].clone())
                .unwrap_or(Answer::Send(Ok(())));
            match answer {
                Answer::Send(result) => result,
                Answer::Hang => std::future::pending().await,
            }
        }

        async fn close(&self, connection_id: &str, why: Closing) -> Result<(), SendError> {
            self.closes
                .lock()
                .unwrap()
                .push((connection_id.to_owned(), why));
            Ok(())
        }
    }

    fn record(integration: &str, connection: &str, expires_at: u64) -> ConnectionRecord {
        ConnectionRecord {
            integration_id: integration.into(),
            connection_id: connection.into(),
            sub: "user".into(),
            connected_at: "2027-01-15T08:00:00Z".into(),
            expires_at,
            endpoint: None,
            auth_expires_at: None,
            auth_issued_at: None,
        }
    }

    /// Every record (they name no endpoint) to `sender`, whose 410 is final.
    fn fallback(sender: Arc<dyn ConnectionSender>) -> Routes {
        fallback_to(sender, true)
    }

    /// Every record to `sender`; `gone_is_certain: false` is API Gateway's
    /// kind of route.
    fn fallback_to(sender: Arc<dyn ConnectionSender>, gone_is_certain: bool) -> Routes {
        Routes::new(Duration::from_secs(1), None)
            .unwrap()
            .with_fallback(Route {
                sender,
                gone_is_certain,
                immediate: false,
            })
    }

    fn fast() -> DeliveryOptions {
        DeliveryOptions {
            concurrency: 4,
            call_timeout: Duration::from_millis(200),
            max_attempts: 3,
            backoff: Backoff {
                base: Duration::from_millis(1),
                max: Duration::from_millis(5),
            },
            connect_timeout: Duration::from_secs(30),
            auth_grace: Duration::from_secs(30),
        }
    }

    async fn store_with(records: &[ConnectionRecord]) -> Arc<MemoryStore> {
        let store = Arc::new(MemoryStore::new());
        store.put_all(records).await.unwrap();
        store
    }

    #[tokio::test]
    async fn only_a_group_name_is_delivered_to() {
        // A revocation's partition, which holds no connections.
        let store = store_with(&[record("revoked alice", "revoked alice", *NOW + 60)]).await;
        let sender = Arc::new(ScriptedSender::default());
        for id in ["revoked alice", "", "a\tb", "a\u{a0}b"] {
            let result = deliver(
                store.clone(),
                &fallback(sender.clone()),
                id,
                Bytes::from_static(b"x"),
                *NOW,
                &fast(),
            )
            .await;
            assert_eq!(result, Err(DeliveryError::NotAnIntegration), "{id:?}");
        }
        assert!(sender.posts.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn every_outcome_is_counted_and_gone_connections_lose_all_their_records() {
        let store = store_with(&[
            record("acme", "ok", *NOW + 60),
            record("acme", "throttled-once", *NOW + 60),
            record("acme", "gone", *NOW + 60),
            record("other", "gone", *NOW + 60), // the same connection, another group
            record("acme", "forbidden", *NOW + 60),
            record("acme", "always-500", *NOW + 60),
            record("acme", "hangs", *NOW + 60),
            record("acme", "expired", *NOW),
            record("other", "elsewhere", *NOW + 60),
        ])
        .await;
        let retryable = || Answer::Send(Err(SendError::Retryable("503".into())));
        let sender = Arc::new(ScriptedSender {
            script: HashMap::from([
                (
                    "throttled-once".into(),
                    vec![retryable(), Answer::Send(Ok(()))],
                ),
                ("gone".into(), vec![Answer::Send(Err(SendError::Gone))]),
                (
                    "forbidden".into(),
                    vec![Answer::Send(Err(SendError::Forbidden("403".into())))],
                ),
                ("always-500".into(), vec![retryable()]),
                ("hangs".into(), vec![Answer::Hang]),
            ]),
            ..ScriptedSender::default()
        });

        let report = deliver(
            store.clone(),
            &fallback(sender.clone()),
            "acme",
            Bytes::from_static(b"{\"event\":1}"),
            *NOW,
            &fast(),
        )
        .await
        .unwrap();

        assert_eq!(
            report,
            DeliveryReport {
                delivered: 2,
                gone: 1,
                failed: 3,
                expired: 1,
                expired_auth: 0
            }
        );
        let attempts = |id: &str| {
            let posts = sender.posts.lock().unwrap();
            posts.iter().filter(|(c, _)| c == id).count()
        };
        assert_eq!(attempts("ok"), 1);
        assert_eq!(attempts("throttled-once"), 2);
        assert_eq!(attempts("gone"), 1);
        assert_eq!(attempts("forbidden"), 1, "403 is never retried");
        assert_eq!(attempts("always-500"), 3, "retried up to max_attempts");
        assert_eq!(attempts("hangs"), 3, "each attempt cut off by the deadline");
        assert_eq!(attempts("expired"), 0);
        assert_eq!(attempts("elsewhere"), 0, "another integration");
        assert!(
            sender
                .posts
                .lock()
                .unwrap()
                .iter()
                .all(|(_, m)| m == b"{\"event\":1}"),
            "the message as given"
        );

        let left: Vec<(String, String)> = store
            .snapshot()
            .into_iter()
            .map(|r| (r.integration_id, r.connection_id))
            .collect();
        assert!(
            !left.iter().any(|(_, c)| c == "gone"),
            "all records of a gone connection: {left:?}"
        );
        assert!(
            !left.iter().any(|(_, c)| c == "expired"),
            "expired records deleted: {left:?}"
        );
        assert_eq!(left.len(), 6, "{left:?}");
    }

    #[tokio::test]
    async fn a_connection_whose_token_expired_is_skipped_counted_and_kept() {
        let authorised_until = |mut record: ConnectionRecord, at: u64| {
            record.auth_expires_at = Some(at);
            record
        };
        let store = store_with(&[
            authorised_until(record("acme", "valid", *NOW + 60), *NOW + 1),
            authorised_until(record("acme", "expired-now", *NOW + 60), *NOW),
            authorised_until(record("acme", "expired-before", *NOW + 60), *NOW - 30),
            // Written before records said: delivered as before.
            record("acme", "older-record", *NOW + 60),
        ])
        .await;
        let sender = Arc::new(ScriptedSender::default());
        let report = deliver(
            store.clone(),
            &fallback(sender.clone()),
            "acme",
            Bytes::from_static(b"x"),
            *NOW,
            &fast(),
        )
        .await
        .unwrap();
        assert_eq!(
            report,
            DeliveryReport {
                delivered: 2,
                gone: 0,
                failed: 0,
                expired: 0,
                expired_auth: 2
            }
        );
        let mut posted: Vec<String> = sender
            .posts
            .lock()
            .unwrap()
            .iter()
            .map(|(id, _)| id.clone())
            .collect();
        posted.sort();
        assert_eq!(posted, ["older-record", "valid"]);
        assert_eq!(
            store.snapshot().len(),
            4,
            "their records stay (a refresh may come)"
        );
        assert_eq!(
            serde_json::to_value(&report).unwrap(),
            serde_json::json!({"delivered": 2, "gone": 0, "failed": 0, "expired": 0, "expiredAuth": 2})
        );
    }

    #[tokio::test]
    async fn api_gateway_connections_past_the_grace_are_told_closed_and_lose_their_records() {
        let authorised_until = |mut record: ConnectionRecord, at: u64| {
            record.auth_expires_at = Some(at);
            record
        };
        let records = [
            authorised_until(record("acme", "in-grace", *NOW + 60), *NOW - 29),
            authorised_until(record("acme", "past-grace", *NOW + 60), *NOW - 30),
            authorised_until(record("other", "past-grace", *NOW + 60), *NOW - 30),
        ];
        // API Gateway's kind of route: ended by the delivery.
        let store = store_with(&records).await;
        let sender = Arc::new(ScriptedSender::default());
        let routes = fallback_to(sender.clone(), false);
        let report = deliver(
            store.clone(),
            &routes,
            "acme",
            Bytes::from_static(b"x"),
            *NOW,
            &fast(),
        )
        .await
        .unwrap();
        assert_eq!(report.expired_auth, 2);
        assert_eq!(report.delivered, 0);
        assert!(sender.posts.lock().unwrap().is_empty());
        assert_eq!(
            *sender.closes.lock().unwrap(),
            [("past-grace".to_owned(), Closing::TokenExpired)]
        );
        let left: Vec<String> = store
            .snapshot()
            .into_iter()
            .map(|r| r.connection_id)
            .collect();
        assert_eq!(
            left,
            ["in-grace"],
            "all of the ended connection's records go"
        );

        // A node's connections are its own to end: nothing is closed here.
        let store = store_with(&records).await;
        let sender = Arc::new(ScriptedSender::default());
        deliver(
            store.clone(),
            &fallback(sender.clone()),
            "acme",
            Bytes::from_static(b"x"),
            *NOW,
            &fast(),
        )
        .await
        .unwrap();
        assert!(sender.posts.lock().unwrap().is_empty());
        assert!(sender.closes.lock().unwrap().is_empty());
        assert_eq!(store.snapshot().len(), 3);
    }

    #[tokio::test]
    async fn concurrency_reaches_its_bound_and_never_exceeds_it() {
        const BOUND: usize = 4;
        /// Holds every post until `BOUND` were in flight at once (10 s at
        /// most, so a lower bound shows as a lower peak, not a hang).
        struct Counting {
            in_flight: Mutex<usize>,
            peak: tokio::sync::watch::Sender<usize>,
        }
        #[async_trait::async_trait]
        impl ConnectionSender for Counting {
            async fn post(&self, _: &str, _: &Bytes) -> Result<(), SendError> {
                let now = {
                    let mut in_flight = self.in_flight.lock().unwrap();
                    *in_flight += 1;
                    *in_flight
                };
                self.peak.send_if_modified(|peak| {
                    let higher = now > *peak;
                    *peak = (*peak).max(now);
                    higher
                });
                let mut peak = self.peak.subscribe();
                let _ = tokio::time::timeout(
                    Duration::from_secs(10),
                    peak.wait_for(|peak| *peak >= BOUND),
                )
                .await;
                *self.in_flight.lock().unwrap() -= 1;
                Ok(())
            }
        }
        let records: Vec<_> = (0..50)
            .map(|i| record("acme", &format!("c{i}"), *NOW + 60))
            .collect();
        let store = store_with(&records).await;
        let sender = Arc::new(Counting {
            in_flight: Mutex::new(0),
            peak: tokio::sync::watch::channel(0).0,
        });
        let options = DeliveryOptions {
            concurrency: BOUND,
            call_timeout: Duration::from_secs(30),
            ..fast()
        };
        let report = deliver(
            store,
            &fallback(sender.clone()),
            "acme",
            Bytes::from_static(b"x"),
            *NOW,
            &options,
        )
        .await
        .unwrap();
        assert_eq!(report.delivered, 50);
        assert_eq!(*sender.peak.borrow(), BOUND, "peak concurrency");
    }

    #[tokio::test]
    async fn a_message_over_the_limit_is_refused_before_anything_is_read_or_sent() {
        let store = store_with(&[record("acme", "c", *NOW + 60)]).await;
        let sender = Arc::new(ScriptedSender::default());
        let error = deliver(
            store,
            &fallback(sender.clone()),
            "acme",
            Bytes::from(vec![b'x'; MAX_MESSAGE_BYTES + 1]),
            *NOW,
            &fast(),
        )
        .await
        .unwrap_err();
        assert_eq!(
            error,
            DeliveryError::TooLarge {
                size: MAX_MESSAGE_BYTES + 1
            }
        );
        assert!(sender.posts.lock().unwrap().is_empty());
        // Exactly the limit is fine.
        let store = store_with(&[record("acme", "c", *NOW + 60)]).await;
        let report = deliver(
            store,
            &fallback(sender),
            "acme",
            Bytes::from(vec![b'x'; MAX_MESSAGE_BYTES]),
            *NOW,
            &fast(),
        )
        .await
        .unwrap();
        assert_eq!(report.delivered, 1);
    }

    fn connected(mut record: ConnectionRecord, seconds_ago: u64) -> ConnectionRecord {
        let at = std::time::UNIX_EPOCH + Duration::from_secs(*NOW - seconds_ago);
        record.connected_at = humantime::format_rfc3339_seconds(at).to_string();
        record
    }

    #[tokio::test]
    async fn an_uncertain_410_keeps_the_records_of_a_connection_younger_than_the_connect_timeout() {
        let store = store_with(&[
            connected(record("acme", "just-connected", *NOW + 60), 5),
            connected(record("acme", "long-gone", *NOW + 60), 60),
            // The original handler's epoch milliseconds, long ago.
            ConnectionRecord {
                connected_at: "1700000000000".into(),
                ..record("acme", "original", *NOW + 60)
            },
        ])
        .await;
        let gone = || vec![Answer::Send(Err(SendError::Gone))];
        let sender = Arc::new(ScriptedSender {
            script: HashMap::from([
                ("just-connected".into(), gone()),
                ("long-gone".into(), gone()),
                ("original".into(), gone()),
            ]),
            ..ScriptedSender::default()
        });
        // API Gateway's kind of 410: it may mean "$connect still running".
        let routes = fallback_to(sender.clone(), false);
        let report = deliver(
            store.clone(),
            &routes,
            "acme",
            Bytes::from_static(b"x"),
            *NOW,
            &fast(),
        )
        .await
        .unwrap();
        assert_eq!(
            report,
            DeliveryReport {
                delivered: 0,
                gone: 2,
                failed: 1,
                expired: 0,
                expired_auth: 0
            }
        );
        let left: Vec<String> = store
            .snapshot()
            .into_iter()
            .map(|r| r.connection_id)
            .collect();
        assert_eq!(left, ["just-connected"]);

        // From a sender whose 410 is final (a node), young or not, it goes.
        let report = deliver(
            store.clone(),
            &fallback(sender),
            "acme",
            Bytes::from_static(b"x"),
            *NOW,
            &fast(),
        )
        .await
        .unwrap();
        assert_eq!(report.gone, 1);
        assert!(store.snapshot().is_empty());
    }

    #[tokio::test]
    async fn records_go_where_their_endpoint_says_and_an_unknown_kind_is_failed_and_kept() {
        let local = "http://127.0.0.1:8082/n/0123456789abcdef";
        let with = |mut record: ConnectionRecord, endpoint: &str| {
            record.endpoint = Some(endpoint.into());
            record
        };
        let store = store_with(&[
            with(record("acme", "here-1", *NOW + 60), local),
            with(record("acme", "here-2", *NOW + 60), local),
            with(record("acme", "here-gone", *NOW + 60), local),
            record("acme", "no-endpoint", *NOW + 60),
            with(record("acme", "odd", *NOW + 60), "ftp://somewhere/else"),
        ])
        .await;
        // This node's sockets are posted to in the delivery's own loop; a
        // gone one is posted again by a task, which deletes its records.
        let here = Arc::new(ScriptedSender {
            script: HashMap::from([("here-gone".into(), vec![Answer::Send(Err(SendError::Gone))])]),
            ..ScriptedSender::default()
        });
        let default = Arc::new(ScriptedSender::default());
        let routes = Routes::new(Duration::from_secs(1), None)
            .unwrap()
            .with_local(local.into(), here.clone())
            .with_fallback(Route {
                sender: default.clone(),
                gone_is_certain: true,
                immediate: false,
            });
        let report = deliver(
            store.clone(),
            &routes,
            "acme",
            Bytes::from_static(b"x"),
            *NOW,
            &fast(),
        )
        .await
        .unwrap();
        assert_eq!(
            report,
            DeliveryReport {
                delivered: 3,
                gone: 1,
                failed: 1,
                expired: 0,
                expired_auth: 0
            }
        );
        let ids = |sender: &ScriptedSender| {
            let mut ids: Vec<String> = sender
                .posts
                .lock()
                .unwrap()
                .iter()
                .map(|(id, _)| id.clone())
                .collect();
            ids.sort();
            ids
        };
        assert_eq!(ids(&here), ["here-1", "here-2", "here-gone", "here-gone"]);
        assert_eq!(ids(&default), ["no-endpoint"]);
        let left: Vec<String> = store
            .snapshot()
            .into_iter()
            .map(|r| r.connection_id)
            .collect();
        assert!(!left.contains(&"here-gone".to_owned()), "{left:?}");
        assert_eq!(
            left.len(),
            4,
            "only the gone one's records deleted: {left:?}"
        );
    }

    #[tokio::test]
    async fn an_unreachable_endpoint_fails_its_group_fast_and_deletes_nothing() {
        #[derive(Default)]
        struct Refusing {
            posts: Mutex<usize>,
        }
        #[async_trait::async_trait]
        impl ConnectionSender for Refusing {
            async fn post(&self, _: &str, _: &Bytes) -> Result<(), SendError> {
                *self.posts.lock().unwrap() += 1;
                Err(SendError::Unreachable("connection refused".into()))
            }
        }
        let records: Vec<_> = (0..50)
            .map(|i| record("acme", &format!("c{i}"), *NOW + 60))
            .collect();
        let store = store_with(&records).await;
        let sender = Arc::new(Refusing::default());
        let report = deliver(
            store.clone(),
            &fallback(sender.clone()),
            "acme",
            Bytes::from_static(b"x"),
            *NOW,
            &fast(),
        )
        .await
        .unwrap();
        assert_eq!(report.failed, 50);
        assert_eq!(store.snapshot().len(), 50, "nothing deleted");
        let posts = *sender.posts.lock().unwrap();
        // The first `concurrency` connections use their attempts; the rest
        // see the endpoint marked unreachable (a few may race one attempt).
        assert!(posts <= 4 * 3 + 4, "{posts} posts for 50 connections");
    }

    #[test]
    fn execute_api_endpoints_are_recognised() {
        assert!(is_execute_api(
            "https://abc123.execute-api.eu-west-1.amazonaws.com/prod"
        ));
        assert!(!is_execute_api(
            "http://abc123.execute-api.eu-west-1.amazonaws.com/prod"
        ));
        assert!(!is_execute_api("https://example.com/prod"));
        assert_eq!(
            connected_at_seconds("2027-01-15T08:00:00Z"),
            Some(1800000000)
        );
        assert_eq!(connected_at_seconds("1800000000000"), Some(1800000000));
        assert_eq!(connected_at_seconds("yesterday"), None);
    }
}
