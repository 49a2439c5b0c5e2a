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

/// The misbehaving guest with a 200 ms guest time budget, so a spinning
/// request is cut off fast.
fn handler_with_misbehaving_guest(store: Arc<MemoryStore>) -> Handler {
    misbehaving_guest_with_budget(store, Duration::from_millis(200))
}

fn misbehaving_guest_with_budget(store: Arc<MemoryStore>, budget: Duration) -> Handler {
    let options = EngineOptions {
        component: Some(PathBuf::from(env!("MISBEHAVING_GUEST_WASM"))),
        max_memory_bytes: 16 << 20,
        guest_time_budget: budget,
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
    // 100 000 log calls: a budget no busy machine runs out of (the epoch
    // deadline counts time the guest's thread waits for a core).
    let handler =
        misbehaving_guest_with_budget(Arc::new(MemoryStore::new()), Duration::from_secs(30));
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

/// A key set that holds every request until released, counting how many
/// wait inside it at once.
struct HeldKeys {
    inside: std::sync::Mutex<(usize, usize)>,
    released: tokio::sync::watch::Sender<bool>,
}

#[async_trait::async_trait]
impl gitgazer_ws::keys::KeySetSource for HeldKeys {
    async fn key_set(&self, _refresh: bool) -> Result<Arc<str>, String> {
        {
            let mut inside = self.inside.lock().unwrap();
            inside.0 += 1;
            inside.1 = inside.1.max(inside.0);
        }
        let _ = self
            .released
            .subscribe()
            .wait_for(|released| *released)
            .await;
        self.inside.lock().unwrap().0 -= 1;
        Err("held, then unavailable".into())
    }
    fn describe(&self) -> String {
        "held".into()
    }
}

/// With `MAX_INSTANCES` 2, 16 concurrent CONNECTs: while two instances wait
/// on the key set, the other 14 wait for an instance (none is answered, none
/// is inside); released, every one is served, never more than two at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_beyond_the_pool_wait_instead_of_failing() {
    let options = EngineOptions {
        max_instances: 2,
        cache_dir: Some(gitgazer_ws_tests::test_cache_dir()),
        ..EngineOptions::default()
    };
    let runtime = PolicyRuntime::new(options).unwrap();
    let keys = Arc::new(HeldKeys {
        inside: std::sync::Mutex::new((0, 0)),
        released: tokio::sync::watch::channel(false).0,
    });
    let settings = Settings {
        issuer: "i".into(),
        audiences: vec!["a".into()],
        leeway_seconds: 0,
        record_ttl_seconds: 60,
    };
    let handler = Handler::new(
        runtime,
        Arc::new(MemoryStore::new()),
        keys.clone(),
        settings,
    );
    let token = gitgazer_ws_tests::hand_made_token(
        r#"{"alg":"RS256","kid":"k"}"#,
        r#"{"sub":"s"}"#,
        &[7; 256],
    );
    let mut tasks = Vec::new();
    for i in 0..16 {
        let (handler, token) = (handler.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            handler
                .connect("test", &format!("c{i}"), Some(&token))
                .await
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while keys.inside.lock().unwrap().0 < 2 {
        assert!(
            Instant::now() < deadline,
            "two instances never reached the key set"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        tasks.iter().all(|task| !task.is_finished()),
        "one was answered while held"
    );
    assert_eq!(
        *keys.inside.lock().unwrap(),
        (2, 2),
        "more than the pool inside"
    );

    keys.released.send_replace(true);
    for task in tasks {
        let reply = task.await.unwrap();
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (500, "Internal server error.")
        );
    }
    assert_eq!(keys.inside.lock().unwrap().1, 2, "peak instances at once");
}
