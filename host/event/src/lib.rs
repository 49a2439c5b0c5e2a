//! API Gateway WebSocket proxy events: decoded with `aws_lambda_events`,
//! routed by `requestContext.eventType`, answered with the Lambda proxy
//! response shape.
//!
//! This is the part of the host that reads untrusted bytes before the guest
//! sees anything, so it is its own crate: the fuzz target links it without
//! compiling wasmtime or the AWS SDK.

use std::collections::BTreeMap;

pub use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest as Event;
use serde::{Deserialize, Serialize};

/// The subprotocol that carries the token: `Sec-WebSocket-Protocol: bearer, <token>`.
/// A browser cannot set headers on a WebSocket, but it can offer
/// subprotocols; this keeps the token out of URLs and access logs.
pub const BEARER_PROTOCOL: &str = "bearer";

/// The header that offers (request) and selects (response) subprotocols.
pub const SEC_WEBSOCKET_PROTOCOL: &str = "Sec-WebSocket-Protocol";

/// Longest run of non-space text an error message may echo from the input.
/// serde quotes offending values; a long one may be a token, which must never
/// be echoed to a client or logged.
pub const MAX_ECHOED_RUN: usize = 40;

/// The Lambda proxy response (`{"statusCode":200,"body":"Connected."}`);
/// `headers` only when there are some (a CONNECT that selects `bearer`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyResponse {
    pub status_code: u16,
    pub body: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
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
        ..ProxyResponse::default()
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
        /// The token after `bearer` in `Sec-WebSocket-Protocol` when the
        /// client offered that subprotocol, else the `idToken` query
        /// parameter, if present.
        id_token: Option<&'a str>,
        /// The client offered `bearer`: a 200 must select it (browsers
        /// fail a connection whose offered subprotocols are all ignored).
        bearer: bool,
    },
    /// `$disconnect`: delete the connection's records.
    Disconnect { connection_id: &'a str },
    /// A MESSAGE routed `refresh` (route selection `$request.body.action`):
    /// an in-band token refresh; `body` as sent (possibly empty).
    Refresh {
        connection_id: &'a str,
        body: &'a str,
    },
    /// Any other event type (other MESSAGEs, or none): answered 400.
    Unhandled { event_type: &'a str },
}

/// The Management API base URL of the stage an event came through,
/// `https://{apiId}.execute-api.{region}.amazonaws.com/{stage}`, from the
/// request context's `apiId` and `stage` (not `domainName`: a custom
/// domain's path mapping may differ) and the region API Gateway runs in.
/// `None` when a part is missing or not of the characters AWS uses.
pub fn execute_api_endpoint(event: &Event, region: &str) -> Option<String> {
    let context = &event.request_context;
    let api_id = context.apiid.as_deref()?;
    let stage = context.stage.as_deref()?;
    let plain = |text: &str, extra: &[u8]| {
        !text.is_empty()
            && text.len() <= 128
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
    };
    (plain(api_id, b"") && plain(stage, b"-_") && plain(region, b"-"))
        .then(|| format!("https://{api_id}.execute-api.{region}.amazonaws.com/{stage}"))
}

/// Routes a decoded event by `requestContext.eventType`.
pub fn route(event: &Event) -> Route<'_> {
    let context = &event.request_context;
    let connection_id = context.connection_id.as_deref().unwrap_or_default();
    match context.event_type.as_deref() {
        Some("CONNECT") => {
            // API Gateway passes the header in `headers` and in
            // `multiValueHeaders`; either will do.
            let offered = if event.headers.contains_key(SEC_WEBSOCKET_PROTOCOL) {
                &event.headers
            } else {
                &event.multi_value_headers
            };
            let values = offered
                .get_all(SEC_WEBSOCKET_PROTOCOL)
                .iter()
                .filter_map(|value| value.to_str().ok());
            match offered_bearer_token(values) {
                Some(id_token) => Route::Connect {
                    connection_id,
                    id_token,
                    bearer: true,
                },
                None => Route::Connect {
                    connection_id,
                    id_token: event.query_string_parameters.first("idToken"),
                    bearer: false,
                },
            }
        }
        Some("DISCONNECT") => Route::Disconnect { connection_id },
        Some("MESSAGE") if context.route_key.as_deref() == Some("refresh") => Route::Refresh {
            connection_id,
            body: event.body.as_deref().unwrap_or_default(),
        },
        other => Route::Unhandled {
            event_type: other.unwrap_or("(none)"),
        },
    }
}

