//! The self-hosted WebSocket endpoint and event delivery, end to end over
//! loopback: the real binary in DynamoDB mode (dynalite), real WebSocket
//! clients (tokio-tungstenite), and `gitgazer-ws deliver` posting through
//! the AWS SDK's Management API client to the host's own
//! `/@connections/{id}`, exactly as it would to API Gateway.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use futures_util::StreamExt;
use gitgazer_ws_tests::{
    binary_path, create_table, dynalite_endpoint, dynamodb_env, unique_table, unix_now,
};
use support::{Fixture, client, keys, scan};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn ws_url(fixture: &Fixture, query: &str) -> String {
    fixture
        .server
        .url(&format!("/ws{query}"))
        .replacen("http://", "ws://", 1)
}

async fn open_with_query(fixture: &Fixture, token: &str) -> Socket {
    let (socket, response) =
        tokio_tungstenite::connect_async(ws_url(fixture, &format!("?idToken={token}")))
            .await
            .expect("upgrade");
    assert_eq!(response.status(), 101);
    socket
}

async fn open_with_bearer(fixture: &Fixture, token: &str) -> Result<Socket, WsError> {
    let mut request = ws_url(fixture, "").into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_str(&format!("bearer, {token}")).unwrap(),
    );
    let (socket, response) = tokio_tungstenite::connect_async(request).await?;
    assert_eq!(
        response
            .headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().unwrap()),
        Some("bearer"),
        "the server selects the bearer subprotocol"
    );
    Ok(socket)
}

/// The next data message within `wait`, or `None`.
async fn next_text(socket: &mut Socket, wait: Duration) -> Option<String> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, socket.next()).await {
            Err(_) => return None,
            Ok(Some(Ok(Message::Text(text)))) => return Some(text.to_string()),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(other) => panic!("unexpected: {other:?}"),
        }
    }
}

