//! Where connection records live: one trait, several stores.
//!
//! The guest reaches a store through the WIT `connections` import; the
//! contract is the same for every implementation: `put_all` stores all of a
//! connection's records or none, and deleting a missing record is not an
//! error.

mod dynamodb;
mod memory;
mod rollback;

pub use dynamodb::{DynamoDbOptions, DynamoDbStore, UnprocessedRetry};
pub use memory::MemoryStore;
pub use rollback::RollbackRetry;

use std::fmt;

/// One stored record: one per (integration, connection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionRecord {
    /// Hash key: the Cognito group naming a GitGazer integration.
    pub integration_id: String,
    /// Range key: the WebSocket connection id.
    pub connection_id: String,
    /// The user (`sub` claim).
    pub sub: String,
    /// RFC 3339 UTC.
    pub connected_at: String,
    /// TTL, seconds since the Unix epoch.
    pub expires_at: u64,
}

impl ConnectionRecord {
    pub fn key(&self) -> RecordKey {
        RecordKey {
            integration_id: self.integration_id.clone(),
            connection_id: self.connection_id.clone(),
        }
    }
}

/// The primary key of a record.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordKey {
    pub integration_id: String,
    pub connection_id: String,
}

/// Why a store operation failed; the text is for the log only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    Validation(String),
    Throttled(String),
    NotFound(String),
    Unavailable(String),
    Other(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Validation(m) => write!(f, "validation: {m}"),
            StoreError::Throttled(m) => write!(f, "throttled: {m}"),
            StoreError::NotFound(m) => write!(f, "not found: {m}"),
            StoreError::Unavailable(m) => write!(f, "unavailable: {m}"),
            StoreError::Other(m) => write!(f, "other: {m}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// A place to keep connection records.
#[async_trait::async_trait]
pub trait ConnectionStore: Send + Sync + 'static {
    /// Stores every record, or none (what was written is removed again
    /// before an error is returned).
    async fn put_all(&self, records: &[ConnectionRecord]) -> Result<(), StoreError>;

    /// The keys of every record of a connection.
    async fn keys_of(&self, connection_id: &str) -> Result<Vec<RecordKey>, StoreError>;

    /// Deletes the records; returns how many existed and were removed.
    async fn delete(&self, keys: &[RecordKey]) -> Result<u32, StoreError>;

    /// Every record of an integration (all pages), expired ones included:
    /// TTL deletion lags, so the caller decides what `expiresAt` means.
    async fn records_of(&self, integration_id: &str) -> Result<Vec<ConnectionRecord>, StoreError>;

    /// Removes the records of a CONNECT that failed after storing them
    /// (`expires_at`: when they expire anyway). Never fails the caller: a
    /// store may retry in the background.
    async fn roll_back(&self, keys: &[RecordKey], _expires_at: u64) {
        match self.delete(keys).await {
            Ok(_) => tracing::warn!(
                records = keys.len(),
                "rolled back records of a failed CONNECT"
            ),
            Err(error) => tracing::error!(
                records = keys.len(),
                %error,
                "could not roll back records of a failed CONNECT; expiresAt will remove them"
            ),
        }
    }

    /// Keys whose rollback is still being retried or confirmed.
    fn pending_rollbacks(&self) -> usize {
        0
    }

    /// A short name for logs (`memory`, `dynamodb:<table>`).
    fn describe(&self) -> String;
}
