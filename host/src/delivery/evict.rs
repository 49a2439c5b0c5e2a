//! `gitgazer-ws evict`: ends a user's access now, not when their token
//! expires.
//!
//! 1. A revocation is stored first (`revokedBefore` = now): the policy
//!    refuses that user's tokens issued at or before it, at CONNECT (401)
//!    and at refresh (4003). Without it the user would reconnect at once
//!    with the token they hold.
//! 2. Their records are found: in the named integrations (a strongly
//!    consistent Query of each, filtered on `sub`), or in all of them
//!    through the table's `sub` index (eventually consistent).
//! 3. The records are deleted, so no delivery reaches them from here on.
//! 4. Each connection is closed where its records say it lives: a node's
//!    socket with 4003 `forbidden`, an API Gateway connection with a last
//!    `{"type":"close","code":4003,"reason":"revoked"}` and
//!    `DeleteConnection` ([`Closing::Revoked`]).

use std::time::Duration;

use serde::Serialize;

use super::{Closing, Routes, SendError, by_endpoint};
use crate::retry::Backoff;
use crate::store::{ConnectionRecord, ConnectionStore, StoreError};

/// A `sub` longer than this is refused (Cognito's are 36 characters; the
/// revocation's key must stay within DynamoDB's 1 KB range key).
pub const MAX_SUB_BYTES: usize = 512;

/// What one eviction did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EvictReport {
    /// The user's tokens issued at or before this second are refused.
    pub revoked_before: u64,
    /// The user's records found.
    pub records: u32,
    /// Of those, deleted.
    pub deleted: u32,
    /// Their connections.
    pub connections: u32,
    /// Closed by this eviction.
    pub closed: u32,
    /// Gone already.
    pub gone: u32,
    /// Could not be closed (no route, refused, unreachable): they keep
    /// their socket until it ends, but receive nothing (their records are
    /// gone) and cannot reconnect.
    pub failed: u32,
}

impl EvictReport {
    /// Every record deleted and every connection closed or gone.
    pub fn is_complete(&self) -> bool {
        self.deleted == self.records && self.failed == 0
    }
}

/// Why an eviction could not run (or stopped after the revocation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EvictError {
    /// The `sub` or an integration id is not one (nothing was written).
    Invalid(String),
    /// The revocation could not be stored (nothing was done).
    Revoke(StoreError),
    /// The revocation is stored, but the user's records could not be
    /// listed.
    Lookup(StoreError),
}

impl std::fmt::Display for EvictError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EvictError::Invalid(what) => f.write_str(what),
            EvictError::Revoke(error) => write!(f, "storing the revocation: {error}"),
            EvictError::Lookup(error) => write!(
                f,
                "the revocation is stored (the user cannot connect or refresh with a token \
                 issued until now), but their records could not be listed: {error}"
            ),
        }
    }
}

impl std::error::Error for EvictError {}

/// Whom to evict, and how long the revocation is kept.
pub struct Eviction<'a> {
    pub sub: &'a str,
    /// Where to look for their records; empty: everywhere, through the
    /// `sub` index.
    pub integrations: &'a [String],
    /// Now, seconds since the Unix epoch: the revocation's second.
    pub now: u64,
    /// How long the revocation is kept (as long as a token can live).
    pub revocation_ttl: Duration,
    /// Deadline of one close.
    pub call_timeout: Duration,
}

/// Attempts per connection on a retryable failure.
const CLOSE_ATTEMPTS: u32 = 3;