/// A refresh frame is at most this long (16 KiB).
pub const MAX_REFRESH_FRAME_BYTES: usize = 16 * 1024;

/// The token of a refresh frame, `{"action":"refresh","idToken":"…"}`
/// (`Some(None)`: a refresh without a string `idToken`, refused as a missing
/// token); `None` for anything else.
pub fn refresh_frame_token(text: &str) -> Option<Option<String>> {
    let frame: serde_json::Value = serde_json::from_str(text).ok()?;
    (frame.get("action")?.as_str()? == "refresh")
        .then(|| frame.get("idToken")?.as_str().map(str::to_owned))
}

/// The token offered as `bearer, <token>` among `Sec-WebSocket-Protocol`
/// header values (comma-separated, any number of headers): `None` when
/// `bearer` is not offered, `Some(None)` when nothing follows it.
pub fn offered_bearer_token<'a>(
    header_values: impl IntoIterator<Item = &'a str>,
) -> Option<Option<&'a str>> {
    let mut offered = header_values
        .into_iter()
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|protocol| !protocol.is_empty());
    offered.find(|protocol| protocol.eq_ignore_ascii_case(BEARER_PROTOCOL))?;
    Some(offered.next())
}

/// The 400 answer to an event type the handler does not serve.
pub fn unhandled_event_type(event_type: &str) -> ProxyResponse {
    ProxyResponse {
        status_code: 400,
        body: format!("Invalid event type: {}", mask_long_runs(event_type)),
        ..ProxyResponse::default()
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
                id_token: Some("t"),
                bearer: false,
            }
        );
    }

    #[test]
    fn the_execute_api_endpoint_comes_from_api_id_stage_and_region() {
        let event = |context: &str| {
            decode_event(
                format!(
                    r#"{{"requestContext":{{"eventType":"CONNECT","connectionId":"c1","connectedAt":1,"requestTimeEpoch":1{context}}}}}"#
                )
                .as_bytes(),
            )
            .unwrap()
        };
        let custom_domain =
            event(r#","apiId":"abc123","stage":"prod","domainName":"ws.example.com""#);
        assert_eq!(
            execute_api_endpoint(&custom_domain, "eu-west-1").as_deref(),
            Some("https://abc123.execute-api.eu-west-1.amazonaws.com/prod")
        );
        assert_eq!(
            execute_api_endpoint(&event(r#","stage":"prod""#), "eu-west-1"),
            None
        );
        assert_eq!(
            execute_api_endpoint(&event(r#","apiId":"abc123""#), "eu-west-1"),
            None
        );
        for bad in [
            r#","apiId":"abc/../x","stage":"prod""#,
            r#","apiId":"abc123","stage":"pr od""#,
            r#","apiId":"","stage":"prod""#,
        ] {
            assert_eq!(
                execute_api_endpoint(&event(bad), "eu-west-1"),
                None,
                "{bad}"
            );
        }
        assert_eq!(
            execute_api_endpoint(&custom_domain, "eu-west-1.evil.com/"),
            None
        );
    }

    #[test]
    fn a_bearer_subprotocol_wins_over_the_query_in_either_header_map() {
        for headers in [
            r#""headers":{"Sec-WebSocket-Protocol":"bearer, from-header"}"#,
            r#""multiValueHeaders":{"sec-websocket-protocol":["bearer, from-header"]}"#,
        ] {
            let event = decode_event(
                format!(
                    r#"{{"requestContext":{{"eventType":"CONNECT","connectionId":"c1","connectedAt":1,"requestTimeEpoch":1}},
                        "queryStringParameters":{{"idToken":"from-query"}},{headers}}}"#
                )
                .as_bytes(),
            )
            .unwrap();
            assert_eq!(
                route(&event),
                Route::Connect {
                    connection_id: "c1",
                    id_token: Some("from-header"),
                    bearer: true,
                },
                "{headers}"
            );
        }
    }

    #[test]
    fn bearer_tokens_are_read_from_comma_separated_offers() {
        assert_eq!(offered_bearer_token(["bearer, t1"]), Some(Some("t1")));
        assert_eq!(
            offered_bearer_token(["chat", "Bearer,t2 , x"]),
            Some(Some("t2"))
        );
        assert_eq!(offered_bearer_token(["bearer"]), Some(None));
        assert_eq!(offered_bearer_token(["bearer, "]), Some(None));
        assert_eq!(offered_bearer_token(["chat, t3"]), None);
        assert_eq!(offered_bearer_token([]), None);
    }
}
