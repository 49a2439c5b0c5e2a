//! Benchmark: fan-out of events to many self-hosted sockets, on one node or
//! spread over several nodes sharing one table. A benchmark, not a test
//! (figures in BENCHMARKS.md):
//!
//!     scripts/dynalite start && eval "$(scripts/dynalite env)"
//!     cargo run --release -p gitgazer-ws-tests --example fanout -- [NODES] [SOCKETS] [EVENTS]
//!
//! Defaults: 3 nodes, 3 000 sockets, 10 events. The nodes run in Cognito
//! mode (one key set for all) on one dynalite table; the sockets connect
//! round robin, one group (`acme`). Each event is 1 KiB, posted to node 1's
//! `POST /integrations/acme/events`; the time to the last receipt is from
//! just before the post to the moment the last socket has it (p50 and max
//! over the events). Then `EVENTS` more are posted back to back (each post
//! waits for the previous one's answer, not for its receipts): socket
//! messages per second from the first post to the last receipt. Then
//! 5 × `EVENTS` more with `EVENTS` in flight at any time (sustained; those
//! arriving together share reads of the records).
//! The load generator shares the machine (2 cores here) with the nodes and
//! dynalite.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use gitgazer_ws::dev::DevSigner;
use gitgazer_ws_tests::jwks_server::{JwksMode, JwksServer};
use gitgazer_ws_tests::{Server, create_table, dynalite_endpoint, dynamodb_env, unique_table};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

const REGION: &str = "eu-west-1";
const POOL: &str = "eu-west-1_Fanout1";
const CLIENT: &str = "fanout-client";

