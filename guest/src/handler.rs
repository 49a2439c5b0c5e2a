//! CONNECT and DISCONNECT decisions: status codes and exact client bodies.
//!
//! Bodies never carry internals; detail (store errors, rejection classes) goes
//! to the log capability. Tokens are never logged.

use crate::prelude::*;

use crate::capabilities::{Capabilities, Level};
use crate::types::{
    ConnectRequest, ConnectionRecord, DisconnectRequest, RecordKey, RefreshRequest,
    RefreshResponse, Rejection, Response, Settings, StoreError, Verified,
};
use crate::verify::{peek_token, verify_token_full};
use crate::{json, rfc3339};

/// Connection ids longer than this are refused. API Gateway's are 16 chars.
pub const MAX_CONNECTION_ID_BYTES: usize = 128;

/// Exact response bodies, shared with tests.
pub mod body {
    use crate::prelude::*;

    pub const CONNECTED: &str = "Connected.";
    pub const NO_TOKEN: &str = "Unauthorized: No authentication token provided";
    pub const INVALID_TOKEN: &str = "Unauthorized: Invalid authentication token";
    pub const NO_GROUPS: &str = "Connection denied: No authorized groups found";
    pub const REVOKED: &str = "Unauthorized: Access revoked";
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
    match is_revoked(&verified, caps) {
        Ok(false) => {}
        Ok(true) => {
            caps.log(Level::Info, "connect denied: token revoked");
            return Response::refused(Rejection::Revoked, 401, body::REVOKED);
        }
        Err(error) => return store_failure("connect", &error, caps),
    }
    let Some(connected_at) = rfc3339::format_utc(request.now) else {
        caps.log(Level::Error, "connect failed: now is past year 9999");
        return Response::new(500, body::INTERNAL_ERROR);
    };
    let records = records_for(
        &verified,
        &request.connection_id,
        &connected_at,
        request.now,
        &request.settings,
        request.endpoint.as_deref(),
    );
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

/// Close codes and reasons of a refresh.
pub mod close {
    /// Refreshed: the connection stays open.
    pub const REFRESHED: u16 = 1000;
    /// The new token is expired or invalid: get a fresh one and reconnect.
    pub const TOKEN_EXPIRED: u16 = 4001;
    /// Not this user, revoked, or no groups: terminal.
    pub const FORBIDDEN: u16 = 4003;
    /// The key set or the store failed (not the client's fault).
    pub const INTERNAL: u16 = 1011;

