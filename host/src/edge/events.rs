//! API Gateway WebSocket proxy events, handled: decoding and routing live in
//! the `gitgazer-ws-event` crate (fuzzed on its own); this module runs the
//! routed request through the [`Handler`]. One code path for `POST /events`,
//! `handle-event` and Lambda.

use gitgazer_ws_event::{
    BEARER_PROTOCOL, Route, SEC_WEBSOCKET_PROTOCOL, execute_api_endpoint, route,
    unhandled_event_type,
};
pub use gitgazer_ws_event::{Event, ProxyResponse, decode_event, decode_event_value};

use crate::service::{Handler, new_request_id};
use crate::wit::types::Response;

impl From<Response> for ProxyResponse {
    fn from(reply: Response) -> Self {
        Self {
            status_code: reply.status,
            body: reply.body,
            ..Self::default()
        }
    }
}

/// Handles one decoded event. `request_id`: the Lambda request id when there
/// is one; else API Gateway's request id; else a fresh one.
pub async fn handle_event(
    handler: &Handler,
    event: &Event,
    request_id: Option<&str>,
) -> ProxyResponse {
    let request_id = request_id
        .map(str::to_owned)
        .or_else(|| event.request_context.request_id.clone())
        .unwrap_or_else(new_request_id);
    match route(event) {
        Route::Connect {
            connection_id,
            id_token,
            bearer,
        } => {
            // Where delivery reaches this connection: its stage's
            // Management API, in the region this code runs in (Lambda sets
            // AWS_REGION; an API and its function share a region, save for
            // rare cross-region integrations, whose records then go unrouted).
            let endpoint = std::env::var("AWS_REGION")
                .ok()
                .and_then(|region| execute_api_endpoint(event, &region));
            let mut response: ProxyResponse = handler
                .connect_as(&request_id, connection_id, id_token, endpoint.as_deref())
                .await
                .0
                .into();
            if bearer && response.status_code == 200 {
                // API Gateway passes this to the client's handshake.
                response
                    .headers
                    .insert(SEC_WEBSOCKET_PROTOCOL.into(), BEARER_PROTOCOL.into());
            }
            response
        }
        Route::Disconnect { connection_id } => {
            handler.disconnect(&request_id, connection_id).await.into()
        }
        Route::Unhandled { event_type } => {
            let response = unhandled_event_type(event_type);
            tracing::info!(request_id, body = response.body, "unhandled event type");
            response
        }
    }
}

/// Decodes and handles an event given as JSON bytes.
pub async fn handle_event_json(
    handler: &Handler,
    bytes: &[u8],
    request_id: Option<&str>,
) -> ProxyResponse {
    match decode_event(bytes) {
        Ok(event) => handle_event(handler, &event, request_id).await,
        Err(response) => response,
    }
}
