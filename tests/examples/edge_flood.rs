//! The edge Worker's cost and what it spares the origin (docs/edge.md). A
//! benchmark, not a test (figures in BENCHMARKS.md):
//!
//!     scripts/build && npm ci --prefix edge/cloudflare
//!     cargo run --release -p gitgazer-ws-tests --example edge_flood -- [REQUESTS] [FLOOD]
//!
//! 1. Per-request time at the edge, over HTTP from a client on this machine
//!    (workerd's clocks stand still while a request computes, so the Worker
//!    cannot time itself): REQUESTS sequential requests (default 2000) of
//!    each kind, on a Worker with one reused instance and on one with a fresh
//!    instance per request (EDGE_POLICY_INSTANCE), the two alternated in
//!    batches. Kinds: `GET /` (404 before the policy: HTTP and the Worker
//!    alone), a malformed token (the policy refuses it before any key work:
//!    adds the instance and the call) and a group-less valid token (a whole
//!    RS256 verification, then 401).
//! 2. A flood of FLOOD upgrades with bad tokens (default 2000: forged,
//!    expired, group-less, unknown kid, malformed; 8 clients) at a
//!    Cognito-mode `gitgazer-ws serve`, straight and through the edge: the
//!    origin's `/ws` requests (its access log), its CONNECT decisions
//!    (`gitgazer_ws_connects_total`) and CPU seconds, the edge's CPU seconds
//!    and key-set fetches.

use std::time::{Duration, Instant};

use gitgazer_ws::dev::DevSigner;
use gitgazer_ws_tests::jwks_server::{JwksMode, JwksServer};
use gitgazer_ws_tests::workerd::Workerd;
use gitgazer_ws_tests::{Server, hand_made_token, unix_now};
use serde_json::{Value, json};

const REGION: &str = "eu-west-1";
const POOL: &str = "eu-west-1_EdgeBench";
const CLIENT: &str = "edge-bench-client";
const FLOOD_CLIENTS: usize = 8;
const BATCHES: usize = 10;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let requests: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(2000);
    let flood: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(2000);

    let signer = DevSigner::generate().unwrap();
    let origin_keys = JwksServer::start(JwksMode::Serve(signer.jwks().to_owned())).await;
    let edge_keys = JwksServer::start(JwksMode::Serve(signer.jwks().to_owned())).await;
    let server = Server::start(&[
        ("AWS_REGION", REGION),
        ("COGNITO_USER_POOL_ID", POOL),
        ("COGNITO_CLIENT_ID", CLIENT),
        ("COGNITO_JWKS_URL", &origin_keys.url),
        ("RUST_LOG", "info,gitgazer_ws::edge::http=debug"),
    ]);
    let origin_ws = server.url("/ws");
    let edge = |mode: &str| {
        Workerd::edge(&[
            ("AWS_REGION", REGION),
            ("COGNITO_USER_POOL_ID", POOL),
            ("COGNITO_CLIENT_ID", CLIENT),
            ("COGNITO_JWKS_URL", &edge_keys.url),
            ("ORIGIN_URL", &origin_ws.replacen("http://", "ws://", 1)),
            ("EDGE_POLICY_INSTANCE", mode),
        ])
    };
    let (reused, fresh) = (edge("reuse"), edge("fresh"));

    let groupless = signer.sign(&claims(None, unix_now() + 3600));
    let kinds: [(&str, &str, Option<&str>, u16); 3] = [
        ("GET / (404, no policy call)", "/", None, 404),
        ("malformed token (401)", "/ws", Some("not-a-token"), 401),
        (
            "group-less token (401)",
            "/ws",
            Some(groupless.as_str()),
            401,
        ),
    ];
    println!(
        "per-request time at the edge, {requests} sequential requests per row, one client \
         ({}):",
        workerd_version()
    );
    for (label, path, token, status) in kinds {
        let mut samples = [Vec::new(), Vec::new()];
        for batch in 0..BATCHES {
            for (i, worker) in [&reused, &fresh].into_iter().enumerate() {
                let client = reqwest::Client::new();
                let url = worker.url(path);
                // One untimed request: the connection, and the key set.
                one(&client, &url, token, status).await;
                let count = requests / BATCHES + usize::from(batch < requests % BATCHES);
                for _ in 0..count {
                    let started = Instant::now();
                    one(&client, &url, token, status).await;
                    samples[i].push(started.elapsed());
                }
            }
        }
        for (mode, samples) in ["reused instance", "fresh instance"]
            .iter()
            .zip(&mut samples)
        {
            samples.sort();
            println!(
                "  {label:<30} {mode:<16} median {:>7.3} ms  p90 {:>7.3} ms",
                ms(percentile(samples, 50)),
                ms(percentile(samples, 90))
            );
        }
    }

    let tokens = flood_tokens(&signer, flood);
    println!(
        "\na flood of {flood} upgrades with bad tokens ({FLOOD_CLIENTS} clients), \
         with and without the edge in front:"
    );
    for (label, url, worker) in [
        ("straight at the origin", origin_ws.clone(), None),
        ("through the edge", reused.url("/ws"), Some(&reused)),
    ] {
        let origin_before = (
            server.logged_requests("/ws"),
            server.connect_decisions().await,
        );
        let origin_cpu = server.cpu_seconds();
        let edge_cpu = worker.map(|w| cpu_seconds(w.pid()));
        let fetches = edge_keys.requests();
        let started = Instant::now();
        run_flood(&url, &tokens).await;
        let took = started.elapsed();
        // Log lines come through a pipe: give the last ones a moment.
        tokio::time::sleep(Duration::from_millis(300)).await;
        println!(
            "  {label:<24} {:>6.0} requests/s; origin: {} /ws requests, {} CONNECT decisions, \
             {:.2} CPU s; edge: {}, {} key set fetches",
            flood as f64 / took.as_secs_f64(),
            server.logged_requests("/ws") - origin_before.0,
            server.connect_decisions().await - origin_before.1,
            server.cpu_seconds() - origin_cpu,
            edge_cpu.map_or("-".to_owned(), |before| format!(
                "{:.2} CPU s",
                cpu_seconds(reused.pid()) - before
            )),
            edge_keys.requests() - fetches,
        );
    }
}

