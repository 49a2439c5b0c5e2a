//! `gitgazer-ws evict` (issue: authorisation for the life of a connection):
//! a real Cognito-mode server on dynalite, real sockets, tokens signed at
//! test time, the real command. The evicted user's sockets close with 4003,
//! their records go, the other user is untouched, and their token (issued
//! before the eviction) no longer connects or refreshes; a token issued
//! after it does. With the table's `sub` index and without it.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use futures_util::{SinkExt, StreamExt};
use gitgazer_ws::dev::DevSigner;
use gitgazer_ws_tests::jwks_server::{JwksMode, JwksServer};
use gitgazer_ws_tests::{
    Server, binary_path, create_table, dynalite_endpoint, dynamodb_env, unique_table, unix_now,
};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::support::{Pool, client, scan_items, text};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

const POOL: Pool = Pool {
    region: "eu-west-1",
    id: "eu-west-1_Evict1",
    client: "evict-client",
};
const GROUPS: [&str; 3] = ["a", "b", "c"];

/// A token of `sub` in a, b and c, issued at `iat`.
fn token(signer: &DevSigner, sub: &str, iat: u64) -> String {
    signer.sign(&json!({
        "sub": sub,
        "iss": format!("https://cognito-idp.{}.amazonaws.com/{}", POOL.region, POOL.id),
        "aud": POOL.client, "token_use": "id", "iat": iat, "exp": iat + 600,
        "cognito:groups": GROUPS,
    }))
}

/// A Cognito-mode server on the table (management listener on loopback,
/// no token: `evict` reaches it from this host).
fn server(jwks: &JwksServer, dynamo: &[(String, String)]) -> Server {
    POOL.server_on_table(jwks, dynamo)
}

/// Opens `/ws` with the token (bearer subprotocol): the socket, or the
/// HTTP status that refused it.
async fn open(server: &Server, token: &str) -> Result<Socket, u16> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = server
        .url("/ws")
        .replacen("http://", "ws://", 1)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        format!("bearer, {token}").parse().unwrap(),
    );
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => Ok(socket),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(error) => panic!("upgrade: {error}"),
    }
}

/// Text frames until the close frame (pings skipped): (texts, code, reason).
async fn until_closed(socket: &mut Socket) -> (Vec<String>, u16, String) {
    let mut texts = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), socket.next()).await {
            Err(_) => panic!("no close frame within 10 s (texts {texts:?})"),
            Ok(Some(Ok(Message::Close(Some(frame))))) => {
                return (texts, u16::from(frame.code), frame.reason.to_string());
            }
            Ok(Some(Ok(Message::Text(text)))) => texts.push(text.to_string()),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

/// Nothing but pings within `wait`: the socket is open and quiet.
async fn stays_open(socket: &mut Socket, wait: Duration) {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, socket.next()).await {
            Err(_) => return,
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            other => panic!("the socket should stay open and quiet: {other:?}"),
        }
    }
}

