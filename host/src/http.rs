//! The HTTP server: `app(state)` builds the router so tests can drive it
//! without a socket (`tower::ServiceExt::oneshot`).
//!
//! Query strings carry tokens: the access log writes the path only.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::component::Reply;
use crate::dev::{DevClaims, DevSigner};
use crate::events::handle_event_json;
use crate::service::{Handler, new_request_id, unix_now};

/// Largest request body accepted (API Gateway events are a few KiB).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// The connection id when `/connect` or `/disconnect` is called without one.
pub const DEFAULT_CONNECTION_ID: &str = "dev-connection";
/// Longest lifetime of a dev token.
const MAX_DEV_TOKEN_TTL: u64 = 7 * 24 * 3600;

#[derive(Clone)]
pub struct AppState {
    pub handler: Handler,
    /// Present in dev mode only: `/dev/*` exists only then.
    pub dev: Option<Arc<DevSigner>>,
}

pub fn app(state: AppState) -> Router {
    let mut router = Router::new()
        .route("/connect", get(connect))
        .route("/disconnect", get(disconnect))
        .route("/events", post(events))
        .route("/healthz", get(|| async { "ok" }))
        .route("/status", get(status));
    if state.dev.is_some() {
        router = router
            .route("/dev/jwks.json", get(dev_jwks))
            .route("/dev/token", get(dev_token));
    }
    router
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(access_log))
        .with_state(state)
}

/// Operational state: rollbacks still pending in the background (a test or an
/// operator waits for 0 before comparing the store with what clients saw).
async fn status(State(state): State<AppState>) -> Response {
    axum::Json(serde_json::json!({
        "pendingRollbacks": state.handler.pending_rollbacks(),
    }))
    .into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConnectParams {
    id_token: Option<String>,
    connection_id: Option<String>,
}

async fn connect(State(state): State<AppState>, Query(params): Query<ConnectParams>) -> Response {
    let connection_id = params
        .connection_id
        .unwrap_or_else(|| DEFAULT_CONNECTION_ID.into());
    let reply = state
        .handler
        .connect(
            &new_request_id(),
            &connection_id,
            params.id_token.as_deref(),
        )
        .await;
    text_reply(reply)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DisconnectParams {
    connection_id: Option<String>,
}

async fn disconnect(
    State(state): State<AppState>,
    Query(params): Query<DisconnectParams>,
) -> Response {
    let connection_id = params
        .connection_id
        .unwrap_or_else(|| DEFAULT_CONNECTION_ID.into());
    let reply = state
        .handler
        .disconnect(&new_request_id(), &connection_id)
        .await;
    text_reply(reply)
}

/// An API Gateway WebSocket event in; the Lambda proxy response out, with
/// the HTTP status mirroring `statusCode`.
async fn events(State(state): State<AppState>, body: Bytes) -> Response {
    let response = handle_event_json(&state.handler, &body, None).await;
    let status = StatusCode::from_u16(response.status_code).unwrap_or(StatusCode::OK);
    (status, axum::Json(response)).into_response()
}

async fn dev_jwks(State(state): State<AppState>) -> Response {
    match state.dev {
        Some(dev) => (
            [(header::CONTENT_TYPE, "application/json")],
            dev.jwks().to_owned(),
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

#[derive(Deserialize)]
struct DevTokenParams {
    sub: Option<String>,
    /// Comma-separated; `groups=` (empty) mints a token without groups.
    groups: Option<String>,
    ttl: Option<u64>,
}

async fn dev_token(
    State(state): State<AppState>,
    Query(params): Query<DevTokenParams>,
) -> Response {
    let Some(dev) = state.dev else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let ttl_seconds = params.ttl.unwrap_or(3600);
    if ttl_seconds == 0 || ttl_seconds > MAX_DEV_TOKEN_TTL {
        return (
            StatusCode::BAD_REQUEST,
            format!("ttl must be between 1 and {MAX_DEV_TOKEN_TTL} seconds"),
        )
            .into_response();
    }
    let groups = params
        .groups
        .unwrap_or_else(|| "dev-integration".into())
        .split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .map(str::to_owned)
        .collect();
    let claims = DevClaims {
        sub: params.sub.unwrap_or_else(|| "dev-user".into()),
        groups,
        ttl_seconds,
    };
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        dev.mint(&claims, unix_now()),
    )
        .into_response()
}

fn text_reply(reply: Reply) -> Response {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        reply.body,
    )
        .into_response()
}

/// Method, path (never the query: it may hold a token), status, latency.
async fn access_log(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    tracing::debug!(
        %method,
        path,
        status = response.status().as_u16(),
        elapsed_us = started.elapsed().as_micros() as u64,
        "http"
    );
    response
}
