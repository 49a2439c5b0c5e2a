//! The self-hosted WebSocket endpoint and event delivery, end to end over
//! loopback: the real binary in DynamoDB mode (dynalite), real WebSocket
//! clients (tokio-tungstenite), and `gitgazer-ws deliver` posting through
//! the AWS SDK's Management API client to the host's own
//! `/@connections/{id}`, exactly as it would to API Gateway.

use std::collections::BTreeSet;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use futures_util::{SinkExt, StreamExt};
use gitgazer_ws_tests::fault_proxy::{FaultProxy, INDEX_QUERY};
use gitgazer_ws_tests::{
    binary_path, create_table, dynalite_endpoint, dynamodb_env, unique_table, unix_now,
};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::support::{
    Fixture, client, keys, put_record, put_record_connected_at, scan, wait_for_table,
};

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

/// Runs `gitgazer-ws deliver` against the host's own Management API; it
/// must succeed.
fn deliver(
    fixture: &Fixture,
    endpoint: &str,
    table: &str,
    integration: &str,
    message: &str,
) -> serde_json::Value {
    let (code, report) = deliver_exit(fixture, endpoint, table, integration, message);
    assert_eq!(code, Some(0), "deliver failed: {report}");
    report
}

/// `gitgazer-ws deliver`'s exit code and report.
fn deliver_exit(
    fixture: &Fixture,
    endpoint: &str,
    table: &str,
    integration: &str,
    message: &str,
) -> (Option<i32>, serde_json::Value) {
    let file = std::env::temp_dir().join(format!(
        "gitgazer-ws-message-{}-{integration}",
        std::process::id()
    ));
    std::fs::write(&file, message).unwrap();
    let output = std::process::Command::new(binary_path())
        .envs(dynamodb_env(endpoint, table))
        .env("WEBSOCKET_API_ENDPOINT", &fixture.server.management_url)
        // Small Query pages: delivery must follow LastEvaluatedKey.
        .env("DYNAMODB_QUERY_PAGE_LIMIT", "7")
        .args(["deliver", "--integration", integration, "--message"])
        .arg(&file)
        .output()
        .unwrap();
    std::fs::remove_file(&file).ok();
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
        panic!(
            "deliver printed no report: {}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code(), report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_only_on_a_200_connect_with_the_token_in_the_query_or_the_bearer_subprotocol() {
    let endpoint = dynalite_endpoint();
    let table = unique_table("ws-upgrade");
    create_table(&endpoint, &table);
    let fixture = Fixture::start(&endpoint, &table, &[]);
    let token = fixture.token("alice", &["acme"]).await;

    // Which connection id is which socket: the table after each upgrade.
    let mut by_query = open_with_query(&fixture, &token).await;
    let query_id = connections_of(&endpoint, &table, "acme").await.remove(0);
    let mut by_bearer = open_with_bearer(&fixture, &token)
        .await
        .expect("bearer upgrade");
    let records = scan(&endpoint, &table).await;
    assert_eq!(records.len(), 2, "one record per socket: {records:?}");
    let bearer_id = connections_of(&endpoint, &table, "acme")
        .await
        .into_iter()
        .find(|id| *id != query_id)
        .expect("the bearer socket's record");

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
        serde_json::json!({"delivered": 2, "gone": 0, "failed": 0, "expired": 0, "expiredAuth": 0})
    );
    for socket in [&mut by_query, &mut by_bearer] {
        assert_eq!(
            next_text(socket, Duration::from_secs(5)).await.as_deref(),
            Some("{\"n\":1}")
        );
    }

    // POST /@connections/{id} reaches that socket only (a marker posted to
    // the other one is the other's next message); DELETE closes it and its
    // records go; both answer 410 afterwards.
    let id = &query_id;
    let (mut closed, mut open) = (by_query, by_bearer);
    assert_eq!(
        request(&fixture, "POST", &format!("/@connections/{id}"), "just you")
            .await
            .0,
        200
    );
    assert_eq!(
        request(
            &fixture,
            "POST",
            &format!("/@connections/{bearer_id}"),
            "marker"
        )
        .await
        .0,
        200
    );
    assert_eq!(
        next_text(&mut closed, Duration::from_secs(10))
            .await
            .as_deref(),
        Some("just you")
    );
    assert_eq!(
        next_text(&mut open, Duration::from_secs(10))
            .await
            .as_deref(),
        Some("marker"),
        "the other socket got the message"
    );
    let all = BTreeSet::from([("acme".to_owned(), bearer_id.clone())]);
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

/// A request to the management listener.
async fn request(fixture: &Fixture, method: &str, path: &str, body: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .request(method.parse().unwrap(), fixture.server.management(path))
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
    // Small Query pages for the DISCONNECTs' GSI queries too.
    // 100 sockets per user here, past the per-user default of 32.
    let fixture = Fixture::start(
        &endpoint,
        &table,
        &[
            ("DYNAMODB_QUERY_PAGE_LIMIT", "7"),
            ("MAX_WEBSOCKETS_PER_USER", "100"),
        ],
    );
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
            put_record(&dynamo, &table, integration, id, unix_now() + 3600).await;
        }
    }
    // And one long expired (TTL lags): skipped and deleted.
    put_record(
        &dynamo,
        &table,
        "integration-3",
        "expired-0",
        unix_now() - 60,
    )
    .await;

    let report = deliver(
        &fixture,
        &endpoint,
        &table,
        "integration-3",
        "{\"workflow\":\"build\",\"status\":\"success\"}",
    );
    assert_eq!(
        report,
        serde_json::json!({"delivered": CLIENTS / INTEGRATIONS, "gone": 5, "failed": 0, "expired": 1, "expiredAuth": 0})
    );
    // Exactly integration-3's sockets got it, once: a marker delivered to
    // every integration afterwards is every other socket's first message,
    // and integration-3's second.
    for integration in 0..INTEGRATIONS {
        let (status, body) = post(
            &fixture,
            &format!("/integrations/integration-{integration}/events"),
            "marker",
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let received = futures_util::future::join_all(sockets.iter_mut().map(
        |(integration, socket)| async move {
            let first = next_text(socket, Duration::from_secs(30)).await;
            let second = if *integration == 3 {
                next_text(socket, Duration::from_secs(30)).await
            } else {
                None
            };
            (*integration, first, second)
        },
    ))
    .await;
    let event = "{\"workflow\":\"build\",\"status\":\"success\"}";
    for (integration, first, second) in &received {
        if *integration == 3 {
            assert_eq!(
                (first.as_deref(), second.as_deref()),
                (Some(event), Some("marker"))
            );
        } else {
            assert_eq!(
                first.as_deref(),
                Some("marker"),
                "integration-{integration} got something else first"
            );
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

/// The close frame a socket receives within `wait` (pings and pongs
/// skipped), with the time it came.
async fn close_frame(socket: &mut Socket, wait: Duration) -> (u16, String) {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, socket.next()).await {
            Err(_) => panic!("no close frame within {wait:?}"),
            Ok(Some(Ok(Message::Close(Some(frame))))) => {
                return (u16::from(frame.code), frame.reason.to_string());
            }
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

/// The connection ids stored for `integration`.
async fn connections_of(endpoint: &str, table: &str, integration: &str) -> Vec<String> {
    keys(&scan(endpoint, table).await)
        .into_iter()
        .filter(|(i, _)| i == integration)
        .map(|(_, c)| c)
        .collect()
}

/// 10 minutes idle and 2 hours of age, shortened: a quiet socket is closed
/// as idle, a chatty one (data resets the idle clock) at its maximum age;
/// both close frames say why, and their records go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_aged_sockets_are_closed_and_disconnected() {
    let endpoint = dynalite_endpoint();
    let table = unique_table("ws-idle");
    create_table(&endpoint, &table);
    let fixture = Fixture::start(
        &endpoint,
        &table,
        &[("WS_IDLE_TIMEOUT", "1s"), ("WS_MAX_AGE", "3s")],
    );
    let token = fixture.token("carol", &["acme"]).await;
    // Before the upgrades: the server's clocks start later.
    let opened = tokio::time::Instant::now();
    let mut quiet = open_with_query(&fixture, &token).await;
    let mut chatty = open_with_query(&fixture, &token).await;
    assert_eq!(scan(&endpoint, &table).await.len(), 2);

    let quiet_closed = async {
        let frame = close_frame(&mut quiet, Duration::from_secs(10)).await;
        (frame, opened.elapsed())
    };
    let chatty_closed = async {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                _ = tick.tick() => chatty.send(Message::text("still here")).await.expect("send"),
                incoming = chatty.next() => match incoming {
                    Some(Ok(Message::Close(Some(frame)))) => {
                        return ((u16::from(frame.code), frame.reason.to_string()), opened.elapsed());
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    other => panic!("expected a close frame, got {other:?}"),
                },
                () = tokio::time::sleep(Duration::from_secs(15)) => panic!("no close frame within 15 s"),
            }
        }
    };
    let ((quiet_frame, quiet_after), (chatty_frame, chatty_after)) =
        futures_util::future::join(quiet_closed, chatty_closed).await;
    assert_eq!(quiet_frame, (1001, "idle".to_owned()));
    assert!(
        quiet_after >= Duration::from_secs(1),
        "closed early: {quiet_after:?}"
    );
    assert_eq!(chatty_frame, (1001, "maximum age".to_owned()));
    assert!(
        chatty_after >= Duration::from_secs(3),
        "closed early: {chatty_after:?}"
    );
    wait_for_table(&endpoint, &table, &BTreeSet::new()).await;
}

/// A ping every 500 ms: a client that answers (tungstenite pongs while it
/// reads) stays; one that never reads misses its pong and is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_that_misses_a_pong_is_dropped() {
    let endpoint = dynalite_endpoint();
    let table = unique_table("ws-ping");
    create_table(&endpoint, &table);
    let fixture = Fixture::start(&endpoint, &table, &[("WS_PING_INTERVAL", "500ms")]);
    let live_token = fixture.token("dave", &["live"]).await;
    let mute_token = fixture.token("erin", &["mute"]).await;
    let mut live = open_with_query(&fixture, &live_token).await;
    let _mute = open_with_query(&fixture, &mute_token).await;
    let live_id = connections_of(&endpoint, &table, "live").await;
    assert_eq!(live_id.len(), 1);
    assert_eq!(connections_of(&endpoint, &table, "mute").await.len(), 1);

    // The live client reads (and so answers pings) all along; after 3 s
    // (6 pings) only the mute client's record has gone.
    let pings = std::sync::atomic::AtomicUsize::new(0);
    let reading = async {
        loop {
            match live.next().await {
                Some(Ok(Message::Ping(_))) => {
                    pings.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                other => panic!("the live client got {other:?}"),
            }
        }
    };
    let expected = BTreeSet::from([("live".to_owned(), live_id[0].clone())]);
    let checking = async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        wait_for_table(&endpoint, &table, &expected).await;
    };
    tokio::select! {
        () = reading => unreachable!(),
        () = checking => {}
    }
    let pings = pings.into_inner();
    assert!(pings >= 4, "{pings} pings in 3 s");

    live.close(None).await.unwrap();
    wait_for_table(&endpoint, &table, &BTreeSet::new()).await;
}

/// A reader that never reads: posts to it fill the TCP buffers, then its
/// send queue (256 KiB), and it is disconnected (410 from then on, records
/// gone) long before the posts add up; a reading client on the same host
/// keeps receiving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_is_disconnected_and_memory_stays_bounded() {
    let endpoint = dynalite_endpoint();
    let table = unique_table("ws-slow");
    create_table(&endpoint, &table);
    let fixture = Fixture::start(&endpoint, &table, &[("WS_SEND_QUEUE_BYTES", "262144")]);
    let slow_token = fixture.token("frank", &["slow"]).await;
    let fast_token = fixture.token("grace", &["fast"]).await;
    let _slow = open_with_query(&fixture, &slow_token).await;
    let mut fast = open_with_query(&fixture, &fast_token).await;
    let slow_id = connections_of(&endpoint, &table, "slow").await.remove(0);
    let fast_id = connections_of(&endpoint, &table, "fast").await.remove(0);

    const MESSAGE_BYTES: usize = 64 * 1024;
    const MAX_POSTS: usize = 2000; // 125 MiB: far beyond any TCP buffering
    let message = "x".repeat(MESSAGE_BYTES);
    let client = reqwest::Client::new();
    let mut accepted = 0;
    loop {
        let response = client
            .post(
                fixture
                    .server
                    .management(&format!("/@connections/{slow_id}")),
            )
            .body(message.clone())
            .send()
            .await
            .expect("post");
        match response.status().as_u16() {
            200 => accepted += 1,
            410 => break,
            other => panic!("POST answered {other}"),
        }
        assert!(
            accepted < MAX_POSTS,
            "{accepted} posts and the slow reader is still open"
        );
    }
    println!(
        "slow reader disconnected after {accepted} messages ({} KiB)",
        accepted * MESSAGE_BYTES / 1024
    );
    let (status, body) = post(&fixture, &format!("/@connections/{slow_id}"), "again").await;
    assert_eq!((status, body.as_str()), (410, "{\"message\":\"Gone\"}"));
    let expected = BTreeSet::from([("fast".to_owned(), fast_id.clone())]);
    wait_for_table(&endpoint, &table, &expected).await;

    let (status, _) = post(&fixture, &format!("/@connections/{fast_id}"), "for you").await;
    assert_eq!(status, 200);
    assert_eq!(
        next_text(&mut fast, Duration::from_secs(5))
            .await
            .as_deref(),
        Some("for you")
    );
    let peak_kib = fixture.server.peak_rss_kib();
    assert!(
        peak_kib < 128 * 1024,
        "host peak RSS {} MiB",
        peak_kib / 1024
    );
}

/// SIGTERM with sockets open: each gets a 1001 close frame, the host waits
/// for their DISCONNECTs and exits 0, and the table is empty when it has
/// gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_open_sockets_and_removes_their_records() {
    let endpoint = dynalite_endpoint();
    let table = unique_table("ws-shutdown");
    create_table(&endpoint, &table);
    let mut fixture = Fixture::start(&endpoint, &table, &[]);
    let token = fixture.token("heidi", &["acme", "globex"]).await;
    let mut sockets = Vec::new();
    for _ in 0..3 {
        sockets.push(open_with_query(&fixture, &token).await);
    }
    assert_eq!(scan(&endpoint, &table).await.len(), 6);

    fixture.server.terminate();
    let frames = futures_util::future::join_all(
        sockets
            .iter_mut()
            .map(|socket| close_frame(socket, Duration::from_secs(10))),
    )
    .await;
    for frame in frames {
        assert_eq!(frame, (1001, "server shutting down".to_owned()));
    }
    let status = fixture
        .server
        .wait_exit(Duration::from_secs(30))
        .expect("the host exits");
    assert!(status.success(), "{status}");
    assert_eq!(scan(&endpoint, &table).await, BTreeSet::new());
}

