//! A real browser on the self-hosted endpoint: headless Chromium loads a
//! page served by this test; the page opens the WebSocket with the token in
//! the `bearer` subprotocol (browsers cannot set headers on a WebSocket, so
//! this is how a page keeps the token out of the URL), an event delivered
//! through `POST /integrations/{id}/events` reaches it, the page shows it,
//! and the test reads the page's DOM (`--dump-dom`).
//!
//! `--dump-dom` prints the DOM once the page has loaded, so the page holds
//! its load event with an iframe (`/hold`) that this test answers only after
//! the page has reported the event (`/received`).
//!
//! Chromium: the Debian package `chromium` (`.ci/run` installs it), or the
//! binary named by `CHROMIUM`.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::Html;
use axum::routing::get;
use gitgazer_ws_tests::{create_table, dynalite_endpoint, unique_table};
use tokio::sync::Notify;

use crate::support::{Fixture, scan, wait_for_table};

/// How long the page may hold its load event: the test fails long before.
const HOLD_AT_MOST: Duration = Duration::from_secs(60);

/// The page and what it reports back.
struct Page {
    html: String,
    /// The page's WebSocket is open.
    opened: Notify,
    /// The page has shown a message (or the socket failed).
    received: Notify,
}

fn page_html(websocket_url: &str, token: &str) -> String {
    // JSON string literals are JavaScript string literals.
    let url = serde_json::to_string(websocket_url).unwrap();
    let token = serde_json::to_string(token).unwrap();
    format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>gitgazer-ws</title></head>
<body>
<p>protocol: <span id="protocol">none</span></p>
<pre id="event">waiting</pre>
<script>
const socket = new WebSocket({url}, ["bearer", {token}]);
const show = (id, text) => {{ document.getElementById(id).textContent = text; }};
let done = false;
const report = () => {{ if (!done) {{ done = true; fetch("/received"); }} }};
socket.onopen = () => {{ show("protocol", socket.protocol); fetch("/opened"); }};
socket.onmessage = (event) => {{ show("event", event.data); report(); }};
socket.onclose = (event) => {{ if (!done) {{ show("event", "closed " + event.code); report(); }} }};
</script>
<iframe src="/hold"></iframe>
</body></html>
"#
    )
}

async fn serve_page(page: Arc<Page>) -> String {
    let app = Router::new()
        .route(
            "/",
            get(|State(page): State<Arc<Page>>| async move { Html(page.html.clone()) }),
        )
        .route(
            "/opened",
            get(|State(page): State<Arc<Page>>| async move {
                page.opened.notify_one();
                "ok"
            }),
        )
        .route(
            "/received",
            get(|State(page): State<Arc<Page>>| async move {
                page.received.notify_one();
                "ok"
            }),
        )
        .route(
            "/hold",
            get(|State(page): State<Arc<Page>>| async move {
                let _ = tokio::time::timeout(HOLD_AT_MOST, page.received.notified()).await;
                Html("released")
            }),
        )
        .with_state(page);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{address}/")
}

/// Starts headless Chromium to print `url`'s DOM once the page has loaded.
fn dump_dom(url: &str, profile: &std::path::Path) -> std::process::Child {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".into());
    Command::new(&chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "starting {chromium}: {e}. The browser test needs headless Chromium: \
                 `apt-get install chromium` (as .ci/run does), or CHROMIUM=/path/to/chrome"
            )
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_receives_a_delivered_event_over_the_bearer_subprotocol() {
    let endpoint = dynalite_endpoint();
    let table = unique_table("browser");
    create_table(&endpoint, &table);
    let fixture = Fixture::start(&endpoint, &table, &[]);
    let token = fixture.token("browser-user", &["acme"]).await;
    let websocket_url = fixture.server.url("/ws").replacen("http://", "ws://", 1);
    let page = Arc::new(Page {
        html: page_html(&websocket_url, &token),
        opened: Notify::new(),
        received: Notify::new(),
    });
    let page_url = serve_page(page.clone()).await;

    let profile = std::env::temp_dir().join(format!("gitgazer-ws-chromium-{}", std::process::id()));
    let browser = dump_dom(&page_url, &profile);
    let browser_pid = browser.id();
    let mut browser_done = tokio::task::spawn_blocking(move || browser.wait_with_output());

    // The page's socket opens (CONNECT stored its record), then the event goes out.
    tokio::select! {
        () = page.opened.notified() => {}
        finished = &mut browser_done => {
            let output = finished.unwrap().unwrap();
            panic!(
                "Chromium ended before the page's WebSocket opened: {}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        () = tokio::time::sleep(HOLD_AT_MOST) => panic!("the page's WebSocket did not open"),
    }
    let records = scan(&endpoint, &table).await;
    assert_eq!(records.len(), 1, "{records:?}");
    let (integration, _, sub, _) = records.first().unwrap();
    assert_eq!(
        (integration.as_str(), sub.as_str()),
        ("acme", "browser-user")
    );

    let event = r#"{"workflow":"deploy","status":"success","run":42}"#;
    let response = reqwest::Client::new()
        .post(fixture.server.management("/integrations/acme/events"))
        .body(event)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let report: serde_json::Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert_eq!(
        report,
        serde_json::json!({"delivered": 1, "gone": 0, "failed": 0, "expired": 0, "expiredAuth": 0})
    );

    let output =
        match tokio::time::timeout(HOLD_AT_MOST + Duration::from_secs(30), browser_done).await {
            Ok(finished) => finished.unwrap().unwrap(),
            Err(_) => {
                let _ = Command::new("kill").arg(browser_pid.to_string()).status();
                panic!("Chromium did not finish");
            }
        };
    let _ = std::fs::remove_dir_all(&profile);
    let dom = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "Chromium: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        dom.contains(&format!(r#"<pre id="event">{event}</pre>"#)),
        "the page does not show the event:\n{dom}"
    );
    assert!(
        dom.contains(r#"<span id="protocol">bearer</span>"#),
        "the page's socket did not select bearer:\n{dom}"
    );
    // The browser has gone: its socket closed and the record went.
    wait_for_table(&endpoint, &table, &BTreeSet::new()).await;
}
