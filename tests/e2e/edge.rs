//! The edge Worker (`edge/cloudflare/`, docs/edge.md) under workerd from
//! npm: it runs the component the host embeds, byte for byte; the conformance
//! set's verify cases answer inside workerd as under wasmtime and jco; in
//! front of a real `gitgazer-ws serve` (Cognito mode, dynalite) it forwards
//! valid upgrades and answers bad tokens itself, before the origin sees them;
//! its key set follows the host's rules.
//!
//! `scripts/test` installs workerd (`npm ci --prefix edge/cloudflare`); the
//! tests build the Worker themselves (`build.mjs --if-needed`).

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use gitgazer_ws::dev::DevSigner;
use gitgazer_ws::policy::GUEST_COMPONENT;
use gitgazer_ws_tests::conformance::cases_path;
use gitgazer_ws_tests::jwks_server::{JwksMode, JwksServer};
use gitgazer_ws_tests::workerd::{Workerd, build, edge_dir};
use gitgazer_ws_tests::{
    Server, create_table, dynalite_endpoint, dynamodb_env, hand_made_token, unique_table, unix_now,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

// The pool's region is AWS_REGION, which `dynamodb_env` sets for dynalite.
const REGION: &str = "us-east-1";
const POOL: &str = "us-east-1_Edge27";
const CLIENT: &str = "edge-web-client";
const NO_TOKEN: &str = "Unauthorized: No authentication token provided";
const INVALID: &str = "Unauthorized: Invalid authentication token";
const NO_GROUPS: &str = "Connection denied: No authorized groups found";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Whether `needle` occurs in `haystack` as one contiguous run.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// The files a workerd config embeds from `dist/` (`embed "dist/NAME"`).
fn embedded_dist_files(config: &str) -> Vec<(String, bool)> {
    config
        .lines()
        .filter_map(|line| {
            let file = line.split("embed \"").nth(1)?.split('"').next()?;
            let name = file.strip_prefix("dist/")?;
            Some((name.to_owned(), line.contains("wasm = embed")))
        })
        .collect()
}

// The component workerd runs is the host's: the build recorded the SHA-256
// of what it transpiled, every file workerd.capnp embeds is still the one
// the build wrote, and each of the three core modules it loads as wasm is a
// run of the embedded component's own bytes (jco lifts them out unchanged).
#[test]
fn the_edge_runs_the_component_the_host_embeds_byte_for_byte() {
    let dist = build();
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dist.join("component.json")).unwrap()).unwrap();
    assert_eq!(
        manifest["component"]["sha256"].as_str(),
        Some(sha256_hex(GUEST_COMPONENT).as_str()),
        "dist/ was transpiled from {}, not from the component the host embeds; rebuild: \
         node edge/cloudflare/build.mjs",
        manifest["component"]["path"]
    );
    assert_eq!(
        manifest["component"]["bytes"].as_u64(),
        Some(GUEST_COMPONENT.len() as u64)
    );
    let config = std::fs::read_to_string(edge_dir().join("workerd.capnp")).unwrap();
    let files = embedded_dist_files(&config);
    assert!(files.len() >= 5, "{files:?}");
    let mut core_modules = 0;
    for (name, is_wasm) in files {
        let bytes = std::fs::read(dist.join(&name)).unwrap();
        assert_eq!(
            manifest["files"][&name].as_str(),
            Some(sha256_hex(&bytes).as_str()),
            "dist/{name} is not the file the build wrote"
        );
        if is_wasm {
            assert!(
                contains(GUEST_COMPONENT, &bytes),
                "dist/{name} ({} bytes) is not part of the embedded component",
                bytes.len()
            );
            core_modules += 1;
        }
    }
    assert_eq!(core_modules, 3, "the policy's three core modules");
}

