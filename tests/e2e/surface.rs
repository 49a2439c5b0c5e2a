//! What each listener exposes (issue: a management listener of its own). In
//! Cognito mode the public port serves `/ws` and `/healthz` only, whatever
//! the peer: a browser on another address, or anyone behind a reverse proxy
//! on the same host (every request then arrives from 127.0.0.1). The test
//! routes, delivery, the Management API shape and `/status` live on the
//! management listener, which answers loopback peers, IPv4-mapped ones too.

use std::net::{IpAddr, SocketAddr};

use gitgazer_ws::dev::DevSigner;
use gitgazer_ws_tests::jwks_server::{JwksMode, JwksServer};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};

use crate::support::Pool;

const POOL: Pool = Pool {
    region: "eu-west-1",
    id: "eu-west-1_Surface1",
    client: "surface-client",
};

/// This machine's first non-loopback IPv4 address (`hostname -I`): a peer
/// that is not loopback without leaving the machine.
fn own_address() -> IpAddr {
    let output = std::process::Command::new("hostname")
        .arg("-I")
        .output()
        .expect("running hostname -I");
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .filter_map(|word| word.parse::<IpAddr>().ok())
        .find(|ip| ip.is_ipv4() && !ip.is_loopback())
        .expect("this test needs a non-loopback IPv4 address on this machine (hostname -I)")
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}

async fn send(method: &str, url: &str, body: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .request(method.parse().unwrap(), url)
        .body(body.to_owned())
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    (response.status().as_u16(), response.text().await.unwrap())
}

