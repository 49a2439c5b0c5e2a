//! A DynamoDB-protocol proxy that injects the faults no local server makes
//! by itself: throttling and `UnprocessedItems`. It sits between the host
//! and dynalite and forwards everything else unchanged, so the SDK, its
//! retries and the store's own resubmissions all run for real.
//!
//! Put batches get the [`PutFault`]s; deletes (rollbacks, DISCONNECTs) and
//! Queries pass unless a test throttles them ([`FaultProxy::throttle`]),
//! holds deletes as a paused store would ([`FaultProxy::pause_deletes`]),
//! holds answers ([`FaultProxy::hold_answers`]) or has the
//! index lag ([`FaultProxy::lag_index`]). Every request is counted
//! by operation ([`FaultProxy::requests`]).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

const JSON_1_0: &str = "application/x-amz-json-1.0";

/// What to do to the next put batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PutFault {
    #[default]
    None,
    /// Answer the next `times` put batches with a throttling error.
    Throttle { times: u32 },
    /// Let `pass` put batches through, then throttle every later one.
    ThrottleAfter { pass: u32 },
    /// Write only the first half of the next `times` put batches and return
    /// the rest as `UnprocessedItems`.
    Unprocessed { times: u32 },
    /// Return every put item as unprocessed, forever.
    UnprocessedForever,
}

#[derive(Debug, Default)]
struct ProxyState {
    fault: PutFault,
    put_batches_seen: u32,
    faults_injected: u32,
    /// Answer everything with 502 without forwarding (the store unreachable).
    down: bool,
    /// Requests being forwarded right now.
    in_flight: u32,
    /// Answer every Query / delete batch with a throttling error.
    throttle_queries: bool,
    throttle_deletes: bool,
    /// Delete batches that arrived while deletes were paused.
    deletes_held: u32,
    /// Answer every Query on an index with no items.
    index_lags: bool,
    /// Refuse every BatchGetItem as IAM does without the permission.
    deny_batch_get: bool,
    /// Requests received, by operation (`Query`, `BatchWriteItem`, ...).
    requests: HashMap<String, u32>,
}

/// Requests other than put batches that [`FaultProxy::throttle`] can fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Query,
    /// A BatchWriteItem that deletes (a DISCONNECT's or a rollback's).
    DeleteBatch,
}

#[derive(Clone)]
struct Shared {
    upstream: String,
    client: reqwest::Client,
    state: Arc<Mutex<ProxyState>>,
    /// While true, delete batches wait unanswered (a paused store).
    deletes_paused: Arc<tokio::sync::watch::Sender<bool>>,
    /// The operations whose answers wait after upstream made them.
    answers_held: Arc<tokio::sync::watch::Sender<HashSet<String>>>,
}

/// A running proxy; it stops with the test's runtime.
pub struct FaultProxy {
    pub endpoint: String,
    state: Arc<Mutex<ProxyState>>,
    deletes_paused: Arc<tokio::sync::watch::Sender<bool>>,
    answers_held: Arc<tokio::sync::watch::Sender<HashSet<String>>>,
}