/// MAX_WEBSOCKETS=3 and a burst of 12 upgrades at once: exactly 3 open,
/// the rest get 503 and store nothing; a closed socket frees its slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_never_exceeds_max_websockets() {
    let endpoint = dynalite_endpoint();
    let table = unique_table("ws-max");
    create_table(&endpoint, &table);
    let fixture = Fixture::start(&endpoint, &table, &[("MAX_WEBSOCKETS", "3")]);
    let token = fixture.token("ivan", &["acme"]).await;
    let url = ws_url(&fixture, &format!("?idToken={token}"));
    let attempts = (0..12).map(|_| tokio_tungstenite::connect_async(url.clone()));
    let mut open = Vec::new();
    let mut refused = 0;
    for attempt in futures_util::future::join_all(attempts).await {
        match attempt {
            Ok((socket, _)) => open.push(socket),
            Err(WsError::Http(response)) => {
                assert_eq!(response.status(), 503);
                assert_eq!(
                    response.body().as_deref(),
                    Some(&b"Too many connections."[..])
                );
                refused += 1;
            }
            Err(other) => panic!("{other}"),
        }
    }
    assert_eq!((open.len(), refused), (3, 9));
    assert_eq!(scan(&endpoint, &table).await.len(), 3);

    // One closes; its slot comes back once its DISCONNECT has run.
    let mut first = open.remove(0);
    first.close(None).await.unwrap();
    open.push(open_when_a_slot_frees(&url).await);
    assert_eq!(scan(&endpoint, &table).await.len(), 3);
}