/// Every route a public client must not reach, as (method, path, body).
fn management_only(victim_token: &str) -> Vec<(&'static str, String, String)> {
    let disconnect = json!({ "requestContext": {
        "eventType": "DISCONNECT", "connectionId": "victim",
        "connectedAt": 0, "requestTimeEpoch": 0,
    }});
    vec![
        (
            "GET",
            "/disconnect?connectionId=victim".into(),
            String::new(),
        ),
        (
            "GET",
            format!("/connect?idToken={victim_token}&connectionId=victim"),
            String::new(),
        ),
        ("POST", "/events".into(), disconnect.to_string()),
        ("POST", "/@connections/victim".into(), "forged".into()),
        ("DELETE", "/@connections/victim".into(), String::new()),
        // The same, as other nodes address it.
        (
            "POST",
            "/n/0123456789abcdef/@connections/victim".into(),
            "forged".into(),
        ),
        (
            "DELETE",
            "/n/0123456789abcdef/@connections/victim".into(),
            String::new(),
        ),
        ("POST", "/integrations/acme/events".into(), "forged".into()),
        ("GET", "/metrics".into(), String::new()),
        ("GET", "/status".into(), String::new()),
        ("GET", "/dev/token".into(), String::new()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_port_serves_no_test_or_management_route_to_another_address() {
    let signer = DevSigner::generate().unwrap();
    let jwks = JwksServer::start(JwksMode::Serve(signer.jwks().to_owned())).await;
    let server = POOL.server(&jwks, &[("BIND_ADDRESS", "0.0.0.0")]);
    let public = format!("http://{}:{}", own_address(), port_of(&server.base_url));

    // The victim's connection, made where such calls belong.
    let victim = POOL.token(&signer, "victim");
    let connect = format!("/connect?idToken={victim}&connectionId=victim");
    assert_eq!(
        send("GET", &server.management(&connect), "").await,
        (200, "Connected.".into())
    );

    // From another address, the public port knows none of it...
    let mallory = POOL.token(&signer, "mallory");
    for (method, path, body) in management_only(&mallory) {
        let (status, _) = send(method, &format!("{public}{path}"), &body).await;
        assert_eq!(status, 404, "{method} {path} on the public port");
    }
    // ...while it is reachable and serves what browsers need.
    assert_eq!(
        send("GET", &format!("{public}/healthz"), "").await,
        (200, "ok".into())
    );
    let (status, _) = send("GET", &format!("{public}/ws"), "").await;
    assert_ne!(status, 404, "/ws is public");

    // The victim's record is intact: nothing above deleted or added any.
    assert_eq!(
        send(
            "GET",
            &server.management("/disconnect?connectionId=victim"),
            ""
        )
        .await,
        (200, "Disconnected. Removed 1 records.".into())
    );
}

/// A reverse proxy on the same host: every request it forwards comes from
/// 127.0.0.1, so loopback cannot be what lets a request in.
async fn start_tcp_proxy(upstream: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut server) = TcpStream::connect(upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    address
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_same_host_proxy_the_public_port_still_serves_no_management_route() {
    let signer = DevSigner::generate().unwrap();
    let jwks = JwksServer::start(JwksMode::Serve(signer.jwks().to_owned())).await;
    let server = POOL.server(&jwks, &[]);
    let upstream: SocketAddr = server
        .base_url
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let proxy = format!("http://{}", start_tcp_proxy(upstream).await);

    let mallory = POOL.token(&signer, "mallory");
    for (method, path, body) in management_only(&mallory) {
        let (status, _) = send(method, &format!("{proxy}{path}"), &body).await;
        assert_eq!(status, 404, "{method} {path} through the proxy");
    }
    assert_eq!(
        send("GET", &format!("{proxy}/healthz"), "").await,
        (200, "ok".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_management_listener_on_ipv6_any_takes_a_local_ipv4_client_as_loopback() {
    let signer = DevSigner::generate().unwrap();
    let jwks = JwksServer::start(JwksMode::Serve(signer.jwks().to_owned())).await;
    let server = POOL.server(&jwks, &[("MANAGEMENT_BIND", "[::]:0")]);
    // An IPv4 client of a dual-stack listener: the peer is ::ffff:127.0.0.1.
    let management = format!("http://127.0.0.1:{}", port_of(&server.management_url));
    let (status, body) = send("GET", &format!("{management}/status"), "").await;
    assert_eq!((status, body.as_str()), (200, r#"{"pendingRollbacks":0}"#));
    // The same listener refuses a peer that is not loopback, on every
    // management route, with API Gateway's error shape.
    let other = format!(
        "http://{}:{}",
        own_address(),
        port_of(&server.management_url)
    );
    let mallory = POOL.token(&signer, "mallory");
    for (method, path, body) in management_only(&mallory) {
        assert_eq!(
            send(method, &format!("{other}{path}"), &body).await,
            (403, r#"{"message":"Forbidden"}"#.to_owned()),
            "{method} {path} from {}",
            own_address()
        );
    }
}

/// With `MANAGEMENT_TOKEN` the management listener answers any address
/// that carries the token (other nodes, a remote Prometheus), and nobody
/// without it, loopback included: every management route is 401 without
/// it, with another token, or with the token in another scheme.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_management_token_any_address_with_it_is_served_and_none_without_it() {
    const TOKEN: &str = "surface-management-token-0123456789abcdef";
    let signer = DevSigner::generate().unwrap();
    let jwks = JwksServer::start(JwksMode::Serve(signer.jwks().to_owned())).await;
    let server = POOL.server(
        &jwks,
        &[
            ("MANAGEMENT_BIND", "0.0.0.0:0"),
            ("MANAGEMENT_TOKEN", TOKEN),
        ],
    );
    let port = port_of(&server.management_url);
    let authorized = |url: String, authorization: Option<String>| async move {
        let mut request = reqwest::Client::new().get(url);
        if let Some(authorization) = authorization {
            request = request.header("authorization", authorization);
        }
        let response = request.send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    };
    for host in [IpAddr::from([127, 0, 0, 1]), own_address()] {
        let status = format!("http://{host}:{port}/status");
        assert_eq!(
            authorized(status.clone(), Some(format!("Bearer {TOKEN}"))).await,
            (200, r#"{"pendingRollbacks":0}"#.to_owned()),
            "from {host}"
        );
        for wrong in [
            None,
            Some("Bearer surface-management-token-0123456789abcdeF".to_owned()),
            Some(format!("Basic {TOKEN}")),
            Some(format!("Bearer  {TOKEN}")),
        ] {
            assert_eq!(
                authorized(status.clone(), wrong.clone()).await,
                (401, r#"{"message":"Unauthorized"}"#.to_owned()),
                "{wrong:?} from {host}"
            );
        }
        let mallory = POOL.token(&signer, "mallory");
        for (method, path, body) in management_only(&mallory) {
            assert_eq!(
                send(method, &format!("http://{host}:{port}{path}"), &body).await,
                (401, r#"{"message":"Unauthorized"}"#.to_owned()),
                "{method} {path} from {host} without the token"
            );
        }
    }
}

/// Dev mode mints tokens for anyone who asks, so it binds 127.0.0.1 even
/// when told to bind every address: another address of this machine cannot
/// reach it, loopback can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mode_binds_loopback_even_with_bind_0_0_0_0() {
    let server = gitgazer_ws_tests::Server::start_with_args(&[], &["--bind", "0.0.0.0"]);
    let port = port_of(&server.base_url);
    let elsewhere = format!("http://{}:{port}/dev/token", own_address());
    match reqwest::get(&elsewhere).await {
        Err(error) if error.is_connect() => {}
        other => panic!("dev mode answered {elsewhere}: {other:?}"),
    }
    let (status, _) = send("GET", &server.url("/dev/token"), "").await;
    assert_eq!(status, 200, "loopback reaches the dev server");
    assert!(
        server.base_url.starts_with("http://127.0.0.1:"),
        "listening on {}",
        server.base_url
    );
}