/// Runs an eviction; see the module's steps.
pub async fn evict(
    store: &dyn ConnectionStore,
    routes: &Routes,
    eviction: &Eviction<'_>,
) -> Result<EvictReport, EvictError> {
    let sub = eviction.sub;
    if sub.is_empty() || sub.len() > MAX_SUB_BYTES || sub.chars().any(char::is_control) {
        return Err(EvictError::Invalid(format!(
            "--sub must be 1 to {MAX_SUB_BYTES} bytes without control characters"
        )));
    }
    if let Some(bad) = eviction
        .integrations
        .iter()
        .find(|id| !gitgazer_ws_guest::claims::is_group_name(id))
    {
        return Err(EvictError::Invalid(format!(
            "--integration {bad:?} is no integration id (a Cognito group name: no whitespace)"
        )));
    }
    let now = eviction.now;
    let expires_at = now.saturating_add(eviction.revocation_ttl.as_secs());
    store
        .revoke(sub, now, expires_at)
        .await
        .map_err(EvictError::Revoke)?;
    tracing::info!(revoked_before = now, "revocation stored");

    let records = find_records(store, sub, eviction.integrations)
        .await
        .map_err(EvictError::Lookup)?;
    let mut report = EvictReport {
        revoked_before: now,
        records: count(records.len()),
        ..EvictReport::default()
    };
    if !records.is_empty() {
        let keys: Vec<_> = records.iter().map(ConnectionRecord::key).collect();
        match store.delete(&keys).await {
            Ok(_) => report.deleted = report.records,
            Err(error) => tracing::error!(
                %error,
                records = keys.len(),
                "could not delete the user's records; closing their connections anyway \
                 (each close's DISCONNECT deletes them)"
            ),
        }
    }

    for (endpoint, connections) in by_endpoint(records) {
        report.connections += count(connections.len());
        let route = match routes.route(endpoint.as_deref()).await {
            Ok(route) => route,
            Err(reason) => {
                tracing::warn!(
                    endpoint = ?endpoint,
                    connections = connections.len(),
                    reason,
                    "no route to these connections; not closed"
                );
                report.failed += count(connections.len());
                continue;
            }
        };
        // A node found unreachable (its attempts spent) fails the rest of
        // its connections at once, as a delivery does.
        let mut unreachable = false;
        for connection_id in connections.into_keys() {
            if unreachable {
                report.failed += 1;
                continue;
            }
            match close(&*route.sender, &connection_id, eviction.call_timeout).await {
                Ok(()) => report.closed += 1,
                Err(SendError::Gone) => report.gone += 1,
                Err(error) => {
                    tracing::warn!(connection_id, ?error, "could not close a connection");
                    unreachable = matches!(error, SendError::Unreachable(_));
                    report.failed += 1;
                }
            }
        }
    }
    tracing::info!(
        records = report.records,
        deleted = report.deleted,
        closed = report.closed,
        gone = report.gone,
        failed = report.failed,
        "evicted"
    );
    Ok(report)
}

/// The user's records: in the named integrations, or through the index.
async fn find_records(
    store: &dyn ConnectionStore,
    sub: &str,
    integrations: &[String],
) -> Result<Vec<ConnectionRecord>, StoreError> {
    if integrations.is_empty() {
        return store.records_of_sub(sub).await;
    }
    let mut records = Vec::new();
    for integration in integrations {
        records.extend(store.records_of_user(integration, sub).await?);
    }
    Ok(records)
}