/// Runs `gitgazer-ws deliver` against the host's own Management API.
fn deliver(
    fixture: &Fixture,
    endpoint: &str,
    table: &str,
    integration: &str,
    message: &str,
) -> serde_json::Value {
    let file = std::env::temp_dir().join(format!(
        "gitgazer-ws-message-{}-{integration}",
        std::process::id()
    ));
    std::fs::write(&file, message).unwrap();
    let output = std::process::Command::new(binary_path())
        .envs(dynamodb_env(endpoint, table))
        .env("WEBSOCKET_API_ENDPOINT", &fixture.server.base_url)
        .args(["deliver", "--integration", integration, "--message"])
        .arg(&file)
        .output()
        .unwrap();
    std::fs::remove_file(&file).ok();
    assert!(
        output.status.success(),
        "deliver failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("one line of JSON")
}

/// Waits until the table holds exactly `expected` keys.
async fn wait_for_table(endpoint: &str, table: &str, expected: &BTreeSet<(String, String)>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = keys(&scan(endpoint, table).await);
        if &now == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "table: {} records, expected {}; extra {:?}, missing {:?}",
            now.len(),
            expected.len(),
            now.difference(expected).take(5).collect::<Vec<_>>(),
            expected.difference(&now).take(5).collect::<Vec<_>>(),
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_only_on_a_200_connect_with_the_token_in_the_query_or_the_bearer_subprotocol() {
    let endpoint = dynalite_endpoint();
    let table = unique_table("ws-upgrade");
    create_table(&endpoint, &table);
    let fixture = Fixture::start(&endpoint, &table, &[]);
    let token = fixture.token("alice", &["acme"]).await;

    let mut by_query = open_with_query(&fixture, &token).await;
    let mut by_bearer = open_with_bearer(&fixture, &token)
        .await
        .expect("bearer upgrade");
    let records = scan(&endpoint, &table).await;
    assert_eq!(records.len(), 2, "one record per socket: {records:?}");

    // Refused upgrades answer the CONNECT decision's status and body.
    for (token, status, body) in [
        (
            "not-a-token",
            401,
            "Unauthorized: Invalid authentication token",
        ),
        ("", 401, "Unauthorized: No authentication token provided"),
    ] {
        match open_with_bearer(&fixture, token).await {
            Err(WsError::Http(response)) => {
                assert_eq!(response.status(), status);
                let text = String::from_utf8(response.body().clone().unwrap_or_default()).unwrap();
                assert_eq!(text, body);
            }
            other => panic!("expected a refused upgrade, got {:?}", other.map(|_| ())),
        }
    }
    let no_groups = fixture.token("bob", &[]).await;
    match tokio_tungstenite::connect_async(ws_url(&fixture, &format!("?idToken={no_groups}"))).await
    {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 401),
        other => panic!("expected 401, got {:?}", other.map(|_| ())),
    }
    assert_eq!(
        scan(&endpoint, &table).await.len(),
        2,
        "refusals store nothing"
    );

    // Delivery over the loopback endpoint reaches both.
    let (status, body) = post(&fixture, "/integrations/acme/events", "{\"n\":1}").await;
    assert_eq!(status, 200, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        report,
        serde_json::json!({"delivered": 2, "gone": 0, "failed": 0, "expired": 0})
    );
    for socket in [&mut by_query, &mut by_bearer] {
        assert_eq!(
            next_text(socket, Duration::from_secs(5)).await.as_deref(),
            Some("{\"n\":1}")
        );
    }

    // POST /@connections/{id} reaches one socket; DELETE closes it and its
    // records go; both answer 410 afterwards.
    let mut all = keys(&scan(&endpoint, &table).await);
    let first = all.pop_first().unwrap();
    let id = &first.1;
    assert_eq!(
        request(&fixture, "POST", &format!("/@connections/{id}"), "just you")
            .await
            .0,
        200
    );
    let (mut closed, mut open) = (by_query, by_bearer);
    if next_text(&mut closed, Duration::from_millis(500))
        .await
        .as_deref()
        != Some("just you")
    {
        std::mem::swap(&mut closed, &mut open);
        assert_eq!(
            next_text(&mut closed, Duration::from_secs(5))
                .await
                .as_deref(),
            Some("just you")
        );
    }
    assert_eq!(
        request(&fixture, "DELETE", &format!("/@connections/{id}"), "")
            .await
            .0,
        204
    );
    match tokio::time::timeout(Duration::from_secs(5), closed.next())
        .await
        .expect("closed in time")
    {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1000),
        other => panic!("expected a close frame, got {other:?}"),
    }
    wait_for_table(&endpoint, &table, &all).await;
    assert_eq!(
        request(&fixture, "DELETE", &format!("/@connections/{id}"), "")
            .await
            .0,
        410
    );
    let (status, body) = request(&fixture, "POST", &format!("/@connections/{id}"), "x").await;
    assert_eq!((status, body.as_str()), (410, "{\"message\":\"Gone\"}"));

    // A client's close frame: DISCONNECT runs, the store is empty.
    open.close(None).await.unwrap();
    wait_for_table(&endpoint, &table, &BTreeSet::new()).await;
}