/// The quoted values assigned to `key` in a config file (`key = "VALUE"` in
/// wrangler.toml, also in comments; `(…, key = "VALUE")` in workerd.capnp).
fn quoted_values(config: &str, key: &str) -> Vec<String> {
    let mut values = Vec::new();
    for line in config.lines() {
        for (at, _) in line.match_indices(key) {
            let starts_word = line[..at]
                .chars()
                .next_back()
                .is_none_or(|c| " (#,".contains(c));
            let assigned = line[at + key.len()..].trim_start().strip_prefix('=');
            if let (true, Some(rest)) = (starts_word, assigned)
                && let Some(value) = rest.trim_start().strip_prefix('"')
                && let Some((value, _)) = value.split_once('"')
            {
                values.push(value.to_owned());
            }
        }
    }
    values
}

// wrangler cannot deploy here (no account), so what it would deploy is
// checked against what workerd runs: the same main module and compatibility
// date, the core modules as compiled wasm, and every variable the Worker
// reads named for the operator.
#[test]
fn wrangler_toml_deploys_what_workerd_runs() {
    let wrangler = std::fs::read_to_string(edge_dir().join("wrangler.toml")).unwrap();
    let workerd = std::fs::read_to_string(edge_dir().join("workerd.capnp")).unwrap();
    assert_eq!(
        quoted_values(&wrangler, "compatibility_date"),
        quoted_values(&workerd, "compatibilityDate")
    );
    assert_eq!(quoted_values(&wrangler, "main"), ["dist/worker.mjs"]);
    assert!(
        workerd.contains(r#"(name = "worker.mjs", esModule = embed "dist/worker.mjs")"#),
        "workerd.capnp's first module is the Worker"
    );
    assert!(wrangler.contains("type = \"CompiledWasm\"") && wrangler.contains("\"**/*.wasm\""));
    let variables = quoted_values(&workerd, "fromEnvironment");
    assert!(variables.len() >= 6, "{variables:?}");
    for variable in variables {
        assert!(
            wrangler.contains(&format!("{variable} = ")),
            "wrangler.toml does not name {variable}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_verify_cases_answer_inside_workerd_as_under_wasmtime_and_jco() {
    let workerd = Workerd::conformance();
    let text = std::fs::read_to_string(cases_path()).unwrap();
    let document: Value = serde_json::from_str(&text).unwrap();
    let cases: Vec<&Value> = document["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|case| case["call"]["op"] == "verify-token")
        .collect();
    assert!(cases.len() >= 15, "{} verify cases", cases.len());

    let response = reqwest::Client::new()
        .post(workerd.url("/"))
        .body(text)
        .send()
        .await
        .expect("the conformance Worker answers");
    assert_eq!(response.status(), 200, "{}", workerd.logs());
    let answer: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    let results = answer["results"].as_array().expect("results");
    // Every case twice: a fresh instance each, then one instance for all.
    assert_eq!(results.len(), 2 * cases.len());
    let mut failures = Vec::new();
    for result in results {
        let name = result["name"].as_str().unwrap();
        let case = cases.iter().find(|c| c["name"] == name).expect("a case");
        for field in ["expect", "expect-key-set-requests"] {
            if result["observed"][field] != case[field] {
                failures.push(format!(
                    "{name} ({} instance): {field}\n    expected {}\n    observed {}",
                    result["mode"], case[field], result["observed"][field]
                ));
            }
        }
        if result["tokenLogged"] != false {
            failures.push(format!("{name}: a log line contains the token"));
        }
    }
    println!(
        "conformance under {}: {} verify cases, {} runs, {} differences",
        answer["runtime"],
        cases.len(),
        results.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "differences:\n{}", failures.join("\n"));
    assert_eq!(answer["instances"], cases.len() + 1);
}

fn issuer() -> String {
    format!("https://cognito-idp.{REGION}.amazonaws.com/{POOL}")
}

fn claims(sub: &str, groups: Option<&[&str]>, exp: u64) -> Value {
    let mut claims = json!({
        "sub": sub, "iss": issuer(), "aud": CLIENT, "token_use": "id",
        "iat": unix_now() - 60, "exp": exp,
    });
    if let Some(groups) = groups {
        claims["cognito:groups"] = json!(groups);
    }
    claims
}

fn valid_token(signer: &DevSigner, sub: &str) -> String {
    signer.sign(&claims(sub, Some(&["acme"]), unix_now() + 600))
}

/// A valid token whose claims were swapped for others (another user's
/// groups), keeping the signature: what a forger can make.
fn forged_token(signer: &DevSigner) -> String {
    let good = valid_token(signer, "mallory");
    let other = signer.sign(&claims("mallory", Some(&["globex"]), unix_now() + 600));
    let (good, other): (Vec<&str>, Vec<&str>) =
        (good.split('.').collect(), other.split('.').collect());
    format!("{}.{}.{}", good[0], other[1], good[2])
}

/// Well-formed, with a kid no key set holds: each one may ask for a refetch.
fn random_kid_token(n: usize) -> String {
    hand_made_token(
        &format!(r#"{{"alg":"RS256","kid":"flood-{}-{n}"}}"#, unix_now()),
        r#"{"sub":"x"}"#,
        &[1; 256],
    )
}

/// An upgrade with the token in the query, or in the bearer subprotocol.
async fn open(url: &str, token: &str, bearer: bool) -> Result<Socket, WsError> {
    let request = if bearer {
        let mut request = url.into_client_request().unwrap();
        request.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_str(&format!("bearer, {token}")).unwrap(),
        );
        request
    } else {
        format!("{url}?idToken={token}")
            .into_client_request()
            .unwrap()
    };
    let (socket, response) = tokio_tungstenite::connect_async(request).await?;
    if bearer {
        assert_eq!(
            response
                .headers()
                .get("sec-websocket-protocol")
                .map(|v| v.to_str().unwrap()),
            Some("bearer"),
            "the origin's choice of subprotocol comes through the edge"
        );
    }
    Ok(socket)
}

/// A refused upgrade's status and body. A plain HTTP client: it reads the
/// whole body whichever way it arrives (a WebSocket client keeps only what
/// came with the head).
async fn refused(url: &str, token: &str, bearer: bool) -> (u16, String) {
    let url = url.replacen("ws://", "http://", 1);
    let mut request = reqwest::Client::new()
        .get(if bearer {
            url
        } else {
            format!("{url}?idToken={token}")
        })
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
    if bearer {
        request = request.header("sec-websocket-protocol", format!("bearer, {token}"));
    }
    let response = request.send().await.expect("an answer");
    let status = response.status().as_u16();
    assert_ne!(status, 101, "upgraded");
    (status, response.text().await.unwrap())
}

async fn next_text(socket: &mut Socket) -> Option<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, socket.next()).await {
            Err(_) => return None,
            Ok(Some(Ok(Message::Text(text)))) => return Some(text.to_string()),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(other) => panic!("unexpected: {other:?}"),
        }
    }
}

/// Waits until the origin's access log shows `count` `/ws` requests, then
/// says whether it shows exactly that many.
async fn origin_saw_exactly(server: &Server, count: usize) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.logged_requests("/ws") < count && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.logged_requests("/ws") == count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_front_of_a_real_server_the_edge_forwards_valid_upgrades_and_answers_bad_tokens_itself()
{
    let endpoint = dynalite_endpoint();
    let table = unique_table("edge");
    create_table(&endpoint, &table);
    let signer = DevSigner::generate().unwrap();
    // One key server each, so the edge's fetches are counted alone.
    let origin_keys = JwksServer::start(JwksMode::Serve(signer.jwks().to_owned())).await;
    let edge_keys = JwksServer::start(JwksMode::Serve(signer.jwks().to_owned())).await;
    let mut env = dynamodb_env(&endpoint, &table);
    for (name, value) in [
        ("COGNITO_USER_POOL_ID", POOL),
        ("COGNITO_CLIENT_ID", CLIENT),
        ("COGNITO_JWKS_URL", origin_keys.url.as_str()),
        ("RUST_LOG", "info,gitgazer_ws::edge::http=debug"),
    ] {
        env.push((name.into(), value.into()));
    }
    let server = Server::start_env(&env);
    let origin_ws = server.url("/ws").replacen("http://", "ws://", 1);
    let edge = Workerd::edge(&[
        ("AWS_REGION", REGION),
        ("COGNITO_USER_POOL_ID", POOL),
        // The list form, as the host takes it.
        (
            "COGNITO_CLIENT_ID",
            &format!("edge-mobile-client, {CLIENT}"),
        ),
        ("COGNITO_JWKS_URL", &edge_keys.url),
        ("ORIGIN_URL", &origin_ws),
    ]);
    let edge_ws = edge.ws_url("/ws");

    // A valid token's upgrade reaches the origin, which runs its own CONNECT.
    let token = valid_token(&signer, "alice");
    let mut by_query = open(&edge_ws, &token, false).await.expect("query upgrade");
    let mut by_bearer = open(&edge_ws, &token, true).await.expect("bearer upgrade");
    assert!(origin_saw_exactly(&server, 2).await, "{}", server.logs());
    assert_eq!(server.connect_decisions().await, 2);
    let delivered = reqwest::Client::new()
        .post(server.management("/integrations/acme/events"))
        .body(r#"{"n":1}"#)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&delivered).unwrap(),
        json!({"delivered": 2, "gone": 0, "failed": 0, "expired": 0, "expiredAuth": 0})
    );
    for socket in [&mut by_query, &mut by_bearer] {
        assert_eq!(next_text(socket).await.as_deref(), Some(r#"{"n":1}"#));
    }
    assert_eq!(
        edge_keys.requests(),
        1,
        "the first token fetched the key set"
    );

    // A flood of bad tokens: 200 upgrades, 10 at a time, every one answered
    // by the edge. Random kids ask for refetches: the cool-down allows one.
    let forged = forged_token(&signer);
    let expired = signer.sign(&claims("bob", Some(&["acme"]), unix_now() - 3600));
    let groupless = signer.sign(&claims("carol", None, unix_now() + 600));
    let mut answers = Vec::new();
    for wave in 0..20 {
        let attempts = (0..10).map(|i| {
            let n = wave * 10 + i;
            let (token, expected) = match n % 5 {
                0 => (random_kid_token(n), INVALID),
                1 => (forged.clone(), INVALID),
                2 => (expired.clone(), INVALID),
                3 => (groupless.clone(), NO_GROUPS),
                _ => ("not-a-token".to_owned(), INVALID),
            };
            let url = edge_ws.clone();
            async move { (refused(&url, &token, n % 2 == 0).await, expected) }
        });
        answers.extend(futures_util::future::join_all(attempts).await);
    }
    for ((status, body), expected) in &answers {
        assert_eq!((*status, body.as_str()), (401, *expected));
    }
    assert!(
        edge_keys.requests() <= 2,
        "{} key set fetches for 200 bad tokens",
        edge_keys.requests()
    );

    // Each kind once more, and an empty token: the host's statuses and bodies.
    let cases = [
        ("forged", forged.clone(), 401, INVALID),
        ("expired", expired.clone(), 401, INVALID),
        ("group-less", groupless.clone(), 401, NO_GROUPS),
        ("unknown key", random_kid_token(1000), 401, INVALID),
        ("empty", String::new(), 401, NO_TOKEN),
    ];
    for (what, token, status, body) in &cases {
        for bearer in [false, true] {
            assert_eq!(
                refused(&edge_ws, token, bearer).await,
                (*status, body.to_string()),
                "{what} (bearer: {bearer})"
            );
        }
    }

    // None of that reached the origin. A last valid upgrade marks the end:
    // every earlier request's log line comes before its own.
    let _marker = open(&edge_ws, &valid_token(&signer, "dave"), false)
        .await
        .expect("marker upgrade");
    assert!(
        origin_saw_exactly(&server, 3).await,
        "the origin served {} /ws requests, expected the 3 valid ones",
        server.logged_requests("/ws")
    );
    assert_eq!(server.connect_decisions().await, 3);

    // And the edge's answers are the origin's own for the same tokens.
    for (what, token, _, _) in &cases {
        assert_eq!(
            refused(&origin_ws, token, false).await,
            refused(&edge_ws, token, false).await,
            "{what}: the edge answers as the origin does"
        );
    }
    for token in [&token, &forged, &expired, &groupless] {
        assert!(
            !edge.logs().contains(token.as_str()),
            "the edge logged a token"
        );
    }
}

/// An origin nobody listens on: a token the edge lets through answers 502.
const NO_ORIGIN: &str = "ws://127.0.0.1:9/ws";

fn edge_env(jwks_url: &str) -> Vec<(&str, &str)> {
    vec![
        ("AWS_REGION", REGION),
        ("COGNITO_USER_POOL_ID", POOL),
        ("COGNITO_CLIENT_ID", CLIENT),
        ("COGNITO_JWKS_URL", jwks_url),
        ("ORIGIN_URL", NO_ORIGIN),
    ]
}

/// A document any JSON parser takes but the policy refuses: `keys` twice.
fn refused_key_set(good: &str) -> String {
    let keys = &serde_json::from_str::<Value>(good).unwrap()["keys"];
    format!(r#"{{"keys":{keys},"keys":{keys}}}"#)
}

// The host's key set rules, at the edge: a set that cannot be had, is too
// large, or is refused by the policy is a failed fetch (500, as the host),
// never cached; failures are remembered for a second (no fetch storm); once
// the source is fixed a valid token goes through; a refused refetch keeps
// the good set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edges_key_set_follows_the_hosts_rules() {
    let signer = DevSigner::generate().unwrap();
    let good = signer.jwks().to_owned();
    let keys = JwksServer::start(JwksMode::Status(503)).await;
    let edge = Workerd::edge(&edge_env(&keys.url));
    let url = edge.ws_url("/ws");
    let token = valid_token(&signer, "alice");
    const INTERNAL: (u16, &str) = (500, "Internal server error.");
    for mode in [
        JwksMode::Status(503),
        JwksMode::Redirect(keys.url.clone()),
        JwksMode::Oversize(100 * 1024),
        JwksMode::InvalidJson,
        JwksMode::Serve(refused_key_set(&good)),
    ] {
        keys.set(mode.clone());
        // Past the last failure's back-off, so this mode is fetched.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let before = keys.requests();
        let started = Instant::now();
        for _ in 0..10 {
            let (status, body) = refused(&url, &token, false).await;
            assert_eq!((status, body.as_str()), INTERNAL, "{mode:?}");
        }
        let fetches = keys.requests() - before;
        let allowed = started.elapsed().as_secs() + 1;
        assert!(
            (1..=allowed).contains(&fetches),
            "{mode:?}: {fetches} fetches for 10 requests in {:?}",
            started.elapsed()
        );
    }

    // Fixed at the source: after the back-off the token goes through (to an
    // origin that is not there: 502).
    keys.set(JwksMode::Serve(good));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        refused(&url, &token, false).await,
        (502, "Bad gateway.".into())
    );

    // A refused set on a refetch does not replace the good one.
    keys.set(JwksMode::Serve(refused_key_set(signer.jwks())));
    let before = keys.requests();
    assert_eq!(
        refused(&url, &random_kid_token(1), false).await,
        (401, INVALID.into())
    );
    assert_eq!(keys.requests(), before + 1, "the unknown kid refetched");
    assert_eq!(
        refused(&url, &token, true).await,
        (502, "Bad gateway.".into())
    );
    assert!(
        edge.logs().contains("not a key set the policy accepts"),
        "the refused fetch is logged:\n{}",
        edge.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_key_server_is_cut_off_by_the_edges_timeout() {
    let keys = JwksServer::start(JwksMode::Hang).await;
    let edge = Workerd::edge(&edge_env(&keys.url));
    let signer = DevSigner::generate().unwrap();
    let started = Instant::now();
    assert_eq!(
        refused(&edge.ws_url("/ws"), &valid_token(&signer, "u"), false).await,
        (500, "Internal server error.".into())
    );
    let took = started.elapsed();
    assert!(
        (Duration::from_secs(3)..Duration::from_secs(8)).contains(&took),
        "{took:?}"
    );
    assert_eq!(keys.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_configuration_answers_500_and_names_the_variable() {
    let mut env = edge_env("http://127.0.0.1:9/jwks.json");
    env.retain(|(name, _)| *name != "ORIGIN_URL");
    let edge = Workerd::edge(&env);
    assert_eq!(
        refused(&edge.ws_url("/ws"), "any", false).await,
        (500, "Internal server error.".into())
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !edge.logs().contains("ORIGIN_URL is required") {
        assert!(Instant::now() < deadline, "{}", edge.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
