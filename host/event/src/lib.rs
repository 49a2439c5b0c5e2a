//! API Gateway WebSocket proxy events: decoded with `aws_lambda_events`,
//! routed by `requestContext.eventType`, answered with the Lambda proxy
//! response shape.
//!
//! This is the part of the host that reads untrusted bytes before the guest
//! sees anything, so it is its own crate: the fuzz target links it without
//! compiling wasmtime or the AWS SDK.

pub use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest as Event;
use serde::{Deserialize, Serialize};

/// Longest run of non-space text an error message may echo from the input.
/// serde quotes offending values; a long one may be a token, which must never
/// be echoed to a client or logged.
pub const MAX_ECHOED_RUN: usize = 40;

/// The Lambda proxy response (`{"statusCode":200,"body":"Connected."}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyResponse {
    pub status_code: u16,
    pub body: String,
}

/// Decodes an event from JSON bytes; a bad event is a 400 with the reason.
pub fn decode_event(bytes: &[u8]) -> Result<Event, ProxyResponse> {
    serde_json::from_slice(bytes).map_err(invalid_event)
}

/// Decodes an event already parsed as JSON (the Lambda runtime's payload).
pub fn decode_event_value(value: serde_json::Value) -> Result<Event, ProxyResponse> {
    serde_json::from_value(value).map_err(invalid_event)
}

fn invalid_event(error: serde_json::Error) -> ProxyResponse {
    ProxyResponse {
        status_code: 400,
        body: format!("Invalid event: {}", mask_long_runs(&error.to_string())),
    }
}

/// Replaces every whitespace-separated word longer than [`MAX_ECHOED_RUN`]
/// bytes with `…`. Words, not quoted strings: serde does not escape quotes
/// inside the values it quotes, so quote pairing cannot be trusted, while a
/// token never contains whitespace.
pub fn mask_long_runs(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while !rest.is_empty() {
        let word_end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let (word, after) = rest.split_at(word_end);
        if word.len() > MAX_ECHOED_RUN {
            out.push('…');
        } else {
            out.push_str(word);
        }
        let space_end = after
            .find(|c: char| !c.is_whitespace())
            .unwrap_or(after.len());
        out.push_str(&after[..space_end]);
        rest = &after[space_end..];
    }
    out
}

/// What an event asks the handler to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route<'a> {
    /// `$connect`: verify `id_token` and store the connection.
    Connect {
        /// `""` when the event has none; the guest refuses it (400).
        connection_id: &'a str,
        /// The `idToken` query parameter, if present.
        id_token: Option<&'a str>,
    },
    /// `$disconnect`: delete the connection's records.
    Disconnect { connection_id: &'a str },
    /// Any other event type (MESSAGE, or none): answered 400.
    Unhandled { event_type: &'a str },
}

/// Routes a decoded event by `requestContext.eventType`.
pub fn route(event: &Event) -> Route<'_> {
    let context = &event.request_context;
    let connection_id = context.connection_id.as_deref().unwrap_or_default();
    match context.event_type.as_deref() {
        Some("CONNECT") => Route::Connect {
            connection_id,
            id_token: event.query_string_parameters.first("idToken"),
        },
        Some("DISCONNECT") => Route::Disconnect { connection_id },
        other => Route::Unhandled {
            event_type: other.unwrap_or("(none)"),
        },
    }
}

/// The 400 answer to an event type the handler does not serve.
pub fn unhandled_event_type(event_type: &str) -> ProxyResponse {
    ProxyResponse {
        status_code: 400,
        body: format!("Invalid event type: {}", mask_long_runs(event_type)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_long_words_and_keeps_short_ones_and_spacing() {
        let long = "a".repeat(MAX_ECHOED_RUN + 1);
        let exact = "b".repeat(MAX_ECHOED_RUN);
        let message = format!("invalid type: string \"{long}\",  expected {exact}\n");
        assert_eq!(
            mask_long_runs(&message),
            format!("invalid type: string …  expected {exact}\n")
        );
    }

    #[test]
    fn a_quote_inside_a_value_does_not_unmask_the_rest() {
        // serde prints `string "x"yyyy…"` without escaping the inner quote.
        let secret = format!("x\"{}", "y".repeat(40));
        let bytes = format!(r#"{{"requestContext": {secret:?}}}"#);
        let response = decode_event(bytes.as_bytes()).unwrap_err();
        assert_eq!(response.status_code, 400);
        assert!(
            !response.body.contains("yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"),
            "{}",
            response.body
        );
    }

    #[test]
    fn routes_by_event_type() {
        let event = decode_event(
            br#"{"requestContext":{"eventType":"CONNECT","connectionId":"c1","connectedAt":1,"requestTimeEpoch":1},
                 "queryStringParameters":{"idToken":"t"}}"#,
        )
        .unwrap();
        assert_eq!(
            route(&event),
            Route::Connect {
                connection_id: "c1",
                id_token: Some("t")
            }
        );
    }
}
