//! Where requests come in: the HTTP routes (`http`) behind the accept loop
//! (`server`), the self-hosted
//! WebSocket endpoint (`websocket`), API Gateway events (`events`) and the
//! Lambda entry (`lambda`). Each hands the request to the same
//! [`crate::service::Handler`] and turns its answer into its own shape.

pub mod events;
pub mod http;
pub mod lambda;
pub mod server;
pub mod websocket;

use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

use crate::wit::types::Response;

/// The HTTP status of a policy answer; one the guest could not mean (not a
/// valid status code) is a 500.
pub fn http_status(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// The policy's answer as an HTTP response: its status and its text.
impl IntoResponse for Response {
    fn into_response(self) -> axum::response::Response {
        (
            http_status(self.status),
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            self.body,
        )
            .into_response()
    }
}
