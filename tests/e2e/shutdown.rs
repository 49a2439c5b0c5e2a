//! Graceful shutdown: SIGTERM stops accepting, lets the request in flight
//! finish, then the host exits 0.

use std::time::Duration;

use gitgazer_ws::dev::DevSigner;
use gitgazer_ws_tests::Server;
use gitgazer_ws_tests::jwks_server::{JwksMode, JwksServer, merge_key_sets};

use crate::support::Pool;

const POOL: Pool = Pool {
    region: "eu-west-1",
    id: "eu-west-1_Stop1",
    client: "stop-client",
};

fn token(signer: &DevSigner) -> String {
    POOL.token(signer, "u")
}

fn cognito_server(jwks: &JwksServer, extra: &[(&str, &str)]) -> Server {
    POOL.server(jwks, extra)
}

/// Waits (at most 10 s) until the server refuses new connections.
async fn wait_until_refusing(server: &Server) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match reqwest::get(server.url("/healthz")).await {
            Err(error) if error.is_connect() => return,
            other => assert!(
                std::time::Instant::now() < deadline,
                "still accepting 10 s after SIGTERM: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_request_in_flight_finish_then_exits_0() {
    let old = DevSigner::generate().unwrap();
    let jwks = JwksServer::start(JwksMode::Serve(old.jwks().to_owned())).await;
    let mut server = cognito_server(&jwks, &[]);

    // A token of a new key: its CONNECT waits on a key set refetch that the
    // key server holds until released, so it is in flight at SIGTERM.
    let new = DevSigner::generate().unwrap();
    jwks.set(JwksMode::Held(merge_key_sets(&[old.jwks(), new.jwks()])));
    let url = server.management(&format!("/connect?idToken={}&connectionId=c1", token(&new)));
    let in_flight = tokio::spawn(async move {
        let response = reqwest::get(&url)
            .await
            .expect("the request in flight is answered");
        (response.status().as_u16(), response.text().await.unwrap())
    });
    jwks.wait_for_requests(2).await;
    server.terminate();

    // New connections are refused while the old request is still held.
    wait_until_refusing(&server).await;
    assert!(!in_flight.is_finished(), "answered before the key server");

    jwks.release();
    assert_eq!(in_flight.await.unwrap(), (200, "Connected.".to_string()));
    let status = server.wait_exit(Duration::from_secs(30)).expect("exited");
    assert_eq!(status.code(), Some(0));
    assert!(server.logs().contains("shutting down"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_outlasting_the_grace_period_does_not_hold_the_exit() {
    let old = DevSigner::generate().unwrap();
    let jwks = JwksServer::start(JwksMode::Serve(old.jwks().to_owned())).await;
    let mut server = cognito_server(&jwks, &[("SHUTDOWN_GRACE_SECONDS", "2")]);
    let new = DevSigner::generate().unwrap();
    // Held past the grace period (the fetch's own 4 s timeout is longer).
    jwks.set(JwksMode::Held(merge_key_sets(&[old.jwks(), new.jwks()])));
    let url = server.management(&format!("/connect?idToken={}&connectionId=c1", token(&new)));
    let in_flight = tokio::spawn(async move { reqwest::get(&url).await.map(|r| r.status()) });
    // In flight: the host has asked the key server.
    jwks.wait_for_requests(2).await;
    let terminated = std::time::Instant::now();
    server.terminate();
    let status = server.wait_exit(Duration::from_secs(30)).expect("exited");
    assert_eq!(status.code(), Some(0));
    // It waited for the grace period, then exited without the answer.
    let waited = terminated.elapsed();
    assert!(
        waited >= Duration::from_secs(2),
        "exited {waited:?} after SIGTERM"
    );
    match in_flight.await.unwrap() {
        Err(error) => assert!(
            !error.is_connect(),
            "the request never reached the host: {error}"
        ),
        Ok(status) => panic!("the request outlasting the grace period got {status}"),
    }
    assert!(server.logs().contains("grace period"), "{}", server.logs());
    jwks.release();
}
