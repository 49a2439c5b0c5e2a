//! Store failures through the real policy component: each store error class
//! maps to its status with a generic body, and a failed CONNECT stores
//! nothing. The memory store cannot fail, so a fake injects the faults (no
//! real part here produces them on demand); everything else is real.

use std::sync::{Arc, Mutex};

use gitgazer_ws::clock::unix_now;
use gitgazer_ws::dev::{DevClaims, DevSigner};
use gitgazer_ws::keys::{KeySetSource, StaticKeySet};
use gitgazer_ws::policy::{EngineOptions, PolicyRuntime};
use gitgazer_ws::service::Handler;
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