/// Records as the original Node handler wrote them: no `expiresAt`, and
/// `connectedAt` with milliseconds. A delivery treats them as not expiring
/// and reaches their socket, instead of failing on them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_written_by_the_original_handler_are_delivered() {
    let endpoint = dynalite_endpoint();
    let table = unique_table("ws-legacy");
    create_table(&endpoint, &table);
    let fixture = Fixture::start(&endpoint, &table, &[]);
    let token = fixture.token("alice", &["acme"]).await;
    let mut socket = open_with_query(&fixture, &token).await;
    let stored = scan(&endpoint, &table).await;
    let (_, connection_id, _, _) = stored.first().expect("the socket's record").clone();

    let dynamo = client(&endpoint);
    dynamo
        .put_item()
        .table_name(&table)
        .item("integrationId", AttributeValue::S("legacy".into()))
        .item("connectionId", AttributeValue::S(connection_id))
        .item("sub", AttributeValue::S("alice".into()))
        .item(
            "connectedAt",
            AttributeValue::S("2026-12-06T04:00:00.123Z".into()),
        )
        .send()
        .await
        .expect("put_item");

    let (status, body) = post(&fixture, "/integrations/legacy/events", "{\"n\":7}").await;
    assert_eq!(
        (status, body.as_str()),
        (
            200,
            r#"{"delivered":1,"gone":0,"failed":0,"expired":0,"expiredAuth":0}"#
        )
    );
    assert_eq!(
        next_text(&mut socket, Duration::from_secs(10))
            .await
            .as_deref(),
        Some("{\"n\":7}")
    );
}

