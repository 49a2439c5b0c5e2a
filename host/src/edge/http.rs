//! The HTTP server: `app(state)` builds the router so tests can drive it
//! without a socket (`tower::ServiceExt::oneshot`).
//!
//! Query strings carry tokens: the access log writes the path only.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;

use super::events::handle_event_json;
use super::http_status;
use super::websocket::{self, Sockets};
use crate::clock::unix_now;
use crate::delivery::nodes::Node;
use crate::delivery::{
    self, Closing, DeliveryError, DeliveryOptions, MAX_MESSAGE_BYTES, Routes, SendError,
};
use crate::dev::{DevClaims, DevSigner};
use crate::service::{Handler, new_request_id};
use crate::telemetry::{self, Gauges};
use crate::wit::types::Response as PolicyResponse;

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
    /// The self-hosted WebSocket endpoint's open sockets.
    pub sockets: Arc<Sockets>,
    /// This node among others: its endpoint, incarnation and management
    /// token.
    pub node: Arc<Node>,
    /// Where `POST /integrations/{id}/events` posts each record's
    /// connection (by its endpoint).
    pub routes: Arc<Routes>,
    /// Renders `GET /metrics`; `None` when no recorder is installed.
    pub metrics: Option<PrometheusHandle>,
}

/// The public listener: what browsers need, and nothing else. In dev mode
/// (bound to loopback) also the test routes and `/dev/*`.
pub fn public_app(state: AppState) -> Router {
    let mut router = Router::new()
        .route("/ws", get(websocket))
        .route("/healthz", get(|| async { "ok" }));
    if state.dev.is_some() {
        router = router
            .merge(test_routes())
            .route("/dev/jwks.json", get(dev_jwks))
            .route("/dev/token", get(dev_token));
    }
    router
        .layer(middleware::from_fn(access_log))
        .with_state(state)
}

/// The management listener: delivery, the Management API shape for this
/// host's sockets (also under `/n/{incarnation}`, the path other nodes
/// use), status, and in Cognito mode the test routes. A peer address is no
/// identity on the public port (a reverse proxy on the same host makes
/// every request loopback), so none of this is served there. Here it
/// answers loopback peers only, or, with a management token, every request
/// that carries it (loopback included).
pub fn management_app(state: AppState) -> Router {
    let mut router = Router::new()
        .route(
            "/@connections/{connection_id}",
            post(post_to_connection).delete(delete_connection),
        )
        .route(
            "/n/{incarnation}/@connections/{connection_id}",
            post(post_to_incarnation).delete(delete_in_incarnation),
        )
        .route("/integrations/{integration_id}/events", post(deliver_event))
        .layer(DefaultBodyLimit::max(MAX_MESSAGE_BYTES))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/readyz", get(readyz));
    if state.dev.is_none() {
        router = router.merge(test_routes());
    }
    router
        .layer(middleware::from_fn_with_state(
            state.clone(),
            admit_management,
        ))
        .layer(middleware::from_fn(access_log))
        .with_state(state)
}

