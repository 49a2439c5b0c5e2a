//! API Gateway WebSocket proxy events: decoded with `aws_lambda_events`,
//! dispatched by `requestContext.eventType`, answered with the Lambda proxy
//! response shape. One code path for `POST /events`, `handle-event` and
//! Lambda.

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use serde::{Deserialize, Serialize};

use crate::component::Reply;
use crate::service::{Handler, new_request_id};

/// The Lambda proxy response (`{"statusCode":200,"body":"Connected."}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyResponse {
    pub status_code: u16,
    pub body: String,
}

impl From<Reply> for ProxyResponse {
    fn from(reply: Reply) -> Self {
        Self {
            status_code: reply.status,
            body: reply.body,
        }
    }
}

/// Decodes an event from JSON bytes; a bad event is a 400 with the reason.
pub fn decode_event(bytes: &[u8]) -> Result<ApiGatewayWebsocketProxyRequest, ProxyResponse> {
    serde_json::from_slice(bytes).map_err(invalid_event)
}

/// Decodes an event already parsed as JSON (the Lambda runtime's payload).
pub fn decode_event_value(
    value: serde_json::Value,
) -> Result<ApiGatewayWebsocketProxyRequest, ProxyResponse> {
    serde_json::from_value(value).map_err(invalid_event)
}

fn invalid_event(error: serde_json::Error) -> ProxyResponse {
    ProxyResponse {
        status_code: 400,
        body: format!("Invalid event: {}", mask_long_strings(&error.to_string())),
    }
}

/// serde quotes offending values in its messages; a long one may be a token,
/// which must not be echoed or logged. Quoted text over 32 bytes is masked.
fn mask_long_strings(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut parts = message.split('"');
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    for (i, part) in parts.enumerate() {
        out.push('"');
        let quoted = i % 2 == 0;
        if quoted && part.len() > 32 {
            out.push('…');
        } else {
            out.push_str(part);
        }
    }
    out
}

/// Handles one decoded event. `request_id`: the Lambda request id when there
/// is one; else API Gateway's request id; else a fresh one.
pub async fn handle_event(
    handler: &Handler,
    event: &ApiGatewayWebsocketProxyRequest,
    request_id: Option<&str>,
) -> ProxyResponse {
    let context = &event.request_context;
    let request_id = request_id
        .map(str::to_owned)
        .or_else(|| context.request_id.clone())
        .unwrap_or_else(new_request_id);
    // A missing connection id reaches the guest as "", which it refuses (400).
    let connection_id = context.connection_id.as_deref().unwrap_or_default();
    match context.event_type.as_deref() {
        Some("CONNECT") => {
            let token = event.query_string_parameters.first("idToken");
            handler
                .connect(&request_id, connection_id, token)
                .await
                .into()
        }
        Some("DISCONNECT") => handler.disconnect(&request_id, connection_id).await.into(),
        other => {
            let event_type = other.unwrap_or("(none)");
            tracing::info!(request_id, event_type, "unhandled event type");
            ProxyResponse {
                status_code: 400,
                body: format!("Invalid event type: {event_type}"),
            }
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
