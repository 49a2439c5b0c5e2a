//! Store failures through the real policy component: each store error class
//! maps to its status with a generic body, a failed CONNECT stores nothing,
//! and a self-hosted socket's DISCONNECT deletes the keys its calls wrote,
//! asking the store again after a failure. The memory store cannot fail, so
//! fakes inject the faults (no real part here produces them on demand);
//! everything else is real.

use std::sync::{Arc, Mutex};

use gitgazer_ws::clock::unix_now;
use gitgazer_ws::dev::{DevClaims, DevSigner};
use gitgazer_ws::keys::{KeySetSource, StaticKeySet};
use gitgazer_ws::policy::{EngineOptions, PolicyRuntime};
use gitgazer_ws::service::{Current, Handler};
use gitgazer_ws::settings::{DEV_CLIENT_ID, DEV_ISSUER};
use gitgazer_ws::store::{ConnectionRecord, ConnectionStore, RecordKey, StoreError};
use gitgazer_ws::wit::types::Settings;

/// Fails every operation with one error.
struct FailingStore {
    error: StoreError,
    calls: Mutex<u32>,
}

#[async_trait::async_trait]
impl ConnectionStore for FailingStore {
    async fn put_all(&self, _records: &[ConnectionRecord]) -> Result<(), StoreError> {
        *self.calls.lock().unwrap() += 1;
        Err(self.error.clone())
    }
    async fn keys_of(&self, _connection_id: &str) -> Result<Vec<RecordKey>, StoreError> {
        *self.calls.lock().unwrap() += 1;
        Err(self.error.clone())
    }
    async fn delete(&self, _keys: &[RecordKey]) -> Result<u32, StoreError> {
        *self.calls.lock().unwrap() += 1;
        Err(self.error.clone())
    }
    async fn records_of(&self, _integration_id: &str) -> Result<Vec<ConnectionRecord>, StoreError> {
        *self.calls.lock().unwrap() += 1;
        Err(self.error.clone())
    }
    async fn revoked_before(&self, _sub: &str) -> Result<Option<u64>, StoreError> {
        *self.calls.lock().unwrap() += 1;
        Err(self.error.clone())
    }
    fn describe(&self) -> String {
        "failing".into()
    }
}

/// Never has a key set.
struct UnavailableKeys;

#[async_trait::async_trait]
impl KeySetSource for UnavailableKeys {
    async fn key_set(&self, _refresh: bool) -> Result<Arc<str>, String> {
        Err("the key server is down".into())
    }
    fn describe(&self) -> String {
        "unavailable".into()
    }
}

fn settings() -> Settings {
    Settings {
        issuer: DEV_ISSUER.into(),
        audiences: vec![DEV_CLIENT_ID.into()],
        leeway_seconds: 0,
        record_ttl_seconds: 7500,
    }
}

fn runtime() -> Arc<PolicyRuntime> {
    PolicyRuntime::new(EngineOptions {
        cache_dir: Some(gitgazer_ws_tests::test_cache_dir()),
        ..EngineOptions::default()
    })
    .expect("the policy component loads")
}

#[tokio::test]
async fn store_errors_map_to_statuses_with_generic_bodies() {
    let signer = DevSigner::generate().unwrap();
    let keys: Arc<dyn KeySetSource> =
        Arc::new(StaticKeySet::new(signer.jwks().to_owned(), "dev").unwrap());
    let claims = DevClaims {
        sub: "u1".into(),
        groups: vec!["acme".into()],
        ttl_seconds: 600,
    };
    let token = signer.mint(&claims, unix_now());
    let runtime = runtime();
    let cases = [
        (
            StoreError::Validation("item too large: secret detail".into()),
            400,
            "Bad request.",
        ),
        (
            StoreError::Throttled("ProvisionedThroughputExceeded: secret detail".into()),
            429,
            "Too many requests. Try again later.",
        ),
        (
            StoreError::NotFound("table gone: secret detail".into()),
            404,
            "Not found.",
        ),
        (
            StoreError::Unavailable("connection refused: secret detail".into()),
            500,
            "Internal server error.",
        ),
        (
            StoreError::Other("boom: secret detail".into()),
            500,
            "Internal server error.",
        ),
    ];
    for (error, status, body) in cases {
        let store = Arc::new(FailingStore {
            error: error.clone(),
            calls: Mutex::new(0),
        });
        let handler = Handler::new(runtime.clone(), store.clone(), keys.clone(), settings());
        let reply = handler.connect("r", "c1", Some(&token)).await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (status, body),
            "{error}"
        );
        let reply = handler.disconnect("r", "c1").await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (status, body),
            "{error}"
        );
        assert_eq!(*store.calls.lock().unwrap(), 2, "one put, one lookup");
    }
}

