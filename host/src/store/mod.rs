//! Where connection records live: one trait, several stores.
//!
//! The guest reaches a store through the WIT `connections` import; the
//! contract is the same for every implementation: `put_all` stores all of a
//! connection's records or none, and deleting a missing record is not an
//! error.

mod dynamodb;
mod measured;
mod memory;
mod rollback;

pub use dynamodb::{DynamoDbOptions, DynamoDbStore, UnprocessedRetry};
pub use measured::Measured;
pub use memory::MemoryStore;
pub use rollback::RollbackRetry;

pub use crate::wit::types::{ConnectionRecord, RecordKey, StoreError};

impl ConnectionRecord {
    pub fn key(&self) -> RecordKey {
        RecordKey {
            integration_id: self.integration_id.clone(),
            connection_id: self.connection_id.clone(),
        }
    }
}

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

    /// One record by its key (strongly consistent), `None` when there is
    /// none: what an API Gateway refresh knows of a connection.
    async fn record(&self, key: &RecordKey) -> Result<Option<ConnectionRecord>, StoreError> {
        let _ = key;
        Err(StoreError::Other(format!(
            "{} cannot read one record",
            self.describe()
        )))
    }

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

    /// Whether the store answered its last call (an error it sent counts,
    /// being unreachable does not); `None` when not tracked or no call yet.
    fn last_call_answered(&self) -> Option<bool> {
        None
    }

    /// Keys whose rollback is still being retried or confirmed.
    fn pending_rollbacks(&self) -> usize {
        0
    }

    /// A short name for logs (`memory`, `dynamodb:<table>`).
    fn describe(&self) -> String;
}
