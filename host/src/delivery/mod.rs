//! Event delivery: one message to every connection of an integration.
//!
//! The records come from the store (`records_of`, every page); records whose
//! `expiresAt` has passed are skipped and deleted (DynamoDB's TTL deletion
//! lags by up to days). Each live connection gets the message through a
//! [`ConnectionSender`]: the API Gateway Management API on AWS
//! ([`ManagementApi`]), or the same API served by a self-hosted host.
//! A connection the sender reports gone loses all its records (found through
//! the connection-id index, as a DISCONNECT would).

mod management_api;

pub use management_api::ManagementApi;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use tokio::task::JoinSet;

use crate::retry::Backoff;
use crate::store::{ConnectionStore, StoreError};
use crate::telemetry;

/// API Gateway's WebSocket frame limit (128 KB); larger messages are refused
/// before anything is sent.
pub const MAX_MESSAGE_BYTES: usize = 128 * 1024;

/// Bounds of one delivery.
#[derive(Debug, Clone)]
pub struct DeliveryOptions {
    /// Posts in flight at once.
    pub concurrency: usize,
    /// Deadline of one post attempt.
    pub call_timeout: Duration,
    /// Attempts per connection on throttling, 5xx or a timeout.
    pub max_attempts: u32,
    /// Backoff between attempts.
    pub backoff: Backoff,
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
        }
    }
}

/// Why a post to one connection failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// 410: the connection is closed; its records should go.
    Gone,
    /// 403: not allowed (IAM, wrong stage); retrying will not help.
    Forbidden(String),
    /// Throttling, 5xx, a timeout or a lost connection: worth another try.
    Retryable(String),
    /// Anything else (e.g. 400, 413): not retried.
    Failed(String),
}

/// Posts a message to one WebSocket connection.
#[async_trait::async_trait]
pub trait ConnectionSender: Send + Sync + 'static {
    /// `message` is shared, not copied, by senders that keep it (a
    /// delivery hands the same buffer to every connection).
    async fn post(&self, connection_id: &str, message: &Bytes) -> Result<(), SendError>;
}

/// The outcome of one delivery, counted per connection.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct DeliveryReport {
    /// Connections that accepted the message.
    pub delivered: u32,
    /// Connections found gone (their records are deleted).
    pub gone: u32,
    /// Connections the message could not reach (403, retries exhausted, …).
    pub failed: u32,
    /// Records skipped because their `expiresAt` had passed (and deleted).
    pub expired: u32,
}

/// Why a delivery did not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryError {
    /// The message exceeds [`MAX_MESSAGE_BYTES`].
    TooLarge { size: usize },
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
            DeliveryError::Store(error) => write!(f, "reading the integration's records: {error}"),
        }
    }
}

impl std::error::Error for DeliveryError {}

/// Sends `message` to every live connection of `integration_id` (`now`:
/// seconds since the Unix epoch, against `expiresAt`).
pub async fn deliver(
    store: Arc<dyn ConnectionStore>,
    sender: Arc<dyn ConnectionSender>,
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
    let records = store
        .records_of(integration_id)
        .await
        .map_err(DeliveryError::Store)?;
    let (expired, live): (Vec<_>, Vec<_>) = records
        .into_iter()
        .partition(|record| record.expires_at <= now);
    let mut report = DeliveryReport {
        expired: count(expired.len()),
        ..DeliveryReport::default()
    };
    for _ in &expired {
        telemetry::delivery("expired", None);
    }
    if !expired.is_empty() {
        let keys: Vec<_> = expired.iter().map(|record| record.key()).collect();
        if let Err(error) = store.delete(&keys).await {
            // Not fatal: they are skipped either way, and TTL removes them.
            tracing::warn!(integration_id, %error, records = keys.len(), "could not delete expired records");
        }
    }

    // One post per connection (a record per group: a connection appears
    // once per integration, but be safe), at most `concurrency` at once.
    let connections: BTreeSet<String> = live
        .into_iter()
        .map(|record| record.connection_id)
        .collect();
    let mut pending = connections.into_iter();
    let mut in_flight = JoinSet::new();
    loop {
        while in_flight.len() < options.concurrency.max(1) {
            let Some(connection_id) = pending.next() else {
                break;
            };
            let (store, sender, message, options) = (
                store.clone(),
                sender.clone(),
                message.clone(),
                options.clone(),
            );
            in_flight.spawn(async move {
                let started = std::time::Instant::now();
                let outcome =
                    deliver_to(&*store, &*sender, &connection_id, &message, &options).await;
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
    tracing::info!(
        integration_id,
        delivered = report.delivered,
        gone = report.gone,
        failed = report.failed,
        expired = report.expired,
        "delivered"
    );
    Ok(report)
}

enum Outcome {
    Delivered,
    Gone,
    Failed,
}

/// One connection: post with retries; when gone, delete all its records.
async fn deliver_to(
    store: &dyn ConnectionStore,
    sender: &dyn ConnectionSender,
    connection_id: &str,
    message: &Bytes,
    options: &DeliveryOptions,
) -> Outcome {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result =
            match tokio::time::timeout(options.call_timeout, sender.post(connection_id, message))
                .await
            {
                Ok(result) => result,
                Err(_) => Err(SendError::Retryable(format!(
                    "no answer within {:?}",
                    options.call_timeout
                ))),
            };
        match result {
            Ok(()) => return Outcome::Delivered,
            Err(SendError::Gone) => {
                remove_connection(store, connection_id).await;
                return Outcome::Gone;
            }
            Err(SendError::Forbidden(reason)) => {
                tracing::error!(
                    connection_id,
                    reason = reason.as_str(),
                    "post refused (403); not retried"
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
            Err(SendError::Retryable(reason)) if attempt >= options.max_attempts => {
                tracing::warn!(
                    connection_id,
                    reason = reason.as_str(),
                    attempt,
                    "post failed; attempts exhausted"
                );
                return Outcome::Failed;
            }
            Err(SendError::Retryable(_)) => {
                tokio::time::sleep(options.backoff.delay(attempt)).await;
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
    }

    fn record(integration: &str, connection: &str, expires_at: u64) -> ConnectionRecord {
        ConnectionRecord {
            integration_id: integration.into(),
            connection_id: connection.into(),
            sub: "user".into(),
            connected_at: "2027-01-15T08:00:00Z".into(),
            expires_at,
        }
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
        }
    }

    async fn store_with(records: &[ConnectionRecord]) -> Arc<MemoryStore> {
        let store = Arc::new(MemoryStore::new());
        store.put_all(records).await.unwrap();
        store
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
            sender.clone(),
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
                expired: 1
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
            sender.clone(),
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
            sender.clone(),
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
            sender,
            "acme",
            Bytes::from(vec![b'x'; MAX_MESSAGE_BYTES]),
            *NOW,
            &fast(),
        )
        .await
        .unwrap();
        assert_eq!(report.delivered, 1);
    }
}