/// The clients' WebSocket settings: tungstenite's default read buffer
/// (128 KiB) is zero-filled before every read, so 10 000 clients would
/// spend more CPU on `memset` than on reading (the server reads with 4 KiB
/// for the same reason, edge/websocket.rs).
fn client_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(4096)
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let nodes: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(3);
    let sockets: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(3000);
    let events: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(10);
    // The benchmark's own open-file limit (the nodes raise theirs).
    let (_, hard) = rlimit::Resource::NOFILE.get().unwrap();
    rlimit::Resource::NOFILE.set(hard, hard).unwrap();

    let endpoint = dynalite_endpoint();
    let table = unique_table("fanout");
    create_table(&endpoint, &table);
    let signer = DevSigner::generate().unwrap();
    let jwks = JwksServer::start(JwksMode::Serve(signer.jwks().to_owned())).await;
    let per_node = sockets.div_ceil(nodes).to_string();
    let mut env: Vec<(String, String)> = dynamodb_env(&endpoint, &table)
        .into_iter()
        .filter(|(k, _)| k != "AWS_REGION")
        .collect();
    env.extend(
        [
            ("AWS_REGION", REGION),
            ("COGNITO_USER_POOL_ID", POOL),
            ("COGNITO_CLIENT_ID", CLIENT),
            ("COGNITO_JWKS_URL", jwks.url.as_str()),
            ("MAX_WEBSOCKETS", per_node.as_str()),
            ("MAX_WEBSOCKETS_PER_USER", per_node.as_str()),
            // The start-up lines the harness waits for, no per-request ones.
            (
                "RUST_LOG",
                "warn,gitgazer_ws=info,gitgazer_ws::service=warn,gitgazer_ws::edge=warn,\
                 gitgazer_ws::delivery=warn,gitgazer_ws::policy=warn,gitgazer_ws::store=warn",
            ),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    let servers: Vec<Server> = (0..nodes).map(|_| Server::start_env(&env)).collect();
    let now = gitgazer_ws_tests::unix_now();
    let token = signer.sign(&json!({
        "sub": "fanout", "iss": format!("https://cognito-idp.{REGION}.amazonaws.com/{POOL}"),
        "aud": CLIENT, "token_use": "id", "iat": now, "exp": now + 3600,
        "cognito:groups": ["acme"],
    }));

    // Every socket reports (event number, arrival) for each message.
    let (receipts_tx, mut receipts) = mpsc::unbounded_channel::<(usize, Instant)>();
    let opened = Instant::now();
    for chunk in (0..sockets).collect::<Vec<_>>().chunks(50) {
        let opening = chunk.iter().map(|&n| {
            let url = servers[n % nodes].base_url.replace("http://", "ws://") + "/ws";
            let mut request = url.into_client_request().unwrap();
            request.headers_mut().insert(
                "sec-websocket-protocol",
                HeaderValue::from_str(&format!("bearer, {token}")).unwrap(),
            );
            async move {
                tokio_tungstenite::connect_async_with_config(request, Some(client_config()), false)
                    .await
                    .expect("upgrade")
                    .0
            }
        });
        for mut socket in futures_util::future::join_all(opening).await {
            let receipts = receipts_tx.clone();
            tokio::spawn(async move {
                while let Some(Ok(message)) = socket.next().await {
                    if let Message::Text(text) = message {
                        let number = text[..text.find(' ').unwrap_or(0)].parse().unwrap_or(0);
                        let _ = receipts.send((number, Instant::now()));
                    }
                }
            });
        }
    }
    eprintln!(
        "{sockets} sockets on {nodes} node(s) open in {:.1} s",
        opened.elapsed().as_secs_f64()
    );

    let http = reqwest::Client::new();
    let deliver_url = servers[0].management("/integrations/acme/events");
    let post = move |number: usize| {
        let (http, url) = (http.clone(), deliver_url.clone());
        // 1 KiB: the event number, then padding.
        let mut body = format!("{number} ");
        body.push_str(&"x".repeat(1024 - body.len()));
        async move {
            let response = http.post(url).body(body).send().await.unwrap();
            let report: serde_json::Value =
                serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
            assert_eq!(report["delivered"], sockets, "{report}");
        }
    };

    // Latency: one event at a time, to the last receipt.
    let mut last_receipt = Vec::new();
    let mut answered = Vec::new();
    for number in 1..=events {
        let started = Instant::now();
        post(number).await;
        answered.push(started.elapsed());
        let mut got = 0;
        let mut last = started;
        while got < sockets {
            let (n, at) = tokio::time::timeout(Duration::from_secs(30), receipts.recv())
                .await
                .expect("every socket receives the event")
                .unwrap();
            assert_eq!(n, number);
            got += 1;
            last = last.max(at);
        }
        last_receipt.push(last - started);
    }
    last_receipt.sort();
    answered.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{nodes} node(s), {sockets} sockets: last receipt p50 {:.1} ms, max {:.1} ms over {events} events \
         (the delivery's HTTP answer: p50 {:.1} ms)",
        ms(last_receipt[events / 2]),
        ms(*last_receipt.last().unwrap()),
        ms(answered[events / 2]),
    );

    // How much of it was reading the records (every Query page), from
    // node 1's own store-call histogram.
    let (sum, count) = (
        records_of_metric(&servers[0], "gitgazer_ws_store_call_duration_seconds_sum").await,
        records_of_metric(&servers[0], "gitgazer_ws_store_call_duration_seconds_count").await,
    );
    println!(
        "{nodes} node(s), {sockets} sockets: reading the records took {:.1} ms on average ({count} reads)",
        sum * 1000.0 / count.max(1.0)
    );

    // Throughput: back to back.
    let started = Instant::now();
    let poster = tokio::spawn({
        let post = post.clone();
        async move {
            for number in events + 1..=2 * events {
                post(number).await;
            }
        }
    });
    let expected = sockets * events;
    let last = last_of(&mut receipts, expected, started).await;
    poster.await.unwrap();
    let seconds = (last - started).as_secs_f64();
    println!(
        "{nodes} node(s), {sockets} sockets: {expected} socket messages in {:.0} ms back to back = {:.0} messages/s",
        seconds * 1000.0,
        expected as f64 / seconds
    );

    // Throughput, sustained: 5 × EVENTS more, EVENTS of them in flight at
    // any time (the next posted as soon as one is answered), so events
    // keep arriving while records are read and sockets written; those
    // that arrive together share reads of the records.
    let total = 5 * events;
    let started = Instant::now();
    let poster = tokio::spawn(
        futures_util::stream::iter(2 * events + 1..=2 * events + total)
            .map(post)
            .buffer_unordered(events)
            .collect::<Vec<()>>(),
    );
    let expected = sockets * total;
    let last = last_of(&mut receipts, expected, started).await;
    poster.await.unwrap();
    let seconds = (last - started).as_secs_f64();
    println!(
        "{nodes} node(s), {sockets} sockets: {expected} socket messages in {:.0} ms with {events} events in flight \
         = {:.0} messages/s",
        seconds * 1000.0,
        expected as f64 / seconds,
    );
}

/// When the last of `expected` receipts arrived (`started` if none).
async fn last_of(
    receipts: &mut mpsc::UnboundedReceiver<(usize, Instant)>,
    expected: usize,
    started: Instant,
) -> Instant {
    let mut last = started;
    for _ in 0..expected {
        let (_, at) = tokio::time::timeout(Duration::from_secs(60), receipts.recv())
            .await
            .expect("every socket receives every event")
            .unwrap();
        last = last.max(at);
    }
    last
}

/// A store-call metric of a node's reads of an integration's records.
async fn records_of_metric(server: &Server, name: &str) -> f64 {
    reqwest::get(server.management("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .lines()
        .filter(|line| line.starts_with(name) && line.contains("operation=\"records_of\""))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