    pub const EXPIRED_REASON: &str = "token expired";
    pub const INVALID_REASON: &str = "token invalid";
    pub const FORBIDDEN_REASON: &str = "forbidden";
    pub const INTERNAL_REASON: &str = "internal error";
}

impl RefreshResponse {
    fn closing(code: u16, reason: &str, rejection: Option<Rejection>) -> Self {
        RefreshResponse {
            code,
            body: reason.into(),
            rejection,
            expires_at: None,
        }
    }
}

/// Decides an in-band refresh: the new token is verified as at CONNECT,
/// must be of the current token's `sub`, not older (`iat`), not the current
/// token itself, and carry groups; then the connection's records are
/// brought in line with its groups (all of them written first, with the new
/// `authExpiresAt`, then the dropped ones deleted). A refusal deletes the
/// connection's records and says how to close it.
pub fn handle_refresh(request: &RefreshRequest, caps: &mut impl Capabilities) -> RefreshResponse {
    if !is_valid_connection_id(&request.connection_id) {
        caps.log(Level::Warn, "refresh refused: invalid connection id");
        return RefreshResponse::closing(close::INTERNAL, close::INTERNAL_REASON, None);
    }
    let refused = |caps: &mut _, code, reason, rejection, class: &str| {
        caps_log_refusal(caps, class);
        remove_all(&request.connection_id, caps);
        RefreshResponse::closing(code, reason, rejection)
    };
    // Who the connection is, and which token it holds: the token itself
    // when the host keeps it, else what its records say.
    let current = match (&request.current_token, &request.current_record) {
        (Some(token), _) => match peek_token(token) {
            Some((sub, iat)) => Current {
                sub,
                issued_at: iat,
                token: Some(token),
                expires_at: None,
            },
            None => {
                return refused(
                    caps,
                    close::INTERNAL,
                    close::INTERNAL_REASON,
                    None,
                    "the current token does not parse",
                );
            }
        },
        (None, Some(record)) => Current {
            sub: record.sub.clone(),
            issued_at: record.auth_issued_at,
            token: None,
            expires_at: record.auth_expires_at,
        },
        (None, None) => {
            return refused(
                caps,
                close::TOKEN_EXPIRED,
                close::INVALID_REASON,
                None,
                "the connection has no records",
            );
        }
    };
    let (current_sub, current_iat) = (current.sub.clone(), current.issued_at);
    let token = request.id_token.as_deref().unwrap_or("");
    let verified = match verify_token_full(token, request.now, &request.settings, caps) {
        Ok(verified) => verified,
        Err(rejection) => {
            let (code, reason) = match rejection {
                Rejection::Expired => (close::TOKEN_EXPIRED, close::EXPIRED_REASON),
                Rejection::KeySetUnavailable => (close::INTERNAL, close::INTERNAL_REASON),
                _ => (close::TOKEN_EXPIRED, close::INVALID_REASON),
            };
            let class = format!("token {}", rejection.as_str());
            return refused(caps, code, reason, Some(rejection), &class);
        }
    };
    if verified.identity.sub != current_sub {
        return refused(
            caps,
            close::FORBIDDEN,
            close::FORBIDDEN_REASON,
            None,
            "another sub",
        );
    }
    let same_token = match current.token {
        Some(current_token) => token == current_token,
        // Without the token: the same iat and exp stand for the same token.
        None => {
            current.issued_at == verified.issued_at
                && current.expires_at == Some(verified.expires_at)
        }
    };
    if same_token {
        return refused(
            caps,
            close::TOKEN_EXPIRED,
            close::INVALID_REASON,
            None,
            "the current token again",
        );
    }
    if let Some(current_iat) = current_iat
        && verified.issued_at.is_none_or(|iat| iat < current_iat)
    {
        return refused(
            caps,
            close::TOKEN_EXPIRED,
            close::INVALID_REASON,
            None,
            "older than the current token",
        );
    }
    if verified.identity.groups.is_empty() {
        return refused(
            caps,
            close::FORBIDDEN,
            close::FORBIDDEN_REASON,
            None,
            "no authorized groups",
        );
    }
    match is_revoked(&verified, caps) {
        Ok(false) => {}
        Ok(true) => {
            return refused(
                caps,
                close::FORBIDDEN,
                close::FORBIDDEN_REASON,
                Some(Rejection::Revoked),
                "token revoked",
            );
        }
        Err(error) => return refresh_store_failure(request, &error, caps),
    }
    let connected_at = &request.connected_at;
    let current = match caps.keys_of(&request.connection_id) {
        Ok(keys) => keys,
        Err(error) => return refresh_store_failure(request, &error, caps),
    };
    let groups = &verified.identity.groups;
    let had = |group: &String| current.iter().any(|key| &key.integration_id == group);
    let added: Vec<&String> = groups.iter().filter(|group| !had(group)).collect();
    let removed: Vec<RecordKey> = current
        .iter()
        .filter(|key| !groups.contains(&key.integration_id))
        .cloned()
        .collect();
    let records = records_for(
        &verified,
        &request.connection_id,
        connected_at,
        request.now,
        &request.settings,
        request.endpoint.as_deref(),
    );
    // Added (and kept, with the new authExpiresAt) first: a failure leaves
    // the connection on its current groups; then the dropped ones.
    if let Err(error) = caps.put_all(&records) {
        return refresh_store_failure(request, &error, caps);
    }
    if !removed.is_empty()
        && let Err(error) = caps.delete(&removed)
    {
        return refresh_store_failure(request, &error, caps);
    }
    caps.log(
        Level::Info,
        &format!(
            "refreshed: {} record(s), {} added, {} removed",
            records.len(),
            added.len(),
            removed.len()
        ),
    );
    let list = |names: &mut dyn Iterator<Item = &String>| {
        names
            .map(|name| json::quote(name))
            .collect::<Vec<_>>()
            .join(",")
    };
    let body = format!(
        r#"{{"type":"refreshed","expiresAt":{},"added":[{}],"removed":[{}]}}"#,
        verified.expires_at,
        list(&mut added.iter().copied()),
        list(&mut removed.iter().map(|key| &key.integration_id)),
    );
    RefreshResponse {
        code: close::REFRESHED,
        body,
        rejection: None,
        expires_at: Some(verified.expires_at),
    }
}

/// Whether the token's user was revoked at or after it was issued (a token
/// without `iat` cannot show it is newer: refused too). One store read.
fn is_revoked(verified: &Verified, caps: &mut impl Capabilities) -> Result<bool, StoreError> {
    Ok(match caps.revoked_before(&verified.identity.sub)? {
        Some(before) => verified.issued_at.is_none_or(|iat| iat <= before),
        None => false,
    })
}

/// What stands for the connection's current token.
struct Current<'a> {
    sub: String,
    issued_at: Option<u64>,
    /// The token itself, when the host keeps it.
    token: Option<&'a String>,
    /// Its `exp`, when only its records are known.
    expires_at: Option<u64>,
}

