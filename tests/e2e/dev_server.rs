//! The dev server over real HTTP: the real binary, the real component, tokens
//! minted by the server's own dev key.

use gitgazer_ws_tests::{Server, hand_made_token};

use crate::support::get;

const NO_TOKEN: &str = "Unauthorized: No authentication token provided";
const INVALID_TOKEN: &str = "Unauthorized: Invalid authentication token";
const NO_GROUPS: &str = "Connection denied: No authorized groups found";

async fn post(url: &str, body: impl Into<reqwest::Body>) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(url)
        .body(body)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

async fn dev_token(server: &Server, query: &str) -> String {
    let (status, token) = get(&server.url(&format!("/dev/token?{query}"))).await;
    assert_eq!(status, 200, "{token}");
    token
}

#[tokio::test]
async fn token_connect_disconnect_flow() {
    let server = Server::start(&[("RUST_LOG", "debug")]);
    let token = dev_token(&server, "sub=alice&groups=acme,globex,acme").await;

    let (status, body) =
        get(&server.url(&format!("/connect?idToken={token}&connectionId=c1"))).await;
    assert_eq!((status, body.as_str()), (200, "Connected."));

    // Duplicate groups collapse: two records, not three.
    let (status, body) = get(&server.url("/disconnect?connectionId=c1")).await;
    assert_eq!(
        (status, body.as_str()),
        (200, "Disconnected. Removed 2 records.")
    );
    let (status, body) = get(&server.url("/disconnect?connectionId=c1")).await;
    assert_eq!((status, body.as_str()), (200, "No records to disconnect."));

    // The default connection id.
    let (status, _) = get(&server.url(&format!("/connect?idToken={token}"))).await;
    assert_eq!(status, 200);
    let (status, body) = get(&server.url("/disconnect")).await;
    assert_eq!(
        (status, body.as_str()),
        (200, "Disconnected. Removed 2 records.")
    );

    // Tokens are secrets: not in the log, not even at debug level.
    let logs = server.logs();
    assert!(
        logs.contains("CONNECT"),
        "the log records requests:\n{logs}"
    );
    let signature = token.rsplit('.').next().unwrap();
    assert!(
        !logs.contains(signature),
        "the token leaked into the log:\n{logs}"
    );
    assert!(logs.contains("dev mode is ON"), "{logs}");
}

#[tokio::test]
async fn each_error_row_over_http() {
    let server = Server::start(&[]);

    let (status, body) = get(&server.url("/connect?connectionId=c2")).await;
    assert_eq!((status, body.as_str()), (401, NO_TOKEN));
    let (status, body) = get(&server.url("/connect?idToken=&connectionId=c2")).await;
    assert_eq!((status, body.as_str()), (401, NO_TOKEN));

    let (status, body) = get(&server.url("/connect?idToken=not.a.token&connectionId=c2")).await;
    assert_eq!((status, body.as_str()), (401, INVALID_TOKEN));

    // A valid token with one claim changed: the signature no longer matches.
    let token = dev_token(&server, "sub=bob&groups=acme").await;
    let parts: Vec<&str> = token.split('.').collect();
    let forged_claims = base64_json_edit(parts[1], "bob", "eve");
    let forged = format!("{}.{}.{}", parts[0], forged_claims, parts[2]);
    let (status, body) =
        get(&server.url(&format!("/connect?idToken={forged}&connectionId=c2"))).await;
    assert_eq!((status, body.as_str()), (401, INVALID_TOKEN));

    // alg=none with the dev key's kid.
    let header = base64_decode(parts[0]).replace("RS256", "none");
    let none = hand_made_token(&header, &base64_decode(parts[1]), b"");
    let (status, body) =
        get(&server.url(&format!("/connect?idToken={none}&connectionId=c2"))).await;
    assert_eq!((status, body.as_str()), (401, INVALID_TOKEN));

    let no_groups = dev_token(&server, "sub=carol&groups=").await;
    let (status, body) =
        get(&server.url(&format!("/connect?idToken={no_groups}&connectionId=c2"))).await;
    assert_eq!((status, body.as_str()), (401, NO_GROUPS));

    // An expired token (1 s lifetime, leeway 0).
    let short = dev_token(&server, "sub=dave&groups=acme&ttl=1").await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let (status, body) =
        get(&server.url(&format!("/connect?idToken={short}&connectionId=c2"))).await;
    assert_eq!((status, body.as_str()), (401, INVALID_TOKEN));

    // None of the refused CONNECTs stored anything.
    let (status, body) = get(&server.url("/disconnect?connectionId=c2")).await;
    assert_eq!((status, body.as_str()), (200, "No records to disconnect."));

    // A connection id the policy refuses.
    let long_id = "x".repeat(200);
    let (status, body) = get(&server.url(&format!("/disconnect?connectionId={long_id}"))).await;
    assert_eq!((status, body.as_str()), (400, "Invalid connection id."));

    let (status, _) = get(&server.url("/dev/token?ttl=0")).await;
    assert_eq!(status, 400);
    let (status, body) = get(&server.url("/healthz")).await;
    assert_eq!((status, body.as_str()), (200, "ok"));
}

