//! Load generator: CONNECT+DISCONNECT pairs over HTTP against the dev server
//! (`gitgazer-ws serve`, embedded store, dev key) on loopback. Each client
//! loops: `GET /connect?idToken=…&connectionId=<new>` then
//! `GET /disconnect?connectionId=<same>`, both must answer 200. Prints
//! pairs/s and latency percentiles (per pair and per request). A benchmark,
//! not a test (figures in BENCHMARKS.md):
//!
//!     scripts/build
//!     cargo run --release -p gitgazer-ws-tests --example load_pairs -- [CLIENTS] [SECONDS]
//!
//! Defaults: 16 clients, 10 s (after 2 s of warm-up). The generator shares
//! the machine with the server, as it would on a developer's laptop.
//!
//! `LOAD_PAIRS_DYNAMODB=1` keeps the records in a fresh table on the
//! DynamoDB endpoint in `AWS_ENDPOINT_URL_DYNAMODB` (dynalite: `scripts/dynalite
//! start && eval "$(scripts/dynalite env)"`) instead of the embedded store:
//! a CONNECT is one BatchWriteItem, a DISCONNECT one GSI Query and one
//! BatchWriteItem.
//!
//! `LOAD_PAIRS_SOCKETS=1` makes each pair a self-hosted socket's lifetime
//! instead: open `/ws?idToken=…` (the CONNECT, then the upgrade), send a
//! close frame and wait until the server drops the TCP connection, which it
//! does once the socket's DISCONNECT has run. Each socket is a new TCP
//! connection, as a browser's would be.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use gitgazer_ws_tests::Server;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let clients: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(16);
    let seconds: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(10);
    let sockets = std::env::var_os("LOAD_PAIRS_SOCKETS").is_some();

    // Default settings, logging included (info).
    let server = if std::env::var_os("LOAD_PAIRS_DYNAMODB").is_some() {
        let endpoint = gitgazer_ws_tests::dynalite_endpoint();
        let table = gitgazer_ws_tests::unique_table("load-pairs");
        gitgazer_ws_tests::create_table(&endpoint, &table);
        Server::start_env(&gitgazer_ws_tests::dynamodb_env(&endpoint, &table))
    } else {
        Server::start(&[])
    };
    let address = server.base_url.trim_start_matches("http://").to_owned();
    // A Cognito-shaped dev token with three groups: three records a CONNECT.
    let (status, token) = get(
        &mut connect(&address).await,
        "/dev/token?groups=integration-1,integration-2,integration-3",
    )
    .await;
    assert_eq!(status, 200, "{token}");

    let warm_up = Duration::from_secs(2);
    let started = Instant::now();
    let measure_from = started + warm_up;
    let measure_until = measure_from + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let (token, address) = (token.clone(), address.clone());
            tokio::spawn(async move {
                let mut http = connect(&address).await;
                let mut samples = Samples::default();
                for pair in 0u64.. {
                    let now = Instant::now();
                    if now >= measure_until {
                        break;
                    }
                    let (connect, disconnect) = if sockets {
                        socket_lifetime(&address, &token).await
                    } else {
                        let connection_id = format!("load-{client}-{pair}");
                        let connect = timed_get(
                            &mut http,
                            &format!("/connect?idToken={token}&connectionId={connection_id}"),
                        )
                        .await;
                        let disconnect = timed_get(
                            &mut http,
                            &format!("/disconnect?connectionId={connection_id}"),
                        )
                        .await;
                        (connect, disconnect)
                    };
                    if now >= measure_from {
                        samples.connect.push(connect);
                        samples.disconnect.push(disconnect);
                        samples.pair.push(connect + disconnect);
                    }
                }
                samples
            })
        })
        .collect();
    // The server's CPU over the measured window: less sensitive to a busy
    // machine than pairs/s (the neighbours take wall time, not our CPU).
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu_from = server.cpu_seconds();
    tokio::time::sleep_until(measure_until.into()).await;
    let cpu_used = server.cpu_seconds() - cpu_from;
    let mut all = Samples::default();
    for task in tasks {
        let samples = task.await.unwrap();
        all.connect.extend(samples.connect);
        all.disconnect.extend(samples.disconnect);
        all.pair.extend(samples.pair);
    }
    let elapsed = measure_until
        .saturating_duration_since(measure_from)
        .as_secs_f64();
    let what = if sockets { "socket lifetime" } else { "pair" };
    println!(
        "{clients} clients, {seconds} s: {} {what}s, {:.0}/s; server CPU {:.0} µs per {what}; \
         server peak RSS {:.1} MiB",
        all.pair.len(),
        all.pair.len() as f64 / elapsed,
        cpu_used * 1e6 / all.pair.len().max(1) as f64,
        server.peak_rss_kib() as f64 / 1024.0
    );
    for (name, samples) in [
        (what, &mut all.pair),
        ("CONNECT", &mut all.connect),
        ("DISCONNECT", &mut all.disconnect),
    ] {
        samples.sort();
        let at = |q: f64| {
            let index = ((samples.len() as f64 * q) as usize).min(samples.len() - 1);
            samples[index].as_secs_f64() * 1000.0
        };
        println!(
            "{name:>10} latency: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
            at(0.50),
            at(0.90),
            at(0.99),
            at(0.999),
            at(1.0)
        );
    }
}

#[derive(Default)]
struct Samples {
    connect: Vec<Duration>,
    disconnect: Vec<Duration>,
    pair: Vec<Duration>,
}

/// A self-hosted socket's lifetime: the upgrade (CONNECT) and the close
/// until the server drops the connection (after the DISCONNECT).
async fn socket_lifetime(address: &str, token: &str) -> (Duration, Duration) {
    use tokio::io::AsyncReadExt as _;
    let started = Instant::now();
    let (mut socket, response) =
        tokio_tungstenite::connect_async(format!("ws://{address}/ws?idToken={token}"))
            .await
            .expect("upgrade");
    assert_eq!(response.status(), 101);
    let open = started.elapsed();
    let started = Instant::now();
    socket.close(None).await.expect("close frame sent");
    while let Some(Ok(_)) = socket.next().await {}
    let mut tcp = socket.into_inner();
    let mut rest = [0u8; 64];
    while matches!(tcp.read(&mut rest).await, Ok(n) if n > 0) {}
    (open, started.elapsed())
}

/// A keep-alive HTTP/1.1 connection to the server.
async fn connect(address: &str) -> SendRequest<Empty<Bytes>> {
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender
}

/// GET `path`: the status and the body.
async fn get(http: &mut SendRequest<Empty<Bytes>>, path: &str) -> (u16, String) {
    http.ready().await.expect("the connection stays open");
    let request = hyper::Request::get(path)
        .header("host", "127.0.0.1")
        .body(Empty::new())
        .unwrap();
    let response = http
        .send_request(request)
        .await
        .expect("the server answers");
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// One GET that must answer 200; its latency.
async fn timed_get(http: &mut SendRequest<Empty<Bytes>>, path: &str) -> Duration {
    let started = Instant::now();
    let (status, body) = get(http, path).await;
    assert_eq!(status, 200, "{body}");
    started.elapsed()
}
