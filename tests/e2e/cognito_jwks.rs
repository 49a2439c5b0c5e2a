//! Cognito mode: the key set fetched over HTTP from a server on 127.0.0.1,
//! cached, refreshed on rotation, and never fetched in a storm.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gitgazer_ws::dev::DevSigner;
use gitgazer_ws::keys::{FetchLimits, RemoteKeySet};
use gitgazer_ws::policy::{EngineOptions, PolicyRuntime};
use gitgazer_ws::service::Handler;
use gitgazer_ws::store::MemoryStore;
use gitgazer_ws::wit::types::Settings;
use gitgazer_ws_tests::jwks_server::{JwksMode, JwksServer, merge_key_sets};
use gitgazer_ws_tests::{Server, hand_made_token, test_cache_dir, unix_now};
use serde_json::json;

const REGION: &str = "eu-west-1";
const POOL: &str = "eu-west-1_Jwks123";
const CLIENT: &str = "jwks-client";
const INVALID: &str = "Unauthorized: Invalid authentication token";

fn issuer() -> String {
    format!("https://cognito-idp.{REGION}.amazonaws.com/{POOL}")
}

fn id_token(signer: &DevSigner, sub: &str) -> String {
    let now = unix_now();
    signer.sign(&json!({
        "sub": sub,
        "iss": issuer(),
        "aud": CLIENT,
        "token_use": "id",
        "iat": now,
        "exp": now + 600,
        "cognito:groups": ["acme"],
    }))
}