fn claims(groups: Option<&[&str]>, exp: u64) -> Value {
    let mut claims = json!({
        "sub": "bench", "iss": format!("https://cognito-idp.{REGION}.amazonaws.com/{POOL}"),
        "aud": CLIENT, "token_use": "id", "iat": unix_now() - 60, "exp": exp,
    });
    if let Some(groups) = groups {
        claims["cognito:groups"] = json!(groups);
    }
    claims
}

/// Forged, expired, group-less, unknown kid, malformed, in turn.
fn flood_tokens(signer: &DevSigner, count: usize) -> Vec<String> {
    let good = signer.sign(&claims(Some(&["acme"]), unix_now() + 3600));
    let other = signer.sign(&claims(Some(&["globex"]), unix_now() + 3600));
    let (good, other): (Vec<&str>, Vec<&str>) =
        (good.split('.').collect(), other.split('.').collect());
    let forged = format!("{}.{}.{}", good[0], other[1], good[2]);
    let expired = signer.sign(&claims(Some(&["acme"]), unix_now() - 3600));
    let groupless = signer.sign(&claims(None, unix_now() + 3600));
    (0..count)
        .map(|n| match n % 5 {
            0 => forged.clone(),
            1 => expired.clone(),
            2 => groupless.clone(),
            3 => hand_made_token(
                &format!(r#"{{"alg":"RS256","kid":"bench-{n}"}}"#),
                r#"{"sub":"x"}"#,
                &[1; 256],
            ),
            _ => "not-a-token".to_owned(),
        })
        .collect()
}

/// One upgrade request (or a plain GET without a token); checks the status.
async fn one(client: &reqwest::Client, url: &str, token: Option<&str>, status: u16) {
    let request = match token {
        Some(token) => client
            .get(format!("{url}?idToken={token}"))
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        None => client.get(url),
    };
    let response = request.send().await.expect("an answer");
    assert_eq!(response.status().as_u16(), status, "{url}");
    response.bytes().await.expect("a body");
}

async fn run_flood(url: &str, tokens: &[String]) {
    let per_client = tokens.len().div_ceil(FLOOD_CLIENTS);
    let clients = tokens.chunks(per_client).map(|chunk| async move {
        let client = reqwest::Client::new();
        for token in chunk {
            one(&client, url, Some(token), 401).await;
        }
    });
    futures_util::future::join_all(clients).await;
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// User + system CPU seconds of a process, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()) / 100.0
}

fn workerd_version() -> String {
    let output = std::process::Command::new(gitgazer_ws_tests::workerd::workerd_binary())
        .arg("--version")
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}