#[tokio::test]
async fn no_key_set_answers_500_not_401() {
    let handler = Handler::new(
        runtime(),
        Arc::new(gitgazer_ws::store::MemoryStore::new()),
        Arc::new(UnavailableKeys),
        settings(),
    );
    let token = gitgazer_ws_tests::hand_made_token(
        r#"{"alg":"RS256","kid":"k"}"#,
        r#"{"sub":"s"}"#,
        &[7; 256],
    );
    let reply = handler.connect("r", "c1", Some(&token)).await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (500, "Internal server error.")
    );
}

/// The memory store with the faults a socket's calls must survive: failed
/// writes or deletes on demand, and an index that lags (`keys_of` finds
/// nothing, as a GSI may right after a write). Counts the lookups.
#[derive(Default)]
struct FlakyStore {
    records: gitgazer_ws::store::MemoryStore,
    fail_puts: Mutex<u32>,
    fail_deletes: Mutex<u32>,
    index_lags: Mutex<bool>,
    lookups: Mutex<u32>,
}

impl FlakyStore {
    fn fails(counter: &Mutex<u32>) -> bool {
        let mut left = counter.lock().unwrap();
        let fail = *left > 0;
        *left = left.saturating_sub(1);
        fail
    }

    fn lookups(&self) -> u32 {
        *self.lookups.lock().unwrap()
    }

    /// The (integration, connection) pairs stored.
    fn stored(&self) -> Vec<(String, String)> {
        self.records
            .snapshot()
            .into_iter()
            .map(|r| (r.integration_id, r.connection_id))
            .collect()
    }
}

#[async_trait::async_trait]
impl ConnectionStore for FlakyStore {
    async fn put_all(&self, records: &[ConnectionRecord]) -> Result<(), StoreError> {
        if Self::fails(&self.fail_puts) {
            return Err(StoreError::Throttled("injected".into()));
        }
        self.records.put_all(records).await
    }
    async fn keys_of(&self, connection_id: &str) -> Result<Vec<RecordKey>, StoreError> {
        *self.lookups.lock().unwrap() += 1;
        if *self.index_lags.lock().unwrap() {
            return Ok(Vec::new());
        }
        self.records.keys_of(connection_id).await
    }
    async fn delete(&self, keys: &[RecordKey]) -> Result<u32, StoreError> {
        if Self::fails(&self.fail_deletes) {
            return Err(StoreError::Unavailable("injected".into()));
        }
        self.records.delete(keys).await
    }
    async fn records_of(&self, integration_id: &str) -> Result<Vec<ConnectionRecord>, StoreError> {
        self.records.records_of(integration_id).await
    }
    async fn revoked_before(&self, sub: &str) -> Result<Option<u64>, StoreError> {
        self.records.revoked_before(sub).await
    }
    fn describe(&self) -> String {
        "flaky".into()
    }
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(i, c)| (i.to_string(), c.to_string()))
        .collect()
}

