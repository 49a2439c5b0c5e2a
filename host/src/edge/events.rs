//! API Gateway WebSocket proxy events, handled: decoding and routing live in
//! the `gitgazer-ws-event` crate (fuzzed on its own); this module runs the
//! routed request through the [`Handler`]. One code path for `POST /events`,
//! `handle-event` and Lambda.

use gitgazer_ws_event::{
    BEARER_PROTOCOL, Route, SEC_WEBSOCKET_PROTOCOL, execute_api_endpoint, route,
    unhandled_event_type,
};
pub use gitgazer_ws_event::{Event, ProxyResponse, decode_event, decode_event_value};

use std::time::Duration;

use bytes::Bytes;
use gitgazer_ws_event::{MAX_REFRESH_FRAME_BYTES, refresh_frame_token};

use crate::delivery::{ConnectionSender, ManagementApi};
use crate::service::{Current, Handler, new_request_id};
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
        Route::Refresh {
            connection_id,
            body,
        } => {
            // Boxed: its future (store, policy and Management API calls)
            // would make every caller's future too deep to lay out.
            Box::pin(refresh(handler, event, &request_id, connection_id, body)).await
        }
        Route::Unhandled { event_type } => {
            let response = unhandled_event_type(event_type);
            tracing::info!(request_id, body = response.body, "unhandled event type");
            response
        }
    }
}

fn proxy(status_code: u16, body: &str) -> ProxyResponse {
    ProxyResponse {
        status_code,
        body: body.to_owned(),
        ..ProxyResponse::default()
    }
}

/// A refresh through API Gateway: decided by the policy against one of the
/// connection's records (nothing outlives an event here), answered by
/// posting to the connection: the `refreshed` frame, or a last
/// `{"type":"close","code":C,"reason":R}` and `DeleteConnection`. The proxy
/// response says the same for logs (API Gateway shows it to no client
/// without a route response).
async fn refresh(
    handler: &Handler,
    event: &Event,
    request_id: &str,
    connection_id: &str,
    body: &str,
) -> ProxyResponse {
    if body.len() > MAX_REFRESH_FRAME_BYTES {
        tracing::info!(
            request_id,
            connection_id,
            bytes = body.len(),
            "refresh refused: too large"
        );
        return proxy(413, "Refresh too large.");
    }
    let Some(id_token) = refresh_frame_token(body) else {
        tracing::info!(
            request_id,
            connection_id,
            "refresh refused: not a refresh frame"
        );
        return proxy(400, "Invalid refresh.");
    };
    let stage = std::env::var("AWS_REGION")
        .ok()
        .and_then(|region| execute_api_endpoint(event, &region));
    let Some(answer_to) = handler
        .answer_endpoint()
        .map(str::to_owned)
        .or_else(|| stage.clone())
    else {
        tracing::error!(
            request_id,
            connection_id,
            "refresh: no Management API endpoint to answer through"
        );
        return proxy(500, crate::policy::INTERNAL_ERROR_BODY);
    };
    let store = handler.store();
    let record = match store.keys_of(connection_id).await {
        Ok(keys) => match keys.first() {
            Some(key) => store.record(key).await,
            None => Ok(None),
        },
        Err(error) => Err(error),
    };
    let record = match record {
        Ok(record) => record,
        Err(error) => {
            tracing::error!(request_id, connection_id, %error, "refresh: reading the connection's records");
            return proxy(500, crate::policy::INTERNAL_ERROR_BODY);
        }
    };
    let connected_at = record.as_ref().map_or_else(
        || humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        |record| record.connected_at.clone(),
    );
    let reply = handler
        .refresh(
            request_id,
            connection_id,
            id_token.as_deref(),
            Current::Record(record),
            &connected_at,
            stage.as_deref(),
        )
        .await;
    let api = match ManagementApi::connect(&answer_to, ANSWER_TIMEOUT).await {
        Ok(api) => api,
        Err(error) => {
            tracing::error!(request_id, connection_id, %error, "refresh: the Management API");
            return proxy(500, crate::policy::INTERNAL_ERROR_BODY);
        }
    };
    if reply.code == 1000 {
        if let Err(error) = api
            .post(connection_id, &Bytes::from(reply.body.clone()))
            .await
        {
            tracing::warn!(
                request_id,
                connection_id,
                ?error,
                "refresh: posting the answer"
            );
        }
        return proxy(200, &reply.body);
    }
    let close = format!(
        r#"{{"type":"close","code":{},"reason":{}}}"#,
        reply.code,
        serde_json::Value::from(reply.body.as_str())
    );
    if let Err(error) = api.post(connection_id, &Bytes::from(close)).await {
        tracing::info!(
            request_id,
            connection_id,
            ?error,
            "refresh: posting the close message"
        );
    }
    if let Err(error) = api.delete_connection(connection_id).await {
        tracing::warn!(
            request_id,
            connection_id,
            ?error,
            "refresh: DeleteConnection"
        );
    }
    let status = match reply.code {
        4001 => 401,
        4003 => 403,
        _ => 500,
    };
    proxy(status, &reply.body)
}

/// Deadline of one Management API call answering a refresh.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

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