async fn request(fixture: &Fixture, method: &str, path: &str, body: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .request(method.parse().unwrap(), fixture.server.url(path))
        .body(body.to_owned())
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

async fn post(fixture: &Fixture, path: &str, body: &str) -> (u16, String) {
    request(fixture, "POST", path, body).await
}

/// 1 000 sockets of 10 integrations; delivery to one reaches exactly its
/// sockets; connections that vanished (a host that died: records without a
/// socket) are found gone and all their records deleted; clients that drop
/// their TCP connection without a close frame are disconnected; after every
/// client has gone the table is empty; the host's memory stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_clients_of_ten_integrations() {
    const CLIENTS: usize = 1000;
    const INTEGRATIONS: usize = 10;
    let endpoint = dynalite_endpoint();
    let table = unique_table("ws-thousand");
    create_table(&endpoint, &table);
    let fixture = Fixture::start(&endpoint, &table, &[]);
    let mut tokens = Vec::new();
    for i in 0..INTEGRATIONS {
        tokens.push(
            fixture
                .token(&format!("user-{i}"), &[&format!("integration-{i}")])
                .await,
        );
    }

    // Open them 50 at a time (the handshakes, not the sockets, are bounded).
    let mut sockets: Vec<(usize, Socket)> = Vec::new();
    for chunk in (0..CLIENTS).collect::<Vec<_>>().chunks(50) {
        let opening = chunk.iter().map(|&n| {
            let token = tokens[n % INTEGRATIONS].clone();
            let url = ws_url(&fixture, "");
            async move {
                let mut request = url.into_client_request().unwrap();
                request.headers_mut().insert(
                    "sec-websocket-protocol",
                    HeaderValue::from_str(&format!("bearer, {token}")).unwrap(),
                );
                let (socket, _) = tokio_tungstenite::connect_async(request)
                    .await
                    .expect("upgrade");
                (n % INTEGRATIONS, socket)
            }
        });
        sockets.extend(futures_util::future::join_all(opening).await);
    }
    let stored = scan(&endpoint, &table).await;
    assert_eq!(stored.len(), CLIENTS, "one record per socket");

    // Records of connections no socket holds (as if a host had died), in
    // integration-3 and, for the same connection, integration-4.
    let dynamo = client(&endpoint);
    let vanished: Vec<String> = (0..5).map(|n| format!("vanished-{n}")).collect();
    for id in &vanished {
        for integration in ["integration-3", "integration-4"] {
            dynamo
                .put_item()
                .table_name(&table)
                .item("integrationId", AttributeValue::S(integration.into()))
                .item("connectionId", AttributeValue::S(id.clone()))
                .item("sub", AttributeValue::S("ghost".into()))
                .item(
                    "connectedAt",
                    AttributeValue::S("2026-11-27T00:00:00Z".into()),
                )
                .item(
                    "expiresAt",
                    AttributeValue::N((unix_now() + 3600).to_string()),
                )
                .send()
                .await
                .unwrap();
        }
    }
    // And one long expired (TTL lags): skipped and deleted.
    dynamo
        .put_item()
        .table_name(&table)
        .item("integrationId", AttributeValue::S("integration-3".into()))
        .item("connectionId", AttributeValue::S("expired-0".into()))
        .item("sub", AttributeValue::S("ghost".into()))
        .item(
            "connectedAt",
            AttributeValue::S("2026-11-27T00:00:00Z".into()),
        )
        .item(
            "expiresAt",
            AttributeValue::N((unix_now() - 60).to_string()),
        )
        .send()
        .await
        .unwrap();

    let report = deliver(
        &fixture,
        &endpoint,
        &table,
        "integration-3",
        "{\"workflow\":\"build\",\"status\":\"success\"}",
    );
    assert_eq!(
        report,
        serde_json::json!({"delivered": CLIENTS / INTEGRATIONS, "gone": 5, "failed": 0, "expired": 1})
    );
    // Exactly integration-3's sockets got it, once.
    let received = futures_util::future::join_all(sockets.iter_mut().map(
        |(integration, socket)| async move {
            let wait = if *integration == 3 {
                Duration::from_secs(10)
            } else {
                Duration::from_millis(300)
            };
            (*integration, next_text(socket, wait).await)
        },
    ))
    .await;
    for (integration, message) in &received {
        if *integration == 3 {
            assert_eq!(
                message.as_deref(),
                Some("{\"workflow\":\"build\",\"status\":\"success\"}")
            );
        } else {
            assert_eq!(message, &None, "integration-{integration} got a message");
        }
    }
    // The vanished connections' records went, in both integrations.
    let after = keys(&scan(&endpoint, &table).await);
    assert!(
        after
            .iter()
            .all(|(_, c)| !c.starts_with("vanished-") && c != "expired-0"),
        "{after:?}"
    );
    assert_eq!(after.len(), CLIENTS);

    // 100 clients vanish without a close frame: their sockets end, the
    // DISCONNECTs run.
    drop(sockets.drain(..100).collect::<Vec<_>>());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while scan(&endpoint, &table).await.len() != CLIENTS - 100 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "dropped clients' records remain"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let peak_kib = fixture.server.peak_rss_kib();
    assert!(
        peak_kib < 256 * 1024,
        "host peak RSS {} MiB",
        peak_kib / 1024
    );
    println!("{CLIENTS} sockets: host peak RSS {} MiB", peak_kib / 1024);

    // Everyone else closes properly: the table ends empty.
    futures_util::future::join_all(sockets.iter_mut().map(|(_, socket)| socket.close(None))).await;
    wait_for_table(&endpoint, &table, &BTreeSet::new()).await;
}