/// A self-hosted socket's calls (`Handler::for_socket`) follow the keys
/// they store and delete: its DISCONNECT deletes them without a lookup,
/// whatever the index says and whoever deleted some first; after a failed
/// store call it asks the store again and also deletes what its calls may
/// have left. A handler of no socket (API Gateway, HTTP) always asks.
#[tokio::test]
async fn a_sockets_disconnect_deletes_the_keys_its_calls_wrote() {
    let signer = DevSigner::generate().unwrap();
    let keys: Arc<dyn KeySetSource> =
        Arc::new(StaticKeySet::new(signer.jwks().to_owned(), "dev").unwrap());
    let token = |groups: &[&str]| {
        let claims = DevClaims {
            sub: "u1".into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ttl_seconds: 600,
        };
        signer.mint(&claims, unix_now())
    };
    let runtime = runtime();
    let store = Arc::new(FlakyStore::default());
    let handler = Handler::new(runtime, store.clone(), keys, settings());
    let status = |reply: gitgazer_ws::wit::types::Response| (reply.status, reply.body);
    let refresh = |socket: &Handler, id: &'static str, current: String, new: String| {
        let socket = socket.clone();
        async move {
            socket
                .refresh(
                    "r",
                    id,
                    Some(&new),
                    Current::Token(current),
                    "2026-12-06T00:00:00Z",
                    None,
                )
                .await
        }
    };

    // Three groups, the index lagging: all three deleted, no lookup.
    *store.index_lags.lock().unwrap() = true;
    let socket = handler.for_socket("s1");
    let connected = socket
        .connect("r", "s1", Some(&token(&["a", "b", "c"])))
        .await;
    assert_eq!(connected.status, 200);
    assert_eq!(
        status(socket.disconnect("r", "s1").await),
        (200, "Disconnected. Removed 3 records.".into())
    );
    assert!(store.stored().is_empty());
    assert_eq!(store.lookups(), 0);
    *store.index_lags.lock().unwrap() = false;

    // A record deleted by someone else first (delivery after a 410, an
    // operator): deleting it again is harmless.
    let socket = handler.for_socket("s2");
    assert_eq!(
        socket
            .connect("r", "s2", Some(&token(&["a", "b"])))
            .await
            .status,
        200
    );
    let b = RecordKey {
        integration_id: "b".into(),
        connection_id: "s2".into(),
    };
    store.records.delete(&[b]).await.unwrap();
    assert_eq!(socket.disconnect("r", "s2").await.status, 200);
    assert!(store.stored().is_empty());
    assert_eq!(store.lookups(), 0);

    // A refresh to a, c: its own lookup is answered from the keys too, and
    // the DISCONNECT deletes exactly a and c.
    let socket = handler.for_socket("s3");
    let first = token(&["a", "b"]);
    assert_eq!(socket.connect("r", "s3", Some(&first)).await.status, 200);
    let reply = refresh(&socket, "s3", first, token(&["a", "c"])).await;
    assert_eq!(reply.code, 1000, "{}", reply.body);
    assert!(
        reply.body.contains(r#""added":["c"],"removed":["b"]"#),
        "{}",
        reply.body
    );
    assert_eq!(store.stored(), pairs(&[("a", "s3"), ("c", "s3")]));
    assert_eq!(
        status(socket.disconnect("r", "s3").await),
        (200, "Disconnected. Removed 2 records.".into())
    );
    assert!(store.stored().is_empty());
    assert_eq!(store.lookups(), 0);

    // A CONNECT whose write failed (the store rolled it back) leaves no
    // known keys: a DISCONNECT asks the store.
    let socket = handler.for_socket("s4");
    *store.fail_puts.lock().unwrap() = 1;
    assert_eq!(
        socket.connect("r", "s4", Some(&token(&["a"]))).await.status,
        429
    );
    assert_eq!(
        status(socket.disconnect("r", "s4").await),
        (200, "No records to disconnect.".into())
    );
    assert_eq!(store.lookups(), 1);

    // A refresh that fails part way (its write lands, both deletes fail):
    // 1011, records a, b, c left. Its DISCONNECT asks the store, which
    // lags, and deletes what the socket's calls may have left: all three.
    let socket = handler.for_socket("s5");
    let first = token(&["a", "b"]);
    assert_eq!(socket.connect("r", "s5", Some(&first)).await.status, 200);
    *store.fail_deletes.lock().unwrap() = 2;
    let reply = refresh(&socket, "s5", first, token(&["a", "c"])).await;
    assert_eq!(reply.code, 1011, "{}", reply.body);
    assert_eq!(
        store.stored(),
        pairs(&[("a", "s5"), ("b", "s5"), ("c", "s5")])
    );
    let lookups = store.lookups();
    *store.index_lags.lock().unwrap() = true;
    assert_eq!(
        status(socket.disconnect("r", "s5").await),
        (200, "Disconnected. Removed 3 records.".into())
    );
    assert!(store.stored().is_empty());
    assert_eq!(
        store.lookups(),
        lookups + 1,
        "uncertain: the store is asked"
    );
    *store.index_lags.lock().unwrap() = false;

    // No socket (API Gateway, HTTP /disconnect): the lookup, as before.
    assert_eq!(
        handler
            .connect("r", "h1", Some(&token(&["a"])))
            .await
            .status,
        200
    );
    let lookups = store.lookups();
    assert_eq!(
        status(handler.disconnect("r", "h1").await),
        (200, "Disconnected. Removed 1 records.".into())
    );
    assert_eq!(store.lookups(), lookups + 1);
}
