//! A Lambda Runtime API emulator on 127.0.0.1, following the documented
//! endpoints: `GET /2018-06-01/runtime/invocation/next` (long poll),
//! `POST .../invocation/{id}/response`, `POST .../invocation/{id}/error` and
//! `POST .../runtime/init/error`. Tests queue events and await outcomes.
//!
//! [`RuntimeApiEmulator::throttle_at_first_next`] emulates a small
//! function's CPU share: Lambda gives CPU in proportion to memory (1 769 MB
//! is one vCPU) but runs the INIT phase unthrottled; so the function's
//! process moves into a CPU cgroup (a quota per 100 ms period) when it
//! first asks for an event, the end of its init.

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
    /// Applied once, at the first `GET /next`; then when it happened.
    throttle: Arc<Mutex<Option<CpuThrottle>>>,
    first_next: Arc<Mutex<Option<std::time::Instant>>>,
}

/// A CPU cgroup holding the function's process from its first `/next`.
pub struct CpuThrottle {
    pid: u32,
    group: std::path::PathBuf,
}

impl CpuThrottle {
    /// A new cgroup allowing `percent` of one CPU: cgroup v1's cpu
    /// controller (`cpu.cfs_quota_us` per `cpu.cfs_period_us` = 100 ms) or
    /// v2's `cpu.max`. An error says why neither could be written (not
    /// root, no cpu controller).
    pub fn new(pid: u32, percent: f64) -> Result<CpuThrottle, String> {
        let name = format!("gitgazer-ws-lambda-{}-{pid}", std::process::id());
        let quota = ((percent * 1000.0).round() as u64).max(1000);
        let v1 = std::path::Path::new("/sys/fs/cgroup/cpu");
        let attempt_v1 = || -> std::io::Result<std::path::PathBuf> {
            let group = v1.join(&name);
            std::fs::create_dir(&group)?;
            std::fs::write(group.join("cpu.cfs_period_us"), "100000")?;
            std::fs::write(group.join("cpu.cfs_quota_us"), quota.to_string())?;
            Ok(group)
        };
        let attempt_v2 = || -> std::io::Result<std::path::PathBuf> {
            let group = std::path::Path::new("/sys/fs/cgroup").join(&name);
            std::fs::create_dir(&group)?;
            std::fs::write(group.join("cpu.max"), format!("{quota} 100000"))?;
            Ok(group)
        };
        let group = if v1.join("cpu.cfs_quota_us").exists() {
            attempt_v1()
                .map_err(|e| format!("cgroup v1 cpu controller at {}: {e}", v1.display()))?
        } else {
            attempt_v2().map_err(|e| format!("cgroup v2 cpu.max under /sys/fs/cgroup: {e}"))?
        };
        Ok(CpuThrottle { pid, group })
    }

    /// Periods in which the cgroup ran out of its quota (`nr_throttled` of
    /// `cpu.stat`), so a run can show the limit bit.
    pub fn throttled_periods(&self) -> u64 {
        std::fs::read_to_string(self.group.join("cpu.stat"))
            .ok()
            .and_then(|stat| {
                stat.lines()
                    .find_map(|line| line.strip_prefix("nr_throttled "))
                    .and_then(|n| n.trim().parse().ok())
            })
            .unwrap_or(0)
    }

    fn apply(&self) -> std::io::Result<()> {
        std::fs::write(self.group.join("cgroup.procs"), self.pid.to_string())
    }
}

impl Drop for CpuThrottle {
    fn drop(&mut self) {
        // Empty once the process is gone; a cgroup directory is removed
        // with rmdir.
        let _ = std::fs::remove_dir(&self.group);
    }
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

    /// Moves the function's process into `throttle`'s cgroup when it first
    /// asks for an event (its init is over).
    /// (Given after its first `/next`, at once.)
    pub fn throttle_at_first_next(&self, throttle: CpuThrottle) {
        let first = self.shared.first_next.lock().unwrap();
        if first.is_some() {
            throttle
                .apply()
                .expect("moving the function into its CPU cgroup");
        }
        *self.shared.throttle.lock().unwrap() = Some(throttle);
    }

    /// Periods the function was throttled in so far (0 without a throttle).
    pub fn throttled_periods(&self) -> u64 {
        self.shared
            .throttle
            .lock()
            .unwrap()
            .as_ref()
            .map_or(0, CpuThrottle::throttled_periods)
    }

    /// When the function first asked for an event (its init ended).
    pub fn first_next(&self) -> Option<std::time::Instant> {
        *self.shared.first_next.lock().unwrap()
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
    {
        let mut first = shared.first_next.lock().unwrap();
        if first.is_none() {
            *first = Some(std::time::Instant::now());
            if let Some(throttle) = shared.throttle.lock().unwrap().as_ref()
                && let Err(error) = throttle.apply()
            {
                panic!("moving the function into its CPU cgroup: {error}");
            }
        }
    }
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

/// The environment of the packaged function under the Runtime API emulator
/// at `runtime_api`: `memory_mb`, the table on the DynamoDB `endpoint`, the
/// pool `region`/`pool`, app client `client` and its key set at `jwks_url`.
pub struct FunctionEnv<'a> {
    pub runtime_api: &'a str,
    pub memory_mb: u32,
    pub endpoint: &'a str,
    pub table: &'a str,
    pub region: &'a str,
    pub pool: &'a str,
    pub client: &'a str,
    pub jwks_url: &'a str,
}

impl FunctionEnv<'_> {
    /// Sets it on `command`, over a cleared environment.
    pub fn apply(&self, command: &mut std::process::Command) {
        command
            .env_clear()
            .env("AWS_LAMBDA_RUNTIME_API", self.runtime_api)
            .env("AWS_LAMBDA_FUNCTION_NAME", "gitgazer-ws")
            .env(
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
                self.memory_mb.to_string(),
            )
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .envs(crate::dynamodb_env(self.endpoint, self.table))
            .env("AWS_REGION", self.region)
            .env("COGNITO_USER_POOL_ID", self.pool)
            .env("COGNITO_CLIENT_ID", self.client)
            .env("COGNITO_JWKS_URL", self.jwks_url);
    }
}