/// One close, retried on throttling, 5xx or a timeout.
async fn close(
    sender: &dyn super::ConnectionSender,
    connection_id: &str,
    call_timeout: Duration,
) -> Result<(), SendError> {
    let backoff = Backoff {
        base: Duration::from_millis(100),
        max: Duration::from_secs(1),
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result =
            match tokio::time::timeout(call_timeout, sender.close(connection_id, Closing::Revoked))
                .await
            {
                Ok(result) => result,
                Err(_) => Err(SendError::Retryable(format!(
                    "no answer within {call_timeout:?}"
                ))),
            };
        match result {
            Err(SendError::Retryable(_) | SendError::Unreachable(_))
                if attempt < CLOSE_ATTEMPTS =>
            {
                tokio::time::sleep(backoff.delay(attempt)).await;
            }
            result => return result,
        }
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;

    use super::*;
    use crate::delivery::{ConnectionSender, Route};
    use crate::store::MemoryStore;

    /// Records every close; answers from a script by connection id.
    #[derive(Default)]
    struct Closer {
        answers: std::collections::HashMap<String, SendError>,
        closes: Mutex<Vec<(String, Closing)>>,
    }

    #[async_trait::async_trait]
    impl ConnectionSender for Closer {
        async fn post(&self, _: &str, _: &Bytes) -> Result<(), SendError> {
            Ok(())
        }

        async fn close(&self, connection_id: &str, why: Closing) -> Result<(), SendError> {
            self.closes
                .lock()
                .unwrap()
                .push((connection_id.to_owned(), why));
            match self.answers.get(connection_id) {
                Some(error) => Err(error.clone()),
                None => Ok(()),
            }
        }
    }

    fn record(integration: &str, connection: &str, sub: &str) -> ConnectionRecord {
        ConnectionRecord {
            integration_id: integration.into(),
            connection_id: connection.into(),
            sub: sub.into(),
            connected_at: "2026-12-06T00:00:00Z".into(),
            expires_at: crate::clock::unix_now() + 3600,
            endpoint: None,
            auth_expires_at: None,
            auth_issued_at: None,
        }
    }

    fn routes(closer: Arc<Closer>) -> Routes {
        Routes::new(Duration::from_secs(1), None)
            .unwrap()
            .with_fallback(Route {
                sender: closer,
                gone_is_certain: true,
                immediate: false,
            })
    }

    fn eviction<'a>(sub: &'a str, integrations: &'a [String]) -> Eviction<'a> {
        Eviction {
            sub,
            integrations,
            now: crate::clock::unix_now(),
            revocation_ttl: Duration::from_secs(86_400),
            call_timeout: Duration::from_millis(200),
        }
    }

    #[tokio::test]
    async fn the_user_is_revoked_their_records_go_and_each_connection_closes_once() {
        let store = MemoryStore::new();
        store
            .put_all(&[
                record("a", "c1", "alice"),
                record("b", "c1", "alice"),
                record("a", "c2", "alice"),
                record("a", "c3", "bob"),
            ])
            .await
            .unwrap();
        let closer = Arc::new(Closer {
            answers: [("c2".to_owned(), SendError::Gone)].into(),
            ..Closer::default()
        });
        let eviction = eviction("alice", &[]);
        let report = evict(&store, &routes(closer.clone()), &eviction)
            .await
            .unwrap();
        assert_eq!(
            report,
            EvictReport {
                revoked_before: eviction.now,
                records: 3,
                deleted: 3,
                connections: 2,
                closed: 1,
                gone: 1,
                failed: 0,
            }
        );
        assert!(report.is_complete());
        assert_eq!(
            *closer.closes.lock().unwrap(),
            [
                ("c1".to_owned(), Closing::Revoked),
                ("c2".to_owned(), Closing::Revoked)
            ]
        );
        let left: Vec<_> = store
            .snapshot()
            .into_iter()
            .map(|r| r.connection_id)
            .collect();
        assert_eq!(left, ["c3"]);
        assert_eq!(
            store.revoked_before("alice").await.unwrap(),
            Some(eviction.now)
        );
        assert_eq!(store.revoked_before("bob").await.unwrap(), None);
    }

    #[tokio::test]
    async fn named_integrations_limit_the_lookup_but_not_the_revocation() {
        let store = MemoryStore::new();
        store
            .put_all(&[record("a", "c1", "alice"), record("b", "c2", "alice")])
            .await
            .unwrap();
        let closer = Arc::new(Closer::default());
        let integrations = ["b".to_owned()];
        let report = evict(
            &store,
            &routes(closer.clone()),
            &eviction("alice", &integrations),
        )
        .await
        .unwrap();
        assert_eq!((report.records, report.closed), (1, 1));
        assert_eq!(closer.closes.lock().unwrap()[0].0, "c2");
        assert!(store.revoked_before("alice").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn a_connection_that_cannot_be_closed_is_counted_failed() {
        let store = MemoryStore::new();
        store.put_all(&[record("a", "c1", "alice")]).await.unwrap();
        let closer = Arc::new(Closer {
            answers: [("c1".to_owned(), SendError::Retryable("503".into()))].into(),
            ..Closer::default()
        });
        let report = evict(&store, &routes(closer.clone()), &eviction("alice", &[]))
            .await
            .unwrap();
        assert_eq!((report.closed, report.failed), (0, 1));
        assert!(!report.is_complete());
        assert_eq!(closer.closes.lock().unwrap().len(), 3, "retried");

        // An unreachable node: its first connection spends the attempts,
        // the rest fail without a call.
        store
            .put_all(&[record("a", "c1", "alice"), record("a", "c2", "alice")])
            .await
            .unwrap();
        let closer = Arc::new(Closer {
            answers: [
                ("c1".to_owned(), SendError::Unreachable("refused".into())),
                ("c2".to_owned(), SendError::Unreachable("refused".into())),
            ]
            .into(),
            ..Closer::default()
        });
        let report = evict(&store, &routes(closer.clone()), &eviction("alice", &[]))
            .await
            .unwrap();
        assert_eq!((report.connections, report.failed), (2, 2));
        assert_eq!(closer.closes.lock().unwrap().len(), 3, "c1's attempts only");

        // No route at all (no endpoint, no fallback): failed, records gone.
        store.put_all(&[record("a", "c1", "alice")]).await.unwrap();
        let no_routes = Routes::new(Duration::from_secs(1), None).unwrap();
        let report = evict(&store, &no_routes, &eviction("alice", &[]))
            .await
            .unwrap();
        assert_eq!((report.deleted, report.failed), (1, 1));
        assert!(store.snapshot().is_empty());
    }

    #[tokio::test]
    async fn a_bad_sub_or_integration_writes_nothing() {
        let store = MemoryStore::new();
        let closer = Arc::new(Closer::default());
        let long = "x".repeat(MAX_SUB_BYTES + 1);
        for (sub, integrations) in [
            ("", vec![]),
            (long.as_str(), vec![]),
            ("a\nb", vec![]),
            ("alice", vec!["revoked alice".to_owned()]),
            ("alice", vec![String::new()]),
        ] {
            let error = evict(
                &store,
                &routes(closer.clone()),
                &eviction(sub, &integrations),
            )
            .await
            .unwrap_err();
            assert!(matches!(error, EvictError::Invalid(_)), "{error}");
        }
        assert_eq!(store.revoked_before("alice").await.unwrap(), None);
    }
}