impl FaultProxy {
    /// Listens on 127.0.0.1 (a free port) and forwards to `upstream`.
    pub async fn start(upstream: &str) -> FaultProxy {
        let shared = Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            client: reqwest::Client::new(),
            state: Arc::default(),
            deletes_paused: Arc::new(tokio::sync::watch::channel(false).0),
            answers_held: Arc::new(tokio::sync::watch::channel(HashSet::new()).0),
        };
        let state = shared.state.clone();
        let deletes_paused = shared.deletes_paused.clone();
        let answers_held = shared.answers_held.clone();
        let app = Router::new().fallback(forward).with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        FaultProxy {
            endpoint,
            state,
            deletes_paused,
            answers_held,
        }
    }

    /// Answers every request of `operation` with a throttling error (as
    /// DynamoDB does when a partition is hot), or stops doing so.
    pub fn throttle(&self, operation: Operation, on: bool) {
        let mut state = self.state.lock().unwrap();
        match operation {
            Operation::Query => state.throttle_queries = on,
            Operation::DeleteBatch => state.throttle_deletes = on,
        }
    }

    /// Holds delete batches unanswered, as a paused (SIGSTOPped) store does,
    /// or lets them and every held one through (forwarded late, as a paused
    /// store works through its queue when it resumes).
    pub fn pause_deletes(&self, paused: bool) {
        self.deletes_paused.send_replace(paused);
    }

    /// Holds the answers to `operation` (`Query`, `BatchGetItem`, ...):
    /// upstream answers at once, the answer waits until released (a slow
    /// answer on the way back: what it says is older than when it arrives).
    /// Or releases them.
    pub fn hold_answers(&self, operation: &str, held: bool) {
        self.answers_held.send_modify(|operations| {
            if held {
                operations.insert(operation.to_owned());
            } else {
                operations.remove(operation);
            }
        });
    }

    /// Answers every Query on an index with no items, without asking
    /// upstream, as a global secondary index that has not caught up with
    /// fresh writes would (DynamoDB's are eventually consistent, dynalite's
    /// are not), or stops doing so.
    pub fn lag_index(&self, on: bool) {
        self.state.lock().unwrap().index_lags = on;
    }

    /// Refuses every BatchGetItem with `AccessDeniedException`, as DynamoDB
    /// does for a role without `dynamodb:BatchGetItem` (dynalite has no
    /// IAM), or stops doing so.
    pub fn deny_batch_get(&self, on: bool) {
        self.state.lock().unwrap().deny_batch_get = on;
    }

    /// Requests received so far (faulted ones included) whose
    /// `X-Amz-Target` names `operation`: `Query`, `BatchWriteItem`, ...;
    /// [`INDEX_QUERY`]: the Queries of an index among them.
    pub fn requests(&self, operation: &str) -> u32 {
        let state = self.state.lock().unwrap();
        state.requests.get(operation).copied().unwrap_or(0)
    }

    /// Delete batches that arrived while deletes were paused.
    pub fn deletes_held(&self) -> u32 {
        self.state.lock().unwrap().deletes_held
    }

    pub fn set(&self, fault: PutFault) {
        self.state.lock().unwrap().fault = fault;
    }

    /// Makes the store unreachable (every request answered 502 at once) or
    /// reachable again.
    pub fn set_down(&self, down: bool) {
        self.state.lock().unwrap().down = down;
    }

    /// Waits (bounded) until no forwarded request is in flight, so upstream
    /// can be stopped without tearing a write in half.
    pub async fn wait_idle(&self, timeout: std::time::Duration) {
        let deadline = std::time::Instant::now() + timeout;
        while self.state.lock().unwrap().in_flight > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "upstream requests still in flight"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// How many faults were injected so far.
    pub fn faults_injected(&self) -> u32 {
        self.state.lock().unwrap().faults_injected
    }
}

async fn forward(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let target = header(&headers, "x-amz-target");
    let batch_holds = |request: &str| {
        target.ends_with(".BatchWriteItem")
            && std::str::from_utf8(&body).is_ok_and(|b| b.contains(request))
    };
    let is_put_batch = batch_holds("\"PutRequest\"");
    let is_delete_batch = batch_holds("\"DeleteRequest\"");
    let is_query = target.ends_with(".Query");
    let mut body = body.to_vec();
    let mut unprocessed: Option<(String, Vec<Value>)> = None;
    {
        let mut state = shared.state.lock().unwrap();
        let operation = target.rsplit('.').next().unwrap_or_default();
        *state.requests.entry(operation.to_owned()).or_default() += 1;
        if is_query && body_names_an_index(&body) {
            *state.requests.entry(INDEX_QUERY.to_owned()).or_default() += 1;
        }
        if state.down {
            return upstream_down();
        }
        if is_query && state.index_lags && body_names_an_index(&body) {
            return lagging_index();
        }
        if target.ends_with(".BatchGetItem") && state.deny_batch_get {
            state.faults_injected += 1;
            return access_denied();
        }
        if (is_query && state.throttle_queries) || (is_delete_batch && state.throttle_deletes) {
            state.faults_injected += 1;
            return throttled();
        }
    }
    if is_delete_batch {
        let mut paused = shared.deletes_paused.subscribe();
        if *paused.borrow_and_update() {
            shared.state.lock().unwrap().deletes_held += 1;
            let _ = paused.wait_for(|paused| !*paused).await;
        }
    }
    if is_put_batch {
        let mut state = shared.state.lock().unwrap();
        state.put_batches_seen += 1;
        let seen = state.put_batches_seen;
        let action = match state.fault {
            PutFault::None => None,
            PutFault::Throttle { times } if times > 0 => {
                state.fault = PutFault::Throttle { times: times - 1 };
                Some(true)
            }
            PutFault::ThrottleAfter { pass } if seen > pass => Some(true),
            PutFault::Unprocessed { times } if times > 0 => {
                state.fault = PutFault::Unprocessed { times: times - 1 };
                Some(false)
            }
            PutFault::UnprocessedForever => Some(false),
            _ => None,
        };
        match action {
            Some(true) => {
                state.faults_injected += 1;
                return throttled();
            }
            Some(false) => {
                state.faults_injected += 1;
                let (kept, rest) = split_batch(&body);
                body = kept;
                unprocessed = Some(rest);
            }
            None => {}
        }
    }

    let forwarded = if unprocessed.as_ref().is_some_and(|_| body_items(&body) == 0) {
        // Nothing left to write: answer without asking upstream.
        None
    } else {
        let mut request = shared
            .client
            .post(format!("{}/", shared.upstream))
            .body(body);
        for name in [
            "x-amz-target",
            "authorization",
            "x-amz-date",
            "content-type",
        ] {
            if let Some(value) = headers.get(name) {
                request = request.header(name, value.clone());
            }
        }
        // Counted from before the send to after the whole answer is read.
        let _in_flight = InFlight::enter(&shared.state);
        match request.send().await {
            Ok(response) => {
                let status = response.status();
                let bytes = response.bytes().await.unwrap_or_default();
                let operation = target.rsplit('.').next().unwrap_or_default();
                let mut held = shared.answers_held.subscribe();
                let _ = held.wait_for(|held| !held.contains(operation)).await;
                Some((status, bytes))
            }
            Err(_) => return upstream_down(),
        }
    };

    let (status, mut answer) = match forwarded {
        None => (StatusCode::OK, json!({ "UnprocessedItems": {} })),
        Some((status, bytes)) => match serde_json::from_slice::<Value>(&bytes) {
            Ok(value) => (status, value),
            Err(_) => return (status, bytes).into_response(),
        },
    };
    if let (Some((table, rest)), true) = (unprocessed, status.is_success()) {
        answer["UnprocessedItems"] = json!({ table: rest });
    }
    (status, [("content-type", JSON_1_0)], answer.to_string()).into_response()
}