#[tokio::test]
async fn api_gateway_events_over_http() {
    let server = Server::start(&[]);
    let token = dev_token(&server, "sub=erin&groups=acme").await;
    let event = |event_type: &str, query: serde_json::Value| {
        serde_json::json!({
            "requestContext": {
                "routeKey": format!("${}", event_type.to_lowercase()),
                "eventType": event_type,
                "connectionId": "L0SM9cOFvHcCIhw=",
                "requestId": "req-1",
                "apiId": "abc123",
                "stage": "prod",
                "connectedAt": 1_700_000_000_000_i64,
                "requestTimeEpoch": 1_700_000_000_000_i64,
            },
            "queryStringParameters": query,
            "isBase64Encoded": false,
        })
        .to_string()
    };

    let (status, body) = post(
        &server.url("/events"),
        event("CONNECT", serde_json::json!({ "idToken": token })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let response: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        response,
        serde_json::json!({ "statusCode": 200, "body": "Connected." })
    );

    let (status, body) = post(
        &server.url("/events"),
        event("CONNECT", serde_json::Value::Null),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(json_body(&body), NO_TOKEN);

    let (status, body) = post(
        &server.url("/events"),
        event("MESSAGE", serde_json::Value::Null),
    )
    .await;
    assert_eq!(
        (status, json_body(&body).as_str()),
        (400, "Invalid event type: MESSAGE")
    );

    let (status, body) = post(
        &server.url("/events"),
        event("DISCONNECT", serde_json::Value::Null),
    )
    .await;
    assert_eq!(
        (status, json_body(&body).as_str()),
        (200, "Disconnected. Removed 1 records.")
    );

    let (status, body) = post(&server.url("/events"), "{not json").await;
    assert_eq!(status, 400);
    assert!(json_body(&body).starts_with("Invalid event:"), "{body}");

    let (status, _) = post(&server.url("/events"), vec![b' '; 64 * 1024 + 1]).await;
    assert_eq!(status, 413);
}

/// A key server that takes every connection and closes it at once: the
/// fetch fails fast, whatever else listens on this machine.
async fn closing_key_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    });
    format!("http://{address}/jwks.json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cognito_mode_without_a_reachable_key_set_answers_500() {
    let jwks_url = closing_key_server().await;
    let server = Server::start(&[
        ("AWS_REGION", "eu-west-1"),
        ("COGNITO_USER_POOL_ID", "eu-west-1_Test123"),
        ("COGNITO_CLIENT_ID", "client-1"),
        ("COGNITO_JWKS_URL", &jwks_url),
    ]);
    let token = hand_made_token(r#"{"alg":"RS256","kid":"k1"}"#, r#"{"sub":"x"}"#, &[1; 256]);
    let (status, body) =
        get(&server.management(&format!("/connect?idToken={token}&connectionId=c3"))).await;
    assert_eq!((status, body.as_str()), (500, "Internal server error."));
    // Dev endpoints do not exist outside dev mode.
    let (status, _) = get(&server.url("/dev/token")).await;
    assert_eq!(status, 404);
    let (status, _) = get(&server.url("/dev/jwks.json")).await;
    assert_eq!(status, 404);
}

fn json_body(proxy_response: &str) -> String {
    let value: serde_json::Value =
        serde_json::from_str(proxy_response).expect("proxy response JSON");
    value["body"].as_str().expect("body string").to_owned()
}

fn base64_decode(segment: &str) -> String {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segment)
        .unwrap();
    String::from_utf8(bytes).unwrap()
}

