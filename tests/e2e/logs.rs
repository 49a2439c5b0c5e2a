//! What clients send reaches the log escaped, never as text of its own: a
//! line break cannot forge a log line, a terminal escape cannot hide one, and
//! a 10 KB value stays inside its field. Through the real binary in its
//! default text format, with stderr a pipe (so no colour codes either).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use gitgazer_ws_tests::{binary_path, test_cache_dir};
use serde_json::json;

/// What a hostile value carries: a forged line, colour codes, 10 KB.
fn hostile(tag: &str) -> String {
    format!(
        "{tag}\n2099-01-01T00:00:00.000000Z  INFO gitgazer_ws::edge::http: FORGED {tag}\r\x1b[2K\x1b[31m{}",
        "x".repeat(10 * 1024)
    )
}

fn encoded(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_values_are_logged_escaped_one_line_per_entry() {
    let mut child = Command::new(binary_path())
        .args(["serve", "--port", "0"])
        .env_remove("COGNITO_USER_POOL_ID")
        .env_remove("RUST_LOG")
        .env_remove("LOG_FORMAT")
        .env("RUST_LOG", "debug")
        .env("MANAGEMENT_BIND", "127.0.0.1:0")
        .env("GITGAZER_WS_CACHE_DIR", test_cache_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting gitgazer-ws");
    let stderr = child.stderr.take().unwrap();
    let (lines_tx, lines_rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut log = Vec::new();
    let address_of = |log: &[String], message: &str| {
        log.iter().find_map(|line| {
            let rest = line.split_once(&format!("{message} address="))?.1;
            Some(rest.split_whitespace().next()?.to_owned())
        })
    };
    while address_of(&log, " listening").is_none()
        || address_of(&log, "management listening").is_none()
    {
        log.push(
            lines_rx
                .recv_timeout(Duration::from_secs(120))
                .expect("the server starts"),
        );
    }
    let public = format!("http://{}", address_of(&log, " listening").unwrap());
    let management = format!(
        "http://{}",
        address_of(&log, "management listening").unwrap()
    );

    let client = reqwest::Client::new();
    // An event's request id, connection id and event type.
    for event_type in ["DISCONNECT", &hostile("event-type")] {
        let event = json!({ "requestContext": {
            "eventType": event_type, "connectionId": hostile("connection-id"),
            "requestId": hostile("request-id"), "connectedAt": 0, "requestTimeEpoch": 0,
        }});
        let response = client
            .post(format!("{public}/events"))
            .body(event.to_string())
            .send()
            .await
            .unwrap();
        assert!(response.status().is_client_error(), "{}", response.status());
    }
    // A CONNECT's connection id and a request path, and an integration id.
    let url = format!(
        "{public}/connect?connectionId={}",
        encoded(&hostile("query"))
    );
    assert!(
        client
            .get(url)
            .send()
            .await
            .unwrap()
            .status()
            .is_client_error()
    );
    // (A path is logged as sent, percent-encoded; only its length matters.)
    let url = format!("{public}/{}", encoded(&hostile("path")));
    assert_eq!(client.get(url).send().await.unwrap().status(), 404);
    let url = format!(
        "{management}/integrations/{}/events",
        encoded(&hostile("integration"))
    );
    // (No integration id: a group name holds no whitespace. Refused, and
    // logged escaped.)
    assert_eq!(
        client.post(url).body("{}").send().await.unwrap().status(),
        400
    );

    let _ = child.kill();
    let _ = child.wait();
    while let Ok(line) = lines_rx.recv_timeout(Duration::from_secs(5)) {
        log.push(line);
    }
    let text = log.join("\n");
    assert!(
        !text.contains('\x1b'),
        "an escape code reached the log:\n{text}"
    );
    assert!(!text.contains('\r'), "a carriage return reached the log");
    // Every line is one entry of ours: a timestamp of this run, then a level.
    for line in &log {
        let (timestamp, rest) = line.split_once(' ').unwrap_or((line, ""));
        assert!(
            timestamp.starts_with("20")
                && !timestamp.starts_with("2099")
                && timestamp.ends_with('Z'),
            "a line that is no entry of ours: {line:.200}"
        );
        let level = rest.trim_start().split(' ').next().unwrap_or("");
        assert!(
            ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&level),
            "a line without a level: {line:.200}"
        );
    }
    // The hostile values did reach the log, escaped inside their fields.
    for tag in [
        "event-type",
        "connection-id",
        "request-id",
        "query",
        "integration",
    ] {
        assert!(
            text.contains(&format!("{tag}\\n2099-01-01")),
            "{tag} was not logged escaped"
        );
    }
}
