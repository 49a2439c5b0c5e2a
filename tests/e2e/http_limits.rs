//! The accept loop's limits against slow and numerous peers (issue:
//! production surface, slowloris): a request head must arrive within
//! HTTP_HEADER_TIMEOUT, open connections are capped by MAX_CONNECTIONS and
//! by the open-file limit, and upgraded WebSockets count against the cap.

use std::time::{Duration, Instant};

use futures_util::SinkExt;
use gitgazer_ws_tests::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::support::get;

/// A request head cut off before its blank line.
const HALF_SENT: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: gitgazer-ws\r\nX-Slow: ";

fn host_port(url: &str) -> &str {
    url.strip_prefix("http://").expect("an http:// URL")
}

async fn half_sent(address: &str, head: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(address).await.expect("connecting");
    stream
        .write_all(head)
        .await
        .expect("sending half a request");
    stream
}

/// Whether the server closed `stream` (end of stream or reset) by `deadline`.
async fn closed_by(stream: &mut TcpStream, deadline: Instant) -> bool {
    let mut buffer = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// A plain `GET /healthz` on a fresh connection, bounded by `wait`.
async fn healthz(server: &Server, wait: Duration) -> Result<u16, String> {
    let client = reqwest::Client::builder()
        .timeout(wait)
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let response = client
        .get(server.url("/healthz"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    Ok(response.status().as_u16())
}

#[tokio::test]
async fn half_sent_requests_and_idle_keep_alives_are_closed_after_the_header_timeout() {
    let server = Server::start(&[("HTTP_HEADER_TIMEOUT", "1s")]);
    let public = host_port(&server.base_url).to_owned();
    let management = host_port(&server.management_url).to_owned();
    let started = Instant::now();
    let mut slow = Vec::new();
    for _ in 0..300 {
        slow.push(half_sent(&public, HALF_SENT).await);
    }
    // A WebSocket upgrade cut off the same way, and one on the management port.
    slow.push(
        half_sent(
            &public,
            b"GET /ws?idToken=x HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
        )
        .await,
    );
    slow.push(half_sent(&management, b"GET /status HTTP/1.1\r\nHost: h\r\n").await);
    // A keep-alive connection that asks once and then sits idle.
    let mut idle = half_sent(&public, b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n").await;
    let mut answer = [0u8; 512];
    let read = idle.read(&mut answer).await.unwrap();
    assert!(
        answer[..read].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&answer[..read])
    );
    slow.push(idle);
    // A client that finishes its head in time (in a second write) is served.
    let mut prompt = half_sent(&public, HALF_SENT).await;
    prompt.write_all(b"1\r\n\r\n").await.unwrap();
    let read = prompt.read(&mut answer).await.unwrap();
    assert!(
        answer[..read].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&answer[..read])
    );
    // The server still answers while they hang.
    assert_eq!(healthz(&server, Duration::from_secs(5)).await, Ok(200));

    let deadline = started + Duration::from_secs(15);
    let mut open = 0;
    for stream in &mut slow {
        if !closed_by(stream, deadline).await {
            open += 1;
        }
    }
    assert_eq!(
        open,
        0,
        "of {} connections that never finished a request head, {open} were still open after {:?}",
        slow.len(),
        started.elapsed()
    );
}

#[tokio::test]
async fn at_an_open_file_limit_of_1024_a_flood_of_half_sent_requests_does_not_lock_out_healthz() {
    let server = Server::start_wrapped(
        &["prlimit", "--nofile=1024:1024", "--"],
        &[("HTTP_HEADER_TIMEOUT", "2s")],
        &[],
    );
    let public = host_port(&server.base_url).to_owned();
    let mut flood = Vec::new();
    for _ in 0..1100 {
        flood.push(half_sent(&public, HALF_SENT).await);
    }
    let asked = Instant::now();
    let status = healthz(&server, Duration::from_secs(30)).await;
    assert_eq!(
        status,
        Ok(200),
        "GET /healthz behind 1 100 half-sent requests, after {:?}",
        asked.elapsed()
    );
    eprintln!("/healthz answered {:?} after the flood", asked.elapsed());
    let logs = server.logs();
    assert!(
        logs.contains("the open-file limit leaves room for fewer connections")
            && logs.contains(r#""max_connections":640"#),
        "the cap is fitted to the open-file limit (1024 less 384 kept back), and says so:\n{logs}"
    );
    assert!(
        !logs.contains("accept failed"),
        "no accept ran out of files:\n{logs}"
    );
    drop(flood);
}

#[tokio::test]
async fn max_connections_counts_upgraded_websockets_and_new_peers_wait_for_a_slot() {
    let server = Server::start(&[("MAX_CONNECTIONS", "4"), ("HTTP_HEADER_TIMEOUT", "60s")]);
    let (status, token) = get(&server.url("/dev/token?groups=acme")).await;
    assert_eq!(status, 200, "{token}");
    let ws = server
        .url(&format!("/ws?idToken={token}"))
        .replacen("http://", "ws://", 1);
    let mut sockets = Vec::new();
    for _ in 0..3 {
        let (socket, _) = tokio_tungstenite::connect_async(&ws)
            .await
            .expect("upgrade");
        sockets.push(socket);
    }
    let stalled = half_sent(host_port(&server.base_url), HALF_SENT).await;

    // Three WebSockets and one half-sent request fill the four slots.
    let waiting = tokio::spawn({
        let url = server.url("/healthz");
        async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap();
            client.get(url).send().await.map(|r| r.status().as_u16())
        }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !waiting.is_finished(),
        "a fifth connection was served while four were open: {:?}",
        waiting.await
    );
    drop(stalled);
    let status = waiting.await.unwrap().expect("served once a slot frees");
    assert_eq!(status, 200);
    // The sockets held their slots and still work.
    for socket in &mut sockets {
        socket
            .send(Message::Ping(b"still here".to_vec().into()))
            .await
            .expect("the socket is still open");
    }
}