fn random_kid_token() -> String {
    let kid = uuid_like();
    hand_made_token(
        &format!(r#"{{"alg":"RS256","kid":"{kid}"}}"#),
        r#"{"sub":"x"}"#,
        &[1; 256],
    )
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "random-{}-{}",
        unix_now(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn runtime() -> Arc<PolicyRuntime> {
    PolicyRuntime::new(EngineOptions {
        cache_dir: Some(test_cache_dir()),
        ..EngineOptions::default()
    })
    .unwrap()
}

fn handler(url: &str, limits: FetchLimits) -> (Handler, Arc<RemoteKeySet>) {
    let keys = Arc::new(RemoteKeySet::new(url, limits).unwrap());
    let settings = Settings {
        issuer: issuer(),
        audiences: vec![CLIENT.into()],
        leeway_seconds: 0,
        record_ttl_seconds: 7500,
    };
    let handler = Handler::new(
        runtime(),
        Arc::new(MemoryStore::new()),
        keys.clone(),
        settings,
    );
    (handler, keys)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_connects_fetch_the_key_set_once() {
    let signer = DevSigner::generate().unwrap();
    let server = JwksServer::start(JwksMode::Serve(signer.jwks().to_owned())).await;
    let (handler, keys) = handler(&server.url, FetchLimits::default());
    let token = id_token(&signer, "u1");
    // In waves of 100 concurrent CONNECTs: the first wave meets an empty
    // cache and must merge its fetches into one.
    for wave in 0..10 {
        let mut tasks = Vec::new();
        for i in 0..100 {
            let handler = handler.clone();
            let token = token.clone();
            tasks.push(tokio::spawn(async move {
                handler
                    .connect("r", &format!("c-{wave}-{i}"), Some(&token))
                    .await
            }));
        }
        for task in tasks {
            assert_eq!(task.await.unwrap().status, 200);
        }
    }
    assert_eq!(server.requests(), 1);
    assert_eq!(keys.fetch_count(), 1);
}

#[tokio::test]
async fn a_key_rotation_is_picked_up_by_the_first_token_that_uses_it() {
    let old = DevSigner::generate().unwrap();
    let server = JwksServer::start(JwksMode::Serve(old.jwks().to_owned())).await;
    let (handler, _) = handler(&server.url, FetchLimits::default());
    assert_eq!(
        handler
            .connect("r", "c1", Some(&id_token(&old, "u")))
            .await
            .status,
        200
    );
    assert_eq!(server.requests(), 1);

    let new = DevSigner::generate().unwrap();
    server.set(JwksMode::Serve(merge_key_sets(&[old.jwks(), new.jwks()])));
    assert_eq!(
        handler
            .connect("r", "c2", Some(&id_token(&new, "u")))
            .await
            .status,
        200
    );
    assert_eq!(server.requests(), 2);
    // Both keys keep working from the cache.
    assert_eq!(
        handler
            .connect("r", "c3", Some(&id_token(&old, "u")))
            .await
            .status,
        200
    );
    assert_eq!(
        handler
            .connect("r", "c4", Some(&id_token(&new, "u")))
            .await
            .status,
        200
    );
    assert_eq!(server.requests(), 2);
}

#[tokio::test]
async fn random_unknown_kids_within_the_cooldown_cause_at_most_two_fetches() {
    let signer = DevSigner::generate().unwrap();
    let server = JwksServer::start(JwksMode::Serve(signer.jwks().to_owned())).await;
    let (handler, _) = handler(&server.url, FetchLimits::default());
    for i in 0..100 {
        let reply = handler
            .connect("r", &format!("c{i}"), Some(&random_kid_token()))
            .await;
        assert_eq!((reply.status, reply.body.as_str()), (401, INVALID));
    }
    assert!(server.requests() <= 2, "{} fetches", server.requests());
    // Valid tokens are still served from the cache.
    assert_eq!(
        handler
            .connect("r", "ok", Some(&id_token(&signer, "u")))
            .await
            .status,
        200
    );
    assert!(server.requests() <= 2);
}

#[tokio::test]
async fn a_hanging_key_server_is_cut_off_by_the_timeout() {
    let server = JwksServer::start(JwksMode::Hang).await;
    let limits = FetchLimits {
        total_timeout: Duration::from_millis(500),
        ..FetchLimits::default()
    };
    let (handler, _) = handler(&server.url, limits);
    let signer = DevSigner::generate().unwrap();
    let started = Instant::now();
    let reply = handler
        .connect("r", "c1", Some(&id_token(&signer, "u")))
        .await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (500, "Internal server error.")
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(server.requests(), 1);
}

#[tokio::test]
async fn bad_key_set_answers_mean_500_and_no_fetch_storm() {
    let signer = DevSigner::generate().unwrap();
    let token = id_token(&signer, "u");
    for mode in [
        JwksMode::Status(503),
        JwksMode::Status(404),
        JwksMode::Oversize(100 * 1024),
        JwksMode::InvalidJson,
        JwksMode::Serve(r#"{"no_keys":true}"#.into()),
    ] {
        let server = JwksServer::start(mode.clone()).await;
        let (handler, _) = handler(&server.url, FetchLimits::default());
        let started = Instant::now();
        for i in 0..20 {
            let reply = handler.connect("r", &format!("c{i}"), Some(&token)).await;
            assert_eq!(reply.status, 500, "{mode:?}");
        }
        // One failed fetch is remembered for a second: 20 CONNECTs in a row
        // cause one fetch per second they took (and one more), not twenty.
        let seconds = started.elapsed().as_secs();
        assert!(
            server.requests() <= seconds + 2,
            "{mode:?}: {} fetches in {seconds} s",
            server.requests()
        );
        // Once the server recovers (after the failure back-off), so do we.
        server.set(JwksMode::Serve(signer.jwks().to_owned()));
        let deadline = Instant::now() + Duration::from_secs(30);
        while handler.connect("r", "ok", Some(&token)).await.status != 200 {
            assert!(Instant::now() < deadline, "{mode:?}: no recovery in 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test]
async fn a_failed_refetch_keeps_the_last_good_key_set() {
    let signer = DevSigner::generate().unwrap();
    let server = JwksServer::start(JwksMode::Serve(signer.jwks().to_owned())).await;
    let (handler, _) = handler(&server.url, FetchLimits::default());
    assert_eq!(
        handler
            .connect("r", "c1", Some(&id_token(&signer, "u")))
            .await
            .status,
        200
    );
    server.set(JwksMode::Status(503));
    // An unknown kid asks for a refetch, which fails...
    assert_eq!(
        handler
            .connect("r", "c2", Some(&random_kid_token()))
            .await
            .status,
        401
    );
    assert_eq!(server.requests(), 2);
    // ...and the cached set still verifies good tokens.
    assert_eq!(
        handler
            .connect("r", "c3", Some(&id_token(&signer, "u")))
            .await
            .status,
        200
    );
}

// Multi-threaded: `Server::start` blocks this thread while the host fetches
// the key set at start from the server running on this runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cognito_mode_server_over_real_http() {
    let signer = DevSigner::generate().unwrap();
    let jwks = JwksServer::start(JwksMode::Serve(signer.jwks().to_owned())).await;
    let server = cognito_server(&jwks.url, &[]);
    let get = |path: String| async move {
        let response = reqwest::get(&path).await.unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    };
    let token = id_token(&signer, "alice");
    for i in 0..5 {
        let (status, body) =
            get(server.management(&format!("/connect?idToken={token}&connectionId=c{i}"))).await;
        assert_eq!((status, body.as_str()), (200, "Connected."));
    }
    let (status, body) = get(server.management("/disconnect?connectionId=c0")).await;
    assert_eq!(
        (status, body.as_str()),
        (200, "Disconnected. Removed 1 records.")
    );

    // A dev-mode-shaped token (other issuer and audience) is refused.
    let other = signer.sign(&json!({
        "sub": "mallory", "iss": "https://cognito-idp.dev.invalid/dev_gitgazer",
        "aud": CLIENT, "token_use": "id", "exp": unix_now() + 600, "cognito:groups": ["acme"],
    }));
    let (status, body) =
        get(server.management(&format!("/connect?idToken={other}&connectionId=x"))).await;
    assert_eq!((status, body.as_str()), (401, INVALID));
    let (status, _) = get(server.url("/dev/token")).await;
    assert_eq!(status, 404);

    // Fetched once, at start, for all of the above.
    assert_eq!(jwks.requests(), 1);
    assert!(server.logs().contains("handler ready"));
}

#[test]
fn cognito_mode_start_up_errors_name_the_variable() {
    use std::process::Command;
    let run = |env: &[(&str, &str)]| {
        let output = Command::new(gitgazer_ws_tests::binary_path())
            .args(["serve", "--port", "0"])
            .env_remove("AWS_REGION")
            .env_remove("COGNITO_CLIENT_ID")
            .env_remove("COGNITO_USER_POOL_ID")
            .env("GITGAZER_WS_CACHE_DIR", test_cache_dir())
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{output:?}");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let stderr = run(&[
        ("COGNITO_USER_POOL_ID", POOL),
        ("COGNITO_CLIENT_ID", CLIENT),
    ]);
    assert!(stderr.contains("AWS_REGION"), "{stderr}");
    let stderr = run(&[("COGNITO_USER_POOL_ID", POOL), ("AWS_REGION", REGION)]);
    assert!(stderr.contains("COGNITO_CLIENT_ID"), "{stderr}");
    let stderr = run(&[
        ("COGNITO_USER_POOL_ID", "not-a-pool"),
        ("AWS_REGION", REGION),
        ("COGNITO_CLIENT_ID", CLIENT),
    ]);
    assert!(stderr.contains("<region>_<id>"), "{stderr}");
}

/// A document any JSON parser takes but the policy refuses: `keys` twice.
fn refused_key_set(good: &str) -> String {
    let keys = &serde_json::from_str::<serde_json::Value>(good).unwrap()["keys"];
    format!(r#"{{"keys":{keys},"keys":{keys}}}"#)
}

// Through the real binary: a key set the policy refuses is a failed fetch,
// never the cached set, so one bad answer of the key server cannot break
// every CONNECT until a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_set_the_policy_refuses_is_never_cached() {
    let signer = DevSigner::generate().unwrap();
    let good = signer.jwks().to_owned();
    let jwks = JwksServer::start(JwksMode::Serve(refused_key_set(&good))).await;
    let server = cognito_server(&jwks.url, &[]);
    let connect = |token: String, id: &str| {
        let url = server.management(&format!("/connect?idToken={token}&connectionId={id}"));
        async move {
            let response = reqwest::get(&url).await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    let token = id_token(&signer, "alice");

    // Refused at start, so no key set yet: 500, and no fetch storm.
    assert_eq!(connect(token.clone(), "c1").await.0, 500);
    // Fixed at the source: picked up once the failure back-off has passed.
    jwks.set(JwksMode::Serve(good));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _) = connect(token.clone(), "c1").await;
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {status} after the source was fixed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A refused set served on a refetch (an unknown kid asked for it) does
    // not replace the good one: the unknown kid is refused as such, and
    // known keys keep verifying.
    jwks.set(JwksMode::Serve(refused_key_set(signer.jwks())));
    let fetches = jwks.requests();
    assert_eq!(
        connect(random_kid_token(), "c2").await,
        (401, INVALID.to_owned())
    );
    assert_eq!(jwks.requests(), fetches + 1, "the unknown kid refetched");
    assert_eq!(
        connect(id_token(&signer, "bob"), "c3").await,
        (200, "Connected.".to_owned())
    );
    assert!(
        server.logs().contains("not a key set the policy accepts"),
        "the refused fetch is logged"
    );
}

/// A Cognito-mode server for this pool whose key set comes from `jwks_url`,
/// plus `extra` variables.
fn cognito_server(jwks_url: &str, extra: &[(&str, &str)]) -> Server {
    let mut env = vec![
        ("AWS_REGION", REGION),
        ("COGNITO_USER_POOL_ID", POOL),
        ("COGNITO_CLIENT_ID", CLIENT),
        ("COGNITO_JWKS_URL", jwks_url),
    ];
    env.extend_from_slice(extra);
    Server::start(&env)
}

async fn management_connect(server: &Server, token: &str, id: &str) -> (u16, String) {
    let url = server.management(&format!("/connect?idToken={token}&connectionId={id}"));
    let response = reqwest::get(&url).await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

// The refresh cool-down ends: a key rotated in while it runs is refused
// (no fetch), and picked up by the first token of that key after it. The
// host's real 10 s cool-down, through the binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_during_the_cooldown_is_picked_up_once_it_has_passed() {
    let old = DevSigner::generate().unwrap();
    let jwks = JwksServer::start(JwksMode::Serve(old.jwks().to_owned())).await;
    let server = cognito_server(&jwks.url, &[]);
    let ok = (200, "Connected.".to_owned());
    assert_eq!(
        management_connect(&server, &id_token(&old, "u"), "c1").await,
        ok
    );
    assert_eq!(jwks.requests(), 1, "fetched at start");

    // An unknown kid refreshes the set and starts the cool-down (no
    // earlier than this instant).
    let refreshed = Instant::now();
    assert_eq!(
        management_connect(&server, &random_kid_token(), "c2").await,
        (401, INVALID.to_owned())
    );
    assert_eq!(jwks.requests(), 2);

    let new = DevSigner::generate().unwrap();
    jwks.set(JwksMode::Serve(merge_key_sets(&[old.jwks(), new.jwks()])));
    let new_token = id_token(&new, "u");
    // Within the cool-down: refused without a fetch.
    assert_eq!(
        management_connect(&server, &new_token, "c3").await,
        (401, INVALID.to_owned())
    );
    assert_eq!(jwks.requests(), 2, "no fetch within the cool-down");

    // After it: the next token of the new key fetches once and is accepted.
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let reply = management_connect(&server, &new_token, &format!("c4-{attempt}")).await;
        if reply == ok {
            break;
        }
        assert_eq!(reply, (401, INVALID.to_owned()));
        assert_eq!(jwks.requests(), 2, "a fetch that did not pick the key up");
        assert!(
            Instant::now() < deadline,
            "the new key is still refused 40 s after the refresh"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        refreshed.elapsed() >= Duration::from_secs(10),
        "accepted {:?} after the refresh: no cool-down",
        refreshed.elapsed()
    );
    assert_eq!(jwks.requests(), 3, "one fetch after the cool-down");
}

// "No redirects": a key server answering 302 to a good key set is a failed
// fetch (500), and the redirect's target is never asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirecting_key_server_is_not_followed() {
    let signer = DevSigner::generate().unwrap();
    let target = JwksServer::start(JwksMode::Serve(signer.jwks().to_owned())).await;
    let redirecting = JwksServer::start(JwksMode::Redirect(target.url.clone())).await;
    let server = cognito_server(&redirecting.url, &[]);
    assert_eq!(
        management_connect(&server, &id_token(&signer, "u"), "c1").await,
        (500, "Internal server error.".to_owned())
    );
    assert!(redirecting.requests() >= 1, "the key server was asked");
    assert_eq!(target.requests(), 0, "the redirect was followed");
}

// JWT_LEEWAY_SECONDS through the binary: `exp` and `nbf` are off by the
// leeway at most, and not a second more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_leeway_seconds_tolerates_that_much_clock_skew() {
    let signer = DevSigner::generate().unwrap();
    let jwks = JwksServer::start(JwksMode::Serve(signer.jwks().to_owned())).await;
    let server = cognito_server(&jwks.url, &[("JWT_LEEWAY_SECONDS", "300")]);
    let now = unix_now();
    let token = |exp: u64, nbf: u64| {
        signer.sign(&json!({
            "sub": "u", "iss": issuer(), "aud": CLIENT, "token_use": "id",
            "iat": now - 1000, "exp": exp, "nbf": nbf, "cognito:groups": ["acme"],
        }))
    };
    let ok = (200, "Connected.".to_owned());
    let refused = (401, INVALID.to_owned());
    // Two minutes off is within 300 s; ten minutes is not.
    for (name, exp, nbf, expected) in [
        ("expired 2 min ago", now - 120, now - 1000, &ok),
        ("expired 10 min ago", now - 600, now - 1000, &refused),
        ("valid in 2 min", now + 600, now + 120, &ok),
        ("valid in 10 min", now + 1200, now + 600, &refused),
    ] {
        assert_eq!(
            &management_connect(&server, &token(exp, nbf), "c1").await,
            expected,
            "{name}"
        );
    }
}