/// One valid token cannot take every slot: a user's 33rd socket is refused
/// (the default `MAX_WEBSOCKETS_PER_USER`, 32) and leaves no record, while
/// another user still connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_33rd_socket_is_refused_while_another_user_connects() {
    let endpoint = dynalite_endpoint();
    let table = unique_table("ws-per-user");
    create_table(&endpoint, &table);
    let fixture = Fixture::start(&endpoint, &table, &[]);
    let mallory = fixture.token("mallory", &["acme"]).await;
    let mut open = Vec::new();
    for _ in 0..32 {
        open.push(open_with_query(&fixture, &mallory).await);
    }
    match tokio_tungstenite::connect_async(ws_url(&fixture, &format!("?idToken={mallory}"))).await {
        Err(WsError::Http(response)) => {
            assert_eq!(response.status(), 503);
            assert_eq!(
                response.body().as_deref(),
                Some(&b"Too many connections."[..])
            );
        }
        other => panic!("the 33rd socket was not refused: {other:?}"),
    }
    let alice = fixture.token("alice", &["acme"]).await;
    let _alice = open_with_query(&fixture, &alice).await;
    // 32 of mallory's and alice's one: the refused CONNECT left no record.
    wait_for_table_len(&endpoint, &table, 33).await;
    // A closed socket gives its user a slot back.
    open.pop().unwrap().close(None).await.unwrap();
    open_when_a_slot_frees(&ws_url(&fixture, &format!("?idToken={mallory}"))).await;
}

/// Opens a socket at `url`, retrying while it is refused for want of a slot
/// (503), until one comes back (at most 10 s).
async fn open_when_a_slot_frees(url: &str) -> Socket {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio_tungstenite::connect_async(url).await {
            Ok((socket, _)) => return socket,
            Err(WsError::Http(response)) if response.status() == 503 => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the slot never came back"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(other) => panic!("{other}"),
        }
    }
}