/// CONNECT and DISCONNECT by hand, and API Gateway events: for tests and
/// operators, never for browsers.
fn test_routes() -> Router<AppState> {
    Router::new()
        .route("/connect", get(connect))
        .route("/disconnect", get(disconnect))
        .route(
            "/events",
            post(events).layer(DefaultBodyLimit::max(MAX_BODY_BYTES)),
        )
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WebSocketParams {
    id_token: Option<String>,
}

/// `GET /ws?idToken=…` or with `Sec-WebSocket-Protocol: bearer, <token>`.
async fn websocket(
    State(state): State<AppState>,
    Query(params): Query<WebSocketParams>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    websocket::upgrade(
        state.handler,
        state.sockets,
        upgrade,
        &headers,
        params.id_token,
        state.node.endpoint(),
    )
    .await
}

/// API Gateway's `PostToConnection`: 200 sent, 410 no such socket.
async fn post_to_connection(
    State(state): State<AppState>,
    Path(connection_id): Path<String>,
    body: Bytes,
) -> Response {
    management_reply(state.sockets.send(&connection_id, &body), StatusCode::OK)
}

/// `DELETE …/@connections/{id}[?code=…]`.
#[derive(Deserialize)]
struct DeleteParams {
    /// The close code: one of [`Closing`]'s (4001, 4003); none: 1000.
    code: Option<u16>,
}

/// API Gateway's `DeleteConnection`: 204 closing, 410 no such socket. Our
/// extension, `?code=4001|4003`, closes with that code and its reason (how
/// `evict` ends another node's socket).
async fn delete_connection(
    State(state): State<AppState>,
    Path(connection_id): Path<String>,
    Query(params): Query<DeleteParams>,
) -> Response {
    let why = match params.code.map(Closing::from_code) {
        None => None,
        Some(Some(closing)) => Some(closing),
        Some(None) => {
            let message = serde_json::json!({ "message": "code must be 4001 or 4003" });
            return (StatusCode::BAD_REQUEST, axum::Json(message)).into_response();
        }
    };
    let result = if state.sockets.close(&connection_id, why) {
        Ok(())
    } else {
        Err(SendError::Gone)
    };
    management_reply(result, StatusCode::NO_CONTENT)
}

/// A post from another node: as `/@connections/{id}` for this incarnation;
/// 410 for an earlier one (its sockets died with its process).
async fn post_to_incarnation(
    State(state): State<AppState>,
    Path((incarnation, connection_id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    if incarnation != state.node.incarnation() {
        return management_reply(Err(SendError::Gone), StatusCode::OK);
    }
    post_to_connection(State(state), Path(connection_id), body).await
}

async fn delete_in_incarnation(
    State(state): State<AppState>,
    Path((incarnation, connection_id)): Path<(String, String)>,
    params: Query<DeleteParams>,
) -> Response {
    if incarnation != state.node.incarnation() {
        return management_reply(Err(SendError::Gone), StatusCode::OK);
    }
    delete_connection(State(state), Path(connection_id), params).await
}

/// API Gateway's error shape: `{"message": …}`.
fn management_reply(result: Result<(), SendError>, ok: StatusCode) -> Response {
    let (status, message) = match result {
        Ok(()) => return ok.into_response(),
        Err(SendError::Gone) => (StatusCode::GONE, "Gone".to_owned()),
        Err(SendError::Failed(reason)) => (StatusCode::PAYLOAD_TOO_LARGE, reason),
        Err(SendError::Forbidden(reason)) => (StatusCode::FORBIDDEN, reason),
        Err(SendError::Retryable(reason) | SendError::Unreachable(reason)) => {
            (StatusCode::SERVICE_UNAVAILABLE, reason)
        }
    };
    (
        status,
        axum::Json(serde_json::json!({ "message": message })),
    )
        .into_response()
}

/// `POST /integrations/{id}/events`: the body to every connection of the
/// integration; the counts as JSON.
async fn deliver_event(
    State(state): State<AppState>,
    Path(integration_id): Path<String>,
    body: Bytes,
) -> Response {
    let result = delivery::deliver(
        state.handler.store(),
        &state.routes,
        &integration_id,
        body,
        unix_now(),
        &DeliveryOptions {
            auth_grace: state.sockets.limits().auth_grace,
            ..DeliveryOptions::default()
        },
    )
    .await;
    match result {
        Ok(report) => axum::Json(report).into_response(),
        Err(error @ DeliveryError::TooLarge { .. }) => {
            (StatusCode::PAYLOAD_TOO_LARGE, error.to_string()).into_response()
        }
        Err(error @ DeliveryError::NotAnIntegration) => {
            (StatusCode::BAD_REQUEST, error.to_string()).into_response()
        }
        Err(error) => {
            tracing::error!(integration_id, %error, "delivery failed");
            PolicyResponse::internal_error().into_response()
        }
    }
}

/// Loopback, also as an IPv4-mapped IPv6 address (`::ffff:127.0.0.1`: a
/// local IPv4 client of a listener bound to `::`).
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// With a management token: 401 for a request without it (loopback too).
/// Without one: loopback peers only.
async fn admit_management(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(token) = state.node.token() else {
        return loopback_only(request, next).await;
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|value| value.as_bytes());
    if !token.admits(presented) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            axum::Json(serde_json::json!({ "message": "Unauthorized" })),
        )
            .into_response();
    }
    next.run(request).await
}

/// 403 for any peer but loopback (and when the peer is unknown).
async fn loopback_only(request: Request, next: Next) -> Response {
    use axum::extract::FromRequestParts;
    let (mut parts, body) = request.into_parts();
    let loopback = ConnectInfo::<SocketAddr>::from_request_parts(&mut parts, &())
        .await
        .is_ok_and(|ConnectInfo(peer)| is_loopback(peer.ip()));
    let request = Request::from_parts(parts, body);
    if !loopback {
        return (
            StatusCode::FORBIDDEN,
            axum::Json(serde_json::json!({ "message": "Forbidden" })),
        )
            .into_response();
    }
    next.run(request).await
}

/// Operational state: rollbacks still pending in the background (a test or an
/// operator waits for 0 before comparing the store with what clients saw).
async fn status(State(state): State<AppState>) -> Response {
    axum::Json(serde_json::json!({
        "pendingRollbacks": state.handler.pending_rollbacks(),
    }))
    .into_response()
}

/// Prometheus text format; gauges read from the running parts first.
async fn metrics(State(state): State<AppState>) -> Response {
    let Some(handle) = &state.metrics else {
        return StatusCode::NOT_FOUND.into_response();
    };
    telemetry::set_gauges(&Gauges {
        sockets_open: state.sockets.len(),
        socket_queued_bytes: state.sockets.queued_bytes(),
        pending_rollbacks: state.handler.pending_rollbacks(),
        policy_instances: state.handler.instances_in_use(),
    });
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
        .into_response()
}

/// Readiness, for a load balancer: 200 once the key set is loaded and the
/// store answers; else 503 with the reason. `/healthz` stays liveness.
async fn readyz(State(state): State<AppState>) -> Response {
    match state.handler.readiness().await {
        Ok(()) => axum::Json(serde_json::json!({ "ready": true })).into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({ "ready": false, "reason": reason })),
        )
            .into_response(),
    }
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
    state
        .handler
        .connect(
            &new_request_id(),
            &connection_id,
            params.id_token.as_deref(),
        )
        .await
        .into_response()
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
    state
        .handler
        .disconnect(&new_request_id(), &connection_id)
        .await
        .into_response()
}

