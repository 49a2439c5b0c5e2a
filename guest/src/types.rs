//! The data of the WIT `types` interface as plain Rust: what the host and
//! the policy exchange. `lib.rs` converts it to and from the bindings.
//!
//! Why a module of its own: every policy module uses these types and none
//! owns them, so none imports them from a module that calls it.

use crate::prelude::*;

/// Verification and record settings, fixed by the host at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The exact `iss` expected.
    pub issuer: String,
    /// The `aud` values accepted, each exactly (the app client ids).
    pub audiences: Vec<String>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
    pub leeway_seconds: u32,
    /// How long a stored record lives, in seconds.
    pub record_ttl_seconds: u32,
}

/// A WebSocket CONNECT event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectRequest {
    /// The connection id assigned by API Gateway (or the host).
    pub connection_id: String,
    /// The `idToken` query parameter, if any.
    pub id_token: Option<String>,
    /// Seconds since the epoch, read by the host.
    pub now: u64,
    /// Verification and record settings.
    pub settings: Settings,
    /// Where the connection can be reached (copied into each record).
    pub endpoint: Option<String>,
}

/// An in-band refresh: a connection presents a new id token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshRequest {
    /// The connection whose authorisation is renewed.
    pub connection_id: String,
    /// The new token, if the frame carried one.
    pub id_token: Option<String>,
    /// The token the connection is authorised with now, if the host keeps it.
    pub current_token: Option<String>,
    /// Else one of the connection's stored records.
    pub current_record: Option<ConnectionRecord>,
    /// Seconds since the epoch, read by the host.
    pub now: u64,
    /// When the connection was made, RFC 3339 UTC.
    pub connected_at: String,
    /// Verification and record settings.
    pub settings: Settings,
    /// Where the connection can be reached (copied into each record).
    pub endpoint: Option<String>,
}

/// What a refresh answers: 1000 and the `refreshed` frame, or the close
/// code and reason that end the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshResponse {
    /// 1000: refreshed; else the close code (4001, 4003, 1011).
    pub code: u16,
    /// The frame for the client, or the close reason.
    pub body: String,
    /// Why the new token was refused, when that is why.
    pub rejection: Option<Rejection>,
    /// When refreshed: the new token's `exp`.
    pub expires_at: Option<u64>,
}

/// A WebSocket DISCONNECT event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisconnectRequest {
    /// The connection id whose records are to be removed.
    pub connection_id: String,
}

/// What the handler answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// 200 on success; 4xx/5xx otherwise.
    pub status: u16,
    /// A short text for the client.
    pub body: String,
    /// Why the token was refused, when that is why the request was (for the
    /// host's metrics; never sent to the client).
    pub rejection: Option<Rejection>,
}

/// One stored record: one per (group, connection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionRecord {
    /// The Cognito group, which names a GitGazer integration.
    pub integration_id: String,
    /// The WebSocket connection id.
    pub connection_id: String,
    /// The token's `sub`.
    pub sub: String,
    /// When the connection was made, RFC 3339 UTC with second precision.
    pub connected_at: String,
    /// When the record may be dropped, seconds since the epoch.
    pub expires_at: u64,
    /// Where the connection can be reached; `None`: the reader's default.
    pub endpoint: Option<String>,
    /// The `exp` of the token the connection was authorised with, seconds
    /// since the epoch: delivery stops at it. `None`: records written
    /// before it was kept (delivered as before).
    pub auth_expires_at: Option<u64>,
    /// The `iat` of that token, whole seconds; `None` when it had none or
    /// on older records.
    pub auth_issued_at: Option<u64>,
}

impl ConnectionRecord {
    /// The record's primary key.
    pub fn key(&self) -> RecordKey {
        RecordKey {
            integration_id: self.integration_id.clone(),
            connection_id: self.connection_id.clone(),
        }
    }
}

/// The primary key of a stored record.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordKey {
    /// Hash key: the integration (group).
    pub integration_id: String,
    /// Range key: the connection id.
    pub connection_id: String,
}

/// Why the store failed. The text is for the log, never for clients; the
/// status each answers is `handler`'s choice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// Malformed request.
    Validation(String),
    /// Throttled, retries exhausted.
    Throttled(String),
    /// Table or index missing.
    NotFound(String),
    /// Store unreachable.
    Unavailable(String),
    /// Anything else.
    Other(String),
}

/// The identity a valid token carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The `sub` claim.
    pub sub: String,
    /// `cognito:groups`, duplicates collapsed, order kept; empty if unreadable.
    pub groups: Vec<String>,
}

/// A verified token: its identity and when it was issued and expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Who, and in which groups.
    pub identity: Identity,
    /// The `exp` claim, whole seconds since the epoch (rounded down).
    pub expires_at: u64,
    /// The `iat` claim, whole seconds (rounded down), when present.
    pub issued_at: Option<u64>,
}

/// Why a token was refused: one value per failure class (mirrors the WIT
/// `token-rejection` enum).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejection {
    Missing,
    TooLarge,
    Malformed,
    UnsupportedAlgorithm,
    BadHeader,
    UnknownKey,
    UnusableKey,
    BadSignature,
    WrongIssuer,
    WrongAudience,
    WrongTokenUse,
    Expired,
    NotYetValid,
    BadClaims,
    KeySetUnavailable,
    Revoked,
}

impl Rejection {
    /// The class name as spelled in the WIT, for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::Missing => "missing",
            Rejection::TooLarge => "too-large",
            Rejection::Malformed => "malformed",
            Rejection::UnsupportedAlgorithm => "unsupported-algorithm",
            Rejection::BadHeader => "bad-header",
            Rejection::UnknownKey => "unknown-key",
            Rejection::UnusableKey => "unusable-key",
            Rejection::BadSignature => "bad-signature",
            Rejection::WrongIssuer => "wrong-issuer",
            Rejection::WrongAudience => "wrong-audience",
            Rejection::WrongTokenUse => "wrong-token-use",
            Rejection::Expired => "expired",
            Rejection::NotYetValid => "not-yet-valid",
            Rejection::BadClaims => "bad-claims",
            Rejection::KeySetUnavailable => "key-set-unavailable",
            Rejection::Revoked => "revoked",
        }
    }
}