async fn wait_for_table_len(endpoint: &str, table: &str, expected: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let stored = scan(endpoint, table).await.len();
        if stored == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{stored} records, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Over 128 KiB (API Gateway's frame limit) a post to a socket and a
/// delivery answer 413 and send nothing: a marker posted after them is the
/// socket's next message; exactly 128 KiB goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_over_128_kib_answer_413_and_reach_no_socket() {
    let endpoint = dynalite_endpoint();
    let table = unique_table("ws-413");
    create_table(&endpoint, &table);
    let fixture = Fixture::start(&endpoint, &table, &[]);
    let token = fixture.token("judy", &["acme"]).await;
    let mut socket = open_with_query(&fixture, &token).await;
    let id = connections_of(&endpoint, &table, "acme").await.remove(0);
    let over = "o".repeat(128 * 1024 + 1);
    for path in [
        format!("/@connections/{id}"),
        "/integrations/acme/events".into(),
    ] {
        let (status, body) = post(&fixture, &path, &over).await;
        assert_eq!(status, 413, "POST {path}: {body}");
    }
    assert_eq!(
        post(&fixture, &format!("/@connections/{id}"), "marker")
            .await
            .0,
        200
    );
    assert_eq!(
        next_text(&mut socket, Duration::from_secs(10))
            .await
            .as_deref(),
        Some("marker"),
        "the first message after the refused ones"
    );
    let max = "m".repeat(128 * 1024);
    assert_eq!(
        post(&fixture, &format!("/@connections/{id}"), &max).await.0,
        200
    );
    let received = next_text(&mut socket, Duration::from_secs(10)).await;
    assert_eq!(received.map(|m| m.len()), Some(max.len()));
}

/// A Management API that refuses every post (403, which is never retried).
async fn forbidding_management_api() -> (String, std::sync::Arc<std::sync::atomic::AtomicU32>) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    let posts = Arc::new(AtomicU32::new(0));
    let counted = posts.clone();
    let app = axum::Router::new().fallback(move || {
        let counted = counted.clone();
        async move {
            counted.fetch_add(1, Ordering::SeqCst);
            (
                axum::http::StatusCode::FORBIDDEN,
                [("content-type", "application/json")],
                r#"{"message":"Forbidden"}"#,
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, posts)
}

/// `deliver`'s exit codes: 1 when some connection could not be reached
/// (the counts still printed), 2 for a usage error and for a delivery that
/// cannot start (no such table).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliver_exits_1_when_posts_fail_and_2_when_it_cannot_start() {
    let endpoint = dynalite_endpoint();
    let table = unique_table("deliver-exit");
    create_table(&endpoint, &table);
    let dynamo = client(&endpoint);
    for id in ["c1", "c2"] {
        put_record(&dynamo, &table, "acme", id, unix_now() + 3600).await;
    }
    let (api, posts) = forbidding_management_api().await;
    let run = |table: String, args: &'static [&'static str]| {
        let (endpoint, api) = (endpoint.clone(), api.clone());
        tokio::task::spawn_blocking(move || {
            let mut child = std::process::Command::new(binary_path())
                .envs(dynamodb_env(&endpoint, &table))
                .env("WEBSOCKET_API_ENDPOINT", api)
                .arg("deliver")
                .args(args)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write as _;
            // A child that exits before reading (a usage error) has closed
            // its end: the write then fails with a broken pipe, harmlessly.
            let written = child.stdin.take().unwrap().write_all(b"{\"n\":1}");
            if let Err(error) = written {
                assert_eq!(error.kind(), std::io::ErrorKind::BrokenPipe, "{error}");
            }
            child.wait_with_output().unwrap()
        })
    };
    let output = run(table.clone(), &["--integration", "acme"])
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        r#"{"delivered":0,"gone":0,"failed":2,"expired":0,"expiredAuth":0}"#
    );
    assert_eq!(
        posts.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "403 is not retried"
    );

    let output = run(table.clone(), &[]).await.unwrap();
    assert_eq!(
        output.status.code(),
        Some(2),
        "no --integration: {output:?}"
    );
    let output = run(unique_table("no-such-table"), &["--integration", "acme"])
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "no table: {output:?}");
    assert!(output.stdout.is_empty(), "{output:?}");
    assert_eq!(posts.load(std::sync::atomic::Ordering::SeqCst), 2);
}

/// API Gateway answers 410 also while a connection's `$connect` still runs
/// (its records are already written). A delivery through the Management API
/// (`WEBSOCKET_API_ENDPOINT`) that meets a 410 for a connection made within
/// the CONNECT timeout keeps its records and counts it failed; an older
/// one's records go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_racing_a_connect_keeps_the_new_connections_records() {
    let endpoint = dynalite_endpoint();
    let table = unique_table("ws-race");
    create_table(&endpoint, &table);
    let fixture = Fixture::start(&endpoint, &table, &[]);
    let dynamo = client(&endpoint);
    let just_now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    put_record_connected_at(
        &dynamo,
        &table,
        "acme",
        "connecting",
        unix_now() + 3600,
        &just_now,
    )
    .await;
    put_record(&dynamo, &table, "acme", "long-gone", unix_now() + 3600).await;
    let (code, report) = deliver_exit(&fixture, &endpoint, &table, "acme", "{\"n\":1}");
    assert_eq!(
        report,
        serde_json::json!({"delivered": 0, "gone": 1, "failed": 1, "expired": 0, "expiredAuth": 0})
    );
    assert_eq!(code, Some(1), "a failed connection is exit 1");
    let left: Vec<String> = scan(&endpoint, &table)
        .await
        .into_iter()
        .map(|(_, connection, _, _)| connection)
        .collect();
    assert_eq!(left, ["connecting"]);
}

/// The `exp` claim of a token (its payload, unverified).
fn exp_of(token: &str) -> u64 {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).expect("a JWS");
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    claims["exp"].as_u64().expect("exp")
}

