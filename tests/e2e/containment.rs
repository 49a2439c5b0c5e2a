//! A misbehaving guest cannot take the host down: each bad request gets 500
//! within its limits, the next request is served by a fresh instance, and a
//! trap after storing records leaves no record behind.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gitgazer_ws::keys::StaticKeySet;
use gitgazer_ws::policy::{EngineOptions, PolicyRuntime};
use gitgazer_ws::service::Handler;
use gitgazer_ws::store::MemoryStore;
use gitgazer_ws::wit::types::{Response, Settings};

fn handler_with_misbehaving_guest(store: Arc<MemoryStore>) -> Handler {
    let options = EngineOptions {
        component: Some(PathBuf::from(env!("MISBEHAVING_GUEST_WASM"))),
        max_memory_bytes: 16 << 20,
        guest_time_budget: Duration::from_millis(200),
        cache_dir: Some(gitgazer_ws_tests::test_cache_dir()),
        ..EngineOptions::default()
    };
    let runtime = PolicyRuntime::new(options).expect("the test guest fits the world");
    let keys = Arc::new(StaticKeySet::new(r#"{"keys":[]}"#, "test").unwrap());
    let settings = Settings {
        issuer: "https://issuer.invalid".into(),
        audiences: vec!["aud".into()],
        leeway_seconds: 0,
        record_ttl_seconds: 60,
    };
    Handler::new(runtime, store, keys, settings)
}

fn fresh_instance_reply() -> Response {
    Response {
        status: 200,
        body: "calls in this instance: 1".into(),
        rejection: None,
    }
}

#[tokio::test]
async fn every_misbehaviour_is_contained_and_the_next_request_is_served() {
    let store = Arc::new(MemoryStore::new());
    let handler = handler_with_misbehaving_guest(store.clone());

    for misbehaviour in ["loop", "trap", "grow", "recurse"] {
        let started = Instant::now();
        let reply = handler.connect("test", misbehaviour, None).await;
        assert_eq!(reply, Response::internal_error(), "{misbehaviour}");
        // Bounded by the guest time budget (200 ms) plus scheduling slack.
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{misbehaviour} took {:?}",
            started.elapsed()
        );
        // A fresh instance serves the next request: had the trapped one been
        // reused, its call counter would be above 1.
        assert_eq!(
            handler.connect("test", "ok", None).await,
            fresh_instance_reply()
        );
    }
}

#[tokio::test]
async fn a_log_flood_is_capped_and_the_request_completes() {
    let handler = handler_with_misbehaving_guest(Arc::new(MemoryStore::new()));
    let reply = handler.connect("test", "log-flood", None).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, "flooded");
}

#[tokio::test]
async fn a_trap_after_storing_rolls_the_records_back() {
    let store = Arc::new(MemoryStore::new());
    let handler = handler_with_misbehaving_guest(store.clone());
    let reply = handler.connect("test", "store-then-trap", None).await;
    assert_eq!(reply, Response::internal_error());
    assert_eq!(store.snapshot(), vec![], "a failed CONNECT left records");
}

#[tokio::test]
async fn concurrent_requests_beyond_the_pool_wait_instead_of_failing() {
    let options = EngineOptions {
        component: Some(PathBuf::from(env!("MISBEHAVING_GUEST_WASM"))),
        max_instances: 2,
        cache_dir: Some(gitgazer_ws_tests::test_cache_dir()),
        ..EngineOptions::default()
    };
    let runtime = PolicyRuntime::new(options).unwrap();
    let keys = Arc::new(StaticKeySet::new(r#"{"keys":[]}"#, "test").unwrap());
    let settings = Settings {
        issuer: "i".into(),
        audiences: vec!["a".into()],
        leeway_seconds: 0,
        record_ttl_seconds: 60,
    };
    let handler = Handler::new(runtime, Arc::new(MemoryStore::new()), keys, settings);
    let mut tasks = Vec::new();
    for i in 0..16 {
        let handler = handler.clone();
        tasks.push(tokio::spawn(async move {
            handler.connect("test", &format!("c{i}"), None).await
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), fresh_instance_reply());
    }
}
