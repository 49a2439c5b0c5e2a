//! CONNECT and DISCONNECT decisions: status codes and exact client bodies.
//!
//! Bodies never carry internals; detail (store errors, rejection classes) goes
//! to the log capability. Tokens are never logged.

use crate::prelude::*;

use crate::capabilities::{Capabilities, Level};
use crate::rfc3339;
use crate::types::{
    ConnectRequest, ConnectionRecord, DisconnectRequest, Rejection, Response, StoreError,
};
use crate::verify::verify_token_full;

/// Connection ids longer than this are refused. API Gateway's are 16 chars.
pub const MAX_CONNECTION_ID_BYTES: usize = 128;

/// Exact response bodies, shared with tests.
pub mod body {
    use crate::prelude::*;

    pub const CONNECTED: &str = "Connected.";
    pub const NO_TOKEN: &str = "Unauthorized: No authentication token provided";
    pub const INVALID_TOKEN: &str = "Unauthorized: Invalid authentication token";
    pub const NO_GROUPS: &str = "Connection denied: No authorized groups found";
    pub const NOTHING_TO_DISCONNECT: &str = "No records to disconnect.";
    pub const BAD_REQUEST: &str = "Bad request.";
    pub const TOO_MANY_REQUESTS: &str = "Too many requests. Try again later.";
    pub const NOT_FOUND: &str = "Not found.";
    pub const INTERNAL_ERROR: &str = "Internal server error.";
    pub const INVALID_CONNECTION_ID: &str = "Invalid connection id.";

    /// The body of a successful DISCONNECT.
    pub fn disconnected(removed: u32) -> String {
        format!("Disconnected. Removed {removed} records.")
    }
}

impl Response {
    fn new(status: u16, body: impl Into<String>) -> Self {
        Response {
            status,
            body: body.into(),
            rejection: None,
        }
    }

    fn refused(rejection: Rejection, status: u16, body: &str) -> Self {
        Response {
            rejection: Some(rejection),
            ..Response::new(status, body)
        }
    }
}

/// Decides a CONNECT: verify the token, then store one record per group in a
/// single all-or-nothing `put_all`.
pub fn handle_connect(request: &ConnectRequest, caps: &mut impl Capabilities) -> Response {
    if !is_valid_connection_id(&request.connection_id) {
        caps.log(Level::Warn, "connect refused: invalid connection id");
        return Response::new(400, body::INVALID_CONNECTION_ID);
    }
    let token = request.id_token.as_deref().unwrap_or("");
    let verified = match verify_token_full(token, request.now, &request.settings, caps) {
        Ok(verified) => verified,
        Err(rejection) => {
            caps.log(
                Level::Info,
                &format!("connect denied: token {}", rejection.as_str()),
            );
            let (status, text) = match rejection {
                Rejection::Missing => (401, body::NO_TOKEN),
                // Not the client's fault: the host could not supply keys.
                Rejection::KeySetUnavailable => (500, body::INTERNAL_ERROR),
                _ => (401, body::INVALID_TOKEN),
            };
            return Response::refused(rejection, status, text);
        }
    };
    let identity = &verified.identity;
    if identity.groups.is_empty() {
        caps.log(Level::Info, "connect denied: no authorized groups");
        return Response::new(401, body::NO_GROUPS);
    }
    let Some(connected_at) = rfc3339::format_utc(request.now) else {
        caps.log(Level::Error, "connect failed: now is past year 9999");
        return Response::new(500, body::INTERNAL_ERROR);
    };
    let expires_at = request
        .now
        .saturating_add(u64::from(request.settings.record_ttl_seconds));
    let records: Vec<ConnectionRecord> = identity
        .groups
        .iter()
        .map(|group| ConnectionRecord {
            integration_id: group.clone(),
            connection_id: request.connection_id.clone(),
            sub: identity.sub.clone(),
            connected_at: connected_at.clone(),
            expires_at,
            endpoint: request.endpoint.clone(),
            auth_expires_at: Some(verified.expires_at),
        })
        .collect();
    match caps.put_all(&records) {
        Ok(()) => {
            caps.log(
                Level::Info,
                &format!("connected: stored {} record(s)", records.len()),
            );
            Response::new(200, body::CONNECTED)
        }
        Err(error) => store_failure("connect", &error, caps),
    }
}

/// Decides a DISCONNECT: find every record of the connection, delete them.
pub fn handle_disconnect(request: &DisconnectRequest, caps: &mut impl Capabilities) -> Response {
    if !is_valid_connection_id(&request.connection_id) {
        caps.log(Level::Warn, "disconnect refused: invalid connection id");
        return Response::new(400, body::INVALID_CONNECTION_ID);
    }
    let keys = match caps.keys_of(&request.connection_id) {
        Ok(keys) => keys,
        Err(error) => return store_failure("disconnect", &error, caps),
    };
    if keys.is_empty() {
        caps.log(Level::Info, "disconnect: no records");
        return Response::new(200, body::NOTHING_TO_DISCONNECT);
    }
    match caps.delete(&keys) {
        Ok(removed) => {
            caps.log(
                Level::Info,
                &format!(
                    "disconnected: removed {removed} of {} record(s)",
                    keys.len()
                ),
            );
            Response::new(200, body::disconnected(removed))
        }
        Err(error) => store_failure("disconnect", &error, caps),
    }
}

/// Non-empty, at most [`MAX_CONNECTION_ID_BYTES`], no control characters:
/// the id becomes a store key and appears in logs.
pub fn is_valid_connection_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_CONNECTION_ID_BYTES && !id.chars().any(char::is_control)
}

/// Maps a store error to its status and generic body, logging the detail.
fn store_failure(operation: &str, error: &StoreError, caps: &mut impl Capabilities) -> Response {
    let (level, kind, detail, response) = match error {
        StoreError::Validation(d) => (
            Level::Warn,
            "validation",
            d,
            Response::new(400, body::BAD_REQUEST),
        ),
        StoreError::Throttled(d) => (
            Level::Warn,
            "throttled",
            d,
            Response::new(429, body::TOO_MANY_REQUESTS),
        ),
        StoreError::NotFound(d) => (
            Level::Error,
            "not-found",
            d,
            Response::new(404, body::NOT_FOUND),
        ),
        StoreError::Unavailable(d) => (
            Level::Error,
            "unavailable",
            d,
            Response::new(500, body::INTERNAL_ERROR),
        ),
        StoreError::Other(d) => (
            Level::Error,
            "other",
            d,
            Response::new(500, body::INTERNAL_ERROR),
        ),
    };
    caps.log(
        level,
        &format!("{operation} failed: store {kind} error: {detail}"),
    );
    response
}