fn base64_json_edit(segment: &str, from: &str, to: &str) -> String {
    use base64::Engine as _;
    let edited = base64_decode(segment).replace(from, to);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(edited)
}

#[tokio::test]
async fn records_past_expires_at_are_gone_from_the_memory_store() {
    // One second of record life: expired once the clock's second has passed.
    let server = Server::start(&[("RECORD_TTL_SECONDS", "1")]);
    let (status, token) = get(&server.url("/dev/token?sub=alice&groups=acme,globex")).await;
    assert_eq!(status, 200);
    let (status, _) =
        get(&server.url(&format!("/connect?idToken={token}&connectionId=gone"))).await;
    assert_eq!(status, 200);
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let (status, body) = get(&server.url("/disconnect?connectionId=gone")).await;
    assert_eq!((status, body.as_str()), (200, "No records to disconnect."));
}

/// `GET /dev/jwks.json` serves the key that signs `/dev/token`'s tokens, as
/// a key set the policy's key policy accepts.
#[tokio::test]
async fn dev_jwks_serves_the_key_of_the_dev_tokens() {
    let server = Server::start(&[]);
    let (status, body) = get(&server.url("/dev/jwks.json")).await;
    assert_eq!(status, 200, "{body}");
    let set: serde_json::Value = serde_json::from_str(&body).expect("key set JSON");
    let keys = set["keys"].as_array().expect("a keys array");
    assert_eq!(keys.len(), 1, "{body}");
    let key = &keys[0];
    assert_eq!(
        (&key["kty"], &key["use"], &key["alg"], &key["e"]),
        (
            &serde_json::json!("RSA"),
            &serde_json::json!("sig"),
            &serde_json::json!("RS256"),
            &serde_json::json!("AQAB")
        ),
        "{body}"
    );
    let token = dev_token(&server, "sub=alice").await;
    let header: serde_json::Value =
        serde_json::from_str(&base64_decode(token.split('.').next().unwrap())).unwrap();
    assert_eq!(header["kid"], key["kid"], "the token names the served key");
    // The served set verifies the token's signature on its own: offline
    // `verify-token` checks the signature before the claims, so with a pool
    // that is not the dev issuer it gets as far as `wrong-issuer` (a key
    // that did not sign it would stop it at `bad-signature`).
    let file =
        gitgazer_ws_tests::test_cache_dir().join(format!("dev-jwks-{}.json", std::process::id()));
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, &body).unwrap();
    let output = std::process::Command::new(gitgazer_ws_tests::binary_path())
        .args(["verify-token", "--jwks"])
        .arg(&file)
        .args([
            "--region",
            "eu-west-1",
            "--user-pool-id",
            "eu-west-1_NotDev",
            "--client-id",
            gitgazer_ws::settings::DEV_CLIENT_ID,
            &token,
        ])
        .output()
        .unwrap();
    std::fs::remove_file(&file).ok();
    let verdict: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stderr)));
    assert_eq!(
        verdict,
        serde_json::json!({"valid": false, "reason": "wrong-issuer"})
    );
}

/// A token over 16 KiB is refused over HTTP as `too-large` (the class in
/// the log), one of exactly 16 KiB gets past that bound (here: malformed).
#[tokio::test]
async fn a_token_over_16_kib_is_refused_as_too_large_over_http() {
    let server = Server::start(&[]);
    for (bytes, class) in [(16 * 1024 + 1, "too-large"), (16 * 1024, "malformed")] {
        let token = "a".repeat(bytes);
        let (status, body) = get(&server.url(&format!(
            "/connect?idToken={token}&connectionId=big-{bytes}"
        )))
        .await;
        assert_eq!(
            (status, body.as_str()),
            (401, INVALID_TOKEN),
            "{bytes} bytes"
        );
        let expected = format!("connect denied: token {class}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while server.logs().matches(&expected).count() == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "no '{expected}' for {bytes} bytes:\n{}",
                server.logs()
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}