/// `gitgazer-ws evict` with `args`: exit code, report (or `Null`), stderr.
fn evict(
    dynamo: &[(String, String)],
    args: &[&str],
    extra: &[(&str, &str)],
) -> (i32, Value, String) {
    let output = Command::new(binary_path())
        .envs(dynamo.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env_remove("MANAGEMENT_TOKEN")
        .env_remove("WEBSOCKET_API_ENDPOINT")
        .envs(extra.iter().copied())
        .arg("evict")
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        serde_json::from_slice(&output.stdout).unwrap_or(Value::Null),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `table create`, with the `sub` index.
fn create_table_with_sub_index(endpoint: &str, table: &str) {
    let output = Command::new(binary_path())
        .args(["table", "create", "--with-sub-index"])
        .envs(dynamodb_env(endpoint, table))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The table: each record as (integrationId, connectionId, sub), and the
/// revocations as (integrationId, revokedBefore, expiresAt, has a sub).
async fn table_contents(
    endpoint: &str,
    table: &str,
) -> (
    BTreeSet<(String, String, String)>,
    Vec<(String, u64, u64, bool)>,
) {
    let number = |item: &std::collections::HashMap<String, AttributeValue>, name: &str| match item
        .get(name)
    {
        Some(AttributeValue::N(n)) => n.parse::<u64>().unwrap(),
        other => panic!("{name}: {other:?}"),
    };
    let mut records = BTreeSet::new();
    let mut revocations = Vec::new();
    for item in scan_items(endpoint, table).await {
        if item.contains_key("revokedBefore") {
            assert_eq!(text(&item, "integrationId"), text(&item, "connectionId"));
            revocations.push((
                text(&item, "integrationId"),
                number(&item, "revokedBefore"),
                number(&item, "expiresAt"),
                item.contains_key("sub"),
            ));
        } else {
            records.insert((
                text(&item, "integrationId"),
                text(&item, "connectionId"),
                text(&item, "sub"),
            ));
        }
    }
    (records, revocations)
}

/// Polls until the table's records are exactly `expected`.
async fn wait_for_records(
    endpoint: &str,
    table: &str,
    expected: &BTreeSet<(String, String, String)>,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (records, _) = table_contents(endpoint, table).await;
        if records == *expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "records {records:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn records_of(
    records: &BTreeSet<(String, String, String)>,
    sub: &str,
) -> BTreeSet<(String, String, String)> {
    records.iter().filter(|r| r.2 == sub).cloned().collect()
}

/// `POST /integrations/a/events` on the server: the report.
async fn deliver(server: &Server, message: &str) -> Value {
    let response = reqwest::Client::new()
        .post(server.management("/integrations/a/events"))
        .body(message.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    serde_json::from_str(&response.text().await.unwrap()).unwrap()
}

/// Two users on three integrations; evicting one through the `sub` index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evict_closes_the_users_sockets_with_4003_and_refuses_their_token_until_a_newer_one() {
    let endpoint = dynalite_endpoint();
    let table = unique_table("evict-index");
    create_table_with_sub_index(&endpoint, &table);
    let dynamo = dynamodb_env(&endpoint, &table);
    let signer = DevSigner::generate().unwrap();
    let jwks = JwksServer::start(JwksMode::Serve(signer.jwks().to_owned())).await;
    let server = server(&jwks, &dynamo);

    let issued = unix_now() - 5;
    let alice = token(&signer, "alice", issued);
    let mut alice_1 = open(&server, &alice).await.expect("alice connects");
    let mut alice_2 = open(&server, &alice).await.expect("alice connects again");
    let mut bob = open(&server, &token(&signer, "bob", issued))
        .await
        .expect("bob connects");
    let (before, _) = table_contents(&endpoint, &table).await;
    assert_eq!(before.len(), 9, "three records per socket: {before:?}");

    let (code, report, stderr) = evict(&dynamo, &["--sub", "alice"], &[]);
    assert_eq!(code, 0, "{report} {stderr}");
    let revoked_before = report["revokedBefore"].as_u64().expect("revokedBefore");
    assert!(revoked_before >= issued, "{report}");
    assert_eq!(
        report,
        json!({"revokedBefore": revoked_before, "records": 6, "deleted": 6,
               "connections": 2, "closed": 2, "gone": 0, "failed": 0})
    );
    for socket in [&mut alice_1, &mut alice_2] {
        let (texts, code, reason) = until_closed(socket).await;
        assert_eq!((code, reason.as_str()), (4003, "forbidden"), "{texts:?}");
        assert!(texts.is_empty(), "{texts:?}");
    }
    let (records, revocations) = table_contents(&endpoint, &table).await;
    assert_eq!(records, records_of(&before, "bob"), "bob untouched");
    assert_eq!(
        revocations,
        [(
            "revoked alice".to_owned(),
            revoked_before,
            revoked_before + 86_400,
            false
        )],
        "one revocation, kept a day, outside the sub index"
    );

    // Bob still receives; nobody else does.
    assert_eq!(
        deliver(&server, "after the eviction").await,
        json!({"delivered": 1, "gone": 0, "failed": 0, "expired": 0, "expiredAuth": 0})
    );
    let (texts, _, _) = {
        let received = tokio::time::timeout(Duration::from_secs(5), bob.next())
            .await
            .expect("bob's event");
        match received {
            Some(Ok(Message::Text(text))) => (vec![text.to_string()], 0, String::new()),
            other => panic!("bob: {other:?}"),
        }
    };
    assert_eq!(texts, ["after the eviction"]);

    // The evicted user's token no longer connects; one issued after the
    // eviction (they signed in again) does.
    assert_eq!(open(&server, &alice).await.err(), Some(401));
    // (No leeway: a token's iat may not lie in the future.)
    while unix_now() <= revoked_before {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let newer = token(&signer, "alice", revoked_before + 1);
    let mut again = open(&server, &newer).await.expect("a newer token connects");
    stays_open(&mut again, Duration::from_millis(300)).await;
    let (records, _) = table_contents(&endpoint, &table).await;
    assert_eq!(records_of(&records, "alice").len(), 3);
}

/// Without the `sub` index: `evict` needs `--integration`, and then finds
/// the user's records in those integrations only; closing the socket ends
/// the rest (its DISCONNECT). A refresh with a token issued before the
/// revocation closes 4003.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_sub_index_evict_needs_integrations_and_a_revoked_refresh_closes_4003() {
    let endpoint = dynalite_endpoint();
    let table = unique_table("evict-plain");
    create_table(&endpoint, &table);
    let dynamo = dynamodb_env(&endpoint, &table);
    let signer = DevSigner::generate().unwrap();
    let jwks = JwksServer::start(JwksMode::Serve(signer.jwks().to_owned())).await;
    let server = server(&jwks, &dynamo);

    let now = unix_now();
    let mut alice = open(&server, &token(&signer, "alice", now - 20))
        .await
        .expect("alice connects");
    let mut carol = open(&server, &token(&signer, "carol", now - 20))
        .await
        .expect("carol connects");
    let bob_token = token(&signer, "bob", now - 5);
    let _bob = open(&server, &bob_token).await.expect("bob connects");
    let (before, _) = table_contents(&endpoint, &table).await;
    assert_eq!(before.len(), 9);

    // No index, no integrations: a clear refusal, exit 2; the revocation
    // is stored all the same (written first).
    let (code, report, stderr) = evict(&dynamo, &["--sub", "bob"], &[]);
    assert_eq!(code, 2, "{report} {stderr}");
    assert!(
        stderr.contains("--integration") && stderr.contains("sub-index"),
        "{stderr}"
    );
    assert_eq!(open(&server, &bob_token).await.err(), Some(401));

    // With integrations: a and b searched; the socket closed; its c record
    // goes with its DISCONNECT.
    let (code, report, stderr) = evict(
        &dynamo,
        &["--sub", "alice", "--integration", "a", "--integration", "b"],
        &[],
    );
    assert_eq!(code, 0, "{report} {stderr}");
    assert_eq!(
        (&report["records"], &report["deleted"], &report["closed"]),
        (&json!(2), &json!(2), &json!(1)),
        "{report}"
    );
    let (_, code, reason) = until_closed(&mut alice).await;
    assert_eq!((code, reason.as_str()), (4003, "forbidden"));
    let mut left = before.clone();
    left.retain(|r| r.2 != "alice");
    wait_for_records(&endpoint, &table, &left).await;

    // Carol is revoked with an integration she is not in: nothing closed,
    // but her refresh with a token issued before the revocation (newer than
    // her current one) closes 4003 and her records go.
    let (code, report, stderr) = evict(&dynamo, &["--sub", "carol", "--integration", "z"], &[]);
    assert_eq!(code, 0, "{report} {stderr}");
    assert_eq!(
        (&report["records"], &report["connections"]),
        (&json!(0), &json!(0))
    );
    let refused = token(&signer, "carol", now - 10);
    let refresh = json!({"action": "refresh", "idToken": refused});
    carol
        .send(Message::Text(refresh.to_string().into()))
        .await
        .unwrap();
    let (texts, code, reason) = until_closed(&mut carol).await;
    assert_eq!((code, reason.as_str()), (4003, "forbidden"), "{texts:?}");
    left.retain(|r| r.2 != "carol");
    wait_for_records(&endpoint, &table, &left).await;
    let (claims, signature) = refused.rsplit_once('.').unwrap();
    let logs = server.logs();
    assert!(logs.contains(r#""rejection":"revoked""#), "{logs}");
    for part in [signature, claims.rsplit_once('.').unwrap().1] {
        assert!(!logs.contains(part), "a part of the token reached the log");
    }
}

/// Records that name no endpoint (the original handler's, or API
/// Gateway's through `WEBSOCKET_API_ENDPOINT`) are closed the API Gateway
/// way: a last `{"type":"close","code":4003,"reason":"revoked"}`, then
/// DeleteConnection (here the server's own Management API shape).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_gateway_connection_hears_a_close_message_then_is_deleted() {
    let endpoint = dynalite_endpoint();
    let table = unique_table("evict-apigw");
    create_table_with_sub_index(&endpoint, &table);
    let dynamo = dynamodb_env(&endpoint, &table);
    let signer = DevSigner::generate().unwrap();
    let jwks = JwksServer::start(JwksMode::Serve(signer.jwks().to_owned())).await;
    let server = server(&jwks, &dynamo);
    let mut alice = open(&server, &token(&signer, "alice", unix_now() - 5))
        .await
        .expect("alice connects");
    let dynamodb = client(&endpoint);
    for item in scan_items(&endpoint, &table).await {
        dynamodb
            .update_item()
            .table_name(&table)
            .key("integrationId", item["integrationId"].clone())
            .key("connectionId", item["connectionId"].clone())
            .update_expression("REMOVE endpoint")
            .send()
            .await
            .unwrap();
    }

    let (code, report, stderr) = evict(
        &dynamo,
        &["--sub", "alice"],
        &[("WEBSOCKET_API_ENDPOINT", server.management_url.as_str())],
    );
    assert_eq!(code, 0, "{report} {stderr}");
    assert_eq!(report["closed"], 1, "{report}");
    let (texts, code, _) = until_closed(&mut alice).await;
    assert_eq!(
        texts,
        [r#"{"type":"close","code":4003,"reason":"revoked"}"#]
    );
    assert_eq!(code, 1000, "DeleteConnection carries no code of its own");
    let (records, _) = table_contents(&endpoint, &table).await;
    assert!(records.is_empty(), "{records:?}");
}