/// An API Gateway WebSocket event in; the Lambda proxy response out, with
/// the HTTP status mirroring `statusCode`.
async fn events(State(state): State<AppState>, body: Bytes) -> Response {
    let response = handle_event_json(&state.handler, &body, None).await;
    (http_status(response.status_code), axum::Json(response)).into_response()
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

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::extract::connect_info::MockConnectInfo;
    use axum::routing::post;
    use tower::ServiceExt;

    use super::*;

    async fn status_from(peer: Option<&str>) -> StatusCode {
        let router = Router::new()
            .route("/@connections/{id}", post(|| async { "sent" }))
            .layer(middleware::from_fn(loopback_only));
        let router = match peer {
            Some(peer) => router.layer(MockConnectInfo(peer.parse::<SocketAddr>().unwrap())),
            None => router,
        };
        let request = axum::http::Request::post("/@connections/abc")
            .body(Body::from("x"))
            .unwrap();
        router.oneshot(request).await.unwrap().status()
    }

    #[tokio::test]
    async fn management_routes_answer_loopback_peers_only() {
        assert_eq!(status_from(Some("127.0.0.1:5000")).await, StatusCode::OK);
        assert_eq!(status_from(Some("[::1]:5000")).await, StatusCode::OK);
        assert_eq!(
            status_from(Some("[::ffff:127.0.0.1]:5000")).await,
            StatusCode::OK
        );
        assert_eq!(
            status_from(Some("[::ffff:10.0.0.7]:5000")).await,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            status_from(Some("10.0.0.7:5000")).await,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            status_from(Some("[2001:db8::1]:5000")).await,
            StatusCode::FORBIDDEN
        );
        // Unknown peer (no connect info): refused, never assumed local.
        assert_eq!(status_from(None).await, StatusCode::FORBIDDEN);
    }
}