/// DynamoDB's answer to a call the role may not make.
fn access_denied() -> Response {
    let body = json!({
        "__type": "com.amazon.coral.service#AccessDeniedException",
        "message": "User: arn:aws:sts::000000000000:assumed-role/test is not authorized to perform: dynamodb:BatchGetItem",
    });
    (
        StatusCode::BAD_REQUEST,
        [("content-type", JSON_1_0)],
        body.to_string(),
    )
        .into_response()
}

/// What [`FaultProxy::requests`] counts Queries of an index under (a
/// DISCONNECT's lookup is one; a CONNECT's revocation check is a
/// BatchGetItem, or a Query of the table itself without that permission).
pub const INDEX_QUERY: &str = "Query on an index";

fn body_names_an_index(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body).is_ok_and(|v| v.get("IndexName").is_some())
}

/// A Query answer with no items.
fn lagging_index() -> Response {
    let empty = json!({ "Count": 0, "Items": [], "ScannedCount": 0 });
    (
        StatusCode::OK,
        [("content-type", JSON_1_0)],
        empty.to_string(),
    )
        .into_response()
}

fn upstream_down() -> Response {
    (StatusCode::BAD_GATEWAY, "upstream down").into_response()
}

/// Counts a forwarded request while it lives (also when its future is
/// dropped because the client went away).
struct InFlight(Arc<Mutex<ProxyState>>);

impl InFlight {
    fn enter(state: &Arc<Mutex<ProxyState>>) -> Self {
        state.lock().unwrap().in_flight += 1;
        InFlight(state.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.lock().unwrap().in_flight -= 1;
    }
}

fn throttled() -> Response {
    (
        StatusCode::BAD_REQUEST,
        [("content-type", JSON_1_0)],
        json!({
            "__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
            "message": "Injected by the test proxy: throughput exceeded"
        })
        .to_string(),
    )
        .into_response()
}

/// Keeps the first half of the batch's requests; returns the table and the
/// other half.
fn split_batch(body: &[u8]) -> (Vec<u8>, (String, Vec<Value>)) {
    let mut request: Value = serde_json::from_slice(body).expect("BatchWriteItem JSON");
    let items = request["RequestItems"]
        .as_object_mut()
        .expect("RequestItems");
    let (table, writes) = items.iter_mut().next().expect("one table");
    let table = table.clone();
    let writes = writes.as_array_mut().expect("write requests");
    let keep = writes.len() / 2;
    let rest = writes.split_off(keep);
    (request.to_string().into_bytes(), (table, rest))
}

fn body_items(body: &[u8]) -> usize {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| {
            v["RequestItems"]
                .as_object()
                .map(|m| m.values().filter_map(Value::as_array).map(Vec::len).sum())
        })
        .unwrap_or(0)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}
