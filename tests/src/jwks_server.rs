//! A key set server on 127.0.0.1 that counts its requests and misbehaves on
//! demand (error status, oversize or invalid body, a hang, a redirect).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// How the server answers.
#[derive(Debug, Clone)]
pub enum JwksMode {
    /// 200 with this body.
    Serve(String),
    /// This status, empty body.
    Status(u16),
    /// 200 with a body of this many bytes (a valid-looking JSON prefix).
    Oversize(usize),
    /// 200 with a body that is not JSON.
    InvalidJson,
    /// Never answers.
    Hang,
    /// 200 with this body, after this delay.
    Slow(std::time::Duration, String),
    /// 302 to this URL.
    Redirect(String),
    /// 200 with this body once [`JwksServer::release`] is called (at once
    /// after it).
    Held(String),
}

#[derive(Clone)]
struct Shared {
    mode: Arc<Mutex<JwksMode>>,
    requests: Arc<AtomicU64>,
    released: Arc<tokio::sync::watch::Sender<bool>>,
}

pub struct JwksServer {
    pub url: String,
    shared: Shared,
}

impl JwksServer {
    pub async fn start(mode: JwksMode) -> JwksServer {
        let shared = Shared {
            mode: Arc::new(Mutex::new(mode)),
            requests: Arc::default(),
            released: Arc::new(tokio::sync::watch::channel(false).0),
        };
        let app = Router::new().fallback(answer).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/.well-known/jwks.json",
            listener.local_addr().unwrap()
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        JwksServer { url, shared }
    }

    pub fn set(&self, mode: JwksMode) {
        *self.shared.mode.lock().unwrap() = mode;
    }

    /// Lets [`JwksMode::Held`] answers go.
    pub fn release(&self) {
        self.shared.released.send_replace(true);
    }

    /// Waits (at most 30 s) until `count` requests have arrived.
    pub async fn wait_for_requests(&self, count: u64) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while self.requests() < count {
            assert!(
                std::time::Instant::now() < deadline,
                "{} key set requests after 30 s, expected {count}",
                self.requests()
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Requests received so far.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }
}

async fn answer(State(shared): State<Shared>) -> Response {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let mode = shared.mode.lock().unwrap().clone();
    match mode {
        JwksMode::Serve(body) => ([("content-type", "application/json")], body).into_response(),
        JwksMode::Status(code) => StatusCode::from_u16(code).unwrap().into_response(),
        JwksMode::Oversize(bytes) => {
            let mut body = String::from("{\"keys\":[],\"padding\":\"");
            body.push_str(&"x".repeat(bytes));
            body.push_str("\"}");
            body.into_response()
        }
        JwksMode::InvalidJson => "{\"keys\": [".into_response(),
        JwksMode::Slow(delay, body) => {
            tokio::time::sleep(delay).await;
            ([("content-type", "application/json")], body).into_response()
        }
        JwksMode::Held(body) => {
            let _ = shared
                .released
                .subscribe()
                .wait_for(|released| *released)
                .await;
            ([("content-type", "application/json")], body).into_response()
        }
        JwksMode::Redirect(location) => {
            (StatusCode::FOUND, [("location", location)]).into_response()
        }
        JwksMode::Hang => {
            std::future::pending::<()>().await;
            unreachable!()
        }
    }
}

/// One key set holding the keys of several sets.
pub fn merge_key_sets(sets: &[&str]) -> String {
    let keys: Vec<serde_json::Value> = sets
        .iter()
        .flat_map(|set| {
            let value: serde_json::Value = serde_json::from_str(set).unwrap();
            value["keys"].as_array().unwrap().clone()
        })
        .collect();
    serde_json::json!({ "keys": keys }).to_string()
}
