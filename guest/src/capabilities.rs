//! What the policy needs from the outside world, as a plain trait.
//!
//! In the component, `lib.rs` implements it by calling the WIT imports; in
//! native tests, an in-memory fake does. Nothing here knows about WIT.

use crate::prelude::*;

use crate::types::{ConnectionRecord, RecordKey, StoreError};

/// Severity of a log line: the WIT `log` interface's, so it lives with that
/// capability rather than in `types`.
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
    /// The second at or before which the user's tokens are revoked, if a
    /// revocation is stored.
    fn revoked_before(&mut self, sub: &str) -> Result<Option<u64>, StoreError>;
    /// Writes one log line. Never pass a token.
    fn log(&mut self, level: Level, message: &str);
}