/// Waits until the host's clock (seconds since the epoch) reaches `second`.
async fn wait_until_second(second: u64) {
    while unix_now() < second {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A token that expires in 3 s, a grace of 2 s: a delivery before `exp`
/// arrives; one after it does not and is counted `expiredAuth`; the socket
/// hears `refresh_required` before `exp`, and after the grace it is closed
/// with 4001 `token expired` and its records are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_ends_delivery_and_after_the_grace_its_socket() {
    let endpoint = dynalite_endpoint();
    let table = unique_table("ws-auth-expiry");
    create_table(&endpoint, &table);
    let fixture = Fixture::start(&endpoint, &table, &[("AUTH_GRACE_SECONDS", "2")]);
    let url = fixture.server.url("/dev/token?sub=alice&groups=acme&ttl=3");
    let (status, token) = crate::support::get(&url).await;
    assert_eq!(status, 200, "{token}");
    let exp = exp_of(&token);
    let mut socket = open_with_query(&fixture, &token).await;
    let records = scan(&endpoint, &table).await;
    assert_eq!(records.len(), 1, "{records:?}");
    let auth_expires_at = client(&endpoint)
        .scan()
        .table_name(&table)
        .send()
        .await
        .unwrap()
        .items()[0]
        .get("authExpiresAt")
        .cloned();
    assert_eq!(
        auth_expires_at,
        Some(AttributeValue::N(exp.to_string())),
        "the record carries the token's exp"
    );

    // Before exp: delivered.
    assert!(
        unix_now() < exp,
        "the token expired before the first delivery"
    );
    let report = deliver(&fixture, &endpoint, &table, "acme", r#"{"n":1}"#);
    assert_eq!(report["delivered"], 1, "{report}");
    assert_eq!(report["expiredAuth"], 0, "{report}");
    let mut notice = None;
    let mut first = None;
    while first.is_none() {
        let text = next_text(&mut socket, Duration::from_secs(5))
            .await
            .expect("the first delivery");
        if text.contains("refresh_required") {
            notice = Some(text);
        } else {
            first = Some(text);
        }
    }
    assert_eq!(first.as_deref(), Some(r#"{"n":1}"#));

    // After exp: skipped, counted, the records kept for the grace window.
    wait_until_second(exp).await;
    let report = deliver(&fixture, &endpoint, &table, "acme", r#"{"n":2}"#);
    assert_eq!(
        report,
        serde_json::json!({"delivered": 0, "gone": 0, "failed": 0, "expired": 0, "expiredAuth": 1})
    );
    assert_eq!(
        scan(&endpoint, &table).await.len(),
        1,
        "kept during the grace"
    );

    // The notice came before exp, with the seconds left; then, after the
    // grace, the close; the delivery after exp never arrived.
    let (code, reason) = loop {
        match tokio::time::timeout(Duration::from_secs(10), socket.next()).await {
            Err(_) => panic!("no close within 10 s"),
            Ok(Some(Ok(Message::Text(text)))) => {
                assert!(
                    text.contains("refresh_required") && notice.is_none(),
                    "only one notice and no delivery after exp: {text}"
                );
                notice = Some(text.to_string());
            }
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            Ok(Some(Ok(Message::Close(Some(frame))))) => {
                break (u16::from(frame.code), frame.reason.to_string());
            }
            other => panic!("unexpected: {other:?}"),
        }
    };
    assert!(
        unix_now() >= exp + 2,
        "closed only after the grace: at {} for exp {exp}",
        unix_now()
    );
    assert_eq!((code, reason.as_str()), (4001, "token expired"));
    let notice: serde_json::Value = serde_json::from_str(&notice.expect("a notice")).unwrap();
    assert_eq!(notice["type"], "refresh_required");
    let expires_in = notice["expiresIn"].as_u64().expect("expiresIn seconds");
    assert!(expires_in <= 2, "half of a 3 s token's life: {notice}");
    wait_for_table(&endpoint, &table, &BTreeSet::new()).await;
}

/// A dev token of `sub` in `groups`, valid for `ttl` seconds.
async fn dev_token(fixture: &Fixture, sub: &str, groups: &str, ttl: u64) -> String {
    let url = fixture
        .server
        .url(&format!("/dev/token?sub={sub}&groups={groups}&ttl={ttl}"));
    let (status, token) = crate::support::get(&url).await;
    assert_eq!(status, 200, "{token}");
    token
}

/// The next text frame that is not a `refresh_required` notice.
async fn next_answer(socket: &mut Socket, wait: Duration) -> Option<String> {
    loop {
        let text = next_text(socket, wait).await?;
        if !text.contains("refresh_required") {
            return Some(text);
        }
    }
}

async fn send_refresh(socket: &mut Socket, token: &str) {
    let frame = serde_json::json!({"action": "refresh", "idToken": token}).to_string();
    socket.send(Message::Text(frame.into())).await.unwrap();
}

/// Sends a refresh and returns the server's answer to it, parsed.
async fn refresh(socket: &mut Socket, token: &str) -> serde_json::Value {
    send_refresh(socket, token).await;
    let answer = next_answer(socket, Duration::from_secs(5))
        .await
        .expect("an answer to the refresh");
    serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{e}: {answer}"))
}

/// The close frame, skipping notices (and nothing else).
async fn closed_with(socket: &mut Socket, wait: Duration) -> (u16, String) {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, socket.next()).await {
            Err(_) => panic!("no close frame within {wait:?}"),
            Ok(Some(Ok(Message::Close(Some(frame))))) => {
                return (u16::from(frame.code), frame.reason.to_string());
            }
            Ok(Some(Ok(Message::Text(text)))) if text.contains("refresh_required") => {}
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

/// A refresh before `exp` with a token that drops group `b` and adds `c`:
/// the answer lists them, the records follow, and the socket keeps
/// receiving past the first token's `exp` and grace, but not `b`'s events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_moves_the_expiry_and_brings_the_groups_in_line() {
    let endpoint = dynalite_endpoint();
    let table = unique_table("ws-refresh");
    create_table(&endpoint, &table);
    let fixture = Fixture::start(&endpoint, &table, &[("AUTH_GRACE_SECONDS", "2")]);
    let first = dev_token(&fixture, "alice", "a,b", 3).await;
    let first_exp = exp_of(&first);
    let mut socket = open_with_query(&fixture, &first).await;
    let id = connections_of(&endpoint, &table, "a").await.remove(0);

    let second = dev_token(&fixture, "alice", "a,c", 600).await;
    let answer = refresh(&mut socket, &second).await;
    assert_eq!(
        answer,
        serde_json::json!({"type": "refreshed", "expiresAt": exp_of(&second), "added": ["c"], "removed": ["b"]})
    );
    let expected: BTreeSet<(String, String)> = [("a", &id), ("c", &id)]
        .into_iter()
        .map(|(g, c)| (g.to_owned(), c.clone()))
        .collect();
    wait_for_table(&endpoint, &table, &expected).await;

    // Past the first token's exp and grace: still open, still receiving.
    wait_until_second(first_exp + 3).await;
    let report = deliver(&fixture, &endpoint, &table, "a", r#"{"n":"a"}"#);
    assert_eq!(report["delivered"], 1, "{report}");
    assert_eq!(
        next_answer(&mut socket, Duration::from_secs(5))
            .await
            .as_deref(),
        Some(r#"{"n":"a"}"#)
    );
    let report = deliver(&fixture, &endpoint, &table, "b", r#"{"n":"b"}"#);
    assert_eq!(report["delivered"], 0, "{report}");
    let report = deliver(&fixture, &endpoint, &table, "c", r#"{"n":"c"}"#);
    assert_eq!(report["delivered"], 1, "{report}");
    assert_eq!(
        next_answer(&mut socket, Duration::from_secs(5))
            .await
            .as_deref(),
        Some(r#"{"n":"c"}"#),
        "b's event never arrives"
    );
    socket.close(None).await.unwrap();
    wait_for_table(&endpoint, &table, &BTreeSet::new()).await;
}

/// Refused refreshes close the socket with the policy's code, leave no
/// records and put nothing of the token in the logs; a second refresh
/// within 10 s closes 4029.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_refreshes_close_with_their_code_and_leave_no_records() {
    let endpoint = dynalite_endpoint();
    let table = unique_table("ws-refresh-refused");
    create_table(&endpoint, &table);
    let fixture = Fixture::start(&endpoint, &table, &[]);
    let older = dev_token(&fixture, "alice", "acme", 600).await;
    let short = dev_token(&fixture, "alice", "acme", 1).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let current = dev_token(&fixture, "alice", "acme", 600).await;
    assert_ne!(older, current);
    let other_user = dev_token(&fixture, "bob", "acme", 600).await;
    let mut forged = current.clone();
    forged.truncate(forged.len() - 6);
    forged.push_str("AAAAAA");
    // `short` has expired by now (dev mode has no leeway).
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let cases: [(&str, &str, u16, &str); 5] = [
        ("another user", &other_user, 4003, "forbidden"),
        ("the same token", &current, 4001, "token invalid"),
        ("an older token", &older, 4001, "token invalid"),
        ("a forged token", &forged, 4001, "token invalid"),
        ("an expired token", &short, 4001, "token expired"),
    ];
    for (what, token, code, reason) in cases {
        let mut socket = open_with_query(&fixture, &current).await;
        wait_for_table_len(&endpoint, &table, 1).await;
        send_refresh(&mut socket, token).await;
        assert_eq!(
            closed_with(&mut socket, Duration::from_secs(10)).await,
            (code, reason.to_owned()),
            "{what}"
        );
        wait_for_table(&endpoint, &table, &BTreeSet::new()).await;
    }

    // Rate: the first refresh is answered, a second within 10 s closes 4029.
    let mut socket = open_with_query(&fixture, &current).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let newer = dev_token(&fixture, "alice", "acme", 600).await;
    let answer = refresh(&mut socket, &newer).await;
    assert_eq!(answer["type"], "refreshed", "{answer}");
    send_refresh(&mut socket, &newer).await;
    assert_eq!(
        closed_with(&mut socket, Duration::from_secs(10)).await,
        (4029, "rate limited".to_owned())
    );
    wait_for_table(&endpoint, &table, &BTreeSet::new()).await;

    // A refresh frame over 16 KiB closes 1009.
    let mut socket = open_with_query(&fixture, &current).await;
    send_refresh(&mut socket, &"x".repeat(16 * 1024)).await;
    assert_eq!(
        closed_with(&mut socket, Duration::from_secs(10)).await,
        (1009, "message too big".to_owned())
    );
    wait_for_table(&endpoint, &table, &BTreeSet::new()).await;

    let logs = fixture.server.logs();
    for token in [&older, &current, &other_user, &forged, &short, &newer] {
        for segment in token.split('.').filter(|s| s.len() > 8) {
            assert!(!logs.contains(segment), "a token segment is in the logs");
        }
    }
    for class in [
        "another sub",
        "the current token again",
        "older than the current token",
        "token bad-signature",
        "token expired",
    ] {
        assert!(
            logs.contains(&format!("refresh refused: {class}")),
            "{class} not logged"
        );
    }
}

/// The (integration, connection) keys of `connection` for `integrations`,
/// plus `others`.
fn keys_with(
    others: &BTreeSet<(String, String)>,
    connection: &str,
    integrations: &[&str],
) -> BTreeSet<(String, String)> {
    let mut keys = others.clone();
    keys.extend(
        integrations
            .iter()
            .map(|i| (i.to_string(), connection.to_owned())),
    );
    keys
}

/// A socket's close deletes the records its own calls wrote, by their
/// keys: no GSI Query (counted at a proxy in front of dynalite), exactly
/// the current records after a refresh that dropped and added groups, and
/// also while the index lags behind fresh writes (every Query on it
/// answered empty, as a GSI may on DynamoDB), when a Query would find
/// nothing. HTTP `/disconnect` (API Gateway's way, with no socket) keeps
/// the Query. Other connections' records stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sockets_close_deletes_its_records_by_their_keys_without_a_query() {
    let endpoint = dynalite_endpoint();
    let table = unique_table("ws-close-keys");
    create_table(&endpoint, &table);
    let proxy = FaultProxy::start(&endpoint).await;
    let fixture = Fixture::start(&proxy.endpoint, &table, &[]);
    let direct = client(&endpoint);
    put_record(&direct, &table, "a", "bystander", unix_now() + 600).await;
    let others = keys_with(&BTreeSet::new(), "bystander", &["a"]);
    // (A CONNECT reads the user's revocation with a Query of the table.)
    let queries = || proxy.requests(INDEX_QUERY);

    // Three groups: the close deletes all three, without a Query.
    let token = dev_token(&fixture, "alice", "a,b,c", 600).await;
    let mut socket = open_with_query(&fixture, &token).await;
    let id = connections_of(&endpoint, &table, "b").await.remove(0);
    assert_eq!(
        keys(&scan(&endpoint, &table).await),
        keys_with(&others, &id, &["a", "b", "c"])
    );
    socket.close(None).await.unwrap();
    wait_for_table(&endpoint, &table, &others).await;
    assert_eq!(queries(), 0, "the socket's close queried the index");

    // A refresh to a, d (b and c dropped, d added): the close deletes
    // exactly a and d.
    let mut socket = open_with_query(&fixture, &token).await;
    let id = connections_of(&endpoint, &table, "b").await.remove(0);
    let second = dev_token(&fixture, "alice", "a,d", 600).await;
    let answer = refresh(&mut socket, &second).await;
    let names = |field: &str| -> BTreeSet<String> {
        answer[field]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(answer["type"], "refreshed", "{answer}");
    assert_eq!(names("added"), BTreeSet::from(["d".to_owned()]));
    assert_eq!(
        names("removed"),
        BTreeSet::from(["b".to_owned(), "c".to_owned()])
    );
    wait_for_table(&endpoint, &table, &keys_with(&others, &id, &["a", "d"])).await;
    socket.close(None).await.unwrap();
    wait_for_table(&endpoint, &table, &others).await;
    assert_eq!(queries(), 0, "the refresh or the close queried the index");

    // The index lags: the socket's close still deletes its records; an
    // HTTP CONNECT's /disconnect asks the index and finds none until it
    // catches up.
    proxy.lag_index(true);
    let mut socket = open_with_query(&fixture, &token).await;
    let id = connections_of(&endpoint, &table, "b").await.remove(0);
    assert_eq!(fixture.connect(&token, "http-1").await.0, 200);
    let with_http = keys_with(&others, "http-1", &["a", "b", "c"]);
    assert_eq!(
        keys(&scan(&endpoint, &table).await),
        keys_with(&with_http, &id, &["a", "b", "c"])
    );
    socket.close(None).await.unwrap();
    wait_for_table(&endpoint, &table, &with_http).await;
    assert_eq!(queries(), 0);
    assert_eq!(
        fixture.disconnect("http-1").await,
        (200, "No records to disconnect.".into())
    );
    assert_eq!(queries(), 1, "HTTP /disconnect keeps the Query");
    proxy.lag_index(false);
    assert_eq!(
        fixture.disconnect("http-1").await,
        (200, "Disconnected. Removed 3 records.".into())
    );
    assert_eq!(queries(), 2);
    wait_for_table(&endpoint, &table, &others).await;
}

/// Messages queued for a socket while it is busy (here its refresh waits
/// for the store) go out together once it is free: whole, in order, and
/// leaving its send queue empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_queued_behind_a_busy_socket_go_out_whole_and_in_order() {
    // 120 messages of 1 KiB (plus the queue's overhead each) fill the
    // smallest send queue (128 KiB + 64) almost to the byte.
    const QUEUED: usize = 120;
    let endpoint = dynalite_endpoint();
    let table = unique_table("ws-queued");
    create_table(&endpoint, &table);
    let proxy = FaultProxy::start(&endpoint).await;
    let fixture = Fixture::start(
        &proxy.endpoint,
        &table,
        &[("WS_SEND_QUEUE_BYTES", "131136")],
    );
    let token = fixture.token("hana", &["queued"]).await;
    let mut socket = open_with_query(&fixture, &token).await;
    let id = connections_of(&endpoint, &table, "queued").await.remove(0);
    let path = format!("/@connections/{id}");
    let message = |round: usize, n: usize| format!("{round}-{n:03} {}", "x".repeat(1016));

    // The refresh's revocation read is answered only once the messages
    // are queued.
    let newer = dev_token(&fixture, "hana", "queued", 900).await;
    proxy.hold_answers("BatchGetItem", true);
    let reads = proxy.requests("BatchGetItem");
    send_refresh(&mut socket, &newer).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while proxy.requests("BatchGetItem") == reads {
        assert!(
            std::time::Instant::now() < deadline,
            "the refresh read no revocation"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for n in 0..QUEUED {
        assert_eq!(
            post(&fixture, &path, &message(0, n)).await.0,
            200,
            "message {n}"
        );
    }
    proxy.hold_answers("BatchGetItem", false);
    let answer = next_answer(&mut socket, Duration::from_secs(5))
        .await
        .expect("an answer to the refresh");
    assert!(answer.contains("\"refreshed\""), "{answer}");
    for n in 0..QUEUED {
        assert_eq!(
            next_text(&mut socket, Duration::from_secs(5)).await,
            Some(message(0, n))
        );
    }

    // The queue is empty again: a message as large as the whole queue
    // (128 KiB, plus the overhead) fits.
    let largest = "y".repeat(128 * 1024);
    assert_eq!(post(&fixture, &path, &largest).await.0, 200);
    assert_eq!(
        next_text(&mut socket, Duration::from_secs(5)).await,
        Some(largest)
    );
}
