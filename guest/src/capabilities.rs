//! What the policy needs from the outside world, as a plain trait.
//!
//! In the component, `lib.rs` implements it by calling the WIT imports; in
//! native tests, an in-memory fake does. Nothing here knows about WIT.

use crate::prelude::*;

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

/// Why the store failed. The text is for the log, never for clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// Malformed request (400).
    Validation(String),
    /// Throttled, retries exhausted (429).
    Throttled(String),
    /// Table or index missing (404).
    NotFound(String),
    /// Store unreachable (500).
    Unavailable(String),
    /// Anything else (500).
    Other(String),
}

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

/// The host's capabilities, as the policy sees them.
pub trait Capabilities {
    /// The key set as JWKS JSON; `refresh` asks for a fresher one after an
    /// unknown `kid`. `Err` carries detail for the log.
    fn key_set(&mut self, refresh: bool) -> Result<String, String>;
    /// Stores every record of one connection, or none.
    fn put_all(&mut self, records: &[ConnectionRecord]) -> Result<(), StoreError>;
    /// The keys of every record of a connection id.
    fn keys_of(&mut self, connection_id: &str) -> Result<Vec<RecordKey>, StoreError>;
    /// Deletes the given records; returns how many were removed.
    fn delete(&mut self, keys: &[RecordKey]) -> Result<u32, StoreError>;
    /// Writes one log line. Never pass a token.
    fn log(&mut self, level: Level, message: &str);
}
