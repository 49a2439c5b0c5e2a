//! A Lambda Runtime API emulator on 127.0.0.1, following the documented
//! endpoints: `GET /2018-06-01/runtime/invocation/next` (long poll),
//! `POST .../invocation/{id}/response`, `POST .../invocation/{id}/error` and
//! `POST .../runtime/init/error`. Tests queue events and await outcomes.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value;
use tokio::sync::{Notify, oneshot};

/// What the function answered for one invocation.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Posted to `/response`.
    Response(Value),
    /// Posted to `/error`.
    Error(Value),
}

#[derive(Default)]
struct Inner {
    queue: VecDeque<(String, Value)>,
    waiting: HashMap<String, oneshot::Sender<Outcome>>,
    init_errors: Vec<(HeaderMap, Value)>,
    next_id: u64,
}

#[derive(Clone, Default)]
struct Shared {
    inner: Arc<Mutex<Inner>>,
    queued: Arc<Notify>,
    init_error: Arc<Notify>,
}

pub struct RuntimeApiEmulator {
    /// `host:port`, the value of `AWS_LAMBDA_RUNTIME_API`.
    pub address: String,
    shared: Shared,
}

impl RuntimeApiEmulator {
    pub async fn start() -> RuntimeApiEmulator {
        let shared = Shared::default();
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move { axum::serve(listener, app).await });
        RuntimeApiEmulator { address, shared }
    }

    /// Delivers one event and waits (bounded) for the function's outcome.
    pub async fn invoke(&self, event: Value) -> Outcome {
        let (sender, receiver) = oneshot::channel();
        {
            let mut inner = self.shared.inner.lock().unwrap();
            inner.next_id += 1;
            let id = format!("req-{:04}", inner.next_id);
            inner.waiting.insert(id.clone(), sender);
            inner.queue.push_back((id, event));
        }
        self.shared.queued.notify_one();
        tokio::time::timeout(Duration::from_secs(60), receiver)
            .await
            .expect("the function answered within 60 s")
            .expect("outcome delivered")
    }

    /// Waits (bounded) for an `/init/error` report; returns its body and the
    /// error-type header.
    pub async fn wait_init_error(&self) -> (Value, String) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let notified = self.shared.init_error.notified();
            if let Some((headers, body)) = self.shared.inner.lock().unwrap().init_errors.first() {
                let kind = headers
                    .get("lambda-runtime-function-error-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                return (body.clone(), kind);
            }
            tokio::time::timeout_at(deadline, notified)
                .await
                .expect("an /init/error report within 60 s");
        }
    }
}

async fn next(State(shared): State<Shared>) -> Response {
    loop {
        let notified = shared.queued.notified();
        if let Some((id, event)) = shared.inner.lock().unwrap().queue.pop_front() {
            let deadline = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis()
                + 30_000;
            return (
                StatusCode::OK,
                [
                    ("lambda-runtime-aws-request-id", id),
                    ("lambda-runtime-deadline-ms", deadline.to_string()),
                    (
                        "lambda-runtime-invoked-function-arn",
                        "arn:aws:lambda:us-east-1:123456789012:function:gitgazer-ws".into(),
                    ),
                    (
                        "lambda-runtime-trace-id",
                        "Root=1-00000000-000000000000000000000000".into(),
                    ),
                    ("content-type", "application/json".into()),
                ],
                event.to_string(),
            )
                .into_response();
        }
        notified.await;
    }
}

async fn response(State(shared): State<Shared>, Path(id): Path<String>, body: Bytes) -> StatusCode {
    finish(&shared, &id, Outcome::Response(parse(&body)))
}

async fn error(State(shared): State<Shared>, Path(id): Path<String>, body: Bytes) -> StatusCode {
    finish(&shared, &id, Outcome::Error(parse(&body)))
}

async fn init_error(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> StatusCode {
    shared
        .inner
        .lock()
        .unwrap()
        .init_errors
        .push((headers, parse(&body)));
    shared.init_error.notify_waiters();
    StatusCode::ACCEPTED
}

fn finish(shared: &Shared, id: &str, outcome: Outcome) -> StatusCode {
    match shared.inner.lock().unwrap().waiting.remove(id) {
        Some(sender) => {
            let _ = sender.send(outcome);
            StatusCode::ACCEPTED
        }
        None => StatusCode::BAD_REQUEST,
    }
}

fn parse(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into()))
}