fn caps_log_refusal(caps: &mut impl Capabilities, class: &str) {
    caps.log(Level::Info, &format!("refresh refused: {class}"));
}

/// Deletes every record of a connection (a refused or failed refresh: the
/// connection is about to be closed). Failures are logged; the close's
/// DISCONNECT tries again.
fn remove_all(connection_id: &str, caps: &mut impl Capabilities) {
    let keys = match caps.keys_of(connection_id) {
        Ok(keys) => keys,
        Err(error) => {
            caps.log(
                Level::Warn,
                &format!("refresh: could not list the records to delete: {error:?}"),
            );
            return;
        }
    };
    if keys.is_empty() {
        return;
    }
    if let Err(error) = caps.delete(&keys) {
        caps.log(
            Level::Warn,
            &format!("refresh: could not delete the records: {error:?}"),
        );
    }
}

/// A store failure during a refresh: logged, the records removed, 1011.
fn refresh_store_failure(
    request: &RefreshRequest,
    error: &StoreError,
    caps: &mut impl Capabilities,
) -> RefreshResponse {
    // The log line and the mapping of CONNECT; the status is not used.
    let _ = store_failure("refresh", error, caps);
    remove_all(&request.connection_id, caps);
    RefreshResponse::closing(close::INTERNAL, close::INTERNAL_REASON, None)
}

/// One record per group of a verified token for a connection: the layout
/// CONNECT and refresh share. `expires_at` (the TTL) counts from `now`.
fn records_for(
    verified: &Verified,
    connection_id: &str,
    connected_at: &str,
    now: u64,
    settings: &Settings,
    endpoint: Option<&str>,
) -> Vec<ConnectionRecord> {
    let expires_at = now.saturating_add(u64::from(settings.record_ttl_seconds));
    verified
        .identity
        .groups
        .iter()
        .map(|group| ConnectionRecord {
            integration_id: group.clone(),
            connection_id: connection_id.to_owned(),
            sub: verified.identity.sub.clone(),
            connected_at: connected_at.to_owned(),
            expires_at,
            endpoint: endpoint.map(str::to_owned),
            auth_expires_at: Some(verified.expires_at),
            auth_issued_at: verified.issued_at,
        })
        .collect()
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

/// Non-empty, at most [`MAX_CONNECTION_ID_BYTES`], no control characters or
/// whitespace: the id becomes a store key and appears in logs, and the
/// store keeps other items (revocations) under keys with a space. API
/// Gateway's ids and the host's hold neither.
pub fn is_valid_connection_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_CONNECTION_ID_BYTES
        && !id.chars().any(|c| c.is_control() || c.is_whitespace())
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
